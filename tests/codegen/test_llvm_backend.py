"""The LLVM backend agrees with the NumPy reference (``sg.evaluate``).

- every operator (the cases of tests/expr/test_ops.py, and a table of every operator over
  inputs with a batch dimension ``N``), every loss, the gradients of every operator
  (diffhelp's cases), the seed models, Hessians, Jacobians and Hessian-vector products;
- hypothesis-generated graphs over ``()``, ``(3,)``, ``(N,)``, ``(N, 3)`` inputs, float32
  and float64, N = 0, 1, 7 and 40009 (a prime, its passes split over two threads);
- feeds: every bad feed raises what the reference raises, before any code runs;
  non-contiguous inputs; N = 0 and N = 1; parameters assigned between calls;
- determinism for a thread count, and 1 vs 2 threads; the compile cache and the
  inspection strings (LLVM IR, optimized IR, assembly, plan).

Tolerances: float32 results agree to rtol 2e-6 and float64 to 1e-12 where the two backends
do the same arithmetic. A reduction over a long batch is summed in a different order
(NumPy: pairwise, or sequentially along axis 0; LLVM: in vector lanes, per thread), so a
result that reduces over N may differ by rounding that grows with the number of terms:
like eps * sqrt(terms) of its largest entry for the operator table, the losses and the
models (``_sum_tolerance``); up to eps * terms for random graphs, which can sum the same
value N times (``_batch_tolerance``).
"""

from __future__ import annotations

import contextlib
import re

import backend_cases as bc
import numpy as np
import pytest
from diffhelp import OP_CASES, case_feeds, weighted_sum
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_hessian import SMOOTH, rosenbrock, rosenbrock_hessian
from test_hessian import _feeds as smooth_feeds
from test_ops import CASES

import symgrad as sg
from symgrad.codegen.llvm import LLVM_OPS
from symgrad.codegen.lower import LOWERED_OPS
from symgrad.expr.evaluate import graph_inputs
from symgrad.expr.leaves import size
from symgrad.expr.node import ELEMENTWISE, Expr
from symgrad.expr.ops_band import band_matrix
from symgrad.expr.ops_index import SCATTER, normalize_key
from symgrad.expr.table import ALL_OPS
from symgrad.runtime import jit
from symgrad.runtime import llvm_function as llvm_fn

F32, F64 = bc.F32, bc.F64
BIG_N = 40009  # a prime: the two threads' slices differ in length


@contextlib.contextmanager
def thread_count(n: int, split_every_pass: bool = True):
    """``n`` threads; with ``split_every_pass`` a pass over BIG_N samples is split even when
    the runtime would judge it too little work to be worth a second thread."""
    before = sg.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        if split_every_pass:
            mp.setattr(llvm_fn, "MIN_WORK_PER_THREAD", 1)
        sg.set_num_threads(n)
        try:
            yield
        finally:
            sg.set_num_threads(before)


@pytest.fixture
def two_threads():
    with thread_count(2):
        yield


@contextlib.contextmanager
def record_slices(fn):
    """The ``[start, stop)`` slices of the batch that ``fn``'s passes ran on while in the
    block (read from what each call gave its native entry): a pass split over two threads
    makes two."""
    compiled = fn._compiled
    calls: list = []
    entry = compiled._entry

    def call(*args):
        entry(*args)
        for threads, bounds in compiled.last_passes:
            calls.extend(zip(bounds[:threads], bounds[1:threads + 1]))

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(compiled, "_entry", call)
        yield calls


def split_passes(calls: list, n: int) -> int:
    """How many of the recorded passes over ``n`` samples ran as two or more slices."""
    slices = [(lo, hi) for lo, hi in calls if hi > lo]
    return sum(1 for lo, hi in slices if lo == 0 and hi < n)


def llvm(outputs):
    return sg.function(outputs, backend="llvm")


# ---------------------------------------------------------------------------------------
# 1. Operators, losses, derivatives.
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CASES))
def test_operator_case(name):
    """Each operator case of tests/expr/test_ops.py, compiled alone."""
    e, feeds, _, dtype = CASES[name]()
    got = llvm(e)(**feeds)
    want = sg.evaluate(e, **feeds)
    assert got.dtype == dtype
    bc.assert_agree(got, want, what=name)


def _x(dtype):
    return sg.input(f"X{np.dtype(dtype).itemsize}", shape=("N", 3), dtype=dtype)


