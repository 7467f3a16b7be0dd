"""Running graphs: backends behind ``sg.function`` (and, later, compiled steps)."""

from symgrad.runtime.function import Function, function

__all__ = ["Function", "function"]
