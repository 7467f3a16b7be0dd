"""Forward mode: Jacobians (every operator's jvp rule, with a batch of tangents and with
one), Hessians and Hessian-vector products, against central finite differences and
``sympy.hessian``; the Rosenbrock Hessian is exact and its formula does not grow with d."""

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
    fd_hessian,
    numeric_jacobian,
    ops_in,
    random_feeds,
    run,
    weighted_sum,
)
from hypothesis import given
from hypothesis import strategies as st

import symgrad as sg
from symgrad.diff.forward import jvp
from symgrad.expr.node import Expr

F64 = "float64"


# ---------------------------------------------------------------------------------------
# Jacobians: every operator's forward rule.
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(OP_CASES))
def test_operator_jacobian_matches_finite_differences(name):
    e, wrts, opt = OP_CASES[name]()
    feeds = case_feeds(0)
    for w in [w for w in wrts if w.dtype.kind == "f"]:
        for simplified in (False, True):
            try:
                J = sg.jacobian(e, w, simplified=simplified)
            except NotImplementedError as exc:
                if name == "bands":  # documented: a banded matrix's tangents have no batch
                    pytest.skip(f"bands: {exc}")
                raise
            assert J.shape == e.shape + w.shape and J.dtype == e.dtype
            assert_close_fd(run(J, feeds), numeric_jacobian(e, w, feeds, opt.get("eps", 1e-6)),
                            rtol=opt.get("rtol", 1e-5),
                            what=f"d{name}/d{w.name} (simplified={simplified})")


@pytest.mark.parametrize("name", sorted(OP_CASES))
def test_operator_directional_derivative(name):
    """The forward rules with no batch axis (what hvp uses), along a random direction."""
    e, wrts, opt = OP_CASES[name]()
    assert name in ops_in(e)
    feeds = case_feeds(1)
    floats = [w for w in wrts if w.dtype.kind == "f"]
    rng = np.random.default_rng(2)
    dirs = {w.name: rng.standard_normal(tuple(w.shape)) for w in floats}
    tangents = [sg.const(dirs[w.name].astype(w.dtype)) for w in floats]
    (t,) = jvp([e], floats, tangents, 0)
    assert t is not None and t.shape == e.shape
    want = sum(np.tensordot(numeric_jacobian(e, w, feeds, opt.get("eps", 1e-6)),
                            dirs[w.name], axes=w.ndim) for w in floats)
    assert_close_fd(run(t, feeds), want, rtol=opt.get("rtol", 1e-5), what=name)
    assert_close_fd(run(sg.simplify(t), feeds), want, rtol=opt.get("rtol", 1e-5), what=name)


x3 = sg.input("x3", shape=(3,), dtype=F64)
M23 = sg.input("M23", shape=(2, 3), dtype=F64)


def _feeds(seed=0):
    rng = np.random.default_rng(seed)
    return {"x3": rng.uniform(-1, 1, 3), "M23": rng.standard_normal((2, 3))}


@pytest.mark.parametrize("build,wrt", [
    (lambda: x3**2, x3),
    (lambda: sg.sum(x3**3), x3),
    (lambda: M23 @ x3, x3),
    (lambda: M23 @ x3, M23),
    (lambda: sg.softmax(M23 * x3, axis=1), M23),
    (lambda: x3[:, None] * x3[None, :], x3),
    (lambda: sg.concat([x3, sg.sin(x3[1:])]), x3),
    (lambda: sg.logsumexp(M23, axis=0) * x3, M23),
], ids=["square", "scalar", "matvec_x", "matvec_M", "softmax", "outer", "concat", "lse"])
def test_jacobian_shape_and_values(build, wrt):
    f = build()
    J = sg.jacobian(f, wrt)
    assert J.shape == f.shape + wrt.shape
    feeds = _feeds()
    assert_close_fd(run(J, feeds), numeric_jacobian(f, wrt, feeds))


def test_jacobian_of_x_squared_is_diag_2x():
    x = sg.input("x", shape=(3,), dtype=F64)
    np.testing.assert_array_equal(sg.evaluate(sg.jacobian(x**2, x), x=[1.0, 2.0, 3.0]),
                                  np.diag([2.0, 4.0, 6.0]))


