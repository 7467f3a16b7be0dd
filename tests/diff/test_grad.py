"""Reverse-mode derivatives: every operator's vector-Jacobian rule against central finite
differences in float64 (and against ``sympy.diff`` through ``sg.to_sympy`` for the scalar
and elementwise ones), broadcasting undone by summing, sub-gradients at kinks, losses,
random expression trees, errors, and the size of the derivative."""

from __future__ import annotations

import numpy as np
import pytest
import sympy
from diffhelp import (
    LEAVES,
    OP_CASES,
    SETTINGS,
    assert_close_fd,
    case_feeds,
    expr_trees,
    fd_grad,
    ops_in,
    random_feeds,
    run,
    weighted_sum,
)
from hypothesis import given, settings
from hypothesis import strategies as st

import symgrad as sg
from symgrad.diff import Simplifier
from symgrad.diff.reverse import raw_grad
from symgrad.expr.node import ELEMENTWISE, LEAF, Expr, toposort
from symgrad.expr.table import ALL_OPS

F64 = "float64"


def check_grads(f: Expr, wrts: list, feeds: dict, eps: float = 1e-6, rtol: float = 1e-5,
                atol: float = 1e-6) -> None:
    """grad(f) (simplified and raw) against central differences, for every float wrt."""
    for simplified in (False, True):
        grads = sg.grad(f, wrts, simplified=simplified)
        assert isinstance(grads, list) and len(grads) == len(wrts)
        for w, g in zip(wrts, grads):
            assert g.shape == w.shape and g.dtype == w.dtype, (w.name, g.shape, g.dtype)
            assert_close_fd(run(g, feeds), fd_grad(f, w, feeds, eps), rtol=rtol, atol=atol,
                            what=f"d/d{w.name} (simplified={simplified}) of {f}")


# ---------------------------------------------------------------------------------------
# Every operator has rules, and every rule is right.
# ---------------------------------------------------------------------------------------


def test_every_operator_declares_its_derivative_rules():
    for op in ALL_OPS:
        if op.kind == LEAF:
            continue
        assert op.vjp is not None, f"operator {op.name!r} has no vjp rule"
        if op.kind != ELEMENTWISE:  # elementwise forward rules come from vjp
            assert op.jvp is not None, f"operator {op.name!r} has no jvp rule"


def test_every_operator_has_a_derivative_case():
    names = {op.name for op in ALL_OPS if op.kind != LEAF}
    missing = names - set(OP_CASES)
    assert not missing, f"add a case to diffhelp.OP_CASES for {sorted(missing)}"


@pytest.mark.parametrize("name", sorted(OP_CASES))
def test_operator_gradient_matches_finite_differences(name):
    e, wrts, opt = OP_CASES[name]()
    assert name in ops_in(e), f"the case for {name!r} does not use it"
    f = weighted_sum(e, seed=1)
    for seed in (0, 1):
        check_grads(f, [w for w in wrts if w.dtype.kind == "f"], case_feeds(seed),
                    eps=opt.get("eps", 1e-6), rtol=opt.get("rtol", 1e-5))


# ---------------------------------------------------------------------------------------
# Scalar and elementwise operators against SymPy.
# ---------------------------------------------------------------------------------------

xs, ys = sg.input("xs", shape=(), dtype=F64), sg.input("ys", shape=(), dtype=F64)
ANY, POS, UNIT = (-2.0, 2.0), (0.3, 2.5), (-1.0, 1.0)

