"""The async context manager behind the ``hold()``-style methods of several locks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import final


@final
class ReleasingHold:
    """Await ``acquire()`` on entry; call the release function it returned on exit."""

    __slots__ = ("_acquire", "_release")

    def __init__(self, acquire: Callable[[], Awaitable[Callable[[], None]]]) -> None:
        self._acquire = acquire
        self._release: Callable[[], None] | None = None

    async def __aenter__(self) -> None:
        self._release = await self._acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        release, self._release = self._release, None
        assert release is not None
        release()
