"""@cached as users write it: both forms, methods, keys over the signature, errors."""

from __future__ import annotations

import functools
import gc
import inspect
import pickle
import random
import sys
import weakref
from collections.abc import Awaitable
from typing import Any

import anyio
import pytest
from anyio import wait_all_tasks_blocked

from anyio_mutex import CachedFunction, RefreshCache, cached

pytestmark = pytest.mark.anyio


@cached
async def module_level(x: int) -> int:
    """Double x."""
    return 2 * x


async def test_bare_called_and_optioned_forms_all_work() -> None:
    calls: list[str] = []

    @cached
    async def bare(x: int) -> str:
        calls.append("bare")
        return f"b{x}"

    @cached()
    async def empty(x: int) -> str:
        calls.append("empty")
        return f"e{x}"

    @cached(ttl_s=5, max_entries=3, checkpoint_on_hit=True)
    async def optioned(x: int) -> str:
        calls.append("optioned")
        return f"o{x}"

    for _ in range(2):
        assert await bare(1) == "b1"
        assert await empty(1) == "e1"
        assert await optioned(1) == "o1"
    assert calls == ["bare", "empty", "optioned"]
    assert optioned.cache.statistics().maxsize == 3
    assert bare.cache.statistics().maxsize == 1024


def test_positional_options_are_refused_clearly() -> None:
    with pytest.raises(TypeError, match=r"by keyword, as cached\(ttl_s=...\), got 60"):
        cached(60)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="unexpected keyword argument 'ttl'"):
        cached(ttl=60)  # type: ignore[call-overload]


def test_options_are_exactly_refresh_caches() -> None:
    ours = inspect.signature(cached).parameters
    theirs = inspect.signature(RefreshCache).parameters
    assert list(ours) == ["fn", *theirs]
    for name, param in theirs.items():
        expected = None if name == "label" else param.default
        assert (ours[name].kind, ours[name].default) == (param.kind, expected), name
    assert ours["label"].annotation == "str | None"
    if sys.version_info >= (3, 11):  # typing.get_overloads is new in 3.11
        from types import SimpleNamespace
        from typing import get_overloads

        # Registered under the defining module, before __init__ renamed it.
        where = SimpleNamespace(
            __module__="anyio_mutex._refresh", __qualname__="cached"
        )
        overloads = get_overloads(where)  # type: ignore[arg-type]
        assert len(overloads) == 2
        spelled = inspect.signature(overloads[1]).parameters
        assert list(spelled) == list(theirs)
        for name, param in theirs.items():
            expected = None if name == "label" else param.default
            assert spelled[name].default == expected, name
            assert spelled[name].annotation == (
                "str | None" if name == "label" else param.annotation
            ), name


async def test_positional_and_keyword_calls_are_one_key() -> None:
    # Regression: f(5) and f(item_id=5) were different keys, so invalidate(5)
    # missed what FastAPI (which calls with keywords) had cached.
    calls: list[tuple[int, str]] = []

    @cached
    async def load(item_id: int, view: str = "full") -> str:
        calls.append((item_id, view))
        return f"{item_id}:{view}"

    assert await load(5) == "5:full"
    assert await load(item_id=5) == "5:full"
    assert await load(5, "full") == "5:full"
    assert await load(5, view="full") == "5:full"
    assert await load(view="full", item_id=5) == "5:full"
    assert calls == [(5, "full")]
    assert load.invalidate(item_id=5) is True
    assert load.invalidate(5) is False
    assert await load(5, view="brief") == "5:brief"
    assert load.invalidate(5, "brief") is True
    assert len(calls) == 2


async def test_keyword_only_var_and_positional_only_parameters() -> None:
    @cached
    async def load(a: int, /, b: int = 2, *rest: int, c: int = 3, **extra: int) -> str:
        return f"{a} {b} {rest} {c} {sorted(extra.items())}"

    first = await load(1)
    assert await load(1, 2, c=3) == first
    assert await load(1, b=2) == first
    assert len(load.cache) == 1
    await load(1, 2, 9, c=3, z=1, y=2)
    await load(1, 2, 9, y=2, z=1)
    assert len(load.cache) == 2
    assert load.invalidate(1, 2, 9, z=1, y=2) is True
    with pytest.raises(TypeError):
        await load(a=1)  # type: ignore[call-arg]  # positional-only
    with pytest.raises(TypeError):
        await load()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        await load(1, 2, b=2)  # type: ignore[misc]
    assert len(load.cache) == 1  # bad calls stored nothing


