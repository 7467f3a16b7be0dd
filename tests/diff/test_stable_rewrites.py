"""Naive formulas made stable, in value and derivative (issue 13, item 1).

``log(1 + exp(x))``, ``1/(1 + exp(-x))``, ``log(sum(exp(x)))``, ``log(1 - sigmoid(x))``,
binary and softmax cross-entropies written by hand, ``exp(x) - 1`` and ``log(1 + x)``
overflow or cancel in float32 at ordinary inputs. After ``sg.simplify`` their values, and
their derivatives from ``sg.grad``, must match float64 references (NumPy, stable
formulas) at x in +-20, +-50, +-100 and 1e-9, on the reference evaluator and the compiled
LLVM backend; and every rewrite must keep the naive formula's values where it is finite.
"""

from __future__ import annotations

import numpy as np
import pytest
from diffhelp import SETTINGS, ops_in, run
from hypothesis import given
from hypothesis import strategies as st

import symgrad as sg
from symgrad.diff import STABILIZE, Simplifier

EXTREME = np.array([-100, -50, -20, -1, -1e-9, 0, 1e-9, 1, 20, 50, 100], np.float32)
SMALL = np.array([-1e-9, -1e-7, 1e-9, 1e-7, 1e-4, -0.5, 0.5, 20, 50, 100], np.float32)
TINY = SMALL[:7]
LARGE = EXTREME[np.abs(EXTREME) >= 1]  # where exp(x) - 1 and log(1 - x) are finite in float32
STABLE_RULES = {r.name for r in STABILIZE}
RTOL, ATOL = 2e-5, 1e-37  # float32 against float64; ATOL: below float32's normal range


def sigmoid64(u):
    u = np.asarray(u, np.float64)
    e = np.exp(-np.abs(u))
    return np.where(u >= 0, 1 / (1 + e), e / (1 + e))


def softplus64(u):
    return np.logaddexp(0.0, np.asarray(u, np.float64))


def lse64(z, axis=None, keepdims=False):
    z = np.asarray(z, np.float64)
    m = np.max(z, axis=axis, keepdims=True)
    out = np.log(np.sum(np.exp(z - m), axis=axis, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=axis)


def softmax64(z, axis=-1):
    return np.exp(np.asarray(z, np.float64) - lse64(z, axis, True))


def close(got, want, what=""):
    got = np.asarray(got, np.float64)
    assert np.all(np.isfinite(got)), f"{what}: not finite: {got}"
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=what)


