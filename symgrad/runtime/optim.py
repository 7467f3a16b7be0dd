"""Optimizers as formulas: each update rule is written as symgrad expressions.

An optimizer does not touch arrays. ``update(param, grad, state, hyper, step)`` returns the new
parameter and the new optimizer state as expressions over the parameter, its gradient, its
state arrays, the hyperparameters and the step count, so a compiled training step fuses the
update with the loss and the gradients, and the rule prints like any other formula::

    >>> opt = sg.optim.Adam(lr=1e-3)
    >>> opt.state_spec(w)                  # state arrays (shape and dtype of w), initial fill
    {'exp_avg': 0.0, 'exp_avg_sq': 0.0}
    >>> new_w, new_state = opt.update(w, sg.grad(loss, w), state, hyper, step)
    >>> opt.lr = 1e-4                      # read again at the next step: no recompiling

The formulas and the defaults are PyTorch's (``torch.optim``, the single-tensor code path),
first-step special cases included. ``hyper`` maps each name of :attr:`Optimizer.hyper` to a
scalar node whose value the step feeds at call time; ``step`` is a scalar node holding the
1-based step count ``t``. Scalar-only parts of a rule (bias corrections, the decayed learning
rate) are computed in the dtype of those nodes and cast to the parameter's dtype where they
meet its arrays, so a float32 parameter keeps float32 state and updates. (float64 nodes for
``hyper`` and ``step`` keep the bias corrections as exact as PyTorch's Python floats: in
float32, ``1 - 0.999`` is already 1.3e-5 off, relatively.)

Choices that change a rule's formula or its state arrays (``nesterov``, ``amsgrad``,
``centered``, ``maximize``, whether momentum is used at all) are fixed when the optimizer is
built; every number in :attr:`Optimizer.hyper` may change between steps (an optimizer built
with momentum keeps momentum > 0: its buffer is part of the formula).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from symgrad.expr.functions import Operand, cast, equal, maximum, sqrt, where
from symgrad.expr.node import Expr

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSProp", "RMSprop", "Adagrad", "Adadelta"]

# The ranges PyTorch enforces, with the words of its error messages.
_WORDS = {"lr": "learning rate", "eps": "epsilon value", "beta1": "beta parameter at index 0",
          "beta2": "beta parameter at index 1", "weight_decay": "weight_decay value",
          "momentum": "momentum value", "dampening": "dampening value", "alpha": "alpha value",
          "lr_decay": "lr_decay value", "rho": "rho value",
          "initial_accumulator_value": "initial_accumulator_value"}
_NONNEG = (0.0, math.inf, False)  # (low, high, high is exclusive)


def _number(owner: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not (
            hasattr(value, "__float__") and getattr(value, "shape", ()) == ()):
        raise TypeError(f"{owner}: {name} must be a real number, got {type(value).__name__} "
                        f"{value!r}")
    return float(value)


def _check_range(owner: str, name: str, value: float, bounds: tuple[float, float, bool]) -> None:
    low, high, high_open = bounds
    ok = low <= value < high if high_open else low <= value <= high
    if not ok:
        if high == math.inf:
            rule = f">= {low:g}"
        else:
            rule = f"in [{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{owner}: invalid {_WORDS.get(name, name)}: {name}={value!r} "
                         f"(must be {rule})")


def _momentum_stays(opt: Optimizer, values: Mapping[str, Any]) -> None:
    """An optimizer built with momentum keeps a buffer: its momentum must stay > 0 (PyTorch
    would leave the buffer untouched while momentum is 0; a fixed formula cannot)."""
    if "momentum" in opt.__dict__.get("hyper", {}) and not values["momentum"] > 0:
        name = type(opt).__name__
        raise ValueError(f"{name}: invalid momentum value: momentum={values['momentum']!r} "
                         f"(this {name} was built with momentum, so it must stay > 0; build "
                         f"a {name} without momentum instead)")


class Optimizer:
    """The base of symgrad's optimizers: an update rule written as formulas.

    ``hyper`` holds the current hyperparameter values (floats, by name); ``opt.lr`` reads
    ``opt.hyper["lr"]`` and ``opt.lr = 0.01`` checks the value as the constructor does and
    sets it (a compiled step reads ``hyper`` at every call). ``state_spec(param)`` names the
    per-parameter state arrays (each of ``param``'s shape and dtype) with their initial
    fill; ``update(param, grad, state, hyper, step)`` returns ``(new_param, new_state)``.
    """

    _bounds: dict[str, tuple[float, float, bool]] = {}
    _signature: tuple[str, ...] = ()  # constructor arguments, in order, for repr

    hyper: dict[str, float]
    options: dict[str, Any]

    def __init__(self, hyper: Mapping[str, Any], options: Mapping[str, Any] | None = None):
        owner = type(self).__name__
        values = {k: _number(owner, k, v) for k, v in hyper.items()}
        fixed = dict(options or {})
        for k, v in values.items():
            if k in self._bounds:
                _check_range(owner, k, v, self._bounds[k])
        for k, v in fixed.items():  # fixed numbers (e.g. momentum=0) are checked too
            if k in self._bounds and not isinstance(v, bool):
                _check_range(owner, k, _number(owner, k, v), self._bounds[k])
        self._check_together({**fixed, **values})
        object.__setattr__(self, "hyper", values)
        object.__setattr__(self, "options", fixed)

    # -- hooks for subclasses ------------------------------------------------------------
    def _check_together(self, values: Mapping[str, Any]) -> None:
        """Constraints between arguments (``nesterov`` needs momentum); raise ValueError."""

    def state_spec(self, param: Expr) -> dict[str, float]:
        """The names of ``param``'s state arrays and their initial fill value."""
        return {}

    def update(self, param: Expr, grad: Expr, state: Mapping[str, Expr],
               hyper: Mapping[str, Expr], step: Expr) -> tuple[Expr, dict[str, Expr]]:
        """``(new_param, new_state)`` as expressions; see the class docstring for the rule."""
        raise NotImplementedError

    # -- attribute access to hyperparameters ---------------------------------------------
    def __getattr__(self, name: str) -> Any:
        # only called when ordinary lookup fails
        if name.startswith("__") or name in ("hyper", "options"):
            raise AttributeError(name)
        hyper = self.__dict__.get("hyper", {})
        if name in hyper:
            return hyper[name]
        options = self.__dict__.get("options", {})
        if name in options:
            return options[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}; its "
                             f"hyperparameters are {', '.join(sorted(hyper)) or 'none'}")

    def __setattr__(self, name: str, value: Any) -> None:
        owner = type(self).__name__
        if name in self.__dict__.get("hyper", {}):
            new = _number(owner, name, value)
            if name in self._bounds:
                _check_range(owner, name, new, self._bounds[name])
            self._check_together({**self.options, **self.hyper, name: new})
            self.hyper[name] = new
        elif isinstance(getattr(type(self), name, None), property):
            object.__setattr__(self, name, value)
        elif name in self.__dict__.get("options", {}):
            raise AttributeError(self._fixed_message(name))
        elif name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            raise AttributeError(f"{owner} has no hyperparameter {name!r}; its "
                                 f"hyperparameters are "
                                 f"{', '.join(sorted(self.__dict__.get('hyper', {})))}")

    def _fixed_message(self, name: str) -> str:
        return (f"{type(self).__name__}: {name} is fixed when the optimizer is built (it "
                f"decides the update's formula or its state); build a new "
                f"{type(self).__name__}({name}=...) instead")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._signature)
        return f"{type(self).__name__}({args})"

    # -- shared pieces of the rules ------------------------------------------------------
    def _begin(self, param: Expr, grad: Expr, state: Mapping[str, Expr],
               hyper: Mapping[str, Operand]) -> tuple[Expr, dict[str, Expr]]:
        """Check the arguments of ``update``; the gradient and the state in the
        parameter's dtype (negated for ``maximize``)."""
        owner = type(self).__name__
        if not isinstance(param, Expr) or param.dtype.kind != "f":
            raise TypeError(f"{owner}.update: param must be a floating-point symgrad "
                            f"expression, got {param!r}")
        spec = self.state_spec(param)
        if set(state) != set(spec):
            raise ValueError(f"{owner}.update: expected state arrays "
                             f"{sorted(spec)}, got {sorted(state)}")
        missing = sorted(set(self.hyper) - set(hyper))
        if missing:
            raise ValueError(f"{owner}.update: hyper lacks {', '.join(map(repr, missing))} "
                             f"(it needs a scalar node for each of {sorted(self.hyper)})")
        for k in self.hyper:
            if isinstance(hyper[k], Expr) and hyper[k].shape != ():
                raise ValueError(f"{owner}.update: hyper[{k!r}] must be a scalar node, got "
                                 f"shape {hyper[k].shape}")
        dt = param.dtype
        g = cast(grad, dt)
        if g.shape != param.shape:
            raise ValueError(f"{owner}.update: grad has shape {g.shape}, param {param.shape}")
        st = {}
        for k, node in state.items():
            node = cast(node, dt)
            if node.shape != param.shape:
                raise ValueError(f"{owner}.update: state {k!r} has shape {node.shape}, "
                                 f"param {param.shape}")
            st[k] = node
        if self.options.get("maximize", False):
            g = -g
        return g, st

    @staticmethod
    def _c(x: Operand, param: Expr) -> Expr:
        """A scalar (node or number) in the parameter's dtype, where it meets its arrays."""
        return cast(x, param.dtype)


