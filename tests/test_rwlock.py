"""RWLock: many readers or one writer; FIFO batches starve neither side.

The write side also runs the shared contract suite (tests/test_contract.py).
"""

from __future__ import annotations

import random

import anyio
import anyio.to_thread
import pytest
from anyio import wait_all_tasks_blocked
from anyio.lowlevel import checkpoint

from anyio_mutex import (
    MutexLoopError,
    MutexReentryError,
    MutexReleaseError,
    MutexTimeoutError,
    RWLock,
)

pytestmark = pytest.mark.anyio


async def test_readers_share_the_lock() -> None:
    rw = RWLock()
    all_in = anyio.Event()
    inside = 0

    async def reader(i: int) -> None:
        nonlocal inside
        async with rw.read(label=f"r{i}"):
            inside += 1
            if inside == 10:
                all_in.set()
            await all_in.wait()  # only possible if all ten hold it at once

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for i in range(10):
                tg.start_soon(reader, i)
    assert rw.statistics().read_acquisitions == 10
    assert not rw.locked()


async def test_writer_excludes_readers_and_readers_exclude_the_writer() -> None:
    rw = RWLock()
    release_read = await rw.acquire_read(label="r")
    events: list[str] = []

    async def writer() -> None:
        async with rw.write(label="w"):
            events.append("writer in")
            assert rw.readers == []

    async def late_reader() -> None:
        async with rw.read(label="r2"):
            events.append("reader in")
            assert rw.writer is None

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer)
            await wait_all_tasks_blocked()
            assert rw.statistics().writers_waiting == 1
            tg.start_soon(late_reader)
            await wait_all_tasks_blocked()
            assert events == []  # the late reader queues behind the waiting writer
            release_read()
    assert events == ["writer in", "reader in"]


async def test_writer_is_not_starved_by_a_stream_of_readers() -> None:
    rw = RWLock()
    stop = False
    reads_before_writer_in: list[int] = []

    async def reader_stream(i: int) -> None:
        while not stop:
            async with rw.read(label=f"r{i}"):
                await checkpoint()

    async def writer() -> None:
        reads_at_arrival = rw.statistics().read_acquisitions
        async with rw.write(label="w"):
            reads_before_writer_in.append(
                rw.statistics().read_acquisitions - reads_at_arrival
            )

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for i in range(5):
                tg.start_soon(reader_stream, i)
            for _ in range(5):
                await checkpoint()  # the readers are cycling through the lock
            assert rw.statistics().readers > 0
            async with anyio.create_task_group() as inner:
                inner.start_soon(writer)
            stop = True
    # Once the writer queued, no reader got in ahead of it.
    assert reads_before_writer_in == [0]


async def test_readers_are_not_starved_by_a_stream_of_writers() -> None:
    rw = RWLock()
    stop = False
    result: list[tuple[int, int]] = []

    async def writer_stream(i: int) -> None:
        while not stop:
            async with rw.write(label=f"w{i}"):
                await checkpoint()

    async def reader() -> None:
        stats = rw.statistics()
        writes_at_arrival = stats.write_acquisitions
        ahead = stats.writers_waiting + (1 if stats.writer else 0)
        async with rw.read(label="r"):
            result.append(
                (rw.statistics().write_acquisitions - writes_at_arrival, ahead)
            )

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for i in range(4):
                tg.start_soon(writer_stream, i)
            for _ in range(5):
                await checkpoint()
            assert rw.statistics().writers_waiting > 0
            async with anyio.create_task_group() as inner:
                inner.start_soon(reader)
            stop = True
    admitted_first, ahead = result[0]
    # Only the writers holding or already queued when the reader arrived went first.
    assert admitted_first <= ahead
    assert ahead > 0


