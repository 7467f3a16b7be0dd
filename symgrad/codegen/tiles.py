"""A CPU pass over the batch as a loop over tiles of samples, each tile one loop per group.

The lowering (``lower.py``) hands over the pass as *groups* in dependency order: statements
for one sample (the batch index ``n``) or for the whole tile (a BLAS call over the tile's
rows). Here each run of per-sample groups becomes one loop over the tile's samples, so

- a chain of per-sample scalars (``z``, ``softplus(z)``, ``sigmoid(z) - y``) is one loop
  with no inner loop: LLVM vectorizes it *across samples*, 8 or 16 lanes, math library
  included;
- a group with loops of its own (a sample's row of features) is a loop of its own, and
  vectorizes along the row;
- a per-sample scalar one loop computes and a later loop reads goes through a tile buffer
  of ``T`` values (registers do not live from one loop to the next).

Nothing of length N is written: the tile buffers are scratch of ``T`` samples, reused by
every tile. The last tile is partial (``nb < T``); every loop and call runs to ``nb``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, is_dataclass, replace
from typing import Callable

from symgrad.codegen import loopir as L
from symgrad.codegen import regions
from symgrad.codegen.loopir import collect  # noqa: F401 - (its callers import it here)

TILE_MAX = 256  # samples per tile at most
# What a tile's scratch may take (on the stack: the pool's threads get large stacks). 2 MiB
# measured best on the MLP rows (bench/README.md): a weight gradient's GEMM then adds 64 to
# 256 samples into its partial per call, against 8 at 256 KiB (2.8x slower)
TILE_BYTES = 2 << 20

SAMPLE = L.Index("n")
TILE_START, TILE_COUNT = L.Index("n0"), L.Index("nb")
ROW = L.IOp("-", SAMPLE, TILE_START)  # a sample's row in the tile's buffers


@dataclass
class Group:
    """Statements of one value of the pass: run for each sample of the tile (``n`` the
    sample), or once for the whole tile (``per_sample=False``)."""
    body: list
    per_sample: bool = True
    last: bool = False  # nothing in the tile reads it (a sum into a partial): runs last


def tile_size(bytes_per_sample: int) -> int:
    """Samples per tile: a power of two whose scratch fits ``TILE_BYTES``."""
    fits = max(1, TILE_BYTES // max(1, bytes_per_sample))
    t = 1
    while t * 2 <= min(fits, TILE_MAX):
        t *= 2
    return t


def tile_loop(groups: list[Group], tile: int, fresh: Callable[[str], str], prologue: list,
              tile_init: list, tile_flush: list) -> L.Loop:
    """The pass's loop over tiles of ``tile`` samples of ``[start, stop)``. ``tile_init``
    and ``tile_flush`` run before and after each tile (float32 sums start from 0 and go into
    their float64 totals); tile buffers the loops need are allocated into ``prologue``."""
    groups = [g for g in groups if not g.last] + [g for g in groups if g.last]
    groups = [replace(g, body=regions.split_expressions(g.body, fresh)) if g.per_sample
              else g for g in groups]
    loops = _fused(groups)
    _through_tile_buffers(loops, tile, fresh, prologue)
    start, stop = L.Index("start"), L.Index("stop")
    count = L.IOp("//", L.iadd(L.IOp("-", stop, start), tile - 1), L.Const(tile, L.INT))
    body: list = [L.Let("n0", L.iadd(start, L.imul(L.Index("tile"), tile))),
                  L.Let("nb", L.IOp("min", L.Const(tile, L.INT), L.IOp("-", stop, TILE_START)))]
    body += tile_init
    for g in loops:
        if g.per_sample:
            body.append(L.Loop("n", TILE_START, L.iadd(TILE_START, TILE_COUNT), g.body,
                               reduction=_accumulates(g.body)))
        else:
            body += g.body
    body += tile_flush
    return L.Loop("tile", L.Const(0, L.INT), count, regions.bounded(body))


def _flat(body: list) -> bool:
    """No loop of its own: vectorizes across samples."""
    return all(isinstance(s, (L.Let, L.Store, L.Acc)) for s in body)


def _fused(groups: list[Group]) -> list[Group]:
    """Consecutive per-sample groups of the same kind (flat or with loops) as one loop, up
    to ``regions.LOOP_WEIGHT`` (then the next loop starts: compile time stays linear)."""
    out: list[Group] = []
    loop_weight = 0
    for g in [piece for group in groups for piece in _pieces(group)]:
        if not g.body:
            continue
        last = out[-1] if out else None
        w = regions.weight(g.body)
        if (last is not None and g.per_sample and last.per_sample
                and _flat(g.body) == _flat(last.body)
                and loop_weight + w <= regions.LOOP_WEIGHT):
            last.body += g.body
            loop_weight += w
        else:
            out.append(Group(list(g.body), g.per_sample))
            loop_weight = w
    return out


def _pieces(g: Group) -> list[Group]:
    """A flat per-sample group cut into groups of at most about ``regions.LOOP_WEIGHT``
    and ``regions.REGION_NAMES`` names (one value can be a sum of a thousand products;
    the values its pieces pass on go through tile buffers). A group with loops of its own
    stays whole: its accumulators start and finish within it."""
    if not (g.per_sample and _flat(g.body)) or regions.weight(g.body) <= regions.LOOP_WEIGHT:
        return [g]
    pieces: list[Group] = []
    body: list = []
    w, names = 0, set()
    for s in g.body:
        body.append(s)
        w += regions.weight([s])
        names |= regions.statement_names(s)
        if w >= regions.LOOP_WEIGHT or len(names) >= regions.REGION_NAMES:
            pieces.append(Group(body, g.per_sample, g.last))
            body, w, names = [], 0, set()
    if body:
        pieces.append(Group(body, g.per_sample, g.last))
    return pieces


def _accumulates(body: list) -> bool:
    return any(isinstance(s, L.Acc) for s in body)


def _through_tile_buffers(loops: list[Group], tile: int, fresh: Callable[[str], str],
                          prologue: list) -> None:
    """A sample's scalar defined (``Let``) in one loop and read in a later one is stored
    into a tile buffer where it is defined and loaded where it is read."""
    defined: dict[str, int] = {}  # Let name -> the loop defining it
    for k, g in enumerate(loops):
        if g.per_sample:
            for s in g.body:
                if isinstance(s, L.Let):
                    defined[s.name] = k
    buffers: dict[str, tuple[str, object]] = {}  # Let name -> (tile buffer, dtype)
    for k, g in enumerate(loops):
        foreign = {name for name in _locals_read(g.body)
                   if name in defined and defined[name] != k}
        for name in foreign:
            if name not in buffers:
                buffers[name] = (fresh("tl"), None)
        if foreign:
            g.body = [map_stmt(s, _loader(foreign, buffers)) for s in g.body]
    for k, g in enumerate(loops):
        body = []
        for s in g.body:
            body.append(s)
            if isinstance(s, L.Let) and s.name in buffers and defined.get(s.name) == k:
                dt = L.value_dtype(s.value)
                buf = buffers[s.name][0]
                buffers[s.name] = (buf, dt)
                prologue.append(L.Alloc(buf, dt, L.Const(tile, L.INT)))
                body.append(L.Store(buf, ROW, L.Local(s.name, dt)))
        g.body = body


def _loader(names: set[str], buffers: dict) -> Callable[[L.Expr], L.Expr | None]:
    def load(e: L.Expr) -> L.Expr | None:
        if isinstance(e, L.Local) and e.name in names:
            return L.Load(buffers[e.name][0], ROW, e.dtype)
        return None
    return load


def _locals_read(body: list) -> set[str]:
    return {e.name for e in collect(body, L.Local)}


def substitute(e: L.Expr, index: L.Index, value: L.Expr) -> L.Expr:
    """``e`` with loop index ``index`` replaced by ``value``."""
    return map_expr(e, lambda x: value if x == index else None)


def map_expr(e, fn: Callable[[L.Expr], L.Expr | None]):
    """``e`` with every sub-expression ``fn`` replaces (``fn`` returns None to descend)."""
    new = fn(e)
    if new is not None:
        return new
    if isinstance(e, L.Op):
        return replace(e, args=tuple(map_expr(a, fn) for a in e.args))
    if isinstance(e, (L.IOp, L.Select, L.Load)):
        changes = {f.name: map_expr(getattr(e, f.name), fn) for f in fields(e)
                   if is_dataclass(getattr(e, f.name))}
        return replace(e, **changes)
    return e


def map_stmt(s, fn: Callable[[L.Expr], L.Expr | None]):
    """Statement ``s`` (recursively) with its expressions mapped by ``fn``."""
    if isinstance(s, L.Loop):
        return L.Loop(s.index, map_expr(s.start, fn), map_expr(s.stop, fn),
                      [map_stmt(t, fn) for t in s.body], s.reduction)
    if isinstance(s, L.Region):
        return L.Region([map_stmt(t, fn) for t in s.body])
    changes = {f.name: map_expr(getattr(s, f.name), fn) for f in fields(s)
               if is_dataclass(getattr(s, f.name))}
    return replace(s, **changes)