SYMPY_CASES = {
    "exp": (lambda x, y: sg.exp(x), ANY, ANY),
    "log": (lambda x, y: sg.log(x), POS, ANY),
    "log1p": (lambda x, y: sg.log1p(x), POS, ANY),
    "expm1": (lambda x, y: sg.expm1(x), ANY, ANY),
    "sqrt": (lambda x, y: sg.sqrt(x), POS, ANY),
    "sin": (lambda x, y: sg.sin(x), ANY, ANY),
    "cos": (lambda x, y: sg.cos(x), ANY, ANY),
    "tan": (lambda x, y: sg.tan(x), UNIT, ANY),
    "tanh": (lambda x, y: sg.tanh(x), ANY, ANY),
    "erf": (lambda x, y: sg.erf(x), ANY, ANY),
    "abs": (lambda x, y: sg.abs(x), ANY, ANY),
    "sign": (lambda x, y: sg.sign(x) * x**2, ANY, ANY),
    "sigmoid": (lambda x, y: sg.sigmoid(x), ANY, ANY),
    "relu": (lambda x, y: sg.relu(x), ANY, ANY),
    "softplus": (lambda x, y: sg.softplus(x), ANY, ANY),
    "gelu": (lambda x, y: sg.gelu(x), ANY, ANY),
    "leaky_relu": (lambda x, y: sg.leaky_relu(x, 0.2), ANY, ANY),
    "elu": (lambda x, y: sg.elu(x, 0.7), ANY, ANY),
    "negative": (lambda x, y: -x, ANY, ANY),
    "square": (lambda x, y: sg.square(x), ANY, ANY),
    "add": (lambda x, y: x + y, ANY, ANY),
    "subtract": (lambda x, y: x - y, ANY, ANY),
    "multiply": (lambda x, y: x * y, ANY, ANY),
    "divide": (lambda x, y: x / y, ANY, POS),
    "power": (lambda x, y: x**y, POS, ANY),
    "power_const": (lambda x, y: x**3 - 2 * x ** (-2), POS, ANY),
    "maximum": (lambda x, y: sg.maximum(x, y), ANY, ANY),
    "minimum": (lambda x, y: sg.minimum(x, y), ANY, ANY),
    "clip": (lambda x, y: sg.clip(x * y, -0.5, 0.5), ANY, ANY),
    "where": (lambda x, y: sg.where(x > y, x * y, sg.sin(x) + y), ANY, ANY),
    "composite": (lambda x, y: sg.sigmoid(x * y + 1) * sg.tanh(x) / (1 + y**2), ANY, ANY),
    "chain": (lambda x, y: sg.log(1 + sg.exp(sg.sin(x) * y)) ** 2, ANY, ANY),
}


def _sympy_value(expr: sympy.Expr, values: dict) -> float:
    subs = {s: values[s.name] for s in expr.free_symbols}
    return float(sympy.N(expr.subs(subs)))


@pytest.mark.parametrize("name", sorted(SYMPY_CASES))
def test_elementwise_gradient_matches_sympy_diff(name):
    build, xdom, ydom = SYMPY_CASES[name]
    f = build(xs, ys)
    fs = sg.to_sympy(f)
    syms = {s.name: s for s in fs.free_symbols}
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    points = [{"xs": rng.uniform(*xdom), "ys": rng.uniform(*ydom)} for _ in range(3)]
    for w in (xs, ys):
        if w.name not in syms:
            continue
        g = sg.grad(f, w)
        want = sympy.diff(fs, syms[w.name])
        got_sym = sg.to_sympy(g)
        for p in points:
            if abs(p["xs"] - p["ys"]) < 1e-3 or min(abs(p["xs"]), abs(p["xs"] * p["ys"])) < 1e-3:
                continue  # away from the kinks
            ref = _sympy_value(want, p)
            # the formula, through SymPy, and the evaluator agree with sympy.diff
            np.testing.assert_allclose(_sympy_value(got_sym, p), ref, rtol=1e-9, atol=1e-12,
                                       err_msg=f"to_sympy(grad) of {name} w.r.t. {w.name}")
            np.testing.assert_allclose(run(g, p), ref, rtol=1e-9, atol=1e-12,
                                       err_msg=f"grad of {name} w.r.t. {w.name}")
            np.testing.assert_allclose(fd_grad(f, w, p), ref, rtol=1e-5, atol=1e-7)


def test_polynomial_gradient_is_symbolically_equal_to_sympy():
    f = 3 * xs**4 * ys - xs * ys**2 + 7 * xs - 1
    fs = sg.to_sympy(f)
    syms = {s.name: s for s in fs.free_symbols}
    for w in (xs, ys):
        got = sg.to_sympy(sg.grad(f, w))
        assert sympy.simplify(got - sympy.diff(fs, syms[w.name])) == 0


# ---------------------------------------------------------------------------------------
# Tensor operators: axes, keepdims, every matmul form, shape operators.
# ---------------------------------------------------------------------------------------

