"""The NumPy reference evaluator: the ground truth every compiled backend is tested against.

It is written to be obviously correct, not fast: one NumPy call per node, in topological
order, with every result cast to the node's declared dtype (float32 stays float32).
"""

from __future__ import annotations

import difflib
import warnings
from typing import Any, Mapping, Sequence

import numpy as np

from symgrad.expr.leaves import CONST, INPUT, PARAM, SIZE
from symgrad.expr.node import Expr, toposort
from symgrad.expr.shapes import SliceDim, bind_derived, fmt, size_of

Outputs = Expr | Sequence[Expr]


def as_outputs(outputs: Outputs) -> tuple[list[Expr], bool]:
    """The list of output nodes and whether one node (not a list) was given."""
    if isinstance(outputs, Expr):
        return [outputs], True
    try:
        nodes = list(outputs)
    except TypeError:
        raise TypeError(f"outputs: expected a symgrad expression or a list of them, got "
                        f"{type(outputs).__name__}") from None
    for i, n in enumerate(nodes):
        if not isinstance(n, Expr):
            raise TypeError(f"outputs[{i}]: expected a symgrad expression, got "
                            f"{type(n).__name__}")
    return nodes, False


def graph_inputs(nodes: Sequence[Expr]) -> dict[str, Expr]:
    """The inputs the nodes depend on, by name; two different inputs may not share one."""
    found: dict[str, Expr] = {}
    for n in toposort(list(nodes)):
        if n.op is INPUT:
            other = found.setdefault(n.arg.name, n)
            if other is not n:
                raise ValueError(f"two different inputs are both named {n.name!r}: "
                                 f"{other.dtype} {fmt(other.shape)} and "
                                 f"{n.dtype} {fmt(n.shape)}; give them different names")
    return found


_KIND_NAMES = {"f": "floating", "i": "integer", "u": "integer", "b": "bool"}


def params_of(outputs: Outputs) -> list[Expr]:
    """The parameters ``outputs`` (one node or a list) depend on, in graph order (sources
    before users), each once: what ``sg.compile_step`` trains by default.

    >>> sg.params_of(sg.mean((w * x + b - y) ** 2))
    [<w: leaf float32 ()>, <b: leaf float32 ()>]
    """
    nodes, _ = as_outputs(outputs)
    return [n for n in toposort(nodes) if n.op is PARAM]


def merge_feeds(feeds: Mapping[Any, Any] | None, keywords: dict[str, Any],
                what: str = "feeds") -> dict[str, Any]:
    """One dict of feeds from a feed dict (TF1's ``feed_dict``: keys are input names or
    input nodes) and keyword feeds; an input given in both is refused, naming it."""
    if feeds is None:
        return keywords
    if not isinstance(feeds, Mapping):
        raise TypeError(f"{what}: expected a dict of arrays by input name, got "
                        f"{type(feeds).__name__}")
    merged: dict[str, Any] = {}
    for key, value in feeds.items():
        name = key.name if isinstance(key, Expr) and key.op is INPUT else key
        if not isinstance(name, str):
            raise TypeError(f"{what}: a feed dict's keys are input names or inputs "
                            f"(sg.input), got {key!r}")
        if name in merged:
            raise ValueError(f"{what}: input {name!r} is in the feed dict twice (by name and "
                             f"as a node)")
        merged[name] = value
    both = sorted(set(merged) & set(keywords))
    if both:
        raise ValueError(f"{what}: input{'s' if len(both) > 1 else ''} "
                         f"{', '.join(map(repr, both))} given both in the feed dict and as a "
                         f"keyword; give each once")
    merged.update(keywords)
    return merged


def _missing_message(needed: Mapping[str, Expr], missing: list[str],
                     feeds: Mapping[str, Any]) -> str:
    """The missing inputs, each with the closest fed-but-unused name (a typo's target)."""
    unused = sorted(str(k) for k in feeds if k not in needed)
    parts = []
    for name in missing:
        part = f"{name!r} ({needed[name].dtype} {fmt(needed[name].shape)}"
        close = difflib.get_close_matches(name, unused, n=1)
        if close:
            part += f"; did you mean {close[0]!r}, which was fed but is not used?"
        parts.append(part + ")")
    text = f"missing input{'s' if len(missing) > 1 else ''}: {', '.join(parts)}"
    if unused and not any("did you mean" in p for p in parts):
        text += f"; fed but not used: {', '.join(map(repr, unused))}"
    return text


