"""The public face: one namespace, typed, documented, anyio only."""

from __future__ import annotations

import ast
import dataclasses
import importlib.metadata
import inspect
import pathlib
import re
import subprocess
import sys
import weakref
from typing import Any

import pytest

import anyio_mutex

PACKAGE = pathlib.Path(anyio_mutex.__file__).parent


def test_all_is_sorted_and_complete() -> None:
    assert anyio_mutex.__all__ == sorted(anyio_mutex.__all__)
    public = {n for n in dir(anyio_mutex) if not n.startswith("_")}
    assert public - {"redis"} == set(anyio_mutex.__all__)


def test_public_objects_live_in_the_package_namespace_and_are_documented() -> None:
    for name in anyio_mutex.__all__:
        obj = getattr(anyio_mutex, name)
        assert obj.__module__ == "anyio_mutex", name
        assert inspect.getdoc(obj), f"{name} has no docstring"
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if attr.startswith("_") or (
                    not callable(member) and not isinstance(member, property)
                ):
                    continue
                assert inspect.getdoc(member), f"{name}.{attr} has no docstring"


def test_redis_submodule_is_public_typed_and_documented() -> None:
    import anyio_mutex.redis as redis_module

    assert redis_module.__all__ == sorted(redis_module.__all__)
    for name in redis_module.__all__:
        obj = getattr(redis_module, name)
        assert obj.__module__ == "anyio_mutex.redis", name
        assert inspect.getdoc(obj), f"redis.{name} has no docstring"


def test_package_imports_anyio_only() -> None:
    forbidden = {"asyncio", "trio", "sniffio", "uvloop"}
    for path in PACKAGE.rglob("*.py"):
        if path.name == "redis.py":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = {(node.module or "").split(".")[0]}
            else:
                continue
            assert not roots & forbidden, f"{path.name} imports {roots & forbidden}"


def test_importing_the_package_loads_no_event_loop_library() -> None:
    code = (
        "import sys, anyio_mutex; "
        "print(sorted(m for m in ('trio', 'anyio_mutex.redis', 'coredis', 'uvloop') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_version_matches_installed_metadata() -> None:
    assert anyio_mutex.__version__ == importlib.metadata.version("anyio_mutex")


def test_ships_py_typed() -> None:
    assert (PACKAGE / "py.typed").is_file()


def test_redis_submodule_imports_no_client_library_and_names_the_extras() -> None:
    # Issue 9: each client library is an extra of its own; anyio_mutex.redis imports
    # none of them, and a client it does not know says which extras exist.
    code = (
        "import sys\n"
        "for m in ('coredis', 'redis', 'valkey'): sys.modules[m] = None\n"
        "import anyio_mutex.redis\n"
        "try:\n"
        "    anyio_mutex.redis.RedisMutex(object(), 'x')\n"
        "except TypeError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert "pip install 'anyio_mutex[redis]'" in out.stdout, out
    assert "anyio_mutex[redis-py]" in out.stdout, out
    code = (
        "import sys, anyio_mutex.redis\n"
        "print(sorted(m for m in ('coredis', 'redis', 'valkey') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def _public_instances() -> list[Any]:
    """One instance of every public class, built as a user would."""

    async def fetch() -> int:
        return 1

    mutex = anyio_mutex.AsyncMutex()
    keyed: anyio_mutex.KeyedMutex[str] = anyio_mutex.KeyedMutex()
    rw = anyio_mutex.RWLock()
    return [
        anyio_mutex.Mutex(),
        mutex,
        keyed,
        rw,
        mutex.statistics(),
        keyed.statistics(),
        rw.statistics(),
        anyio_mutex.RefreshCache(),
        anyio_mutex.SingleFlight(),
        pytest.param(anyio_mutex.cached()(fetch), id="CachedFunction"),
        anyio_mutex.Semaphore(2),
        anyio_mutex.Semaphore(2).statistics(),
        anyio_mutex.RefreshCache().statistics(),
        anyio_mutex.SingleFlight().statistics(),
        anyio_mutex.MutexTimeoutError(1.0),
        anyio_mutex.MutexLoopError("l", None, reason="r"),
        anyio_mutex.MutexReleaseError("l", None, reason="r"),
        anyio_mutex.MutexReentryError("l", None),
        anyio_mutex.LockOrderError(wanted="a", holding="b", first_seen="", here=""),
        anyio_mutex.LockOrderWarning("w"),
        anyio_mutex.DeadlockError(()),
        anyio_mutex.DeadlockStep("t", "l", "o", "h"),
        anyio_mutex.Snapshot((), 0.0),
        anyio_mutex.LockSnapshot("Mutex", "l", (), ()),
        anyio_mutex.HolderSnapshot("t", "l", None),
        anyio_mutex.WaiterSnapshot("t", "l", 0.0, False),
    ]


def _instance_id(obj: Any) -> str:
    return type(obj).__name__


@pytest.mark.parametrize("obj", _public_instances(), ids=_instance_id)
def test_every_public_class_accepts_weakrefs(obj: Any) -> None:
    # Regression: 6 of 8 public classes lacked __weakref__ in __slots__ (users key
    # WeakKeyDictionaries on locks, as they can on anyio's and trio's).
    ref = weakref.ref(obj)
    assert ref() is obj


def test_every_public_class_is_covered_by_the_weakref_test() -> None:
    classes = {
        name
        for name in anyio_mutex.__all__
        if inspect.isclass(getattr(anyio_mutex, name))
    }
    covered = set()
    for param in _public_instances():
        if hasattr(param, "values"):
            covered.add(param.id)
            continue
        # A class is covered by an instance of it or of a subclass.
        covered |= {cls.__name__ for cls in type(param).__mro__}
    assert classes - covered == set()


def test_version_is_lazy_and_matches_pyproject() -> None:
    text = (PACKAGE.parent / "pyproject.toml").read_text()
    match = re.search(r'^version = "([^"]+)"', text, re.MULTILINE)
    assert match is not None
    assert anyio_mutex.__version__ == match.group(1)


def test_import_reads_no_metadata_and_loads_no_logging() -> None:
    # Regression: reading the package metadata at import cost ~60 ms, more than
    # importing anyio. logging is imported only when a long hold is reported.
    # Only what anyio_mutex adds counts: on Python 3.10 anyio's lowlevel module loads
    # traceback itself (through the exceptiongroup backport).
    code = (
        "import sys, anyio, anyio.abc, anyio.lowlevel; "
        "watched = ('importlib.metadata', 'logging', 'traceback'); "
        "before = {m for m in watched if m in sys.modules}; "
        "import anyio_mutex; "
        "print(sorted(m for m in watched if m in sys.modules and m not in before)); "
        "print(anyio_mutex.__version__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    loaded, version = out.stdout.split("\n")[:2]
    assert loaded == "[]"
    assert version == importlib.metadata.version("anyio_mutex")


def test_mutex_statistics_fields_of_its_own_are_keyword_only() -> None:
    # Regression: positional fields after anyio's would break if anyio added a
    # defaulted field to LockStatistics.
    fields = {f.name: f for f in dataclasses.fields(anyio_mutex.MutexStatistics)}
    for name in ("owner_label", "total_acquisitions", "timeouts", "longest_wait_ms"):
        assert fields[name].kw_only, name
    with pytest.raises(TypeError):
        anyio_mutex.MutexStatistics(False, None, 0, None, 0, 0, 0, 0.0)  # type: ignore[call-arg]
