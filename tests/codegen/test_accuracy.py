"""float32 sums over millions of terms stay as accurate as NumPy's pairwise sums: compiled
partials add in float64 wherever a float32 sum runs over the batch or a symbolic axis."""

from __future__ import annotations

import numpy as np
import pytest

import symgrad as sg

N = 1_000_000


def _rel(got, exact) -> float:
    return float(np.max(np.abs(np.asarray(got, np.float64) - exact) / np.abs(exact)))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return rng.random((N, 10)).astype(np.float32), rng.random((N, 10)).astype(np.float32)


def test_mean_over_the_batch_and_features(data):
    """mse of (N, 10) values: one scalar partial updated for every element."""
    P, T = sg.input("P", shape=("N", 10)), sg.input("T", shape=("N", 10))
    Ps, Ts = data
    exact = np.mean((Ps.astype(np.float64) - Ts) ** 2)
    assert _rel(sg.function(sg.mse(P, T))(P=Ps, T=Ts), exact) < 1e-6


def test_column_means_over_the_batch(data):
    X = sg.input("X", shape=("N", 10))
    Xs, _ = data
    exact = Xs.astype(np.float64).mean(axis=0)
    assert _rel(sg.function(sg.mean(sg.tanh(X), axis=0))(X=Xs),
                np.tanh(Xs.astype(np.float64)).mean(axis=0)) < 1e-6
    assert _rel(sg.function(sg.sum(X, axis=0))(X=Xs), exact * N) < 1e-6


def test_logsumexp_over_the_batch(data):
    x = sg.input("x")
    xs = data[0][:, :8].reshape(-1) * 4 - 2  # 8 million samples
    exact = np.log(np.sum(np.exp(xs.astype(np.float64))))
    assert _rel(sg.function(sg.logsumexp(x))(x=xs), exact) < 1e-7
    probs = sg.function(sg.softmax(x))(x=xs)  # softmax over the batch goes through it
    assert abs(float(np.sum(probs, dtype=np.float64)) - 1) < 1e-4