def _check_exact_in_float(name: str, arr: np.ndarray, dtype: np.dtype) -> None:
    """Integer or bool data fed to a float input is cast when it lies where ``dtype`` holds
    every integer (|v| <= 2**24 for float32, 2**53 for float64); else a ValueError."""
    if arr.dtype.kind == "b" or arr.size == 0:
        return
    exact = 2 ** (np.finfo(dtype).nmant + 1)
    if arr.dtype.itemsize * 8 <= np.finfo(dtype).nmant:  # uint8 and int16 into float32
        return
    low, high = int(arr.min()), int(arr.max())
    if -exact <= low and high <= exact:
        return
    raise ValueError(f"input {name!r}: integer values from {low} to {high}, beyond "
                     f"+-2**{np.finfo(dtype).nmant + 1} where {dtype} no longer holds every "
                     f"integer; cast them yourself if rounding is meant: a.astype(np.{dtype})")


def check_feeds(needed: Mapping[str, Expr], feeds: Mapping[str, Any]) -> tuple[
        dict[str, np.ndarray], dict[str, int]]:
    """Check every feed against its input before anything runs.

    Returns the arrays (cast to the inputs' dtypes) and the sizes bound to symbolic
    dimensions. One rule for lists and arrays: into a float input, float data is rounded to
    its dtype and integer or bool data is cast when every value is exact in it; into an
    integer input, integer data whose values fit; a bool input takes bools. Feeds the graph
    does not use are ignored (one data dict serves a loss, its
    gradients and a Hessian that needs fewer inputs); a misspelt name shows as a missing
    input, whose message names the closest unused feed. Raises ``ValueError`` (missing
    name, wrong rank or size, a symbolic dimension bound twice) or ``TypeError`` (not an
    array, wrong dtype kind).
    """
    missing = sorted(set(needed) - set(feeds))
    if missing:
        raise ValueError(_missing_message(needed, missing, feeds))
    arrays: dict[str, np.ndarray] = {}
    sizes: dict[str, int] = {}
    bound_by: dict[str, str] = {}
    for name in sorted(needed):
        node, value = needed[name], feeds[name]
        want = f"{node.dtype} array of shape {fmt(node.shape)}"
        if isinstance(value, (str, bytes)) or value is None:
            raise TypeError(f"input {name!r}: expected a {want}, got {type(value).__name__}")
        arr = np.asarray(value) if not isinstance(value, np.ndarray) else value
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"input {name!r}: expected a {want}, got {type(value).__name__} "
                            f"of dtype {arr.dtype}")
        if node.dtype.kind == "f" and arr.dtype.kind in "iub":
            _check_exact_in_float(name, arr, node.dtype)  # (lists and arrays alike)
        elif node.dtype.kind in "iu" and arr.dtype.kind not in "iu":
            raise TypeError(f"input {name!r}: expected a {want}, got "
                            f"{'an array' if isinstance(value, np.ndarray) else 'data'} of "
                            f"{_KIND_NAMES[arr.dtype.kind]} dtype {arr.dtype} (round it "
                            f"first if that is meant: np.rint(a).astype(np.{node.dtype}))")
        elif node.dtype.kind == "b" and arr.dtype.kind != "b":
            raise TypeError(f"input {name!r}: expected a {want}, got dtype {arr.dtype}")
        if arr.ndim != len(node.shape):
            raise ValueError(f"input {name!r}: expected {len(node.shape)} dimensions "
                             f"{fmt(node.shape)}, got {arr.ndim} with shape {fmt(arr.shape)}")
        for axis, (dim, got) in enumerate(zip(node.shape, arr.shape)):
            if isinstance(dim, str):
                if dim in sizes and sizes[dim] != got:
                    raise ValueError(
                        f"input {name!r}: dimension {dim!r} (axis {axis}) is {got}, but input "
                        f"{bound_by[dim]!r} set {dim} = {sizes[dim]}; shape {fmt(node.shape)}"
                        f" expected, got {fmt(arr.shape)}")
                sizes.setdefault(dim, got)
                bound_by.setdefault(dim, name)
            elif dim != got:
                raise ValueError(f"input {name!r}: expected shape {fmt(node.shape)}, got "
                                 f"{fmt(arr.shape)} (axis {axis} is {got}, not {dim})")
        if node.dtype.kind in "iu" and arr.dtype != node.dtype and arr.size:
            info = np.iinfo(node.dtype)
            if arr.min() < info.min or arr.max() > info.max:
                raise ValueError(f"input {name!r}: values from {arr.min()} to {arr.max()} do "
                                 f"not fit {node.dtype}")
        arrays[name] = arr.astype(node.dtype, copy=False)
    return arrays, sizes


