"""Running a graph through the CUDA backend: lower for the GPU, print CUDA C, compile, launch.

Feeds are checked exactly as the NumPy reference checks them, before anything runs. Inputs
are copied to the device per call; parameters stay there between calls
(``cuda_memory``); outputs, temporaries and the partials of the reductions live in one
device allocation per function, grown when a larger batch needs it. A call launches each
kernel of the program in order (a pass over the batch on a grid of blocks, its combine
kernel, the stages between passes on one block), waits, and only then copies results back
or, for a training step, makes the new parameter values current on the device.
"""

from __future__ import annotations

import ctypes
import math
import threading
from typing import Any, Callable

import numpy as np

from symgrad.codegen.cuda import CudaKernel, CudaProgram, render_cuda
from symgrad.codegen.passes import Compilation
from symgrad.codegen.schedule import LEAVES
from symgrad.expr.evaluate import Outputs, check_dims_bound, check_feeds
from symgrad.expr.leaves import INPUT
from symgrad.expr.shapes import size_of
from symgrad.runtime import cuda_compile, cuda_memory
from symgrad.runtime.compiled import (
    CompiledFunction,
    Gate,
    commit_on_host,
    distinct_arrays,
    leaf_result,
)
from symgrad.runtime.cuda_driver import NoCudaDriverError, get_driver
from symgrad.runtime.signals import deferred_signals

# Per-thread partials that do not fit in registers live in global memory: the grid of a
# pass is cut so that they take at most this many bytes.
PARTIAL_BYTES = 256 << 20
_ALIGN = 256


