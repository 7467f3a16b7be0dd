"""Linear regression, loss and its three gradients in one call: symgrad's fused LLVM kernel
side by side with hand-written NumPy, PyTorch eager, torch.compile and jax.jit, on the same
float32 inputs in the same process (the design doc's model).

    loss = mean((w1*x1 + w2*x2 + b - y)**2),   f = sg.function([loss, *sg.grad(loss, [w1, w2, b])])

Every peer computes (loss, d/dw1, d/dw2, d/db) from the same arrays; all are checked against a
float64 NumPy reference before timing. Calls are timed in interleaved rounds (each round calls
every peer once) and reported as medians (and minima), with GB/s of input read (3 * 4 * N
bytes per call) against this machine's streaming read bandwidth, measured in the same run.
"rel. err" is the largest relative error of the four numbers against the float64 reference.

Run: python bench/linear_regression.py [N ...]      (default: 1000000 10000000)
"""

from __future__ import annotations

import sys
import time

import numpy as np
from _common import (
    import_jax,
    import_torch,
    load_average,
    machine_line,
    print_table,
    streaming_read_bandwidth,
    time_interleaved,
)

import symgrad as sg

PARAMS = (0.5, -0.3, 0.1)  # w1, w2, b: away from the optimum, so every gradient is O(1)


def make_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x1 = rng.standard_normal(n, dtype=np.float32)
    x2 = rng.standard_normal(n, dtype=np.float32)
    y = (2 * x1 - 3 * x2 + 1 + 0.1 * rng.standard_normal(n, dtype=np.float32)).astype(np.float32)
    return x1, x2, y


def reference(x1, x2, y) -> np.ndarray:
    """float64 loss and gradients: the oracle every peer is checked against."""
    w1, w2, b = PARAMS
    r = w1 * x1.astype(np.float64) + w2 * x2.astype(np.float64) + b - y
    return np.array([np.mean(r * r), 2 * np.mean(r * x1), 2 * np.mean(r * x2), 2 * np.mean(r)])


def numpy_peer(x1, x2, y):
    """Hand-written NumPy: 4 elementwise passes into preallocated float32 buffers, then BLAS
    dot products for the loss and the two weight gradients and a sum for the bias gradient."""
    w1, w2, b = (np.float32(v) for v in PARAMS)
    r, tmp = np.empty_like(x1), np.empty_like(x1)
    inv_n = np.float32(1.0 / len(x1))

    def run():
        np.multiply(x1, w1, out=r)
        np.multiply(x2, w2, out=tmp)
        np.add(r, tmp, out=r)
        np.subtract(r, y, out=r)
        np.add(r, b, out=r)
        two_over_n = 2 * inv_n
        return (np.dot(r, r) * inv_n, np.dot(r, x1) * two_over_n, np.dot(r, x2) * two_over_n,
                r.sum() * two_over_n)

    return run


def symgrad_peer():
    x1, x2, y = sg.inputs("x1 x2 y")
    w1, w2, b = sg.params("w1 w2 b", init=0.0)
    for p, v in zip((w1, w2, b), PARAMS):
        p.value = v
    loss = sg.mean((w1 * x1 + w2 * x2 + b - y) ** 2)
    return sg.function([loss, *sg.grad(loss, [w1, w2, b])], backend="llvm")


def torch_peers(torch, x1, x2, y):
    tx1, tx2, ty = (torch.from_numpy(a) for a in (x1, x2, y))  # zero-copy views

    def loss_fn(w1, w2, b, x1, x2, y):
        return ((w1 * x1 + w2 * x2 + b - y) ** 2).mean()

    wr = [torch.tensor(v, dtype=torch.float32, requires_grad=True) for v in PARAMS]

    def eager():
        loss = loss_fn(*wr, tx1, tx2, ty)
        return loss, *torch.autograd.grad(loss, wr)

    wc = [torch.tensor(v, dtype=torch.float32) for v in PARAMS]
    compiled = torch.compile(torch.func.grad_and_value(loss_fn, argnums=(0, 1, 2)),
                             dynamic=False)

    def comp():
        grads, loss = compiled(*wc, tx1, tx2, ty)
        return loss, *grads

    return eager, comp