def test_jacobian_with_a_list_unused_and_errors():
    J = sg.jacobian(M23 @ x3, [x3, M23])
    assert isinstance(J, list) and [j.shape for j in J] == [(2, 3), (2, 2, 3)]
    y = sg.input("y2", shape=(2,), dtype=F64)
    Z = sg.jacobian(x3 * 2, y)
    assert Z.shape == (3, 2)
    np.testing.assert_array_equal(run(Z, {"x3": np.ones(3)}), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="known shape"):
        sg.jacobian(sg.input("xn", dtype=F64) * 2, sg.input("xn", dtype=F64))
    with pytest.raises(TypeError):
        sg.jacobian(x3 * 2, sg.input("ints", shape=(3,), dtype="int32"))


# ---------------------------------------------------------------------------------------
# Hessians and Hessian-vector products.
# ---------------------------------------------------------------------------------------

SMOOTH = {
    "quartic": lambda: sg.sum(x3**4) + sg.sum(x3) ** 2,
    "coupled": lambda: sg.sum(sg.sin(x3[1:] * x3[:-1])) + sg.exp(x3[0]) * x3[2],
    "lse": lambda: sg.logsumexp(x3 * 2) + sg.mean(sg.sigmoid(x3) * sg.tanh(x3[::-1])),
    "quadratic_form": lambda: x3 @ (M23.T @ M23) @ x3 + sg.sum(sg.softplus(M23 @ x3)),
    "matrix_arg": lambda: sg.sum(sg.log_softmax(M23, axis=1) ** 2) + sg.sum(M23**3),
    "where": lambda: sg.sum(sg.where(x3 > 0.0, x3**3, x3**2 * 0.5)),
}


@pytest.mark.parametrize("name", sorted(SMOOTH))
def test_hessian_matches_finite_differences_of_the_gradient(name):
    f = SMOOTH[name]()
    wrt = M23 if name == "matrix_arg" else x3
    feeds = _feeds(3)
    H = sg.hessian(f, wrt)
    assert H.shape == wrt.shape + wrt.shape
    Hv = run(H, feeds)
    assert_close_fd(Hv, fd_hessian(f, wrt, feeds), rtol=1e-5, what=name)
    flat = Hv.reshape(int(np.prod(wrt.shape)), -1)
    np.testing.assert_allclose(flat, flat.T, rtol=1e-9, atol=1e-12)  # symmetric


@pytest.mark.parametrize("name", sorted(SMOOTH))
def test_hvp_is_hessian_times_v(name):
    f = SMOOTH[name]()
    wrt = M23 if name == "matrix_arg" else x3
    v = sg.input("v", shape=wrt.shape, dtype=F64)
    feeds = {**_feeds(4), "v": np.random.default_rng(9).standard_normal(wrt.shape)}
    hv = sg.hvp(f, wrt, v)
    assert hv.shape == wrt.shape
    Hm = run(sg.hessian(f, wrt), feeds)
    want = np.tensordot(Hm, feeds["v"], axes=wrt.ndim)
    np.testing.assert_allclose(run(hv, feeds), want, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(run(sg.hvp(f, wrt, v, simplified=False), feeds), want,
                               rtol=1e-9, atol=1e-10)
    # and against a finite difference of the gradient along v
    g = sg.grad(f, wrt)
    eps = 1e-6
    up = run(g, {**feeds, wrt.name: feeds[wrt.name] + eps * feeds["v"]})
    down = run(g, {**feeds, wrt.name: feeds[wrt.name] - eps * feeds["v"]})
    assert_close_fd(run(hv, feeds), (up - down) / (2 * eps))


def test_hvp_takes_numbers_and_arrays_and_checks_the_shape():
    f = sg.sum(x3**3)
    feeds = {"x3": np.array([1.0, -2.0, 0.5])}
    np.testing.assert_allclose(run(sg.hvp(f, x3, np.array([1.0, 0.0, 2.0])), feeds),
                               6 * feeds["x3"] * [1.0, 0.0, 2.0])
    with pytest.raises(ValueError, match="shape"):
        sg.hvp(f, x3, np.ones(4))


def test_hessian_of_a_function_that_is_linear_or_constant_in_wrt():
    H = sg.hessian(sg.sum(M23 @ x3), x3)
    np.testing.assert_array_equal(run([H, M23], _feeds())[0], np.zeros((3, 3)))
    H2 = sg.hessian(sg.sum(M23**2), x3)
    assert H2.shape == (3, 3)
    np.testing.assert_array_equal(run([H2, M23], _feeds())[0], np.zeros((3, 3)))


xs, ys = sg.input("xs", shape=(), dtype=F64), sg.input("ys", shape=(), dtype=F64)

SCALAR_FUNCTIONS = {
    "poly": lambda x, y: x**3 * y - 2 * x * y**2 + y**4,
    "trig": lambda x, y: sg.sin(x * y) + sg.cos(x) * y,
    "exp_log": lambda x, y: sg.exp(x) / (1 + y**2) + sg.log(1 + x**2) * y,
    "sigmoid": lambda x, y: sg.sigmoid(x - 2 * y) * sg.tanh(y),
    "sqrt_pow": lambda x, y: sg.sqrt(x**2 + y**2 + 1) + (x**2 + 1) ** y,
}


@pytest.mark.parametrize("name", sorted(SCALAR_FUNCTIONS))
def test_hessian_matches_sympy_hessian(name):
    f = SCALAR_FUNCTIONS[name](xs, ys)
    fs = sg.to_sympy(f)
    syms = {s.name: s for s in fs.free_symbols}
    order = [syms["xs"], syms["ys"]]
    Hs = sympy.hessian(fs, order)
    H = sg.hessian(f, [xs, ys])
    assert len(H) == 2 and all(len(row) == 2 for row in H)
    rng = np.random.default_rng(11)
    for _ in range(3):
        p = {"xs": rng.uniform(-1.5, 1.5), "ys": rng.uniform(-1.5, 1.5)}
        want = np.array(Hs.subs({order[0]: p["xs"], order[1]: p["ys"]}).evalf(), float)
        got = np.array([[run(H[i][j], p) for j in range(2)] for i in range(2)])
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12, err_msg=name)
        # the formulas, through SymPy, agree as well
        got_sym = np.array([[float(sympy.N(sg.to_sympy(H[i][j]).subs(
            {s: p[s.name] for s in sg.to_sympy(H[i][j]).free_symbols})))
            for j in range(2)] for i in range(2)])
        np.testing.assert_allclose(got_sym, want, rtol=1e-9, atol=1e-12, err_msg=name)


