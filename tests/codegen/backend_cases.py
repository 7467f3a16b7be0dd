"""Shared by the compiled-backend tests: running one graph on a backend and on the NumPy
reference and comparing (results, or the error raised), the seed models, and a hypothesis
strategy for random graphs over inputs with a symbolic batch dimension ``N``.

The per-operator tables are not repeated here: they come from ``tests/expr/test_ops.py``
(``CASES``) and ``tests/diff/diffhelp.py`` (``OP_CASES``, the smooth unary functions), put
on the import path below.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import strategies as st

import symgrad as sg
from symgrad.expr.evaluate import graph_inputs
from symgrad.expr.node import CONTRACT, REDUCE, Expr, toposort

_TESTS = Path(__file__).resolve().parents[1]
for _folder in ("expr", "diff"):
    if str(_TESTS / _folder) not in sys.path:
        sys.path.insert(0, str(_TESTS / _folder))

F32, F64 = np.dtype("float32"), np.dtype("float64")
# agreement of a compiled backend with the reference, per result dtype
RTOL = {F32: 2e-6, F64: 1e-12}


@pytest.fixture(scope="module")
def emulated():
    """Every CUDA function of the module runs on the emulator (tests/cuda)."""
    sys.path.insert(0, str(_TESTS / "cuda"))
    from emulated_driver import EmulatedDriver, gxx_available

    from symgrad.runtime import cuda_driver

    if not gxx_available():
        pytest.skip("the CUDA emulator needs g++ with -std=c++20")
    cuda_driver.set_driver(EmulatedDriver())
    yield
    cuda_driver.set_driver(None)


def ops_in(e: Expr | list) -> set[str]:
    return {n.op.name for n in toposort([e] if isinstance(e, Expr) else list(e))}


def needed_feeds(outputs: list, feeds: dict) -> dict:
    """Only the feeds the outputs read (feeds they do not read are dropped)."""
    names = graph_inputs(list(outputs))
    return {k: v for k, v in feeds.items() if k in names}


def assert_agree(got, want, rtol: float | None = None, atol: float | None = None,
                 what: str = "") -> None:
    """One result of a compiled backend against the reference: the same dtype and shape,
    values equal for ints and bools, else close (NaN where the reference has NaN)."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}"
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    if want.dtype.kind != "f":
        np.testing.assert_array_equal(got, want, err_msg=what)
        return
    rtol = RTOL[want.dtype] if rtol is None else rtol
    atol = rtol if atol is None else atol
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, equal_nan=True, err_msg=what)


def run_both(fn, outputs: list, feeds: dict):
    """``fn(**feeds)`` and the reference on the same feeds: both results, or both errors,
    which must be of the same type with the same message. Returns ``(got, want)`` or
    ``(None, None)`` when both raised."""
    try:
        want = sg.evaluate(outputs, **feeds)
    except Exception as ref_error:  # the compiled backend must raise the same
        try:
            fn(**feeds)
        except Exception as error:
            assert type(error) is type(ref_error), (error, ref_error)
            assert str(error) == str(ref_error)
            return None, None
        raise AssertionError(f"the reference raised {ref_error!r}; the backend did "
                             "not") from None
    return fn(**feeds), want


def reduces_over_batch(e: Expr) -> bool:
    """Whether computing ``e`` sums (or maxes, contracts...) over a symbolic dimension."""
    return any(n.op.kind in (REDUCE, CONTRACT) and any(
        isinstance(d, str) for s in n.srcs for d in s.shape) for n in toposort([e]))


def check_outputs(fn, outputs: list, feeds: dict, rtol=None, atol=None, what="",
                  norm_rtol: float = 0.0) -> tuple:
    """Run ``fn`` (compiled from ``outputs``, a list) and the reference; compare each
    result. An output that reduces over the batch may also differ by ``norm_rtol`` times its
    largest entry (the two sum in different orders). Returns the backend's results."""
    got, want = run_both(fn, outputs, feeds)
    if got is None:
        return ()
    assert isinstance(got, tuple) and len(got) == len(want) == len(outputs)
    for i, (g, w) in enumerate(zip(got, want)):
        a = atol
        if norm_rtol and w.dtype.kind == "f" and reduces_over_batch(outputs[i]):
            finite = np.abs(w[np.isfinite(w)])
            a = (RTOL[w.dtype] if atol is None else atol) + norm_rtol * np.max(
                finite, initial=0.0)
        assert_agree(g, w, rtol, a, what=f"{what} output {i} ({outputs[i].op.name})")
    return got


