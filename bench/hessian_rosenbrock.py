"""Rosenbrock Hessian at d = 1000: symgrad's structured Hessian formula, evaluated by the
NumPy reference evaluator, side by side with jax.hessian under jax.jit (and NumPy's own
hand-written tridiagonal Hessian as the floor), on the same machine and inputs.

Run: python bench/hessian_rosenbrock.py [d]
"""

from __future__ import annotations

import platform
import sys
import time

import numpy as np

import symgrad as sg


def median_time(f, repeat: int = 50) -> float:
    f()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def numpy_hessian(x: np.ndarray) -> np.ndarray:
    """The Rosenbrock Hessian written by hand (the floor: one dense d x d write)."""
    d = len(x)
    h = np.zeros((d, d))
    diag = np.zeros(d)
    diag[:-1] = 1200 * x[:-1] ** 2 - 400 * x[1:] + 2
    diag[1:] += 200
    off = -400 * x[:-1]
    idx = np.arange(d - 1)
    h[idx, idx + 1] = off
    h[idx + 1, idx] = off
    h[np.arange(d), np.arange(d)] = diag
    return h


def main(d: int = 1000) -> None:
    rng = np.random.default_rng(0)
    xv = rng.uniform(-1, 1, d)
    x = sg.input("x", shape=(d,), dtype="float64")
    f = sg.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)
    t = time.perf_counter()
    hess = sg.hessian(f, x)
    build = time.perf_counter() - t
    fn = sg.function(hess)
    assert np.allclose(fn(x=xv), numpy_hessian(xv))
    rows = [("symgrad (numpy evaluator)", median_time(lambda: fn(x=xv)))]
    rows.append(("numpy, hand-written", median_time(lambda: numpy_hessian(xv))))
    try:
        import jax
        import jax.numpy as jnp

        jax.config.update("jax_enable_x64", True)

        def rosen(z):
            return jnp.sum(100 * (z[1:] - z[:-1] ** 2) ** 2 + (1 - z[:-1]) ** 2)

        jh = jax.jit(jax.hessian(rosen))
        xj = jnp.asarray(xv)
        assert np.allclose(np.asarray(jh(xj)), numpy_hessian(xv))
        rows.append((f"jax {jax.__version__} jit(hessian)",
                     median_time(lambda: np.asarray(jh(xj)))))
    except ImportError:
        print("jax not installed: pip install jax (benchmark peer only)")
    print(f"Rosenbrock Hessian, d = {d}, float64; {platform.processor() or platform.machine()},"
          f" Python {platform.python_version()}")
    print(f"symgrad: Hessian formula of {sg.count_ops(hess)} nodes, built in {build*1e3:.1f} ms")
    base = rows[0][1]
    print(f"{'':28s} {'median ms':>10s} {'vs symgrad':>11s}")
    for name, sec in rows:
        print(f"{name:28s} {sec*1e3:10.3f} {sec / base:10.2f}x")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
