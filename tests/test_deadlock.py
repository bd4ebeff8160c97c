"""Deadlock detection through the real locks and fetches, on every backend."""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import pytest
from anyio import wait_all_tasks_blocked

from anyio_mutex import MutexTimeoutError, RefreshCache
from anyio_mutex._waitgraph import DeadlockError, registry

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def _registry_left_clean() -> Iterator[None]:
    yield
    assert registry.waiting == {}, "a wait was left registered"


# --- fetches ----------------------------------------------------------------------


async def test_fetch_awaiting_its_own_key_raises_at_once() -> None:
    cache: RefreshCache[str, int] = RefreshCache(label="users")

    async def fetch() -> int:
        # A long timeout: without detection this would hang for a minute.
        return await cache.get_or_refresh("u1", fetch, timeout_ms=60_000)

    with anyio.fail_after(5):
        with pytest.raises(DeadlockError) as info:
            await cache.get_or_refresh("u1", fetch)
    (step,) = info.value.cycle
    assert step.waits_for == "users: the fetch of key 'u1'"
    assert step.task == step.holder_task


async def test_two_fetchers_waiting_for_each_others_keys() -> None:
    cache: RefreshCache[str, str] = RefreshCache(label="pair")
    a_started, b_started = anyio.Event(), anyio.Event()
    errors: list[DeadlockError] = []

    async def fetch_a() -> str:
        a_started.set()
        await b_started.wait()  # "b" has its own leader now
        b = await cache.get_or_refresh("b", fetch_b)
        return "a+" + b

    async def fetch_b() -> str:
        b_started.set()
        await wait_all_tasks_blocked()  # the leader of "a" is parked on "b" now
        try:
            return "b+" + await cache.get_or_refresh("a", fetch_a)
        except DeadlockError as exc:
            errors.append(exc)
            return "b"  # give up on "a": the leader of "a" then gets this value

    results: dict[str, str] = {}

    async def get(key: str) -> None:
        results[key] = await cache.get_or_refresh(
            key, fetch_a if key == "a" else fetch_b
        )

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(get, "a")
            await a_started.wait()
            tg.start_soon(get, "b")
    (error,) = errors
    assert {s.waits_for for s in error.cycle} == {
        "pair: the fetch of key 'a'",
        "pair: the fetch of key 'b'",
    }
    assert results == {"a": "a+b", "b": "b"}


async def test_fetch_waits_with_timeout_still_time_out_without_a_cycle() -> None:
    cache: RefreshCache[str, int] = RefreshCache(label="slow")
    release = anyio.Event()

    async def slow() -> int:
        await release.wait()
        return 1

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(cache.get_or_refresh, "k", slow)
            await wait_all_tasks_blocked()
            with pytest.raises(MutexTimeoutError):
                await cache.get_or_refresh("k", slow, timeout_ms=20)
            release.set()