class SGD(Optimizer):
    r"""Stochastic gradient descent, optionally with (Nesterov) momentum and weight decay.

    g ← ∇f(θ) + λθ   (λ = weight_decay)
    b ← g at t = 1, else μ·b + (1 − τ)·g   (μ = momentum, τ = dampening; only when μ ≠ 0)
    g ← g + μ·b if nesterov, else b   (only when μ ≠ 0)
    θ ← θ − γ·g   (γ = lr)

    State: ``momentum_buffer`` (only when built with momentum ≠ 0). With ``maximize`` the
    gradient is negated first. ``lr`` has no default.

    >>> opt = sg.optim.SGD(lr=0.02, momentum=0.9, nesterov=True)
    """

    _bounds = {"lr": _NONNEG, "momentum": _NONNEG, "weight_decay": _NONNEG}
    _signature = ("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize")

    def __init__(self, lr: float, momentum: float = 0, dampening: float = 0,
                 weight_decay: float = 0, nesterov: bool = False, *, maximize: bool = False):
        owner = "SGD"
        momentum = _number(owner, "momentum", momentum)
        hyper: dict[str, Any] = {"lr": lr, "weight_decay": weight_decay}
        options: dict[str, Any] = {"nesterov": bool(nesterov), "maximize": bool(maximize)}
        if momentum != 0:  # a momentum buffer exists: momentum and dampening are live
            hyper.update(momentum=momentum, dampening=dampening)
        else:  # plain SGD: no buffer (as in PyTorch), nothing to read or write
            options.update(momentum=momentum, dampening=_number(owner, "dampening", dampening))
        super().__init__(hyper, options)

    def _check_together(self, values: Mapping[str, Any]) -> None:
        _momentum_stays(self, values)
        if values["nesterov"] and (values["momentum"] <= 0 or values["dampening"] != 0):
            raise ValueError("SGD: Nesterov momentum requires a momentum and zero dampening "
                             f"(got momentum={values['momentum']}, "
                             f"dampening={values['dampening']})")

    def _fixed_message(self, name: str) -> str:
        if name in ("momentum", "dampening"):
            return (f"SGD was built with momentum=0, so it has no momentum buffer and "
                    f"{name} cannot change; build SGD(lr, momentum=...) to use momentum")
        return super()._fixed_message(name)

    def state_spec(self, param: Expr) -> dict[str, float]:
        return {"momentum_buffer": 0.0} if "momentum" in self.hyper else {}

    def update(self, param, grad, state, hyper, step):
        g, st = self._begin(param, grad, state, hyper)
        c = lambda x: self._c(x, param)
        g = g + c(hyper["weight_decay"]) * param
        new_state: dict[str, Expr] = {}
        if "momentum" in self.hyper:
            mu = c(hyper["momentum"])
            buf = where(equal(step, 1), g,
                        mu * st["momentum_buffer"] + c(1 - hyper["dampening"]) * g)
            new_state["momentum_buffer"] = buf
            g = g + mu * buf if self.options["nesterov"] else buf
        return param - c(hyper["lr"]) * g, new_state


