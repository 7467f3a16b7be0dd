"""What the lowering hands to a backend and its runtime: kernels, buffers, accumulators."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from symgrad.codegen import loopir as L
from symgrad.codegen.schedule import Plan
from symgrad.expr.node import Expr


@dataclass
class Accumulator:
    node: Expr
    partial: str  # the per-thread buffer
    target: str  # where the combined value goes
    kind: str  # sum, max, min
    mean_of: tuple | None = None  # dims whose product divides the sum, for a mean
    transposed: bool = False  # the partial holds the transpose of the value


@dataclass
class Program:
    """Everything a backend compiles and the runtime runs, in order."""
    kernels: list[L.Kernel]
    stages: list[int]
    buffers: dict[str, L.Buffer]
    node_buffer: dict[Expr, str]
    accumulators: dict[int, list[Accumulator]]  # by pass stage
    outputs: list[Expr]
    plan: Plan
    plan_text: str
    const_arrays: dict[str, np.ndarray] = field(default_factory=dict)
    dims: list[str] = field(default_factory=list)
    work_per_sample: dict[int, int] = field(default_factory=dict)  # by pass stage, rough ops
    stage_notes: list[list[str]] = field(default_factory=list)  # by kernel: the plan's lines
    # "cpu": each pass kernel sets its own partials to their identity, and the kernel after
    # it combines every thread's partials (``loopir.THREADS`` of them, thread t's at offset
    # t * size) into the targets, means divided; "gpu": the runtime does both
    target: str = "cpu"

    def __str__(self) -> str:
        return self.plan_text + "\n\n" + "\n\n".join(str(k) for k in self.kernels)
