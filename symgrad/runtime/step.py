"""Training steps: loss, gradients and the optimizer's update in one compiled call.

``compile_step`` differentiates the loss symbolically, asks the optimizer for its update
rule as formulas, and compiles the loss together with every new parameter and optimizer
state value. Hyperparameters, the step count and the optimizer state are parameters of
the compiled graph (read at call time), so changing ``step.optimizer.lr`` never
recompiles. A call computes everything first and writes the new values into the
parameters only once it has succeeded: a bad batch raises and changes nothing.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from symgrad.diff import grad, simplify
from symgrad.expr.evaluate import check_feeds, graph_inputs
from symgrad.expr.leaves import PARAM, param
from symgrad.expr.node import Expr, toposort
from symgrad.runtime.function import Function
from symgrad.runtime.watch import watched_in

__all__ = ["Step", "compile_step"]


def _shape(value: Any) -> tuple:
    """A feed's shape, device arrays (``__cuda_array_interface__``) included."""
    iface = getattr(value, "__cuda_array_interface__", None)
    return tuple(iface["shape"]) if iface is not None else np.shape(value)


def _params_of(loss: Expr) -> list[Expr]:
    return [n for n in toposort([loss]) if n.op is PARAM]


class Step:
    """A compiled training step; ``step(**batch)`` returns the loss (before the update)
    and updates the parameters in place.

    >>> step = sg.compile_step(loss, sg.optim.SGD(lr=0.02))
    >>> for _ in range(100):
    ...     value = step(x1=a1, x2=a2, y=t)
    """

    def __init__(self, loss: Expr, optimizer: Any, params: Sequence[Expr] | None = None,
                 backend: str = "llvm", fast_math: bool = False):
        if not isinstance(loss, Expr) or loss.shape != ():
            shape = getattr(loss, "shape", None)
            raise ValueError(f"compile_step: the loss must be a scalar expression, got "
                             f"{'shape ' + str(shape) if shape is not None else type(loss)}")
        self.loss, self.optimizer, self.backend = loss, optimizer, backend
        self.fast_math = fast_math
        self.params = list(params) if params is not None else _params_of(loss)
        for p in self.params:
            if not isinstance(p, Expr) or p.op is not PARAM:
                raise TypeError(f"compile_step: params must be symgrad parameters, got {p!r}")
        if not self.params:
            raise ValueError("compile_step: the loss depends on no parameter to train")
        grads = grad(loss, self.params)
        self.derivatives: dict[Expr, Expr] = dict(zip(self.params, grads))
        # float64 scalars: Adam's 1 - 0.999 is already 1e-5 off in float32 (the optimizer
        # casts where they meet the parameters' arrays)
        self._hyper = {k: param(f"hyper_{k}", init=v, dtype="float64")
                       for k, v in optimizer.hyper.items()}
        self._count = param("step_count", init=0.0, dtype="float64")
        self._state: dict[Expr, dict[str, Expr]] = {}
        updates: list[tuple[Expr, Expr]] = []
        t = self._count + 1
        for p, g in self.derivatives.items():
            state = {name: param(f"{p.name}_{name}", shape=p.shape, init=fill, dtype=p.dtype)
                     for name, fill in optimizer.state_spec(p).items()}
            self._state[p] = state
            new_p, new_state = optimizer.update(p, g, state, self._hyper, t)
            updates.append((p, new_p))
            updates += [(state[k], v) for k, v in new_state.items()]
        self._targets = [target for target, _ in updates]
        self._watches = watched_in([loss])
        watch_outputs = [stat for _, stats in self._watches.values() for stat in stats]
        self.watched: dict[str, dict[str, object]] = {}
        outputs = simplify([loss] + [value for _, value in updates]) + watch_outputs
        self._function = Function(outputs, backend, fast_math)
        self._loss_only: Function | None = None
        # Simplification may drop an input (x - x): the step still takes the model's inputs
        self._model_inputs = graph_inputs([loss])
        self._dropped = set(self._model_inputs) != set(self._function.inputs)

    # -- running -----------------------------------------------------------------------
    def __call__(self, **batch: Any) -> float:
        self._sync_hyper()
        if any(_shape(v)[:1] == (0,) for v in batch.values()):
            raise ValueError("a training step needs at least one sample; got an empty batch "
                             f"({', '.join(f'{k}: {_shape(v)}' for k, v in batch.items())})")
        if self._dropped:
            check_feeds(self._model_inputs, batch)
            batch = {k: v for k, v in batch.items() if k in self._function.inputs}
        # every new value is committed only after the whole call has succeeded (on the GPU,
        # the parameters and optimizer state stay there)
        commit = {1 + i: target.arg for i, target in enumerate(self._targets)}
        loss, *new_values = self._function.run(batch, commit)
        seen = new_values[len(self._targets):]
        for name in self._watches:
            mean, low, high, first = seen[:4]
            seen = seen[4:]
            self.watched[name] = {"mean": float(mean), "min": float(low), "max": float(high),
                                  "first": np.asarray(first)}
        self._count.arg.value[...] += 1
        return float(loss)

    def evaluate(self, **batch: Any) -> float:
        """The loss on ``batch`` without updating anything (e.g. a validation loss)."""
        if self._loss_only is None:
            self._loss_only = Function(self.loss, self.backend, self.fast_math)
        return float(self._loss_only(**batch))

    def _sync_hyper(self) -> None:
        for name, node in self._hyper.items():
            node.arg.value[...] = self.optimizer.hyper[name]

    def reset(self) -> None:
        """Reset the optimizer state and the step count (the parameters stay)."""
        for p, state in self._state.items():
            for name, fill in self.optimizer.state_spec(p).items():
                state[name].arg.value[...] = fill
        self._count.arg.value[...] = 0

    # -- inspection --------------------------------------------------------------------
    @property
    def optimizer_state(self) -> dict[str, dict[str, np.ndarray]]:
        """Each parameter's optimizer state arrays, by parameter name."""
        return {p.name: {k: v.value for k, v in s.items()} for p, s in self._state.items()}

    @property
    def step_count(self) -> int:
        return int(self._count.value)

    @property
    def source(self) -> str:
        return self._function.source

    @property
    def asm(self) -> str:
        return self._function.asm

    @property
    def plan(self) -> str:
        return self._function.plan

    def cubin(self, arch: str = "sm_80") -> bytes:
        return self._function.cubin(arch)

    @property
    def loop_ir(self) -> str:
        return self._function.loop_ir

    def __repr__(self) -> str:
        names = ", ".join(p.name for p in self.params)
        return (f"<symgrad.Step {type(self.optimizer).__name__} params=({names}) "
                f"backend={self.backend!r} steps={self.step_count}>")


def compile_step(loss: Expr, optimizer: Any, params: Sequence[Expr] | None = None,
                 backend: str = "llvm", fast_math: bool = False) -> Step:
    """Compile one training step of ``optimizer`` on ``loss``: every parameter the loss
    depends on (or ``params``) is updated in place by each call.

    >>> step = sg.compile_step(loss, sg.optim.Adam(lr=1e-3))
    >>> value = step(X=images, labels=digits)
    >>> step.optimizer.lr = 1e-4          # takes effect at the next call, no recompiling
    """
    return Step(loss, optimizer, params, backend, fast_math)
