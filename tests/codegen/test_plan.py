"""The schedule: one pass over the data for the seed models, and every operator lowered."""

import pytest

import symgrad as sg
from symgrad.codegen.lower import LOWERED_OPS, lower
from symgrad.expr.node import ELEMENTWISE
from symgrad.expr.table import ALL_OPS


def linear_regression():
    x1, x2, y = sg.inputs("x1 x2 y")
    w1, w2, b = sg.params("w1 w2 b", init=0.0)
    loss = sg.mean((w1 * x1 + w2 * x2 + b - y) ** 2)
    return [loss, *sg.grad(loss, [w1, w2, b])]


def softmax_regression():
    X = sg.input("X", shape=("N", 784))
    labels = sg.input("labels", shape=("N",), dtype="int32")
    W = sg.param("W", shape=(784, 10))
    c = sg.param("c", shape=(10,))
    loss = sg.mean(sg.cross_entropy(X @ W + c, labels))
    return [loss, *sg.grad(loss, [W, c])]


def batch_norm():
    x = sg.input("x")
    centered = x - sg.mean(x)
    return [sg.sum(centered / sg.sqrt(sg.mean(centered**2) + 1e-5))]


def test_every_operator_is_lowered():
    for op in ALL_OPS:
        assert op.kind == ELEMENTWISE or op in LOWERED_OPS, op.name


@pytest.mark.parametrize("build", [linear_regression, softmax_regression])
def test_seed_models_make_one_pass_over_the_data(build):
    program = lower(build())
    assert program.plan.passes == 1
    assert "1 pass over N" in program.plan_text
    # nothing of length N is stored: every stored value lacks the batch dimension
    stored = [b for b in program.buffers.values() if b.role in ("temp", "partial")]
    assert all("N" not in b.shape for b in stored)


def test_a_normalization_needs_a_second_pass_and_the_plan_says_so():
    # mean, then the variance of the centered values, then the normalized sum
    program = lower(batch_norm())
    assert program.plan.passes == 3
    assert "3 passes over N" in program.plan_text
    assert "stored whole" in program.plan_text


def test_the_plan_and_loop_ir_print():
    program = lower(linear_regression())
    text = str(program)
    assert "pass 1: loop over N" in text and "for n in " in text
