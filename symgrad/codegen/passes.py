"""The compiler as a straight list of named passes, each timed, the optional ones switchable.

    derive     symbolic derivatives (``compile_step``)
    simplify   the rewrite rules: stable forms, folded constants, shared terms
    schedule   composites decomposed, the work ordered into passes over the batch
    lower      the loop IR: tiles, contractions, reductions, fused stages
    render     LLVM IR text or CUDA C
    jit        LLVM's optimizer and code generator (or the memory/disk cache)

``sg.function(..., passes={"fuse": False})`` switches an optional pass off (to read what it
did, or to rule it out when looking for a bug); ``f.timings`` / ``step.timings`` say where the
compile time went, in seconds, pass by pass.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping

PASSES = ("derive", "simplify", "schedule", "lower", "render", "jit")
# what can be switched off, and what is left without it
SWITCHES = {
    "simplify": "the outputs compiled as written (compile_step still derives)",
    "fuse": "each value of a stage between passes in its own loop nest",
    "registers": "intermediates read only in the loop that writes them stored in buffers",
    "blas": "contractions over a tile as loop nests instead of BLAS calls",
    "optimize": "LLVM's -O3 pipeline skipped (unvectorized, slow code; fast to compile)",
}


class Compilation:
    """Which optional passes run, and how long each pass took (``timings``)."""

    def __init__(self, passes: Mapping[str, bool] | None = None):
        chosen = dict(passes or {})
        for name, on in chosen.items():
            if name not in SWITCHES:
                raise ValueError(f"passes: unknown pass {name!r}; the passes that can be "
                                 f"switched are {', '.join(sorted(SWITCHES))}")
            if not isinstance(on, bool):
                raise TypeError(f"passes[{name!r}] must be True or False, got {on!r}")
        self.enabled = {name: True for name in SWITCHES} | chosen
        self.timings: dict[str, float] = {}

    def on(self, name: str) -> bool:
        """Whether the optional pass ``name`` runs."""
        return self.enabled[name]

    @contextlib.contextmanager
    def timed(self, name: str) -> Iterator[None]:
        """Add the time the block takes to pass ``name``'s timing."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t0

    def report(self) -> str:
        """One line per pass that ran: its time, and the switched-off passes."""
        lines = [f"{name:<9} {self.timings[name] * 1e3:9.2f} ms" for name in PASSES
                 if name in self.timings]
        off = [name for name, on in self.enabled.items() if not on]
        if off:
            lines.append("off: " + ", ".join(off))
        return "\n".join(lines)
