"""Small results tables that read well everywhere: HTML in Jupyter and the book, Markdown in text.

The book's tables (probe R² by layer, matches, comparisons, a chapter's own figures) are
:class:`Table` objects: leave one as a cell's last expression and Jupyter and the built book
show an HTML table; ``print`` it and a terminal shows a Markdown table.

>>> Table(["layer", "R²"], [[0, 0.12], [1, 0.98]], title="probe")  # doctest: +SKIP
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from numbers import Integral, Real

__all__ = ["Table", "TableView", "format_cell"]


def format_cell(value, digits: int = 3) -> str:
    """A cell's text: floats with ``digits`` decimals (``–`` for NaN), everything else ``str``."""
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, Integral):
        return str(value)
    if isinstance(value, Real):
        value = float(value)
        if math.isnan(value):
            return "–"
        return f"{value:.{digits}f}"
    return str(value)


@dataclass
class Table:
    """A titled table of cells.

    Parameters
    ----------
    header : list of str
        Column names.
    rows : list of list
        One list of cells per row, as long as ``header``. Numbers are formatted by
        :func:`format_cell`; strings are shown as they are.
    title : str, optional
        A line above the table (HTML caption).
    digits : int
        Decimals for float cells.

    Raises
    ------
    ValueError
        A row whose length differs from the header's.
    """

    header: list
    rows: list = field(default_factory=list)
    title: str | None = None
    digits: int = 3

    def __post_init__(self):
        self.header = [str(h) for h in self.header]
        self.rows = [list(r) for r in self.rows]
        for i, row in enumerate(self.rows):
            if len(row) != len(self.header):
                raise ValueError(
                    f"rows[{i}] has {len(row)} cells but header has {len(self.header)} columns {self.header}"
                )

    def cells(self) -> list:
        """The rows as text, as shown."""
        return [[format_cell(v, self.digits) for v in row] for row in self.rows]

    def to_markdown(self) -> str:
        """A Markdown pipe table (title on the line above, when there is one)."""
        lines = [" | ".join(self.header), " | ".join("---" for _ in self.header)]
        lines += [" | ".join(row) for row in self.cells()]
        return "\n".join(([self.title] if self.title else []) + lines)

    def to_html(self) -> str:
        """An HTML ``<table>`` (numbers right-aligned) with the title as its caption."""
        esc = html.escape
        numeric = [
            all(isinstance(row[j], Real) and not isinstance(row[j], bool) for row in self.rows) and bool(self.rows)
            for j in range(len(self.header))
        ]

        def cell(tag, text, j):
            style = ' style="text-align: right"' if numeric[j] else ""
            return f"<{tag}{style}>{esc(text)}</{tag}>"

        parts = ['<table class="tfnewton-table">']
        if self.title:
            parts.append(f"<caption>{esc(self.title)}</caption>")
        parts.append("<thead><tr>" + "".join(cell("th", h, j) for j, h in enumerate(self.header)) + "</tr></thead>")
        parts.append("<tbody>")
        for row in self.cells():
            parts.append("<tr>" + "".join(cell("td", c, j) for j, c in enumerate(row)) + "</tr>")
        parts.append("</tbody></table>")
        return "".join(parts)

    def _repr_html_(self) -> str:
        return self.to_html()

    def _repr_markdown_(self) -> str:
        return self.to_markdown()

    def __str__(self) -> str:
        return self.to_markdown()


class TableView:
    """Shows a results object through its :meth:`to_table`: HTML in Jupyter and the book,
    Markdown when printed. A subclass defines ``to_table() -> Table``."""

    def to_table(self) -> Table:
        """The object as a :class:`Table` (each subclass says which rows)."""
        raise NotImplementedError(f"{type(self).__name__} must define to_table()")

    def __str__(self) -> str:
        return self.to_table().to_markdown()

    def _repr_html_(self) -> str:
        return self.to_table().to_html()

    def _repr_markdown_(self) -> str:
        return self.to_table().to_markdown()
