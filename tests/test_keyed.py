"""KeyedMutex: same key exclusive and FIFO, different keys independent, no leaks."""

from __future__ import annotations

import random

import anyio
import pytest
from anyio import wait_all_tasks_blocked
from anyio.lowlevel import checkpoint

from anyio_mutex import KeyedMutex, MutexReentryError, MutexTimeoutError

pytestmark = pytest.mark.anyio


async def test_different_keys_are_independent() -> None:
    keyed: KeyedMutex[str] = KeyedMutex()
    release_a = await keyed.acquire("a", label="holder-a")
    got_b = anyio.Event()

    async def take_b() -> None:
        async with keyed.hold("b", timeout_ms=0, label="b"):  # never waits
            assert keyed.current_owner("b") == "b"
            got_b.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(take_b)
    assert got_b.is_set()
    assert keyed.locked("a")
    assert not keyed.locked("b")
    assert keyed.current_owner("a") == "holder-a"
    release_a()
    assert len(keyed) == 0


async def test_same_key_is_exclusive_fifo_and_labels_follow() -> None:
    keyed: KeyedMutex[int] = KeyedMutex("users")
    order: list[int] = []

    async def waiter(i: int) -> None:
        async with keyed.hold(7, label=f"w{i}"):
            assert keyed.current_owner(7) == f"w{i}"
            order.append(i)

    with anyio.fail_after(5):
        release = await keyed.acquire(7, label="first")
        async with anyio.create_task_group() as tg:
            for i in range(10):
                tg.start_soon(waiter, i)
                await wait_all_tasks_blocked()
            stats = keyed.statistics()
            assert (stats.keys, stats.keys_held, stats.tasks_waiting) == (1, 1, 10)
            release()
    assert order == list(range(10))
    stats = keyed.statistics()
    assert (stats.keys, stats.keys_held, stats.tasks_waiting) == (0, 0, 0)
    assert stats.total_acquisitions == 11
    assert stats.contended_acquisitions == 10


async def test_timeout_and_reentry_on_a_key() -> None:
    keyed: KeyedMutex[str] = KeyedMutex("files")
    release = await keyed.acquire("x", label="writer")
    with pytest.raises(
        MutexReentryError, match=r"Lock \"files\['x'\]\" is already held"
    ):
        await keyed.acquire("x")
    caught: list[MutexTimeoutError] = []

    async def late() -> None:
        with pytest.raises(MutexTimeoutError) as exc_info:
            await keyed.acquire("x", timeout_ms=10)
        caught.append(exc_info.value)

    async with anyio.create_task_group() as tg:
        tg.start_soon(late)
    assert caught[0].label == "files['x']"
    assert caught[0].owner == "writer"
    assert keyed.statistics().timeouts == 1
    assert keyed.statistics().tasks_waiting == 0
    release()
    assert len(keyed) == 0
    assert keyed.statistics().timeouts == 1  # kept after the key's entry is gone


async def test_bad_arguments_change_nothing() -> None:
    keyed: KeyedMutex[object] = KeyedMutex()
    with pytest.raises(TypeError, match="unhashable"):
        await keyed.acquire([1, 2])
    with pytest.raises(ValueError, match="timeout_ms must be >= 0"):
        await keyed.acquire("k", timeout_ms=-1)
    with pytest.raises(TypeError, match="label must be a str or None"):
        keyed.hold("k", label=3)  # type: ignore[arg-type]
    assert len(keyed) == 0
    with pytest.raises(ValueError, match="lock_order must be 'key' or 'instance'"):
        KeyedMutex(lock_order="bogus")  # type: ignore[arg-type]


@pytest.mark.heavy
async def test_20000_keys_with_random_cancellations_leave_no_entries() -> None:
    seed = 11
    print(f"seed={seed}")
    rng = random.Random(seed)
    keyed: KeyedMutex[int] = KeyedMutex()
    acquired = 0

    async def worker(first: int) -> None:
        nonlocal acquired
        for i in range(first, first + 20):
            key = i % 10_000  # two tasks' worth of traffic per key: some contention
            with anyio.CancelScope() as scope:
                if rng.random() < 0.2:
                    scope.cancel()  # cancelled before, while or after queueing
                try:
                    async with keyed.hold(key, timeout_ms=rng.choice([None, 0, 1])):
                        acquired += 1
                        await checkpoint()
                except MutexTimeoutError:
                    pass

    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            # 20,000 acquisitions over 10,000 keys (it was 100,000 over 50,000:
            # the same property, at a fifth of the ~60 s it cost the suite).
            for first in range(0, 20_000, 20):
                tg.start_soon(worker, first)
    stats = keyed.statistics()
    assert len(keyed) == 0
    assert (stats.keys, stats.keys_held, stats.tasks_waiting) == (0, 0, 0)
    assert stats.total_acquisitions == acquired
    assert 0 < acquired < 20_000


@pytest.mark.heavy  # uvloop changes nothing in this bookkeeping
async def test_randomized_stress_over_keys_keeps_exclusion() -> None:
    seed = 5
    print(f"seed={seed}")
    rng = random.Random(seed)
    keyed: KeyedMutex[int] = KeyedMutex()
    inside: dict[int, int] = {}

    async def worker() -> None:
        for _ in range(200):
            key = rng.randrange(8)
            try:
                async with keyed.hold(key, timeout_ms=rng.choice([None, 1, 5])):
                    inside[key] = inside.get(key, 0) + 1
                    assert inside[key] == 1, f"two holders of key {key}"
                    for _ in range(rng.randrange(3)):
                        await checkpoint()
                    inside[key] -= 1
            except MutexTimeoutError:
                pass
            assert all(v in (0, 1) for v in inside.values())

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for _ in range(30):
                tg.start_soon(worker)
    assert len(keyed) == 0
