"""Stampede-proof cache refresh: per-key single flight, TTL, LRU bound, XFetch."""

from __future__ import annotations

import functools
import inspect
import itertools
import keyword
import math
import random
import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import (
    Any,
    Concatenate,
    Generic,
    ParamSpec,
    TypeVar,
    cast,
    final,
    overload,
)

import anyio.lowlevel

from ._singleflight import SingleFlight, check_awaitable
from ._validation import (
    check_callable,
    check_hashable,
    check_label,
    check_seconds,
    check_timeout_ms,
    short_repr,
)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
P = ParamSpec("P")
P2 = ParamSpec("P2")
S = TypeVar("S")


@final
class _Sentinel:
    """A named marker, shown by its name (or a given text) in signatures and reprs."""

    __slots__ = ("_name", "_text")

    def __init__(self, name: str, text: str | None = None) -> None:
        self._name = name
        self._text = name if text is None else text

    def __repr__(self) -> str:
        return self._text

    def __reduce__(self) -> str:
        return self._name  # pickles as the module global of that name


# "Not given: use the cache's own setting" in signatures (anyio_mutex.redis uses it).
_UNSET: Any = _Sentinel("_UNSET", "<cache default>")
_MISS: Any = _Sentinel("_MISS")
_NUMBER_TYPES = (float, int)


@final
class _Entry:
    __slots__ = ("delta", "expires", "value")

    def __init__(self, value: Any, expires: float, delta: float) -> None:
        self.value = value
        self.expires = expires  # clock time after which the value is stale
        self.delta = delta  # how long the fetch took: XFetch refreshes that much early


# OrderedDict.move_to_end called unbound: the hit paths' LRU bump. A method load on
# an OrderedDict is not specialised by CPython 3.11; a module global is.
_move_to_end: Callable[[OrderedDict[Any, _Entry], Any], None] = OrderedDict.move_to_end  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]


@final
class _Expiring:
    """A fetch result carrying its own TTL (used by anyio_mutex.redis): not public."""

    __slots__ = ("ttl_s", "value")

    def __init__(self, value: Any, ttl_s: float | None) -> None:
        self.value = value
        self.ttl_s = ttl_s


@final
@dataclass(frozen=True)
class CacheStatistics:
    """A snapshot of a :class:`RefreshCache`.

    :ivar int hits: calls answered from the cache without waiting
    :ivar int misses: calls that fetched or waited for another caller's fetch
    :ivar int fetches: fetcher calls started
    :ivar int fetch_errors: fetcher calls that raised
    :ivar int stale_served: failed fetches answered with the last good value
    :ivar int early_refreshes: fetches started early by XFetch, before expiry
    :ivar int evictions: entries dropped to stay within ``max_entries``
    :ivar int currsize: entries stored now (expired ones included until evicted)
    :ivar int maxsize: ``max_entries``
    :ivar int in_flight: keys being fetched now
    """

    hits: int
    misses: int
    fetches: int
    fetch_errors: int
    stale_served: int
    early_refreshes: int
    evictions: int
    currsize: int
    maxsize: int
    in_flight: int


def _check_ttl(ttl_s: object, name: str = "ttl_s") -> float | None:
    return check_seconds(ttl_s, name, allow_none=True)


def _check_factor(value: object, name: str, meaning: str) -> float:
    """Validate a plain number that is not a duration (a fraction, a factor)."""
    if type(value) is bool or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number ({meaning}), got {value!r}")
    return float(value)


async def _raising(exc: Exception) -> Any:
    raise exc