# -- the seed models -------------------------------------------------------------------

def linear_regression(dtype="float32"):
    """``mean((w1*x1 + w2*x2 + b - y)**2)``: the loss and its gradients."""
    x1, x2, y = (sg.input(n, dtype=dtype) for n in ("x1", "x2", "y"))
    w1, w2, b = (sg.param(n, init=v, dtype=dtype) for n, v in
                 (("w1", 0.5), ("w2", -0.25), ("b", 0.1)))
    loss = sg.mean((w1 * x1 + w2 * x2 + b - y) ** 2)
    return [loss, *sg.grad(loss, [w1, w2, b])]


def linear_regression_feeds(n: int, seed: int = 0, dtype="float32") -> dict:
    rng = np.random.default_rng(seed)
    x1, x2 = rng.standard_normal(n), rng.standard_normal(n)
    y = 2 * x1 - 3 * x2 + 0.5 + 0.1 * rng.standard_normal(n)
    return {k: v.astype(dtype) for k, v in (("x1", x1), ("x2", x2), ("y", y))}


def softmax_regression(features: int = 784, classes: int = 10):
    X = sg.input("X", shape=("N", features))
    labels = sg.input("labels", shape=("N",), dtype="int32")
    W = sg.param("W", shape=(features, classes), init=sg.init.normal(0.0, 0.05, seed=0))
    c = sg.param("c", shape=(classes,), init=sg.init.normal(0.0, 0.1, seed=1))
    loss = sg.mean(sg.cross_entropy(X @ W + c, labels))
    return [loss, *sg.grad(loss, [W, c])]


def softmax_regression_feeds(n: int, seed: int = 0, features: int = 784,
                             classes: int = 10) -> dict:
    rng = np.random.default_rng(seed)
    return {"X": rng.uniform(0, 1, (n, features)).astype(np.float32),
            "labels": rng.integers(0, classes, n).astype(np.int32)}


def relu_mlp(dtype="float32"):
    """A 5 -> 8 -> 3 ReLU network with a softmax cross-entropy loss."""
    X = sg.input("Xm", shape=("N", 5), dtype=dtype)
    labels = sg.input("ym", shape=("N",), dtype="int32")
    W1 = sg.param("W1", shape=(5, 8), init=sg.init.normal(0.0, 0.5, seed=2), dtype=dtype)
    b1 = sg.param("b1", shape=(8,), init=0.1, dtype=dtype)
    W2 = sg.param("W2", shape=(8, 3), init=sg.init.normal(0.0, 0.5, seed=3), dtype=dtype)
    b2 = sg.param("b2", shape=(3,), init=-0.1, dtype=dtype)
    hidden = sg.relu(X @ W1 + b1)
    loss = sg.mean(sg.cross_entropy(hidden @ W2 + b2, labels))
    return [loss, *sg.grad(loss, [W1, b1, W2, b2])]


def relu_mlp_feeds(n: int, seed: int = 0, dtype="float32") -> dict:
    rng = np.random.default_rng(seed)
    return {"Xm": rng.standard_normal((n, 5)).astype(dtype),
            "ym": rng.integers(0, 3, n).astype(np.int32)}


# -- random graphs over a symbolic batch -----------------------------------------------
# Four inputs per dtype, shapes (), (3,), (N,), (N, 3); two parameters, (3,) and ().
# Every subtree has one of the four shapes: a binary operator whose operands would not
# broadcast (an (N,) against a (3,) or (N, 3)) lifts the (N,) operand to (N, 1) first.

BATCH_SHAPES = {"a": (), "b": (3,), "x": ("N",), "X": ("N", 3)}


