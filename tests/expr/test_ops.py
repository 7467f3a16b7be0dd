"""Every operator of the graph stage: result shape and dtype, and ``sg.evaluate`` against
NumPy formulas written out independently here (in float64, compared with a tolerance)."""

from __future__ import annotations

import math
import operator

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import scipy.special
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import symgrad as sg
from symgrad.expr.node import Expr, toposort
from symgrad.expr.ops_index import normalize_key
from symgrad.expr.table import ALL_OPS, OPS_BY_NAME

F32, F64, I32, BOOL = (np.dtype(t) for t in ("float32", "float64", "int32", "bool"))

SETTINGS = settings(max_examples=30, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

_math_erf = np.vectorize(math.erf, otypes=[np.float64])


def close(got, want, dtype, rtol=None, atol=None):
    """``got`` (a symgrad result) against a float64 reference, with a dtype's tolerance."""
    got = np.asarray(got)
    if dtype == F32:
        tol = dict(rtol=2e-5 if rtol is None else rtol, atol=2e-6 if atol is None else atol)
    else:
        tol = dict(rtol=1e-11 if rtol is None else rtol, atol=1e-12 if atol is None else atol)
    np.testing.assert_allclose(got.astype(np.float64), np.asarray(want, np.float64), **tol)


def shapes(min_dims=0, max_dims=3, max_side=4):
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=1,
                            max_side=max_side)


def floats_for(dtype, lo, hi):
    if dtype == F32:  # bounds rounded inwards to float32
        lo = float(np.nextafter(np.float32(lo), np.float32(np.inf)))
        hi = float(np.nextafter(np.float32(hi), np.float32(-np.inf)))
        return st.floats(lo, hi, width=32, allow_nan=False, allow_infinity=False)
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


def ops_in(e: Expr | list) -> set[str]:
    return {n.op.name for n in toposort([e] if isinstance(e, Expr) else list(e))}


# ---------------------------------------------------------------------------------------
# One deterministic case per operator; a test makes sure every operator in ALL_OPS is
# reached by these graphs, so a new operator without a case here fails the suite.
# Each case returns (expression, feeds, expected value, expected dtype).
# ---------------------------------------------------------------------------------------

_V = np.array([-2.5, -0.5, 0.0, 0.75, 3.0], np.float32)
_P = np.array([0.25, 0.5, 1.0, 2.0, 4.0], np.float32)
_M = np.arange(12, dtype=np.float32).reshape(3, 4) / 4 - 1
_L = np.array([2, 0, 1], np.int32)


def _v():
    return sg.input("v", shape=(5,))


def _p():
    return sg.input("p", shape=(5,))


def _m():
    return sg.input("m", shape=(3, 4))


def _unary_case(fn, ref, data=_V, dtype=F32):
    def case():
        v = sg.input("u", shape=data.shape, dtype=data.dtype)
        return fn(v), {"u": data}, ref(data.astype(np.float64)), dtype
    return case


def _sigmoid64(x):
    return 1.0 / (1.0 + np.exp(-x))


def _scatter_case():
    scatter = OPS_BY_NAME["scatter"]
    shape, key = (3, 4), (slice(None, None, 2), 1)
    g = sg.input("g", shape=(2,))
    e = Expr(scatter, (g,), (normalize_key(shape, key), shape))
    want = np.zeros(shape)
    want[key] = [5.0, 7.0]
    return e, {"g": np.array([5.0, 7.0], np.float32)}, want, F32


def _size_case():
    from symgrad.expr.leaves import size

    X = sg.input("X", shape=("N", 3))
    e = sg.sum(X) * 0 + size(("N", 3))
    return e, {"X": np.ones((4, 3), np.float32)}, 12.0, F32


def _bands_case():
    from symgrad.expr.ops_band import band_matrix

    shape = (3, 4)
    a, b = sg.input("ba", shape=(4,)), sg.input("bb", shape=(3,))
    av, bv = np.array([1.0, 2.0, 3.0, 4.0], np.float32), np.array([5.0, 6.0, 7.0], np.float32)
    e = band_matrix(shape, [(a, 0, 1), (b, 1, 0), (a, -1, 1)])
    want = np.zeros(shape)
    for j in range(4):  # axis=1: M[j + offset, j] = v[j], out-of-range entries dropped
        if j < 3:
            want[j, j] += av[j]
        if 0 <= j - 1 < 3:
            want[j - 1, j] += av[j]
    for i in range(3):  # axis=0: M[i, i + offset] = v[i]
        want[i, i + 1] += bv[i]
    return e, {"ba": av, "bb": bv}, want, F32


def _ids(name: str, values: list) -> tuple:
    v = np.array(values, np.int32)
    return sg.input(name, shape=v.shape, dtype="int32"), v


def _take_case():  # columns 2, 0, 2 and the last (-1 wraps once)
    ids, v = _ids("ti", [2, 0, 2, -1])
    want = np.stack([_M[:, 2], _M[:, 0], _M[:, 2], _M[:, 3]], axis=1)
    return sg.take(_m(), ids, axis=1), {"m": _M, "ti": v}, want, F32


def _take_along_case():
    ids, v = _ids("ta", [[1], [3], [-4]])
    want = [[_M[0, 1]], [_M[1, 3]], [_M[2, 0]]]
    return sg.take_along_axis(_m(), ids, 1), {"m": _M, "ta": v}, want, F32


def _scatter_add_case():  # repeated index 2: its two values add up
    from symgrad.expr.ops_gather import SCATTER_ADD

    ids, v = _ids("si", [2, 0, 2])
    g = sg.input("g", shape=(3,))
    e = Expr(SCATTER_ADD, (g, ids), (0, "si", (3,)))
    return e, {"g": np.array([5.0, 7.0, 1.0], np.float32), "si": v}, [7.0, 0.0, 6.0], F32


def _scatter_along_case():
    from symgrad.expr.ops_gather import SCATTER_ALONG

    ids, v = _ids("sa", [[0, 0], [2, 1]])
    g = sg.input("g2", shape=(2, 2))
    e = Expr(SCATTER_ALONG, (g, ids), (1, "sa", (2, 3)))
    feeds = {"g2": np.array([[1.0, 2.0], [3.0, 4.0]], np.float32), "sa": v}
    return e, feeds, [[3.0, 0.0, 0.0], [0.0, 4.0, 3.0]], F32


def _param_case():
    w = sg.param("w", init=np.array([1.0, -2.0, 3.0, 0.5, 2.0], np.float32))
    return w * _v(), {"v": _V}, np.array([1.0, -2.0, 3.0, 0.5, 2.0]) * _V, F32


