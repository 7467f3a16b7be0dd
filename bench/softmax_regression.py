"""Softmax regression 784 -> 10, loss and both gradients in one call: symgrad's fused LLVM
kernel side by side with hand-written NumPy, PyTorch eager, torch.compile and jax.jit, on the
same float32 inputs in the same process (the design doc's tensor model).

    loss = mean(cross_entropy(X @ W + c, labels)),  f = sg.function([loss, *sg.grad(loss, [W, c])])

X is (N, 784) float32 uniform in [0, 1) (pixel-like), labels int32 in [0, 10), seeded; W is
784 x 10 (normal, std 0.01), c is 10 (normal, std 0.01). Every peer is checked against a
float64 NumPy reference before timing; calls are timed in interleaved rounds (each round calls
every peer once) and reported as medians (and minima) with ratios to symgrad, and GB/s of X read.

Run: python bench/softmax_regression.py [batch ...]      (default: 256 4096)
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
    time_interleaved,
)

import symgrad as sg

D, K = 784, 10


def make_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.random((n, D), dtype=np.float32)
    labels = rng.integers(0, K, n).astype(np.int32)
    return X, labels


def make_params(seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.normal(0.0, 0.01, (D, K)).astype(np.float32),
            rng.normal(0.0, 0.01, K).astype(np.float32))


def numpy_forward_backward(w, c, x, labels):
    """Loss, dL/dW, dL/dc written by hand (one matmul forward, one backward, in place)."""
    n = len(x)
    z = x @ w
    z += c
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=1)
    rows = np.arange(n)
    loss = np.mean(np.log(s) - z[rows, labels])
    e /= s[:, None]
    e[rows, labels] -= 1
    e *= np.asarray(1.0 / n, e.dtype)
    return loss, x.T @ e, e.sum(axis=0)


def reference(w, c, x, labels):
    return numpy_forward_backward(w.astype(np.float64), c.astype(np.float64),
                                  x.astype(np.float64), labels)


def symgrad_peer(w0, c0):
    X = sg.input("X", shape=("N", D))
    labels = sg.input("labels", shape=("N",), dtype="int32")
    W = sg.param("W", shape=(D, K), init=w0)
    c = sg.param("c", shape=(K,), init=c0)
    loss = sg.mean(sg.cross_entropy(X @ W + c, labels))
    return sg.function([loss, *sg.grad(loss, [W, c])], backend="llvm")


def torch_peers(torch, w0, c0):
    import torch.nn.functional as F

    def loss_fn(w, c, x, labels):
        return F.cross_entropy(x @ w + c, labels)

    wr = [torch.tensor(a, requires_grad=True) for a in (w0, c0)]

    def eager(x, labels):
        loss = loss_fn(*wr, x, labels)
        return loss, *torch.autograd.grad(loss, wr)

    wc = [torch.tensor(a) for a in (w0, c0)]
    compiled = torch.compile(torch.func.grad_and_value(loss_fn, argnums=(0, 1)), dynamic=False)

    def comp(x, labels):
        grads, loss = compiled(*wc, x, labels)
        return loss, *grads

    return eager, comp


def jax_peer(jax, w0, c0):
    import jax.numpy as jnp

    def loss_fn(w, c, x, labels):
        logp = jax.nn.log_softmax(x @ w + c)
        return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))

    f = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1)))
    params = [jax.device_put(a) for a in (w0, c0)]

    def run(x, labels):
        loss, grads = jax.block_until_ready(f(*params, x, labels))
        return loss, *grads

    return run


def to_numpy(out) -> list[np.ndarray]:
    return [np.asarray(v.detach() if hasattr(v, "detach") else v, np.float64) for v in out]


def bench(n: int, w0, c0, jax, torch, peers_by_size: dict) -> None:
    X, labels = make_data(n)
    f = peers_by_size["symgrad"]
    threads = sg.get_num_threads()

    def sg_threads(k):
        def run():
            sg.set_num_threads(k)
            return f(X=X, labels=labels)
        return run

    base_name = f"symgrad llvm, {threads} threads (default)"
    peers = {base_name: sg_threads(threads), "symgrad llvm, 1 thread": sg_threads(1),
             "NumPy, hand-written": lambda: numpy_forward_backward(w0, c0, X, labels)}
    first_call = {}
    if torch is not None:
        eager, comp = peers_by_size["torch"]
        tx = torch.from_numpy(X)
        tl = torch.from_numpy(labels).long()  # torch wants int64 class indices (made once)
        peers["torch eager (autograd.grad)"] = lambda: eager(tx, tl)
        t = time.perf_counter()
        comp(tx, tl)
        first_call["torch.compile(grad_and_value)"] = time.perf_counter() - t
        peers["torch.compile(grad_and_value)"] = lambda: comp(tx, tl)
    if jax is not None:
        run = peers_by_size["jax"]
        jx, jl = jax.device_put(X), jax.device_put(labels)
        t = time.perf_counter()
        run(jx, jl)
        first_call["jax.jit(value_and_grad)"] = time.perf_counter() - t
        peers["jax.jit(value_and_grad)"] = lambda: run(jx, jl)

    ref = reference(w0, c0, X, labels)
    errors = {}
    for name, fn in peers.items():
        got = to_numpy(fn())
        errors[name] = max(float(np.max(np.abs(g - r)) / np.max(np.abs(r)))
                           for g, r in zip(got, ref))
        if errors[name] > 1e-4:
            raise AssertionError(f"{name} disagrees with the float64 reference "
                                 f"(relative error {errors[name]:.1e})")

    repeat = 300 if n <= 1024 else 60
    times = time_interleaved(peers, repeat, warmup=5)
    sg.set_num_threads(threads)
    base = float(np.median(times[base_name]))
    rows = []
    for name, ts in times.items():
        med = float(np.median(ts))
        rows.append([name, f"{med * 1e3:.3f}", f"{ts.min() * 1e3:.3f}", f"{med / base:.2f}x",
                     f"{X.nbytes / med / 1e9:.1f}", f"{errors[name]:.1e}"])
    print(f"\nbatch N = {n}, X {X.nbytes / 1e6:.1f} MB float32, "
          f"median of {repeat} interleaved rounds")
    print_table(["", "median ms", "min ms", "vs symgrad", "GB/s of X", "rel. err"], rows)
    if first_call:
        print("first call at this batch size: " + ", ".join(
            f"{k} {v:.2f} s" for k, v in first_call.items()))


def main(sizes: list[int]) -> None:
    print("Softmax regression 784 -> 10: loss and 2 gradients per call")
    print(machine_line())
    print(f"load average at start: {load_average()}")
    jax, torch = import_jax(), import_torch()
    w0, c0 = make_params()
    peers = {"symgrad": symgrad_peer(w0, c0)}
    if torch is not None:
        peers["torch"] = torch_peers(torch, w0, c0)
    if jax is not None:
        peers["jax"] = jax_peer(jax, w0, c0)
    print("symgrad: one compiled function for every batch size (it decides per call how many "
          "of the allowed threads to use)")
    for n in sizes:
        bench(n, w0, c0, jax, torch, peers)
    print(f"\nload average at end: {load_average()}")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [256, 4096])
