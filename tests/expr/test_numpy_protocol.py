"""NumPy's ufuncs and functions on symgrad expressions (``__array_ufunc__``,
``__array_function__``): they build nodes, whose values are NumPy's own on the same arrays;
what symgrad has no counterpart for is refused with a ``TypeError`` naming it."""

from __future__ import annotations

import numpy as np
import pytest

import symgrad as sg
from symgrad.expr.numpy_protocol import FUNCTIONS, UFUNCS

X = sg.input("X", shape=("N", 3))
M = sg.input("M", shape=(2, 3))
x = sg.input("x")


def _arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"X": rng.uniform(0.1, 0.9, (4, 3)).astype(np.float32),
            "M": rng.uniform(-1, 1, (2, 3)).astype(np.float32)}


W_ARRAY = np.arange(6, dtype=np.float32).reshape(3, 2) / 6

# Each case is applied to arrays (NumPy's answer) and to the inputs X and M (a symgrad
# expression, evaluated by the reference): both must agree.
CASES = {
    "exp": lambda a, m: np.exp(a),
    "log": lambda a, m: np.log(a),
    "log1p": lambda a, m: np.log1p(a),
    "expm1": lambda a, m: np.expm1(a),
    "sqrt": lambda a, m: np.sqrt(a),
    "square": lambda a, m: np.square(m),
    "sin cos tan": lambda a, m: np.sin(a) + np.cos(a) * np.tan(m[0]),
    "tanh": lambda a, m: np.tanh(m),
    "abs": lambda a, m: np.abs(m),
    "sign": lambda a, m: np.sign(m),
    "negative positive": lambda a, m: np.negative(m) + np.positive(m) * 3,
    "maximum with 0": lambda a, m: np.maximum(m, 0),
    "minimum": lambda a, m: np.minimum(a, 0.5),
    "power": lambda a, m: np.power(a, 3),
    "divide": lambda a, m: np.divide(1, a),
    "array on the left +": lambda a, m: np.ones(3, np.float32) + a,
    "array on the left -": lambda a, m: np.full(3, 2, np.float32) - a,
    "array on the left *": lambda a, m: np.arange(3, dtype=np.float32) * a,
    "array on the left /": lambda a, m: np.ones(3, np.float32) / a,
    "array on the left **": lambda a, m: np.full(3, 2, np.float32) ** m,
    "array on the left @": lambda a, m: np.ones((2, 3), np.float32) @ a.T,
    "array on the left <": lambda a, m: np.full(3, 0.5, np.float32) < a,
    "numpy scalar on the left": lambda a, m: np.float32(2) * a,
    "float64 array promotes": lambda a, m: np.ones(3) + a,
    "comparisons": lambda a, m: np.where(np.greater_equal(a, 0.5),
                                         np.where(np.less(a, 0.8), a, 0), 0),
    "more comparisons": lambda a, m: np.where(np.less_equal(m, 0), -m,
                                              np.where(np.greater(m, 0.5), 2 * m, m)),
    "equal": lambda a, m: np.equal(m, m[0]),
    "not_equal": lambda a, m: np.not_equal(m, m[0]),
    "matmul": lambda a, m: np.matmul(a, W_ARRAY),
    "dot": lambda a, m: np.dot(a, np.ones(3, np.float32)),
    "where": lambda a, m: np.where(m > 0, m, 0.1 * m),
    "clip": lambda a, m: np.clip(m, -0.5, 0.5),
    "clip one side": lambda a, m: np.clip(m, None, 0.2),
    "sum": lambda a, m: np.sum(a),
    "sum axis=1": lambda a, m: np.sum(a, axis=1),
    "sum positional axis keepdims": lambda a, m: np.sum(a, 0, keepdims=True),
    "sum dtype": lambda a, m: np.sum(a, dtype=np.float64),
    "mean": lambda a, m: np.mean(a, axis=0),
    "max min": lambda a, m: np.max(a, axis=1) - np.min(a),
    "amax amin": lambda a, m: np.amax(m) + np.amin(m, axis=0, keepdims=True),
    "argmax": lambda a, m: np.argmax(a, axis=1),
    "transpose": lambda a, m: np.transpose(a),
    "transpose axes": lambda a, m: np.transpose(m, (1, 0)),
    "reshape": lambda a, m: np.reshape(m, (3, 2)),
    "reshape -1": lambda a, m: np.reshape(m, -1),
    "concatenate axis=1": lambda a, m: np.concatenate([a, a * 2], axis=1),
    "concatenate": lambda a, m: np.concatenate((m, np.ones((1, 3), np.float32))),
    "concatenate axis=None": lambda a, m: np.concatenate([m, m], axis=None),
    "broadcast_to": lambda a, m: np.broadcast_to(m[0], (2, 3)),
    "add.reduce": lambda a, m: np.add.reduce(a, axis=1),
    "maximum.reduce": lambda a, m: np.maximum.reduce(a),
    "minimum.reduce keepdims": lambda a, m: np.minimum.reduce(m, axis=1, keepdims=True),
    "ufunc dtype": lambda a, m: np.exp(m, dtype=np.float64),
    "a model": lambda a, m: np.mean(np.log1p(np.exp(np.tanh(a @ W_ARRAY))), axis=0),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_numpy_functions_build_expressions_with_numpys_values(case):
    f = CASES[case]
    arrays = _arrays()
    e = f(X, M)
    assert isinstance(e, sg.Expr), type(e)
    want = np.asarray(f(arrays["X"], arrays["M"]))
    got = sg.evaluate(e, arrays)  # a feed dict; the input e does not use is ignored
    assert got.shape == want.shape
    if want.dtype.kind == "f":
        assert got.dtype == want.dtype, (got.dtype, want.dtype)
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7)
    else:
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("np_call, sg_call", [
    (lambda: np.exp(x), lambda: sg.exp(x)),
    (lambda: np.maximum(X, 0), lambda: sg.maximum(X, 0)),
    (lambda: np.sum(X, axis=1), lambda: sg.sum(X, axis=1)),
    (lambda: np.mean(X, keepdims=True), lambda: sg.mean(X, keepdims=True)),
    (lambda: np.matmul(X, M.T), lambda: X @ M.T),
    (lambda: np.where(x > 0, x, 0), lambda: sg.where(x > 0, x, 0)),
    (lambda: np.ones(3, np.float32) + X, lambda: sg.const(np.ones(3, np.float32)) + X),
    (lambda: np.float32(0.5) * x, lambda: sg.const(np.float32(0.5)) * x),
])
def test_the_node_is_the_symgrad_builders_node(np_call, sg_call):
    assert np_call() is sg_call()  # hash-consed: the same node, not a look-alike


