"""tfnewton.notebooks: every chapter of _toc.yml as a runnable .ipynb."""

import re
from pathlib import Path

import nbformat
import pytest
import yaml
from notebook_run import run_in_fresh_kernel

from tfnewton.notebooks import chapter_files, chapter_notebook, find_book_root, write_notebooks

ROOT = Path(__file__).resolve().parent.parent
CODE_CELL = re.compile(r"^```\{code-cell\}", re.MULTILINE)


NOT_A_CHAPTER = re.compile(r"^tfnewton:\s*\n\s+chapter:\s*false\b", re.MULTILINE)  # the course page


def _notebook_pages():
    return [
        p
        for p in chapter_files(ROOT)
        if p.suffix == ".ipynb"
        or (CODE_CELL.search(text := p.read_text(encoding="utf-8")) and not NOT_A_CHAPTER.search(text))
    ]


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
    "linear_regression_thesis",
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
    run_in_fresh_kernel(nb, tmp_path)


# --------------------------------------------------------------------------- student copies

_EXERCISE_CHAPTER = '''---
kernelspec:
  name: python3
  display_name: Python 3
---

# A chapter

```{code-cell} ipython3
x = 2
```

## Exercises

1. **Exercise 1** (about 5 min). Square x.

```{code-cell} ipython3
:tags: [hide-cell, solution]
# Solution to exercise 1. Squaring is multiplying by itself.
print(x * x)
```

2. **Exercise 2** (about 10 min). Cube x.

```{code-cell} ipython3
:tags: [hide-cell, solution]
# Solution to exercise 2.
print(x ** 3)
```

```{code-cell} ipython3
:tags: [hide-cell]
print("kept: hidden, but not a solution")
```
'''


def _tiny_book(folder, chapter=_EXERCISE_CHAPTER):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n  - file: chapter\n")
    (folder / "intro.md").write_text("# Intro\n")
    (folder / "chapter.md").write_text(chapter)
    return folder


def _tags(cell):
    return cell.get("metadata", {}).get("tags", [])


def test_student_copy_replaces_each_solution_by_an_empty_cell(tmp_path):
    book = _tiny_book(tmp_path)
    full = chapter_notebook(book / "chapter.md")
    student = chapter_notebook(book / "chapter.md", solutions=False)
    assert len(student.cells) == len(full.cells)
    replaced = []
    for before, after in zip(full.cells, student.cells):
        if "solution" in _tags(before):
            replaced.append(after.source)
            assert after.cell_type == "code" and after.outputs == [] and _tags(after) == []
        else:
            assert after == before  # the exercise's text and every other cell stay
    assert replaced == ["# Your solution to exercise 1.\n", "# Your solution to exercise 2.\n"]
    text = "".join(c.source for c in student.cells)
    assert "x * x" not in text and "x ** 3" not in text
    assert "Square x." in text and "Cube x." in text and "kept: hidden" in text
    nbformat.validate(student)


def test_solutions_stay_by_default(tmp_path):
    nb = chapter_notebook(_tiny_book(tmp_path) / "chapter.md")
    solutions = [c for c in nb.cells if "solution" in _tags(c)]
    assert [c.source.splitlines()[0] for c in solutions] == [
        "# Solution to exercise 1. Squaring is multiplying by itself.",
        "# Solution to exercise 2.",
    ]


def test_write_notebooks_without_solutions(tmp_path):
    book = _tiny_book(tmp_path / "book")
    (written,) = write_notebooks(tmp_path / "out", root=book, solutions=False)
    nb = nbformat.read(written, as_version=4)
    assert not [c for c in nb.cells if "solution" in _tags(c)]
    assert sum(c.source.startswith("# Your solution to exercise") for c in nb.cells) == 2


def test_solution_without_its_first_line_is_a_clear_error(tmp_path):
    chapter = _EXERCISE_CHAPTER.replace("# Solution to exercise 2.\n", "# Cube it.\n")
    book = _tiny_book(tmp_path / "book", chapter)
    with pytest.raises(ValueError, match=r"chapter\.md.*'solution'.*# Solution to exercise N\..*Cube it"):
        write_notebooks(tmp_path / "out", root=book, solutions=False)
    assert not (tmp_path / "out").exists()  # nothing half-written
    write_notebooks(tmp_path / "out", root=book)  # with the solutions, nothing is parsed


