"""The CUDA backend, verified without a GPU.

- every generated kernel source is compiled to cubins for sm_80 and sm_90 (NVRTC, else
  nvcc); a compile error fails the test with the numbered source in the message;
- the same unchanged source runs on the CPU emulator (tests/cuda: g++ -std=c++20, one OS
  thread per CUDA thread, 64-thread blocks, at most 3 blocks, so grid-stride loops, warp
  shuffles, shared memory and the block-order combine are all exercised) and agrees with the
  NumPy reference: every operator, every loss, the gradients of every operator, the seed
  models, Hessians, random graphs and the training steps of the examples;
- the source reads well: named after the model, one comment line per kernel, grid-stride
  passes, no float atomics.
"""

from __future__ import annotations

import sys
from pathlib import Path

import backend_cases as bc
import numpy as np
import pytest
from diffhelp import OP_CASES, case_feeds, weighted_sum
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_llvm_backend import (
    BATCHED,
    SEED_MODELS,
    _batch_tolerance,
    _batched_feeds,
    _loss_graph,
    _sum_tolerance,
)
from test_ops import CASES

import symgrad as sg
from symgrad.codegen.cuda import render_cuda
from symgrad.codegen.cuda_ops import CUDA_OPS
from symgrad.codegen.llvm import LLVM_OPS
from symgrad.codegen.lower import lower
from symgrad.expr.node import ELEMENTWISE
from symgrad.expr.table import ALL_OPS
from symgrad.runtime import cuda_compile

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cuda"))
from emulated_driver import gxx_available  # noqa: E402

needs_compiler = pytest.mark.skipif(cuda_compile.compiler() is None,
                                    reason="no CUDA compiler (NVRTC or nvcc) installed")
needs_emulator = pytest.mark.skipif(not gxx_available(),
                                    reason="the CUDA emulator needs g++ with -std=c++20")


emulated = bc.emulated  # the fixture: every CUDA function of the module on the emulator


def cuda_source(outputs) -> str:
    return render_cuda(lower(list(outputs), target="gpu")).source


def assert_cubins(outputs) -> None:
    """The generated source compiles for every architecture CI checks."""
    source = cuda_source(outputs)
    for arch in cuda_compile.ARCHS:
        cubin = cuda_compile.compile_cubin(source, arch)
        assert cubin[:4] == b"\x7fELF", arch


def cuda(outputs):
    return sg.function(outputs, backend="cuda")


# ---------------------------------------------------------------------------------------
# 1. The tables and the compiler.
# ---------------------------------------------------------------------------------------


def test_every_elementwise_operator_has_a_cuda_spelling():
    for op in ALL_OPS:  # spelled, or compiled through its decomposition
        if op.kind == ELEMENTWISE:
            assert op in CUDA_OPS or op.decompose is not None, op.name
    assert set(CUDA_OPS) == set(LLVM_OPS)  # the two backends spell the same operators


@needs_compiler
def test_a_compile_error_carries_the_numbered_source():
    bad = 'extern "C" __global__ void k(float* x) {\n  x[0] = undefined_name;\n}\n'
    with pytest.raises(cuda_compile.CudaCompileError) as info:
        cuda_compile.compile_cubin(bad, "sm_80")
    msg = str(info.value)
    assert "undefined_name" in msg and "    2    x[0] = undefined_name;" in msg
    assert "sm_80" in msg


def test_compile_cubin_rejects_an_arch_it_cannot_mean():
    with pytest.raises(ValueError, match="sm_80"):
        cuda_compile.compile_cubin("", "compute_80")


# ---------------------------------------------------------------------------------------
# 2. Operators, losses, derivatives: cubins, and emulated results against NumPy.
# ---------------------------------------------------------------------------------------


@needs_compiler
@needs_emulator
@pytest.mark.parametrize("name", sorted(CASES))
def test_operator_case(name, emulated):
    """Each operator case of tests/expr/test_ops.py, compiled alone."""
    e, feeds, _, dtype = CASES[name]()
    assert_cubins([e])
    got = cuda(e)(**feeds)
    assert got.dtype == dtype
    bc.assert_agree(got, sg.evaluate(e, **feeds), what=name)


