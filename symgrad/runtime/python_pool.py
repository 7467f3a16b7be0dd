"""The pool of ``native_pool`` on a ThreadPoolExecutor (a Python round trip per slice): where
the native pool is not available (not Linux on x86-64), and to compare against."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any, Callable, Sequence

from symgrad.runtime.native_pool import (
    KERNEL_TYPE,
    STACK_BYTES,
    _stack_lock,
    default_initializer,
)


class PythonPool:
    """The same ``run`` on a ThreadPoolExecutor (a Python round trip per slice): where the
    native pool is not available, and to compare against."""

    def __init__(self, threads: int, initializer: Callable[[], Any] | None =
                 default_initializer):
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"PythonPool: threads must be a positive int, got {threads!r}")
        self.threads = threads
        self._lock = threading.Lock()
        self._kernels: dict[int, Any] = {}
        with _stack_lock:
            before = threading.stack_size(STACK_BYTES)
            try:
                self._pool = ThreadPoolExecutor(max(1, threads - 1), "symgrad-pypool",
                                                initializer=initializer)
                started = threading.Barrier(max(1, threads - 1))
                wait([self._pool.submit(started.wait) for _ in range(max(1, threads - 1))])
            finally:
                threading.stack_size(before)

    def run(self, kernel: int, tables: Sequence[int], dims: int, bounds: Sequence[int],
            blocking: bool = True) -> bool:
        """As ``NativePool.run``."""
        n = len(tables)
        if not 1 <= n <= self.threads or len(bounds) != n + 1:
            raise ValueError(f"PythonPool.run: expected 1 to {self.threads} tables and one "
                             f"bound more, got {n} tables and {len(bounds)} bounds")
        fn = self._kernels.get(kernel)
        if fn is None:
            fn = self._kernels[kernel] = KERNEL_TYPE(kernel)
        if not self._lock.acquire(blocking):
            return False
        try:
            futures = [self._pool.submit(fn, tables[t], dims, bounds[t], bounds[t + 1])
                       for t in range(1, n)]
            try:
                fn(tables[0], dims, bounds[0], bounds[1])
            finally:
                wait(futures)
            for f in futures:
                f.result()
        finally:
            self._lock.release()
        return True

    run_address = 0  # no native pool_run: a compiled entry runs its passes on one thread

    def hold(self) -> int:
        """As ``NativePool.hold``; always 0 (no native context)."""
        return 0

    def release(self) -> None:
        """As ``NativePool.release`` (never called: ``hold`` gives 0)."""

    def close(self) -> None:
        """Stop the threads (after the run in flight)."""
        with self._lock:
            self._pool.shutdown(wait=True)

    def __enter__(self) -> PythonPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