def _batched_elementwise(dtype) -> list[Expr]:
    """Every elementwise operator on (N, 3) values (positive where the domain needs it)."""
    X = _x(dtype)
    x = sg.input(f"x{np.dtype(dtype).itemsize}", shape=("N",), dtype=dtype)
    k = sg.input("k", shape=("N", 3), dtype="int32")
    flags = sg.input("flags", shape=("N", 3), dtype="bool")
    P = X * X + 0.5
    R = sg.cast(sg.cast(X * 2, "int32"), dtype) * 0.5  # few values: ties for comparisons
    return [
        X + x[:, None], X - 1.5, X * P, X / P, P ** X, P ** 2, X ** 3, P ** -0.5, -X,
        sg.maximum(X, R), sg.minimum(X, R), X < R, X <= R, X > R, X >= R,
        sg.equal(X, R), sg.not_equal(X, R), sg.where(X > 0, X, P), sg.where(flags, X, 2.0),
        sg.exp(X), sg.log(P), sg.log1p(P), sg.expm1(X), sg.sqrt(P), sg.sin(X), sg.cos(X),
        sg.tan(sg.tanh(X)), sg.tanh(X), sg.erf(X), sg.abs(R), sg.sign(R), sg.sigmoid(X * 4),
        sg.relu(R), sg.softplus(X * 4), sg.gelu(X), sg.leaky_relu(X, 0.2), sg.elu(X, 1.5),
        sg.cast(X * 3, "int32"), sg.cast(X, "float64" if dtype == "float32" else "float32"),
        sg.cast(R, "bool"), sg.clip(X, -0.5, 0.75), sg.square(X),
        k * 3 - k, sg.maximum(k, 1) + sg.minimum(k, -1), k > 0, sg.abs(k), k / 2,
    ]


def _batched_tensor(dtype) -> list[Expr]:
    """Every reduction, contraction and shape operator on batched values that is defined
    for N = 0 too."""
    X = _x(dtype)
    x = sg.input(f"x{np.dtype(dtype).itemsize}", shape=("N",), dtype=dtype)
    labels = sg.input("labels", shape=("N",), dtype="int32")
    W = sg.param("W", init=np.arange(12).reshape(3, 4) / 8 - 0.5, dtype=dtype)
    v = sg.const(np.array([0.5, -1.0, 2.0], dtype))
    S = sg.sin(X)
    return [
        sg.sum(S, axis=0), sg.sum(S, axis=1), sg.sum(S), sg.sum(S, axis=0, keepdims=True),
        sg.mean(S, axis=0), sg.mean(S, axis=1, keepdims=True), sg.mean(S),
        sg.max(S, axis=1), sg.min(S, axis=1, keepdims=True), sg.argmax(S, axis=1),
        sg.logsumexp(S, axis=0), sg.logsumexp(S, axis=1), sg.logsumexp(S),
        sg.softmax(S, axis=0), sg.softmax(S, axis=1), sg.log_softmax(S, axis=0),
        sg.log_softmax(S, axis=1),
        X @ W, X @ v, S.T @ X, S.T @ x, x @ S, (X @ W) @ sg.transpose(W), sg.relu(X @ W),
        X.T, sg.transpose(S)[::-1], sg.reshape(X, ("N", 3, 1)), sg.reshape(S, ("N", 1, 3)),
        sg.broadcast_to(v, ("N", 3)), sg.broadcast_to(sg.sum(S, axis=0), ("N", 3)) * X,
        sg.concat([X, S[:, :1]], axis=1), sg.one_hot(labels, 4, dtype),
        sg.one_hot(labels, 4, dtype) @ sg.transpose(W), X[:, 0], X[:, ::-2], X[:, 1:],
        X[..., None], X[None], Expr(SCATTER, (S[:, 1:],), (normalize_key(
            ("N", 3), (slice(None), slice(1, None))), ("N", 3))),
        band_matrix((3, 3), [(sg.sum(S, axis=0), 0, 1), (sg.mean(X, axis=0), 1, 0)]),
        size(("N", 3)) * sg.mean(S), (S - sg.mean(S, axis=0)) / sg.sqrt(
            sg.mean((S - sg.mean(S, axis=0)) ** 2, axis=0) + 1e-5),
        sg.sum(sg.cast(X > 0, "int32"), axis=0), sg.mean(sg.cast(X > 0, "int32")),
    ]


def _batched_nonempty(dtype) -> list[Expr]:
    """Operators the reference refuses on an empty batch (max/min/argmax over N, an int
    index on N): the LLVM backend raises the same errors."""
    X = _x(dtype)
    S = sg.cos(X)
    return [sg.max(S, axis=0), sg.min(S), sg.max(S, axis=0, keepdims=True) - S,
            sg.argmax(X, axis=0), sg.argmax(X[:, 0]), X[0], X[-1], S[-1, 2]]


