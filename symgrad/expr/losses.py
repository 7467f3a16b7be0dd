"""Losses with PyTorch's definitions, written as formulas over the other operators.

Every loss takes ``reduction``: ``"mean"`` (the default, as in PyTorch), ``"sum"`` or
``"none"`` (per-element or per-sample values); ``kl_div`` also takes ``"batchmean"``.
"""

from __future__ import annotations

from symgrad.expr.dtypes import INT32
from symgrad.expr.functions import Operand, abs, as_expr, exp, log, softplus, where
from symgrad.expr.node import Expr
from symgrad.expr.shapes import ShapeError, broadcast, fmt, repeated_dims
from symgrad.expr.tensors import log_softmax, mean, one_hot, sum

__all__ = ["mse", "mae", "huber", "smooth_l1", "cross_entropy", "nll",
           "binary_cross_entropy_with_logits", "kl_div"]

_REDUCTIONS = ("mean", "sum", "none")


def _reduce(loss: Expr, reduction: str, allowed: tuple = _REDUCTIONS) -> Expr:
    if reduction not in allowed:
        raise ValueError(f"reduction must be one of {', '.join(map(repr, allowed))}, "
                         f"got {reduction!r}")
    if reduction == "mean":
        return mean(loss)
    if reduction == "sum":
        return sum(loss)
    if reduction == "batchmean":  # PyTorch's kl_div: the sum divided by the batch size
        return mean(sum(loss, axis=tuple(range(1, loss.ndim)))) if loss.ndim else loss
    return loss


def _pair(loss: str, pred: Operand, target: Operand,
          names: tuple[str, str] = ("pred", "target")) -> tuple[Expr, Expr]:
    """The two operands of an elementwise loss; refuses the classic target-shape mistake,
    a prediction of shape (N,) against a target of shape (N, 1), which broadcasts to an
    (N, N) array of every prediction against every target (PyTorch warns here)."""
    p, t = as_expr(pred), as_expr(target)
    if p.shape != t.shape:
        try:
            both = broadcast(p.shape, t.shape, what=f"{loss}: {names[0]} and {names[1]}",
                             warn=False)
        except ShapeError:
            both = None
        if both is not None and repeated_dims(both, p.shape, t.shape):
            d = repeated_dims(both, p.shape, t.shape)[0]
            col, row = (names[1], names[0]) if t.ndim > p.ndim else names
            raise ShapeError(
                f"{loss}: {names[0]} has shape {fmt(p.shape)} and {names[1]} has shape "
                f"{fmt(t.shape)}; they would broadcast to {fmt(both)}, pairing every sample "
                f"with every other. Make the shapes equal: take {col}[:, 0] (or "
                f"{col}.reshape(({d!r},))) for a column, or give {row} the column's shape")
    return p, t


def mse(pred: Operand, target: Operand, reduction: str = "mean") -> Expr:
    """Mean squared error ``mean((pred - target)**2)`` (``torch.nn.MSELoss``).

    ``pred`` and ``target`` of shapes (N,) and (N, 1) are refused (they would broadcast to
    (N, N)).
    """
    p, t = _pair("mse", pred, target)
    return _reduce((p - t) ** 2, reduction)


def mae(pred: Operand, target: Operand, reduction: str = "mean") -> Expr:
    """Mean absolute error ``mean(abs(pred - target))`` (``torch.nn.L1Loss``)."""
    p, t = _pair("mae", pred, target)
    return _reduce(abs(p - t), reduction)


def huber(pred: Operand, target: Operand, delta: float = 1.0, reduction: str = "mean") -> Expr:
    """``0.5*d**2`` where ``|d| < delta``, else ``delta*(|d| - 0.5*delta)``
    (``torch.nn.HuberLoss``; equal to smooth L1 for ``delta = 1``).

    >>> sg.huber(pred, y, delta=1.0)
    """
    p, t = _pair("huber", pred, target)
    d = p - t
    a = abs(d)
    return _reduce(where(a < delta, 0.5 * d**2, delta * (a - 0.5 * delta)), reduction)


