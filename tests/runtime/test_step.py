"""Compiled training steps (``sg.compile_step``), ``sg.fit``, ``sg.minimize``, ``sg.nn`` and the
digits example.

- the seed's worked example: the first steps against the gradient formulas written out in
  NumPy here (float64), and convergence to the least-squares solution (2, 3, 5);
- compiled (``llvm``) steps against ``numpy``-backend steps: the same parameters after 20
  Adam steps within float32 rounding, for linear regression, softmax regression, the
  784-100-10 ReLU net, hypothesis-generated small models, and every optimizer class;
- a failed step (bad feed) changes neither the parameters nor the optimizer state;
- ``p.value`` assigned between steps, ``optimizer.lr`` changed without recompiling,
  ``evaluate``, ``reset``, ``derivatives``, ``plan``;
- ``fit``: history lengths, seeding, shuffle=False, validation, bad data, the plot,
  silence with progress=False, Ctrl-C;
- ``minimize`` (L-BFGS-B through SciPy) and ``nn.linear``.
"""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import symgrad as sg
from symgrad.expr.evaluate import graph_inputs
from symgrad.runtime import jit

ROOT = Path(__file__).resolve().parents[2]

# -- the seed's worked example -----------------------------------------------------------

X1 = np.array([2, 1, 3, -1, -3], np.float64)
X2 = np.array([3, 1, -1, 1, -2], np.float64)
Y = np.array([18, 10, 8, 6, -7], np.float64)
SEED_FEEDS = {"x1": X1.astype(np.float32), "x2": X2.astype(np.float32),
              "y": Y.astype(np.float32)}


def seed_model(w1=5.0, w2=8.0, b=-2.0):
    x1, x2, y = sg.inputs("x1 x2 y")
    p = sg.params("w1 w2 b")
    for node, value in zip(p, (w1, w2, b)):
        node.value = value
    loss = sg.mean((p[0] * x1 + p[1] * x2 + p[2] - y) ** 2)
    return loss, p


def values(params) -> list[np.ndarray]:
    return [np.array(p.value, copy=True) for p in params]


def by_hand_sgd(w1: float, w2: float, b: float, lr: float, steps: int):
    """The loss before each step and the parameters after it, from the formulas:
    L = mean(r**2), r = w1*x1 + w2*x2 + b - y, dL/dw1 = 2*mean(r*x1),
    dL/dw2 = 2*mean(r*x2), dL/db = 2*mean(r); SGD: w <- w - lr*dL/dw."""
    rows = []
    for _ in range(steps):
        r = w1 * X1 + w2 * X2 + b - Y
        loss = np.mean(r**2)
        g1, g2, gb = 2 * np.mean(r * X1), 2 * np.mean(r * X2), 2 * np.mean(r)
        w1, w2, b = w1 - lr * g1, w2 - lr * g2, b - lr * gb
        rows.append((loss, w1, w2, b))
    return rows


@pytest.mark.parametrize("backend", ["llvm", "numpy"])
def test_seed_example_first_steps_by_hand(backend):
    loss, params = seed_model()
    step = sg.compile_step(loss, sg.optim.SGD(lr=0.02), backend=backend)
    want = by_hand_sgd(5.0, 8.0, -2.0, 0.02, 3)
    # the very first step, spelled out: r = (32, 19, 10, 9, -17), L = 181.4
    assert want[0][0] == pytest.approx(181.4)
    for i, (want_loss, *want_params) in enumerate(want):
        got_loss = step(**SEED_FEEDS)
        assert got_loss == pytest.approx(want_loss, rel=1e-6), i
        np.testing.assert_allclose([float(p.value) for p in params], want_params,
                                   rtol=1e-6, atol=1e-6, err_msg=f"after step {i + 1}")
    assert step.step_count == 3


def test_seed_example_reaches_least_squares_solution():
    loss, params = seed_model()
    step = sg.compile_step(loss, sg.optim.SGD(lr=0.02))
    for _ in range(1000):
        last = step(**SEED_FEEDS)
    A = np.stack([X1, X2, np.ones(5)], axis=1)
    exact = np.linalg.lstsq(A, Y, rcond=None)[0]
    np.testing.assert_allclose(exact, [2, 3, 5], atol=1e-12)
    np.testing.assert_allclose([float(p.value) for p in params], exact, atol=1e-4)
    assert last < 1e-8
    # and it agrees with the by-hand iteration all along (float32 rounding only)
    want = by_hand_sgd(5.0, 8.0, -2.0, 0.02, 1000)[-1][1:]
    np.testing.assert_allclose([float(p.value) for p in params], want, atol=1e-4)