def _batched_feeds(dtype, n, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    size_ = np.dtype(dtype).itemsize
    return {f"X{size_}": rng.standard_normal((n, 3)).astype(dtype),
            f"x{size_}": rng.standard_normal(n).astype(dtype),
            "k": rng.integers(-5, 6, (n, 3)).astype(np.int32),
            "flags": rng.random((n, 3)) < 0.5,
            "labels": rng.integers(0, 4, n).astype(np.int32)}


BATCHED = {"elementwise": _batched_elementwise, "tensor": _batched_tensor,
           "nonempty": _batched_nonempty}


def _batch_tolerance(dtype, n: int, terms_per_sample: int = 3) -> dict:
    """rtol/atol for results that sum over the batch in the worst case: a sum of n equal
    terms, accumulated one after the other in a lane, is off by up to eps * terms."""
    eps = np.finfo(dtype).eps
    r = max(bc.RTOL[np.dtype(dtype)], eps * n * terms_per_sample / 4)
    return {"rtol": r, "atol": r}


def _sum_tolerance(dtype, terms: int) -> dict:
    """For a result that reduces over the batch: rounding errors of a sum of ``terms``
    terms of either sign grow like eps * sqrt(terms), relative to its largest entry."""
    return {"norm_rtol": 2 * np.finfo(dtype).eps * max(1, terms) ** 0.5}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("group", sorted(BATCHED))
def test_every_operator_over_a_batch(group, dtype, two_threads):
    """One compiled function per group: the operators inside a pass over N (per sample,
    accumulated over N, or stored whole), at N = 0, 1, 7 and a prime split over threads."""
    outs = BATCHED[group](dtype)
    fn = llvm(outs)
    llvm_fn._thread_pool()  # (the pool's own native code compiles once per process)
    compiles = jit.stats.compile_count
    for n in (0, 1, 7, BIG_N):
        feeds = bc.needed_feeds(outs, _batched_feeds(dtype, n, seed=n))
        got = bc.check_outputs(fn, outs, feeds, what=f"{group} N={n}",
                               **_sum_tolerance(dtype, 3 * n))
        if group == "nonempty":
            assert (got == ()) == (n == 0)  # N = 0: both raised the same error
    assert jit.stats.compile_count == compiles  # a new N never recompiles


def test_every_operator_in_the_table_runs_on_llvm():
    reached: set[str] = set()
    for build in CASES.values():
        reached |= bc.ops_in(build()[0])
    for build in BATCHED.values():
        reached |= bc.ops_in(build("float32"))
    for build in OP_CASES.values():
        reached |= bc.ops_in(build()[0])
    names = {op.name for op in ALL_OPS}
    assert not names - reached, f"operators never compiled here: {sorted(names - reached)}"
    for op in ALL_OPS:  # each is spelled by the LLVM table, decomposed, or lowered to loops
        if op.kind == ELEMENTWISE:
            assert op in LLVM_OPS or op.decompose is not None, op.name
        else:
            assert op in LOWERED_OPS, op.name


@pytest.mark.parametrize("name", sorted(OP_CASES))
def test_operator_gradient_and_jacobian(name):
    """diffhelp's per-operator cases: the value, a weighted scalar of it, its gradients
    (simplified) by every float input, and the Jacobian by the first (float64)."""
    e, wrts, _ = OP_CASES[name]()
    f = weighted_sum(e, seed=1)
    floats = [w for w in wrts if w.dtype.kind == "f"]
    outs = [e, f, *sg.grad(f, floats)]
    if name != "bands":  # forward derivatives of bands with a batch of tangents: none
        outs.append(sg.jacobian(e, floats[0]))
    fn = llvm(outs)
    for seed in (0, 1):
        bc.check_outputs(fn, outs, bc.needed_feeds(outs, case_feeds(seed)), what=name)


def _loss_graph(dtype):
    Z = sg.input("Z", shape=("N", 4), dtype=dtype)
    T = sg.input("T", shape=("N", 4), dtype=dtype)
    labels = sg.input("labels", shape=("N",), dtype="int32")
    W = sg.param("W", init=np.eye(4) * 0.8 + 0.05, dtype=dtype)
    c = sg.param("c", init=np.array([0.1, -0.2, 0.3, 0.0]), dtype=dtype)
    pred = Z @ W + c
    probs = sg.softmax(T, axis=1)
    losses = []
    for r in ("mean", "sum", "none"):
        losses += [sg.mse(pred, T, reduction=r), sg.mae(pred, T, reduction=r),
                   sg.huber(pred, T, delta=0.7, reduction=r),
                   sg.smooth_l1(pred, T, beta=0.5, reduction=r),
                   sg.cross_entropy(pred, labels, reduction=r),
                   sg.cross_entropy(pred, probs, reduction=r),
                   sg.nll(sg.log_softmax(pred, axis=1), labels, reduction=r),
                   sg.binary_cross_entropy_with_logits(pred, sg.sigmoid(T), reduction=r)]
    for r in ("mean", "sum", "none", "batchmean"):
        losses += [sg.kl_div(sg.log_softmax(pred, axis=1), sg.relu(probs - 0.2), reduction=r),
                   sg.kl_div(sg.log_softmax(pred, axis=1), sg.log_softmax(T, axis=1),
                             reduction=r, log_target=True)]
    total = sum(sg.sum(loss) for loss in losses)
    return losses + [total, *sg.grad(total, [W, c])]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_loss_and_its_gradients(dtype):
    outs = _loss_graph(dtype)
    fn = llvm(outs)
    for n in (0, 1, 7, 1031):
        rng = np.random.default_rng(n)
        feeds = {"Z": rng.standard_normal((n, 4)).astype(dtype),
                 "T": rng.standard_normal((n, 4)).astype(dtype),
                 "labels": rng.integers(0, 4, n).astype(np.int32)}
        bc.check_outputs(fn, outs, feeds, what=f"losses N={n}", **_sum_tolerance(dtype, 4 * n))


SEED_MODELS = {
    "linear_regression": (bc.linear_regression, bc.linear_regression_feeds, 1),
    "softmax_regression": (bc.softmax_regression, bc.softmax_regression_feeds, 784),
    "relu_mlp": (bc.relu_mlp, bc.relu_mlp_feeds, 8),
}


@pytest.mark.parametrize("model", sorted(SEED_MODELS))
def test_seed_model_loss_and_gradients(model, two_threads):
    build, make_feeds, width = SEED_MODELS[model]
    outs = build()
    fn = llvm(outs)
    sizes = (1, 7, 2053) if model == "softmax_regression" else (1, 7, BIG_N)
    for n in sizes:  # a sum of `width` products per sample, then over the batch
        bc.check_outputs(fn, outs, make_feeds(n, seed=n), what=f"{model} N={n}",
                         **_sum_tolerance("float32", n * width))


def test_rosenbrock_hessian_gradient_and_hvp():
    f, x = rosenbrock(7)
    v = sg.input("v", shape=(7,), dtype="float64")
    outs = [f, sg.grad(f, x), sg.hessian(f, x), sg.hvp(f, x, v)]
    fn = llvm(outs)
    rng = np.random.default_rng(7)
    for xv in (rng.uniform(-2, 2, 7), np.ones(7)):
        feeds = {"x": xv, "v": rng.standard_normal(7)}
        _, _, H, hv = bc.check_outputs(fn, outs, feeds, what="rosenbrock")
        np.testing.assert_allclose(H, rosenbrock_hessian(xv), rtol=1e-13, atol=1e-10)
        np.testing.assert_allclose(hv, rosenbrock_hessian(xv) @ feeds["v"], rtol=1e-12,
                                   atol=1e-10)


def test_least_squares_hessian_with_a_batch(two_threads):
    outs = bc.least_squares_hessian()
    fn = llvm(outs)
    for n in (1, 7, BIG_N):
        feeds = bc.least_squares_feeds(n)
        got = bc.check_outputs(fn, outs, feeds, what=f"least squares N={n}",
                               **_sum_tolerance("float64", 3 * n))
        Xv = feeds["Xls"]
        np.testing.assert_allclose(got[3], 2 * Xv.T @ Xv / n, rtol=1e-10)


@pytest.mark.parametrize("name", sorted(SMOOTH))
def test_hessian_and_hvp_of_smooth_functions(name):
    """tests/diff/test_hessian.py's functions of a vector or a matrix."""
    f = SMOOTH[name]()
    wrt = graph_inputs([f])["M23" if name == "matrix_arg" else "x3"]
    v = sg.input("v", shape=wrt.shape, dtype="float64")
    outs = [f, sg.hessian(f, wrt), sg.hvp(f, wrt, v)]
    feeds = {**smooth_feeds(3), "v": np.random.default_rng(9).standard_normal(wrt.shape)}
    bc.check_outputs(llvm(outs), outs, bc.needed_feeds(outs, feeds), what=name)


# ---------------------------------------------------------------------------------------
# 2. Random graphs over a symbolic batch.
# ---------------------------------------------------------------------------------------

GRAPH_SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                HealthCheck.data_too_large])


