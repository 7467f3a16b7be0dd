"""Losses against NumPy transcriptions of PyTorch's documented formulas (and against
``torch.nn.functional`` itself where PyTorch is installed)."""

from __future__ import annotations

import math

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import scipy.special
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import symgrad as sg

F32, F64 = np.dtype("float32"), np.dtype("float64")
REDUCTIONS = ["mean", "sum", "none"]
SETTINGS = settings(max_examples=30, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def close(got, want, dtype=F32, rtol=None, atol=None):
    got = np.asarray(got)
    if dtype == F32:
        tol = dict(rtol=2e-5 if rtol is None else rtol, atol=1e-5 if atol is None else atol)
    else:
        tol = dict(rtol=1e-10 if rtol is None else rtol, atol=1e-12 if atol is None else atol)
    np.testing.assert_allclose(got.astype(np.float64), np.asarray(want, np.float64), **tol)


def reduce_(v, reduction):
    """PyTorch's ``reduction``: the mean or sum of every element, or the elements."""
    v = np.asarray(v, np.float64)
    if reduction == "mean":
        return v.sum() / v.size
    if reduction == "sum":
        return v.sum()
    return v


def floats(lo, hi, dtype=F32):
    if dtype == F32:
        return st.floats(lo, hi, width=32, allow_nan=False, allow_infinity=False)
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


def log_softmax64(z):
    """log(exp(z)/sum(exp(z))) over the last axis, written out in float64."""
    z = np.asarray(z, np.float64)
    e = np.exp(z)
    return np.log(e / e.sum(axis=-1, keepdims=True))


@st.composite
def pred_target(draw, dtype=F32, lo=-5, hi=5):
    shapes = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3,
                                                    max_side=4))
    sp, st_ = shapes.input_shapes
    p = draw(hnp.arrays(dtype, sp, elements=floats(lo, hi, dtype)))
    t = draw(hnp.arrays(dtype, st_, elements=floats(lo, hi, dtype)))
    return p, t, shapes.result_shape


def _two(p, t):
    return (sg.input("pred", shape=p.shape, dtype=p.dtype),
            sg.input("target", shape=t.shape, dtype=t.dtype))


# ---------------------------------------------------------------------------------------
# Regression losses.
# ---------------------------------------------------------------------------------------


def _huber_ref(d, delta):
    a = np.abs(d)
    return np.where(a < delta, 0.5 * d * d, delta * (a - 0.5 * delta))


def _smooth_l1_ref(d, beta):
    a = np.abs(d)
    return np.where(a < beta, 0.5 * d * d / beta, a - 0.5 * beta)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
@SETTINGS
@given(data=st.data())
def test_regression_losses(reduction, dtype, data):
    p, t, out_shape = data.draw(pred_target(dtype))
    delta = data.draw(st.sampled_from([0.5, 1.0, 2.0]))
    beta = data.draw(st.sampled_from([0.25, 1.0, 3.0]))
    pred, target = _two(p, t)
    d = p.astype(np.float64) - t.astype(np.float64)
    cases = {
        "mse": (sg.mse(pred, target, reduction=reduction), d * d),
        "mae": (sg.mae(pred, target, reduction=reduction), np.abs(d)),
        "huber": (sg.huber(pred, target, delta=delta, reduction=reduction),
                  _huber_ref(d, delta)),
        "smooth_l1": (sg.smooth_l1(pred, target, beta=beta, reduction=reduction),
                      _smooth_l1_ref(d, beta)),
    }
    nodes = [e for e, _ in cases.values()]
    got = sg.evaluate(nodes, pred=p, target=t)
    for (name, (e, pointwise)), g in zip(cases.items(), got):
        want = reduce_(pointwise, reduction)
        assert e.shape == (out_shape if reduction == "none" else ()), name
        assert e.dtype == dtype and g.dtype == dtype, name
        assert g.shape == np.shape(want), name
        close(g, want, dtype, rtol=1e-4 if dtype == F32 else None)