@final
class RefreshCache(Generic[K, V]):
    """A TTL cache that fetches each key at most once per expiry, however many callers.

    ``await cache.get_or_refresh(key, fetcher)`` returns the cached value while it is
    fresh. When it is missing or expired, one caller awaits ``fetcher()`` and every
    caller of the same key that arrives meanwhile shares that one result (a
    :class:`SingleFlight`). Different keys never wait for each other, and a hit takes
    no lock. Hits do not yield to the event loop unless ``checkpoint_on_hit=True``.

    Errors are never cached: if the fetch raises, the callers sharing it get that
    exception and the next caller fetches again (or, with ``stale_if_error_s``, gets
    the last good value). If the fetching caller is cancelled, another waiter takes
    over the fetch. Memory is bounded by ``max_entries`` (least recently used first);
    fetch state lives only while a fetch runs.

    :param ttl_s: default seconds a value stays fresh; ``None`` never expires
    :param max_entries: the most entries kept (least recently used are evicted)
    :param jitter: spread expiries: each value lives ``ttl * (1 - jitter * U)``, with
        ``U`` uniform in [0, 1); 0 disables, must be < 1
    :param early_refresh: XFetch's beta (Vattani et al., VLDB 2015): before expiry a
        caller refreshes early with a probability that rises as expiry nears, scaled by
        how long the fetch took; 1.0 is the paper's default, 0 disables
    :param stale_if_error_s: if a fetch raises within this many seconds after expiry,
        serve the last good value instead of the error; 0 disables
    :param timeout_ms: default limit on waiting for another caller's fetch
    :param clock: a monotonic clock in seconds; pass ``anyio.current_time`` to follow
        the event loop's clock (trio's ``MockClock`` in tests)
    :param label: a name shown in errors; a fetch's owner label is ``"{label}:{key}"``
    :param checkpoint_on_hit: make hits a checkpoint too (trio's convention), at the
        cost of a scheduler round-trip per hit
    """

    __slots__ = (
        "__weakref__",
        "_checkpoint_on_hit",
        "_clock",
        "_data",
        "_early",
        "_early_refreshes",
        "_evictions",
        "_fetch_errors",
        "_fetches",
        "_flight",
        "_hits",
        "_jitter",
        "_label",
        "_max_entries",
        "_misses",
        "_plain",
        "_random",
        "_stale_if_error",
        "_stale_served",
        "_timeout_ms",
        "_tokens",
        "_ttl_s",
    )

    def __init__(
        self,
        *,
        ttl_s: float | None = 60.0,
        max_entries: int = 1024,
        jitter: float = 0.0,
        early_refresh: float = 0.0,
        stale_if_error_s: float = 0.0,
        timeout_ms: float | None = 5000,
        clock: Callable[[], float] = time.monotonic,
        label: str = "refresh",
        checkpoint_on_hit: bool = False,
    ) -> None:
        ttl = _check_ttl(ttl_s)
        if type(max_entries) is not int:
            raise TypeError(f"max_entries must be an int, got {max_entries!r}")
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries!r}")
        jit = _check_factor(jitter, "jitter", "a fraction of ttl_s")
        if not 0 <= jit < 1:  # NaN fails too
            raise ValueError(f"jitter must be in [0, 1), got {jitter!r}")
        if jit and ttl is None:
            raise ValueError(f"jitter={jitter!r} needs a ttl_s, got ttl_s=None")
        beta = _check_factor(early_refresh, "early_refresh", "XFetch's beta")
        if not 0 <= beta < math.inf:
            raise ValueError(
                f"early_refresh must be >= 0 and finite, got {early_refresh!r}"
            )
        stale = check_seconds(stale_if_error_s, "stale_if_error_s") or 0.0
        check_timeout_ms(timeout_ms)
        check_callable(clock, "clock")
        if not isinstance(label, str):
            raise TypeError(f"label must be a str, got {label!r}")
        if type(checkpoint_on_hit) is not bool:
            raise TypeError(
                f"checkpoint_on_hit must be a bool, got {checkpoint_on_hit!r}"
            )
        self._ttl_s = ttl
        self._max_entries = max_entries
        self._jitter = jit
        self._early = beta
        self._stale_if_error = stale
        self._timeout_ms = timeout_ms
        self._clock = clock
        self._label = label
        self._checkpoint_on_hit = checkpoint_on_hit
        # Hits that are a lookup and a clock read only: the inlined hit paths.
        self._plain = not checkpoint_on_hit and not beta
        self._random = random.Random()
        self._data: OrderedDict[K, _Entry] = OrderedDict()
        self._flight: SingleFlight[K, V] = SingleFlight(label)
        # key -> token of the fetch allowed to store its result; invalidate() and
        # clear() drop tokens so an older fetch cannot undo them.
        self._tokens: dict[K, object] = {}
        self._hits = self._misses = self._fetches = self._fetch_errors = 0
        self._stale_served = self._early_refreshes = self._evictions = 0

    async def get_or_refresh(
        self,
        key: K,
        fetcher: Callable[[], Awaitable[V]],
        ttl_s: float | None = _UNSET,
        *,
        timeout_ms: float | None = _UNSET,
        label: str | None = None,
    ) -> V:
        """Return the fresh cached value of ``key``, or fetch it once for all callers.

        :param key: the cache key (hashable)
        :param fetcher: a zero-argument async function producing the value (or a
            function returning an awaitable, such as ``lambda: load(7)``)
        :param ttl_s: how long a value fetched by this call stays fresh (defaults to
            the cache's ``ttl_s``; ``None`` never expires)
        :param timeout_ms: the longest to wait for another caller's fetch (defaults to
            the cache's); your own fetch is not bounded by it
        :param label: the owner label of this caller's fetch (default
            ``"{label}:{key}"``)
        :raises MutexTimeoutError: if ``timeout_ms`` ran out while waiting
        :raises Exception: whatever the fetch raised
        :raises TypeError: if ``fetcher`` is not callable or returns something that
            is not awaitable (no fetch state is left behind), or a bad type is passed
        :raises ValueError: if ``ttl_s`` or ``timeout_ms`` is negative or NaN
        """
        if not (
            ttl_s is _UNSET
            and timeout_ms is _UNSET
            and label is None
            and callable(fetcher)
        ):  # the common, valid call skips the validator (which starts with this test)
            self._check_call(fetcher, ttl_s, timeout_ms, label)
        if self._plain:
            # No checkpoint on hits, no XFetch: _hit() inlined, a Python call less.
            # A subscript and a local clock cost less than .get() and self._clock().
            try:
                entry = self._data[key]
            except KeyError:
                pass  # a miss; fetched outside the except block (no implicit context)
            except TypeError:
                check_hashable(key)  # names the key, if hashing it is what failed
                raise
            else:
                clock = self._clock
                if clock() < entry.expires:
                    _move_to_end(self._data, key)
                    self._hits += 1
                    return entry.value  # type: ignore[no-any-return]
            return await self._miss(key, fetcher, ttl_s, timeout_ms, label)
        if self._checkpoint_on_hit:
            # First, as trio's primitives do: a cancelled caller changes nothing, and
            # a miss whose fetcher never yields is a checkpoint all the same.
            await anyio.lowlevel.checkpoint()
        value = self._hit(key)
        if value is not _MISS:
            return value  # type: ignore[no-any-return]
        return await self._miss(key, fetcher, ttl_s, timeout_ms, label)

    def _check_call(
        self,
        fetcher: object,
        ttl_s: object,
        timeout_ms: object,
        label: object,
    ) -> None:
        # Bad arguments raise on hits too. A cheap type-and-range test runs first
        # (NaN fails ">= 0"); only a suspicious value goes to the full validator.
        if not callable(fetcher):
            raise TypeError(f"fetcher must be callable, got {fetcher!r}")
        if (
            ttl_s is not _UNSET
            and ttl_s is not None
            and not (type(ttl_s) in _NUMBER_TYPES and ttl_s >= 0)  # type: ignore[operator]  # pyright: ignore[reportOperatorIssue]
        ):
            _check_ttl(ttl_s)
        if (
            timeout_ms is not _UNSET
            and timeout_ms is not None
            and not (type(timeout_ms) in _NUMBER_TYPES and timeout_ms >= 0)  # type: ignore[operator]  # pyright: ignore[reportOperatorIssue]
        ):
            check_timeout_ms(timeout_ms)
        if label is not None:
            check_label(label)

    def _hit(self, key: K) -> Any:
        """Return the fresh value of ``key`` and count a hit, or return ``_MISS``."""
        try:
            entry = self._data.get(key)
        except TypeError:
            check_hashable(key)  # names the key, if hashing it is what failed
            raise
        if entry is not None:
            now = self._clock()
            if now < entry.expires and not (
                self._early and self._refresh_early(key, entry, now)
            ):
                self._data.move_to_end(key)
                self._hits += 1
                return entry.value
        return _MISS

    def _refresh_early(self, key: K, entry: _Entry, now: float) -> bool:
        # XFetch: refresh if now - delta * beta * ln(U) >= expiry, U uniform in (0, 1].
        if key in self._flight:
            return False  # someone is already refreshing: keep serving the fresh value
        gap = -entry.delta * self._early * math.log(1.0 - self._random.random())
        if now + gap < entry.expires:
            return False
        self._early_refreshes += 1
        return True

    def _miss(
        self,
        key: K,
        fetcher: Callable[[], Awaitable[V]],
        ttl_s: float | None,
        timeout_ms: float | None,
        label: str | None,
    ) -> Awaitable[V]:
        # Not a coroutine: it returns the flight's, which its caller awaits at once.
        # Every caller of a burst misses once, and a coroutine object less per miss
        # means less for the garbage collector. _start goes unbound (self among its
        # arguments, _start_fetch below): no bound method per miss either.
        if timeout_ms is _UNSET:
            timeout_ms = self._timeout_ms
        if ttl_s is _UNSET:
            ttl_s = self._ttl_s
        elif type(ttl_s) is not float and ttl_s is not None:
            # Checked by the caller; as a float (10**400 seconds: never expires).
            ttl_s = _check_ttl(ttl_s)
        self._misses += 1
        return self._flight._do(
            key,
            _start_fetch,
            (self, key, fetcher, ttl_s),
            timeout_ms,
            label,
            "fetch of",
        )

    def _start(
        self, key: K, fetcher: Callable[[], Awaitable[V]], ttl_s: float | None
    ) -> Awaitable[V]:
        # The flight's function, called by the leader before the flight is
        # registered: a fetcher that returns no awaitable (a sync function) raises
        # TypeError here and leaves nothing behind.
        try:
            pending = fetcher()
        except Exception as exc:  # failed before its first await: a fetch error
            return self._fetch(key, _raising(exc), ttl_s)
        check_awaitable(pending, fetcher, "fetcher")
        return self._fetch(key, pending, ttl_s)

    async def _fetch(self, key: K, pending: Awaitable[V], ttl_s: float | None) -> V:
        # Runs in the leader's task, once per flight.
        token = self._tokens[key] = object()
        clock = self._clock
        start = clock()
        self._fetches += 1
        try:
            value = await pending
        except Exception:
            self._fetch_errors += 1
            old = self._data.get(key)
            if old is not None:
                now = clock()
                if now < old.expires:
                    # An early (XFetch) refresh failed: the value is still fresh, so
                    # the caller gets it; the error is not kept.
                    return old.value  # type: ignore[no-any-return]
                if now < old.expires + self._stale_if_error:
                    self._stale_served += 1
                    return old.value  # type: ignore[no-any-return]
            raise
        finally:
            current = self._tokens.get(key) is token
            if current:
                del self._tokens[key]
        if type(value) is _Expiring:  # a fetcher that knows its value's remaining life
            expiring = cast(_Expiring, value)
            value, ttl_s = expiring.value, expiring.ttl_s
        if current:
            self._store(key, value, ttl_s, start, clock())  # pyright: ignore[reportArgumentType]
        return value  # pyright: ignore[reportReturnType]  # unwrapped from _Expiring

    def _store(
        self, key: K, value: V, ttl_s: float | None, start: float, now: float
    ) -> None:
        if ttl_s is None:
            expires = math.inf
        else:
            if self._jitter:
                ttl_s *= 1.0 - self._jitter * self._random.random()
            expires = now + ttl_s
        data = self._data
        data[key] = _Entry(value, expires, now - start)
        data.move_to_end(key)
        while len(data) > self._max_entries:
            data.popitem(last=False)
            self._evictions += 1

    def invalidate(self, key: K) -> bool:
        """Drop ``key``: the next caller fetches anew, and a fetch running now is not stored.

        :return: whether a value was stored for ``key``
        """
        self._tokens.pop(key, None)
        self._flight.forget(key)
        return self._data.pop(key, None) is not None

    def clear(self) -> None:
        """Drop every entry; fetches running now finish but are not stored."""
        self._data.clear()
        self._tokens.clear()
        self._flight.forget_all()

    def __len__(self) -> int:
        """The number of stored entries (expired ones count until evicted)."""
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        """Whether a fresh value is stored for ``key``."""
        entry = self._data.get(key)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
        return entry is not None and self._clock() < entry.expires

    def statistics(self) -> CacheStatistics:
        """Return a snapshot of the counters."""
        return CacheStatistics(
            hits=self._hits,
            misses=self._misses,
            fetches=self._fetches,
            fetch_errors=self._fetch_errors,
            stale_served=self._stale_served,
            early_refreshes=self._early_refreshes,
            evictions=self._evictions,
            currsize=len(self._data),
            maxsize=self._max_entries,
            in_flight=len(self._flight),
        )

    def __repr__(self) -> str:
        return (
            f"<RefreshCache {self._label!r} size={len(self._data)}/{self._max_entries}"
            f" ttl_s={self._ttl_s}>"
        )