def test_an_array_on_the_left_gives_a_node_not_an_object_array():
    v = sg.input("v", shape=(3,))
    for e in (np.ones(3) + v, np.ones(3) * v, np.ones((2, 3)) @ v, np.ones(3) > v):
        assert isinstance(e, sg.Expr) and not isinstance(e, np.ndarray)


def test_shape_and_ndim():
    assert np.shape(X) == ("N", 3) and np.ndim(M) == 2


def test_a_model_written_with_numpy_compiles_and_matches_numpy():
    W = sg.param("W", init=W_ARRAY)
    loss = np.mean(np.square(np.tanh(np.matmul(X, W)) - 0.5))
    assert loss is sg.mean(sg.square(sg.tanh(X @ W) - 0.5))
    arrays = _arrays(1)
    want = np.mean(np.square(np.tanh(arrays["X"] @ W_ARRAY) - 0.5))
    for backend in ("llvm", "numpy"):
        got = sg.function(loss, backend=backend)(arrays)
        np.testing.assert_allclose(got, want, rtol=1e-6)
    grad = sg.function(sg.grad(loss, W), backend="llvm")(arrays)
    eps, num = 1e-3, np.zeros_like(W_ARRAY, dtype=np.float64)
    xs = arrays["X"].astype(np.float64)
    for i in np.ndindex(*W_ARRAY.shape):  # central differences in float64
        d = np.zeros(W_ARRAY.shape)
        d[i] = eps
        f = [np.mean((np.tanh(xs @ (W_ARRAY + s * d)) - 0.5) ** 2) for s in (1, -1)]
        num[i] = (f[0] - f[1]) / (2 * eps)
    np.testing.assert_allclose(grad, num, rtol=1e-3, atol=1e-5)