X24 = sg.input("X24", shape=(2, 4), dtype=F64)
X234 = sg.input("X234", shape=(2, 3, 4), dtype=F64)
V4 = sg.input("V4", shape=(4,), dtype=F64)


def _tensor_feeds(seed=0):
    rng = np.random.default_rng(seed)
    return {"X24": rng.standard_normal((2, 4)), "X234": rng.standard_normal((2, 3, 4)),
            "V4": rng.standard_normal(4)}


AXES = [None, 0, 1, 2, -1, (0, 2), (1, 2), (0, 1, 2)]


@pytest.mark.parametrize("reduce", ["sum", "mean", "max", "min", "logsumexp"])
@pytest.mark.parametrize("axis", AXES)
@pytest.mark.parametrize("keepdims", [False, True])
def test_reductions_with_axis_and_keepdims(reduce, axis, keepdims):
    e = getattr(sg, reduce)(sg.sin(X234) * 2, axis=axis, keepdims=keepdims)
    check_grads(weighted_sum(e, 3), [X234], _tensor_feeds())


@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_softmax_and_log_softmax_along_each_axis(fn, axis):
    e = getattr(sg, fn)(X234 * 1.5, axis=axis)
    check_grads(weighted_sum(e, 4), [X234], _tensor_feeds())


MATMUL_SHAPES = [((4,), (4,)), ((4,), (4, 3)), ((3, 4), (4,)), ((3, 4), (4, 2)),
                 ((2, 3, 4), (4, 5)), ((3, 4), (2, 4, 5)), ((2, 1, 3, 4), (5, 4, 2)),
                 ((4,), (2, 4, 3)), ((2, 3, 4), (4,))]


@pytest.mark.parametrize("sa,sb", MATMUL_SHAPES)
def test_matmul_every_form(sa, sb):
    a = sg.input("ma", shape=sa, dtype=F64)
    b = sg.input("mb", shape=sb, dtype=F64)
    rng = np.random.default_rng(5)
    feeds = {"ma": rng.standard_normal(sa), "mb": rng.standard_normal(sb)}
    e = a @ b
    assert e.shape == np.matmul(feeds["ma"], feeds["mb"]).shape
    check_grads(weighted_sum(e, 6), [a, b], feeds)


def test_matmul_with_a_parameter_matrix_and_a_symbolic_batch():
    X = sg.input("Xn", shape=("N", 3), dtype=F64)
    W = sg.param("W", init=np.arange(6.0).reshape(3, 2) / 6, dtype=F64)
    f = sg.mean(sg.tanh(X @ W) ** 2)
    feeds = {"Xn": np.random.default_rng(0).standard_normal((5, 3))}
    check_grads(f, [W, X], feeds)


@pytest.mark.parametrize("build", [
    lambda: sg.transpose(X234, (2, 0, 1)) * np.arange(4.0)[:, None, None],
    lambda: X234.T,
    lambda: sg.transpose(X24),
    lambda: sg.reshape(X234, (4, 6)),
    lambda: sg.reshape(X234, (-1,)) ** 2,
    lambda: sg.reshape(X24, (2, 2, 2)).sum(axis=1),
    lambda: sg.broadcast_to(V4, (3, 4)) * sg.sin(sg.broadcast_to(V4[:, None], (4, 3))).T,
    lambda: sg.broadcast_to(X24[:, None, :], (2, 3, 4)) * X234,
    lambda: X234[1:, ::2, -1],
    lambda: X234[..., None, 1:3] * 2,
    lambda: X24[::-1, 1::2],
    lambda: X24[0] * X24[1],
    lambda: sg.concat([X24, V4[None], X234[0]], axis=0),
    lambda: sg.concat([X234, X234 ** 2], axis=-1),
    lambda: sg.where(X24 > 0, X24 ** 2, -V4),
    lambda: sg.where(V4 > 0, 1.0, X24 * 3),
], ids=["transpose_perm", "transpose_3d", "transpose_2d", "reshape", "reshape_flat",
        "reshape_sum", "broadcast_to", "broadcast_3d", "slice", "slice_newaxis",
        "slice_reverse", "int_index", "concat_0", "concat_last", "where", "where_const"])
def test_shape_operators(build):
    e = build()
    check_grads(weighted_sum(e, 7), [X234, X24, V4], _tensor_feeds(2))


