"""tfnewton.compare: one tidy table (and figure) for algorithms, constructions and trained models."""

import matplotlib

matplotlib.use("Agg")

import pytest
import torch
from probe_models import AlgorithmOracle, NoBlocks

import tfnewton
from tfnewton import algorithms, tasks
from tfnewton.comparison import ComparisonTable, compare
from tfnewton.constructions import newton_regression_transformer
from tfnewton.models import build_model


pytestmark = pytest.mark.usefixtures("one_thread")


def _task(B, n, d, seed=0, dtype=torch.float64):
    return tasks.sample_linear_regression(B, n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_compare_is_re_exported_at_the_top_level():
    assert tfnewton.compare is compare


def test_algorithm_rows_equal_the_algorithms_errors_on_the_held_out_prompts():
    task = _task(80, 9, 3)
    table = compare({"Newton": "newton", "GD": ("gd", {"lr": 0.5}), "OLS": "ols"}, task, steps=4, plot=False, seed=3)
    assert isinstance(table, ComparisonTable) and table.names() == ["Newton", "GD", "OLS"]
    assert table.num_test == 20 and len(table) == 15
    test_idx = torch.randperm(80, generator=torch.Generator().manual_seed(3))[:20]
    X, y = task.X[test_idx], task.y[test_idx]
    W = algorithms.gradient_descent_least_squares(X[:, :8], y[:, :8], 4, lr=0.5)
    for row in table.where(name="GD"):
        expected = ((W[row["index"]] * X[:, 8]).sum(-1) - y[:, 8]).pow(2).mean() / 3
        assert row["error"] == pytest.approx(float(expected), rel=1e-12)
        assert row["kind"] == "algorithm" and row["axis"] == "step" and row["readout"] == "iterate"
    assert table.final("OLS")["error"] < 1e-20  # noiseless, n - 1 = 8 >= d = 3
    newton = table.where(name="Newton").column("error")
    assert newton[-1] < newton[0]


def test_a_construction_lies_on_its_algorithm():
    task = _task(60, 9, 3)
    model = newton_regression_transformer(3, 4)
    table = compare({"construction": model, "Newton": "newton"}, task, steps=4, plot=False)
    built = table.where(name="construction")
    assert built.column("axis") == ["step"] * 5 and built.column("readout") == ["readout"] * 5
    for a, b in zip(built.column("error"), table.where(name="Newton").column("error")):
        assert a == pytest.approx(b, rel=1e-8, abs=1e-14)


def test_a_query_model_without_steps_is_reported_per_layer():
    task = _task(40, 9, 3)
    model = newton_regression_transformer(3, 2)
    model.steps = None  # declares no algorithm steps: one row per hidden state, by its own read-out
    table = compare({"m": model}, task, plot=False)
    assert table.column("axis") == ["layer"] * 5 and table.column("index") == [0, 1, 2, 3, 4]
    assert table.column("readout") == ["readout"] * 5


def test_trained_models_get_a_probe_per_layer_and_their_own_output():
    oracle = AlgorithmOracle(3, layer_steps=[0, 2, 4])
    task = _task(240, 9, 3)
    table = compare([oracle, "newton"], task, steps=4)
    rows = table.where(name="AlgorithmOracle")
    assert rows.column("index") == [0, 1, 2, 3, 3]
    assert rows.column("readout") == ["probe"] * 4 + ["output"]
    newton = {r["index"]: r["error"] for r in table.where(name="newton")}
    # the oracle's own output is Newton step 4 exactly
    assert rows[-1]["error"] == pytest.approx(newton[4], rel=1e-10)
    # its layer probes fall with depth (a probe fit to y is at least as good as the slot it reads)
    probe = rows.where(readout="probe").column("error")
    assert probe[3] < probe[2] < probe[1] < probe[0]
    assert table.ax is not None and len(table.ax.get_lines()) == 2
    assert "AlgorithmOracle" in str(table)


def test_a_gpt2_model_runs_through_compare():
    model = build_model("gpt2", 3, n_points=9, n_layers=2, width=16, heads=2, seed=0)
    table = compare({"gpt2": model}, _task(120, 9, 3, dtype=torch.float32), plot=False)
    assert table.column("index") == [0, 1, 2, 2]


def test_bad_entries_and_tasks_are_refused_clearly():
    task = _task(40, 6, 3)
    with pytest.raises(ValueError, match="algorithm must be one of"):
        compare(["adam"], task, plot=False)
    with pytest.raises(TypeError, match="each entry"):
        compare([3], task, plot=False)
    with pytest.raises(TypeError, match="dict label -> entry"):
        compare("newton", task, plot=False)
    with pytest.raises(ValueError, match="unique"):
        compare(["newton", "newton"], task, plot=False)
    with pytest.raises(ValueError, match="must not be empty"):
        compare({}, task, plot=False)
    with pytest.raises(TypeError, match="model.blocks"):
        compare([NoBlocks()], task, plot=False)
    with pytest.raises(ValueError, match="d = 3.*d = 5"):
        compare([build_model("gpt2", 5, n_points=6, n_layers=1, width=16, heads=2)], task, plot=False)
    with pytest.raises(TypeError, match="task must hold"):
        compare(["newton"], object(), plot=False)
    with pytest.raises(KeyError, match="columns"):
        compare(["newton"], task, steps=1, plot=False).column("err")
