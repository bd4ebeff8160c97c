"""SingleFlight: duplicate-call suppression per key, in structured concurrency."""

from __future__ import annotations

import inspect
import math
from collections.abc import Awaitable, Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from types import CoroutineType, TracebackType
from typing import Any, Generic, NoReturn, TypeVar, final

import anyio

from ._hold import current_task, deadline_fired, task_name
from ._validation import (
    check_callable,
    check_hashable,
    check_label,
    check_timeout_ms,
)
from ._waitgraph import Holder, LockView, enter_wait, leave_wait, track
from ._waitgraph import registry as _waitgraph

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")

_PENDING, _OK, _FAILED, _ABANDONED = range(4)


@final
class _Call:
    """One execution of a flight; every field is written only by its leader."""

    __slots__ = (
        "context",
        "done",
        "error",
        "label",
        "leader",
        "state",
        "timer",
        "timer_deadline",
        "traceback",
        "value",
        "waits_for",
    )

    def __init__(self, label: str | None) -> None:
        self.done = anyio.Event()  # set when the leader leaves, whatever the outcome
        # The shared timer (see SingleFlight._wait): while ``timer`` is not None, one
        # waiter (the holder) waits on it under a real deadline, ``timer_deadline``,
        # and timed waiters whose deadlines are not earlier wait on it with none.
        # The leader sets it with ``done``; a holder that leaves early sets it and
        # clears the field. Written by waiters; read by the leader.
        self.timer: anyio.Event | None = None
        self.timer_deadline = math.inf
        self.state = _PENDING
        self.value: Any = None
        self.error: BaseException | None = None
        # The error's traceback and context as the leader caught them: every waiter
        # re-raises from these, so nothing accumulates on the shared exception.
        self.traceback: TracebackType | None = None
        self.context: BaseException | None = None
        self.label = label  # the leader's owner label, for timeout errors
        # The leader's task, recorded only while deadlock detection is on; and what
        # waiters wait for, named by the first waiter (neither is on the leader's
        # path when nobody waits).
        self.leader: Any = None  # a native task: see current_task()
        self.waits_for: str | None = None

    def _wg_holders(self, key: object) -> Sequence[Holder]:
        # A finished call is held by nobody: its waiters are about to resume.
        leader = self.leader
        if leader is None or self.done.is_set():
            return ()
        return (Holder(id(leader), task_name(leader), self.label),)

    def _wg_label(self, key: object) -> str:
        return self.waits_for or "a single-flight call"


def reraise_shared(
    error: BaseException,
    traceback: TracebackType | None,
    context: BaseException | None,
) -> NoReturn:
    """Raise ``error``, shared by many callers, without piling their frames onto it.

    Every caller gets the same exception object (``except ValueError as e`` sees the
    very object the function raised), but each raise starts again from the traceback
    the function produced, so ``error.__traceback__`` holds the function's frames plus
    the current caller's, never those of earlier callers. ``__context__`` is restored
    too: raising inside a caller's ``except`` block would otherwise replace it.
    """
    try:
        raise error.with_traceback(traceback)
    except BaseException as exc:
        exc.__context__ = context
        raise  # a bare raise sets no new context


def check_awaitable(result: object, fn: object, name: str) -> None:
    """Raise ``TypeError`` naming ``fn`` unless its result can be awaited."""
    if type(result) is not CoroutineType and not inspect.isawaitable(result):
        raise TypeError(
            f"{name} must be an async function (or return an awaitable), but "
            f"{fn!r} returned {result!r}"
        )


@final
@dataclass(frozen=True)
class SingleFlightStatistics:
    """A snapshot of a :class:`SingleFlight`.

    :ivar int in_flight: keys with an execution running now
    :ivar int executions: how many times a function was run (once per flight)
    :ivar int shared: callers that got the outcome of another caller's execution
    :ivar int takeovers: executions started because the previous leader was cancelled
    :ivar int timeouts: callers whose ``timeout_ms`` ran out while waiting
    """

    in_flight: int
    executions: int
    shared: int
    takeovers: int
    timeouts: int


