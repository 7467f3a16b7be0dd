"""``sg.function`` on the NumPy backend: a reusable callable over a fixed set of outputs."""

from __future__ import annotations

import numpy as np
import pytest

import symgrad as sg

x, y = sg.inputs("x y")
X = sg.input("X", shape=("N", 2))


def test_function_returns_a_function_object():
    f = sg.function(x * 2.0, backend="numpy")
    assert isinstance(f, sg.Function)
    assert f.backend == "numpy"
    assert callable(f)


def test_callable_repeatedly_with_new_batch_sizes():
    f = sg.function(sg.sum(x * y), backend="numpy")
    for n in (3, 1, 0, 7, 3):
        a = np.arange(n, dtype=np.float32)
        c = np.full(n, 2.0, np.float32)
        out = f(x=a, y=c)
        assert out.dtype == np.float32 and out.shape == ()
        assert out == np.float32(2 * a.sum())


def test_repeated_calls_do_not_share_state():
    f = sg.function([x + 1.0, sg.mean(x)], backend="numpy")
    first = f(x=np.array([1.0, 2.0], np.float32))
    second = f(x=np.array([10.0, 20.0, 30.0], np.float32))
    np.testing.assert_array_equal(first[0], [2.0, 3.0])
    assert first[1] == 1.5
    np.testing.assert_array_equal(second[0], [11.0, 21.0, 31.0])
    assert second[1] == 20.0


def test_single_output_and_list_output():
    one = sg.function(x, backend="numpy")(x=np.ones(2, np.float32))
    many = sg.function([x], backend="numpy")(x=np.ones(2, np.float32))
    assert isinstance(one, np.ndarray)
    assert isinstance(many, tuple) and len(many) == 1


def test_llvm_backend_is_the_default():
    f = sg.function(x * 3.0)
    assert f.backend == "llvm"
    np.testing.assert_array_equal(f(x=np.array([1.0], np.float32)), [3.0])


def test_inputs_property_maps_names_to_the_input_nodes():
    w = sg.param("w", init=1.0)
    f = sg.function([sg.mean(w * x - y), sg.sum(X)], backend="numpy")
    assert set(f.inputs) == {"x", "y", "X"}
    assert f.inputs["x"] is x and f.inputs["y"] is y and f.inputs["X"] is X


def test_inputs_property_leaves_out_parameters_and_constants():
    w = sg.param("w", init=1.0)
    f = sg.function(w * sg.const(2.0), backend="numpy")
    assert len(f.inputs) == 0
    assert f() == 2.0


def test_repr_names_backend_and_inputs():
    f = sg.function(sg.mean(x * y) + sg.sum(X), backend="numpy")
    text = repr(f)
    assert "Function" in text
    assert "numpy" in text
    assert "X" in text and "x" in text and "y" in text
    # the inputs are listed in a stable (sorted) order
    assert text.index("X") < text.index("x, y")


def test_repr_of_a_function_without_inputs():
    text = repr(sg.function(sg.const(1.0), backend="numpy"))
    assert "numpy" in text and "Function" in text


def test_checks_feeds_on_every_call():
    f = sg.function(x * 2.0, backend="numpy")
    f(x=np.ones(3, np.float32))
    with pytest.raises(ValueError, match="missing input"):
        f()
    with pytest.raises(TypeError, match="'x'"):
        f(x="abc")
    with pytest.raises(ValueError, match="missing input: 'x'.*did you mean 'xs'"):
        f(xs=np.ones(3, np.float32))  # a misspelt name: x is missing, xs is not used
    np.testing.assert_array_equal(f(x=np.ones(3, np.float32), y=np.ones(3, np.float32)),
                                  [2.0, 2.0, 2.0])  # y is not used: ignored
    np.testing.assert_array_equal(f(x=np.ones(2, np.float32)), [2.0, 2.0])


def test_unknown_backend_lists_the_valid_ones():
    with pytest.raises(ValueError) as info:
        sg.function(x, backend="tpu")
    msg = str(info.value)
    assert "'tpu'" in msg and "'numpy'" in msg and "'llvm'" in msg and "'cuda'" in msg


def test_duplicate_input_names_are_refused_when_building():
    with pytest.raises(ValueError, match="'x'"):
        sg.function(x + sg.input("x", dtype="float64"), backend="numpy")


def test_function_matches_evaluate():
    w = sg.param("w", init=0.75)
    outs = [sg.exp(w * x) - y, sg.mean(X, axis=0)]
    r = np.random.default_rng(0)
    feeds = {"x": r.standard_normal(4).astype(np.float32),
             "y": r.standard_normal(4).astype(np.float32),
             "X": r.standard_normal((4, 2)).astype(np.float32)}
    got = sg.function(outs, backend="numpy")(**feeds)
    np.testing.assert_allclose(got[0], np.exp(0.75 * feeds["x"]) - feeds["y"], rtol=1e-6)
    np.testing.assert_allclose(got[1], feeds["X"].mean(axis=0), rtol=1e-6)
    for a, c in zip(got, sg.evaluate(outs, **feeds)):
        np.testing.assert_array_equal(a, c)
