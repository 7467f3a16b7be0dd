"""Scheduling: which nodes get a buffer, and in which pass over the data each is computed.

The batch dimension (the symbolic size the inputs share, ``N``) is the outer loop of a
*pass*; inside it every value with that dimension is computed one sample at a time into
small scratch buffers, and reductions over the batch accumulate (per thread) without ever
writing an array of length N. Values without the batch dimension are computed *between*
passes (parameters-only work before, finished reductions after). A pass is split in two
only when a value reduced over the batch is needed per sample again (a normalization), or
an operator needs a whole batched array at once; then the batched value is stored whole
and the plan says so. Elementwise and shape operators are inlined into their consumers
(recomputed, never stored) unless several consumers share them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from symgrad.codegen.gather import scatters_over_batch
from symgrad.expr import functions as F
from symgrad.expr import leaves, tensors
from symgrad.expr import ops_tensor as T
from symgrad.expr.leaves import CONST, INPUT, PARAM, SIZE
from symgrad.expr.node import CONTRACT, LEAF, REDUCE, Expr, toposort
from symgrad.expr.shapes import fmt, split

LEAVES = (INPUT, PARAM, CONST, SIZE)
REDUCTIONS = (T.SUM, T.MEAN, T.MAX, T.MIN, T.ARGMAX, T.LOGSUMEXP, T.MATMUL)
BATCH_ACCUMULATORS = (T.SUM, T.MEAN, T.MAX, T.MIN)  # + matmul contracting the batch axis


def decompose(outputs: list[Expr]) -> list[Expr]:
    """Rewrite softmax/log_softmax as ``exp(x - logsumexp)`` / ``x - logsumexp`` so that
    every remaining non-elementwise operator is a plain reduction or a shape map."""
    memo: dict[Expr, Expr] = {}
    for n in toposort(outputs):
        srcs = tuple(memo[s] for s in n.srcs)
        if n.op in (T.SOFTMAX, T.LOG_SOFTMAX):
            x = srcs[0]
            shifted = x - tensors.logsumexp(x, n.arg, keepdims=True)
            memo[n] = F.exp(shifted) if n.op is T.SOFTMAX else shifted
        else:
            memo[n] = n if srcs == n.srcs else Expr(n.op, srcs, n.arg)
    return [memo[o] for o in outputs]


def split_batch_reductions(outputs: list[Expr], batch: str | None) -> list[Expr]:
    """A sum (mean, max, min) over the batch axis and other axes of a per-sample value,
    rewritten as the reduction over the other axes, per sample, then over the batch:
    ``sum(X)`` of an (N, 16) X is ``sum(sum(X, axis=1))`` (a mean that sum divided by
    the count). The inner one is a reduction loop in registers, vectorized; left whole, each
    element went into the accumulator's memory partial in turn (one add after another, in
    float64: ``sg.sum(X)`` took 3x, and ``sg.max(X)`` 9x, the time of reading X)."""
    memo: dict[Expr, Expr] = {}
    for n in toposort(outputs):
        srcs = tuple(memo[s] for s in n.srcs)
        memo[n] = n if srcs == n.srcs else Expr(n.op, srcs, n.arg)
        if n.op not in BATCH_ACCUMULATORS or not per_sample(srcs[0], batch):
            continue
        (x,), (axes, keep) = srcs, n.arg
        axes = tuple(range(x.ndim)) if axes is None else axes
        bax = x.shape.index(batch)
        if bax not in axes or len(axes) == 1 or (n.op is T.MEAN and x.dtype.kind != "f"):
            continue  # (an integer mean adds in float64, as the reference: left whole)
        others = tuple(a for a in axes if a != bax)
        at = bax if keep else bax - sum(a < bax for a in others)
        if n.op is T.MEAN:  # the sum's one rounded division by the count, as the reference
            split = tensors.sum(tensors.sum(x, others, keep), at, keep) / leaves.size(
                tuple(x.shape[a] for a in axes), x.dtype)
        else:
            reduce = _REDUCERS[n.op]
            split = reduce(reduce(x, others, keep), at, keep)
        if split.dtype == n.dtype:
            memo[n] = split
    return [memo[o] for o in outputs]


_REDUCERS = {T.SUM: tensors.sum, T.MAX: tensors.max, T.MIN: tensors.min}


def choose_batch_dim(nodes: list[Expr]) -> str | None:
    """The symbolic dimension most inputs share (the batch), or ``None``."""
    counts = Counter(d for n in nodes if n.op is INPUT for d in set(n.shape)
                     if isinstance(d, str))
    if not counts:
        return None
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]


def per_sample(n: Expr, batch: str | None) -> bool:
    """Whether ``n`` is computed one sample at a time inside a pass: its shape holds the
    batch dimension exactly once. A value with the batch on two axes (``x - y`` of shapes
    (N,) and (N, 1), ``X @ X.T``) pairs every sample with every other: it is computed whole,
    between passes, from stored values."""
    return batch is not None and n.shape.count(batch) == 1


def is_batch_accumulator(n: Expr, batch: str | None) -> bool:
    """A reduction that sums (max, min) the batch axis of a per-sample value away (a
    scatter-add whose indices run over the batch among them, ``gather.py``)."""
    if batch is None or batch in n.shape:
        return False
    if scatters_over_batch(n, batch):
        return True
    if n.op is T.MATMUL:
        a, b = n.srcs
        return (a.shape[-1] == batch and a.ndim <= 2 and b.ndim <= 2
                and per_sample(a, batch) and per_sample(b, batch))
    return n.op in BATCH_ACCUMULATORS and per_sample(n.srcs[0], batch)


def reads_other_samples(n: Expr, s: Expr, batch: str | None) -> bool:
    """Whether per-sample ``n`` reads per-sample source ``s`` at samples other than its own:
    then ``s`` must be complete (stored whole, from an earlier pass) before ``n`` runs.
    Elementwise, broadcast, transpose and reductions over other axes keep the sample index;
    a matmul contracting the batch axis of one operand into an output that keeps the batch
    of the other, or a reshape that moves the batch axis, does not."""
    if not (per_sample(n, batch) and per_sample(s, batch)):
        return False
    if n.op is T.MATMUL:
        a, b = n.srcs
        contracted = a.shape[-1] if s is a else (b.shape[0] if b.ndim == 1 else b.shape[-2])
        return contracted == batch
    if n.op is T.RESHAPE:
        return _before_batch(n.shape, batch) != _before_batch(s.shape, batch)
    return False


def _before_batch(shape: tuple, batch: str) -> tuple:
    """The size of the axes before the batch axis, as the product of its ints and the
    multiset of its symbolic dimensions (a reshape that keeps it keeps every sample's
    elements together)."""
    return split(shape[:shape.index(batch)])


@dataclass
class Plan:
    """The schedule: ``stages[s]`` lists the nodes computed at stage ``s`` (even: between
    passes, odd: inside a pass over the batch)."""
    outputs: list[Expr]
    batch: str | None
    stage: dict[Expr, int]
    materialized: set[Expr]
    stored_whole: set[Expr]
    accumulators: set[Expr]
    order: list[Expr]
    names: dict[Expr, str] = field(default_factory=dict)

    def stages(self) -> list[tuple[int, list[Expr]]]:
        by: dict[int, list[Expr]] = {}
        for n in self.order:
            if n in self.materialized:  # an accumulator runs in the pass before its stage
                s = self.stage[n] - 1 if n in self.accumulators else self.stage[n]
                by.setdefault(s, []).append(n)
        return sorted(by.items())

    @property
    def passes(self) -> int:
        """How many passes over the batch the computation makes."""
        return len({s for s, _ in self.stages() if s % 2 == 1})


def schedule(outputs: list[Expr]) -> Plan:
    nodes = toposort(outputs)
    batch = choose_batch_dim(nodes)
    users: Counter = Counter()
    for n in nodes:
        for s in set(n.srcs):
            users[s] += 1
    out_set = set(outputs)

    materialized: set[Expr] = set()
    for n in nodes:
        if n.op in LEAVES:
            continue
        if (n in out_set or n.op in REDUCTIONS or n.op.kind in (REDUCE, CONTRACT)
                or scatters_over_batch(n, batch)):
            materialized.add(n)
        elif users[n] > 1 and not _cheap(n):
            materialized.add(n)
    _bound_inline_depth(nodes, materialized)

    stage: dict[Expr, int] = {}
    stored_whole: set[Expr] = set()
    accumulators: set[Expr] = set()
    for n in nodes:
        if n.op in LEAVES or n.op.kind == LEAF:
            stage[n] = 0
            continue
        base = max((stage[s] for s in n.srcs), default=0)
        if per_sample(n, batch):
            for s in n.srcs:  # a source read across samples is finished in an earlier pass
                if s.op not in LEAVES and reads_other_samples(n, s, batch):
                    base = max(base, stage[s] + 1)
            stage[n] = base if base % 2 == 1 else base + 1
        elif is_batch_accumulator(n, batch):
            accumulators.add(n)
            src_stage = max(stage[s] for s in n.srcs)
            src_stage = src_stage if src_stage % 2 == 1 else src_stage + 1
            stage[n] = src_stage + 1
        else:
            for s in n.srcs:  # a whole per-sample array feeds a value computed whole
                if per_sample(s, batch):
                    if s.op not in LEAVES:  # an input is already whole in memory
                        _store_whole(s, stored_whole, materialized)
                    base = max(base, stage[s] + 1)
            stage[n] = base if base % 2 == 0 else base + 1
    for n in nodes:  # a batched value read by a later stage must be stored whole
        for s in n.srcs:
            if (batch is not None and batch in s.shape and s.op not in LEAVES
                    and stage[n] != stage[s]
                    and not (n in accumulators and stage[n] == stage[s] + 1)):
                _store_whole(s, stored_whole, materialized)
    return Plan(outputs, batch, stage, materialized, stored_whole, accumulators, nodes)


# How many inlined operators one value may nest: deeper chains get a register or buffer
# every this many levels, so lowering, printing and JIT never recurse deeper than this
# (a chain of 10,000 operators compiles like 200 short ones).
MAX_INLINE_DEPTH = 48


def _bound_inline_depth(nodes: list[Expr], materialized: set[Expr]) -> None:
    depth: dict[Expr, int] = {}
    for n in nodes:  # sources first
        if n.op in LEAVES or n in materialized:
            depth[n] = 0
            continue
        d = 1 + max((depth[s] for s in n.srcs), default=0)
        if d > MAX_INLINE_DEPTH:
            materialized.add(n)
            d = 0
        depth[n] = d


def _store_whole(n: Expr, stored: set[Expr], materialized: set[Expr]) -> None:
    stored.add(n)
    materialized.add(n)


def _cheap(n: Expr) -> bool:
    """Shape maps of leaves and casts are loads, not worth a buffer."""
    return n.op.kind != LEAF and all(s.op.kind == LEAF for s in n.srcs) and (
        n.op.kind == "shape" or n.op.name in ("cast", "negative"))


def stage_lines(plan: Plan, names: dict[Expr, str],
                pass_notes: dict[int, str] | None = None) -> list[tuple[str, list[str]]]:
    """Each stage of the plan, in order: its heading (with the lowering's note on how a
    pass runs, by stage), and one line per value it computes (what it is, and whether it is
    per sample, accumulated over the batch or whole)."""
    out = []
    for s, members in plan.stages():
        if s % 2:
            how = (pass_notes or {}).get(s, "one sample at a time")
            head = f"pass {s // 2 + 1}: loop over {plan.batch}, {how}"
        else:
            head = "before the data:" if s == 0 else f"after pass {s // 2}:" \
                if s // 2 <= plan.passes else "whole arrays (no pass over the batch):"
        lines = []
        for n in members:
            what = ("accumulates over " + plan.batch) if n in plan.accumulators else (
                "per sample" if s % 2 else "whole")
            extra = "  [stored whole: needed by a later stage]" if n in plan.stored_whole else ""
            lines.append(f"{names.get(n, n.op.name)}: {n.op.name} {n.dtype} {fmt(n.shape)}"
                         f" ({what}){extra}")
        out.append((head, lines))
    return out


def describe(plan: Plan, names: dict[Expr, str],
             pass_notes: dict[int, str] | None = None) -> str:
    """The plan as text: what each stage computes, fuses, reads and writes."""
    passes = plan.passes
    head = (f"{passes} pass{'es' if passes != 1 else ''} over {plan.batch}" if plan.batch
            else "no batch dimension")
    lines = [f"plan: {head}; {len(plan.materialized)} computed values"]
    for stage_head, members in stage_lines(plan, names, pass_notes):
        lines.append("  " + stage_head)
        lines += ["    " + m for m in members]
    return "\n".join(lines)