class Adam(Optimizer):
    r"""Adam (Kingma & Ba), with L2 weight decay added to the gradient, optionally AMSGrad.

    g ← ∇f(θ) + λθ   (λ = weight_decay)
    m ← β₁·m + (1 − β₁)·g
    v ← β₂·v + (1 − β₂)·g²
    v̂ ← max(v̂, v) if amsgrad, else v
    θ ← θ − γ/(1 − β₁ᵗ) · m / (√v̂ / √(1 − β₂ᵗ) + ε)   (γ = lr, t = step count)

    State: ``exp_avg`` (m), ``exp_avg_sq`` (v), ``max_exp_avg_sq`` (with amsgrad), all
    starting at 0. Hyperparameters ``lr beta1 beta2 eps weight_decay``; ``opt.betas`` reads
    and sets both betas.

    >>> opt = sg.optim.Adam(lr=1e-3, betas=(0.9, 0.999))
    """

    _bounds = {"lr": _NONNEG, "eps": _NONNEG, "beta1": (0.0, 1.0, True),
               "beta2": (0.0, 1.0, True), "weight_decay": _NONNEG}
    _signature = ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize")
    _decoupled = False

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0, amsgrad: bool = False, *,
                 maximize: bool = False):
        beta1, beta2 = self._split_betas(betas)
        super().__init__({"lr": lr, "beta1": beta1, "beta2": beta2, "eps": eps,
                          "weight_decay": weight_decay},
                         {"amsgrad": bool(amsgrad), "maximize": bool(maximize)})

    def _split_betas(self, betas: Any) -> tuple[Any, Any]:
        try:
            beta1, beta2 = betas
        except (TypeError, ValueError):
            raise TypeError(f"{type(self).__name__}: betas must be a pair (beta1, beta2), "
                            f"got {betas!r}") from None
        return beta1, beta2

    @property
    def betas(self) -> tuple[float, float]:
        """``(beta1, beta2)``; assigning sets both (each checked)."""
        return (self.hyper["beta1"], self.hyper["beta2"])

    @betas.setter
    def betas(self, value: tuple[float, float]) -> None:
        beta1, beta2 = self._split_betas(value)
        owner = type(self).__name__
        b1, b2 = _number(owner, "beta1", beta1), _number(owner, "beta2", beta2)
        _check_range(owner, "beta1", b1, self._bounds["beta1"])
        _check_range(owner, "beta2", b2, self._bounds["beta2"])
        self.hyper["beta1"], self.hyper["beta2"] = b1, b2

    def state_spec(self, param: Expr) -> dict[str, float]:
        spec = {"exp_avg": 0.0, "exp_avg_sq": 0.0}
        if self.options["amsgrad"]:
            spec["max_exp_avg_sq"] = 0.0
        return spec

    def update(self, param, grad, state, hyper, step):
        g, st = self._begin(param, grad, state, hyper)
        c = lambda x: self._c(x, param)
        lr, beta1, beta2 = hyper["lr"], hyper["beta1"], hyper["beta2"]
        wd = hyper["weight_decay"]
        p = param
        if self._decoupled:
            p = param * c(1 - lr * wd)
        else:
            g = g + c(wd) * param
        m = c(beta1) * st["exp_avg"] + c(1 - beta1) * g
        v = c(beta2) * st["exp_avg_sq"] + c(1 - beta2) * (g * g)
        new_state = {"exp_avg": m, "exp_avg_sq": v}
        if self.options["amsgrad"]:
            v = maximum(st["max_exp_avg_sq"], v)
            new_state["max_exp_avg_sq"] = v
        step_size = lr / (1 - beta1 ** step)            # scalars: computed once
        bias_correction2_sqrt = sqrt(1 - beta2 ** step)
        denom = sqrt(v) / c(bias_correction2_sqrt) + c(hyper["eps"])
        return p - c(step_size) * (m / denom), new_state


