"""RedisMutex and RedisRefreshCache against a real Valkey/Redis server this suite starts.

No mock anywhere: the server is a real process on a free loopback port (see
tests/_redis_server.py). Lease expiry is real time by nature, so a few tests wait for
a lease to run out; everything else is ordered with events.
"""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import anyio
import coredis
import pytest
from anyio.lowlevel import checkpoint

from anyio_mutex import MutexReleaseError, MutexTimeoutError
from anyio_mutex.redis import (
    LockLostError,
    LockUnavailableError,
    RedisMutex,
    RedisRefreshCache,
)

from ._redis_server import (
    RedisServer,
    connect,
    connect_as,
    over_clients,
    over_families,
    server_fixture,
    start_server,
    unique,
)

# heavy: asyncio and trio; coredis on uvloop is tests/test_redis_adapters.py's.
pytestmark = [pytest.mark.anyio, pytest.mark.heavy]

WORKER = Path(__file__).with_name("redis_worker.py")


server = server_fixture()


@over_clients
async def test_exclusion_across_several_clients(
    server: RedisServer, family: str
) -> None:
    name = unique("excl")
    async with (
        connect_as(server, family) as a,
        connect_as(server, family) as b,
        connect_as(server, family) as c,
    ):
        inside = 0

        async def worker(client: coredis.Redis[bytes], i: int) -> None:
            nonlocal inside
            mutex = RedisMutex(client, name, lease_ms=5000)
            for _ in range(5):
                async with mutex.hold(timeout_ms=20_000, label=f"w{i}"):
                    inside += 1
                    assert inside == 1
                    value = int(await client.get(f"n:{name}") or 0)
                    await checkpoint()
                    await client.set(f"n:{name}", str(value + 1))
                    inside -= 1

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for i, client in enumerate((a, b, c) * 3):
                    tg.start_soon(worker, client, i)
        assert int(await a.get(f"n:{name}") or 0) == 45
        assert not await RedisMutex(a, name).locked()


