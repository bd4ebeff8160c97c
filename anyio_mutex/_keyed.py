"""KeyedMutex: one exclusive lock per key, created on demand, removed when unused."""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar, final

from ._hold import Hold
from ._mutex import AsyncMutex
from ._validation import check_bool, check_hashable, check_label, check_timeout_ms
from ._waitgraph import LockView, track

K = TypeVar("K", bound=Hashable)


@final
class _Entry:
    __slots__ = ("mutex", "refs")

    def __init__(self, mutex: AsyncMutex) -> None:
        self.mutex = mutex
        self.refs = 0  # holders + waiters; the entry is dropped when this reaches 0


@final
@dataclass(frozen=True)
class KeyedMutexStatistics:
    """A snapshot of a :class:`KeyedMutex`.

    :ivar int keys: keys with a holder or a waiter (entries in memory)
    :ivar int keys_held: keys whose lock is held
    :ivar int tasks_waiting: tasks queued on some key
    :ivar int total_acquisitions: successful acquisitions since construction
    :ivar int contended_acquisitions: successful acquisitions that had to wait
    :ivar int timeouts: acquisitions that gave up because ``timeout_ms`` ran out
    """

    keys: int
    keys_held: int
    tasks_waiting: int
    total_acquisitions: int
    contended_acquisitions: int
    timeouts: int


@final
class KeyedMutex(Generic[K]):
    """One exclusive, FIFO-fair lock per key: same key exclusive, different keys independent.

    Use it to serialize work per user, per file or per account without a lock object for
    each: ``async with keyed.hold(user_id):``. Each key's lock is an
    :class:`AsyncMutex` created on first use and removed as soon as its last holder or
    waiter leaves, including a waiter that was cancelled or timed out, so memory follows
    the keys in use, not the keys ever seen. Timeouts, labels, cancellation, re-entry and
    release rules are those of :class:`AsyncMutex`.

    :param label: a name shown in errors; a key's lock is labelled ``"{label}[{key!r}]"``
    :param fast_acquire: anyio's option, for every key's lock
    :param lock_order: how the lock-order checker sees this lock: ``"key"`` (each key is
        its own lock: catches key-order inversions, remembers every key it sees while
        enabled) or ``"instance"`` (all keys are one lock; nesting keys is not checked)
    """

    __slots__ = (
        "__weakref__",
        "_acquisitions",
        "_contended",
        "_entries",
        "_fast_acquire",
        "_held",
        "_label",
        "_lock_order",
        "_timeouts",
    )

    def __init__(
        self,
        label: str = "keyed",
        *,
        fast_acquire: bool = False,
        lock_order: Literal["key", "instance"] = "key",
    ) -> None:
        check_label(label, optional=False)
        check_bool(fast_acquire, "fast_acquire")
        if lock_order not in ("key", "instance"):
            raise ValueError(
                f"lock_order must be 'key' or 'instance', got {lock_order!r}"
            )
        self._label = label
        self._fast_acquire = fast_acquire
        self._lock_order = lock_order
        self._entries: dict[K, _Entry] = {}
        self._held = 0
        # Counters of entries already dropped; live entries keep their own.
        self._acquisitions = self._contended = self._timeouts = 0
        track(self)

    def _wg_locks(self) -> Iterator[LockView]:
        # Each key's lock is an AsyncMutex that waiters name in the wait-for graph.
        for entry in list(self._entries.values()):
            mutex = entry.mutex
            yield LockView("KeyedMutex", mutex.label, mutex, None, mutex._holders())

    def _entry(self, key: K) -> _Entry:
        entry = self._entries.get(key)
        if entry is None:
            mutex = AsyncMutex(
                f"{self._label}[{key!r}]",
                fast_acquire=self._fast_acquire,
                _order_node=(self, key) if self._lock_order == "key" else self,
            )
            entry = self._entries[key] = _Entry(mutex)
        return entry

    def _leave(self, key: K, entry: _Entry) -> None:
        entry.refs -= 1
        if entry.refs == 0:
            del self._entries[key]
            # Fold the key's counters in; statistics() would build two snapshots (~2 us).
            mutex = entry.mutex
            self._acquisitions += mutex._acquisitions
            self._contended += mutex._contended
            self._timeouts += mutex._timeouts

    async def acquire(
        self, key: K, *, timeout_ms: float | None = None, label: str | None = None
    ) -> Callable[[], None]:
        """Acquire the lock of ``key`` and return a zero-argument function releasing it.

        :param key: any hashable key
        :param timeout_ms: give up after this many milliseconds (see
            :meth:`AsyncMutex.acquire`)
        :param label: the owner label of this acquisition
        :raises MutexTimeoutError: if ``timeout_ms`` ran out
        :raises MutexReentryError: if the current task already holds this key
        :raises TypeError: if ``key`` is not hashable, or an argument has a bad type
        :raises ValueError: if ``timeout_ms`` is negative or NaN
        """
        check_timeout_ms(timeout_ms)
        check_label(label)
        check_hashable(key)  # before anything changes
        entry = self._entry(key)
        entry.refs += 1
        try:
            release_mutex = await entry.mutex.acquire(
                timeout_ms=timeout_ms, label=label
            )
        except BaseException:
            self._leave(key, entry)
            raise
        self._held += 1

        def release() -> None:
            release_mutex()  # raises, changing nothing, if misused
            self._held -= 1
            self._leave(key, entry)

        return release

    def hold(
        self, key: K, *, timeout_ms: float | None = None, label: str | None = None
    ) -> AbstractAsyncContextManager[None]:
        """Return an async context manager holding the lock of ``key`` for its body.

        Each ``async with`` needs its own ``hold()`` call.

        :raises TypeError: if an argument has a bad type (raised here, at once)
        :raises ValueError: if ``timeout_ms`` is negative or NaN (raised here, at once)
        """
        check_timeout_ms(timeout_ms)
        check_label(label)
        check_hashable(key)
        return Hold(
            functools.partial(self.acquire, key, timeout_ms=timeout_ms, label=label)
        )

    def locked(self, key: K) -> bool:
        """Whether the lock of ``key`` is held."""
        entry = self._entries.get(key)
        return entry is not None and entry.mutex.locked()

    def current_owner(self, key: K) -> str | None:
        """The owner label of the acquisition holding ``key``, or ``None`` if it is free."""
        entry = self._entries.get(key)
        return None if entry is None else entry.mutex.current_owner

    def __len__(self) -> int:
        """The number of keys with a holder or a waiter."""
        return len(self._entries)

    def statistics(self) -> KeyedMutexStatistics:
        """Return a snapshot of the counters (walks the live keys)."""
        acquisitions, contended, timeouts = (
            self._acquisitions,
            self._contended,
            self._timeouts,
        )
        for entry in self._entries.values():
            acquisitions += entry.mutex._acquisitions
            contended += entry.mutex._contended
            timeouts += entry.mutex._timeouts
        refs = sum(entry.refs for entry in self._entries.values())
        return KeyedMutexStatistics(
            keys=len(self._entries),
            keys_held=self._held,
            tasks_waiting=refs - self._held,
            total_acquisitions=acquisitions,
            contended_acquisitions=contended,
            timeouts=timeouts,
        )

    def __repr__(self) -> str:
        return (
            f"<KeyedMutex {self._label!r} keys={len(self._entries)} held={self._held}>"
        )
