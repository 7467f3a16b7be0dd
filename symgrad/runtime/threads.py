"""How many threads a compiled pass over the batch may use."""

from __future__ import annotations

import os

_num_threads = max(1, os.cpu_count() or 1)


def set_num_threads(n: int) -> None:
    """How many threads a pass over the batch may use (default: every core). Results are
    reproducible for a given thread count.

    >>> sg.set_num_threads(1)
    """
    global _num_threads
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads: expected a positive int, got {n!r}")
    _num_threads = n


def get_num_threads() -> int:
    """The thread count set by :func:`set_num_threads`."""
    return _num_threads
