"""Client families (issue 9): an asyncio-only client under trio fails clearly.

The behaviour of every family is covered by the mutex and cache tests, which run
over all of them (``over_clients`` in tests/_redis_server.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest
import redis.asyncio
import valkey.asyncio

from anyio_mutex.redis import RedisMutex, RedisRefreshCache, RedisSemaphore

from ._redis_server import RedisServer, server_fixture, unique

server = server_fixture()

TRIO_ONLY = [pytest.param(("trio", {}), id="trio")]

#: Every Redis primitive, made from a client as a user would.
MAKERS: dict[str, Callable[[Any], object]] = {
    "RedisMutex": lambda client: RedisMutex(client, unique("trio")),
    "RedisRefreshCache": lambda client: RedisRefreshCache(client),
    "RedisSemaphore": lambda client: RedisSemaphore(client, unique("trio"), limit=2),
}


def asyncio_only_clients(port: int) -> list[Any]:
    return [
        redis.asyncio.Redis(host="127.0.0.1", port=port),
        valkey.asyncio.Valkey(host="127.0.0.1", port=port),
    ]


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", TRIO_ONLY)
@pytest.mark.parametrize("make", list(MAKERS.values()), ids=list(MAKERS))
async def test_asyncio_only_client_under_trio_fails_at_construction(
    server: RedisServer, make: Callable[[Any], object]
) -> None:
    for client in asyncio_only_clients(server.port):
        with pytest.raises(TypeError) as exc_info:
            make(client)
        message = str(exc_info.value)
        assert "runs on asyncio only" in message
        assert "coredis.Redis" in message
        assert "pip install 'anyio_mutex[redis]'" in message


def test_asyncio_only_client_made_outside_a_loop_fails_at_first_use(
    server: RedisServer,
) -> None:
    # No event loop at construction: the backend is not known yet, so the check
    # runs at the first call instead, before anything is sent.
    client = redis.asyncio.Redis(host="127.0.0.1", port=server.port)
    mutex = RedisMutex(client, unique("later"))

    async def use() -> None:
        with anyio.fail_after(5):
            await mutex.acquire()

    with pytest.raises(TypeError, match="runs on asyncio only"):
        anyio.run(use, backend="trio")
    assert server.command("KEYS", "*later*") == b"*0\r\n"  # nothing was sent


def test_wait_replicas_is_checked_at_the_door(server: RedisServer) -> None:
    # Outside any event loop: validation does not depend on the backend.
    client = redis.asyncio.Redis(host="127.0.0.1", port=server.port)
    with pytest.raises(TypeError, match=r"wait_replicas must be an int, got 1\.0"):
        RedisMutex(client, "x", wait_replicas=1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="wait_replicas must be >= 0, got -1"):
        RedisMutex(client, "x", wait_replicas=-1)
    with pytest.raises(ValueError, match="wait_timeout_ms must be > 0, got 0"):
        RedisMutex(client, "x", wait_replicas=1, wait_timeout_ms=0)
    with pytest.raises(ValueError, match="wait_timeout_ms must be finite"):
        RedisMutex(client, "x", wait_replicas=1, wait_timeout_ms=float("inf"))
    with pytest.raises(TypeError, match="wait_aof must be a bool, got 1"):
        RedisMutex(client, "x", wait_aof=1)  # type: ignore[arg-type]
    cluster = redis.asyncio.RedisCluster(host="127.0.0.1", port=server.port)
    with pytest.raises(ValueError, match=r"use coredis\.RedisCluster"):
        RedisMutex(cluster, "x", wait_replicas=1)
    RedisMutex(cluster, "x")  # without wait_replicas: fine


def test_hash_tag_keeps_names_whole_and_distinct() -> None:
    # Redis hashes what lies between the first "{" and the next "}": a name's "}"
    # must not end the tag early (issue 9), and distinct names keep distinct tags.
    from anyio_mutex.redis._client import _hash_tag

    names = ["plain", "}lead", "a}b", "a\\]b", "a\\", "a\\\\", "{x}", "}", "\\"]
    tags = [_hash_tag(name) for name in names]
    assert len(set(tags)) == len(names), tags
    for tag in tags:
        assert tag.startswith("{")
        assert tag.endswith("}")
        assert "}" not in tag[1:-1], tag  # the tag ends where we put its brace
    assert _hash_tag("plain") == "{plain}"  # names without braces: keys unchanged
