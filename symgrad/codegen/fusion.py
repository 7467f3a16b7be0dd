"""Loop fusion for the stages between passes: values over one shape in one loop nest.

A stage between passes computes each value as its own loop nest over its shape (an
optimizer update is a dozen: the decayed gradient, both moments, the new parameter, the
non-finite counts). Here consecutive nests over the same bounds become one nest, so each
element of the parameter is read once and the intermediates stay in registers (LLVM
forwards a store to the load after it in the same iteration). A value's statements are
``pre + [nest] + post``: a perfect loop nest, with an accumulator set up before it and its
total stored after it for a reduction to a scalar. Two values share a nest only when that
is safe:

- the later one reads what the earlier ones' nests write only at the element being written
  (an elementwise chain), never at another element (a transpose, a matmul);
- it reads nothing the earlier ones store after their nests (a finished reduction).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from symgrad.codegen import loopir as L
from symgrad.codegen import regions
from symgrad.codegen.tiles import collect, map_stmt


@dataclass
class _Nest:
    pre: list
    loops: list[L.Loop]  # outermost first; the innermost holds the body
    post: list
    stored: set[str] = field(default_factory=set)  # what its statements store
    weight: int = 0  # ``regions.weight`` of its body
    offsets: dict = field(default_factory=dict)  # ``_store_offsets`` of its body

    @property
    def body(self) -> list:
        return self.loops[-1].body

    def bounds(self) -> list:
        return [(lp.start, lp.stop) for lp in self.loops]


def fuse(values: list[list]) -> list:
    """The statements of ``values`` (one list per value, in dependency order), fused where
    safe. A value joins the latest nest it fits that nothing it reads is written after (so
    it moves up past values it does not depend on: a scalar's update between two nests
    over a parameter's shape does not keep them apart)."""
    items: list = []  # _Nest groups, or a value's statements left as they are
    stored: list[set[str]] = []  # by item: the buffers its statements store
    for stmts in values:
        nest = _as_nest(stmts)
        if nest is not None and _joined(items, stored, nest, _loaded(stmts)):
            continue
        items.append(nest if nest is not None else stmts)
        stored.append(nest.stored if nest is not None else _stored(stmts))
    out: list = []
    for item in items:
        out += _statements(item) if isinstance(item, _Nest) else item
    return out


def _joined(items: list, stored: list[set[str]], nest: _Nest, reads: set[str]) -> bool:
    """Whether ``nest`` joined the latest group it fits, with nothing it reads stored
    after that group (each item's stored buffers kept, so a value costs one look back)."""
    for k in range(len(items) - 1, -1, -1):
        item = items[k]
        if isinstance(item, _Nest) and _fits(item, nest):
            _append(item, nest)
            stored[k] = item.stored
            return True
        if stored[k] & reads:
            return False
    return False


def _as_nest(stmts: list) -> _Nest | None:
    loops = [i for i, s in enumerate(stmts) if isinstance(s, L.Loop)]
    if len(loops) != 1 or any(isinstance(s, (L.Alloc, L.Gemm)) for s in stmts):
        return None
    k = loops[0]
    chain = [stmts[k]]
    while len(chain[-1].body) == 1 and isinstance(chain[-1].body[0], L.Loop):
        chain.append(chain[-1].body[0])
    nest = _Nest(list(stmts[:k]), chain, list(stmts[k + 1:]), _stored(stmts))
    nest.weight = regions.weight(nest.body)
    nest.offsets = _store_offsets(nest.body)
    return nest


def _fits(group: _Nest, nest: _Nest) -> bool:
    if group.bounds() != nest.bounds() or group.weight + nest.weight > regions.LOOP_WEIGHT:
        return False
    finished = _stored(group.post)
    if finished & (_loaded(nest.pre) | _loaded([nest.loops[0]]) | _loaded(nest.post)):
        return False
    renamed = _renamed(nest, group)
    written = group.offsets
    return all(offset == written[buf] for buf, offset in _load_offsets(renamed)
               if buf in written)


def _append(group: _Nest, nest: _Nest) -> None:
    group.pre += nest.pre
    renamed = _renamed(nest, group)
    group.loops[-1].body = group.body + renamed
    for mine, theirs in zip(group.loops, nest.loops):
        mine.reduction = mine.reduction or theirs.reduction
    group.post += nest.post
    group.stored = group.stored | nest.stored
    group.weight += nest.weight
    for buf, offset in _store_offsets(renamed).items():
        known = group.offsets.get(buf, offset)
        group.offsets[buf] = offset if known == offset else None


def _renamed(nest: _Nest, group: _Nest) -> list:
    """``nest``'s body with its loop indices renamed to ``group``'s."""
    names = {lp.index: L.Index(g.index) for lp, g in zip(nest.loops, group.loops)}

    def rename(e: L.Expr) -> L.Expr | None:
        return names.get(e.name) if isinstance(e, L.Index) else None
    return [map_stmt(s, rename) for s in nest.body]


def _statements(group: _Nest) -> list:
    return group.pre + [_collapsed(group.loops)] + group.post


def _collapsed(loops: list[L.Loop]) -> L.Loop:
    """The nest as one loop over its elements when every access is row-major in its
    indices (``W[i, j]`` is ``W[f]``): a (784, 10) update vectorizes over 7,840 elements,
    not 10 at a time. Tried on the whole nest, then without its outer loops (a combine
    over threads keeps its loop over threads)."""
    for k in range(len(loops) - 1):
        inner = loops[k:]
        if any(lp.start != L.Const(0, L.INT) for lp in inner):
            continue
        shape = tuple(lp.stop.value if isinstance(lp.stop, L.Const) else
                      lp.stop.name if isinstance(lp.stop, L.Dim) else None for lp in inner)
        if None in shape:
            continue
        flat = L.flat_offset(tuple(L.Index(lp.index) for lp in inner), shape)
        marker = L.Index("#flat")
        body = [map_stmt(s, lambda e: marker if e == flat else None) for s in inner[-1].body]
        names = {lp.index for lp in inner}
        if _indices_used(body) & names:
            continue
        index = L.Index(inner[0].index)
        body = [map_stmt(s, lambda e: index if e == marker else None) for s in body]
        size = L.Const(1, L.INT)
        for d in shape:
            size = L.imul(size, L.size_expr(d))
        merged = L.Loop(index.name, L.Const(0, L.INT), size, body,
                        any(lp.reduction for lp in inner))
        if k == 0:
            return merged
        outer = [L.Loop(lp.index, lp.start, lp.stop, [], lp.reduction) for lp in loops[:k]]
        for a, b in zip(outer, outer[1:] + [merged]):
            a.body = [b]
        return outer[0]
    return loops[0]


def _indices_used(stmts: list) -> set[str]:
    # an inner loop's own index counts too (it shadows nothing here)
    return ({e.name for e in collect(stmts, L.Index)}
            | {s.index for s in _walk(stmts) if isinstance(s, L.Loop)})


def _stored(stmts: list) -> set[str]:
    found: set[str] = set()
    for s in _walk(stmts):
        if isinstance(s, L.Store):
            found.add(s.buf)
    return found


def _store_offsets(stmts: list) -> dict[str, L.Expr]:
    """Each buffer the statements store into, at its one offset (a buffer stored at two
    offsets maps to None: nothing may read it in the same nest)."""
    found: dict[str, L.Expr] = {}
    for s in _walk(stmts):
        if isinstance(s, L.Store):
            found[s.buf] = s.offset if found.get(s.buf, s.offset) == s.offset else None
        elif isinstance(s, L.Gemm):
            found[s.c] = None
    return found


def _load_offsets(stmts: list) -> list[tuple[str, L.Expr]]:
    return [(e.buf, e.offset) for e in collect(stmts, L.Load)]


def _loaded(stmts: list) -> set[str]:
    return {buf for buf, _ in _load_offsets(stmts)}


def _walk(stmts: list):
    for s in stmts:
        yield s
        if isinstance(s, L.Loop):
            yield from _walk(s.body)

