"""What the per-call fast paths of a compiled call must keep: the feed check's fast path
refuses everything the full check refuses, the scratch reused from call to call never shows
in a result (outputs are fresh arrays, several Python threads may call one function at
once), and a step's hyperparameters and commits behave as before."""

from __future__ import annotations

import signal
import threading
import warnings

import numpy as np
import pytest

import symgrad as sg
from symgrad.expr.evaluate import FeedChecker
from symgrad.runtime import llvm_function
from symgrad.runtime.signals import deferred_signals

X = sg.input("X", ("N", 5))
y = sg.input("y", ("N",), dtype="int32")
W = sg.param("W", init=np.linspace(-1, 1, 15, dtype=np.float32).reshape(5, 3))
b = sg.param("b", init=np.array([0.1, -0.2, 0.3], np.float32))
LOGITS = X @ W + b
LOSS = sg.mean(sg.cross_entropy(LOGITS, y))
# a mean (a pass with a scalar partial), a matmul gradient (a transposed partial), a mean
# over the batch of a vector, and an elementwise output
OUTPUTS = [LOSS, sg.grad(LOSS, W), sg.mean(LOGITS, axis=0), sg.tanh(LOGITS)]


def _batch(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"X": rng.standard_normal((n, 5)).astype(np.float32),
            "y": rng.integers(0, 3, n).astype(np.int32)}


def _check(results, feeds) -> None:
    for got, want in zip(results, sg.evaluate(OUTPUTS, **feeds)):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6)


def _error(fn, **feeds) -> tuple[type, str]:
    with pytest.raises((TypeError, ValueError)) as e:
        fn(**feeds)
    return type(e.value), str(e.value)


# -- feeds: the fast path refuses what the full check refuses ---------------------------

BAD_FEEDS = {
    "wrong shape": lambda g: dict(g, X=np.ones((4, 6), np.float32)),
    "wrong rank": lambda g: dict(g, X=np.ones(4, np.float32)),
    "wrong dtype kind": lambda g: dict(g, y=g["y"].astype(np.float32)),
    "labels that do not fit": lambda g: dict(g, y=np.array([0, 1, 2, 2**40], np.int64)),
    "a batch that disagrees": lambda g: dict(g, y=g["y"][:3]),
    "missing input": lambda g: {"X": g["X"]},
    "a typo": lambda g: {"X": g["X"], "yy": g["y"]},  # y missing, yy not used
    "a string": lambda g: dict(g, X="not an array"),
}


@pytest.mark.parametrize("case", sorted(BAD_FEEDS))
def test_a_bad_feed_after_good_calls_raises_the_full_checks_error(case):
    f = sg.function(OUTPUTS)
    good = _batch(4, 0)
    for _ in range(3):  # the fast path has remembered these feeds
        _check(f(**good), good)
    bad = BAD_FEEDS[case](good)
    assert _error(f, **bad) == _error(lambda **kw: sg.evaluate(OUTPUTS, **kw), **bad)
    _check(f(**good), good)  # and good feeds still pass


def test_the_fast_path_returns_what_the_full_check_returns():
    check = FeedChecker(sg.function(OUTPUTS)._compiled.inputs, frozenset({"N"}))
    good = _batch(6, 1)
    first = check(good)
    again = check(dict(good))  # the fast path
    assert again == first and all(again[0][k] is good[k] for k in good)
    # converted feeds (a list, float64 for float32) take the full check every time and
    # are not remembered: the next call's arrays are its own
    listed = dict(good, X=good["X"].astype(np.float64).tolist())
    arrays, sizes = check(listed)
    assert arrays["X"].dtype == np.float32 and sizes == {"N": 6}
    other = _batch(6, 2)
    arrays, _ = check(other)
    assert arrays["X"] is other["X"] and arrays["y"] is other["y"]


def test_feeds_of_the_same_shape_but_another_layout_or_type_give_the_reference():
    f = sg.function(OUTPUTS)
    good = _batch(8, 3)
    _check(f(**good), good)
    strided = {"X": np.asfortranarray(good["X"]), "y": good["y"][::-1]}  # not C-contiguous
    _check(f(**strided), strided)
    as_int64 = dict(good, y=good["y"].astype(np.int64))  # converted, range-checked
    _check(f(**as_int64), as_int64)
    listed = {"X": good["X"].tolist(), "y": good["y"].tolist()}
    _check(f(**listed), good)


# -- scratch reuse: results are the caller's own -------------------------------------------

