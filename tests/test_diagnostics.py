"""The lock-order checker: inversions found before they deadlock; consistent orders quiet."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from anyio.lowlevel import checkpoint

from anyio_mutex import (
    AsyncMutex,
    KeyedMutex,
    LockOrderError,
    LockOrderWarning,
    Mutex,
    RWLock,
    disable_lock_order_checks,
    enable_lock_order_checks,
)
from anyio_mutex._hold import current_task
from anyio_mutex._waitgraph import registry

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def _checker_off_afterwards() -> Iterator[None]:
    yield
    disable_lock_order_checks()


async def in_task(fn: Any, *args: object) -> None:
    """Run ``fn(*args)`` in a task of its own; re-raise its error unwrapped."""
    errors: list[Exception] = []

    async def runner() -> None:
        try:
            await fn(*args)
        except Exception as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(runner)
    if errors:
        raise errors[0]


async def nested(outer: AsyncMutex, inner: AsyncMutex) -> None:
    async with outer, inner:
        await checkpoint()


async def test_consistent_order_never_reports() -> None:
    enable_lock_order_checks()
    a, b, c = AsyncMutex("a"), AsyncMutex("b"), AsyncMutex("c")
    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(nested, a, b)
            tg.start_soon(nested, b, c)
            tg.start_soon(nested, a, c)


async def test_inversion_raises_before_any_deadlock() -> None:
    enable_lock_order_checks()
    a, b = AsyncMutex("accounts"), Mutex("ledger")
    await in_task(nested, a, b)  # task 1: accounts, then ledger (finished: no deadlock)

    async def inverted() -> None:
        async with b:
            with pytest.raises(LockOrderError) as exc_info:
                await a.acquire()
            assert not a.locked()  # raised before acquiring or waiting
            err = exc_info.value
            assert isinstance(err, RuntimeError)
            assert (err.wanted, err.holding) == ("accounts", "ledger")
            assert "test_diagnostics.py" in err.first_seen
            assert "in nested" in err.first_seen
            assert "in inverted" in err.here
            assert str(err).startswith(
                "Lock order inversion: acquiring 'accounts' while holding 'ledger', "
                "but 'accounts' was taken before 'ledger' earlier"
            )

    await in_task(inverted)


async def test_transitive_cycle_is_found() -> None:
    enable_lock_order_checks()
    a, b, c = AsyncMutex("a"), AsyncMutex("b"), AsyncMutex("c")
    await in_task(nested, a, b)
    await in_task(nested, b, c)
    with pytest.raises(LockOrderError, match="acquiring 'a' while holding 'c'"):
        await in_task(nested, c, a)


async def test_warn_mode_warns_and_proceeds() -> None:
    enable_lock_order_checks("warn")
    a, b = AsyncMutex("a"), AsyncMutex("b")
    await in_task(nested, a, b)
    with pytest.warns(LockOrderWarning, match="acquiring 'a' while holding 'b'"):
        await in_task(nested, b, a)
    assert not a.locked()
    assert not b.locked()


async def test_keyed_mutex_per_key_catches_key_order_inversions() -> None:
    enable_lock_order_checks()
    keyed: KeyedMutex[str] = KeyedMutex("accounts")

    async def transfer(src: str, dst: str) -> None:
        async with keyed.hold(src), keyed.hold(dst):
            await checkpoint()

    await in_task(transfer, "alice", "bob")
    with pytest.raises(
        LockOrderError,
        match=r"acquiring \"accounts\['alice'\]\" while holding \"accounts\['bob'\]\"",
    ):
        await in_task(transfer, "bob", "alice")


async def test_keyed_mutex_per_instance_ignores_keys_but_sees_other_locks() -> None:
    enable_lock_order_checks()
    keyed: KeyedMutex[str] = KeyedMutex("accounts", lock_order="instance")
    audit = AsyncMutex("audit")

    async def transfer(src: str, dst: str) -> None:
        async with keyed.hold(src), keyed.hold(dst):
            await checkpoint()

    await in_task(transfer, "alice", "bob")
    await in_task(transfer, "bob", "alice")  # one node: nesting keys is not checked

    async def keyed_then_audit() -> None:
        async with keyed.hold("x"), audit:
            pass

    async def audit_then_keyed() -> None:
        async with audit, keyed.hold("y"):
            pass

    await in_task(keyed_then_audit)
    with pytest.raises(LockOrderError, match=r"acquiring \"accounts\['y'\]\" while"):
        await in_task(audit_then_keyed)


async def test_rwlock_takes_part() -> None:
    enable_lock_order_checks()
    rw, m = RWLock("config"), AsyncMutex("cache")

    async def read_then_lock() -> None:
        async with rw.read(), m:
            pass

    async def lock_then_write() -> None:
        async with m, rw.write():
            pass

    await in_task(read_then_lock)
    with pytest.raises(
        LockOrderError, match="acquiring 'config' while holding 'cache'"
    ):
        await in_task(lock_then_write)


async def test_disabled_records_nothing() -> None:
    a, b = AsyncMutex("a"), AsyncMutex("b")
    await in_task(nested, a, b)
    await in_task(nested, b, a)  # no checker: nothing reported
    enable_lock_order_checks()
    await in_task(nested, b, a)  # fresh graph: this is the first order seen


async def test_long_hold_logs_label_and_holder(
    caplog: pytest.LogCaptureFixture,
) -> None:
    enable_lock_order_checks(long_hold_ms=0)
    m = AsyncMutex("report")
    with caplog.at_level(logging.WARNING, logger="anyio_mutex"):
        async with m.hold(label="nightly"):
            await checkpoint()
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert message.startswith("lock 'report' was held for ")
    assert "by 'nightly'" in message

    caplog.clear()
    enable_lock_order_checks(long_hold_ms=60_000)
    with caplog.at_level(logging.WARNING, logger="anyio_mutex"):
        async with m.hold(label="quick"):
            pass
    assert caplog.records == []


def test_bad_settings() -> None:
    with pytest.raises(ValueError, match="mode must be 'raise' or 'warn', got 'loud'"):
        enable_lock_order_checks("loud")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="long_hold_ms must be >= 0"):
        enable_lock_order_checks(long_hold_ms=-1)


@pytest.mark.parametrize(
    ("value", "expected"), [("raise", "raise"), ("warn", "warn"), ("", "None")]
)
def test_environment_variable_enables_at_import(value: str, expected: str) -> None:
    code = (
        "import anyio_mutex._diagnostics as d, anyio_mutex; "
        "print(d.state.checker.mode if d.state.checker else None)"
    )
    env = {**os.environ, "ANYIO_MUTEX_LOCK_ORDER": value}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == expected


def test_bad_environment_value_names_the_variable() -> None:
    env = {**os.environ, "ANYIO_MUTEX_LOCK_ORDER": "loud"}
    out = subprocess.run(
        [sys.executable, "-c", "import anyio_mutex"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0
    assert (
        "ANYIO_MUTEX_LOCK_ORDER must be 'raise', 'warn' or 'off', got 'loud'"
        in out.stderr
    )


@pytest.mark.parametrize(
    "how", ["acquire", "async with", "hold", "keyed hold", "rwlock write"]
)
async def test_lock_order_warning_points_at_the_users_line(how: str) -> None:
    # Regression: a fixed stacklevel pointed into the package for anything but a
    # direct acquire() call.
    enable_lock_order_checks("warn")
    a, b = AsyncMutex("a"), AsyncMutex("b")
    keyed: KeyedMutex[str] = KeyedMutex("k", lock_order="instance")
    rw = RWLock("rw")
    targets: dict[str, Any] = {
        "acquire": a,
        "async with": a,
        "hold": a,
        "keyed hold": keyed,
        "rwlock write": rw,
    }
    target = targets[how]

    async def first_order() -> None:  # target, then b
        if how == "keyed hold":
            async with keyed.hold("x"), b:
                pass
        elif how == "rwlock write":
            async with rw.write(), b:
                pass
        else:
            async with a, b:
                pass

    async def inverted() -> int:  # b, then target: the warning's line is returned
        async with b:
            if how == "acquire":
                line = sys._getframe().f_lineno + 1
                release = await a.acquire()
                release()
            elif how == "async with":
                line = sys._getframe().f_lineno + 1
                async with a:
                    pass
            elif how == "hold":
                line = sys._getframe().f_lineno + 1
                async with a.hold():
                    pass
            elif how == "keyed hold":
                line = sys._getframe().f_lineno + 1
                async with keyed.hold("y"):
                    pass
            else:
                line = sys._getframe().f_lineno + 1
                async with rw.write():
                    pass
        return line

    await in_task(first_order)
    with pytest.warns(LockOrderWarning) as record:
        line = await inverted()
    assert target is not None
    assert len(record) == 1
    assert record[0].filename == __file__
    assert record[0].lineno == line


def test_long_hold_ms_messages_name_milliseconds() -> None:
    # Regression: the message said "a number of seconds" for a millisecond setting.
    with pytest.raises(
        TypeError, match="long_hold_ms must be a number of milliseconds"
    ):
        enable_lock_order_checks(long_hold_ms="5")  # type: ignore[arg-type]
    enable_lock_order_checks(long_hold_ms=10**400)  # an int beyond any float: never
    enable_lock_order_checks(long_hold_ms=-0.0)


async def test_a_try_once_neither_reports_nor_records_an_order() -> None:
    # Regression: acquire(timeout_ms=0) never waits, as acquire_nowait() does not,
    # but it was checked and recorded as an order: a false LockOrderError both ways.
    enable_lock_order_checks()
    a, b, rw = AsyncMutex("a"), AsyncMutex("b"), RWLock("rw")
    await nested(a, b)  # a -> b
    async with rw.write(), b:  # rw -> b
        pass
    async with b:
        (await a.acquire(timeout_ms=0))()  # b -> a would invert a -> b
        (await rw.acquire_write(timeout_ms=0))()
        (await rw.acquire_read(timeout_ms=0))()
    c, d = AsyncMutex("c"), AsyncMutex("d")
    async with d:
        (await c.acquire(timeout_ms=0))()  # no d -> c recorded ...
    await nested(c, d)  # ... so c -> d is the first order, not an inversion


async def test_disabling_while_a_task_waits_leaves_no_holder_behind() -> None:
    # Regression: the waiter recorded its grant with the checker it started with,
    # into the shared holder table, after the checks were off; nothing removed it,
    # and it kept the lock alive.
    enable_lock_order_checks()
    m = AsyncMutex("m")
    release = await m.acquire()

    async def waiter() -> None:
        (await m.acquire())()

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        disable_lock_order_checks()
        release()
    assert registry.held == {}


async def test_keys_sharing_one_order_node_are_released_by_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Regression: with lock_order="instance" every key is one node to the checker,
    # and a release took the newest entry of that node, not the key's: the
    # long-hold warning named the wrong key, and the other key lost its time.
    enable_lock_order_checks(long_hold_ms=0)
    keyed: KeyedMutex[int] = KeyedMutex("acct", lock_order="instance")
    first = await keyed.acquire(1, label="old")
    second = await keyed.acquire(2, label="new")
    with caplog.at_level(logging.WARNING, logger="anyio_mutex"):
        first()
        assert [label for _, label, _, _ in registry.held[id(current_task())]] == [
            "acct[2]"
        ]
        second()
    messages = [record.getMessage() for record in caplog.records]
    assert [m.split(" was held")[0] for m in messages] == [
        "lock 'acct[1]'",
        "lock 'acct[2]'",
    ]
    assert messages[0].split(" by ")[1].startswith("'old'")


async def test_keys_with_equal_reprs_are_released_by_their_own_lock() -> None:
    # Two keys that print alike share one node and one label under
    # lock_order="instance": only the key's own lock tells their entries apart.
    class User:
        def __repr__(self) -> str:
            return "<User 1>"

    enable_lock_order_checks()
    keyed: KeyedMutex[User] = KeyedMutex("users", lock_order="instance")
    first = await keyed.acquire(User(), label="owner-A")
    await checkpoint()
    second = await keyed.acquire(User(), label="owner-B")
    (held,) = registry.held.values()
    since_first, since_second = held[0][2], held[1][2]
    assert since_first < since_second
    first()
    (held,) = registry.held.values()
    assert [entry[2] for entry in held] == [since_second]  # the second's, kept
    second()
    assert registry.held == {}
