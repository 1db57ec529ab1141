"""Sphinx configuration of nquant's documentation.

Build: ``python -m sphinx -W -b html docs docs/_build/html`` (then open
``docs/_build/html/index.html``).  The build quantizes real data first (``_ext/measure.py``):
the scheme-choice guide's tables and every figure are measured, not pasted.
"""

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "_ext"))

import nquant  # noqa: E402

project = "nquant"
author = "nquant developers"
copyright = "nquant developers"
version = release = nquant.__version__

extensions = [
    "myst_parser",  # Markdown pages: the README's own dialect, and the guides' tested code blocks
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",  # NumPy-style docstrings, read leniently (shapes and dtypes in the type field)
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "_ext", "_generated/*.md", "Thumbs.db", ".DS_Store"]
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3

autosummary_generate = True
autodoc_default_options = {"members": True, "inherited-members": False, "show-inheritance": True}
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_member_order = "bysource"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
# parameter types as plain text: they read "ndarray of shape (n, d), float32", not cross-references
napoleon_use_param = False
napoleon_use_ivar = True

# pydata-sphinx-theme: the theme of the NumPy, xarray, Dask, pandas and Zarr documentation, so the
# people nquant is for find the navigation, search and API pages where they expect them.
html_theme = "pydata_sphinx_theme"
html_title = f"nquant {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "footer_start": ["copyright"],
    "footer_end": [],
}
html_static_path = []
html_show_sourcelink = False


def _measure(app):
    """Quantize the sample data and write the tables and figures the guides include."""
    import measure

    out = os.path.join(app.srcdir, "_generated")
    t0 = time.perf_counter()
    timings = measure.generate(out)
    print(f"nquant docs: measured {sorted(timings)} in {time.perf_counter() - t0:.1f} s")


def setup(app):
    app.connect("builder-inited", _measure)
    return {"parallel_read_safe": True}