@needs_compiler
def test_nan_propagates_through_the_kinked_activations(emulated):
    """elu/leaky_relu/relu of NaN are NaN, as in NumPy (elu clamped its operand through
    0 before expm1: NaN came out 0; found by tests/codegen/test_differential.py)."""
    x = sg.input("x", ("N",))
    feeds = {"x": np.array([np.nan, -np.inf, -3.0, 0.0, 2.0, np.inf], np.float32)}
    for e in (sg.elu(x, alpha=1.5), sg.leaky_relu(x, 0.1), sg.relu(x), sg.gelu(x)):
        want = sg.evaluate(e, **feeds)
        got = cuda(e)(**feeds)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=str(e))
        bc.assert_agree(got, want, what=str(e))


@needs_compiler
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("group", sorted(BATCHED))
def test_every_operator_over_a_batch(group, dtype, emulated):
    """One function per group: the operators inside a pass over N (per sample, accumulated
    over N, or stored whole) at N = 0, 1, 7 (fewer samples than threads) and 1000 (several
    samples per thread, three blocks)."""
    outs = BATCHED[group](dtype)
    assert_cubins(outs)
    fn = cuda(outs)
    module = fn._compiled._module
    for n in (0, 1, 7, 1000):
        feeds = bc.needed_feeds(outs, _batched_feeds(dtype, n, seed=n))
        got = bc.check_outputs(fn, outs, feeds, what=f"{group} N={n}",
                               **_sum_tolerance(dtype, 3 * n))
        if group == "nonempty":
            assert (got == ()) == (n == 0)
    assert fn._compiled._module is module  # a new N never recompiles


@needs_compiler
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_loss_and_its_gradients(dtype, emulated):
    outs = _loss_graph(dtype)
    assert_cubins(outs)
    fn = cuda(outs)
    for n in (0, 1, 7, 517):
        rng = np.random.default_rng(n)
        feeds = {"Z": rng.standard_normal((n, 4)).astype(dtype),
                 "T": rng.standard_normal((n, 4)).astype(dtype),
                 "labels": rng.integers(0, 4, n).astype(np.int32)}
        bc.check_outputs(fn, outs, feeds, what=f"losses N={n}", **_sum_tolerance(dtype, 4 * n))


@needs_compiler
@pytest.mark.parametrize("name", sorted(OP_CASES))
def test_operator_gradient_and_jacobian(name, emulated):
    """diffhelp's per-operator cases: value, a weighted scalar, its gradients, a Jacobian."""
    e, wrts, _ = OP_CASES[name]()
    f = weighted_sum(e, seed=1)
    floats = [w for w in wrts if w.dtype.kind == "f"]
    outs = [e, f, *sg.grad(f, floats)]
    if name != "bands":
        outs.append(sg.jacobian(e, floats[0]))
    assert_cubins(outs)
    fn = cuda(outs)
    for seed in (0, 1):
        bc.check_outputs(fn, outs, bc.needed_feeds(outs, case_feeds(seed)), what=name)


@needs_compiler
@pytest.mark.parametrize("model", sorted(SEED_MODELS))
def test_seed_model_loss_and_gradients(model, emulated):
    build, make_feeds, width = SEED_MODELS[model]
    outs = build()
    assert_cubins(outs)
    fn = cuda(outs)
    for n in (1, 7, 300):
        bc.check_outputs(fn, outs, make_feeds(n, seed=n), what=f"{model} N={n}",
                         **_sum_tolerance("float32", n * width))


@needs_compiler
def test_least_squares_hessian_with_a_batch(emulated):
    outs = bc.least_squares_hessian()
    assert_cubins(outs)
    fn = cuda(outs)
    for n in (1, 7, 401):
        feeds = bc.least_squares_feeds(n)
        got = bc.check_outputs(fn, outs, feeds, what=f"least squares N={n}",
                               **_sum_tolerance("float64", 3 * n))
        np.testing.assert_allclose(got[3], 2 * feeds["Xls"].T @ feeds["Xls"] / n, rtol=1e-10)