async def test_fifo_batches_admit_consecutive_readers_together() -> None:
    rw = RWLock()
    release_w = await rw.acquire_write(label="w0")
    log: list[str] = []
    gates = {name: anyio.Event() for name in ("r1", "r2", "w1", "r3")}

    async def reader(name: str) -> None:
        async with rw.read(label=name):
            log.append(f"+{name}")
            await gates[name].wait()
        log.append(f"-{name}")

    async def writer(name: str) -> None:
        async with rw.write(label=name):
            log.append(f"+{name}")
            await gates[name].wait()
        log.append(f"-{name}")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for name, fn in (
                ("r1", reader),
                ("r2", reader),
                ("w1", writer),
                ("r3", reader),
            ):
                tg.start_soon(fn, name)
                await wait_all_tasks_blocked()
            release_w()
            await wait_all_tasks_blocked()
            assert sorted(log) == ["+r1", "+r2"]  # both head readers together, not r3
            assert sorted(rw.readers) == ["r1", "r2"]
            gates["r1"].set()
            gates["r2"].set()
            await wait_all_tasks_blocked()
            assert log[-1] == "+w1"
            gates["w1"].set()
            await wait_all_tasks_blocked()
            assert log[-1] == "+r3"
            gates["r3"].set()
    assert not rw.locked()


@pytest.mark.parametrize("how", ["cancelled", "timed out"])
async def test_writer_leaving_the_queue_lets_the_readers_behind_it_in(how: str) -> None:
    # Regression: aiorwlock 1.5.1 leaves these readers blocked until the first reader
    # releases.
    rw = RWLock()
    release_r1 = await rw.acquire_read(label="r1")
    writer_scope = anyio.CancelScope()
    reader_in = anyio.Event()
    writer_outcome: list[str] = []

    async def writer() -> None:
        with writer_scope:
            try:
                await rw.acquire_write(
                    label="w", timeout_ms=50 if how == "timed out" else None
                )
            except MutexTimeoutError:
                writer_outcome.append("timed out")
                return
        writer_outcome.append("cancelled")

    async def reader() -> None:
        async with rw.read(label="r2"):
            reader_in.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer)
            await wait_all_tasks_blocked()
            tg.start_soon(reader)
            await wait_all_tasks_blocked()
            assert not reader_in.is_set()  # queued behind the writer
            if how == "cancelled":
                writer_scope.cancel()
            await reader_in.wait()  # admitted while r1 still holds the lock
            assert rw.statistics().readers >= 1
        release_r1()
    assert writer_outcome == [how]
    stats = rw.statistics()
    assert (stats.readers, stats.readers_waiting, stats.writers_waiting) == (0, 0, 0)


async def test_reader_cancelled_at_the_handoff_passes_the_lock_on() -> None:
    rw = RWLock()
    release_w = await rw.acquire_write(label="w")
    scope = anyio.CancelScope()
    writer2_in = anyio.Event()

    async def reader() -> None:
        with scope:
            async with rw.read(label="r"):
                await checkpoint()

    async def writer2() -> None:
        async with rw.write(label="w2"):
            writer2_in.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            await wait_all_tasks_blocked()
            tg.start_soon(writer2)
            await wait_all_tasks_blocked()
            release_w()  # grants the reader ...
            assert rw.readers == ["r"]
            scope.cancel()  # ... which is cancelled before it resumes
    assert writer2_in.is_set()
    assert not rw.locked()


async def test_upgrade_and_other_reentry_raise_at_once() -> None:
    rw = RWLock("config")
    release = await rw.acquire_read(label="reader")
    with anyio.fail_after(5):  # a hang guard: generous for a loaded 2-core machine
        with pytest.raises(MutexReentryError, match="'config' is already held"):
            await rw.acquire_write()
        with pytest.raises(MutexReentryError):
            await rw.acquire_read()
    release()
    release = await rw.acquire_write(label="writer")
    with (
        anyio.fail_after(5),
        pytest.raises(MutexReentryError, match="held as 'writer'"),
    ):
        await rw.acquire_read()
    release()
    assert not rw.locked()


