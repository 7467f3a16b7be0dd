"""The NumPy reference evaluator: ``sg.evaluate`` and ``sg.function(..., backend="numpy")``.

Values are checked against NumPy written out by hand; every bad feed must be refused before
anything runs, with the right error type and a message naming the input, what was expected
and what was given.
"""

from __future__ import annotations

import importlib
import re
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import symgrad as sg

EVAL_MODULE = importlib.import_module("symgrad.expr.evaluate")
FUNCTION_MODULE = importlib.import_module("symgrad.runtime.function")

x, y = sg.inputs("x y")
X = sg.input("X", shape=("N", 3))
labels = sg.input("labels", dtype="int32")
mask = sg.input("mask", dtype="bool")
x64 = sg.input("x64", dtype="float64")
v5 = sg.input("v5", shape=(5,))


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# The two ways of running a graph on NumPy: each takes (outputs, feeds).
RUNNERS = {
    "evaluate": lambda outputs, **feeds: sg.evaluate(outputs, **feeds),
    "function": lambda outputs, **feeds: sg.function(outputs, backend="numpy")(**feeds),
}


@pytest.fixture(params=sorted(RUNNERS))
def run(request):
    return RUNNERS[request.param]


# -- results: one array for a node, a tuple for a list; dtypes kept --------------------------
def test_one_node_gives_one_array(run):
    a = rng().standard_normal(4).astype(np.float32)
    out = run(x * 2.0 + 1.0, x=a)
    assert type(out) is np.ndarray
    np.testing.assert_allclose(out, a * 2 + 1, rtol=1e-6)


def test_scalar_output_is_a_zero_dim_array(run):
    out = run(sg.sum(x), x=np.array([1.0, 2.0, 3.5], np.float32))
    assert type(out) is np.ndarray
    assert out.shape == ()
    assert out == np.float32(6.5)


def test_list_gives_tuple_in_order(run):
    a = np.array([1.0, -2.0, 3.0], np.float32)
    b = np.array([0.5, 0.25, 4.0], np.float32)
    out = run([x + y, sg.sum(x), x * y], x=a, y=b)
    assert type(out) is tuple and len(out) == 3
    np.testing.assert_allclose(out[0], a + b)
    np.testing.assert_allclose(out[1], 2.0)
    np.testing.assert_allclose(out[2], a * b)


def test_list_of_one_gives_tuple_of_one(run):
    out = run([sg.sum(x)], x=np.ones(3, np.float32))
    assert type(out) is tuple and len(out) == 1
    assert out[0] == 3.0


def test_tuple_of_outputs_gives_tuple(run):
    out = run((x, y), x=np.ones(2, np.float32), y=np.zeros(2, np.float32))
    assert type(out) is tuple and len(out) == 2


def test_same_node_twice_in_a_list(run):
    e = sg.exp(x)
    a = np.array([0.0, 1.0], np.float32)
    first, second = run([e, e], x=a)
    np.testing.assert_allclose(first, np.exp(a), rtol=1e-6)
    np.testing.assert_array_equal(first, second)


def test_float32_stays_float32(run):
    a = rng(1).standard_normal(6).astype(np.float32)
    w = sg.param("w", init=0.5)
    outs = run([sg.exp(w * x), sg.mean(x), sg.sigmoid(x) / 3, sg.sum(x**2), x / 7],
               x=a)
    for out in outs:
        assert out.dtype == np.float32, out.dtype


def test_float32_input_fed_float64_data_stays_float32(run):
    a = np.array([0.1, 0.2, 0.3])  # float64
    out = run(x * 3.0, x=a)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, a.astype(np.float32) * np.float32(3.0))


def test_float64_stays_float64(run):
    a = rng(2).standard_normal(5)
    w = sg.param("w64", init=0.25, dtype="float64")
    outs = run([sg.exp(w * x64), sg.mean(x64), sg.tanh(x64) / 3, sg.sum(x64**2)], x64=a)
    for out in outs:
        assert out.dtype == np.float64, out.dtype
    np.testing.assert_allclose(outs[0], np.exp(0.25 * a), rtol=1e-13)
    np.testing.assert_allclose(outs[1], a.mean(), rtol=1e-13)
    np.testing.assert_allclose(outs[2], np.tanh(a) / 3, rtol=1e-13)
    np.testing.assert_allclose(outs[3], (a**2).sum(), rtol=1e-13)


