"""Mutex, AsyncMutex, KeyedMutex and RWLock as user code uses them."""

from __future__ import annotations

from collections.abc import Callable

import anyio
from typing_extensions import assert_type

from anyio_mutex import (
    AsyncMutex,
    KeyedMutex,
    KeyedMutexStatistics,
    Mutex,
    MutexStatistics,
    MutexTimeoutError,
    RWLock,
    RWLockStatistics,
)

mutex = Mutex("orders")
assert_type(mutex, Mutex)
amutex = AsyncMutex("jobs", fast_acquire=True)
assert_type(amutex, AsyncMutex)
keyed: KeyedMutex[int] = KeyedMutex("users")
rw = RWLock("config")
assert_type(rw, RWLock)

Mutex(3)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
AsyncMutex(fast_acquire="yes")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]


async def compute() -> int:
    return 1


async def use_locks() -> None:
    await mutex.acquire(timeout_ms=10, label="x")
    mutex.release()
    async with mutex:
        pass
    async with mutex.hold(timeout_ms=5):
        pass
    assert_type(await mutex.with_lock(compute), int)

    release = await amutex.acquire(timeout_ms=100, label="job")
    assert_type(release, Callable[[], None])
    release()
    assert_type(amutex.acquire_nowait(), Callable[[], None])
    assert_type(amutex.current_owner, str | None)
    assert_type(amutex.is_locked, bool)
    assert_type(amutex.statistics(), MutexStatistics)
    assert_type(await amutex.with_lock(compute, timeout_ms=1), int)
    await amutex.acquire(timeout_ms="5")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]

    async with keyed.hold(7, timeout_ms=50):
        pass
    assert_type(keyed.locked(7), bool)
    assert_type(keyed.statistics(), KeyedMutexStatistics)
    async with keyed.hold("7"):  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
        pass

    async with rw.read():
        pass
    async with rw.write(timeout_ms=10, label="writer"):
        pass
    assert_type(rw.readers, list[str])
    assert_type(rw.statistics(), RWLockStatistics)

    try:
        async with amutex.hold(timeout_ms=0):
            pass
    except MutexTimeoutError as exc:
        assert_type(exc.waited_ms, float)
        assert_type(exc.owner, str | None)

    cond = anyio.Condition(mutex)
    async with cond:
        cond.notify_all()
