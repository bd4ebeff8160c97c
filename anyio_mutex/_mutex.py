"""Mutex and AsyncMutex: exclusive locks on anyio.Lock, with timeouts and labels."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, NoReturn, TypeVar, final

import anyio
import anyio.lowlevel
from anyio import LockStatistics

from ._diagnostics import state as _diagnostics
from ._errors import MutexReentryError, MutexReleaseError, MutexTimeoutError
from ._validation import check_callable, check_label, check_timeout_ms
from ._waitgraph import (
    Holder,
    LockView,
    enter_wait,
    held_since,
    leave_wait,
    track,
)
from ._waitgraph import registry as _waitgraph

T = TypeVar("T")

try:
    # The backend's own clock is what anyio.current_time() calls after looking the
    # backend up (about 0.3 us per call); a bound mutex resolves it once.
    from anyio._core._eventloop import get_async_backend as _get_async_backend
except ImportError:  # pragma: no cover - a future anyio without it: same clock, slower
    _get_async_backend = None  # type: ignore[assignment]


def _resolve_clock() -> Callable[[], float]:
    if _get_async_backend is None:  # pragma: no cover
        return anyio.current_time
    try:
        clock: Callable[[], float] = _get_async_backend().current_time
    except Exception:  # no loop running (binding outside a loop): ask again later
        return anyio.current_time
    return clock


_REENTRY_TEXT = (
    "already held"  # anyio's message for re-entry, the same on both backends
)


class _OwnerLabel(str):
    """An owner label that also names its holder's task (set after a contended wait)."""

    task_id: int
    task_name: str

    def __new__(cls, label: str, wait: Any) -> _OwnerLabel:
        self = super().__new__(cls, label)
        self.task_id, self.task_name = wait.task_id, wait.task_name
        return self


#: Marks a lock that anyio has handed to a waiter which has not resumed yet; the owner
#: label is then looked up from the waiter table by the new holder's task id.
_HANDOFF: Final = object()


@dataclass(frozen=True)
class MutexStatistics(LockStatistics):
    """A snapshot of a mutex, extending :class:`anyio.LockStatistics`.

    The first three fields keep anyio's meanings, so code written for ``anyio.Lock``
    (``anyio.Condition`` included) works unchanged.

    :ivar bool locked: whether the mutex is held
    :ivar ~anyio.TaskInfo owner: the task holding the mutex, or ``None``
    :ivar int tasks_waiting: tasks queued in :meth:`Mutex.acquire`
    :ivar owner_label: the label of the acquisition that holds the mutex, or ``None``
    :ivar int total_acquisitions: successful acquisitions since construction
    :ivar int contended_acquisitions: successful acquisitions that had to wait
    :ivar int timeouts: acquisitions that gave up because their ``timeout_ms`` ran out
    :ivar float longest_wait_ms: the longest wait of a successful acquisition, in ms
    """

    owner_label: str | None
    total_acquisitions: int
    contended_acquisitions: int
    timeouts: int
    longest_wait_ms: float


