"""Indexing by integer arrays: ``E[ids]``, ``sg.take``, ``sg.take_along_axis`` and their
scatter-add derivatives, against NumPy on the reference, LLVM (1 and 2 threads) and the CUDA
emulator; finite differences; bounds errors on every backend; a trained embedding."""

from __future__ import annotations

import backend_cases as bc
import numpy as np
import pytest
from backend_cases import emulated  # noqa: F401  (the CUDA emulator fixture)
from diffhelp import assert_close_fd, fd_grad
from test_llvm_backend import thread_count

import symgrad as sg

SIZES = (0, 1, 7, 257)
V, D = 5, 3


def _E(dtype="float64"):
    rng = np.random.default_rng(0)
    return sg.param("E", init=rng.standard_normal((V, D)).astype(dtype))


def _feeds(n: int, k: int | None = None) -> dict:
    rng = np.random.default_rng(n)
    shape = (n,) if k is None else (n, k)
    return {"ids": rng.integers(-V, V, shape).astype(np.int32),
            "x": rng.standard_normal((n, V)), "w": rng.standard_normal(shape + (D,))}


def _graphs(k: int | None = None) -> list:
    E = _E()
    ids = sg.input("ids", shape=("N",) if k is None else ("N", k), dtype="int32")
    w = sg.input("w", shape=ids.shape + (D,), dtype="float64")
    rows = E[ids]
    x = sg.input("x", shape=("N", V), dtype="float64")
    picked = sg.take_along_axis(x, sg.argmax(x, axis=1, keepdims=True), 1)  # computed ids
    loss = sg.sum(sg.tanh(rows) * w)
    return [rows, sg.grad(loss, E), picked, sg.grad(sg.sum(picked ** 2), x),
            sg.take(x, ids if k is None else ids[:, 0], axis=1)]


def _numpy(feeds: dict, E: np.ndarray) -> list:
    ids, x, w = feeds["ids"], feeds["x"], feeds["w"]
    rows = E[ids]
    dE = np.zeros_like(E)
    np.add.at(dE, ids, (1 - np.tanh(rows) ** 2) * w)  # repeated ids add up
    at = np.argmax(x, axis=1)[:, None]
    picked = np.take_along_axis(x, at, 1)
    dx = np.zeros_like(x)
    np.put_along_axis(dx, at, 2 * picked, 1)
    cols = ids if ids.ndim == 1 else ids[:, 0]
    return [rows, dE, picked, dx, x[:, np.where(cols < 0, cols + V, cols)]]


@pytest.mark.parametrize("k", [None, 2], ids=["ids(N)", "ids(N,2)"])
def test_values_against_numpy_on_the_reference_and_llvm(k):
    outs = _graphs(k)
    E = [n for n in sg.toposort(outs) if n.op.name == "param"][0]
    f = sg.function(outs, backend="llvm")
    before = sg.get_num_threads()
    try:
        for t in (1, 2):
            sg.set_num_threads(t)
            for n in SIZES:
                feeds = _feeds(n, k)
                want = _numpy(feeds, E.value)
                ref = sg.evaluate(outs, **feeds)
                got = f(**feeds)
                for i, (g, r, w) in enumerate(zip(got, ref, want)):
                    np.testing.assert_allclose(r, w, rtol=1e-12, atol=1e-12,
                                               err_msg=f"reference {i} N={n}")
                    np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12,
                                               err_msg=f"llvm {i} N={n} threads={t}")
    finally:
        sg.set_num_threads(before)
    assert "accumulates over N" in f.plan  # dE: a sum over the batch, per-thread partials


def test_values_on_the_cuda_emulator(emulated):  # noqa: F811
    outs = _graphs()
    f = sg.function(outs, backend="cuda")
    for n in (0, 1, 7, 40):
        bc.check_outputs(f, outs, bc.needed_feeds(outs, _feeds(n)), what=f"N={n}")


def test_repeated_ids_add_up_float32():
    E = _E("float32")
    ids = sg.input("ids", shape=("N",), dtype="int32")
    g = sg.grad(sg.sum(E[ids]), E)
    feeds = {"ids": np.array([1, 1, 1, -4, 3], np.int32)}  # -4 is row 1 again
    want = np.zeros((V, D), np.float32)
    want[1], want[3] = 4, 1
    for backend in ("numpy", "llvm"):
        np.testing.assert_array_equal(sg.function(g, backend=backend)(**feeds), want)


def _pass_text(f) -> str:
    text = f.loop_ir
    return text[text.index("kernel pass1"):].split("\nkernel ", 1)[0]


