"""The CUDA driver layer: one small interface over pycuda or NVIDIA's cuda-python.

``get_driver()`` picks pycuda when it imports and finds a GPU, else cuda-python (its
``cuda.bindings.driver``), and raises ``NoCudaDriverError`` — saying what was tried and how to
run on the CPU instead — when neither can reach a GPU. Every driver offers the same
methods, on device addresses as ints:

    load(source, kernels) -> module      compile (cubin for the device's sm_XX) and load
    alloc(nbytes) / free(address)
    upload(address, array) / download(address, out) / copy(dst, src, nbytes) / memset(...)
    launch(module, name, grid, block, args)   args: ctypes scalars in parameter order
    synchronize()

``set_driver`` installs another implementation (the test suite's CPU emulator does).
"""

from __future__ import annotations

import atexit
import ctypes
import threading
from typing import Any

import numpy as np

from symgrad.codegen.cuda import MAX_BLOCK
from symgrad.runtime.cuda_compile import check_driver_version, load_cubin

BLOCK_SIZE = MAX_BLOCK  # threads per block: 8 warps, what the kernels are compiled for


class NoCudaDriverError(RuntimeError):
    """No GPU can be reached: no CUDA driver library, or no device."""


class PyCudaDriver:
    """pycuda (``pycuda.driver``) on device 0's primary context."""

    name = "pycuda"
    block_size = BLOCK_SIZE

    def __init__(self):
        import pycuda.driver as cuda

        cuda.init()
        if cuda.Device.count() == 0:
            raise NoCudaDriverError("pycuda: the CUDA driver reports no device")
        self.cuda = cuda
        self.device = cuda.Device(0)
        self.context = self.device.retain_primary_context()
        self.context.push()
        # pycuda aborts the process at exit if a pushed context is still on the stack
        atexit.register(self.context.pop)
        check_driver_version(cuda.get_driver_version())
        major, minor = self.device.compute_capability()
        self.arch = f"sm_{major}{minor}"
        self.multiprocessors = self.device.get_attribute(
            cuda.device_attribute.MULTIPROCESSOR_COUNT)
        self.max_blocks = 8 * self.multiprocessors
        self._allocations: dict[int, Any] = {}

    def load(self, source: str, kernels: list) -> Any:
        """The kernels by name (looked up once, not per launch); "" keeps the module."""
        def load(cubin: bytes) -> dict:  # a cached cubin the driver rejects is compiled again
            module = self.cuda.module_from_buffer(cubin)
            return {k.name: module.get_function(k.name) for k in kernels} | {"": module}
        return load_cubin(source, self.arch, load)

    def alloc(self, nbytes: int) -> int:
        mem = self.cuda.mem_alloc(max(nbytes, 1))
        self._allocations[int(mem)] = mem
        return int(mem)

    def free(self, address: int) -> None:
        mem = self._allocations.pop(address, None)
        if mem is not None:
            mem.free()

    def upload(self, address: int, array: np.ndarray) -> None:
        if array.nbytes:
            self.cuda.memcpy_htod(address, np.ascontiguousarray(array))

    def download(self, address: int, out: np.ndarray) -> None:
        if out.nbytes:
            self.cuda.memcpy_dtoh(out, address)

    def copy(self, dst: int, src: int, nbytes: int) -> None:
        if nbytes:
            self.cuda.memcpy_dtod(dst, src, nbytes)

    def memset(self, address: int, byte: int, nbytes: int) -> None:
        if nbytes:
            self.cuda.memset_d8(address, byte, nbytes)

    def launch(self, module: Any, name: str, grid: int, block: int, args: list) -> None:
        fn = module[name]
        values = [np.uintp(a.value or 0) if isinstance(a, ctypes.c_void_p) else
                  np.dtype(_NUMPY_OF[type(a)]).type(a.value) for a in args]
        fn(*values, block=(block, 1, 1), grid=(grid, 1, 1))

    def synchronize(self) -> None:
        self.context.synchronize()


_NUMPY_OF = {ctypes.c_int64: "int64", ctypes.c_int32: "int32", ctypes.c_double: "float64",
             ctypes.c_float: "float32", ctypes.c_uint32: "uint32"}


