"""The CPU pass in tiles of samples (codegen/tiles.py): every tile tail, thread split and
contraction (BLAS or loops) agrees with the NumPy reference."""

from __future__ import annotations

import contextlib
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import symgrad as sg
from symgrad.codegen import blas
from symgrad.codegen.lower import lower


@contextlib.contextmanager
def threads_of(count: int):
    before = sg.get_num_threads()
    sg.set_num_threads(count)
    try:
        yield
    finally:
        sg.set_num_threads(before)


needs_blas = pytest.mark.skipif(not blas.available(np.float32), reason="SciPy's BLAS absent")


def tile_of(f) -> int:
    found = re.search(r"tiles of (\d+) samples", f.plan)
    assert found, f.plan
    return int(found.group(1))


def logistic(features: int = 16):
    X = sg.input("X", ("N", features))
    y = sg.input("y", ("N",))
    w = sg.param("w", init=np.linspace(-1, 1, features).astype(np.float32))
    c = sg.param("c", init=np.float32(0.3))
    z = X @ w + c
    loss = sg.mean(sg.softplus(z) - y * z)
    return [loss, *sg.grad(loss, [w, c])], features


def mlp(hidden: int = 96, features: int = 40):
    rng = np.random.default_rng(1)
    X = sg.input("X", ("N", features))
    labels = sg.input("labels", ("N",), dtype="int32")
    W1 = sg.param("W1", init=(rng.standard_normal((features, hidden)) * 0.2).astype(np.float32))
    b1 = sg.param("b1", init=np.full(hidden, 0.1, np.float32))
    W2 = sg.param("W2", init=(rng.standard_normal((hidden, 10)) * 0.2).astype(np.float32))
    h = sg.gelu(X @ W1 + b1)
    loss = sg.mean(sg.cross_entropy(h @ W2, labels))
    return [loss, *sg.grad(loss, [W1, b1, W2])], features


def feeds_for(model: str, n: int, features: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, features)).astype(np.float32)
    if model == "logistic":
        return {"X": X, "y": (rng.random(n) < 0.5).astype(np.float32)}
    return {"X": X, "labels": rng.integers(0, 10, n).astype(np.int32)}


def agree(outputs, feeds, rtol=2e-4) -> None:
    want = sg.evaluate(outputs, **feeds)
    got = sg.function(outputs)(**feeds)
    for w, g in zip(want, got):
        assert np.shape(g) == np.shape(w)
        scale = max(1.0, float(np.max(np.abs(w), initial=0)))
        np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * scale)


MODELS = {"logistic": logistic, "mlp": mlp}


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("threads", [1, 2])
def test_every_tile_tail(model, threads):
    outputs, features = MODELS[model]()
    t = tile_of(sg.function(outputs))
    assert t >= 8
    sizes = sorted({1, 2, t - 1, t, t + 1, 2 * t + 3, 97, 257, 1031})
    with threads_of(threads):
        for n in sizes:
            agree(outputs, feeds_for(model, n, features, seed=n))


@pytest.mark.parametrize("threads", [1, 2])
def test_thread_splits_at_every_size_near_the_split(threads, monkeypatch):
    from symgrad.runtime import llvm_function

    monkeypatch.setattr(llvm_function, "MIN_WORK_PER_THREAD", 1)  # split even tiny passes
    outputs, features = logistic()
    with threads_of(threads):
        for n in (64, 65, 127, 128, 129, 131, 509):
            agree(outputs, feeds_for("logistic", n, features, seed=n))


def test_a_mean_over_no_samples_is_nan_and_the_sums_zero():
    outputs, features = logistic()
    want = sg.evaluate(outputs[1:], **feeds_for("logistic", 0, features))
    got = sg.function(outputs[1:])(**feeds_for("logistic", 0, features))
    for w, g in zip(want, got):
        np.testing.assert_array_equal(g, w)


@needs_blas
def test_plan_says_which_contractions_call_blas():
    outputs, _ = mlp(hidden=96, features=40)
    plan = sg.function(outputs).plan
    assert "tiles of" in plan
    assert "rows @ W: BLAS gemm" in plan  # X @ W1 (40 x 96 per sample)
    assert "rows.T @ rows: BLAS gemm" in plan  # the gradient of W1
    small, _ = logistic(features=16)
    small_plan = sg.function(small).plan
    assert "BLAS" not in small_plan and "rows.T @ rows: loops" in small_plan
    assert "BLAS gemm" in sg.function(outputs).loop_ir


@needs_blas
@settings(max_examples=12, deadline=None)
@given(n=st.integers(1, 300), depth=st.sampled_from([64, 130]),
       cols=st.sampled_from([40, 64, 100]), transposed=st.booleans(),
       dtype=st.sampled_from(["float32", "float64"]))
