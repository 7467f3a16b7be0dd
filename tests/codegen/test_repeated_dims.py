"""Values with the batch dimension on two axes, on every compiled backend.

``(N,) - (N, 1)`` is an ``(N, N)`` array in NumPy: every sample paired with every other.
Such a value (and a matmul that contracts one operand's batch axis into an output that
keeps the other's, or a reshape that moves the batch axis) is not per sample; the schedule
computes it whole from stored values, and the compiled result equals the reference.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import symgrad as sg
from symgrad.expr.shapes import RepeatedDimWarning, ShapeError
from symgrad.runtime import cuda_driver

# random graphs are compared with the reference of the graph as written: compiled as written
# (the simplifier may rewrite a value that overflows or is nan into one that does not)
AS_WRITTEN = {"simplify": False}

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cuda"))
from emulated_driver import EmulatedDriver, gxx_available  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::symgrad.expr.shapes.RepeatedDimWarning")
BACKENDS = ["llvm", pytest.param("cuda", marks=pytest.mark.skipif(
    not gxx_available(), reason="the CUDA emulator needs g++ with -std=c++20"))]


def agree(outputs, backend: str, rtol: float = 2e-5, **feeds) -> None:
    want = sg.evaluate(outputs, **feeds)
    got = sg.function(outputs, backend=backend)(**feeds)
    want, got = (want, got) if isinstance(outputs, list) else ([want], [got])
    for w, g in zip(want, got):
        assert np.shape(g) == np.shape(w)
        scale = max(1.0, float(np.max(np.abs(w), initial=0)))
        np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * scale)


def test_the_reported_case(backend):
    X = sg.input("X", shape=("N", 2))
    y = sg.input("y", shape=("N", 1))
    w = sg.param("w", shape=(2,), init=np.array([1.0, 0.0]))
    e = X @ w - y
    feeds = dict(X=np.array([[1, 0], [2, 0]], np.float32),
                 y=np.array([[10], [20]], np.float32))
    np.testing.assert_array_equal(sg.function(e, backend=backend)(**feeds),
                                  [[-9, -8], [-19, -18]])
    loss = sg.mean(e ** 2)
    value, g = sg.function([loss, sg.grad(loss, w)], backend=backend)(**feeds)
    assert value == pytest.approx(207.5)
    np.testing.assert_allclose(g, [-40, 0])


def test_gram_matrix_and_outer_products(backend):
    rng = np.random.default_rng(0)
    X = sg.input("X", shape=("N", 3))
    W = sg.param("W", init=rng.normal(size=(3, 2)).astype(np.float32))
    G = X @ X.T                                   # (N, N)
    h = sg.tanh(X @ W)                            # per sample (N, 2)
    outer = h[:, 0].reshape(("N", 1)) * h[:, 1]   # (N, 1) * (N,) -> (N, N)
    outputs = [sg.sum(G, axis=1), sg.mean(G), sg.max(outer, axis=0), G @ h,
               sg.sum(sg.exp(-G) * outer)]
    loss = sg.mean(sg.sum(sg.exp(-G), axis=0) * h[:, 0]) + sg.mean(outer)
    outputs += sg.grad(loss, [W])
    for n in (1, 2, 7, 33):
        agree(outputs, backend, 5e-5, X=rng.normal(size=(n, 3)).astype(np.float32))


def test_contraction_over_the_batch_keeping_the_batch(backend):
    """(k, N) @ (N, N): the output keeps the batch of the right operand while contracting
    the left operand's batch axis, so the left operand must be complete first."""
    rng = np.random.default_rng(1)
    X = sg.input("X", shape=("N", 2))
    A = sg.input("A", shape=("N", "N"))
    Z = sg.tanh(X * 2).T @ A
    R = sg.reshape(X * 3, (2, "N"))               # moves the batch axis: not per sample
    for n in (1, 5):
        agree([Z, R, sg.sum(Z * R)], backend, X=rng.normal(size=(n, 2)).astype(np.float32),
              A=rng.normal(size=(n, n)).astype(np.float32))


def test_per_sample_values_keep_one_pass():
    """The fix does not cost ordinary models their single pass."""
    X = sg.input("X", shape=("N", 4))
    y = sg.input("y")
    w = sg.param("w", shape=(4,))
    loss = sg.mean((X @ w - y) ** 2)
    f = sg.function([loss, sg.grad(loss, w)])
    assert "1 pass over N" in f.plan


# ---------------------------------------------------------------------------------------
# Random graphs mixing per-sample values with (N, 1) and (1, N) operands.

def _graph(draw):
    x = sg.input("x")
    col = sg.input("col", shape=("N", 1))
    row = sg.input("row", shape=(1, "N"))
    w = sg.param("w", init=0.7)
    u = sg.tanh(x * w)
    pool = [x, u, col, row, col * w]
    for _ in range(draw(st.integers(1, 5))):
        a, b = draw(st.sampled_from(pool)), draw(st.sampled_from(pool))
        op = draw(st.sampled_from(["add", "sub", "mul", "max", "tanh", "reduce"]))
        if op == "tanh":
            v = sg.tanh(a)
        elif op == "reduce":
            if a.ndim == 0:
                continue
            axis = draw(st.sampled_from([None] + list(range(a.ndim))))
            fn = draw(st.sampled_from([sg.sum, sg.mean, sg.max, sg.min]))
            v = fn(a, axis=axis, keepdims=draw(st.booleans()))
        else:
            v = {"add": lambda: a + b, "sub": lambda: a - b, "mul": lambda: a * b,
                 "max": lambda: sg.maximum(a, b)}[op]()
        pool.append(v)
    outs = pool[5:]
    loss = sg.sum(outs[-1]) + sg.mean(outs[0])
    return outs + [loss] + sg.grad(loss, [w])