def _check_random_graph(plan: tuple, dtype, sizes, seed: int) -> None:
    L = bc.LEAVES[np.dtype(dtype)]
    outs = bc.graph_outputs(bc.build(plan, L), L)
    fn = llvm(outs)
    for n in sizes:
        tol = _batch_tolerance(dtype, n) if n > 7 else {}
        bc.check_random_graph(fn, plan, np.dtype(dtype), n, seed, amplify=64 + n / 16, **tol)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@settings(GRAPH_SETTINGS, max_examples=40)
@given(plan=bc.batch_graphs(), seed=st.integers(0, 2**16))
def test_random_graphs(dtype, plan, seed):
    """Random graphs and their gradients, N = 0, 1 and 7 (one compile, three batches)."""
    _check_random_graph(plan, dtype, (0, 1, 7), seed)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@settings(GRAPH_SETTINGS, max_examples=10)
@given(plan=bc.batch_graphs(), seed=st.integers(0, 2**16))
def test_random_graphs_large_prime_batch(dtype, plan, seed):
    """N = 40009: two threads, each with its own partial accumulators."""
    with thread_count(2):
        _check_random_graph(plan, dtype, (BIG_N,), seed)


# ---------------------------------------------------------------------------------------
# 3. Feeds.
# ---------------------------------------------------------------------------------------


