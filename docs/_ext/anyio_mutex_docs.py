"""Local Sphinx extension: an API reference and an examples index that cannot go stale.

``.. api-reference:: anyio_mutex`` documents every name in the module's ``__all__``
with autodoc, grouped by the private module that defines it, with every public method
and property listed explicitly (inherited ones from private bases included). A name
added to ``__all__`` later appears without touching the docs; a new private module
gets its own section, titled from its module docstring.

``.. examples-index::`` shows every ``examples/*.py`` file with its summary line, so an
example added later is linked from the docs automatically.

Both directives emit reStructuredText, so use them from ``.rst`` pages (inside a MyST
page their output would be parsed as Markdown).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import pathlib
import typing
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

ROOT = pathlib.Path(__file__).resolve().parents[2]

#: Section titles and order for the private modules we know; any other module gets a
#: section after these, titled from its docstring's first line.
SECTIONS: dict[str, str] = {
    "_mutex": "Mutex and AsyncMutex",
    "_refresh": "Cache refresh",
    "_singleflight": "SingleFlight",
    "_keyed": "KeyedMutex",
    "_rwlock": "RWLock",
    "_diagnostics": "Lock-order checker",
    "_errors": "Errors",
}
LAST = ("_errors",)

#: Special methods worth listing when a public class defines them with a docstring.
SPECIAL = ("__len__", "__contains__", "__iter__", "__getitem__", "__call__")


def _module_files(module: Any) -> list[pathlib.Path]:
    """The source files that can define ``module``'s public names."""
    path = pathlib.Path(inspect.getfile(module))
    if path.name == "__init__.py":  # a package: its own directory, not subpackages
        return sorted(path.parent.glob("*.py"))
    return [path]


def _definitions(path: pathlib.Path) -> list[str]:
    """Top-level names a source file defines, in source order."""
    names: list[str] = []
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            names.append(node.name)
        elif isinstance(node, ast.Assign):
            names.extend(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.append(node.target.id)
    return names


def _title(path: pathlib.Path) -> str:
    if path.stem in SECTIONS:
        return SECTIONS[path.stem]
    doc = ast.get_docstring(ast.parse(path.read_text())) or path.stem.lstrip("_")
    return doc.strip().splitlines()[0].split(":")[0].rstrip(".")


def _public_members(cls: type, package: str) -> list[str]:
    """Public methods, properties and attributes of ``cls``, its private bases included.

    Only classes of this package are searched, so ``anyio.Lock``'s or ``Exception``'s
    members are not repeated here.
    """
    members: dict[str, None] = {}
    for klass in reversed(cls.__mro__):
        if not klass.__module__.startswith(package):
            continue
        for name, value in vars(klass).items():
            if name in SPECIAL:
                if getattr(value, "__doc__", None):
                    members[name] = None
            elif not name.startswith("_"):
                members[name] = None
    return list(members)


def _directive_lines(module: str, name: str, obj: Any, package: str) -> list[str]:
    target = f"{module}.{name}"
    if isinstance(obj, type):
        kind = "autoexception" if issubclass(obj, BaseException) else "autoclass"
        lines = [f".. {kind}:: {target}", "   :show-inheritance:"]
        members = _public_members(obj, package)
        if members:
            lines += [f"   :members: {', '.join(members)}", "   :undoc-members:"]
        return lines
    if callable(obj):
        return [f".. autofunction:: {target}"]
    return [f".. autodata:: {target}"]


class ApiReference(SphinxDirective):
    """Generate the autodoc reference of every name in a module's ``__all__``."""

    required_arguments = 1
    has_content = False

    def run(self) -> list[nodes.Node]:
        module_name = self.arguments[0]
        module = importlib.import_module(module_name)
        package = module_name.split(".")[0]
        exported = list(module.__all__)
        missing = [name for name in exported if not hasattr(module, name)]
        if missing:
            raise self.error(f"{module_name}.__all__ lists missing names: {missing}")

        # Which private module defines each name, in that module's source order.
        groups: dict[pathlib.Path, list[str]] = {}
        placed: set[str] = set()
        for path in _module_files(module):
            self.env.note_dependency(str(path))
            for name in _definitions(path):
                if name in exported and name not in placed:
                    groups.setdefault(path, []).append(name)
                    placed.add(name)
        leftovers = [name for name in exported if name not in placed]

        def order(path: pathlib.Path) -> tuple[int, int, str]:
            known = list(SECTIONS)
            if path.stem in LAST:
                return (2, 0, path.stem)
            if path.stem in known:
                return (0, known.index(path.stem), path.stem)
            return (1, 0, path.stem)

        lines = [f".. py:currentmodule:: {module_name}", ""]
        sections = [(_title(p), groups[p]) for p in sorted(groups, key=order)]
        if leftovers:
            sections.append(("Other names", leftovers))
        for title, names in sections:
            if len(sections) > 1:
                lines += [title, "-" * len(title), ""]
            for name in names:
                lines += _directive_lines(
                    module_name, name, getattr(module, name), package
                )
                lines.append("")

        container = nodes.section() if len(sections) > 1 else nodes.container()
        container.document = self.state.document
        nested_parse_with_titles(
            self.state,
            StringList(lines, source=f"<api-reference {module_name}>"),
            container,
        )
        return list(container.children)


class ExamplesIndex(SphinxDirective):
    """List every ``examples/*.py`` with its summary and its full source."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        lines: list[str] = []
        for path in sorted((ROOT / "examples").glob("*.py")):
            self.env.note_dependency(str(path))
            doc = ast.get_docstring(ast.parse(path.read_text())) or ""
            summary = doc.strip().splitlines()[0] if doc.strip() else path.stem
            title = f"examples/{path.name}"
            docdir = pathlib.Path(self.env.doc2path(self.env.docname)).parent
            include = os.path.relpath(path, docdir)
            lines += [
                f".. _example-{path.stem}:",
                "",
                title,
                "-" * len(title),
                "",
                summary.replace("*", r"\*").replace("`", r"\`"),
                "",
                f".. literalinclude:: {include}",
                "   :language: python",
                "",
            ]
        container = nodes.section()
        container.document = self.state.document
        nested_parse_with_titles(
            self.state, StringList(lines, source="<examples-index>"), container
        )
        return list(container.children)


def _public_bases(
    app: Sphinx, name: str, obj: Any, options: Any, bases: list[type]
) -> None:
    """Show a private base (``_MutexBase``) as the public bases it stands for."""
    result: list[type] = []
    pending = list(bases)
    while pending:
        base = pending.pop(0)
        if getattr(base, "__origin__", base) is typing.Generic:
            continue  # says nothing a reader needs; the signature shows the types
        if base.__name__.startswith("_"):
            pending[:0] = list(base.__bases__)
        elif base is not object and base not in result:
            result.append(base)
    bases[:] = result


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("api-reference", ApiReference)
    app.add_directive("examples-index", ExamplesIndex)
    app.connect("autodoc-process-bases", _public_bases)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