# -- refusals --------------------------------------------------------------------------------

@pytest.mark.parametrize("call, fragments", [
    (lambda: np.hypot(x, x), ["np.hypot", "sg."]),
    (lambda: np.exp2(x), ["np.exp2", "sg.exp"]),
    (lambda: np.vstack([X, X]), ["np.vstack", "sg.concat"]),
    (lambda: np.linalg.det(X), ["np.linalg.det", "sg."]),
    (lambda: np.median(X), ["np.median", "sg."]),
    (lambda: np.subtract.reduce(x), ["np.subtract.reduce", "sg."]),
    (lambda: np.add.accumulate(x), ["np.add.accumulate", ".reduce"]),
    (lambda: np.add.outer(x, x), ["np.add.outer"]),
])
def test_what_symgrad_lacks_is_refused_naming_it_and_the_nearest_function(call, fragments):
    with pytest.raises(TypeError) as info:
        call()
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


def test_the_nearest_function_is_a_public_symgrad_function():
    with pytest.raises(TypeError) as info:
        np.arccosh(x)
    name = str(info.value).split("sg.")[1].split()[0]
    assert name in sg.__all__ and callable(getattr(sg, name))


@pytest.mark.parametrize("call, fragments", [
    (lambda: np.exp(x, out=np.empty(2, np.float32)), ["np.exp", "out=", "immutable"]),
    (lambda: np.add(x, 1, np.empty(2, np.float32)), ["np.add", "out="]),  # out positional
    (lambda: np.sum(X, out=np.empty(())), ["np.sum", "out="]),
    (lambda: np.concatenate([X, X], out=np.empty((2, 6))), ["np.concatenate", "out="]),
    (lambda: np.exp(x, where=np.ones(2, bool)), ["np.exp", "where=", "np.where"]),
    (lambda: np.sum(X, where=np.ones((1, 3), bool)), ["np.sum", "where="]),
    (lambda: np.mean(X, where=np.ones((1, 3), bool)), ["np.mean", "where="]),
    (lambda: np.max(X, initial=0.0), ["np.max", "initial="]),
    (lambda: np.sum(X, initial=1.0), ["np.sum", "initial="]),
    (lambda: np.add.reduce(X, initial=1.0), ["np.add.reduce", "initial="]),
    (lambda: np.exp(x, casting="unsafe"), ["np.exp", "casting="]),
    (lambda: np.exp(x, order="F"), ["np.exp", "order="]),
    (lambda: np.less(x, 1, dtype=np.float64), ["np.less", "dtype=", "bool"]),
    (lambda: np.reshape(M, (3, 2), order="F"), ["np.reshape", "order=", "'F'"]),
    (lambda: np.where(x > 0), ["np.where", "one argument"]),
])
def test_numpy_keywords_symgrad_cannot_honour_are_refused(call, fragments):
    with pytest.raises(TypeError) as info:
        call()
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


def test_keywords_at_their_defaults_are_accepted():
    assert np.exp(x, out=None, where=True, casting="same_kind") is sg.exp(x)
    assert np.sum(X, axis=None, dtype=None, out=None, keepdims=False) is sg.sum(X)
    assert np.argmax(X, axis=1, keepdims=True) is sg.argmax(X, axis=1, keepdims=True)


def test_other_array_libraries_are_asked_in_turn():
    class Other:
        def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
            return f"Other.{ufunc.__name__}"

        def __array_function__(self, func, types, args, kwargs):
            return f"Other.{func.__name__}"

    assert np.add(x, Other()) == "Other.add"  # symgrad declines, the other object answers
    assert np.concatenate([X, Other()]) == "Other.concatenate"


def test_the_tables_hold_only_numpy_callables_with_one_entry_each():
    assert all(isinstance(u, np.ufunc) for u in UFUNCS)
    assert len(set(map(id, FUNCTIONS))) == len(FUNCTIONS)
    assert np.abs in UFUNCS and np.true_divide in UFUNCS  # aliases of the same ufuncs