def _feed_graph():
    X = sg.input("X", shape=("N", 3))
    y = sg.input("y", shape=("N",))
    labels = sg.input("labels", shape=("N",), dtype="int32")
    scale = sg.input("scale", shape=())
    flags = sg.input("flags", shape=(3,), dtype="bool")
    w = sg.param("w", init=np.array([1.0, -2.0, 0.5]))
    pred = X @ sg.where(flags, w, 0.0) * scale
    loss = sg.mean((pred - y) ** 2) + sg.mean(sg.cross_entropy(X, labels))
    return [loss, pred, *sg.grad(loss, [w])]


def _good_feeds(n=4):
    rng = np.random.default_rng(0)
    return {"X": rng.standard_normal((n, 3)).astype(np.float32),
            "y": rng.standard_normal(n).astype(np.float32),
            "labels": rng.integers(0, 3, n).astype(np.int32),
            "scale": np.float32(1.5), "flags": np.array([True, False, True])}


BAD_FEEDS = {
    "missing": lambda f: {k: v for k, v in f.items() if k != "y"},
    "two_missing": lambda f: {k: v for k, v in f.items() if k not in ("y", "X")},
    "typo": lambda f: {**{k: v for k, v in f.items() if k != "y"}, "yy": f["y"]},
    "wrong_rank": lambda f: {**f, "X": f["X"][:, 0]},
    "wrong_rank_scalar": lambda f: {**f, "scale": np.ones(1, np.float32)},
    "wrong_size": lambda f: {**f, "X": np.zeros((4, 2), np.float32)},
    "wrong_fixed_size": lambda f: {**f, "flags": np.array([True, False])},
    "n_bound_twice": lambda f: {**f, "y": np.zeros(5, np.float32)},
    "n_bound_twice_labels": lambda f: {**f, "labels": np.zeros(3, np.int32)},
    "string": lambda f: {**f, "y": "abcd"},
    "none": lambda f: {**f, "scale": None},
    "object_array": lambda f: {**f, "y": np.array([object()] * 4)},
    "string_array": lambda f: {**f, "y": np.array(["a", "b", "c", "d"])},
    "int_not_exact_in_float": lambda f: {**f, "X": np.full((4, 3), 2**24 + 1, np.int32)},
    "float_into_int": lambda f: {**f, "labels": np.zeros(4, np.float32)},
    "float_into_bool": lambda f: {**f, "flags": np.ones(3, np.float32)},
    "int_out_of_range": lambda f: {**f, "labels": np.array([0, 1, 2**40, 2])},
    "label_out_of_range": lambda f: {**f, "labels": np.array([0, 1, 3, 2], np.int32)},
}


@pytest.mark.parametrize("case", sorted(BAD_FEEDS))
def test_bad_feed_raises_what_the_reference_raises(case, monkeypatch):
    outs = _feed_graph()
    compiled = llvm(outs)
    reference = sg.function(outs, backend="numpy")
    feeds = BAD_FEEDS[case](_good_feeds())
    with pytest.raises(Exception) as ref_error:
        reference(**feeds)
    with pytest.raises(Exception) as ref_eval_error:
        sg.evaluate(outs, **feeds)
    assert type(ref_eval_error.value) is type(ref_error.value)
    ran = []
    monkeypatch.setattr(compiled._compiled, "_entry", lambda *args: ran.append(args))
    for call in (compiled, compiled._compiled):  # sg.function, and the runtime object alone
        with pytest.raises(type(ref_error.value)) as error:
            call(**feeds)
        assert str(error.value) == str(ref_error.value)
    assert ran == []  # nothing ran: every check comes first