# RefreshCache._start unbound, as _miss passes it to the flight.
_start_fetch: Callable[..., Awaitable[Any]] = RefreshCache._start  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]

_default_cache: RefreshCache[Any, Any] = RefreshCache(max_entries=10_000)


def default_cache() -> RefreshCache[Any, Any]:
    """Return the cache behind the package-level :func:`get_or_refresh`."""
    return _default_cache


# get_or_refresh's default timeout, by identity: a caller that leaves it is not checked.
_DEFAULT_TIMEOUT_MS = 5000


async def get_or_refresh(
    key: Hashable,
    fetcher: Callable[[], Awaitable[V]],
    ttl_s: float | None = 60.0,
    *,
    timeout_ms: float | None = _DEFAULT_TIMEOUT_MS,
    label: str | None = None,
) -> V:
    """Return the cached value of ``key``, refreshing it with one fetch per expiry.

    The drop-in for the popular pattern ``await get_or_refresh(key, fetcher,
    ttl_s=60.0)``: a fresh value is returned at once; on a miss, one caller awaits
    ``fetcher()`` (owner label ``"refresh:{key}"``) and all concurrent callers of the
    same key share its result. Backed by :func:`default_cache` (10,000 entries, LRU).

    :param timeout_ms: the longest to wait for another caller's fetch
    :raises MutexTimeoutError: if ``timeout_ms`` ran out while waiting
    """
    # RefreshCache.get_or_refresh's code, in this frame: a second coroutine costs
    # as much as the hit itself.
    cache: RefreshCache[Hashable, V] = _default_cache
    if not (  # the common, valid call skips _check_call (same test as its own)
        label is None
        and (
            timeout_ms is _DEFAULT_TIMEOUT_MS
            or timeout_ms is None
            or (type(timeout_ms) in _NUMBER_TYPES and timeout_ms >= 0)
        )
        and (ttl_s is None or (type(ttl_s) in _NUMBER_TYPES and ttl_s >= 0))
        and callable(fetcher)
    ):
        cache._check_call(fetcher, ttl_s, timeout_ms, label)
    # The default cache is plain (no checkpoint on hits, no XFetch): _hit() inlined.
    try:
        entry = cache._data[key]
    except KeyError:
        pass  # a miss; fetched outside the except block (no implicit context)
    except TypeError:
        check_hashable(key)  # names the key, if hashing it is what failed
        raise
    else:
        clock = cache._clock
        if clock() < entry.expires:
            _move_to_end(cache._data, key)
            cache._hits += 1
            return entry.value  # type: ignore[no-any-return]
    return await cache._miss(key, fetcher, ttl_s, timeout_ms, label)