CASES = {
    "input": lambda: (_v(), {"v": _V}, _V, F32),
    "param": _param_case,
    "const": lambda: (sg.const([1.0, 2.0]), {}, [1.0, 2.0], F32),
    "size": _size_case,
    "add": lambda: (_v() + _p(), {"v": _V, "p": _P}, _V.astype(float) + _P, F32),
    "subtract": lambda: (_v() - _p(), {"v": _V, "p": _P}, _V.astype(float) - _P, F32),
    "multiply": lambda: (_v() * _p(), {"v": _V, "p": _P}, _V.astype(float) * _P, F32),
    "divide": lambda: (_v() / _p(), {"v": _V, "p": _P}, _V.astype(float) / _P, F32),
    "power": lambda: (_p() ** _v(), {"v": _V, "p": _P},
                      np.exp(_V.astype(float) * np.log(_P.astype(float))), F32),
    "negative": _unary_case(sg.negative, lambda x: 0.0 - x),
    "maximum": lambda: (sg.maximum(_v(), 0.5), {"v": _V}, [0.5, 0.5, 0.5, 0.75, 3.0], F32),
    "minimum": lambda: (sg.minimum(_v(), 0.5), {"v": _V}, [-2.5, -0.5, 0.0, 0.5, 0.5], F32),
    "less": lambda: (_v() < 0.0, {"v": _V}, [1, 1, 0, 0, 0], BOOL),
    "less_equal": lambda: (_v() <= 0.0, {"v": _V}, [1, 1, 1, 0, 0], BOOL),
    "greater": lambda: (_v() > 0.0, {"v": _V}, [0, 0, 0, 1, 1], BOOL),
    "greater_equal": lambda: (_v() >= 0.0, {"v": _V}, [0, 0, 1, 1, 1], BOOL),
    "equal": lambda: (sg.equal(_v(), 0.75), {"v": _V}, [0, 0, 0, 1, 0], BOOL),
    "not_equal": lambda: (sg.not_equal(_v(), 0.75), {"v": _V}, [1, 1, 1, 0, 1], BOOL),
    "where": lambda: (sg.where(_v() > 0, _v(), _p()), {"v": _V, "p": _P},
                      [0.25, 0.5, 1.0, 0.75, 3.0], F32),
    "exp": _unary_case(sg.exp, lambda x: np.e ** x),
    "log": _unary_case(sg.log, lambda x: np.log2(x) / np.log2(np.e), data=_P),
    "log1p": _unary_case(sg.log1p, lambda x: np.log(1 + x), data=_P),
    "expm1": _unary_case(sg.expm1, lambda x: np.exp(x) - 1),
    "sqrt": _unary_case(sg.sqrt, lambda x: x ** 0.5, data=_P),
    "sin": _unary_case(sg.sin, np.sin),
    "cos": _unary_case(sg.cos, np.cos),
    "tan": _unary_case(sg.tan, lambda x: np.sin(x) / np.cos(x)),
    "tanh": _unary_case(sg.tanh, lambda x: (np.exp(2 * x) - 1) / (np.exp(2 * x) + 1)),
    "erf": _unary_case(sg.erf, _math_erf),
    "abs": _unary_case(sg.abs, lambda x: np.where(x < 0, -x, x)),
    "sign": _unary_case(sg.sign, lambda x: (x > 0).astype(float) - (x < 0)),
    "sigmoid": _unary_case(sg.sigmoid, _sigmoid64),
    "relu": _unary_case(sg.relu, lambda x: np.where(x > 0, x, 0.0)),
    "softplus": _unary_case(sg.softplus, lambda x: np.log(1 + np.exp(x))),
    "gelu": _unary_case(sg.gelu, lambda x: x * 0.5 * (1 + _math_erf(x / math.sqrt(2)))),
    "leaky_relu": _unary_case(lambda x: sg.leaky_relu(x, 0.2),
                              lambda x: np.where(x > 0, x, 0.2 * x)),
    "elu": _unary_case(lambda x: sg.elu(x, 1.5),
                       lambda x: np.where(x > 0, x, 1.5 * (np.exp(x) - 1))),
    "cast": lambda: (sg.cast(_v(), "int32"), {"v": _V}, [-2, 0, 0, 0, 3], I32),
    "sum": lambda: (sg.sum(_m(), axis=0), {"m": _M}, _M.astype(float).sum(0), F32),
    "mean": lambda: (sg.mean(_m(), axis=1), {"m": _M}, _M.astype(float).sum(1) / 4, F32),
    "max": lambda: (sg.max(_m(), axis=1), {"m": _M}, _M[:, -1], F32),
    "min": lambda: (sg.min(_m()), {"m": _M}, _M[0, 0], F32),
    "prod": lambda: (sg.prod(_m(), axis=1), {"m": _M},
                     _M[:, 0].astype(float) * _M[:, 1] * _M[:, 2] * _M[:, 3], F32),
    # std ends in safe_sqrt: sqrt(sum((v - v.mean())**2)/5)
    "safe_sqrt": lambda: (sg.std(_v()), {"v": _V},
                          (((_V.astype(float) - _V.astype(float).sum() / 5) ** 2).sum() / 5)
                          ** 0.5, F32),
    "argmax": lambda: (sg.argmax(_v()), {"v": _V}, 4, I32),
    "logsumexp": lambda: (sg.logsumexp(_v()), {"v": _V},
                          np.log(np.exp(_V.astype(float)).sum()), F32),
    "softmax": lambda: (sg.softmax(_v()), {"v": _V},
                        np.exp(_V.astype(float)) / np.exp(_V.astype(float)).sum(), F32),
    "log_softmax": lambda: (sg.log_softmax(_v()), {"v": _V},
                            _V - np.log(np.exp(_V.astype(float)).sum()), F32),
    "matmul": lambda: (_m() @ sg.const(np.ones((4, 2), np.float32)), {"m": _M},
                       np.repeat(_M.astype(float).sum(1, keepdims=True), 2, 1), F32),
    "reshape": lambda: (sg.reshape(_m(), (2, 6)), {"m": _M}, _M.reshape(2, 6), F32),
    "transpose": lambda: (_m().T, {"m": _M}, [[_M[j, i] for j in range(3)] for i in range(4)],
                          F32),
    "broadcast_to": lambda: (sg.broadcast_to(_v(), (2, 5)), {"v": _V}, [_V, _V], F32),
    "concat": lambda: (sg.concat([_v(), _p()]), {"v": _V, "p": _P}, [*_V, *_P], F32),
    "one_hot": lambda: (sg.one_hot(sg.input("l", shape=(3,), dtype="int32"), 3), {"l": _L},
                        [[0, 0, 1], [1, 0, 0], [0, 1, 0]], F32),
    "index": lambda: (_m()[1:, ::-2], {"m": _M}, [[_M[1, 3], _M[1, 1]], [_M[2, 3], _M[2, 1]]],
                      F32),
    "scatter": _scatter_case,
    "bands": _bands_case,
    "take": _take_case,
    "take_along_axis": _take_along_case,
    "scatter_add": _scatter_add_case,
    "scatter_along_axis": _scatter_along_case,
    # tests/expr/test_math_ops.py checks these further (special values, integers, backends)
    "arctan": _unary_case(sg.arctan, lambda x: np.arcsin(x / np.sqrt(1 + x * x))),
    "arcsin": _unary_case(sg.arcsin, lambda x: np.arctan2(x, np.sqrt(1 - x * x)), data=_V / 4),
    "arccos": _unary_case(sg.arccos, lambda x: np.pi / 2 - np.arcsin(x), data=_V / 4),
    "arctan2": lambda: (sg.arctan2(_v(), _p() - 1.5), {"v": _V, "p": _P},
                        np.angle((_P - 1.5) + 1j * _V.astype(float)), F32),
    "sinh": _unary_case(sg.sinh, lambda x: (np.exp(x) - np.exp(-x)) / 2),
    "cosh": _unary_case(sg.cosh, lambda x: (np.exp(x) + np.exp(-x)) / 2),
    "arcsinh": _unary_case(sg.arcsinh, lambda x: np.log(x + np.sqrt(x * x + 1))),
    "arctanh": _unary_case(sg.arctanh, lambda x: 0.5 * np.log((1 + x) / (1 - x)), data=_V / 4),
    "log2": _unary_case(sg.log2, lambda x: np.log(x) / np.log(2), data=_P),
    "log10": _unary_case(sg.log10, lambda x: np.log(x) / np.log(10), data=_P),
    "logaddexp": lambda: (sg.logaddexp(_v(), _p()), {"v": _V, "p": _P},
                          np.log(np.exp(_V.astype(float)) + np.exp(_P)), F32),
    "cbrt": _unary_case(sg.cbrt, lambda x: np.sign(x) * np.abs(x) ** (1 / 3)),
    "floor": _unary_case(sg.floor, lambda x: x - np.mod(x, 1)),
    "ceil": _unary_case(sg.ceil, lambda x: x + np.mod(-x, 1)),
    "rint": _unary_case(sg.rint, lambda x: [-2.0, 0.0, 0.0, 1.0, 3.0]),  # halves to even
    "round": _unary_case(lambda x: sg.round(x, 1), lambda x: [-2.5, -0.5, 0.0, 0.8, 3.0]),
    "fmod": lambda: (sg.fmod(_v(), _p()), {"v": _V, "p": _P},
                     _V - np.trunc(_V / _P) * _P, F32),
    "mod": lambda: (sg.mod(_v(), _p() - 1.5), {"v": _V, "p": _P},
                    _V - np.floor(_V / (_P - 1.5)) * (_P - 1.5), F32),
    "stop_gradient": _unary_case(sg.stop_gradient, lambda x: x),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_operator_case(name):
    e, feeds, want, dtype = CASES[name]()
    assert name in ops_in(e)
    got = sg.evaluate(e, **feeds)
    assert got.dtype == dtype == e.dtype
    assert got.shape == e.shape == np.shape(want)
    if dtype == BOOL or dtype == I32:
        np.testing.assert_array_equal(got, np.asarray(want).astype(dtype))
    else:
        close(got, want, dtype)


def test_every_operator_in_the_table_has_a_case():
    reached: set[str] = set()
    for build in CASES.values():
        reached |= ops_in(build()[0])
    names = [op.name for op in ALL_OPS]
    assert len(set(names)) == len(names), "two operators share a name"
    missing = sorted(set(names) - reached)
    assert not missing, f"operators without a test case in test_ops.py: {missing}"


# ---------------------------------------------------------------------------------------
# Elementwise functions, property-based.
# ---------------------------------------------------------------------------------------

# name -> (builder, float64 reference, domain (lo, hi), keeps integer dtype)
UNARY = {
    "exp": (sg.exp, lambda x: np.e ** x, (-20, 20), False),
    "log": (sg.log, lambda x: np.log10(x) / np.log10(np.e), (1e-3, 1e3), False),
    "log1p": (sg.log1p, lambda x: np.log(1 + x), (-0.5, 100), False),
    "expm1": (sg.expm1, lambda x: np.exp(x) - 1, (-20, 20), False),
    "sqrt": (sg.sqrt, lambda x: np.exp(0.5 * np.log(x)), (1e-4, 1e4), False),
    "sin": (sg.sin, np.sin, (-20, 20), False),
    "cos": (sg.cos, np.cos, (-20, 20), False),
    "tan": (sg.tan, lambda x: np.sin(x) / np.cos(x), (-1.4, 1.4), False),
    "tanh": (sg.tanh, lambda x: 1 - 2 / (np.exp(2 * x) + 1), (-15, 15), False),
    "erf": (sg.erf, _math_erf, (-5, 5), False),
    "sigmoid": (sg.sigmoid, _sigmoid64, (-30, 30), False),
    "softplus": (sg.softplus, lambda x: np.log(1 + np.exp(x)), (-30, 30), False),
    "gelu": (sg.gelu, lambda x: x * 0.5 * (1 + _math_erf(x / math.sqrt(2))), (-8, 8), False),
    "leaky_relu": (sg.leaky_relu, lambda x: np.where(x > 0, x, 0.01 * x), (-10, 10), False),
    "leaky_relu_0.3": (lambda x: sg.leaky_relu(x, negative_slope=0.3),
                       lambda x: np.where(x > 0, x, 0.3 * x), (-10, 10), False),
    "elu": (sg.elu, lambda x: np.where(x > 0, x, np.exp(x) - 1), (-10, 10), False),
    "elu_0.5": (lambda x: sg.elu(x, alpha=0.5), lambda x: np.where(x > 0, x, 0.5 * np.expm1(x)),
                (-10, 10), False),
    "relu": (sg.relu, lambda x: (x + np.abs(x)) / 2, (-10, 10), True),
    "abs": (sg.abs, lambda x: np.sqrt(x * x), (-10, 10), True),
    "sign": (sg.sign, lambda x: np.where(x > 0, 1.0, np.where(x < 0, -1.0, 0.0)), (-3, 3), True),
    "negative": (sg.negative, lambda x: -1.0 * x, (-10, 10), True),
    "square": (sg.square, lambda x: x * x, (-100, 100), True),
}


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
@pytest.mark.parametrize("name", sorted(UNARY))
@SETTINGS
@given(data=st.data())
def test_unary_function_matches_numpy(name, dtype, data):
    fn, ref, (lo, hi), _ = UNARY[name]
    shape = data.draw(shapes(), label="shape")
    arr = data.draw(hnp.arrays(dtype, shape, elements=floats_for(dtype, lo, hi)), label="x")
    x = sg.input("x", shape=shape, dtype=dtype)
    e = fn(x)
    assert e.shape == shape and e.dtype == dtype
    got = sg.evaluate(e, x=arr)
    assert got.shape == shape and got.dtype == dtype
    close(got, ref(arr.astype(np.float64)), dtype)


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_function_on_int32(name):
    fn, ref, (lo, hi), keeps_int = UNARY[name]
    arr = np.clip(np.array([-3, -1, 0, 1, 2, 5], np.int32), math.ceil(lo), math.floor(hi))
    arr = arr.astype(np.int32)
    e = fn(sg.input("k", shape=(6,), dtype="int32"))
    want_dtype = I32 if keeps_int else F64  # NumPy: np.exp(int32) is float64
    if not keeps_int:
        assert np.exp(arr).dtype == want_dtype
    assert e.dtype == want_dtype
    got = sg.evaluate(e, k=arr)
    assert got.dtype == want_dtype
    close(got, ref(arr.astype(np.float64)), F64)


def test_stable_functions_at_extremes_float32():
    x = sg.input("x", shape=(4,))
    arr = np.array([-100.0, -1000.0, 100.0, 1000.0], np.float32)
    sp, sig = sg.evaluate([sg.softplus(x), sg.sigmoid(x)], x=arr)
    for v in (sp, sig):
        assert v.dtype == F32 and np.all(np.isfinite(v))
    # softplus(-100) = log1p(e**-100) ~ 3.7e-44 (subnormal in float32); softplus(-1000) ~ 0
    assert 0.0 <= sp[0] <= 1e-43 and np.isclose(sp[0], math.exp(-100), rtol=0.1, atol=2e-45)
    assert 0.0 <= sp[1] <= 1e-44
    np.testing.assert_array_equal(sp[2:], [100.0, 1000.0])
    assert 0.0 <= sig[0] <= 1e-43 and sig[1] == 0.0
    np.testing.assert_array_equal(sig[2:], [1.0, 1.0])


def test_nan_and_inf_propagate_as_in_numpy():
    x, y = sg.inputs("x y", shape=(3,))
    a = np.array([np.nan, 1.0, np.inf], np.float32)
    b = np.array([0.0, np.nan, 1.0], np.float32)
    mx, mn, ex = sg.evaluate([sg.maximum(x, y), sg.minimum(x, y), sg.exp(x)], x=a, y=b)
    np.testing.assert_array_equal(mx, np.maximum(a, b))
    np.testing.assert_array_equal(mn, np.minimum(a, b))
    assert np.isnan(mx[0]) and np.isnan(mx[1]) and mx[2] == np.inf
    assert np.isnan(ex[0]) and ex[2] == np.inf
    assert np.isnan(sg.evaluate(sg.sign(x), x=a)[0])


# name -> (builder, Python operator or None, float64 reference, lhs domain, rhs domain)
BINARY = {
    "add": (sg.add, operator.add, lambda a, b: a + b, (-10, 10), (-10, 10)),
    "subtract": (sg.subtract, operator.sub, lambda a, b: a - b, (-10, 10), (-10, 10)),
    "multiply": (sg.multiply, operator.mul, lambda a, b: a * b, (-10, 10), (-10, 10)),
    "divide": (sg.divide, operator.truediv, lambda a, b: a * (1 / b), (-10, 10), (0.5, 10)),
    "power": (sg.power, operator.pow, lambda a, b: np.exp(b * np.log(a)), (0.1, 5), (-3, 3)),
    "maximum": (sg.maximum, None, lambda a, b: np.where(a >= b, a, b), (-10, 10), (-10, 10)),
    "minimum": (sg.minimum, None, lambda a, b: np.where(a <= b, a, b), (-10, 10), (-10, 10)),
}


@pytest.mark.parametrize("dtypes", [(F32, F32), (F64, F64), (F32, F64), (F64, F32)],
                         ids=lambda d: f"{d[0]}-{d[1]}")
@pytest.mark.parametrize("name", sorted(BINARY))
@SETTINGS
@given(data=st.data())
def test_binary_function_matches_numpy(name, dtypes, data):
    fn, op, ref, dom_a, dom_b = BINARY[name]
    bshapes = data.draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=3))
    (sa, sb), out_shape = bshapes.input_shapes, bshapes.result_shape
    da, db = dtypes
    a = data.draw(hnp.arrays(da, sa, elements=floats_for(da, *dom_a)), label="a")
    b = data.draw(hnp.arrays(db, sb, elements=floats_for(db, *dom_b)), label="b")
    xa, xb = sg.input("a", shape=sa, dtype=da), sg.input("b", shape=sb, dtype=db)
    e = fn(xa, xb)
    want_dtype = np.result_type(da, db)
    assert e.shape == out_shape and e.dtype == want_dtype
    if op is not None:
        assert op(xa, xb) is e  # the Python operator builds the very same node
    got = sg.evaluate(e, a=a, b=b)
    assert got.shape == out_shape and got.dtype == want_dtype
    close(got, ref(a.astype(np.float64), b.astype(np.float64)), want_dtype,
          rtol=1e-4 if (name == "power" and want_dtype == F32) else None)


