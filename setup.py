"""Build hook: every wheel carries the book, so ``python -m tfnewton notebooks DIR`` works
from a plain install, outside any clone.

At build time ``build_py`` copies ``_toc.yml`` and the chapters (``book/*.md``,
``book/*.ipynb``) into ``tfnewton/_book/`` inside the build folder, keeping their
layout, so the packaged ``_toc.yml`` resolves as the clone's does. Nothing is written
into the source tree. An editable install (``pip install -e .``) copies nothing: it
reads the clone's book in place. Everything else about the package is in pyproject.toml.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
# The chapters need nothing else at run time: no chapter reads a file beside it, and
# references.bib only serves the book build's citations.
BOOK_FILES = ("_toc.yml", "book/*.md", "book/*.ipynb")
PACKAGED_BOOK = Path("tfnewton") / "_book"  # where tfnewton.notebooks looks for it


def book_sources() -> list[Path]:
    """The files of the book to ship, relative to the project's root."""
    if not (HERE / "_toc.yml").is_file():
        raise FileNotFoundError(
            f"no _toc.yml in {HERE}: a tfnewton wheel must carry the book "
            "(is _toc.yml missing from the sdist? see MANIFEST.in)"
        )
    return sorted({p.relative_to(HERE) for pattern in BOOK_FILES for p in HERE.glob(pattern)})


class build_py_with_book(build_py):
    """setuptools' ``build_py``, then a copy of the book into ``tfnewton/_book``."""

    def run(self):
        super().run()
        if self.editable_mode:
            return
        target = Path(self.build_lib) / PACKAGED_BOOK
        shutil.rmtree(target, ignore_errors=True)  # no chapter left over from an earlier build
        for source in book_sources():
            (target / source).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(HERE / source, target / source)


setup(cmdclass={"build_py": build_py_with_book})