async def test_single_argument_keys_stay_distinct() -> None:
    @cached
    async def load(x: object) -> str:
        return repr(x)

    assert await load(1) == "1"
    assert await load(x=1) == "1"
    assert await load("1") == "'1'"
    assert await load((1,)) == "(1,)"
    assert await load(x=(1,)) == "(1,)"
    assert len(load.cache) == 3


async def test_the_shortcut_and_the_full_normaliser_agree() -> None:
    seed = 20261130
    print(f"seed={seed}")
    rng = random.Random(seed)

    @cached
    async def pair(a: object, b: object = "d") -> str:
        return "v"

    @cached
    async def one(a: object) -> str:
        return "v"

    values: list[object] = [0, 1, "1", "a", (1,), 1.0, None, b"x", ("d",)]
    for _ in range(300):
        a, b = rng.choice(values), rng.choice(values)
        await pair(a, b)
        assert pair.invalidate(a=a, b=b) is True, (a, b)
        await one(a)
        assert one.invalidate(a=a) is True, a
    assert len(pair.cache) == len(one.cache) == 0


async def test_unhashable_default_does_not_break_calls_that_omit_it() -> None:
    @cached
    async def load(x: int, tags: list[str] = []) -> int:  # noqa: B006
        return x

    assert await load(1) == 1
    assert await load(x=1) == 1
    assert len(load.cache) == 1


class Repo:
    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: list[int] = []

    @cached(ttl_s=60)
    async def get(self, item_id: int) -> str:
        """Load one item."""
        self.calls.append(item_id)
        return f"{self.name}:{item_id}"


async def test_methods_bind_per_instance() -> None:
    # Regression: no __get__, so repo.get.invalidate(3) returned False silently
    # and the cache held every instance strongly.
    a, b = Repo("a"), Repo("b")
    assert await a.get(3) == "a:3"
    assert await a.get(item_id=3) == "a:3"
    assert await b.get(3) == "b:3"
    assert (a.calls, b.calls) == ([3], [3])
    assert a.get.invalidate(3) is True
    assert a.get.invalidate(3) is False
    assert await b.get(3) == "b:3"  # b's entry was untouched
    assert b.calls == [3]
    assert a.get.cache is b.get.cache is Repo.get.cache
    assert a.get.__name__ == "get"
    assert a.get.__doc__ == "Load one item."
    assert "bound cached function Repo.get" in repr(a.get)


async def test_the_cache_does_not_keep_instances_alive() -> None:
    repo = Repo("gone")
    assert await repo.get(1) == "gone:1"
    ref = weakref.ref(repo)
    registry = Repo.get._registry
    assert len(registry) == 1
    del repo
    gc.collect()
    assert ref() is None
    assert registry == {}
    assert len(Repo.get.cache) >= 1  # the entry stays until LRU eviction, unreachable


async def test_a_bound_form_keeps_its_instance_like_a_bound_method() -> None:
    get = Repo("temp").get
    gc.collect()
    assert await get(2) == "temp:2"
    assert await get(2) == "temp:2"
    assert get.invalidate(2) is True


async def test_instances_without_weakref_support_are_refused_clearly() -> None:
    class Slotted:
        __slots__ = ()

        @cached
        async def get(self, x: int) -> int:
            return x

    with pytest.raises(TypeError, match=r"add '__weakref__' to the __slots__ of"):
        Slotted().get  # noqa: B018


def test_sync_function_is_rejected_at_decoration_naming_it() -> None:
    # Regression: failed only when called, with "object int can't be used in
    # 'await' expression".
    def sync(x: int) -> int:
        return x

    with pytest.raises(TypeError, match=r"@cached needs an async function.*sync"):
        cached(sync)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"@cached needs an async function.*sync"):
        cached(ttl_s=1)(sync)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"@cached needs an async function"):
        cached(functools.partial(sync, 1))  # type: ignore[arg-type]

    async def gen() -> Any:
        yield 1

    with pytest.raises(TypeError, match=r"@cached needs an async function.*gen"):
        cached(gen)


async def test_sync_wrapper_of_an_async_function_is_accepted() -> None:
    async def real(x: int) -> int:
        return x + 1

    @functools.wraps(real)
    def wrapper(x: int) -> Awaitable[int]:
        return real(x)

    assert await cached(wrapper)(1) == 2