def test_huber_and_smooth_l1_at_the_threshold():
    pred = sg.input("pred", shape=(5,))
    d = np.array([-3.0, -1.0, 0.0, 0.5, 1.0], np.float32)
    hub = sg.evaluate(sg.huber(pred, 0.0, delta=1.0, reduction="none"), pred=d)
    # |d| = delta counts as the linear branch: 1*(1 - 0.5) = 0.5 (= 0.5*1**2, continuous)
    close(hub, [2.5, 0.5, 0.0, 0.125, 0.5])
    sl1 = sg.evaluate(sg.smooth_l1(pred, 0.0, beta=2.0, reduction="none"), pred=d)
    close(sl1, [2.0, 0.25, 0.0, 0.0625, 0.25])
    # huber(delta) = delta * smooth_l1(beta=delta), PyTorch's documented relation
    h2, s2 = sg.evaluate([sg.huber(pred, 0.0, delta=2.0, reduction="none"),
                          sg.smooth_l1(pred, 0.0, beta=2.0, reduction="none")], pred=d)
    close(h2, 2.0 * s2)


def test_regression_losses_with_numbers_and_symbolic_batch():
    pred, y = sg.inputs("pred y")
    p = np.array([1.0, 2.0, 4.0], np.float32)
    t = np.array([0.0, 2.0, 1.0], np.float32)
    assert sg.mse(pred, y).shape == () and sg.mse(pred, y, reduction="none").shape == ("N",)
    close(sg.evaluate(sg.mse(pred, y), pred=p, y=t), (1 + 0 + 9) / 3)
    close(sg.evaluate(sg.mae(pred, 1.0, reduction="sum"), pred=p), 0 + 1 + 3)
    X = sg.input("X", shape=("N", 2))
    assert sg.mse(X, sg.input("b", shape=(2,)), reduction="none").shape == ("N", 2)


# ---------------------------------------------------------------------------------------
# Classification losses.
# ---------------------------------------------------------------------------------------


@st.composite
def logits_and_labels(draw, dtype=F32, lo=-10, hi=10):
    batch = draw(hnp.array_shapes(min_dims=0, max_dims=2, min_side=1, max_side=4))
    c = draw(st.integers(2, 5))
    z = draw(hnp.arrays(dtype, batch + (c,), elements=floats(lo, hi, dtype)))
    labels = draw(hnp.arrays(np.int32, batch, elements=st.integers(0, c - 1)))
    return z, labels


def _per_sample_mean(v, reduction):
    """cross_entropy / nll reductions: PyTorch's mean is over samples."""
    return reduce_(v, reduction)


def _picked(lp, labels):
    out = np.empty(labels.shape)
    for idx in np.ndindex(*labels.shape):
        out[idx] = lp[idx + (labels[idx],)]
    return out


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
@SETTINGS
@given(data=st.data())
def test_cross_entropy_with_int_labels(reduction, dtype, data):
    z, labels = data.draw(logits_and_labels(dtype))
    logits = sg.input("logits", shape=z.shape, dtype=dtype)
    lab = sg.input("labels", shape=labels.shape, dtype="int32")
    e = sg.cross_entropy(logits, lab, reduction=reduction)
    want = _per_sample_mean(-_picked(log_softmax64(z), labels), reduction)
    assert e.shape == np.shape(want) and e.dtype == dtype
    got = sg.evaluate(e, logits=z, labels=labels)
    assert got.dtype == dtype
    close(got, want, dtype, rtol=1e-4 if dtype == F32 else None)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@SETTINGS
@given(data=st.data())
def test_cross_entropy_with_probabilities_and_one_hot(reduction, data):
    z, labels = data.draw(logits_and_labels())
    raw = data.draw(hnp.arrays(F32, z.shape, elements=floats(0, 1)))
    probs = (raw + 1e-3) / (raw + 1e-3).sum(axis=-1, keepdims=True)
    logits = sg.input("logits", shape=z.shape)
    pl = sg.input("p", shape=z.shape)
    e = sg.cross_entropy(logits, pl, reduction=reduction)
    lp = log_softmax64(z)
    want = reduce_(-(probs.astype(np.float64) * lp).sum(axis=-1), reduction)
    assert e.shape == np.shape(want) and e.dtype == F32
    close(sg.evaluate(e, logits=z, p=probs.astype(np.float32)), want, rtol=1e-4)
    # one-hot rows give the same loss as the int labels
    onehot = np.zeros(z.shape, np.float32)
    for idx in np.ndindex(*labels.shape):
        onehot[idx + (labels[idx],)] = 1.0
    lab = sg.input("labels", shape=labels.shape, dtype="int32")
    a, b = sg.evaluate([sg.cross_entropy(logits, pl, reduction=reduction),
                        sg.cross_entropy(logits, lab, reduction=reduction)],
                       logits=z, p=onehot, labels=labels)
    close(a, b, rtol=1e-5)