# -- compiled steps against numpy-backend steps -------------------------------------------

def run_both(loss, make_opt, batches, params=None):
    """The parameters after running ``batches`` through an llvm step and, from the same
    start, through a numpy-backend step (each with its own optimizer state)."""
    fast = sg.compile_step(loss, make_opt(), params=params)
    ref = sg.compile_step(loss, make_opt(), params=params, backend="numpy")
    start = values(fast.params)
    fast_losses = [fast(**b) for b in batches]
    got = values(fast.params)
    for p, v in zip(fast.params, start):
        p.value = v
    ref_losses = [ref(**b) for b in batches]
    want = values(ref.params)
    return fast, ref, start, (got, fast_losses), (want, ref_losses)


def assert_same_run(start, got, want, rtol=2e-5, atol=2e-6, step_size=0.0, what=""):
    """Losses and parameters agree within float32 rounding. Adam divides each gradient by
    its running RMS, so an entry whose gradient nearly cancels over the batch (summed in a
    different order by each backend, with or without fused multiply-adds) can move by a
    different fraction of a step: all but 0.1% of entries agree within the plain float32
    tolerance, and every entry within 10% of one step (``step_size``, Adam's lr) — a
    gradient of pure rounding noise could move an entry by a whole step in either
    direction."""
    (got_p, got_l), (want_p, want_l) = got, want
    np.testing.assert_allclose(got_l, want_l, rtol=rtol, atol=atol, err_msg=f"{what}: losses")
    moved = False
    for g, w, s in zip(got_p, want_p, start):
        assert g.dtype == w.dtype == s.dtype
        scale = max(1.0, float(np.max(np.abs(w), initial=0)))
        tight = np.abs(g - w) <= atol * scale + rtol * np.abs(w)
        assert np.mean(~tight) <= 1e-3, f"{what}: {np.sum(~tight)} of {w.size} entries differ"
        np.testing.assert_allclose(g, w, rtol=rtol, atol=max(atol * scale, 0.1 * step_size),
                                   err_msg=what)
        moved |= bool(np.any(w != s))
    assert moved, f"{what}: the parameters did not move"