@pytest.mark.parametrize("name", ["add", "subtract", "multiply", "maximum", "minimum"])
@SETTINGS
@given(data=st.data())
def test_binary_int32_is_exact(name, data):
    fn, _, ref, _, _ = BINARY[name]
    a = data.draw(hnp.arrays(I32, (4,), elements=st.integers(-1000, 1000)))
    b = data.draw(hnp.arrays(I32, (2, 4), elements=st.integers(-1000, 1000)))
    e = fn(sg.input("a", shape=(4,), dtype="int32"), sg.input("b", shape=(2, 4), dtype="int32"))
    assert e.dtype == I32 and e.shape == (2, 4)
    got = sg.evaluate(e, a=a, b=b)
    assert got.dtype == I32
    np.testing.assert_array_equal(got, ref(a.astype(np.int64), b.astype(np.int64)))


def test_int32_division_and_power():
    i, j = sg.inputs("i j", shape=(4,), dtype="int32")
    a, b = np.array([7, -7, 1, 0], np.int32), np.array([2, 2, 3, 5], np.int32)
    q = i / j
    assert q.dtype == F64 == (a / b).dtype
    close(sg.evaluate(q, i=a, j=b), [3.5, -3.5, 1 / 3, 0.0], F64)
    sq = i ** 2
    assert sq.dtype == I32
    np.testing.assert_array_equal(sg.evaluate(sq, i=a), [49, 49, 1, 0])
    h = i / 2
    assert h.dtype == F64
    close(sg.evaluate(h, i=a), [3.5, -3.5, 0.5, 0.0], F64)


