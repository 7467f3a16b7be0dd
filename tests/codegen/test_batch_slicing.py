"""Slices along a symbolic axis (issue 13 item 2): ``x[1:] - x[:-1]`` over an input of
length N has length ``N-1``, still symbolic (a new N never recompiles). Every backend is
checked against NumPy at N = 0, 1, 2, 3, around a tile and a prime; derivatives against
finite differences."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import symgrad as sg
from symgrad.expr.shapes import SliceDim
from symgrad.runtime import jit

_CUDA_TESTS = Path(__file__).resolve().parents[1] / "cuda"
if str(_CUDA_TESTS) not in sys.path:
    sys.path.insert(0, str(_CUDA_TESTS))

SIZES = (0, 1, 2, 3, 7, 255, 256, 257, 1031)
bounds = st.one_of(st.none(), st.integers(-5, 5))


def _check(e, sizes=SIZES, backend="llvm", feeds_of=None, threads=(1, 2)):
    f = sg.function(e, backend=backend)
    compiles = jit.stats.compile_count
    before = sg.get_num_threads()
    try:
        for t in threads:
            sg.set_num_threads(t)
            for n in sizes:
                rng = np.random.default_rng(n)
                feeds = (feeds_of or (lambda n, rng: {
                    "x": rng.standard_normal(n).astype(np.float32)}))(n, rng)
                feeds = {k: v for k, v in feeds.items() if k in f.inputs}
                want = sg.evaluate(e, **feeds)
                got = f(**feeds)
                assert np.shape(got) == np.shape(want), (n, np.shape(got), np.shape(want))
                np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5 * max(1, n) ** 0.5,
                                           err_msg=f"N={n} threads={t}")
    finally:
        sg.set_num_threads(before)
    if backend == "llvm":
        assert jit.stats.compile_count == compiles  # every N: the same machine code


def test_a_difference_of_neighbours_has_length_n_minus_1():
    x = sg.input("x")
    d = x[1:] - x[:-1]
    assert d.shape == ("N-1",) and isinstance(d.shape[0], SliceDim)
    assert x[2:].shape == x[1:-1].shape == ("N-2",)
    assert x[1:][1:].shape[0].length({"N": 5}) == 3
    assert x[1::2].shape == x[:-1:2].shape == ("ceil((N-1)/2)",)  # one length, one name
    assert x[:].shape == x[0:].shape == x[::-1].shape == ("N",)
    for n in (0, 1, 2, 5):
        xs = np.arange(n, dtype=np.float32) ** 2
        np.testing.assert_array_equal(sg.evaluate(d, x=xs), np.diff(xs))
    assert str(d) == "x[1:] - x[:-1]"


def test_slices_of_different_lengths_do_not_broadcast():
    x = sg.input("x")
    with pytest.raises(ValueError, match="cannot broadcast"):
        x[1:] - x[2:]
    with pytest.raises(TypeError, match="symbolic dimension 'N'.*ints or None"):
        x[1.5:]
    with pytest.raises(ValueError, match="step cannot be zero"):
        x[::0]


@settings(max_examples=40, deadline=None)
@given(start=bounds, stop=bounds, step=st.sampled_from([None, 1, 2, 3, -1, -2]))
def test_every_constant_slice_is_numpy_s_on_the_reference(start, stop, step):
    x = sg.input("x")
    e = x[start:stop:step] * 2
    for n in (0, 1, 2, 3, 4, 9):
        xs = np.arange(n, dtype=np.float32)
        got = sg.evaluate(e, x=xs)
        np.testing.assert_array_equal(got, xs[start:stop:step] * 2)
        if len(e.shape) and isinstance(e.shape[0], SliceDim):
            assert e.shape[0].length({"N": n}) == len(xs[start:stop:step])


@settings(max_examples=10, deadline=None)
@given(start=bounds, stop=bounds, step=st.sampled_from([None, 1, 2, -1, -3]))
def test_every_constant_slice_compiled_agrees(start, stop, step):
    x = sg.input("x")
    _check(sg.tanh(x[start:stop:step]) + 1, sizes=(0, 1, 2, 3, 7, 257), threads=(1,))


@pytest.mark.parametrize("name", ["diff", "sum_of_squares", "odd_even", "reversed",
                                  "rows", "gradient", "strided_gradient"])
def test_compiled_slices_over_every_batch_size(name):
    x = sg.input("x")
    X = sg.input("X", ("N", 3))
    d = x[1:] - x[:-1]
    cases = {
        "diff": d,
        "sum_of_squares": sg.sum(d ** 2),
        "odd_even": x[1::2] * x[:-1:2],  # (x1 x0, x3 x2, ...): both ceil((N-1)/2) long
        "reversed": sg.mean(x[::-1][1:] * x[1:]),
        "rows": sg.mean(X[1:] * X[:-1], axis=0),
        "gradient": sg.grad(sg.sum(d ** 2) + sg.mean(x[-3:]), x),
        "strided_gradient": sg.grad(sg.sum(sg.tanh(x[:-1:2])), x),
    }

    def feeds(n, rng):
        return {"x": rng.standard_normal(n).astype(np.float32),
                "X": rng.standard_normal((n, 3)).astype(np.float32)}

    _check(cases[name], feeds_of=feeds)


def test_slice_derivatives_against_finite_differences():
    x = sg.input("x", dtype="float64")
    loss = sg.sum((x[1:] - x[:-1]) ** 2) + sg.sum(sg.sin(x[::2])) + x[-1] * sg.sum(x[:-2])
    g = sg.grad(loss, x)
    xs = np.random.default_rng(0).standard_normal(7)
    got = sg.function(g)(x=xs)
    h, fd = 1e-6, []
    for i in range(len(xs)):
        up, down = xs.copy(), xs.copy()
        up[i] += h
        down[i] -= h
        fd.append((sg.evaluate(loss, x=up) - sg.evaluate(loss, x=down)) / (2 * h))
    np.testing.assert_allclose(got, fd, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(sg.evaluate(g, x=xs), fd, rtol=1e-6, atol=1e-6)


def test_a_smoothness_penalty_trains_with_compile_step():
    """A time series fitted with a penalty on neighbouring differences: the compiled step
    and the reference step agree over several steps and batch sizes."""
    results = []
    for backend in ("numpy", "llvm"):
        t = sg.input("t")
        y = sg.input("y")
        a = sg.param("a", init=np.float32(0.5))
        b = sg.param("b", init=np.float32(0.0))
        pred = a * t + b
        loss = sg.mean((pred - y) ** 2) + 0.1 * sg.mean((pred[1:] - pred[:-1]) ** 2)
        step = sg.compile_step(loss, sg.optim.Adam(lr=0.05), backend=backend)
        losses = []
        for n in (50, 2, 300, 3, 50):  # (at N = 1 the penalty is a mean of nothing: nan)
            ts = np.linspace(0, 1, n, dtype=np.float32)
            losses.append(step(t=ts, y=3 * ts + 1))
        results.append((losses, float(a.value), float(b.value)))
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-5)
    np.testing.assert_allclose(results[1][1:], results[0][1:], rtol=1e-5)


def test_cuda_slices_on_the_emulator():
    from emulated_driver import EmulatedDriver, gxx_available

    from symgrad.runtime import cuda_driver

    if not gxx_available():
        pytest.skip("the CUDA emulator (tests/cuda) needs g++ with -std=c++20")
    cuda_driver.set_driver(EmulatedDriver())
    try:
        x = sg.input("x")
        d = x[1:] - x[:-1]
        for e, sizes in ((d, (0, 1, 2, 3, 300)), (sg.sum(d ** 2), (0, 1, 2, 300)),
                         (sg.grad(sg.sum(sg.tanh(x[::2]) * x[-3:][0]), x), (3, 4, 300))):
            _check(e, sizes=sizes, backend="cuda", threads=(1,))
    finally:
        cuda_driver.set_driver(None)