def linreg_batches(n=64, steps=20, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        a, c = rng.normal(size=n), rng.normal(size=n)
        out.append({"x1": a.astype(np.float32), "x2": c.astype(np.float32),
                    "y": (2 * a + 3 * c + 5 + 0.1 * rng.normal(size=n)).astype(np.float32)})
    return out


def class_batches(n, features, steps=20, seed=0):
    rng = np.random.default_rng(seed)
    return [{"X": rng.normal(size=(n, features)).astype(np.float32),
             "labels": rng.integers(0, 10, n).astype(np.int32)} for _ in range(steps)]


def softmax_regression(features=784):
    X = sg.input("X", shape=("N", features))
    labels = sg.input("labels", dtype="int32")
    W = sg.param("W", shape=(features, 10), init=sg.init.normal(0.0, 0.01, seed=0))
    c = sg.param("c", shape=(10,), init=0.0)
    return sg.cross_entropy(X @ W + c, labels), [W, c]


def test_linear_regression_adam_matches_numpy_backend():
    loss, _ = seed_model(0.0, 0.0, 0.0)
    *_, start, got, want = run_both(loss, lambda: sg.optim.Adam(lr=0.05), linreg_batches())
    assert_same_run(start, got, want, step_size=0.05, what="linear regression")


def test_softmax_regression_adam_matches_numpy_backend():
    loss, _ = softmax_regression()
    *_, start, got, want = run_both(loss, lambda: sg.optim.Adam(lr=1e-3),
                                    class_batches(100, 784))
    assert_same_run(start, got, want, step_size=1e-3, what="softmax regression")


def test_relu_net_784_100_10_adam_matches_numpy_backend():
    X = sg.input("X", shape=("N", 784))
    labels = sg.input("labels", dtype="int32")
    logits = sg.nn.mlp(X, [100, 10], seed=0)
    loss = sg.cross_entropy(logits, labels)
    fast, _, start, got, want = run_both(loss, lambda: sg.optim.Adam(lr=1e-3),
                                         class_batches(16, 784, seed=1))
    assert [p.shape for p in fast.params] == [(784, 100), (100,), (100, 10), (10,)]
    assert_same_run(start, got, want, step_size=1e-3, what="784-100-10")


OPTIMIZERS = [
    lambda: sg.optim.SGD(lr=0.05),
    lambda: sg.optim.SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    lambda: sg.optim.Adam(lr=0.05, amsgrad=True, weight_decay=1e-2),
    lambda: sg.optim.AdamW(lr=0.05),
    lambda: sg.optim.RMSProp(lr=0.01, momentum=0.5, centered=True),
    lambda: sg.optim.Adagrad(lr=0.1, lr_decay=1e-2),
    lambda: sg.optim.Adadelta(lr=1.0),
]


@pytest.mark.parametrize("make_opt", OPTIMIZERS,
                         ids=lambda f: repr(f()).split("(")[0] + str(OPTIMIZERS.index(f)))
def test_every_optimizer_matches_numpy_backend(make_opt):
    X = sg.input("X", shape=("N", 3))
    y = sg.input("y")
    w = sg.param("w", init=np.array([0.5, -1.0, 0.25]))
    b = sg.param("b", init=0.1)
    loss = sg.mean((sg.tanh(X @ w) + b - y) ** 2)
    rng = np.random.default_rng(3)
    batches = []
    for _ in range(20):
        Xi = rng.normal(size=(32, 3)).astype(np.float32)
        batches.append({"X": Xi, "y": np.tanh(Xi @ [1.0, 0.5, -0.5]).astype(np.float32)})
    fast, ref, start, got, want = run_both(loss, make_opt, batches)
    assert_same_run(start, got, want, step_size=make_opt().lr, what=repr(make_opt()))
    assert fast.step_count == ref.step_count == 20
    for name, state in fast.optimizer_state.items():  # the state agrees too
        for k, v in state.items():
            np.testing.assert_allclose(v, ref.optimizer_state[name][k], rtol=2e-5,
                                       atol=1e-6, err_msg=f"{name}.{k}")


# hypothesis-generated small models: a smooth random tree over two parameters and two
# inputs that all broadcast to (N, 3), reduced to a scalar loss

UNARY = [sg.sin, sg.tanh, sg.sigmoid, sg.softplus, lambda e: sg.log(e**2 + 1),
         lambda e: sg.sqrt(e**2 + 1), lambda e: sg.exp(sg.tanh(e)), lambda e: e**2,
         lambda e: -e, sg.gelu, lambda e: 1 / (e**2 + 1)]
BINARY = [lambda a, b: a + b, lambda a, b: a - b, lambda a, b: a * b,
          lambda a, b: a / (b**2 + 1), lambda a, b: 0.5 * a - 2.0 * b]
SHAPE = [lambda e: sg.sum(e, axis=-1, keepdims=True) if e.ndim else e,
         lambda e: sg.mean(e, axis=0, keepdims=True) if e.ndim == 2 else e,
         lambda e: sg.logsumexp(e, axis=-1, keepdims=True) if e.ndim else e,
         lambda e: sg.softmax(e, axis=-1) if e.ndim else e]


@st.composite
def small_models(draw, max_depth=4):
    def plan(depth):
        if depth == 0 or draw(st.integers(0, 5)) == 0:
            return ("leaf", draw(st.sampled_from(["x", "y", "p", "q"])))
        kind = draw(st.sampled_from(["unary", "binary", "shape"]))
        if kind == "unary":
            return (kind, draw(st.integers(0, len(UNARY) - 1)), plan(depth - 1))
        if kind == "binary":
            return (kind, draw(st.integers(0, len(BINARY) - 1)), plan(depth - 1),
                    plan(depth - 1))
        return (kind, draw(st.integers(0, len(SHAPE) - 1)), plan(depth - 1))

    return plan(draw(st.integers(1, max_depth))), draw(st.integers(0, 2**16))


def build_model(plan, leaves):
    kind = plan[0]
    if kind == "leaf":
        return leaves[plan[1]]
    if kind == "unary":
        return UNARY[plan[1]](build_model(plan[2], leaves))
    if kind == "binary":
        return BINARY[plan[1]](build_model(plan[2], leaves), build_model(plan[3], leaves))
    return SHAPE[plan[1]](build_model(plan[2], leaves))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_models())