CMP = {
    "less": (sg.less, operator.lt, lambda a, b: a < b),
    "less_equal": (sg.less_equal, operator.le, lambda a, b: a <= b),
    "greater": (sg.greater, operator.gt, lambda a, b: a > b),
    "greater_equal": (sg.greater_equal, operator.ge, lambda a, b: a >= b),
    "equal": (sg.equal, None, lambda a, b: a == b),
    "not_equal": (sg.not_equal, None, lambda a, b: a != b),
}

_TIES = st.sampled_from([-1.5, 0.0, 1.0, 2.0])  # few values, so ties are common


@pytest.mark.parametrize("name", sorted(CMP))
@SETTINGS
@given(data=st.data())
def test_comparisons_are_bool_and_exact(name, data):
    fn, op, ref = CMP[name]
    bshapes = data.draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=3))
    (sa, sb), out_shape = bshapes.input_shapes, bshapes.result_shape
    a = data.draw(hnp.arrays(F32, sa, elements=_TIES))
    b = data.draw(hnp.arrays(F64, sb, elements=_TIES))
    xa, xb = sg.input("a", shape=sa), sg.input("b", shape=sb, dtype="float64")
    e = fn(xa, xb)
    assert e.dtype == BOOL and e.shape == out_shape
    if op is not None:
        assert op(xa, xb) is e
    got = sg.evaluate(e, a=a, b=b)
    assert got.dtype == BOOL
    np.testing.assert_array_equal(got, ref(a.astype(np.float64), b))


def test_python_operators_and_reflected_forms():
    x = sg.input("x", shape=(3,))
    a = np.array([0.5, 1.0, 2.0], np.float32)
    cases = {
        "radd": (1 + x, 1 + a.astype(float)),
        "rsub": (1 - x, 1 - a.astype(float)),
        "rmul": (3 * x, 3 * a.astype(float)),
        "rdiv": (2 / x, 2 / a.astype(float)),
        "rpow": (2 ** x, np.exp(a.astype(float) * np.log(2))),
        "neg": (-x, -a.astype(float)),
        "abs": (abs(-x), a.astype(float)),
        "pos": (+x, a.astype(float)),
    }
    for name, (e, want) in cases.items():
        assert e.dtype == F32, name
        close(sg.evaluate(e, x=a), want, F32)
    assert +x is x
    assert (1 - x) is sg.subtract(1, x) and (2 / x) is sg.divide(2, x)
    with pytest.raises(TypeError, match="truth value"):
        bool(x > 0)
    with pytest.raises(TypeError, match="iterable"):
        list(x)