class CUDAFunction(CompiledFunction):
    """Outputs compiled to CUDA kernels; call with feeds by input name."""

    def __init__(self, outputs: Outputs, fast_math: bool = False,
                 compilation: Compilation | None = None):
        super().__init__(outputs, "gpu", compilation)
        with self.compilation.timed("render"):
            self.cuda: CudaProgram = render_cuda(self.program, fast_math)
        prog = self.program
        self._node_of = {name: n for n, name in prog.node_buffer.items()}  # buffer -> node
        self._stage_of = {a.partial: stage for stage, accs in prog.accumulators.items()
                          for a in accs}  # partial -> the pass that fills it
        self._driver: Any = None
        self._module: Any = None
        self._consts: dict[str, int] = {}
        self._arena: tuple[int, int] | None = None  # (address, bytes)
        self._lock = threading.Lock()  # one call at a time uses the arena
        try:  # compile now, so an error in generated code shows at once
            self._load()
        except NoCudaDriverError:
            if cuda_compile.compiler() is not None:
                cuda_compile.compile_cubin(self.source, cuda_compile.ARCHS[0])

    @property
    def source(self) -> str:
        """The CUDA C source of every kernel."""
        return self.cuda.source

    def cubin(self, arch: str = "sm_80") -> bytes:
        """The kernels compiled for ``arch`` (no GPU needed)."""
        return cuda_compile.compile_cubin(self.source, arch)

    @property
    def asm(self) -> str:
        raise AttributeError("the cuda backend has no host assembly; .source is the CUDA C "
                             "and .cubin(arch) the compiled kernels")

    @property
    def optimized_source(self) -> str:
        raise AttributeError("the cuda backend has no optimized IR to show; .source is the "
                             "CUDA C and .cubin(arch) the compiled kernels")

    def call(self, feeds: dict[str, Any], commit: dict[int, Any] | None = None,
             gate: Gate | None = None, gate_zero: tuple[int, ...] | None = None) -> list:
        """Every output as a list; ``commit``'s new values are made current on the device."""
        feeds, on_device = self.device_feeds(feeds)
        arrays, sizes = check_feeds(self.inputs, feeds)
        check_dims_bound(self._dims, sizes)
        return self.execute(arrays, sizes, commit, gate, gate_zero, on_device=on_device)

    def device_feeds(self, feeds: dict[str, Any]) -> tuple[dict[str, Any], dict[str, int]]:
        """Split off feeds that already live on the GPU (anything with
        ``__cuda_array_interface__``: CuPy, PyTorch CUDA tensors, Numba, pycuda's GPUArray):
        they are read in place, never copied. Each must be C-contiguous and of the input's
        own dtype (no conversion on the device); its shape is checked like any feed's, by a
        stand-in of that shape (so one_hot's label range is not checked for them)."""
        host, on_device = {}, {}
        for name, value in feeds.items():
            iface = getattr(value, "__cuda_array_interface__", None)
            if iface is None or name not in self.inputs:  # an unused feed is ignored
                host[name] = value
                continue
            dtype, shape = np.dtype(iface["typestr"]), tuple(iface["shape"])
            node = self.inputs.get(name)
            if node is not None and dtype != node.dtype:
                raise TypeError(f"input {name!r}: expected a {node.dtype} array, got a device "
                                f"array of dtype {dtype} (device arrays are not converted)")
            contiguous = tuple(int(np.prod(shape[i + 1:], dtype=np.int64)) * dtype.itemsize
                               for i in range(len(shape)))
            strides = iface.get("strides")
            if strides is not None and tuple(strides) != contiguous and math.prod(shape) > 1:
                raise ValueError(f"input {name!r}: a device array must be C-contiguous, got "
                                 f"strides {tuple(strides)} for shape {shape}")
            host[name] = np.lib.stride_tricks.as_strided(np.zeros(1, dtype), shape,
                                                         (0,) * len(shape))
            on_device[name] = int(iface["data"][0])
        return host, on_device

    # -- running -----------------------------------------------------------------------
    def _load(self) -> Any:
        driver = get_driver()
        if self._driver is not driver:
            self._free()
            self._module = driver.load(self.source, self.cuda.kernels)
            self._driver, self._arena = driver, None
            self._consts = {}
            for name, array in self.program.const_arrays.items():
                self._consts[name] = address = driver.alloc(array.nbytes)
                driver.upload(address, np.ascontiguousarray(array))
        return driver

    def run(self, arrays: dict[str, np.ndarray], sizes: dict[str, int],
            commit: dict[int, Any] | None, accept: Callable[[list], bool],
            gates: tuple[int, ...] | None = None,
            on_device: dict[str, int] | None = None) -> list[np.ndarray | None]:
        """Run on checked feeds. ``commit`` maps output positions to parameter slots whose
        new value that output is: written on the device once every kernel has finished and
        ``accept`` has passed, and returned as ``None`` (``gates`` is a hint for backends
        that commit natively; here ``accept`` always decides). ``on_device``: inputs given
        as device addresses."""
        with self._lock:
            return self._run(arrays, sizes, commit, accept, on_device)

    def _run(self, arrays: dict[str, np.ndarray], sizes: dict[str, int],
             commit: dict[int, Any] | None, accept: Callable[[list], bool],
             on_device: dict[str, int] | None) -> list[np.ndarray | None]:
        on_device = on_device or {}
        driver = self._load()
        prog = self.program
        batch = sizes.get(prog.plan.batch, 0) if prog.plan.batch else 0
        block = driver.block_size
        grids = self._grids(driver, sizes, batch)
        addresses = self._addresses(driver, arrays, sizes, grids, block, on_device)
        for k in self.cuda.kernels:
            grid = grids.get(k.stage, 1) if k.launch == "pass" else \
                self._combine_grid(driver, k, sizes) if k.launch == "combine" else 1
            args = self._args(k, addresses, sizes, batch, grids.get(k.stage, 1))
            driver.launch(self._module, k.name, grid, block, args)
        driver.synchronize()  # a failed kernel raises here, before anything is committed
        commit = commit or {}
        # every result first (an output may be a parameter's value before this step)...
        computed = [o in prog.node_buffer and o.op not in LEAVES for o in prog.outputs]
        results: list[np.ndarray | None] = distinct_arrays([
            None if i in commit and computed[i] else
            self._result(o, driver, addresses, arrays, sizes, on_device)
            for i, o in enumerate(prog.outputs)])
        if not accept(results):  # a check failed or the caller's gate said no
            return commit_on_host(results, None)
        # ...then the new values: computed ones by a copy on the device, leaves from the host
        with deferred_signals():  # every parameter a step ahead, or none
            for i, slot in commit.items():
                if computed[i]:
                    cuda_memory.commit(slot, driver,
                                       addresses[prog.node_buffer[prog.outputs[i]]])
            return commit_on_host(results, commit)

    def _grids(self, driver: Any, sizes: dict, batch: int) -> dict[int, int]:
        """Blocks per pass: enough for the batch, at most the driver's limit, and few enough
        that spilled partials fit their budget."""
        block = driver.block_size
        grids = {}
        for stage, accs in self.program.accumulators.items():
            grid = max(1, min(driver.max_blocks, -(-batch // block)))
            for acc in accs:
                slot = self.cuda.partials[acc.partial]
                if not slot.in_registers:
                    per_thread = size_of(slot.shape, sizes) * slot.dtype.itemsize
                    grid = max(1, min(grid, PARTIAL_BYTES // max(1, block * per_thread)))
            grids[stage] = grid
        return grids

    def _combine_grid(self, driver: Any, k: CudaKernel, sizes: dict) -> int:
        most = max(size_of(self.cuda.partials[p].shape, sizes) for p in k.partials)
        return max(1, min(driver.max_blocks, -(-most // driver.block_size)))

    def _addresses(self, driver: Any, arrays: dict, sizes: dict, grids: dict,
                   block: int, on_device: dict[str, int]) -> dict[str, int]:
        """Every buffer's device address; inputs uploaded, parameters made current."""
        prog = self.program
        node_of = self._node_of
        layout: list[tuple[str, int]] = []
        for name, spec in prog.buffers.items():
            if spec.role in ("output", "temp"):
                layout.append((name, size_of(spec.shape, sizes) * np.dtype(spec.dtype).itemsize))
            elif spec.role == "input" and node_of[name].name not in on_device:
                layout.append((name, arrays[node_of[name].name].nbytes))
        stage_of = self._stage_of
        for name, slot in self.cuda.partials.items():
            grid = grids.get(stage_of[name], 1)
            each = size_of(slot.shape, sizes) * slot.dtype.itemsize
            layout.append((name + "_blocks", grid * each))
            if not slot.in_registers:
                layout.append((name + "_threads", grid * block * each))
        offsets, total = {}, 0
        for name, nbytes in layout:
            offsets[name] = total
            total += -(-max(nbytes, 1) // _ALIGN) * _ALIGN
        if self._arena is None or self._arena[1] < total:
            if self._arena is not None:
                driver.free(self._arena[0])
            self._arena = (driver.alloc(total), total)
        base = self._arena[0]
        out = {name: base + off for name, off in offsets.items()}
        for name, spec in prog.buffers.items():
            if spec.role == "input" and node_of[name].name in on_device:
                out[name] = on_device[node_of[name].name]
            elif spec.role == "input":
                driver.upload(out[name], np.ascontiguousarray(arrays[node_of[name].name]))
            elif spec.role == "param":
                out[name] = cuda_memory.device_address(node_of[name].arg, driver)
            elif spec.role == "const":
                out[name] = self._consts[name]
        return out

    def _args(self, k: CudaKernel, addresses: dict, sizes: dict, batch: int,
              grid: int) -> list:
        args: list = []
        for kind, name in k.args:
            if kind == "buf":
                args.append(ctypes.c_void_p(addresses[name]))
            elif kind in ("threads", "blocks"):
                args.append(ctypes.c_void_p(addresses[f"{name}_{kind}"]))
            elif kind == "dim":
                args.append(ctypes.c_int64(sizes[name]))
            elif kind == "start":
                args.append(ctypes.c_int64(0))
            elif kind == "stop":
                args.append(ctypes.c_int64(batch))
            else:  # blocks_count: how many blocks the pass ran
                args.append(ctypes.c_int64(grid))
        return args

    def _result(self, o, driver: Any, addresses: dict, arrays: dict, sizes: dict,
                on_device: dict[str, int]) -> np.ndarray:
        if o.op in LEAVES and not (o.op is INPUT and o.name in on_device):
            return leaf_result(o, arrays, sizes)
        # a computed value, or an input fed on the device (its buffer is the feed's memory)
        out = np.empty(tuple(sizes[d] if isinstance(d, str) else d for d in o.shape), o.dtype)
        driver.download(addresses[self.program.node_buffer[o]], out)
        return out

    def _free(self) -> None:
        if self._driver is not None:
            if self._arena is not None:
                self._driver.free(self._arena[0])
            for address in self._consts.values():
                self._driver.free(address)
        self._arena, self._consts = None, {}

    def __del__(self):
        try:
            self._free()
        except Exception:  # interpreter shutdown, or the context is gone
            pass