@example((("shape", 3, ("leaf", "p")), 0))  # softmax(p): its sum's gradient is zero
@example((("binary", 2, ("unary", 9, ("leaf", "x")), ("shape", 2, ("binary", 0, ("leaf", "p"),
                                                                 ("leaf", "y")))), 1))
def test_random_small_models_match_numpy_backend(model):
    plan, seed = model
    rng = np.random.default_rng(seed)
    leaves = {"x": sg.input("x", shape=("N", 3)), "y": sg.input("y", shape=("N", 1)),
              "p": sg.param("p", init=rng.uniform(-1, 1, 3)),
              "q": sg.param("q", init=rng.uniform(-1, 1))}
    e = build_model(plan, leaves)
    # every model trains both parameters and reads x (which sets N: a tree may simplify to
    # one without inputs, as sin(x - x)): small extra terms keep them in the loss
    x, p, q = leaves["x"], leaves["p"], leaves["q"]
    loss = sg.mean(e * 0.5) + 0.01 * (sg.sum(p**2) + q**2 + sg.mean(x * q))
    needed = graph_inputs([loss])  # a model need not read both inputs
    batches = [{k: v for k, v in {"x": rng.normal(size=(8, 3)).astype(np.float32),
                                  "y": rng.normal(size=(8, 1)).astype(np.float32)}.items()
                if k in needed} for _ in range(20)]
    # eps = 1e-3: a gradient that is zero but for rounding (d/dp of sum(softmax(p))) must
    # not become a full Adam step of either sign
    *_, start, got, want = run_both(loss, lambda: sg.optim.Adam(lr=1e-2, eps=1e-3), batches)
    assert_same_run(start, got, want, rtol=1e-4, atol=1e-5, step_size=1e-2, what=f"{e}")


# -- a failed step changes nothing ---------------------------------------------------------

def snapshot(step):
    return values(step.params), copy.deepcopy(step.optimizer_state), step.step_count


def assert_unchanged(step, snap):
    params, state, count = snap
    for p, v in zip(step.params, params):
        np.testing.assert_array_equal(p.value, v)
    assert step.optimizer_state.keys() == state.keys()
    for name, arrays in state.items():
        for k, v in arrays.items():
            np.testing.assert_array_equal(step.optimizer_state[name][k], v)
    assert step.step_count == count


BAD_FEEDS = {
    "missing input": lambda b: {"X": b["X"]},
    "a typo": lambda b: {"X": b["X"], "label": b["labels"]},  # labels missing
    "float labels": lambda b: {**b, "labels": b["labels"].astype(np.float32)},
    "images beyond float32's integers": lambda b: {**b, "X": np.full(b["X"].shape, 2**25 + 1,
                                                                       np.int32)},
    "wrong width": lambda b: {**b, "X": b["X"][:, :-1]},
    "wrong rank": lambda b: {**b, "X": b["X"].reshape(-1)},
    "batch sizes differ": lambda b: {**b, "labels": b["labels"][:-1]},
    "label out of range": lambda b: {**b, "labels": b["labels"] + 10},
    "not an array": lambda b: {**b, "X": "images"},
}


@pytest.mark.parametrize("backend", ["llvm", "numpy"])
def test_failed_step_leaves_parameters_and_state_unchanged(backend):
    loss, _ = softmax_regression(features=20)
    step = sg.compile_step(loss, sg.optim.Adam(lr=1e-2), backend=backend)
    good = class_batches(16, 20, steps=3)
    start = values(step.params)
    for b in good[:2]:
        step(**b)
    snap = snapshot(step)
    assert any(np.any(v != 0) for s in snap[1].values() for v in s.values())
    for what, bad in BAD_FEEDS.items():
        with pytest.raises((ValueError, TypeError)):
            step(**bad(good[2]))
        assert_unchanged(step, snap)
        assert what
    # and the next good step is exactly the step it would have been
    step(**good[2])
    after = values(step.params)
    twin = sg.compile_step(loss, sg.optim.Adam(lr=1e-2), backend=backend)
    for p, v in zip(step.params, start):
        p.value = v
    for b in good:
        twin(**b)
    for got, want in zip(after, values(step.params)):
        np.testing.assert_array_equal(got, want)