# name -> (naive formula of x, value of x in float64, derivative in float64, inputs)
x = sg.input("x")  # float32, shape (N,)
FORMS = {
    "softplus": (lambda x: sg.log(1 + sg.exp(x)), softplus64, sigmoid64, EXTREME),
    "softplus_swapped": (lambda x: sg.log(sg.exp(x) + 1), softplus64, sigmoid64, EXTREME),
    "softplus_log1p": (lambda x: sg.log1p(sg.exp(x)), softplus64, sigmoid64, EXTREME),
    "softplus_of_minus": (lambda x: sg.log(1 + sg.exp(-x)), lambda u: softplus64(-u),
                          lambda u: -sigmoid64(-u), EXTREME),
    "softplus_affine": (lambda x: sg.log(1 + sg.exp(2 * x + 1)),
                        lambda u: softplus64(2 * u + 1.0), lambda u: 2 * sigmoid64(2 * u + 1.0),
                        EXTREME),
    "sigmoid": (lambda x: 1 / (1 + sg.exp(-x)), sigmoid64,
                lambda u: sigmoid64(u) * sigmoid64(-u), EXTREME),
    "sigmoid_ratio": (lambda x: sg.exp(x) / (1 + sg.exp(x)), sigmoid64,
                      lambda u: sigmoid64(u) * sigmoid64(-u), EXTREME),
    "sigmoid_power": (lambda x: (sg.exp(-x) + 1) ** -1, sigmoid64,
                      lambda u: sigmoid64(u) * sigmoid64(-u), EXTREME),
    "sigmoid_of_minus": (lambda x: 1 / (1 + sg.exp(x)), lambda u: sigmoid64(-u),
                         lambda u: -sigmoid64(u) * sigmoid64(-u), EXTREME),
    "log_sigmoid": (lambda x: sg.log(sg.sigmoid(x)), lambda u: -softplus64(-u),
                    lambda u: sigmoid64(-u), EXTREME),
    "log_sigmoid_naive": (lambda x: sg.log(1 / (1 + sg.exp(-x))), lambda u: -softplus64(-u),
                          lambda u: sigmoid64(-u), EXTREME),
    "log_one_minus_sigmoid": (lambda x: sg.log(1 - sg.sigmoid(x)), lambda u: -softplus64(u),
                              lambda u: -sigmoid64(u), EXTREME),
    "sigmoid_derivative": (lambda x: sg.sigmoid(x) * (1 - sg.sigmoid(x)),
                           lambda u: sigmoid64(u) * sigmoid64(-u),
                           lambda u: sigmoid64(u) * sigmoid64(-u) * (sigmoid64(-u)
                                                                     - sigmoid64(u)),
                           LARGE),  # its derivative cancels near 0 (s(-x) - s(x))
    "shared_exp": (lambda x: (lambda t: sg.log(1 + t) - 2 * t / (1 + t))(sg.exp(x)),
                   lambda u: softplus64(u) - 2 * sigmoid64(u),
                   lambda u: sigmoid64(u) - 2 * sigmoid64(u) * sigmoid64(-u), LARGE),
    "expm1": (lambda x: sg.exp(x) - 1, np.expm1, np.exp, TINY),
    "expm1_minus": (lambda x: 1 - sg.exp(x), lambda u: -np.expm1(u), lambda u: -np.exp(u),
                    TINY),
    "log1p": (lambda x: sg.log(1 + x), np.log1p, lambda u: 1 / (1 + u), SMALL),
    "log1m": (lambda x: sg.log(1 - x), lambda u: np.log1p(-u), lambda u: -1 / (1 - u),
              TINY),
}


def _value_and_grad(name):
    build, _, _, _ = FORMS[name]
    e = build(x)
    return sg.simplify(e), sg.grad(sg.sum(e), x)


@pytest.mark.parametrize("name", sorted(FORMS))
def test_stable_value_and_gradient_on_the_evaluator(name):
    _, f, df, xs = FORMS[name]
    s, g = _value_and_grad(name)
    u = xs.astype(np.float64)
    close(run(s, {"x": xs}), f(u), f"{name}: value")
    close(run(g, {"x": xs}), df(u), f"{name}: gradient")


def test_stable_values_and_gradients_compiled():
    groups: dict[int, list[str]] = {}  # one compiled function per set of input points
    for n in sorted(FORMS):
        groups.setdefault(id(FORMS[n][3]), []).append(n)
    for names in groups.values():
        xs = FORMS[names[0]][3]
        got = iter(sg.function([o for n in names for o in _value_and_grad(n)])(x=xs))
        u = xs.astype(np.float64)
        for n in names:
            _, f, df, _ = FORMS[n]
            close(next(got), f(u), f"{n}: compiled value")
            close(next(got), df(u), f"{n}: compiled gradient")


def test_printing_shows_the_stable_operators():
    assert str(sg.simplify(sg.log(1 + sg.exp(x)))) == "softplus(x)"
    assert str(sg.simplify(sg.log(sg.exp(x) + 1))) == "softplus(x)"
    assert str(sg.simplify(1 / (1 + sg.exp(-x)))) == "sigmoid(x)"
    assert str(sg.simplify(sg.exp(x) / (sg.exp(x) + 1))) == "sigmoid(x)"
    assert str(sg.simplify(sg.log(1 - sg.sigmoid(x)))) == "-softplus(x)"
    assert str(sg.simplify(sg.exp(x) - 1)) == "expm1(x)"
    assert str(sg.simplify(sg.log(1 + x))) == "log1p(x)"
    assert str(sg.simplify(sg.log(sg.sum(sg.exp(x))))) == "logsumexp(x)"
    assert str(sg.grad(sg.sum(sg.log(1 + sg.exp(x))), x)) == "sigmoid(x)"


@pytest.mark.parametrize("name", sorted(FORMS))
def test_no_overflowing_exp_is_left(name):
    """The stable forms and their derivatives contain no ``exp`` (``expm1`` may stay)."""
    if name.startswith("expm1"):
        return
    s, g = _value_and_grad(name)
    assert "exp" not in ops_in([s, g]), f"{name}:\n{s}\n{g}"