class AdamW(Adam):
    r"""AdamW (Loshchilov & Hutter): Adam with decoupled weight decay.

    θ ← θ·(1 − γλ)   (γ = lr, λ = weight_decay; before the Adam step, gradient untouched)
    m ← β₁·m + (1 − β₁)·g
    v ← β₂·v + (1 − β₂)·g²
    v̂ ← max(v̂, v) if amsgrad, else v
    θ ← θ − γ/(1 − β₁ᵗ) · m / (√v̂ / √(1 − β₂ᵗ) + ε)

    State as :class:`Adam`. Default ``weight_decay=1e-2``.

    >>> opt = sg.optim.AdamW(lr=1e-3, weight_decay=0.01)
    """

    _decoupled = True

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False, *,
                 maximize: bool = False):
        super().__init__(lr, betas, eps, weight_decay, amsgrad, maximize=maximize)


class RMSProp(Optimizer):
    r"""RMSProp (Hinton), optionally centered and with momentum (PyTorch's ``RMSprop``).

    g ← ∇f(θ) + λθ   (λ = weight_decay)
    v ← α·v + (1 − α)·g²
    ḡ ← α·ḡ + (1 − α)·g,  ṽ ← v − ḡ²  if centered, else ṽ ← v
    b ← μ·b + g/(√ṽ + ε),  θ ← θ − γ·b   if μ > 0 (μ = momentum)
    θ ← θ − γ·g/(√ṽ + ε)   if μ = 0

    State: ``square_avg`` (v), ``momentum_buffer`` (b, when built with momentum > 0),
    ``grad_avg`` (ḡ, when centered), all starting at 0.

    >>> opt = sg.optim.RMSProp(lr=1e-2, momentum=0.9, centered=True)
    """

    _bounds = {"lr": _NONNEG, "eps": _NONNEG, "momentum": _NONNEG, "weight_decay": _NONNEG,
               "alpha": _NONNEG}
    _signature = ("lr", "alpha", "eps", "weight_decay", "momentum", "centered", "maximize")

    def __init__(self, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0, momentum: float = 0, centered: bool = False, *,
                 maximize: bool = False):
        momentum = _number("RMSProp", "momentum", momentum)
        hyper: dict[str, Any] = {"lr": lr, "alpha": alpha, "eps": eps,
                                 "weight_decay": weight_decay}
        options: dict[str, Any] = {"centered": bool(centered), "maximize": bool(maximize)}
        if momentum > 0:
            hyper["momentum"] = momentum
        else:
            options["momentum"] = momentum
        super().__init__(hyper, options)

    def _check_together(self, values: Mapping[str, Any]) -> None:
        _momentum_stays(self, values)

    def _fixed_message(self, name: str) -> str:
        if name == "momentum":
            return ("RMSProp was built with momentum=0, so it has no momentum buffer; build "
                    "RMSProp(..., momentum=...) to use momentum")
        return super()._fixed_message(name)

    def state_spec(self, param: Expr) -> dict[str, float]:
        spec = {"square_avg": 0.0}
        if "momentum" in self.hyper:
            spec["momentum_buffer"] = 0.0
        if self.options["centered"]:
            spec["grad_avg"] = 0.0
        return spec

    def update(self, param, grad, state, hyper, step):
        g, st = self._begin(param, grad, state, hyper)
        c = lambda x: self._c(x, param)
        alpha = hyper["alpha"]
        g = g + c(hyper["weight_decay"]) * param
        v = c(alpha) * st["square_avg"] + c(1 - alpha) * (g * g)
        new_state = {"square_avg": v}
        if self.options["centered"]:
            g_avg = c(alpha) * st["grad_avg"] + c(1 - alpha) * g
            new_state["grad_avg"] = g_avg
            v = v - g_avg * g_avg
        avg = sqrt(v) + c(hyper["eps"])
        if "momentum" in self.hyper:
            buf = c(hyper["momentum"]) * st["momentum_buffer"] + g / avg
            new_state["momentum_buffer"] = buf
            new_param = param - c(hyper["lr"]) * buf
        else:
            new_param = param - c(hyper["lr"]) * (g / avg)
        return new_param, {k: new_state[k] for k in self.state_spec(param)}


