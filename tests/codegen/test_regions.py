"""Bounded code for large models (codegen/regions.py, codegen/llvm_region.py): loops over a
tile capped in weight, heavy expressions cut into parts, runs of statements compiled as
functions of their own. With the bounds made tiny, every model below is cut into many
pieces, and every result must still agree with the NumPy reference."""

from __future__ import annotations

import re

import backend_cases as bc
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import symgrad as sg
from symgrad.codegen import llvm, regions
from symgrad.codegen import loopir as L


@pytest.fixture
def tiny_bounds(monkeypatch):
    """Bounds far below any model's size: the code of each test is cut everywhere, and
    kernels take the pointer table instead of one argument per buffer."""
    monkeypatch.setattr(llvm, "MAX_BUFFER_ARGS", 3)
    monkeypatch.setattr(regions, "LOOP_WEIGHT", 40)
    monkeypatch.setattr(regions, "EXPR_WEIGHT", 12)
    monkeypatch.setattr(regions, "REGION_WEIGHT", 60)


def region_functions(f) -> int:
    return len(re.findall(r'define internal void @"[^"]*\.region\d+"', f.source))


def _chain(x, depth: int):
    e = x
    for i in range(depth):
        e = sg.tanh(e) * 1.01 if i % 2 else e + 0.5
    return e


def test_the_benchmarked_models_are_not_cut():
    """The bounds sit far above the models of ``bench/``: their code is as before."""
    outs = bc.softmax_regression(features=20, classes=4)
    f = sg.function(outs)
    assert region_functions(f) == 0
    assert "region" not in str(f.loop_ir)
    X = sg.input("X", ("N", 784))
    labels = sg.input("labels", ("N",), dtype="int32")
    W1 = sg.param("W1", shape=(784, 256), init=sg.init.normal(0.0, 0.05, seed=0))
    b1 = sg.param("b1", shape=(256,), init=0.0)
    W2 = sg.param("W2", shape=(256, 10), init=sg.init.normal(0.0, 0.05, seed=1))
    b2 = sg.param("b2", shape=(10,), init=0.0)
    loss = sg.mean(sg.cross_entropy(sg.gelu(X @ W1 + b1) @ W2 + b2, labels))
    step = sg.compile_step(loss, sg.optim.Adam())
    assert region_functions(step) == 0


def test_a_deep_chain_is_cut_into_bounded_functions():
    """The largest function LLVM sees is the same size for a chain 10x deeper: compile
    time grows with the number of pieces, linearly, not with the square of one piece."""
    x = sg.input("x")
    sizes = []
    for depth in (200, 2000):
        e = sg.sum(_chain(x, depth))
        f = sg.function([e, *sg.grad(e, [x])], passes={"optimize": False})
        bodies = re.split(r"\ndefine ", f.source)[1:]
        sizes.append(max(body.count("\n  %") for body in bodies))
        if depth == 2000:
            assert region_functions(f) >= 10
            xs = np.linspace(-1, 1, 300).astype(np.float32)
            got = f(x=xs)
            want = sg.evaluate([e, *sg.grad(e, [x])], x=xs)
            np.testing.assert_allclose(got[0], want[0], rtol=1e-4)
            np.testing.assert_allclose(got[1], want[1], rtol=1e-3, atol=1e-6)
    assert sizes[1] <= 1.5 * sizes[0] + 2000, sizes


def test_a_long_product_is_cut_into_parts():
    """A derivative's product of hundreds of factors is one expression; it is cut into
    named parts, each of bounded weight."""
    x = sg.input("x")
    e = sg.sum(_chain(x, 400))
    f = sg.function([e, *sg.grad(e, [x])])
    assert "part" in str(f.loop_ir)
    xs = np.linspace(-1, 1, 50).astype(np.float32)
    got = f(x=xs)
    np.testing.assert_allclose(got[1], sg.evaluate(sg.grad(e, [x]), x=xs)[0], rtol=1e-3,
                               atol=1e-6)


MODELS = {
    "softmax": (lambda: bc.softmax_regression(features=30, classes=5),
                lambda n: bc.softmax_regression_feeds(n, features=30, classes=5)),
    "relu mlp": (bc.relu_mlp, bc.relu_mlp_feeds),
    "linear": (bc.linear_regression, bc.linear_regression_feeds),
}


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("threads", [1, 2])
def test_models_cut_everywhere_agree_with_the_reference(tiny_bounds, model, threads):
    build, feeds = MODELS[model]
    outs = build()
    before = sg.get_num_threads()
    sg.set_num_threads(threads)
    try:
        f = sg.function(outs)
        assert region_functions(f) > 0
        for n in (0, 1, 255, 256, 257, 1031):
            bc.check_outputs(f, outs, feeds(n), what=f"{model} N={n}", norm_rtol=1e-5)
    finally:
        sg.set_num_threads(before)