# -- between steps -------------------------------------------------------------------------

def test_assigning_param_value_is_seen_by_the_next_step():
    loss, (w1, w2, b) = seed_model()
    step = sg.compile_step(loss, sg.optim.SGD(lr=0.02))
    step(**SEED_FEEDS)
    w1.value, w2.value, b.value = 2.0, 3.0, 5.0  # the exact solution: zero loss
    assert step(**SEED_FEEDS) == 0.0
    assert [float(p.value) for p in (w1, w2, b)] == [2.0, 3.0, 5.0]
    with pytest.raises(ValueError):
        w1.value = np.zeros(2)  # the shape is checked
    assert float(w1.value) == 2.0

    tensor_loss, (W, c) = softmax_regression(features=20)
    tensor_step = sg.compile_step(tensor_loss, sg.optim.Adam())
    batch = class_batches(32, 20, steps=1)[0]
    tensor_step(**batch)
    W.value = np.zeros((20, 10))
    c.value = np.zeros(10)
    assert tensor_step(**batch) == pytest.approx(np.log(10), rel=1e-6)


def test_changing_lr_takes_effect_without_recompiling():
    loss, params = seed_model()
    step = sg.compile_step(loss, sg.optim.SGD(lr=0.02))
    step(**SEED_FEEDS)
    compiles = jit.stats.compile_count

    step.optimizer.lr = 0.0
    before = values(params)
    step(**SEED_FEEDS)
    for p, v in zip(params, before):
        np.testing.assert_array_equal(p.value, v)

    step.optimizer.lr = 0.01  # one step from the current point with the new rate
    w1, w2, b = (float(v) for v in before)
    want = by_hand_sgd(w1, w2, b, 0.01, 1)[0][1:]
    step(**SEED_FEEDS)
    np.testing.assert_allclose([float(p.value) for p in params], want, rtol=1e-6)
    assert jit.stats.compile_count == compiles


def test_evaluate_does_not_update():
    loss, params = softmax_regression(features=20)
    step = sg.compile_step(loss, sg.optim.Adam(lr=1e-2))
    b0, b1 = class_batches(32, 20, steps=2)
    step(**b0)
    snap = snapshot(step)
    value = step.evaluate(**b1)
    assert isinstance(value, float)
    assert_unchanged(step, snap)
    assert step.evaluate(**b1) == value
    assert step(**b1) == pytest.approx(value, rel=1e-6)  # the loss before the update
    with pytest.raises(ValueError):
        step.evaluate(X=b1["X"])
    assert step.step_count == 2


def test_reset_zeroes_the_state_and_the_step_count():
    loss, params = softmax_regression(features=20)
    step = sg.compile_step(loss, sg.optim.Adam(lr=1e-2))
    batches = class_batches(32, 20, steps=4)
    for b in batches[:3]:
        step(**b)
    assert step.step_count == 3
    kept = values(params)
    step.reset()
    assert step.step_count == 0
    for state in step.optimizer_state.values():
        assert set(state) == {"exp_avg", "exp_avg_sq"}
        for v in state.values():
            assert not np.any(v)
    for p, v in zip(params, kept):
        np.testing.assert_array_equal(p.value, v)
    # after reset the step is a first step again: as a freshly compiled step's
    step(**batches[3])
    after_reset = values(params)
    for p, v in zip(params, kept):
        p.value = v
    sg.compile_step(loss, sg.optim.Adam(lr=1e-2))(**batches[3])
    for got, want in zip(after_reset, values(params)):
        np.testing.assert_array_equal(got, want)


