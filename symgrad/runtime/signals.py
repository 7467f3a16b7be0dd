"""All-or-nothing commits: Ctrl-C waits until a step has written every new value.

Python runs a signal handler between two bytecodes of the main thread, so a
``KeyboardInterrupt`` can land between writing one parameter and the next, leaving the
model half a step ahead. While a commit runs, :func:`deferred_signals` holds SIGINT (and
SIGTERM where Python handles it) and delivers it right after the commit, which is short
(a few copies), so Ctrl-C still stops training at once.
"""

from __future__ import annotations

import _signal  # the C functions behind ``signal`` (no enum conversions: ~1 us, not ~12)
import signal
import threading

_SIGNALS = tuple(int(s) for s in (signal.SIGINT, getattr(signal, "SIGTERM", None))
                 if s is not None)
_depth = 0


class deferred_signals:  # noqa: N801 - used like a function: ``with deferred_signals():``
    """Hold SIGINT/SIGTERM inside the block; the first one that arrived is delivered (its
    handler called) when the block ends. Outside the main thread signals cannot arrive
    there, so nothing is changed. Nested blocks hold them once."""

    __slots__ = ("pending", "previous")

    def __enter__(self) -> deferred_signals:
        global _depth
        self.previous: dict[int, object] = {}
        if threading.current_thread() is not threading.main_thread():
            return self
        _depth += 1
        if _depth > 1:
            return self
        self.pending: list[tuple[int, object]] = []
        hold = lambda signum, frame: self.pending.append((signum, frame))
        for sig in _SIGNALS:
            handler = _signal.getsignal(sig)
            if callable(handler):  # only Python-level handlers can tear a commit
                self.previous[sig] = handler
                _signal.signal(sig, hold)
        return self

    def __exit__(self, *exc: object) -> None:
        global _depth
        if threading.current_thread() is not threading.main_thread():
            return
        _depth -= 1
        if _depth:
            return
        for sig, handler in self.previous.items():
            _signal.signal(sig, handler)
        if self.previous and self.pending:
            signum, frame = self.pending[0]
            self.previous[signum](signum, frame)  # e.g. raises KeyboardInterrupt, now
