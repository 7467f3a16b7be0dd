"""Full training steps (loss, gradients and the optimizer's update), side by side in one run:
symgrad's compiled step against a hand-written NumPy step, PyTorch eager, torch.compile and
jax.jit, each with the same optimizer inside its step, on the same float32 data from the same
initial parameters (issue 5's "Done means").

- linear regression, N = 1e6: x1, x2, y; params w1, w2, b; MSE; SGD lr = 0.1
- softmax regression 784 -> 10: X, int32 labels, W (784, 10), c (10,);
  loss = mean(cross_entropy(X @ W + c, labels)); SGD lr = 0.1; batch 256 and 4096
- the 784-100-10 ReLU net: W1 (784, 100), b1, W2 (100, 10), b2 (PyTorch's nn.Linear init);
  cross entropy; Adam lr = 1e-3 (PyTorch's defaults); batch 64 and 1024
- issue 12's rows (their models in training_rows.py): logistic regression with 16 features,
  N = 2e6, Adam (also in GB/s of X and y read once per step, against the streaming read
  bandwidth measured in the same run); a 784-256-10 GELU (erf) net at batch 256, Adam; the
  per-call overhead: the softmax regression SGD step at batch 1, in microseconds; and end to
  end, ``sg.fit`` of a 64-128-128-10 ReLU net on scikit-learn's digits against the same loop
  in jax.jit and torch eager (fit_digits.py, which says how)

The peers:

- symgrad: ``step = sg.compile_step(loss, optim)``, ``step(**batch)`` (returns the loss as a
  Python float; the parameters are updated in place), with its default thread count (every
  core; the step decides per call how many threads the batch is worth) and, as a second row,
  with ``sg.set_num_threads(1)``. Ratios are to the default.
- NumPy: forward, backward and update written by hand, in place, float32 throughout.
- torch eager: ``loss = f(...); loss.backward(); opt.step(); opt.zero_grad()`` with
  ``torch.optim.SGD`` / ``torch.optim.Adam`` (their CPU defaults).
- torch.compile: ONE compiled function per step, ``torch.compile(step, dynamic=False)``, where
  ``step(params, state, *batch)`` is ``torch.func.grad_and_value(loss)`` followed by the
  optimizer update written functionally (``p - lr * g``; Adam's equations as torch.optim's,
  with the bias corrections computed in Python and passed in as 0-d tensors, so the step
  count does not recompile); it returns the loss and the new parameters and state, which
  the caller keeps for the next step. (Dynamo does not trace ``loss.backward()`` plus
  ``opt.step()`` into one graph without compiled autograd; the functional form is a single
  graph.)
- jax.jit: ``jax.jit(step, donate_argnums=(0, 1))`` of a functional step,
  ``jax.value_and_grad`` then optax's ``sgd`` / ``adam`` (the same equations; a hand-written
  Adam when optax is not installed), returning the new parameters and optimizer state.
  Each call waits for the result (``block_until_ready``).

Torch takes int64 class indices: its labels are converted once, outside the timed step.
Before timing, every peer runs a few steps from the same initial parameters on the same
batch and its parameters are checked against symgrad's (``np.allclose``, loose float32
tolerances; the largest difference is printed). Steps are then timed in interleaved rounds
(each round calls every peer once; parameters keep training) and reported as medians, with
ratios to symgrad.

First-step latency: graph building + compile + the first step, each in a fresh Python process
(imports and data made before the clock starts): symgrad uncached (a fresh
``SYMGRAD_CACHE_DIR`` and ``symgrad.runtime.jit.clear_cache()``) and from the disk cache
(same directory, another fresh process); torch.compile with a fresh inductor cache
(``TORCHINDUCTOR_CACHE_DIR``) and from it; jax.jit uncached and from its persistent
compilation cache.

Run: python bench/training_steps.py [--quick] [--steps | --latency | --rows NAME,...]
     (--quick: fewer repeats (each row under a minute on 2 cores), no latency table unless
      named; --steps: the step tables only; --latency: the first-step latency table only;
      --rows: those rows only, of linear, softmax, mlp, logreg, gelu, embed, overhead,
      digits, latency)
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import fit_digits
import numpy as np
import training_rows
from _common import (
    NumpyAdam,
    import_jax,
    import_torch,
    load_average,
    machine_line,
    print_table,
    softmax_ce_backward,
    streaming_read_bandwidth,
    time_interleaved,
)

D, H, K = 784, 100, 10
SGD_LR, ADAM_LR, BETA1, BETA2, EPS = 0.1, 1e-3, 0.9, 0.999, 1e-8
CHECK_STEPS = 3
LINEAR_INIT = (0.5, -0.3, 0.1)  # w1, w2, b: away from the optimum (2, -3, 1)


# --- data and initial parameters -----------------------------------------------------------

def linear_data(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x1 = rng.standard_normal(n, dtype=np.float32)
    x2 = rng.standard_normal(n, dtype=np.float32)
    y = (2 * x1 - 3 * x2 + 1 + 0.1 * rng.standard_normal(n, dtype=np.float32)).astype(np.float32)
    return {"x1": x1, "x2": x2, "y": y}


def image_data(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"X": rng.random((n, D), dtype=np.float32),
            "labels": rng.integers(0, K, n).astype(np.int32)}


def init_params(model: str) -> list[np.ndarray]:
    if model in training_rows.MODELS:
        return training_rows.init_params(model)
    if model == "linear":
        return [np.array(v, np.float32) for v in LINEAR_INIT]
    rng = np.random.default_rng(1)
    if model == "softmax":
        return [rng.normal(0.0, 0.01, (D, K)).astype(np.float32),
                rng.normal(0.0, 0.01, K).astype(np.float32)]
    b1, b2 = 1 / math.sqrt(D), 1 / math.sqrt(H)  # torch.nn.Linear's default init
    return [rng.uniform(-b1, b1, (D, H)).astype(np.float32),
            rng.uniform(-b1, b1, H).astype(np.float32),
            rng.uniform(-b2, b2, (H, K)).astype(np.float32),
            rng.uniform(-b2, b2, K).astype(np.float32)]


def optimizer_of(model: str) -> str:
    return training_rows.MODELS.get(model, "adam" if model == "mlp" else "sgd")


def make_data(model: str, n: int) -> dict[str, np.ndarray]:
    if model in training_rows.MODELS:
        return training_rows.make_data(model, n)
    return linear_data(n) if model == "linear" else image_data(n)


# --- symgrad -------------------------------------------------------------------------------

def symgrad_loss(model: str, init: list[np.ndarray]):
    import symgrad as sg

    if model in training_rows.MODELS:
        return training_rows.symgrad_loss(model, init)
    if model == "linear":
        x1, x2, y = sg.inputs("x1 x2 y")
        ps = [sg.param(name, init=v) for name, v in zip(("w1", "w2", "b"), init)]
        w1, w2, b = ps
        return sg.mean((w1 * x1 + w2 * x2 + b - y) ** 2), ps
    X = sg.input("X", shape=("N", D))
    labels = sg.input("labels", shape=("N",), dtype="int32")
    if model == "softmax":
        ps = [sg.param("W", init=init[0]), sg.param("c", init=init[1])]
        logits = X @ ps[0] + ps[1]
    else:
        ps = [sg.param(name, init=v) for name, v in zip(("W1", "b1", "W2", "b2"), init)]
        logits = sg.relu(X @ ps[0] + ps[1]) @ ps[2] + ps[3]
    return sg.mean(sg.cross_entropy(logits, labels)), ps  # cross_entropy already averages


def symgrad_optimizer(model: str):
    import symgrad as sg

    return sg.optim.Adam(lr=ADAM_LR) if optimizer_of(model) == "adam" else sg.optim.SGD(lr=SGD_LR)


def symgrad_peer(model, init, data, threads=None):
    """``threads``: sg.set_num_threads for this peer's calls only (default: every core)."""
    import symgrad as sg

    loss, ps = symgrad_loss(model, init)
    step = sg.compile_step(loss, symgrad_optimizer(model))
    if threads is None:
        return (lambda: step(**data)), (lambda: [p.value for p in ps])
    default = sg.get_num_threads()

    def run():
        sg.set_num_threads(threads)
        try:
            return step(**data)
        finally:
            sg.set_num_threads(default)

    return run, (lambda: [p.value for p in ps])


