"""The client adapters, one family at a time: every call the Redis primitives make.

The full contract of RedisMutex, RedisRefreshCache and RedisSemaphore runs on one
family (coredis, on asyncio and trio: ``over_clients``); what differs between the
families is only the adapter (anyio_mutex/redis/_coredis.py, _redis_py.py,
_valkey_py.py). These tests drive each adapter call against a real server, on every
family and on every backend the family runs on (coredis also on uvloop), errors
included. ``script_and_wait`` (WAIT, WAITAOF) needs a replica: its tests in
tests/test_redis_replicas.py run over every family, as do the cancellation tests that
interrupt a library mid-request (``over_families``).
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from anyio_mutex.redis import LockRefusedError, LockUnavailableError
from anyio_mutex.redis._client import _adapt, _call

from ._redis_server import (
    RedisClusterServers,
    RedisServer,
    client_matrix,
    connect_as,
    connect_cluster,
    free_port,
    over_families,
    server_fixture,
    start_server,
    unique,
)

pytestmark = pytest.mark.anyio

server = server_fixture()
# ``cluster``: the session's one Redis Cluster (tests/conftest.py).

#: Keys and arguments arrive in order; an integer and a bulk string come back.
SCRIPT = (
    "redis.call('SET', KEYS[1], ARGV[1]) "
    "return {tonumber(ARGV[2]) + 1, redis.call('GET', KEYS[1]), KEYS[2]}"
)


def pttl(server: RedisServer, key: str) -> int:
    return int(server.command("PTTL", key)[1:].split(b"\r\n")[0])


@over_families
async def test_script_and_plain_calls(server: RedisServer, family: str) -> None:
    key = unique("adapter")
    async with connect_as(server, family) as client:
        c = _adapt(client)
        assert (c.family, c.cluster, c.can_wait) == (family, False, True)
        with anyio.fail_after(10):
            reply = await c.script(SCRIPT, [key, key + ":2"], ["v", 41])
            assert reply == [42, b"v", (key + ":2").encode()]
            # The server forgot the script: the call loads it again (NOSCRIPT).
            assert server.command("SCRIPT", "FLUSH").startswith(b"+OK")
            assert (await c.script(SCRIPT, [key, key], ["w", 1]))[:2] == [2, b"w"]
            assert await c.script("return #KEYS", []) == 0  # args default to none

            assert await c.exists(key) == 1
            assert await c.exists(key + ":none") == 0
            await c.set(key, "x", 5000)
            assert 0 < pttl(server, key) <= 5000
            await c.set(key, b"y", None)
            assert pttl(server, key) == -1  # no expiry
            assert server.command("GET", key) == b"$1\r\ny\r\n"
            assert await c.delete(key) == 1
            assert await c.delete(key) == 0
            assert await c.exists(key) == 0


@over_families
async def test_blpop_pops_or_times_out(server: RedisServer, family: str) -> None:
    key = unique("wake")
    async with connect_as(server, family) as client:
        c = _adapt(client)
        with anyio.fail_after(10):
            assert server.command("RPUSH", key, "first", "second") == b":2\r\n"
            assert await c.blpop(key, 1) == b"first"
            assert await c.blpop(key, 1) == b"second"
            start = anyio.current_time()
            assert await c.blpop(key, 0.1) is None  # fractional seconds, as sent
            assert anyio.current_time() - start >= 0.09

            got: list[Any] = []

            async def pop() -> None:
                got.append(await c.blpop(key, 5))

            async with anyio.create_task_group() as tg:
                tg.start_soon(pop)
                await anyio.wait_all_tasks_blocked()
                # The same client serves other calls while one blocks (a waiter's
                # BLPOP and a holder's renewal share a client).
                assert await c.exists(key) == 0
                await c.set(key + ":other", "v", 5000)
                # Pushed by another connection while the pop blocks at the server.
                async with connect_as(server, family) as other:
                    await _adapt(other).script(
                        "return redis.call('RPUSH', KEYS[1], ARGV[1])", [key], ["go"]
                    )
            assert got == [b"go"]


@over_families
async def test_publish_and_subscribe_across_a_reconnect(
    server: RedisServer, family: str
) -> None:
    channel = unique("chan")
    async with (
        connect_as(server, family) as subscriber,
        connect_as(server, family) as publisher,
    ):
        sub, pub = _adapt(subscriber), _adapt(publisher)
        with anyio.fail_after(10):
            assert await pub.publish(channel, "nobody") == 0
            async with sub.subscribe(channel) as messages:
                # Entered once the server confirmed: a message now is delivered.
                assert await pub.publish(channel, "hello") == 1
                assert await anext(messages) == ("message", b"hello")
                reply = server.command("CLIENT", "KILL", "TYPE", "pubsub")
                assert reply.startswith(b":1"), reply
                # Subscribed again by the library (or the adapter): said so, once.
                kind, _ = await anext(messages)
                assert kind == "subscribe"
                assert await pub.publish(channel, "again") == 1
                assert await anext(messages) == ("message", b"again")
                await messages.aclose()  # type: ignore[attr-defined]


def no_retries(family: str) -> dict[str, Any]:
    if family == "coredis":
        return {}
    backoff = __import__(family.replace("-py", "") + ".backoff", fromlist=["x"])
    retry = __import__(family.replace("-py", "") + ".asyncio.retry", fromlist=["x"])
    return {"retry": retry.Retry(backoff.NoBackoff(), 0)}


@over_families
async def test_no_answer_is_unavailable(family: str) -> None:
    # Nothing listens on this port. The asyncio-only libraries retry a refused
    # connection with back-off (seconds): asked not to, the error is the same.
    async with connect_as(free_port(), family, **no_retries(family)) as client:
        c = _adapt(client)
        with anyio.fail_after(10):
            for what, call in [
                ("script", lambda: c.script("return 1", ["k"])),
                ("exists", lambda: c.exists("k")),
                ("set", lambda: c.set("k", "v", 100)),
                ("delete", lambda: c.delete("k")),
                ("publish", lambda: c.publish("ch", "m")),
                ("blpop", lambda: c.blpop("k", 0.1)),
            ]:
                with pytest.raises(LockUnavailableError) as exc_info:
                    await _call(c, "name", what, 5, call)
                assert not isinstance(exc_info.value, LockRefusedError)
                assert f"{what} failed" in str(exc_info.value)
                cause = exc_info.value.__cause__
                assert isinstance(cause, (OSError, *c.unavailable_errors())), cause


@over_families
async def test_a_stalled_server_is_unavailable_within_the_deadline(
    server: RedisServer, family: str
) -> None:
    async with connect_as(server, family) as client:
        c = _adapt(client)
        await c.exists("k")  # connected: the pause catches the call itself
        server.command("CLIENT", "PAUSE", "10000", "WRITE")
        try:
            with anyio.fail_after(10), pytest.raises(LockUnavailableError) as exc_info:
                await _call(c, "name", "set", 0.2, lambda: c.set("k", "v", None))
        finally:
            server.command("CLIENT", "UNPAUSE")
        assert "set got no answer within 200 ms" in str(exc_info.value)
        # The client is usable after its call was cancelled mid-request.
        with anyio.fail_after(10):
            await c.set("k", "after", None)
            assert server.command("GET", "k") == b"$5\r\nafter\r\n"


@over_families
async def test_refusals_keep_the_servers_words(
    server: RedisServer, family: str
) -> None:
    key = unique("refused")
    assert server.command("RPUSH", key, "a list") == b":1\r\n"
    user = unique("limited")
    reply = server.command("ACL", "SETUSER", user, "on", ">pw", "~app:*", "+@all")
    assert reply.startswith(b"+OK"), reply
    try:
        async with (
            connect_as(server, family) as client,
            connect_as(server, family, username=user, password="pw") as limited,
        ):
            c, lim = _adapt(client), _adapt(limited)
            cases: list[tuple[str, Any, str]] = [
                ("script", lambda: c.script("return redis.call('GET', KEYS[1])", [key]), "WRONGTYPE"),
                ("blpop", lambda: c.blpop(key + ":x", -1), "timeout is negative"),
                ("script", lambda: c.script("return redis.error_reply('MINE no')", []), "MINE no"),
                ("exists", lambda: lim.exists("other:key"), "NOPERM"),
                ("set", lambda: lim.set("other:key", "v", None), "NOPERM"),
            ]  # fmt: skip
            with anyio.fail_after(10):
                for what, call, words in cases:
                    with pytest.raises(LockRefusedError) as exc_info:
                        await _call(c, "name", what, 5, call)
                    text = str(exc_info.value)
                    assert f"the server refused {what}: {words}" in text, text
                    assert isinstance(exc_info.value, LockUnavailableError)
                # Out of memory: every write refused.
                server.command("CONFIG", "SET", "maxmemory", "1")
                try:
                    with pytest.raises(LockRefusedError, match="refused set: OOM"):
                        await _call(c, "name", "set", 5, lambda: c.set(key, "v", 10))
                finally:
                    server.command("CONFIG", "SET", "maxmemory", "0")
    finally:
        server.command("ACL", "DELUSER", user)


@over_families
async def test_read_only_replica_refusal(family: str) -> None:
    replica = start_server("--replicaof", "127.0.0.1", str(free_port()))
    try:
        async with connect_as(replica, family) as client:
            c = _adapt(client)
            with anyio.fail_after(10):
                assert await c.exists("k") == 0  # reads work
                for what, call in [
                    ("set", lambda: c.set("k", "v", None)),
                    ("script", lambda: c.script("return redis.call('DEL', KEYS[1])", ["k"])),
                ]:  # fmt: skip
                    with pytest.raises(LockRefusedError, match="READONLY"):
                        await _call(c, "name", what, 5, call)
    finally:
        replica.stop()


@over_families
async def test_cluster_clients(cluster: RedisClusterServers, family: str) -> None:
    async with connect_cluster(cluster, family) as client:
        c = _adapt(client)
        assert (c.family, c.cluster) == (family, True)
        assert c.can_wait == (family == "coredis")  # WAIT needs one connection
        with anyio.fail_after(10):
            # Keys on every node: each call is routed to the node of its key.
            keys = {cluster.node_of(k): k for k in (unique("c") for _ in range(60))}
            assert sorted(keys) == [0, 1, 2]
            for key in keys.values():
                tagged = "{" + key + "}"
                reply = await c.script(SCRIPT, [tagged, tagged + ":2"], ["v", 1])
                assert reply[:2] == [2, b"v"]
                assert await c.exists(tagged) == 1
                await c.set(tagged, "w", 5000)
                assert await c.delete(tagged) == 1
                assert await c.blpop(tagged, 0.05) is None
            if family != "coredis":
                with pytest.raises(TypeError, match="cluster client offers no pub/sub"):
                    async with c.subscribe(unique("chan")):
                        pass  # pragma: no cover


@pytest.mark.parametrize(("anyio_backend", "family"), client_matrix())
async def test_cluster_publish(cluster: RedisClusterServers, family: str) -> None:
    # PUBLISH on a cluster reaches subscribers on every node; the count it returns
    # is the receiving node's own. (valkey-py's ValkeyCluster has no publish()
    # method: the adapter sends the command itself.)
    async with connect_cluster(cluster, family) as client:
        c = _adapt(client)
        channel = unique("chan")
        with anyio.fail_after(10):
            if family != "coredis":  # no subscribe on these cluster clients
                assert await c.publish(channel, "m") == 0
                return
            async with c.subscribe(channel) as messages:
                await c.publish(channel, "hi")
                assert await anext(messages) == ("message", b"hi")
                await messages.aclose()  # type: ignore[attr-defined]