# ---------------------------------------------------------------------------------------
# Broadcasting is undone by summing.
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(3,), (1, 3), (), (1,), (1, 1), (4, 1)])
def test_broadcast_parameter_gradient_is_summed(shape):
    # a symbolic batch, except where the parameter fixes it ((4, 1) against (4, 3))
    X = sg.input("Xb", shape=(4 if shape == (4, 1) else "N", 3), dtype=F64)
    rng = np.random.default_rng(0)
    p = sg.param("p", init=rng.standard_normal(shape), dtype=F64)
    f = sg.mean((X * p + p**2 - 1) ** 2) + sg.sum(sg.sin(X - p))
    g = sg.grad(f, p)
    assert g.shape == p.shape and g.dtype == p.dtype
    feeds = {"Xb": rng.standard_normal((4, 3))}
    check_grads(f, [p, X], feeds)
    # by hand: the cotangent of the broadcast value, summed back
    xv, pv = feeds["Xb"], p.value
    full = 2 * (xv * pv + pv**2 - 1) * (xv + 2 * pv) / xv.size - np.cos(xv - pv)
    lead = full.ndim - pv.ndim
    want = full.sum(axis=tuple(range(lead)))
    want = want.sum(axis=tuple(i for i, d in enumerate(pv.shape) if d == 1), keepdims=True)
    np.testing.assert_allclose(run(g, feeds), want.reshape(pv.shape), rtol=1e-12)


def test_scalar_parameters_of_linear_regression():
    x1, x2, y = sg.inputs("x1 x2 y", dtype=F64)
    w1, w2, b = sg.params("w1 w2 b", init=0.5, dtype=F64)
    loss = sg.mean((w1 * x1 + w2 * x2 + b - y) ** 2)
    rng = np.random.default_rng(0)
    feeds = {k: rng.standard_normal(6) for k in ("x1", "x2", "y")}
    check_grads(loss, [w1, w2, b], feeds)
    r = 0.5 * feeds["x1"] + 0.5 * feeds["x2"] + 0.5 - feeds["y"]
    np.testing.assert_allclose(run(sg.grad(loss, w1), feeds), 2 * np.mean(r * feeds["x1"]))
    np.testing.assert_allclose(run(sg.grad(loss, b), feeds), 2 * np.mean(r))


# ---------------------------------------------------------------------------------------
# Kinks: the derivative is 0 exactly at the kink (PyTorch's relu/abs convention).
# ---------------------------------------------------------------------------------------

k3 = sg.input("k3", shape=(3,), dtype=F64)
KINK = {"k3": np.array([-1.5, 0.0, 2.0])}


def _g(e):
    return run(sg.grad(sg.sum(e), k3), KINK)


def test_relu_abs_at_the_kink():
    np.testing.assert_array_equal(_g(sg.relu(k3)), [0.0, 0.0, 1.0])
    np.testing.assert_array_equal(_g(sg.abs(k3)), [-1.0, 0.0, 1.0])
    np.testing.assert_array_equal(_g(abs(k3)), [-1.0, 0.0, 1.0])