class Leaves:
    """The inputs and parameters of one dtype."""

    def __init__(self, dtype: str):
        self.dtype = np.dtype(dtype)
        suffix = "32" if self.dtype == F32 else "64"
        self.inputs = {k: sg.input(f"{k}{suffix}", shape=s, dtype=dtype)
                       for k, s in BATCH_SHAPES.items()}
        self.params = {"w": sg.param("w", init=np.array([0.7, -0.4, 1.1]), dtype=dtype),
                       "s": sg.param("s", init=0.6, dtype=dtype)}
        self.mix = sg.const(np.array([[0.5, -0.3, 0.2], [0.1, 0.4, -0.6], [-0.2, 0.3, 0.7]],
                                     dtype))
        self.proj = sg.const(np.array([0.3, -0.8, 0.5], dtype))

    def like(self, e: Expr) -> Expr:
        """The input with ``e``'s shape (raw data: the same on every backend)."""
        return next(v for v in self.inputs.values() if v.shape == e.shape)

    def all(self) -> list[Expr]:
        return [*self.inputs.values(), *self.params.values()]

    def feeds(self, n: int, seed: int) -> dict:
        """Random data, the same numbers for both dtypes (float32 values)."""
        rng = np.random.default_rng(seed)
        out = {}
        for node in self.inputs.values():
            shape = tuple(n if d == "N" else d for d in node.shape)
            data = rng.standard_normal(shape).astype(np.float32)
            out[node.name] = data.astype(self.dtype)
        return out


LEAVES = {F32: Leaves("float32"), F64: Leaves("float64")}


def _align(a: Expr, b: Expr) -> tuple[Expr, Expr]:
    if a.shape == ("N",) and b.ndim and b.shape[-1] == 3:
        return a[:, None], b
    if b.shape == ("N",) and a.ndim and a.shape[-1] == 3:
        return a, b[:, None]
    return a, b


def _binary(L: Leaves, a: Expr, b: Expr, which: int) -> Expr:
    a, b = _align(a, b)
    out = [
        lambda: a + b,
        lambda: a - b,
        lambda: a * b,
        lambda: a / (b**2 + 1),
        lambda: (a**2 + 1) ** sg.tanh(b),
        lambda: 2.5 * a - b / 4,
        lambda: sg.maximum(a, b * 0.5) + sg.minimum(a, b),
        lambda: sg.where(L.like(a + b) > 0.1, a, b),
    ][which]()
    return out


N_BINARY = 8


def _reduce_or_shape(L: Leaves, x: Expr, which: int) -> Expr:
    """Tensor operators: reductions over the batch (axis 0, all axes), per sample (axis
    1), batch normalisation, contractions, shape maps. The result is again one of the four
    shapes. Max, min and argmax see ``x`` plus raw data, so no tie is made by rounding."""
    batched, last3 = x.ndim > 0 and x.shape[0] == "N", x.ndim > 0 and x.shape[-1] == 3
    jitter = L.like(x)
    choices = [
        lambda: sg.sum(x),
        lambda: sg.mean(x, axis=0) if x.ndim else x,
        lambda: sg.max(x + jitter, axis=0) if x.ndim else x,
        lambda: sg.min(x + jitter) + sg.mean(x),
        lambda: sg.sum(x, axis=1) if x.ndim == 2 else sg.logsumexp(x),
        lambda: sg.mean(x, axis=-1) if x.ndim == 2 else x,
        lambda: sg.logsumexp(x, axis=-1) if last3 else sg.logsumexp(x * 0.5),
        lambda: sg.softmax(x, axis=-1) if last3 else x,
        lambda: sg.log_softmax(x, axis=1) if x.ndim == 2 else x,
        lambda: x - sg.max(x + jitter, axis=-1, keepdims=True) if x.ndim else x,
        lambda: (x - sg.mean(x, axis=0)) / sg.sqrt(sg.mean(x * x, axis=0) + 1) if batched
        else x,
        lambda: x @ L.mix if last3 else x,
        lambda: x @ L.proj if last3 else x,
        lambda: x @ L.inputs["X"] if x.shape == ("N",) else (
            sg.transpose(x) @ L.inputs["x"] if x.shape == ("N", 3) else x),
        lambda: sg.transpose(sg.tanh(sg.transpose(x))) if x.ndim == 2 else sg.tanh(x),
        lambda: x[..., ::-1] if last3 else x,
        lambda: sg.concat([x[..., 2:], sg.sin(x[..., :2])], axis=-1) if last3 else x,
        lambda: sg.reshape(sg.cos(sg.reshape(x, (*x.shape, 1))), x.shape),
        lambda: sg.broadcast_to(x, ("N", 3)) if x.shape in ((), (3,)) else x,
        lambda: x[:, 1] if x.ndim == 2 else x,
        lambda: sg.one_hot(sg.argmax(x + jitter, axis=-1), 3, L.dtype.name) * x
        if last3 else x,
        lambda: sg.sum(x, axis=0, keepdims=True) * x if batched else x,
        lambda: x * L.params["w"] + L.params["s"] if last3 else x * L.params["s"],
    ]
    return choices[which % len(choices)]()