def test_int_and_bool_outputs(run):
    lab = np.array([3, 1, 2], np.int32)
    m = np.array([True, False, True])
    total, mx, count = run([sg.sum(labels), sg.max(labels), sg.sum(mask)], labels=lab, mask=m)
    assert total.dtype == np.int32 and total == 6
    assert mx.dtype == np.int32 and mx == 3
    assert count == 2
    cmp = run(x > 0.5, x=np.array([0.0, 1.0], np.float32))
    assert cmp.dtype == np.bool_
    np.testing.assert_array_equal(cmp, [False, True])


def test_linear_regression_loss_matches_numpy(run):
    x1, x2, t = sg.inputs("x1 x2 t")
    w1, w2, b = sg.params("w1 w2 b", init=0.0)
    w1.value, w2.value, b.value = 0.5, -1.5, 0.25
    loss = sg.mean((w1 * x1 + w2 * x2 + b - t) ** 2)
    r = rng(3)
    a1, a2, at = (r.standard_normal(9).astype(np.float32) for _ in range(3))
    expected = np.mean((0.5 * a1.astype(np.float64) - 1.5 * a2 + 0.25 - at) ** 2)
    out = run(loss, x1=a1, x2=a2, t=at)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-5)


def test_dense_layer_softmax_matches_numpy(run):
    W = sg.param("W", init=rng(4).standard_normal((3, 2)).astype(np.float32))
    c = sg.param("c", init=np.array([0.1, -0.2], np.float32))
    probs = sg.softmax(X @ W + c, axis=1)
    data = rng(5).standard_normal((4, 3)).astype(np.float32)
    z = data.astype(np.float64) @ W.value.astype(np.float64) + c.value
    ez = np.exp(z - z.max(axis=1, keepdims=True))
    out = run(probs, X=data)
    assert out.shape == (4, 2) and out.dtype == np.float32
    np.testing.assert_allclose(out, ez / ez.sum(axis=1, keepdims=True), rtol=1e-5)