def test_blas_contractions_against_numpy(n, depth, cols, transposed, dtype):
    rng = np.random.default_rng(n)
    X = sg.input("X", ("N", depth), dtype=dtype)
    D = sg.input("D", ("N", cols), dtype=dtype)
    w = rng.standard_normal((cols, depth) if transposed else (depth, cols)).astype(dtype)
    W = sg.param("W", init=w)
    product = X @ (W.T if transposed else W)
    outputs = [sg.sum(sg.tanh(product), axis=0), X.T @ D]  # a product and a gradient
    f = sg.function(outputs)
    assert f.plan.count("BLAS gemm") == 2, f.plan
    x = rng.standard_normal((n, depth)).astype(dtype)
    d = rng.standard_normal((n, cols)).astype(dtype)
    got_sum, got_grad = f(X=x, D=d)
    ww = w.T if transposed else w
    tol = 2e-4 if dtype == "float32" else 1e-10
    np.testing.assert_allclose(got_sum, np.tanh(x @ ww).sum(0), rtol=tol, atol=tol * n)
    np.testing.assert_allclose(got_grad, x.T @ d, rtol=tol, atol=tol * n)


def test_a_scalar_chain_is_one_loop_without_inner_loops():
    """softplus(z) and sigmoid(z) - y run in one loop over the tile's samples: the loop
    LLVM vectorizes across samples (nothing in it loops over features)."""
    outputs, _ = logistic()
    ir = str(lower(outputs))
    chain = [block for block in ir.split("    for n in ")[1:] if "softplus" in block]
    assert len(chain) == 1
    body = chain[0].split("\n    for ")[0].split("\n    total")[0]
    assert "sigmoid" in body and "      for " not in body, body


def test_gpu_lowering_keeps_one_sample_per_iteration():
    outputs, _ = mlp()
    program = lower(outputs, "gpu")
    assert "tiles of" not in program.plan_text and "Gemm" not in repr(program.kernels)


@needs_blas
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cols,transposed", [(10, False), (3, True), (17, False)])
def test_narrow_contractions_on_both_sides_of_the_loop_switch(cols, transposed, dtype):
    """A tile GEMM over fewer than ``blas.LOOPS_BELOW_K`` terms runs as loops (a short row
    of C written out when it has at most 16 columns), over more as BLAS: the weight gradient
    of every tile size around the switch, and a product over a short depth (k < 16 always),
    against NumPy."""
    depth = 40
    rng = np.random.default_rng(cols)
    X = sg.input("X", ("N", depth), dtype=dtype)
    D = sg.input("D", ("N", cols), dtype=dtype)
    S = sg.input("S", ("N", 6), dtype=dtype)
    w = rng.standard_normal((cols, 6) if transposed else (6, cols)).astype(dtype)
    W = sg.param("W", init=w)
    outputs = [X.T @ D, sg.sum(sg.tanh(S @ (W.T if transposed else W)), axis=0)]
    f = sg.function(outputs)
    assert "rows.T @ rows: BLAS gemm (loops for a tile of under 16 samples)" in f.plan
    k = blas.LOOPS_BELOW_K
    tol = 2e-5 if dtype == "float32" else 1e-12
    for n in (1, 2, k - 1, k, k + 1, 3 * k, 257):  # 257: a tile of 256, then a tail of 1
        x = rng.standard_normal((n, depth)).astype(dtype)
        d = rng.standard_normal((n, cols)).astype(dtype)
        s = rng.standard_normal((n, 6)).astype(dtype)
        got_grad, got_sum = f(X=x, D=d, S=s)
        np.testing.assert_allclose(got_grad, x.T @ d, rtol=tol * 10, atol=tol * n)
        ww = w.T if transposed else w
        np.testing.assert_allclose(got_sum, np.tanh(s @ ww).sum(0), rtol=tol * 10,
                                   atol=tol * n)


def test_a_held_pool_runs_the_slices_here_with_the_same_bits(monkeypatch):
    """Another call holding the pool: this call runs the same slices one after another on
    its own thread, into the same partials, so its results are bit-identical to a split."""
    from symgrad.runtime import llvm_function

    monkeypatch.setattr(llvm_function, "MIN_WORK_PER_THREAD", 1)
    outputs, features = mlp()
    feeds = feeds_for("mlp", 1031, features)
    with threads_of(2):
        f = sg.function(outputs)
        split = f(**feeds)
        assert f._compiled.last_passes[0][0] == 2 * llvm_function.SLICES_PER_THREAD
        pool = llvm_function._thread_pool()
        assert pool.hold()  # as another thread's call in flight would
        try:
            here = f(**feeds)
        finally:
            pool.release()
    for a, b in zip(split, here):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("features", [40, 400])
def test_extra_slices_only_for_small_partials(features, monkeypatch):
    """Two slices per thread (for a thread another program delays) where the pass's
    partials are small; one per thread where they are large (each slice sets its own and
    the kernel after the pass adds them one by one): the same values either way."""
    from symgrad.runtime import llvm_function

    monkeypatch.setattr(llvm_function, "MIN_WORK_PER_THREAD", 1)
    outputs, _ = mlp(hidden=96, features=features)
    partials = features * 96 + 96 + 96 * 10 + 1  # dW1, db1, dW2 and the loss
    feeds = feeds_for("mlp", 1031, features)
    with threads_of(2):
        f = sg.function(outputs)
        got = f(**feeds)
    small = partials <= llvm_function.EXTRA_SLICE_PARTIALS
    assert small == (features == 40)
    assert f._compiled.last_passes[0][0] == (2 * llvm_function.SLICES_PER_THREAD if small
                                             else 2)
    for g, w in zip(got, sg.evaluate(outputs, **feeds)):
        np.testing.assert_allclose(g, w, rtol=2e-4, atol=2e-5)
