"""The public face: one namespace, typed, documented, anyio only."""

from __future__ import annotations

import ast
import importlib.metadata
import inspect
import pathlib
import subprocess
import sys

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