GRAPH_SETTINGS = settings(deadline=None, max_examples=8, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])


@needs_compiler
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@GRAPH_SETTINGS
@given(plan=bc.batch_graphs(), seed=st.integers(0, 2**16))
def test_random_graphs(dtype, plan, seed, emulated):
    """Random graphs and their gradients at N = 0, 1, 7 and 600 (three blocks)."""
    L = bc.LEAVES[np.dtype(dtype)]
    outs = bc.graph_outputs(bc.build(plan, L), L)
    assert_cubins(outs)
    fn = cuda(outs)
    for n in (0, 1, 7, 600):
        tol = _batch_tolerance(dtype, n) if n > 7 else {}
        bc.check_random_graph(fn, plan, np.dtype(dtype), n, seed, amplify=64 + n / 16, **tol)


# ---------------------------------------------------------------------------------------
# 3. Training steps of the examples: cubins, and emulated steps against the reference.
# ---------------------------------------------------------------------------------------


def _example_steps():
    """The models the examples train, each with its optimizer (fresh parameters)."""
    x1, x2, y = sg.inputs("x1 x2 y")
    w1, w2, b = sg.params("w1 w2 b", init=0.0)
    linear = sg.mean((w1 * x1 + w2 * x2 + b - y) ** 2)
    X = sg.input("X", shape=("N", 64))
    labels = sg.input("labels", shape=("N",), dtype="int32")
    W = sg.param("W", shape=(64, 10), init=sg.init.normal(0.0, 0.01, seed=0))
    c = sg.param("c", shape=(10,), init=0.0)
    softmax = sg.mean(sg.cross_entropy(X @ W + c, labels))
    hidden = sg.nn.mlp(X, [32, 10], activation=sg.relu, name="net", seed=1)
    mlp = sg.mean(sg.cross_entropy(hidden, labels))
    return {"linear_regression": (linear, sg.optim.SGD(lr=0.02)),
            "softmax_regression": (softmax, sg.optim.SGD(lr=0.5, momentum=0.9)),
            "relu_mlp": (mlp, sg.optim.Adam(lr=1e-2))}


