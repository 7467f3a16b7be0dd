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
_get_ident = threading.get_ident
_getsignal, _setsignal = _signal.getsignal, _signal.signal
# While a block holds them: the handlers it replaced, and the signals that arrived. One
# set for the process: only the main thread holds signals, and nested blocks hold them once.
_previous: dict[int, object] = {}
_pending: list[tuple[int, object]] = []


def _hold(signum: int, frame: object) -> None:
    _pending.append((signum, frame))


class deferred_signals:  # noqa: N801 - used like a function: ``with deferred_signals():``
    """Hold SIGINT/SIGTERM inside the block; the first one that arrived is delivered (its
    handler called) when the block ends. Outside the main thread signals cannot arrive
    there, so nothing is changed. Nested blocks hold them once."""

    __slots__ = ("held",)

    def __enter__(self) -> deferred_signals:
        global _depth
        # (get_ident and main_thread().ident: a third of current_thread()'s cost)
        self.held = _get_ident() == threading.main_thread().ident
        if not self.held:
            return self
        _depth += 1
        if _depth > 1:
            return self
        _previous.clear()
        _pending.clear()
        for sig in _SIGNALS:
            handler = _getsignal(sig)
            if callable(handler):  # only Python-level handlers can tear a commit
                _previous[sig] = handler
                _setsignal(sig, _hold)
        return self

    def __exit__(self, *exc: object) -> None:
        global _depth
        if not self.held:
            return
        _depth -= 1
        if _depth:
            return
        previous = dict(_previous)
        _previous.clear()
        for sig, handler in previous.items():
            _setsignal(sig, handler)
        if previous and _pending:
            signum, frame = _pending[0]
            _pending.clear()
            previous[signum](signum, frame)  # e.g. raises KeyboardInterrupt, now
