"""prod, var, std, norm, cumsum and cumprod: values against NumPy on the reference, LLVM
(1 and 2 threads, batch reductions at N = 0, 1, 7, 257) and the CUDA emulator; derivatives
against finite differences (prod with zeros in its input, std at a zero variance); ddof;
errors for bad axes."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from backend_cases import assert_agree, emulated  # noqa: F401 - the fixture
from diffhelp import fd_grad

import symgrad as sg

F64 = np.dtype("float64")


def _graph():
    """Every new function over an (N, 4) input: feature axes and the batch axis."""
    X = sg.input("X", ("N", 4), "float64")
    outs = {
        "prod1": (sg.prod(X, axis=1), lambda x: np.prod(x, axis=1)),
        "prod0": (sg.prod(X, axis=0, keepdims=True),
                  lambda x: np.prod(x, axis=0, keepdims=True)),
        "var0": (sg.var(X, axis=0), lambda x: np.var(x, axis=0)),
        "var1_ddof": (sg.var(X, axis=1, ddof=1), lambda x: np.var(x, axis=1, ddof=1)),
        "std_all_ddof": (sg.std(X, ddof=1), lambda x: np.std(x, ddof=1)),
        "std1_keep": (sg.std(X, axis=-1, keepdims=True),
                      lambda x: np.std(x, axis=-1, keepdims=True)),
        "norm": (sg.norm(X), lambda x: np.linalg.norm(x)),
        "norm_rows": (sg.norm(X, axis=1), lambda x: np.linalg.norm(x, axis=1)),
        "norm_l1": (sg.norm(X, ord=1, axis=1), lambda x: np.linalg.norm(x, 1, axis=1)),
        "norm_inf": (sg.norm(X, ord=np.inf, axis=1),
                     lambda x: np.linalg.norm(x, np.inf, axis=1)),
        "norm_minf": (sg.norm(X, ord=-np.inf, axis=1),
                      lambda x: np.linalg.norm(x, -np.inf, axis=1)),
        "norm_fro_keep": (sg.norm(X, "fro", axis=(0, 1), keepdims=True),
                          lambda x: np.linalg.norm(x, "fro", axis=(0, 1), keepdims=True)),
        "cumsum": (sg.cumsum(X, axis=1), lambda x: np.cumsum(x, axis=1)),
        "cumprod": (sg.cumprod(X, axis=-1), lambda x: np.cumprod(x, axis=-1)),
    }
    return X, outs


def _data(n: int) -> np.ndarray:
    x = np.random.default_rng(n).uniform(-1.5, 1.5, (n, 4))
    if n > 2:
        x[1, 2] = 0.0  # a zero inside the products
    return x


@pytest.mark.parametrize("n", [0, 1, 7, 257])
def test_the_reference_agrees_with_numpy(n):
    X, outs = _graph()
    x = _data(n)
    got = sg.evaluate([e for e, _ in outs.values()], X=x)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # NumPy warns on 0 samples
        wants = [f(x) for _, f in outs.values()]
    for name, g, w in zip(outs, got, wants):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-300, equal_nan=True,
                                   err_msg=name)


@pytest.mark.parametrize("threads", [1, 2])
def test_llvm_agrees_with_the_reference(threads):
    X, outs = _graph()
    before = sg.get_num_threads()
    sg.set_num_threads(threads)
    try:
        f = sg.function([e for e, _ in outs.values()])
        for n in (0, 1, 7, 257):
            x = _data(n)
            want = sg.evaluate([e for e, _ in outs.values()], X=x)
            for name, g, w in zip(outs, f(X=x), want):
                assert_agree(g, w, what=f"{name} at N={n}")
    finally:
        sg.set_num_threads(before)


@pytest.mark.usefixtures("emulated")
def test_the_cuda_emulator_agrees_with_the_reference():
    X, outs = _graph()
    f = sg.function([e for e, _ in outs.values()], backend="cuda")
    for n in (1, 7):
        x = _data(n)
        want = sg.evaluate([e for e, _ in outs.values()], X=x)
        for name, g, w in zip(outs, f(X=x), want):
            assert_agree(g, w, what=f"{name} at N={n}")


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_integer_and_float32_dtypes_follow_symgrads_rules(backend):
    v = sg.input("v", (5,), "int32")
    b = sg.input("b", (5,), "bool")
    w = sg.input("w", (3, 5), "float32")
    outs = [sg.prod(v), sg.cumsum(v), sg.cumprod(v), sg.prod(b), sg.var(v), sg.std(w, axis=1),
            sg.cumsum(w, axis=1), sg.prod(w, axis=0)]
    vv = np.array([3, -2, 0, 5, 1], np.int32)
    bv = np.array([True, True, False, True, True])
    wv = np.random.default_rng(1).normal(size=(3, 5)).astype(np.float32)
    got = sg.function(outs, backend=backend)(v=vv, b=bv, w=wv)
    wants = [np.prod(vv).astype(np.int32), np.cumsum(vv).astype(np.int32),
             np.cumprod(vv).astype(np.int32), np.int32(0), np.var(vv), np.std(wv, axis=1),
             np.cumsum(wv, axis=1), np.prod(wv, axis=0)]
    for i, (g, w_) in enumerate(zip(got, wants)):
        assert_agree(g, np.asarray(w_), rtol=2e-6, atol=1e-6, what=str(i))


@pytest.mark.parametrize("zeros", [0, 1, 2])
@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_the_derivative_of_prod_is_the_product_of_the_others(zeros, backend):
    x = sg.input("x", (3, 4), "float64")
    xv = np.random.default_rng(2).uniform(0.5, 2.0, (3, 4)) * np.array([1, -1, 1, 1])
    xv[1, :zeros] = 0.0
    weights = np.arange(1.0, 4.0)
    e = sg.sum(sg.prod(x, axis=1) * weights)
    g = sg.function(sg.grad(e, x), backend=backend)(x=xv)
    others = np.array([[np.prod(np.delete(row, j)) for j in range(4)] for row in xv])
    np.testing.assert_allclose(g, others * weights[:, None], rtol=1e-12, atol=1e-300)
    jac = sg.function(sg.jacobian(sg.prod(x, axis=1), x), backend=backend)(x=xv)
    np.testing.assert_allclose(jac.sum(0), others, rtol=1e-12)
    np.testing.assert_allclose(g, fd_grad(e, x, {"x": xv}), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("build", [
    lambda x: sg.var(x, axis=0, ddof=1), lambda x: sg.std(x, axis=1),
    lambda x: sg.std(x, ddof=2), lambda x: sg.norm(x, axis=0),
    lambda x: sg.norm(x, ord=1), lambda x: sg.norm(x, ord=3, axis=1),
    lambda x: sg.cumsum(x, axis=0), lambda x: sg.cumprod(x, axis=1),
    lambda x: sg.cumprod(x), lambda x: sg.prod(x, axis=(0, 1))],
    ids=["var", "std", "std_ddof", "norm2", "norm1", "norm3", "cumsum", "cumprod",
         "cumprod_flat", "prod_all"])
def test_derivatives_match_finite_differences(build):
    x = sg.input("x", (3, 4), "float64")
    xv = np.random.default_rng(3).uniform(0.5, 1.5, (3, 4))
    xv[0, 1] = -0.7
    e = sg.sum(build(x) * np.linspace(0.5, 1.5, build(x).shape[-1] if build(x).ndim else 1))
    g = sg.function(sg.grad(e, x))(x=xv)
    fd = fd_grad(e, x, {"x": xv})
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(sg.evaluate(sg.grad(e, x), x=xv), fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_std_and_norm_have_derivative_zero_at_a_kink(backend):
    x = sg.input("x", (2, 3), "float64")
    xv = np.array([[2.0, 2.0, 2.0], [1.0, -1.0, 3.0]])  # row 0 has variance 0
    for e, what in ((sg.std(x, axis=1), "std"), (sg.norm(x - 2.0, axis=1), "norm")):
        g = sg.function(sg.grad(sg.sum(e), x), backend=backend)(x=xv)
        j = sg.function(sg.jacobian(e, x), backend=backend)(x=xv)
        assert np.all(np.isfinite(g)) and np.all(np.isfinite(j)), what
        np.testing.assert_array_equal(g[0], 0.0, err_msg=what)
        np.testing.assert_allclose(j.sum(0), g, rtol=1e-12, err_msg=what)
    # away from the kink: the textbook derivative, (x - mean)/(n std)
    row = xv[1]
    want = (row - row.mean()) / (3 * row.std())
    g = sg.evaluate(sg.grad(sg.sum(sg.std(x, axis=1)), x), x=xv)
    np.testing.assert_allclose(g[1], want, rtol=1e-12)


def test_prod_derivative_matches_sympy():
    sympy = pytest.importorskip("sympy")
    a, b, c = sympy.symbols("a b c")
    p = a * b * c
    point = {a: 0.0, b: 1.5, c: -2.0}
    x = sg.input("x", (3,), "float64")
    g = sg.evaluate(sg.grad(sg.prod(x), x), x=np.array([0.0, 1.5, -2.0]))
    want = [float(sympy.diff(p, s).subs(point)) for s in (a, b, c)]
    np.testing.assert_allclose(g, want, rtol=1e-15)


def test_numpy_functions_dispatch():
    x = sg.input("x", (3, 4), "float64")
    xv = np.random.default_rng(4).normal(size=(3, 4))
    cases = [(np.prod(x, axis=1), np.prod(xv, axis=1)),
             (np.multiply.reduce(x, axis=1), np.prod(xv, axis=1)),
             (np.var(x, axis=0, ddof=1), np.var(xv, axis=0, ddof=1)),
             (np.std(x, keepdims=True), np.std(xv, keepdims=True)),
             (np.linalg.norm(x, axis=1), np.linalg.norm(xv, axis=1)),
             (np.linalg.norm(x, 1), np.linalg.norm(xv, 1)),
             (np.linalg.norm(x, -np.inf), np.linalg.norm(xv, -np.inf)),
             (np.cumsum(x, axis=0), np.cumsum(xv, axis=0)),
             (np.cumprod(x), np.cumprod(xv))]
    for e, want in cases:
        assert isinstance(e, sg.Expr)
        np.testing.assert_allclose(sg.evaluate(e, x=xv), want, rtol=1e-12)
    with pytest.raises(TypeError, match=r"np.var\(..., correction=...\).*use ddof="):
        np.var(x, correction=1)


def test_matrix_norms_follow_numpy():
    x = sg.input("x", (3, 4), "float64")
    xv = np.random.default_rng(5).normal(size=(3, 4))
    for ord_ in (None, "fro", 1, -1, np.inf, -np.inf):
        for axis in (None, (0, 1), (1, 0)):
            got = sg.evaluate(sg.norm(x, ord_, axis), x=xv)
            np.testing.assert_allclose(got, np.linalg.norm(xv, ord_, axis), rtol=1e-12,
                                       err_msg=f"ord={ord_} axis={axis}")


def test_bad_arguments_are_refused_clearly():
    x = sg.input("x", ("N", 4), "float64")
    with pytest.raises(sg.ShapeError, match="prod: axis 2 is out of range"):
        sg.prod(x, axis=2)
    with pytest.raises(sg.ShapeError, match="var: axis -3 is out of range"):
        sg.var(x, axis=-3)
    with pytest.raises(TypeError, match="var: ddof must be an int, got 0.5"):
        sg.var(x, ddof=0.5)
    with pytest.raises(TypeError, match="cumsum: axis must be an int or None, got"):
        sg.cumsum(x, axis=(0, 1))
    with pytest.raises(sg.ShapeError, match="cumsum along axis 0 of x .*symbolic"):
        sg.cumsum(x, axis=0)
    with pytest.raises(sg.ShapeError, match="cumprod of x flattened .*'N' is symbolic"):
        sg.cumprod(x)
    with pytest.raises(ValueError, match="norm: ord 2 for a matrix is not supported"):
        sg.norm(x, ord=2, axis=(0, 1))
    with pytest.raises(ValueError, match="norm: invalid ord 'nuc' for a vector"):
        sg.norm(x, ord="nuc", axis=1)
    with pytest.raises(ValueError, match=r"norm: ord=1 needs a 1-D or 2-D array"):
        sg.norm(sg.input("t", (2, 3, 4)), ord=1)
