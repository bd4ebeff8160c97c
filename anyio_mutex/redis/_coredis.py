"""The adapter of coredis clients: ``coredis.Redis`` and ``coredis.RedisCluster``.

coredis is built on anyio, so this adapter runs on asyncio and trio. A client for a
Sentinel-managed primary (``Sentinel.primary_for(name)``) is a ``coredis.Redis``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, final

import coredis
import coredis.exceptions

from ._client import Arg

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
_UNAVAILABLE: tuple[type[BaseException], ...] = (coredis.exceptions.ConnectionError,)


@final
class _Coredis:
    __slots__ = ("_client", "_scripts", "can_pipeline", "can_wait", "cluster", "family")

    def __init__(self, client: Any, cluster: bool) -> None:
        self._client = client
        self.family = "coredis"
        self.cluster = cluster
        self.can_wait = True
        # A cluster pipeline sends the commands of one slot to its node on one
        # connection, in order: the BLPOP and the try behind it stay together.
        self.can_pipeline = True
        self._scripts: dict[str, Any] = {}

    def _script(self, source: str) -> Any:
        found = self._scripts.get(source)
        if found is None:
            found = self._scripts[source] = self._client.register_script(source)
        return found

    async def script(
        self, source: str, keys: Sequence[str], args: Sequence[Arg] = ()
    ) -> Any:
        # EVALSHA, and on NOSCRIPT (a restarted or flushed server) load and run it
        # again: what a registered Script does, without its two wrapping requests
        # per call (about a tenth of a round trip's client time here).
        sha = self._script(source).sha
        try:
            return await self._client.evalsha(sha, keys=keys, args=args)
        except coredis.exceptions.NoScriptError:
            await self._client.script_load(source)
            return await self._client.evalsha(sha, keys=keys, args=args)

    async def script_and_wait(
        self,
        source: str,
        keys: Sequence[str],
        args: Sequence[Arg],
        replicas: int,
        timeout_ms: int,
        aof: bool = False,
    ) -> tuple[Any, bool]:
        # coredis sends WAIT (WAITAOF) on the connection that ran the command, and
        # raises ReplicationError (PersistenceError) when fewer acknowledged.
        waiting = (
            self._client.ensure_persistence(1, replicas, timeout_ms)
            if aof
            else self._client.ensure_replication(replicas, timeout_ms)
        )
        try:
            with waiting:
                result = await self._script(source)(keys=keys, args=args)
        except (
            coredis.exceptions.ReplicationError,
            coredis.exceptions.PersistenceError,
        ):
            return None, False
        return result, True

    async def blpop(self, key: str, timeout_s: float) -> Any:
        reply = await self._client.blpop([key], timeout=timeout_s)
        return None if reply is None else reply[1]

    async def blpop_then_script(
        self,
        key: str,
        timeout_s: float,
        source: str,
        keys: Sequence[str],
        args: Sequence[Arg],
    ) -> Any:
        # One pipeline is one connection of its own until it ends: the server runs
        # the script as soon as the BLPOP returns, without another round trip.
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.blpop([key], timeout=timeout_s)
            pipe.eval(source, keys=keys, args=args)
        return pipe.results[1]

    async def exists(self, key: str) -> int:
        return int(await self._client.exists([key]))

    async def set(self, key: str, value: str | bytes, px_ms: int | None) -> None:
        await self._client.set(key, value, px=px_ms)

    async def delete(self, key: str) -> int:
        return int(await self._client.delete([key]))

    async def publish(self, channel: str, message: str) -> int:
        return int(await self._client.publish(channel, message))

    @asynccontextmanager
    async def subscribe(
        self, channel: str
    ) -> AsyncGenerator[AsyncIterator[tuple[str, Any]], None]:
        # coredis reconnects and subscribes again on its own (its retry policy),
        # with a "subscribe" message each time.
        async with self._client.pubsub(channels=[channel]) as pubsub:
            yield _messages(pubsub)

    def unavailable_errors(self) -> tuple[type[BaseException], ...]:
        return _UNAVAILABLE

    def refusal_words(self, exc: BaseException) -> str | None:
        if not isinstance(exc, coredis.exceptions.RedisError) or isinstance(
            exc, _UNAVAILABLE
        ):
            return None
        text = str(exc)
        for cls, code in _ERROR_CODES:
            if isinstance(exc, cls) and not text.startswith(code):
                return f"{code} {text}"
        return text


async def _messages(pubsub: Any) -> AsyncIterator[tuple[str, Any]]:
    confirmed = False  # the first confirmation is the one we entered with
    while True:
        # Not ``async for``: its iteration ends while the connection is down, but
        # coredis reconnects and subscribes again behind get_message().
        message = await pubsub.get_message(timeout=None)
        if message is None:
            continue
        kind = message["type"]
        kind = kind.decode() if isinstance(kind, bytes) else kind
        if kind == "subscribe" and not confirmed:
            confirmed = True
        elif kind in ("message", "subscribe"):
            yield kind, message["data"]


def _adapt_coredis(client: object) -> _Coredis | None:
    if isinstance(client, coredis.Redis):
        return _Coredis(client, cluster=False)
    if isinstance(client, coredis.RedisCluster):
        return _Coredis(client, cluster=True)
    return None