def test_cross_entropy_symbolic_and_stable():
    X = sg.input("X", shape=("N", 3))
    labels = sg.input("labels", dtype="int32")
    assert sg.cross_entropy(X, labels).shape == ()
    assert sg.cross_entropy(X, labels, reduction="none").shape == ("N",)
    z = np.array([[1000.0, 0.0, -1000.0], [0.0, 1000.0, 1000.0]], np.float32)
    lab = np.array([0, 0], np.int32)
    got = sg.evaluate(sg.cross_entropy(X, labels, reduction="none"), X=z, labels=lab)
    assert np.all(np.isfinite(got))
    close(got, [0.0, 1000.0 + math.log(2)])


@pytest.mark.parametrize("reduction", REDUCTIONS)
@SETTINGS
@given(data=st.data())
def test_nll(reduction, data):
    z, labels = data.draw(logits_and_labels())
    lp = log_softmax64(z).astype(np.float32)
    e = sg.nll(sg.input("lp", shape=z.shape), sg.input("labels", shape=labels.shape,
                                                       dtype="int32"), reduction=reduction)
    want = reduce_(-_picked(lp.astype(np.float64), labels), reduction)
    assert e.shape == np.shape(want) and e.dtype == F32
    close(sg.evaluate(e, lp=lp, labels=labels), want, rtol=1e-4)


def test_nll_of_log_softmax_is_cross_entropy():
    X = sg.input("X", shape=("N", 4))
    labels = sg.input("labels", dtype="int32")
    z = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    lab = np.array([0, 1, 2, 3, 3, 1], np.int32)
    a, b = sg.evaluate([sg.nll(sg.log_softmax(X), labels), sg.cross_entropy(X, labels)],
                       X=z, labels=lab)
    close(a, b, rtol=1e-6)


def _bce_ref(z, y):
    """PyTorch's documented BCEWithLogits: -[y*log(sigmoid(z)) + (1-y)*log(1-sigmoid(z))]."""
    s = 1.0 / (1.0 + np.exp(-z))
    return -(y * np.log(s) + (1 - y) * np.log(1 - s))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
@SETTINGS
@given(data=st.data())
def test_binary_cross_entropy_with_logits(reduction, dtype, data):
    z, _, _ = data.draw(pred_target(dtype, lo=-15, hi=15))
    y = data.draw(hnp.arrays(dtype, z.shape, elements=floats(0, 1, dtype)))
    e = sg.binary_cross_entropy_with_logits(sg.input("z", shape=z.shape, dtype=dtype),
                                            sg.input("y", shape=z.shape, dtype=dtype),
                                            reduction=reduction)
    want = reduce_(_bce_ref(z.astype(np.float64), y.astype(np.float64)), reduction)
    assert e.shape == np.shape(want) and e.dtype == dtype
    got = sg.evaluate(e, z=z, y=y)
    assert got.dtype == dtype
    close(got, want, dtype, rtol=1e-4 if dtype == F32 else 1e-9,
          atol=1e-5 if dtype == F32 else 1e-9)


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
def test_binary_cross_entropy_with_logits_is_stable(dtype):
    z = sg.input("z", shape=(6,), dtype=dtype)
    y = sg.input("y", shape=(6,), dtype=dtype)
    zv = np.array([100.0, 100.0, -100.0, -100.0, 1000.0, -1000.0], dtype)
    yv = np.array([1.0, 0.0, 1.0, 0.0, 0.0, 1.0], dtype)
    got = sg.evaluate(sg.binary_cross_entropy_with_logits(z, y, reduction="none"), z=zv, y=yv)
    assert got.dtype == dtype and np.all(np.isfinite(got)) and np.all(got >= 0)
    # log(1 + e**-100) ~ 3.7e-44: zero to any sensible tolerance
    close(got, [0.0, 100.0, 100.0, 0.0, 1000.0, 1000.0], dtype, atol=1e-30)


