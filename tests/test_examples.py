"""Every script in examples/ runs as a user would run it (``python examples/NAME.py`` from the
repository root, in a fresh interpreter), exits 0 and prints what it is there to show."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(p.name for p in (ROOT / "examples").glob("*.py"))


def run_example(name: str, *args: str, timeout: float = 180) -> str:
    # the compile cache of the test session (conftest) and a headless matplotlib
    env = {**os.environ, "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / name), *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (f"{name} exited with {proc.returncode}\n--- stdout\n"
                                  f"{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}")
    return proc.stdout


def floats(text: str) -> list[float]:
    return [float(v) for v in re.findall(r"-?\d+\.\d+(?:e[-+]?\d+)?", text)]


def test_every_example_has_a_test():
    tested = {"linear_regression.py", "digits.py", "mnist_shaped.py", "inspect_kernels.py",
              "derivative_table.py",
              "data_parallel.py"}  # (under mpiexec: tests/runtime/test_mpi.py)
    assert set(EXAMPLES) == tested, "a new example needs a test here"


def test_linear_regression():
    out = run_example("linear_regression.py")
    assert "d loss/d w1: " in out and "1 pass over N" in out
    rows = {int(m.group(1)): floats(m.group(2))
            for m in re.finditer(r"^\s*(\d+)\s+(-?\d+\.\d+\s+.*)$", out, re.M)}
    # the first three steps of the worked example, by hand from the gradient formulas
    x1, x2 = np.array([2, 1, 3, -1, -3.0]), np.array([3, 1, -1, 1, -2.0])
    y = np.array([18, 10, 8, 6, -7.0])
    w1, w2, b = 5.0, 8.0, -2.0
    for i in (1, 2, 3):
        r = w1 * x1 + w2 * x2 + b - y
        loss = np.mean(r**2)
        w1, w2, b = (w1 - 0.02 * 2 * np.mean(r * x1), w2 - 0.02 * 2 * np.mean(r * x2),
                     b - 0.02 * 2 * np.mean(r))
        np.testing.assert_allclose(rows[i], [loss, w1, w2, b], atol=1e-4, err_msg=f"step {i}")
    last = rows[max(rows)]
    np.testing.assert_allclose(last[1:], [2, 3, 5], atol=1e-3)  # the least-squares fit
    big = re.search(r"1,000,000 points.*w1 (\S+) w2 (\S+) b (\S+)", out)
    assert big, out
    np.testing.assert_allclose([float(v) for v in big.groups()], [3, -2, 0.5], atol=0.01)


def test_digits():
    pytest.importorskip("sklearn")
    out = run_example("digits.py")
    soft = re.search(r"softmax regression: test accuracy (\d\.\d+)", out)
    hidden = re.search(r"one hidden layer .*: test accuracy (\d\.\d+)", out)
    assert soft and hidden, out
    assert float(soft.group(1)) > 0.93 and float(hidden.group(1)) > 0.95


def test_mnist_shaped():
    out = run_example("mnist_shaped.py")
    ms = re.findall(r"(\d+\.\d+) ms/step", out)
    assert len(ms) == 2 and all(float(v) > 0 for v in ms), out
    epochs = [floats(line) for line in re.findall(r"epoch \d+: (.*)", out)]
    assert len(epochs) == 3
    assert epochs[-1][0] < epochs[0][0]  # the training loss falls
    assert float(re.search(r"held-out accuracy (\d\.\d+)", out).group(1)) > 0.9


def test_inspect_kernels():
    out = run_example("inspect_kernels.py")
    assert "d loss / d W (784, 10) = X.T@(softmax(X@W + c, axis=1) - one_hot(labels, 10))/N" \
        in out
    assert r"\frac{X^{T}" in out  # LaTeX
    assert "plan: 1 pass over N" in out
    assert "kernel pass1(" in out  # the loop IR
    assert "define " in out  # LLVM IR
    asm = out.split("assembly, first")[1]
    assert re.search(r"^pass1:$", asm, re.M)  # the machine code of the first pass
    assert len(re.findall(r"^\t[a-z]\w*\t", asm, re.M)) > 20  # instructions
    assert re.search(r"step 3: loss \d", out)
    cuda = out.split("CUDA C, the kernels' first")[1]
    assert 'extern "C" __global__ void __launch_bounds__(256) pass1(' in cuda
    assert "const float* __restrict__ X" in cuda
    assert "compiled with " in cuda and "sm_90 " in cuda
    assert "GPU step 3: loss" in cuda or "no CUDA driver was found" in cuda


def test_derivative_table():
    out = run_example("derivative_table.py")
    assert "| softmax regression | `W` |" in out
