"""Adapters that let one contract suite drive every exclusive lock type."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import anyio_mutex

Release = Callable[[], None]


@dataclass(frozen=True)
class LockKind:
    """How to drive one exclusive lock type through its public API."""

    name: str
    make: Callable[..., Any]
    acquire: Callable[..., Awaitable[Release]]
    hold: Callable[..., AbstractAsyncContextManager[Any]]
    locked: Callable[[Any], bool]
    owner: Callable[[Any], str | None]
    waiting: Callable[[Any], int]
    acquisitions: Callable[[Any], int]

    def __str__(self) -> str:
        return self.name


async def _mutex_acquire(m: anyio_mutex.Mutex, **kw: Any) -> Release:
    await m.acquire(**kw)
    return m.release


async def _async_mutex_acquire(m: anyio_mutex.AsyncMutex, **kw: Any) -> Release:
    return await m.acquire(**kw)


def _mutex_kind(name: str, cls: Any, acquire: Any, **make_kw: Any) -> LockKind:
    return LockKind(
        name=name,
        make=lambda label="mutex": cls(label, **make_kw),
        acquire=acquire,
        hold=lambda m, **kw: m.hold(**kw),
        locked=lambda m: m.locked(),
        owner=lambda m: m.current_owner,
        waiting=lambda m: m.statistics().tasks_waiting,
        acquisitions=lambda m: m.total_acquisitions,
    )


KINDS: list[LockKind] = [
    _mutex_kind("Mutex", anyio_mutex.Mutex, _mutex_acquire),
    _mutex_kind("Mutex-fast", anyio_mutex.Mutex, _mutex_acquire, fast_acquire=True),
    _mutex_kind("AsyncMutex", anyio_mutex.AsyncMutex, _async_mutex_acquire),
    _mutex_kind(
        "AsyncMutex-fast",
        anyio_mutex.AsyncMutex,
        _async_mutex_acquire,
        fast_acquire=True,
    ),
]
