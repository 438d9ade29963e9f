"""Sphinx configuration of exprvm's documentation: Markdown pages (MyST), the API
reference generated from the docstrings (autodoc + napoleon, numpy style).

    make docs          # sphinx-build -W: a warning is an error; the site in docs/_build/html
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))          # the exprvm of this checkout
sys.path.insert(0, os.path.join(HERE, "_ext"))

project = "exprvm"
author = "the exprvm authors"
copyright = "exprvm authors"
release = version = "0.1.0"

extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "apigen"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "_ext"]
myst_heading_anchors = 3

napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
autodoc_member_order = "bysource"
autodoc_typehints = "none"
autodoc_default_options = {"members": True, "undoc-members": False}

html_theme = "alabaster"
html_title = "exprvm"
html_static_path = []
html_theme_options = {"description": "expression graphs on two virtual machines", "fixed_sidebar": True}