def test_derivatives_of_the_stable_operators_stay_stable():
    z = sg.input("z", shape=(2, 4))
    cases = {
        "softplus": (sg.sum(sg.softplus(x)), sigmoid64),
        "sigmoid": (sg.sum(sg.sigmoid(x)), lambda u: sigmoid64(u) * sigmoid64(-u)),
        "log_sigmoid": (sg.sum(-sg.softplus(-x)), lambda u: sigmoid64(-u)),
    }
    u = EXTREME.astype(np.float64)
    for name, (f, df) in cases.items():
        g = sg.grad(f, x)
        assert "exp" not in ops_in(g), f"{name}: {g}"
        close(run(g, {"x": EXTREME}), df(u), name)
    zs = np.array([[100, -100, 50, 0], [-20, 20, 1e-9, 90]], np.float32)
    g = sg.grad(sg.sum(sg.logsumexp(z, axis=1) * sg.const(np.array([1.0, 2.0], np.float32))),
                z)
    close(run(g, {"z": zs}), softmax64(zs, 1) * [[1.0], [2.0]], "logsumexp")


# ---------------------------------------------------------------------------------------
# Cross-entropies written by hand.
# ---------------------------------------------------------------------------------------

def test_binary_cross_entropy_by_hand():
    zi, yi = sg.input("zb"), sg.input("yb")
    for p in (sg.sigmoid(zi), 1 / (1 + sg.exp(-zi))):
        loss = sg.mean(-(yi * sg.log(p) + (1 - yi) * sg.log(1 - p)))
        zs = np.array([-100, -50, -20, 0, 20, 50, 100, 1e-9], np.float32)
        ys = np.array([0, 1, 0.3, 1, 0, 1, 0.7, 0], np.float32)
        z64, y64 = zs.astype(np.float64), ys.astype(np.float64)
        want = np.mean(y64 * softplus64(-z64) + (1 - y64) * softplus64(z64))
        dwant = ((1 - y64) * sigmoid64(z64) - y64 * sigmoid64(-z64)) / len(zs)
        s, g = sg.simplify(loss), sg.grad(loss, zi)
        feeds = {"zb": zs, "yb": ys}
        close(run(s, feeds), want, "bce value")
        close(run(g, feeds), dwant, "bce gradient")
        v, d = sg.function([s, g])(feeds)
        close(v, want, "bce value, compiled")
        close(d, dwant, "bce gradient, compiled")


def test_cross_entropy_of_one_class_by_hand():
    zv = sg.input("zv", shape=(5,))
    zs = np.array([100, -100, 50, 20, -1e-9], np.float32)
    for k in (0, 2, 4):
        for loss in (-sg.log(sg.exp(zv)[k] / sg.sum(sg.exp(zv))),
                     -sg.log(sg.exp(zv[k]) / sg.sum(sg.exp(zv))),
                     sg.log(sg.sum(sg.exp(zv))) - sg.log(sg.exp(zv[k]))):
            want = lse64(zs) - zs[k]
            dwant = softmax64(zs, 0) - np.eye(5)[k]
            s, g = sg.simplify(loss), sg.grad(loss, zv)
            close(run(s, {"zv": zs}), want, f"ce[{k}] value: {s}")
            close(run(g, {"zv": zs}), dwant, f"ce[{k}] gradient: {g}")


