"""Argument checks shared by every primitive: raise before any state changes."""

from __future__ import annotations

import math
from typing import Any

_NUMBER_TYPES = (int, float)


def check_timeout_ms(timeout_ms: object, name: str = "timeout_ms") -> float | None:
    """Return the timeout in seconds (``None``: forever), or raise naming the value."""
    if timeout_ms is None:
        return None
    if type(timeout_ms) in _NUMBER_TYPES and 0 <= timeout_ms < math.inf:  # type: ignore[operator]
        return timeout_ms / 1000  # type: ignore[operator]  # the common case
    if type(timeout_ms) is bool or not isinstance(timeout_ms, (int, float)):
        raise TypeError(
            f"{name} must be a number of milliseconds or None, got {timeout_ms!r}"
        )
    if math.isnan(timeout_ms) or timeout_ms < 0:
        raise ValueError(
            f"{name} must be >= 0 (or None to wait forever), got {timeout_ms!r}"
        )
    if timeout_ms == math.inf:
        return None
    return timeout_ms / 1000


def check_label(label: object, name: str = "label") -> None:
    """Raise ``TypeError`` unless ``label`` is a string or ``None``."""
    if label is not None and not isinstance(label, str):
        raise TypeError(f"{name} must be a str or None, got {label!r}")


def check_callable(fn: Any, name: str) -> None:
    """Raise ``TypeError`` unless ``fn`` can be called."""
    if not callable(fn):
        raise TypeError(f"{name} must be callable, got {fn!r}")


def check_seconds(
    value: object, name: str, *, allow_none: bool = False, allow_zero: bool = True
) -> float | None:
    """Validate a duration in seconds: a finite-or-infinite number, not NaN, >= 0."""
    if value is None and allow_none:
        return None
    if type(value) is bool or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {value!r}")
    if math.isnan(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    return float(value)
