"""The adapter of redis-py's asyncio clients (and of valkey-py's, its fork).

``redis.asyncio.Redis`` and ``redis.asyncio.RedisCluster`` run on asyncio only: on
any other event loop this adapter raises a TypeError that says to use coredis, at
construction when a loop is running, else at the first call. valkey-py keeps
redis-py's API under other names, so ``_valkey_py.py`` reuses this adapter.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, final

import anyio

from ._client import Arg, _on_asyncio, _require_asyncio


@final
class _RedisPy:
    __slots__ = (
        "_checked",
        "_client",
        "_codes",
        "_errors",
        "_scripts",
        "_unavailable",
        "can_pipeline",
        "can_wait",
        "cluster",
        "family",
    )

    def __init__(self, client: Any, family: str, errors: Any, cluster: bool) -> None:
        self._client = client
        self.family = family
        self.cluster = cluster
        # WAIT must run on the connection that wrote: a pipeline gives us one. A
        # cluster pipeline would route the keyless WAIT to some node: not offered.
        self.can_wait = not cluster
        # A cluster pipeline may split or reorder by node: the BLPOP and the script
        # must run on one connection, in order.
        self.can_pipeline = not cluster
        self._errors = errors  # the library's exceptions module
        self._scripts: dict[str, Any] = {}
        self._unavailable: tuple[type[BaseException], ...] = (
            errors.ConnectionError,
            errors.TimeoutError,
        )
        # The library turns these codes into classes and drops the code from the
        # message: put it back, so that the message quotes the server's words.
        self._codes: tuple[tuple[type[BaseException], str], ...] = tuple(
            (getattr(errors, cls), code)
            for cls, code in (
                ("NoPermissionError", "NOPERM"),
                ("ReadOnlyError", "READONLY"),
                ("OutOfMemoryError", "OOM"),
                ("NoScriptError", "NOSCRIPT"),
                ("AuthenticationError", "WRONGPASS"),
                ("AuthorizationError", "NOPERM"),
            )
            if hasattr(errors, cls)
        )
        self._checked = False
        if _on_asyncio() is not None:
            self._check()

    def _check(self) -> None:
        _require_asyncio(self.family)
        self._checked = True

    def _script(self, source: str) -> Any:
        found = self._scripts.get(source)
        if found is None:
            found = self._scripts[source] = self._client.register_script(source)
        return found

    async def script(
        self, source: str, keys: Sequence[str], args: Sequence[Arg] = ()
    ) -> Any:
        if not self._checked:
            self._check()
        return await self._script(source)(keys=list(keys), args=list(args))

    async def script_and_wait(
        self,
        source: str,
        keys: Sequence[str],
        args: Sequence[Arg],
        replicas: int,
        timeout_ms: int,
        aof: bool = False,
    ) -> tuple[Any, bool]:
        if not self._checked:
            self._check()
        # One pipeline is one connection: WAIT counts the script's writes.
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.eval(source, len(keys), *keys, *args)
            if aof:
                pipe.execute_command("WAITAOF", 1, replicas, timeout_ms)
            else:
                pipe.wait(replicas, timeout_ms)
            result, acknowledged = await pipe.execute()
        if aof:
            local, remote = (int(n) for n in acknowledged)
            return result, local >= 1 and remote >= replicas
        return result, int(acknowledged) >= replicas

    async def blpop(self, key: str, timeout_s: float) -> Any:
        if not self._checked:
            self._check()
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
        if not self._checked:
            self._check()
        # One pipeline is one connection: the server runs the script as soon as
        # the BLPOP returns, without another round trip.
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.blpop([key], timeout=timeout_s)
            pipe.eval(source, len(keys), *keys, *args)
            _, result = await pipe.execute()
        return result

    async def exists(self, key: str) -> int:
        if not self._checked:
            self._check()
        return int(await self._client.exists(key))

    async def set(self, key: str, value: str | bytes, px_ms: int | None) -> None:
        if not self._checked:
            self._check()
        await self._client.set(key, value, px=px_ms)

    async def delete(self, key: str) -> int:
        if not self._checked:
            self._check()
        return int(await self._client.delete(key))

    async def publish(self, channel: str, message: str) -> int:
        if not self._checked:
            self._check()
        # execute_command, not publish(): valkey-py's ValkeyCluster has no publish()
        # method, and it is what publish() sends on the others.
        return int(await self._client.execute_command("PUBLISH", channel, message))

    @asynccontextmanager
    async def subscribe(
        self, channel: str
    ) -> AsyncGenerator[AsyncIterator[tuple[str, Any]], None]:
        if not self._checked:
            self._check()
        if self.cluster:
            raise TypeError(
                f"a {self.family} cluster client offers no pub/sub here: listen "
                "with a coredis.RedisCluster, or a non-cluster client of any node"
            )
        current = [await self._open(channel)]
        try:
            yield self._messages(current, channel)
        finally:
            with anyio.CancelScope(shield=True):
                await current[0].aclose()

    async def _open(self, channel: str) -> Any:
        """A pub/sub object subscribed to ``channel``, once the server confirmed."""
        pubsub = self._client.pubsub()
        try:
            await pubsub.subscribe(channel)
            while True:
                message = await pubsub.get_message(timeout=None)
                if message is not None and _kind(message) == "subscribe":
                    return pubsub
        except BaseException:
            with anyio.CancelScope(shield=True):
                await pubsub.aclose()
            raise

    async def _messages(
        self, current: list[Any], channel: str
    ) -> AsyncIterator[tuple[str, Any]]:
        # Some versions reconnect inside get_message (and pass the new confirmation
        # on), some raise: then subscribe again here, backing off up to 2 s.
        while True:
            try:
                message = await current[0].get_message(timeout=None)
            except self._unavailable:
                with anyio.CancelScope(shield=True):
                    await current[0].aclose()
                delay = 0.1
                while True:
                    await anyio.sleep(delay)
                    try:
                        current[0] = await self._open(channel)
                        break
                    except self._unavailable:
                        delay = min(2 * delay, 2.0)
                yield "subscribe", None
                continue
            if message is None:
                continue
            kind = _kind(message)
            if kind in ("message", "subscribe"):
                yield kind, message["data"]

    def unavailable_errors(self) -> tuple[type[BaseException], ...]:
        return self._unavailable

    def refusal_words(self, exc: BaseException) -> str | None:
        text = str(exc)
        for cls, code in self._codes:
            if isinstance(exc, cls):
                return text if text.startswith(code) else f"{code} {text}"
        if isinstance(exc, self._errors.ResponseError):
            return text
        return None


def _kind(message: Any) -> str:
    kind = message["type"]
    return kind.decode() if isinstance(kind, bytes) else str(kind)


def _adapt_redis_py(client: object, package: str, family: str) -> _RedisPy:
    cluster_module = importlib.import_module(f"{package}.asyncio.cluster")
    errors = importlib.import_module(f"{package}.exceptions")
    cluster_classes = tuple(
        getattr(cluster_module, name)
        for name in ("RedisCluster", "ValkeyCluster")
        if hasattr(cluster_module, name)
    )
    return _RedisPy(client, family, errors, cluster=isinstance(client, cluster_classes))