# Types keyed as themselves, not in a 1-tuple; a tuple: `in` tests identity first.
_FAST_KEY_TYPES = (str, int)
_POSITIONAL = (
    inspect.Parameter.POSITIONAL_ONLY,
    inspect.Parameter.POSITIONAL_OR_KEYWORD,
)
_instance_tokens = itertools.count()


@final
class _KeyMaker:
    """Turn a call's arguments into one key, whatever way they were passed.

    Built once per decorated function from its signature. ``f(5)``, ``f(item_id=5)``
    and ``f(5, view="full")`` (when ``"full"`` is the default) give the same key: the
    values of every parameter in order, defaults filled in, extra ``*args`` as a
    tuple and extra ``**kwargs`` sorted. ``key`` is a function generated with the
    same parameters, so Python's own argument binding does the work (and raises the
    same ``TypeError`` as the function would, before any state changes). A call
    passing exactly the positional parameters gives ``args`` itself as the key (or
    ``args[0]`` for one int or str, as functools.lru_cache does): ``arity`` lets
    callers take that shortcut without calling ``key``.
    """

    __slots__ = ("arity", "key", "signature", "single")

    def __init__(self, signature: inspect.Signature, name: str) -> None:
        params = list(signature.parameters.values())
        names = [p.name for p in params]
        if not name.isidentifier() or keyword.iskeyword(name):
            name = "cached_function"
        prefix = "_am_"  # helper names that no parameter shadows
        while any(n.startswith(prefix) for n in [*names, name]):
            prefix = "_" + prefix
        namespace: dict[str, Any] = {
            f"{prefix}fast": _FAST_KEY_TYPES,
            f"{prefix}sorted": sorted,
            f"{prefix}tuple": tuple,
            f"{prefix}type": type,
        }
        spelled: list[inspect.Parameter] = []
        elements: list[str] = []
        for i, param in enumerate(params):
            if param.default is not param.empty:
                default = f"{prefix}d{i}"
                namespace[default] = _hashable_default(param)
                param = param.replace(default=_Sentinel(default))
            spelled.append(param.replace(annotation=param.empty))
            if param.kind is inspect.Parameter.VAR_KEYWORD:
                elements.append(f"{prefix}tuple({prefix}sorted({param.name}.items()))")
            else:
                elements.append(param.name)
        kinds = {p.kind for p in params}
        simple = kinds <= set(_POSITIONAL)
        self.single = simple and len(params) == 1
        self.arity = len(params) if simple else -1
        if self.single:
            (x,) = names
            body = f"{x} if {prefix}type({x}) in {prefix}fast else ({x},)"
        else:
            body = "(" + "".join(f"{e}, " for e in elements) + ")"
        source = f"def {name}{inspect.Signature(spelled)}:\n    return {body}\n"
        exec(source, namespace)  # built from a signature, not user text
        self.key: Callable[..., Hashable] = namespace[name]
        self.signature = signature