@pytest.mark.parametrize("axis", [0, 1])
def test_a_scatter_over_the_batch_adds_each_element_once(axis, monkeypatch):
    """An embedding's gradient (indices per sample) is an accumulator over the batch that
    adds each cotangent element where its index points: no comparison with the table's
    rows in the pass (that was a comparison per row and element: a 10,000-row table made
    the step 1,000x slower), the same as ``np.add.at`` at the tile's tails and at every
    split over threads, and the same bits again for the same thread count."""
    from symgrad.runtime import llvm_function

    monkeypatch.setattr(llvm_function, "PARTIAL_COST", 0)  # (thread_count: every pass split)
    rows, width = 300, 4
    rng = np.random.default_rng(7)
    shape = (rows, width) if axis == 0 else (width, rows)
    E = sg.param("E", init=rng.standard_normal(shape).astype(np.float32))
    ids = sg.input("ids", shape=("N",), dtype="int32")
    w = sg.input("w", shape=("N", width) if axis == 0 else (width, "N"))
    grad = sg.grad(sg.sum(sg.take(E, ids, axis=axis) * w), E)
    f = sg.function(grad)
    assert f"scatter_add float32 ({shape[0]}, {shape[1]}) (accumulates over N)" in f.plan
    assert " == " not in _pass_text(f)
    for n in (0, 1, 255, 256, 257, 1031):
        feeds = {"ids": rng.integers(-rows, rows, n).astype(np.int32),
                 "w": rng.standard_normal((n, width) if axis == 0 else (width, n))
                 .astype(np.float32)}
        want = np.zeros(shape, np.float32)
        at = np.where(feeds["ids"] < 0, feeds["ids"] + rows, feeds["ids"])
        np.add.at(want if axis == 0 else want.T, at, feeds["w"] if axis == 0 else feeds["w"].T)
        for threads in (1, 2, 3):
            with thread_count(threads):
                got = f(**feeds)
                again = f(**feeds)
            what = f"N={n} threads={threads}"
            if threads == 1:  # samples in order, as np.add.at adds them
                np.testing.assert_array_equal(got, want, err_msg=what)
            else:
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=what)
            np.testing.assert_array_equal(again, got, err_msg=what)  # deterministic


def test_a_large_table_takes_one_slice_and_keeps_its_scratch():
    """A pass whose partial (a thread's copy of a 200,000-row table) outweighs its work is
    not split (each slice would set and add the whole table again), and the call's
    scratch, larger than the default cache size, is kept for the next call."""
    from symgrad.runtime import llvm_function

    rows, width = 200_000, 16
    E = sg.param("E", init=np.zeros((rows, width), np.float32))
    ids = sg.input("ids", shape=("N",), dtype="int32")
    step = sg.compile_step(sg.mean(sg.sum(E[ids], axis=1) ** 2), sg.optim.SGD(lr=0.1))
    with thread_count(2, split_every_pass=False):
        step(ids=np.arange(0, 4096 * 37, 37, dtype=np.int32))
    compiled = step._function._compiled
    assert [slices for slices, _ in compiled.last_passes] == [1]
    assert compiled._idle, "the scratch was dropped after the call"
    scratch = next(iter(compiled._idle.values()))
    assert scratch.nbytes > llvm_function.SCRATCH_CACHE_BYTES


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_derivatives_against_finite_differences(axis):
    rng = np.random.default_rng(1)
    a = sg.param("a", init=rng.standard_normal((4, 3, 2)))
    ids = sg.const(np.array([[2, 0], [2, -1]], np.int32) % a.shape[axis])
    along = sg.const(rng.integers(0, a.shape[axis], (4, 3, 2)).astype(np.int32))
    c = sg.const(rng.standard_normal(sg.take(a, ids, axis=axis).shape))
    for f in (sg.sum(sg.sin(sg.take(a, ids, axis=axis)) * c),
              sg.sum(sg.take_along_axis(a, along, axis) ** 3)):
        for backend in ("numpy", "llvm"):
            got = sg.function(sg.grad(f, a), backend=backend)()
            assert_close_fd(got, fd_grad(f, a, {}), what=f"axis={axis} {backend}")
    # forward mode and second order: the scatter-add's own derivative is a take again
    f = sg.sum(sg.take(a, ids, axis=axis) ** 3)
    jac = sg.evaluate(sg.jacobian(sg.take(a, ids, axis=axis) ** 2, a))
    assert jac.shape == sg.take(a, ids, axis=axis).shape + a.shape
    want = np.zeros(sg.take(a, ids, axis=axis).shape + a.shape)
    av = a.value
    for out in np.ndindex(want.shape[:-3]):  # d take(a)**2 / da: 2 a at the taken element
        src = list(out[:axis % 3]) + [int(ids.arg.array[out[axis % 3:axis % 3 + 2]])] + \
            list(out[axis % 3 + 2:])
        want[out + tuple(src)] = 2 * av[tuple(src)]
    np.testing.assert_allclose(jac, want, rtol=1e-12)
    h = sg.evaluate(sg.hessian(f, a)).reshape(av.size, -1)  # the scatter's derivative
    fd_h = np.stack([fd_grad(sg.grad(f, a)[np.unravel_index(i, av.shape)], a, {}).reshape(-1)
                     for i in range(av.size)])
    np.testing.assert_allclose(h, fd_h, rtol=1e-5, atol=1e-6)