class _MutexBase(anyio.Lock):
    __slots__ = (
        "_acquisitions",
        "_clock",
        "_contended",
        "_fast_acquire",
        "_held_gen",
        "_label",
        "_lock",
        "_longest_wait",
        "_order_node",
        "_owner_label",
        "_timeouts",
        "_waiting",
    )

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        # anyio.Lock.__new__ returns a backend lock; this class wraps one instead.
        return object.__new__(cls)

    def __init__(
        self,
        label: str = "mutex",
        *,
        fast_acquire: bool = False,
        _order_node: object = None,
    ) -> None:
        if not isinstance(label, str):
            raise TypeError(f"label must be a str, got {label!r}")
        if type(fast_acquire) is not bool:
            raise TypeError(f"fast_acquire must be a bool, got {fast_acquire!r}")
        self._label = label
        self._fast_acquire = fast_acquire
        # Bound on first use, so the mutex can be built at import time, outside a loop.
        self._lock: anyio.Lock | None = None
        self._clock: Callable[[], float] = anyio.current_time
        self._owner_label: object = None
        # Queued waiters with a label of their own: task id -> that label. Waiters
        # under the mutex's default label are not listed (that saves a task lookup).
        self._waiting: dict[int, str] = {}
        self._held_gen = 0
        # What the lock-order checker calls this lock (a KeyedMutex names its keys').
        self._order_node: object = self if _order_node is None else _order_node
        if _order_node is None:  # a KeyedMutex's keys are listed by the KeyedMutex
            track(self)
        self._acquisitions = 0
        self._contended = 0
        self._timeouts = 0
        self._longest_wait = 0.0

    def _bind(self) -> anyio.Lock:
        lock = self._lock = anyio.Lock(fast_acquire=self._fast_acquire)
        self._clock = _resolve_clock()
        return lock

    def _settle_owner(self, lock: anyio.Lock) -> None:
        # Called right after the inner lock was released (or an acquire was abandoned):
        # anyio hands the lock straight to the next waiter, if any.
        self._owner_label = _HANDOFF if lock.locked() else None

    async def acquire(
        self, *, timeout_ms: float | None = None, label: str | None = None
    ) -> None:
        """Acquire the mutex, waiting in FIFO order if it is held.

        The call is a checkpoint unless the mutex was built with ``fast_acquire=True``
        and is free (anyio's meaning). A timeout costs nothing unless the caller has to
        wait. If the caller is cancelled while waiting, it leaves the queue and holds
        nothing; an enclosing cancel scope's cancellation passes through unchanged.

        :param timeout_ms: give up after this many milliseconds; ``None`` or
            ``math.inf`` waits forever, ``0`` tries once without waiting
        :param label: the owner label for this acquisition (defaults to the mutex's)
        :raises MutexTimeoutError: if ``timeout_ms`` ran out
        :raises MutexReentryError: if the current task already holds the mutex
        :raises TypeError: if an argument has the wrong type
        :raises ValueError: if ``timeout_ms`` is negative or NaN
        """
        timeout_s = None if timeout_ms is None else check_timeout_ms(timeout_ms)
        if label is not None:
            check_label(label)
        lock = self._lock or self._bind()
        checker = _diagnostics.checker
        if checker is not None:
            checker.before_acquire(self._order_node, self._label)
        if lock.locked():
            await self._acquire_contended(lock, timeout_ms, timeout_s, label)
        else:
            self._owner_label = self._label if label is None else label
            try:
                await lock.acquire()
            except BaseException:
                self._settle_owner(lock)
                raise
            self._acquisitions += 1
        if checker is not None:
            checker.acquired(self._order_node, self._label)

    async def _acquire_contended(
        self,
        lock: anyio.Lock,
        timeout_ms: float | None,
        timeout_s: float | None,
        label: str | None,
    ) -> None:
        clock = self._clock
        start = clock()
        if timeout_s == 0:
            await self._fail_at_once(lock, timeout_ms, start)
        wait = None
        if _waitgraph.detect:
            # Raises DeadlockError (holding nothing new) if the holder waits, directly
            # or through others, for this task; a re-entry is left to anyio to report.
            wait = enter_wait(
                self,
                None,
                anyio.get_current_task(),
                self._label if label is None else label,
                bounded=timeout_s is not None,
                reentry=True,
            )
        task_id = None
        if label is not None and label != self._label:
            task_id = anyio.get_current_task().id if wait is None else wait.task_id
            self._waiting[task_id] = label
        try:
            if timeout_s is None:
                await lock.acquire()
            else:
                with anyio.CancelScope(deadline=start + timeout_s) as scope:
                    await lock.acquire()
                if scope.cancelled_caught:
                    # Our own deadline fired and anyio left nothing held or queued.
                    waited = clock() - start
                    owner = self.current_owner
                    # If an enclosing scope was cancelled too, its cancellation wins.
                    await anyio.lowlevel.checkpoint_if_cancelled()
                    self._timeouts += 1
                    raise MutexTimeoutError(
                        waited * 1000,
                        timeout_ms=timeout_ms,
                        label=self._label,
                        owner=owner,
                    )
        except RuntimeError as exc:
            # anyio raises this before parking, on both backends: never a deadlock.
            if _REENTRY_TEXT not in str(exc):
                raise
            raise MutexReentryError(self._label, self.current_owner) from None
        finally:
            if wait is not None:
                leave_wait(wait)
            if task_id is not None:
                del self._waiting[task_id]
        waited = clock() - start
        owner = self._label if label is None else label
        # A waiter knows its task: the label carries it, so the deadlock walk need
        # not ask the inner lock for its owner (a task lookup) while this lasts.
        self._owner_label = owner if wait is None else _OwnerLabel(owner, wait)
        self._acquisitions += 1
        self._contended += 1
        if waited > self._longest_wait:
            self._longest_wait = waited

    async def _fail_at_once(
        self, lock: anyio.Lock, timeout_ms: float | None, start: float
    ) -> NoReturn:
        # timeout_ms=0 on a held mutex: "try once" never queues.
        try:
            lock.acquire_nowait()  # cannot succeed (held); tells re-entry apart
        except anyio.WouldBlock:
            pass
        except RuntimeError:
            raise MutexReentryError(self._label, self.current_owner) from None
        owner = self.current_owner
        # Still a full checkpoint, so a retry loop cannot starve the event loop.
        await anyio.lowlevel.checkpoint()
        self._timeouts += 1
        raise MutexTimeoutError(
            (self._clock() - start) * 1000,
            timeout_ms=timeout_ms,
            label=self._label,
            owner=owner,
        )

    def acquire_nowait(self, *, label: str | None = None) -> None:
        """Acquire the mutex if it is free, without waiting.

        :param label: the owner label for this acquisition (defaults to the mutex's)
        :raises ~anyio.WouldBlock: if the mutex is held by another task
        :raises MutexReentryError: if the current task already holds the mutex
        """
        if label is not None:
            check_label(label)
        lock = self._lock or self._bind()
        try:
            lock.acquire_nowait()
        except RuntimeError:
            raise MutexReentryError(self._label, self.current_owner) from None
        self._owner_label = self._label if label is None else label
        self._acquisitions += 1
        checker = _diagnostics.checker
        if checker is not None:  # a try-lock cannot wait, so it adds no order edge
            checker.acquired(self._order_node, self._label)

    def release(self) -> None:
        """Release the mutex, handing it to the longest waiter if there is one.

        :raises MutexReleaseError: if the current task does not hold the mutex; the
            mutex is left unchanged
        """
        lock = self._lock
        if lock is None:
            raise MutexReleaseError(self._label, None, reason="it is not locked")
        owner = self._owner_label
        try:
            lock.release()
        except RuntimeError:
            if not lock.locked():
                raise MutexReleaseError(
                    self._label, None, reason="it is not locked"
                ) from None
            raise MutexReleaseError(
                self._label,
                self.current_owner,
                reason="the current task does not hold it",
            ) from None
        self._held_gen = 0
        # anyio hands the lock straight to the next waiter, if there is one.
        self._owner_label = _HANDOFF if lock.locked() else None
        checker = _diagnostics.checker
        if checker is not None:
            checker.released(self._order_node, owner)  # type: ignore[arg-type]

    def _wg_holders(self, key: object) -> Sequence[Holder]:
        # For the deadlock walk. Handed to a waiter that has not resumed yet, the
        # lock's holder is about to run: no edge. After a contended wait the label
        # names the holder's task; else the inner lock is asked (a task lookup).
        label = self._owner_label
        if label is _HANDOFF:
            return ()
        if type(label) is _OwnerLabel:
            since = held_since(label.task_id, self._order_node)
            return (Holder(label.task_id, label.task_name, str(label), since),)
        return self._holders()

    def _holders(self) -> Sequence[Holder]:
        # The inner lock knows its owner, also a waiter it was just handed to.
        lock = self._lock
        owner = None if lock is None else lock.statistics().owner
        if owner is None:
            return ()
        since = held_since(owner.id, self._order_node)
        return (Holder(owner.id, owner.name, self.current_owner, since),)

    def _wg_label(self, key: object) -> str:
        return self._label

    def _wg_locks(self) -> Iterator[LockView]:
        yield LockView(type(self).__name__, self._label, self, None, self._holders())

    def locked(self) -> bool:
        """Return ``True`` if the mutex is held."""
        lock = self._lock
        return lock is not None and lock.locked()

    @property
    def is_locked(self) -> bool:
        """Whether the mutex is held (the same as :meth:`locked`)."""
        return self.locked()

    @property
    def label(self) -> str:
        """The mutex's own label, used in errors and as the default owner label."""
        return self._label

    @property
    def current_owner(self) -> str | None:
        """The label of the acquisition holding the mutex, or ``None`` if it is free."""
        owner = self._owner_label
        if owner is _HANDOFF:
            lock = self._lock
            assert lock is not None
            info = lock.statistics().owner
            return None if info is None else self._waiting.get(info.id, self._label)
        if type(owner) is _OwnerLabel:
            return str(owner)  # a plain str, for statistics, errors and pickles
        return owner  # type: ignore[return-value]

    @property
    def total_acquisitions(self) -> int:
        """How many acquisitions have succeeded since construction."""
        return self._acquisitions

    def statistics(self) -> MutexStatistics:
        """Return a snapshot of the mutex's state and counters."""
        lock = self._lock
        base = lock.statistics() if lock is not None else LockStatistics(False, None, 0)
        return MutexStatistics(
            locked=base.locked,
            owner=base.owner,
            tasks_waiting=base.tasks_waiting,
            owner_label=self.current_owner,
            total_acquisitions=self._acquisitions,
            contended_acquisitions=self._contended,
            timeouts=self._timeouts,
            longest_wait_ms=self._longest_wait * 1000,
        )

    def hold(
        self, *, timeout_ms: float | None = None, label: str | None = None
    ) -> _Hold:
        """Return an async context manager that holds the mutex for its body.

        ``async with mutex.hold(timeout_ms=100, label="job"):`` acquires as
        :meth:`acquire` does and releases on exit, also when the body is cancelled.

        :raises TypeError: if an argument has the wrong type (raised here, at once)
        :raises ValueError: if ``timeout_ms`` is negative or NaN (raised here, at once)
        """
        check_timeout_ms(timeout_ms)
        check_label(label)
        return _Hold(self, timeout_ms, label)

    async def with_lock(
        self,
        fn: Callable[[], Awaitable[T]],
        *,
        timeout_ms: float | None = None,
        label: str | None = None,
    ) -> T:
        """Await ``fn()`` while holding the mutex and return its result.

        The mutex is released when ``fn()`` returns, raises or is cancelled.

        :param fn: a zero-argument callable returning an awaitable
        :raises MutexTimeoutError: if ``timeout_ms`` ran out before the mutex was free
        :raises TypeError: if ``fn`` is not callable
        """
        check_callable(fn, "fn")
        await _MutexBase.acquire(self, timeout_ms=timeout_ms, label=label)
        try:
            return await fn()
        finally:
            self.release()

    async def __aenter__(self) -> None:
        await _MutexBase.acquire(self)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        state = f"held by {self.current_owner!r}" if self.locked() else "free"
        return f"<{type(self).__name__} {self._label!r} {state}>"


