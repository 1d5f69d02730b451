"""Sphinx configuration: the API reference and the guides of ricea-pyg.

Build: ``sphinx-build -W -b html docs OUT`` (warnings are errors).
"""
import datetime
import os
import sys

# Document the checkout next to this file, installed or not.
sys.path.insert(0, os.path.abspath('..'))

import ricea_pyg  # noqa: E402

project = 'ricea-pyg'
author = 'the ricea-pyg developers'
copyright = f'{datetime.date.today().year}, {author}'
version = release = ricea_pyg.__version__

extensions = [
    'sphinx.ext.autodoc',
    'sphinx.ext.napoleon',
    'sphinx.ext.mathjax',
    'sphinx.ext.viewcode',
    'myst_parser',
]

source_suffix = {'.rst': 'restructuredtext', '.md': 'markdown'}
root_doc = 'index'
# search.md would overwrite Sphinx's search page (search.html): it is built
# through search_guide.md.
exclude_patterns = ['_build', 'search.md']

# Docstrings follow PyG's Google style ("Args:", "Returns:").
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# 'Attributes:' as fields, not as a second description of each attribute.
napoleon_use_ivar = True
autodoc_member_order = 'bysource'
autodoc_typehints = 'signature'
autodoc_class_signature = 'separated'
autodoc_default_options = {'members': True, 'show-inheritance': True}
add_module_names = False
nitpicky = False

# The guides are written for reading on GitHub: their links to scripts and
# files outside docs/ are not Sphinx documents.
myst_heading_anchors = 3
suppress_warnings = ['myst.xref_missing']

html_theme = 'alabaster'
html_title = f'ricea-pyg {release}'
html_static_path = []
