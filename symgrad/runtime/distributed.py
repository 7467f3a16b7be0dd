"""Data-parallel training over MPI (``mpi4py``): every process holds the parameters, runs
the compiled pass over its own shard of the batch, and the pass's sums are reduced across
the processes before anything that follows them.

A compiled function's pass over the batch leaves one partial per thread of every
accumulator (a sum, max or min over the batch; a mean is a sum divided by its count in the
kernel after the pass). Between the pass and that kernel, the native entry calls an
after-pass hook (``llvm_entry.AFTER_PASS``); here it

1. adds the threads' partials into thread 0's, in thread order (as the next kernel would);
2. packs every sum of the pass into one float64 buffer and reduces it with one
   ``MPI_Allreduce`` (SUM); the maxima and the negated minima of a pass that has any go in
   a second buffer and a second allreduce (MAX);
3. unpacks the totals into thread 0's partials and sets the thread count to 1, so the next
   kernel divides the global sums by the global count and runs the update on them.

The batch size the kernels read (``dims[N]``: a mean's count, the ``1/N`` of a mean's
gradient inside the pass) is the global one for the whole call; the pass's bounds are the
local shard's. Graphs that read ``N`` as a memory layout (an array with the batch on a
later axis) or index the batch (``x[-1]``) would be wrong with that and are refused.

Before each call every process checks its feeds and agrees with the others (one small
``Allgather`` of a status row: failed?, the local batch size, the other sizes): a bad feed
on one process makes every process raise the same :class:`DistributedError` before any
pass runs, so none waits in a reduction that never comes and nothing is written. The
reduced totals are identical on every process, so every process computes the same new
values and commits the same way; parameters stay bit-identical (tests check it).
"""

from __future__ import annotations

import ctypes
import dataclasses
import threading
import time
from typing import Any, Callable, Mapping, TypeVar

import numpy as np

from symgrad.codegen import llvm_entry as E
from symgrad.codegen import loopir as L
from symgrad.expr.evaluate import merge_feeds, run_graph
from symgrad.expr.shapes import SliceDim, size_of
from symgrad.runtime.compiled import _fails

__all__ = ["DataParallel", "DistributedError", "data_parallel", "check_comm", "agree",
           "same_everywhere", "shard_of", "broadcast_params"]

AFTER_PASS_TYPE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64)
T = TypeVar("T")


class DistributedError(RuntimeError):
    """A collective call failed on at least one process. Every process raises this error,
    with the same message; nothing was written on any of them. ``errors`` maps each failed
    rank to its error's text (the failing process's own exception is the ``__cause__``)."""

    def __init__(self, message: str, errors: dict[int, str]):
        super().__init__(message)
        self.errors = errors


def _mpi() -> Any:
    try:
        from mpi4py import MPI
    except ImportError:
        raise ImportError("comm=... needs mpi4py and an MPI library: "
                          "pip install 'symgrad[mpi]' (mpi4py and the mpich wheel)") from None
    return MPI


def check_comm(comm: Any, what: str) -> Any:
    """``comm`` if it is an mpi4py intracommunicator (``MPI.COMM_WORLD``), else a TypeError
    naming ``what``."""
    MPI = _mpi()
    if not isinstance(comm, MPI.Intracomm):
        raise TypeError(f"{what}: comm must be an mpi4py communicator (e.g. "
                        f"mpi4py.MPI.COMM_WORLD), got {type(comm).__name__}")
    return comm


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def raise_if_any(comm: Any, what: str, error: BaseException | None) -> None:
    """Collective: if ``error`` is set on any process, every process raises the same
    :class:`DistributedError` (one small allreduce when none failed)."""
    MPI = _mpi()
    flag = np.array([error is not None], np.int64)
    comm.Allreduce(MPI.IN_PLACE, flag, MPI.MAX)
    if flag[0]:
        _raise_gathered(comm, what, None if error is None else _describe(error), error)


