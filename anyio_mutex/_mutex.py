"""Mutex and AsyncMutex: exclusive FIFO locks with timeouts and labels, for anyio.

The mutex keeps its own queue of waiters instead of wrapping an ``anyio.Lock``: a
release hands the lock straight to the first waiter (its task and label become the
owner at once), and the timed waiters of one mutex share one timer. Both are what
make a contended, timed wait cost about what an untimed ``anyio.Lock`` wait does. The
parking primitives are each backend's public ones:

* asyncio: one future per waiter, resolved by the release (granted) or by the shared
  timer, a ``TimerHandle`` at the earliest deadline (timed out); ``Task.cancel()``
  (an anyio cancel scope does that too) cancels it;
* trio: ``trio.lowlevel.wait_task_rescheduled`` and ``reschedule``; one timed waiter
  at a time parks in a native ``trio.CancelScope`` at the earliest deadline and
  times out the others (see ``_park_trio``).

A waiter that is cancelled after it was granted the lock releases it (handing it on),
so a cancelled acquire never holds anything, as with ``anyio.Lock``.
"""

from __future__ import annotations

import functools
import heapq
import math
import sys
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, TypeVar, final

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
from ._hold import (
    Backend,
    Hold,
    current_task,
    deadline_fired,
    running_loop,
    task_name,
    trio_parking,
)
from ._validation import check_bool, check_callable, check_label, check_timeout_ms
from ._waitgraph import (
    _RESUMING,
    GONE,
    GRANTED,
    Holder,
    LockView,
    _Wait,
    add_wait,
    enter_wait,
    held_since,
    left,
    recheck_wait,
    track,
)
from ._waitgraph import registry as _waitgraph

_waiting: Final = _waitgraph.waiting  # never rebound: saves a lookup per wait

T = TypeVar("T")
_M = TypeVar("_M", bound="_MutexBase")

# A waiter's state (in its _Wait record). Only its own task reads it once it wakes.
_WAITING: Final = 0
# trio: queued but not parked (the timer's turn); still waiting, and the walk runs
# again before it parks again (_RESUMING).
_PAUSED: Final = _RESUMING
# From _GRANTED on the wait is over, which the deadlock walk reads (_WAIT_OVER);
# _GRANTED and _GONE are the states every queued record shares (_waitgraph).
_GRANTED: Final = GRANTED  # the release made its task the owner
_TIMED_OUT: Final = 3  # the shared timer took it out of the queue
_GONE: Final = GONE  # cancelled and out of the queue


def _no_task() -> Any:
    # The task getter of a mutex not bound to any event loop yet.
    raise RuntimeError("not bound")


def _task_info(task: Any) -> anyio.TaskInfo:
    # What anyio.Lock.statistics() reports: TaskInfo compares by id, and id() of a
    # native task is its anyio task id, so anyio.Condition's ownership check works.
    get_coro = getattr(task, "get_coro", None)  # asyncio.Task; a trio task has .coro
    coro = get_coro() if get_coro is not None else task.coro
    return anyio.TaskInfo(id(task), None, task_name(task), coro)


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


# trio's parking primitives (_hold.trio_parking()), copied to module globals when a
# mutex first binds to trio: the hand-off paths read them as plain globals.
_trio_wait: Any = None
_trio_reschedule: Any = None
_trio_scope: Any = None
_trio_aborted: Any = None


def _load_trio() -> None:
    global _trio_wait, _trio_reschedule, _trio_scope, _trio_aborted
    park = trio_parking()
    _trio_wait, _trio_reschedule, _trio_aborted = (
        park.wait,
        park.reschedule,
        park.aborted,
    )
    _trio_scope = sys.modules["trio"].CancelScope


def _abort_trio(mutex: _MutexBase, waiter: _Wait, _: object) -> Any:
    # trio calls this only for a waiter it has not rescheduled: it is still queued.
    if mutex._role is waiter:
        # The timer's scope may have fired for another waiter: keep the place in the
        # queue until the task runs and knows (a release meanwhile grants it).
        waiter.state = _PAUSED
    else:
        del mutex._queue[waiter]
        waiter.state = _GONE
    return _trio_aborted