def test_results_are_fresh_arrays_every_call():
    f = sg.function(OUTPUTS)
    first_feeds, second_feeds = _batch(5, 4), _batch(5, 5)
    first = f(**first_feeds)
    kept = [a.copy() for a in first]
    second = f(**second_feeds)
    for a, k, s in zip(first, kept, second):
        np.testing.assert_array_equal(a, k)  # the second call wrote none of them
        assert not np.shares_memory(a, s)
    _check(second, second_feeds)


def test_sizes_that_change_between_calls_reuse_nothing_stale():
    f = sg.function(OUTPUTS)
    for seed, n in enumerate([1, 7, 1, 300, 7, 64, 1, 300]):
        feeds = _batch(n, seed)
        _check(f(**feeds), feeds)


def test_a_second_call_with_the_same_sizes_builds_no_scratch(monkeypatch):
    f = sg.function(OUTPUTS)
    built = []
    real = llvm_function.LLVMFunction._scratch
    monkeypatch.setattr(llvm_function.LLVMFunction, "_scratch",
                        lambda self, *args: built.append(1) or real(self, *args))
    for seed in range(3):
        f(**_batch(9, seed))
    f(**_batch(4, 0))
    assert len(built) == 2  # one per set of sizes


def test_a_mean_over_no_samples_is_nan_without_a_warning():
    x = sg.input("x", ("N", 3))
    f = sg.function([sg.mean(x), sg.mean(x, axis=0)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(2):
            whole, columns = f(x=np.ones((0, 3), np.float32))
            assert np.isnan(whole) and np.isnan(columns).all() and columns.shape == (3,)
            np.testing.assert_array_equal(f(x=np.ones((2, 3), np.float32))[1], [1, 1, 1])


@pytest.mark.parametrize("split", [False, True])
def test_one_function_called_from_several_python_threads(split, monkeypatch):
    """Each call needs its own scratch: a call that finds it taken builds another. Every
    result of every thread is checked against the reference."""
    f = sg.function(OUTPUTS)
    before = sg.get_num_threads()
    if split:  # each pass also split across the runtime's own pool
        monkeypatch.setattr(llvm_function, "MIN_WORK_PER_THREAD", 1)
        sg.set_num_threads(2)
    feeds = [_batch(n, seed) for seed, n in enumerate([300, 129, 300, 1, 129, 300] * 3)]
    wants = [sg.evaluate(OUTPUTS, **fd) for fd in feeds]
    start, failures = threading.Barrier(6), []

    def work(t: int) -> None:
        start.wait()
        for k in range(30):
            i = (t + k) % len(feeds)
            try:
                for got, want in zip(f(**feeds[i]), wants[i]):
                    np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6)
            except Exception as exc:  # reported by the main thread
                failures.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sg.set_num_threads(before)
    assert not failures, failures[0]


def test_outputs_not_committed_are_returned_as_the_callers_own():
    """A gate that says no commits nothing and returns the new values: arrays that no
    later call writes (they are computed in the reused arena when committed)."""
    x = sg.input("x")
    w = sg.param("w", init=np.array([1.0, 2.0], np.float32))
    loss = sg.sum(x) * sg.sum(w)
    new_w = w - 0.5 * sg.grad(loss, w)
    f = sg.function([loss, new_w])
    commit = {1: w.arg}
    first = f.run({"x": np.array([1.0, 3.0], np.float32)}, commit, gate=lambda r: False)
    kept = first[1].copy()
    np.testing.assert_array_equal(kept, [-1.0, 0.0])
    second = f.run({"x": np.array([2.0, 0.0], np.float32)}, commit, gate=lambda r: True)
    assert second[1] is None
    np.testing.assert_array_equal(w.value, [0.0, 1.0])  # committed: 1 - 0.5 * 2
    np.testing.assert_array_equal(first[1], kept)  # the committing call did not touch it
    third = f.run({"x": np.array([4.0, 0.0], np.float32)}, commit, gate=lambda r: False)
    np.testing.assert_array_equal(third[1], [-2.0, -1.0])
    np.testing.assert_array_equal(first[1], kept)
    np.testing.assert_array_equal(w.value, [0.0, 1.0])


def test_labels_out_of_range_after_good_calls_raise_the_references_error():
    f = sg.function(LOSS)
    for n in (4, 100):  # a few labels (checked as Python ints) and many
        good = _batch(n, n)
        f(**good)
        for bad_label in (-1, 3, -(2**31)):
            bad = dict(good, y=good["y"].copy())
            bad["y"][n // 2] = bad_label
            assert _error(f, **bad) == _error(lambda **kw: sg.evaluate(LOSS, **kw), **bad)
        f(**good)
    labels = sg.input("labels", ("N", 2), dtype="int32")  # labels of two dimensions
    count = sg.sum(sg.one_hot(labels, 3))
    g = sg.function(count)
    for n in (2, 40):
        assert g(labels=np.full((n, 2), 2, np.int32)) == 2 * n
        for bad_label in (-1, 3):
            bad = np.zeros((n, 2), np.int32)
            bad[-1, 1] = bad_label
            assert _error(g, labels=bad) == _error(
                lambda **kw: sg.evaluate(count, **kw), labels=bad)


# -- steps ------------------------------------------------------------------------------

def test_a_step_follows_changes_of_its_hyperparameters():
    """SGD against NumPy, with the learning rate changed (to -0.0 and back, too) between
    steps: each step uses the value set before it."""
    w = sg.param("w", init=np.array([-0.0, 1.0, -2.0], np.float32))
    x = sg.input("x", ("N", 3))
    step = sg.compile_step(sg.mean(sg.sum(x * w, axis=1) ** 2), sg.optim.SGD(lr=0.1))
    want = w.value.copy()
    rng = np.random.default_rng(0)
    for lr in (0.1, 0.1, 0.05, 0.0, -0.0, 0.0, 0.2, 0.2):
        step.optimizer.lr = lr
        xs = rng.standard_normal((4, 3)).astype(np.float32)
        grad = 2 * (xs @ want)[:, None] * xs
        want = (want - np.float32(lr) * grad.mean(axis=0)).astype(np.float32)
        step(x=xs)
        np.testing.assert_allclose(w.value, want, rtol=1e-5, atol=1e-6)
    assert np.signbit(step._hyper["lr"].arg.value) == np.signbit(0.2)


def test_a_step_with_a_skipped_batch_writes_nothing_and_goes_on():
    x = sg.input("x", ("N", 3))
    w = sg.param("w", init=np.ones(3, np.float32))
    step = sg.compile_step(sg.mean(sg.sum(x * w, axis=1) ** 2), sg.optim.Adam(lr=0.1),
                           on_nonfinite="skip")
    twin_w = sg.param("w", init=np.ones(3, np.float32))
    twin = sg.compile_step(sg.mean(sg.sum(x * twin_w, axis=1) ** 2), sg.optim.Adam(lr=0.1))
    good = np.arange(6, dtype=np.float32).reshape(2, 3)
    bad = good.copy()
    bad[0, 0] = np.inf
    for batch in (good, bad, good, bad, bad, good):
        step(x=batch)
        if batch is good:
            twin(x=batch)
        np.testing.assert_array_equal(w.value, twin_w.value)
    assert step.skipped == 3 and step.step_count == twin.step_count == 3


# -- signals ------------------------------------------------------------------------------

def test_deferred_signals_deliver_once_after_the_outer_block_and_restore_the_handler():
    seen = []

    def handler(signum, frame):
        seen.append(signum)

    before = signal.signal(signal.SIGINT, handler)
    try:
        with deferred_signals():
            with deferred_signals():
                signal.raise_signal(signal.SIGINT)
            assert seen == []  # the inner block ends: still held
            signal.raise_signal(signal.SIGINT)
            assert seen == []
        assert seen == [signal.SIGINT]  # the first one, once
        assert signal.getsignal(signal.SIGINT) is handler
        signal.raise_signal(signal.SIGINT)  # outside a block: at once
        assert seen == [signal.SIGINT] * 2
    finally:
        signal.signal(signal.SIGINT, before)


def test_deferred_signals_in_another_thread_change_nothing():
    handlers = []

    def work() -> None:
        with deferred_signals():
            handlers.append(signal.getsignal(signal.SIGINT))

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert handlers == [signal.getsignal(signal.SIGINT)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_means_of_exact_sums_equal_the_reference_exactly(dtype):
    """Sums of small integers are exact in every order, so the mean is one rounded
    division: one thread's partial divided in place must give the reference's bits."""
    x = sg.input("x", ("N", 3), dtype=dtype)
    f = sg.function([sg.mean(x), sg.mean(x, axis=0), sg.mean(x * 2.0)])
    rng = np.random.default_rng(7)
    for n in [1, 3, 7, 10, 33, 1, 49]:
        xs = rng.integers(-5, 6, (n, 3)).astype(dtype)
        for got, want in zip(f(x=xs), sg.evaluate(f.outputs, x=xs)):
            assert got.dtype == want.dtype
            np.testing.assert_array_equal(got, want)