def _signature(fn: Callable[..., Any]) -> inspect.Signature:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):  # no signature to read: key on the raw call
        return inspect.Signature(
            [
                inspect.Parameter("args", inspect.Parameter.VAR_POSITIONAL),
                inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD),
            ]
        )


def _hashable_default(param: inspect.Parameter) -> Any:
    try:
        hash(param.default)
    except TypeError:  # a mutable default: stands for "not given" in keys
        return _Sentinel(f"<default of {param.name}>")
    return param.default


def _check_async_function(fn: object) -> None:
    """Reject a function that is surely not async; others are checked by result."""
    check_callable(fn, "fn")
    if inspect.iscoroutinefunction(fn):
        return
    if not (
        inspect.isfunction(fn)
        or inspect.ismethod(fn)
        or isinstance(fn, functools.partial)
    ):
        return  # a callable object: its results are checked when it is called
    func = cast(Callable[..., object], fn)
    if not inspect.isasyncgenfunction(func) and inspect.iscoroutinefunction(
        inspect.unwrap(func)  # a sync wrapper of an async function (functools.wraps)
    ):
        return
    raise TypeError(
        f"@cached needs an async function, but {fn!r} is not one: define it with "
        "'async def'"
    )


@final
class CachedFunction(Generic[P, V]):
    """An async function wrapped by :func:`cached`: call it as the original.

    Concurrent calls with the same arguments share one execution, and later calls
    return the stored result until it expires. ``f.cache`` is the
    :class:`RefreshCache` holding the results and ``f.invalidate(*args, **kwargs)``
    drops the result for those arguments.

    Keys are normalised over the function's signature when it is decorated:
    ``f(5)``, ``f(item_id=5)`` and a call that spells out a default value are the same
    key, for calls and for :meth:`invalidate` alike.

    On a method, ``obj.method`` is bound per instance: it caches per instance, and
    ``obj.method.invalidate(3)`` drops ``obj.method(3)``. All instances share one
    :class:`RefreshCache` (so ``max_entries`` bounds them together), keyed on a
    token per instance rather than on the instance: the cache never keeps an
    instance alive, and the entries of a collected instance are never hit again and
    leave with LRU eviction. Instances must be weak-referenceable.
    """

    __slots__ = (
        "__dict__",
        "__weakref__",
        "_arity",
        "_base",
        "_cache",
        "_checkpoint",
        "_clock",
        "_data",
        "_fn",
        "_hit",
        "_instance",
        "_keys",
        "_method_keys",
        "_name",
        "_registry",
        "_single",
        "_token",
    )

    # Set by functools.update_wrapper, as on the function it wraps.
    __name__: str
    __qualname__: str
    __wrapped__: Callable[..., Awaitable[V]]
    _arity: int
    _base: CachedFunction[..., V]  # of a bound form: the function it was bound from
    _cache: RefreshCache[Any, V]
    _checkpoint: bool
    _clock: Callable[[], float]
    _data: OrderedDict[Any, _Entry]
    _fn: Callable[..., Awaitable[V]]
    _hit: Callable[[Hashable], Any]
    _instance: object
    _keys: _KeyMaker
    _method_keys: _KeyMaker | None
    _name: str
    _registry: dict[int, tuple[weakref.ref[Any], int]]
    _single: bool
    _token: int | None

    def __init__(
        self, fn: Callable[P, Awaitable[V]], cache: RefreshCache[Any, V]
    ) -> None:
        """Wrap ``fn`` to cache its results in ``cache`` (:func:`cached` does this).

        :raises TypeError: if ``fn`` is not an async function, or ``cache`` is not
            a :class:`RefreshCache`
        """
        _check_async_function(fn)
        if not isinstance(cache, RefreshCache):
            raise TypeError(f"cache must be a RefreshCache, got {cache!r}")
        checkpoint_on_hit = cache._checkpoint_on_hit
        self._fn = fn
        self._cache = cache
        self._hit = cache._hit
        self._data = cache._data
        self._clock = cache._clock
        self._checkpoint = checkpoint_on_hit
        name = getattr(fn, "__name__", "")
        self._keys = keys = _KeyMaker(_signature(fn), name)
        self._arity = keys.arity if cache._plain else -1
        self._single = keys.single
        self._method_keys = None  # built on first binding to an instance
        self._name = getattr(fn, "__qualname__", repr(fn))
        self._registry = {}
        self._instance = None
        self._token = None
        functools.update_wrapper(self, fn)

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> V:
        """Return the cached result for these arguments, or compute it once."""
        # The shortcut: a plain function called with exactly its positional
        # parameters, on a plain cache (``_arity`` is -1 for bound forms, and for
        # caches with checkpoint_on_hit or XFetch).
        if kwargs or len(args) != self._arity:
            return await self._call(args, kwargs)
        if self._single:
            key = args[0]
            if type(key) not in _FAST_KEY_TYPES:
                key = args
        else:
            key = args
        # RefreshCache._hit inlined, as in RefreshCache.get_or_refresh.
        try:
            entry = self._data[key]
        except KeyError:
            pass  # a miss; fetched outside the except block (no implicit context)
        except TypeError:
            self._check_hashable(key, args, kwargs)
            raise
        else:
            clock = self._clock
            if clock() < entry.expires:
                _move_to_end(self._data, key)
                self._cache._hits += 1
                return entry.value  # type: ignore[no-any-return]
        fetch = functools.partial(self._fn, *args)
        return await self._cache._miss(key, fetch, _UNSET, _UNSET, None)

    async def _call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> V:
        token = self._token
        base: CachedFunction[..., V]
        if token is None:
            base, key = self, self._keys.key(*args, **kwargs)
        else:  # bound: _key() inlined, this is every call of a cached method
            base = self._base
            key = (token, base._method_keys.key(*args, **kwargs))  # type: ignore[union-attr]  # pyright: ignore[reportOptionalMemberAccess]
        if base._checkpoint:
            await anyio.lowlevel.checkpoint()
        try:
            value = base._hit(key)
        except TypeError:
            base._check_hashable(key, args, kwargs)
            raise
        if value is not _MISS:
            return value  # type: ignore[no-any-return]
        if token is not None:
            args = (self._instance, *args)
        fetch = functools.partial(base._fn, *args, **kwargs)
        return await base._cache._miss(key, fetch, _UNSET, _UNSET, None)

    def _check_hashable(
        self, key: object, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        # After a lookup raised TypeError: name the call if its key cannot be hashed.
        try:
            hash(key)
        except TypeError as exc:
            given = ", ".join(
                [
                    *map(short_repr, args),
                    *(f"{k}={short_repr(v)}" for k, v in kwargs.items()),
                ]
            )
            raise TypeError(
                f"the arguments of @cached {self._name} must be hashable, got "
                f"({given}): {exc}"
            ) from exc

    def _key(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[CachedFunction[..., V], Hashable]:
        """Return the unbound function (which holds the state) and the key."""
        token = self._token
        if token is None:
            return self, self._keys.key(*args, **kwargs)
        base = self._base
        assert base._method_keys is not None
        return base, (token, base._method_keys.key(*args, **kwargs))

    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool:
        """Drop the cached result for these arguments (normalised as calls are).

        :return: whether a result was stored for them
        """
        base, key = self._key(args, kwargs)
        return base._cache.invalidate(key)

    @property
    def cache(self) -> RefreshCache[Any, V]:
        """The :class:`RefreshCache` holding the results."""
        return (self if self._token is None else self._base)._cache

    @overload
    def __get__(
        self, instance: None, owner: type[Any] | None = None
    ) -> CachedFunction[P, V]: ...

    @overload
    def __get__(
        self: CachedFunction[Concatenate[S, P2], V],
        instance: S,
        owner: type[Any] | None = None,
    ) -> CachedFunction[P2, V]: ...

    def __get__(self, instance: Any, owner: type[Any] | None = None) -> Any:
        """Bind to ``instance`` when looked up as a method (one cache per instance)."""
        if instance is None or self._token is not None:
            return self
        registry = self._registry
        ident = id(instance)
        entry = registry.get(ident)
        if entry is None or entry[0]() is not instance:
            try:
                ref = weakref.ref(instance, functools.partial(_forget, registry, ident))
            except TypeError:
                raise TypeError(
                    f"@cached method {self._name} needs instances that can be weakly "
                    f"referenced; add '__weakref__' to the __slots__ of "
                    f"{type(instance).__qualname__}"
                ) from None
            entry = registry[ident] = (ref, next(_instance_tokens))
        keys = self._method_keys
        if keys is None:
            params = list(self._keys.signature.parameters.values())
            if params and params[0].kind in _POSITIONAL:
                del params[0]  # self; with (*args), self is the first of args
            name = self._name.rpartition(".")[2]
            keys = self._method_keys = _KeyMaker(inspect.Signature(params), name)
        # The bound form is small; the state stays on self (its _base).
        bound: CachedFunction[Any, V] = object.__new__(CachedFunction)  # pyright: ignore[reportUnknownVariableType]
        bound.__dict__ = self.__dict__  # __name__, __doc__, __wrapped__, ... shared
        bound._arity = -1  # always the general path: it adds the instance's token
        bound._base = self  # type: ignore[assignment]
        bound._instance = instance  # held by the bound form only, as a bound method is
        bound._token = entry[1]
        return bound

    def __reduce__(self) -> Any:
        if self._token is not None:
            return getattr, (self._instance, self._base._name.rpartition(".")[2])
        return self._name  # pickled by reference, as the function it wraps

    def __repr__(self) -> str:
        if self._token is not None:
            name = self._base._name
            return f"<bound cached function {name} of {self._instance!r}>"
        return f"<cached function {self._name}>"


def _forget(
    registry: dict[int, tuple[weakref.ref[Any], int]], ident: int, ref: weakref.ref[Any]
) -> None:
    entry = registry.get(ident)
    if entry is not None and entry[0] is ref:
        del registry[ident]


@overload
def cached(fn: Callable[P, Awaitable[V]], /) -> CachedFunction[P, V]: ...


@overload
def cached(
    *,
    ttl_s: float | None = 60.0,
    max_entries: int = 1024,
    jitter: float = 0.0,
    early_refresh: float = 0.0,
    stale_if_error_s: float = 0.0,
    timeout_ms: float | None = 5000,
    clock: Callable[[], float] = time.monotonic,
    label: str | None = None,
    checkpoint_on_hit: bool = False,
) -> Callable[[Callable[P, Awaitable[V]]], CachedFunction[P, V]]: ...


def cached(fn: Any = None, /, **options: Any) -> Any:
    """Cache an async function's results per arguments, with one call per expiry.

    ``@cached(ttl_s=30)`` on ``async def load(user_id): ...`` makes concurrent
    ``await load(7)`` calls share one execution, and later calls within 30 s return the
    stored result. ``@cached`` and ``@cached()`` use the defaults. The options are
    exactly those of :class:`RefreshCache` (its signature is the source of this
    one's), which is available as ``load.cache``; ``label`` defaults to the
    function's qualified name. The arguments must be hashable. See
    :class:`CachedFunction` for keys and methods.

    :raises TypeError: if the function is not async (``def`` instead of ``async
        def``), or an option is of the wrong type
    :raises ValueError: if an option is out of range
    """
    label = options.pop("label", None)
    check_label(label)
    if fn is not None and not callable(fn):
        raise TypeError(
            f"cached() takes its options by keyword, as cached(ttl_s=...), got {fn!r}"
        )
    RefreshCache(**options)  # validate when cached(...) is called, not at first use

    def decorate(fn: Callable[P, Awaitable[V]]) -> CachedFunction[P, V]:
        _check_async_function(fn)
        name = label if label is not None else getattr(fn, "__qualname__", "cached")
        cache: RefreshCache[Any, V] = RefreshCache(**options, label=name)
        return CachedFunction(fn, cache)

    return decorate if fn is None else decorate(fn)  # pyright: ignore


def _cached_signature() -> inspect.Signature:
    """``cached``'s runtime signature, derived from ``RefreshCache``'s."""
    options = [
        param.replace(default=None, annotation="str | None")
        if name == "label"
        else param
        for name, param in inspect.signature(RefreshCache).parameters.items()
    ]
    fn = inspect.Parameter("fn", inspect.Parameter.POSITIONAL_ONLY, default=None)
    return inspect.Signature([fn, *options])


cached.__signature__ = _cached_signature()  # type: ignore[attr-defined]