def test_label_out_of_range_raises_as_the_reference():
    """The reference checks one_hot's labels while it runs."""
    labels = sg.input("labels", shape=("N",), dtype="int32")
    e = sg.one_hot(labels, 3)
    bad = {"labels": np.array([0, 3], np.int32)}
    with pytest.raises(ValueError) as want:
        sg.evaluate(e, **bad)
    with pytest.raises(ValueError) as got:
        llvm(e)(**bad)
    assert str(got.value) == str(want.value)


def test_good_feeds_of_every_accepted_kind():
    outs = _feed_graph()
    fn = llvm(outs)
    feeds = _good_feeds()
    variants = {
        "arrays": feeds,
        "lists": {**feeds, "y": feeds["y"].tolist(), "X": feeds["X"].tolist(), "scale": 1.5,
                  "flags": [True, False, True], "labels": feeds["labels"].tolist()},
        "float64_into_float32": {**feeds, "X": feeds["X"].astype(np.float64)},
        "int_list_into_float": {**feeds, "y": [1, 2, 3, 4]},
        "int64_labels": {**feeds, "labels": feeds["labels"].astype(np.int64)},
        "big_endian": {**feeds, "X": feeds["X"].astype(">f4")},
        "read_only": {**feeds, "y": np.frombuffer(feeds["y"].tobytes(), np.float32)},
        "numpy_scalar": {**feeds, "scale": np.float64(1.5)},
    }
    for name, v in variants.items():
        bc.check_outputs(fn, outs, v, what=name)


def _layouts(a: np.ndarray) -> dict:
    """The same values, laid out differently in memory."""
    wide = np.zeros((a.shape[0] * 2, a.shape[1] * 2 + 1), a.dtype)
    wide[::2, 1::2] = a
    rev = np.ascontiguousarray(a[::-1, ::-1])
    return {"contiguous": a, "fortran": np.asfortranarray(a), "steps": wide[::2, 1::2],
            "transposed_view": np.ascontiguousarray(a.T).T, "negative_steps": rev[::-1, ::-1],
            "column_of_wider": np.ascontiguousarray(np.hstack([a, a]))[:, :3]}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_non_contiguous_inputs_give_the_same_result(dtype, two_threads):
    X = sg.input("Xc", shape=("N", 3), dtype=dtype)
    y = sg.input("yc", dtype=dtype)
    W = sg.param("Wc", init=np.arange(6).reshape(3, 2) / 4, dtype=dtype)
    loss = sg.mean(sg.logsumexp(X @ W, axis=1) - y) + sg.sum(sg.max(X, axis=0))
    outs = [loss, sg.tanh(X) * y[:, None], *sg.grad(loss, [W, X])]
    fn = llvm(outs)
    for n in (1, 7, BIG_N):
        rng = np.random.default_rng(n)
        a = rng.standard_normal((n, 3)).astype(dtype)
        yv = rng.standard_normal(2 * n).astype(dtype)
        base = fn(Xc=a, yc=yv[::2].copy())
        for name, layout in _layouts(a).items():
            np.testing.assert_array_equal(layout, a)
            got = fn(Xc=layout, yc=yv[::2])  # y: a strided view too
            for g, b in zip(got, base):  # the same numbers in, the same bits out
                np.testing.assert_array_equal(g, b, err_msg=f"{name} N={n}")
        bc.check_outputs(fn, outs, {"Xc": _layouts(a)["steps"], "yc": yv[::2]},
                         **_sum_tolerance(dtype, 3 * n))


def test_batch_of_zero_and_one():
    x = sg.input("x")
    X = sg.input("X", shape=("N", 3))
    w = sg.param("w", init=np.array([1.0, 2.0, 3.0]))
    loss = sg.mean((X @ w - x) ** 2)
    outs = [loss, sg.sum(X, axis=0), sg.softmax(X, axis=1), X @ w, *sg.grad(loss, [w, X]),
            sg.logsumexp(x), sg.mean(X, axis=0)]
    fn = llvm(outs)
    for n in (0, 1):
        feeds = {"x": np.full(n, 0.5, np.float32), "X": np.ones((n, 3), np.float32)}
        got = bc.check_outputs(fn, outs, feeds, what=f"N={n}")
        assert got[3].shape == (n,)
    empty = fn(x=np.zeros(0, np.float32), X=np.zeros((0, 3), np.float32))
    assert np.isnan(empty[0]) and np.all(empty[1] == 0) and empty[6] == -np.inf


