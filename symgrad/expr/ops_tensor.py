"""Reductions, contractions and shape operators, one stanza each.

A reduction's argument is ``(axes, keepdims)``: ``axes`` is ``None`` when every axis is
reduced (the canonical form), else a sorted tuple of
non-negative ints; ``softmax``/``log_softmax`` take one axis and keep the shape.
"""

from __future__ import annotations

import numpy as np

from symgrad.expr.dtypes import FLOAT32, FLOAT64, INT32
from symgrad.expr.leaves import size
from symgrad.expr.node import CONTRACT, REDUCE, SHAPE, F, OpDef
from symgrad.expr.shapes import ShapeError, broadcast, fmt, reduced


def bind_shape(shape: tuple, sizes: dict) -> tuple[int, ...]:
    """``shape`` with its symbolic dimensions replaced by their bound sizes."""
    return tuple(sizes[d] if isinstance(d, str) else d for d in shape)


def _axes_kw(arg) -> str:
    axes, keepdims = arg
    parts = [f"axis={axes[0] if len(axes) == 1 else axes}"] if axes is not None else []
    return ", ".join(parts + (["keepdims=True"] if keepdims else []))


def _reduce_infer(dtype_rule):
    def infer(srcs, arg):
        x = srcs[0]
        return reduced(x.shape, arg[0], arg[1]), dtype_rule(x.dtype)
    return infer


def _all_axes(axes, ndim):
    return tuple(range(ndim)) if axes is None else axes


def unreduce(g, shape, axes, keepdims):
    """``g``, the result of reducing ``axes`` of an array of ``shape``, stretched back."""
    axes = _all_axes(axes, len(shape))
    if not keepdims:
        g = F.reshape(g, reduced(shape, axes, True))
    return F.broadcast_to(g, shape)


def count(shape, axes, dtype):
    """How many elements a reduction over ``axes`` combines (``N`` when symbolic)."""
    return size([shape[a] for a in _all_axes(axes, len(shape))], dtype)


def _shifted(axes, ndim, nb):
    """Reduction axes for tangents with ``nb`` extra leading axes."""
    return tuple(a + nb for a in _all_axes(axes, ndim))


def _ties(out, x):
    """Weights that share a max/min's derivative evenly among the elements that attain it."""
    axes, keep = out.arg
    hit = F.cast(F.equal(x, unreduce(out, x.shape, axes, keep)), x.dtype)
    return hit / F.sum(hit, axes, keepdims=True)


def _reduce_vjp(scale):
    def vjp(g, out, x):
        axes, keep = out.arg
        return (unreduce(g, x.shape, axes, keep) * scale(out, x),)
    return vjp


def _reduce_jvp(scale, op="sum"):
    def jvp(ts, out, nb):
        (x,), (axes, keep) = out.srcs, out.arg
        scaled = ts[0] if scale is None else ts[0] * scale(out, x)
        return getattr(F, op)(scaled, _shifted(axes, x.ndim, nb), keep)
    return jvp


def _lse_scale(out, x):
    axes, keep = out.arg
    return F.exp(x - unreduce(out, x.shape, axes, keep))


def _mean_vjp(g, out, x):
    axes, keep = out.arg
    return (unreduce(g, x.shape, axes, keep) / count(x.shape, axes, x.dtype),)


def reduction(name: str, f, dtype_rule=lambda dt: dt, **kw) -> OpDef:
    def numpy(arg, x):
        return np.asarray(f(x, axis=arg[0], keepdims=arg[1])).astype(dtype_rule(x.dtype))
    return OpDef(name, REDUCE, _reduce_infer(dtype_rule), numpy, fn=name, fmt_arg=_axes_kw,
                 **kw)


def _sum_dtype(dt):
    return INT32 if dt.kind in "bi" else dt


def _mean_dtype(dt):
    return FLOAT64 if dt == INT32 else FLOAT32 if dt.kind == "b" else dt


def _logsumexp(x, axis, keepdims):
    m = np.max(x, axis=axis, keepdims=True) if x.size else np.zeros((1,) * x.ndim, x.dtype)
    m = np.where(np.isfinite(m), m, 0)  # all -inf (or inf) rows: keep exp(x - m) finite
    out = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=axis)


def _log_softmax(axis, x):
    return (x - _logsumexp(x, (axis,), True)).astype(x.dtype)


def _softmax(axis, x):
    return np.exp(_log_softmax(axis, x)).astype(x.dtype)


def _argmax(x, axis, keepdims):
    a = axis[0] if axis is not None else (0 if x.ndim else None)
    return np.argmax(x, axis=a, keepdims=keepdims)


def _no_grad(g, out, *srcs):
    return (None,) * len(srcs)


# Derivatives: d sum = stretch g back; d mean = that over the count; d max/min = g shared
# among the elements equal to the max; d logsumexp = g*softmax(x) = g*exp(x - lse).
SUM = reduction("sum", np.sum, _sum_dtype, vjp=_reduce_vjp(lambda out, x: 1),
                jvp=_reduce_jvp(None))