N_SHAPE = 23


@st.composite
def batch_graphs(draw, max_depth: int = 4) -> tuple:
    """A random graph as a plan (nested tuples) that :func:`build` turns into an expression
    over the leaves of either dtype: smooth except for max/min/where, whose decisions are
    taken on raw data, never on a value that two backends may round differently."""
    from diffhelp import N_UNARY

    def plan(depth: int) -> tuple:
        if depth == 0 or draw(st.integers(0, 7)) == 0:
            return ("leaf", draw(st.sampled_from([*BATCH_SHAPES, "w", "s"])),
                    draw(st.sampled_from([None, 0.5, -1.5])))
        kind = draw(st.integers(0, 3))  # tensor operators half the time
        if kind == 0:
            return ("unary", draw(st.integers(0, N_UNARY - 1)), plan(depth - 1))
        if kind == 1:
            return ("binary", draw(st.integers(0, N_BINARY - 1)), plan(depth - 1),
                    plan(depth - 1))
        return ("shape", draw(st.integers(0, N_SHAPE - 1)), plan(depth - 1))

    return plan(draw(st.integers(2, max_depth)))


def build(plan: tuple, L: Leaves) -> Expr:
    from diffhelp import _safe_unary

    kind = plan[0]
    if kind == "leaf":
        leaf = {**L.inputs, **L.params}[plan[1]]
        return leaf if plan[2] is None else plan[2] * leaf
    if kind == "unary":
        return _safe_unary(build(plan[2], L), plan[1])
    if kind == "binary":
        return _binary(L, build(plan[2], L), build(plan[3], L), plan[1])
    return _reduce_or_shape(L, build(plan[2], L), plan[1])


def scalar_of(e: Expr, L: Leaves) -> Expr:
    """A scalar of ``e`` with a cotangent that is not all ones, which also reads ``x`` (so
    N is always bound)."""
    w = {(): 1.3, (3,): L.proj, ("N",): L.inputs["x"], ("N", 3): L.inputs["X"]}[e.shape]
    return sg.sum(sg.sin(e * w)) + sg.mean(L.inputs["x"] ** 2) * 0.5


def graph_outputs(e: Expr, L: Leaves) -> list[Expr]:
    """The graph, a scalar of it, and the scalar's gradients by every leaf it reads."""
    f = scalar_of(e, L)
    wrts = [leaf for leaf in L.all() if leaf in set(toposort([f]))]
    return [e, f, *sg.grad(f, wrts)]


