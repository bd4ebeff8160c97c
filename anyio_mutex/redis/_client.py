"""The client boundary: the coredis import and one bounded round trip."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio


def _ensure_coredis() -> None:
    # Exercised in a subprocess by tests/test_api.py.
    try:
        import coredis  # noqa: F401
    except ImportError as exc:  # pragma: no cover
        raise ImportError(
            "anyio_mutex.redis needs coredis: pip install 'anyio_mutex[redis]'"
        ) from exc


_ensure_coredis()

import coredis.exceptions  # noqa: E402

from ._errors import LockRefusedError, LockUnavailableError  # noqa: E402

T = TypeVar("T")

# coredis turns these error codes into exception classes and drops the code from the
# message; put it back, so that the message quotes the server's words.
_ERROR_CODES: tuple[tuple[type[Exception], str], ...] = (
    (coredis.exceptions.AuthorizationError, "NOPERM"),
    (coredis.exceptions.ReadOnlyError, "READONLY"),
    (coredis.exceptions.AuthenticationRequiredError, "NOAUTH"),
    (coredis.exceptions.AuthenticationFailureError, "WRONGPASS"),
    (coredis.exceptions.WrongTypeError, "WRONGTYPE"),
    (coredis.exceptions.NoScriptError, "NOSCRIPT"),
)


def _server_words(exc: Exception) -> str:
    text = str(exc)
    for cls, code in _ERROR_CODES:
        if isinstance(exc, cls) and not text.startswith(code):
            return f"{code} {text}"
    return text


async def _call(
    name: str, what: str, timeout_s: float, request: Callable[[], Awaitable[T]]
) -> T:
    """One Redis round trip with its own deadline; client failures become ours."""
    try:
        with anyio.fail_after(timeout_s):
            return await request()
    except TimeoutError as exc:
        raise LockUnavailableError(
            name, f"{what} got no answer within {timeout_s * 1000:.0f} ms"
        ) from exc
    except (coredis.exceptions.ConnectionError, OSError) as exc:
        raise LockUnavailableError(name, f"{what} failed: {exc}") from exc
    except coredis.exceptions.RedisError as exc:
        # A refusal (OOM, NOPERM, READONLY, ...): keep the server's words.
        raise LockRefusedError(
            name, f"the server refused {what}: {_server_words(exc)}"
        ) from exc


def _check_client(client: object) -> coredis.Redis[Any]:
    """Return ``client`` if it is a ``coredis.Redis``, else a one-line TypeError."""
    if not isinstance(client, coredis.Redis):
        kind = type(client)
        raise TypeError(
            f"client must be a coredis.Redis (anyio_mutex.redis runs on coredis), "
            f"got a {kind.__module__}.{kind.__qualname__}; make one with "
            "coredis.Redis(host=..., port=...) or coredis.Redis.from_url(url)"
        )
    return client