class FeedChecker:
    """``check_feeds`` then ``check_dims_bound`` for one graph's inputs, with a fast path.

    It remembers the last feeds that passed both checks when every feed was already an
    array of its input's own dtype (the check returned the feeds themselves). Feeds whose
    arrays for the same inputs have the same dtypes and shapes would pass the full check
    again with the same sizes and the same arrays, so they are returned as they are (feeds
    the graph does not use are ignored, as the full check ignores them); anything else (a
    missing name, a dtype or shape that differs, a list) takes the full check and raises
    exactly what it raises.
    """

    __slots__ = ("needed", "dims", "_last")

    def __init__(self, needed: Mapping[str, Expr], dims: frozenset = frozenset()):
        self.needed, self.dims = needed, dims
        self._last: tuple[tuple, dict[str, int]] | None = None

    def __call__(self, feeds: Mapping[str, Any]) -> tuple[dict[str, np.ndarray],
                                                          dict[str, int]]:
        last = self._last  # one read: another thread may replace it meanwhile
        if last is not None:
            arrays: dict[str, np.ndarray] = {}
            for name, dtype, shape in last[0]:  # sorted, as check_feeds orders its arrays
                value = feeds.get(name)
                if not isinstance(value, np.ndarray) or value.dtype != dtype \
                        or value.shape != shape:
                    break
                arrays[name] = value
            else:
                return arrays, dict(last[1])
        arrays, sizes = check_feeds(self.needed, feeds)
        check_dims_bound(self.dims, sizes)
        if all(a is feeds[name] for name, a in arrays.items()):
            self._last = (tuple((name, a.dtype, a.shape) for name, a in arrays.items()),
                          dict(sizes))
        return arrays, sizes


def symbolic_dims(nodes: Sequence[Expr]) -> frozenset[str]:
    """Every symbolic dimension the graph uses."""
    used: set = set()
    for n in toposort(list(nodes)):
        used.update(n.shape)
        if n.op is SIZE:
            used.update(n.arg[0])
    return frozenset(d for d in used if isinstance(d, str))


def check_dims_bound(nodes: Sequence[Expr] | frozenset, sizes: dict[str, int]) -> None:
    """Every symbolic dimension the graph uses (or the given set) must be set by an input;
    the sizes of sliced dimensions (``N-1``) are added to ``sizes`` from their bases."""
    dims = nodes if isinstance(nodes, frozenset) else symbolic_dims(nodes)
    bind_derived(dims, sizes)  # N-1 of x[1:], from N
    unbound = sorted(d for d in dims if d not in sizes and not isinstance(d, SliceDim))
    if unbound:
        raise ValueError(f"no input sets the dimension{'s' if len(unbound) > 1 else ''} "
                         f"{', '.join(map(repr, unbound))}: feed an input whose shape has "
                         "it, or give the shape as numbers")


def run_graph(nodes: Sequence[Expr], arrays: Mapping[str, np.ndarray],
              sizes: Mapping[str, int]) -> list[np.ndarray]:
    """Evaluate already-checked feeds through the graph."""
    values: dict[Expr, np.ndarray] = {}
    # inf and nan propagate as in NumPy, without warnings (nor "Mean of empty slice")
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for node in toposort(list(nodes)):
            op = node.op
            if op is INPUT:
                out = arrays[node.arg.name]
            elif op is PARAM:
                out = node.arg.value.copy()  # a snapshot: later updates must not alias
            elif op is CONST:
                out = node.arg.array
            elif op is SIZE:
                out = np.asarray(size_of(node.arg[0], sizes))
            else:
                bind = op.extra.get("bind")
                arg = bind(node.arg, sizes) if bind else node.arg
                out = op.numpy(arg, *(values[s] for s in node.srcs))
            out = np.asarray(out)
            if out.dtype != node.dtype:
                out = out.astype(node.dtype)
            values[node] = out
    # never hand back the caller's own input array or a read-only constant
    return [values[n].copy() if n.op is INPUT or n.op is CONST else values[n] for n in nodes]


def evaluate(outputs: Outputs, feeds: Mapping[Any, Any] | None = None, /,
             **keywords: Any) -> np.ndarray | tuple[np.ndarray, ...]:
    """Evaluate ``outputs`` with NumPy; one node gives one array, a list gives a tuple.

    Feeds are keywords by input name, a dict (``sg.evaluate(loss, batch)``, keyed by name
    or input node), or both. Only the inputs the outputs depend on are needed (others fed
    are ignored); parameters use their current values.

    >>> x, y = sg.inputs("x y")
    >>> w = sg.param("w", init=2.0)
    >>> sg.evaluate(sg.mean((w * x - y) ** 2), x=[1.0, 2.0], y=[2.0, 4.0])
    array(0., dtype=float32)
    """
    feeds = merge_feeds(feeds, keywords, "evaluate")
    nodes, single = as_outputs(outputs)
    arrays, sizes = check_feeds(graph_inputs(nodes), feeds)
    check_dims_bound(nodes, sizes)
    results = run_graph(nodes, arrays, sizes)
    return results[0] if single else tuple(results)
