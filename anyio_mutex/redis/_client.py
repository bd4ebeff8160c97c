"""The client boundary: one small protocol every Redis primitive talks through.

Every primitive of ``anyio_mutex.redis`` (``RedisMutex``, ``RedisRefreshCache``, and
any later one) calls the server only through a :class:`_Client`, made once per object
at construction with ``_adapt(client)``. Nothing outside the adapter modules knows
which library the user's client comes from. The calls are:

- ``await c.script(source, keys, args)``: run a Lua script (EVALSHA, falling back to
  EVAL on NOSCRIPT, or the library's own script object). All keys of one call must
  share a cluster slot (hash-tag them: see ``_hash_tag``).
- ``await c.script_and_wait(source, keys, args, replicas, timeout_ms, aof)``: the
  same, then ``WAIT replicas timeout_ms`` (with ``aof``: ``WAITAOF 1 replicas
  timeout_ms``) *on the same connection* (both count the writes of their own
  connection only); returns ``(result, confirmed)``, where
  ``confirmed`` says whether ``replicas`` replicas acknowledged in time (and
  ``result`` may then be ``None``: the script's answer is not always known).
- ``await c.blpop(key, timeout_s)``: block until ``key`` has an element or the time
  runs out (the wake-up path); returns the popped element, or ``None`` if the time
  ran out.
- ``await c.blpop_then_script(key, timeout_s, source, keys, args)``: a BLPOP and a
  script pipelined on one connection (only where ``c.can_pipeline``): the server
  runs the script the moment the BLPOP returns (woken or timed out), and this
  returns the script's answer. A woken waiter's next try costs no round trip.
- ``await c.exists(key)``, ``await c.set(key, value, px_ms)``, ``await c.delete(key)``,
  ``await c.publish(channel, message)``.
- ``async with c.subscribe(channel) as messages:`` subscribes on a connection of its
  own, entering once the server confirmed; ``async for kind, data in messages``
  then gives ``("message", data)`` per message and ``("subscribe", ...)`` each time
  the subscription is established *again* (the library reconnected): messages sent
  while it was down are lost, and the caller is told so.
- ``c.family`` (``"coredis"``, ``"redis-py"``, ``"valkey-py"``), ``c.cluster``,
  ``c.can_wait`` (whether ``script_and_wait`` is supported) and ``c.can_pipeline``
  (whether ``blpop_then_script`` is).

Wrap each call in :func:`_call`, which gives it a deadline and turns the library's
errors into :class:`LockUnavailableError` (no answer) or :class:`LockRefusedError`
(the server said no, quoted in its own words), whatever the library.

A new primitive does, for example::

    self._client = _adapt(client)  # in __init__: TypeError for a foreign client
    granted = await _call(
        self._client, self.name, "acquire", timeout_s,
        lambda: self._client.script(_MY_SCRIPT, (key1, key2), (token, ms)),
    )

Script answers arrive as the library parses them: integers, and ``bytes`` (``str``
from a client made with ``decode_responses=True``); convert with ``int()`` and
decode where needed. A call the protocol lacks is added here and to every adapter.
Enter ``subscribe()`` outside any cancel scope that ends before it does (it runs the
library's own task group); see ``RedisRefreshCache.listen``.

Adapters live in ``_coredis.py`` (``coredis.Redis``, ``coredis.RedisCluster``, and so
a Sentinel-managed primary from ``coredis.sentinel.Sentinel.primary_for()``),
``_redis_py.py`` (``redis.asyncio.Redis`` and ``redis.asyncio.RedisCluster``) and
``_valkey_py.py`` (``valkey.asyncio.Valkey`` and ``valkey.asyncio.ValkeyCluster``);
each imports its library only when the user's client comes from it. redis-py and
valkey-py run on asyncio only: under any other backend their adapter raises a
:class:`TypeError` that says to use coredis, at construction when an event loop is
running, else at the first call.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, TypeVar

import anyio

from ._errors import LockRefusedError, LockUnavailableError

T = TypeVar("T")

Arg = str | bytes | int | float

INSTALL = (
    "pip install 'anyio_mutex[redis]' (coredis, asyncio and trio), "
    "'anyio_mutex[redis-py]' or 'anyio_mutex[valkey-py]' (asyncio only)"
)


class _Client(Protocol):
    """What a Redis primitive may ask of a client (see the module docstring)."""

    family: str
    cluster: bool
    can_wait: bool
    can_pipeline: bool

    async def script(
        self, source: str, keys: Sequence[str], args: Sequence[Arg] = ()
    ) -> Any: ...

    async def script_and_wait(
        self,
        source: str,
        keys: Sequence[str],
        args: Sequence[Arg],
        replicas: int,
        timeout_ms: int,
        aof: bool = False,
    ) -> tuple[Any, bool]: ...

    async def blpop(self, key: str, timeout_s: float) -> Any: ...

    async def blpop_then_script(
        self,
        key: str,
        timeout_s: float,
        source: str,
        keys: Sequence[str],
        args: Sequence[Arg],
    ) -> Any: ...

    async def exists(self, key: str) -> int: ...

    async def set(self, key: str, value: str | bytes, px_ms: int | None) -> None: ...

    async def delete(self, key: str) -> int: ...

    async def publish(self, channel: str, message: str) -> int: ...

    def subscribe(
        self, channel: str
    ) -> AbstractAsyncContextManager[AsyncIterator[tuple[str, Any]]]: ...

    def unavailable_errors(self) -> tuple[type[BaseException], ...]:
        """The library's "no answer" errors (connection lost, its own timeout)."""
        ...

    def refusal_words(self, exc: BaseException) -> str | None:
        """The server's words if ``exc`` is a refusal from the server, else None."""
        ...


