"""Shared benchmark plumbing: interleaved repeats, medians, and a ratio table."""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import anyio

Case = Callable[[int], Awaitable[None]]


@dataclass
class Row:
    """One benchmark case: a name, a coroutine function running ``n`` ops, a baseline."""

    name: str
    run: Case
    baseline: str | None = None
    samples: list[float] = field(default_factory=list)

    @property
    def median_ns(self) -> float:
        return statistics.median(self.samples)


def parse_args(description: str, all_peers: bool = False) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=7, help="repeats per case")
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes: check that the script runs"
    )
    parser.add_argument(
        "--backend",
        action="append",
        choices=["asyncio", "trio", "uvloop"],
        help="backends to run (default: all that are installed)",
    )
    if all_peers:
        parser.add_argument(
            "--all-peers",
            action="store_true",
            help="also run the slow peers (seconds per burst) in the cold bursts",
        )
    return parser.parse_args()


async def measure(rows: Sequence[Row], ops: int, repeats: int) -> None:
    """Run every row ``repeats`` times, interleaved, recording ns per op."""
    for row in rows:  # warm-up
        await row.run(max(1, ops // 10))
    for _ in range(repeats):
        for row in rows:
            start = time.perf_counter_ns()
            await row.run(ops)
            row.samples.append((time.perf_counter_ns() - start) / ops)


def table(title: str, rows: Sequence[Row]) -> str:
    """Format rows as a table of median ns/op and the ratio to each row's baseline."""
    by_name = {row.name: row for row in rows}
    width = max(len(row.name) for row in rows) + 2
    lines = [f"\n{title}", f"{'case':<{width}}{'ns/op':>10}  {'ratio':>7}  vs"]
    for row in rows:
        ratio, versus = "", ""
        if row.baseline is not None:
            ratio = f"{row.median_ns / by_name[row.baseline].median_ns:7.2f}x"
            versus = row.baseline
        lines.append(f"{row.name:<{width}}{row.median_ns:>10.0f}  {ratio:>7}  {versus}")
    return "\n".join(lines)


def ratio(rows: Sequence[Row], name: str, baseline: str) -> float:
    by_name = {row.name: row for row in rows}
    return by_name[name].median_ns / by_name[baseline].median_ns


def _version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def run_on_backends(
    bench: Callable[..., Awaitable[list[str]]], args: argparse.Namespace, *extra: Any
) -> None:
    """Run ``bench(backend, quick, repeats, *extra)`` per backend; print the verdicts."""
    have_uvloop = importlib.util.find_spec("uvloop") is not None
    backends = args.backend or ["asyncio", "trio"] + (["uvloop"] if have_uvloop else [])
    repeats = 1 if args.quick else args.repeats
    print(
        f"Python {sys.version.split()[0]}, anyio {_version('anyio')}, "
        f"trio {_version('trio')}, uvloop {_version('uvloop')}; "
        f"median of {repeats} interleaved repeats"
    )
    verdicts: list[str] = []
    for backend in backends:
        name, options = (
            ("asyncio", {"use_uvloop": True}) if backend == "uvloop" else (backend, {})
        )
        verdicts += anyio.run(
            bench,
            backend,
            args.quick,
            repeats,
            *extra,
            backend=name,
            backend_options=options,
        )
    print("\nTargets:")
    print("\n".join(verdicts))