def check_random_graph(fn, plan: tuple, dtype: np.dtype, n: int, seed: int,
                       rtol: float | None = None, atol: float | None = None,
                       amplify: float = 64.0) -> None:
    """``fn`` (compiled from ``graph_outputs`` of ``plan`` in ``dtype``) against the
    reference at batch size ``n``.

    Deep random graphs can be ill-conditioned (``sin`` of a large sum, say), so the bound
    adds to the base tolerance ``amplify`` times the reference's own rounding error: the
    difference between the reference in float32 and in float64 on the same (float32)
    data, scaled down by 2**-29 for a float64 graph. The backend's own error can be a few
    dozen times that: its vectorized exp/log/pow are accurate to a few ulps where NumPy's
    are within one, its sums group terms differently (a ratio up to ~40 was seen in some
    thousands of graphs); and NumPy sums a long vector pairwise where the backend adds
    along a few lanes, so over a large batch ``amplify`` must grow with the batch."""
    L = LEAVES[dtype]
    outs = graph_outputs(build(plan, L), L)
    got, want = run_both(fn, outs, needed_feeds(outs, L.feeds(n, seed)))
    if got is None:
        return
    other = LEAVES[F64 if dtype == F32 else F32]
    twin = graph_outputs(build(plan, other), other)
    twin_feeds = needed_feeds(twin, other.feeds(n, seed))
    twin_values = sg.evaluate(twin, **twin_feeds)
    assert len(twin_values) == len(want)
    # How far perturbations the size of the dtype's rounding move each result, computed in
    # float64: one float32 evaluation's error can be lucky (a sum whose errors cancel); these
    # spreads are not (a cosine of a large argument near a zero). An output that reduces
    # over the batch is nudged by sqrt(N) roundings, what its sum's own rounding amounts to
    # (a sine of a sum of 40,009 terms cubed: one ulp of the sum moves it by 0.007, and
    # the samples in another order rarely change the sum's rounding at all).
    if dtype == F32:
        graph, base, values, eps = twin, twin_feeds, twin_values, 2.0**-24
    else:
        graph, base, values, eps = outs, needed_feeds(outs, L.feeds(n, seed)), want, 2.0**-52
    rng = np.random.default_rng(seed)
    spreads = {wide: [np.zeros(np.shape(t)) for t in values] for wide in (False, True)}
    for wide in (False, False, True, True):
        size = eps * (np.sqrt(max(n, 1)) if wide else 1.0)
        nudged = {k: v * (1 + size * rng.choice([-1.0, 1.0], np.shape(v)))
                  if np.asarray(v).dtype == F64 else v for k, v in base.items()}
        for k, (t, v) in enumerate(zip(values, sg.evaluate(graph, **nudged))):
            with np.errstate(invalid="ignore"):
                spreads[wide][k] = np.fmax(spreads[wide][k], np.abs(
                    np.asarray(v, np.float64) - np.asarray(t, np.float64)))
    spreads = [spreads[reduces_over_batch(o)][k] for k, o in enumerate(outs)]
    rtol = RTOL[dtype] if rtol is None else rtol
    atol = rtol if atol is None else atol
    for i, (g, w, t, spread) in enumerate(zip(got, want, twin_values, spreads)):
        what = f"N={n} output {i}: {str(outs[i])[:300]}"
        w64, t64 = np.asarray(w, np.float64), np.asarray(t, np.float64)
        if not np.array_equal(np.isfinite(w64), np.isfinite(t64)):
            # overflow in float32 only: no error scale; the same dtype and shape still
            assert g.dtype == w.dtype and g.shape == w.shape, what
            continue
        finite = np.isfinite(w64)
        scale = np.max(np.abs(w64[finite] - t64[finite]), initial=0.0)
        scale *= 1.0 if dtype == F32 else 2.0**-29
        scale = max(scale, np.max(np.broadcast_to(spread, w64.shape)[finite], initial=0.0))
        assert_agree(g, w, rtol, atol + amplify * scale, what=what)


def least_squares_hessian() -> list:
    """Least squares over a batch with its value, gradients, Hessian blocks, an HVP and a
    Jacobian (the ``2 X.T X / N`` block is output 3)."""
    X = sg.input("Xls", shape=("N", 3), dtype="float64")
    y = sg.input("yls", dtype="float64")
    w = sg.param("w", init=np.array([0.1, -0.2, 0.3]), dtype="float64")
    b = sg.param("b", init=0.5, dtype="float64")
    f = sg.mean((X @ w + b - y) ** 2)
    (hww, hwb), (hbw, hbb) = sg.hessian(f, [w, b])
    return [f, *sg.grad(f, [w, b]), hww, hwb, hbw, hbb,
            sg.hvp(f, w, np.array([1.0, -1.0, 2.0])), sg.jacobian(X @ w + b, w)]


def least_squares_feeds(n: int) -> dict:
    rng = np.random.default_rng(n)
    return {"Xls": rng.standard_normal((n, 3)), "yls": rng.standard_normal(n)}
