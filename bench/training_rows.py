"""More models for bench/training_steps.py (issue 12's rows), in the form of that script's
own: data, initial parameters, and the loss of each peer (symgrad, NumPy by hand, torch, jax).
training_steps.py builds the steps, checks and times them exactly as for its own models.

- ``logreg``: logistic regression with 16 features, N = 2e6: X (N, 16) float32, y (N,) in
  {0, 1}; params w (16,), c (); loss = mean(softplus(X @ w + c) - y*(X @ w + c)); Adam lr 1e-3.
  A streaming row: each step reads X and y once (136 MB at N = 2e6), so it is also reported
  in GB/s against the machine's streaming read bandwidth.
- ``gelu``: a 784-256-10 GELU MLP (the exact, erf form of GELU, ``x*Phi(x)``, as ``sg.gelu``,
  torch's ``F.gelu(approximate='none')`` and ``jax.nn.gelu(approximate=False)`` compute it);
  cross entropy over int32 labels; Adam lr 1e-3.
- ``embed``: a bag-of-words classifier: 8 token ids per sample (int32) into an embedding
  table E (20,000 x 64), their mean, a 64 -> 10 linear layer, cross entropy, Adam lr 1e-3.
  The gradient of E is a scatter-add over the batch (repeated ids add up); every peer then
  updates the whole table (dense Adam), so the row also measures a 1.3M-parameter update.

Not a script: ``python bench/training_steps.py --rows logreg,gelu,embed`` runs these rows.
"""

from __future__ import annotations

import math

import numpy as np
from _common import NumpyAdam, softmax_ce_backward

LOGREG_D = 16
D, H, K = 784, 256, 10  # the GELU MLP
VOCAB, BAG, EMBED = 20_000, 8, 64  # the bag-of-words classifier
MODELS = {"logreg": "adam", "gelu": "adam", "embed": "adam"}  # model -> its optimizer
N_PARAMS = {"logreg": 2, "gelu": 4, "embed": 3}
_SQRT1_2, _RSQRT_2PI = 1 / math.sqrt(2), 1 / math.sqrt(2 * math.pi)