@pytest.mark.parametrize("spelling", ["keepdims", "newaxis", "reshape", "log_of_softmax"])
def test_cross_entropy_over_an_axis_by_hand(spelling):
    Z = sg.input("Z", shape=("N", 4))
    lab = sg.input("lab", shape=("N",), dtype="int32")
    onehot = sg.one_hot(lab, 4, "float32")
    e = sg.exp(Z)
    denominator = {
        "keepdims": lambda: sg.sum(e, axis=1, keepdims=True),
        "newaxis": lambda: sg.sum(e, axis=-1)[:, None],
        "reshape": lambda: sg.reshape(sg.sum(e, axis=1), ("N", 1)),
        "log_of_softmax": lambda: sg.sum(e, axis=1, keepdims=True),
    }[spelling]()
    probs = e / denominator
    loss = sg.mean(-sg.sum(onehot * sg.log(probs), axis=1))
    if spelling == "log_of_softmax":
        loss = sg.mean(-sg.sum(onehot * sg.log(sg.softmax(Z, axis=1)), axis=1))
    zs = np.array([[100, -100, 50, 0], [-20, 20, 1e-9, 90], [3, 1, 2, 0]], np.float32)
    labs = np.array([0, 1, 3], np.int32)
    want = np.mean(lse64(zs, 1) - zs[np.arange(3), labs])
    dwant = (softmax64(zs, 1) - np.eye(4)[labs]) / 3
    s, g = sg.simplify(loss), sg.grad(loss, Z)
    assert "exp" not in ops_in([s, g]), f"{s}\n{g}"
    feeds = {"Z": zs, "lab": labs}
    close(run(s, feeds), want, f"value: {s}")
    close(run(g, feeds), dwant, f"gradient: {g}")
    close(run(sg.simplify(probs), feeds), softmax64(zs, 1), "probabilities")
    v, d = sg.function([s, g])(feeds)
    close(v, want, "compiled value")
    close(d, dwant, "compiled gradient")


def test_softmax_over_every_axis_of_a_matrix():
    z = sg.input("zm", shape=(2, 3))
    zs = np.array([[100, -100, 50], [-20, 90, 1e-9]], np.float32)
    s = sg.simplify(sg.exp(z) / sg.sum(sg.exp(z)))
    close(run(s, {"zm": zs}), np.exp(zs - lse64(zs)), str(s))
    s = sg.simplify(sg.log(sg.mean(sg.exp(z), axis=0)))
    close(run(s, {"zm": zs}), lse64(zs, 0) - np.log(2), str(s))


# ---------------------------------------------------------------------------------------
# The untaken branch of a select.
# ---------------------------------------------------------------------------------------

def test_gradient_of_an_untaken_branch_is_finite():
    xs = np.array([-4, -1, 0, 1e-9, 0.25, 4], np.float32)
    x64 = xs.astype(np.float64)
    safe = np.where(x64 > 0, x64, 1.0)
    cases = [
        (sg.where(x > 0, sg.sqrt(x), 0), np.where(x64 > 0, 0.5 / np.sqrt(safe), 0)),
        (sg.where(x >= 0, 0, sg.sqrt(-x)) * 3,
         np.where(x64 >= 0, 0, -1.5 / np.sqrt(np.where(x64 < 0, -x64, 1.0)))),
        (sg.where(x > 0, sg.log(x), 0.0), np.where(x64 > 0, 1 / safe, 0)),
        (sg.where(x > 0, x ** 1.5, 0), np.where(x64 > 0, 1.5 * np.sqrt(safe), 0)),
        (sg.where(x > 0, sg.sqrt(x) * sg.sin(x), 0),
         np.where(x64 > 0, 0.5 / np.sqrt(safe) * np.sin(safe) + np.sqrt(safe) * np.cos(safe),
                  0)),
    ]
    for e, want in cases:
        g = sg.grad(sg.sum(e), x)
        close(run(g, {"x": xs}), want, f"{e}: {g}")
        close(sg.function(g)(x=xs), want, f"{e}, compiled: {g}")
    # the Hessian's diagonal (forward over reverse) of the select is finite too
    xv = sg.input("xv", shape=(6,), dtype="float64")
    h = sg.hessian(sg.sum(sg.where(xv > 0, sg.sqrt(xv), 0)), xv)
    hv = run(h, {"xv": x64})
    assert np.all(np.isfinite(hv)), hv
    np.testing.assert_allclose(np.diag(hv), np.where(x64 > 0, -0.25 * safe ** -1.5, 0),
                               rtol=1e-12)


# ---------------------------------------------------------------------------------------
# Variants: operand order, affine arguments, inside reductions with an axis.
# ---------------------------------------------------------------------------------------

X = sg.input("X", shape=(3, 4))
XD = sg.input("XD", shape=(3, 4), dtype="float64")
POINTS = [-100.0, -50.0, -20.0, -1e-9, 0.0, 1e-9, 20.0, 50.0, 100.0, 1.5]

