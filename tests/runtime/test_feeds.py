"""Feeds: a dict works where keywords do (TF1's ``feed_dict``), inputs a graph does not use
may be fed and are ignored, a misspelt name is a missing input that names the closest unused
feed, and ``sg.params_of``. Every backend must agree with the reference."""

from __future__ import annotations

import numpy as np
import pytest

import symgrad as sg

x, y, z = sg.inputs("x y z")


def _data(n: int = 5, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.normal(size=n).astype(np.float32) for k in ("x", "y", "z")}


def _linreg():
    w, b = sg.params("w b", init=0.0)
    return sg.mean((w * x + b - y) ** 2), [w, b]


# -- a feed dict where keywords go -----------------------------------------------------------

def test_evaluate_takes_a_feed_dict_keywords_or_both():
    e = x * 2.0 + y
    d = _data()
    want = d["x"] * 2 + d["y"]
    np.testing.assert_array_equal(sg.evaluate(e, d), want)
    np.testing.assert_array_equal(sg.evaluate(e, {"x": d["x"]}, y=d["y"]), want)
    np.testing.assert_array_equal(sg.evaluate(e, {x: d["x"], y: d["y"]}), want)  # node keys
    np.testing.assert_array_equal(sg.evaluate(e, x=d["x"], y=d["y"]), want)


@pytest.mark.parametrize("backend", ["llvm", "numpy"])
def test_a_function_takes_a_feed_dict_keywords_or_both(backend):
    f = sg.function([x * 2.0 + y, sg.sum(x)], backend=backend)
    d = _data()
    want = sg.evaluate([x * 2.0 + y, sg.sum(x)], d)
    for got in (f(d), f({"x": d["x"]}, y=d["y"]), f({x: d["x"], "y": d["y"]}),
                f(x=d["x"], y=d["y"]), f(d)):
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-6)


@pytest.mark.parametrize("how", ["evaluate", "llvm", "numpy", "step", "step.evaluate"])
def test_a_name_in_both_the_dict_and_the_keywords_is_refused_naming_it(how):
    loss, _ = _linreg()
    d = _data()
    call = {"evaluate": lambda *a, **k: sg.evaluate(loss, *a, **k),
            "llvm": sg.function(loss, backend="llvm"),
            "numpy": sg.function(loss, backend="numpy"),
            "step": sg.compile_step(loss, sg.optim.SGD(lr=0.1), backend="numpy"),
            "step.evaluate": sg.compile_step(loss, sg.optim.SGD(lr=0.1),
                                             backend="numpy").evaluate}[how]
    with pytest.raises(ValueError, match=r"input 'y' given both in the feed dict and as a "
                                         r"keyword"):
        call(d, y=d["y"])
    with pytest.raises(ValueError, match=r"inputs 'x', 'y' given both"):
        call(d, x=d["x"], y=d["y"])
    with pytest.raises(TypeError, match="expected a dict of arrays by input name, got list"):
        call([d["x"], d["y"]])
    with pytest.raises(TypeError, match="keys are input names or inputs"):
        call({1: d["x"], "y": d["y"]})
    with pytest.raises(ValueError, match="'x' is in the feed dict twice"):
        call({"x": d["x"], x: d["x"], "y": d["y"]})


def test_an_input_named_like_the_dict_argument_is_still_a_keyword():
    feeds, batch = sg.inputs("feeds batch")
    a = np.arange(3, dtype=np.float32)
    assert sg.evaluate(sg.sum(feeds), feeds=a) == 3.0
    assert sg.function(sg.sum(feeds), backend="numpy")(feeds=a) == 3.0
    w = sg.param("w", init=1.0)
    step = sg.compile_step(sg.mean((w * batch) ** 2), sg.optim.SGD(lr=0.1), backend="numpy")
    assert step(batch=a) == pytest.approx(np.mean(a**2))
    assert step.evaluate(batch=a) == pytest.approx(float(sg.evaluate(step.loss, batch=a)))


@pytest.mark.parametrize("backend", ["llvm", "numpy"])
def test_steps_called_with_dicts_train_exactly_as_with_keywords(backend):
    loss, params = _linreg()
    batches = [_data(8, s) for s in range(4)]
    by_keyword = sg.compile_step(loss, sg.optim.Adam(lr=0.05), backend=backend)
    losses = [by_keyword(**b) for b in batches]
    after = [p.value for p in params]
    for p in params:
        p.value = 0.0
    by_dict = sg.compile_step(loss, sg.optim.Adam(lr=0.05), backend=backend)
    assert [by_dict(b) for b in batches] == losses
    for p, want in zip(params, after):
        np.testing.assert_array_equal(p.value, want)
    assert by_dict.evaluate(batches[0]) == by_keyword.evaluate(**batches[0])


# -- inputs the graph does not use -----------------------------------------------------------

def test_a_derivative_that_no_longer_needs_an_input_takes_the_same_data():
    f = sg.sum(x * z + y)
    d = _data()
    g = sg.grad(f, z)  # x: no z, no y
    np.testing.assert_array_equal(sg.evaluate(g, **d), d["x"])
    np.testing.assert_array_equal(sg.evaluate(g, d), d["x"])