def make_data(model: str, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """logreg: labels drawn from a logistic model with known weights (so the gradient is
    far from zero and Adam's first steps do not hinge on its sign); gelu: the image data of
    the softmax and MLP rows (pixels uniform in [0, 1), labels uniform)."""
    rng = np.random.default_rng(seed)
    if model == "logreg":
        X = rng.standard_normal((n, LOGREG_D), dtype=np.float32)
        w_true = rng.normal(0.0, 0.5, LOGREG_D).astype(np.float32)
        p = 1 / (1 + np.exp(-(X @ w_true + np.float32(0.3))))
        return {"X": X, "y": (rng.random(n, dtype=np.float32) < p).astype(np.float32)}
    if model == "embed":  # token ids uniform over the vocabulary, labels uniform
        return {"ids": rng.integers(0, VOCAB, (n, BAG)).astype(np.int32),
                "labels": rng.integers(0, K, n).astype(np.int32)}
    return {"X": rng.random((n, D), dtype=np.float32),
            "labels": rng.integers(0, K, n).astype(np.int32)}


def init_params(model: str) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    if model == "logreg":
        return [rng.normal(0.0, 0.01, LOGREG_D).astype(np.float32), np.zeros((), np.float32)]
    if model == "embed":
        b = 1 / math.sqrt(EMBED)
        return [rng.normal(0.0, 0.1, (VOCAB, EMBED)).astype(np.float32),
                rng.uniform(-b, b, (EMBED, K)).astype(np.float32), np.zeros(K, np.float32)]
    b1, b2 = 1 / math.sqrt(D), 1 / math.sqrt(H)  # torch.nn.Linear's default init
    return [rng.uniform(-b1, b1, (D, H)).astype(np.float32),
            rng.uniform(-b1, b1, H).astype(np.float32),
            rng.uniform(-b2, b2, (H, K)).astype(np.float32),
            rng.uniform(-b2, b2, K).astype(np.float32)]


def bytes_read(data: dict[str, np.ndarray]) -> int:
    """The bytes one step must read at least: every input array once."""
    return sum(a.nbytes for a in data.values())


# --- symgrad -------------------------------------------------------------------------------

def symgrad_loss(model: str, init: list[np.ndarray]):
    import symgrad as sg

    if model == "logreg":
        X = sg.input("X", shape=("N", LOGREG_D))
        y = sg.input("y", shape=("N",))
        ps = [sg.param("w", init=init[0]), sg.param("c", init=init[1])]
        z = X @ ps[0] + ps[1]
        return sg.mean(sg.softplus(z) - y * z), ps
    if model == "embed":
        ids = sg.input("ids", shape=("N", BAG), dtype="int32")
        labels = sg.input("labels", shape=("N",), dtype="int32")
        ps = [sg.param(name, init=v) for name, v in zip(("E", "W", "b"), init)]
        logits = sg.mean(ps[0][ids], axis=1) @ ps[1] + ps[2]
        return sg.mean(sg.cross_entropy(logits, labels)), ps
    X = sg.input("X", shape=("N", D))
    labels = sg.input("labels", shape=("N",), dtype="int32")
    ps = [sg.param(name, init=v) for name, v in zip(("W1", "b1", "W2", "b2"), init)]
    logits = sg.gelu(X @ ps[0] + ps[1]) @ ps[2] + ps[3]
    return sg.mean(sg.cross_entropy(logits, labels)), ps


# --- NumPy, written by hand ----------------------------------------------------------------

def numpy_peer(model: str, init: list[np.ndarray], data: dict[str, np.ndarray]):
    ps = [p.copy() for p in init]
    adam = NumpyAdam(ps)
    if model == "logreg":
        X, y = data["X"], data["y"]
        inv_n = np.float32(1.0 / len(y))

        def step():
            w, c = ps
            z = X @ w
            z += c
            e = np.exp(-np.abs(z))  # in (0, 1]: softplus and sigmoid without overflow
            loss = (np.maximum(z, 0).sum() + np.log1p(e).sum() - np.dot(y, z)) * inv_n
            r = np.where(z >= 0, np.float32(1), e)  # sigmoid(z) = r / (1 + e)
            e += 1
            r /= e
            r -= y
            r *= inv_n  # dL/dz
            adam.step([X.T @ r, r.sum()])
            return loss

        return step, (lambda: ps)
    if model == "embed":
        ids, labels = data["ids"], data["labels"]
        flat = ids.reshape(-1)

        def step():
            E, W, b = ps
            h = E[ids].mean(axis=1)
            z = h @ W
            z += b
            loss, dz = softmax_ce_backward(z, labels)
            dh = dz @ W.T
            dh *= np.float32(1 / BAG)
            dE = np.zeros_like(E)
            np.add.at(dE, flat, np.repeat(dh, BAG, axis=0))  # token j of sample n: row n*BAG+j
            adam.step([dE, h.T @ dz, dz.sum(axis=0)])
            return loss

        return step, (lambda: ps)
    from scipy.special import erf  # a float32 ufunc (bench/'s extras install SciPy)

    X, labels = data["X"], data["labels"]

    def step():
        W1, b1, W2, b2 = ps
        a = X @ W1
        a += b1
        cdf = erf(a * np.float32(_SQRT1_2))
        cdf += 1
        cdf *= np.float32(0.5)  # Phi(a)
        h = a * cdf  # gelu(a)
        z = h @ W2
        z += b2
        loss, dz = softmax_ce_backward(z, labels)
        dh = dz @ W2.T
        pdf = np.exp(np.float32(-0.5) * a * a)
        pdf *= np.float32(_RSQRT_2PI)
        pdf *= a
        pdf += cdf  # gelu'(a) = Phi(a) + a*phi(a)
        dh *= pdf
        adam.step([X.T @ dh, dh.sum(axis=0), h.T @ dz, dz.sum(axis=0)])
        return loss

    return step, (lambda: ps)


# --- torch and jax: the loss; training_steps.py adds the step around it ----------------------

def torch_loss_fn(model: str):
    import torch.nn.functional as F

    if model == "logreg":
        def logreg(w, c, x, y):
            z = x @ w + c
            return (F.softplus(z) - y * z).mean()

        return logreg
    if model == "embed":
        return lambda e, w, b, ids, labels: F.cross_entropy(e[ids].mean(dim=1) @ w + b, labels)
    return lambda w1, b1, w2, b2, x, labels: F.cross_entropy(
        F.gelu(x @ w1 + b1, approximate="none") @ w2 + b2, labels)


def jax_loss_fn(jax, model: str):
    import jax.numpy as jnp

    if model == "logreg":
        def logreg(p, x, y):
            z = x @ p[0] + p[1]
            return jnp.mean(jax.nn.softplus(z) - y * z)

        return logreg

    def ce(logits, labels):
        logp = jax.nn.log_softmax(logits)
        return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))

    if model == "embed":
        return lambda p, ids, labels: ce(p[0][ids].mean(axis=1) @ p[1] + p[2], labels)

    def gelu_mlp(p, x, labels):
        return ce(jax.nn.gelu(x @ p[0] + p[1], approximate=False) @ p[2] + p[3], labels)

    return gelu_mlp