def test_polynomial_hessian_is_symbolically_sympys():
    f = xs**3 * ys - 2 * xs * ys**2 + ys**4
    fs = sg.to_sympy(f)
    syms = {s.name: s for s in fs.free_symbols}
    order = [syms["xs"], syms["ys"]]
    Hs = sympy.hessian(fs, order)
    H = sg.hessian(f, [xs, ys])
    for i in range(2):
        for j in range(2):
            assert sympy.simplify(sg.to_sympy(H[i][j]) - Hs[i, j]) == 0, (i, j)


def test_hessian_of_scalar_wrt_is_a_scalar():
    H = sg.hessian(sg.sin(xs) * xs, xs)
    assert H.shape == ()
    v = 0.7
    np.testing.assert_allclose(run(H, {"xs": v}), 2 * np.cos(v) - v * np.sin(v), rtol=1e-12)


@SETTINGS
@given(expr_trees(max_depth=5), st.integers(0, 2**16))
def test_random_expression_hessians(e, seed):
    f = weighted_sum(e, seed)
    feeds = random_feeds(seed, scale=0.8)
    b = LEAVES["b"]
    H = sg.hessian(f, b)
    assert H.shape == (3, 3)
    assert_close_fd(run(H, feeds), fd_hessian(f, b, feeds), rtol=1e-4, atol=1e-5,
                    what=str(f))
    v = np.random.default_rng(seed).standard_normal(3)
    hv = run(sg.hvp(f, b, sg.const(v)), feeds)
    np.testing.assert_allclose(hv, run(H, feeds) @ v, rtol=1e-7, atol=1e-8)


# ---------------------------------------------------------------------------------------
# The Rosenbrock Hessian: exact, tridiagonal, and a formula whose size does not grow.
# ---------------------------------------------------------------------------------------


def rosenbrock(d: int) -> tuple[Expr, Expr]:
    x = sg.input("x", shape=(d,), dtype=F64)
    return sg.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2), x


def rosenbrock_hessian(x: np.ndarray) -> np.ndarray:
    """By hand: f = sum_i 100 (x[i+1] - x[i]^2)^2 + (1 - x[i])^2."""
    d = len(x)
    H = np.zeros((d, d))
    i = np.arange(d - 1)
    H[i, i] += 1200 * x[:-1] ** 2 - 400 * x[1:] + 2
    H[i + 1, i + 1] += 200
    H[i, i + 1] = H[i + 1, i] = -400 * x[:-1]
    return H


