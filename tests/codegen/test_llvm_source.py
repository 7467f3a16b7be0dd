"""The LLVM IR in ``.source`` reads against the plan: each kernel's arguments are named
after its buffers (``%X``, ``%W1``, ``%labels``) and a comment above it lists the values it
computes, one line each, as the CUDA source does."""

from __future__ import annotations

import re

import numpy as np

import symgrad as sg


def _model():
    X = sg.input("X", shape=("N", 3))
    labels = sg.input("labels", dtype="int32")
    W1 = sg.param("W1", init=np.ones((3, 2), np.float32))
    return X, labels, W1, sg.cross_entropy(sg.relu(X @ W1), labels)


def test_arguments_are_named_after_the_buffers():
    X, labels, W1, loss = _model()
    f = sg.function([loss, *sg.grad(loss, [W1])])
    heads = re.findall(r'define internal void @"(\w+)\.body"\(([^)]*)\)', f.source)
    assert heads
    for _, args in heads:
        names = re.findall(r'%"([^"]+)"', args)
        assert names[-3:] == ["dims", "start", "stop"]
        assert not any(n.startswith(".") for n in names), args  # no anonymous %".1"
    first = re.findall(r'%"([^"]+)"', heads[0][1])
    assert {"X", "labels", "W1"} <= set(first)
    assert re.search(r'%"N" = load i64', f.source)  # the batch size by its name
    got = f(X=np.ones((4, 3), np.float32), labels=np.zeros(4, np.int32))
    want = sg.evaluate([loss, *sg.grad(loss, [W1])], X=np.ones((4, 3), np.float32),
                       labels=np.zeros(4, np.int32))
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-6)


def test_a_comment_per_fused_value():
    _, _, _, loss = _model()
    f = sg.function(loss)
    plan_values = [line.strip() for line in f.plan.splitlines()
                   if re.match(r"\s+(s|out)\d+:", line)]
    assert plan_values
    comments = re.findall(r"^;   (.*)$", f.source, re.M)
    assert comments == plan_values
    assert re.search(r'^; pass1: a pass over the batch, computing:\n;   s0: matmul',
                     f.source, re.M)
    # the comments are above the definition they describe, and the module still parses
    at = f.source.index("; pass1:")
    assert f.source.index('define internal void @"pass1.body"') > at