MEAN = reduction("mean", np.mean, _mean_dtype, vjp=_mean_vjp, jvp=_reduce_jvp(None, "mean"))
MAX = reduction("max", np.max, vjp=_reduce_vjp(_ties), jvp=_reduce_jvp(_ties))
MIN = reduction("min", np.min, vjp=_reduce_vjp(_ties), jvp=_reduce_jvp(_ties))
ARGMAX = reduction("argmax", _argmax, lambda dt: INT32, vjp=_no_grad,
                   jvp=lambda ts, out, nb: None)
LOGSUMEXP = reduction("logsumexp", _logsumexp, vjp=_reduce_vjp(_lse_scale),
                      jvp=_reduce_jvp(_lse_scale))


def _same_shape(srcs, axis):
    return srcs[0].shape, srcs[0].dtype


# d softmax = s*(g - sum(g*s)); d log_softmax = g - softmax(x)*sum(g)
SOFTMAX = OpDef(
    "softmax", REDUCE, _same_shape, _softmax, fn="softmax", fmt_arg=lambda a: f"axis={a}",
    vjp=lambda g, out, x: (out * (g - F.sum(g * out, out.arg, keepdims=True)),),
    jvp=lambda ts, out, nb: out * (ts[0] - F.sum(ts[0] * out, out.arg + nb, keepdims=True)))
LOG_SOFTMAX = OpDef(
    "log_softmax", REDUCE, _same_shape, _log_softmax, fn="log_softmax",
    fmt_arg=lambda a: f"axis={a}",
    vjp=lambda g, out, x: (g - F.softmax(x, out.arg) * F.sum(g, out.arg, keepdims=True),),
    jvp=lambda ts, out, nb: ts[0] - F.sum(ts[0] * F.softmax(out.srcs[0], out.arg),
                                          out.arg + nb, keepdims=True))


def _matmul_infer(srcs, arg):
    a, b = srcs
    if a.ndim == 0 or b.ndim == 0:
        raise ShapeError(f"matmul needs arrays of at least one dimension, got shapes "
                         f"{fmt(a.shape)} and {fmt(b.shape)}")
    sa = (1,) + a.shape if a.ndim == 1 else a.shape
    sb = b.shape + (1,) if b.ndim == 1 else b.shape
    if sa[-1] != sb[-2]:
        raise ShapeError(f"matmul: shapes {fmt(a.shape)} and {fmt(b.shape)} do not align: "
                         f"{sa[-1]} (last axis of the left) != {sb[-2]} (the right's "
                         f"{'only' if b.ndim == 1 else 'second-to-last'} axis)")
    batch = broadcast(sa[:-2], sb[:-2], what="matmul batch dimensions")
    out = batch + ((sa[-2],) if a.ndim > 1 else ()) + ((sb[-1],) if b.ndim > 1 else ())
    return out, a.dtype


def _swap(x):
    """``x`` with its last two axes exchanged (``x.T`` for a matrix)."""
    return F.transpose(x, tuple(range(x.ndim - 2)) + (x.ndim - 1, x.ndim - 2))


def _matmul_vjp(g, out, a, b):
    # As matrices: da = g @ b.T, db = a.T @ g; a vector operand is a 1-row (or 1-column)
    # matrix, so g gains that axis and the result loses it.
    if a.ndim == 1 and b.ndim == 1:
        return g * b, g * a
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    g2 = g[..., None, :] if a.ndim == 1 else g
    g2 = g2[..., None] if b.ndim == 1 else g2
    da, db = g2 @ _swap(b2), _swap(a2) @ g2
    return (da[..., 0, :] if a.ndim == 1 else da), (db[..., 0] if b.ndim == 1 else db)


def _pad(t, nb, x, other):
    """Tangent ``t`` (``nb`` batch axes + x.shape) with 1s after its batch axes, so that
    x's own batch axes line up with those of the other (longer) operand."""
    extra = other.ndim - x.ndim
    if x.ndim < 2 or extra <= 0:
        return t
    return F.reshape(t, t.shape[:nb] + (1,) * extra + x.shape)


def _matmul_jvp(ts, out, nb):
    # The tangents' batch axes must lead the result; matmul broadcasts batch axes from the
    # right, so a tangent gets 1s between its batch axes and the operand's own axes.
    (a, b), (ta, tb) = out.srcs, ts
    terms = []
    if ta is not None:
        if a.ndim == 1 and b.ndim > 2:  # a row against a stack of matrices
            row = F.reshape(ta, ta.shape[:nb] + (1,) * (b.ndim - 1) + a.shape)
            terms.append((row @ b)[..., 0, :])
        else:
            terms.append(_pad(ta, nb, a, b) @ b)
    if tb is not None:
        if b.ndim > 1:
            terms.append(a @ _pad(tb, nb, b, a))
        else:  # a column: a @ b[..., None]
            col = F.reshape(tb, tb.shape[:nb] + (1,) * max(a.ndim - 2, 0) + b.shape + (1,))
            terms.append((a @ col)[..., 0])
    return terms[0] if len(terms) == 1 else terms[0] + terms[1]