@SETTINGS
@given(data=st.data())
def test_where_broadcasts_three_ways(data):
    bshapes = data.draw(hnp.mutually_broadcastable_shapes(num_shapes=3, max_dims=3, max_side=3))
    (sc, sa, sb), out_shape = bshapes.input_shapes, bshapes.result_shape
    c = data.draw(hnp.arrays(BOOL, sc))
    a = data.draw(hnp.arrays(F32, sa, elements=floats_for(F32, -5, 5)))
    b = data.draw(hnp.arrays(F64, sb, elements=floats_for(F64, -5, 5)))
    e = sg.where(sg.input("c", shape=sc, dtype="bool"), sg.input("a", shape=sa),
                 sg.input("b", shape=sb, dtype="float64"))
    assert e.shape == out_shape and e.dtype == F64
    got = sg.evaluate(e, c=c, a=a, b=b)
    want = np.empty(out_shape)
    cb, ab, bb = np.broadcast_arrays(c, a.astype(np.float64), b)
    for idx in np.ndindex(*out_shape):
        want[idx] = ab[idx] if cb[idx] else bb[idx]
    np.testing.assert_array_equal(got, want)


def test_where_with_numbers_and_numeric_condition():
    x = sg.input("x", shape=(4,))
    a = np.array([-2.0, -0.0, 0.5, 3.0], np.float32)
    e = sg.where(x > 0, x, 0.1 * x)
    assert e.dtype == F32
    close(sg.evaluate(e, x=a), [-0.2, 0.0, 0.5, 3.0], F32)
    e2 = sg.where(x, 1.0, 2.0)  # a numeric condition means "nonzero"
    assert e2.dtype == F32 and e2.shape == (4,)
    np.testing.assert_array_equal(sg.evaluate(e2, x=a), [1.0, 2.0, 1.0, 1.0])
    k = sg.input("k", shape=(4,), dtype="int32")
    e3 = sg.where(k > 0, k, 2.5)  # int32 with a weak float: float64, as np.where does
    assert e3.dtype == np.where(np.ones(1, bool), np.ones(1, np.int32), 2.5).dtype == F64


@SETTINGS
@given(arr=hnp.arrays(F32, shapes(), elements=floats_for(F32, -10, 10)),
       lo=st.one_of(st.none(), st.floats(-5, 0)), hi=st.one_of(st.none(), st.floats(0, 5)))
def test_clip(arr, lo, hi):
    x = sg.input("x", shape=arr.shape)
    e = sg.clip(x, lo, hi)
    assert e.shape == arr.shape and e.dtype == F32
    want = arr.astype(np.float64)
    if lo is not None:
        want = np.where(want < np.float32(lo), np.float32(lo), want)
    if hi is not None:
        want = np.where(want > np.float32(hi), np.float32(hi), want)
    np.testing.assert_array_equal(sg.evaluate(e, x=arr), want.astype(np.float32))


@pytest.mark.parametrize("src,dst", [("float32", "int32"), ("float64", "float32"),
                                     ("float32", "bool"), ("bool", "float32"),
                                     ("int32", "float64"), ("int32", "bool"),
                                     ("float32", "float64")])
def test_cast(src, dst):
    vals = {"float32": [-2.7, -0.5, 0.0, 0.5, 3.9], "float64": [-2.7, -0.5, 0.0, 0.5, 3.9],
            "int32": [-3, -1, 0, 1, 4], "bool": [True, False, False, True, True]}[src]
    arr = np.array(vals, src)
    x = sg.input("x", shape=(5,), dtype=src)
    e = sg.cast(x, dst)
    assert e.dtype == np.dtype(dst) and e.shape == (5,)
    assert x.astype(dst) is e
    assert sg.cast(x, src) is x
    got = sg.evaluate(e, x=arr)
    assert got.dtype == np.dtype(dst)
    np.testing.assert_array_equal(got, arr.astype(dst))  # truncation toward zero, as NumPy
    with pytest.raises(TypeError, match="float32"):
        sg.cast(x, "complex64")


# ---------------------------------------------------------------------------------------
# Reductions.
# ---------------------------------------------------------------------------------------


@st.composite
def array_and_axis(draw, dtype=F32, lo=-10, hi=10, single=False, min_dims=0):
    shape = draw(shapes(min_dims=min_dims))
    nd = len(shape)
    if dtype == I32:
        elements = st.integers(-50, 50)
    else:
        elements = floats_for(dtype, lo, hi)
    arr = draw(hnp.arrays(dtype, shape, elements=elements))
    if single:
        axis = draw(st.integers(-nd, nd - 1))
    else:
        choices = [st.none()]
        if nd:
            choices.append(st.integers(-nd, nd - 1))
            choices.append(st.lists(st.integers(0, nd - 1), unique=True, max_size=nd).flatmap(
                lambda ax: st.tuples(*(st.sampled_from([a, a - nd]) for a in ax))))
        axis = draw(st.one_of(*choices))
    return arr, axis, draw(st.booleans())


def _np_axis(axis):
    return tuple(axis) if isinstance(axis, (tuple, list)) else axis


def _reduced_shape(shape, axis, keepdims):
    nd = len(shape)
    axes = (range(nd) if axis is None else
            [a % nd for a in (axis if isinstance(axis, tuple) else (axis,))])
    axes = set(axes)
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def _lse64(x, axis, keepdims):
    return np.log(np.sum(np.exp(x), axis=axis, keepdims=keepdims))


REDUCTIONS = {
    # name -> (builder, float64 reference, dtype rule)
    "sum": (sg.sum, lambda x, a, k: np.add.reduce(x, axis=a, keepdims=k),
            {F32: F32, F64: F64, I32: I32}),
    "mean": (sg.mean, lambda x, a, k: np.sum(x, axis=a, keepdims=k)
             * np.sum(np.ones_like(x), axis=a, keepdims=k) ** -1.0,
             {F32: F32, F64: F64, I32: F64}),
    "max": (sg.max, lambda x, a, k: np.maximum.reduce(x, axis=a, keepdims=k),
            {F32: F32, F64: F64, I32: I32}),
    "min": (sg.min, lambda x, a, k: -np.maximum.reduce(-x, axis=a, keepdims=k),
            {F32: F32, F64: F64, I32: I32}),
    "logsumexp": (sg.logsumexp, _lse64, {F32: F32, F64: F64, I32: F64}),
    "var": (sg.var, lambda x, a, k: np.var(x, axis=a, keepdims=k),
            {F32: F32, F64: F64, I32: F64}),
    "std": (sg.std, lambda x, a, k: np.var(x, axis=a, keepdims=k) ** 0.5,
            {F32: F32, F64: F64, I32: F64}),
}


@pytest.mark.parametrize("dtype", [F32, F64, I32], ids=str)
@pytest.mark.parametrize("name", sorted(REDUCTIONS))
@SETTINGS
@given(data=st.data())
def test_reduction_matches_numpy(name, dtype, data):
    fn, ref, rule = REDUCTIONS[name]
    arr, axis, keepdims = data.draw(array_and_axis(dtype))
    x = sg.input("x", shape=arr.shape, dtype=dtype)
    e = fn(x, axis=axis, keepdims=keepdims)
    want_shape = _reduced_shape(arr.shape, axis, keepdims)
    assert e.shape == want_shape and e.dtype == rule[dtype]
    got = sg.evaluate(e, x=arr)
    assert got.shape == want_shape and got.dtype == rule[dtype]
    want = ref(arr.astype(np.float64), _np_axis(axis), keepdims)
    if rule[dtype] == I32:
        np.testing.assert_array_equal(got, want)
    else:
        close(got, want, rule[dtype])


