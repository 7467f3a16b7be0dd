"""End to end: a 64-128-128-10 ReLU net trained on scikit-learn's digits (1,797 8x8 images,
pixels scaled to [0, 1] float32, int32 labels; all of them the training set), cross entropy,
Adam lr 1e-3, batch 32, 50 epochs, three ways:

- symgrad: the graph, ``sg.compile_step(loss, sg.optim.Adam(lr=1e-3))`` and
  ``sg.fit(step, data, epochs=50, batch_size=32, seed=0, progress=False)``; every timed run
  compiles anew (the memory cache cleared, the disk cache off while it runs).
- jax.jit: one jitted step (``jax.value_and_grad`` then Adam written functionally, with
  donated parameters and state: a fresh function each run, so it is traced and compiled anew,
  once for the full batches and once for the last partial one), a Python loop over NumPy
  minibatches; each step's loss stays on the device until the end of its epoch.
- torch eager: the same tensors with ``torch.optim.Adam``, ``loss.backward()``, ``opt.step()``.

Every peer starts from the same parameters (torch.nn.Linear's init, seeded) and sees the same
minibatches in the same order: one permutation per epoch from ``np.random.default_rng(0)``,
the last partial batch kept, as ``sg.fit`` draws them. The clock runs from building the model
to the end of the last step (compile and batching included). Before timing, each runs one
epoch over the first 96 images (3 steps; also the warm-up of its runtime) and its parameters
are checked against symgrad's. The final training loss and accuracy are computed alike for
all three, in float64 NumPy over the whole set from each one's final parameters.

Run: python bench/fit_digits.py [--quick]   (--quick: one timed run each, else three)
     or python bench/training_steps.py --rows digits
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np
from _common import import_jax, import_torch, load_average, machine_line, print_table

SIZES = (64, 128, 128, 10)
LR, BETA1, BETA2, EPS = 1e-3, 0.9, 0.999, 1e-8
EPOCHS, BATCH, SEED = 50, 32, 0
CHECK_N = 96  # the check run: one epoch of 3 steps


def load() -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return {"X": (digits.data / 16.0).astype(np.float32),  # pixels 0..16 -> 0..1
            "labels": digits.target.astype(np.int32)}


def init_params(seed: int = 1) -> list[np.ndarray]:
    """W1, b1, W2, b2, W3, b3 with torch.nn.Linear's default init (W stored (in, out))."""
    rng = np.random.default_rng(seed)
    ps = []
    for fan_in, fan_out in zip(SIZES[:-1], SIZES[1:]):
        bound = 1 / math.sqrt(fan_in)
        ps += [rng.uniform(-bound, bound, (fan_in, fan_out)).astype(np.float32),
               rng.uniform(-bound, bound, fan_out).astype(np.float32)]
    return ps


def epoch_orders(n: int, epochs: int, seed: int = SEED):
    """The sample order of each epoch, drawn as sg.fit draws it (shuffle=True)."""
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        yield rng.permutation(n)


def loss_and_accuracy(params: list[np.ndarray], data: dict[str, np.ndarray]) -> tuple:
    """The float64 oracle for every peer: mean cross entropy and accuracy over ``data``."""
    h = data["X"].astype(np.float64)
    ps = [np.asarray(p, np.float64) for p in params]
    for i in range(0, len(ps), 2):
        h = h @ ps[i] + ps[i + 1]
        if i + 2 < len(ps):
            h = np.maximum(h, 0)
    shifted = h - h.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    labels = data["labels"]
    loss = -float(np.mean(logp[np.arange(len(labels)), labels]))
    return loss, float(np.mean(h.argmax(axis=1) == labels))


# --- the three peers: each returns (seconds, steps, final parameters) -------------------------

def run_symgrad(data: dict[str, np.ndarray], init: list[np.ndarray], epochs: int):
    import symgrad as sg
    from symgrad.runtime import jit

    jit.clear_cache(disk=False)
    jit.disable_disk_cache()
    compiles = jit.stats.compile_count
    try:
        t = time.perf_counter()
        h = sg.input("X", shape=("N", SIZES[0]))
        labels = sg.input("labels", shape=("N",), dtype="int32")
        ps = []
        for i in range(len(SIZES) - 1):
            W = sg.param(f"W{i + 1}", init=init[2 * i])
            b = sg.param(f"b{i + 1}", init=init[2 * i + 1])
            ps += [W, b]
            h = h @ W + b
            if i + 2 < len(SIZES):
                h = sg.relu(h)
        step = sg.compile_step(sg.mean(sg.cross_entropy(h, labels)), sg.optim.Adam(lr=LR))
        history = sg.fit(step, data, epochs=epochs, batch_size=BATCH, seed=SEED,
                         progress=False)
        seconds = time.perf_counter() - t
    finally:
        jit.enable_disk_cache()
    if jit.stats.compile_count == compiles:
        raise AssertionError("symgrad: the timed run compiled nothing (a cache was hit)")
    return seconds, len(history.step_loss), [p.value.copy() for p in ps]