def test_reductions_of_every_kind_cut_everywhere(tiny_bounds):
    """Accumulators reached by pointer from a region: sum, max, min, argmax, prod."""
    X = sg.input("X", ("N", 6))
    y = sg.input("y", ("N",))
    z = sg.tanh(X * 0.7 + 0.1) * sg.exp(-y[:, None] ** 2)
    outs = [sg.sum(z, axis=0), sg.max(z, axis=0), sg.min(z), sg.argmax(z, axis=1),
            sg.prod(1 + 0.01 * z, axis=0), sg.mean(sg.softplus(z) * y[:, None])]
    f = sg.function(outs)
    assert region_functions(f) > 0
    rng = np.random.default_rng(3)
    for n in (0, 1, 7, 300):
        feeds = {"X": rng.standard_normal((n, 6)).astype(np.float32),
                 "y": rng.standard_normal(n).astype(np.float32)}
        bc.check_outputs(f, outs, feeds, what=f"N={n}", norm_rtol=1e-5)


def test_an_adam_step_cut_everywhere_matches_one_uncut(tiny_bounds, monkeypatch):
    """Three Adam steps, the step cut into pieces and not: the same parameters."""
    loss = bc.relu_mlp()[0]
    feeds = bc.relu_mlp_feeds(64, seed=4)
    cut = sg.compile_step(loss, sg.optim.Adam(lr=0.01))
    assert region_functions(cut) > 0
    start = [np.array(p.value, copy=True) for p in cut.params]
    for _ in range(3):
        cut(**feeds)
    after_cut = [np.array(p.value, copy=True) for p in cut.params]
    monkeypatch.undo()
    for p, v in zip(cut.params, start):
        p.value = v
    whole = sg.compile_step(loss, sg.optim.Adam(lr=0.01))
    assert region_functions(whole) == 0
    for _ in range(3):
        whole(**feeds)
    assert any(not np.array_equal(p.value, v) for p, v in zip(whole.params, start))
    for p, want in zip(whole.params, after_cut):
        np.testing.assert_allclose(p.value, want, rtol=1e-5, atol=1e-7, err_msg=str(p))


@settings(deadline=None, max_examples=25)
@given(plan=bc.batch_graphs(), seed=st.integers(0, 2**16))
def test_random_graphs_cut_everywhere(plan, seed):
    """Random graphs and their gradients, with the bounds tiny (set inside: hypothesis
    runs the body many times per fixture)."""
    saved = regions.LOOP_WEIGHT, regions.EXPR_WEIGHT, regions.REGION_WEIGHT
    saved_args = llvm.MAX_BUFFER_ARGS
    regions.LOOP_WEIGHT, regions.EXPR_WEIGHT, regions.REGION_WEIGHT = 40, 12, 60
    llvm.MAX_BUFFER_ARGS = 3
    try:
        L = bc.LEAVES[bc.F32]
        outs = bc.graph_outputs(bc.build(plan, L), L)
        fn = sg.function(outs, passes={"simplify": False})
        for n in (0, 1, 7):
            bc.check_random_graph(fn, plan, bc.F32, n, seed)
    finally:
        regions.LOOP_WEIGHT, regions.EXPR_WEIGHT, regions.REGION_WEIGHT = saved
        llvm.MAX_BUFFER_ARGS = saved_args


def test_a_cut_never_strands_a_value_read_after_it():
    """A heavy ``Let`` read after scratch is allocated (a cut the bounds force) stays
    outside any region, and the kernel builds (a second reading found it wrapped)."""
    f32 = np.dtype("float32")
    heavy = L.Load("a", L.Const(0, L.INT), f32)
    for _ in range(120):
        heavy = L.Op("exp", (heavy,), f32)
    assert regions.expr_weight(heavy) > regions.REGION_WEIGHT
    body = [L.Let("x", heavy), L.Alloc("s", f32, L.Const(4, L.INT)),
            L.Store("out", L.Const(0, L.INT), L.Local("x", f32))]
    cut = regions.bounded(body)
    assert not any(isinstance(s, L.Region) for s in cut)
    buffers = [L.Buffer("a", f32, "input", (1,)), L.Buffer("out", f32, "output", (1,))]
    kernel = L.Kernel("k", buffers, [], cut)
    assert "define" in llvm.render_llvm([kernel], {"a": 0, "out": 1}, {})


def test_tile_scratch_past_the_stack_is_refused_clearly(monkeypatch):
    """A pass whose tile scratch would not fit the calling thread's stack is refused when
    it compiles (naming the pass and the size), never run into a crash."""
    from symgrad.codegen import lower_tiles

    monkeypatch.setattr(lower_tiles, "SCRATCH_LIMIT", 1024)
    outs = bc.softmax_regression(features=30, classes=5)
    with pytest.raises(NotImplementedError, match=r"pass1: the pass needs .* MiB of tile "
                                                  r"scratch .* stack"):
        sg.function(outs)
