"""Optimizers as formulas (symgrad.runtime.optim) against PyTorch's documented update rules.

Each optimizer runs 30 steps on a small problem through a tiny driver (``sg.evaluate`` of the
update formulas, state fed back every step) and is compared with an independent NumPy
transcription of the pseudo-code in the ``torch.optim`` docs, in float64, and with
``torch.optim`` itself when torch is installed.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import symgrad as sg
from symgrad.expr.evaluate import graph_inputs
from symgrad.runtime import optim

D, N, STEPS = 5, 8, 30
W0 = np.array([0.5, -1.0, 2.0, 0.25, -0.75])
B0 = 0.3
TRUE_W = np.array([1.0, 2.0, -1.0, 0.5, 0.0])


def batch(i: int) -> tuple[np.ndarray, np.ndarray]:
    """The i-th minibatch: a fresh least-squares problem each step (a stochastic gradient)."""
    rng = np.random.default_rng(1000 + i)
    X = rng.normal(size=(N, D))
    y = X @ TRUE_W - 0.5 + 0.1 * rng.normal(size=N)
    return X, y


# The problem: loss = mean((X @ w + b - y)**2) + 0.1*sum(sin(w)), params w (5,) and b ().
def numpy_grads(w: np.ndarray, b: np.ndarray, i: int) -> list[np.ndarray]:
    X, y = batch(i)
    r = X @ w + b - y
    return [2.0 * X.T @ r / N + 0.1 * np.cos(w), np.asarray(2.0 * r.mean())]


# ---------------------------------------------------------------------------------------------
# The symgrad side: a tiny driver that evaluates the update formulas and feeds the state back.

def run_symgrad(opt: optim.Optimizer, steps: int = STEPS, dtype: str = "float64",
                hyper_dtype: str | None = None, schedule=None) -> list[tuple[np.ndarray, ...]]:
    hyper_dtype = hyper_dtype or dtype
    w = sg.param("w", init=W0, dtype=dtype)
    b = sg.param("b", init=B0, dtype=dtype)
    X = sg.input("X", shape=("N", D), dtype=dtype)
    y = sg.input("y", dtype=dtype)
    loss = sg.mean((X @ w + b - y) ** 2) + 0.1 * sg.sum(sg.sin(w))
    hyper = {k: sg.input(f"hyper_{k}", shape=(), dtype=hyper_dtype) for k in opt.hyper}
    t = sg.input("step_t", shape=(), dtype=hyper_dtype)
    outputs: list[sg.Expr] = []
    targets: list[tuple[sg.Expr, str | None]] = []
    state: dict[tuple[sg.Expr, str], np.ndarray] = {}
    for p, g in zip([w, b], sg.grad(loss, [w, b])):
        spec = opt.state_spec(p)
        nodes = {k: sg.input(f"{p.name}_{k}", shape=p.shape, dtype=dtype) for k in spec}
        new_p, new_state = opt.update(p, g, nodes, hyper, t)
        assert set(new_state) == set(spec)
        assert new_p.dtype == p.dtype and new_p.shape == p.shape
        for k, v in new_state.items():
            assert v.dtype == p.dtype and v.shape == p.shape, k
        outputs.append(new_p)
        targets.append((p, None))
        for k, fill in spec.items():
            outputs.append(new_state[k])
            targets.append((p, k))
            state[(p, k)] = np.full(p.shape, fill, dtype)
    used = graph_inputs(outputs)
    for k in opt.hyper:  # every hyperparameter the optimizer lists is read by its formulas
        assert f"hyper_{k}" in used, k
    history = []
    for i in range(steps):
        if schedule is not None:
            schedule(i, opt)
        Xi, yi = batch(i)
        feeds = {"X": Xi, "y": yi, "step_t": np.asarray(i + 1, hyper_dtype)}
        feeds.update({f"hyper_{k}": np.asarray(v, hyper_dtype) for k, v in opt.hyper.items()})
        feeds.update({f"{p.name}_{k}": v for (p, k), v in state.items()})
        values = sg.evaluate(outputs, **{k: v for k, v in feeds.items() if k in used})
        for (p, k), v in zip(targets, values):
            assert v.dtype == np.dtype(dtype)
            if k is None:
                p.value = v
            else:
                state[(p, k)] = v
        history.append((w.value.copy(), b.value.copy()))
    return history


# ---------------------------------------------------------------------------------------------
# The reference: the pseudo-code of the torch.optim docs, transcribed line by line, in NumPy.
# Each rule takes (theta, g, state, t, h) with h the hyperparameters, and returns the new theta.

def ref_sgd(theta, g, s, t, h):
    if h.get("maximize"):
        g = -g
    if h["weight_decay"] != 0:
        g = g + h["weight_decay"] * theta
    if h["momentum"] != 0:
        if t > 1:
            s["b"] = h["momentum"] * s["b"] + (1 - h["dampening"]) * g
        else:
            s["b"] = g
        if h["nesterov"]:
            g = g + h["momentum"] * s["b"]
        else:
            g = s["b"]
    return theta - h["lr"] * g


def ref_adam(theta, g, s, t, h, decoupled=False):
    b1, b2 = h["betas"]
    if h.get("maximize"):
        g = -g
    if decoupled:
        theta = theta - h["lr"] * h["weight_decay"] * theta
    elif h["weight_decay"] != 0:
        g = g + h["weight_decay"] * theta
    s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * g
    s["v"] = b2 * s.get("v", 0.0) + (1 - b2) * g**2
    m_hat = s["m"] / (1 - b1**t)
    if h["amsgrad"]:
        s["vmax"] = np.maximum(s.get("vmax", 0.0), s["v"])
        v_hat = s["vmax"] / (1 - b2**t)
    else:
        v_hat = s["v"] / (1 - b2**t)
    return theta - h["lr"] * m_hat / (np.sqrt(v_hat) + h["eps"])


def ref_adamw(theta, g, s, t, h):
    return ref_adam(theta, g, s, t, h, decoupled=True)


def ref_rmsprop(theta, g, s, t, h):
    if h.get("maximize"):
        g = -g
    if h["weight_decay"] != 0:
        g = g + h["weight_decay"] * theta
    a = h["alpha"]
    s["v"] = a * s.get("v", 0.0) + (1 - a) * g**2
    v_tilde = s["v"]
    if h["centered"]:
        s["g_ave"] = s.get("g_ave", 0.0) * a + (1 - a) * g
        v_tilde = v_tilde - s["g_ave"] ** 2
    if h["momentum"] > 0:
        s["b"] = h["momentum"] * s.get("b", 0.0) + g / (np.sqrt(v_tilde) + h["eps"])
        return theta - h["lr"] * s["b"]
    return theta - h["lr"] * g / (np.sqrt(v_tilde) + h["eps"])


def ref_adagrad(theta, g, s, t, h):
    if h.get("maximize"):
        g = -g
    lr_t = h["lr"] / (1 + (t - 1) * h["lr_decay"])
    if h["weight_decay"] != 0:
        g = g + h["weight_decay"] * theta
    s["sum"] = s.get("sum", h["initial_accumulator_value"]) + g**2
    return theta - lr_t * g / (np.sqrt(s["sum"]) + h["eps"])


def ref_adadelta(theta, g, s, t, h):
    if h.get("maximize"):
        g = -g
    if h["weight_decay"] != 0:
        g = g + h["weight_decay"] * theta
    rho, eps = h["rho"], h["eps"]
    s["v"] = s.get("v", 0.0) * rho + g**2 * (1 - rho)
    dx = np.sqrt(s.get("u", 0.0) + eps) / np.sqrt(s["v"] + eps) * g
    s["u"] = s.get("u", 0.0) * rho + dx**2 * (1 - rho)
    return theta - h["lr"] * dx


# PyTorch's documented defaults, written out here (not read from symgrad).
REFERENCE = {
    "SGD": (ref_sgd, dict(momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False)),
    "Adam": (ref_adam, dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                            amsgrad=False)),
    "AdamW": (ref_adamw, dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                              amsgrad=False)),
    "RMSProp": (ref_rmsprop, dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0,
                                  momentum=0.0, centered=False)),
    "Adagrad": (ref_adagrad, dict(lr=1e-2, lr_decay=0.0, weight_decay=0.0,
                                  initial_accumulator_value=0.0, eps=1e-10)),
    "Adadelta": (ref_adadelta, dict(lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0)),
}


def run_reference(name: str, kwargs: dict, steps: int = STEPS, schedule=None):
    rule, defaults = REFERENCE[name]
    h = {**defaults, **kwargs}
    w, b = W0.copy(), np.asarray(B0)
    states: list[dict] = [{}, {}]
    history = []
    for i in range(steps):
        if schedule is not None:
            schedule(i, h)
        grads = numpy_grads(w, b, i)
        w, b = (rule(theta, g, s, i + 1, h) for theta, g, s in zip((w, b), grads, states))
        history.append((w.copy(), np.asarray(b).copy()))
    return history


def run_torch(name: str, kwargs: dict, steps: int = STEPS, schedule=None):
    torch = pytest.importorskip("torch")
    cls = {"RMSProp": torch.optim.RMSprop}.get(name) or getattr(torch.optim, name)
    w = torch.tensor(W0, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(B0, dtype=torch.float64, requires_grad=True)
    opt = cls([w, b], **kwargs)
    history = []
    for i in range(steps):
        if schedule is not None:
            schedule(i, opt.param_groups[0])
        X, y = (torch.from_numpy(a) for a in batch(i))
        opt.zero_grad()
        loss = ((X @ w + b - y) ** 2).mean() + 0.1 * torch.sin(w).sum()
        loss.backward()
        opt.step()
        history.append((w.detach().numpy().copy(), b.detach().numpy().copy()))
    return history


def assert_same(got, want, rtol=1e-10, atol=1e-12):
    for i, ((gw, gb), (ww, wb)) in enumerate(zip(got, want, strict=True)):
        np.testing.assert_allclose(gw, ww, rtol=rtol, atol=atol, err_msg=f"w after step {i + 1}")
        np.testing.assert_allclose(gb, wb, rtol=rtol, atol=atol, err_msg=f"b after step {i + 1}")


CASES = [
    ("SGD", dict(lr=0.05)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.3)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("SGD", dict(lr=0.05, momentum=0.8, weight_decay=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.5, nesterov=True, weight_decay=0.2)),
    ("SGD", dict(lr=0.01, momentum=0.5, weight_decay=0.1, maximize=True)),
    ("Adam", dict()),
    ("Adam", dict(lr=0.05)),
    ("Adam", dict(lr=0.05, betas=(0.8, 0.99), weight_decay=0.1)),
    ("Adam", dict(lr=0.05, amsgrad=True)),
    ("Adam", dict(lr=0.02, eps=1e-3, weight_decay=0.05, amsgrad=True)),
    ("Adam", dict(lr=0.01, maximize=True)),
    ("AdamW", dict()),
    ("AdamW", dict(lr=0.05, weight_decay=0.1)),
    ("AdamW", dict(lr=0.05, betas=(0.5, 0.9), amsgrad=True)),
    ("RMSProp", dict()),
    ("RMSProp", dict(lr=0.01, momentum=0.9)),
    ("RMSProp", dict(centered=True)),
    ("RMSProp", dict(lr=0.01, alpha=0.9, centered=True, momentum=0.5, weight_decay=0.1)),
    ("RMSProp", dict(lr=0.005, eps=1e-3, weight_decay=0.1)),
    ("Adagrad", dict()),
    ("Adagrad", dict(lr=0.1, lr_decay=0.05)),
    ("Adagrad", dict(lr=0.1, initial_accumulator_value=0.5, weight_decay=0.1)),
    ("Adagrad", dict(lr=0.2, eps=1e-3, maximize=True)),
    ("Adadelta", dict()),
    ("Adadelta", dict(lr=0.5, rho=0.8, weight_decay=0.1)),
    ("Adadelta", dict(eps=1e-3)),
]
IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in kw.items()) or 'defaults'}"
       for name, kw in CASES]


def make(name: str, kwargs: dict) -> optim.Optimizer:
    return getattr(optim, name)(**kwargs)


@pytest.mark.parametrize("name, kwargs", CASES, ids=IDS)
def test_matches_documented_update(name, kwargs):
    got = run_symgrad(make(name, kwargs))
    want = run_reference(name, kwargs)
    assert_same(got, want)
    moved = np.abs(got[-1][0] - W0).max()
    assert moved > 1e-3, "the problem should move the parameters"


@pytest.mark.parametrize("name, kwargs", CASES, ids=IDS)
def test_matches_torch_optim(name, kwargs):
    want = run_torch(name, kwargs)
    got = run_symgrad(make(name, kwargs))
    assert_same(got, want)


def test_first_step_momentum_buffer_is_the_gradient():
    """PyTorch sets the buffer to g on the first step: no dampening there, dampening after."""
    opt = optim.SGD(lr=0.1, momentum=0.9, dampening=0.5)
    (w1, b1), (w2, b2) = run_symgrad(opt, steps=2)
    g1 = numpy_grads(W0, np.asarray(B0), 0)
    np.testing.assert_allclose(w1, W0 - 0.1 * g1[0], rtol=1e-14)
    np.testing.assert_allclose(b1, B0 - 0.1 * g1[1], rtol=1e-14)
    g2 = numpy_grads(w1, b1, 1)
    np.testing.assert_allclose(w2, w1 - 0.1 * (0.9 * g1[0] + 0.5 * g2[0]), rtol=1e-14)


# ---------------------------------------------------------------------------------------------
# Changing hyperparameters between steps.

def _sgd_schedule(i, target):
    if i == 10:
        _set(target, "lr", 0.01)
    if i == 20:
        _set(target, "momentum", 0.5)


def _adam_schedule(i, target):
    _set(target, "lr", 0.05 / (1 + i))
    if i == 15:
        _set(target, "betas", (0.5, 0.9))
        _set(target, "weight_decay", 0.2)


def _rmsprop_schedule(i, target):
    if i == 5:
        _set(target, "lr", 0.001)
        _set(target, "alpha", 0.5)


def _set(target, name, value):
    """The same change on a symgrad optimizer (attribute) or a torch/reference group (key)."""
    if isinstance(target, optim.Optimizer):
        setattr(target, name, value)
    else:
        target[name] = value


SCHEDULES = [
    ("SGD", dict(lr=0.05, momentum=0.9), _sgd_schedule),
    ("Adam", dict(lr=0.05), _adam_schedule),
    ("RMSProp", dict(lr=0.01, centered=True), _rmsprop_schedule),
]


@pytest.mark.parametrize("name, kwargs, schedule", SCHEDULES, ids=[c[0] for c in SCHEDULES])
def test_changing_hyperparameters_between_steps(name, kwargs, schedule):
    got = run_symgrad(make(name, kwargs), schedule=schedule)
    assert_same(got, run_reference(name, kwargs, schedule=schedule))
    unchanged = run_symgrad(make(name, kwargs))
    assert np.abs(got[-1][0] - unchanged[-1][0]).max() > 1e-3  # the change took effect
    try:
        import torch  # noqa: F401
    except ImportError:
        return
    assert_same(got, run_torch(name, kwargs, schedule=schedule))


def test_lr_attribute_maps_to_hyper():
    opt = optim.Adam(lr=0.01)
    assert opt.lr == opt.hyper["lr"] == 0.01
    opt.lr = 0.001
    assert opt.hyper["lr"] == 0.001
    opt.hyper["eps"] = 1e-6          # the dict is the source of truth
    assert opt.eps == 1e-6
    opt.betas = (0.8, 0.95)
    assert (opt.hyper["beta1"], opt.hyper["beta2"]) == (0.8, 0.95) == opt.betas
    assert opt.amsgrad is False


def test_lr_zero_freezes_parameters():
    opt = optim.SGD(lr=0.1, momentum=0.9)
    hist = run_symgrad(opt, steps=3, schedule=lambda i, o: setattr(o, "lr", 0.1 if i < 1 else 0))
    np.testing.assert_array_equal(hist[1][0], hist[0][0])
    np.testing.assert_array_equal(hist[2][0], hist[0][0])


# ---------------------------------------------------------------------------------------------
# dtypes: float32 parameters stay float32, whatever dtype the hyperparameter nodes have.

@pytest.mark.parametrize("hyper_dtype", ["float32", "float64"])
@pytest.mark.parametrize("name, kwargs", [CASES[3], CASES[11], CASES[15], CASES[19], CASES[23],
                                          CASES[26]], ids=[IDS[i] for i in (3, 11, 15, 19, 23,
                                                                            26)])
def test_float32_params_stay_float32(name, kwargs, hyper_dtype):
    got = run_symgrad(make(name, kwargs), steps=10, dtype="float32", hyper_dtype=hyper_dtype)
    want = run_reference(name, kwargs, steps=10)
    assert got[-1][0].dtype == np.float32
    assert_same(got, want, rtol=1e-5, atol=2e-6)


# ---------------------------------------------------------------------------------------------
# Arguments, defaults, repr, docs.

INVALID = [
    ("SGD", dict(lr=-0.1), "lr"),
    ("SGD", dict(lr=0.1, momentum=-0.5), "momentum"),
    ("SGD", dict(lr=0.1, weight_decay=-1e-4), "weight_decay"),
    ("SGD", dict(lr=0.1, nesterov=True), "Nesterov"),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), "Nesterov"),
    ("Adam", dict(lr=-1e-3), "lr"),
    ("Adam", dict(eps=-1e-8), "eps"),
    ("Adam", dict(betas=(1.0, 0.999)), "beta1"),
    ("Adam", dict(betas=(0.9, -0.1)), "beta2"),
    ("Adam", dict(weight_decay=-0.1), "weight_decay"),
    ("AdamW", dict(lr=-1.0), "lr"),
    ("AdamW", dict(betas=(-0.1, 0.999)), "beta1"),
    ("RMSProp", dict(lr=-0.01), "lr"),
    ("RMSProp", dict(alpha=-0.9), "alpha"),
    ("RMSProp", dict(eps=-1.0), "eps"),
    ("RMSProp", dict(momentum=-0.9), "momentum"),
    ("RMSProp", dict(weight_decay=-0.1), "weight_decay"),
    ("Adagrad", dict(lr=-0.01), "lr"),
    ("Adagrad", dict(lr_decay=-0.1), "lr_decay"),
    ("Adagrad", dict(initial_accumulator_value=-1.0), "initial_accumulator_value"),
    ("Adagrad", dict(eps=-1.0), "eps"),
    ("Adadelta", dict(lr=-1.0), "lr"),
    ("Adadelta", dict(rho=1.5), "rho"),
    ("Adadelta", dict(eps=-1e-6), "eps"),
    ("Adadelta", dict(weight_decay=-1.0), "weight_decay"),
]


@pytest.mark.parametrize("name, kwargs, word", INVALID,
                         ids=[f"{n}-{w}-{i}" for i, (n, _, w) in enumerate(INVALID)])
def test_invalid_arguments(name, kwargs, word):
    with pytest.raises(ValueError, match=word):
        make(name, kwargs)
    try:
        import torch
    except ImportError:
        return
    cls = {"RMSProp": torch.optim.RMSprop}.get(name) or getattr(torch.optim, name)
    with pytest.raises(ValueError):  # torch rejects it too
        cls([torch.zeros(2, requires_grad=True)], **kwargs)


def test_sgd_requires_lr():
    with pytest.raises(TypeError):
        optim.SGD()  # lr has no default


def test_setting_invalid_values_raises_and_keeps_the_old_value():
    opt = optim.SGD(lr=0.1, momentum=0.9, nesterov=True)
    with pytest.raises(ValueError, match="lr"):
        opt.lr = -1.0
    with pytest.raises(TypeError, match="lr"):
        opt.lr = "0.1"
    with pytest.raises(ValueError, match="Nesterov"):
        opt.dampening = 0.5
    with pytest.raises(ValueError, match="momentum"):
        opt.momentum = 0.0  # built with momentum: the buffer's formula needs it > 0
    assert opt.hyper == {"lr": 0.1, "weight_decay": 0.0, "momentum": 0.9, "dampening": 0.0}
    with pytest.raises(AttributeError, match="nesterov"):
        opt.nesterov = False
    with pytest.raises(AttributeError, match="learning_rate"):
        opt.learning_rate = 0.1  # a typo is an error, not a silent new attribute
    with pytest.raises(AttributeError):
        _ = opt.learning_rate
    adam = optim.Adam()
    with pytest.raises(ValueError, match="beta2"):
        adam.betas = (0.9, 1.0)
    with pytest.raises(ValueError, match="beta1"):
        adam.beta1 = -0.5
    assert adam.betas == (0.9, 0.999)


def test_momentum_fixed_at_zero_cannot_be_turned_on():
    opt = optim.SGD(lr=0.1)
    assert opt.momentum == 0.0 and opt.state_spec(sg.param("p", init=0.0)) == {}
    with pytest.raises(AttributeError, match="momentum"):
        opt.momentum = 0.9
    rms = optim.RMSProp()
    with pytest.raises(AttributeError, match="momentum"):
        rms.momentum = 0.9


def test_state_spec():
    p = sg.param("p", shape=(2, 3), init=0.0)
    assert optim.SGD(lr=0.1, momentum=0.9).state_spec(p) == {"momentum_buffer": 0.0}
    assert optim.Adam().state_spec(p) == {"exp_avg": 0.0, "exp_avg_sq": 0.0}
    assert optim.AdamW(amsgrad=True).state_spec(p) == {
        "exp_avg": 0.0, "exp_avg_sq": 0.0, "max_exp_avg_sq": 0.0}
    assert optim.RMSProp(momentum=0.9, centered=True).state_spec(p) == {
        "square_avg": 0.0, "momentum_buffer": 0.0, "grad_avg": 0.0}
    assert optim.Adagrad(initial_accumulator_value=0.1).state_spec(p) == {"sum": 0.1}
    assert optim.Adadelta().state_spec(p) == {"square_avg": 0.0, "acc_delta": 0.0}


def test_update_checks_its_arguments():
    opt = optim.Adam()
    p = sg.param("p", shape=(3,), init=0.0)
    g = sg.input("g", shape=(3,))
    hyper = {k: sg.input(f"h_{k}", shape=()) for k in opt.hyper}
    t = sg.input("t", shape=())
    state = {k: sg.input(f"s_{k}", shape=(3,)) for k in opt.state_spec(p)}
    with pytest.raises(ValueError, match="exp_avg"):
        opt.update(p, g, {"exp_avg": state["exp_avg"]}, hyper, t)
    with pytest.raises(ValueError, match="'eps'"):
        opt.update(p, g, state, {k: v for k, v in hyper.items() if k != "eps"}, t)
    new_p, new_state = opt.update(p, g, state, hyper, t)
    assert "h_lr" in str(new_p) and set(new_state) == set(state)


def test_defaults_match_torch_documentation():
    assert optim.Adam().hyper == {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8,
                                  "weight_decay": 0.0}
    assert optim.AdamW().hyper["weight_decay"] == 1e-2
    assert optim.RMSProp().hyper == {"lr": 1e-2, "alpha": 0.99, "eps": 1e-8,
                                     "weight_decay": 0.0}
    rms = optim.RMSProp()
    assert rms.momentum == 0.0 and rms.centered is False
    assert optim.Adagrad().hyper == {"lr": 1e-2, "lr_decay": 0.0, "weight_decay": 0.0,
                                     "eps": 1e-10}
    assert optim.Adagrad().initial_accumulator_value == 0.0
    assert optim.Adadelta().hyper == {"lr": 1.0, "rho": 0.9, "eps": 1e-6, "weight_decay": 0.0}
    assert optim.RMSprop is optim.RMSProp


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSProp", "Adagrad", "Adadelta"])
def test_defaults_agree_with_installed_torch(name):
    torch = pytest.importorskip("torch")
    cls = {"RMSProp": torch.optim.RMSprop}.get(name) or getattr(torch.optim, name)
    theirs = inspect.signature(cls).parameters
    for arg, param in inspect.signature(getattr(optim, name)).parameters.items():
        assert arg in theirs, arg
        if param.default is not inspect.Parameter.empty:
            assert param.default == theirs[arg].default, arg
    # positional order as in torch (after its ``params``)
    ours = [a for a, p in inspect.signature(getattr(optim, name)).parameters.items()
            if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert ours == list(theirs)[1:len(ours) + 1]


@pytest.mark.parametrize("name, kwargs", CASES, ids=IDS)
def test_repr_round_trips(name, kwargs):
    opt = make(name, kwargs)
    text = repr(opt)
    assert text.startswith(f"{name}(lr=")
    again = eval(text, vars(optim))
    assert type(again) is type(opt)
    assert again.hyper == opt.hyper and again.options == opt.options


@pytest.mark.parametrize("cls", [optim.SGD, optim.Adam, optim.AdamW, optim.RMSProp,
                                 optim.Adagrad, optim.Adadelta])
def test_docstrings_state_the_equations(cls):
    doc = inspect.getdoc(cls)
    assert "θ ←" in doc and "θ − " in doc


def test_every_update_compiles_with_llvm_and_agrees_with_numpy():
    """All six rules (float32 parameter, float64 hyperparameter nodes) in one compiled
    function: the formulas use only what the LLVM backend lowers."""
    W = sg.param("W", shape=(6, 3), init=sg.init.normal(0.0, 0.5, seed=1))
    X = sg.input("X", shape=("N", 6))
    labels = sg.input("labels", shape=("N",), dtype="int32")
    g = sg.grad(sg.mean(sg.cross_entropy(X @ W, labels)), W)
    t = sg.input("t", shape=(), dtype="float64")
    rng = np.random.default_rng(0)
    feeds = {"X": rng.normal(size=(11, 6)).astype(np.float32),
             "labels": rng.integers(0, 3, 11).astype(np.int32), "t": np.float64(3)}
    outputs = []
    opts = [optim.SGD(lr=0.1, momentum=0.9, dampening=0.1), optim.Adam(amsgrad=True),
            optim.AdamW(), optim.RMSProp(momentum=0.9, centered=True),
            optim.Adagrad(lr_decay=0.1), optim.Adadelta(weight_decay=0.1)]
    for j, opt in enumerate(opts):
        hyper = {k: sg.input(f"h{j}_{k}", shape=(), dtype="float64") for k in opt.hyper}
        state = {k: sg.input(f"s{j}_{k}", shape=W.shape) for k in opt.state_spec(W)}
        new_w, new_state = opt.update(W, g, state, hyper, t)
        outputs += [new_w, *new_state.values()]
        feeds.update({f"h{j}_{k}": np.float64(v) for k, v in opt.hyper.items()})
        for k in state:  # square averages above squared gradient averages (centered RMSProp)
            low = 1.0 if k == "square_avg" else 0.0
            feeds[f"s{j}_{k}"] = (low + 0.1 * rng.random(W.shape)).astype(np.float32)
    want = sg.function(outputs, backend="numpy")(**feeds)
    got = sg.function(outputs, backend="llvm")(**feeds)
    for a, b in zip(got, want):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=2e-6, atol=1e-7)
