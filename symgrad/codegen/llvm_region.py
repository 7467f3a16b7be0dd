"""A ``loopir.Region`` compiled as an LLVM function of its own, called where it stands.

LLVM's passes are superlinear in a function's size (``regions.py``); a region bounds what
each function holds. The region's function takes, as arguments:

- the buffers it reads or writes (``noalias``: distinct arrays, as in a kernel's body);
- the runtime sizes table (it loads the sizes it uses);
- the values of the enclosing code it reads (loop indices, ``Let``s), by value;
- the accumulators it reads or updates, by pointer to the caller's slot: copied into slots
  of its own on entry and back on return, so LLVM promotes them to registers (and
  vectorizes a reduction over them) as it would in one function.

The function is ``noinline``: inlined back, the caller would be as large as before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llvmlite import ir

from symgrad.codegen import loopir as L
from symgrad.codegen.loopir import collect
from symgrad.codegen.regions import buffers_in

if TYPE_CHECKING:
    from symgrad.codegen.llvm import KernelBuilder

PTR = ir.PointerType()
I64 = ir.IntType(64)


def outline(kb: KernelBuilder, region: L.Region, reduction: bool) -> None:
    """Emit ``region`` as a call to a new function of ``kb``'s module."""
    stmts = list(L.statements(region.body))
    if any(isinstance(s, L.Alloc) for s in stmts):  # scratch must outlive the call
        kb.block(region.body, reduction)
        return
    defined = {s.name for s in stmts if isinstance(s, L.Let)} | \
        {s.index for s in stmts if isinstance(s, L.Loop)}
    for s in stmts:  # an accumulator started inside lives in the caller's slot
        if isinstance(s, L.AccInit) and s.name not in kb.accs:
            kb.new_acc_slot(s)
    found = collect(region.body, (L.Local, L.Index, L.Dim, L.Load))  # one walk
    names = {e.name for e in found if isinstance(e, (L.Local, L.Index))}
    accs = sorted({s.name for s in stmts if isinstance(s, (L.Acc, L.AccInit))} |
                  {n for n in names if n in kb.accs} |
                  {n[:-2] for n in names if n.endswith("_i") and n[:-2] in kb.accs})
    values = sorted(n for n in names - defined - set(accs) if n in kb.scope)
    buffers = sorted(buffers_in(region.body))
    slots = []
    for name in accs:
        slot, t, index_slot = kb.accs[name]
        slots.append(slot)
        if index_slot is not None:
            slots.append(index_slot)
    args = [kb.pointer(b) for b in buffers] + [kb.dims_table] + \
        [kb.scope[n] for n in values] + slots
    kb.regions += 1
    fn = ir.Function(kb.module, ir.FunctionType(ir.VoidType(), [a.type for a in args]),
                     f"{kb.kernel.name}.region{kb.regions}")
    fn.linkage = "internal"
    fn.attributes.add("noinline")
    for arg, name in zip(fn.args, buffers + ["dims"] + values):
        arg.name = name
    for k, arg in enumerate(fn.args):
        if k < len(buffers) + 1 or k >= len(buffers) + 1 + len(values):
            arg.add_attribute("noalias")
    saved = kb.enter(fn)
    kb.ptrs.update(zip(buffers, fn.args))
    kb.load_dims(fn.args[len(buffers)], {e.name for e in found if isinstance(e, L.Dim)})
    kb.scope.update(zip(values, fn.args[len(buffers) + 1:]))
    outside = iter(fn.args[len(buffers) + 1 + len(values):])
    copies = []  # (the caller's slot, the region's slot, type)
    for name in accs:
        _, t, index_slot = saved.accs[name]
        mine = kb.entry_alloca(t, name)
        copies.append((next(outside), mine, t))
        mine_index = None
        if index_slot is not None:
            mine_index = kb.entry_alloca(I64, name + "_i")
            copies.append((next(outside), mine_index, I64))
        kb.accs[name] = (mine, t, mine_index)
    for theirs, mine, t in copies:
        kb.b.store(kb.b.load(theirs, typ=t), mine)
    kb.block(region.body, reduction)
    for theirs, mine, t in copies:
        kb.b.store(kb.b.load(mine, typ=t), theirs)
    kb.b.ret_void()
    kb.leave(saved)
    kb.b.call(fn, args)