MATMUL = OpDef("matmul", CONTRACT, _matmul_infer, lambda arg, a, b: np.matmul(a, b),
               fn="matmul", infix="@", prec=20, vjp=_matmul_vjp, jvp=_matmul_jvp)

RESHAPE = OpDef("reshape", SHAPE, lambda srcs, shape: (shape, srcs[0].dtype),
                lambda shape, x: x.reshape(shape), fn="reshape", fmt_arg=lambda s: fmt(s),
                extra={"bind": bind_shape},  # the evaluator binds symbolic dims in the arg
                vjp=lambda g, out, x: (F.reshape(g, x.shape),),
                jvp=lambda ts, out, nb: F.reshape(ts[0], ts[0].shape[:nb] + out.shape))
TRANSPOSE = OpDef("transpose", SHAPE,
                  lambda srcs, perm: (tuple(srcs[0].shape[p] for p in perm), srcs[0].dtype),
                  lambda perm, x: np.transpose(x, perm), fn="transpose",
                  fmt_arg=lambda p: f"axes={p}",
                  vjp=lambda g, out, x: (F.transpose(g, tuple(np.argsort(out.arg))),),
                  jvp=lambda ts, out, nb: F.transpose(
                      ts[0], tuple(range(nb)) + tuple(p + nb for p in out.arg)))
def _broadcast_jvp(ts, out, nb):
    t, x = ts[0], out.srcs[0]
    batch = t.shape[:nb]
    t = F.reshape(t, batch + (1,) * (out.ndim - x.ndim) + x.shape)
    return F.broadcast_to(t, batch + out.shape)


BROADCAST_TO = OpDef("broadcast_to", SHAPE, lambda srcs, shape: (shape, srcs[0].dtype),
                     lambda shape, x: np.broadcast_to(x, shape), fn="broadcast_to",
                     fmt_arg=lambda s: fmt(s), extra={"bind": bind_shape},
                     vjp=lambda g, out, x: (g,),  # the sweep sums the stretched axes
                     jvp=_broadcast_jvp)


def _concat_infer(srcs, axis):
    first = srcs[0].shape
    for s in srcs[1:]:
        if len(s.shape) != len(first) or any(
                d != e for i, (d, e) in enumerate(zip(first, s.shape)) if i != axis):
            raise ShapeError(f"concat along axis {axis}: shapes "
                             f"{', '.join(fmt(t.shape) for t in srcs)} differ off that axis")
    lens = [s.shape[axis] for s in srcs]
    if any(isinstance(d, str) for d in lens):
        raise ShapeError(f"concat along axis {axis}: symbolic lengths {lens} cannot be added")
    return first[:axis] + (sum(lens),) + first[axis + 1:], srcs[0].dtype


def _concat_vjp(g, out, *xs):
    axis, start, parts = out.arg, 0, []
    for x in xs:
        stop = start + x.shape[axis]
        parts.append(g[(slice(None),) * axis + (slice(start, stop),)])
        start = stop
    return tuple(parts)


def _concat_jvp(ts, out, nb):
    batch = next(t for t in ts if t is not None).shape[:nb]
    ts = [t if t is not None else F.broadcast_to(F.cast(0, x.dtype), batch + x.shape)
          for t, x in zip(ts, out.srcs)]
    return F.concat(ts, out.arg + nb)


CONCAT = OpDef("concat", SHAPE, _concat_infer, lambda axis, *xs: np.concatenate(xs, axis),
               fn="concat", fmt_arg=lambda a: f"axis={a}", vjp=_concat_vjp, jvp=_concat_jvp)


def _one_hot(arg, labels):
    n, dt = arg
    if labels.size and (labels.min() < 0 or labels.max() >= n):
        raise ValueError(f"one_hot: labels must lie in [0, {n}), got values from "
                         f"{labels.min()} to {labels.max()}")
    return (labels[..., None] == np.arange(n)).astype(dt)


ONE_HOT = OpDef("one_hot", SHAPE, lambda srcs, a: (srcs[0].shape + (a[0],), a[1]), _one_hot,
                fn="one_hot", fmt_arg=lambda a: f"{a[0]}", vjp=_no_grad,
                jvp=lambda ts, out, nb: None)

TENSOR_OPS = (SUM, MEAN, MAX, MIN, ARGMAX, LOGSUMEXP, SOFTMAX, LOG_SOFTMAX, MATMUL, RESHAPE,
              TRANSPOSE, BROADCAST_TO, CONCAT, ONE_HOT)