def _raise_gathered(comm: Any, what: str, mine: str | None,
                    cause: BaseException | None) -> None:
    """Collective, on the error path only: every process's message (None: it did not
    fail), then the same error everywhere."""
    messages = comm.allgather(mine)
    errors = {r: m for r, m in enumerate(messages) if m is not None}
    if not errors:
        errors = {-1: "no process could say what went wrong"}
    listed = "; ".join(f"rank {r}: {m}" for r, m in errors.items())
    raise DistributedError(f"{what} on {comm.Get_size()} processes failed ({listed}). "
                           f"Nothing was written on any process.", errors) from cause


def agree(comm: Any, what: str, fn: Callable[[], T]) -> T:
    """Run ``fn()`` on every process and return its result; if it raised on any process,
    every process raises the same :class:`DistributedError`."""
    try:
        result, error = fn(), None
    except Exception as exc:  # (KeyboardInterrupt is not agreed on: it stops the job)
        result, error = None, exc
    raise_if_any(comm, what, error)
    return result  # type: ignore[return-value]


def same_everywhere(comm: Any, what: str, value: int) -> None:
    """Collective: a ValueError on every process unless ``value`` is the same on all."""
    values = comm.allgather(int(value))
    if len(set(values)) > 1:
        raise ValueError(f"{what} differs between the processes ({', '.join(map(str, values))}"
                         f", by rank); every process must pass the same")