def test_maximum_minimum_at_a_tie():
    # a tie shares the derivative evenly, as autograd, JAX and PyTorch do
    zero = sg.const(np.zeros(3))
    np.testing.assert_array_equal(_g(sg.maximum(k3, 0.0)), [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(_g(sg.maximum(k3, zero)), [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(_g(sg.minimum(k3, 0.0)), [1.0, 0.5, 0.0])
    # both operands the same node: the halves add up to the derivative of x
    np.testing.assert_array_equal(_g(sg.maximum(k3, k3)), [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(_g(sg.minimum(k3, k3)), [1.0, 1.0, 1.0])
    j3 = sg.input("j3", shape=(3,), dtype=F64)
    f = sg.sum(sg.maximum(k3, j3) * np.array([1.0, 2.0, 3.0]))
    gk, gj = run(sg.grad(f, [k3, j3]), {**KINK, "j3": np.array([-2.0, 0.0, 5.0])})
    np.testing.assert_array_equal(gk, [1.0, 1.0, 0.0])
    np.testing.assert_array_equal(gj, [0.0, 1.0, 3.0])


def test_clip_at_its_bounds():
    # clip is maximum then minimum: half at a bound, as jnp.clip has it
    np.testing.assert_array_equal(_g(sg.clip(k3, 0.0, 2.0)), [0.0, 0.5, 0.5])
    np.testing.assert_array_equal(_g(sg.clip(k3, -3.0, 3.0)), [1.0, 1.0, 1.0])


def test_leaky_relu_and_elu_at_zero_take_the_left_slope():
    # PyTorch: x > 0 ? g : g*negative_slope (elu: g*alpha at 0, its left derivative)
    np.testing.assert_allclose(_g(sg.leaky_relu(k3, 0.2)), [0.2, 0.2, 1.0])
    np.testing.assert_allclose(_g(sg.elu(k3, 0.7)), [0.7 * np.exp(-1.5), 0.7, 1.0])


def test_max_reduction_shares_the_gradient_among_ties():
    m = sg.input("m", shape=(2, 3), dtype=F64)
    v = {"m": np.array([[1.0, 3.0, 3.0], [2.0, 0.0, -1.0]])}
    np.testing.assert_allclose(run(sg.grad(sg.max(m), m), v),
                               [[0, 0.5, 0.5], [0, 0, 0]])
    np.testing.assert_allclose(run(sg.grad(sg.sum(sg.max(m, axis=1)), m), v),
                               [[0, 0.5, 0.5], [1, 0, 0]])
    np.testing.assert_allclose(run(sg.grad(sg.sum(sg.min(m, axis=0)), m), v),
                               [[1, 0, 0], [0, 1, 1]])


# ---------------------------------------------------------------------------------------
# Losses; cross_entropy's gradient is softmax - onehot.
# ---------------------------------------------------------------------------------------

Z = sg.input("Z", shape=("N", 5), dtype=F64)
T = sg.input("T", shape=("N", 5), dtype=F64)
LAB = sg.input("lab", shape=("N",), dtype="int32")


def _loss_feeds(seed=0, n=4):
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.05, 1, (n, 5))
    return {"Z": rng.standard_normal((n, 5)) * 2, "T": rng.standard_normal((n, 5)),
            "lab": rng.integers(0, 5, n).astype(np.int32),
            "P": p / p.sum(axis=1, keepdims=True), "B": rng.uniform(0, 1, (n, 5))}


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_cross_entropy_gradient_is_softmax_minus_onehot(reduction):
    feeds = _loss_feeds()
    loss = sg.cross_entropy(Z, LAB, reduction=reduction)
    g = sg.grad(loss, Z)
    onehot = np.eye(5)[feeds["lab"]]
    want = _softmax(feeds["Z"]) - onehot
    if reduction == "mean":
        want = want / len(feeds["lab"])
    np.testing.assert_allclose(run(g, feeds), want, rtol=1e-12, atol=1e-15)
    check_grads(loss, [Z], feeds)
    # the stable form: no exponential of the logits in the formula
    assert "softmax" in ops_in(g) and "one_hot" in ops_in(g)
    assert "exp" not in ops_in(g)


def test_cross_entropy_gradient_with_extreme_logits_is_finite():
    feeds = _loss_feeds()
    feeds["Z"] = feeds["Z"] * 1e3  # exp would overflow
    g = run(sg.grad(sg.cross_entropy(Z, LAB), Z), feeds)
    assert np.isfinite(g).all()
    np.testing.assert_allclose(g.sum(axis=1), 0, atol=1e-12)


P_ = sg.input("P", shape=("N", 5), dtype=F64)
B_ = sg.input("B", shape=("N", 5), dtype=F64)

LOSSES = {
    "mse": lambda r: sg.mse(Z, T, reduction=r),
    "mae": lambda r: sg.mae(Z, T, reduction=r),
    "huber": lambda r: sg.huber(Z, T, delta=0.8, reduction=r),
    "smooth_l1": lambda r: sg.smooth_l1(Z, T, beta=0.6, reduction=r),
    "cross_entropy": lambda r: sg.cross_entropy(Z, LAB, reduction=r),
    "cross_entropy_probs": lambda r: sg.cross_entropy(Z, P_, reduction=r),
    "nll": lambda r: sg.nll(sg.log_softmax(Z), LAB, reduction=r),
    "bce_with_logits": lambda r: sg.binary_cross_entropy_with_logits(Z, B_, reduction=r),
    "kl_div": lambda r: sg.kl_div(sg.log_softmax(Z), P_, reduction=r),
    "kl_div_log_target": lambda r: sg.kl_div(sg.log_softmax(Z), sg.log(P_), reduction=r,
                                             log_target=True),
}


def test_every_loss_is_tested():
    assert {"mse", "mae", "huber", "smooth_l1", "cross_entropy", "nll",
            "binary_cross_entropy_with_logits", "kl_div"} <= set(sg.expr.losses.__all__)
    assert set(sg.expr.losses.__all__) - {"binary_cross_entropy_with_logits"} <= set(LOSSES)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_gradients(name, reduction):
    loss = LOSSES[name](reduction)
    if reduction == "none":  # per-sample losses: a cotangent that is not all ones
        assert loss.shape in (("N",), ("N", 5))
        loss = sg.sum(loss + 0.5 * loss**2)
    feeds = _loss_feeds(1)
    wrts = [Z] + ([T] if T in toposort([loss]) else []) + (
        [P_] if P_ in toposort([loss]) else []) + ([B_] if B_ in toposort([loss]) else [])
    check_grads(loss, wrts, feeds)


def test_kl_div_batchmean():
    loss = sg.kl_div(sg.log_softmax(Z), P_, reduction="batchmean")
    check_grads(loss, [Z, P_], _loss_feeds(2))


# ---------------------------------------------------------------------------------------
# Random expression trees over broadcasting shapes.
# ---------------------------------------------------------------------------------------


@SETTINGS
@given(expr_trees(max_depth=6), st.integers(0, 2**16))
def test_random_expression_gradients_match_finite_differences(e, seed):
    f = weighted_sum(e, seed)
    check_grads(f, list(LEAVES.values()), random_feeds(seed), rtol=1e-5, atol=1e-6)


@settings(SETTINGS, max_examples=10)
@given(expr_trees(max_depth=6, full=True), st.integers(0, 2**16))
def test_random_full_depth_expression_gradients(e, seed):
    f = weighted_sum(e, seed)
    check_grads(f, list(LEAVES.values()), random_feeds(seed, scale=0.8), rtol=1e-5,
                atol=1e-6)


# ---------------------------------------------------------------------------------------
# Errors and zeros.
# ---------------------------------------------------------------------------------------


def test_grad_of_a_non_scalar_points_to_jacobian():
    x = sg.input("x", shape=(3,), dtype=F64)
    with pytest.raises(ValueError, match="jacobian"):
        sg.grad(x**2, x)
    with pytest.raises(ValueError, match="jacobian"):
        sg.grad(sg.input("xn") * 2, sg.input("xn"))


def test_grad_with_respect_to_an_integer_input_is_a_type_error():
    labels = sg.input("labels", dtype="int32")
    x = sg.input("x")
    f = sg.sum(sg.cast(labels, "float32") * x)
    with pytest.raises(TypeError, match="labels"):
        sg.grad(f, labels)
    with pytest.raises(TypeError):
        sg.grad(f, [x, labels])
    with pytest.raises(TypeError):
        sg.grad(sg.sum(labels), x)  # an integer f has no gradient either


def test_grad_needs_expressions():
    x = sg.input("x")
    with pytest.raises(TypeError):
        sg.grad(1.0, x)
    with pytest.raises(TypeError):
        sg.grad(sg.sum(x), "x")


def test_grad_with_respect_to_an_unused_node_is_zero_of_its_shape():
    x = sg.input("x", shape=(3,), dtype=F64)
    u = sg.input("u", shape=(2, 3), dtype=F64)
    p = sg.param("p", init=np.ones((4, 1)), dtype="float32")
    n = sg.input("n", shape=("N", 2), dtype=F64)
    f = sg.sum(x**2)
    gu, gp, gn, gx = sg.grad(f, [u, p, n, x])
    assert gu.shape == (2, 3) and gp.shape == (4, 1) and gn.shape == ("N", 2)
    assert gp.dtype == np.float32 and gu.dtype == np.float64
    feeds = {"x": np.array([1.0, 2.0, 3.0]), "u": np.ones((2, 3)), "n": np.ones((5, 2))}
    np.testing.assert_array_equal(run(gu, feeds), np.zeros((2, 3)))
    np.testing.assert_array_equal(run(gp, feeds), np.zeros((4, 1), np.float32))
    # nothing in gn binds N: evaluate it beside n, which does
    np.testing.assert_array_equal(run([gn, n], feeds)[0], np.zeros((5, 2)))
    np.testing.assert_array_equal(run(gx, feeds), [2.0, 4.0, 6.0])
    # single node in, single node out
    assert isinstance(sg.grad(f, u), Expr)


def test_grad_of_a_float32_model_is_float32():
    x = sg.input("x")
    w = sg.param("w", init=0.5)
    g = sg.grad(sg.mean(sg.sigmoid(w * x) ** 2), w)
    assert g.dtype == np.float32 and g.shape == ()
    v = run(g, {"x": np.array([0.5, -1.0], np.float32)})
    assert v.dtype == np.float32


def test_grad_through_integer_and_bool_branches():
    x = sg.input("x", shape=(3,), dtype=F64)
    labels = sg.input("labels3", shape=(3,), dtype="int32")
    f = sg.sum(x * sg.cast(labels, F64) + sg.where(labels > 0, x**2, 0.0))
    feeds = {"x": np.array([1.0, -2.0, 0.5]), "labels3": np.array([0, 2, 1], np.int32)}
    np.testing.assert_allclose(run(sg.grad(f, x), feeds), [0.0, 2 - 4, 1 + 1.0])


# ---------------------------------------------------------------------------------------
# The derivative's size is linear in the function's size.
# ---------------------------------------------------------------------------------------


def _chain(t: Expr, n: int) -> Expr:
    for _ in range(n):
        t = t * t + sg.sin(t)
    return t


def test_derivative_of_a_long_chain_stays_small_and_right():
    x = sg.input("xc", shape=(), dtype=F64)
    f = _chain(x, 30)
    raw = raw_grad(f, x)
    g = sg.grad(f, x)
    assert sg.count_ops(raw) < 20 * 30
    assert sg.count_ops(g) < 20 * 30
    feeds = {"xc": np.float64(0.01)}
    assert_close_fd(run(g, feeds), fd_grad(f, x, feeds, 1e-7), rtol=1e-6)
    assert_close_fd(run(raw, feeds), fd_grad(f, x, feeds, 1e-7), rtol=1e-6)


def test_derivative_size_grows_linearly_with_depth():
    x = sg.input("xc", shape=(), dtype=F64)
    sizes = [sg.count_ops(raw_grad(_chain(x, n), x)) for n in (10, 20, 40, 80)]
    assert sizes[0] < sizes[1] < sizes[2] < sizes[3], sizes
    assert sizes[3] <= 2.2 * sizes[2] and sizes[2] <= 2.2 * sizes[1], sizes


def test_a_node_used_many_times_is_differentiated_once():
    calls: dict = {}
    saved = {}
    for op in ALL_OPS:
        if op.vjp is None:
            continue

        def counting(*args, _rule=op.vjp):
            out = args[1]
            calls[out] = calls.get(out, 0) + 1
            return _rule(*args)

        saved[op] = op.vjp
        object.__setattr__(op, "vjp", counting)
    try:
        x = sg.input("xk", shape=(3,), dtype=F64)
        e = sg.sin(x)
        t = e
        for _ in range(6):
            t = t * e + sg.exp(e) - t / (1 + e**2)  # e and t are each used several times
        f = sg.sum(t * t)
        raw_grad(f, x)
    finally:
        for op, rule in saved.items():
            object.__setattr__(op, "vjp", rule)
    assert calls, "the sweep did not call any vjp rule"
    assert max(calls.values()) == 1, {str(k): v for k, v in calls.items() if v > 1}
    assert calls[e] == 1
    # every operator node between f and x was differentiated
    live = [n for n in toposort([f]) if n.srcs and x in toposort([n])]
    assert set(live) <= set(calls)


def test_gradient_is_simplified_and_the_simplifier_does_not_cycle():
    x = sg.input("xc", shape=(), dtype=F64)
    raw = raw_grad(_chain(x, 12), x)
    s = Simplifier()
    out = s(raw)
    assert s.cut_short == 0
    assert sg.count_ops(out) <= 1.5 * sg.count_ops(raw)
    assert sg.simplify(out) is out