def _example_batches(name: str, n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    if name == "linear_regression":
        a1, a2 = rng.standard_normal(n).astype("f4"), rng.standard_normal(n).astype("f4")
        return {"x1": a1, "x2": a2, "y": (2 * a1 - 3 * a2 + 0.5).astype("f4")}
    return {"X": rng.random((n, 64)).astype("f4"),
            "labels": rng.integers(0, 10, n).astype(np.int32)}


@needs_compiler
@pytest.mark.parametrize("name", ["linear_regression", "softmax_regression", "relu_mlp"])
def test_example_training_steps_agree_with_the_reference(name, emulated):
    """The same model trained 10 steps on the emulated GPU and on the NumPy reference:
    the same losses, parameters and optimizer state."""
    runs = {}
    for backend in ("cuda", "numpy"):
        loss, opt = _example_steps()[name]
        step = sg.compile_step(loss, opt, backend=backend)
        if backend == "cuda":
            for arch in cuda_compile.ARCHS:
                step._function._compiled.cubin(arch)
        losses = [step(**_example_batches(name, 200 + 13 * i, i)) for i in range(10)]
        runs[backend] = (losses, [p.value.copy() for p in step.params],
                         step.optimizer_state)
    (l_gpu, p_gpu, s_gpu), (l_ref, p_ref, s_ref) = runs["cuda"], runs["numpy"]
    np.testing.assert_allclose(l_gpu, l_ref, rtol=2e-5, atol=1e-6)
    for got, want in zip(p_gpu, p_ref):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    for pname in s_ref:
        for k in s_ref[pname]:
            np.testing.assert_allclose(s_gpu[pname][k], s_ref[pname][k], rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------------------
# 4. What the source looks like.
# ---------------------------------------------------------------------------------------


def test_source_is_named_after_the_model_and_commented_per_kernel():
    x1, x2, y = sg.inputs("x1 x2 y")
    w1, b = sg.params("w1 b", init=0.0)
    loss = sg.mean((w1 * x1 + b - y) ** 2)
    source = cuda_source([loss, *sg.grad(loss, [w1, b])])
    assert "const float* __restrict__ x1" in source and "w1[0]" in source
    kernels = [line for line in source.splitlines() if line.startswith('extern "C" __global__')]
    assert len(kernels) == 3  # the pass, its combine kernel, the stage after it
    assert all("__launch_bounds__(256)" in line for line in kernels)
    for i, line in enumerate(source.splitlines()):
        if line.startswith('extern "C" __global__'):
            assert source.splitlines()[i - 1].startswith("//"), line
    assert "for (long long n = start + thread; n < stop; n += (long long)gridDim.x" in source
    assert "sg_block_reduce(" in source and "__shfl_down_sync" in source
    assert "atomicAdd" not in source  # deterministic: partials combined in a fixed order


def test_a_name_that_is_a_cuda_word_is_renamed():
    n = sg.input("n")
    thread = sg.param("thread", init=2.0)
    total = sg.sum(n * thread)
    source = cuda_source([total])
    assert "const float* __restrict__ n_" in source
    assert "thread_[0]" in source


@needs_compiler
def test_names_that_shadow_math_functions_or_are_not_ascii_compile(emulated):
    """An input called ``exp`` must not hide expf/exp; NVRTC takes ASCII names only."""
    exp, theta = sg.input("exp"), sg.param("θ", init=0.5)
    sqrtf = sg.param("sqrtf", init=2.0)
    outs = [sg.sum(sg.exp(exp * theta) + sg.sqrt(sqrtf * exp * exp)), sg.log(exp + 1.0)]
    assert_cubins(outs)
    feeds = {"exp": np.linspace(0.0, 1.0, 5, dtype=np.float32)}
    bc.check_outputs(cuda(outs), outs, feeds, what="math names")


@needs_compiler
def test_max_and_min_of_integers_over_the_batch(emulated):
    """Integer partials start from the type's own extremes (there is no integer infinity)."""
    k = sg.input("kk", dtype="int32")
    K = sg.input("KK", shape=("N", 3), dtype="int32")
    flags = sg.input("ff", shape=("N", 2), dtype="bool")
    outs = [sg.max(k), sg.min(k), sg.max(K, axis=0), sg.min(K, axis=0), sg.max(flags, axis=0),
            sg.min(flags, axis=0)]
    assert_cubins(outs)
    fn = cuda(outs)
    rng = np.random.default_rng(3)
    for n in (1, 7, 500):
        feeds = {"kk": rng.integers(-2**31, 2**31 - 1, n).astype(np.int32),
                 "KK": rng.integers(-9, 9, (n, 3)).astype(np.int32), "ff": rng.random((n, 2)) < 0.9}
        bc.check_outputs(fn, outs, feeds, what=f"integer extremes N={n}")


def test_a_parameter_initialized_from_a_fortran_array_is_row_major():
    W = sg.param("Wf", init=np.asfortranarray(np.arange(6.0).reshape(2, 3)))
    assert W.value.flags.c_contiguous
    x = sg.input("xf", shape=("N", 2))
    np.testing.assert_allclose(sg.function(x @ W)(xf=np.eye(2, dtype=np.float32)),
                               np.arange(6.0).reshape(2, 3))


def test_large_partials_go_to_global_memory_small_ones_stay_in_registers():
    outs = bc.softmax_regression()
    cp = render_cuda(lower(list(outs), target="gpu"))
    slots = list(cp.partials.values())
    assert any(s.in_registers for s in slots) and any(not s.in_registers for s in slots)
    assert "_threads[el * threads + thread]" in cp.source  # interleaved: coalesced


@needs_compiler
def test_fast_math_is_an_explicit_option():
    x = sg.input("x")
    e = sg.exp(x) + sg.log(x)
    prog = lower([e], target="gpu")
    plain, fast = render_cuda(prog).source, render_cuda(prog, fast_math=True).source
    assert "expf(" in plain and "__expf" not in plain
    assert "__expf(" in fast and "__logf(" in fast
    cuda_compile.compile_cubin(fast, "sm_90")
