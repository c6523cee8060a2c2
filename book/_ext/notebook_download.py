"""Sphinx extension: every chapter with code links its own notebook (.ipynb).

Jupyter Book's download button offers a MyST-markdown chapter as ``.md`` or ``.pdf``. A
student wants the notebook. While the HTML is written, this extension turns each page whose
source holds code into a notebook without outputs (:func:`tfnewton.notebooks.chapter_notebook`,
the same conversion as ``python -m tfnewton notebooks DIR``), writes it to
``_notebooks/<chapter>.ipynb`` in the HTML output, and puts a link to it under the page's
title. The link is relative, so it works when the built book is opened from disk. A page
whose front matter says ``tfnewton: {chapter: false}`` (the course page) is not a chapter
and gets no link.

Registered in ``_config.yml`` under ``sphinx: local_extensions``.
"""

from __future__ import annotations

import html
from pathlib import Path

from docutils import nodes
from sphinx.errors import ExtensionError
from sphinx.util.osutil import relative_uri

#: Folder of the HTML output that holds the notebooks.
NOTEBOOK_FOLDER = "_notebooks"
#: The link's text, and the class of the paragraph that holds it (the tests look for both).
LINK_TEXT = "Download this chapter as a notebook (.ipynb)"
LINK_CLASS = "tfnewton-notebook-download"


def notebook_target(docname: str) -> str:
    """Where a page's notebook lands, relative to the HTML output's root."""
    return f"{NOTEBOOK_FOLDER}/{Path(docname).name}.ipynb"


def _write_notebook(app, docname: str) -> str | None:
    """Write the page's notebook into the output; its target path, or None for no code."""
    import nbformat

    from tfnewton.notebooks import chapter_notebook

    source = Path(app.env.doc2path(docname))
    try:
        notebook = chapter_notebook(source)
    except Exception as error:  # a page that cannot become a notebook fails the build
        raise ExtensionError(f"{source}: cannot write it as a notebook: {error}") from error
    if notebook is None or notebook.metadata.get("tfnewton", {}).get("chapter") is False:
        return None
    target = notebook_target(docname)
    path = Path(app.outdir) / target
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, path)
    return target


def add_notebook_link(app, doctree: nodes.document, docname: str) -> None:
    """``doctree-resolved``: write the notebook and link it under the page's first title."""
    if app.builder.format != "html":
        return
    target = _write_notebook(app, docname)
    if target is None:
        return
    href = relative_uri(app.builder.get_target_uri(docname), target)
    link = nodes.raw(
        "",
        f'<p class="{LINK_CLASS}"><a class="reference download" href="{html.escape(href)}" '
        f'download="{html.escape(Path(target).name)}">{LINK_TEXT}</a></p>\n',
        format="html",
    )
    section = next(iter(doctree.findall(nodes.section)), None)
    if section is not None and section.children and isinstance(section[0], nodes.title):
        section.insert(1, link)
    else:
        doctree.insert(0, link)


def setup(app):
    app.connect("doctree-resolved", add_notebook_link)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
