"""Shared helpers for the derivative and simplifier tests: feeding graphs, central finite
differences over ``sg.evaluate``, and a hypothesis strategy for random expression trees
over shapes that broadcast (``()``, ``(3,)``, ``(2, 3)``, ``(1, 3)`` and their reductions).

Named ``diffhelp`` (not ``helpers``) so it cannot shadow a module of another test folder.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

import symgrad as sg
from symgrad.expr.evaluate import graph_inputs
from symgrad.expr.leaves import PARAM
from symgrad.expr.node import Expr, toposort

F64 = np.dtype("float64")

SETTINGS = settings(max_examples=30, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# -- running graphs --------------------------------------------------------------------

def run(e: Expr | list, feeds: dict) -> np.ndarray | tuple:
    """``sg.evaluate`` with only the feeds the graph needs (a simplified graph may need
    fewer inputs than the original)."""
    nodes = [e] if isinstance(e, Expr) else list(e)
    needed = graph_inputs(nodes)
    return sg.evaluate(e, **{k: v for k, v in feeds.items() if k in needed})


def ops_in(e: Expr | list) -> set[str]:
    return {n.op.name for n in toposort([e] if isinstance(e, Expr) else list(e))}


def params_in(e: Expr | list) -> list[Expr]:
    return [n for n in toposort([e] if isinstance(e, Expr) else list(e)) if n.op is PARAM]


# -- finite differences ----------------------------------------------------------------

def _perturber(wrt: Expr, feeds: dict) -> tuple[np.ndarray, Callable[[np.ndarray], dict]]:
    """The current value of ``wrt`` and a function that sets it (an input through the
    feeds, a parameter through its ``.value``) and returns the feeds to use."""
    if wrt.op is PARAM:
        base = np.array(wrt.value, dtype=np.float64)

        def set_param(v):
            wrt.value = v
            return feeds
        return base, set_param
    base = np.array(feeds[wrt.name], dtype=np.float64)
    return base, lambda v: {**feeds, wrt.name: v}


def numeric_jacobian(f: Expr, wrt: Expr, feeds: dict, eps: float = 1e-6) -> np.ndarray:
    """Central differences of ``f`` (any shape) with respect to ``wrt`` (an input fed in
    ``feeds``, or a parameter): an array of shape ``f.shape + wrt.shape``, in float64."""
    base, at = _perturber(wrt, feeds)
    flat = base.reshape(-1)
    cols = []
    try:
        for i in range(flat.size):
            up, down = flat.copy(), flat.copy()
            up[i] += eps
            down[i] -= eps
            fu = np.asarray(run(f, at(up.reshape(base.shape))), np.float64)
            fd = np.asarray(run(f, at(down.reshape(base.shape))), np.float64)
            cols.append((fu - fd) / (2 * eps))
        at(base)  # restore a parameter's value
    finally:
        at(base)
    fshape = tuple(np.shape(run(f, feeds)))
    if not cols:
        return np.zeros(fshape + base.shape)
    jac = np.stack(cols, axis=-1)
    return jac.reshape(fshape + base.shape)


def fd_grad(f: Expr, wrt: Expr, feeds: dict, eps: float = 1e-6) -> np.ndarray:
    """Central differences of a scalar ``f``: an array of ``wrt``'s shape."""
    assert f.shape == ()
    return numeric_jacobian(f, wrt, feeds, eps)


def fd_hessian(f: Expr, wrt: Expr, feeds: dict, eps: float = 1e-5) -> np.ndarray:
    """Central differences of the (unsimplified, raw) gradient: ``wrt.shape * 2``."""
    g = sg.grad(f, wrt, simplified=False)
    return numeric_jacobian(g, wrt, feeds, eps)


