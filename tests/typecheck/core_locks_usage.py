"""User-style code for the type checkers (mypy --strict and pyright --strict).

Not collected by pytest; ``.ci/run`` checks it with both checkers. Each
``assert_type`` pins what a user's editor infers.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from typing_extensions import assert_type

from anyio_mutex import AsyncMutex, KeyedMutex, Mutex, MutexStatistics, RWLock


async def locks() -> None:
    m = Mutex("db", fast_acquire=True)
    assert_type(m, Mutex)  # pyright saw Any: __new__ returned Any
    assert_type(await m.acquire(timeout_ms=5), None)
    assert_type(m.hold(label="job"), AbstractAsyncContextManager[None])
    assert_type(m.statistics(), MutexStatistics)

    a = AsyncMutex("cache")
    assert_type(a, AsyncMutex)
    assert_type(await a.acquire(), Callable[[], None])
    assert_type(a.acquire_nowait(), Callable[[], None])
    assert_type(a.hold(), AbstractAsyncContextManager[None])

    keyed: KeyedMutex[int] = KeyedMutex("users")
    assert_type(await keyed.acquire(7), Callable[[], None])
    assert_type(keyed.hold(7), AbstractAsyncContextManager[None])

    rw = RWLock("config")
    assert_type(rw.read(), AbstractAsyncContextManager[None])
    assert_type(await rw.acquire_write(), Callable[[], None])


def errors() -> None:
    Mutex(3)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
