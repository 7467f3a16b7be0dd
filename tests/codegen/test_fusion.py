"""Loop fusion of the stages between passes (codegen/fusion.py): values over one shape share
a loop nest only where that is safe, and the results equal the reference."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import symgrad as sg
from symgrad.codegen.lower import lower


def stage_kernels(outputs) -> list[str]:
    return [str(k) for k in lower(outputs).kernels if k.name.startswith("stage")]


def top_level_loops(kernel_text: str) -> int:
    return sum(1 for line in kernel_text.splitlines() if line.startswith("  for "))


def agree(outputs, **feeds) -> None:
    want = sg.evaluate(outputs, **feeds)
    got = sg.function(outputs)(**feeds)
    for w, g in zip(want, got):
        # float32: a matmul of sums that cancel is off by a few ulps of its operands
        scale = max(1.0, float(np.max(np.abs(w), initial=0)))
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5 * scale)


def adam_model(backend: str):
    X = sg.input("X", ("N", 30))
    y = sg.input("y", ("N",), dtype="int32")
    W = sg.param("W", shape=(30, 10), init=0.01)
    loss = sg.mean(sg.cross_entropy(X @ W, y))
    return sg.compile_step(loss, sg.optim.Adam(lr=1e-2), backend=backend), W


def test_an_adam_update_is_one_nest_per_parameter_shape():
    step, W = adam_model("llvm")
    text = step.loop_ir.split("kernel stage1")[1]
    # W's gradient, moments, new value and non-finite counts: one loop over W's 300 elements
    over_w = [line for line in text.splitlines() if line.startswith("  for ") and "0..300:" in line]
    assert len(over_w) == 1, text
    reference, W_ref = adam_model("numpy")
    rng = np.random.default_rng(0)
    feeds = dict(X=rng.standard_normal((50, 30)).astype(np.float32),
                 y=rng.integers(0, 10, 50).astype(np.int32))
    for _ in range(3):
        np.testing.assert_allclose(step(**feeds), reference(**feeds), rtol=1e-5)
    np.testing.assert_allclose(W.value, W_ref.value, rtol=1e-4, atol=1e-6)


def test_a_transpose_of_a_value_of_the_same_stage_is_not_fused():
    W = sg.param("W", init=np.arange(9.0, dtype=np.float32).reshape(3, 3))
    a = sg.exp(W / 10)
    outputs = [a, a.T + 1]
    (stage,) = stage_kernels(outputs)
    assert top_level_loops(stage) == 2, stage
    agree(outputs)


def test_a_nest_read_other_than_row_major_keeps_its_loops():
    W = sg.param("W", init=np.arange(6.0, dtype=np.float32).reshape(2, 3))
    outputs = [sg.exp(W.T) * 2, sg.sum(W, axis=1)]
    for stage in stage_kernels(outputs):
        assert "0..6:" not in stage, stage  # (3, 2) read as W[j, i]: not one flat loop
    agree(outputs)


def test_a_value_reading_a_finished_sum_waits_for_it():
    W = sg.param("W", init=np.arange(1.0, 7.0, dtype=np.float32).reshape(2, 3))
    total = sg.sum(W * W)
    outputs = [W * W, W / total, total]
    agree(outputs)


def test_an_elementwise_chain_and_its_sums_share_one_nest():
    W = sg.param("W", init=np.linspace(-1, 1, 12).astype(np.float32).reshape(3, 4))
    a = sg.tanh(W)
    outputs = [a, a * 2 + W, sg.sum(a), sg.max(a * W)]
    (stage,) = stage_kernels(outputs)
    assert top_level_loops(stage) == 1, stage
    agree(outputs)


UNARY = [lambda x: x * 2 + 1, sg.tanh, lambda x: x.T, lambda x: sg.sum(x, axis=0, keepdims=True)
         + x, lambda x: x @ x, lambda x: x / sg.sum(sg.abs(x) + 1)]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(UNARY) - 1), st.integers(0, 10)), min_size=1,
                max_size=6))
def test_random_stages_between_passes_agree_with_the_reference(program):
    W = sg.param("W", init=np.linspace(-0.9, 0.9, 16).astype(np.float32).reshape(4, 4))
    values = [W]
    for op, src in program:
        values.append(UNARY[op](values[src % len(values)]))
    agree(values[1:])