def test_reductions_over_axes_match_numpy(run):
    data = rng(6).standard_normal((4, 3)).astype(np.float32)
    outs = run([sg.sum(X, axis=1, keepdims=True), sg.mean(X, axis=0), sg.max(X, axis=1),
                sg.sum(X)], X=data)
    np.testing.assert_allclose(outs[0], data.sum(axis=1, keepdims=True), rtol=1e-5)
    np.testing.assert_allclose(outs[1], data.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(outs[2], data.max(axis=1))
    np.testing.assert_allclose(outs[3], data.sum(), rtol=1e-5)
    assert outs[0].shape == (4, 1) and outs[1].shape == (3,) and outs[3].shape == ()


def test_indexing_matches_numpy(run):
    data = rng(7).standard_normal((4, 3)).astype(np.float32)
    vec = np.arange(5, dtype=np.float32)
    col, rest, rev = run([X[:, 0], v5[1:], v5[::-1]], X=data, v5=vec)
    np.testing.assert_array_equal(col, data[:, 0])
    np.testing.assert_array_equal(rest, vec[1:])
    np.testing.assert_array_equal(rev, vec[::-1])


# -- which inputs are needed ----------------------------------------------------------------
def test_only_inputs_of_requested_outputs_are_needed(run):
    out = run(x * 2.0, x=np.ones(2, np.float32))  # y, X, labels... not fed
    np.testing.assert_array_equal(out, [2.0, 2.0])


def test_output_without_inputs_needs_no_feed(run):
    w = sg.param("w", init=1.5)
    assert run(sg.const(3.0) * 2.0) == 6.0
    assert run(w * 2.0) == 3.0
    outs = run([sg.const([1.0, 2.0]), w])
    np.testing.assert_array_equal(outs[0], [1.0, 2.0])
    assert outs[1] == 1.5


def test_feeding_a_name_the_outputs_do_not_use_is_ignored(run):
    # one data dict serves every output; an unused feed is not even checked ("abc")
    out = run(x * 2.0, x=np.ones(2, np.float32), y=np.ones(2, np.float32), z="abc")
    np.testing.assert_array_equal(out, [2.0, 2.0])
    assert run(sg.const(3.0) * 2.0, x=np.ones(2, np.float32)) == 6.0


def test_a_misspelt_feed_is_a_missing_input_that_names_the_closest_unused_feed():
    with pytest.raises(ValueError, match="missing input") as info:
        sg.evaluate(x + y, x=np.ones(2), yy=np.ones(2), z=np.ones(2))
    msg = str(info.value)
    assert "'y'" in msg and "did you mean 'yy', which was fed but is not used?" in msg
    with pytest.raises(ValueError, match="fed but not used: 'q'"):  # nothing close
        sg.evaluate(x + y, x=np.ones(2), q=np.ones(2))


def test_parameters_use_their_current_value(run):
    w = sg.param("w", init=1.0)
    e = w * x
    a = np.array([1.0, 2.0], np.float32)
    np.testing.assert_array_equal(run(e, x=a), [1.0, 2.0])
    w.value = 3.0
    np.testing.assert_array_equal(run(e, x=a), [3.0, 6.0])
    w.value = np.float32(-0.5)
    np.testing.assert_array_equal(run(e, x=a), [-0.5, -1.0])


def test_function_sees_parameter_updates_between_calls():
    w = sg.param("w", init=2.0)
    f = sg.function(sg.sum(w * x), backend="numpy")
    a = np.ones(4, np.float32)
    assert f(x=a) == 8.0
    w.value = 0.25
    assert f(x=a) == 1.0


def test_returned_parameter_value_is_a_snapshot():
    w = sg.param("w", init=np.array([1.0, 2.0], np.float32))
    out = sg.evaluate(w)
    w.value = np.array([5.0, 6.0], np.float32)
    np.testing.assert_array_equal(out, [1.0, 2.0])
    out[0] = 100.0
    np.testing.assert_array_equal(w.value, [5.0, 6.0])


# -- bad feeds: type, message, and nothing runs -----------------------------------------------
GOOD = {
    "x": np.ones(2, np.float32),
    "X": np.ones((2, 3), np.float32),
    "labels": np.array([1, 0], np.int32),
}
ALL_THREE = sg.mean(x) + sg.sum(X) + sg.sum(labels).astype("float32")


def feeds(**changes):
    out = dict(GOOD)
    for k, v in changes.items():
        if v is _DROP:
            out.pop(k)
        else:
            out[k] = v
    return out


_DROP = object()

# (id, feeds, error type, fragments that must all appear in the message)
BAD_FEEDS = [
    ("missing", feeds(X=_DROP), ValueError, ["missing input", "'X'", "float32", "(N, 3)"]),
    ("missing-two", feeds(X=_DROP, labels=_DROP), ValueError,
     ["missing inputs", "'X'", "'labels'", "int32"]),
    ("typo", feeds(X=_DROP, Xs=np.ones((2, 3), np.float32)), ValueError,
     ["missing input", "'X'", "did you mean 'Xs'"]),
    ("rank-high", feeds(X=np.ones((2, 3, 1), np.float32)), ValueError,
     ["'X'", "(N, 3)", "(2, 3, 1)"]),
    ("rank-low", feeds(X=np.ones(6, np.float32)), ValueError, ["'X'", "(N, 3)", "(6,)"]),
    ("rank-scalar", feeds(x=np.float32(1.0)), ValueError, ["'x'", "(N,)", "()"]),
    ("size", feeds(X=np.ones((2, 4), np.float32)), ValueError, ["'X'", "(N, 3)", "(2, 4)"]),
    ("str", feeds(x="1.0, 2.0"), TypeError, ["'x'", "float32", "(N,)", "str"]),
    ("bytes", feeds(x=b"ab"), TypeError, ["'x'", "float32", "bytes"]),
    ("none", feeds(x=None), TypeError, ["'x'", "float32", "NoneType"]),
    ("object-array", feeds(x=np.array([object(), object()])), TypeError,
     ["'x'", "float32", "object"]),
    ("dict", feeds(x={"a": 1.0}), TypeError, ["'x'", "float32", "dict"]),
    ("complex", feeds(x=np.array([1 + 2j, 0j])), TypeError, ["'x'", "float32", "complex"]),
    ("float-for-int", feeds(labels=np.array([1.0, 0.0])), TypeError,
     ["'labels'", "int32", "float64"]),
    ("float32-for-int", feeds(labels=np.array([1.0, 0.0], np.float32)), TypeError,
     ["'labels'", "int32", "float32"]),
    ("bool-for-int", feeds(labels=np.array([True, False])), TypeError,
     ["'labels'", "int32", "bool"]),
    # integer data into a float input is cast while every value is an integer float32 holds
    ("int-not-exact-in-float", feeds(x=np.array([1, 2**24 + 1])), ValueError,
     ["'x'", "float32", "16777217", "a.astype(np.float32)"]),
    ("int32-not-exact-in-float", feeds(X=np.full((2, 3), -2**30, np.int32)), ValueError,
     ["'X'", "float32", "-1073741824"]),
    ("int-too-big", feeds(labels=np.array([1, 2**40])), ValueError, ["'labels'", "int32"]),
]


@pytest.mark.parametrize("case", BAD_FEEDS, ids=[c[0] for c in BAD_FEEDS])
@pytest.mark.parametrize("how", ["evaluate", "function"])
def test_bad_feed_raises_before_running(monkeypatch, case, how):
    _, bad, error, fragments = case
    ran = []
    for module in (EVAL_MODULE, FUNCTION_MODULE):
        monkeypatch.setattr(module, "run_graph", lambda *a, **k: ran.append(a))
    with pytest.raises(error) as info:
        RUNNERS[how](ALL_THREE, **bad)
    assert type(info.value) is error  # exactly, not a subclass such as ShapeError
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))
    assert not ran, "the graph ran although a feed was bad"


