"""The benchmark scripts still run (tiny sizes); timings are never asserted here."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

BENCHMARKS = sorted(
    (pathlib.Path(__file__).parent.parent / "benchmarks").glob("bench_*.py")
)


def test_every_benchmark_is_found() -> None:
    assert {p.stem for p in BENCHMARKS} >= {"bench_mutex", "bench_cache", "bench_locks"}


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda p: p.stem)
def test_benchmark_runs_in_quick_mode(script: pathlib.Path) -> None:
    result = subprocess.run(
        [sys.executable, str(script), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Targets:" in result.stdout