async def run_workers(
    server: RedisServer, mode: str, name: str, per_process: int, backends: list[str]
) -> list[str]:
    """Start one worker process per backend, release them together, return outputs."""
    command = [sys.executable, str(WORKER), mode, str(server.port), name]
    processes = await anyio.to_thread.run_sync(
        lambda: [
            subprocess.Popen(
                [*command, str(per_process), backend],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for backend in backends
        ]
    )
    try:
        for proc in processes:
            assert proc.stdout is not None
            line = await anyio.to_thread.run_sync(proc.stdout.readline)
            assert line.strip() == "ready", line + (
                proc.stderr.read() if proc.stderr else ""
            )
        async with connect(server) as client:
            await client.rpush(f"go:{name}", ["go"] * len(processes))
        outputs = []
        for proc in processes:
            out, err = await anyio.to_thread.run_sync(
                functools.partial(proc.communicate, timeout=120)
            )
            assert proc.returncode == 0, err
            outputs.append(out)
        return outputs
    finally:
        for proc in processes:
            if proc.poll() is None:
                proc.kill()


# One run: the worker processes cover the backends, each on its own (starting Python
# costs ~1.5 s on a loaded machine), and contend with each other across backends.
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_three_processes_exclude_each_other_and_fetch_once(
    server: RedisServer,
) -> None:
    # Each process does both at once: 20 locked increments, and 100 concurrent cache
    # calls for one key.
    name = unique("procs")
    backends = ["asyncio", "trio", "asyncio+uvloop"]
    outputs = await run_workers(server, "both", name, 20, backends)
    assert all("results=[42] count=100" in out for out in outputs), outputs
    async with connect(server) as client:
        assert int(await client.get(f"counter:{name}") or 0) == 60  # 3 x 20, none lost
        assert int(await client.get(f"fetches:{name}") or 0) == 1


@over_clients
async def test_fencing_tokens_strictly_increase_even_after_expiry_takeover(
    server: RedisServer,
    family: str,
) -> None:
    name = unique("fence")
    async with connect_as(server, family) as a, connect_as(server, family) as b:
        first = RedisMutex(a, name, lease_ms=150)
        second = RedisMutex(b, name, lease_ms=5000)
        fences = []
        for _ in range(3):
            lease = await second.acquire()
            fences.append(lease.fence)
            await lease.release()
        stale = await first.acquire(label="stalls")
        fences.append(stale.fence)
        with anyio.fail_after(5):
            taken = await second.acquire(
                label="takes over"
            )  # waits for the lease to end
        fences.append(taken.fence)
        assert fences == sorted(fences)
        assert len(set(fences)) == len(fences)
        with pytest.raises(LockLostError):
            await stale.release()
        await taken.release()


@over_clients
async def test_renewal_keeps_a_long_body_and_never_bumps_the_fence(
    server: RedisServer,
    family: str,
) -> None:
    name = unique("long")
    async with connect_as(server, family) as a, connect_as(server, family) as b:
        # A 600 ms lease renewed every 100 ms: five renewals may be late before the
        # lease runs out, which a loaded 2-core machine needs (300 ms flaked there).
        mutex = RedisMutex(a, name, lease_ms=600, renew_ms=100)
        other = RedisMutex(b, name)
        async with mutex.hold(label="long job") as lease:
            for _ in range(12):  # 1.2 s: twice the lease
                await anyio.sleep(0.1)
                with pytest.raises(MutexTimeoutError) as exc_info:
                    await other.acquire(timeout_ms=0)
                assert exc_info.value.owner == "long job"
            assert int(await a.get("{" + name + "}:fence") or 0) == lease.fence
        assert mutex.statistics().renewals >= 6
        assert not await other.locked()


async def test_renewal_stops_after_release(server: RedisServer) -> None:
    name = unique("stop")
    async with connect(server) as client:
        mutex = RedisMutex(client, name, lease_ms=300, renew_ms=50)
        async with mutex.hold():
            await anyio.sleep(0.12)
        renewals = mutex.statistics().renewals
        assert renewals >= 1
        before = server.commands_processed()
        await anyio.sleep(0.3)  # six renewal intervals
        assert server.commands_processed() - before <= 1  # only the INFO itself
        assert mutex.statistics().renewals == renewals


@pytest.mark.parametrize("how", ["deleted", "stolen"])
@over_clients
async def test_lost_key_cancels_the_body_and_raises(
    server: RedisServer, family: str, how: str
) -> None:
    name = unique("lost")
    async with connect_as(server, family) as a, connect_as(server, family) as b:
        mutex = RedisMutex(a, name, lease_ms=600, renew_ms=50)
        entered = anyio.Event()
        finished = False

        async def tamper() -> None:
            await entered.wait()
            lock_key = "{" + name + "}:lock"
            if how == "deleted":
                server.command("DEL", lock_key)
            else:
                await b.set(lock_key, "someone-else:999:thief")

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(tamper)
                with pytest.raises(LockLostError) as exc_info:  # noqa: PT012 - the body is the point
                    async with mutex.hold(label="victim") as lease:
                        entered.set()
                        await anyio.sleep_forever()
                        finished = True
        assert not finished
        assert exc_info.value.label == "victim"
        assert exc_info.value.fence == lease.fence
        assert lease.lost
        if how == "stolen":  # the thief's key is left alone
            assert await b.get("{" + name + "}:lock") == b"someone-else:999:thief"
        assert mutex.statistics().lost == 1


@over_clients
async def test_cancelled_body_frees_the_key_at_once(
    server: RedisServer, family: str
) -> None:
    name = unique("cancel")
    async with connect_as(server, family) as client:
        mutex = RedisMutex(client, name, lease_ms=30_000)
        with anyio.CancelScope() as scope:
            async with mutex.hold():
                assert await mutex.locked()
                scope.cancel()
                await anyio.sleep_forever()
        assert scope.cancelled_caught
        assert not await mutex.locked()  # not 30 s later: now


@over_families
async def test_cancelled_while_the_grant_is_in_flight_gives_it_back(
    server: RedisServer,
    family: str,
) -> None:
    # The grant round trip is shielded: a cancellation that arrives meanwhile must
    # neither leave a key held by no one nor swallow the cancellation.
    name = unique("inflight")
    async with connect_as(server, family) as client:
        mutex = RedisMutex(client, name, lease_ms=30_000)
        outcome: list[str] = []
        scope = anyio.CancelScope()

        async def acquirer() -> None:
            with scope:
                await mutex.acquire()
                outcome.append("acquired")  # pragma: no cover - must not happen
            outcome.append(f"cancelled={scope.cancelled_caught}")

        await client.ping()  # connect first: the pause must catch the grant itself
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                with server.writes_paused():  # the server holds the grant's reply
                    tg.start_soon(acquirer)
                    await anyio.wait_all_tasks_blocked()  # parked in the grant
                    scope.cancel()  # then the grant is answered
        assert outcome == ["cancelled=True"]
        assert server.command("EXISTS", "{" + name + "}:fence") == b":1\r\n"  # granted
        assert not await mutex.locked()  # and given back at once
        assert mutex.statistics().total_acquisitions == 0


@over_clients
async def test_stale_release_leaves_the_new_holders_key_intact(
    server: RedisServer,
    family: str,
) -> None:
    name = unique("stale")
    async with connect_as(server, family) as a, connect_as(server, family) as b:
        old = await RedisMutex(a, name, lease_ms=100).acquire(label="old")
        new_mutex = RedisMutex(b, name, lease_ms=30_000)
        new = await new_mutex.acquire(label="new", timeout_ms=5000)
        with pytest.raises(LockLostError, match="no longer held this lease at release"):
            await old.release()
        assert await new_mutex.owner() == "new"
        await new.release()
        with pytest.raises(MutexReleaseError, match="already released"):
            await new.release()


@over_clients
async def test_waiter_is_woken_by_release_not_by_polling(
    server: RedisServer, family: str
) -> None:
    name = unique("wake")
    async with connect_as(server, family) as a, connect_as(server, family) as b:
        holder = RedisMutex(a, name, lease_ms=30_000)
        waiter = RedisMutex(b, name, lease_ms=30_000, poll_ms=30_000)
        lease = await holder.acquire()
        got = anyio.Event()
        took: list[float] = []

        async def wait() -> None:
            start = anyio.current_time()
            second = await waiter.acquire(timeout_ms=20_000)
            took.append(anyio.current_time() - start)
            got.set()
            await second.release()

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.sleep(0.2)  # the waiter is blocked at the server now
            released_at = anyio.current_time()
            await lease.release()
            with anyio.fail_after(2):  # without the wake-up this would take 30 s
                await got.wait()
            assert anyio.current_time() - released_at < 0.5


ROUND_TRIPS = (
    "evalsha",
    "eval",
    "blpop",
    "hello",
    "client|setinfo",
    "script|load",
)


@pytest.mark.parametrize(("poll_ms", "limit"), [(100, 16), (300, 8)])
async def test_waiting_sends_a_bounded_number_of_commands(
    server: RedisServer, poll_ms: int, limit: int
) -> None:
    # Round trips only (a script's inner commands never cross the network). Per
    # poll_ms a waiter sends one try and one BLPOP; then one last try and an owner
    # read (a script too). Over these 600 ms that is about 14 at poll_ms=100 and 6
    # at poll_ms=300; coredis's own lock, for comparison, sends a SET NX every
    # 100 ms: 6 here.
    name = unique("quiet")
    async with connect(server) as a, connect(server) as b:
        lease = await RedisMutex(a, name, lease_ms=30_000).acquire()
        waiter = RedisMutex(b, name, poll_ms=poll_ms)
        await b.ping()  # the connection's handshake is not waiting traffic
        before = server.command_calls()
        with pytest.raises(MutexTimeoutError) as exc_info:
            await waiter.acquire(timeout_ms=600)
        after = server.command_calls()
        sent = sum(after.get(c, 0) - before.get(c, 0) for c in ROUND_TRIPS)
        assert sent <= limit, {
            c: n - before.get(c, 0) for c, n in after.items() if n - before.get(c, 0)
        }
        assert 600 - 1e-6 <= exc_info.value.waited_ms < 750
        await lease.release()


@over_clients
async def test_timeout_reports_real_wait_and_owner(
    server: RedisServer, family: str
) -> None:
    name = unique("timeout")
    async with connect_as(server, family) as a, connect_as(server, family) as b:
        lease = await RedisMutex(a, name, lease_ms=30_000).acquire(label="batch")
        with pytest.raises(MutexTimeoutError) as exc_info:
            await RedisMutex(b, name).acquire(timeout_ms=300)
        err = exc_info.value
        assert (err.owner, err.label, err.timeout_ms) == ("batch", name, 300)
        assert 300 <= err.waited_ms < 600
        assert str(err).startswith(
            f"Mutex acquisition timed out after {err.waited_ms:.0f}ms"
        )
        await lease.release()


@over_clients
async def test_local_tasks_share_one_waiter_and_are_all_served(
    server: RedisServer,
    family: str,
) -> None:
    name = unique("local")
    async with connect_as(server, family) as client:
        mutex = RedisMutex(client, name, lease_ms=5000)
        order: list[int] = []

        async def worker(i: int) -> None:
            async with mutex.hold(label=f"t{i}"):
                assert await mutex.owner() == f"t{i}"
                order.append(i)

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                for i in range(20):
                    tg.start_soon(worker, i)
        assert sorted(order) == list(range(20))
        stats = mutex.statistics()
        assert (stats.total_acquisitions, stats.tasks_waiting) == (20, 0)


async def test_server_killed_mid_hold_gives_a_clear_error_not_a_hang() -> None:
    server = start_server()  # this test kills its own server
    try:
        async with connect(server) as client:
            mutex = RedisMutex(
                client, unique("kill"), lease_ms=600, renew_ms=150, op_timeout_ms=300
            )
            start = anyio.current_time()
            with anyio.fail_after(10), pytest.raises(LockLostError):  # noqa: PT012
                async with mutex.hold(label="doomed"):
                    server.stop()
                    await anyio.sleep_forever()
            # Declared lost no later than the lease could have run out, plus one try.
            assert anyio.current_time() - start < 0.6 + 0.3 + 0.5
            with anyio.fail_after(10), pytest.raises(LockUnavailableError):
                await mutex.acquire(timeout_ms=5000)
            assert mutex.statistics().total_acquisitions == 1  # no false grant
    finally:
        server.stop()


@over_clients
async def test_refresh_cache_uses_redis_values_and_never_caches_errors(
    server: RedisServer,
    family: str,
) -> None:
    key = unique("cache")
    async with connect_as(server, family) as a, connect_as(server, family) as b:
        first: RedisRefreshCache[dict[str, int]] = RedisRefreshCache(a, ttl_s=60)
        second: RedisRefreshCache[dict[str, int]] = RedisRefreshCache(b, ttl_s=60)
        calls = 0

        async def fetch() -> dict[str, int]:
            nonlocal calls
            calls += 1
            return {"n": calls}

        async def broken() -> dict[str, int]:
            raise ConnectionError("backend down")

        with pytest.raises(ConnectionError):
            await first.get_or_refresh(key, broken)
        assert await first.get_or_refresh(key, fetch) == {"n": 1}
        assert await second.get_or_refresh(key, fetch) == {"n": 1}  # from Redis
        assert (first.fetches, second.fetches, second.remote_hits) == (2, 0, 1)
        assert first.statistics().fetch_errors == 1
        ttl = await a.pttl("anyio_mutex:cache:" + key)
        assert 59_000 < ttl <= 60_000
        await first.invalidate(key)
        assert server.command("EXISTS", "anyio_mutex:cache:" + key) == b":0\r\n"
        assert await first.get_or_refresh(key, fetch) == {"n": 2}


async def test_bad_arguments(server: RedisServer) -> None:
    async with connect(server) as client:
        with pytest.raises(ValueError, match="lease_ms must be a finite number >= 1"):
            RedisMutex(client, "x", lease_ms=0.5)
        with pytest.raises(ValueError, match="renew_ms must be < lease_ms"):
            RedisMutex(client, "x", lease_ms=100, renew_ms=100)
        with pytest.raises(ValueError, match="name must be a non-empty str"):
            RedisMutex(client, "")
        with pytest.raises(ValueError, match="lease_ms must be a finite number >= 1"):
            RedisRefreshCache(
                client, lease_ms=0.5
            )  # rejected here, not at the first miss
        mutex = RedisMutex(client, unique("args"))
        with pytest.raises(ValueError, match="timeout_ms must be >= 0"):
            await mutex.acquire(timeout_ms=-1)
        assert not await mutex.locked()