# --- NumPy, written by hand ----------------------------------------------------------------

def numpy_peer(model, init, data):
    if model in training_rows.MODELS:
        return training_rows.numpy_peer(model, init, data)
    ps = [p.copy() for p in init]
    lr = np.float32(SGD_LR)
    if model == "linear":
        x1, x2, y = data["x1"], data["x2"], data["y"]
        r, tmp = np.empty_like(x1), np.empty_like(x1)
        inv_n = np.float32(1.0 / len(x1))

        def step():
            w1, w2, b = ps
            np.multiply(x1, w1, out=r)
            np.multiply(x2, w2, out=tmp)
            np.add(r, tmp, out=r)
            np.subtract(r, y, out=r)
            np.add(r, b, out=r)
            loss = np.dot(r, r) * inv_n
            two_over_n = 2 * inv_n
            grads = (np.dot(r, x1) * two_over_n, np.dot(r, x2) * two_over_n,
                     r.sum() * two_over_n)
            for p, g in zip(ps, grads):
                p -= lr * g
            return loss
    elif model == "softmax":
        X, labels = data["X"], data["labels"]

        def step():
            W, c = ps
            z = X @ W
            z += c
            loss, dz = softmax_ce_backward(z, labels)
            W -= lr * (X.T @ dz)
            c -= lr * dz.sum(axis=0)
            return loss
    else:
        X, labels = data["X"], data["labels"]
        adam = NumpyAdam(ps)

        def step():
            W1, b1, W2, b2 = ps
            h = X @ W1
            h += b1
            np.maximum(h, 0, out=h)
            z = h @ W2
            z += b2
            loss, dz = softmax_ce_backward(z, labels)
            dh = dz @ W2.T
            dh *= h > 0
            adam.step([X.T @ dh, dh.sum(axis=0), h.T @ dz, dz.sum(axis=0)])
            return loss
    return step, (lambda: ps)


