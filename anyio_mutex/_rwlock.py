"""RWLock: many readers or one writer, FIFO-fair, starving neither side."""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Final, final

import anyio
import anyio.lowlevel

from ._diagnostics import state as _diagnostics
from ._errors import (
    ALREADY_RELEASED,
    NO_EVENT_LOOP,
    NOT_HOLDER,
    OTHER_LOOP,
    MutexLoopError,
    MutexReentryError,
    MutexReleaseError,
)
from ._hold import (
    Hold,
    current_task,
    current_task_and_loop,
    deadline_fired,
    loop_checkpoint,
    loop_time,
    trio_parking,
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
    held_since,
    left,
    track,
    wake,
)
from ._waitgraph import registry as _waitgraph

_waiting: Final = _waitgraph.waiting  # never rebound: saves a lookup per wait

_READ: Final = "read"
_WRITE: Final = "write"


@final
class _Waiter(_Wait):
    # A queued acquisition, and the wait-for graph's record of it: its state (WAITING,
    # then GRANTED or GONE), its task, and ``fut``, an asyncio future of the task's
    # own loop (None under trio: the task is parked and rescheduled).
    __slots__ = ("kind",)

    kind: str  # _READ or _WRITE


def _abort_trio(lock: RWLock, waiter: _Waiter, _: object) -> Any:
    # trio calls this only for a waiter it has not rescheduled: still queued, unless
    # a grant failed to wake it. Its task, cancelled, gives back what it was granted
    # and lets in whoever it blocked (_abandon()).
    if waiter.state is WAITING:
        lock._queue.remove(waiter)
        waiter.state = GONE
    return trio_parking().aborted


@final
@dataclass(frozen=True)
class RWLockStatistics:
    """A snapshot of an :class:`RWLock`.

    :ivar int readers: tasks holding the read lock
    :ivar writer: the owner label of the writer holding the lock, or ``None``
    :ivar int readers_waiting: tasks queued for the read lock
    :ivar int writers_waiting: tasks queued for the write lock
    :ivar int read_acquisitions: successful read acquisitions since construction
    :ivar int write_acquisitions: successful write acquisitions since construction
    :ivar int timeouts: acquisitions that gave up because ``timeout_ms`` ran out
    """

    readers: int
    writer: str | None
    readers_waiting: int
    writers_waiting: int
    read_acquisitions: int
    write_acquisitions: int
    timeouts: int