@final
class _Hold:
    __slots__ = ("_label", "_mutex", "_timeout_ms")

    def __init__(
        self, mutex: _MutexBase, timeout_ms: float | None, label: str | None
    ) -> None:
        self._mutex = mutex
        self._timeout_ms = timeout_ms
        self._label = label

    async def __aenter__(self) -> None:
        await _MutexBase.acquire(
            self._mutex, timeout_ms=self._timeout_ms, label=self._label
        )

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        self._mutex.release()


@final
class Mutex(_MutexBase):
    """An exclusive, FIFO-fair async lock on :class:`anyio.Lock`, for asyncio and trio.

    Use it where ``anyio.Lock`` would do but you also want acquire timeouts
    (``timeout_ms``), owner labels for debugging, acquisition counters and one error
    type per misuse on every backend. ``await m.acquire()`` / ``m.release()``,
    ``async with m:`` and ``await m.with_lock(fn)`` are the ways to hold it.

    It can be built at import time and binds to the event loop on first use. It is not
    re-entrant: a task that acquires it twice gets :class:`MutexReentryError` at once.
    It is an ``anyio.Lock``, so ``anyio.Condition(mutex)`` works.

    :param label: a name for the mutex, shown in errors and used as the default owner
        label
    :param fast_acquire: anyio's option: if ``True``, an uncontended acquire does not
        yield to the scheduler (it still raises if the caller is cancelled)
    """

    __slots__ = ()


