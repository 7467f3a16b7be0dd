"""The SymPy bridge: ``sg.to_sympy`` and ``sg.from_sympy``.

``to_sympy`` is checked against SymPy expressions written by hand (equal up to
``simplify`` or at random points); sums and means over vectors against NumPy; the round
trip ``from_sympy(to_sympy(e))`` against the original graph on random data.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import symgrad as sg

x, y = sg.inputs("x y")
xd, yd = sg.inputs("xd yd", dtype="float64")
X = sg.input("X", shape=("N", 3))
v5 = sg.input("v5", shape=(5,))
labels = sg.input("labels", dtype="int32")
w, b = sg.params("w b", init=0.5)
wd, bd = sg.params("wd bd", init=0.5, dtype="float64")
W = sg.param("W", shape=(3, 2), init=0.0)

IDX = sympy.Idx("i")
N = sympy.Symbol("N", integer=True, positive=True)


def syms(names: str):
    return sympy.symbols(names, real=True)


def by_name(expr) -> dict[str, sympy.Symbol]:
    return {s.name: s for s in expr.free_symbols if isinstance(s, sympy.Symbol)}


def same_at_random_points(got, expected, names: str, lo=-2.0, hi=2.0, n=6, seed=0):
    """Equal as functions of the named symbols (matched by name, whatever their assumptions)."""
    r = np.random.default_rng(seed)
    mine, theirs = by_name(got), by_name(expected)
    assert set(mine) <= set(names.split()), (mine, names)
    assert set(theirs) <= set(names.split())
    for _ in range(n):
        point = {k: float(r.uniform(lo, hi)) for k in names.split()}
        a = complex(got.subs({mine[k]: point[k] for k in mine}).evalf())
        c = complex(expected.subs({theirs[k]: point[k] for k in theirs}).evalf())
        assert abs(a - c) <= 1e-9 * (1 + abs(c)), (got, expected, point, a, c)


def eval_indexed(expr, n: int, arrays: dict[str, np.ndarray], scalars: dict[str, float]):
    """A SymPy expression with ``Sum``s over vectors, evaluated at concrete data."""
    sizes = {s: n for s in expr.free_symbols if isinstance(s, sympy.Symbol) and s.name == "N"}
    done = expr.subs(sizes).doit()
    done = done.replace(lambda a: isinstance(a, sympy.Indexed),
                        lambda a: sympy.Float(arrays[str(a.base)][int(a.indices[0])]))
    done = done.subs({s: scalars[s.name] for s in done.free_symbols})
    return float(done.evalf())


# -- to_sympy: elementwise ------------------------------------------------------------------
sx, sy, sw, sb = syms("x y w b")

ELEMENTWISE = [
    (lambda: w * x + b, sw * sx + sb),
    (lambda: (w * x - y) ** 2, (sw * sx - sy) ** 2),
    (lambda: x / y - 1, sx / sy - 1),
    (lambda: -x, -sx),
    (lambda: x**3, sx**3),
    (lambda: 2.5 * x, sympy.Float(2.5) * sx),
    (lambda: sg.exp(x), sympy.exp(sx)),
    (lambda: sg.log(x), sympy.log(sx)),
    (lambda: sg.sqrt(x), sympy.sqrt(sx)),
    (lambda: sg.sin(x) * sg.cos(y), sympy.sin(sx) * sympy.cos(sy)),
    (lambda: sg.tan(x), sympy.tan(sx)),
    (lambda: sg.tanh(x), sympy.tanh(sx)),
    (lambda: sg.erf(x), sympy.erf(sx)),
    (lambda: sg.abs(x), sympy.Abs(sx)),
    (lambda: sg.sign(x), sympy.sign(sx)),
    (lambda: sg.sigmoid(w * x + b), 1 / (1 + sympy.exp(-(sw * sx + sb)))),
    (lambda: sg.softplus(x), sympy.log(1 + sympy.exp(sx))),
    (lambda: sg.log1p(x), sympy.log(1 + sx)),
    (lambda: sg.expm1(x), sympy.exp(sx) - 1),
    (lambda: sg.relu(x), sympy.Max(sx, 0)),
    (lambda: sg.maximum(x, y), sympy.Max(sx, sy)),
    (lambda: sg.minimum(x, 1.5), sympy.Min(sx, 1.5)),
    (lambda: sg.clip(x, 0, 1), sympy.Min(sympy.Max(sx, 0), 1)),
    (lambda: sg.square(x + y), (sx + sy) ** 2),
    (lambda: sg.gelu(x), sx * (1 + sympy.erf(sx / sympy.sqrt(2))) / 2),
    (lambda: sg.where(x > y, x, 2 * y), sympy.Piecewise((sx, sx > sy), (2 * sy, True))),
    (lambda: sg.leaky_relu(x, 0.2), sympy.Piecewise((sx, sx > 0), (0.2 * sx, True))),
    (lambda: sg.elu(x), sympy.Piecewise((sx, sx > 0), (sympy.exp(sx) - 1, True))),
    (lambda: x.astype("float64") * 2, 2 * sx),
]


@pytest.mark.parametrize("build, expected", ELEMENTWISE, ids=[str(c[1]) for c in ELEMENTWISE])
def test_to_sympy_elementwise_at_random_points(build, expected):
    got = sg.to_sympy(build())
    same_at_random_points(got, expected, "x y w b")


@pytest.mark.parametrize("build, expected", [c for c in ELEMENTWISE if not c[1].has(
    sympy.Piecewise, sympy.Max, sympy.Min, sympy.sign, sympy.Abs)])
def test_to_sympy_elementwise_simplifies_to_hand_written(build, expected):
    got = sg.to_sympy(build())
    renamed = got.subs({s: {"x": sx, "y": sy, "w": sw, "b": sb}[n]
                        for n, s in by_name(got).items()})
    assert sympy.simplify(renamed - expected) == 0, (got, expected)


def test_to_sympy_symbols_are_named_after_leaves():
    got = sg.to_sympy(w * x + b)
    assert set(by_name(got)) == {"w", "x", "b"}


def test_to_sympy_comparisons():
    assert isinstance(sg.to_sympy(x < y), sympy.StrictLessThan)
    assert isinstance(sg.to_sympy(x >= 1.5), sympy.GreaterThan)
    assert isinstance(sg.to_sympy(sg.not_equal(x, y)), sympy.Unequality)


def test_to_sympy_integer_and_float_constants():
    assert sg.to_sympy(x * 3).has(sympy.Integer(3))
    got = sg.to_sympy(x + 0.25)
    assert any(isinstance(a, sympy.Float) and float(a) == 0.25 for a in got.atoms(sympy.Float))


def test_to_sympy_shared_subexpression_is_not_duplicated_wrongly():
    t = sg.exp(x) + 1
    got = sg.to_sympy(t * t)
    (s,) = by_name(got).values()
    assert sympy.simplify(got - (sympy.exp(s) + 1) ** 2) == 0


# -- to_sympy: sum and mean ---------------------------------------------------------------
def test_sum_of_a_vector_is_a_sum_over_i():
    got = sg.to_sympy(sg.sum(x))
    assert isinstance(got, sympy.Sum)
    (idx, lo, hi), = got.limits
    assert str(idx) == "i" and lo == 0 and str(hi) == "N - 1"
    assert isinstance(got.function, sympy.Indexed) and str(got.function.base) == "x"


def test_mean_of_a_vector_divides_by_n():
    got = sg.to_sympy(sg.mean(x))
    sums = list(got.atoms(sympy.Sum))
    assert len(sums) == 1
    n_sym = [s for s in got.free_symbols if getattr(s, "name", "") == "N"]
    assert len(n_sym) == 1
    assert sympy.simplify(got * n_sym[0] - sums[0]) == 0


def test_mean_squared_error_reads_as_expected():
    got = sg.to_sympy(sg.mean((w * x - y) ** 2))
    xb, yb = sympy.IndexedBase("x"), sympy.IndexedBase("y")
    expected = sympy.Sum((sympy.Symbol("w") * xb[IDX] - yb[IDX]) ** 2, (IDX, 0, N - 1)) / N
    assert str(got) == str(expected)


def test_sum_and_mean_evaluate_like_numpy():
    r = np.random.default_rng(1)
    a, c = r.standard_normal(4), r.standard_normal(4)
    scalars = {"w": 0.7, "b": -0.3}
    cases = [
        (sg.sum(x), a.sum()),
        (sg.mean(x), a.mean()),
        (sg.mean((w * x - y) ** 2), np.mean((0.7 * a - c) ** 2)),
        (sg.sum(sg.exp(x) * y) + b, np.sum(np.exp(a) * c) - 0.3),
        (sg.mean(x) * sg.sum(y), a.mean() * c.sum()),
        (sg.sum(w * x) / sg.mean(y * y), np.sum(0.7 * a) / np.mean(c * c)),
    ]
    for e, expected in cases:
        got = eval_indexed(sg.to_sympy(e), 4, {"x": a, "y": c}, scalars)
        assert math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-12), (str(e), got, expected)


def test_sum_over_a_concrete_length():
    got = sg.to_sympy(sg.mean(v5))
    r = np.random.default_rng(2).standard_normal(5)
    assert not any(getattr(s, "name", "") == "N" for s in got.free_symbols)
    assert math.isclose(eval_indexed(got, 5, {"v5": r}, {}), r.mean(), rel_tol=1e-12)


def test_sum_of_a_scalar_is_the_scalar():
    got = sg.to_sympy(sg.sum(w * 2))
    assert not got.has(sympy.Sum)
    same_at_random_points(got, 2 * sw, "w")


# -- to_sympy: what has no SymPy form --------------------------------------------------------
@pytest.mark.parametrize("build, name", [
    (lambda: X @ W, "matmul"),
    (lambda: sg.softmax(X, axis=1), "softmax"),
    (lambda: sg.log_softmax(x), "log_softmax"),
    (lambda: sg.logsumexp(x), "logsumexp"),
    (lambda: sg.max(x), "max"),
    (lambda: sg.min(x), "min"),
    (lambda: sg.argmax(x), "argmax"),
    (lambda: X.T, "transpose"),
    (lambda: sg.reshape(v5, (5, 1)), "reshape"),
    (lambda: v5[1:], "index"),
    (lambda: sg.concat([v5, v5]), "concat"),
    (lambda: sg.one_hot(labels, 3), "one_hot"),
    (lambda: sg.sum(X, axis=1), "sum"),
    (lambda: sg.mean(X), "mean"),
    (lambda: sg.exp(sg.softmax(x)) + 1, "softmax"),
    (lambda: sg.mean(sg.mean(x) * x), "mean"),
])
def test_to_sympy_names_the_unsupported_operator(build, name):
    with pytest.raises(NotImplementedError, match=rf"\b{name}\b"):
        sg.to_sympy(build())


def test_to_sympy_non_uniform_constant_array():
    with pytest.raises(NotImplementedError):
        sg.to_sympy(v5 * np.arange(5, dtype=np.float32))


# -- from_sympy ---------------------------------------------------------------------------------
def test_from_sympy_builds_the_formula():
    e = sg.from_sympy(sympy.sympify("w*x + 1"), {"w": w, "x": x})
    assert str(e) == "w*x + 1"
    a = np.array([1.0, 2.0, -3.0], np.float32)
    np.testing.assert_allclose(sg.evaluate(e, x=a), 0.5 * a + 1)


def test_from_sympy_accepts_symbols_and_numbers_as_bindings():
    s, c = sympy.symbols("s c")
    e = sg.from_sympy(s * c + sympy.sin(s), {s: xd, "c": 3.0})
    a = np.array([0.25, -1.0])
    np.testing.assert_allclose(sg.evaluate(e, xd=a), 3 * a + np.sin(a), rtol=1e-12)


def test_from_sympy_functions_evaluate_like_numpy():
    s = sympy.Symbol("s", real=True)
    cases = [
        (sympy.exp(s) - 1, lambda a: np.exp(a) - 1),
        (sympy.log(s**2 + 1), lambda a: np.log(a**2 + 1)),
        (sympy.sqrt(s**2 + 1), lambda a: np.sqrt(a**2 + 1)),
        (1 / (1 + sympy.exp(-s)), lambda a: 1 / (1 + np.exp(-a))),
        (sympy.Abs(s) * sympy.sign(s), lambda a: a),
        (sympy.Max(s, 0) + sympy.Min(s, 0), lambda a: a),
        (sympy.Piecewise((s, s > 0), (-2 * s, True)), lambda a: np.where(a > 0, a, -2 * a)),
        (sympy.tanh(s) + sympy.cos(s) * sympy.tan(s), lambda a: np.tanh(a) + np.sin(a)),
        (sympy.erf(s), None),
        (s**-2 + s**sympy.Rational(3, 2) * 0, lambda a: a**-2.0),
    ]
    a = np.array([-1.5, -0.25, 0.5, 2.0])
    from scipy.special import erf

    for expr, ref in cases:
        e = sg.from_sympy(expr, {"s": xd})
        expected = erf(a) if ref is None else ref(a)
        np.testing.assert_allclose(sg.evaluate(e, xd=a), expected, rtol=1e-12, err_msg=str(expr))


def test_from_sympy_missing_binding_names_the_symbol():
    with pytest.raises(ValueError, match="'q'"):
        sg.from_sympy(sympy.sympify("x + q"), {"x": x})
    with pytest.raises(ValueError, match="'zeta_1'"):
        sg.from_sympy(sympy.sympify("exp(zeta_1)"), {})


def test_from_sympy_missing_binding_of_an_indexed_vector():
    xb = sympy.IndexedBase("xv")
    with pytest.raises(ValueError, match="'xv'"):
        sg.from_sympy(sympy.Sum(xb[IDX], (IDX, 0, N - 1)), {"x": x})


@pytest.mark.parametrize("fn, name", [
    (sympy.gamma, "gamma"), (sympy.cot, "cot"), (sympy.acot, "acot"),
    (sympy.frac, "frac"), (sympy.besselj, "besselj"),
])
def test_from_sympy_unsupported_function_is_named(fn, name):
    s = sympy.Symbol("s")
    expr = fn(0, s) if fn is sympy.besselj else fn(s)
    with pytest.raises(NotImplementedError, match=name):
        sg.from_sympy(expr + 1, {"s": x})


def test_from_sympy_sum_over_vector_and_mean():
    xb = sympy.IndexedBase("x")
    e = sg.from_sympy(sympy.Sum(xb[IDX] ** 2, (IDX, 0, N - 1)) / N, {"x": xd})
    a = np.array([1.0, 2.0, 4.0])
    np.testing.assert_allclose(sg.evaluate(e, xd=a), np.mean(a**2), rtol=1e-12)


def test_from_sympy_sum_of_a_term_free_of_the_index_counts_the_terms():
    # Sum(w, (i, 0, 4)) is 5*w, not w
    e = sg.from_sympy(sympy.Sum(sympy.Symbol("w"), (IDX, 0, 4)), {"w": wd})
    assert sg.evaluate(e) == pytest.approx(2.5)
    # over a symbolic length the count is the dimension N, which an input must then set
    e = sg.from_sympy(sympy.Sum(sympy.Symbol("w"), (IDX, 0, N - 1)), {"w": wd})
    with pytest.raises(ValueError, match="'N'"):
        sg.evaluate(e)
    xs = sg.input("xs", dtype="float64")
    assert sg.evaluate([e, xs], xs=np.zeros(4))[0] == pytest.approx(2.0)
    e = sg.from_sympy(sympy.Sum(sympy.Symbol("w"), (IDX, 0, N - 1)), {"w": wd, "N": 3})
    assert sg.evaluate(e) == pytest.approx(1.5)


# -- round trip ------------------------------------------------------------------------------
# Trees over float64 vectors xd, yd and scalars wd, bd, with the domains kept safe: log and
# sqrt only see positive values, denominators are at least 1, discontinuous functions only
# see leaves (so SymPy's rearranging cannot move a value across a jump).
LEAF_NODES = [xd, yd, wd, bd]
NUMBERS = [2, 3, 0.5, 1.5, -1.5]

UNARY = [
    lambda a: -a,
    lambda a: sg.exp(sg.tanh(a)),
    lambda a: sg.log(sg.abs(a) + 0.5),
    lambda a: sg.sqrt(a * a + 1),
    lambda a: sg.sin(a),
    lambda a: sg.cos(a),
    lambda a: sg.tan(sg.tanh(a)),
    lambda a: sg.tanh(a),
    lambda a: sg.sigmoid(a),
    lambda a: sg.softplus(a),
    lambda a: sg.relu(a),
    lambda a: sg.abs(a),
    lambda a: sg.log1p(sg.abs(a)),
    lambda a: sg.expm1(sg.tanh(a)),
    lambda a: sg.erf(a),
    lambda a: sg.gelu(a),
    lambda a: sg.leaky_relu(a, 0.2),
    lambda a: sg.elu(a),
    lambda a: a**2,
    lambda a: sg.clip(a, -1, 1),
]
BINARY = [
    lambda a, c: a + c,
    lambda a, c: a - c,
    lambda a, c: a * c,
    lambda a, c: a / (c * c + 1),
    lambda a, c: (sg.abs(a) + 1) ** sg.tanh(c),
    lambda a, c: sg.maximum(a, c),
    lambda a, c: sg.minimum(a, c),
]
LEAF_ONLY = [  # discontinuous: applied to leaves only
    lambda a, c: sg.sign(a) * c,
    lambda a, c: sg.where(a > 0.25, a, c),
    lambda a, c: sg.where(a <= c, c * 2, a),
]

leaves = st.sampled_from(LEAF_NODES)


def _extend(children):
    return (st.builds(lambda f, a: f(a), st.sampled_from(UNARY), children)
            | st.builds(lambda f, a, c: f(a, c), st.sampled_from(BINARY), children, children)
            | st.builds(lambda f, a, n: f(a, n), st.sampled_from(BINARY[:4]), children,
                        st.sampled_from(NUMBERS))
            | st.builds(lambda f, a, c: f(a, c), st.sampled_from(LEAF_ONLY), leaves, children))


elementwise = st.recursive(leaves, _extend, max_leaves=8)
BINDINGS = {"xd": xd, "yd": yd, "wd": wd, "bd": bd}


def _data(seed: int, n: int = 5):
    r = np.random.default_rng(seed)
    return {"xd": r.uniform(-2, 2, n), "yd": r.uniform(-2, 2, n)}


def _feeds(e, data):
    names = {leaf.name for leaf in e.walk() if leaf.op.name == "input"}
    return {k: data[k] for k in names}


def _check_round_trip(e, seed):
    data = _data(seed)
    wd.value, bd.value = np.random.default_rng(seed + 1).uniform(-2, 2, 2)
    expected = sg.evaluate(e, **_feeds(e, data))
    assume(np.all(np.isfinite(expected)) and np.all(np.abs(expected) < 1e6))
    try:
        s = sg.to_sympy(e)
    except ValueError as exc:  # SymPy's own Max/Min can fail to order a symbolic nan
        assume("not comparable" not in str(exc))
        raise
    assume(all(term.function.has(IDX) for term in s.atoms(sympy.Sum)))  # see the Sum test above
    back = sg.from_sympy(s, BINDINGS)
    got = sg.evaluate(back, **_feeds(back, data))
    got = np.broadcast_to(got, np.shape(expected))
    # SymPy may fold the whole formula to a number (exp(tanh(x - x))/5 is 1/5), which comes
    # back as a float32 constant: nothing says it was float64
    tol = 1e-8 if np.result_type(got) == np.float64 else 2 * np.finfo(np.float32).eps
    np.testing.assert_allclose(got, expected, rtol=tol, atol=1e-10, equal_nan=True,
                               err_msg=f"{e}\n{s}\n{back}")


@settings(max_examples=50, deadline=None)
@given(e=elementwise, seed=st.integers(0, 2**16))
def test_round_trip_elementwise(e, seed):
    _check_round_trip(e, seed)


@settings(max_examples=40, deadline=None)
@given(e=elementwise, seed=st.integers(0, 2**16), how=st.sampled_from(["sum", "mean"]))
def test_round_trip_sum_and_mean(e, seed, how):
    _check_round_trip(getattr(sg, how)(e * xd), seed)


@settings(max_examples=25, deadline=None)
@given(e1=elementwise, e2=elementwise, seed=st.integers(0, 2**16))
def test_round_trip_combinations_of_sums_and_means(e1, e2, seed):
    _check_round_trip(sg.mean(e1 + yd) + wd * sg.sum(e2 - xd), seed)


def test_round_trip_mean_squared_error():
    e = sg.mean((wd * xd + bd - yd) ** 2)
    back = sg.from_sympy(sg.to_sympy(e), BINDINGS)
    data = _data(7, 6)
    np.testing.assert_allclose(sg.evaluate(back, **data), sg.evaluate(e, **data), rtol=1e-12)
