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
import re
import types
import typing
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective
from sphinx.util.inspect import signature as sphinx_signature
from sphinx.util.inspect import stringify_signature
from sphinx.util.nodes import nested_parse_with_titles

ROOT = pathlib.Path(__file__).resolve().parents[2]

#: Section titles and order for the private modules we know (by dotted name); any
#: other module gets a section after these, titled from its docstring's first line.
SECTIONS: dict[str, str] = {
    "anyio_mutex._mutex": "Mutex and AsyncMutex",
    "anyio_mutex._refresh": "Cache refresh",
    "anyio_mutex._singleflight": "SingleFlight",
    "anyio_mutex._keyed": "KeyedMutex",
    "anyio_mutex._rwlock": "RWLock",
    "anyio_mutex._diagnostics": "Lock-order checker",
    "anyio_mutex._errors": "Errors",
}
LAST = ("anyio_mutex._errors",)

#: Special methods worth listing when a public class defines them with a docstring.
SPECIAL = ("__len__", "__contains__", "__iter__", "__getitem__", "__call__")


def _module_files(module: Any) -> dict[pathlib.Path, str]:
    """The source files that can define ``module``'s public names, with dotted names."""
    path = pathlib.Path(inspect.getfile(module))
    if path.name == "__init__.py":  # a package: its own directory, not subpackages
        return {
            file: module.__name__
            if file.name == "__init__.py"
            else f"{module.__name__}.{file.stem}"
            for file in sorted(path.parent.glob("*.py"))
        }
    return {path: module.__name__}


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


def _title(path: pathlib.Path, dotted: str) -> str:
    if dotted in SECTIONS:
        return SECTIONS[dotted]
    doc = ast.get_docstring(ast.parse(path.read_text())) or path.stem.lstrip("_")
    return doc.strip().splitlines()[0].split(":")[0].rstrip(".")


def _public_members(cls: type, package: str) -> list[str]:
    """Public methods, properties and attributes of ``cls``, its private bases included.

    Only classes of this package are searched, so ``anyio.Lock``'s or ``Exception``'s
    members are not repeated here. A slot the class docstring already describes with
    ``:ivar name:`` is not listed again as a bare attribute.
    """
    docs = "\n".join(klass.__doc__ or "" for klass in cls.__mro__)
    members: dict[str, None] = {}
    for klass in reversed(cls.__mro__):
        if not klass.__module__.startswith(package):
            continue
        for name, value in vars(klass).items():
            if name in SPECIAL:
                if getattr(value, "__doc__", None):
                    members[name] = None
            elif not name.startswith("_") and not _described_slot(name, value, docs):
                members[name] = None
    return list(members)


def _described_slot(name: str, value: object, docs: str) -> bool:
    return isinstance(value, types.MemberDescriptorType) and bool(
        re.search(rf":ivar (?:[^:\n]*\s)?{re.escape(name)}:", docs)
    )


def _visible_bases(bases: list[Any]) -> list[Any]:
    """Public bases worth naming: private ones are replaced by their own bases."""
    result: list[Any] = []
    pending = list(bases)
    while pending:
        base = pending.pop(0)
        if getattr(base, "__origin__", base) is typing.Generic:
            continue  # says nothing a reader needs; the signature shows the types
        if base.__name__.startswith("_"):
            pending[:0] = list(base.__bases__)
        elif base is not object and base not in result:
            result.append(base)
    return result


def _directive_lines(module: str, name: str, obj: Any, package: str) -> list[str]:
    target = f"{module}.{name}"
    if isinstance(obj, type):
        kind = "autoexception" if issubclass(obj, BaseException) else "autoclass"
        lines = [f".. {kind}:: {target}"]
        if _visible_bases(list(getattr(obj, "__orig_bases__", obj.__bases__))):
            lines.append("   :show-inheritance:")
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
        files = _module_files(module)
        groups: dict[pathlib.Path, list[str]] = {}
        placed: set[str] = set()
        for path in files:
            self.env.note_dependency(str(path))
            for name in _definitions(path):
                if name in exported and name not in placed:
                    groups.setdefault(path, []).append(name)
                    placed.add(name)
        leftovers = [name for name in exported if name not in placed]

        def order(path: pathlib.Path) -> tuple[int, int, str]:
            known, dotted = list(SECTIONS), files[path]
            if dotted in LAST:
                return (2, 0, dotted)
            if dotted in known:
                return (0, known.index(dotted), dotted)
            return (1, 0, dotted)

        lines = [f".. py:currentmodule:: {module_name}", ""]
        sections = [(_title(p, files[p]), groups[p]) for p in sorted(groups, key=order)]
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
    app: Sphinx, name: str, obj: Any, options: Any, bases: list[Any]
) -> None:
    """Show a private base (``_MutexBase``) as the public bases it stands for."""
    bases[:] = _visible_bases(bases)


def _init_signature(
    app: Sphinx,
    what: str,
    name: str,
    obj: Any,
    options: Any,
    signature: str | None,
    return_annotation: str | None,
) -> tuple[str, str | None] | None:
    """Show ``__init__``'s parameters where a pass-through ``__new__`` hides them.

    Protocols get no signature at all: they are types to annotate with, not to build.

    ``Mutex`` overrides ``__new__(cls, *args, **kwargs)`` (``anyio.Lock.__new__``
    returns a backend lock), and autodoc prefers ``__new__``'s signature.
    """
    if what not in ("class", "exception") or not isinstance(obj, type):
        return _readable_defaults(signature, return_annotation)
    if getattr(obj, "_is_protocol", False):
        return "", None  # a Protocol (CachedFunction) is a type, never constructed
    any_ = r"(: [~\w.]*Any)?"
    if signature is None or not re.fullmatch(
        rf"\(\*args{any_}, \*\*kwargs{any_}\)", signature
    ):
        return _readable_defaults(signature, return_annotation)
    init = sphinx_signature(typing.cast(Any, obj).__init__, bound_method=True)
    return _readable_defaults(
        stringify_signature(init, show_return_annotation=False), return_annotation
    )


def _readable_defaults(
    signature: str | None, return_annotation: str | None
) -> tuple[str, str | None] | None:
    """Show ``clock=time.monotonic`` rather than the builtin's repr.

    ``autodoc_preserve_defaults`` would read defaults from the source, but it fails on
    ``cached``, whose runtime signature is derived from ``RefreshCache``'s.
    """
    if signature is None or "<built-in function monotonic>" not in signature:
        return None
    readable = signature.replace("<built-in function monotonic>", "time.monotonic")
    return readable, return_annotation


def _follow_imported(app: Sphinx, modname: str, attribute: str) -> str | None:
    """Point viewcode at the private module that defines a re-exported name."""
    if not modname.startswith("anyio_mutex"):
        return None
    top = attribute.split(".")[0]
    for path, dotted in _module_files(importlib.import_module(modname)).items():
        if top in _definitions(path):
            return dotted
    return None


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("api-reference", ApiReference)
    app.add_directive("examples-index", ExamplesIndex)
    app.connect("autodoc-process-bases", _public_bases)
    app.connect("autodoc-process-signature", _init_signature)
    app.connect("viewcode-follow-imported", _follow_imported)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