# --- PyTorch -------------------------------------------------------------------------------

def torch_loss_fn(model: str):
    import torch.nn.functional as F

    if model in training_rows.MODELS:
        return training_rows.torch_loss_fn(model)
    if model == "linear":
        return lambda w1, w2, b, x1, x2, y: ((w1 * x1 + w2 * x2 + b - y) ** 2).mean()
    if model == "softmax":
        return lambda w, c, x, labels: F.cross_entropy(x @ w + c, labels)
    return lambda w1, b1, w2, b2, x, labels: F.cross_entropy(
        F.relu(x @ w1 + b1) @ w2 + b2, labels)


def torch_batch(torch, data, device="cpu"):
    return [torch.from_numpy(a.astype(np.int64) if a.dtype == np.int32 else a).to(device)
            for a in data.values()]


def torch_wait(torch, device):
    """A step is timed until its result exists: CUDA work is asynchronous."""
    if device != "cpu":
        torch.cuda.synchronize()


def torch_eager_peer(torch, model, init, data, device="cpu"):
    loss_fn = torch_loss_fn(model)
    batch = torch_batch(torch, data, device)
    ps = [torch.tensor(p, device=device, requires_grad=True) for p in init]
    opt = (torch.optim.Adam(ps, lr=ADAM_LR) if optimizer_of(model) == "adam"
           else torch.optim.SGD(ps, lr=SGD_LR))

    def step():
        loss = loss_fn(*ps, *batch)
        loss.backward()
        opt.step()
        opt.zero_grad()
        torch_wait(torch, device)
        return loss.detach()

    return step, (lambda: [p.detach().cpu().numpy() for p in ps])


