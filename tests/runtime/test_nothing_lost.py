"""Nothing wrong, nothing lost: non-finite steps, snapshots of values, all-or-nothing
commits, configuration that cannot silently disagree with the compiled code, and compiled
results equal to the reference where user names or computed values could confuse them."""

from __future__ import annotations

import os
import signal
import threading

import numpy as np
import pytest

import symgrad as sg
from symgrad.runtime import compiled


def _regression(backend: str, optimizer=None, **kw):
    X = sg.input("X", shape=("N", 3))
    y = sg.input("y")
    W = sg.param("W", init=np.array([0.5, -0.25, 1.0], np.float32))
    b = sg.param("b", init=0.1)
    loss = sg.mean((X @ W + b - y) ** 2)
    step = sg.compile_step(loss, optimizer or sg.optim.Adam(lr=0.01), backend=backend, **kw)
    rng = np.random.default_rng(0)
    batch = {"X": rng.normal(size=(64, 3)).astype(np.float32),
             "y": rng.normal(size=64).astype(np.float32)}
    return step, (W, b), batch


def _state(step, params):
    return ([p.value for p in params], {k: dict(v) for k, v in step.optimizer_state.items()},
            step.step_count)


def _same_state(a, b) -> None:
    for x, y in zip(a[0], b[0]):
        np.testing.assert_array_equal(x, y)
    for name in a[1]:
        for k in a[1][name]:
            np.testing.assert_array_equal(a[1][name][k], b[1][name][k])
    assert a[2] == b[2]


# -- non-finite steps ---------------------------------------------------------------------

def test_a_nan_in_the_batch_raises_and_writes_nothing(backend):
    step, params, batch = _regression(backend)
    step(**batch)
    before = _state(step, params)
    bad = dict(batch, X=batch["X"].copy())
    bad["X"][5, 1] = np.nan
    with pytest.raises(sg.NonFiniteError, match="loss is nan.*gradient of 'W'.*Nothing was") as e:
        step(**bad)
    assert e.value.params == ["W", "b"] and np.isnan(e.value.loss)
    _same_state(before, _state(step, params))
    step(**batch)  # and training goes on
    assert step.step_count == 2


def test_an_infinite_gradient_with_a_finite_loss_is_named(backend):
    x = sg.input("x")
    w = sg.param("w", init=0.0)
    v = sg.param("v", init=1.0)
    loss = sg.mean(sg.sqrt(w * w * x) + v * x)  # d/dw sqrt(w^2 x) at w = 0 is nan
    step = sg.compile_step(loss, sg.optim.SGD(lr=0.1), backend=backend)
    with pytest.raises(sg.NonFiniteError, match="gradient of 'w'") as e:
        step(x=np.ones(4, np.float32))
    assert e.value.params == ["w"] and np.isfinite(e.value.loss)
    assert w.value == 0.0 and v.value == 1.0 and step.step_count == 0


def test_skip_counts_and_apply_writes(backend):
    step, params, batch = _regression(backend, on_nonfinite="skip")
    bad = dict(batch, y=batch["y"].copy())
    bad["y"][0] = np.inf
    before = _state(step, params)
    assert np.isnan(step(**bad)) or np.isinf(step(**bad))
    assert step.skipped == 2
    _same_state(before, _state(step, params))
    step(**batch)
    assert step.step_count == 1 and step.skipped == 2
    step.on_nonfinite = "apply"
    step(**bad)
    assert not np.isfinite(params[0].value).all() and step.step_count == 2
    with pytest.raises(ValueError, match="on_nonfinite must be one of"):
        step.on_nonfinite = "ignore"


# -- values that stay put -----------------------------------------------------------------

def test_value_is_a_snapshot(backend):
    step, (W, b), batch = _regression(backend)
    history = []
    for _ in range(3):
        history.append(W.value)
        step(**batch)
    assert not np.array_equal(history[0], history[1])
    assert not np.array_equal(history[1], history[2])
    state = step.optimizer_state["W"]["exp_avg"]
    step(**batch)
    assert not np.array_equal(state, step.optimizer_state["W"]["exp_avg"])
    with pytest.raises(ValueError, match="read-only"):
        W.value[0] = 1.0
    W.value = [1.0, 2.0, 3.0]  # assignment is how a value is set
    np.testing.assert_array_equal(W.value, [1, 2, 3])


def test_replacing_the_optimizer_is_refused():
    step, _, batch = _regression("llvm", sg.optim.SGD(lr=0.1))
    with pytest.raises(AttributeError, match="compile_step.*step.optimizer.lr"):
        step.optimizer = sg.optim.Adam()
    assert isinstance(step.optimizer, sg.optim.SGD)
    step.optimizer.lr = 0.05  # hyperparameters still change in place
    step(**batch)


# -- all-or-nothing commits ---------------------------------------------------------------

