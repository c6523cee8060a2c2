"""Write the book's chapters as Jupyter notebooks to run and change.

The chapters are MyST-markdown notebooks (``book/*.md``) listed in ``_toc.yml``.
:func:`write_notebooks` turns every one of them into a runnable ``.ipynb``
(without outputs) in a folder of your choice, in reading order::

    python -m tfnewton notebooks notebooks/
    jupyter lab notebooks/

Pages that hold no code (the API reference) are skipped, and so are pages whose
front matter says they are not a chapter (``tfnewton: {chapter: false}``: the
course page, written for teachers). Each notebook runs top
to bottom from a fresh kernel, as the book build runs it. The conversion is
myst-nb's own reader, the one the book build uses, so a notebook holds exactly
the cells the built page shows.

Student copies leave the exercises' solutions out::

    python -m tfnewton notebooks handout/ --no-solutions

Every cell tagged ``solution`` (its first line ``# Solution to exercise N.``)
becomes an empty code cell that reads ``# Your solution to exercise N.``; the
exercise's text and every other cell stay.

The chapters come from a clone of the repository when the package was installed
from one (``pip install -e .``), else from the copy of ``_toc.yml`` and
``book/`` that every wheel carries in ``tfnewton/_book/`` (``setup.py`` puts
it there at build time), so a plain ``pip install tfnewton`` can write them too.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["find_book_root", "chapter_files", "chapter_notebook", "is_chapter", "write_notebooks"]

# The MyST extensions the book enables (``parse.myst_enable_extensions`` in _config.yml).
_MYST_EXTENSIONS = ("amsmath", "dollarmath", "colon_fence", "deflist", "substitution")

_KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}

# The clone an editable install (`pip install -e .`) reads, and the copy of the book a
# wheel carries (written by setup.py's build_py, never committed).
_CLONE_ROOT = Path(__file__).resolve().parent.parent
_PACKAGED_BOOK = Path(__file__).resolve().parent / "_book"

SOLUTION_TAG = "solution"
_SOLUTION_FIRST_LINE = re.compile(r"#\s*Solution to exercise (\d+)\b", re.IGNORECASE)


def find_book_root(root: str | os.PathLike | None = None) -> Path:
    """The folder that holds ``_toc.yml``.

    Parameters
    ----------
    root : str or path-like, optional
        Where to look. By default, the first of: the clone this package was
        installed from (``pip install -e .``), the current directory, and the copy
        of the book inside the installed package (``tfnewton/_book``, in every wheel).

    Returns
    -------
    pathlib.Path

    Raises
    ------
    FileNotFoundError
        When no ``_toc.yml`` is there.
    """
    if root is not None:
        candidates = [Path(root)]
    else:
        candidates = [_CLONE_ROOT, Path.cwd(), _PACKAGED_BOOK]
    for candidate in candidates:
        if (candidate / "_toc.yml").is_file():
            return candidate.resolve()
    where = ", ".join(str(c) for c in candidates)
    if root is not None:
        hint = "pass the folder of a tfnewton clone (the one holding _toc.yml) with --book"
    else:
        hint = (
            "this installation carries no copy of the book (a wheel built by setup.py does): "
            "reinstall tfnewton from a wheel, run this from a clone of the repository, "
            "or pass the book's folder with --book"
        )
    raise FileNotFoundError(f"no _toc.yml found in {where}: {hint}")


def _toc_entries(node) -> list[str]:
    """Every ``file:`` of a jb-book table of contents, depth first, in reading order."""
    files = []
    if isinstance(node, dict):
        if "file" in node:
            files.append(str(node["file"]))
        for key in ("parts", "chapters", "sections"):
            for child in node.get(key, []) or []:
                files.extend(_toc_entries(child))
    elif isinstance(node, list):
        for child in node:
            files.extend(_toc_entries(child))
    return files


def chapter_files(root: str | os.PathLike | None = None) -> list[Path]:
    """The source file of every page listed in ``_toc.yml``, in reading order.

    Parameters
    ----------
    root : str or path-like, optional
        The book's folder (see :func:`find_book_root`).

    Returns
    -------
    list of pathlib.Path
        The root page first.

    Raises
    ------
    FileNotFoundError
        When a listed page has no ``.md`` or ``.ipynb`` file.
    """
    import yaml

    root = find_book_root(root)
    toc = yaml.safe_load((root / "_toc.yml").read_text(encoding="utf-8"))
    if not isinstance(toc, dict) or "root" not in toc:
        raise ValueError(f"{root / '_toc.yml'} must be a jb-book table of contents with a 'root' entry")
    entries = [str(toc["root"])] + _toc_entries({k: v for k, v in toc.items() if k != "root"})
    paths = []
    for entry in entries:
        base = root / entry
        matches = [p for p in (base, base.with_suffix(".md"), base.with_suffix(".ipynb")) if p.is_file()]
        if not matches:
            raise FileNotFoundError(f"_toc.yml lists {entry!r} but neither {entry}.md nor {entry}.ipynb exists in {root}")
        paths.append(matches[0])
    return paths


def _is_myst_notebook(text: str) -> bool:
    """A MyST markdown file is a notebook when its front matter names a kernel."""
    if not text.startswith("---"):
        return False
    end = text.find("\n---", 3)
    if end < 0:
        return False
    import yaml

    front = yaml.safe_load(text[3:end]) or {}
    return isinstance(front, dict) and ("kernelspec" in front or "jupytext" in front)


def _solution_exercise(cell, path: Path, index: int) -> int:
    """The exercise number a ``solution`` cell answers, read from its first line."""
    first_line = cell.source.lstrip().split("\n", 1)[0]
    match = _SOLUTION_FIRST_LINE.match(first_line)
    if match is None:
        raise ValueError(
            f"{path}: cell {index} is tagged {SOLUTION_TAG!r}, so its first line must be "
            f"'# Solution to exercise N.', but it is {first_line[:80]!r}"
        )
    return int(match.group(1))


def _without_solutions(nb, path: Path):
    """Replace every cell tagged ``solution`` by an empty cell for the student's own answer."""
    import nbformat

    cells = []
    for index, cell in enumerate(nb.cells):
        if SOLUTION_TAG in cell.get("metadata", {}).get("tags", []):
            number = _solution_exercise(cell, path, index)
            cell = nbformat.v4.new_code_cell(f"# Your solution to exercise {number}.\n")
        cells.append(cell)
    nb.cells = cells
    return nb