def torch_compiled_step(torch, model):
    """One function for torch.compile: grad_and_value, then the functional update."""
    loss_fn = torch_loss_fn(model)
    n_params = {"linear": 3, "softmax": 2, "mlp": 4, **training_rows.N_PARAMS}[model]
    gv = torch.func.grad_and_value(loss_fn, argnums=tuple(range(n_params)))

    def sgd_step(params, state, *batch):
        grads, loss = gv(*params, *batch)
        return loss, [p - SGD_LR * g for p, g in zip(params, grads)], state

    def adam_step(params, state, *batch):
        grads, loss = gv(*params, *batch)
        ms, vs, step_size, bc2_sqrt = state
        new_m = [BETA1 * m + (1 - BETA1) * g for m, g in zip(ms, grads)]
        new_v = [BETA2 * v + (1 - BETA2) * g * g for v, g in zip(vs, grads)]
        new_p = [p - step_size * m / (v.sqrt() / bc2_sqrt + EPS)
                 for p, m, v in zip(params, new_m, new_v)]
        return loss, new_p, (new_m, new_v)

    return adam_step if optimizer_of(model) == "adam" else sgd_step


def torch_compile_peer(torch, model, init, data, device="cpu"):
    compiled = torch.compile(torch_compiled_step(torch, model), dynamic=False)
    batch = torch_batch(torch, data, device)
    ps = [torch.tensor(p, device=device) for p in init]
    adam = optimizer_of(model) == "adam"
    state = ([torch.zeros_like(p) for p in ps], [torch.zeros_like(p) for p in ps]) if adam else ()
    step_size = torch.tensor(0.0, device=device)
    bc2_sqrt = torch.tensor(1.0, device=device)
    t = 0

    def step():
        nonlocal ps, state, t
        if adam:
            t += 1
            step_size.fill_(ADAM_LR / (1 - BETA1 ** t))
            bc2_sqrt.fill_(math.sqrt(1 - BETA2 ** t))
            args = (*state, step_size, bc2_sqrt)
        else:
            args = state
        loss, ps, new_state = compiled(ps, args, *batch)
        if adam:
            state = new_state
        torch_wait(torch, device)
        return loss

    return step, (lambda: [p.cpu().numpy() for p in ps])


# --- JAX -----------------------------------------------------------------------------------

def jax_loss_fn(jax, model: str):
    import jax.numpy as jnp

    def ce(logits, labels):
        logp = jax.nn.log_softmax(logits)
        return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))

    if model in training_rows.MODELS:
        return training_rows.jax_loss_fn(jax, model)
    if model == "linear":
        return lambda p, x1, x2, y: jnp.mean((p[0] * x1 + p[1] * x2 + p[2] - y) ** 2)
    if model == "softmax":
        return lambda p, x, labels: ce(x @ p[0] + p[1], labels)
    return lambda p, x, labels: ce(jax.nn.relu(x @ p[0] + p[1]) @ p[2] + p[3], labels)


def jax_optimizer(jax, model: str):
    """(init, update) pairs: optax's when installed, else the same equations by hand."""
    import jax.numpy as jnp

    try:
        import optax
    except ImportError:
        optax = None
    if optax is not None:
        opt = optax.adam(ADAM_LR, b1=BETA1, b2=BETA2, eps=EPS) if optimizer_of(model) == "adam" \
            else optax.sgd(SGD_LR)

        def update(params, grads, state):
            updates, state = opt.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        return opt.init, update, "optax"
    if optimizer_of(model) == "sgd":
        return (lambda p: ()), (lambda p, g, s: ([a - SGD_LR * b for a, b in zip(p, g)], s)), \
            "by hand"

    def init(params):
        return ([jnp.zeros_like(p) for p in params], [jnp.zeros_like(p) for p in params],
                jnp.zeros((), jnp.int32))

    def adam_update(params, grads, state):
        ms, vs, t = state
        t = t + 1
        tf = t.astype(jnp.float32)
        ms = [BETA1 * m + (1 - BETA1) * g for m, g in zip(ms, grads)]
        vs = [BETA2 * v + (1 - BETA2) * g * g for v, g in zip(vs, grads)]
        step_size = ADAM_LR / (1 - BETA1 ** tf)
        bc2_sqrt = jnp.sqrt(1 - BETA2 ** tf)
        params = [p - step_size * m / (jnp.sqrt(v) / bc2_sqrt + EPS)
                  for p, m, v in zip(params, ms, vs)]
        return params, (ms, vs, t)

    return init, adam_update, "by hand"


