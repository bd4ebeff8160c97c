"""Sphinx configuration for the anyio_mutex documentation.

Build with ``sphinx-build -W --keep-going -b html docs docs/_build/html`` after
``pip install -e '.[docs]'``. The API reference is generated from the docstrings by
the local extension in ``_ext/anyio_mutex_docs.py``.
"""

from __future__ import annotations

import pathlib
import sys

HERE = pathlib.Path(__file__).parent
sys.path.insert(0, str(HERE / "_ext"))

import anyio_mutex  # noqa: E402

project = "anyio_mutex"
author = "anyio_mutex developers"
copyright = "anyio_mutex developers"
release = anyio_mutex.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
    "myst_parser",
    "anyio_mutex_docs",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# The docstrings use Sphinx field lists (:param:, :raises:, :return:, :ivar:).
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_inherit_docstrings = True
autoclass_content = "class"

html_theme = "furo"
html_title = f"anyio_mutex {release}"
html_show_sourcelink = False
html_copy_source = False  # the pages carry TODO(lead) comments not meant to ship