@final
class SingleFlight(Generic[K, T]):
    """Run one call per key at a time; overlapping callers share its outcome.

    The design of Go's ``golang.org/x/sync/singleflight`` in structured concurrency:
    the first caller of a key (the leader) runs ``fn`` in its own task, and callers of
    the same key that arrive while it runs wait for it and receive the same value or
    the same exception. It is not a cache: the entry disappears when the call ends, so
    the next caller runs ``fn`` again.

    There is no background task. If the leader is cancelled (or its caller gives up),
    the waiters are not cancelled with it: one of them takes over and runs ``fn``
    itself. Cancelling a waiter only removes that waiter.

    An exception is shared as the same object by every caller of the flight; each
    caller's traceback holds the function's frames and its own, never the frames of
    the callers before it (the traceback of a shared exception does not grow).
    ``error.__traceback__`` is reset by each re-raise, so read or log it inside the
    ``except`` block, before the next ``await``.

    :param label: a name shown in errors (``MutexTimeoutError.label``)
    """

    __slots__ = (
        "__weakref__",
        "_calls",
        "_executions",
        "_label",
        "_shared",
        "_takeovers",
        "_timeouts",
    )

    def __init__(self, label: str = "singleflight") -> None:
        if not isinstance(label, str):
            raise TypeError(f"label must be a str, got {label!r}")
        self._label = label
        # key -> the running call; removed by its leader when the call ends.
        self._calls: dict[K, _Call] = {}
        self._executions = 0
        self._shared = 0
        self._takeovers = 0
        self._timeouts = 0
        track(self)

    def _wg_locks(self) -> Iterator[LockView]:
        for key, call in list(self._calls.items()):
            label = call.waits_for or f"{self._label}: the call for key {key!r}"
            yield LockView("flight", label, call, None, call._wg_holders(None))

    async def do(
        self,
        key: K,
        fn: Callable[..., Awaitable[T]],
        *args: Any,
        timeout_ms: float | None = None,
        label: str | None = None,
    ) -> T:
        """Await ``fn(*args)`` once for all overlapping callers of ``key``.

        :param key: the identity of the call (hashable)
        :param fn: an async function (or a function returning an awaitable); its
            arguments follow it
        :param timeout_ms: the longest to wait for another caller's execution (your
            own execution is not bounded); ``None`` waits as long as it runs, ``0``
            only joins if no waiting is needed
        :param label: the owner label of this caller's execution, shown to callers
            that time out waiting for it (default ``"{label}:{key}"``)
        :return: the value ``fn`` returned
        :raises MutexTimeoutError: if ``timeout_ms`` ran out while waiting
        :raises TypeError: if ``fn`` is not callable, or returned something that is
            not awaitable (nothing is left behind)
        :raises Exception: whatever ``fn`` raised, to every caller that shared it
        """
        check_callable(fn, "fn")
        check_timeout_ms(timeout_ms)
        if label is not None:
            check_label(label)
        return await self._do(key, fn, args, timeout_ms, label, "call for")

    async def _do(
        self,
        key: K,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        timeout_ms: float | None,
        label: str | None,
        what: str,
    ) -> T:
        """:meth:`do` with checked arguments; ``what`` names the call in timeouts."""
        start: float | None = None
        deadline: float | None = None
        takeover = False
        # None for math.inf and for an int too large for a float (10**400).
        timeout_s = None if timeout_ms is None else check_timeout_ms(timeout_ms)
        unbounded = timeout_s is None
        while True:
            try:
                call = self._calls.get(key)
            except TypeError:
                check_hashable(key)  # names the key, if hashing it is what failed
                raise
            if call is None:
                return await self._lead(key, fn, args, label, takeover)
            if timeout_s is not None and (start is None or deadline is None):
                # A takeover keeps the first deadline.
                start = anyio.current_time()
                deadline = start + timeout_s
            wait = None
            if _waitgraph.detect:
                if call.waits_for is None:
                    call.waits_for = f"{self._label}: the {what} key {key!r}"
                # Raises DeadlockError if the leader waits, directly or through
                # others, for this task: a fetch awaiting its own key, say.
                wait = enter_wait(
                    call,
                    None,
                    label,
                    deadline=math.inf if deadline is None else deadline,
                )
            try:
                if unbounded:
                    await call.done.wait()
                else:
                    assert start is not None
                    assert deadline is not None
                    await self._wait(key, call, start, deadline, timeout_ms, what)
            finally:
                if wait is not None:
                    leave_wait(wait)
            if call.state == _OK:
                self._shared += 1
                return call.value  # type: ignore[no-any-return]
            if call.state == _FAILED:
                self._shared += 1
                assert call.error is not None
                reraise_shared(call.error, call.traceback, call.context)
            takeover = True  # the leader was cancelled: lead now, or follow the new one

    async def _lead(
        self,
        key: K,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        label: str | None,
        takeover: bool,
    ) -> T:
        # Start fn before the call is registered: a sync function that raises or
        # returns a non-awaitable leaves no state behind (nothing can join it, as
        # nothing yields in between).
        pending = fn(*args)
        check_awaitable(pending, fn, "fn")
        call = self._calls[key] = _Call(label)
        if _waitgraph.detect:  # a fetch's waiters need to know whose it is
            call.leader = current_task()
        self._executions += 1
        if takeover:
            self._takeovers += 1
        try:
            value = await pending
        except Exception as exc:
            call.state, call.error = _FAILED, exc
            call.traceback, call.context = exc.__traceback__, exc.__context__
            raise
        except BaseException:
            # Cancelled, or KeyboardInterrupt: nothing to share; a waiter takes over.
            call.state = _ABANDONED
            raise
        finally:
            if self._calls.get(key) is call:  # forget() may have dropped it already
                del self._calls[key]
            call.done.set()
            if call.timer is not None:  # wake the waiters sharing a timer
                call.timer.set()
        call.state, call.value = _OK, value
        return value

    async def _wait(
        self,
        key: K,
        call: _Call,
        start: float,
        deadline: float,
        timeout_ms: float | None,
        what: str,
    ) -> None:
        """Wait for ``call`` to end, or raise :class:`MutexTimeoutError` at ``deadline``.

        A cancel scope with a deadline costs several microseconds per waiter, so the
        timed waiters of one call share one timer. The first becomes the holder: it
        waits on ``call.timer`` in a scope with its own deadline. A later waiter whose
        deadline is not earlier waits on the same event with no scope of its own: it
        cannot expire before the holder does. When the holder leaves before the call
        ends (it timed out, or was cancelled, by anyio or natively), it sets the event
        and clears the field: every sharer wakes, times out if its own deadline has
        passed, and otherwise waits again (as the new holder, a sharer of the new
        holder, or on its own). A waiter whose deadline comes before the holder's, or
        that was already woken early once, waits in its own scope: each waiter is
        woken early at most twice, so a call that outlives many deadlines costs what
        one scope per waiter costs, never more.
        """
        early_wakes = 0
        while True:
            timer = call.timer
            if timer is None and early_wakes < 2:
                # Become the holder: the one real deadline of this call's waiters.
                timer = call.timer = anyio.Event()
                call.timer_deadline = deadline
                try:
                    with anyio.CancelScope(deadline=deadline) as scope:
                        await timer.wait()
                finally:
                    # Leaving before the call ends (timed out, or cancelled either
                    # way): wake the sharers, whose deadlines this scope was minding.
                    if call.timer is timer and not call.done.is_set():
                        call.timer = None
                        timer.set()
                if call.done.is_set() or not scope.cancelled_caught:
                    return  # the call ended (if the deadline fired too, it lost)
            elif (
                timer is not None
                and early_wakes < 2
                and deadline >= call.timer_deadline
            ):
                # Share the holder's timer: it expires no later than this deadline.
                await timer.wait()
                if call.done.is_set():
                    return
                early_wakes += 1  # the holder left early: expired, or wait again
                if anyio.current_time() < deadline:
                    continue
            else:
                # An earlier deadline than the holder's: this waiter's own timer.
                with anyio.CancelScope(deadline=deadline) as scope:
                    await call.done.wait()
                if call.done.is_set() or not scope.cancelled_caught:
                    return
            break
        owner = call.label if call.label is not None else f"{self._label}:{key}"
        # If an enclosing scope was cancelled too, its cancellation wins.
        error = await deadline_fired(
            start,
            timeout_ms,
            self._label,
            owner,
            waiting_for=f"the {what} key {key!r}",
        )
        self._timeouts += 1
        raise error

    def forget(self, key: K) -> None:
        """Let the next call of ``key`` run ``fn`` anew instead of joining the running one.

        Callers already waiting keep waiting for the running call.
        """
        self._calls.pop(key, None)

    def forget_all(self) -> None:
        """Let the next call of every key run anew, as :meth:`forget` does for one.

        Callers already waiting keep waiting for the calls running now.
        """
        self._calls.clear()

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` has an execution running now."""
        return key in self._calls

    def __len__(self) -> int:
        """How many keys have an execution running now."""
        return len(self._calls)

    def statistics(self) -> SingleFlightStatistics:
        """Return a snapshot of the counters."""
        return SingleFlightStatistics(
            in_flight=len(self._calls),
            executions=self._executions,
            shared=self._shared,
            takeovers=self._takeovers,
            timeouts=self._timeouts,
        )

    def __repr__(self) -> str:
        return f"<SingleFlight {self._label!r} in_flight={len(self._calls)}>"