def jax_step_fn(jax, model):
    loss_fn = jax_loss_fn(jax, model)
    opt_init, opt_update, _ = jax_optimizer(jax, model)

    def step(params, opt_state, *batch):
        loss, grads = jax.value_and_grad(loss_fn)(params, *batch)
        params, opt_state = opt_update(params, grads, opt_state)
        return loss, params, opt_state

    return jax.jit(step, donate_argnums=(0, 1)), opt_init


def jax_peer(jax, model, init, data, device=None):
    """``device``: a jax device (the default one when None)."""
    f, opt_init = jax_step_fn(jax, model)
    batch = [jax.device_put(a, device) for a in data.values()]
    params = [jax.device_put(p.copy(), device) for p in init]
    opt_state = opt_init(params)

    def step():
        nonlocal params, opt_state
        loss, params, opt_state = jax.block_until_ready(f(params, opt_state, *batch))
        return loss

    return step, (lambda: [np.asarray(p) for p in params])


# --- the side-by-side timing ---------------------------------------------------------------

def bench(model: str, n: int, jax, torch, repeat: int, unit: str = "ms",
          stream: tuple[float, float] | None = None, block: int | None = None
          ) -> list[list[str]]:
    """One table's rows: every peer's step at batch ``n``, median and minimum in ``unit``
    ("ms" or "us"); with ``stream`` (the streaming read GB/s on 1 thread and the best
    measured), also GB/s of the inputs read once per step and its fraction of both. With
    ``block`` > 1, each round calls every peer ``block`` times in a row and a time is the
    mean of those calls (for steps of microseconds: the thread pools one peer leaves
    spinning, torch's OpenMP and XLA's, then slow only the next one's first call). With
    ``block`` None, it is chosen so that symgrad's block takes about 5 ms (``BLOCKS`` records
    it): alternating peer by peer call by call, each peer's spinning pool taxes the next
    peer's threads, and multi-threaded steps of a millisecond suffered most."""
    data, init = make_data(model, n), init_params(model)
    builders = {"symgrad": symgrad_peer,
                "symgrad, 1 thread": lambda *a: symgrad_peer(*a, threads=1),
                "NumPy, hand-written": numpy_peer}
    if torch is not None:
        builders["torch eager"] = lambda *a: torch_eager_peer(torch, *a)
        builders["torch.compile(step)"] = lambda *a: torch_compile_peer(torch, *a)
    if jax is not None:
        builders["jax.jit(step)"] = lambda *a: jax_peer(jax, *a)
    steps, params, first, losses = {}, {}, {}, {}
    for name, build in builders.items():
        t = time.perf_counter()
        step, get_params = build(model, init, data)
        losses[name] = float(step())
        first[name] = time.perf_counter() - t
        for _ in range(CHECK_STEPS - 1):
            step()
        steps[name] = step
        params[name] = [np.array(p, np.float64) for p in get_params()]
    # the same parameters after CHECK_STEPS steps (float32 sums in different orders; Adam
    # divides tiny gradients by their own size, so it gets an absolute tolerance of a few lr)
    rtol, atol = (1e-3, 3e-5) if optimizer_of(model) == "sgd" else (1e-3, 2e-4)
    diffs = {}
    for name in steps:
        # the loss at the initial parameters too: Adam's update barely changes when the
        # gradient is scaled (a sum for a mean), the loss does
        if not math.isclose(losses[name], losses["symgrad"], rel_tol=1e-4, abs_tol=1e-6):
            raise AssertionError(f"{model}, N = {n}: {name}'s first loss {losses[name]:.7g} "
                                 f"differs from symgrad's {losses['symgrad']:.7g}")
        diffs[name] = max(float(np.max(np.abs(a - b)))
                          for a, b in zip(params[name], params["symgrad"]))
        if not all(np.allclose(a, b, rtol=rtol, atol=atol)
                   for a, b in zip(params[name], params["symgrad"])):
            raise AssertionError(f"{model}, N = {n}: {name}'s parameters after {CHECK_STEPS} "
                                 f"steps differ from symgrad's by up to {diffs[name]:.1e}")
    if block is None:
        t0 = time.perf_counter()
        for _ in range(3):
            steps["symgrad"]()
        block = max(1, min(100, round(0.005 / ((time.perf_counter() - t0) / 3))))
    BLOCKS[(model, n)] = block
    if block > 1:
        timed = {name: (lambda s=s: [s() for _ in range(block)]) for name, s in steps.items()}
        times = {name: ts / block for name, ts in time_interleaved(timed, repeat).items()}
    else:
        times = time_interleaved(steps, repeat, warmup=3)
    base = float(np.median(times["symgrad"]))
    scale, digits = {"ms": (1e3, 3), "us": (1e6, 1)}[unit]
    table = []
    for name, ts in times.items():
        med = float(np.median(ts))
        row = [f"{name}", f"{n:,}", f"{med * scale:.{digits}f}", f"{ts.min() * scale:.{digits}f}",
               f"{med / base:.2f}x", f"{diffs[name]:.0e}", f"{first[name]:.2f}"]
        if stream is not None:
            gbs = training_rows.bytes_read(data) / med / 1e9
            row += [f"{gbs:.1f}", f"{gbs / stream[0]:.0%}", f"{gbs / stream[1]:.0%}"]
        table.append(row)
    return table