def test_derivatives_map_each_param_to_its_gradient_formula():
    loss, params = seed_model()
    step = sg.compile_step(loss, sg.optim.SGD(lr=0.02))
    assert list(step.derivatives) == list(params) == step.params
    r = 5 * X1 + 8 * X2 - 2 - Y
    want = {"w1": 2 * np.mean(r * X1), "w2": 2 * np.mean(r * X2), "b": 2 * np.mean(r)}
    for p, g in step.derivatives.items():
        assert isinstance(g, sg.Expr) and g.shape == p.shape
        assert str(g) == str(sg.grad(loss, p))
        assert float(sg.evaluate(g, **SEED_FEEDS)) == pytest.approx(want[p.name], rel=1e-6)
    assert "x1" in str(step.derivatives[params[0]])

    tensor_loss, (W, c) = softmax_regression()
    tensor_step = sg.compile_step(tensor_loss, sg.optim.SGD(lr=0.1), params=[W])
    assert list(tensor_step.derivatives) == [W]  # only the params asked for
    assert str(tensor_step.derivatives[W]) == "X.T@(softmax(X@W + c, axis=1) - " \
                                              "one_hot(labels, 10))/N"
    assert list(tensor_step.optimizer_state) == ["W"]
    c_before, W_before = c.value.copy(), W.value.copy()
    tensor_step(**class_batches(8, 784, steps=1)[0])
    np.testing.assert_array_equal(c.value, c_before)  # not trained
    assert np.any(W.value != W_before)


def test_plan_is_one_pass_for_linear_and_softmax_regression():
    loss, _ = seed_model()
    tensor_loss, _ = softmax_regression()
    for step in (sg.compile_step(loss, sg.optim.SGD(lr=0.02)),
                 sg.compile_step(tensor_loss, sg.optim.Adam())):
        assert step.plan.startswith("plan: 1 pass over N"), step.plan
        assert "pass 2" not in step.plan
        assert "define" in step.source and step.asm.strip()


def test_compile_step_rejects_bad_arguments():
    x = sg.input("x")
    w = sg.param("w", init=1.0)
    with pytest.raises(ValueError, match="scalar"):
        sg.compile_step(w * x, sg.optim.SGD(lr=0.1))
    with pytest.raises(ValueError, match="no parameter"):
        sg.compile_step(sg.mean(x), sg.optim.SGD(lr=0.1))
    with pytest.raises(TypeError):
        sg.compile_step(sg.mean(w * x), sg.optim.SGD(lr=0.1), params=[x])


# -- sg.fit --------------------------------------------------------------------------------

def fit_problem(n=10):
    rng = np.random.default_rng(0)
    a, c = rng.normal(size=n), rng.normal(size=n)
    data = {"x1": a.astype(np.float32), "x2": c.astype(np.float32),
            "y": (2 * a + 3 * c + 5).astype(np.float32)}
    loss, params = seed_model(0.0, 0.0, 0.0)
    return sg.compile_step(loss, sg.optim.SGD(lr=0.05)), params, data


class Recorder:
    """A stand-in step that records the batches it is given."""

    def __init__(self, fail_at=None, inner=None):
        self.batches, self.fail_at, self.inner = [], fail_at, inner

    def __call__(self, **batch):
        if self.fail_at is not None and len(self.batches) == self.fail_at:
            raise KeyboardInterrupt
        self.batches.append(batch)
        return self.inner(**batch) if self.inner else float(len(self.batches))

    def evaluate(self, **batch):
        return self.inner.evaluate(**batch) if self.inner else 0.0


def test_fit_history_lengths_with_a_partial_last_batch():
    step, params, data = fit_problem(10)
    history = sg.fit(step, data, epochs=3, batch_size=4, seed=0, progress=False)
    assert len(history.step_loss) == 9  # 4 + 4 + 2 per epoch
    assert len(history.epoch_loss) == 3 and history.validation_loss == []
    assert step.step_count == 9 and not history.interrupted and history.seconds > 0
    np.testing.assert_allclose(history.epoch_loss[0], np.mean(history.step_loss[:3]))
    rec = Recorder()
    sg.fit(rec, data, epochs=2, batch_size=4, seed=0, progress=False)
    assert [len(b["x1"]) for b in rec.batches] == [4, 4, 2, 4, 4, 2]


def test_fit_shuffles_each_epoch_and_keeps_order_without_shuffle():
    _, _, data = fit_problem(10)
    rec = Recorder()
    sg.fit(rec, data, epochs=2, batch_size=10, seed=1, progress=False)
    first, second = (b["x1"] for b in rec.batches)
    assert sorted(first) == sorted(second) == sorted(data["x1"])
    assert not np.array_equal(first, second)
    rec = Recorder()
    sg.fit(rec, data, epochs=2, batch_size=3, shuffle=False, progress=False)
    for epoch in (rec.batches[:4], rec.batches[4:]):
        for k in data:
            np.testing.assert_array_equal(np.concatenate([b[k] for b in epoch]), data[k])


