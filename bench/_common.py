"""Shared helpers for the benchmark scripts: the machine line, interleaved timing with medians,
the streaming read bandwidth of this machine, the optional peers (jax, torch) and the pieces
of the hand-written NumPy steps (Adam, softmax cross entropy's backward).

Not a benchmark itself; each script in bench/ imports it (``python bench/<script>.py`` puts
bench/ on sys.path).
"""

from __future__ import annotations

import math
import os
import platform
import threading
import time
from collections.abc import Callable

import numpy as np


def cpu_description() -> str:
    """'AMD EPYC (znver3), 2 cores, AVX2, no AVX-512' from /proc/cpuinfo and LLVM's host name."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
    except OSError:
        pass
    try:
        import llvmlite.binding as llvm

        llvm.initialize_native_target()
        model += f" ({llvm.get_host_cpu_name()})"
    except Exception:  # noqa: BLE001 - the name is decoration only
        pass
    isa = ("AVX-512" if "avx512f" in flags else "AVX2, no AVX-512" if "avx2" in flags
           else "no AVX2")
    return f"{model}, {os.cpu_count()} cores, {isa}"


def versions() -> str:
    import llvmlite

    import symgrad as sg

    parts = [f"Python {platform.python_version()}", f"NumPy {np.__version__}",
             f"symgrad {sg.__version__}", f"llvmlite {llvmlite.__version__}"]
    jax, torch = import_jax(quiet=True), import_torch(quiet=True)
    if jax is not None:
        parts.append(f"jax {jax.__version__}")
    if torch is not None:
        parts.append(f"torch {torch.__version__} ({torch.get_num_threads()} threads)")
    return ", ".join(parts)


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def machine_line() -> str:
    return f"{cpu_description()}; {versions()}"


def import_jax(quiet: bool = False):
    """jax with float32 defaults, or None (with a note) when it is not installed."""
    try:
        import jax
    except ImportError:
        if not quiet:
            print("note: jax not installed, skipped (pip install jax; benchmark peer only)")
        return None
    return jax


def import_torch(quiet: bool = False):
    """torch, or None (with a note) when it is not installed."""
    try:
        import torch
    except ImportError:
        if not quiet:
            print("note: torch not installed, skipped (pip install torch==2.13.0; "
                  "benchmark peer only)")
        return None
    return torch


def time_interleaved(fns: dict[str, Callable[[], object]], repeat: int,
                     warmup: int = 2) -> dict[str, np.ndarray]:
    """Seconds per call of each function, ``repeat`` rounds; each round calls every function
    once in turn, so load from other processes falls on all of them alike."""
    for f in fns.values():
        for _ in range(warmup):
            f()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, f in fns.items():
            t = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t)
    return {name: np.asarray(ts) for name, ts in times.items()}


def _parallel(fn: Callable[[np.ndarray], object], a: np.ndarray, threads: int) -> Callable:
    bounds = [len(a) * t // threads for t in range(threads + 1)]
    parts = [a[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:])]

    def run() -> None:
        workers = [threading.Thread(target=fn, args=(p,)) for p in parts]
        for w in workers:
            w.start()
        for w in workers:
            w.join()

    return run


def streaming_read_bandwidth(gib: float = 1.0, repeat: int = 7) -> dict[str, float]:
    """GB/s (1e9 bytes) read by NumPy reductions over a ``gib`` GiB float32 array (far larger
    than any cache): np.sum on 1 thread, np.sum on 2 threads (each over one half, NumPy
    releases the GIL), np.max on 2 threads, and np.dot(a, b) (OpenBLAS sdot, reads 2 arrays).
    Median of ``repeat`` rounds, interleaved."""
    n = int(gib * 2**30) // 4
    a = np.ones(n, np.float32)
    b = np.ones(n, np.float32)
    threads = max(2, os.cpu_count() or 1)
    fns = {
        "np.sum, 1 thread": lambda: a.sum(),
        f"np.sum, {threads} threads": _parallel(np.sum, a, threads),
        f"np.max, {threads} threads": _parallel(np.max, a, threads),
        "np.dot(a, b), OpenBLAS": lambda: np.dot(a, b),
    }
    times = time_interleaved(fns, repeat, warmup=1)
    nbytes = {name: (2 if "dot" in name else 1) * a.nbytes for name in fns}
    return {name: nbytes[name] / float(np.median(ts)) / 1e9 for name, ts in times.items()}


class NumpyAdam:
    """torch.optim.Adam's equations (its defaults), in place, float32: the hand-written NumPy
    peers' optimizer. ``step(grads)`` updates ``params`` (arrays, 0-d included) in place."""

    def __init__(self, params: list[np.ndarray], lr: float = 1e-3, beta1: float = 0.9,
                 beta2: float = 0.999, eps: float = 1e-8):
        self.params, self.t = params, 0
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]

    def step(self, grads: list[np.ndarray]) -> None:
        self.t += 1
        step_size = np.float32(self.lr / (1 - self.beta1 ** self.t))
        bc2_sqrt = np.float32(math.sqrt(1 - self.beta2 ** self.t))
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m *= np.float32(self.beta1)
            m += np.float32(1 - self.beta1) * g
            v *= np.float32(self.beta2)
            v += np.float32(1 - self.beta2) * (g * g)
            denom = np.sqrt(v)
            denom /= bc2_sqrt
            denom += np.float32(self.eps)
            p -= step_size * m / denom


def softmax_ce_backward(z: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross entropy of logits z (overwritten) and its gradient dL/dz (in z's buffer)."""
    n = len(z)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=1)
    rows = np.arange(n)
    loss = float(np.mean(np.log(s) - z[rows, labels]))
    e /= s[:, None]
    e[rows, labels] -= 1
    e *= np.float32(1.0 / n)
    return loss, e


def print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:{'<' if i == 0 else '>'}{w}}}" for i, w in enumerate(widths))
    print(fmt.format(*header))
    for r in rows:
        print(fmt.format(*r))