def test_index_and_max_over_an_empty_batch_raise_as_the_reference(monkeypatch):
    """x[-1], x[0] and max over N = 0 samples: the reference raises NumPy's error; compiled
    code would read out of bounds or return -inf. The kernels must not run."""
    x = sg.input("x")
    for e in (x[-1], x[0], sg.max(x), sg.min(x * 2), sg.argmax(x), sg.sum(x) + x[-1]):
        fn = llvm(e)
        monkeypatch.setattr(fn._compiled, "_entry", None)
        with pytest.raises(Exception) as want:
            sg.evaluate(e, x=np.zeros(0, np.float32))
        with pytest.raises(type(want.value)) as got:
            fn(x=np.zeros(0, np.float32))
        assert str(got.value) == str(want.value), str(e)
        monkeypatch.undo()
        bc.assert_agree(fn(x=np.array([2.0, -1.0], np.float32)),
                        sg.evaluate(e, x=np.array([2.0, -1.0], np.float32)))


def test_parameter_assignment_is_seen_by_the_next_call():
    x = sg.input("x")
    w = sg.param("w", init=np.array([1.0, 2.0]))
    b = sg.param("b", init=0.5)
    X2 = sg.input("X2", shape=("N", 2))
    outs = [sg.mean(X2 @ w + b * x), X2 @ w, w * 1, b]
    fn = llvm(outs)
    feeds = {"x": np.arange(3, dtype=np.float32), "X2": np.ones((3, 2), np.float32)}
    first = bc.check_outputs(fn, outs, feeds)
    w.value = [3.0, -1.0]
    b.value = 2
    second = bc.check_outputs(fn, outs, feeds)
    assert not np.array_equal(first[0], second[0])
    np.testing.assert_array_equal(second[2], [3.0, -1.0])
    with pytest.raises(ValueError, match="read-only"):
        w.value[0] = 7.0  # a snapshot: writing it in place would silently do nothing
    w.value = [7.0, -1.0]
    third = bc.check_outputs(fn, outs, feeds)
    np.testing.assert_array_equal(third[1], [6.0, 6.0, 6.0])
    third[3][...] = 99.0  # a result is a copy, never the parameter itself
    third[2][...] = 99.0
    assert b.value == 2.0 and w.value[1] == -1.0


def test_outputs_that_are_leaves_are_copies():
    x = sg.input("x")
    c = sg.const([1.0, 2.0])
    outs = [x, c, size(("N",)), x * 2]
    fn = llvm(outs)
    data = np.array([1.0, 2.0, 3.0], np.float32)
    got = bc.check_outputs(fn, outs, {"x": data})
    got[0][...] = 0
    got[1][...] = 0
    assert data[0] == 1.0 and fn(x=data)[1][0] == 1.0


# ---------------------------------------------------------------------------------------
# 4. Determinism and threads.
# ---------------------------------------------------------------------------------------


def _agree_to_rounding(got, want, terms: int, what: str = "") -> None:
    """Two results of the backend (1 and 2 threads): the same dtype and shape, values within
    the rounding of a sum of ``terms`` terms."""
    want = np.asarray(want)
    norm = _sum_tolerance(want.dtype, terms)["norm_rtol"] * np.max(np.abs(want), initial=0)
    bc.assert_agree(got, want, atol=bc.RTOL.get(want.dtype, 0) + norm, what=what)


def _thread_model():
    outs = bc.relu_mlp() + bc.linear_regression()
    L = bc.LEAVES[F32]
    e = sg.softmax(L.inputs["X"] - sg.mean(L.inputs["X"], axis=0), axis=1)
    outs += bc.graph_outputs(e, L)
    feeds = {**bc.relu_mlp_feeds(BIG_N), **bc.linear_regression_feeds(BIG_N),
             **L.feeds(BIG_N, 5)}
    return outs, bc.needed_feeds(outs, feeds)


def test_repeated_calls_are_bit_identical():
    outs, feeds = _thread_model()
    fn = llvm(outs)
    for t in (1, 2):
        with thread_count(t), record_slices(fn) as calls:
            first = fn(**feeds)
            for _ in range(3):
                for a, b in zip(fn(**feeds), first):
                    np.testing.assert_array_equal(a, b)
        assert bool(split_passes(calls, BIG_N)) == (t == 2)