def test_fit_same_seed_same_result():
    results = []
    for seed in (7, 7, 8):
        step, params, data = fit_problem(50)
        history = sg.fit(step, data, epochs=3, batch_size=8, seed=seed, progress=False)
        results.append((history.step_loss, values(params)))
    assert results[0][0] == results[1][0]
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_array_equal(a, b)
    assert results[0][0] != results[2][0]


def test_fit_records_validation_loss():
    step, params, data = fit_problem(40)
    validation = {k: v[:10] for k, v in data.items()}
    history = sg.fit(step, data, epochs=4, batch_size=8, seed=0, progress=False,
                     validation=validation)
    assert len(history.validation_loss) == 4
    assert history.validation_loss[-1] == step.evaluate(**validation)
    assert history.validation_loss[-1] < history.validation_loss[0]


def test_fit_rejects_arrays_of_different_lengths():
    step, _, data = fit_problem(10)
    bad = {**data, "y": data["y"][:7]}
    with pytest.raises(ValueError, match=r"x1: 10.*y: 7"):
        sg.fit(step, bad, epochs=1, batch_size=4, progress=False)
    with pytest.raises(ValueError, match="validation.*y: 3"):
        sg.fit(step, data, epochs=1, batch_size=4, progress=False,
               validation={**data, "y": data["y"][:3]})
    assert step.step_count == 0


def test_history_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    step, _, data = fit_problem(20)
    history = sg.fit(step, data, epochs=3, batch_size=5, seed=0, progress=False,
                     validation=data)
    path = history.plot(str(tmp_path / "loss.png"))
    assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fit_progress_false_prints_nothing(capfd):
    step, _, data = fit_problem(20)
    sg.fit(step, data, epochs=2, batch_size=5, seed=0, progress=False, validation=data)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_fit_progress_true_shows_a_bar(capfd):
    step, _, data = fit_problem(20)
    sg.fit(step, data, epochs=2, batch_size=5, seed=0, progress=True)
    out, err = capfd.readouterr()
    assert "8/8" in out + err


def test_keyboard_interrupt_in_a_callback_stops_cleanly():
    step, params, data = fit_problem(10)
    seen = []

    def stop_after_two(epoch, history):
        seen.append(epoch)
        if epoch == 1:
            raise KeyboardInterrupt

    history = sg.fit(step, data, epochs=5, batch_size=4, seed=0, progress=False,
                     callbacks=[stop_after_two])
    assert history.interrupted and seen == [0, 1]
    assert len(history.epoch_loss) == 2 and len(history.step_loss) == 6
    assert step.step_count == 6


def test_keyboard_interrupt_during_a_step_keeps_the_last_finished_step():
    step, params, data = fit_problem(10)
    rec = Recorder(fail_at=4, inner=step)
    history = sg.fit(rec, data, epochs=3, batch_size=4, shuffle=False, progress=False)
    assert history.interrupted and len(history.step_loss) == 4
    assert step.step_count == 4
    # the parameters are those of 4 steps over the same batches
    done = values(params)
    twin_step, twin_params, _ = fit_problem(10)
    for b in rec.batches:
        twin_step(**b)
    for a, b in zip(done, values(twin_params)):
        np.testing.assert_array_equal(a, b)


# -- sg.minimize ---------------------------------------------------------------------------

def test_minimize_solves_linear_regression_with_lbfgsb():
    from scipy.optimize import OptimizeResult

    loss, params = seed_model()
    result = sg.minimize(loss, SEED_FEEDS, method="L-BFGS-B")
    assert isinstance(result, OptimizeResult) and result.success
    np.testing.assert_allclose(result.x, [2, 3, 5], atol=1e-3)
    np.testing.assert_allclose([float(p.value) for p in params], [2, 3, 5], atol=1e-3)
    np.testing.assert_array_equal([p.value for p in params],
                                  result.x.astype(np.float32))  # written into the params
    assert result.fun < 1e-5


