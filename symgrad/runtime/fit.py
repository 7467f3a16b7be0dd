"""``sg.fit``: minibatch training over a dict of arrays, with a history of the loss."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

__all__ = ["History", "fit"]


@dataclass
class History:
    """What ``fit`` saw: the loss of every step, the mean loss of every epoch, and the
    validation loss after each epoch when validation data was given."""
    step_loss: list[float] = field(default_factory=list)
    epoch_loss: list[float] = field(default_factory=list)
    validation_loss: list[float] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False

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

    def update(self, loss: float) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.4g}", refresh=False)

    def epoch(self, epoch: int, loss: float, val: float | None) -> None:
        if self.enabled and self.bar is None:
            extra = f"  validation {val:.5g}" if val is not None else ""
            print(f"epoch {epoch + 1}: loss {loss:.5g}{extra}", file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def fit(step: Any, data: Mapping[str, Any], epochs: int = 1, batch_size: int = 32,
        shuffle: bool = True, seed: int | None = None, progress: bool = True,
        callbacks: Sequence[Callable[[int, History], Any]] | None = None,
        validation: Mapping[str, Any] | None = None) -> History:
    """Train ``step`` (from :func:`compile_step`) over minibatches of ``data``.

    The data is reshuffled every epoch from a generator seeded by ``seed``; the last
    partial batch is kept. Ctrl-C stops cleanly between steps (``history.interrupted``).
    Each callback is called as ``callback(epoch, history)`` after every epoch.

    >>> history = sg.fit(step, {"X": images, "labels": digits}, epochs=5, batch_size=256)
    >>> history.plot("loss.png")
    """
    arrays, n = _check_data(data, "fit: data")
    if n == 0:
        raise ValueError("fit: data holds no samples (every array has length 0)")
    if validation is not None:
        _check_data(validation, "fit: validation")
    if not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"fit: epochs must be a non-negative int, got {epochs!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"fit: batch_size must be a positive int, got {batch_size!r}")
    rng = np.random.default_rng(seed)
    per_epoch = -(-n // batch_size)
    history = History()
    bar = _Progress(epochs * per_epoch, progress)
    start = time.perf_counter()
    try:
        for epoch in range(epochs):
            order = rng.permutation(n) if shuffle else np.arange(n)
            losses = []
            for lo in range(0, n, batch_size):
                take = order[lo:lo + batch_size]
                loss = step(**{k: a[take] for k, a in arrays.items()})
                losses.append(loss)
                history.step_loss.append(loss)
                bar.update(loss)
            history.epoch_loss.append(float(np.mean(losses)) if losses else float("nan"))
            val = step.evaluate(**validation) if validation is not None else None
            if val is not None:
                history.validation_loss.append(val)
            bar.epoch(epoch, history.epoch_loss[-1], val)
            for cb in callbacks or ():
                cb(epoch, history)
    except KeyboardInterrupt:
        history.interrupted = True  # the parameters are those of the last finished step
    finally:
        bar.close()
        history.seconds = time.perf_counter() - start
    return history
