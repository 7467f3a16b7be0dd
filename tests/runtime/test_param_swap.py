"""Large new values committed without a copy: the parameter takes the step's array
(``ParamSlot.swap``, ``llvm_function.SWAP_MIN_BYTES``) and the step writes its next new value
into the old one. Every step must still equal the NumPy reference, a failed step must change
nothing, and every other compiled function over the parameter must read its current value."""

from __future__ import annotations

import numpy as np
import pytest

import symgrad as sg
from symgrad.runtime import llvm_function

D, K = 256, 80  # W: 80 KiB of float32, over SWAP_MIN_BYTES


def _model(backend: str, optimizer=None):
    X = sg.input("X", shape=("N", D))
    labels = sg.input("labels", shape=("N",), dtype="int32")
    W = sg.param("W", init=sg.init.normal(0.0, 0.05, seed=3), shape=(D, K))
    b = sg.param("b", shape=(K,), init=0.0)
    loss = sg.mean(sg.logsumexp(X @ W + b, axis=1) - sg.take_along_axis(
        X @ W + b, labels[:, None], axis=1)[:, 0])
    step = sg.compile_step(loss, optimizer or sg.optim.Adam(lr=0.01), backend=backend)
    return step, (W, b), loss


def _batch(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"X": rng.normal(size=(n, D)).astype(np.float32),
            "labels": rng.integers(0, K, n).astype(np.int32)}


def _slots(step, params):
    return [p.arg for p in params] + [s.arg for states in step._state.values()
                                      for s in states.values()]


def test_the_swap_applies_to_large_parameters_only():
    assert D * K * 4 >= llvm_function.SWAP_MIN_BYTES > K * 4
    step, (W, b), _ = _model("llvm")
    arrays = [s._value for s in _slots(step, (W, b))]
    step(**_batch(64, 0))
    after = [s._value for s in _slots(step, (W, b))]
    large = [s.dtype.itemsize * s._value.size >= llvm_function.SWAP_MIN_BYTES
             for s in _slots(step, (W, b))]
    assert sum(large) == 3  # W and its two Adam moments
    for was, now, is_large in zip(arrays, after, large):
        assert (now is not was) == is_large
    step(**_batch(64, 1))  # the second step writes into the first step's old arrays
    again = [s._value for s in _slots(step, (W, b))]
    assert all(now is was for was, now in zip(arrays, again))  # (small: copied into)


@pytest.mark.parametrize("threads", [1, 2])
def test_swapped_steps_are_the_copied_steps_bit_for_bit(threads, monkeypatch):
    step, params, _ = _model("llvm")
    copied, copied_params, _ = _model("llvm")
    ref, ref_params, _ = _model("numpy")
    default, swap_min = sg.get_num_threads(), llvm_function.SWAP_MIN_BYTES
    sg.set_num_threads(threads)
    try:
        # batch sizes that alternate: two plans and scratches swap the same parameters
        for k, n in enumerate([64, 37, 64, 37, 1, 64]):
            batch = _batch(n, k)
            loss = step(**batch)
            monkeypatch.setattr(llvm_function, "SWAP_MIN_BYTES", 1 << 62)
            assert copied(**batch) == loss
            monkeypatch.setattr(llvm_function, "SWAP_MIN_BYTES", swap_min)
            np.testing.assert_allclose(loss, ref(**batch), rtol=1e-4)
            for p, q, r in zip(params, copied_params, ref_params):
                np.testing.assert_array_equal(p.value, q.value)
                np.testing.assert_allclose(p.value, r.value, rtol=1e-2, atol=1e-4)
    finally:
        sg.set_num_threads(default)
    assert step._function._compiled._plans and all(
        plan.swaps for plan in step._function._compiled._plans.values())
    assert not any(plan.swaps for plan in copied._function._compiled._plans.values())
    for name, state in step.optimizer_state.items():
        for k, v in state.items():
            np.testing.assert_array_equal(v, copied.optimizer_state[name][k])


def test_a_failed_step_after_a_swap_changes_nothing():
    step, (W, b), _ = _model("llvm")
    step(**_batch(64, 0))
    before = [s._value.copy() for s in _slots(step, (W, b))]
    identity = [s._value for s in _slots(step, (W, b))]
    bad = _batch(64, 1)
    bad["X"][3, 7] = np.inf
    with pytest.raises(sg.NonFiniteError):
        step(**bad)
    for s, was, same in zip(_slots(step, (W, b)), before, identity):
        assert s._value is same
        np.testing.assert_array_equal(s._value, was)
    twin, twin_params, _ = _model("llvm")
    twin(**_batch(64, 0))
    step(**_batch(64, 2))  # and it goes on as a step that never failed
    twin(**_batch(64, 2))
    for p, q in zip((W, b), twin_params):
        np.testing.assert_array_equal(p.value, q.value)


def test_other_functions_and_steps_read_the_current_value():
    step, (W, b), loss = _model("llvm")
    evaluate = sg.function(loss)
    ref_eval = sg.function(loss, backend="numpy")
    sgd = sg.compile_step(loss, sg.optim.SGD(lr=0.1))  # a second step over W and b
    batch = _batch(48, 5)
    snapshot = W.value
    for k in range(4):
        np.testing.assert_allclose(evaluate(**batch), ref_eval(**batch), rtol=1e-5)
        (step if k % 2 else sgd)(**_batch(48, k))
        np.testing.assert_allclose(evaluate(**batch), ref_eval(**batch), rtol=1e-5)
    assert not np.array_equal(snapshot, W.value)  # a snapshot stays as it was taken
    np.testing.assert_array_equal(snapshot, _model("llvm")[1][0].value)


def test_assigning_and_checkpoints_see_the_swapped_array(tmp_path):
    step, (W, b), _ = _model("llvm")
    step(**_batch(64, 0))
    W.value = np.zeros((D, K), np.float32)  # written into the array the slot holds now
    step(**_batch(64, 1))
    ref, (rW, rb), _ = _model("numpy")
    ref(**_batch(64, 0))
    rW.value = np.zeros((D, K), np.float32)
    ref(**_batch(64, 1))
    np.testing.assert_allclose(W.value, rW.value, rtol=2e-5, atol=1e-6)
    path = tmp_path / "ckpt"
    sg.save(path, step)
    step(**_batch(64, 2))
    sg.load(path, step)
    ref(**_batch(64, 2))
    step(**_batch(64, 2))
    np.testing.assert_allclose(W.value, rW.value, rtol=2e-5, atol=1e-6)


def test_ctrl_c_during_a_swapping_step_tears_nothing():
    """SIGINT raised as the native entry returns (where a signal that arrived during the
    call is handled): the entry's copies (b, the step count) and the swaps (W, its moments)
    are one commit, and the KeyboardInterrupt comes after both."""
    import signal

    step, (W, b), _ = _model("llvm")
    twin, twin_params, _ = _model("llvm")
    compiled = step._function._compiled
    entry = compiled._entry

    def entry_interrupted(*args):
        entry(*args)
        signal.raise_signal(signal.SIGINT)

    compiled._entry = entry_interrupted
    try:
        with pytest.raises(KeyboardInterrupt):
            step(**_batch(64, 0))
    finally:
        compiled._entry = entry
    twin(**_batch(64, 0))
    assert step.step_count == twin.step_count == 1
    for p, q in zip((W, b), twin_params):
        np.testing.assert_array_equal(p.value, q.value)
    for name, state in step.optimizer_state.items():
        for k, v in state.items():
            np.testing.assert_array_equal(v, twin.optimizer_state[name][k])