# family -> (naive formula of (u, flip), value of u in float64, derivative)
FAMILIES = {
    "softplus": (lambda u, flip: sg.log(sg.exp(u) + 1 if flip else 1 + sg.exp(u)),
                 softplus64, sigmoid64),
    "sigmoid": (lambda u, flip: 1 / ((sg.exp(-u) + 1) if flip else (1 + sg.exp(-u))),
                sigmoid64, lambda u: sigmoid64(u) * sigmoid64(-u)),
    "sigmoid_ratio": (lambda u, flip: (sg.exp(u) / (sg.exp(u) + 1)) if flip else
                      sg.exp(u) * (1 + sg.exp(u)) ** -1, sigmoid64,
                      lambda u: sigmoid64(u) * sigmoid64(-u)),
    "log_sigmoid": (lambda u, flip: sg.log(1 / (1 + sg.exp(-u))) if flip else
                    sg.log(sg.sigmoid(u)), lambda u: -softplus64(-u), lambda u: sigmoid64(-u)),
    "log1m_sigmoid": (lambda u, flip: sg.log(1 - (1 / (1 + sg.exp(-u)) if flip else
                                                  sg.sigmoid(u))),
                      lambda u: -softplus64(u), lambda u: -sigmoid64(u)),
}

# wrapper -> (symbolic reduction, its weights' broadcast back to X's shape)
WRAPPERS = {
    "none": (lambda t: t, lambda w: w),
    "sum_axis0": (lambda t: sg.sum(t, axis=0), lambda w: np.broadcast_to(w, (3, 4))),
    "mean_axis1": (lambda t: sg.mean(t, axis=1, keepdims=True),
                   lambda w: np.broadcast_to(w / 4, (3, 4))),
    "sum_all": (lambda t: sg.sum(t), lambda w: np.broadcast_to(w, (3, 4))),
}


@st.composite
def variants(draw):
    family = draw(st.sampled_from(sorted(FAMILIES)))
    wrapper = draw(st.sampled_from(sorted(WRAPPERS)))
    a = draw(st.sampled_from([1.0, 2.0, -0.5, 3.0]))
    b = draw(st.sampled_from([0.0, 1.0, -2.5]))
    flip = draw(st.booleans())
    scale_first = draw(st.booleans())
    xs = np.array(draw(st.lists(st.sampled_from(POINTS), min_size=12, max_size=12)),
                  np.float32).reshape(3, 4)
    return family, wrapper, a, b, flip, scale_first, xs


def _variant(family, wrapper, a, b, flip, scale_first, at=X):
    naive = FAMILIES[family][0]
    u = (at * a + b) if scale_first else (b + a * at)
    out = WRAPPERS[wrapper][0](naive(u, flip))
    w = np.random.default_rng(0).uniform(0.5, 1.5, out.shape).astype(at.dtype)
    return out, sg.sum(out * sg.const(w)), w


@SETTINGS
@given(variants())
def test_variants_are_stable_in_value_and_gradient(v):
    family, wrapper, a, b, flip, scale_first, xs = v
    out, loss, w = _variant(family, wrapper, a, b, flip, scale_first)
    _, f, df = FAMILIES[family]
    u = a * xs.astype(np.float64) + b
    reduce_np = {"none": lambda t: t, "sum_axis0": lambda t: t.sum(axis=0),
                 "mean_axis1": lambda t: t.mean(axis=1, keepdims=True),
                 "sum_all": lambda t: t.sum()}[wrapper]
    what = f"{family} {wrapper} a={a} b={b} flip={flip}"
    s = sg.simplify(out)
    assert "exp" not in ops_in(s), f"{what}: {s}"
    close(run(s, {"X": xs}), reduce_np(f(u)), f"{what}: value {s}")
    g = sg.grad(loss, X)
    assert "exp" not in ops_in(g), f"{what}: {g}"
    want = a * df(u) * WRAPPERS[wrapper][1](w.astype(np.float64))
    close(run(g, {"X": xs}), want, f"{what}: gradient {g}")


