"""Argument checks of the Redis layer (durations here are in milliseconds)."""

from __future__ import annotations

import math


def _check_ms(value: object, name: str, *, allow_none: bool = False) -> float | None:
    """Validate a positive duration in milliseconds, naming the parameter."""
    if value is None and allow_none:
        return None
    if type(value) is bool or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of milliseconds, got {value!r}")
    if math.isnan(value) or value <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return float(value)


def _check_lease_ms(lease_ms: object) -> float:
    lease = _check_ms(lease_ms, "lease_ms")
    assert lease is not None
    if lease < 1 or lease == math.inf:
        raise ValueError(f"lease_ms must be a finite number >= 1, got {lease_ms!r}")
    return lease