RMSprop = RMSProp  # PyTorch's spelling


class Adagrad(Optimizer):
    r"""Adagrad (Duchi et al.), with a decaying learning rate.

    g ← ∇f(θ) + λθ   (λ = weight_decay)
    γ̃ ← γ / (1 + (t − 1)·η)   (γ = lr, η = lr_decay, t = step count)
    s ← s + g²
    θ ← θ − γ̃·g/(√s + ε)

    State: ``sum`` (s), starting at ``initial_accumulator_value`` (fixed when built).

    >>> opt = sg.optim.Adagrad(lr=1e-2, lr_decay=1e-4)
    """

    _bounds = {"lr": _NONNEG, "lr_decay": _NONNEG, "weight_decay": _NONNEG,
               "initial_accumulator_value": _NONNEG, "eps": _NONNEG}
    _signature = ("lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps",
                  "maximize")

    def __init__(self, lr: float = 1e-2, lr_decay: float = 0, weight_decay: float = 0,
                 initial_accumulator_value: float = 0, eps: float = 1e-10, *,
                 maximize: bool = False):
        super().__init__({"lr": lr, "lr_decay": lr_decay, "weight_decay": weight_decay,
                          "eps": eps},
                         {"initial_accumulator_value": _number(
                             "Adagrad", "initial_accumulator_value",
                             initial_accumulator_value),
                          "maximize": bool(maximize)})

    def state_spec(self, param: Expr) -> dict[str, float]:
        return {"sum": self.options["initial_accumulator_value"]}

    def update(self, param, grad, state, hyper, step):
        g, st = self._begin(param, grad, state, hyper)
        c = lambda x: self._c(x, param)
        g = g + c(hyper["weight_decay"]) * param
        clr = hyper["lr"] / (1 + (step - 1) * hyper["lr_decay"])  # a scalar
        s = st["sum"] + g * g
        return param - c(clr) * (g / (sqrt(s) + c(hyper["eps"]))), {"sum": s}