def test_reduction_methods_and_numpy_dtypes():
    X = sg.input("X", shape=("N", 3))
    assert X.sum(axis=1).shape == ("N",) and X.sum(axis=1) is sg.sum(X, axis=1)
    assert X.mean(axis=0, keepdims=True).shape == (1, 3)
    assert X.mean() is sg.mean(X) and X.mean().shape == ()
    k = sg.input("k", shape=(3,), dtype="int32")
    assert sg.mean(k).dtype == np.mean(np.ones(3, np.int32)).dtype
    assert sg.max(k).dtype == np.max(np.ones(3, np.int32)).dtype
    a = np.arange(12, dtype=np.float32).reshape(4, 3)
    close(sg.evaluate(sg.mean(X, axis=0), X=a), a.astype(float).sum(0) / 4, F32)
    with pytest.raises(sg.ShapeError, match="out of range"):
        sg.sum(X, axis=2)
    with pytest.raises(sg.ShapeError, match="repeated"):
        sg.sum(X, axis=(1, -1))
    with pytest.raises(TypeError):
        sg.sum(X, axis=1.0)


@SETTINGS
@given(data=st.data())
def test_argmax_first_largest(data):
    shape = data.draw(shapes(min_dims=1))
    arr = data.draw(hnp.arrays(F32, shape, elements=_TIES))
    nd = len(shape)
    axis = data.draw(st.integers(-nd, nd - 1)) if nd > 1 else data.draw(
        st.sampled_from([None, 0, -1]))
    keepdims = data.draw(st.booleans())
    e = sg.argmax(sg.input("x", shape=shape), axis=axis, keepdims=keepdims)
    ax = 0 if axis is None else axis % nd
    # hand-written: the first index along ``ax`` that reaches the maximum
    moved = np.moveaxis(arr, ax, -1)
    want = np.empty(moved.shape[:-1], np.int64)
    for idx in np.ndindex(*moved.shape[:-1]):
        row = list(moved[idx])
        want[idx] = row.index(max(row))
    if keepdims:
        want = np.expand_dims(want, ax)
    assert e.dtype == I32 and e.shape == want.shape
    got = sg.evaluate(e, x=arr)
    assert got.dtype == I32
    np.testing.assert_array_equal(got, want)


def test_argmax_needs_an_axis_for_matrices():
    with pytest.raises(ValueError, match="needs an axis"):
        sg.argmax(sg.input("X", shape=("N", 3)))
    with pytest.raises(TypeError, match="single int"):
        sg.argmax(sg.input("X", shape=("N", 3)), axis=(0, 1))


@pytest.mark.parametrize("which", ["softmax", "log_softmax"])
@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
@SETTINGS
@given(data=st.data())
def test_softmax_and_log_softmax(which, dtype, data):
    arr, axis, _ = data.draw(array_and_axis(dtype, lo=-20, hi=20, single=True, min_dims=1))
    x = sg.input("x", shape=arr.shape, dtype=dtype)
    e = getattr(sg, which)(x, axis=axis)
    assert e.shape == arr.shape and e.dtype == dtype
    x64 = arr.astype(np.float64)
    ex = np.exp(x64)
    sm = ex / ex.sum(axis=axis, keepdims=True)
    want = sm if which == "softmax" else np.log(sm)
    got = sg.evaluate(e, x=arr)
    assert got.dtype == dtype
    close(got, want, dtype, atol=1e-5 if dtype == F32 else None)
    if which == "softmax":
        close(got.sum(axis=axis), np.ones(np.delete(arr.shape, axis % arr.ndim)), dtype,
              atol=1e-5 if dtype == F32 else None)


def test_softmax_default_axis_is_last_and_int_input_is_float64():
    X = sg.input("X", shape=("N", 3))
    assert sg.softmax(X) is sg.softmax(X, axis=-1) is sg.softmax(X, axis=1)
    k = sg.input("k", shape=(3,), dtype="int32")
    assert sg.softmax(k).dtype == F64 and sg.log_softmax(k).dtype == F64
    assert sg.logsumexp(k).dtype == F64


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
def test_logsumexp_and_log_softmax_do_not_overflow(dtype):
    x = sg.input("x", shape=(2, 3), dtype=dtype)
    arr = np.array([[1000.0, 1000.0, 1000.0], [-1000.0, 0.0, 1000.0]], dtype)
    lse, lse_k, lsm, sm = sg.evaluate([sg.logsumexp(x, axis=1), sg.logsumexp(x, 1, True),
                                       sg.log_softmax(x), sg.softmax(x)], x=arr)
    for v in (lse, lse_k, lsm, sm):
        assert v.dtype == dtype and np.all(np.isfinite(v))
    close(lse, [1000 + math.log(3), 1000.0], dtype)
    close(lse, scipy.special.logsumexp(arr.astype(np.float64), axis=1), dtype)
    assert lse_k.shape == (2, 1)
    close(lsm, [[-math.log(3)] * 3, [-2000.0, -1000.0, 0.0]], dtype)
    close(sm, [[1 / 3] * 3, [0.0, 0.0, 1.0]], dtype)
    whole = sg.evaluate(sg.logsumexp(x), x=arr)
    close(whole, 1000 + math.log(4 + 2 * math.exp(-1000)), dtype)


def test_logsumexp_of_all_minus_inf_row():
    x = sg.input("x", shape=(2, 2))
    arr = np.array([[-np.inf, -np.inf], [0.0, 0.0]], np.float32)
    got = sg.evaluate(sg.logsumexp(x, axis=1), x=arr)
    assert got[0] == -np.inf  # log(0), as scipy.special.logsumexp gives
    close(got[1:], [math.log(2)], F32)


# ---------------------------------------------------------------------------------------
# Contractions.
# ---------------------------------------------------------------------------------------


def _ref_matmul(a, b):
    """Matrix product by broadcasting and summing (not np.matmul), NumPy's 1-D rules."""
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    out = (a2[..., :, :, None] * b2[..., None, :, :]).sum(axis=-2)
    if a.ndim == 1:
        out = out[..., 0, :]
    if b.ndim == 1:
        out = out[..., 0]
    return out


@st.composite
def matmul_shapes(draw):
    m, k, n = (draw(st.integers(1, 4)) for _ in range(3))
    one_a, one_b = draw(st.booleans()), draw(st.booleans())
    batch = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=2, max_side=3))
    ba, bb = batch.input_shapes
    sa = (k,) if one_a else ba + (m, k)
    sb = (k,) if one_b else bb + (k, n)
    return sa, sb


@pytest.mark.parametrize("dtypes", [(F32, F32), (F64, F64), (F32, F64), (I32, F32)],
                         ids=lambda d: f"{d[0]}-{d[1]}")
@SETTINGS
@given(data=st.data())
def test_matmul_matches_numpy(dtypes, data):
    sa, sb = data.draw(matmul_shapes())
    da, db = dtypes
    ea = st.integers(-5, 5) if da == I32 else floats_for(da, -3, 3)
    a = data.draw(hnp.arrays(da, sa, elements=ea))
    b = data.draw(hnp.arrays(db, sb, elements=floats_for(db, -3, 3)))
    xa, xb = sg.input("a", shape=sa, dtype=da), sg.input("b", shape=sb, dtype=db)
    e = xa @ xb
    assert e is sg.matmul(xa, xb)
    want = _ref_matmul(a.astype(np.float64), b.astype(np.float64))
    want_dtype = np.result_type(da, db)
    assert e.shape == want.shape and e.dtype == want_dtype
    got = sg.evaluate(e, a=a, b=b)
    assert got.shape == want.shape and got.dtype == want_dtype
    close(got, want, want_dtype, atol=1e-5 if want_dtype == F32 else None)


