"""Tasks of one process sharing a RedisMutex: leases, re-entry, names, fairness.

Regression tests for issue 8, defects 2 to 4: the local queue outlived the local
holder's lease, re-entry waited for its own lease to expire, and a local wait named
``'(a task of this process)'`` instead of the holder.
"""

from __future__ import annotations

import anyio
import pytest

from anyio_mutex import AsyncMutex, DeadlockError, MutexReentryError, MutexTimeoutError
from anyio_mutex._hold import current_task as current_native_task
from anyio_mutex.redis import LockLostError, RedisLease, RedisMutex
from anyio_mutex.redis._lease import _Turn

from ._redis_server import RedisServer, connect, server_fixture, unique

# heavy: asyncio and trio; coredis on uvloop is tests/test_redis_adapters.py's.
pytestmark = [pytest.mark.anyio, pytest.mark.heavy]

server = server_fixture()


async def acquire_in_another_task(mutex: RedisMutex, label: str) -> RedisLease:
    """Task A: acquire, then stall (return the lease without releasing it)."""
    leases: list[RedisLease] = []

    async def task_a() -> None:
        leases.append(await mutex.acquire(label=label))

    async with anyio.create_task_group() as tg:
        tg.start_soon(task_a)
    return leases[0]


async def test_next_local_task_goes_to_the_server_when_the_lease_runs_out(
    server: RedisServer,
) -> None:
    name = unique("expire")
    async with connect(server) as client:
        mutex = RedisMutex(client, name, lease_ms=200)
        stalled = await acquire_in_another_task(mutex, "A")  # never released in time
        with anyio.fail_after(5):
            second = await mutex.acquire(label="B", timeout_ms=3000)
        assert second.fence > stalled.fence
        assert await mutex.owner() == "B"
        with pytest.raises(LockLostError):
            await stalled.release()  # A's late release ...
        assert await mutex.owner() == "B"  # ... leaves B's key alone
        await second.release()
        assert not await mutex.locked()
        with anyio.fail_after(5):  # and the local turn is free again
            third = await mutex.acquire(timeout_ms=0)
        await third.release()


async def test_untimed_local_waiter_is_not_stuck_behind_an_expired_lease(
    server: RedisServer,
) -> None:
    async with connect(server) as client:
        mutex = RedisMutex(client, unique("forever"), lease_ms=150)
        await acquire_in_another_task(mutex, "A")
        with anyio.fail_after(5):
            lease = await mutex.acquire(label="B")  # no timeout: waited forever before
        await lease.release()


async def test_reentry_raises_at_once(server: RedisServer) -> None:
    async with connect(server) as client:
        mutex = RedisMutex(client, unique("reenter"), lease_ms=5000)
        with anyio.fail_after(2):
            async with mutex.hold(label="outer"):
                with pytest.raises(MutexReentryError) as exc_info:
                    await mutex.acquire(timeout_ms=10_000)
                assert exc_info.value.owner == "outer"
                with pytest.raises(MutexReentryError):
                    async with mutex.hold():
                        pass  # pragma: no cover
                assert await mutex.owner() == "outer"
        assert not await mutex.locked()


async def test_reentry_after_the_lease_ran_out_is_a_new_acquisition(
    server: RedisServer,
) -> None:
    async with connect(server) as client:
        mutex = RedisMutex(client, unique("again"), lease_ms=100)
        first = await mutex.acquire()
        # The lease running out is what is tested: wait for it on the same clock,
        # plus 20 ms, as uvloop's millisecond timers may wake a little early.
        await anyio.sleep(first.expires_at - anyio.current_time() + 0.02)
        with anyio.fail_after(5):
            second = await mutex.acquire(timeout_ms=3000)
        assert second.fence > first.fence
        await second.release()


async def test_local_timeout_names_the_local_holder(server: RedisServer) -> None:
    async with connect(server) as client:
        mutex = RedisMutex(client, unique("name"), lease_ms=10_000)
        holding = anyio.Event()
        done = anyio.Event()

        async def holder() -> None:
            async with mutex.hold(label="nightly report"):
                holding.set()
                await done.wait()

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(holder)
                await holding.wait()
                with pytest.raises(MutexTimeoutError) as exc_info:
                    await mutex.acquire(timeout_ms=50)
                done.set()
        err = exc_info.value
        assert (err.owner, err.label, err.timeout_ms) == (
            "nightly report",
            mutex.name,
            50,
        )
        assert err.waited_ms >= 50 - 1e-6  # float rounding of start + 0.05
        assert mutex.statistics().timeouts == 1