def test_good_feeds_do_run(monkeypatch):
    # the control for the test above: with good feeds the spy is called
    ran = []
    monkeypatch.setattr(EVAL_MODULE, "run_graph", lambda *a, **k: ran.append(a) or [0])
    sg.evaluate(ALL_THREE, **GOOD)
    assert ran


def test_good_feeds_value():
    out = sg.evaluate(ALL_THREE, **GOOD)
    assert out == 1.0 + 6.0 + 1.0


@pytest.mark.parametrize("how", ["evaluate", "function"])
def test_symbolic_dimension_bound_twice_names_both_inputs(how):
    e = sg.mean(x * y)
    with pytest.raises(ValueError) as info:
        RUNNERS[how](e, x=np.ones(2, np.float32), y=np.ones(3, np.float32))
    msg = str(info.value)
    assert "'x'" in msg and "'y'" in msg and "N" in msg
    assert "2" in msg and "3" in msg


def test_symbolic_dimension_conflict_between_matrix_and_vector():
    e = sg.sum(X) + sg.sum(x)
    with pytest.raises(ValueError) as info:
        sg.evaluate(e, X=np.ones((4, 3), np.float32), x=np.ones(5, np.float32))
    msg = str(info.value)
    assert "'X'" in msg and "'x'" in msg
    assert re.search(r"\b4\b", msg) and re.search(r"\b5\b", msg)


def test_two_symbolic_dimensions_are_independent():
    A = sg.input("A", shape=("N", "M"))
    u = sg.input("u", shape=("M",))
    out = sg.evaluate(A * u, A=np.ones((2, 3), np.float32), u=np.arange(3, dtype=np.float32))
    np.testing.assert_array_equal(out, [[0, 1, 2], [0, 1, 2]])
    with pytest.raises(ValueError, match="'u'"):
        sg.evaluate(A * u, A=np.ones((2, 3), np.float32), u=np.ones(2, np.float32))


def test_two_inputs_sharing_a_name_in_one_graph():
    other = sg.input("x", dtype="float64")
    assert other is not x
    with pytest.raises(ValueError, match="'x'"):
        sg.evaluate(x + other, x=np.ones(2))
    with pytest.raises(ValueError, match="'x'"):
        sg.function([x, other], backend="numpy")
    wide = sg.input("x", shape=(3,))
    with pytest.raises(ValueError, match="'x'"):
        sg.evaluate(sg.sum(x) + sg.sum(wide), x=np.ones(3))


def test_same_input_built_twice_is_one_input():
    again = sg.input("x")
    assert again is x
    out = sg.evaluate(x + again, x=np.array([1.0, 2.0], np.float32))
    np.testing.assert_array_equal(out, [2.0, 4.0])


def test_accepted_feed_conversions():
    # lists of floats, int labels of another width within range, a float32 scalar input
    np.testing.assert_array_equal(sg.evaluate(x * 2.0, x=[1.0, 2.5]), [2.0, 5.0])
    assert sg.evaluate(sg.sum(labels), labels=np.array([1, 2], np.int64)) == 3
    assert sg.evaluate(sg.sum(labels), labels=np.array([1, 2], np.uint8)) == 3
    s = sg.input("s", shape=())
    assert sg.evaluate(s * 2.0, s=np.float32(1.5)) == 3.0
    assert sg.evaluate(s * 2.0, s=1.5) == 3.0


def test_outputs_must_be_nodes():
    with pytest.raises(TypeError):
        sg.evaluate(3.0)
    with pytest.raises(TypeError):
        sg.evaluate([x, 3.0], x=np.ones(2, np.float32))
    with pytest.raises(TypeError):
        sg.function("x")


