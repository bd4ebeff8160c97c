"""Every example runs, on both backends, as a user would run it."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

# Services run until stopped; each has its own test file that talks to it.
SERVICES = {"fastapi_service.py", "trio_service.py"}
EXAMPLES = sorted(
    path
    for path in (pathlib.Path(__file__).parent.parent / "examples").glob("*.py")
    if path.name not in SERVICES
)


def test_examples_exist() -> None:
    assert [p.name for p in EXAMPLES if p.name == "counter.py"] == ["counter.py"]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs(example: pathlib.Path, backend: str) -> None:
    result = subprocess.run(
        [sys.executable, str(example), backend],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip(), f"{example.name} printed nothing"


def test_counter_example_output() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES[0].parent / "counter.py"), "trio", "25"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert "25 tasks with AsyncMutex: counter = 25" in result.stdout