def _on_asyncio() -> bool | None:
    """Whether the running event loop is asyncio's; ``None`` outside any loop."""
    try:
        cancelled = anyio.get_cancelled_exc_class()
    except RuntimeError:  # anyio's NoEventLoopError: no loop in this thread
        return None
    return cancelled.__module__.partition(".")[0] == "asyncio"


def _require_asyncio(family: str) -> None:
    """Raise the clear error when an asyncio-only client is used off asyncio."""
    if _on_asyncio() is False:
        raise TypeError(
            f"a {family} client runs on asyncio only, and this event loop is not "
            "asyncio's: pass a coredis client instead (coredis.Redis or "
            "coredis.RedisCluster, pip install 'anyio_mutex[redis]'), which runs on "
            "asyncio and trio"
        )


def _hash_tag(text: str) -> str:
    """A cluster hash tag for ``text`` that keeps every key made from it in one slot.

    Redis hashes only what lies between the first ``{`` and the next ``}``. A name
    holding ``}`` would end the tag early (and one starting with ``}`` would leave it
    empty, so that the whole key is hashed: different keys, different slots). Braces
    are therefore escaped (``\\`` -> ``\\\\``, ``}`` -> ``\\]``), which keeps distinct
    names distinct and the tag whole.
    """
    if "}" in text or "\\" in text:
        text = text.replace("\\", "\\\\").replace("}", "\\]")
    return "{" + text + "}"


async def _call(
    client: _Client,
    name: str,
    what: str,
    timeout_s: float,
    request: Callable[[], Awaitable[T]],
) -> T:
    """One Redis round trip with its own deadline; client failures become ours."""
    try:
        with anyio.fail_after(timeout_s):
            return await request()
    except TimeoutError as exc:
        raise LockUnavailableError(
            name, f"{what} got no answer within {timeout_s * 1000:.0f} ms"
        ) from exc
    except Exception as exc:
        ours = _our_error(client, name, what, exc)
        if ours is None:
            raise
        raise ours from exc


def _our_error(
    client: _Client, name: str, what: str, exc: Exception
) -> LockUnavailableError | None:
    """The error of ours that the library's ``exc`` means, or None if none."""
    if isinstance(exc, OSError):
        return LockUnavailableError(name, f"{what} failed: {exc}")
    words = client.refusal_words(exc)
    if words is not None:
        # A refusal (OOM, NOPERM, READONLY, ...): keep the server's words.
        return LockRefusedError(name, f"the server refused {what}: {words}")
    if isinstance(exc, client.unavailable_errors()):
        return LockUnavailableError(name, f"{what} failed: {exc}")
    return None


def _adapt(client: object) -> _Client:
    """Wrap the user's client in the adapter of its library, or a one-line TypeError."""
    module = type(client).__module__.partition(".")[0]
    if module == "coredis" or _is_instance(
        client, "coredis", ("Redis", "RedisCluster")
    ):
        from ._coredis import _adapt_coredis

        adapted = _adapt_coredis(client)
        if adapted is not None:
            return adapted
    if _is_instance(client, "redis.asyncio", ("Redis", "RedisCluster")):
        from ._redis_py import _adapt_redis_py

        return _adapt_redis_py(client, "redis", "redis-py")
    if _is_instance(client, "valkey.asyncio", ("Valkey", "ValkeyCluster")):
        from ._valkey_py import _adapt_valkey_py

        return _adapt_valkey_py(client)
    if _is_instance(client, "redis", ("Redis", "RedisCluster")) or _is_instance(
        client, "valkey", ("Valkey", "ValkeyCluster")
    ):
        raise TypeError(
            f"client must be an async client, got the blocking "
            f"{type(client).__module__}.{type(client).__qualname__}: use "
            "redis.asyncio.Redis / valkey.asyncio.Valkey, or coredis.Redis"
        )
    kind = type(client)
    loaded = any(sys.modules.get(m) for m in ("coredis", "redis", "valkey"))
    raise TypeError(
        f"client must be a coredis.Redis (or RedisCluster; on asyncio also "
        f"redis.asyncio.Redis, valkey.asyncio.Valkey), got a "
        f"{kind.__module__}.{kind.__qualname__}; make one with "
        "coredis.Redis.from_url(url)" + ("" if loaded else f"; {INSTALL}")
    )


def _is_instance(client: object, module: str, names: tuple[str, ...]) -> bool:
    # Only a library the process already imported can have made this client.
    found = sys.modules.get(module)
    if found is None:
        return False
    classes = tuple(getattr(found, n) for n in names if hasattr(found, n))
    return bool(classes) and isinstance(client, classes)
