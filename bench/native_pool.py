"""The native thread pool against the Python one (``python bench/native_pool.py``).

A real symgrad pass (``sum(tanh(X) + exp(-X*X), axis=1)`` over an (N, 64) float32 input,
one output per sample) run through ``NativePool.run`` and ``PythonPool.run`` (the
ThreadPoolExecutor design of llvm_function) on 1 and 2 threads, in interleaved rounds;
medians and minima of the time per run in microseconds. N = 0 is the pool's own cost.
"""

from __future__ import annotations

import ctypes
import os
import sys
import time

import numpy as np

import symgrad as sg
from symgrad.runtime.native_pool import NativePool
from symgrad.runtime.python_pool import PythonPool


def per_sample_pass():
    X = sg.input("X", shape=("N", 64))
    f = sg.function(sg.sum(sg.tanh(X) + sg.exp(-X * X), axis=1))
    lf = f._compiled
    assert lf.buffer_names == ["X", "out0"] and lf.program.kernels[0].name == "pass1"
    return f, lf, lf.library.address(lf.program.kernels[0].name)


def buffers(lf, n: int):
    x = np.random.default_rng(0).standard_normal((n, 64)).astype(np.float32)
    out = np.empty(n, np.float32)
    table = (ctypes.c_void_p * 2)(x.ctypes.data, out.ctypes.data)
    dims = (ctypes.c_int64 * len(lf.dim_names))(*[1 if d == "#threads" else n
                                                  for d in lf.dim_names])
    return x, out, table, dims


def main() -> None:
    f, lf, kernel = per_sample_pass()
    print(f"load average {os.getloadavg()[0]:.2f}; {os.cpu_count()} cores")
    pools = {"native": NativePool(2), "python": PythonPool(2)}
    sizes = [int(a) for a in sys.argv[1:]] or [0, 256, 2048, 20000]
    rows = []
    for n in sizes:
        x, out, table, dims = buffers(lf, n)
        ta, da = ctypes.addressof(table), ctypes.addressof(dims)
        reps = max(20, min(20000, int(2e5 / max(1.0, n * 0.05))))
        cases = {(name, k): (pool, [ta] * k, [n * i // k for i in range(k + 1)])
                 for name, pool in pools.items() for k in (1, 2)}
        times = {c: [] for c in cases}
        for _ in range(15):  # interleaved rounds: outside load hits every case alike
            for c, (pool, tables, bounds) in cases.items():
                run = pool.run
                t0 = time.perf_counter()
                for _ in range(reps):
                    run(kernel, tables, da, bounds)
                times[c].append((time.perf_counter() - t0) / reps * 1e6)
        assert np.array_equal(out, f(X=x)), "the pool's result differs from the function's"
        for c, ts in times.items():
            rows.append((n, *c, float(np.median(ts)), min(ts)))
    print(f"load average {os.getloadavg()[0]:.2f}")
    print("| N | pool | threads | median us | min us |\n| --- | --- | --- | --- | --- |")
    for n, name, k, med, low in rows:
        print(f"| {n} | {name} | {k} | {med:.2f} | {low:.2f} |")
    for pool in pools.values():
        pool.close()


if __name__ == "__main__":
    main()