@final
class RWLock:
    """A readers-writer lock: many readers at once, or one writer alone.

    Use it for data that is read often and written rarely, where readers need not
    exclude each other. Fairness is FIFO: waiters queue in arrival order, and readers
    at the head of the queue are admitted together. A reader that arrives while a
    writer waits queues behind that writer, and a writer that arrives while readers
    wait queues behind them, so a stream of either side cannot starve the other.

    A waiter cancelled or timed out leaves the queue at once and lets in whoever it was
    blocking (a writer leaving the queue admits the readers behind it). The lock is
    not re-entrant in either direction: a task holding the read lock that asks for the
    write lock (an upgrade), or a writer that asks for the read lock, gets
    :class:`MutexReentryError` at once instead of a deadlock. Timeouts, labels and
    errors follow :class:`AsyncMutex`.

    :param label: a name shown in errors and used as the default owner label
    """

    __slots__ = (
        "__weakref__",
        "_gen",
        "_label",
        "_loop",
        "_queue",
        "_read_acquisitions",
        "_readers",
        "_timeouts",
        "_write_acquisitions",
        "_writer",
        "_writer_gen",
        "_writer_label",
    )

    def __init__(self, label: str = "rwlock") -> None:
        check_label(label, optional=False)
        self._label = label
        self._readers: dict[int, tuple[str, int]] = {}  # task id -> (label, generation)
        self._writer: int | None = None  # task id
        self._writer_label: str | None = None
        self._writer_gen = 0
        self._queue: deque[_Waiter] = deque()
        self._gen = 0  # numbers acquisitions, so a stale releaser is told apart
        # The event loop the holders were granted in: the asyncio loop, or the
        # TrioToken of the trio run (a trio guest's, not its host's).
        self._loop: object = None
        self._read_acquisitions = self._write_acquisitions = self._timeouts = 0
        track(self)

    def _owner(self) -> str | None:
        if self._writer is not None:
            return self._writer_label
        if self._readers:
            labels = [label for label, _ in self._readers.values()]
            more = f" (+{len(labels) - 3} more)" if len(labels) > 3 else ""
            return ", ".join(labels[:3]) + more
        return None

    def _wg_holders(self, waiter: _Waiter | None) -> Sequence[Holder]:
        return self._blockers(waiter, False)

    def _blockers(self, waiter: _Waiter | None, timed: bool) -> Sequence[Holder]:
        # What ``waiter`` waits for: a writer waits for the writer and every reader; a
        # reader for the writer and any writer queued ahead of it (FIFO: readers
        # behind a queued writer are not admitted before it). A waiter already
        # granted (not resumed yet) holds the lock: it waits for nobody.
        if waiter is not None and waiter.state is GRANTED:
            return (Holder(waiter.task_id, None, waiter.label),)
        # The walk reads only ids and labels; how long each has held it (timed) is
        # for snapshot().
        holders: list[Holder] = []
        if self._writer is not None:
            writer = self._writer
            since = held_since(writer, self) if timed else None
            holders.append(Holder(writer, None, self._writer_label, since))
        if waiter is None or waiter.kind is _WRITE:
            readers = list(self._readers.items())
            holders += [
                Holder(
                    tid,
                    None,
                    label,
                    held_since(tid, self) if timed else None,
                )
                for tid, (label, _) in readers
            ]
        else:
            for other in self._queue:
                if other is waiter:
                    break
                if other.kind is _WRITE:
                    holders.append(Holder(other.task_id, None, other.label))
        return holders

    def _wg_label(self, key: object) -> str:
        return self._label

    def _wg_locks(self) -> Iterator[LockView]:
        yield LockView("RWLock", self._label, self, None, self._blockers(None, True))

    def _grant(self) -> None:
        # Admit from the head of the queue whatever can run now: one writer if the lock
        # is free, or every reader up to the next writer if no writer holds it.
        queue = self._queue
        while queue:
            head = queue[0]
            if head.kind is _WRITE:
                if self._writer is None and not self._readers:
                    queue.popleft()
                    self._gen += 1
                    self._writer, self._writer_label = head.task_id, head.label
                    self._writer_gen = self._gen
                    wake(head)
                return
            if self._writer is not None:
                return
            queue.popleft()
            self._gen += 1
            self._readers[head.task_id] = (head.label, self._gen)  # type: ignore[assignment]  # pyright: ignore[reportArgumentType]
            wake(head)

    def _abandon(self, waiter: _Waiter) -> None:
        # A waiter leaves: give back what it was granted, or leave the queue; either
        # way, whoever it was blocking may now run.
        state = waiter.state
        if state is GRANTED:
            if waiter.kind is _WRITE:
                self._writer = self._writer_label = None
            else:
                del self._readers[waiter.task_id]
        elif state is WAITING:
            self._queue.remove(waiter)
        # (else trio's abort took it out of the queue)
        waiter.state = GONE
        self._grant()

    def _reentry(self, kind: str, task_id: int) -> MutexReentryError:
        if task_id == self._writer:
            reason = (
                "it holds the write lock; downgrading to read is not supported"
                if kind is _READ
                else "it is not re-entrant"
            )
        elif kind is _WRITE:
            reason = "it holds the read lock; upgrading to write is not supported"
        else:
            reason = "it is not re-entrant"
        return MutexReentryError(self._label, self._owner(), reason=reason)

    def _current_task_id(self) -> int:
        try:
            return id(current_task())
        except RuntimeError:  # no event loop in this thread
            raise MutexLoopError(
                self._label, self._owner(), reason=NO_EVENT_LOOP
            ) from None

    def _check_loop(self, task: object, loop: Any) -> None:
        # Before joining the readers, queueing or trying once: the holders were
        # granted in self._loop, recorded whenever the lock goes from free to held.
        # Held in another event loop, it would hand over across loops (a reader
        # joining) or never wake us (a waiter). ``loop``: the task's asyncio loop,
        # None for a trio task.
        here = loop if loop is not None else trio_parking().current_token()
        if here is not self._loop:
            if self._readers or self._writer is not None:
                raise MutexLoopError(self._label, self._owner(), reason=OTHER_LOOP)
            self._loop = here

    def _give_back(self, kind: str, task_id: int) -> None:
        # A grant on the free path was cancelled before the caller resumed.
        if kind is _READ:
            del self._readers[task_id]
            self._read_acquisitions -= 1
        else:
            self._writer = self._writer_label = None
            self._write_acquisitions -= 1
        self._grant()

    async def _acquire(
        self, kind: str, timeout_ms: float | None, label: str | None
    ) -> Callable[[], None]:
        timeout_s = check_timeout_ms(timeout_ms)
        if label is not None:
            check_label(label)
        label = self._label if label is None else label
        task, loop = current_task_and_loop()
        task_id = id(task)
        if task_id in self._readers or task_id == self._writer:
            raise self._reentry(kind, task_id)
        checker = _diagnostics.checker
        if checker is not None and timeout_s != 0:  # a try-once adds no order edge
            checker.before_acquire(self, self._label)
        free = not self._queue and self._writer is None
        if free and (kind is _READ or not self._readers):
            await anyio.lowlevel.checkpoint_if_cancelled()
            # Free to held: note the event loop it is held in; or joining readers,
            # which must be in that loop.
            self._check_loop(task, loop)
            self._gen += 1
            if kind is _READ:
                self._readers[task_id] = (label, self._gen)
                self._read_acquisitions += 1
            else:
                self._writer, self._writer_label = task_id, label
                self._writer_gen = self._gen
                self._write_acquisitions += 1
            try:
                # Yield once, as anyio.Lock does; cancelled there, give the grant
                # back. On trio, shielded from cancel scopes (trio's own
                # checkpoint); on asyncio, as the mutex's, a plain asyncio.sleep(0):
                # anyio's shielded one builds a cancel scope per acquire, and a
                # native Task.cancel() or asyncio.timeout() is not shielded anyway.
                if loop is None:
                    await trio_parking().cancel_shielded_checkpoint()
                else:
                    await loop_checkpoint(loop)
            except BaseException:
                self._give_back(kind, task_id)
                raise
        else:
            self._check_loop(task, loop)
            if timeout_s == 0:
                # "Try once": never queue; still a checkpoint, so a retry loop yields.
                error = await deadline_fired(
                    anyio.current_time(),
                    timeout_ms,
                    self._label,
                    self._owner(),
                    try_once=True,
                )
                self._timeouts += 1
                raise error
            await self._wait(kind, task, loop, label, timeout_s, timeout_ms)
            if kind is _READ:
                self._read_acquisitions += 1
            else:
                self._write_acquisitions += 1
        gen = self._readers[task_id][1] if kind is _READ else self._writer_gen
        if checker is not None and checker is _diagnostics.checker:  # still enabled
            checker.acquired(self, self._label, self)
        return self._releaser(kind, task_id, gen)

    async def _wait(
        self,
        kind: str,
        task: Any,
        loop: Any,
        label: str,
        timeout_s: float | None,
        timeout_ms: float | None,
    ) -> None:
        start = loop_time(loop)
        waiter = _Waiter(task, self, None, label, timeout_s is not None, True, None)
        waiter.kind = kind
        wait = None
        if _waitgraph.detect:
            # Register the wait, the waiter itself. It is its own key for the walk
            # (_blockers() asks about it), dropped when the wait ends.
            waiter.key = waiter
            if timeout_s is not None:
                waiter.deadline = start + timeout_s
            # The walk runs only if a holder is parked on another lock (see
            # _holder_waits(); its first test inlined, as this runs on every wait).
            writer = self._writer
            its_wait = None if writer is None else _waiting.get(writer)
            if (its_wait is not None and its_wait.resource is not self) or (
                self._readers and self._holder_waits()
            ):
                self._check_deadlock(waiter)  # raises DeadlockError, or registers
            if _waiting.setdefault(waiter.task_id, waiter) is not waiter:
                add_wait(waiter)  # an outer wait of this task: keep it
            wait = waiter
        try:
            if loop is not None:
                fut = waiter.fut = loop.create_future()
                self._queue.append(waiter)
                if timeout_s is None:
                    await fut
                else:
                    with anyio.CancelScope(deadline=start + timeout_s):
                        await fut
            else:
                self._queue.append(waiter)
                park = trio_parking().wait
                abort = functools.partial(_abort_trio, self, waiter)
                if timeout_s is None:
                    await park(abort)
                else:
                    with anyio.CancelScope(deadline=start + timeout_s):
                        await park(abort)
        except BaseException:
            self._abandon(waiter)
            raise
        finally:
            if wait is not None:
                wait.key = None  # it keyed itself for the walk: no cycle left behind
                # leave_wait(), its common case inlined
                popped = _waiting.pop(wait.task_id, None)
                if popped is not wait or wait.prev is not None:
                    left(wait, popped)
        if waiter.state is GRANTED:
            return
        # Our own deadline fired before the lock was granted.
        self._abandon(waiter)
        error = await deadline_fired(start, timeout_ms, self._label, self._owner())
        self._timeouts += 1
        raise error

    def _holder_waits(self) -> bool:
        # Whether the walk must run for a new waiter: only if a holder is parked on
        # another lock. A writer waits for the holders; a reader for the writer and
        # for writers queued ahead, which wait for the holders. A holder that runs,
        # or was just granted this lock (the walk's own rule), lets go by itself.
        # (Holders are never the new waiter's task: that is re-entry, raised before.)
        writer = self._writer
        if writer is not None:  # no tuple of all holders: this runs on every wait
            its_wait = _waiting.get(writer)
            if its_wait is not None and its_wait.resource is not self:
                return True
        for tid in self._readers:
            its_wait = _waiting.get(tid)
            if its_wait is not None and its_wait.resource is not self:
                return True
        return False

    def _check_deadlock(self, waiter: _Waiter) -> None:
        try:
            # Registers the wait unless it raises; the caller then finds it there.
            enter_wait(self, waiter, waiter.label, task=waiter.task, record=waiter)
        except BaseException:
            waiter.key = None
            raise

    def _releaser(self, kind: str, task_id: int, gen: int) -> Callable[[], None]:
        def release() -> None:
            owner: str | None
            if self._current_task_id() != task_id:
                raise MutexReleaseError(self._label, self._owner(), reason=NOT_HOLDER)
            if kind is _READ:
                held = self._readers.get(task_id)
                if held is None or held[1] != gen:
                    raise MutexReleaseError(
                        self._label,
                        self._owner(),
                        reason=ALREADY_RELEASED,
                    )
                del self._readers[task_id]
                owner = held[0]
            else:
                if self._writer != task_id or self._writer_gen != gen:
                    raise MutexReleaseError(
                        self._label,
                        self._owner(),
                        reason=ALREADY_RELEASED,
                    )
                owner = self._writer_label
                self._writer = self._writer_label = None
            checker = _diagnostics.checker
            if checker is not None:
                checker.released(self, owner)
            self._grant()

        return release

    async def acquire_read(
        self, *, timeout_ms: float | None = None, label: str | None = None
    ) -> Callable[[], None]:
        """Acquire the read lock; return a zero-argument function releasing it.

        :param timeout_ms: give up after this many milliseconds; ``None`` or
            ``math.inf`` waits forever, ``0`` tries once
        :param label: the owner label of this acquisition (defaults to the lock's)
        :raises MutexTimeoutError: if ``timeout_ms`` ran out
        :raises MutexReentryError: if the current task already holds the lock
        """
        return await self._acquire(_READ, timeout_ms, label)

    async def acquire_write(
        self, *, timeout_ms: float | None = None, label: str | None = None
    ) -> Callable[[], None]:
        """Acquire the write lock; return a zero-argument function releasing it.

        :param timeout_ms: give up after this many milliseconds; ``None`` or
            ``math.inf`` waits forever, ``0`` tries once
        :param label: the owner label of this acquisition (defaults to the lock's)
        :raises MutexTimeoutError: if ``timeout_ms`` ran out
        :raises MutexReentryError: if the current task already holds the lock,
            for reading (an upgrade) or for writing
        """
        return await self._acquire(_WRITE, timeout_ms, label)

    def read(
        self, *, timeout_ms: float | None = None, label: str | None = None
    ) -> AbstractAsyncContextManager[None]:
        """Return an async context manager holding the read lock for its body.

        Each ``async with`` needs its own ``read()`` call.

        :raises TypeError: if an argument has a bad type (raised here, at once)
        :raises ValueError: if ``timeout_ms`` is negative or NaN (raised here, at once)
        """
        check_timeout_ms(timeout_ms)
        check_label(label)
        return Hold(functools.partial(self._acquire, _READ, timeout_ms, label))

    def write(
        self, *, timeout_ms: float | None = None, label: str | None = None
    ) -> AbstractAsyncContextManager[None]:
        """Return an async context manager holding the write lock for its body.

        Each ``async with`` needs its own ``write()`` call.

        :raises TypeError: if an argument has a bad type (raised here, at once)
        :raises ValueError: if ``timeout_ms`` is negative or NaN (raised here, at once)
        """
        check_timeout_ms(timeout_ms)
        check_label(label)
        return Hold(functools.partial(self._acquire, _WRITE, timeout_ms, label))

    def locked(self) -> bool:
        """Whether the lock is held, for reading or for writing."""
        return self._writer is not None or bool(self._readers)

    def write_locked(self) -> bool:
        """Whether a writer holds the lock."""
        return self._writer is not None

    @property
    def writer(self) -> str | None:
        """The owner label of the writer holding the lock, or ``None``."""
        return self._writer_label if self._writer is not None else None

    @property
    def readers(self) -> list[str]:
        """The owner labels of the readers holding the lock."""
        return [label for label, _ in self._readers.values()]

    def statistics(self) -> RWLockStatistics:
        """Return a snapshot of the lock's state and counters."""
        writers_waiting = sum(1 for w in self._queue if w.kind is _WRITE)
        return RWLockStatistics(
            readers=len(self._readers),
            writer=self.writer,
            readers_waiting=len(self._queue) - writers_waiting,
            writers_waiting=writers_waiting,
            read_acquisitions=self._read_acquisitions,
            write_acquisitions=self._write_acquisitions,
            timeouts=self._timeouts,
        )

    def __repr__(self) -> str:
        return (
            f"<RWLock {self._label!r} readers={len(self._readers)} "
            f"writer={self.writer!r} waiting={len(self._queue)}>"
        )
