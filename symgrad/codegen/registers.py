"""Intermediate buffers that never leave the loop that writes them become registers.

After fusion (``fusion.py``) a stage between passes is a few long loops, and an optimizer
update's intermediates (the combined gradient, the decayed gradient) are each stored into a
buffer of the parameter's size and read back a few statements later in the same iteration.
LLVM forwards each store to the loads after it, but it cannot drop the store: a buffer is
memory the caller can see. For a 20,000 x 64 embedding's Adam update those stores were two
of the loop's nine streams over 5 MB arrays. Here such a buffer's store becomes a ``Let``
and its loads the ``Local`` it names, when nothing else can tell the difference:

- the buffer is an intermediate (role ``temp``), not an output the caller gets;
- one statement stores it, a statement directly in a loop's body (not inside a region, whose
  values do not outlive it), and every load of it anywhere in the program is in a later
  statement of that same body, at the offset stored (the element of this iteration); no
  BLAS call reads it (a computed weight matrix, ``X @ (U @ V)``: a call reads the buffer).

CPU only: the GPU runtime reads accumulator targets itself (``cuda_function.py``).
"""

from __future__ import annotations

from collections import Counter

from symgrad.codegen import loopir as L
from symgrad.codegen.tiles import map_stmt


def keep_in_registers(kernels: list[L.Kernel], buffers: dict[str, L.Buffer]) -> list[str]:
    """Rewrite ``kernels`` in place; returns the buffers no kernel touches any more."""
    loads: Counter = Counter()
    stores: Counter = Counter()
    for k in kernels:
        loads.update(e.buf for e in L.collect(k.body, L.Load))
        for s in L.statements(k.body):
            if isinstance(s, L.Store):
                stores[s.buf] += 1
            elif isinstance(s, L.Gemm):  # a BLAS call reads and writes whole buffers
                stores[s.c] += 2  # (never registers: counted as more than the one
                loads[s.a] += 1   # store, and as loads no Load node matches)
                loads[s.b] += 1
    candidates = {name for name, b in buffers.items()
                  if b.role == "temp" and stores[name] == 1}
    freed: list[str] = []
    for k in kernels:
        for s in L.statements(k.body):
            if isinstance(s, L.Loop):
                freed += _registers_in(s, candidates, loads, buffers)
    return freed


def _registers_in(loop: L.Loop, candidates: set[str], loads: Counter,
                  buffers: dict[str, L.Buffer]) -> list[str]:
    """The candidates ``loop``'s own body stores and then reads only at that element."""
    freed = []
    body = loop.body
    for i, s in enumerate(body):
        if not (isinstance(s, L.Store) and s.buf in candidates):
            continue
        dtype = buffers[s.buf].dtype
        later = [e for e in L.collect(body[i + 1:], L.Load) if e.buf == s.buf]
        if (len(later) != loads[s.buf] or any(e.offset != s.offset for e in later)
                or L.value_dtype(s.value) != dtype):
            continue
        local = L.Local(f"{s.buf}.reg", dtype)
        body[i] = L.Let(local.name, s.value)

        def read(e: L.Expr, buf: str = s.buf, local: L.Local = local) -> L.Expr | None:
            return local if isinstance(e, L.Load) and e.buf == buf else None

        body[i + 1:] = [map_stmt(t, read) for t in body[i + 1:]]
        candidates.discard(s.buf)
        freed.append(s.buf)
    return freed
