"""Deep graphs compile without recursing as deep as the graph: inlined chains are cut every
``MAX_INLINE_DEPTH`` operators into registers or buffers."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import symgrad as sg
from symgrad.codegen.schedule import MAX_INLINE_DEPTH


@pytest.fixture
def shallow_stack():
    """A recursion limit far below the graph's depth: any walk that recurses per node
    fails (the default 1,000 would need graphs too slow for LLVM to optimize in a test)."""
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(300, 6 * MAX_INLINE_DEPTH + 100))
    yield
    sys.setrecursionlimit(old)


def _chain(x, depth: int):
    e = x
    for i in range(depth):
        e = e * 0.999 + (sg.sin(x) if i % 50 == 0 else 0.001)
    return e


def test_a_chain_deeper_than_the_stack_compiles(shallow_stack):
    x = sg.input("x")
    e = sg.sum(_chain(x, 700))   # 1,400 operators, each inlined into the next
    f = sg.function(e)
    xs = np.linspace(-1, 1, 37).astype(np.float32)
    np.testing.assert_allclose(f(x=xs), sg.evaluate(e, x=xs), rtol=1e-4)
    assert "s" in f.plan  # the chain is cut into per-sample registers


def test_a_long_sum_of_inputs_compiles(shallow_stack):
    xs = [sg.input(f"x{i}") for i in range(600)]
    total = xs[0]
    for v in xs[1:]:
        total = total + v
    f = sg.function(sg.mean(total))
    feeds = {f"x{i}": np.full(5, i, np.float32) for i in range(600)}
    assert float(f(**feeds)) == pytest.approx(sum(range(600)))