def test_matmul_shapes_symbolic_and_batched():
    X = sg.input("X", shape=("N", 784))
    W = sg.param("W", shape=(784, 10), init=0.0)
    assert (X @ W).shape == ("N", 10)
    v = sg.input("v", shape=(784,))
    assert (X @ v).shape == ("N",)
    assert (v @ W).shape == (10,)
    assert (v @ v).shape == ()
    A = sg.input("A", shape=(2, 1, 3, 4))
    B = sg.input("B", shape=(5, 4, 6))
    assert (A @ B).shape == (2, 5, 3, 6)
    a = np.random.default_rng(0).normal(size=(2, 1, 3, 4)).astype(np.float32)
    b = np.random.default_rng(1).normal(size=(5, 4, 6)).astype(np.float32)
    close(sg.evaluate(A @ B, A=a, B=b), _ref_matmul(a.astype(float), b.astype(float)), F32,
          atol=1e-5)
    X3 = sg.input("X3", shape=("N", 3))
    feeds = {"X3": np.arange(6, dtype=np.float32).reshape(2, 3)}
    w = np.array([1.0, -1.0, 2.0], np.float32)
    close(sg.evaluate(X3 @ w, **feeds), feeds["X3"].astype(float) @ w.astype(float), F32)
    with pytest.raises(sg.ShapeError):
        sg.matmul(sg.const(1.0), X)
    with pytest.raises(sg.ShapeError, match="batch"):
        sg.input("P", shape=(2, 3, 4)) @ sg.input("Q", shape=(3, 4, 5))


def test_dot():
    v, u = sg.input("v", shape=(3,)), sg.input("u", shape=(3,))
    M = sg.input("M", shape=(2, 3))
    s = sg.param("s", init=2.0)
    a, b = np.array([1.0, 2.0, 3.0], np.float32), np.array([4.0, -5.0, 6.0], np.float32)
    m = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert sg.dot(v, u).shape == ()
    close(sg.evaluate(sg.dot(v, u), v=a, u=b), 4 - 10 + 18, F32)
    assert sg.dot(M, v).shape == (2,)
    close(sg.evaluate(sg.dot(M, v), M=m, v=a), [8.0, 26.0], F32)
    assert sg.dot(s, v) is s * v and sg.dot(v, 3.0).shape == (3,)
    close(sg.evaluate(sg.dot(s, v), v=a), 2 * a, F32)


# ---------------------------------------------------------------------------------------
# Shape functions.
# ---------------------------------------------------------------------------------------


@SETTINGS
@given(data=st.data())
def test_transpose_matches_numpy(data):
    shape = data.draw(shapes(min_dims=0, max_dims=4))
    arr = data.draw(hnp.arrays(F32, shape, elements=floats_for(F32, -5, 5)))
    x = sg.input("x", shape=shape)
    nd = len(shape)
    perm = data.draw(st.permutations(range(nd))) if nd else []
    perm = [p - nd if data.draw(st.booleans()) else p for p in perm]
    want_rev = np.empty(shape[::-1], np.float32)
    for idx in np.ndindex(*shape):
        want_rev[idx[::-1]] = arr[idx]
    e = x.T
    assert e is sg.transpose(x) and e.shape == shape[::-1]
    np.testing.assert_array_equal(sg.evaluate(e, x=arr), want_rev)
    e2 = sg.transpose(x, perm)
    want = np.empty(tuple(shape[p] for p in perm), np.float32)
    for idx in np.ndindex(*shape):
        want[tuple(idx[p] for p in perm)] = arr[idx]
    assert e2.shape == want.shape and e2.dtype == F32
    np.testing.assert_array_equal(sg.evaluate(e2, x=arr), want)


def test_transpose_symbolic_and_errors():
    X = sg.input("X", shape=("N", 3, 4))
    assert X.T.shape == (4, 3, "N")
    assert sg.transpose(X, (1, 0, 2)).shape == (3, "N", 4)
    v = sg.input("v", shape=(3,))
    assert v.T is v
    with pytest.raises(sg.ShapeError, match="permutation"):
        sg.transpose(X, (0, 1))


@SETTINGS
@given(data=st.data())
def test_reshape_matches_numpy(data):
    shape = data.draw(shapes(min_dims=0, max_dims=3))
    arr = data.draw(hnp.arrays(F32, shape, elements=floats_for(F32, -5, 5)))
    size = arr.size
    # a new shape: a factorisation of size, possibly with one -1
    factors, rest = [], size
    for _ in range(data.draw(st.integers(0, 3))):
        divs = [d for d in range(1, rest + 1) if rest % d == 0]
        d = data.draw(st.sampled_from(divs))
        factors.append(d)
        rest //= d
    factors.append(rest)
    factors = data.draw(st.permutations(factors))
    new = list(factors)
    if data.draw(st.booleans()):
        new[data.draw(st.integers(0, len(new) - 1))] = -1
    x = sg.input("x", shape=shape)
    e = sg.reshape(x, tuple(new))
    want = arr.reshape(tuple(factors))
    assert e.shape == want.shape
    assert x.reshape(*new) is e and x.reshape(tuple(new)) is e
    np.testing.assert_array_equal(sg.evaluate(e, x=arr), want)


def test_reshape_symbolic():
    X = sg.input("X", shape=("N", 784))
    images = X.reshape(("N", 28, 28))
    assert images.shape == ("N", 28, 28) and images.dtype == F32
    assert sg.reshape(X, ("N", -1, 28)) is images
    assert sg.reshape(X, (28, "N", 28)).shape == (28, "N", 28)
    arr = np.random.default_rng(0).normal(size=(3, 784)).astype(np.float32)
    got = sg.evaluate(images, X=arr)
    assert got.shape == (3, 28, 28)
    np.testing.assert_array_equal(got[2, 5, 7], arr[2, 5 * 28 + 7])
    assert sg.reshape(X, ("N", 784)) is X
    with pytest.raises(sg.ShapeError, match="-1"):
        sg.reshape(X, ("N", -1, -1))
    with pytest.raises(sg.ShapeError, match=r"\(N, 784\)"):
        sg.reshape(X, ("N", 28, 27))
    with pytest.raises(sg.ShapeError, match="symbolic"):
        sg.reshape(X, (784, 3))
    with pytest.raises(sg.ShapeError):
        sg.reshape(sg.input("v", shape=(6,)), (4, -1))


def test_broadcast_to():
    b = sg.input("b", shape=(3,))
    X = sg.input("X", shape=("N", 3))
    e = sg.broadcast_to(b, ("N", 3))
    assert e.shape == ("N", 3) and e.dtype == F32
    bv = np.array([1.0, 2.0, 3.0], np.float32)
    xv = np.zeros((4, 3), np.float32)
    got, _ = sg.evaluate([e, X], b=bv, X=xv)
    np.testing.assert_array_equal(got, [[1.0, 2.0, 3.0]] * 4)
    c = sg.input("c", shape=(2, 1))
    e2 = sg.broadcast_to(c, (3, 2, 4))
    assert e2.shape == (3, 2, 4)
    cv = np.array([[5.0], [7.0]], np.float32)
    got2 = sg.evaluate(e2, c=cv)
    for i, j, k in np.ndindex(3, 2, 4):
        assert got2[i, j, k] == cv[j, 0]
    assert sg.broadcast_to(b, (3,)) is b
    with pytest.raises(sg.ShapeError, match=r"\(3,\).*\(4,\)"):
        sg.broadcast_to(b, (4,))
    with pytest.raises(sg.ShapeError):
        sg.broadcast_to(X, (3,))


