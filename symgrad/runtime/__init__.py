"""Running graphs: backends behind ``sg.function`` (and, later, compiled steps)."""

from symgrad.runtime.function import Function, function
from symgrad.runtime.threads import get_num_threads, set_num_threads

__all__ = ["Function", "function", "set_num_threads", "get_num_threads"]
