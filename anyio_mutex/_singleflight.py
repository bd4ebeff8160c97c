"""SingleFlight: duplicate-call suppression per key, in structured concurrency."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, final

import anyio
import anyio.lowlevel

from ._errors import MutexTimeoutError
from ._validation import check_callable, check_label, check_timeout_ms

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")

_PENDING, _OK, _FAILED, _ABANDONED = range(4)


@final
class _Call:
    """One execution of a flight; every field is written only by its leader."""

    __slots__ = ("done", "error", "label", "state", "value")

    def __init__(self, label: str | None) -> None:
        self.done = anyio.Event()  # set when the leader leaves, whatever the outcome
        self.state = _PENDING
        self.value: Any = None
        self.error: BaseException | None = None
        self.label = label  # the leader's owner label, for timeout errors


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

    :param label: a name shown in errors (``MutexTimeoutError.label``)
    """

    __slots__ = (
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
        :param fn: an async function; its arguments follow it
        :param timeout_ms: the longest to wait for another caller's execution (your
            own execution is not bounded); ``None`` waits as long as it runs, ``0``
            only joins if no waiting is needed
        :param label: the owner label of this caller's execution, shown to callers
            that time out waiting for it (default ``"{label}:{key}"``)
        :return: the value ``fn`` returned
        :raises MutexTimeoutError: if ``timeout_ms`` ran out while waiting
        :raises Exception: whatever ``fn`` raised, to every caller that shared it
        """
        check_callable(fn, "fn")
        timeout_s = None if timeout_ms is None else check_timeout_ms(timeout_ms)
        if label is not None:
            check_label(label)
        start: float | None = None
        deadline: float | None = None
        takeover = False
        while True:
            call = self._calls.get(key)
            if call is None:
                return await self._lead(key, fn, args, label, takeover)
            if timeout_s is None:
                await call.done.wait()
            else:
                if start is None or deadline is None:  # a takeover keeps the first
                    start = anyio.current_time()
                    deadline = start + timeout_s
                await self._wait(key, call, start, deadline, timeout_ms)
            if call.state == _OK:
                self._shared += 1
                return call.value  # type: ignore[no-any-return]
            if call.state == _FAILED:
                self._shared += 1
                assert call.error is not None
                raise call.error
            takeover = True  # the leader was cancelled: lead now, or follow the new one

    async def _lead(
        self,
        key: K,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        label: str | None,
        takeover: bool,
    ) -> T:
        call = self._calls[key] = _Call(label)
        self._executions += 1
        if takeover:
            self._takeovers += 1
        try:
            value = await fn(*args)
        except Exception as exc:
            call.state, call.error = _FAILED, exc
            raise
        except BaseException:
            # Cancelled, or KeyboardInterrupt: nothing to share; a waiter takes over.
            call.state = _ABANDONED
            raise
        finally:
            if self._calls.get(key) is call:  # forget() may have dropped it already
                del self._calls[key]
            call.done.set()
        call.state, call.value = _OK, value
        return value

    async def _wait(
        self,
        key: K,
        call: _Call,
        start: float,
        deadline: float,
        timeout_ms: float | None,
    ) -> None:
        with anyio.CancelScope(deadline=deadline) as scope:
            await call.done.wait()
        if scope.cancelled_caught and not call.done.is_set():
            waited = anyio.current_time() - start
            # If an enclosing scope was cancelled too, its cancellation wins.
            await anyio.lowlevel.checkpoint_if_cancelled()
            self._timeouts += 1
            owner = call.label if call.label is not None else f"{self._label}:{key}"
            raise MutexTimeoutError(
                waited * 1000, timeout_ms=timeout_ms, label=self._label, owner=owner
            )

    def forget(self, key: K) -> None:
        """Let the next call of ``key`` run ``fn`` anew instead of joining the running one.

        Callers already waiting keep waiting for the running call.
        """
        self._calls.pop(key, None)

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
