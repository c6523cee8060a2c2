"""tfnewton.notebooks: every chapter of _toc.yml as a runnable .ipynb."""

import re
from pathlib import Path

import nbformat
import pytest
import yaml
from nbclient import NotebookClient

from tfnewton.notebooks import chapter_files, chapter_notebook, find_book_root, write_notebooks

ROOT = Path(__file__).resolve().parent.parent
CODE_CELL = re.compile(r"^```\{code-cell\}", re.MULTILINE)


def _notebook_pages():
    return [p for p in chapter_files(ROOT) if p.suffix == ".ipynb" or CODE_CELL.search(p.read_text(encoding="utf-8"))]


def test_book_root_is_this_repository():
    assert find_book_root() == ROOT
    assert find_book_root(ROOT) == ROOT


def test_no_book_root_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="_toc.yml"):
        find_book_root(tmp_path)


def test_chapter_files_follow_the_toc():
    text = (ROOT / "_toc.yml").read_text()
    toc = yaml.safe_load(text)
    files = chapter_files(ROOT)
    assert files[0] == ROOT / (toc["root"] + ".md")
    # every `file:` entry, in the order written, whatever the nesting (parts, sections)
    listed = [toc["root"]] + re.findall(r"^\s*-?\s*file:\s*(\S+)", text, re.MULTILINE)
    assert [str(p.relative_to(ROOT).with_suffix("")) for p in files] == listed
    assert len(set(files)) == len(files)


def test_missing_chapter_is_a_clear_error(tmp_path):
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n  - file: nowhere\n")
    (tmp_path / "intro.md").write_text("# Intro\n")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        chapter_files(tmp_path)


def test_writes_one_notebook_per_code_chapter_in_reading_order(tmp_path):
    written = write_notebooks(tmp_path / "nb")
    pages = _notebook_pages()
    assert pages, "the book has no chapter with code"
    assert [p.name for p in written] == [f"{i:02d}_{page.stem}.ipynb" for i, page in enumerate(pages, 1)]
    for page, path in zip(pages, written):
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        assert nb.metadata["kernelspec"]["name"] == "python3"
        code = [c for c in nb.cells if c.cell_type == "code"]
        # every code cell of the chapter, no outputs, nothing else turned into code
        assert len(code) == len(CODE_CELL.findall(page.read_text(encoding="utf-8")))
        assert all(c.outputs == [] and c.execution_count is None for c in code)
        assert all(not c.source.lstrip().startswith("```") for c in code)
        markdown = "".join(c.source for c in nb.cells if c.cell_type == "markdown")
        assert "{code-cell}" not in markdown


def test_pages_without_code_are_skipped(tmp_path):
    page = tmp_path / "plain.md"
    page.write_text("# Just prose\n\nand $x^2$.\n")
    assert chapter_notebook(page) is None


def test_refuses_a_non_empty_directory(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty.*--force"):
        write_notebooks(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


def test_force_overwrites_notebooks_and_keeps_other_files(tmp_path):
    first = write_notebooks(tmp_path)
    first[0].write_text("stale")
    (tmp_path / "mine.txt").write_text("keep me")
    again = write_notebooks(tmp_path, force=True)
    assert again == first
    nbformat.validate(nbformat.read(again[0], as_version=4))
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_refuses_a_file(tmp_path):
    target = tmp_path / "file.ipynb"
    target.write_text("")
    with pytest.raises(NotADirectoryError, match="is a file"):
        write_notebooks(target, force=True)


CODE_CHAPTERS = [
    "matrix_inversion",
    "linear_regression",
    "training",
    "linear_regression_probes",
    "probing_your_model",
    "logistic_regression",
    "logistic_regression_trained",
    "sparse_recovery",
    "sparse_recovery_trained",
]


def test_every_code_chapter_is_checked_as_a_notebook(tmp_path):
    written = {p.stem.split("_", 1)[1] for p in write_notebooks(tmp_path)}
    assert written == set(CODE_CHAPTERS)


@pytest.mark.parametrize("chapter", CODE_CHAPTERS)
def test_generated_notebook_runs_in_a_fresh_kernel(tmp_path, chapter):
    """As a reader would run it: a fresh kernel, in the folder the notebooks were written to."""
    written = {p.stem.split("_", 1)[1]: p for p in write_notebooks(tmp_path)}
    nb = nbformat.read(written[chapter], as_version=4)
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()  # raises CellExecutionError on the first failing cell
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "the chapter drew no figure"