def shard_of(n: int, rank: int, size: int) -> slice:
    """Rank ``rank``'s contiguous share of ``n`` samples (the first ``n % size`` ranks get
    one more); the shards, in rank order, are the samples in order."""
    return slice(n * rank // size, n * (rank + 1) // size)


def broadcast_params(comm: Any, slots: list) -> None:
    """Every process takes rank 0's values of these parameters (``ParamSlot``)."""
    for slot in slots:
        value = np.array(slot.value, order="C")  # (a copy; a 0-d array stays 0-d)
        comm.Bcast(value, root=0)
        slot.assign(value)


# -- which graphs can run sharded ---------------------------------------------------------

def _layout_reads(node: Any, batch: str, value: bool = False) -> bool:
    """Whether the loop IR ``node`` reads the batch size as an index, an offset, a loop
    bound or a buffer size (``value``: inside a computed value, e.g. the ``1/N`` of a
    mean's gradient, where the global size is the right one)."""
    if isinstance(node, L.Dim):
        return node.name == batch and not value
    if isinstance(node, (list, tuple)):
        return any(_layout_reads(x, batch, value) for x in node)
    if isinstance(node, L.Op):
        return _layout_reads(node.args, batch, True)
    if isinstance(node, L.Load):
        return _layout_reads(node.offset, batch, False)
    if isinstance(node, (L.IOp, L.Select)):
        return any(_layout_reads(getattr(node, f.name), batch, value)
                   for f in dataclasses.fields(node))
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        computed = {"value", "init"}  # Store, Let, Acc, AccInit: the value stored
        return any(_layout_reads(getattr(node, f.name), batch, f.name in computed)
                   for f in dataclasses.fields(node))
    return False


def _check_shardable(compiled: Any, what: str) -> str:
    """The batch dimension of ``compiled``'s program, or a ValueError saying why its
    outputs would be wrong over shards."""
    prog = compiled.program
    batch = prog.plan.batch
    if batch is None or not any(stage % 2 for stage in prog.stages):
        raise ValueError(f"{what}: the outputs make no pass over a batch (no input with a "
                         f"symbolic leading dimension such as 'N' is reduced), so there is "
                         f"nothing to split across processes")
    for guard in compiled._guards:
        if guard[0] == "index" and guard[2] == batch:
            raise ValueError(f"{what}: the graph indexes the batch axis {batch!r} at "
                             f"{guard[1]} (e.g. x[{guard[1]}], or an sg.watch'ed value's "
                             f"first rows); over shards each process would pick its own "
                             f"sample. Index a reduction instead, or train in one process")
    for dim in compiled._dims:
        base = dim
        while isinstance(base, SliceDim):
            base = base.base
        if base == batch and dim != batch:
            raise ValueError(f"{what}: the graph slices the batch axis {batch!r} (a value of "
                             f"length {dim!r}, e.g. x[1:] - x[:-1]); over shards each process "
                             f"would miss the neighbours across its shard's edges. Train in "
                             f"one process, or feed the neighbours as a column of their own")
    for kernel in prog.kernels:
        if _layout_reads(kernel.body, batch):
            raise ValueError(f"{what}: kernel {kernel.name!r} uses the batch size {batch!r} "
                             f"as a memory layout (an array with {batch!r} on an axis after "
                             f"the first, or a loop over the batch outside the pass), which "
                             f"differs between a shard and the whole batch; put the batch "
                             f"axis first")
    return batch


# -- the data-parallel function -----------------------------------------------------------

class DataParallel:
    """A compiled function (:func:`symgrad.function`, LLVM backend) run on each process's
    shard of the batch: its outputs are those of one process on the concatenated batch
    (shards in rank order), to float rounding, and identical on every process. Every call
    is collective: each process of ``comm`` makes it, with its own shard.

    ``reduce_seconds`` and ``reduced_bytes`` add up the time spent in (and the bytes sent
    to) the pass reductions; ``agree_seconds`` the feed agreement before each call.
    """

    def __init__(self, function: Any, comm: Any, prepare: Callable[[dict], dict] | None = None,
                 need_samples: str | None = None, what: str = "data_parallel"):
        self.comm = check_comm(comm, what)
        if getattr(function, "backend", None) != "llvm":
            raise NotImplementedError(
                f"{what}: comm= runs on backend='llvm'; got "
                f"{getattr(function, 'backend', type(function).__name__)!r} (the CUDA "
                f"backend would reduce host copies of its partials the same way; not built)")
        self.function = function
        compiled = function._compiled
        self._compiled = compiled
        self.batch = _check_shardable(compiled, what)
        self.outputs = compiled.outputs
        self.inputs = compiled.inputs
        prog = compiled.program
        self._pass_accs = [prog.accumulators.get(stage, []) for stage in prog.stages
                           if stage % 2]
        self._n_slot = compiled._dim_index.get(self.batch)
        self._threads_slot = compiled._dim_index.get(L.THREADS.name)
        self._prepare, self._need_samples = prepare, need_samples
        self._callback = AFTER_PASS_TYPE(self._after_pass)  # (kept alive with self)
        self._hook_address = ctypes.cast(self._callback, ctypes.c_void_p).value
        self._lock = threading.Lock()
        self._call: tuple | None = None  # (scratch, ctl, saved commits) while one runs
        self._failed: BaseException | None = None
        self._global_n = 0
        self._packs: dict[tuple, list] = {}
        self.reduce_seconds = self.agree_seconds = 0.0
        self.reduced_bytes = 0

    def __call__(self, feeds: Mapping[Any, Any] | None = None, /,
                 **keywords: Any) -> np.ndarray | tuple[np.ndarray, ...]:
        """The outputs for this process's shard, as ``Function.__call__`` gives them."""
        results = self.run(keywords if feeds is None else
                           merge_feeds(feeds, keywords, "data-parallel function call"))
        return results[0] if self.function._single else tuple(results)

    def run(self, feeds: dict[str, Any], commit: dict[int, Any] | None = None,
            gate: Callable[[list], bool] | None = None,
            gate_zero: tuple[int, ...] | None = None) -> list:
        """Every output as a list, as ``Function.run`` (``commit``, ``gate``, ``gate_zero``
        alike), on this process's shard; collective."""
        with self._lock:
            arrays, sizes = self._agree_on_feeds(feeds)
            compiled, n = self._compiled, len(self.outputs)
            hidden = range(n, n + len(compiled._checks))

            def accept(results: list) -> bool:
                if self._failed is not None:
                    failed, self._failed = self._failed, None
                    raise failed
                if any(results[i] for i in hidden):  # global counts: every process is here
                    self._reference_error(arrays, sizes)
                return gate is None or gate(results[:n])

            gates = None if gate is not None and gate_zero is None else \
                tuple(hidden) + tuple(gate_zero or ())
            compiled.data_parallel = self  # (only for this call: the function stays usable
            try:  # alone, e.g. by whoever holds the Function this wraps)
                return compiled.run(arrays, sizes, commit, accept, gates)[:n]
            finally:
                compiled.data_parallel = None

    def _agree_on_feeds(self, feeds: dict[str, Any]) -> tuple[dict, dict]:
        """Check the feeds here, then agree with every process (one Allgather of a status
        row): the same error everywhere if any failed; the global batch size."""
        compiled, comm = self._compiled, self.comm
        start = time.perf_counter()
        others = sorted(d for d in compiled._dims if d != self.batch)
        error, arrays, sizes = None, {}, {}
        try:
            if self._prepare is not None:
                feeds = self._prepare(feeds)
            arrays, sizes = compiled._check_feeds(feeds)
            for guard in compiled._guards:  # the reference's own checks on this shard
                if guard[0] != "empty" and _fails(guard, sizes, arrays):
                    self._local_reference(arrays, sizes)
        except Exception as exc:
            error = exc
        row = np.array([error is not None, sizes.get(self.batch, 0),
                        *(sizes.get(d, 0) for d in others)], np.int64)
        rows = np.empty((comm.Get_size(), len(row)), np.int64)
        comm.Allgather(row, rows)
        if rows[:, 0].any():
            _raise_gathered(comm, "a data-parallel call", None if error is None
                            else _describe(error), error)
        for k, d in enumerate(others):
            if (rows[:, 2 + k] != rows[0, 2 + k]).any():
                raise ValueError(f"data-parallel call: the size {d!r} differs between the "
                                 f"processes ({', '.join(map(str, rows[:, 2 + k]))}, by rank); "
                                 f"only the batch {self.batch!r} may be split")
        total = int(rows[:, 1].sum())
        if total == 0 and self._need_samples:
            raise ValueError(f"{self._need_samples} (the batch is empty on all "
                             f"{comm.Get_size()} processes)")
        whole = dict(sizes, **{self.batch: total})
        for guard in compiled._guards:
            if guard[0] == "empty" and size_of(guard[1], whole) == 0:
                raise ValueError(f"data-parallel call: a max/min over the batch, which is "
                                 f"empty on all {comm.Get_size()} processes")
        self._global_n = total
        self.agree_seconds += time.perf_counter() - start
        return arrays, sizes

    def _local_reference(self, arrays: dict, sizes: dict) -> None:
        """Raise the NumPy reference's error on this shard (a check it makes while it runs
        failed here); an error of its own if the reference passes."""
        run_graph(self.outputs, arrays, sizes)
        raise ValueError("the compiled code cannot check these feeds and the NumPy "
                         "reference (which can) does not run sharded")

    def _reference_error(self, arrays: dict, sizes: dict) -> None:
        """Collective: a hidden check counted a value the reference refuses somewhere in
        the global batch; each process runs the reference on its shard for its error."""
        mine: BaseException | None = None
        try:
            self._local_reference(arrays, sizes)
        except Exception as exc:
            mine = exc
        ran_clean = isinstance(mine, ValueError) and "does not run sharded" in str(mine)
        _raise_gathered(self.comm, "a data-parallel call",
                        None if ran_clean else _describe(mine), None if ran_clean else mine)

    # -- the hook around the native entry (``LLVMFunction._call``) -------------------------
    def enter(self, plan: Any, scratch: Any, ctl: Any) -> None:
        ctl[E.AFTER_PASS] = self._hook_address
        self._call = (scratch, ctl, ctl[E.COMMITS])
        self._failed = None
        if self._n_slot is not None:  # a mean's count and 1/N: the whole batch's
            scratch.dims[self._n_slot] = self._global_n

    def leave(self, plan: Any, scratch: Any, ctl: Any) -> None:
        ctl[E.AFTER_PASS] = 0
        ctl[E.COMMITS] = self._call[2] if self._call is not None else ctl[E.COMMITS]
        if self._n_slot is not None:
            scratch.dims[self._n_slot] = plan.dims[self._n_slot]
        self._call = None

    def _after_pass(self, _ctl: int, p: int) -> None:
        """Called by the native entry when pass ``p`` is done (a ctypes callback: an
        exception here would be printed and lost, so it is kept for ``accept`` and nothing
        is committed natively). An error on one process only (an MPI failure) cannot be
        agreed on: MPI's error handling aborts the job, or the others wait."""
        scratch, ctl, _ = self._call
        try:
            self._reduce(scratch, ctl[E.PASSES + 2 * p], p)
            if self._threads_slot is not None:
                scratch.dims[self._threads_slot] = 1
        except BaseException as exc:
            self._failed = exc
            ctl[E.COMMITS] = 0

    def _reduce(self, scratch: Any, threads: int, p: int) -> None:
        """Pass ``p``'s partials: threads combined, then reduced across processes."""
        MPI = _mpi()
        heads = []
        for acc in self._pass_accs[p]:
            block = scratch.partials[acc.partial]
            head = block[0, ...]  # (a view, also of a scalar's partial)
            join = np.add if acc.kind == "sum" else np.maximum if acc.kind == "max" \
                else np.minimum
            for t in range(1, threads):  # thread order, as the combining kernel adds
                join(head, block[t], out=head)
            heads.append((head, acc.kind))
        key = (p, tuple((h.shape, kind) for h, kind in heads))
        packs = self._packs.get(key)
        if packs is None:
            packs = self._packs[key] = _layout(heads)
        start = time.perf_counter()
        for buf, members, op in packs:
            for k, (lo, hi, sign) in members:
                head = heads[k][0].reshape(-1)
                np.multiply(head, sign, out=buf[lo:hi]) if sign < 0 else \
                    np.copyto(buf[lo:hi], head)
            self.comm.Allreduce(MPI.IN_PLACE, buf, MPI.SUM if op == "sum" else MPI.MAX)
            for k, (lo, hi, sign) in members:
                head = heads[k][0].reshape(-1)
                np.copyto(head, buf[lo:hi] * sign if sign < 0 else buf[lo:hi],
                          casting="unsafe")
            self.reduced_bytes += buf.nbytes
        self.reduce_seconds += time.perf_counter() - start


def _layout(heads: list) -> list:
    """Where each partial lies in the packed float64 buffers: sums in one (SUM), maxima
    and negated minima in another (MAX); ``(buffer, [(k, (lo, hi, sign))], op)``. float64
    holds float32 exactly and integer counts below 2**53."""
    groups: dict[str, list] = {"sum": [], "max": []}
    sizes = {"sum": 0, "max": 0}
    for k, (head, kind) in enumerate(heads):
        op = "sum" if kind == "sum" else "max"
        lo = sizes[op]
        sizes[op] += head.size
        groups[op].append((k, (lo, sizes[op], -1.0 if kind == "min" else 1.0)))
    return [(np.empty(sizes[op]), groups[op], op) for op in ("sum", "max") if groups[op]]


def data_parallel(function: Any, comm: Any) -> DataParallel:
    """``function`` (from :func:`symgrad.function`, LLVM backend) run on each process's
    shard of the batch, its sums over the batch reduced across the processes of ``comm``:
    e.g. a validation metric over data split across processes.

    >>> accuracy = sg.distributed.data_parallel(
    ...     sg.function(sg.mean(sg.argmax(logits, axis=1) == labels)), MPI.COMM_WORLD)
    >>> accuracy(X=my_images, labels=my_labels)    # the same number on every process
    """
    return DataParallel(function, comm)
