"""Training steps: loss, gradients and the optimizer's update in one compiled call.

``compile_step`` differentiates the loss symbolically, asks the optimizer for its update
rule as formulas, and compiles the loss together with every new parameter and optimizer
state value. Hyperparameters, the step count and the optimizer state are parameters of
the compiled graph (read at call time), so changing ``step.optimizer.lr`` never
recompiles. A call computes everything first and writes the new values into the
parameters only once it has succeeded: a bad batch raises and changes nothing. The step
checks its own loss and gradients: by default a step whose loss or any gradient is not
finite raises :class:`NonFiniteError` and writes nothing (``on_nonfinite``).
"""

from __future__ import annotations

import functools
import math
import operator
from typing import Any, Mapping, Sequence

import numpy as np

from symgrad.codegen.passes import Compilation
from symgrad.diff import grad, simplify
from symgrad.expr import functions as F
from symgrad.expr import tensors
from symgrad.expr.evaluate import check_feeds, graph_inputs, merge_feeds
from symgrad.expr.leaves import PARAM, param
from symgrad.expr.node import Expr, toposort
from symgrad.runtime.function import Function
from symgrad.runtime.signals import deferred_signals
from symgrad.runtime.watch import watched_in

__all__ = ["NonFiniteError", "Step", "compile_step"]

ON_NONFINITE = ("raise", "skip", "apply")


class NonFiniteError(FloatingPointError):
    """A training step's loss or gradient was not finite; the step wrote nothing.

    ``loss`` is the loss the step computed and ``params`` the names of the parameters whose
    gradient held an inf or a NaN.
    """

    def __init__(self, message: str, loss: float, params: list[str]):
        super().__init__(message)
        self.loss, self.params = loss, params


