"""SingleFlight: one execution per key for overlapping callers; not a cache."""

from __future__ import annotations

import functools
import weakref

import anyio
import pytest
from anyio import wait_all_tasks_blocked

from anyio_mutex import MutexTimeoutError, SingleFlight

pytestmark = pytest.mark.anyio


async def test_overlapping_callers_share_one_execution() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    gate = anyio.Event()
    calls = 0
    results: list[int] = []

    async def work(x: int) -> int:
        nonlocal calls
        calls += 1
        await gate.wait()
        return x * 2

    async def caller() -> None:
        results.append(await flight.do("k", work, 21))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(caller)
            await wait_all_tasks_blocked()
            assert "k" in flight
            gate.set()
    assert calls == 1
    assert results == [42] * 50
    assert len(flight) == 0  # not a cache: the entry dies with the call
    stats = flight.statistics()
    assert (stats.executions, stats.shared, stats.in_flight) == (1, 49, 0)
    assert await flight.do("k", work, 1) == 2  # a later call runs again
    assert calls == 2


async def test_exception_is_shared_by_the_waiters_and_not_kept() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    gate = anyio.Event()
    errors: list[BaseException] = []

    async def boom() -> int:
        await gate.wait()
        raise ValueError("backend down")

    async def caller() -> None:
        try:
            await flight.do("k", boom)
        except ValueError as exc:
            errors.append(exc)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(caller)
            await wait_all_tasks_blocked()
            gate.set()
    assert len(errors) == 5
    assert len({id(e) for e in errors}) == 1  # the same exception object for all
    assert len(flight) == 0


async def test_cancelled_leader_hands_the_call_to_a_waiter() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    runs: list[str] = []
    leader_started = anyio.Event()
    second_gate = anyio.Event()
    results: list[str] = []

    async def work(who: str) -> str:
        runs.append(who)
        if who == "leader":
            leader_started.set()
            await anyio.sleep_forever()
        await second_gate.wait()
        return f"value from {who}"

    async def follower(name: str) -> None:
        results.append(await flight.do("k", work, name))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            leader_scope = anyio.CancelScope()

            async def leader() -> None:
                with leader_scope:
                    await flight.do("k", work, "leader")

            tg.start_soon(leader)
            await leader_started.wait()
            for name in ("f1", "f2", "f3"):
                tg.start_soon(follower, name)
            await wait_all_tasks_blocked()
            leader_scope.cancel()
            await wait_all_tasks_blocked()
            assert len(runs) == 2  # exactly one follower took over
            second_gate.set()
    assert runs[0] == "leader"
    assert results == [f"value from {runs[1]}"] * 3
    assert flight.statistics().takeovers == 1
    assert len(flight) == 0


async def test_waiter_timeout_raises_and_leaves_the_others() -> None:
    flight: SingleFlight[str, int] = SingleFlight("lookups")
    gate = anyio.Event()
    outcomes: list[object] = []

    async def slow() -> int:
        await gate.wait()
        return 7

    async def patient() -> None:
        outcomes.append(await flight.do("k", slow))

    async def impatient() -> None:
        try:
            await flight.do("k", slow, timeout_ms=10)
        except MutexTimeoutError as exc:
            outcomes.append(exc)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(flight.do, "k", slow, label="job-1"))
            await wait_all_tasks_blocked()
            tg.start_soon(patient)
            async with anyio.create_task_group() as inner:
                inner.start_soon(impatient)
            gate.set()
    err = next(o for o in outcomes if isinstance(o, MutexTimeoutError))
    assert err.owner == "job-1"
    assert err.label == "lookups"
    assert err.waiting_for == "the call for key 'k'"
    assert str(err).startswith(
        "Mutex acquisition timed out after "
    )  # the prefix ported code matches on
    assert "waiting for the call for key 'k'" in str(err)
    assert err.waited_ms >= 9
    assert 7 in outcomes
    assert flight.statistics().timeouts == 1


async def test_forget_lets_the_next_caller_run_anew() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    gate = anyio.Event()
    results: list[str] = []

    async def work(tag: str) -> str:
        if tag == "old":
            await gate.wait()
        return tag

    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: flight.do("k", work, "old"))
        await wait_all_tasks_blocked()
        flight.forget("k")
        results.append(await flight.do("k", work, "new"))
        gate.set()
    assert results == ["new"]
    assert len(flight) == 0


