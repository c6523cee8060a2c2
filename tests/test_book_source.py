"""Checks on the book's sources (book/*.md) that need no build."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted((ROOT / "book").glob("*.md"))
MAX_CODE_WIDTH = 88  # the width of a code cell on the built page, and the library's line length

# A MyST code cell: ```{code-cell} ... ``` (a longer fence opens, and closes, with more backticks).
CODE_CELL = re.compile(r"^(?P<fence>`{3,})\{code-cell\}[^\n]*\n(?P<body>.*?)^(?P=fence)\s*$", re.M | re.S)


def code_cell_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) for every line inside a ``{code-cell}`` of a MyST page."""
    lines = []
    for cell in CODE_CELL.finditer(text):
        first = text.count("\n", 0, cell.start("body")) + 1
        lines += [(first + i, line) for i, line in enumerate(cell["body"].splitlines())]
    return lines


def test_code_cell_lines_are_found():
    text = "# T\n\n```{code-cell} ipython3\n:tags: [x]\n\nx = 1\n```\n\n```python\nnot a cell\n```\n"
    assert code_cell_lines(text) == [(4, ":tags: [x]"), (5, ""), (6, "x = 1")]
    assert code_cell_lines("````{code-cell} ipython3\n```\ninside\n````\n") == [(2, "```"), (3, "inside")]


def test_the_book_has_pages():
    assert [p.name for p in PAGES if "code-cell" in p.read_text(encoding="utf-8")]


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_code_cell_lines_fit_the_page(page):
    """Every line of every code cell is at most 88 characters: longer lines scroll sideways
    on the built page."""
    long = [
        f"{page.name}:{number}: {len(line)} characters: {line.strip()[:60]}..."
        for number, line in code_cell_lines(page.read_text(encoding="utf-8"))
        if len(line) > MAX_CODE_WIDTH
    ]
    assert not long, f"{len(long)} code-cell line(s) over {MAX_CODE_WIDTH} characters:\n" + "\n".join(long)


def test_course_page_assigns_every_chapter_in_order():
    """The course page's reading list links every chapter with code, in _toc.yml's order."""
    from tfnewton.notebooks import chapter_files

    text = (ROOT / "book" / "course.md").read_text(encoding="utf-8")
    reading_list = text.split("## What to assign", 1)[1].split("\n## ", 1)[0]
    linked = re.findall(r"\{doc\}`([^`<>]+)`", reading_list)
    chapters = [
        path.stem
        for path in chapter_files(ROOT)
        if path.stem != "course" and CODE_CELL.search(path.read_text(encoding="utf-8"))
    ]
    assert [name for name in linked if name in chapters] == chapters
