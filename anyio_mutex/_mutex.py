"""Mutex and AsyncMutex: exclusive locks on anyio.Lock, with timeouts and labels."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from types import TracebackType
from typing import Final, TypeVar, cast, final

import anyio
from anyio import LockStatistics

from ._diagnostics import state as _diagnostics
from ._errors import (
    ALREADY_RELEASED,
    NO_EVENT_LOOP,
    NOT_HOLDER,
    NOT_LOCKED,
    OTHER_LOOP,
    MutexLoopError,
    MutexReentryError,
    MutexReleaseError,
)
from ._hold import Backend, Hold, current_task, deadline_fired, running_loop
from ._validation import check_bool, check_callable, check_label, check_timeout_ms
from ._waitgraph import (
    Holder,
    LockView,
    _Wait,
    enter_wait,
    held_since,
    leave_wait,
    track,
)
from ._waitgraph import registry as _waitgraph

T = TypeVar("T")
_M = TypeVar("_M", bound="_MutexBase")


def _plain_label(owner: object) -> str | None:
    # After a contended wait the owner label is (label, the wait record).
    if type(owner) is tuple:
        return cast("tuple[str, _Wait]", owner)[0]
    return cast("str | None", owner)


#: Marks a lock that anyio has handed to a waiter which has not resumed yet; the owner
#: label is then looked up from the waiter table by the new holder's task id.
_HANDOFF: Final = object()


@dataclass(frozen=True, kw_only=True)
class MutexStatistics(LockStatistics):
    """A snapshot of a mutex, extending :class:`anyio.LockStatistics`.

    The first three fields keep anyio's meanings, so code written for ``anyio.Lock``
    (``anyio.Condition`` included) works unchanged. The fields added here are
    keyword-only, so a field anyio adds to its own class cannot clash with them.

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
        "_backend",
        "_claims",
        "_clock",
        "_contended",
        "_fast_acquire",
        "_label",
        "_lock",
        "_longest_wait",
        "_loop",
        "_order_node",
        "_owner_label",
        "_timeouts",
        "_waiting",
    )

    def __new__(
        cls: type[_M],
        label: str = "mutex",
        *,
        fast_acquire: bool = False,
        _order_node: object = None,
    ) -> _M:
        # anyio.Lock.__new__ returns a backend lock; this class wraps one instead.
        return object.__new__(cls)

    def __init__(
        self,
        label: str = "mutex",
        *,
        fast_acquire: bool = False,
        _order_node: object = None,
    ) -> None:
        check_label(label, optional=False)
        check_bool(fast_acquire, "fast_acquire")
        self._label = label
        self._fast_acquire = fast_acquire
        # Bound on first use, so the mutex can be built at import time, outside a loop;
        # rebound when it moves, free, to another event loop or backend.
        self._lock: anyio.Lock | None = None
        # The backend and event loop the inner lock's holder and waiters were last
        # seen in, and that backend's clock (resolved once per loop: cheaper than
        # anyio.current_time(), which looks the backend up on every call).
        self._backend: Backend | None = None
        self._loop: object = None
        self._clock: Callable[[], float] = anyio.current_time
        self._owner_label: object = None
        # Bumped by every acquisition that labels a free lock before awaiting it, so
        # an abandoned one can tell whether the label it wrote is still its own.
        self._claims = 0
        # Queued waiters with a label of their own: task id -> that label. Waiters
        # under the mutex's default label are not listed (that saves a task lookup).
        self._waiting: dict[int, str] = {}
        # What the lock-order checker calls this lock (a KeyedMutex names its keys').
        self._order_node: object = self if _order_node is None else _order_node
        if _order_node is None:  # a KeyedMutex's keys are listed by the KeyedMutex
            track(self)
        self._acquisitions: int = 0
        self._contended = 0
        self._timeouts = 0
        self._longest_wait = 0.0

    def _here(self) -> tuple[Backend, object]:
        try:
            return running_loop()
        except RuntimeError:
            raise MutexLoopError(
                self._label, self.current_owner, reason=NO_EVENT_LOOP
            ) from None

    def _bind(self) -> anyio.Lock:
        backend, loop = self._here()
        lock = self._lock = anyio.Lock(fast_acquire=self._fast_acquire)
        self._backend, self._loop, self._clock = backend, loop, backend.current_time
        return lock

    def _moved(self) -> bool:
        # Whether this call runs in another event loop than the one last seen: one
        # cheap call to the known backend (it raises under another backend).
        backend = self._backend
        assert backend is not None
        try:
            return backend.current_token() is not self._loop
        except RuntimeError:
            return True

    def _settle_owner(self, lock: anyio.Lock) -> None:
        # Called right after the inner lock was released (or an acquire was abandoned):
        # anyio hands the lock straight to the next waiter, if any.
        self._owner_label = _HANDOFF if lock.locked() else None

    def _unclaim(self, lock: anyio.Lock, claim: int) -> None:
        # An acquire of a free lock failed after labelling it: undo the label unless
        # another acquisition has labelled the lock since (it took the lock meanwhile).
        if self._claims == claim:
            self._settle_owner(lock)

    def _held_by_current_task(self, lock: anyio.Lock) -> bool:
        # The one re-entry rule. Only asked on error paths (anyio raises RuntimeError
        # before parking a task that re-acquires a lock it holds), so that the hot
        # paths never pay for the two task lookups.
        owner = lock.statistics().owner
        return owner is not None and owner.id == id(current_task())

    def _adopt(self, lock: anyio.Lock) -> anyio.Lock:
        # The mutex was last seen in another event loop (or backend). Free and
        # unwaited for, it moves here on a fresh inner lock; held by a task of this
        # loop (taken on the fast path, which never looks the loop up), it stays.
        backend, loop = self._here()
        stats = lock.statistics()
        if not stats.locked and not stats.tasks_waiting:
            lock = self._lock = anyio.Lock(fast_acquire=self._fast_acquire)
        elif stats.owner is None or stats.owner not in anyio.get_running_tasks():
            raise MutexLoopError(self._label, self.current_owner, reason=OTHER_LOOP)
        self._backend, self._loop, self._clock = backend, loop, backend.current_time
        return lock

    def _recover(self, lock: anyio.Lock) -> anyio.Lock | None:
        # The inner lock raised RuntimeError: raise the misuse it means, or return the
        # lock to retry with (moved to this loop); None if there is nothing to add.
        self._here()  # raises if no event loop runs in this thread
        if self._held_by_current_task(lock):
            raise MutexReentryError(self._label, self.current_owner) from None
        if not self._moved():
            return None
        return self._adopt(lock)

    async def _acquire_free(self, lock: anyio.Lock, label: str | None) -> None:
        # The uncontended path; acquire() inlines a copy of it, for speed.
        claim = self._claims = self._claims + 1
        self._owner_label = self._label if label is None else label
        try:
            await lock.acquire()
        except BaseException:
            self._unclaim(lock, claim)
            raise
        self._acquisitions += 1

    async def acquire(
        self, *, timeout_ms: float | None = None, label: str | None = None
    ) -> None:
        """Acquire the mutex, waiting in FIFO order if it is held.

        The call is a checkpoint unless the mutex was built with ``fast_acquire=True``
        and is free (anyio's meaning). A timeout costs nothing unless the caller has to
        wait. If the caller is cancelled while waiting (by an anyio cancel scope, or
        natively by ``Task.cancel()`` or ``asyncio.timeout``), it leaves the queue and
        holds nothing; an enclosing cancel scope's cancellation passes through
        unchanged.

        :param timeout_ms: give up after this many milliseconds; ``None`` or
            ``math.inf`` waits forever, ``0`` tries once without waiting
        :param label: the owner label for this acquisition (defaults to the mutex's)
        :raises MutexTimeoutError: if ``timeout_ms`` ran out
        :raises MutexReentryError: if the current task already holds the mutex
        :raises MutexLoopError: if the mutex is held or waited for in another event
            loop
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
            await self._acquire_slow(lock, timeout_ms, timeout_s, label)
        else:  # _acquire_free, inlined: a coroutine frame costs ~10% here
            claim = self._claims = self._claims + 1
            # Labelled before the await, so the holder is named while it yields.
            self._owner_label = self._label if label is None else label
            try:
                await lock.acquire()
            except RuntimeError:  # bound to another event loop or backend
                self._unclaim(lock, claim)
                await self._acquire_slow(lock, timeout_ms, timeout_s, label)
            except BaseException:
                self._unclaim(lock, claim)
                raise
            else:
                self._acquisitions += 1
        if checker is not None:
            checker.acquired(self._order_node, self._label)

    async def _acquire_slow(
        self,
        lock: anyio.Lock,
        timeout_ms: float | None,
        timeout_s: float | None,
        label: str | None,
    ) -> None:
        # Everything but the uncontended path: waiting, "try once", misuse, and a lock
        # that has to move to this event loop first.
        try:  # _moved(), inlined: this runs on every hand-off
            moved = self._backend.current_token() is not self._loop  # type: ignore[union-attr]  # pyright: ignore[reportOptionalMemberAccess]
        except RuntimeError:
            moved = True
        if moved:
            lock = self._adopt(lock)
            if not lock.locked():
                await self._acquire_free(lock, label)
                return
        clock = self._clock
        start = clock()
        if timeout_s == 0:
            # "Try once" never queues.
            try:
                lock.acquire_nowait()  # cannot succeed (held); tells re-entry apart
            except anyio.WouldBlock:
                pass
            except RuntimeError:
                self._recover(lock)
                raise
            error = await deadline_fired(
                start, timeout_ms, self._label, self.current_owner, try_once=True
            )
            self._timeouts += 1
            raise error
        wait = None
        if _waitgraph.detect:
            # Raises DeadlockError (holding nothing new) if the holder waits, directly
            # or through others, for this task; a re-entry is left to anyio to report.
            wait = enter_wait(
                self,
                None,
                label,
                bounded=timeout_s is not None,
                reentry=True,
            )
        task_id = None
        if label is not None and label != self._label:
            task_id = id(current_task()) if wait is None else wait.task_id
            self._waiting[task_id] = label
        try:
            if timeout_s is None:
                await lock.acquire()
            else:
                with anyio.CancelScope(deadline=start + timeout_s) as scope:
                    await lock.acquire()
                if scope.cancelled_caught:
                    # Our own deadline fired and anyio left nothing held or queued.
                    error = await deadline_fired(
                        start, timeout_ms, self._label, self.current_owner
                    )
                    self._timeouts += 1
                    raise error
        except RuntimeError:
            # anyio raises this before parking, on both backends: never a deadlock.
            self._recover(lock)
            raise
        finally:
            if wait is not None:
                leave_wait(wait)
            if task_id is not None:
                del self._waiting[task_id]
        waited = clock() - start
        owner = self._label if label is None else label
        # A waiter knows its task: (label, its wait record) carries it, so the
        # deadlock walk need not ask the inner lock for its owner (a task lookup).
        self._owner_label = owner if wait is None else (owner, wait)
        self._acquisitions += 1
        self._contended += 1
        if waited > self._longest_wait:
            self._longest_wait = waited

    def acquire_nowait(self, *, label: str | None = None) -> None:
        """Acquire the mutex if it is free, without waiting.

        :param label: the owner label for this acquisition (defaults to the mutex's)
        :raises ~anyio.WouldBlock: if the mutex is held by another task
        :raises MutexReentryError: if the current task already holds the mutex
        :raises MutexLoopError: if no event loop runs in this thread, or the mutex is
            held or waited for in another event loop
        """
        if label is not None:
            check_label(label)
        lock = self._lock or self._bind()
        try:
            lock.acquire_nowait()
        except RuntimeError:
            moved = self._recover(lock)
            if moved is None:
                raise
            moved.acquire_nowait()
        self._claims += 1
        self._owner_label = self._label if label is None else label
        self._acquisitions += 1
        checker = _diagnostics.checker
        if checker is not None:  # a try-lock cannot wait, so it adds no order edge
            checker.acquired(self._order_node, self._label)

    def release(self) -> None:
        """Release the mutex, handing it to the longest waiter if there is one.

        Only the task that acquired the mutex can release it.

        :raises MutexReleaseError: if the current task does not hold the mutex; the
            mutex is left unchanged
        :raises MutexLoopError: if no event loop runs in this thread
        """
        lock = self._lock
        if lock is None:
            raise MutexReleaseError(self._label, None, reason=NOT_LOCKED)
        owner = self._owner_label
        try:
            lock.release()
        except RuntimeError:
            self._here()  # raises if no event loop runs in this thread
            if not lock.locked():
                raise MutexReleaseError(self._label, None, reason=NOT_LOCKED) from None
            raise MutexReleaseError(
                self._label, self.current_owner, reason=NOT_HOLDER
            ) from None
        # anyio hands the lock straight to the next waiter, if there is one.
        self._owner_label = _HANDOFF if lock.locked() else None
        checker = _diagnostics.checker
        if checker is not None:
            checker.released(self._order_node, _plain_label(owner))

    def _wg_holders(self, key: object) -> Sequence[Holder]:
        # For the deadlock walk. Handed to a waiter that has not resumed yet, the
        # lock's holder is about to run: no edge. After a contended wait the label
        # names the holder's task; else the inner lock is asked (a task lookup).
        label = self._owner_label
        if label is _HANDOFF:
            return ()
        if type(label) is tuple:
            # The walk reads only the task id and label; names come from the waits.
            owner, wait = cast("tuple[str, _Wait]", label)
            return (Holder(wait.task_id, None, owner),)
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
        return _plain_label(owner)

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

    async def _acquire_releasing(
        self, timeout_ms: float | None, label: str | None
    ) -> Callable[[], None]:
        await _MutexBase.acquire(self, timeout_ms=timeout_ms, label=label)
        return self.release

    def hold(
        self, *, timeout_ms: float | None = None, label: str | None = None
    ) -> AbstractAsyncContextManager[None]:
        """Return an async context manager that holds the mutex for its body.

        ``async with mutex.hold(timeout_ms=100, label="job"):`` acquires as
        :meth:`acquire` does and releases on exit, also when the body is cancelled.
        Each ``async with`` needs its own ``hold()`` call.

        :raises TypeError: if an argument has the wrong type (raised here, at once)
        :raises ValueError: if ``timeout_ms`` is negative or NaN (raised here, at once)
        """
        check_timeout_ms(timeout_ms)
        check_label(label)
        return Hold(functools.partial(self._acquire_releasing, timeout_ms, label))

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
class Mutex(_MutexBase):
    """An exclusive, FIFO-fair async lock on :class:`anyio.Lock`, for asyncio and trio.

    Use it where ``anyio.Lock`` would do but you also want acquire timeouts
    (``timeout_ms``), owner labels for debugging, acquisition counters and one error
    type per misuse on every backend. ``await m.acquire()`` / ``m.release()``,
    ``async with m:`` and ``await m.with_lock(fn)`` are the ways to hold it.

    It can be built at import time and binds to the event loop on first use; while it
    is free with no waiters it moves to whichever event loop or backend uses it next
    (one ``anyio.run()`` after another). It is not re-entrant: a task that acquires
    it twice gets :class:`MutexReentryError` at once. It is an ``anyio.Lock``, so
    ``anyio.Condition(mutex)`` works.

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
    is single-use and works only in the task that holds the mutex: calling it twice
    raises :class:`MutexReleaseError`. A hold that ``anyio.Condition.wait()``
    released and re-acquired is still the same acquisition, so its release function
    still releases it.

    :param label: a name for the mutex, shown in errors and used as the default owner
        label
    :param fast_acquire: anyio's option: if ``True``, an uncontended acquire does not
        yield to the scheduler (it still raises if the caller is cancelled)
    """

    __slots__ = ()

    def _releaser(self) -> Callable[[], None]:
        # One closure per acquisition, single-use; ownership itself is the inner
        # lock's (per task), so a hold released and re-acquired by the same task
        # (anyio.Condition.wait() does that) is released by it as well.
        release = self.release
        used = False

        def release_once() -> None:
            nonlocal used
            if used:
                raise MutexReleaseError(
                    self._label, self.current_owner, reason=ALREADY_RELEASED
                )
            release()  # raises, changing nothing, in a task that does not hold it
            used = True

        return release_once

    async def acquire(  # type: ignore[override]  # pyright: ignore[reportIncompatibleMethodOverride]
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
        :raises MutexLoopError: if the mutex is held or waited for in another event
            loop
        :raises TypeError: if an argument has the wrong type
        :raises ValueError: if ``timeout_ms`` is negative or NaN
        """
        # _MutexBase.acquire, inlined: an extra coroutine frame would cost ~10% of an
        # uncontended fast_acquire lock. Keep the two in step.
        timeout_s = None if timeout_ms is None else check_timeout_ms(timeout_ms)
        if label is not None:
            check_label(label)
        lock = self._lock or self._bind()
        checker = _diagnostics.checker
        if checker is not None:
            checker.before_acquire(self._order_node, self._label)
        if lock.locked():
            await self._acquire_slow(lock, timeout_ms, timeout_s, label)
        else:
            claim = self._claims = self._claims + 1
            self._owner_label = self._label if label is None else label
            try:
                await lock.acquire()
            except RuntimeError:  # bound to another event loop or backend
                self._unclaim(lock, claim)
                await self._acquire_slow(lock, timeout_ms, timeout_s, label)
            except BaseException:
                self._unclaim(lock, claim)
                raise
            else:
                self._acquisitions += 1
        if checker is not None:
            checker.acquired(self._order_node, self._label)
        return self._releaser()

    def acquire_nowait(  # type: ignore[override]  # pyright: ignore[reportIncompatibleMethodOverride]
        self, *, label: str | None = None
    ) -> Callable[[], None]:
        """Acquire the mutex if it is free, without waiting; return its releaser.

        :raises ~anyio.WouldBlock: if the mutex is held by another task
        :raises MutexReentryError: if the current task already holds the mutex
        :raises MutexLoopError: if no event loop runs in this thread, or the mutex is
            held or waited for in another event loop
        """
        _MutexBase.acquire_nowait(self, label=label)
        return self._releaser()
