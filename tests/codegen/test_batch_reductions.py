"""Reductions over the batch and other axes at once (``schedule.split_batch_reductions``)
and the vectorized max/min accumulators (``llvm.py``): against the reference at the tile's
tails and at thread splits, NaN where NumPy has NaN."""

from __future__ import annotations

import llvmlite.binding as llvm
import numpy as np
import pytest
from test_llvm_backend import thread_count

import symgrad as sg

SIZES = (1, 255, 256, 257, 1031)


def _outputs(X):
    return [sg.sum(X), sg.mean(X), sg.max(X), sg.min(X),
            sg.sum(X, axis=(0, 2)), sg.mean(X, axis=(0, 1), keepdims=True),
            sg.max(X, axis=(0, 2), keepdims=True), sg.min(X, axis=(1, 0)),
            sg.sum(sg.exp(X) * 0.5, axis=(0, 1))]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_reductions_over_the_batch_and_other_axes_match_the_reference(dtype):
    X = sg.input("X", ("N", 3, 5), dtype=dtype)
    outs = _outputs(X)
    f = sg.function(outs)
    # each split: a per-sample reduction, then an accumulator over the batch
    assert f.plan.count("(per sample)") >= 5, f.plan
    rng = np.random.default_rng(0)
    tol = {"float32": 2e-5, "float64": 1e-12}[dtype]
    for n in SIZES:
        feeds = {"X": rng.standard_normal((n, 3, 5)).astype(dtype)}
        want = sg.evaluate(outs, **feeds)
        for threads in (1, 2):
            with thread_count(threads):  # (every pass split)
                got = f(**feeds)
            for i, (g, w) in enumerate(zip(got, want)):
                assert g.shape == w.shape and g.dtype == w.dtype, (i, g.shape, w.shape)
                np.testing.assert_allclose(g, w, rtol=tol, atol=tol,
                                           err_msg=f"output {i} N={n} threads={threads}")


@pytest.mark.parametrize("where", [0, 100, -1])
def test_a_nan_anywhere_wins_the_max_and_the_min(where):
    x = sg.input("x", ("N",))
    X = sg.input("X", ("N", 4))
    outs = [sg.max(x), sg.min(x), sg.max(X), sg.min(X, axis=0)]
    f = sg.function(outs)
    rng = np.random.default_rng(1)
    xs = rng.standard_normal(1031).astype(np.float32)
    Xs = rng.standard_normal((1031, 4)).astype(np.float32)
    xs[where], Xs[where, 2] = np.nan, np.nan
    xs[7], Xs[9, 0] = np.inf, -np.inf
    want = sg.evaluate(outs, x=xs, X=Xs)
    for threads in (1, 2):
        with thread_count(threads):  # (split: the NaN crosses the combine of partials)
            got = f(x=xs, X=Xs)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w, err_msg=f"threads={threads}")
        assert np.isnan(got[0]) and np.isnan(got[1]) and np.isnan(got[2])


def test_the_max_over_the_batch_is_a_vector_reduction():
    """Written as a compare and a select with a NaN test, LLVM kept the max of a long
    vector scalar (2.8 GB/s); through ``llvm.maximum`` it is vectorized."""
    x = sg.input("x", ("N",))
    f = sg.function([sg.max(x), sg.min(x)])
    source = f.optimized_source
    assert "@llvm.maximum." in source and "@llvm.minimum." in source
    if llvm.llvm_version_info >= (20,):  # (LLVM vectorizes these reductions since 18)
        assert "@llvm.maximum.v" in source and "@llvm.minimum.v" in source
    xs = np.random.default_rng(2).standard_normal(100_003).astype(np.float32)
    np.testing.assert_array_equal(f(x=xs), [xs.max(), xs.min()])