async def test_bad_arguments() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    with pytest.raises(TypeError, match="fn must be callable, got 5"):
        await flight.do("k", 5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout_ms must be >= 0"):
        await flight.do("k", anyio.sleep, 0, timeout_ms=-1)  # type: ignore[arg-type]
    assert len(flight) == 0
    with pytest.raises(TypeError, match="label must be a str"):
        SingleFlight(3)  # type: ignore[arg-type]


def traceback_length(exc: BaseException) -> int:
    n, tb = 0, exc.__traceback__
    while tb is not None:
        n, tb = n + 1, tb.tb_next
    return n


async def test_shared_exception_traceback_stays_bounded_over_100_callers() -> None:
    # Regression: one exception object re-raised in every waiter grew two frames
    # per caller (4, 6, 8, ...), keeping every earlier caller's frames alive.
    flight: SingleFlight[str, int] = SingleFlight()
    gate = anyio.Event()
    lengths: list[int] = []
    errors: list[BaseException] = []

    async def boom() -> int:
        await gate.wait()
        raise ValueError("backend down")

    async def caller() -> None:
        try:
            await flight.do("k", boom)
        except ValueError as exc:
            lengths.append(traceback_length(exc))  # read inside the except block
            errors.append(exc)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for _ in range(100):
                tg.start_soon(caller)
            await wait_all_tasks_blocked()
            gate.set()
    assert len(errors) == 100
    assert all(e is errors[0] for e in errors)  # still the very same object
    assert max(lengths) <= 12, lengths
    assert max(lengths) - min(lengths) <= 3, lengths
    assert lengths[1:] == [lengths[1]] * 99  # every waiter sees the same depth
    # The frames of the function that raised are still there for every caller.
    assert errors[0].__traceback__ is not None


async def test_a_waiter_inside_an_except_block_does_not_rewrite_the_context() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    gate = anyio.Event()
    contexts: list[object] = []

    async def boom() -> int:
        await gate.wait()
        raise ValueError("backend down")

    async def caller(handling: bool) -> None:
        try:
            if handling:
                try:
                    raise KeyError("unrelated")
                except KeyError:
                    await flight.do("k", boom)
            else:
                await flight.do("k", boom)
        except ValueError as exc:
            contexts.append(exc.__context__)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(caller, False)  # the leader
            await wait_all_tasks_blocked()
            tg.start_soon(caller, True)  # waits while handling a KeyError
            await wait_all_tasks_blocked()
            tg.start_soon(caller, False)
            await wait_all_tasks_blocked()
            gate.set()
    assert contexts == [None, None, None]


async def test_sync_function_is_rejected_by_its_result_leaving_nothing() -> None:
    flight: SingleFlight[str, int] = SingleFlight()

    def sync() -> int:
        return 5

    with pytest.raises(
        TypeError, match=r"fn must be an async function .*sync.* returned 5"
    ):
        await flight.do("k", sync)  # type: ignore[arg-type]
    assert len(flight) == 0
    assert flight.statistics().executions == 0

    def raises_at_once() -> int:
        raise LookupError("before any await")

    with pytest.raises(LookupError):
        await flight.do("k", raises_at_once)  # type: ignore[arg-type]
    assert len(flight) == 0

    async def real() -> int:
        return 7

    # A plain function that returns an awaitable is fine.
    assert await flight.do("k", lambda: real()) == 7


async def test_forget_all_lets_every_key_run_anew() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    gate = anyio.Event()
    results: list[str] = []

    async def work(tag: str) -> str:
        if tag == "old":
            await gate.wait()
        return tag

    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: flight.do("a", work, "old"))
        tg.start_soon(lambda: flight.do("b", work, "old"))
        await wait_all_tasks_blocked()
        assert len(flight) == 2
        flight.forget_all()
        assert len(flight) == 0
        results.append(await flight.do("a", work, "new"))
        results.append(await flight.do("b", work, "new"))
        gate.set()
    assert results == ["new", "new"]
    assert len(flight) == 0


def test_is_weak_referenceable() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    assert weakref.ref(flight)() is flight