def run_jax(jax, data: dict[str, np.ndarray], init: list[np.ndarray], epochs: int):
    import jax.numpy as jnp

    t = time.perf_counter()

    def loss_fn(ps, x, labels):
        h = x
        for i in range(0, len(ps), 2):
            h = h @ ps[i] + ps[i + 1]
            if i + 2 < len(ps):
                h = jax.nn.relu(h)
        logp = jax.nn.log_softmax(h)
        return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))

    def step(ps, state, x, labels):
        # torch.optim.Adam's equations, functionally
        loss, grads = jax.value_and_grad(loss_fn)(ps, x, labels)
        ms, vs, count = state
        count = count + 1
        tf = count.astype(jnp.float32)
        ms = [BETA1 * m + (1 - BETA1) * g for m, g in zip(ms, grads)]
        vs = [BETA2 * v + (1 - BETA2) * g * g for v, g in zip(vs, grads)]
        step_size = LR / (1 - BETA1 ** tf)
        bc2_sqrt = jnp.sqrt(1 - BETA2 ** tf)
        ps = [p - step_size * m / (jnp.sqrt(v) / bc2_sqrt + EPS)
              for p, m, v in zip(ps, ms, vs)]
        return loss, ps, (ms, vs, count)

    jitted = jax.jit(step, donate_argnums=(0, 1))
    ps = [jnp.array(p) for p in init]
    state = ([jnp.zeros_like(p) for p in ps], [jnp.zeros_like(p) for p in ps],
             jnp.zeros((), jnp.int32))
    X, labels = data["X"], data["labels"]
    steps, epoch_loss = 0, []
    for order in epoch_orders(len(labels), epochs):
        losses = []
        for lo in range(0, len(order), BATCH):
            take = order[lo:lo + BATCH]
            loss, ps, state = jitted(ps, state, X[take], labels[take])
            losses.append(loss)
            steps += 1
        epoch_loss.append(float(jnp.mean(jnp.stack(losses))))  # waits for the epoch
    jax.block_until_ready(ps)
    seconds = time.perf_counter() - t
    return seconds, steps, [np.asarray(p) for p in ps]


def run_torch(torch, data: dict[str, np.ndarray], init: list[np.ndarray], epochs: int):
    import torch.nn.functional as F

    t = time.perf_counter()
    ps = [torch.tensor(p, requires_grad=True) for p in init]
    opt = torch.optim.Adam(ps, lr=LR, betas=(BETA1, BETA2), eps=EPS)
    X = torch.from_numpy(data["X"])
    labels = torch.from_numpy(data["labels"].astype(np.int64))  # torch takes int64 classes
    steps, epoch_loss = 0, []
    for order in epoch_orders(len(labels), epochs):
        order = torch.from_numpy(order)
        losses = []
        for lo in range(0, len(order), BATCH):
            take = order[lo:lo + BATCH]
            h = X[take]
            for i in range(0, len(ps), 2):
                h = h @ ps[i] + ps[i + 1]
                if i + 2 < len(ps):
                    h = F.relu(h)
            loss = F.cross_entropy(h, labels[take])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.detach())
            steps += 1
        epoch_loss.append(float(torch.stack(losses).mean()))
    seconds = time.perf_counter() - t
    return seconds, steps, [p.detach().numpy().copy() for p in ps]


# --- the table ---------------------------------------------------------------------------------

def digits_table(jax, torch, repeat: int, epochs: int = EPOCHS) -> tuple[list[str], list]:
    """Header and rows: total seconds (median of ``repeat`` interleaved runs), ratio to symgrad,
    steps, microseconds per step (total / steps), final training loss and accuracy."""
    data, init = load(), init_params()
    runs = {"symgrad, sg.fit": run_symgrad}
    if jax is not None:
        runs["jax.jit(step), Python loop"] = lambda *a: run_jax(jax, *a)
    if torch is not None:
        runs["torch eager, torch.optim.Adam"] = lambda *a: run_torch(torch, *a)
    small = {k: a[:CHECK_N] for k, a in data.items()}
    checked = {name: run(small, init, 1)[2] for name, run in runs.items()}
    diffs = {}
    for name, ps in checked.items():  # the same loop: the same parameters after 3 steps
        ref = checked["symgrad, sg.fit"]
        diffs[name] = max(float(np.max(np.abs(a - b))) for a, b in zip(ps, ref))
        if not all(np.allclose(a, b, rtol=1e-3, atol=2e-4) for a, b in zip(ps, ref)):
            raise AssertionError(f"digits: {name}'s parameters after 3 steps differ from "
                                 f"symgrad's by up to {diffs[name]:.1e}")
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    final: dict[str, tuple] = {}
    for _ in range(repeat):
        for name, run in runs.items():
            secs, steps, ps = run(data, init, epochs)
            seconds[name].append(secs)
            final[name] = (steps, *loss_and_accuracy(ps, data))
    base = float(np.median(seconds["symgrad, sg.fit"]))
    header = ["", "total s", "vs symgrad", "steps", "total/steps us", "final loss",
              "train accuracy", "max |dp| after 3"]
    rows = []
    for name, ts in seconds.items():
        med = float(np.median(ts))
        steps, loss, acc = final[name]
        rows.append([name, f"{med:.2f}", f"{med / base:.2f}x", f"{steps:,}",
                     f"{med / steps * 1e6:.0f}", f"{loss:.4f}", f"{acc:.4f}",
                     f"{diffs[name]:.0e}"])
    return header, rows


def title(repeat: int, epochs: int = EPOCHS) -> str:
    return (f"End to end: 64-128-128-10 ReLU net on sklearn digits (1,797 images), Adam lr "
            f"1e-3, batch {BATCH}, {epochs} epochs, compile and batching included; median of "
            f"{repeat} interleaved run{'s' if repeat > 1 else ''}; final loss and accuracy "
            f"over the training set; load average {load_average()}")


def main(argv: list[str]) -> None:
    if set(argv) - {"--quick"}:
        sys.exit(__doc__[__doc__.index("Run:"):])
    repeat = 1 if "--quick" in argv else 3
    print(machine_line())
    jax, torch = import_jax(), import_torch()
    header, rows = digits_table(jax, torch, repeat)
    print(f"\n{title(repeat)}")
    print_table(header, rows)


if __name__ == "__main__":
    main(sys.argv[1:])