class _MutexBase(anyio.Lock):
    __slots__ = (
        "_acquisitions",
        "_aloop",
        "_backend",
        "_clock",
        "_contended",
        "_deadlines",
        "_fast_acquire",
        "_future",
        "_get_task",
        "_label",
        "_longest_wait",
        "_loop",
        "_order_node",
        "_owner",
        "_owner_label",
        "_post",
        "_pre",
        "_queue",
        "_role",
        "_role_scope",
        "_seq",
        "_timeouts",
        "_timer",
        "_timer_at",
        "_trio",
    )

    def __new__(
        cls: type[_M],
        label: str = "mutex",
        *,
        fast_acquire: bool = False,
        _order_node: object = None,
    ) -> _M:
        # anyio.Lock.__new__ returns a backend lock; this class is its own lock.
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
        # The holder's native task and owner label; None while free.
        self._owner: Any = None
        self._owner_label: str | None = None
        # Parked waiters in FIFO order (an ordered set: a cancelled one leaves in O(1)).
        self._queue: OrderedDict[_Wait, None] = OrderedDict()
        # Bound on first use, so the mutex can be built at import time, outside a loop;
        # rebound when it moves, free, to another event loop or backend: the backend
        # class, the loop's token, its clock, how to ask for the running task, and the
        # checkpoints around an uncontended acquire.
        self._backend: Backend | None = None
        self._loop: object = None
        self._clock: Callable[[], float] = anyio.current_time
        self._get_task: Callable[[], Any] = _no_task
        self._trio = False
        self._aloop: Any = None  # the asyncio event loop (futures and the timer)
        self._future: Any = None  # asyncio.Future: cheaper than loop.create_future()
        self._pre: Callable[[], Awaitable[None]] | None = None
        self._post: Callable[[], Awaitable[None]] | None = None
        # asyncio's shared timer: a heap of (deadline, seq, waiter) and one TimerHandle
        # armed at the earliest deadline. A waiter granted before its deadline leaves
        # a stale entry behind; stale entries are dropped when they reach the top, and
        # all of them when the queue empties.
        self._deadlines: list[tuple[float, int, _Wait]] = []
        self._seq = 0
        self._timer: Any = None
        self._timer_at = 0.0
        # trio's shared timer: one timed waiter at a time (the role) parks in a native
        # cancel scope whose deadline is the earliest in the queue; when it fires, the
        # role fails every waiter past its deadline. The role goes to the timed waiter
        # last in the queue (the last to be granted), so it rarely has to move on.
        self._role: _Wait | None = None
        self._role_scope: Any = None
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

    def _bind(self) -> Any:
        # Bind to the running event loop (or fail, changing nothing); return the task.
        backend, loop = self._here()
        try:
            task = current_task()
        except RuntimeError:
            raise MutexLoopError(
                self._label, self.current_owner, reason=NO_EVENT_LOOP
            ) from None
        owner = self._owner
        if (owner is not None or self._queue) and not (
            owner is task or self._runs_here(owner)
        ):
            raise MutexLoopError(self._label, self.current_owner, reason=OTHER_LOOP)
        trio = sys.modules.get("trio")
        if trio is not None and isinstance(task, trio.lowlevel.Task):
            if _trio_wait is None:
                _load_trio()
            self._trio = True
            self._aloop = None
            self._get_task = trio.lowlevel.current_task
            self._pre = trio.lowlevel.checkpoint_if_cancelled
            self._post = (
                None if self._fast_acquire else trio.lowlevel.cancel_shielded_checkpoint
            )
        else:
            asyncio = sys.modules["asyncio"]
            self._trio = False
            self._aloop = task.get_loop()
            self._get_task = asyncio.current_task
            self._future = asyncio.Future
            # As anyio.Lock: raise a pending cancellation before taking the lock, then
            # (unless fast_acquire) yield once, releasing if cancelled there.
            self._pre = backend.checkpoint_if_cancelled
            self._post = (
                None if self._fast_acquire else functools.partial(asyncio.sleep, 0)
            )
        if not self._queue:
            self._drop_timer()
        self._backend, self._loop = backend, loop
        # asyncio's clock is its loop's time(); asking the loop saves a lookup.
        self._clock = backend.current_time if self._trio else self._aloop.time
        return task

    def _runs_here(self, task: Any) -> bool:
        # Whether the holder (taken on the fast path, which never looks the loop up)
        # is a task of the running event loop.
        ident = id(task)
        return any(info.id == ident for info in anyio.get_running_tasks())

    def _current(self) -> Any:
        # The running task, rebinding first if the mutex was last used in another
        # event loop or backend; only the slow paths ask.
        try:
            task = self._get_task()
        except RuntimeError:  # another backend, or no event loop
            return self._bind()
        if task is None:  # an asyncio loop running no task of ours: a trio guest
            return self._bind()
        if self._trio:
            if self._backend.current_token() is not self._loop:  # type: ignore[union-attr]  # pyright: ignore[reportOptionalMemberAccess]
                return self._bind()
        elif task.get_loop() is not self._aloop:
            return self._bind()
        return task

    def _drop_timer(self) -> None:
        self._deadlines.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _hand_on(self) -> None:
        # The holder lets go: the first waiter still waiting becomes the owner.
        deadlines = self._deadlines
        if deadlines:
            # No waiter is granted the lock once its deadline could have been
            # processed, though the timer has not timed it out yet. The common case
            # costs one comparison and no clock read.
            if self._trio:
                role = self._role
                if role is not None and role.state is not _WAITING:
                    # The timer's waiter was woken (its scope fired, it was
                    # cancelled, or it is taking the role over) but has not run.
                    self._expire_due()
            elif self._timer_at > deadlines[0][0]:
                # asyncio: _expire() re-armed the timer at least 1 ms on (for
                # uvloop's clock), past the earliest deadline left.
                self._expire_due()
        queue = self._queue
        while queue:
            waiter = queue.popitem(last=False)[0]
            if self._trio:
                state = waiter.state
                waiter.state = _GRANTED
                self._owner = waiter.task
                self._owner_label = (
                    self._label if waiter.label is None else waiter.label
                )
                if state is _WAITING:  # else it is about to run, and sees the grant
                    _trio_reschedule(waiter.task)
                return
            if waiter.fut.cancelled():  # cancelled, its task not resumed yet
                waiter.state = _GONE
                continue
            waiter.state = _GRANTED
            self._owner = waiter.task
            self._owner_label = self._label if waiter.label is None else waiter.label
            waiter.fut.set_result(None)
            return
        self._owner = self._owner_label = None
        if self._deadlines:
            self._drop_timer()

    def _expire(self) -> None:
        # asyncio's shared timer: fail every waiter whose deadline has passed, then
        # re-arm for the earliest one left.
        self._timer = None
        now = self._expire_due()
        deadlines = self._deadlines
        if deadlines:
            # At least 1 ms on: uvloop's clock counts whole ms, so a timer for a
            # deadline within that ms fires at once, again and again until it passes.
            self._arm(max(deadlines[0][0], now + 0.001))

    def _arm(self, deadline: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._aloop.call_at(deadline, self._expire)
        self._timer_at = deadline

    def _push_deadline(self, waiter: _Wait, deadline: float) -> None:
        deadlines = self._deadlines
        if len(deadlines) > 2 * len(self._queue) + 16:
            # Mostly granted waiters' entries: keep the live ones.
            deadlines[:] = [e for e in deadlines if e[2].state <= _PAUSED]
            heapq.heapify(deadlines)
        self._seq += 1
        heapq.heappush(deadlines, (deadline, self._seq, waiter))

    def _add_deadline(self, waiter: _Wait, deadline: float) -> None:
        self._push_deadline(waiter, deadline)
        if self._timer is None or deadline < self._timer_at:
            self._arm(deadline)

    def _next_deadline(self) -> float:
        # The earliest deadline of a live waiter (stale entries at the top dropped).
        deadlines = self._deadlines
        while deadlines and deadlines[0][2].state > _PAUSED:
            heapq.heappop(deadlines)
        return deadlines[0][0] if deadlines else math.inf

    def _expire_due(self) -> float:
        # Fail every waiter whose deadline has passed, dropping stale entries on the
        # way; return the time it went by. A timer may fire up to a clock tick early.
        # On trio a waiter is rescheduled only if parked (_WAITING): the role, when
        # its own task runs this or was woken (_PAUSED), is not rescheduled twice.
        # On asyncio a cancelled waiter is left to its own task.
        deadlines = self._deadlines
        now = self._clock()
        while deadlines:
            deadline, _, waiter = deadlines[0]
            state = waiter.state
            if state > _PAUSED:
                heapq.heappop(deadlines)
            elif deadline > now:
                break
            else:
                heapq.heappop(deadlines)
                if not self._trio and waiter.fut.cancelled():
                    continue
                del self._queue[waiter]
                waiter.state = _TIMED_OUT
                if not self._trio:
                    waiter.fut.set_result(None)
                elif state is _WAITING:
                    _trio_reschedule(waiter.task)
        return now

    def _pass_role(self) -> None:
        # The role's task leaves the queue: wake the timed waiter last in the queue
        # to take the role (it re-parks in a scope of its own). First time out the
        # waiters past their deadlines now (the timer may have fired for them in
        # the step that granted or cancelled the role), not a step later.
        self._expire_due()
        for waiter in reversed(self._queue):
            if waiter.bounded and waiter.state is _WAITING:
                self._role = waiter
                waiter.state = _PAUSED
                _trio_reschedule(waiter.task)
                return

    async def _take_free(self, task: Any, label: str | None) -> bool:
        # The uncontended path (acquire() inlines a copy of it, for speed): False if
        # the lock was taken meanwhile, at a checkpoint before taking it.
        pre = self._pre
        if pre is not None:
            await pre()
            if self._owner is not None:
                return False
        self._owner = task
        self._owner_label = self._label if label is None else label
        post = self._post
        if post is not None:
            try:
                await post()
            except BaseException:
                self._hand_on()
                raise
        self._acquisitions += 1
        return True

    async def _acquire_slow(
        self, timeout_ms: float | None, timeout_s: float | None, label: str | None
    ) -> None:
        # Everything but the uncontended path: waiting, "try once", misuse, and a lock
        # that has to move to this event loop first.
        task = self._current()
        owner = self._owner
        if owner is None:
            if await self._take_free(task, label):
                return
            owner = self._owner
        if owner is task:
            raise MutexReentryError(self._label, self.current_owner)
        clock = self._clock
        start = clock()
        if timeout_s == 0:  # "try once" never queues
            error = await deadline_fired(
                start, timeout_ms, self._label, self.current_owner, try_once=True
            )
            self._timeouts += 1
            raise error
        # The queue entry is the wait-for graph's record of this wait, too.
        waiter = _Wait(task, self, None, label, timeout_s is not None, True, None)
        if timeout_s is not None:
            waiter.deadline = start + timeout_s
        wait = None
        if _waitgraph.detect:
            its_wait = _waiting.get(id(owner))
            if its_wait is None or its_wait.resource is self:
                # The holder runs (or was just handed this lock): no cycle. Register
                # the wait: add_wait(), inlined, as leave_wait() is below (the two
                # calls were a third of what detection added to a hand-off).
                wait = waiter
                if _waiting.setdefault(waiter.task_id, waiter) is not waiter:
                    add_wait(waiter)  # an outer wait of this task: keep it
            else:
                # Raises DeadlockError (holding nothing new) if the holder waits,
                # directly or through others, for this task.
                wait = enter_wait(self, None, label, task=task, record=waiter)
        try:
            if self._trio:
                await self._park_trio(waiter, timeout_s, start)
            else:
                fut = waiter.fut = self._future(loop=self._aloop)
                self._queue[waiter] = None
                if timeout_s is not None:
                    self._add_deadline(waiter, start + timeout_s)
                try:
                    await fut
                except BaseException:
                    state = waiter.state
                    if state is _GRANTED:
                        self._hand_on()
                    elif state is _WAITING:
                        del self._queue[waiter]
                        waiter.state = _GONE
                    raise
        finally:
            if wait is not None:
                # leave_wait(), its common case inlined
                popped = _waiting.pop(wait.task_id, None)
                if popped is not wait or wait.prev is not None:
                    left(wait, popped)
        if waiter.state is _TIMED_OUT:
            # Our own deadline passed; nothing is held or queued.
            error = await deadline_fired(
                start, timeout_ms, self._label, self.current_owner
            )
            self._timeouts += 1
            raise error
        waited = clock() - start
        self._acquisitions += 1
        self._contended += 1
        if waited > self._longest_wait:
            self._longest_wait = waited

    async def _park_trio(
        self, waiter: _Wait, timeout_s: float | None, start: float
    ) -> None:
        queue = self._queue
        queue[waiter] = None
        abort = functools.partial(_abort_trio, self, waiter)
        if timeout_s is None:
            try:
                await _trio_wait(abort)
            except BaseException:
                if waiter.state is _GRANTED:  # granted, then a KeyboardInterrupt
                    self._hand_on()
                raise
            return
        deadline = start + timeout_s
        self._push_deadline(waiter, deadline)
        if self._role is None:
            self._role = waiter
        else:
            scope = self._role_scope
            if scope is not None and deadline < scope.deadline:
                scope.deadline = deadline
        try:
            while True:
                if self._role is waiter:
                    with _trio_scope(deadline=self._next_deadline()) as scope:
                        self._role_scope = scope
                        try:
                            await _trio_wait(abort)
                        finally:
                            self._role_scope = None
                    if scope.cancelled_caught and waiter.state is _PAUSED:
                        self._expire_due()  # may time this waiter out too
                        if waiter.state is _PAUSED:
                            waiter.state = _WAITING
                            recheck_wait(waiter)  # walks counted it as free
                            continue
                else:
                    await _trio_wait(abort)
                    if waiter.state is _PAUSED:  # woken to take the role
                        waiter.state = _WAITING
                        recheck_wait(waiter)  # walks counted it as free
                        continue
                return  # granted, or timed out by the role
        except BaseException:
            state = waiter.state
            if state is _GRANTED:
                self._hand_on()
            elif state <= _PAUSED:
                queue.pop(waiter, None)
                waiter.state = _GONE
            raise
        finally:
            if self._role is waiter:
                self._role = None
                self._pass_role()

    def _release_error(self) -> MutexReleaseError:
        self._here()  # raises if no event loop runs in this thread
        if self._owner is None:
            return MutexReleaseError(self._label, None, reason=NOT_LOCKED)
        return MutexReleaseError(self._label, self.current_owner, reason=NOT_HOLDER)

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
        checker = _diagnostics.checker
        if checker is not None and timeout_s != 0:  # a try-once adds no order edge
            checker.before_acquire(self._order_node, self._label)
        # _take_free, inlined: a coroutine frame costs ~10% of an uncontended acquire.
        try:
            task = None if self._owner is not None else self._get_task()
        except RuntimeError:  # not bound yet, or bound to another backend
            task = None
        if task is None:
            await self._acquire_slow(timeout_ms, timeout_s, label)
        else:
            pre = self._pre
            if pre is not None:
                await pre()
            if self._owner is not None:  # taken meanwhile
                await self._acquire_slow(timeout_ms, timeout_s, label)
            else:
                self._owner = task
                self._owner_label = self._label if label is None else label
                post = self._post
                if post is not None:
                    try:
                        await post()
                    except BaseException:
                        self._hand_on()
                        raise
                self._acquisitions += 1
        if checker is not None and checker is _diagnostics.checker:  # still enabled
            checker.acquired(self._order_node, self._label, self)

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
        try:
            task = self._get_task()
        except RuntimeError:
            task = None
        if task is None:
            task = self._current()
        owner = self._owner
        if owner is not None:
            if owner is task:
                raise MutexReentryError(self._label, self.current_owner)
            raise anyio.WouldBlock
        self._owner = task
        self._owner_label = self._label if label is None else label
        self._acquisitions += 1
        checker = _diagnostics.checker
        if checker is not None:  # a try-lock cannot wait, so it adds no order edge
            checker.acquired(self._order_node, self._label, self)

    def release(self) -> None:
        """Release the mutex, handing it to the longest waiter if there is one.

        Only the task that acquired the mutex can release it.

        :raises MutexReleaseError: if the current task does not hold the mutex; the
            mutex is left unchanged
        :raises MutexLoopError: if no event loop runs in this thread
        """
        owner = self._owner
        try:
            held = owner is not None and self._get_task() is owner
        except RuntimeError:  # another backend, or no event loop
            held = False
        if not held:
            raise self._release_error()
        label = self._owner_label
        if self._queue:
            self._hand_on()
        else:  # _hand_on(), inlined for the uncontended case
            self._owner = self._owner_label = None
            if self._deadlines:
                self._drop_timer()
        checker = _diagnostics.checker
        if checker is not None:
            checker.released(self, label)

    def _wg_holders(self, key: object) -> Sequence[Holder]:
        # For the deadlock walk, which reads only the task id and the label.
        owner = self._owner
        if owner is None:
            return ()
        return (Holder(id(owner), None, self._owner_label),)

    def _holders(self) -> Sequence[Holder]:
        owner = self._owner
        if owner is None:
            return ()
        since = held_since(id(owner), self)
        return (Holder(id(owner), task_name(owner), self._owner_label, since),)

    def _wg_label(self, key: object) -> str:
        return self._label

    def _wg_locks(self) -> Iterator[LockView]:
        yield LockView(type(self).__name__, self._label, self, None, self._holders())

    def locked(self) -> bool:
        """Return ``True`` if the mutex is held."""
        return self._owner is not None

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
        return self._owner_label

    @property
    def total_acquisitions(self) -> int:
        """How many acquisitions have succeeded since construction."""
        return self._acquisitions

    def statistics(self) -> MutexStatistics:
        """Return a snapshot of the mutex's state and counters."""
        owner = self._owner
        return MutexStatistics(
            locked=owner is not None,
            owner=None if owner is None else _task_info(owner),
            tasks_waiting=len(self._queue),
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
    """An exclusive, FIFO-fair :class:`anyio.Lock` with timeouts, for asyncio and trio.

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
        # One closure per acquisition, single-use; ownership itself is per task, so a hold released and re-acquired by the same task
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
        checker = _diagnostics.checker
        if checker is not None and timeout_s != 0:  # a try-once adds no order edge
            checker.before_acquire(self._order_node, self._label)
        try:
            task = None if self._owner is not None else self._get_task()
        except RuntimeError:
            task = None
        if task is None:
            await self._acquire_slow(timeout_ms, timeout_s, label)
        else:
            pre = self._pre
            if pre is not None:
                await pre()
            if self._owner is not None:
                await self._acquire_slow(timeout_ms, timeout_s, label)
            else:
                self._owner = task
                self._owner_label = self._label if label is None else label
                post = self._post
                if post is not None:
                    try:
                        await post()
                    except BaseException:
                        self._hand_on()
                        raise
                self._acquisitions += 1
        if checker is not None and checker is _diagnostics.checker:  # still enabled
            checker.acquired(self._order_node, self._label, self)
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
