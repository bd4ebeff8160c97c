"""The README stays true: its two commands, its runnable example, its file names."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_quick_start_has_exactly_the_two_commands() -> None:
    section = README.split("## Quick start", 1)[1]
    commands = [line for line in code_blocks("sh")[0].splitlines() if line.strip()]
    assert section.index("```sh") < section.index("##")  # the section's first block
    assert len(commands) == 2
    demo, tests = commands
    assert demo.startswith("python3 -m venv .venv && ")
    assert tests.startswith("python3 -m venv .venv && ")
    assert tests.endswith(".venv/bin/python -m pytest")
    demo_script = re.search(r"(examples/\w+\.py)", demo)
    assert demo_script is not None
    assert (ROOT / demo_script.group(1)).is_file()


def test_ci_runs_the_readme_test_command() -> None:
    assert "quick_start_line 2" in (ROOT / ".ci" / "run").read_text()


def test_usage_example_runs() -> None:
    usage = README.split("## Usage", 1)[1]
    example = code_blocks("python")[0]
    assert example in usage
    result = subprocess.run(
        [sys.executable, "-c", example], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_every_benchmark_and_example_named_in_the_readme_exists() -> None:
    for path in set(re.findall(r"(?:benchmarks|examples)/\w+\.py", README)):
        assert (ROOT / path).is_file(), path