async def test_cancelled_local_waiter_leaves_the_queue(server: RedisServer) -> None:
    async with connect(server) as client:
        mutex = RedisMutex(client, unique("cancelq"), lease_ms=10_000)
        lease = await mutex.acquire()
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(mutex.acquire)
                await anyio.wait_all_tasks_blocked()
                assert mutex.statistics().tasks_waiting == 1
                tg.cancel_scope.cancel()
            assert mutex.statistics().tasks_waiting == 0
            await lease.release()
            again = await mutex.acquire(timeout_ms=0)  # nobody queued in front
        await again.release()


async def test_queued_waiter_notices_a_lease_granted_after_it_queued(
    server: RedisServer,
) -> None:
    # B queues behind A while A is still waiting at the server (no lease to watch
    # yet); A is then granted and stalls. B must still go when A's lease runs out.
    name = unique("late")
    async with connect(server) as client, connect(server) as remote_client:
        remote = await RedisMutex(remote_client, name, lease_ms=30_000).acquire()
        mutex = RedisMutex(client, name, lease_ms=200)
        granted: list[RedisLease] = []

        async def task_a() -> None:
            granted.append(await mutex.acquire(label="A"))  # then never releases

        async def task_b() -> None:
            granted.append(await mutex.acquire(label="B"))  # no timeout

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(task_a)
                await anyio.wait_all_tasks_blocked()
                tg.start_soon(task_b)
                await anyio.wait_all_tasks_blocked()
                assert mutex.statistics().tasks_waiting == 2
                await remote.release()
        assert [lease.label for lease in granted] == ["A", "B"]
        assert granted[1].fence > granted[0].fence
        await granted[1].release()


async def test_waiter_cancelled_as_it_is_handed_the_turn_passes_it_on(
    server: RedisServer,
) -> None:
    async with connect(server) as client:
        mutex = RedisMutex(client, unique("handed"), lease_ms=10_000)
        lease = await mutex.acquire(label="H")
        w_scope = anyio.CancelScope()
        got: list[str] = []

        async def waiter_w() -> None:
            with w_scope:
                await mutex.acquire(label="W")
                got.append("W")  # pragma: no cover - cancelled before it runs

        async def waiter_x() -> None:
            x = await mutex.acquire(label="X")
            got.append("X")
            await x.release()

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(waiter_w)
                await anyio.wait_all_tasks_blocked()
                tg.start_soon(waiter_x)
                await anyio.wait_all_tasks_blocked()
                await lease.release()  # hands the local turn to W ...
                w_scope.cancel()  # ... which is cancelled before it runs
        assert got == ["X"]
        assert w_scope.cancelled_caught
        assert not await mutex.locked()


@pytest.mark.parametrize("way", ["hold", "acquire"])
async def test_local_wait_for_a_renewed_holder_waiting_for_us_is_a_deadlock(
    server: RedisServer, way: str
) -> None:
    # A holds the Redis lock and waits for a local mutex that B holds; B then waits
    # for the Redis lock. Under hold() A's lease is renewed for as long as A waits,
    # so B's wait can never end: DeadlockError. Under acquire() A's lease runs out
    # by itself, so B's wait is not reported (it times out here instead).
    async with connect(server) as client:
        redis_lock = RedisMutex(client, unique("cycle"), lease_ms=5_000)
        local = AsyncMutex("local")
        a_holds, b_holds = anyio.Event(), anyio.Event()
        outcome: list[str] = []

        async def a() -> None:
            if way == "hold":
                async with redis_lock.hold(label="A"):
                    a_holds.set()
                    await b_holds.wait()
                    async with local:
                        outcome.append("A done")
            else:
                lease = await redis_lock.acquire(label="A")
                a_holds.set()
                await b_holds.wait()
                async with local:
                    outcome.append("A done")
                await lease.release()

        async def b() -> None:
            async with local:
                b_holds.set()
                await anyio.wait_all_tasks_blocked()  # A is parked on `local` now
                try:
                    lease = await redis_lock.acquire(label="B", timeout_ms=300)
                except DeadlockError as exc:
                    outcome.append("B deadlock")
                    (step_b, step_a) = exc.cycle
                    assert (step_b.task, step_b.held_by) == ("b", "A")
                    assert (step_a.task, step_a.waits_for) == ("a", "local")
                except MutexTimeoutError:
                    outcome.append("B timed out")
                else:  # pragma: no cover - A holds the lock throughout
                    await lease.release()

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(a, name="a")
                await a_holds.wait()
                tg.start_soon(b, name="b")
        expected = "B deadlock" if way == "hold" else "B timed out"
        assert outcome == [expected, "A done"]
        assert not await redis_lock.locked()