def test_one_and_two_threads_agree_to_rounding():
    outs, feeds = _thread_model()
    fn = llvm(outs)
    with thread_count(1):
        one = fn(**feeds)
    with thread_count(2), record_slices(fn) as calls:
        two = fn(**feeds)
    passes = [(lo, hi) for lo, hi in calls if hi > lo]
    slices = 2 * llvm_fn.SLICES_PER_THREAD  # (claimed by whichever thread is free)
    assert passes and all(hi - lo in (BIG_N // slices, BIG_N // slices + 1)
                          for lo, hi in passes)
    for i, (a, b) in enumerate(zip(one, two)):
        _agree_to_rounding(b, a, 3 * BIG_N, what=f"output {i}")


def test_a_heavy_pass_is_split_by_the_runtimes_own_rule():
    """Softmax regression over 8191 samples (~10^8 operations) is worth two threads by
    the runtime's own measure (no patching); light work stays on one thread."""
    outs = bc.softmax_regression()
    fn = llvm(outs)
    n = 8191
    feeds = bc.softmax_regression_feeds(n)
    with thread_count(2, split_every_pass=False), record_slices(fn) as calls:
        two = fn(**feeds)
    assert split_passes(calls, n) == 1
    with thread_count(2, split_every_pass=False), record_slices(fn) as calls:
        fn(**bc.softmax_regression_feeds(7))
    assert split_passes(calls, 7) == 0
    with thread_count(1, split_every_pass=False), record_slices(fn) as calls:
        one = fn(**feeds)
    assert split_passes(calls, n) == 0
    bc.check_outputs(fn, outs, feeds, **_sum_tolerance("float32", n * 784))
    for a, b in zip(one, two):
        _agree_to_rounding(b, a, n * 784)


# ---------------------------------------------------------------------------------------
# 5. The compile cache and what a compiled function shows.
# ---------------------------------------------------------------------------------------


def test_an_equal_graph_is_not_compiled_again():
    marker = float(np.random.default_rng().uniform(1, 2))  # a graph no other test made
    x = sg.input("x")
    w = sg.param("w", init=0.5)
    before = jit.stats.compile_count
    fn = llvm([sg.mean((w * x - marker) ** 2), sg.grad(sg.mean((w * x - marker) ** 2), w)])
    assert jit.stats.compile_count == before + 1
    w2 = sg.param("w", init=0.5)  # a new parameter, an equal graph
    again = llvm([sg.mean((w2 * x - marker) ** 2), sg.grad(sg.mean((w2 * x - marker) ** 2),
                                                          w2)])
    assert jit.stats.compile_count == before + 1
    for n in (3, 17, 0):  # a new batch size is a runtime argument
        data = np.linspace(-1, 1, n).astype(np.float32)
        for a, b in zip(fn(x=data), again(x=data)):
            np.testing.assert_array_equal(a, b)
    assert jit.stats.compile_count == before + 1


def test_inspection_strings():
    fn = llvm(bc.linear_regression())
    for text in (fn.source, fn.optimized_source, fn.asm, fn.plan, fn.loop_ir):
        assert isinstance(text, str) and text.strip()
    assert "define" in fn.source and "define" in fn.optimized_source
    assert "1 pass over N" in fn.plan
    with pytest.raises(AttributeError):
        _ = sg.function(bc.linear_regression(), backend="numpy").source


_LIBM = r"@(?:expf?|logf?|log1pf?|expm1f?|tanhf?|powf?|sinf?|cosf?|erff?)\b"
_LIBM_INTRINSIC = r"@llvm\.(?:exp|exp2|log|log2|pow|sin|cos|tanh)\."


def test_linear_regression_ir_is_vectorized_without_libm_calls():
    fn = llvm(bc.linear_regression())
    ir = fn.optimized_source
    assert re.search(r"<(?:4|8|16) x float>", ir), "no vector type in the optimized IR"
    assert not re.search(_LIBM, ir) and not re.search(_LIBM_INTRINSIC, ir)


def test_transcendentals_do_not_call_libm():
    x, y = sg.inputs("x y")
    w, b = sg.params("w b", init=0.3)
    z = w * x + b
    loss = sg.binary_cross_entropy_with_logits(z, y) + sg.mean(
        sg.log(sg.exp(z) + 1) + sg.tanh(z) + sg.log1p(z * z) + sg.expm1(-z * z) + sg.erf(z))
    fn = llvm([loss, *sg.grad(loss, [w, b])])
    ir, asm = fn.optimized_source, fn.asm
    assert re.search(r"<(?:4|8|16) x float>", ir)
    assert not re.search(_LIBM, ir) and not re.search(_LIBM_INTRINSIC, ir)
    assert not re.search(r"call\w*\s+\*?(?:expf?|logf?|tanhf?|log1pf?|expm1f?|erff?)\b", asm)
