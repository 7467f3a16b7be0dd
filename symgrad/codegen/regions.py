"""Bounded pieces of code, so that compile time grows linearly with the model.

LLVM's optimizer and code generator are superlinear in the size of a function, of a loop
and of a basic block (measured, ``bench/README.md``: a 2,560-deep chain's one loop took 36 s
in the loop vectorizer and strength reduction, 4x the time of half the chain). A graph of
10,000 operators must not be one loop body. So the CPU lowering keeps every piece of code
it hands to LLVM under a fixed size:

- a loop over a tile's samples stops taking more values once its body weighs
  ``LOOP_WEIGHT`` (``tiles.py`` starts the next loop; values that cross go through tile
  buffers, as between any two loops), and an expression heavier than ``EXPR_WEIGHT`` is cut
  into named parts (``split_expressions``), so no single statement is a huge block either;
- a run of statements heavier than ``REGION_WEIGHT`` (the top of a kernel, the body of the
  loop over tiles) is cut into ``loopir.Region``s, each of which the LLVM builder compiles
  as a function of its own (``bounded``).

A small model is untouched: its code weighs far less than any of these bounds. The weights
are counts of loop IR nodes, an operator the math library expands (``exp``, ``tanh``) counted
as ``MATH_WEIGHT`` of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields, is_dataclass, replace

from symgrad.codegen import loopir as L

LOOP_WEIGHT = 600  # one loop over a tile's samples (a 784-256-10 GELU Adam step's largest: 244)
EXPR_WEIGHT = 200  # one expression
REGION_WEIGHT = 2500  # one function LLVM optimizes (that step's largest kernel: 1305)
REGION_NAMES = 160  # buffers, values and accumulators one region refers to, about
MATH_WEIGHT = 24  # an operator the math library expands into a polynomial and its ranges
# an accumulator: a vector register or several in a vectorized loop, and a horizontal
# reduction after it (a loop of 130 of them spent 2 s in LLVM's SLP vectorizer)
ACC_WEIGHT = 32
LOOP_OVERHEAD = 8
GEMM_CALL_WEIGHT = 40  # a BLAS call: its thirteen arguments stored and passed
# expanded by the LLVM builder into tens of instructions each
_LIBRARY = frozenset({"exp", "log", "log1p", "expm1", "sin", "cos", "tan", "tanh", "erf",
                      "sigmoid", "softplus", "gelu", "arctan", "power", "elu"})


def expr_weight(e: L.Expr) -> int:
    """Loop IR nodes in ``e`` (a library operator counts ``MATH_WEIGHT``); iterative."""
    total, stack = 0, [e]
    while stack:
        x = stack.pop()
        if isinstance(x, L.Op):
            total += MATH_WEIGHT if x.op in _LIBRARY else 1
            stack.extend(x.args)
        elif isinstance(x, L.Select):
            total += 1
            stack += [x.cond, x.a, x.b]
        elif isinstance(x, L.IOp):
            total += 1
            stack += [x.a, x.b]
        elif isinstance(x, L.Load):
            total += 1
            stack.append(x.offset)
    return total


def weight(body: list) -> int:
    """The weight of statements: one per statement (``ACC_WEIGHT`` per accumulator update)
    and the weight of its expressions."""
    total = 0
    for s in body:
        if isinstance(s, L.Loop):  # its blocks, index and test: a dozen instructions
            total += LOOP_OVERHEAD + weight(s.body)
        elif isinstance(s, L.Region):
            total += 1 + weight(s.body)
        elif isinstance(s, L.Acc):
            total += ACC_WEIGHT + expr_weight(s.value)
        elif isinstance(s, L.Gemm):  # a BLAS call, and loops for a tile of a few samples
            total += GEMM_CALL_WEIGHT + weight(L.gemm_as_loops(s, "weight"))
        else:
            total += 1 + sum(expr_weight(getattr(s, f.name)) for f in fields(s)
                             if is_dataclass(getattr(s, f.name)))
    return total


def split_expressions(body: list, fresh: Callable[[str], str]) -> list:
    """Statements (in loops too) with every expression heavier than ``EXPR_WEIGHT`` cut
    into named parts (``Let``s before the statement), each of at most about that weight."""
    out: list = []
    for s in body:
        if isinstance(s, (L.Loop, L.Region)):
            out.append(replace(s, body=split_expressions(s.body, fresh)))
            continue
        parts: list = []
        changes = {f.name: _cut(getattr(s, f.name), fresh, parts) for f in fields(s)
                   if is_dataclass(getattr(s, f.name))}
        out += parts + [replace(s, **changes) if parts else s]
    return out


def _cut(e: L.Expr, fresh: Callable[[str], str], parts: list) -> L.Expr:
    """``e`` with its heavy subtrees bound to ``Let``s appended to ``parts`` (post-order,
    without recursion: a derivative's product can be thousands of factors deep)."""
    if expr_weight(e) <= EXPR_WEIGHT:
        return e
    done: dict[int, tuple[L.Expr, int]] = {}  # id -> (new expression, its weight now)
    stack: list = [(e, False)]
    while stack:
        x, ready = stack.pop()
        if id(x) in done:
            continue
        kids = _children(x)
        if not ready:
            stack.append((x, True))
            stack += [(k, False) for k in kids if id(k) not in done]
            continue
        new_kids = [done[id(k)][0] for k in kids]
        w = 1 + sum(done[id(k)][1] for k in kids)
        if isinstance(x, L.Op) and x.op in _LIBRARY:
            w += MATH_WEIGHT - 1
        y = _rebuilt(x, new_kids)
        if w > EXPR_WEIGHT and isinstance(x, (L.Op, L.Select)):
            name = fresh("part")
            parts.append(L.Let(name, y))
            y, w = L.Local(name, x.dtype), 0
        done[id(x)] = (y, w)
    return done[id(e)][0]


def _children(x: L.Expr) -> list:
    if isinstance(x, L.Op):
        return list(x.args)
    if isinstance(x, L.Select):
        return [x.cond, x.a, x.b]
    return []  # loads, index arithmetic, constants: left whole


def _rebuilt(x: L.Expr, kids: list) -> L.Expr:
    if isinstance(x, L.Op):
        return replace(x, args=tuple(kids))
    if isinstance(x, L.Select):
        return replace(x, cond=kids[0], a=kids[1], b=kids[2])
    return x


def bounded(body: list) -> list:
    """``body`` with runs of statements cut into ``Region``s of at most about
    ``REGION_WEIGHT`` and ``REGION_NAMES`` buffers and values (a region's arguments: LLVM's
    interprocedural passes are quadratic in them), where a cut is safe: a region's ``Let``s
    are not read after it (values that cross a cut go through buffers or accumulators,
    which a region reaches by pointer); scratch (``Alloc``) and index values (``Let``s of
    index arithmetic) stay outside every region, and so does a loop whose body is cut into
    regions already (the loop over tiles). Unchanged when the whole body weighs less than
    ``REGION_WEIGHT``."""
    weights = [weight([s]) for s in body]
    if sum(weights) <= REGION_WEIGHT:
        return body
    names = [statement_names(s) for s in body]
    last_read: dict[str, int] = {}  # local name -> the last statement reading it
    for k, s in enumerate(body):
        for name in locals_read([s]):
            last_read[name] = k
    out: list = []
    run: list = []
    run_weight = 0
    run_names: set[str] = set()
    horizon = -1  # the last statement reading a Let of the run

    def close(after: int, full: bool = False) -> None:
        """End the run; ``after``: the first statement after it."""
        nonlocal run, run_weight, horizon
        if horizon >= after:  # a Let of the run is read after it: the run stays inline
            out.extend(run)
        elif full or run_weight > REGION_WEIGHT // 8:  # (a few statements stay inline)
            out.append(L.Region(run))
        else:
            out.extend(run)
        run, run_weight, horizon = [], 0, -1
        run_names.clear()

    for k, s in enumerate(body):
        if isinstance(s, L.Alloc) or (isinstance(s, L.Let) and _index_only(s.value)) or (
                isinstance(s, L.Loop) and any(isinstance(t, L.Region) for t in s.body)):
            close(k)
            out.append(s)
            continue
        run.append(s)
        run_weight += weights[k]
        run_names |= names[k]
        if isinstance(s, L.Let):
            horizon = max(horizon, last_read.get(s.name, -1))
        if (run_weight >= REGION_WEIGHT or len(run_names) >= REGION_NAMES) and horizon <= k:
            close(k + 1, full=True)
    close(len(body))
    return out


def buffers_in(body: list) -> set[str]:
    """The buffers (and scratch) statements read or write, recursively."""
    names = {e.buf for e in L.collect(body, L.Load)}
    for s in L.statements(body):
        if isinstance(s, (L.Store, L.Alloc)):
            names.add(s.buf)
        elif isinstance(s, L.Gemm):
            names |= {s.a, s.b, s.c}
    return names


def statement_names(s) -> set[str]:
    """The buffers, values and accumulators statement ``s`` refers to."""
    return buffers_in([s]) | locals_read([s]) | {
        t.name for t in L.statements([s]) if isinstance(t, (L.Acc, L.AccInit))}


def locals_read(body: list) -> set[str]:
    """Names of the values the statements read (recursively): ``Local``s, and ``Index``es
    (a tile's first sample is a ``Let`` read as an index)."""
    return {e.name for e in L.collect(body, (L.Local, L.Index))}


def _index_only(e: L.Expr) -> bool:
    """Whether ``e`` is index arithmetic over indices, sizes and constants only."""
    stack = [e]
    while stack:
        x = stack.pop()
        if isinstance(x, L.IOp):
            stack += [x.a, x.b]
        elif not isinstance(x, (L.Index, L.Dim, L.Const)):
            return False
    return True
