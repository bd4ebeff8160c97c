"""User code for type checkers (mypy --strict, pyright --strict): @cached as written.

Not collected by pytest; ``.ci/run`` checks it with both checkers (see README.md in
this folder for how lines that must be errors are marked).
"""

from __future__ import annotations

from typing import Any

from typing_extensions import assert_type

from anyio_mutex import CachedFunction, RefreshCache, cached


@cached
async def bare(item_id: int) -> str:
    return str(item_id)


@cached()
async def called(item_id: int, *, view: str = "full") -> str:
    return f"{item_id}:{view}"


@cached(ttl_s=30, checkpoint_on_hit=True)
async def options(item_id: int) -> bytes:
    return b""


class Repo:
    @cached(ttl_s=5)
    async def get(self, item_id: int) -> dict[str, int]:
        return {"id": item_id}

    @cached
    async def bare(self, name: str) -> int:
        return len(name)


async def user_code(repo: Repo) -> None:
    typed: CachedFunction[[int], str] = bare
    assert_type(await typed(1), str)
    assert_type(await bare(3), str)
    assert_type(await called(3, view="x"), str)
    assert_type(await options(item_id=3), bytes)
    assert_type(bare.invalidate(3), bool)
    assert_type(bare.__name__, str)
    assert_type(repo.get.cache, RefreshCache[Any, dict[str, int]])
    assert_type(bare.cache, RefreshCache[Any, str])
    assert_type(await repo.get(3), dict[str, int])
    assert_type(await repo.bare("x"), int)
    assert_type(repo.get.invalidate(3), bool)
    assert_type(await Repo.get(repo, 3), dict[str, int])
    await bare("3")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    await repo.get("3")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    repo.get.invalidate(3, 4)  # type: ignore[call-arg]  # pyright: ignore[reportCallIssue]
    await called(3, mode="x")  # type: ignore[call-arg]  # pyright: ignore[reportCallIssue]


def not_async() -> None:
    def sync(x: int) -> int:
        return x

    cached(sync)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