def _count_nonfinite(g: Expr) -> Expr:
    """How many elements of ``g`` are inf or NaN (``|g| < inf`` is false for both)."""
    return tensors.sum(F.where(F.abs(g) < np.inf, 0, 1))


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
                 backend: str = "llvm", fast_math: bool = False,
                 on_nonfinite: str = "raise", comm: Any = None,
                 passes: Mapping[str, bool] | None = None):
        self.compilation = Compilation(passes)
        if not isinstance(loss, Expr) or loss.shape != ():
            shape = getattr(loss, "shape", None)
            raise ValueError(f"compile_step: the loss must be a scalar expression, got "
                             f"{'shape ' + str(shape) if shape is not None else type(loss)}")
        self.loss, self._optimizer, self.backend = loss, optimizer, backend
        self.fast_math = fast_math
        self.on_nonfinite = on_nonfinite
        self.skipped = 0  # steps not applied because the loss or a gradient was not finite
        self.params = list(params) if params is not None else _params_of(loss)
        for p in self.params:
            if not isinstance(p, Expr) or p.op is not PARAM:
                raise TypeError(f"compile_step: params must be symgrad parameters, got {p!r}")
        if not self.params:
            raise ValueError("compile_step: the loss depends on no parameter to train")
        with self.compilation.timed("derive"):
            grads = grad(loss, self.params)
        self.derivatives: dict[Expr, Expr] = dict(zip(self.params, grads))
        # float64 scalars: Adam's 1 - 0.999 is already 1e-5 off in float32 (the optimizer
        # casts where they meet the parameters' arrays)
        self._hyper = {k: param(f"hyper_{k}", init=v, dtype="float64")
                       for k, v in optimizer.hyper.items()}
        self._hyper_written: dict[str, float] = {}  # the values _sync_hyper last wrote
        self._count = param("step_count", init=0.0, dtype="float64")
        self._state: dict[Expr, dict[str, Expr]] = {}
        updates: list[tuple[Expr, Expr]] = []
        owner: list[int] = []  # which parameter each update belongs to
        t = self._count + 1
        for i, (p, g) in enumerate(self.derivatives.items()):
            state = {name: param(f"{p.name}_{name}", shape=p.shape, init=fill, dtype=p.dtype)
                     for name, fill in optimizer.state_spec(p).items()}
            self._state[p] = state
            new_p, new_state = optimizer.update(p, g, state, self._hyper, t)
            updates.append((p, new_p))
            updates += [(state[k], v) for k, v in new_state.items()]
            owner += [i] * (1 + len(new_state))
        # the step count is committed with the parameters: all of them advance, or none
        updates.append((self._count, t))
        self._targets = [target for target, _ in updates]
        self._commit = {1 + i: target.arg for i, target in enumerate(self._targets)}
        self._watches = watched_in([loss])
        watch_outputs = [stat for w in self._watches.values() for stat in w.stats]
        self.watched: dict[str, dict[str, object]] = {}
        self._watch_calls = 0
        simplified = [loss] + [value for _, value in updates] + grads
        if self.compilation.on("simplify"):
            with self.compilation.timed("simplify"):
                simplified = simplify(simplified)
        new_values = simplified[1:1 + len(updates)]
        # per parameter: the non-finite elements of its gradient, then of its new value and
        # state (a finite gradient can still overflow an update: Adam with eps=0, a huge lr)
        checks = [_count_nonfinite(g) for g in simplified[1 + len(updates):]]
        loss_check = _count_nonfinite(simplified[0])
        for i in range(len(self.params)):
            counts = [_count_nonfinite(v) for v, o in zip(new_values, owner) if o == i]
            checks.append(functools.reduce(operator.add, counts))
        # one count for the whole step (one output: cheap per call); which parameter it was
        # is worked out only when a step fails (``_diagnose``)
        self._diagnostics = checks
        self._diagnose: Function | None = None
        checks = [functools.reduce(operator.add, checks + [loss_check])]
        outputs = simplified[:1 + len(updates)] + checks + watch_outputs
        self._checks = slice(1 + len(updates), 1 + len(updates) + len(checks))
        # zero: the loss and every gradient and update finite, the gate passes (the step
        # commits in its native call without a round trip through ``_accept``)
        self._gate_zero = (self._checks.start,)
        self._function = Function(outputs, backend, fast_math, passes=self.compilation,
                                  watch=False)  # (the watches are among the outputs)
        self._loss_only: Function | None = None
        # Simplification may drop an input (x - x): the step still takes the model's inputs
        self._model_inputs = graph_inputs([loss])
        self._dropped = set(self._model_inputs) != set(self._function.inputs)
        self.comm = comm  # an mpi4py communicator: each process steps on its shard
        if comm is not None:
            from symgrad.runtime import distributed

            self._function = distributed.DataParallel(
                self._function, comm, prepare=self._model_batch,
                need_samples="a training step needs at least one sample",
                what="compile_step(comm=...)")
            # every process starts from rank 0's parameters and state (a random init may
            # differ between processes)
            distributed.broadcast_params(comm, [target.arg for target in self._targets])

    # -- running -----------------------------------------------------------------------
    def __call__(self, batch: Mapping[Any, Any] | None = None, /, **keywords: Any) -> float:
        """One step on a batch given as keywords, a dict (``step(batch)``) or both; returns
        the loss before the update. Columns the loss does not use are ignored."""
        batch = keywords if batch is None else merge_feeds(batch, keywords, "step")
        self._sync_hyper()
        if self.comm is None:  # (data-parallel: checked on every process, then agreed)
            for v in batch.values():
                if (v.shape if isinstance(v, np.ndarray) else _shape(v))[:1] == (0,):
                    shapes = ", ".join(f"{k}: {_shape(v)}" for k, v in batch.items())
                    raise ValueError("a training step needs at least one sample; got an "
                                     f"empty batch ({shapes})")
            batch = self._model_batch(batch)
        # every new value is committed only after the whole call has succeeded (on the GPU,
        # the parameters and optimizer state stay there)
        commit = self._commit
        self._batch = batch  # for ``_accept``'s diagnosis of a failed step
        try:
            results = (self._function.run(batch, commit) if self._on_nonfinite == "apply"
                       else self._function.run(batch, commit, self._accept, self._gate_zero))
        finally:
            self._batch = None
        loss, seen = results[0], results[self._checks.stop:]
        self._watch_calls += 1
        for i, w in enumerate(self._watches.values()):
            self.watched[w.name] = w.record(seen[4 * i:4 * i + 4], self._watch_calls)
        return float(loss)

    def _model_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The feeds of the compiled function: simplification may drop an input (x - x),
        and the step still checks every input of the model."""
        if self._dropped:
            check_feeds(self._model_inputs, batch)
            batch = {k: v for k, v in batch.items() if k in self._function.inputs}
        return batch

    def _compile(self, outputs: list[Expr] | Expr) -> Any:
        """A function of this step's backend and passes (the loss ``evaluate`` computes is
        simplified as the step's is), data-parallel over ``comm`` where set."""
        function = Function(outputs, self.backend, self.fast_math,
                            passes=dict(self.compilation.enabled))
        if self.comm is None:
            return function
        from symgrad.runtime.distributed import DataParallel

        return DataParallel(function, self.comm)

    def _accept(self, results: list) -> bool:
        """The non-finite policy, applied to a computed step before anything is written."""
        if self.on_nonfinite == "apply":
            return True
        loss = float(results[0])
        if math.isfinite(loss) and not results[self._checks.start]:
            return True
        if self.on_nonfinite == "skip":
            self.skipped += 1
            return False
        if self._diagnose is None:  # the per-parameter counts, compiled on the first failure
            self._diagnose = self._compile(self._diagnostics)
        counts = self._diagnose(**self._batch)
        grads, updates = counts[:len(self.params)], counts[len(self.params):]
        bad_grad = {p: int(c) for p, c in zip(self.params, grads) if c}
        bad_update = {p: int(c) for p, c in zip(self.params, updates)
                      if c and p not in bad_grad}  # named once, by the gradient if both
        what = [f"the loss is {loss}"] if not np.isfinite(loss) else []
        what += [f"the gradient of {p.name!r} has {c} non-finite of {max(1, p.arg.value.size)}"
                 f" elements" for p, c in bad_grad.items()]
        what += [f"the update of {p.name!r} (its new value and optimizer state) has {c} "
                 f"non-finite elements" for p, c in bad_update.items()]
        raise NonFiniteError(
            f"training step {self.step_count + 1}: {'; '.join(what)}. Nothing was written: "
            f"the parameters and the optimizer state are as before this step. "
            f"on_nonfinite='skip' skips such steps (counted in step.skipped), "
            f"'apply' writes them anyway.", loss, [p.name for p in [*bad_grad, *bad_update]])

    @property
    def optimizer(self) -> Any:
        """The optimizer whose update rule is compiled into this step; its hyperparameters
        may change between calls (``step.optimizer.lr = 1e-4``)."""
        return self._optimizer

    @optimizer.setter
    def optimizer(self, new: Any) -> None:
        raise AttributeError(
            f"step.optimizer cannot be replaced: the update rule of "
            f"{type(self._optimizer).__name__} is compiled into this step. Compile a new step "
            f"for {type(new).__name__}: sg.compile_step(loss, new_optimizer) (the parameters "
            f"keep their values); hyperparameters change in place, e.g. "
            f"step.optimizer.lr = 1e-4")

    @property
    def on_nonfinite(self) -> str:
        """What a step whose loss or a gradient is inf or NaN does: ``"raise"`` (the
        default: :class:`NonFiniteError`, nothing written), ``"skip"`` (nothing written,
        ``step.skipped`` counts it) or ``"apply"`` (written anyway)."""
        return self._on_nonfinite

    @on_nonfinite.setter
    def on_nonfinite(self, policy: str) -> None:
        if policy not in ON_NONFINITE:
            raise ValueError(f"on_nonfinite must be one of {', '.join(map(repr, ON_NONFINITE))}"
                             f", got {policy!r}")
        self._on_nonfinite = policy

    def evaluate(self, batch: Mapping[Any, Any] | None = None, /, **keywords: Any) -> float:
        """The loss on ``batch`` (a dict, keywords or both) without updating anything (e.g.
        a validation loss; with ``comm``, over every process's shard)."""
        if self._loss_only is None:
            self._loss_only = self._compile(self.loss)
        return float(self._loss_only(
            keywords if batch is None else merge_feeds(batch, keywords, "step.evaluate")))

    def _sync_hyper(self) -> None:
        """Write each hyperparameter whose value changed since it was last written (a
        write also reads ``.value``, which on a GPU makes the next call upload it)."""
        hyper, written = self._optimizer.hyper, self._hyper_written
        for name, node in self._hyper.items():
            value = hyper[name]
            if value is not written.get(name):  # the same float object: the same number
                node.arg.value[...] = value
                written[name] = value

    def reset(self) -> None:
        """Reset the optimizer state and the step count (the parameters stay)."""
        with deferred_signals():  # all of the state, or (under Ctrl-C) none of it
            for p, state in self._state.items():
                for name, fill in self.optimizer.state_spec(p).items():
                    state[name].arg.assign(np.broadcast_to(fill, state[name].shape))
            self._count.arg.assign(0.0)
            self.skipped = 0

    # -- inspection --------------------------------------------------------------------
    @property
    def optimizer_state(self) -> dict[str, dict[str, np.ndarray]]:
        """Each parameter's optimizer state arrays (read-only snapshots), by parameter name;
        two parameters with one name are refused (one would hide the other)."""
        from symgrad.runtime.checkpoint import params_by_name

        named = params_by_name(self._state, "step.optimizer_state")
        return {name: {k: v.arg.snapshot() for k, v in self._state[p].items()}
                for name, p in named.items()}

    @property
    def timings(self) -> dict[str, float]:
        """Seconds each compiler pass took for this step (derive, simplify, schedule,
        lower, render, jit; ``step.compilation.report()`` prints them)."""
        return dict(self.compilation.timings)

    @property
    def step_count(self) -> int:
        """How many steps have been applied (skipped steps do not count)."""
        return int(self._count.arg.snapshot())  # a read: a GPU copy stays current

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
                 backend: str = "llvm", fast_math: bool = False,
                 on_nonfinite: str = "raise", comm: Any = None,
                 passes: Mapping[str, bool] | None = None) -> Step:
    """Compile one training step of ``optimizer`` on ``loss``: every parameter the loss
    depends on (or ``params``) is updated in place by each call.

    ``on_nonfinite`` says what a step whose loss or any gradient is inf or NaN does:
    ``"raise"`` (:class:`NonFiniteError`; nothing is written), ``"skip"`` (nothing is
    written; ``step.skipped`` counts it) or ``"apply"``.

    ``comm`` (an mpi4py communicator) makes the step data-parallel: every process calls it
    with its own shard of the batch; the sums over the batch are reduced across the
    processes before the means and the update, so every process applies the update of the
    whole batch and keeps bit-identical parameters (rank 0's at the start). See
    :mod:`symgrad.runtime.distributed`.

    ``passes`` switches compiler passes off (``{"simplify": False}``: the derivatives
    compiled as derived; ``"fuse"``, ``"blas"``, ``"optimize"``: ``codegen/passes.py``);
    ``step.timings`` says where the compile time went.

    >>> step = sg.compile_step(loss, sg.optim.Adam(lr=1e-3))
    >>> value = step(X=images, labels=digits)
    >>> step.optimizer.lr = 1e-4          # takes effect at the next call, no recompiling
    """
    return Step(loss, optimizer, params, backend, fast_math, on_nonfinite, comm, passes)