def assert_close_fd(got, want, rtol: float = 1e-5, atol: float = 1e-6, what: str = ""):
    """A derivative against finite differences; the tolerance scales with the largest
    entry, since a central difference has an absolute error."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    scale = 1.0 + (np.max(np.abs(want)) if want.size else 0.0)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol * scale, err_msg=what)


# -- random expression trees -----------------------------------------------------------

LEAF_SHAPES = {"a": (), "b": (3,), "c": (2, 3), "d": (1, 3)}
LEAVES = {name: sg.input(name, shape=shape, dtype="float64")
          for name, shape in LEAF_SHAPES.items()}
MIX = sg.const(np.array([[0.5, -0.3, 0.2], [0.1, 0.4, -0.6], [-0.2, 0.3, 0.7]]))


def random_feeds(seed: int, scale: float = 1.0) -> dict:
    rng = np.random.default_rng(seed)
    return {name: scale * rng.standard_normal(shape) for name, shape in LEAF_SHAPES.items()}


def _safe_unary(x: Expr, which: int) -> Expr:
    """Unary functions that are smooth and finite for every real ``x``."""
    return [
        lambda: sg.sin(x),
        lambda: sg.cos(x),
        lambda: sg.tanh(x),
        lambda: sg.sigmoid(x),
        lambda: sg.log(x**2 + 1),
        lambda: sg.sqrt(x**2 + 1),
        lambda: sg.exp(sg.tanh(x)),
        lambda: sg.softplus(x),
        lambda: 1 / (x**2 + 1),
        lambda: x**2,
        lambda: -x,
        lambda: sg.erf(x),
        lambda: sg.gelu(x),
        lambda: sg.log1p(x**2),
        lambda: sg.expm1(sg.sin(x)),
        lambda: sg.square(x) * 0.5,
        lambda: x**3,
    ][which]()


N_UNARY = 17


def _safe_binary(a: Expr, b: Expr, which: int) -> Expr:
    return [
        lambda: a + b,
        lambda: a - b,
        lambda: a * b,
        lambda: a / (b**2 + 1),
        lambda: (a**2 + 1) ** sg.tanh(b),
        lambda: sg.where(LEAVES["b"] > 0.1, a, b),
        lambda: 2.5 * a - b / 4,
    ][which]()


N_BINARY = 7


def _shape_op(x: Expr, which: int) -> Expr:
    """Tensor operators whose result stays in the broadcast family (each axis -2 in {1, 2},
    axis -1 in {1, 3}), so any two subtrees still broadcast together."""
    last = x.shape[-1] if x.ndim else None
    choices = [
        lambda: sg.sum(x),
        lambda: sg.mean(x, axis=-1, keepdims=True) if x.ndim else sg.mean(x),
        lambda: sg.sum(x, axis=0, keepdims=True) if x.ndim == 2 else sg.sum(x),
        lambda: sg.logsumexp(x, axis=-1, keepdims=True) if x.ndim else sg.logsumexp(x),
        lambda: sg.softmax(x, axis=-1) if x.ndim else x,
        lambda: sg.log_softmax(x, axis=-1) if x.ndim else x,
        lambda: sg.transpose(sg.tanh(sg.transpose(x))) if x.ndim == 2 else sg.tanh(x),
        lambda: sg.reshape(sg.sin(sg.reshape(x, (-1,))), x.shape) if x.ndim else x,
        lambda: x[..., ::-1] if x.ndim else x,
        lambda: sg.concat([x[..., 2:], x[..., :2]], axis=-1) if last == 3 else x,
        lambda: x @ MIX if last == 3 else x,
        lambda: sg.broadcast_to(x, (2, 3)) if x.ndim < 2 or x.shape == (1, 3) else x,
        lambda: sg.mean(x * x, axis=None, keepdims=True) if x.ndim else x,
        lambda: x[None] if x.ndim == 1 else x,
    ]
    return choices[which % len(choices)]()


N_SHAPE = 14


@st.composite
def expr_trees(draw, max_depth: int = 6, full: bool = False) -> Expr:
    """A random float64 expression over the leaves a, b, c, d, smooth everywhere
    (``full``: every branch ``max_depth`` deep)."""

    def build(depth: int) -> Expr:
        if depth == 0 or (not full and draw(st.integers(0, 9)) == 0):
            name = draw(st.sampled_from(sorted(LEAVES)))
            leaf = LEAVES[name]
            if draw(st.booleans()):
                return leaf
            return draw(st.sampled_from([0.5, 2.0, -1.5])) * leaf
        kind = draw(st.integers(0, 2))
        if kind == 0:
            return _safe_unary(build(depth - 1), draw(st.integers(0, N_UNARY - 1)))
        if kind == 1:
            return _safe_binary(build(depth - 1), build(depth - 1),
                                draw(st.integers(0, N_BINARY - 1)))
        return _shape_op(build(depth - 1), draw(st.integers(0, N_SHAPE - 1)))

    return build(max_depth if full else draw(st.integers(1, max_depth)))


def weighted_sum(e: Expr, seed: int = 0) -> Expr:
    """A scalar of ``e`` whose cotangent is a random array, not all ones."""
    if e.ndim == 0:
        return e * 1.3
    w = np.random.default_rng(seed).uniform(0.5, 1.5, size=e.shape)
    return sg.sum(e * sg.const(w))


# -- one case per operator -------------------------------------------------------------
# Each builder returns (expression of any shape, the nodes to differentiate by, extra
# options). Every non-leaf operator of ``ALL_OPS`` must appear in the graph of its case;
# tests/diff/test_grad.py checks that, so a new operator without a case fails the suite.

def _in(name: str, shape: tuple, dtype: str = "float64") -> Expr:
    return sg.input(name, shape=shape, dtype=dtype)


x3, y3, p3 = _in("x3", (3,)), _in("y3", (3,)), _in("p3", (3,))  # p3 is positive
t3 = _in("t3", (3,))  # values in (-1, 1), for tan
A23, B34, C43 = _in("A23", (2, 3)), _in("B34", (3, 4)), _in("C43", (4, 3))
D223, s0, v4 = _in("D223", (2, 2, 3)), _in("s0", ()), _in("v4", (4,))
lab2 = _in("lab2", (2,), "int32")
x3f32 = _in("x3f32", (3,), "float32")


def case_feeds(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "x3": rng.uniform(-2, 2, 3), "y3": rng.uniform(-2, 2, 3),
        "p3": rng.uniform(0.5, 2.0, 3), "t3": rng.uniform(-1, 1, 3),
        "A23": rng.standard_normal((2, 3)), "B34": rng.standard_normal((3, 4)),
        "C43": rng.standard_normal((4, 3)), "D223": rng.standard_normal((2, 2, 3)),
        "s0": np.float64(rng.uniform(0.5, 1.5)), "v4": rng.standard_normal(4),
        "lab2": np.array([2, 0], np.int32),
        "x3f32": rng.uniform(-2, 2, 3).astype(np.float32),
    }


def _scatter(x: Expr, key, shape) -> Expr:
    from symgrad.expr.ops_index import SCATTER, normalize_key
    return Expr(SCATTER, (x,), (normalize_key(shape, key), shape))


def _bands(*bands) -> Expr:
    from symgrad.expr.ops_band import band_matrix
    return band_matrix((3, 3), list(bands))


def _ints(values) -> Expr:
    return sg.const(np.array(values, np.int32))


def _gather_adjoint(which: str, g: Expr, ids: Expr, axis: int, shape: tuple) -> Expr:
    from symgrad.expr import ops_gather as G
    op = G.SCATTER_ADD if which == "take" else G.SCATTER_ALONG
    return Expr(op, (g, ids), (axis, "the indices", shape))


OP_CASES: dict = {
    "add": lambda: (x3 + A23, [x3, A23], {}),
    "subtract": lambda: (A23 - x3, [x3, A23], {}),
    "multiply": lambda: (x3 * A23, [x3, A23], {}),
    "divide": lambda: (A23 / p3, [A23, p3], {}),
    "power": lambda: (p3 ** y3 + x3**3, [p3, y3, x3], {}),
    "negative": lambda: (-x3, [x3], {}),
    "maximum": lambda: (sg.maximum(x3, y3), [x3, y3], {}),
    "minimum": lambda: (sg.minimum(x3, A23), [x3, A23], {}),
    "less": lambda: (sg.cast(x3 < y3, "float64") * x3, [x3, y3], {}),
    "less_equal": lambda: (sg.cast(x3 <= y3, "float64") * y3, [x3, y3], {}),
    "greater": lambda: (sg.cast(x3 > y3, "float64") * x3 * y3, [x3, y3], {}),
    "greater_equal": lambda: (sg.cast(x3 >= y3, "float64") * x3, [x3, y3], {}),
    "equal": lambda: (sg.cast(sg.equal(x3, y3), "float64") + x3, [x3, y3], {}),
    "not_equal": lambda: (sg.cast(sg.not_equal(x3, y3), "float64") * x3, [x3, y3], {}),
    "where": lambda: (sg.where(x3 > 0.1, x3**2, sg.sin(A23)), [x3, A23], {}),
    "exp": lambda: (sg.exp(x3), [x3], {}),
    "log": lambda: (sg.log(p3), [p3], {}),
    "log1p": lambda: (sg.log1p(p3), [p3], {}),
    "expm1": lambda: (sg.expm1(x3), [x3], {}),
    "sqrt": lambda: (sg.sqrt(p3), [p3], {}),
    "sin": lambda: (sg.sin(x3), [x3], {}),
    "cos": lambda: (sg.cos(x3), [x3], {}),
    "tan": lambda: (sg.tan(t3), [t3], {}),
    "tanh": lambda: (sg.tanh(x3), [x3], {}),
    "erf": lambda: (sg.erf(x3), [x3], {}),
    "abs": lambda: (sg.abs(x3), [x3], {}),
    "sign": lambda: (sg.sign(x3) * x3**2, [x3], {}),
    "sigmoid": lambda: (sg.sigmoid(x3), [x3], {}),
    "relu": lambda: (sg.relu(x3), [x3], {}),
    "softplus": lambda: (sg.softplus(x3), [x3], {}),
    "gelu": lambda: (sg.gelu(x3), [x3], {}),
    "leaky_relu": lambda: (sg.leaky_relu(x3, 0.2), [x3], {}),
    "elu": lambda: (sg.elu(x3, 0.7), [x3], {}),
    # float32 in the middle: a coarse step keeps the rounding error small
    "cast": lambda: (sg.cast(sg.cast(x3, "float32") * 3, "float64")
                     + sg.cast(x3f32, "float64") * x3, [x3, x3f32],
                     {"eps": 1e-2, "rtol": 1e-4}),
    "sum": lambda: (sg.sum(D223, axis=(0, 2), keepdims=True) * sg.sum(A23, axis=1)[:, None],
                    [D223, A23], {}),
    "mean": lambda: (sg.mean(D223, axis=1) + sg.mean(A23, axis=0, keepdims=True)
                     + sg.mean(x3), [D223, A23, x3], {}),
    "max": lambda: (sg.max(A23, axis=1, keepdims=True) * sg.max(x3), [A23, x3], {}),
    "min": lambda: (sg.min(D223, axis=(0, 1)) + sg.min(A23), [D223, A23], {}),
    "prod": lambda: (sg.prod(D223, axis=(0, 2), keepdims=True) * sg.prod(A23 * x3, axis=1)
                     [:, None] + sg.prod(x3), [D223, A23, x3], {}),
    # std and the 2-norm end in safe_sqrt (with var and the scans beside them)
    "safe_sqrt": lambda: (sg.std(D223, axis=1, ddof=1) + sg.norm(A23, axis=0)
                          + sg.var(A23, axis=1, keepdims=True) + sg.cumsum(A23, axis=1)
                          * sg.cumprod(x3), [D223, A23, x3], {}),
    "argmax": lambda: (sg.sum(sg.one_hot(sg.argmax(A23, axis=1), 3, "float64") * A23,
                              axis=1), [A23], {}),
    "logsumexp": lambda: (sg.logsumexp(D223, axis=(1, 2))[:, None] + sg.logsumexp(
        A23, axis=0, keepdims=True) + sg.logsumexp(x3), [D223, A23, x3], {}),
    "softmax": lambda: (sg.softmax(D223, axis=1) + sg.softmax(A23, axis=-1), [D223, A23], {}),
    "log_softmax": lambda: (sg.log_softmax(D223, axis=0) * 2 + sg.log_softmax(A23, axis=1),
                            [D223, A23], {}),
    "matmul": lambda: (sg.concat([sg.reshape(A23 @ B34, (-1,)), sg.reshape(D223 @ B34, (-1,)),
                                  sg.reshape(x3 @ B34, (-1,)), sg.reshape(B34 @ v4, (-1,)),
                                  sg.reshape(x3 @ y3, (1,)),
                                  sg.reshape(C43 @ D223[..., None], (-1,))]),
                       [A23, B34, D223, x3, v4, y3, C43], {}),
    "reshape": lambda: (sg.reshape(A23, (3, 2)) * sg.reshape(x3, (3, 1)), [A23, x3], {}),
    "transpose": lambda: (sg.transpose(D223, (2, 0, 1)) * A23.T[:, :, None], [D223, A23], {}),
    "broadcast_to": lambda: (sg.broadcast_to(x3, (2, 3)) * sg.broadcast_to(s0, (2, 3))
                             * sg.broadcast_to(A23[:, :1], (2, 3)), [x3, s0, A23], {}),
    "concat": lambda: (sg.concat([A23, x3[None, :], sg.sin(A23)], axis=0)
                       + sg.concat([x3[:1], y3[1:]]), [A23, x3, y3], {}),
    "one_hot": lambda: (sg.one_hot(lab2, 3, "float64") * A23, [A23], {}),
    "index": lambda: (sg.concat([sg.reshape(D223[1, :, ::-2], (-1,)), A23[:, 0], x3[1:],
                                 sg.reshape(A23[None, ..., -1], (-1,))]), [D223, A23, x3],
                      {}),
    # repeated and negative indices; fed (lab2) and computed (argmax) ones
    "take": lambda: (sg.concat([sg.reshape(sg.take(A23, _ints([2, 0, 2, -1]), axis=1), (-1,)),
                                sg.take(x3, lab2) ** 2, sg.take(D223, _ints([[1], [-2]]),
                                                                axis=-1).reshape(-1)]),
                     [A23, x3, D223], {}),
    "take_along_axis": lambda: (sg.concat([
        sg.take_along_axis(D223, _ints([[[0, 1, -1], [1, 1, 0]]]), 1).reshape(-1),
        sg.take_along_axis(A23, sg.argmax(A23, axis=1, keepdims=True), 1).reshape(-1) ** 2]),
        [D223, A23], {}),
    "scatter_add": lambda: (_gather_adjoint("take", x3**2, _ints([1, 1, -2]), 0, (2,)),
                            [x3], {}),
    "scatter_along_axis": lambda: (_gather_adjoint(
        "along", sg.sin(A23), _ints([[0, 3, 3], [-1, 1, 0]]), 1, (2, 4)), [A23], {}),
    "scatter": lambda: (_scatter(x3**2, (slice(None), 1), (3, 2)) + _scatter(
        A23, (slice(1, 3), slice(None, None, -1)), (3, 3))[:, 1:], [x3, A23], {}),
    "bands": lambda: (_bands((x3, 0, 1), (y3 * x3, -1, 0), (p3, 1, 1)), [x3, y3, p3], {}),
    "arctan": lambda: (sg.arctan(x3 * 2), [x3], {}),
    "arcsin": lambda: (sg.arcsin(t3 * 0.9), [t3], {}),
    "arccos": lambda: (sg.arccos(t3 * 0.9), [t3], {}),
    "arctan2": lambda: (sg.arctan2(y3, x3) + sg.arctan2(A23, x3), [y3, x3, A23], {}),
    "sinh": lambda: (sg.sinh(x3), [x3], {}),
    "cosh": lambda: (sg.cosh(x3), [x3], {}),
    "arcsinh": lambda: (sg.arcsinh(x3), [x3], {}),
    "arctanh": lambda: (sg.arctanh(t3 * 0.9), [t3], {}),
    "log2": lambda: (sg.log2(p3), [p3], {}),
    "log10": lambda: (sg.log10(p3), [p3], {}),
    "logaddexp": lambda: (sg.logaddexp(x3, A23), [x3, A23], {}),
    "cbrt": lambda: (sg.cbrt(p3) + sg.cbrt(p3 - 3), [p3], {}),
    # the rounding family: piecewise constant (a zero derivative), times x to see the rest
    "floor": lambda: (sg.floor(x3 * 2) * x3, [x3], {}),
    "ceil": lambda: (sg.ceil(x3 * 2) * x3, [x3], {}),
    "rint": lambda: (sg.rint(x3 * 3) * x3, [x3], {}),
    "round": lambda: (sg.round(x3, 1) * x3, [x3], {}),
    "fmod": lambda: (sg.fmod(x3, p3 * 0.7), [x3, p3], {}),
    "mod": lambda: (sg.mod(A23, p3 - 3), [A23, p3], {}),
    # y3 is not differentiated by: its stop_gradient is fed back as a constant factor
    "stop_gradient": lambda: (sg.stop_gradient(y3) * x3 + x3**2, [x3], {}),
}
