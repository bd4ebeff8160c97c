"""The README stays true: its two commands, every Python block, its links and file names."""

from __future__ import annotations

import importlib.metadata
import os
import pathlib
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest

from ._redis_server import RedisServer, start_server

ROOT = pathlib.Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README, flags=re.S | re.M)


def _python_blocks() -> list[tuple[str, str]]:
    """Every ```python block, named after the README heading above it."""
    found = []
    for match in re.finditer(r"^```python\n(.*?)^```", README, flags=re.S | re.M):
        headings = re.findall(r"^#+ (.+)$", README[: match.start()], flags=re.M)
        found.append((headings[-1] if headings else "top", match.group(1)))
    return found


PYTHON_BLOCKS = _python_blocks()


def test_quick_start_has_exactly_the_two_commands() -> None:
    section = README.split("## Quick start", 1)[1]
    commands = [line for line in code_blocks("sh")[0].splitlines() if line.strip()]
    assert section.index("```sh") < section.index("##")  # the section's first block
    assert len(commands) == 2
    demo, tests = commands
    assert demo.startswith("python3 -m venv .venv && ")
    assert tests.startswith("python3 -m venv .venv && ")
    # On four workers: pytest-xdist must come with the extra the command installs.
    assert tests.endswith(".venv/bin/python -m pytest -n 4")
    assert "'.[test]'" in tests
    requires = importlib.metadata.requires("anyio_mutex") or []
    assert any(
        r.startswith("pytest-xdist") and r.split("extra ==")[-1].strip(" '\"") == "test"
        for r in requires
    ), requires
    demo_script = re.search(r"(examples/\w+\.py)", demo)
    assert demo_script is not None
    assert (ROOT / demo_script.group(1)).is_file()


def test_ci_runs_the_readme_test_command() -> None:
    assert "quick_start_line 2" in (ROOT / ".ci" / "run").read_text()


def test_every_python_block_is_a_whole_program() -> None:
    # Guards the extraction itself: a block the regex missed would go untested.
    assert README.count("```python") == len(PYTHON_BLOCKS) >= 7
    for name, code in PYTHON_BLOCKS:
        assert "anyio.run(main" in code, f"{name}: not a complete program"


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = start_server()
    yield server
    server.stop()


# Runs a block on asyncio, then again, from scratch, the way the README says to run it
# on trio: one interpreter per block (starting one costs more than the block).
ON_BOTH_BACKENDS = """
import sys

code = sys.argv[1]
for backend in ("asyncio", "trio"):
    print(f"--- {backend}", flush=True)
    source = code.replace("anyio.run(main)", f"anyio.run(main, backend={backend!r})")
    exec(compile(source, "<README block>", "exec"), {"__name__": "__main__"})
"""


@pytest.mark.parametrize(
    ("name", "code"), PYTHON_BLOCKS, ids=[name for name, _ in PYTHON_BLOCKS]
)
def test_python_block_runs_on_asyncio_and_trio(
    name: str, code: str, request: pytest.FixtureRequest, tmp_path: pathlib.Path
) -> None:
    assert code.count("anyio.run(main)") == 1, name
    env = dict(os.environ)
    if "anyio_mutex.redis" in code:
        server: RedisServer = request.getfixturevalue("redis_server")
        env["REDIS_URL"] = f"redis://127.0.0.1:{server.port}"
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", ON_BOTH_BACKENDS, code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, f"{name}:\n{result.stdout}{result.stderr}"
    assert "--- trio" in result.stdout, result.stdout


def test_every_benchmark_and_example_named_in_the_readme_exists() -> None:
    for path in set(re.findall(r"(?:benchmarks|examples)/\w+\.py", README)):
        assert (ROOT / path).is_file(), path


def test_every_relative_link_in_the_readme_exists() -> None:
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README)
    relative = [link for link in links if "://" not in link]
    assert relative, "the README links into docs/"
    for link in relative:
        assert (ROOT / link).exists(), link


def test_the_readme_links_every_example() -> None:
    # An example added later must be linked here too (issue 11: "link every example").
    linked = set(re.findall(r"\]\((examples/\w+\.py)\)", README))
    every = {f"examples/{path.name}" for path in (ROOT / "examples").glob("*.py")}
    assert every <= linked, sorted(every - linked)