class CudaPythonDriver:
    """NVIDIA's cuda-python (``cuda.bindings.driver``) on device 0's primary context."""

    name = "cuda-python"
    block_size = BLOCK_SIZE

    def __init__(self):
        from cuda.bindings import driver as cu

        self.cu = cu
        self._check(cu.cuInit(0), "cuInit")
        count = self._check(cu.cuDeviceGetCount(), "cuDeviceGetCount")
        if count == 0:
            raise NoCudaDriverError("cuda-python: the CUDA driver reports no device")
        self.device = self._check(cu.cuDeviceGet(0), "cuDeviceGet")
        self.context = self._check(cu.cuDevicePrimaryCtxRetain(self.device),
                                   "cuDevicePrimaryCtxRetain")
        self._check(cu.cuCtxSetCurrent(self.context), "cuCtxSetCurrent")
        self._current = threading.local()  # the context is current per thread
        self._current.set = True
        check_driver_version(int(self._check(cu.cuDriverGetVersion(), "cuDriverGetVersion")))
        attr = cu.CUdevice_attribute
        major = self._attribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)
        minor = self._attribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)
        self.arch = f"sm_{major}{minor}"
        self.multiprocessors = self._attribute(attr.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
        self.max_blocks = 8 * self.multiprocessors

    def _attribute(self, which) -> int:
        return int(self._check(self.cu.cuDeviceGetAttribute(which, self.device),
                               "cuDeviceGetAttribute"))

    def _check(self, result: tuple, what: str):
        err, *values = result if isinstance(result, tuple) else (result,)
        if err != self.cu.CUresult.CUDA_SUCCESS:
            _, name = self.cu.cuGetErrorName(err)
            raise RuntimeError(f"CUDA driver call {what} failed: "
                               f"{name.decode() if isinstance(name, bytes) else name}")
        return values[0] if len(values) == 1 else (tuple(values) or None)

    def _make_current(self) -> None:
        """Calls may come from any thread (a server, a notebook's background thread)."""
        if not getattr(self._current, "set", False):
            self._check(self.cu.cuCtxSetCurrent(self.context), "cuCtxSetCurrent")
            self._current.set = True

    def load(self, source: str, kernels: list) -> Any:
        self._make_current()

        def load(cubin: bytes) -> dict:  # a cached cubin the driver rejects is compiled again
            module = self._check(self.cu.cuModuleLoadData(cubin), "cuModuleLoadData")
            return {k.name: self._check(self.cu.cuModuleGetFunction(module, k.name.encode()),
                                        "cuModuleGetFunction") for k in kernels} | {"": module}
        return load_cubin(source, self.arch, load)

    def alloc(self, nbytes: int) -> int:
        self._make_current()
        return int(self._check(self.cu.cuMemAlloc(max(nbytes, 1)), "cuMemAlloc"))

    def free(self, address: int) -> None:
        self._make_current()
        self._check(self.cu.cuMemFree(self.cu.CUdeviceptr(address)), "cuMemFree")

    def upload(self, address: int, array: np.ndarray) -> None:
        self._make_current()
        array = np.ascontiguousarray(array)
        if array.nbytes:
            self._check(self.cu.cuMemcpyHtoD(self.cu.CUdeviceptr(address), array.ctypes.data,
                                             array.nbytes), "cuMemcpyHtoD")

    def download(self, address: int, out: np.ndarray) -> None:
        self._make_current()
        if out.nbytes:
            self._check(self.cu.cuMemcpyDtoH(out.ctypes.data, self.cu.CUdeviceptr(address),
                                             out.nbytes), "cuMemcpyDtoH")

    def copy(self, dst: int, src: int, nbytes: int) -> None:
        self._make_current()
        if nbytes:
            self._check(self.cu.cuMemcpyDtoD(self.cu.CUdeviceptr(dst), self.cu.CUdeviceptr(src),
                                             nbytes), "cuMemcpyDtoD")

    def memset(self, address: int, byte: int, nbytes: int) -> None:
        self._make_current()
        if nbytes:
            self._check(self.cu.cuMemsetD8(self.cu.CUdeviceptr(address), byte, nbytes),
                        "cuMemsetD8")

    def launch(self, module: Any, name: str, grid: int, block: int, args: list) -> None:
        self._make_current()
        # kernelParams as cuLaunchKernel takes it: an array of pointers to the values
        pointers = (ctypes.c_void_p * max(1, len(args)))(
            *[ctypes.addressof(a) for a in args])
        self._check(self.cu.cuLaunchKernel(module[name], grid, 1, 1, block, 1, 1, 0, 0,
                                           ctypes.addressof(pointers), 0), "cuLaunchKernel")

    def synchronize(self) -> None:
        self._make_current()
        self._check(self.cu.cuCtxSynchronize(), "cuCtxSynchronize")


_driver: Any = None
_tried: list[str] = []


def get_driver() -> Any:
    """The process's CUDA driver: pycuda, else cuda-python; ``NoCudaDriverError`` if neither
    reaches a GPU."""
    global _driver
    if _driver is not None:
        return _driver
    _tried.clear()
    for make in (PyCudaDriver, CudaPythonDriver):
        try:
            _driver = make()
            return _driver
        except ImportError as e:
            _tried.append(f"{make.name}: not installed ({e})")
        except Exception as e:  # no libcuda, no device, driver too old
            _tried.append(f"{make.name}: {type(e).__name__}: {e}")
    raise NoCudaDriverError(
        "backend='cuda': no CUDA driver was found to run on (" + "; ".join(_tried) + "). The "
        "CUDA source is still generated and compiled (.source); to run, use a machine with "
        "an NVIDIA GPU and driver and `pip install symgrad[cuda]`, or use backend='llvm' "
        "(the CPU).")


def set_driver(driver: Any) -> None:
    """Use ``driver`` for every CUDA function from now on (``None``: pick again)."""
    global _driver
    _driver = driver


def driver_available() -> bool:
    try:
        get_driver()
        return True
    except NoCudaDriverError:
        return False