CONFIGS = {"linear": [1_000_000], "softmax": [256, 4096], "mlp": [64, 1024]}
TITLES = {"linear": "Linear regression, MSE, SGD lr 0.1 (3 params)",
          "softmax": "Softmax regression 784 -> 10, cross entropy, SGD lr 0.1",
          "mlp": "784-100-10 ReLU net, cross entropy, Adam lr 1e-3"}


def repeats(model: str, n: int, quick: bool) -> int:
    r = {("linear", 1_000_000): 40, ("softmax", 256): 400, ("softmax", 4096): 60,
         ("mlp", 64): 400, ("mlp", 1024): 80, ("logreg", 2_000_000): 30, ("gelu", 256): 200,
         ("softmax", 1): 40, ("embed", 256): 200}[(model, n)]
    return max(10, r // 4) if quick else r


# issue 12's rows, besides the three above: row name -> (model, batch sizes, unit, calls in a
# row per peer and round, title)
BLOCKS: dict[tuple[str, int], int] = {}  # calls in a row per peer per round, by row
NEW_TABLES = {
    "logreg": ("logreg", [2_000_000], "ms", None,
               "Logistic regression, 16 features, softplus(z) - y*z, Adam lr 1e-3; GB/s: X and y "
               "(136 MB) read once per step, against the streaming read bandwidth above"),
    "gelu": ("gelu", [256], "ms", None,
             "784-256-10 GELU (erf) net, cross entropy, Adam lr 1e-3"),
    "embed": ("embed", [256], "ms", None,
              "Bag-of-words classifier: 8 ids per sample into a 20,000 x 64 embedding, their "
              "mean, 64 -> 10, cross entropy, Adam lr 1e-3 (the table's gradient a scatter-add)"),
    "overhead": ("softmax", [1], "us", 100,
                 "Per-call overhead: softmax regression 784 -> 10, SGD step at batch 1, "
                 "microseconds per call; each round 100 calls in a row per peer"),
}
ROWS = [*CONFIGS, *NEW_TABLES, "digits", "latency"]


# --- first-step latency, each in a fresh process --------------------------------------------

LATENCY_BATCH = {"softmax": 256, "mlp": 64}


def first_step_worker(framework: str, model: str) -> None:
    """Runs in a fresh process: imports and data first, then the clock: graph + compile +
    the first step."""
    n = LATENCY_BATCH[model]
    data, init = image_data(n), init_params(model)
    if framework == "symgrad":
        import symgrad as sg
        from symgrad.runtime import jit

        if os.environ.get("BENCH_CLEAR") == "1":
            jit.clear_cache()
        before = (jit.stats.compile_count, jit.stats.disk_hits)
        t = time.perf_counter()
        loss, _ = symgrad_loss(model, init)
        step = sg.compile_step(loss, symgrad_optimizer(model))
        step(**data)
        seconds = time.perf_counter() - t
        extra = {"compiles": jit.stats.compile_count - before[0],
                 "disk_hits": jit.stats.disk_hits - before[1]}
    elif framework == "torch":
        import torch

        batch = torch_batch(torch, data)
        ps = [torch.tensor(p) for p in init]
        adam = optimizer_of(model) == "adam"
        state = (([torch.zeros_like(p) for p in ps], [torch.zeros_like(p) for p in ps],
                  torch.tensor(ADAM_LR / (1 - BETA1)), torch.tensor(math.sqrt(1 - BETA2)))
                 if adam else ())
        t = time.perf_counter()
        compiled = torch.compile(torch_compiled_step(torch, model), dynamic=False)
        compiled(ps, state, *batch)
        seconds, extra = time.perf_counter() - t, {}
    else:
        import jax

        cache = os.environ.get("BENCH_JAX_CACHE")
        if cache:
            jax.config.update("jax_compilation_cache_dir", cache)
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
            jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
        batch = [jax.device_put(a) for a in data.values()]
        params = jax.block_until_ready([jax.device_put(p) for p in init])
        t = time.perf_counter()
        f, opt_init = jax_step_fn(jax, model)
        jax.block_until_ready(f(params, opt_init(params), *batch))
        seconds, extra = time.perf_counter() - t, {}
    print("RESULT " + json.dumps({"seconds": seconds, **extra}))


def spawn(framework: str, model: str, cache: Path, clear: bool) -> dict:
    env = dict(os.environ, SYMGRAD_CACHE_DIR=str(cache / "symgrad"),
               BENCH_JAX_CACHE=str(cache / "jax"), TORCHINDUCTOR_CACHE_DIR=str(cache / "torch"),
               BENCH_CLEAR="1" if clear else "0")
    env.pop("SYMGRAD_NO_DISK_CACHE", None)
    proc = subprocess.run([sys.executable, __file__, "--first-step", framework, model],
                          env=env, capture_output=True, text=True, timeout=600)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{framework} {model} worker failed:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(lines[-1][len("RESULT "):])


def first_step_latency(frameworks: list[str]) -> None:
    names = {"symgrad": "symgrad", "torch": "torch.compile(step)", "jax": "jax.jit(step)"}
    reps = {"symgrad": 3, "jax": 2, "torch": 1}
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-steps-") as tmp:
        for fw in frameworks:
            for model in LATENCY_BATCH:
                for r in range(reps[fw]):
                    cache = Path(tempfile.mkdtemp(prefix=f"{fw}-{model}-{r}-", dir=tmp))
                    cold = spawn(fw, model, cache, clear=True)
                    warm = spawn(fw, model, cache, clear=False)
                    if fw == "symgrad":  # the caches did what they say
                        assert cold["compiles"] >= 1 and cold["disk_hits"] == 0, cold
                        assert warm["compiles"] == 0 and warm["disk_hits"] >= 1, warm
                    results.setdefault((fw, "uncached", model), []).append(cold["seconds"])
                    results.setdefault((fw, "disk", model), []).append(warm["seconds"])
    rows = []
    for fw in frameworks:
        for state, label in (("uncached", "uncached"), ("disk", "disk cache, fresh process")):
            rows.append([f"{names[fw]}, {label}"]
                        + [f"{np.median(results[(fw, state, m)]) * 1e3:.0f}"
                           for m in LATENCY_BATCH]
                        + [str(len(results[(fw, state, 'softmax')]))])
    print(f"\nFirst-step latency (ms): graph + compile + first step, fresh process each; "
          f"softmax at batch {LATENCY_BATCH['softmax']}, MLP at batch {LATENCY_BATCH['mlp']}")
    print_table(["", "softmax + SGD", "MLP + Adam", "processes"], rows)


def parse_rows(argv: list[str]) -> tuple[list[str], bool]:
    """The rows to run and --quick, from the command line (the usage text on a bad one)."""
    usage = __doc__[__doc__.index("Run:"):]
    chosen, quick, rest = None, False, list(argv)
    while rest:
        arg = rest.pop(0)
        if arg == "--quick":
            quick = True
        elif arg == "--steps":
            chosen = [r for r in ROWS if r not in ("digits", "latency")]
        elif arg == "--latency":
            chosen = ["latency"]
        elif arg == "--rows" and rest or arg.startswith("--rows="):
            names = (arg.partition("=")[2] if "=" in arg else rest.pop(0)).split(",")
            unknown = [r for r in names if r not in ROWS]
            if unknown:
                sys.exit(f"--rows: unknown row {', '.join(unknown)}; the rows are "
                         f"{','.join(ROWS)}\n{usage}")
            chosen = names
        else:
            sys.exit(usage)
    if chosen is None:  # everything; --quick leaves out the latency table (fresh processes)
        chosen = [r for r in ROWS if not (quick and r == "latency")]
    return chosen, quick


def main(argv: list[str]) -> None:
    chosen, quick = parse_rows(argv)
    start = time.perf_counter()
    print("Full training steps: loss + gradients + optimizer update per call")
    print(machine_line())
    print(f"load average at start: {load_average()}")
    jax, torch = import_jax(), import_torch()
    if jax is not None:
        print(f"jax optimizer: {jax_optimizer(jax, 'mlp')[2]}")
    header = ["", "batch", "median ms", "min ms", "vs symgrad",
              f"max |dp| after {CHECK_STEPS}", "build+1st s"]
    for model, sizes in CONFIGS.items():
        if model not in chosen:
            continue
        rows = []
        for n in sizes:
            rows += bench(model, n, jax, torch, repeats(model, n, quick))
        print(f"\n{TITLES[model]}; medians of interleaved rounds "
              f"({', '.join(f'{repeats(model, n, quick)} at N = {n:,}' for n in sizes)}; "
              f"calls in a row per peer: "
              f"{', '.join(str(BLOCKS[(model, n)]) for n in sizes)}); "
              f"load average {load_average()}")
        print_table(header, rows)
    for name, (model, sizes, unit, block, title) in NEW_TABLES.items():
        if name not in chosen:
            continue
        stream = None
        if name == "logreg":  # the machine's ceiling for a streaming step, measured here
            bw = streaming_read_bandwidth(repeat=3 if quick else 7)
            stream = (bw["np.sum, 1 thread"], max(bw.values()))
            print("\nstreaming read GB/s (1 GiB float32): "
                  + ", ".join(f"{k} {v:.1f}" for k, v in bw.items()))
        rows = []
        for n in sizes:
            rows += bench(model, n, jax, torch, repeats(model, n, quick), unit, stream, block)
        print(f"\n{title}; medians of interleaved rounds "
              f"({', '.join(f'{repeats(model, n, quick)} at N = {n:,}' for n in sizes)}; "
              f"calls in a row per peer: "
              f"{', '.join(str(BLOCKS[(model, n)]) for n in sizes)}); "
              f"load average {load_average()}")
        unit_header = [h.replace(" ms", f" {unit}") for h in header]
        print_table(unit_header + (["GB/s", "of 1-thread read", "of best read"] if stream
                                   else []), rows)
    if "digits" in chosen:
        repeat = 1 if quick else 3
        digits_header, rows = fit_digits.digits_table(jax, torch, repeat)
        print(f"\n{fit_digits.title(repeat)}")
        print_table(digits_header, rows)
    if "latency" in chosen:
        first_step_latency(["symgrad"] + (["torch"] if torch is not None else [])
                           + (["jax"] if jax is not None else []))
    print(f"\nload average at end: {load_average()}; whole run "
          f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--first-step":
        first_step_worker(sys.argv[2], sys.argv[3])
    else:
        main(sys.argv[1:])
