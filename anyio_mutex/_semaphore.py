"""Semaphore: a fair, timed, labelled counting semaphore with a settable limit."""

from __future__ import annotations

import functools
import itertools
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, NoReturn, final

import anyio
from anyio.lowlevel import checkpoint as _checkpoint
from anyio.lowlevel import checkpoint_if_cancelled as _checkpoint_if_cancelled

from ._errors import (
    NO_EVENT_LOOP,
    MutexLoopError,
    MutexReleaseError,
    MutexTimeoutError,
)
from ._hold import (
    current_task,
    current_task_and_loop,
    loop_checkpoint,
    loop_runs_here,
    loop_time,
    trio_parking,
    wakes_here,
)
from ._validation import check_label, check_timeout_ms
from ._waitgraph import (
    GONE,
    GRANTED,
    WAITING,
    Holder,
    LockView,
    _Wait,
    add_wait,
    enter_wait,
    left,
    track,
    wake,
)
from ._waitgraph import registry as _waitgraph

_waiting: Final = _waitgraph.waiting  # never rebound: saves a lookup per wait

Release = Callable[[], None]

#: What a timed-out acquisition waited for, in MutexTimeoutError's message.
_WAITING_FOR: Final = "a permit"

#: The permits (tokens) of the ``async with sem:`` / ``sem.hold()`` bodies the current
#: task is in, innermost first: ``(token, outer)``. Each task has its own context, so
#: the stack is per task; a task started inside a body inherits the stack but only
#: pops what it pushed itself.
_Entered = tuple[int, "_Entered | None"]


#: A waiter's state: granted from another thread or trio run (_wake_afar()), then
#: cancelled before the wake-up arrived; its task's _abandon() gives the permit back.
_GIVE_BACK: Final = 5


def _abort_trio(sem: Semaphore, waiter: _Waiter, _: object) -> Any:
    # trio calls this only for a waiter it has not rescheduled: still queued, unless
    # it was granted from afar and its wake-up has not run yet.
    if waiter.state is WAITING:
        del sem._queue[waiter]
        waiter.state = GONE
    elif waiter.state is GRANTED:
        waiter.state = _GIVE_BACK  # the pending wake-up then does nothing
    return trio_parking().aborted


def _wake_afar(waiter: _Waiter) -> bool:
    # Wake ``waiter``, granted (by _grant()) from another event loop, thread or trio
    # run: thread-safely, through its own loop or trio run. False if that is gone.
    fut = waiter.fut
    try:
        if fut is None:
            waiter.run.run_sync_soon(_reschedule_granted, waiter)
        else:
            fut.get_loop().call_soon_threadsafe(_resolve, fut)
    except (RuntimeError, OSError):  # a closed loop; a finished or finishing trio run
        return False
    return True


def _reschedule_granted(waiter: _Waiter) -> None:
    # In the waiter's trio run: wake it, unless it was cancelled meanwhile.
    if waiter.state is GRANTED:
        trio_parking().reschedule(waiter.task)


def _resolve(fut: Any) -> None:
    # In the waiter's asyncio loop; a future cancelled meanwhile (Task.cancel())
    # is left alone: its task gives the permit back.
    if not fut.done():
        fut.set_result(None)


def _check_limit(limit: object) -> int:
    if type(limit) is bool or not isinstance(limit, int):
        raise TypeError(f"limit must be an int, got {limit!r}")
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit!r}")
    return limit


@final
class _Waiter(_Wait):
    # A queued acquisition, and the wait-for graph's record of it: its state (WAITING,
    # then GRANTED or GONE), its task, and ``fut``, an asyncio future of the task's
    # own loop (None under trio: the task is parked and rescheduled), so the semaphore
    # itself binds to no loop.
    __slots__ = ("run", "token")

    token: int  # set when granted: the key of its entry in the holder table
    run: Any  # a trio waiter's TrioToken (None for asyncio): to wake it from afar


@final
@dataclass(frozen=True)
class SemaphoreStatistics:
    """A snapshot of a :class:`Semaphore`.

    :ivar int limit: the number of permits
    :ivar int available: permits free now (``0`` while more than ``limit`` are held
        after the limit was lowered)
    :ivar int tasks_waiting: tasks queued in :meth:`Semaphore.acquire`
    :ivar tuple[str, ...] holders: the labels of the held permits, oldest first
    :ivar int total_acquisitions: successful acquisitions since construction
    :ivar int contended_acquisitions: successful acquisitions that had to wait
    :ivar int timeouts: acquisitions that gave up because their ``timeout_ms`` ran out
    :ivar float longest_wait_ms: the longest wait of a successful acquisition, in ms
    """

    limit: int
    available: int
    tasks_waiting: int
    holders: tuple[str, ...]
    total_acquisitions: int
    contended_acquisitions: int
    timeouts: int
    longest_wait_ms: float