class Adadelta(Optimizer):
    r"""Adadelta (Zeiler).

    g ← ∇f(θ) + λθ   (λ = weight_decay)
    v ← ρ·v + (1 − ρ)·g²
    Δ ← √(u + ε)/√(v + ε) · g
    u ← ρ·u + (1 − ρ)·Δ²
    θ ← θ − γ·Δ   (γ = lr)

    State: ``square_avg`` (v) and ``acc_delta`` (u), starting at 0.

    >>> opt = sg.optim.Adadelta()          # lr=1.0, rho=0.9, eps=1e-6
    """

    _bounds = {"lr": _NONNEG, "rho": (0.0, 1.0, False), "eps": _NONNEG,
               "weight_decay": _NONNEG}
    _signature = ("lr", "rho", "eps", "weight_decay", "maximize")

    def __init__(self, lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6,
                 weight_decay: float = 0, *, maximize: bool = False):
        super().__init__({"lr": lr, "rho": rho, "eps": eps, "weight_decay": weight_decay},
                         {"maximize": bool(maximize)})

    def state_spec(self, param: Expr) -> dict[str, float]:
        return {"square_avg": 0.0, "acc_delta": 0.0}

    def update(self, param, grad, state, hyper, step):
        g, st = self._begin(param, grad, state, hyper)
        c = lambda x: self._c(x, param)
        rho, eps = c(hyper["rho"]), c(hyper["eps"])
        one_minus_rho = c(1 - hyper["rho"])
        g = g + c(hyper["weight_decay"]) * param
        v = rho * st["square_avg"] + one_minus_rho * (g * g)
        delta = sqrt(st["acc_delta"] + eps) / sqrt(v + eps) * g
        u = rho * st["acc_delta"] + one_minus_rho * (delta * delta)
        return param - c(hyper["lr"]) * delta, {"square_avg": v, "acc_delta": u}
