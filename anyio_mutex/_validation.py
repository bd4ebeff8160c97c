"""Argument checks shared by every primitive: raise before any state changes."""

from __future__ import annotations

import math
from typing import Any

_NUMBER_TYPES = (int, float)


def _is_number(value: object) -> bool:
    return type(value) is not bool and isinstance(value, (int, float))


def check_timeout_ms(timeout_ms: object, name: str = "timeout_ms") -> float | None:
    """Return the timeout in seconds (``None``: forever), or raise naming the value.

    An int too large for a float (``10**400``) waits forever, as ``math.inf`` does;
    ``-0.0`` is zero.
    """
    if timeout_ms is None:
        return None
    if type(timeout_ms) in _NUMBER_TYPES and 0 <= timeout_ms < 1e300:  # type: ignore[operator]  # pyright: ignore[reportOperatorIssue]
        return timeout_ms / 1000  # type: ignore[operator]  # pyright: ignore  # the common case
    if not _is_number(timeout_ms):
        raise TypeError(
            f"{name} must be a number of milliseconds or None, got {timeout_ms!r}"
        )
    if timeout_ms != timeout_ms or timeout_ms < 0:  # type: ignore[operator]  # pyright: ignore[reportOperatorIssue]  # NaN
        raise ValueError(
            f"{name} must be >= 0 (or None to wait forever), got {timeout_ms!r}"
        )
    # Beyond 1e300 ms (ints of any size, inf): longer than any clock can count.
    return None


def check_label(label: object, name: str = "label", *, optional: bool = True) -> None:
    """Raise ``TypeError`` unless ``label`` is a string (or ``None`` if optional)."""
    if isinstance(label, str) or (label is None and optional):
        return
    allowed = "a str or None" if optional else "a str"
    raise TypeError(f"{name} must be {allowed}, got {label!r}")


def check_hashable(value: object, name: str = "key") -> None:
    """Raise ``TypeError`` naming ``value`` unless it can be hashed (a dict key).

    Callers on a hot path call it only once a dict lookup has raised ``TypeError``:
    if hashing works, the error came from elsewhere (a key's ``__eq__``) and the
    caller re-raises it.
    """
    try:
        hash(value)
    except TypeError as exc:
        raise TypeError(
            f"{name} must be hashable, got {short_repr(value)}: {exc}"
        ) from exc


def short_repr(value: object) -> str:
    """``repr(value)`` for an error message: abbreviated, and never raising."""
    import reprlib  # only on this error path

    try:
        return reprlib.repr(value)
    except Exception:  # a __repr__ that fails must not replace the error we report
        return f"<{type(value).__qualname__} object>"


def check_bool(value: object, name: str) -> None:
    """Raise ``TypeError`` unless ``value`` is ``True`` or ``False``."""
    if type(value) is not bool:
        raise TypeError(f"{name} must be a bool, got {value!r}")


def check_callable(fn: Any, name: str) -> None:
    """Raise ``TypeError`` unless ``fn`` can be called."""
    if not callable(fn):
        raise TypeError(f"{name} must be callable, got {fn!r}")


def check_seconds(
    value: object,
    name: str,
    *,
    allow_none: bool = False,
    allow_zero: bool = True,
    unit: str = "seconds",
) -> float | None:
    """Validate a duration: a number >= 0 (or > 0), not NaN, in ``unit``.

    Returns it as a float in the same unit; an int too large for a float becomes
    ``math.inf``, and ``-0.0`` becomes ``0.0``. Messages name ``unit``, so a
    parameter in milliseconds passes ``unit="milliseconds"``.
    """
    if value is None and allow_none:
        return None
    if not _is_number(value):
        raise TypeError(f"{name} must be a number of {unit}, got {value!r}")
    # value != value: NaN (math.isnan would overflow on a huge int)
    if value != value or value < 0 or (value == 0 and not allow_zero):  # type: ignore[operator]  # pyright: ignore[reportOperatorIssue]
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    try:
        return float(value) + 0.0  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]  # -0.0 -> 0.0
    except OverflowError:  # an int beyond any float
        return math.inf