# -- batch sizes 0 and 1, memory layouts ---------------------------------------------------
def test_empty_batch(run):
    empty = np.zeros(0, np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nan as in NumPy, but without a warning
        m, s, e, mx = run([sg.mean(x), sg.sum(x), sg.exp(x) * 2.0, sg.sum(X, axis=1)],
                          x=empty, X=np.zeros((0, 3), np.float32))
    assert np.isnan(m) and m.dtype == np.float32
    assert s == 0.0 and s.dtype == np.float32
    assert e.shape == (0,) and e.dtype == np.float32
    assert mx.shape == (0,)


def test_empty_batch_of_labels():
    assert sg.evaluate(sg.sum(labels), labels=np.zeros(0, np.int32)) == 0


def test_batch_of_one(run):
    a = np.array([0.75], np.float32)
    b = np.array([2.0], np.float32)
    m, p = run([sg.mean((x - y) ** 2), x * y], x=a, y=b)
    assert m == np.float32(1.5625)
    np.testing.assert_array_equal(p, [1.5])
    probs = run(sg.softmax(X, axis=1), X=np.zeros((1, 3), np.float32))
    np.testing.assert_allclose(probs, np.full((1, 3), 1 / 3), rtol=1e-6)


def test_non_contiguous_and_fortran_inputs(run):
    base = rng(8).standard_normal((4, 6)).astype(np.float32)
    strided = base[:, ::2]  # (4, 3), not contiguous
    fortran = np.asfortranarray(base[:, :3])
    reversed_vec = base[::-1, 0]  # negative stride
    assert not strided.flags.c_contiguous and not fortran.flags.c_contiguous
    e = sg.sum(X * 2.0, axis=1)
    np.testing.assert_allclose(run(e, X=strided), (strided * 2).sum(axis=1), rtol=1e-6)
    np.testing.assert_allclose(run(e, X=fortran), (fortran * 2).sum(axis=1), rtol=1e-6)
    np.testing.assert_allclose(run(sg.exp(x), x=reversed_vec), np.exp(reversed_vec),
                               rtol=1e-6)
    np.testing.assert_array_equal(run(X.T, X=strided), strided.T)


def test_feeds_are_not_modified(run):
    a = np.array([1.0, 2.0], np.float32)
    keep = a.copy()
    run([x * 2.0, sg.exp(x), -x], x=a)
    np.testing.assert_array_equal(a, keep)


# -- property: random elementwise chains keep dtype and shape and match NumPy ------------
UNARY = [
    (lambda e: e * 2.0, lambda a: a * 2.0),
    (lambda e: e + 1.5, lambda a: a + 1.5),
    (lambda e: -e, lambda a: -a),
    (lambda e: sg.tanh(e), np.tanh),
    (lambda e: sg.sin(e), np.sin),
    (lambda e: sg.abs(e), np.abs),
    (lambda e: e * e, lambda a: a * a),
    (lambda e: sg.exp(-(e * e)), lambda a: np.exp(-(a * a))),
    (lambda e: sg.maximum(e, 0.0), lambda a: np.maximum(a, 0.0)),
]


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 5), dtype=st.sampled_from(["float32", "float64"]),
       chain=st.lists(st.integers(0, len(UNARY) - 1), min_size=1, max_size=6),
       seed=st.integers(0, 2**16))
def test_random_chains_keep_dtype_and_match_numpy(n, dtype, chain, seed):
    v = sg.input("v", dtype=dtype)
    e, ref = v, np.random.default_rng(seed).uniform(-2, 2, n).astype(dtype)
    data = ref.copy()
    for i in chain:
        build, np_f = UNARY[i]
        e, ref = build(e), np_f(ref).astype(dtype)
    out, total = sg.evaluate([e, sg.sum(e)], v=data)
    assert out.dtype == np.dtype(dtype) and total.dtype == np.dtype(dtype)
    assert out.shape == (n,) and total.shape == ()
    tol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(out, ref, rtol=tol, atol=tol)
    np.testing.assert_allclose(total, ref.sum(), rtol=tol * 10, atol=tol * 10)


# -- sg.function specifics --------------------------------------------------------------------
def test_function_rejects_unknown_backend():
    with pytest.raises(ValueError) as info:
        sg.function(x * 2.0, backend="jax")
    msg = str(info.value)
    assert "'jax'" in msg
    for name in ("numpy", "llvm", "cuda"):
        assert name in msg


@pytest.mark.parametrize("backend", ["", "NumPy", None, "torch"])
def test_function_rejects_other_backend_spellings(backend):
    with pytest.raises(ValueError, match="numpy"):
        sg.function(x, backend=backend)
