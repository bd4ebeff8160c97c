"""What every lock shares: the hold() context manager, the "own deadline fired"
epilogue, and the identity of the running event loop."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Final, NamedTuple, Protocol, final

import anyio
import anyio.lowlevel

from ._errors import MutexTimeoutError


class Backend(Protocol):
    """What the locks ask of an anyio backend class."""

    def current_token(self) -> object: ...  # pragma: no cover

    def current_time(self) -> float: ...  # pragma: no cover

    async def checkpoint_if_cancelled(self) -> None: ...  # pragma: no cover


def _entering() -> None:  # pragma: no cover - a marker, never called
    raise AssertionError("released while entering")


@final
class Hold:
    """Await ``acquire()`` on entry; call the release function it returned on exit.

    One object serves one ``async with`` at a time (it may be reused afterwards):
    entering it again while it is entered, from any task, raises ``RuntimeError``
    instead of mixing up the two holds.
    """

    __slots__ = ("_acquire", "_release")

    def __init__(self, acquire: Callable[[], Awaitable[Callable[[], None]]]) -> None:
        self._acquire = acquire
        self._release: Callable[[], None] | None = None

    async def __aenter__(self) -> None:
        if self._release is not None:
            raise RuntimeError(
                "this hold() context manager is already entered; call hold() once "
                "per 'async with'"
            )
        self._release = _entering  # claimed before the await: a second entry fails
        try:
            self._release = await self._acquire()
        except BaseException:
            self._release = None
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        release, self._release = self._release, None
        assert release is not None
        assert release is not _entering
        release()


async def deadline_fired(
    start: float,
    timeout_ms: float | None,
    label: str,
    owner: str | None,
    *,
    try_once: bool = False,
    waiting_for: str | None = None,
) -> MutexTimeoutError:
    """Return the error for an acquisition whose own ``timeout_ms`` ran out.

    The caller holds nothing and has left every queue. An enclosing cancellation
    wins (this is a cancel point). ``try_once`` (``timeout_ms=0``) makes it a full
    checkpoint, so a retry loop cannot starve the event loop. The caller counts the
    timeout and raises the error, only if this returns.
    """
    waited_ms = (anyio.current_time() - start) * 1000
    if timeout_ms is not None and waited_ms < timeout_ms:
        # The deadline passed, so the wait was at least timeout_ms long; a shortfall
        # is float rounding (start + timeout - start) or a clock in whole ms (uvloop).
        waited_ms = float(timeout_ms)
    if try_once:
        await anyio.lowlevel.checkpoint()
    else:
        await anyio.lowlevel.checkpoint_if_cancelled()
    return MutexTimeoutError(
        waited_ms,
        timeout_ms=timeout_ms,
        label=label,
        owner=owner,
        waiting_for=waiting_for,
    )


_LOOP: Final[anyio.lowlevel.RunVar[object]] = anyio.lowlevel.RunVar(
    "anyio_mutex.event_loop"
)


class _PortableBackend:
    """For anyio < 4.11 (no ``current_token()``): the same answers, more slowly."""

    @staticmethod
    def current_token() -> object:
        loop = _LOOP.get(None)
        if loop is None:
            loop = object()
            _LOOP.set(loop)
        return loop

    @staticmethod
    def current_time() -> float:
        return anyio.current_time()

    @staticmethod
    async def checkpoint_if_cancelled() -> None:
        await anyio.lowlevel.checkpoint_if_cancelled()


try:
    from anyio.lowlevel import current_token as _current_token
except ImportError:  # pragma: no cover - anyio < 4.11
    _current_token = None  # type: ignore[assignment]


def running_loop() -> tuple[Backend, object]:
    """Return the running backend and a token unique to its event loop.

    The backend (:class:`anyio.abc.AsyncBackend`, public API) answers
    ``current_token()`` for the loop it runs (raising ``RuntimeError`` under another
    backend) and ``current_time()`` for its clock, both without the backend lookup
    that ``anyio.current_time()`` does on every call.

    :raises RuntimeError: if no event loop runs in this thread
    """
    if _current_token is None:  # pragma: no cover
        return _PortableBackend, _PortableBackend.current_token()
    token = _current_token()
    return token.backend_class, token.native_token


# asyncio's two C getters, once asyncio is imported (by someone else: importing it
# here would cost every trio program ~20 ms and the logging module).
_asyncio: tuple[Callable[[], Any], Callable[[Any], Any]] | None = None


def _load_asyncio() -> tuple[Callable[[], Any], Callable[[Any], Any]] | None:
    global _asyncio
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return None
    # _get_running_loop is asyncio's documented-in-source fast getter (in
    # asyncio.events.__all__, used by uvloop and trio-asyncio): unlike the public
    # get_running_loop() it answers None instead of raising under trio.
    _asyncio = (asyncio.events._get_running_loop, asyncio.current_task)
    return _asyncio


# trio's getter, once trio is imported (by someone else, as asyncio above).
_trio_task: Callable[[], Any] | None = None


def _load_trio() -> Callable[[], Any] | None:
    global _trio_task
    trio = sys.modules.get("trio")
    if trio is None:
        return None
    _trio_task = trio.lowlevel.current_task
    return _trio_task


def current_task() -> Any:
    """Return the running task as its event loop knows it (an asyncio or trio task).

    The slow paths ask this instead of :func:`anyio.get_current_task`, which builds a
    :class:`~anyio.TaskInfo` on every call (several times the cost of a hand-off's
    bookkeeping). ``id()`` of the result is the task's :attr:`anyio.TaskInfo.id`, so
    the two can be compared; ``tests/test_waitgraph.py`` checks that on every backend.

    :raises RuntimeError: if no task runs in this thread
    """
    return current_task_and_loop()[0]


def wakes_here(fut: Any, run: Any) -> bool:
    """Whether a parked task can be woken directly from the running code: ``fut``
    (the asyncio future it awaits) belongs to the loop running in this thread, or
    (``fut`` ``None``: a trio task) ``run``, the ``TrioToken`` of its trio run, is
    the one running here (also from the asyncio host of a trio guest run, between
    its ticks: trio's reschedule works there)."""
    if fut is not None:
        asyncio = _asyncio or _load_asyncio()
        return asyncio is not None and asyncio[0]() is fut.get_loop()
    try:
        return (_trio_parking or trio_parking()).current_token() is run
    except RuntimeError:  # a worker thread, or no trio run in this thread
        return False


def loop_runs_here() -> bool:
    """Whether an event loop runs in this thread: an asyncio loop (also in one of
    its callbacks, where no task runs) or a trio run (also a guest's host)."""
    asyncio = _asyncio or _load_asyncio()
    if asyncio is not None and asyncio[0]() is not None:
        return True
    if sys.modules.get("trio") is None:
        return False
    try:
        (_trio_parking or trio_parking()).current_token()
    except RuntimeError:
        return False
    return True


def current_task_and_loop() -> tuple[Any, Any]:
    """Return the running task and its asyncio loop, or ``None`` for a trio task.

    For a lock that parks its waiters itself: on an asyncio future of that loop, or
    with :func:`trio_parking` under trio. :func:`current_task`, with the loop that
    it looks up anyway.

    :raises RuntimeError: if no task runs in this thread
    """
    # The C getter answers None where no asyncio loop runs (under trio), and an
    # asyncio loop without a current task is a trio guest run on that loop.
    asyncio = _asyncio or _load_asyncio()
    if asyncio is not None:
        loop = asyncio[0]()
        if loop is not None:
            task = asyncio[1](loop)
            if task is not None:
                return task, loop
    trio_task = _trio_task or _load_trio()
    if trio_task is None:
        raise RuntimeError("no task is running in this thread")
    return trio_task(), None


class TrioParking(NamedTuple):
    """The trio primitives the locks call: parking and waking a task, checkpoints,
    the clock, and the run's token."""

    wait: Callable[[Callable[[Any], Any]], Awaitable[Any]]
    reschedule: Callable[[Any], None]
    aborted: Any  # Abort.SUCCEEDED
    checkpoint: Callable[[], Awaitable[None]]
    current_time: Callable[[], float]
    cancel_shielded_checkpoint: Callable[[], Awaitable[None]]
    current_token: Callable[[], Any]  # current_trio_token()


_trio_parking: TrioParking | None = None


def trio_parking() -> TrioParking:
    """The trio primitives the locks call, looked up once trio runs (importing trio
    here would cost every asyncio program its import time)."""
    global _trio_parking
    if _trio_parking is None:
        lowlevel = sys.modules["trio"].lowlevel
        _trio_parking = TrioParking(
            lowlevel.wait_task_rescheduled,
            lowlevel.reschedule,
            lowlevel.Abort.SUCCEEDED,
            lowlevel.checkpoint,
            sys.modules["trio"].current_time,
            lowlevel.cancel_shielded_checkpoint,
            lowlevel.current_trio_token,
        )
    return _trio_parking


_asyncio_sleep: Callable[[float], Awaitable[None]] | None = None


def loop_time(loop: Any) -> float:
    """:func:`anyio.current_time` for a task whose loop :func:`current_task_and_loop`
    returned, without anyio's backend lookup: the loop's clock, or trio's."""
    if loop is None:
        return (_trio_parking or trio_parking()).current_time()
    return loop.time()  # type: ignore[no-any-return]


def loop_checkpoint(loop: Any) -> Awaitable[None]:
    """:func:`anyio.lowlevel.checkpoint` for a task whose loop
    :func:`current_task_and_loop` returned, without anyio's backend lookup (which
    looks the task up again): ``asyncio.sleep(0)``, as anyio's asyncio backend does,
    or trio's own checkpoint."""
    global _asyncio_sleep
    if loop is None:
        return (_trio_parking or trio_parking()).checkpoint()
    sleep = _asyncio_sleep
    if sleep is None:
        sleep = _asyncio_sleep = sys.modules["asyncio"].sleep
    return sleep(0)


def task_name(task: Any) -> str:
    """The name of a task returned by :func:`current_task`."""
    get_name = getattr(task, "get_name", None)  # asyncio.Task
    name = get_name() if get_name is not None else getattr(task, "name", None)
    return name if isinstance(name, str) else f"<task {id(task)}>"