async def test_callable_object_returning_no_awaitable_is_named_at_the_call() -> None:
    class Sync:
        def __call__(self, x: int) -> int:
            return x

        def __repr__(self) -> str:
            return "<Sync fetcher>"

    fn: Any = cached(Sync())  # type: ignore[arg-type]
    with pytest.raises(
        TypeError, match=r"must be an async function.*Sync fetcher.*returned 1"
    ):
        await fn(1)
    assert fn.cache.statistics().in_flight == 0
    assert len(fn.cache) == 0


def test_keeps_the_wrapped_functions_identity_and_is_weak_referenceable() -> None:
    assert module_level.__name__ == "module_level"
    assert module_level.__qualname__ == "module_level"
    assert module_level.__doc__ == "Double x."
    assert module_level.__module__ == __name__
    assert inspect.iscoroutinefunction(module_level.__wrapped__)
    assert isinstance(module_level, CachedFunction)
    assert weakref.ref(module_level)() is module_level
    assert pickle.loads(pickle.dumps(module_level)) is module_level


async def test_checkpoint_on_hit_reaches_the_decorator() -> None:
    @cached(checkpoint_on_hit=True)
    async def load(x: int) -> int:
        return x

    await load(1)
    with anyio.CancelScope() as scope:
        scope.cancel()
        await load(1)  # a hit, but a cancel point all the same
    assert scope.cancelled_caught


async def test_concurrent_calls_with_either_spelling_share_one_execution() -> None:
    gate = anyio.Event()
    calls = 0

    @cached
    async def load(item_id: int) -> int:
        nonlocal calls
        calls += 1
        await gate.wait()
        return item_id

    results: list[int] = []

    async def by_position() -> None:
        results.append(await load(7))

    async def by_keyword() -> None:
        results.append(await load(item_id=7))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(by_position)
                tg.start_soon(by_keyword)
            await wait_all_tasks_blocked()
            gate.set()
    assert calls == 1
    assert results == [7] * 10


async def test_parameters_named_like_builtins_or_helpers_still_key_correctly() -> None:
    @cached
    async def load(
        sorted: int, type: str = "t", _am_fast: int = 0, **tuple: int
    ) -> str:
        return f"{sorted}{type}{_am_fast}{tuple}"

    assert await load(1, z=2) == "1t0{'z': 2}"
    assert await load(sorted=1, type="t", z=2) == "1t0{'z': 2}"
    assert len(load.cache) == 1


@pytest.mark.parametrize("early_refresh", [0.0, 1.0])
async def test_decorator_hits_count_and_refresh_lru_order(early_refresh: float) -> None:
    # The decorator's hit shortcut must keep RefreshCache's bookkeeping exactly.
    @cached(max_entries=2, early_refresh=early_refresh)
    async def load(x: int) -> int:
        return x

    for x in (1, 2, 1, 3):
        assert await load(x) == x
    assert 1 in load.cache
    assert 2 not in load.cache  # least recently used: 1 was bumped by its hit
    assert 3 in load.cache
    stats = load.cache.statistics()
    assert (stats.hits, stats.misses, stats.evictions) == (1, 3, 1)


async def test_constructed_directly_it_follows_its_caches_settings() -> None:
    async def load(x: int) -> int:
        return x

    with pytest.raises(TypeError, match="cache must be a RefreshCache, got 5"):
        CachedFunction(load, 5)  # type: ignore[arg-type]
    fn = CachedFunction(load, RefreshCache(checkpoint_on_hit=True))
    assert await fn(1) == 1
    with anyio.CancelScope() as scope:
        scope.cancel()
        await fn(1)
    assert scope.cancelled_caught


async def test_a_method_taking_only_star_args_keys_on_its_arguments() -> None:
    class Store:
        @cached
        async def get(*args: Any) -> int:
            return len(args)

    store: Any = Store()  # type checkers cannot bind a (*args) method
    assert await store.get(1, 2) == 3  # self is the first of args
    assert store.get.invalidate(1, 2) is True


async def test_a_callable_without_a_signature_keys_on_the_raw_call() -> None:
    class Opaque:
        __signature__ = "not a signature"  # inspect.signature raises TypeError

        async def __call__(self, *args: Any, **kwargs: Any) -> int:
            return len(args) + len(kwargs)

    fn: Any = cached(Opaque())
    assert await fn(1, x=2) == 2
    assert fn.invalidate(1, x=2) is True
