"""Complete programs in the docs run: every code block marked ``% test: run``.

The docs mark a block that is a whole program with a MyST comment line right above
it. Each such block runs in a fresh interpreter and must exit cleanly; the blocks
assert what the prose around them claims. ``python tests/test_docs.py DIR`` writes
them to DIR as modules, so that .ci/run type-checks them as the user code they are.
"""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

DOCS = pathlib.Path(__file__).parent.parent / "docs"
MARKED = re.compile(r"^% test: run\n```python\n(.*?)^```", re.M | re.S)


def _blocks() -> list[tuple[str, str]]:
    found = []
    for page in sorted(DOCS.rglob("*.md")):
        if "_build" in page.parts:
            continue
        for n, code in enumerate(MARKED.findall(page.read_text()), 1):
            found.append((f"{page.relative_to(DOCS)}#{n}", code))
    return found


BLOCKS = _blocks()


def test_the_docs_have_runnable_blocks() -> None:
    # Guards the marker itself: a typo in it would silently skip every block.
    pages = {name.split("#")[0] for name, _ in BLOCKS}
    assert {"getting-started/asyncio.md", "getting-started/trio.md"} <= pages
    assert "migrating.md" in pages


@pytest.mark.parametrize(("name", "code"), BLOCKS, ids=[name for name, _ in BLOCKS])
def test_docs_program_runs(name: str, code: str, tmp_path: pathlib.Path) -> None:
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, f"{name}:\n{result.stdout}{result.stderr}"


if __name__ == "__main__":
    out = pathlib.Path(sys.argv[1])
    for block_name, block in BLOCKS:
        stem = re.sub(r"\W", "_", block_name.replace(".md#", "_"))
        (out / f"{stem}.py").write_text(block)