def test_solutions_must_be_a_bool(tmp_path):
    with pytest.raises(TypeError, match="solutions must be True or False.*'no'"):
        chapter_notebook(_tiny_book(tmp_path) / "chapter.md", solutions="no")


# `:tags: [...]` or, in a cell's YAML block, `tags: [...]`
SOLUTION_TAG_LINE = re.compile(r"^:?tags:\s*\[[^\]]*\bsolution\b[^\]]*\]", re.MULTILINE)


def test_every_solution_of_the_book_is_left_out_of_the_student_copies(tmp_path):
    full = write_notebooks(tmp_path / "full")
    student = write_notebooks(tmp_path / "student", solutions=False)
    assert [p.name for p in student] == [p.name for p in full]
    for page, with_path, without_path in zip(_notebook_pages(), full, student):
        tagged = len(SOLUTION_TAG_LINE.findall(page.read_text(encoding="utf-8")))
        with_nb = nbformat.read(with_path, as_version=4)
        without_nb = nbformat.read(without_path, as_version=4)
        solutions = [c for c in with_nb.cells if "solution" in _tags(c)]
        assert len(solutions) == tagged, page.name
        assert not [c for c in without_nb.cells if "solution" in _tags(c)], page.name
        numbers = [re.match(r"#\s*Solution to exercise (\d+)", c.source, re.I).group(1) for c in solutions]
        placeholders = [c.source for c in without_nb.cells if c.source.startswith("# Your solution")]
        assert placeholders == [f"# Your solution to exercise {n}.\n" for n in numbers], page.name


# --------------------------------------------------------------------------- where the book is found


def test_the_book_a_wheel_carries_is_found_outside_a_clone(tmp_path, monkeypatch):
    """No clone above the package and no _toc.yml in the current folder: the packaged copy."""
    import tfnewton.notebooks as notebooks

    packaged = _tiny_book(tmp_path / "site-packages" / "tfnewton" / "_book")
    monkeypatch.setattr(notebooks, "_CLONE_ROOT", tmp_path / "site-packages")
    monkeypatch.setattr(notebooks, "_PACKAGED_BOOK", packaged)
    monkeypatch.chdir(tmp_path)
    assert find_book_root() == packaged
    # a book in the current folder comes first (running from a clone uses the clone's)
    here = _tiny_book(tmp_path / "clone")
    monkeypatch.chdir(here)
    assert find_book_root() == here


def test_no_book_anywhere_says_what_to_do(tmp_path, monkeypatch):
    import tfnewton.notebooks as notebooks

    monkeypatch.setattr(notebooks, "_CLONE_ROOT", tmp_path / "site-packages")
    monkeypatch.setattr(notebooks, "_PACKAGED_BOOK", tmp_path / "site-packages" / "tfnewton" / "_book")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="_toc.yml.*no copy of the book.*--book"):
        find_book_root()


def test_the_same_chapter_gives_the_same_file(tmp_path):
    first = write_notebooks(tmp_path / "a", solutions=False)
    second = write_notebooks(tmp_path / "b", solutions=False)
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]


def test_a_page_that_is_not_a_chapter_is_not_written(tmp_path):
    """The course page has code but is for teachers: `tfnewton: {chapter: false}`."""
    from tfnewton.notebooks import is_chapter

    book = _tiny_book(tmp_path / "book")
    teachers = _EXERCISE_CHAPTER.replace("---\n\n# A chapter", "tfnewton:\n  chapter: false\n---\n\n# Teachers")
    (book / "teachers.md").write_text(teachers)
    (book / "_toc.yml").write_text(
        "format: jb-book\nroot: intro\nchapters:\n  - file: teachers\n  - file: chapter\n"
    )
    assert not is_chapter(chapter_notebook(book / "teachers.md"))
    assert is_chapter(chapter_notebook(book / "chapter.md"))
    assert [p.name for p in write_notebooks(tmp_path / "out", root=book)] == ["01_chapter.ipynb"]


def test_the_course_page_is_not_among_the_notebooks(tmp_path):
    course = ROOT / "book" / "course.md"
    assert NOT_A_CHAPTER.search(course.read_text(encoding="utf-8"))
    assert "course" not in {p.stem.split("_", 1)[1] for p in write_notebooks(tmp_path)}
