"""Losses with PyTorch's definitions, written as formulas over the other operators.

Every loss takes ``reduction``: ``"mean"`` (the default, as in PyTorch), ``"sum"`` or
``"none"`` (per-element or per-sample values); ``kl_div`` also takes ``"batchmean"``.
"""

from __future__ import annotations

from symgrad.expr.dtypes import INT32
from symgrad.expr.functions import Operand, abs, as_expr, exp, log, softplus, where
from symgrad.expr.node import Expr
from symgrad.expr.shapes import fmt
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


def mse(pred: Operand, target: Operand, reduction: str = "mean") -> Expr:
    """Mean squared error ``mean((pred - target)**2)`` (``torch.nn.MSELoss``)."""
    return _reduce((as_expr(pred) - target) ** 2, reduction)


def mae(pred: Operand, target: Operand, reduction: str = "mean") -> Expr:
    """Mean absolute error ``mean(abs(pred - target))`` (``torch.nn.L1Loss``)."""
    return _reduce(abs(as_expr(pred) - target), reduction)


def huber(pred: Operand, target: Operand, delta: float = 1.0, reduction: str = "mean") -> Expr:
    """``0.5*d**2`` where ``|d| < delta``, else ``delta*(|d| - 0.5*delta)``
    (``torch.nn.HuberLoss``; equal to smooth L1 for ``delta = 1``).

    >>> sg.huber(pred, y, delta=1.0)
    """
    d = as_expr(pred) - target
    a = abs(d)
    return _reduce(where(a < delta, 0.5 * d**2, delta * (a - 0.5 * delta)), reduction)


def smooth_l1(pred: Operand, target: Operand, beta: float = 1.0,
              reduction: str = "mean") -> Expr:
    """``0.5*d**2/beta`` where ``|d| < beta``, else ``|d| - 0.5*beta``
    (``torch.nn.SmoothL1Loss``)."""
    d = as_expr(pred) - target
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
    z = as_expr(logits)
    return _reduce(softplus(z) - z * targets, reduction)


def kl_div(log_input: Operand, target: Operand, reduction: str = "mean",
           log_target: bool = False) -> Expr:
    """``target*(log(target) - log_input)`` with ``0`` where ``target == 0``
    (``torch.nn.KLDivLoss``; ``log_input`` holds log-probabilities).

    >>> sg.kl_div(sg.log_softmax(z), p, reduction="batchmean")
    """
    inp, t = as_expr(log_input), as_expr(target)
    if log_target:
        pointwise = exp(t) * (t - inp)
    else:  # log of a safe argument, so neither the value nor a derivative meets 0*log(0)
        positive = t > 0
        pointwise = where(positive, t * (log(where(positive, t, 1.0)) - inp), 0.0)
    return _reduce(pointwise, reduction, _REDUCTIONS + ("batchmean",))