@SETTINGS
@given(variants(), st.integers(0, 2**16))
def test_rewrites_keep_values_at_moderate_arguments(v, seed):
    """Against the naive formula and its raw derivative, both evaluated in float64."""
    family, wrapper, a, b, flip, scale_first, _ = v
    out, loss, _ = _variant(family, wrapper, a, b, flip, scale_first, at=XD)
    feeds = {"XD": np.random.default_rng(seed).uniform(-3, 3, (3, 4))}
    s = Simplifier()
    simple = s(out)
    assert s.cut_short == 0 and simple.shape == out.shape
    np.testing.assert_allclose(run(simple, feeds), run(out, feeds), rtol=1e-10, atol=1e-12)
    raw = sg.grad(loss, XD, simplified=False)
    np.testing.assert_allclose(run(sg.grad(loss, XD), feeds), run(raw, feeds), rtol=1e-9,
                               atol=1e-11)
    assert sg.simplify(simple) is simple


X64 = sg.input("X64", shape=(3, 4), dtype="float64")
Y64 = sg.input("Y64", shape=(3, 4), dtype="float64")

# forms over moderate float64 values, each against its un-rewritten self
MODERATE = [
    lambda t, r: sg.log(1 + sg.exp(t)) * r,
    lambda t, r: sg.exp(t) / (sg.exp(t) + 1) + r,
    lambda t, r: 2 * r * sg.exp(t) / (1 + sg.exp(t)) ** 2,
    lambda t, r: sg.exp(t) * sg.sigmoid(-t) * r,
    lambda t, r: sg.log(sg.exp(t) + sg.exp(r)),
    lambda t, r: sg.log(sg.sum(sg.exp(t), axis=1, keepdims=True)) - r,
    lambda t, r: sg.log(sg.mean(sg.exp(t * r), axis=0)),
    lambda t, r: sg.exp(t) / sg.sum(sg.exp(t), axis=1, keepdims=True) * r,
    lambda t, r: sg.exp(t) ** 2 / sg.sum(sg.exp(t), axis=0) ** 2,
    lambda t, r: sg.exp(t - sg.logsumexp(t, axis=0, keepdims=True)),
    lambda t, r: sg.exp(2 * t + 1 - sg.logsumexp(2 * t + 1, axis=1)[:, None]) * r,
    lambda t, r: sg.exp(t) ** 2 * sg.sigmoid(-t) * (1 + sg.exp(t)) ** -1 / (r**2 + 1),
    lambda t, r: sg.exp(r) * sg.sigmoid(-r) ** 3 + sg.log(sg.exp(t) + 1) * sg.exp(-t),
    lambda t, r: sg.log(sg.exp(t)[1] * sg.sigmoid(r)[1] / sg.sum(sg.exp(t), axis=0)),
    lambda t, r: sg.log(sg.softmax(t, axis=1)[:, 2:] / 3),
    lambda t, r: 1 - sg.sigmoid(t * r) + (sg.sigmoid(r) - 1) * t,
    lambda t, r: sg.log(1 - sg.tanh(t) ** 2) + sg.expm1(r) + 1 - sg.exp(t / 4),
    lambda t, r: sg.where(r > 0, sg.sin(t), 0) * sg.cos(r) / (t**2 + 1),
    lambda t, r: sg.where(r > 0, 0, sg.exp(t)) / (r**2 + 1) * 2,
    lambda t, r: sg.log(sg.exp(2 * t) ** 3 * (r**2 + 1)),
]


@pytest.mark.parametrize("which", range(len(MODERATE)))
@pytest.mark.parametrize("seed", range(3))
def test_each_stable_rewrite_keeps_values(which, seed):
    e = MODERATE[which](X64, Y64)
    rng = np.random.default_rng(seed)
    feeds = {"X64": rng.uniform(-3, 3, (3, 4)), "Y64": rng.uniform(-3, 3, (3, 4))}
    s = Simplifier()
    simple = s(e)
    assert s.cut_short == 0 and simple.shape == e.shape
    assert set(s.fired) & STABLE_RULES, f"no stable rule fired on {e}"
    np.testing.assert_allclose(run(simple, feeds), run(e, feeds), rtol=1e-10, atol=1e-12)
    loss = sg.sum(e * sg.const(rng.uniform(0.5, 1.5, e.shape)))
    for wrt in (X64, Y64):
        np.testing.assert_allclose(run(sg.grad(loss, wrt), feeds),
                                   run(sg.grad(loss, wrt, simplified=False), feeds),
                                   rtol=1e-9, atol=1e-11)
