"""
Sphinx configuration: the narrative pages (reStructuredText, and Markdown
through myst-parser) and the API reference, built by pydoctor from the
epytext docstrings.

    pip install -e '.[docs]'
    sphinx-build -W --keep-going -b html docs build/docs
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile

here = os.path.dirname(os.path.abspath(__file__))
checkout = os.path.dirname(here)
sys.path.insert(0, os.path.join(here, "_ext"))

from localinventory import writeInventories  # noqa: E402

project = "twisted-smtpd"
author = "the twisted-smtpd authors"
copyright = "the twisted-smtpd authors"
release = "0.1.0"

extensions = ["sphinx.ext.intersphinx", "myst_parser", "pydoctor.sphinx_ext.build_apidocs"]
intersphinx_mapping: dict[str, object] = {}
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_ext"]
myst_heading_anchors = 3
html_theme = "alabaster"
html_static_path: list[str] = []

# The API reference: pydoctor writes it into <outdir>/api.  Links to Twisted
# and Python go through inventories made from the installed packages, so the
# build needs no network.
_inventoryDirectory = tempfile.mkdtemp(prefix="twisted-smtpd-docs-inv-")
atexit.register(shutil.rmtree, _inventoryDirectory, ignore_errors=True)
_inventories = writeInventories(_inventoryDirectory)
pydoctor_args = [
    "--project-name=twisted-smtpd",
    f"--project-version={release}",
    "--project-url=../index.html",
    "--docformat=epytext",
    "--html-output={outdir}/api",
    "--privacy=HIDDEN:twisted_smtpd._*",
    "--privacy=HIDDEN:twisted_smtpd.handlers._*",
    "--privacy=HIDDEN:twisted_smtpd.handlers.*._*",
    *_inventories,
    os.path.join(checkout, "twisted_smtpd"),
]
pydoctor_url_path = "api/"
nitpicky = True
