"""Seeing every stage of a compiled training step: softmax regression 784 -> 10.

Prints the derivative formulas (text and LaTeX), the step's plan (what each pass over the
batch fuses), the loop IR every backend is generated from, the head of the LLVM IR and of
the machine code, and the same step as CUDA C (compiled to cubins for sm_80 and sm_90 when
NVRTC or nvcc is installed; run when there is a GPU).

Run: python examples/inspect_kernels.py [--lines 40]
"""

from __future__ import annotations

import sys

import numpy as np

import symgrad as sg
from symgrad.runtime import cuda_compile
from symgrad.runtime.cuda_driver import NoCudaDriverError


def head(text: str, lines: int) -> str:
    rows = text.splitlines()
    more = f"\n... ({len(rows) - lines} more lines)" if len(rows) > lines else ""
    return "\n".join(rows[:lines]) + more


def code_start(asm: str, label: str = "pass1") -> str:
    """The assembly from the first pass's label (skipping the constant pools and the small
    stages before the data), else from the first function's."""
    rows = asm.splitlines()
    starts = [i for i, row in enumerate(rows)
              if row.endswith(":") and not row.startswith((".", "\t", " "))]
    for i in [i for i in starts if rows[i] == f"{label}:"] + starts:
        return "\n".join(rows[max(i - 3, 0):])
    return asm


def section(title: str) -> None:
    print(f"\n{'=' * 8} {title} {'=' * max(60 - len(title), 4)}")


def main(argv: list[str]) -> None:
    lines = int(argv[argv.index("--lines") + 1]) if "--lines" in argv else 40

    X = sg.input("X", shape=("N", 784))
    labels = sg.input("labels", dtype="int32")
    W = sg.param("W", shape=(784, 10), init=sg.init.normal(0.0, 0.01, seed=0))
    c = sg.param("c", shape=(10,), init=0.0)
    loss = sg.cross_entropy(X @ W + c, labels)  # the mean over the batch

    section("the loss")
    print(loss)
    print(sg.latex(loss))

    section("its derivatives (simplified), as text and LaTeX")
    for p in (W, c):
        g = sg.grad(loss, p)
        print(f"d loss / d {p.name} {g.shape} = {g}")
        print(f"    LaTeX: {sg.latex(g)}")

    step = sg.compile_step(loss, sg.optim.SGD(lr=0.1))
    section("the compiled step's plan (loss, gradients and SGD update)")
    print(step.plan)

    section("the step's loop IR (what the LLVM IR and CUDA C are generated from)")
    # (a Step has no public ``loop_ir`` yet: its compiled function has; for loss and
    # gradients alone, ``sg.function([loss, *sg.grad(loss, [W, c])]).loop_ir``)
    print(step.loop_ir)

    section(f"LLVM IR, first {lines} lines ({len(step.source.splitlines())} in all)")
    print(head(step.source, lines))

    asm = step.asm
    section(f"assembly, first {lines} lines of code ({len(asm.splitlines())} in all)")
    print(head(code_start(asm), lines))

    rng = np.random.default_rng(0)
    batch = {"X": rng.random((256, 784), dtype=np.float32),
             "labels": rng.integers(0, 10, 256).astype(np.int32)}
    section("running it")
    for i in range(3):
        print(f"step {i + 1}: loss {step(**batch):.5f}")

    gpu_step = sg.compile_step(loss, sg.optim.SGD(lr=0.1), backend="cuda")
    kernel_at = gpu_step.source.index("// pass 1")
    section(f"CUDA C, the kernels' first {lines} lines "
            f"({len(gpu_step.source.splitlines())} in all, with the helpers)")
    print(head(gpu_step.source[kernel_at:], lines))
    if cuda_compile.compiler() is not None:
        sizes = ", ".join(f"{arch} {len(gpu_step.cubin(arch))} bytes"
                          for arch in cuda_compile.ARCHS)
        print(f"\ncompiled with {cuda_compile.compiler()}: {sizes}")
    try:
        for i in range(3):
            print(f"GPU step {i + 1}: loss {gpu_step(**batch):.5f}")
    except NoCudaDriverError as error:
        print(f"\nnot run here: {error}")


if __name__ == "__main__":
    main(sys.argv[1:])
