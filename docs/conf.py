"""Sphinx configuration of the aiida-pyacemaker documentation (built in CI: scripts/run_tests.sh)."""

project = "aiida-pyacemaker"
author = "aiida-pyacemaker developers"
copyright = "2026, aiida-pyacemaker developers"  # noqa: A001

extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.viewcode"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
myst_heading_anchors = 3
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": False}
suppress_warnings = ["myst.header", "myst.xref_missing"]
html_theme = "alabaster"
html_title = "aiida-pyacemaker"