def chapter_notebook(path: str | os.PathLike, *, solutions: bool = True):
    """Read one chapter as a notebook without outputs, or ``None`` for a page with no code.

    Parameters
    ----------
    path : str or path-like
        A MyST-markdown notebook (``.md`` with a ``kernelspec`` in its front matter)
        or an ``.ipynb``.
    solutions : bool, default True
        False for a student copy: every cell tagged ``solution`` becomes an empty
        code cell whose only line is ``# Your solution to exercise N.`` (N read from
        the solution's first line, ``# Solution to exercise N.``).

    Returns
    -------
    nbformat.NotebookNode or None

    Raises
    ------
    ValueError
        ``solutions`` is false and a ``solution`` cell does not start with
        ``# Solution to exercise N.``.
    """
    import nbformat

    if not isinstance(solutions, bool):
        raise TypeError(f"solutions must be True or False, but got {solutions!r}")
    path = Path(path)
    if path.suffix == ".ipynb":
        nb = nbformat.read(path, as_version=4)
    else:
        text = path.read_text(encoding="utf-8")
        if not _is_myst_notebook(text):
            return None
        from myst_nb.core.read import read_myst_markdown_notebook
        from myst_parser.config.main import MdParserConfig

        config = MdParserConfig(enable_extensions=set(_MYST_EXTENSIONS))
        nb = read_myst_markdown_notebook(text, config=config, path=path)
    if not any(cell.cell_type == "code" for cell in nb.cells):
        return None
    if not solutions:
        nb = _without_solutions(nb, path)
    for index, cell in enumerate(nb.cells):
        # Ids by position (the reader draws random ones): the same chapter always gives the
        # same file, and a student copy's cells keep the ids of the full notebook's.
        cell.id = f"cell-{index}"
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    # The notebook stands alone: no jupytext pairing, the standard Python kernel.
    nb.metadata.pop("jupytext", None)
    nb.metadata["kernelspec"] = dict(_KERNELSPEC)
    nb.metadata.setdefault("language_info", {"name": "python"})
    nbformat.validate(nb)
    return nb


def is_chapter(nb) -> bool:
    """False for a page whose front matter says ``tfnewton: {chapter: false}`` (the course page).

    Parameters
    ----------
    nb : nbformat.NotebookNode
        As :func:`chapter_notebook` returns it (the front matter is its metadata).

    Returns
    -------
    bool
    """
    return (nb.metadata.get("tfnewton") or {}).get("chapter", True) is not False


def write_notebooks(
    directory: str | os.PathLike,
    *,
    force: bool = False,
    root: str | os.PathLike | None = None,
    solutions: bool = True,
) -> list[Path]:
    """Write every chapter listed in ``_toc.yml`` as ``NN_name.ipynb`` into ``directory``.

    Pages without code and pages that are not chapters (:func:`is_chapter`) are left out.

    Parameters
    ----------
    directory : str or path-like
        Created if missing. It must be empty unless ``force`` is true.
    force : bool
        Write into a non-empty folder, overwriting notebooks of the same names
        (other files are left alone).
    root : str or path-like, optional
        The book's folder (see :func:`find_book_root`).
    solutions : bool, default True
        False writes student copies (see :func:`chapter_notebook`).

    Returns
    -------
    list of pathlib.Path
        The notebooks written, in reading order.

    Raises
    ------
    FileExistsError
        ``directory`` is not empty and ``force`` is false.
    NotADirectoryError
        ``directory`` exists and is a file.
    """
    import nbformat

    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(f"directory must be a folder, but {str(directory)!r} is a file")
    if directory.is_dir() and not force:
        existing = sorted(p.name for p in directory.iterdir())
        if existing:
            shown = ", ".join(existing[:5]) + (", ..." if len(existing) > 5 else "")
            raise FileExistsError(
                f"directory {str(directory)!r} is not empty ({len(existing)} entries: {shown}); "
                "choose an empty or new folder, or pass --force to overwrite the notebooks in it"
            )
    pages = chapter_files(root)
    # Every chapter is converted before the first file is written: a malformed solution
    # cell leaves the folder as it was.
    notebooks = [(page, chapter_notebook(page, solutions=solutions)) for page in pages]
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for page, nb in notebooks:
        if nb is None or not is_chapter(nb):
            continue
        target = directory / f"{len(written) + 1:02d}_{page.stem}.ipynb"
        nbformat.write(nb, target)
        written.append(target)
    return written