def _kl_ref(inp, t, log_target):
    """PyTorch's KLDivLoss pointwise: target*(log(target) - input), 0 where target == 0;
    with log_target: exp(target)*(target - input)."""
    if log_target:
        return np.exp(t) * (t - inp)
    return scipy.special.xlogy(t, t) - t * inp


@pytest.mark.parametrize("log_target", [False, True])
@pytest.mark.parametrize("reduction", [*REDUCTIONS, "batchmean"])
@SETTINGS
@given(data=st.data())
def test_kl_div(reduction, log_target, data):
    z, _ = data.draw(logits_and_labels(F64, lo=-5, hi=5))
    inp = log_softmax64(z)
    raw = data.draw(hnp.arrays(F64, z.shape, elements=st.sampled_from([0.0, 0.0, 0.3, 1.0,
                                                                      2.5])))
    t = raw / np.maximum(raw.sum(axis=-1, keepdims=True), 1e-12)  # rows with zeros
    if log_target:
        t = np.log(t + 1e-3)
    e = sg.kl_div(sg.input("inp", shape=z.shape, dtype="float64"),
                  sg.input("t", shape=z.shape, dtype="float64"),
                  reduction=reduction, log_target=log_target)
    pointwise = _kl_ref(inp, t, log_target)
    if reduction == "batchmean":
        want = pointwise.sum() / (z.shape[0] if z.ndim > 1 else z.shape[0])
    else:
        want = reduce_(pointwise, reduction)
    assert e.shape == np.shape(want) and e.dtype == F64
    got = sg.evaluate(e, inp=inp, t=t)
    assert np.all(np.isfinite(got))
    close(got, want, F64)


def test_kl_div_target_zeros_and_batchmean():
    inp = sg.input("inp", shape=("N", 3))
    t = sg.input("t", shape=("N", 3))
    lp = np.log(np.array([[0.2, 0.3, 0.5], [0.1, 0.1, 0.8]], np.float32))
    tv = np.array([[0.0, 0.5, 0.5], [1.0, 0.0, 0.0]], np.float32)
    none, bm, mean = sg.evaluate([sg.kl_div(inp, t, reduction="none"),
                                  sg.kl_div(inp, t, reduction="batchmean"),
                                  sg.kl_div(inp, t)], inp=lp, t=tv)
    assert np.all(np.isfinite(none))
    want = np.array([[0.0, 0.5 * math.log(0.5 / 0.3), 0.5 * math.log(0.5 / 0.5)],
                     [math.log(1 / 0.1), 0.0, 0.0]])
    close(none, want)
    close(bm, want.sum() / 2)
    close(mean, want.sum() / 6)
    # zero targets give exactly zero, even against -inf log-probabilities
    zero = sg.evaluate(sg.kl_div(inp, t, reduction="none"),
                       inp=np.full((1, 3), -np.inf, np.float32),
                       t=np.array([[0.0, 0.0, 0.0]], np.float32))
    np.testing.assert_array_equal(zero, np.zeros((1, 3)))


# ---------------------------------------------------------------------------------------
# Bad inputs.
# ---------------------------------------------------------------------------------------


def test_bad_labels_are_reported_with_what_was_expected():
    X = sg.input("X", shape=("N", 3))
    with pytest.raises(ValueError, match=r"int32.*\(N,\).*\(N, 3\).*\(N, 2\)"):
        sg.cross_entropy(X, sg.input("l2", shape=("N", 2), dtype="int32"))
    with pytest.raises(ValueError, match=r"\(N, 3\).*\(N,\)"):
        sg.cross_entropy(X, sg.input("lf"))  # float labels must be probabilities
    with pytest.raises(ValueError, match="class axis"):
        sg.cross_entropy(sg.const(1.0), sg.const(0))
    with pytest.raises(ValueError, match=r"int32.*\(N,\).*float32"):
        sg.nll(X, sg.input("lf"))
    with pytest.raises(ValueError, match=r"int32 of shape \(N,\).*\(3,\)"):
        sg.nll(X, sg.input("l3", shape=(3,), dtype="int32"))
    labels = sg.input("labels", dtype="int32")
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        sg.evaluate(sg.cross_entropy(X, labels), X=np.zeros((2, 3), np.float32),
                    labels=np.array([0, 5], np.int32))