async def test_local_waiter_woken_by_a_renewed_lease_walks_again(
    server: RedisServer, anyio_backend_name: str
) -> None:
    # B holds `local` and waits for the local turn of A, whose hold() renews its
    # lease. B's wait wakes at the lease's old expiry and waits on; a walk in that
    # window counts B as leaving (its scope has fired). A waits for `local` exactly
    # then: A parks, so B must find the cycle when it parks again.
    async with connect(server) as client:
        redis_lock = RedisMutex(client, unique("rewalk"), lease_ms=1000)
        local = AsyncMutex("local")
        a_holds, b_waits = anyio.Event(), anyio.Event()
        outcome: list[str] = []

        async def a() -> None:
            async with redis_lock.hold(label="A"):
                a_holds.set()
                await b_waits.wait()
                await anyio.wait_all_tasks_blocked()  # B is parked for the turn
                b_scope = redis_lock._queue[0].scope
                assert b_scope is not None
                turn = redis_lock._turn
                assert turn is not None
                assert turn.lease is not None
                # Until a renewal moved the expiry (no event tells; poll it).
                while turn.lease.expires_at <= b_scope.deadline:  # noqa: ASYNC110
                    await anyio.sleep(0.01)
                while anyio.current_time() < b_scope.deadline:
                    pass  # busy: B's scope fires at the next yield
                await anyio.lowlevel.checkpoint()  # the timer runs after us ...
                await anyio.lowlevel.checkpoint()  # ... and B's wake-up after this
                try:
                    async with local:
                        outcome.append("A got local")
                except DeadlockError:
                    outcome.append("A deadlock")

        async def b() -> None:
            async with local:
                b_waits.set()
                try:
                    async with redis_lock.hold(label="B"):
                        outcome.append("B got the lock")
                except DeadlockError:
                    outcome.append("B deadlock")

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(a, name="a")
                await a_holds.wait()
                tg.start_soon(b, name="b")
        assert outcome in (
            ["B deadlock", "A got local"],
            ["A deadlock", "B got the lock"],
        )
        if anyio_backend_name == "asyncio":  # the window is certain there
            assert outcome[0] == "B deadlock"
        assert not await redis_lock.locked()


async def test_local_waiter_past_its_deadline_is_not_in_a_cycle(
    server: RedisServer,
) -> None:
    # W holds `local` and waits for X's turn (renewed by hold()) with a short
    # timeout; X lets W's deadline pass without yielding, then waits for `local`.
    # W's scope has not fired yet, but its wait is over: it fails and lets go.
    async with connect(server) as client:
        redis_lock = RedisMutex(client, unique("overdue"), lease_ms=5_000)
        local = AsyncMutex("local")
        x_holds = anyio.Event()
        got: list[str] = []

        async def w() -> None:
            await x_holds.wait()
            async with local:
                try:
                    async with redis_lock.hold(label="W", timeout_ms=50):
                        got.append("W got the lock")  # pragma: no cover
                except MutexTimeoutError:
                    got.append("W timed out")

        async def x() -> None:
            async with redis_lock.hold(label="X"):
                x_holds.set()
                await anyio.wait_all_tasks_blocked()  # W waits for the turn
                deadline = anyio.current_time() + 0.06
                while anyio.current_time() < deadline:  # busy: no yield
                    pass
                async with local:
                    got.append("X got local")

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(w, name="W")
                tg.start_soon(x, name="X")
        assert got == ["W timed out", "X got local"]
        assert not await redis_lock.locked()


async def test_a_lease_that_outlives_its_task_keeps_that_task_s_identity(
    server: RedisServer,
) -> None:
    # Re-entry is told by task identity. A lease from acquire() may outlive the task
    # that took it; were that task freed, a new task could get its id and be refused
    # as a re-entry. The turn keeps the task object alive (so its id cannot be
    # reused) until the turn ends, and not a moment longer.
    import gc
    import weakref

    async with connect(server) as client:
        mutex = RedisMutex(client, unique("identity"), lease_ms=5_000)
        tasks: list[weakref.ref[object]] = []
        leases: list[RedisLease] = []

        async def take() -> None:
            tasks.append(weakref.ref(current_native_task()))
            leases.append(await mutex.acquire(label="A"))

        async def in_a_task_group() -> None:  # a trio nursery refers to its children
            async with anyio.create_task_group() as tg:
                tg.start_soon(take)

        await in_a_task_group()
        gc.collect()
        assert tasks[0]() is not None  # ended, but its turn still holds it
        with anyio.fail_after(5):  # another task is not taken for a re-entry
            with pytest.raises(MutexTimeoutError):
                await mutex.acquire(label="B", timeout_ms=50)
        await leases[0].release()
        with anyio.fail_after(5):
            lease = await mutex.acquire(label="B", timeout_ms=3000)
        await lease.release()
        del lease, leases[:]
        gc.collect()
        # The turn is over: no turn keeps the task alive (on asyncio nothing does;
        # trio's own bookkeeping may hold a finished task a while longer).
        task = tasks[0]()
        assert task is None or not any(
            isinstance(ref, _Turn) for ref in gc.get_referrers(task)
        )
