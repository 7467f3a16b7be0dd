"""Reductions, contractions and shape operators, one stanza each.

A reduction's argument is ``(axes, keepdims)``: ``axes`` is ``None`` when every axis is
reduced (the canonical form), else a sorted tuple of
non-negative ints; ``softmax``/``log_softmax`` take one axis and keep the shape.
"""

from __future__ import annotations

import numpy as np

from symgrad.expr.dtypes import FLOAT32, FLOAT64, INT32
from symgrad.expr.node import CONTRACT, REDUCE, SHAPE, OpDef
from symgrad.expr.shapes import ShapeError, broadcast, fmt, reduced


def _axes_kw(arg) -> str:
    axes, keepdims = arg
    parts = [f"axis={axes[0] if len(axes) == 1 else axes}"] if axes is not None else []
    return ", ".join(parts + (["keepdims=True"] if keepdims else []))


def _reduce_infer(dtype_rule):
    def infer(srcs, arg):
        x = srcs[0]
        return reduced(x.shape, arg[0], arg[1]), dtype_rule(x.dtype)
    return infer


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


SUM = reduction("sum", np.sum, _sum_dtype)
MEAN = reduction("mean", np.mean, _mean_dtype)
MAX = reduction("max", np.max)
MIN = reduction("min", np.min)
ARGMAX = reduction("argmax", _argmax, lambda dt: INT32)
LOGSUMEXP = reduction("logsumexp", _logsumexp)


def _same_shape(srcs, axis):
    return srcs[0].shape, srcs[0].dtype


SOFTMAX = OpDef("softmax", REDUCE, _same_shape, _softmax, fn="softmax",
                fmt_arg=lambda a: f"axis={a}")
LOG_SOFTMAX = OpDef("log_softmax", REDUCE, _same_shape, _log_softmax, fn="log_softmax",
                    fmt_arg=lambda a: f"axis={a}")


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


MATMUL = OpDef("matmul", CONTRACT, _matmul_infer, lambda arg, a, b: np.matmul(a, b),
               fn="matmul", infix="@", prec=20)

RESHAPE = OpDef("reshape", SHAPE, lambda srcs, shape: (shape, srcs[0].dtype),
                lambda shape, x: x.reshape(shape), fn="reshape", fmt_arg=lambda s: fmt(s),
                extra={"shape_arg": True})  # the evaluator binds symbolic dims in the arg
TRANSPOSE = OpDef("transpose", SHAPE,
                  lambda srcs, perm: (tuple(srcs[0].shape[p] for p in perm), srcs[0].dtype),
                  lambda perm, x: np.transpose(x, perm), fn="transpose",
                  fmt_arg=lambda p: f"axes={p}")
BROADCAST_TO = OpDef("broadcast_to", SHAPE, lambda srcs, shape: (shape, srcs[0].dtype),
                     lambda shape, x: np.broadcast_to(x, shape), fn="broadcast_to",
                     fmt_arg=lambda s: fmt(s), extra={"shape_arg": True})


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


CONCAT = OpDef("concat", SHAPE, _concat_infer, lambda axis, *xs: np.concatenate(xs, axis),
               fn="concat", fmt_arg=lambda a: f"axis={a}")


def _one_hot(arg, labels):
    n, dt = arg
    if labels.size and (labels.min() < 0 or labels.max() >= n):
        raise ValueError(f"one_hot: labels must lie in [0, {n}), got values from "
                         f"{labels.min()} to {labels.max()}")
    return (labels[..., None] == np.arange(n)).astype(dt)


ONE_HOT = OpDef("one_hot", SHAPE, lambda srcs, a: (srcs[0].shape + (a[0],), a[1]), _one_hot,
                fn="one_hot", fmt_arg=lambda a: f"{a[0]}")

TENSOR_OPS = (SUM, MEAN, MAX, MIN, ARGMAX, LOGSUMEXP, SOFTMAX, LOG_SOFTMAX, MATMUL, RESHAPE,
              TRANSPOSE, BROADCAST_TO, CONCAT, ONE_HOT)