# Built on a queue of its own waiters rather than on anyio.Semaphore: a released
# permit must be handed to one known waiter (no barging), a waiter cancelled after the
# hand-off must pass that permit on, permits carry labels, and the limit is settable;
# anyio.Semaphore exposes none of these. A side effect: the semaphore holds no
# loop-bound object of its own (each waiter parks on a future of its own task's loop,
# or by trio), so it can be built at import time and used from one event loop after
# another.
@final
class Semaphore:
    """A fair counting semaphore: at most ``limit`` permits held at once.

    Use it to bound concurrency ("at most 5 calls to this API at once") where
    ``anyio.Semaphore`` or ``anyio.CapacityLimiter`` would do but you also want acquire
    timeouts, labels saying who holds the permits, counters, and a limit you can change
    while it runs. ``release = await sem.acquire()`` returns the function releasing that
    permit (any task may call it, once); ``async with sem:`` and ``async with
    sem.hold(timeout_ms=..., label=...):`` hold one permit for the body.

    Waiters are served in arrival order, and a released permit is handed straight to
    the longest waiter, so a task that releases and re-acquires queues behind it. A
    waiter that is cancelled or times out leaves no trace, also when it was cancelled
    just after being handed a permit: that permit goes to the next waiter. Every
    :meth:`acquire` is a checkpoint, unless ``fast_acquire=True`` and a permit is free.
    It can be built at import time and binds to no event loop, so a free semaphore can
    be used from one loop after another. Unlike the task-owned locks, it does not
    record where a permit was taken: a permit left held by an event loop that has
    ended stays counted (as with ``anyio.Semaphore``). A release that hands a permit
    to a waiter of another event loop (another thread's, or the host or guest of a
    trio guest run) wakes it through that loop, thread-safely; from a thread with no
    event loop (a worker thread) it raises :class:`MutexLoopError` instead.

    :param limit: the number of permits, at least 1; settable later as :attr:`limit`
    :param label: a name shown in errors and used as the default holder label
    :param fast_acquire: anyio's option: if ``True``, an acquire that finds a free
        permit does not yield to the scheduler (it still raises if the caller is
        cancelled)
    :raises TypeError: if an argument has the wrong type
    :raises ValueError: if ``limit`` is less than 1
    """

    __slots__ = (
        "__weakref__",
        "_contended",
        "_entered",
        "_fast_acquire",
        "_given_back",
        "_granted",
        "_holders",
        "_label",
        "_limit",
        "_longest_wait",
        "_owners",
        "_queue",
        "_timeouts",
    )

    def __init__(
        self, limit: int, *, label: str = "semaphore", fast_acquire: bool = False
    ) -> None:
        _check_limit(limit)
        if not isinstance(label, str):
            raise TypeError(f"label must be a str, got {label!r}")
        if type(fast_acquire) is not bool:
            raise TypeError(f"fast_acquire must be a bool, got {fast_acquire!r}")
        self._limit = limit
        self._label = label
        self._fast_acquire = fast_acquire
        # Held permits, token -> label, in grant order (so the oldest comes first).
        # A permit handed to a waiter that has not resumed yet is already listed.
        self._holders: dict[int, str] = {}
        # Waiters in arrival order; O(1) removal for a waiter that gives up anywhere.
        # Invariant: it is empty unless every permit is held (see _grant).
        self._queue: OrderedDict[_Waiter, None] = OrderedDict()
        # token -> id of the task holding it in an ``async with`` body (recorded
        # while deadlock detection is on): only that task's exit releases it.
        self._owners: dict[int, int] = {}
        self._entered: ContextVar[_Entered | None] = ContextVar(
            "anyio_mutex.Semaphore.entered", default=None
        )
        # Permits granted since construction; each grant's number is its token. A
        # waiter cancelled after its grant gives the permit back: that one is not an
        # acquisition.
        self._granted = 0
        self._given_back = 0
        self._contended = 0
        self._timeouts = 0
        self._longest_wait = 0.0
        track(self)

    # -- the wait-for graph ------------------------------------------------------------

    def _wg_holders(self, key: object) -> Sequence[Holder]:
        # A waiter needs any one permit back (need_all=False). A permit held in an
        # ``async with`` body is released only by its task's exit: an edge to that
        # task. A permit from acquire() may be released by any task, so it names no
        # task (-1 is never parked): a wait with such a permit held is never
        # reported. With a permit free (being handed on), nothing blocks the wait.
        holders = self._holders
        if len(holders) < self._limit:
            return ()
        owners = self._owners
        return [
            Holder(owners.get(token, -1), None, label)
            for token, label in list(holders.items())
        ]

    def _wg_granted(self, key: object) -> bool:
        # A waiter may hold another permit (a nested hold) and still wait: its
        # grant, not the holder table, says whether its wait is over.
        return isinstance(key, _Waiter) and key.state is GRANTED

    def _wg_need(self, key: object) -> int:
        # How many holders must leave before a waiter gets a permit: one, unless the
        # limit was lowered below the permits held.
        return max(0, len(self._holders) - self._limit + 1)

    def _wg_label(self, key: object) -> str:
        return self._label

    def _wg_locks(self) -> Iterator[LockView]:
        holders = [Holder(-1, None, label) for label in list(self._holders.values())]
        yield LockView("Semaphore", self._label, self, None, holders)

    # -- state changes (all synchronous) ---------------------------------------------

    def _take(self, label: str) -> int:
        token = self._granted = self._granted + 1
        self._holders[token] = label
        return token

    def _release(self, token: int) -> None:
        here = True
        if self._queue:
            here = self._wakes_all_here()
        if self._holders.pop(token, None) is None:
            self._released_twice()
        if self._queue:
            self._grant(here)

    def _releaser(self, token: int) -> Release:
        # One closure per permit (cheaper to build and call than a partial of
        # _release or an object); the token tells a second call from the first.
        holders = self._holders

        def release() -> None:
            here = True
            if self._queue:
                here = self._wakes_all_here()  # waking a waiter needs a loop
            if holders.pop(token, None) is None:
                self._released_twice()
            if self._queue:
                self._grant(here)

        return release

    def _wakes_all_here(self, free: int = 1) -> bool:
        # Before a change that wakes waiters (``free``: the permits it frees): True
        # if each waiter it wakes parks in the code running here (its asyncio loop,
        # or its trio run), to be woken directly; False if one parks in another event
        # loop, thread or trio run, to be woken thread-safely by _grant(). From a
        # thread with no event loop (a worker thread) raise MutexLoopError before
        # anything changes. (With nobody to wake, a release only drops a dict entry
        # and works anywhere.)
        free += self._limit - len(self._holders)
        if free <= 0:
            return True
        queue = self._queue
        if free == 1:  # a release's: just the head (no generator on this path)
            head = next(iter(queue))
            if wakes_here(head.fut, head.run):
                return True
        elif all(
            wakes_here(waiter.fut, waiter.run)
            for waiter in itertools.islice(queue, free)
        ):
            return True
        if not loop_runs_here():
            raise MutexLoopError(self._label, self._oldest(), reason=NO_EVENT_LOOP)
        return False

    def _released_twice(self) -> NoReturn:
        raise MutexReleaseError(
            self._label, self._oldest(), reason="this permit was already released"
        )

    def _grant(self, here: bool = False) -> None:
        # Hand free permits to the longest waiters. Called whenever a permit comes back,
        # a waiter leaves holding one, or the limit grows. ``here``: each waiter woken
        # was found to park in the code running here (_wakes_all_here()); else each
        # is asked, and one that parks elsewhere is woken thread-safely.
        queue, holders = self._queue, self._holders
        while queue and len(holders) < self._limit:
            waiter, _ = queue.popitem(last=False)
            waiter.token = token = self._granted = self._granted + 1
            holders[token] = waiter.label  # type: ignore[assignment]  # pyright: ignore[reportArgumentType]
            # Granted before the next call: a waiter of another thread's loop that
            # is cancelled meanwhile then gives this permit back instead of leaving
            # a queue it is no longer in.
            waiter.state = GRANTED
            if here or wakes_here(waiter.fut, waiter.run):
                wake(waiter)
            elif not _wake_afar(waiter):  # its event loop is gone: nobody to hand to
                if holders.pop(token, None) is not None:  # (not given back already)
                    self._given_back += 1
                waiter.state = GONE

    def _abandon(self, waiter: _Waiter) -> None:
        # A waiter gives up: give back the permit it was handed, or leave the queue
        # (unless trio's abort took it out already).
        state = waiter.state
        if state is GRANTED or state is _GIVE_BACK:
            del self._holders[waiter.token]
            self._given_back += 1
            self._grant()
        elif state is WAITING:
            del self._queue[waiter]
            waiter.state = GONE

    def _oldest(self) -> str | None:
        return next(iter(self._holders.values()), None)

    # -- acquiring --------------------------------------------------------------------

    async def acquire(
        self, *, timeout_ms: float | None = None, label: str | None = None
    ) -> Release:
        """Acquire one permit and return a zero-argument function that releases it.

        If no permit is free, wait in FIFO order. The call is a checkpoint, unless the
        semaphore was built with ``fast_acquire=True`` and a permit is free. If the
        caller is cancelled while waiting, or just after being handed a permit, it
        holds nothing and the permit goes to the next waiter; an enclosing cancel
        scope's cancellation (or a native asyncio cancellation) passes through
        unchanged. The release function may be called from any task, exactly once.

        :param timeout_ms: give up after this many milliseconds; ``None`` or
            ``math.inf`` waits forever, ``0`` tries once without waiting
        :param label: the holder label of this permit (defaults to the semaphore's)
        :return: the release function of this permit
        :raises MutexTimeoutError: if ``timeout_ms`` ran out; its ``owner`` is the label
            of the oldest permit still held
        :raises TypeError: if an argument has the wrong type
        :raises ValueError: if ``timeout_ms`` is negative or NaN
        """
        timeout_s = None if timeout_ms is None else check_timeout_ms(timeout_ms)
        if label is None:
            label = self._label
        elif not isinstance(label, str):
            check_label(label)
        if len(self._holders) < self._limit:
            # A permit is free. Yield first and take it after: a cancellation at the
            # checkpoint then has nothing to undo, on either cancellation system.
            if self._fast_acquire:
                await _checkpoint_if_cancelled()
            else:
                await _checkpoint()
            holders = self._holders
            if len(holders) < self._limit:  # still free after the yield
                # _take() and _releaser(), inlined: the two calls cost ~6% of an
                # uncontended acquire+release on trio (benchmarks/bench_semaphore.py).
                token = self._granted = self._granted + 1
                holders[token] = label

                def release() -> None:
                    here = True
                    if self._queue:
                        here = self._wakes_all_here()  # waking needs a loop
                    if holders.pop(token, None) is None:
                        self._released_twice()
                    if self._queue:
                        self._grant(here)

                return release
            checkpointed = True
        else:
            checkpointed = False
        return self._releaser(
            await self._acquire_contended(label, timeout_ms, timeout_s, checkpointed)
        )

    async def _acquire_contended(
        self,
        label: str,
        timeout_ms: float | None,
        timeout_s: float | None,
        checkpointed: bool,
        owned: bool = False,
    ) -> int:
        # The slow path of acquire() and _enter(): returns the granted permit's token.
        # ``owned`` (from _enter()): record the permit's task in _owners on the way
        # out, as _enter() does after the fast path.
        task, loop = current_task_and_loop()
        start = loop_time(loop)
        if timeout_s == 0:
            if not checkpointed:
                # "Try once" is still a checkpoint, so a retry loop cannot starve
                # the event loop; nothing is queued, so nothing to undo if cancelled.
                await _checkpoint()
                if len(self._holders) < self._limit:  # freed during the checkpoint
                    token = self._take(label)
                    if owned and _waitgraph.detect:
                        self._owners[token] = id(task)
                    return token
            self._fail(start, timeout_ms)
        waiter = _Waiter(task, self, None, label, timeout_s is not None, False, None)
        wait = None
        if _waitgraph.detect:
            # Register the wait, the waiter itself. It is its own key for the walk
            # (its grant ends the wait), dropped when the wait ends.
            waiter.key = waiter
            if timeout_s is not None:
                waiter.deadline = start + timeout_s
            if len(self._owners) >= self._limit:
                # Every permit names its task: raises DeadlockError if every holder
                # waits for us.
                self._check_deadlock(waiter)
            if _waiting.setdefault(waiter.task_id, waiter) is not waiter:
                add_wait(waiter)  # an outer wait of this task: keep it
            wait = waiter
        try:
            if loop is not None:
                fut = waiter.fut = loop.create_future()
                waiter.run = None
                self._queue[waiter] = None
                if timeout_s is None:
                    await fut
                else:
                    with anyio.CancelScope(deadline=start + timeout_s):
                        await fut
            else:
                trio = trio_parking()
                waiter.run = trio.current_token()
                self._queue[waiter] = None
                park = trio.wait
                abort = functools.partial(_abort_trio, self, waiter)
                if timeout_s is None:
                    await park(abort)
                else:
                    with anyio.CancelScope(deadline=start + timeout_s):
                        await park(abort)
        except BaseException:
            # Cancelled (anyio or native asyncio), maybe after the hand-off: pass the
            # permit on or leave the queue, then let the cancellation through.
            self._abandon(waiter)
            raise
        finally:
            if wait is not None:
                wait.key = None  # it keyed itself for the walk: no cycle left behind
                # leave_wait(), its common case inlined
                popped = _waiting.pop(wait.task_id, None)
                if popped is not wait or wait.prev is not None:
                    left(wait, popped)
        if waiter.state is not GRANTED:
            # Our own deadline fired first. Leave the queue before the checkpoint
            # below, which may raise.
            self._abandon(waiter)
            # If an enclosing scope was cancelled too, its cancellation wins.
            await _checkpoint_if_cancelled()
            self._fail(start, timeout_ms)
        # The permit was handed to us (even if our deadline fired at the same moment).
        waited = loop_time(loop) - start
        self._contended += 1
        if waited > self._longest_wait:
            self._longest_wait = waited
        token = waiter.token
        if owned and _waitgraph.detect:
            self._owners[token] = waiter.task_id
        return token

    def _check_deadlock(self, waiter: _Waiter) -> None:
        # Raise DeadlockError if the wait closes a cycle. It needs _wg_need() holders
        # gone (one, unless the limit was lowered), so the walk runs only if fewer
        # holders than that are sure to leave: a permit from acquire() names no task
        # (the caller checked that each names one), and one whose task runs (or was
        # just granted a permit here) comes back by itself.
        holders = self._holders
        owners = self._owners
        # _wg_need(), inlined. Its max(0, ...) changes nothing here: owners is a
        # subset of holders, so free >= 0.
        free = len(holders) - len(owners)
        need = len(holders) - self._limit + 1
        me = waiter.task_id
        for tid in owners.values():
            its_wait = _waiting.get(tid)
            if tid != me and (
                its_wait is None
                or (its_wait.resource is self and self._wg_granted(its_wait.key))
            ):
                free += 1
                if free >= need:
                    return
        try:
            # Registers the wait unless it raises; the caller then finds it there.
            enter_wait(
                self,
                waiter,
                waiter.label,
                need_all=False,
                task=waiter.task,
                record=waiter,
            )
        except BaseException:
            waiter.key = None
            raise

    def _fail(self, start: float, timeout_ms: float | None) -> NoReturn:
        self._timeouts += 1
        raise MutexTimeoutError(
            (anyio.current_time() - start) * 1000,
            timeout_ms=timeout_ms,
            label=self._label,
            owner=self._oldest(),
            waiting_for=_WAITING_FOR,
        )

    def acquire_nowait(self, *, label: str | None = None) -> Release:
        """Acquire a free permit without waiting; return the function releasing it.

        A waiter already queued keeps its place: this fails whenever tasks are waiting,
        since a free permit is handed to them at once.

        :param label: the holder label of this permit (defaults to the semaphore's)
        :return: the release function of this permit
        :raises ~anyio.WouldBlock: if no permit is free
        :raises TypeError: if ``label`` is not a string
        """
        if label is None:
            label = self._label
        elif not isinstance(label, str):
            check_label(label)
        if len(self._holders) >= self._limit:
            raise anyio.WouldBlock
        return self._releaser(self._take(label))

    def hold(
        self, *, timeout_ms: float | None = None, label: str | None = None
    ) -> _SemaphoreHold:
        """Return an async context manager that holds one permit for its body.

        ``async with sem.hold(timeout_ms=100, label="job"):`` acquires as
        :meth:`acquire` does and releases on exit, also when the body is cancelled or
        raises. The returned object keeps no permit itself, so it may be entered again
        and by several tasks at once.

        :raises TypeError: if an argument has the wrong type (raised here, at once)
        :raises ValueError: if ``timeout_ms`` is negative or NaN (raised here, at once)
        """
        timeout_s = check_timeout_ms(timeout_ms)
        check_label(label)
        return _SemaphoreHold(self, timeout_ms, timeout_s, label)

    async def _enter(
        self,
        timeout_ms: float | None = None,
        label: str | None = None,
        timeout_s: float | None = None,
    ) -> None:
        # acquire() for ``async with``: the permit's token goes on this task's stack
        # instead of into a releaser. Arguments were checked by hold().
        # timeout_s: hold()'s checked value of timeout_ms (None: forever, also for
        # an int too large for a float).
        if label is None:
            label = self._label
        if len(self._holders) < self._limit:
            # The deadlock walk needs the permit's task named. Asked first, its loop
            # also gives the checkpoint, saving anyio's backend lookup: with
            # detection on, naming costs little more than that lookup.
            task = loop = None
            if _waitgraph.detect:
                task, loop = current_task_and_loop()
            if self._fast_acquire:
                await _checkpoint_if_cancelled()
            elif task is not None:
                await loop_checkpoint(loop)
            else:
                await _checkpoint()
            if len(self._holders) < self._limit:  # still free after the yield
                token = self._take(label)
                if _waitgraph.detect:  # (may have been switched on meanwhile)
                    self._owners[token] = id(
                        task if task is not None else current_task()
                    )
            else:
                token = await self._acquire_contended(
                    label, timeout_ms, timeout_s, True, True
                )
        else:
            # Records the permit's task in _owners itself (owned=True).
            token = await self._acquire_contended(
                label, timeout_ms, timeout_s, False, True
            )
        # Nothing awaits between the grant and this push, so no cancellation lands
        # between them.
        entered = self._entered
        entered.set((token, entered.get()))

    def _exit(self) -> None:
        entered = self._entered
        top = entered.get()
        if top is None:
            raise MutexReleaseError(
                self._label,
                self._oldest(),
                reason="this task did not enter it with 'async with'",
            )
        entered.set(top[1])
        self._owners.pop(top[0], None)
        self._release(top[0])

    #: ``async with sem:`` is _enter() with no timeout and the default label.
    __aenter__ = _enter

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        self._exit()

    # -- state ------------------------------------------------------------------------

    @property
    def limit(self) -> int:
        """The number of permits.

        Raising it hands the new permits to waiters at once. Lowering it never revokes
        a held permit: it takes effect as permits come back.

        :raises TypeError: if set to a non-integer (or a bool)
        :raises ValueError: if set to less than 1
        :raises MutexLoopError: if raising it would wake a waiter, from a thread with
            no event loop (a worker thread); the limit is left unchanged
        """
        return self._limit

    @limit.setter
    def limit(self, limit: int) -> None:
        limit = _check_limit(limit)
        here = True
        if self._queue and len(self._holders) < limit:
            # Waking waiters needs an event loop, as release()
            here = self._wakes_all_here(limit - self._limit)
        self._limit = limit
        self._grant(here)

    @property
    def available(self) -> int:
        """The number of permits free now (never negative)."""
        return max(0, self._limit - len(self._holders))

    @property
    def label(self) -> str:
        """The semaphore's own label, used in errors and as the default holder label."""
        return self._label

    def holders(self) -> list[str]:
        """Return the labels of the permits held now, oldest first."""
        return list(self._holders.values())

    def statistics(self) -> SemaphoreStatistics:
        """Return a snapshot of the semaphore's state and counters."""
        return SemaphoreStatistics(
            limit=self._limit,
            available=self.available,
            tasks_waiting=len(self._queue),
            holders=tuple(self._holders.values()),
            total_acquisitions=self._granted - self._given_back,
            contended_acquisitions=self._contended,
            timeouts=self._timeouts,
            longest_wait_ms=self._longest_wait * 1000,
        )

    def __repr__(self) -> str:
        return (
            f"<Semaphore {self._label!r} limit={self._limit} "
            f"available={self.available} held={len(self._holders)} "
            f"waiting={len(self._queue)}>"
        )


@final
class _SemaphoreHold:
    """The async context manager returned by :meth:`Semaphore.hold`.

    It holds one permit for the body of each ``async with``; the permit belongs to
    the entering task's context, not to this object, so one object may be entered by
    many tasks at once or reused.
    """

    __slots__ = ("_label", "_semaphore", "_timeout_ms", "_timeout_s")

    def __init__(
        self,
        semaphore: Semaphore,
        timeout_ms: float | None,
        timeout_s: float | None,
        label: str | None,
    ) -> None:
        self._semaphore = semaphore
        self._timeout_ms = timeout_ms
        self._timeout_s = timeout_s  # checked once, by hold()
        self._label = label

    async def __aenter__(self) -> None:
        await self._semaphore._enter(self._timeout_ms, self._label, self._timeout_s)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        self._semaphore._exit()