@pytest.mark.parametrize("loss", ["mse", "mae", "huber", "smooth_l1",
                                  "binary_cross_entropy_with_logits", "kl_div"])
def test_bad_reduction_and_shapes(loss):
    fn = getattr(sg, loss)
    x, y = sg.input("x"), sg.input("y3", shape=(3,))
    with pytest.raises(ValueError, match=r"'mean'.*'sum'.*'none'.*'avg'"):
        fn(x, x, reduction="avg")
    with pytest.raises(sg.ShapeError, match=r"(?=.*\(N,\))(?=.*\(3,\))"):  # both shapes
        fn(x, y)
    if loss != "kl_div":
        with pytest.raises(ValueError, match="batchmean"):
            fn(x, x, reduction="batchmean")


def test_bad_reduction_for_classification():
    X, labels = sg.input("X", shape=("N", 3)), sg.input("labels", dtype="int32")
    for fn in (sg.cross_entropy, sg.nll):
        with pytest.raises(ValueError, match="reduction"):
            fn(X, labels, reduction="batchmean")


# ---------------------------------------------------------------------------------------
# PyTorch as a second opinion (skipped where torch is not installed).
# ---------------------------------------------------------------------------------------


def test_against_torch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(0)
    z = rng.normal(size=(6, 4)) * 3
    lab = rng.integers(0, 4, size=6).astype(np.int32)
    p, t = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
    probs = np.exp(log_softmax64(rng.normal(size=(6, 4))))
    probs[0, 1] = 0.0
    y01 = rng.uniform(size=(6, 4))
    X = sg.input("X", shape=("N", 4), dtype="float64")
    Y = sg.input("Y", shape=("N", 4), dtype="float64")
    L = sg.input("L", dtype="int32")
    T = torch.from_numpy
    for reduction in REDUCTIONS:
        pairs = [
            (sg.mse(X, Y, reduction), {"X": p, "Y": t},
             F.mse_loss(T(p), T(t), reduction=reduction)),
            (sg.mae(X, Y, reduction), {"X": p, "Y": t},
             F.l1_loss(T(p), T(t), reduction=reduction)),
            (sg.huber(X, Y, 0.7, reduction), {"X": p, "Y": t},
             F.huber_loss(T(p), T(t), reduction=reduction, delta=0.7)),
            (sg.smooth_l1(X, Y, 0.7, reduction), {"X": p, "Y": t},
             F.smooth_l1_loss(T(p), T(t), reduction=reduction, beta=0.7)),
            (sg.cross_entropy(X, L, reduction), {"X": z, "L": lab},
             F.cross_entropy(T(z), T(lab).long(), reduction=reduction)),
            (sg.cross_entropy(X, Y, reduction), {"X": z, "Y": probs},
             F.cross_entropy(T(z), T(probs), reduction=reduction)),
            (sg.nll(X, L, reduction), {"X": log_softmax64(z), "L": lab},
             F.nll_loss(T(log_softmax64(z)), T(lab).long(), reduction=reduction)),
            (sg.binary_cross_entropy_with_logits(X, Y, reduction), {"X": z, "Y": y01},
             F.binary_cross_entropy_with_logits(T(z), T(y01), reduction=reduction)),
        ]
        for red in ([reduction, "batchmean"] if reduction == "mean" else [reduction]):
            for log_target in (False, True):
                tt = np.log(probs + 1e-3) if log_target else probs
                pairs.append((sg.kl_div(X, Y, red, log_target), {"X": log_softmax64(z), "Y": tt},
                              F.kl_div(T(log_softmax64(z)), T(tt), reduction=red,
                                       log_target=log_target)))
        for e, feeds, want in pairs:
            close(sg.evaluate(e, **feeds), want.numpy(), F64, rtol=1e-9, atol=1e-10)
