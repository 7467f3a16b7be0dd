"""``sg.watch``: statistics reported and printed by steps and functions on every backend,
a watch scoped to the graphs built from the node it returns, one name per watch in a
graph, and a discarded watch said out loud."""

from __future__ import annotations

import gc
import re
import warnings

import numpy as np
import pytest

import symgrad as sg

RNG = np.random.default_rng(4)
XS = RNG.normal(size=(9, 6)).astype(np.float32)
LABELS = RNG.integers(0, 4, 9).astype(np.int32)
W0 = RNG.normal(size=(6, 4)).astype(np.float32)


def _model(tag: str):
    X = sg.input(f"X{tag}", shape=("N", 6))
    labels = sg.input(f"l{tag}", dtype="int32")
    W = sg.param(f"W{tag}", init=W0.copy())
    return X, labels, W


def _expected(W: np.ndarray) -> np.ndarray:
    return np.maximum(XS.astype(np.float64) @ W.astype(np.float64), 0)


def _check_stats(got: dict, h: np.ndarray) -> None:
    assert got["mean"] == pytest.approx(h.mean(), rel=1e-5)
    assert got["min"] == pytest.approx(h.min(), abs=1e-6)
    assert got["max"] == pytest.approx(h.max(), rel=1e-5)
    np.testing.assert_allclose(got["first"], h[0, :4], rtol=1e-5, atol=1e-6)


def test_a_step_prints_every_kth_call(backend, capsys):
    X, labels, W = _model("p" + backend)
    hidden = sg.watch(sg.relu(X @ W), "hidden", print_every=2)
    step = sg.compile_step(sg.cross_entropy(hidden, labels), sg.optim.SGD(lr=0.1),
                           backend=backend)
    feeds = {X.name: XS, labels.name: LABELS}
    printed = []
    for _ in range(5):
        before = W.value.copy()
        step(feeds)
        _check_stats(step.watched["hidden"], _expected(before))
        printed.append(capsys.readouterr().out)
    # calls 1, 3 and 5 print one line each, with the statistics of that call
    assert [bool(p) for p in printed] == [True, False, True, False, True]
    line = printed[4].strip()
    assert re.fullmatch(r"watch 'hidden' call 5: mean=\S+ min=\S+ max=\S+ first=\[.*\]",
                        line, re.S), line
    mean = float(re.search(r"mean=(\S+)", line).group(1))
    assert mean == pytest.approx(step.watched["hidden"]["mean"], rel=1e-5)


def test_a_function_honours_watches(backend, capsys):
    X, labels, W = _model("f" + backend)
    hidden = sg.watch(sg.relu(X @ W), "hidden", print_every=1)
    loss = sg.cross_entropy(hidden, labels)
    f = sg.function([loss, sg.sum(hidden)], backend=backend)
    value, total = f(**{X.name: XS, labels.name: LABELS})  # the outputs asked for, only
    h = _expected(W0)
    assert total == pytest.approx(h.sum(), rel=1e-5)
    assert value == pytest.approx(sg.evaluate(loss, **{X.name: XS, labels.name: LABELS}),
                                  rel=1e-5)
    _check_stats(f.watched["hidden"], h)
    assert capsys.readouterr().out.startswith("watch 'hidden' call 1: mean=")
    single = sg.function(loss, backend=backend)  # one output in, one array out
    assert np.ndim(single(**{X.name: XS, labels.name: LABELS})) == 0
    assert "hidden" in single.watched


def test_a_watch_belongs_to_the_graphs_built_from_what_it_returns():
    X, labels, W = _model("s")
    shared = sg.relu(X @ W)
    watched = sg.watch(shared, "hidden")
    mine = sg.compile_step(sg.cross_entropy(watched, labels), sg.optim.SGD(lr=0.1))
    # the same formula built again is the same node (hash-consed): no watch on it
    other = sg.compile_step(sg.cross_entropy(sg.relu(X @ W), labels), sg.optim.SGD(lr=0.1))
    feeds = {X.name: XS, labels.name: LABELS}
    mine(feeds)
    other(feeds)
    assert set(mine.watched) == {"hidden"} and other.watched == {}
    assert sg.function(sg.sum(shared)) is not None and not sg.function(
        sg.sum(shared)).watched  # (and sg.function: nothing to report)


@pytest.mark.filterwarnings("ignore:sg.watch")  # (a watch only evaluated, never compiled)
def test_the_watch_changes_no_formula():
    X, labels, W = _model("t")
    plain = sg.cross_entropy(sg.relu(X @ W), labels)
    loss = sg.cross_entropy(sg.watch(sg.relu(X @ W), "hidden"), labels)
    assert str(loss) == str(plain) and sg.latex(loss) == sg.latex(plain)
    assert sg.grad(loss, W) is sg.grad(plain, W)  # the simplifier drops the mark
    feeds = {X.name: XS, labels.name: LABELS}
    np.testing.assert_array_equal(sg.evaluate(loss, **feeds), sg.evaluate(plain, **feeds))
    np.testing.assert_array_equal(sg.evaluate(sg.grad(loss, W, simplified=False), **feeds),
                                  sg.evaluate(sg.grad(plain, W, simplified=False), **feeds))
    v = sg.input("vt")
    assert sg.to_sympy(sg.sum(sg.watch(sg.exp(v), "e"))) == sg.to_sympy(sg.sum(sg.exp(v)))
    # and with the simplifier off, the step still compiles (the watch is taken out first)
    step = sg.compile_step(loss, sg.optim.SGD(lr=0.1), passes={"simplify": False})
    step(feeds)
    assert "hidden" in step.watched


def test_two_watches_with_one_name_are_refused():
    X, labels, W = _model("n")
    a = sg.watch(sg.relu(X @ W), "z")
    b = sg.watch(X @ W, "z")
    with pytest.raises(ValueError, match=r"two watches are named 'z' in one graph: on "
                                         r"relu\(Xn@Wn\).* and on Xn@Wn"):
        sg.compile_step(sg.cross_entropy(a + b, labels), sg.optim.SGD(lr=0.1))
    with pytest.raises(ValueError, match="two watches are named 'z'"):
        sg.function([sg.sum(a), sg.sum(b)])
    # one name in separately built graphs is fine: each reports its own
    fa, fb = sg.function(sg.sum(a)), sg.function(sg.sum(b))
    fa(**{X.name: XS})
    fb(**{X.name: XS})
    assert fa.watched["z"]["min"] >= 0 > fb.watched["z"]["min"]


def test_a_discarded_watch_warns():
    X, _, W = _model("d")
    h = sg.relu(X @ W)
    with pytest.warns(UserWarning, match=r"sg.watch\(\.\.\., 'lost'\).*h = sg.watch\(h, "
                                         r"'lost'\)"):
        sg.watch(h, "lost")  # a statement: the watch node is thrown away at once
        gc.collect()
    kept = sg.watch(h, "kept")
    sg.function(sg.sum(kept))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # compiled once: going away is not a loss
        del kept
        gc.collect()


def test_bad_arguments_name_what_was_given():
    x = sg.input("x")
    with pytest.raises(TypeError, match="expected a symgrad expression, got list"):
        sg.watch([1.0], "w")
    with pytest.raises(ValueError, match="non-empty string, got ''"):
        sg.watch(x, "")
    with pytest.raises(ValueError, match="watch 'w': print_every must be a positive int.*"
                                         "got 0"):
        sg.watch(x, "w", print_every=0)