async def test_foreign_and_double_release_of_a_read_lock() -> None:
    rw = RWLock("cfg")
    release = await rw.acquire_read(label="r")
    errors: list[Exception] = []

    async def intruder() -> None:
        try:
            release()
        except MutexReleaseError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(intruder)
    assert str(errors[0]).startswith(
        "Cannot release lock 'cfg': the current task does not hold it; "
    )
    assert rw.readers == ["r"]
    release()
    with pytest.raises(MutexReleaseError, match="already released"):
        release()
    release2 = await rw.acquire_read()
    with pytest.raises(MutexReleaseError, match="already released"):
        release()  # a stale releaser never releases a later acquisition
    assert rw.statistics().readers == 1
    release2()


async def test_zero_timeout_never_queues() -> None:
    rw = RWLock()
    release = await rw.acquire_write(label="w")
    caught: list[MutexTimeoutError] = []

    async def reader() -> None:
        with pytest.raises(MutexTimeoutError) as exc_info:
            await rw.acquire_read(timeout_ms=0)
        caught.append(exc_info.value)

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
    assert caught[0].owner == "w"
    assert rw.statistics().readers_waiting == 0
    release()


@pytest.mark.heavy  # uvloop changes nothing in this bookkeeping
async def test_randomized_readers_and_writers_keep_every_invariant() -> None:
    seed = 1234
    print(f"seed={seed}")
    rng = random.Random(seed)
    rw = RWLock()
    readers = writers = 0
    scopes: list[anyio.CancelScope] = []

    def check() -> None:
        assert writers in (0, 1)
        assert not (writers and readers), (
            f"{writers} writer(s) with {readers} reader(s)"
        )

    async def worker() -> None:
        nonlocal readers, writers
        for _ in range(100):
            write = rng.random() < 0.3
            with anyio.CancelScope() as scope:
                scopes.append(scope)
                try:
                    hold = rw.write if write else rw.read
                    async with hold(timeout_ms=rng.choice([None, None, 0, 1, 5])):
                        if write:
                            writers += 1
                        else:
                            readers += 1
                        check()
                        try:
                            for _ in range(rng.randrange(3)):
                                if scopes and rng.random() < 0.1:
                                    rng.choice(scopes).cancel()
                                await checkpoint()
                                check()
                        finally:
                            if write:
                                writers -= 1
                            else:
                                readers -= 1
                except MutexTimeoutError:
                    pass
                finally:
                    scopes.remove(scope)
            check()

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for _ in range(30):
                tg.start_soon(worker)
    stats = rw.statistics()
    assert (
        stats.readers,
        stats.writer,
        stats.readers_waiting,
        stats.writers_waiting,
    ) == (
        0,
        None,
        0,
        0,
    )
    assert rw._queue == type(rw._queue)()
    assert stats.read_acquisitions > 0
    assert stats.write_acquisitions > 0


@pytest.mark.parametrize("other", ["asyncio", "trio"])
@pytest.mark.parametrize("held", ["read", "write"])
async def test_held_in_another_event_loop_raises_for_readers_too(
    held: str, other: str
) -> None:
    # Regression: a reader in another event loop (another thread) joined the readers
    # without a word, and its release then set this loop's waiting writer's event
    # from its own thread: the writer stayed asleep until something else woke us.
    rw = RWLock("cfg")
    acquire = rw.acquire_read if held == "read" else rw.acquire_write
    release = await acquire(label="here")
    errors: list[str] = []

    def in_other_loop() -> None:
        async def attempt() -> None:
            for other_acquire in (rw.acquire_read, rw.acquire_write):
                with pytest.raises(MutexLoopError) as info:
                    await other_acquire(label="there")
                errors.append(str(info.value))

        anyio.run(attempt, backend=other)

    await anyio.to_thread.run_sync(in_other_loop)
    assert len(errors) == 2
    assert all("another event loop" in error for error in errors)
    assert (rw.readers, rw.writer) == (
        (["here"], None) if held == "read" else ([], "here")
    )
    release()
    assert not rw.locked()
