"""``sg.fit``: minibatch training over a dict of arrays, with a history of the loss."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from symgrad.expr.node import Expr
from symgrad.runtime import distributed
from symgrad.runtime.checkpoint import params_by_name, save
from symgrad.runtime.function import Function
from symgrad.runtime.step import ON_NONFINITE, Step

__all__ = ["History", "fit"]


@dataclass
class History:
    """What ``fit`` saw: the loss of every step, the mean loss of every epoch (over the
    steps that were applied), the validation loss after each epoch when validation data
    was given, and how many steps were skipped for a non-finite loss or gradient."""
    step_loss: list[float] = field(default_factory=list)
    epoch_loss: list[float] = field(default_factory=list)
    validation_loss: list[float] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False
    skipped: int = 0

    def plot(self, path: str) -> str:
        """Write a PNG loss curve to ``path`` (needs matplotlib)."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            raise ImportError("History.plot needs matplotlib: pip install matplotlib") from None
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(np.arange(1, len(self.step_loss) + 1), self.step_loss, lw=0.8, label="step")
        if self.epoch_loss:
            per_epoch = len(self.step_loss) / len(self.epoch_loss)
            xs = per_epoch * np.arange(1, len(self.epoch_loss) + 1)
            ax.plot(xs, self.epoch_loss, "o-", label="epoch mean")
            if self.validation_loss:
                ax.plot(xs[:len(self.validation_loss)], self.validation_loss, "s--",
                        label="validation")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_yscale("log" if min(self.step_loss, default=1) > 0 else "linear")
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path


def _check_data(data: Mapping[str, Any], what: str) -> tuple[dict[str, np.ndarray], int]:
    if not isinstance(data, Mapping) or not data:
        raise TypeError(f"{what}: expected a dict of arrays by input name, got "
                        f"{type(data).__name__}")
    arrays = {k: np.asarray(v) for k, v in data.items()}
    lengths = {k: (a.shape[0] if a.ndim else None) for k, a in arrays.items()}
    distinct = set(lengths.values())
    if None in distinct or len(distinct) != 1:
        raise ValueError(f"{what}: every array must have the same leading length, got "
                         + ", ".join(f"{k}: {n}" for k, n in lengths.items()))
    return arrays, distinct.pop()


class _Progress:
    """tqdm when installed, else a line per epoch."""

    def __init__(self, total: int, enabled: bool):
        self.bar = None
        self.enabled = enabled
        if enabled:
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=total, unit="step", leave=True)
            except ImportError:
                self.bar = None

    def update(self, loss: float, skipped: int) -> None:
        if self.bar is not None:
            self.bar.update(1)
            extra = {"skipped": skipped} if skipped else {}
            self.bar.set_postfix(loss=f"{loss:.4g}", **extra, refresh=False)

    def epoch(self, epoch: int, loss: float, val: float | None, skipped: int) -> None:
        if self.enabled and self.bar is None:
            extra = f"  validation {val:.5g}" if val is not None else ""
            extra += f"  skipped {skipped} steps" if skipped else ""
            print(f"epoch {epoch + 1}: loss {loss:.5g}{extra}", file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _check_step(step: Any, checkpoint: Any, checkpoint_every: Any,
                on_nonfinite: str | None) -> None:
    """Refuse what is not a training step before anything runs (a compiled function would
    be called on every batch, return its outputs and train nothing)."""
    how = "pass sg.compile_step(loss, optimizer), e.g. sg.compile_step(loss, sg.optim.Adam())"
    if isinstance(step, Function):
        raise TypeError(f"fit: expected a training step, got a compiled function "
                        f"(sg.function), which updates no parameter; {how}")
    if isinstance(step, Expr):
        raise TypeError(f"fit: expected a training step, got the expression {str(step)[:60]!r}"
                        f"; {how}")
    if not isinstance(step, Step) and not (callable(step)
                                           and callable(getattr(step, "evaluate", None))):
        # a stand-in needs what fit calls: step(**batch) -> loss, step.evaluate(**batch)
        raise TypeError(f"fit: expected a training step, got {type(step).__name__} "
                        f"{str(step)[:60]!r}; {how}")
    if checkpoint_every is not None:
        if checkpoint is None:
            raise ValueError("fit: checkpoint_every needs checkpoint=path")
        if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) \
                or checkpoint_every < 1:
            raise ValueError(f"fit: checkpoint_every must be a positive int (steps), got "
                             f"{checkpoint_every!r}")
    if checkpoint is not None:
        if not isinstance(checkpoint, (str, os.PathLike)):
            raise TypeError(f"fit: checkpoint must be a file path, got "
                            f"{type(checkpoint).__name__}")
        if not isinstance(step, Step):
            raise TypeError(f"fit: checkpoint= needs a step from sg.compile_step, got "
                            f"{type(step).__name__}")
        folder = os.path.dirname(os.path.abspath(os.fspath(checkpoint)))
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            raise FileNotFoundError(f"fit: checkpoint={os.fspath(checkpoint)!r}: the folder "
                                    f"{folder!r} does not exist or is not writable (checked "
                                    f"before training, so no step is lost)")
        params_by_name(step.params, "fit: checkpoint")  # refuse before training, not after
    if on_nonfinite is not None:
        if on_nonfinite not in ON_NONFINITE:
            raise ValueError(f"fit: on_nonfinite must be one of {', '.join(ON_NONFINITE)} or "
                             f"None, got {on_nonfinite!r}")
        if not hasattr(step, "on_nonfinite"):
            raise TypeError(f"fit: on_nonfinite= needs a step with an on_nonfinite policy "
                            f"(sg.compile_step), got {type(step).__name__}")