def _classifier():
    rng = np.random.default_rng(3)
    E = sg.param("E", init=rng.standard_normal((7, 4)).astype(np.float32) * 0.3)
    W = sg.param("W", init=rng.standard_normal((8, 3)).astype(np.float32) * 0.3)
    ids = sg.input("ids", shape=("N", 2), dtype="int32")
    labels = sg.input("labels", shape=("N",), dtype="int32")
    h = sg.reshape(E[ids], ("N", 8))
    loss = sg.cross_entropy(h @ W, labels)
    return loss, (E, W)


def _data(n: int = 64, bad: bool = False) -> dict:
    rng = np.random.default_rng(n)
    ids = rng.integers(0, 7, (n, 2)).astype(np.int32)
    if bad:
        ids[n // 2, 1] = 7
    return {"ids": ids, "labels": rng.integers(0, 3, n).astype(np.int32)}


def test_embedding_classifier_trains_the_same_on_llvm_and_numpy():
    results = []
    for backend in ("numpy", "llvm"):
        loss, params = _classifier()
        step = sg.compile_step(loss, sg.optim.SGD(lr=0.5), backend=backend)
        losses = [float(step(**_data())) for _ in range(4)]
        results.append((losses, [p.value for p in params]))
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-5)
    assert results[0][0][-1] < results[0][0][0]  # it learns
    for got, want in zip(results[1][1], results[0][1]):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", ["numpy", "llvm", "cuda"])
def test_out_of_range_ids_raise_and_change_nothing(backend, request):
    if backend == "cuda":
        request.getfixturevalue("emulated")
    E = _E()
    ids = sg.input("ids", shape=("N",), dtype="int32")
    f = sg.function(E[ids], backend=backend)
    for bad, value in (([0, 5, 1], 5), ([-6, 0], -6)):
        with pytest.raises(IndexError, match=rf"index {value} is out of bounds for axis 0 "
                           r"with size 5 \(take: the indices 'ids': valid indices are -5 to 4"):
            f(ids=np.array(bad, np.int32))
    x = sg.input("x", shape=("N",), dtype="float64")  # computed indices: a hidden check
    g = sg.function(E[sg.cast(x, "int32")], backend=backend)
    with pytest.raises(IndexError, match="the computed indices: valid indices are -5 to 4"):
        g(x=np.array([0.0, 9.0]))
    np.testing.assert_array_equal(g(x=np.array([4.0, -5.0])), E.value[[4, 0]])
    loss, params = _classifier()
    step = sg.compile_step(loss, sg.optim.SGD(lr=0.5), backend=backend)
    before = [p.value for p in params]
    with pytest.raises(IndexError, match="index 7 is out of bounds for axis 0 with size 7"):
        step(**_data(bad=True))
    for p, b in zip(params, before):
        np.testing.assert_array_equal(p.value, b)


def test_indexing_spellings_and_errors():
    a = sg.input("a", shape=(3, 4))
    ids = sg.input("i", shape=(2,), dtype="int32")
    assert a[ids] is sg.take(a, ids, axis=0) and a[:, ids] is sg.take(a, ids, axis=1)
    assert a[ids, ...] is a[ids] and a[:, ids].shape == (3, 2)
    assert sg.take(a, ids).shape == (2,)  # axis=None: of a flattened
    av, iv = np.arange(12.0).reshape(3, 4), np.array([11, -12], np.int32)
    np.testing.assert_array_equal(sg.evaluate(sg.take(a, ids), a=av, i=iv), np.take(av, iv))
    with pytest.raises(TypeError, match="indices must be int32"):
        sg.take(a, sg.input("f", shape=(2,)))
    with pytest.raises(TypeError, match="one array after full slices"):
        a[ids, ids]
    with pytest.raises(sg.ShapeError, match="same number of dimensions"):
        sg.take_along_axis(a, ids, 1)
    with pytest.raises(IndexError, match=r"index 12 is out of bounds.*valid indices are -12"):
        sg.evaluate(sg.take(a, ids), a=av, i=np.array([12, 0], np.int32))