def rosenbrock_grad(x: np.ndarray) -> np.ndarray:
    g = np.zeros_like(x)
    r = x[1:] - x[:-1] ** 2
    g[:-1] += -400 * r * x[:-1] - 2 * (1 - x[:-1])
    g[1:] += 200 * r
    return g


@pytest.mark.parametrize("d", [2, 5, 50])
def test_rosenbrock_hessian_is_the_exact_tridiagonal_matrix(d):
    f, x = rosenbrock(d)
    H = sg.hessian(f, x)
    assert H.shape == (d, d)
    rng = np.random.default_rng(d)
    for xv in (rng.uniform(-2, 2, d), np.ones(d)):
        got = run(H, {"x": xv})
        want = rosenbrock_hessian(xv)
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-10)
        assert np.count_nonzero(np.triu(got, 2)) == 0 and np.count_nonzero(np.tril(got, -2)) == 0
        np.testing.assert_allclose(run(sg.grad(f, x), {"x": xv}), rosenbrock_grad(xv),
                                   rtol=1e-13, atol=1e-10)
    # H at the minimum x = 1 is positive definite
    assert np.all(np.linalg.eigvalsh(run(H, {"x": np.ones(d)})) > 0)


def test_rosenbrock_hessian_node_count_does_not_grow_with_d():
    counts = {}
    for d in (100, 1000, 5000):
        f, x = rosenbrock(d)
        counts[d] = sg.count_ops(sg.hessian(f, x))
    assert len(set(counts.values())) == 1, counts
    assert counts[100] < 60, counts  # a few vectors, not d Hessian-vector products


def test_rosenbrock_hvp_without_the_hessian():
    d = 7
    f, x = rosenbrock(d)
    v = sg.input("v", shape=(d,), dtype=F64)
    rng = np.random.default_rng(3)
    xv, vv = rng.uniform(-1, 1, d), rng.standard_normal(d)
    np.testing.assert_allclose(run(sg.hvp(f, x, v), {"x": xv, "v": vv}),
                               rosenbrock_hessian(xv) @ vv, rtol=1e-12, atol=1e-10)


def test_least_squares_hessian_with_parameters_and_a_symbolic_batch():
    X = sg.input("Xls", shape=("N", 3), dtype=F64)
    y = sg.input("yls", dtype=F64)
    w = sg.param("w", init=np.array([0.1, -0.2, 0.3]), dtype=F64)
    b = sg.param("b", init=0.5, dtype=F64)
    f = sg.mean((X @ w + b - y) ** 2)
    rng = np.random.default_rng(0)
    feeds = {"Xls": rng.standard_normal((5, 3)), "yls": rng.standard_normal(5)}
    Xv = feeds["Xls"]
    np.testing.assert_allclose(run(sg.hessian(f, w), feeds), 2 * Xv.T @ Xv / 5, rtol=1e-12)
    (hww, hwb), (hbw, hbb) = sg.hessian(f, [w, b])
    assert (hww.shape, hwb.shape, hbw.shape, hbb.shape) == ((3, 3), (3,), (3,), ())
    np.testing.assert_allclose(run(hwb, feeds), 2 * Xv.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(run(hbw, feeds), 2 * Xv.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(run(hbb, feeds), 2.0)
    v = np.array([1.0, -1.0, 2.0])
    np.testing.assert_allclose(run(sg.hvp(f, w, v), feeds), 2 * Xv.T @ (Xv @ v) / 5,
                               rtol=1e-12)


def test_mixed_hessian_blocks_match_finite_differences():
    f = sg.sum(sg.tanh(M23 @ x3) ** 2) + sg.sum(x3**3)
    feeds = _feeds(5)
    (hxx, hxm), (hmx, hmm) = sg.hessian(f, [x3, M23])
    assert hxm.shape == (3, 2, 3) and hmx.shape == (2, 3, 3) and hmm.shape == (2, 3, 2, 3)
    gx, gm = sg.grad(f, [x3, M23], simplified=False)
    assert_close_fd(run(hxx, feeds), numeric_jacobian(gx, x3, feeds))
    assert_close_fd(run(hxm, feeds), numeric_jacobian(gx, M23, feeds))
    assert_close_fd(run(hmx, feeds), numeric_jacobian(gm, x3, feeds))
    assert_close_fd(run(hmm, feeds), numeric_jacobian(gm, M23, feeds))
    np.testing.assert_allclose(run(hxm, feeds), np.moveaxis(run(hmx, feeds), 2, 0),
                               rtol=1e-9, atol=1e-12)