@pytest.mark.parametrize("position", range(4))
def test_ctrl_c_during_a_commit_tears_nothing(position, monkeypatch):
    """SIGINT raised in the middle of writing the new values: every value of the step is
    written (and the step counted) before the KeyboardInterrupt arrives."""
    step, params, batch = _regression("llvm")
    twin, twin_params, _ = _regression("llvm")
    step._gate_zero = None  # the commit made in Python (a GPU parameter's, say)
    copyto = np.copyto
    calls = []

    def interrupted_copyto(dst, src, **kw):
        calls.append(1)
        if len(calls) == position + 1:
            signal.raise_signal(signal.SIGINT)  # delivered after the commit, not here
        return copyto(dst, src, **kw)

    monkeypatch.setattr(compiled.np, "copyto", interrupted_copyto)
    with pytest.raises(KeyboardInterrupt):
        step(**batch)
    monkeypatch.setattr(compiled.np, "copyto", copyto)
    assert len(calls) > position
    twin(**batch)
    _same_state(_state(twin, twin_params), _state(step, params))
    assert step.step_count == 1


def test_ctrl_c_during_a_native_step_tears_nothing():
    """SIGINT from another thread while the native entry runs (a pass of tens of ms) and
    commits: the KeyboardInterrupt arrives after it, with every value written."""
    def model():
        X = sg.input("X", shape=("N", 64))
        W = sg.param("W", init=np.full(64, 0.01, np.float32))
        loss = sg.mean(sg.tanh(sg.tanh(X @ W)) ** 2)
        return sg.compile_step(loss, sg.optim.Adam(lr=0.01)), W

    (step, W), (twin, twin_W) = model(), model()
    batch = {"X": np.linspace(-1, 1, 400_000 * 64, dtype=np.float32).reshape(-1, 64)}
    compiled = step._function._compiled
    entry, entered = compiled._entry, []

    def entry_interrupted(*args):
        timer = threading.Timer(0.005, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        entered.append(True)
        try:
            entry(*args)
        finally:  # the signal lands in this call (in the entry or right after it), never
            timer.join()  # later in the test session

    compiled._entry = entry_interrupted
    with pytest.raises(KeyboardInterrupt):
        step(**batch)
    compiled._entry = entry
    assert entered
    twin(**batch)
    _same_state(_state(twin, [twin_W]), _state(step, [W]))
    assert step.step_count == 1 and not np.array_equal(W.value, np.full(64, 0.01))


# -- parameters from arrays, several at once -------------------------------------------

def test_params_take_one_init_per_name():
    w1, w2, b = sg.params("w1 w2 b", init=[5, 8, -2])
    assert (w1.shape, w2.shape, b.shape) == ((), (), ())
    assert (float(w1.value), float(w2.value), float(b.value)) == (5.0, 8.0, -2.0)
    a, c = sg.params("a c", init=np.zeros(3))  # an array is every parameter's init
    assert a.shape == c.shape == (3,)
    with pytest.raises(ValueError, match="one init per name.*2 names.*3"):
        sg.params("p q", init=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="ambiguous"):
        sg.params("p q", shape=(2,), init=[0.1, 0.2])
    p, q = sg.params("p q", shape=(2,), init=[[1.0, 2.0], 3.0])
    np.testing.assert_array_equal(p.value, [1, 2])
    np.testing.assert_array_equal(q.value, [3, 3])


def test_a_param_takes_the_dtype_of_an_array_init():
    rng = np.random.default_rng(0)
    W = sg.param("W", init=rng.normal(size=(4, 2)))
    assert W.dtype == np.float64 and W.value.dtype == np.float64
    assert sg.param("v", init=np.ones(3, np.float32)).dtype == np.float32
    assert sg.param("s", init=0.5).dtype == np.float32          # a number: float32
    assert sg.param("l", init=[1.0, 2.0]).dtype == np.float32   # a list: float32
    assert sg.param("g", shape=(2, 2), init=sg.init.normal(seed=0)).dtype == np.float32
    assert sg.param("e", init=rng.normal(size=3), dtype="float32").dtype == np.float32


# -- user names and computed values the compiled code must respect --------------------------

def test_user_names_never_meet_generated_names(backend):
    rng = np.random.default_rng(3)
    X = sg.input("out0", shape=("N", 3))
    y = sg.input("s1")
    W = sg.param("out1", init=rng.normal(size=3).astype(np.float32))
    b = sg.param("partial2", init=0.1)
    n_ = sg.param("n", init=0.3)
    w0, w, w_ = sg.param("w_0", init=1.0), sg.param("w", init=2.0), sg.param("w", init=3.0)
    h = sg.tanh(X @ W + b)
    loss = sg.mean((h * w0 + w * h ** 2 + w_ + n_ - y) ** 2)
    feeds = {"out0": rng.normal(size=(40, 3)).astype(np.float32),
             "s1": rng.normal(size=40).astype(np.float32)}
    outs = [loss, *sg.grad(loss, [W, b, n_, w0, w, w_])]
    got = sg.function(outs, backend=backend)(**feeds)
    for g, r in zip(got, sg.evaluate(outs, **feeds)):
        np.testing.assert_allclose(g, r, rtol=2e-5, atol=1e-6)
    step = sg.compile_step(loss, sg.optim.SGD(lr=0.01), backend=backend)
    value = step(**feeds)
    assert np.isfinite(value) and value == pytest.approx(float(got[0]), rel=1e-5)


def test_one_hot_of_computed_labels_is_checked(backend):
    labels = sg.input("labels", dtype="int32")
    x = sg.input("x")
    out = sg.sum(sg.one_hot(labels + 1, 4) * x.reshape(("N", 1)), axis=0)
    f = sg.function(out, backend=backend)
    x_ = np.arange(3, dtype=np.float32)
    np.testing.assert_array_equal(f(labels=np.array([0, 1, 2], np.int32), x=x_), [0, 0, 1, 2])
    with pytest.raises(ValueError, match=r"one_hot: labels must lie in \[0, 4\)"):
        f(labels=np.array([0, 1, 3], np.int32), x=x_)
    with pytest.raises(ValueError, match="one_hot"):
        f(labels=np.array([-2, 1, 1], np.int32), x=x_)


def test_distinct_outputs_are_distinct_arrays(backend):
    x = sg.input("x")
    loss = sg.sum(x * 2)
    a, b = sg.function([loss, loss], backend=backend)(x=np.ones(3, np.float32))
    assert a is not b and a == b == 6


def test_ctrl_c_during_a_threaded_pass_waits_for_the_workers(monkeypatch):
    """The workers write into this call's partials and arena: a KeyboardInterrupt must not
    free them while a worker still runs (it segfaulted)."""
    from symgrad.runtime import llvm_function

    monkeypatch.setattr(llvm_function, "MIN_WORK_PER_THREAD", 1)
    before = sg.get_num_threads()
    sg.set_num_threads(2)
    X = sg.input("X", shape=("N", 32))
    W = sg.param("W", init=np.full((32, 32), 0.01, np.float32))
    h = X
    for _ in range(4):
        h = sg.tanh(h @ W)
    f = sg.function(sg.sum(h, axis=1))
    Xs = np.ones((200_000, 32), np.float32)
    real_pool, finished = llvm_function._thread_pool(), []

    class InterruptingPool:
        threads, run_address = real_pool.threads, real_pool.run_address

        def hold(self):
            # Ctrl-C from another thread while the workers run
            threading.Timer(0.001, os.kill, (os.getpid(), signal.SIGINT)).start()
            return real_pool.hold()

        def release(self):
            real_pool.release()
            finished.append(True)  # every slice was done before anything else ran

    monkeypatch.setattr(llvm_function, "_thread_pool", lambda: InterruptingPool())
    try:
        with pytest.raises(KeyboardInterrupt):
            for _ in range(50):  # (the timer may fire after a short run: try again)
                f(X=Xs)
        assert finished
        monkeypatch.undo()
        monkeypatch.setattr(llvm_function, "MIN_WORK_PER_THREAD", 1)
        np.testing.assert_allclose(f(X=Xs[:1000]), sg.evaluate(f.outputs[0], X=Xs[:1000]),
                                   rtol=1e-5)
    finally:
        sg.set_num_threads(before)


def test_an_update_that_overflows_with_a_finite_gradient_raises(backend):
    """Adam with eps=0 divides 0 by 0 where a gradient is exactly zero: the gradient is
    finite, the new value is not."""
    x = sg.input("x")
    w = sg.param("w", init=np.ones(2, np.float32))
    step = sg.compile_step(sg.mean(x) * w[0], sg.optim.Adam(lr=0.1, eps=0.0), backend=backend)
    with pytest.raises(sg.NonFiniteError, match="the update of 'w'") as e:
        step(x=np.ones(3, np.float32))
    assert e.value.params == ["w"]
    np.testing.assert_array_equal(w.value, [1.0, 1.0])
    assert step.step_count == 0


def test_fit_checks_the_checkpoint_folder_first_and_keeps_the_history(tmp_path):
    step, _, batch = _regression("llvm")
    with pytest.raises(FileNotFoundError, match="no_such_folder.*before training"):
        sg.fit(step, batch, epochs=1, batch_size=16,
               checkpoint=str(tmp_path / "no_such_folder" / "run.safetensors"))
    assert step.step_count == 0
    bad = dict(batch, y=batch["y"].copy())
    bad["y"][40] = np.nan  # the third batch of 16
    with pytest.raises(sg.NonFiniteError) as e:
        sg.fit(step, bad, epochs=1, batch_size=16, shuffle=False, progress=False)
    assert len(e.value.history.step_loss) == 2 and step.step_count == 2


@pytest.mark.parametrize("build", [lambda b: b - b, lambda b: -b, lambda b: sg.sign(b)])
def test_bool_operations_numpy_refuses_are_refused_when_built(build):
    x = sg.input("x")
    with np.testing.assert_raises(TypeError):  # NumPy itself
        build(np.array([True, False]))
    with pytest.raises(TypeError, match="NumPy has no .* of bool arrays; cast first"):
        build(x > 0)
    assert build(sg.cast(x > 0, "int32")).dtype == np.int32