def test_minimize_tensor_params_round_trip_shapes():
    X = sg.input("X", shape=("N", 3))
    y = sg.input("y")
    w = sg.param("w", shape=(3,), init=0.0)
    b = sg.param("b", init=0.0)
    loss = sg.mean((X @ w + b - y) ** 2)
    rng = np.random.default_rng(0)
    Xv = rng.normal(size=(50, 3))
    yv = Xv @ [1.0, -2.0, 0.5] + 0.25
    result = sg.minimize(loss, {"X": Xv.astype(np.float32), "y": yv.astype(np.float32)})
    assert w.value.shape == (3,) and b.value.shape == ()
    np.testing.assert_allclose(w.value, [1.0, -2.0, 0.5], atol=1e-3)
    assert float(b.value) == pytest.approx(0.25, abs=1e-3)
    assert result.x.shape == (4,)


# -- sg.nn ---------------------------------------------------------------------------------

def test_nn_linear_shapes_init_and_formula():
    x = sg.input("x", shape=("N", 400))
    out = sg.nn.linear(x, 300, name="fc", seed=0)
    assert str(out) == "x@fc_W + fc_b"
    assert out.shape == ("N", 300) and out.dtype == np.float32
    from symgrad.expr.leaves import PARAM
    from symgrad.expr.node import toposort
    W, b = sorted((n for n in toposort([out]) if n.op is PARAM), key=lambda n: n.ndim,
                  reverse=True)
    assert (W.name, b.name) == ("fc_W", "fc_b")
    assert W.shape == (400, 300) and b.shape == (300,)
    assert W.value.dtype == b.value.dtype == np.float32
    bound = 1 / np.sqrt(400)  # torch.nn.Linear: U(-1/sqrt(in), 1/sqrt(in)) for both
    for v in (W.value, b.value):
        assert np.all(np.abs(v) <= bound)
        assert np.max(np.abs(v)) > 0.97 * bound
    assert abs(float(np.std(W.value)) - bound / np.sqrt(3)) < 0.01 * bound
    assert abs(float(np.mean(W.value))) < 0.01 * bound

    again = sg.nn.linear(x, 300, name="fc", seed=0)
    no_bias = sg.nn.linear(x, 5, name="head", bias=False)
    assert str(no_bias) == "x@head_W" and no_bias.shape == ("N", 5)
    W2 = next(n for n in toposort([again]) if n.op is PARAM and n.name == "fc_W")
    assert W2 is not W  # every call makes new parameters, with the same values for a seed
    np.testing.assert_array_equal(W2.value, W.value)
    with pytest.raises(ValueError, match="last axis"):
        sg.nn.linear(sg.input("v", shape=("N", "M")), 3)


def test_nn_mlp_prints_as_its_layers():
    X = sg.input("X", shape=("N", 784))
    logits = sg.nn.mlp(X, [100, 10], name="mlp", seed=0)
    assert str(logits) == "relu(X@mlp0_W + mlp0_b)@mlp1_W + mlp1_b"
    assert logits.shape == ("N", 10)


# -- the digits example --------------------------------------------------------------------

def test_digits_example_accuracy():
    pytest.importorskip("sklearn")
    spec = importlib.util.spec_from_file_location("digits_example", ROOT / "examples" /
                                                  "digits.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = module.main([])
    assert results["softmax"] > 0.93
    assert results["hidden"] > 0.95


def test_watch_reports_batch_statistics_of_an_intermediate():
    X = sg.input("Xw", shape=("N", 6))
    labels = sg.input("lw", dtype="int32")
    W = sg.param("Ww", init=np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32))
    hidden = sg.watch(sg.relu(X @ W), "hidden")
    step = sg.compile_step(sg.cross_entropy(hidden, labels), sg.optim.SGD(lr=0.1))
    rng = np.random.default_rng(1)
    xs = rng.normal(size=(9, 6)).astype(np.float32)
    before = W.value.copy()
    step(Xw=xs, lw=rng.integers(0, 4, 9).astype(np.int32))
    h = np.maximum(xs.astype(np.float64) @ before, 0)  # computed here, from the formula
    got = step.watched["hidden"]
    assert got["mean"] == pytest.approx(h.mean(), rel=1e-5)
    assert got["min"] == pytest.approx(h.min(), abs=1e-6)
    assert got["max"] == pytest.approx(h.max(), rel=1e-5)
    np.testing.assert_allclose(got["first"], h[0, :4], rtol=1e-5, atol=1e-6)
    assert str(hidden) == "relu(Xw@Ww)"  # the mark does not change the formula
