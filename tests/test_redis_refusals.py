"""Foreign values in the lock key, server refusals, and the key prefix for ACLs.

Regression tests for issue 8, defects 10 and 11: owner() and the timeout path of
acquire() crashed (IndexError, UnicodeDecodeError) on a value not in our format;
OOM, NOPERM and READONLY escaped as raw coredis errors; and every key started with
"{", so an ACL pattern such as ~app:* could never cover a lock.
"""

from __future__ import annotations

import anyio
import pytest

from anyio_mutex import MutexTimeoutError
from anyio_mutex.redis import (
    LockLostError,
    LockRefusedError,
    LockUnavailableError,
    RedisMutex,
)

from ._redis_server import (
    RedisServer,
    connect,
    free_port,
    server_fixture,
    start_server,
    unique,
)

# heavy: asyncio and trio; coredis on uvloop is tests/test_redis_adapters.py's.
pytestmark = [pytest.mark.anyio, pytest.mark.heavy]

server = server_fixture()


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (b"\xff\xfe binary", "(not an anyio_mutex lock: '\ufffd\ufffd binary')"),
        (b"no-colons", "(not an anyio_mutex lock: 'no-colons')"),
        (b"a:b", "(not an anyio_mutex lock: 'a:b')"),
        (b"x" * 100, "(not an anyio_mutex lock: '" + "x" * 57 + "...')"),
        (None, "(not an anyio_mutex lock: a list value)"),
    ],
)
async def test_foreign_value_is_reported_not_crashed_on(
    server: RedisServer, value: bytes | None, shown: str
) -> None:
    name = unique("foreign")
    key = "{" + name + "}:lock"
    async with connect(server) as client:
        if value is None:
            await client.rpush(key, ["someone", "else"])
        else:
            await client.set(key, value)
        mutex = RedisMutex(client, name, poll_ms=20)
        assert await mutex.owner() == shown
        assert await mutex.locked()
        with anyio.fail_after(5), pytest.raises(MutexTimeoutError) as exc_info:
            await mutex.acquire(timeout_ms=50)
        assert exc_info.value.owner == shown
        await client.delete([key])
        lease = await mutex.acquire(timeout_ms=0)  # and the lock works after it
        await lease.release()


async def test_release_after_a_foreign_takeover_is_lost_and_leaves_it(
    server: RedisServer,
) -> None:
    name = unique("took")
    key = "{" + name + "}:lock"
    async with connect(server) as client:
        lease = await RedisMutex(client, name).acquire()
        await client.delete([key])
        await client.rpush(key, ["not", "a", "string"])
        with pytest.raises(LockLostError):
            await lease.release()
        assert await client.type(key) in (b"list", "list")


async def test_no_replicas_refusal_keeps_the_servers_words(
    server: RedisServer,
) -> None:
    async with connect(server) as client:
        mutex = RedisMutex(client, unique("ro"))
        await client.config_set({"min-replicas-to-write": "1"})  # NOREPLICAS
        try:
            with pytest.raises(LockRefusedError) as exc_info:
                await mutex.acquire(timeout_ms=0)
        finally:
            await client.config_set({"min-replicas-to-write": "0"})
        assert isinstance(exc_info.value, LockUnavailableError)
        assert "NOREPLICAS" in str(exc_info.value)
        assert exc_info.value.__cause__ is not None
        assert not await mutex.locked()
        assert mutex.statistics().tasks_waiting == 0


async def test_read_only_refusal_keeps_the_servers_words() -> None:
    replica = start_server()  # this test turns its own server into a replica
    try:
        async with connect(replica) as client:
            mutex = RedisMutex(client, unique("readonly"))
            await client.ping()
            # A replica of a primary that does not exist: reads work, writes refused.
            replica.command("REPLICAOF", "127.0.0.1", str(free_port()))
            with pytest.raises(LockRefusedError, match="READONLY"):
                await mutex.acquire(timeout_ms=0)
            assert not await mutex.locked()
    finally:
        replica.stop()


async def test_out_of_memory_refusal_is_ours(server: RedisServer) -> None:
    async with connect(server) as client:
        mutex = RedisMutex(client, unique("oom"))
        await client.config_set({"maxmemory": "1"})  # every write is refused
        try:
            with pytest.raises(LockRefusedError, match="OOM"):
                await mutex.acquire(timeout_ms=0)
        finally:
            await client.config_set({"maxmemory": "0"})
        lease = await mutex.acquire(timeout_ms=0)  # the local turn was given back
        await lease.release()


async def test_acl_user_limited_to_a_key_prefix(server: RedisServer) -> None:
    user = unique("app")
    reply = server.command("ACL", "SETUSER", user, "on", ">s3cret", "~app:*", "+@all")
    assert reply.startswith(b"+OK"), reply
    async with connect(server) as admin:
        try:
            async with connect(server, username=user, password="s3cret") as client:
                name = unique("acl")
                bare = RedisMutex(client, name)
                with pytest.raises(LockRefusedError, match="NOPERM") as exc_info:
                    await bare.acquire(timeout_ms=0)
                assert "acquire" in exc_info.value.detail
                mutex = RedisMutex(client, name, key_prefix="app:")
                async with mutex.hold(label="inside") as lease:
                    assert await mutex.owner() == "inside"
                    assert await admin.exists(["app:{" + name + "}:lock"]) == 1
                assert lease.fence > 0
                assert not await mutex.locked()
        finally:
            server.command("ACL", "DELUSER", user)
