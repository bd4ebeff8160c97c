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
    # The label errors and default owners show for a lock built with make(label).
    error_label: Callable[[str], str] = lambda label: label
    # How many may hold it at once, and whether a hold belongs to the acquiring task
    # (a semaphore's permit does not: any task may release it, and asking again waits).
    limit: int = 1
    task_owned: bool = True

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


async def _keyed_acquire(k: anyio_mutex.KeyedMutex[str], **kw: Any) -> Release:
    return await k.acquire("k", **kw)


async def _rw_write_acquire(rw: anyio_mutex.RWLock, **kw: Any) -> Release:
    return await rw.acquire_write(**kw)


KEYED = LockKind(
    name="KeyedMutex",
    make=lambda label="keyed": anyio_mutex.KeyedMutex(label),
    acquire=_keyed_acquire,
    hold=lambda k, **kw: k.hold("k", **kw),
    locked=lambda k: k.locked("k"),
    owner=lambda k: k.current_owner("k"),
    waiting=lambda k: k.statistics().tasks_waiting,
    acquisitions=lambda k: k.statistics().total_acquisitions,
    error_label=lambda label: f"{label}['k']",
)

RW_WRITE = LockKind(
    name="RWLock-write",
    make=lambda label="rwlock": anyio_mutex.RWLock(label),
    acquire=_rw_write_acquire,
    hold=lambda rw, **kw: rw.write(**kw),
    locked=lambda rw: rw.locked(),
    owner=lambda rw: rw.writer,
    waiting=lambda rw: (s := rw.statistics()).readers_waiting + s.writers_waiting,
    acquisitions=lambda rw: rw.statistics().write_acquisitions,
)


def _semaphore_kind(name: str, limit: int, **make_kw: Any) -> LockKind:
    return LockKind(
        name=name,
        make=lambda label="semaphore": anyio_mutex.Semaphore(
            limit, label=label, **make_kw
        ),
        acquire=lambda s, **kw: s.acquire(**kw),
        hold=lambda s, **kw: s.hold(**kw),
        locked=lambda s: bool(s.holders()),
        owner=lambda s: next(iter(s.holders()), None),  # the oldest permit
        waiting=lambda s: s.statistics().tasks_waiting,
        acquisitions=lambda s: s.statistics().total_acquisitions,
        limit=limit,
        task_owned=False,
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
    KEYED,
    RW_WRITE,
    # A one-permit semaphore is an exclusive lock, except that permits are not owned.
    _semaphore_kind("Semaphore", 1),
    _semaphore_kind("Semaphore-fast", 1, fast_acquire=True),
]

#: Kinds that admit more than one holder, for tests that only check "at most limit".
SHARED_KINDS: list[LockKind] = [_semaphore_kind("Semaphore-3", 3)]


async def _rw_read_acquire(rw: anyio_mutex.RWLock, **kw: Any) -> Release:
    return await rw.acquire_read(**kw)


#: The read side of RWLock: shared, so not in KINDS (the exclusive contract).
RW_READ = LockKind(
    name="RWLock-read",
    make=lambda label="rwlock": anyio_mutex.RWLock(label),
    acquire=_rw_read_acquire,
    hold=lambda rw, **kw: rw.read(**kw),
    locked=lambda rw: rw.locked(),
    owner=lambda rw: ", ".join(rw.readers) or None,
    waiting=lambda rw: (s := rw.statistics()).readers_waiting + s.writers_waiting,
    acquisitions=lambda rw: rw.statistics().read_acquisitions,
)

#: Every way to hold every lock this package has.
ALL_HOLDS: list[LockKind] = [*KINDS, RW_READ]
BY_NAME: dict[str, LockKind] = {kind.name: kind for kind in ALL_HOLDS}
#: The locks whose holds belong to a task (all but the semaphores: any task may
#: release a permit, tests/test_semaphore.py has their own rules).
TASK_OWNED: list[LockKind] = [kind for kind in ALL_HOLDS if kind.task_owned]
TASK_OWNED_KINDS: list[LockKind] = [kind for kind in KINDS if kind.task_owned]