@SETTINGS
@given(data=st.data())
def test_indexing_matches_numpy(data):
    shape = data.draw(shapes(min_dims=0, max_dims=3, max_side=5))
    arr = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
    key = data.draw(hnp.basic_indices(shape, allow_newaxis=True, allow_ellipsis=True))
    x = sg.input("x", shape=shape)
    e = x[key]
    want = arr[key]
    assert e.shape == want.shape and e.dtype == F32
    assert x[key] is e
    got = sg.evaluate(e, x=arr)
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("key", [
    -1, -5, 2, slice(None, None, -1), slice(None, None, -2), slice(3, 0, -1),
    slice(-2, None), slice(1, -1, 2), slice(10, -10, -3), (Ellipsis, None),
    (None, slice(1, 3)), (slice(None),), (), Ellipsis, np.int64(3), slice(4, 1),
], ids=repr)
def test_indexing_vector_edge_cases(key):
    x = sg.input("x", shape=(5,))
    arr = np.array([10.0, 11.0, 12.0, 13.0, 14.0], np.float32)
    e = x[key]
    want = arr[key]
    assert e.shape == np.shape(want)
    np.testing.assert_array_equal(sg.evaluate(e, x=arr), want)


def test_indexing_symbolic_dims():
    X = sg.input("X", shape=("N", 3))
    arr = np.arange(12, dtype=np.float32).reshape(4, 3)
    cases = {"X[:, 0]": (X[:, 0], arr[:, 0]), "X[-1]": (X[-1], arr[-1]),
             "X[..., None]": (X[..., None], arr[..., None]), "X[:, ::-1]": (X[:, ::-1],
                                                                            arr[:, ::-1]),
             "X[0, 1:]": (X[0, 1:], arr[0, 1:]), "X[None, :, 2]": (X[None, :, 2],
                                                                   arr[None, :, 2])}
    shapes_ = {"X[:, 0]": ("N",), "X[-1]": (3,), "X[..., None]": ("N", 3, 1),
               "X[:, ::-1]": ("N", 3), "X[0, 1:]": (2,), "X[None, :, 2]": (1, "N")}
    for name, (e, want) in cases.items():
        assert e.shape == shapes_[name], name
        np.testing.assert_array_equal(sg.evaluate(e, X=arr), want, err_msg=name)
    assert X[:, :] is X and X[...] is X


def test_indexing_errors():
    x = sg.input("x", shape=(4, 2))
    with pytest.raises(IndexError, match=r"out of bounds.*\(4, 2\)"):
        x[4]
    with pytest.raises(IndexError, match=r"out of bounds"):
        x[:, -3]
    with pytest.raises(IndexError, match="too many"):
        x[0, 0, 0]
    with pytest.raises(IndexError, match="ellipsis"):
        x[..., ...]
    with pytest.raises(TypeError, match="indices must be int32"):
        x[sg.input("i", shape=(2,))]  # int32 indices take (tests/codegen/test_gather.py)
    with pytest.raises(TypeError):
        x[[0, 1], 0]
    with pytest.raises(TypeError):
        x[0.5]


@SETTINGS
@given(data=st.data())
def test_concat_matches_numpy(data):
    shape = data.draw(shapes(min_dims=1, max_dims=3))
    nd = len(shape)
    axis = data.draw(st.integers(-nd, nd - 1))
    n = data.draw(st.integers(1, 3))
    arrs, nodes = [], []
    dtypes = data.draw(st.lists(st.sampled_from([F32, F64]), min_size=n, max_size=n))
    for i, dt in enumerate(dtypes):
        s = list(shape)
        s[axis] = data.draw(st.integers(1, 3))
        arrs.append(data.draw(hnp.arrays(dt, tuple(s), elements=floats_for(dt, -5, 5))))
        nodes.append(sg.input(f"a{i}", shape=tuple(s), dtype=dt))
    e = sg.concat(nodes, axis=axis)
    want_dtype = np.result_type(*dtypes)
    parts = [a.astype(np.float64) for a in arrs]
    want = np.concatenate(parts, axis=axis)
    assert e.shape == want.shape and e.dtype == want_dtype
    got = sg.evaluate(e, **{f"a{i}": a for i, a in enumerate(arrs)})
    assert got.dtype == want_dtype
    np.testing.assert_array_equal(got, want.astype(want_dtype))


def test_concat_symbolic_and_errors():
    A, B = sg.input("A", shape=("N", 3)), sg.input("B", shape=("N", 2))
    e = sg.concat([A, B], axis=1)
    assert e.shape == ("N", 5)
    a = np.ones((2, 3), np.float32)
    b = np.zeros((2, 2), np.float32)
    np.testing.assert_array_equal(sg.evaluate(e, A=a, B=b), np.concatenate([a, b], 1))
    with pytest.raises(sg.ShapeError, match=r"\(N, 3\), \(N, 2\)"):
        sg.concat([A, B], axis=0)
    with pytest.raises(sg.ShapeError, match="symbolic"):
        sg.concat([A, A], axis=0)
    with pytest.raises(ValueError):
        sg.concat([])
    with pytest.raises(sg.ShapeError):
        sg.concat([sg.const(1.0), sg.const(2.0)])


@SETTINGS
@given(labels=hnp.arrays(I32, shapes(min_dims=0, max_dims=2), elements=st.integers(0, 4)),
       extra=st.integers(0, 2), dtype=st.sampled_from(["float32", "float64", "int32"]))
def test_one_hot(labels, extra, dtype):
    n = 5 + extra
    e = sg.one_hot(sg.input("l", shape=labels.shape, dtype="int32"), n, dtype=dtype)
    assert e.shape == labels.shape + (n,) and e.dtype == np.dtype(dtype)
    want = np.zeros(labels.shape + (n,))
    for idx in np.ndindex(*labels.shape):
        want[idx + (labels[idx],)] = 1
    got = sg.evaluate(e, l=labels)
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, want)


def test_one_hot_errors():
    labels = sg.input("labels", dtype="int32")
    assert sg.one_hot(labels, 10).shape == ("N", 10)
    with pytest.raises(TypeError, match="int32"):
        sg.one_hot(sg.input("f"), 3)
    with pytest.raises(ValueError, match="num_classes"):
        sg.one_hot(labels, 0)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        sg.evaluate(sg.one_hot(labels, 3), labels=np.array([0, 3], np.int32))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        sg.evaluate(sg.one_hot(labels, 3), labels=np.array([-1, 0], np.int32))


# ---------------------------------------------------------------------------------------
# Symbolic dimensions through elementwise broadcasting.
# ---------------------------------------------------------------------------------------


def test_symbolic_broadcasting_shapes():
    x = sg.input("x")
    X = sg.input("X", shape=("N", 3))
    col = sg.input("col", shape=("N", 1))
    b = sg.input("b", shape=(3,))
    assert (x + 1).shape == ("N",)
    assert (X + b).shape == ("N", 3)
    assert (col * b).shape == ("N", 3)
    assert (X + sg.const([[1.0, 2.0, 3.0]])).shape == ("N", 3)
    assert (x + sg.input("one", shape=(1,))).shape == ("N",)
    with pytest.raises(sg.ShapeError):
        x + sg.input("m", shape=("M",))
    with pytest.raises(sg.ShapeError):
        X + sg.input("x1", shape=("N",))  # (N, 3) + (N,): N vs 3 on the last axis
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    c = np.array([[1.0], [2.0]], np.float32)
    bv = np.array([1.0, 10.0, 100.0], np.float32)
    got = sg.evaluate(X + col * b, X=arr, col=c, b=bv)
    close(got, arr.astype(float) + c.astype(float) * bv, F32)
