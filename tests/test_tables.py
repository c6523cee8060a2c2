"""tfnewton.tables and the results tables that render through it."""

import math

import pytest
import torch

from tfnewton.comparison import ComparisonTable
from tfnewton.metrics import MatchTable
from tfnewton.probes import ProbeTable
from tfnewton.tables import Table, format_cell


def test_format_cell():
    assert format_cell(3) == "3"
    assert format_cell(0.123456) == "0.123"
    assert format_cell(0.123456, digits=1) == "0.1"
    assert format_cell(math.nan) == "–"
    assert format_cell("x") == "x"
    assert format_cell(True) == "True"


def test_table_markdown_and_html():
    t = Table(["layer", "R²", "note"], [[0, 0.5, "a<b"], [1, 0.25, "c"]], title="probe & co")
    md = t.to_markdown().splitlines()
    assert md == ["probe & co", "layer | R² | note", "--- | --- | ---", "0 | 0.500 | a<b", "1 | 0.250 | c"]
    html = t._repr_html_()
    assert html.startswith('<table class="tfnewton-table"><caption>probe &amp; co</caption>')
    assert "<td>a&lt;b</td>" in html  # escaped
    assert html.count("<tr>") == 3
    # numeric columns right-aligned, text columns not
    assert '<th style="text-align: right">layer</th>' in html and "<th>note</th>" in html


def test_table_rejects_ragged_rows():
    with pytest.raises(ValueError, match=r"rows\[1\] has 1 cells but header has 2 columns"):
        Table(["a", "b"], [[1, 2], [3]])


def test_probe_table_renders_as_html():
    r2 = torch.tensor([[0.05, 0.02], [0.4, 0.9]], dtype=torch.float64)
    table = ProbeTable(r2, [1, 2], ["embed", "block 1"], "newton", "readout", "query",
                       controls={"shuffled": torch.zeros(2, 2)}, num_fit=10, num_test=5)
    html = table._repr_html_()
    assert "<table" in html and "ProbeTable(newton" in html
    # layer 0's best R² (0.05) is below 0.1: no step is read
    assert "<td>–</td>" in html and "<td style=\"text-align: right\">0.900</td>" in html
    assert table.summary().splitlines()[0] == "layer | best newton step | held-out R² | shuffled control"
    assert str(table).splitlines()[0].startswith("ProbeTable(newton")


def test_match_and_comparison_tables_render_as_html():
    sim = torch.tensor([[0.1, 0.3], [0.8, 0.2]], dtype=torch.float64)
    match = MatchTable(sim, [1, 4], "gd", "errors", ["embed", "block 1"], layer_error=torch.tensor([1.0, 0.5]))
    html = match._repr_html_()
    assert html.count("<tr>") == 3 and "0.800" in html and "0.5000" in html
    comparison = ComparisonTable([dict(name="GD", kind="algorithm", axis="step", index=1, error=0.5,
                                       median_error=0.4, readout="iterate")])
    assert "<td>GD</td>" in comparison._repr_html_()
    assert str(comparison).splitlines()[2].startswith("GD | algorithm | step | 1 | 0.5")