@pytest.mark.parametrize("backend", ["llvm", "numpy"])
def test_a_hessian_without_the_targets_takes_the_full_data_dict(backend):
    loss, (w, b) = _linreg()
    h = sg.hessian(loss, w)  # 2*mean(x**2): y is not used
    d = _data(6)
    want = 2 * np.mean(d["x"].astype(np.float64) ** 2)
    np.testing.assert_allclose(sg.evaluate(h, d), want, rtol=1e-6)
    f = sg.function([loss, h], backend=backend)
    for _ in range(3):  # the compiled fast path too
        got = f(d)
        np.testing.assert_allclose(got[1], want, rtol=1e-6)
        np.testing.assert_allclose(got[0], sg.evaluate(loss, d), rtol=1e-6)


def test_every_backend_ignores_unused_feeds(backend):
    e = [sg.sum(x * 3.0), x - 1.0]
    d = dict(_data(), unused=np.zeros((2, 2), np.int64), note="a string")
    f = sg.function(e, backend=backend)
    for _ in range(2):
        for got, want in zip(f(d), sg.evaluate(e, x=d["x"])):
            np.testing.assert_allclose(got, want, rtol=1e-6)


def test_fit_with_extra_columns_trains_exactly_as_without():
    loss, params = _linreg()
    rng = np.random.default_rng(1)
    data = _data(40, 2)
    extra = dict(data, sample_id=np.arange(40), weight=rng.random(40))
    runs = []
    for d in (data, extra):
        for p in params:
            p.value = 0.0
        step = sg.compile_step(loss, sg.optim.SGD(lr=0.1), backend="llvm")
        history = sg.fit(step, d, epochs=2, batch_size=8, seed=3, progress=False,
                         validation=d)
        runs.append((history.step_loss, history.validation_loss, [p.value for p in params]))
    assert runs[0][:2] == runs[1][:2]
    for a, b in zip(runs[0][2], runs[1][2]):
        np.testing.assert_array_equal(a, b)


# -- a misspelt name -------------------------------------------------------------------------

def _error(call, *args, **kwargs) -> tuple[type, str]:
    with pytest.raises((TypeError, ValueError)) as info:
        call(*args, **kwargs)
    return type(info.value), str(info.value)


@pytest.mark.parametrize("backend", ["llvm", "numpy"])
def test_a_typo_is_a_missing_input_naming_the_fed_name(backend):
    labels = sg.input("labels", dtype="int32")
    X = sg.input("X", shape=("N", 3))
    W = sg.param("W", shape=(3, 4), init=0.1)
    loss = sg.cross_entropy(X @ W, labels)
    good = {"X": np.ones((2, 3), np.float32), "labels": np.array([1, 2], np.int32)}
    typo = {"X": good["X"], "label": good["labels"]}
    kind, message = _error(sg.evaluate, loss, typo)
    assert kind is ValueError
    assert message == ("missing input: 'labels' (int32 (N,); did you mean 'label', which "
                       "was fed but is not used?)")
    f = sg.function(loss, backend=backend)
    for _ in range(2):
        f(good)  # the compiled fast path has remembered these feeds
    assert _error(f, typo) == (kind, message)
    step = sg.compile_step(loss, sg.optim.SGD(lr=0.1), backend=backend)
    assert _error(step, typo) == (kind, message)
    assert step.step_count == 0 and np.all(W.value == np.float32(0.1))


# -- sg.params_of ----------------------------------------------------------------------------

def test_params_of_lists_each_parameter_once_in_graph_order():
    w, b, unused = sg.params("w b unused", init=1.0)
    loss = sg.mean((w * x + b - y) ** 2) + 0.1 * w**2 + b
    assert sg.params_of(loss) == [w, b]
    assert sg.params_of([b * x, w * x, b]) == [b, w]
    assert sg.params_of(x * 2.0) == []
    step = sg.compile_step(loss, sg.optim.SGD(lr=0.1), backend="numpy")
    assert step.params == sg.params_of(loss)  # what a step trains by default
    with pytest.raises(TypeError, match="expected a symgrad expression"):
        sg.params_of("loss")


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_one_dtype_rule_for_lists_and_arrays(backend):
    """Integer or bool data into a float input is cast when every value is an integer the
    float dtype holds exactly (|v| <= 2**24 for float32), lists and arrays alike; beyond
    that, and float data into an integer input, is refused naming the cast to write."""
    x = sg.input("x")
    f = sg.function(x * 2, backend=backend)
    for data in ([3, 1], np.array([3, 1], np.uint8), np.array([3, 1], np.int64),
                 np.array([3, 1], np.int32), [3.0, 1.0], np.array([3.0, 1.0])):
        got = f(x=data)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, [6, 2])
    np.testing.assert_array_equal(f(x=np.array([True, False])), [2, 0])
    np.testing.assert_array_equal(f(x=[True, False]), [2, 0])
    big = 2 ** 24 + 1  # the first integer float32 does not hold
    for data in ([big, 1], np.array([big, 1], np.int32), np.array([-big], np.int64)):
        with pytest.raises(ValueError, match=r"input 'x': integer values .* a\.astype\(np\."
                                             r"float32\)"):
            f(x=data)
    f64 = sg.function(sg.input("z", dtype="float64") * 1, backend=backend)
    assert f64(z=np.array([big], np.int64))[0] == big  # exact in float64
    i = sg.input("i", dtype="int32")
    g = sg.function(i * 2, backend=backend)
    for data in ([1.5], np.array([2.0]), [2.0]):
        with pytest.raises(TypeError, match=r"input 'i'.*np\.rint\(a\)\.astype\(np\.int32\)"):
            g(i=data)
