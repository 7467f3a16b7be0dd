"""``sg.fit``: refusing what is not a training step, checkpoints as it goes, and the
non-finite policy for the steps it runs (with the skipped steps in the history)."""

from __future__ import annotations

import numpy as np
import pytest

import symgrad as sg
from symgrad.runtime import checkpoint
from symgrad.runtime import fit as fit_module


def problem(n=10, lr=0.05, opt=None):
    rng = np.random.default_rng(0)
    a, c = rng.normal(size=n), rng.normal(size=n)
    data = {"x1": a.astype(np.float32), "x2": c.astype(np.float32),
            "y": (2 * a + 3 * c + 5).astype(np.float32)}
    x1, x2, y = sg.inputs("x1 x2 y")
    params = sg.params("w1 w2 b", init=0.0)
    loss = sg.mean((params[0] * x1 + params[1] * x2 + params[2] - y) ** 2)
    return sg.compile_step(loss, opt or sg.optim.SGD(lr=lr)), params, data, loss


def values(params):
    return [float(p.arg.value) for p in params]


def test_fit_refuses_what_is_not_a_training_step():
    step, params, data, loss = problem()
    for wrong, words in [(sg.function(loss), r"compiled function \(sg.function\)"),
                         (loss, "expression"),
                         (lambda **batch: 0.0, "function"),
                         ({"w": 1}, "dict")]:
        with pytest.raises(TypeError, match=f"{words}.*sg.compile_step"):
            sg.fit(wrong, data, epochs=2, batch_size=4, progress=False)
    assert values(params) == [0.0, 0.0, 0.0] and step.step_count == 0


def test_fit_refuses_a_stand_in_that_returns_no_number():
    class Outputs:
        def __call__(self, **batch):
            return np.zeros(3)

        def evaluate(self, **batch):
            return 0.0

    _, _, data, _ = problem()
    with pytest.raises(TypeError, match="returned ndarray"):
        sg.fit(Outputs(), data, progress=False)


def test_fit_saves_a_checkpoint_every_k_steps_and_at_the_end(tmp_path, monkeypatch):
    path = tmp_path / "run.safetensors"
    step, params, data, _ = problem(10, opt=sg.optim.Adam(lr=0.1))
    saved = []

    def spy(where, what):
        saved.append(what.step_count)
        checkpoint.save(where, what)

    monkeypatch.setattr(fit_module, "save", spy)
    sg.fit(step, data, epochs=3, batch_size=4, seed=0, progress=False, checkpoint=path,
           checkpoint_every=4)
    assert saved == [4, 8, 9]  # 3 steps per epoch, 9 in all: every 4 steps and at the end
    twin, twin_params, _, _ = problem(10, opt=sg.optim.Adam(lr=0.1))
    sg.load(path, twin)
    assert twin.step_count == 9 and values(twin_params) == values(params)
    for name, state in step.optimizer_state.items():
        for k, v in state.items():
            np.testing.assert_array_equal(twin.optimizer_state[name][k], v)


def test_fit_checkpoint_after_ctrl_c_holds_the_last_finished_step(tmp_path):
    path = tmp_path / "run.safetensors"
    step, params, data, _ = problem(10)

    def stop(epoch, history):
        raise KeyboardInterrupt

    history = sg.fit(step, data, epochs=5, batch_size=4, seed=0, progress=False,
                     callbacks=[stop], checkpoint=path)
    assert history.interrupted and step.step_count == 3
    twin, twin_params, _, _ = problem(10)
    sg.load(path, twin)
    assert twin.step_count == 3 and values(twin_params) == values(params)


def test_fit_checkpoint_arguments_are_checked_before_training(tmp_path):
    step, params, data, _ = problem()
    for kwargs, error, words in [
            ({"checkpoint_every": 2}, ValueError, "needs checkpoint=path"),
            ({"checkpoint": tmp_path / "c", "checkpoint_every": 0}, ValueError, "positive"),
            ({"checkpoint": 3}, TypeError, "file path"),
            ({"on_nonfinite": "ignore"}, ValueError, "on_nonfinite must be one of")]:
        with pytest.raises(error, match=words):
            sg.fit(step, data, progress=False, **kwargs)
    assert step.step_count == 0 and not (tmp_path / "c").exists()


def nan_data():
    _, _, data, _ = problem(12)
    data = {k: v.copy() for k, v in data.items()}
    data["x1"][5] = np.nan  # the second batch of 4, without shuffling
    return data


def test_fit_on_nonfinite_skip_applies_to_its_steps_and_is_restored():
    step, params, _, _ = problem(12)
    assert step.on_nonfinite == "raise"
    history = sg.fit(step, nan_data(), epochs=2, batch_size=4, shuffle=False,
                     progress=False, on_nonfinite="skip")
    assert history.skipped == 2 and step.skipped == 2 and step.on_nonfinite == "raise"
    assert len(history.step_loss) == 6 and np.isnan(history.step_loss[1])
    assert step.step_count == 4 and all(np.isfinite(values(params)))
    # the epoch mean is over the applied steps
    assert history.epoch_loss[0] == pytest.approx(np.mean([history.step_loss[i]
                                                           for i in (0, 2)]))
    # the step's own policy holds outside fit again
    with pytest.raises(sg.NonFiniteError):
        step(**{k: v[4:8] for k, v in nan_data().items()})


def test_fit_restores_the_policy_when_a_step_raises():
    step, _, _, _ = problem(12)
    step.on_nonfinite = "skip"
    with pytest.raises(sg.NonFiniteError):
        sg.fit(step, nan_data(), batch_size=4, shuffle=False, progress=False,
               on_nonfinite="raise")
    assert step.on_nonfinite == "skip" and step.step_count == 1


def test_fit_progress_mentions_skipped_steps(capfd, monkeypatch):
    step, _, _, _ = problem(12)
    sg.fit(step, nan_data(), epochs=1, batch_size=4, shuffle=False, progress=True,
           on_nonfinite="skip")
    out, err = capfd.readouterr()
    assert "skipped=1" in out + err
    step, _, _, _ = problem(12)
    sg.fit(step, problem(12)[2], epochs=1, batch_size=4, progress=True)
    out, err = capfd.readouterr()
    assert "skipped" not in out + err
    # without tqdm: the line per epoch says it
    monkeypatch.setattr(fit_module._Progress, "__init__", _no_tqdm)
    step, _, _, _ = problem(12)
    sg.fit(step, nan_data(), epochs=1, batch_size=4, shuffle=False, progress=True,
           on_nonfinite="skip")
    out, err = capfd.readouterr()
    assert "skipped 1 steps" in err


def _no_tqdm(self, total, enabled):
    self.bar, self.enabled = None, enabled