def smooth_l1(pred: Operand, target: Operand, beta: float = 1.0,
              reduction: str = "mean") -> Expr:
    """``0.5*d**2/beta`` where ``|d| < beta``, else ``|d| - 0.5*beta``
    (``torch.nn.SmoothL1Loss``)."""
    p, t = _pair("smooth_l1", pred, target)
    d = p - t
    a = abs(d)
    return _reduce(where(a < beta, 0.5 * d**2 / beta, a - 0.5 * beta), reduction)


def cross_entropy(logits: Operand, labels: Operand, reduction: str = "mean") -> Expr:
    """Softmax cross-entropy over the last axis of ``logits`` (``torch.nn.CrossEntropyLoss``).

    ``labels`` are int32 class indices (shape ``logits.shape[:-1]``) or class
    probabilities / one-hot rows (the shape of ``logits``). With ``reduction="none"`` it
    gives one loss per sample.

    >>> loss = sg.cross_entropy(X @ W + c, labels)
    """
    logits, labels = as_expr(logits), as_expr(labels)
    if logits.ndim == 0:
        raise ValueError("cross_entropy: logits must have a class axis, got a scalar")
    if labels.dtype == INT32:
        if labels.shape != logits.shape[:-1]:
            raise ValueError(f"cross_entropy: int32 labels must have shape "
                             f"{fmt(logits.shape[:-1])} for logits of shape "
                             f"{fmt(logits.shape)}, got {fmt(labels.shape)}")
        labels = one_hot(labels, logits.shape[-1], logits.dtype)
    elif labels.shape != logits.shape:
        raise ValueError(f"cross_entropy: probability labels must have the logits' shape "
                         f"{fmt(logits.shape)}, got {fmt(labels.shape)}")
    return _reduce(-sum(labels * log_softmax(logits), axis=-1), reduction)


def nll(log_probs: Operand, labels: Operand, reduction: str = "mean") -> Expr:
    """Negative log-likelihood of int32 ``labels`` under ``log_probs`` (``torch.nn.NLLLoss``).

    >>> sg.nll(sg.log_softmax(logits), labels)
    """
    log_probs, labels = as_expr(log_probs), as_expr(labels)
    if labels.dtype != INT32 or labels.shape != log_probs.shape[:-1]:
        raise ValueError(f"nll: labels must be int32 of shape {fmt(log_probs.shape[:-1])}, "
                         f"got {labels.dtype} of shape {fmt(labels.shape)}")
    picked = sum(one_hot(labels, log_probs.shape[-1], log_probs.dtype) * log_probs, axis=-1)
    return _reduce(-picked, reduction)


def binary_cross_entropy_with_logits(logits: Operand, targets: Operand,
                                     reduction: str = "mean") -> Expr:
    """``softplus(z) - y*z``: binary cross-entropy on logits, overflow-free
    (``torch.nn.BCEWithLogitsLoss``)."""
    z, y = _pair("binary_cross_entropy_with_logits", logits, targets, ("logits", "targets"))
    return _reduce(softplus(z) - z * y, reduction)


def kl_div(log_input: Operand, target: Operand, reduction: str = "mean",
           log_target: bool = False) -> Expr:
    """``target*(log(target) - log_input)`` with ``0`` where ``target == 0``
    (``torch.nn.KLDivLoss``; ``log_input`` holds log-probabilities).

    >>> sg.kl_div(sg.log_softmax(z), p, reduction="batchmean")
    """
    inp, t = _pair("kl_div", log_input, target, ("log_input", "target"))
    if log_target:
        pointwise = exp(t) * (t - inp)
    else:  # log of a safe argument, so neither the value nor a derivative meets 0*log(0)
        positive = t > 0
        pointwise = where(positive, t * (log(where(positive, t, 1.0)) - inp), 0.0)
    return _reduce(pointwise, reduction, _REDUCTIONS + ("batchmean",))
