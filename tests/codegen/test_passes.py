"""The compiler's named passes (codegen/passes.py): timed, and the optional ones switchable
with the results unchanged."""

from __future__ import annotations

import numpy as np
import pytest

import symgrad as sg
from symgrad.codegen import passes


def _model():
    rng = np.random.default_rng(0)
    X = sg.input("X", ("N", 40))
    labels = sg.input("labels", ("N",), dtype="int32")
    W1 = sg.param("W1", init=(rng.standard_normal((40, 64)) * 0.1).astype(np.float32))
    W2 = sg.param("W2", init=(rng.standard_normal((64, 10)) * 0.1).astype(np.float32))
    loss = sg.mean(sg.cross_entropy(sg.tanh(X @ W1) @ W2, labels))
    feeds = {"X": rng.standard_normal((300, 40)).astype(np.float32),
             "labels": rng.integers(0, 10, 300).astype(np.int32)}
    return loss, (W1, W2), feeds


@pytest.mark.parametrize("off", ["fuse", "blas", "optimize", "simplify", "registers"])
def test_a_pass_switched_off_changes_the_code_not_the_result(off):
    loss, params, feeds = _model()
    outputs = [loss, *sg.grad(loss, list(params))]
    want = sg.evaluate(outputs, **feeds)
    f = sg.function(outputs, passes={off: False})
    assert f.compilation.enabled[off] is False
    for w, g in zip(want, f(**feeds)):
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-6)
    default = sg.function(outputs)
    if off == "blas":
        assert "BLAS" in default.plan and "BLAS" not in f.plan
    if off == "fuse":  # unfused: the stage's values in loop nests of their own
        assert f.loop_ir.count("for ") > default.loop_ir.count("for ")
    if off == "optimize":  # the IR as rendered: scalar, never vectorized
        assert " x float>" in default.optimized_source
        assert " x float>" not in f.optimized_source


def test_timings_name_every_pass_that_ran():
    loss, params, feeds = _model()
    step = sg.compile_step(loss, sg.optim.Adam(lr=1e-3))
    assert list(step.timings) == [p for p in passes.PASSES if p in step.timings]
    assert {"derive", "simplify", "schedule", "lower", "jit"} <= set(step.timings)
    assert all(t >= 0 for t in step.timings.values())
    assert "lower" in step.compilation.report()
    step(**feeds)
    f = sg.function(loss)
    assert "simplify" in f.timings and "derive" not in f.timings
    naive = sg.log(1 + sg.exp(sg.input("x")))
    g, raw = sg.function(naive), sg.function(naive, passes={"simplify": False})
    assert "simplify" not in raw.timings
    x = np.array([100.0, -100.0, 0.0], np.float32)  # naive log(1 + exp(x)) overflows at 100
    np.testing.assert_allclose(g(x=x), np.logaddexp(0, x.astype(np.float64)), rtol=1e-6,
                               atol=1e-43)  # (exp(-100) is subnormal in float32)
    assert raw(x=x)[0] == np.inf  # the formula as written, compiled as written


def test_unknown_or_malformed_passes_are_refused():
    x = sg.input("x")
    with pytest.raises(ValueError, match="unknown pass 'fusion'.*blas, fuse, optimize"):
        sg.function(x * 2, passes={"fusion": False})
    with pytest.raises(TypeError, match=r"passes\['fuse'\] must be True or False, got 0"):
        sg.function(x * 2, passes={"fuse": 0})


def test_a_step_without_simplify_trains_as_with_it():
    results = []
    for passes_ in (None, {"simplify": False}):
        loss, params, feeds = _model()
        step = sg.compile_step(loss, sg.optim.SGD(lr=0.1), passes=passes_)
        losses = [step(**feeds) for _ in range(3)]
        results.append((losses, [p.value.copy() for p in params]))
        assert ("simplify" in step.timings) == (passes_ is None)
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-5)
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