def jax_peer(jax, x1, x2, y):
    import jax.numpy as jnp

    def loss_fn(w1, w2, b, x1, x2, y):
        return jnp.mean((w1 * x1 + w2 * x2 + b - y) ** 2)

    f = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1, 2)))
    args = [jnp.float32(v) for v in PARAMS] + [jax.device_put(a) for a in (x1, x2, y)]

    def run():
        loss, grads = jax.block_until_ready(f(*args))
        return loss, *grads

    return run


def as_vector(out) -> np.ndarray:
    return np.array([float(np.asarray(v.detach() if hasattr(v, "detach") else v)) for v in out])


def bench(n: int, bandwidth: float, jax, torch) -> list[list[str]]:
    x1, x2, y = make_data(n)
    f = symgrad_peer()
    feeds = {"x1": x1, "x2": x2, "y": y}

    def sg_threads(k):
        def run():
            sg.set_num_threads(k)
            return f(**feeds)
        return run

    peers = {"symgrad llvm, 2 threads": sg_threads(2), "symgrad llvm, 1 thread": sg_threads(1),
             "NumPy, hand-written": numpy_peer(x1, x2, y)}
    first_call = {}
    if torch is not None:
        eager, comp = torch_peers(torch, x1, x2, y)
        peers["torch eager (autograd.grad)"] = eager
        t = time.perf_counter()
        comp()
        first_call["torch.compile(grad_and_value)"] = time.perf_counter() - t
        peers["torch.compile(grad_and_value)"] = comp
    if jax is not None:
        run = jax_peer(jax, x1, x2, y)
        t = time.perf_counter()
        run()
        first_call["jax.jit(value_and_grad)"] = time.perf_counter() - t
        peers["jax.jit(value_and_grad)"] = run

    ref = reference(x1, x2, y)
    errors = {}
    for name, fn in peers.items():
        got = as_vector(fn())
        errors[name] = float(np.max(np.abs(got - ref) / np.abs(ref)))
        if not np.allclose(got, ref, rtol=1e-3, atol=1e-6):  # float32 sums over N terms
            raise AssertionError(f"{name} disagrees with the float64 reference: {got} vs {ref}")

    repeat = 60 if n <= 2_000_000 else 15
    times = time_interleaved(peers, repeat)
    base = float(np.median(times["symgrad llvm, 2 threads"]))
    nbytes = 3 * 4 * n
    rows = []
    for name, ts in times.items():
        med = float(np.median(ts))
        gbs = nbytes / med / 1e9
        rows.append([name, f"{med * 1e3:.3f}", f"{ts.min() * 1e3:.3f}", f"{med / base:.2f}x",
                     f"{gbs:.1f}", f"{100 * gbs / bandwidth:.0f}%", f"{errors[name]:.1e}"])
    print(f"\nN = {n:,} float32 ({nbytes / 1e6:.0f} MB of input per call), "
          f"median of {repeat} interleaved rounds")
    print_table(["", "median ms", "min ms", "vs symgrad", "GB/s read", "of stream",
                 "rel. err"], rows)
    if first_call:
        print("first call (compile) this size: " + ", ".join(
            f"{k} {v:.2f} s" for k, v in first_call.items()))
    return rows


def main(sizes: list[int]) -> None:
    print("Linear regression: loss and 3 gradients per call")
    print(machine_line())
    print(f"load average at start: {load_average()}")
    jax, torch = import_jax(), import_torch()
    bw = streaming_read_bandwidth()
    best = max(bw.values())
    print("streaming read bandwidth, 1 GiB float32, median of 7: " + ", ".join(
        f"{k} {v:.1f} GB/s" for k, v in bw.items()) + f"; reference = {best:.1f} GB/s")
    for n in sizes:
        bench(n, best, jax, torch)
    print(f"\nload average at end: {load_average()}")


if __name__ == "__main__":
    main([int(float(a)) for a in sys.argv[1:]] or [1_000_000, 10_000_000])