@final
class AsyncMutex(_MutexBase):
    """A mutex whose :meth:`acquire` returns the function that releases it.

    Everything :class:`Mutex` offers, plus the API of the popular Mutex/Lock pattern:
    ``release = await m.acquire(timeout_ms=..., label=...)`` then ``release()``,
    ``async with m.hold(...)``, ``await m.with_lock(fn)``, and the ``is_locked``,
    ``current_owner`` and ``total_acquisitions`` properties. Each release function
    belongs to one acquisition: calling it twice raises :class:`MutexReleaseError`.

    :param label: a name for the mutex, shown in errors and used as the default owner
        label
    :param fast_acquire: anyio's option: if ``True``, an uncontended acquire does not
        yield to the scheduler (it still raises if the caller is cancelled)
    """

    __slots__ = ()

    def _releaser(self) -> Callable[[], None]:
        # One closure per acquisition: a stale or repeated call is told apart from
        # the current acquisition by its generation number.
        gen = self._held_gen = self._acquisitions
        release = self.release

        def release_once() -> None:
            if self._held_gen != gen:
                raise MutexReleaseError(
                    self._label,
                    self.current_owner,
                    reason="this acquisition was already released",
                )
            release()

        return release_once

    async def acquire(  # type: ignore[override]
        self, *, timeout_ms: float | None = None, label: str | None = None
    ) -> Callable[[], None]:
        """Acquire the mutex and return a zero-argument function that releases it.

        Waits in FIFO order as :meth:`Mutex.acquire` does, with the same timeout,
        cancellation and checkpoint rules.

        :param timeout_ms: give up after this many milliseconds; ``None`` or
            ``math.inf`` waits forever, ``0`` tries once without waiting
        :param label: the owner label for this acquisition (defaults to the mutex's)
        :return: the release function of this acquisition
        :raises MutexTimeoutError: if ``timeout_ms`` ran out
        :raises MutexReentryError: if the current task already holds the mutex
        :raises TypeError: if an argument has the wrong type
        :raises ValueError: if ``timeout_ms`` is negative or NaN
        """
        # The fast path of _MutexBase.acquire, inlined: an extra coroutine frame would
        # cost ~10% of an uncontended fast_acquire lock.
        timeout_s = None if timeout_ms is None else check_timeout_ms(timeout_ms)
        if label is not None:
            check_label(label)
        lock = self._lock or self._bind()
        checker = _diagnostics.checker
        if checker is not None:
            checker.before_acquire(self._order_node, self._label)
        if lock.locked():
            await self._acquire_contended(lock, timeout_ms, timeout_s, label)
        else:
            self._owner_label = self._label if label is None else label
            try:
                await lock.acquire()
            except BaseException:
                self._settle_owner(lock)
                raise
            self._acquisitions += 1
        if checker is not None:
            checker.acquired(self._order_node, self._label)
        return self._releaser()

    def acquire_nowait(self, *, label: str | None = None) -> Callable[[], None]:  # type: ignore[override]
        """Acquire the mutex if it is free, without waiting; return its releaser.

        :raises ~anyio.WouldBlock: if the mutex is held by another task
        :raises MutexReentryError: if the current task already holds the mutex
        """
        _MutexBase.acquire_nowait(self, label=label)
        return self._releaser()