@st.composite
def graphs(draw):
    outputs = _graph(draw)
    n = draw(st.sampled_from([0, 1, 2, 7, 33]))
    seed = draw(st.integers(0, 2**16))
    return outputs, n, seed


@pytest.mark.parametrize("backend_name", BACKENDS)
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(case=graphs())
def test_random_graphs_with_repeated_batch_dims(backend_name, case):
    outputs, n, seed = case
    rng = np.random.default_rng(seed)
    feeds = dict(x=rng.normal(size=n).astype(np.float32),
                 col=rng.normal(size=(n, 1)).astype(np.float32),
                 row=rng.normal(size=(1, n)).astype(np.float32))
    try:
        want = sg.evaluate(outputs, **feeds)
    except Exception as exc:  # the reference refuses (a max over no samples): so must we
        if backend_name == "cuda":
            cuda_driver.set_driver(EmulatedDriver())
        try:
            with pytest.raises(type(exc)):
                sg.function(outputs, backend=backend_name, passes=AS_WRITTEN)(**feeds)
        finally:
            cuda_driver.set_driver(None)
        return
    if backend_name == "cuda":
        cuda_driver.set_driver(EmulatedDriver())
    try:
        got = sg.function(outputs, backend=backend_name, passes=AS_WRITTEN)(**feeds)
    finally:
        cuda_driver.set_driver(None)
    for w, g in zip(want, got):
        assert np.shape(g) == np.shape(w)
        scale = max(1.0, float(np.max(np.abs(w), initial=0)))
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * scale)


# ---------------------------------------------------------------------------------------
# The classic target-shape mistake.

@pytest.mark.parametrize("loss", [sg.mse, sg.mae, sg.huber, sg.smooth_l1,
                                  sg.binary_cross_entropy_with_logits])
def test_losses_refuse_a_column_target_against_a_vector(loss):
    pred, y = sg.input("pred"), sg.input("y", shape=("N", 1))
    with pytest.raises(ShapeError, match=r"\(N,\).*\(N, 1\).*\[:, 0\]"):
        loss(pred, y)
    with pytest.raises(ShapeError, match=r"\(N, 1\).*\(N,\)"):
        loss(y, pred)
    assert loss(pred, y[:, 0]).shape == ()           # the fix the message names
    assert loss(pred, 1.0).shape == ()               # a scalar target still broadcasts


def test_a_broadcast_that_repeats_the_batch_warns_once_per_place():
    x, y = sg.input("x"), sg.input("y", shape=("N", 1))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")
        for _ in range(3):
            e = x - y  # the same line three times: one warning
        X = sg.input("X", shape=("N", 2))
        _ = X @ X.T  # not a broadcast: no warning
        _ = e * 2    # the operands already hold N twice: no warning
    found = [w for w in seen if issubclass(w.category, RepeatedDimWarning)]
    assert len(found) == 1
    assert "(N,) and (N, 1)" in str(found[0].message) and "y[:, 0]" in str(found[0].message)
    assert found[0].filename == __file__   # points at the user's line, not symgrad's


def test_a_float32_mean_over_n_by_n_keeps_float32_accuracy():
    """16 million terms: NumPy's pairwise sum keeps ~1e-7; float32 lanes would lose ~1e-4
    (and counting samples instead of elements lost 2.7%)."""
    x, y = sg.input("x"), sg.input("y", shape=("N", 1))
    e = sg.mean(sg.tanh(x - y) + 1)
    rng = np.random.default_rng(0)
    xs = rng.random(4000).astype(np.float32)
    ys = rng.random((4000, 1)).astype(np.float32)
    exact = np.mean(np.tanh(xs.astype(np.float64) - ys) + 1)
    assert float(sg.function(e)(x=xs, y=ys)) == pytest.approx(exact, rel=1e-6)


def test_reshape_with_symbolic_dimensions_before_the_batch(backend):
    x, y = sg.input("x"), sg.input("y")
    Z = sg.input("Z", shape=("M", "K", "N"))
    h = sg.tanh(Z) * x
    outs = [sg.sum(sg.reshape(h, ("M", "K", "N", 1)), axis=(0, 1, 3)) * y,
            sg.sum(sg.reshape(h, ("K", "M", "N")), axis=(0, 1)) * y]
    rng = np.random.default_rng(0)
    feeds = dict(Z=rng.random((2, 3, 5)).astype(np.float32),
                 x=rng.random(5).astype(np.float32), y=rng.random(5).astype(np.float32))
    if backend == "cuda":  # a documented limit: a clear refusal, never a wrong number
        with pytest.raises(NotImplementedError, match="second symbolic dimension.*llvm"):
            sg.function(outs, backend="cuda")
        return
    agree(outs, backend, **feeds)