def _comm_of(step: Any, comm: Any) -> Any:
    """The communicator fit trains over: the step's own (``compile_step(comm=...)``), which
    ``comm`` (if given) must be."""
    own = getattr(step, "comm", None)
    if comm is None or comm is own:
        return own
    if own is None:
        raise TypeError("fit: comm= needs a data-parallel step: sg.compile_step(loss, "
                        "optimizer, comm=comm)")
    raise ValueError("fit: comm is not the communicator the step was compiled with")


def _loss_value(step: Any, loss: Any) -> float:
    if isinstance(loss, (float, int, np.floating, np.integer)) and not isinstance(loss, bool):
        return float(loss)
    raise TypeError(f"fit: a training step returns its loss as a number; "
                    f"{type(step).__name__}(**batch) returned {type(loss).__name__}")


def fit(step: Any, data: Mapping[str, Any], epochs: int = 1, batch_size: int = 32,
        shuffle: bool = True, seed: int | None = None, progress: bool = True,
        callbacks: Sequence[Callable[[int, History], Any]] | None = None,
        validation: Mapping[str, Any] | None = None,
        checkpoint: str | os.PathLike | None = None, checkpoint_every: int | None = None,
        on_nonfinite: str | None = None, comm: Any = None) -> History:
    """Train ``step`` (from :func:`compile_step`) over minibatches of ``data``.

    The data is reshuffled every epoch from a generator seeded by ``seed``; the last
    partial batch is kept. Ctrl-C stops cleanly between steps (``history.interrupted``).
    Each callback is called as ``callback(epoch, history)`` after every epoch.

    ``checkpoint=path`` saves the step there (:func:`symgrad.save`) every
    ``checkpoint_every`` steps (batches, counted from the start of this call, as Keras'
    ``ModelCheckpoint(save_freq=int)``) and when fit returns, Ctrl-C included; each save
    replaces the file atomically. ``on_nonfinite`` ("raise", "skip" or "apply") sets the
    step's policy for a non-finite loss or gradient while fit runs (the step's own
    setting is restored after); ``history.skipped`` counts the steps skipped meanwhile.

    An error that stops training (a ``NonFiniteError``, a bad batch) carries the history
    up to that step as ``error.history``.

    Data-parallel (``comm``: an mpi4py communicator; by default the step's own, from
    ``sg.compile_step(..., comm=comm)``): every process passes the same ``data`` (e.g.
    arrays from ``np.load(path, mmap_mode="r")``) and reads only its shard of each
    minibatch; the shuffle is rank 0's on every process, so the minibatches are those of
    one process; only rank 0 shows progress and writes the checkpoint; the history (the
    global losses) is the same on every process. ``validation`` is split the same way.

    >>> history = sg.fit(step, {"X": images, "labels": digits}, epochs=5, batch_size=256)
    >>> history.plot("loss.png")
    """
    comm = _comm_of(step, comm)
    if comm is None:
        _check_step(step, checkpoint, checkpoint_every, on_nonfinite)
    else:  # every process checks (the checkpoint's folder too); they agree
        distributed.agree(comm, "fit", lambda: _check_step(step, checkpoint, checkpoint_every,
                                                           on_nonfinite))
    arrays, n = _check_data(data, "fit: data")
    if comm is not None:
        distributed.same_everywhere(comm, "fit: the number of samples in data", n)
    if n == 0:
        raise ValueError("fit: data holds no samples (every array has length 0)")
    if validation is not None:
        validation, n_validation = _check_data(validation, "fit: validation")
        if comm is not None:  # each process evaluates its shard; the loss is global
            mine = distributed.shard_of(n_validation, comm.Get_rank(), comm.Get_size())
            validation = {k: a[mine] for k, a in validation.items()}
    if not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"fit: epochs must be a non-negative int, got {epochs!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"fit: batch_size must be a positive int, got {batch_size!r}")
    if comm is not None and seed is None:  # one shuffle everywhere: rank 0's
        seed = comm.bcast(np.random.SeedSequence().entropy, root=0)
    rng = np.random.default_rng(seed)
    per_epoch = -(-n // batch_size)
    history = History()
    skipped_before = getattr(step, "skipped", 0)
    own_policy = getattr(step, "on_nonfinite", None)
    steps_run = saved_at = 0
    bar = _Progress(epochs * per_epoch, progress and (comm is None or comm.Get_rank() == 0))
    start = time.perf_counter()
    try:
        if on_nonfinite is not None:
            step.on_nonfinite = on_nonfinite
        for epoch in range(epochs):
            order = rng.permutation(n) if shuffle else np.arange(n)
            losses = []
            for lo in range(0, n, batch_size):
                take = order[lo:lo + batch_size]
                if comm is not None:  # this process's share of the minibatch
                    take = take[distributed.shard_of(len(take), comm.Get_rank(),
                                                     comm.Get_size())]
                before = getattr(step, "skipped", 0)
                loss = _loss_value(step, step(**{k: a[take] for k, a in arrays.items()}))
                steps_run += 1
                if getattr(step, "skipped", 0) == before:  # the epoch mean: applied steps
                    losses.append(loss)
                history.step_loss.append(loss)
                history.skipped = getattr(step, "skipped", 0) - skipped_before
                bar.update(loss, history.skipped)
                if checkpoint_every is not None and steps_run % checkpoint_every == 0:
                    save(checkpoint, step)
                    saved_at = steps_run
            history.epoch_loss.append(float(np.mean(losses)) if losses else float("nan"))
            val = step.evaluate(**validation) if validation is not None else None
            if val is not None:
                history.validation_loss.append(val)
            bar.epoch(epoch, history.epoch_loss[-1], val, history.skipped)
            for cb in callbacks or ():
                cb(epoch, history)
    except KeyboardInterrupt:
        history.interrupted = True  # the parameters are those of the last finished step
        if comm is not None:  # the processes may have stopped at different steps: the
            checkpoint = None  # periodic checkpoints are the consistent ones
    except Exception as exc:  # e.g. NonFiniteError: the history so far goes with it
        exc.history = history
        raise
    finally:
        if on_nonfinite is not None:
            step.on_nonfinite = own_policy
        bar.close()
        history.seconds = time.perf_counter() - start
    if checkpoint is not None and (saved_at != steps_run or steps_run == 0):
        save(checkpoint, step)
    return history
