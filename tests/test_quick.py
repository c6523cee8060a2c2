"""Exercise-sized training runs: tfnewton.train.QUICK, quick_config, ``--quick``, and the
measurements of benchmarks/quick_runs.py that the book reads."""

import json
import shlex
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from benchmark_scripts import load_benchmark
from tfnewton import train
from tfnewton.models import load_checkpoint
from tfnewton.train import QUICK, RECIPES, TrainConfig, build_parser, config_from_args, main, quick_config

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
RESULTS = BENCHMARKS / "results" / "quick_runs.json"
CPU_BUDGET_S = 180.0  # issue 20: every exercise's training at most 3 CPU-minutes


def _bench():
    return load_benchmark("quick_runs")


def _parsed(argv):
    return config_from_args(build_parser().parse_args(argv))


def _rebuilt(command: str) -> TrainConfig:
    """The recipe a recorded command builds (``python -m tfnewton train`` dropped)."""
    return _parsed(shlex.split(command)[4:])


# --------------------------------------------------------------------------- the variants


@pytest.mark.parametrize("name", sorted(QUICK))
def test_quick_variant_changes_only_its_fields_and_is_shorter(name):
    recipe, quick = asdict(TrainConfig(**RECIPES[name])), asdict(quick_config(name))
    changed = {field for field in recipe if recipe[field] != quick[field]}
    assert changed <= set(QUICK[name]), changed - set(QUICK[name])
    assert quick["steps"] < recipe["steps"]
    assert quick["compile"] is False  # a compile costs more than it saves in a short run
    for field, value in QUICK[name].items():
        assert quick[field] == value, field


def test_quick_config_overrides_win_and_stay_validated():
    config = quick_config("linear_ln_linreg_d5", width=8, heads=2, steps=3)
    assert (config.width, config.heads, config.steps) == (8, 2, 3)
    assert config.n_layers == RECIPES["linear_ln_linreg_d5"]["n_layers"]
    with pytest.raises(ValueError, match="lr must be > 0"):
        quick_config("linear_ln_linreg_d5", lr=-1.0)


@pytest.mark.parametrize("name, words", [("gpt2_sparse_d10", "recipe with no quick variant 'gpt2_sparse_d10'"),
                                         ("no_such_recipe", "unknown recipe 'no_such_recipe'")])
def test_quick_config_names_the_recipes_that_have_one(name, words):
    with pytest.raises(ValueError) as err:
        quick_config(name)
    assert words in str(err.value)
    assert all(recipe in str(err.value) for recipe in QUICK)


# --------------------------------------------------------------------------- the command line


def test_quick_flag_builds_the_quick_variant_and_flags_override_it():
    assert asdict(_parsed(["--recipe", "gpt2_logreg_d5", "--quick", "--out", "x"])) == asdict(
        quick_config("gpt2_logreg_d5"))
    # Explicit flags win over the quick variant's fields, before or after --quick.
    for argv in (["--recipe", "gpt2_logreg_d5", "--quick", "--steps", "7", "--condition-number", "50"],
                 ["--steps", "7", "--recipe", "gpt2_logreg_d5", "--condition-number", "50", "--quick"]):
        config = _parsed(argv + ["--out", "x"])
        assert (config.steps, config.condition_number) == (7, 50.0)
        assert config.batch_size == QUICK["gpt2_logreg_d5"]["batch_size"] != RECIPES["gpt2_logreg_d5"]["batch_size"]
    # Without --quick the recipe is untouched.
    assert _parsed(["--recipe", "gpt2_logreg_d5", "--out", "x"]).steps == RECIPES["gpt2_logreg_d5"]["steps"]


def test_quick_flag_errors_name_the_recipes_that_have_one(tmp_path, capsys):
    assert main(["--recipe", "gpt2_sparse_d10", "--quick", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no quick variant 'gpt2_sparse_d10'" in err and all(name in err for name in QUICK)
    assert main(["--quick", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--quick needs --recipe" in err and all(name in err for name in QUICK)
    assert not (tmp_path / "model.pt").exists()


@pytest.mark.parametrize("quick_flag", ["--quick", "--qui"])  # argparse accepts an abbreviation
def test_recorded_command_of_a_quick_run_rebuilds_it(tmp_path, monkeypatch, quick_flag, capsys):
    """The checkpoint's command spells the quick variant out, so it rebuilds the run even
    after QUICK changes; explicit flags stay as given."""
    argv = ["--recipe", "linear_ln_linreg_d5", quick_flag, "--width", "8", "--heads", "2", "--steps", "3",
            "--eval-prompts", "16", "--out", str(tmp_path), "--threads", "1", "--no-progress", "--no-final-eval"]
    assert main(argv) == 0
    assert "done: 3 steps" in capsys.readouterr().out
    _, meta = load_checkpoint(tmp_path / "model.pt")
    command = meta["command"]
    assert "--quick" not in command and "--qui" not in command and "--threads" not in command
    expected = asdict(quick_config("linear_ln_linreg_d5", width=8, heads=2, steps=3, eval_prompts=16))
    assert meta["train_config"] == expected
    assert asdict(_rebuilt(command)) == expected
    # The same command still builds this run when the quick variant is later changed.
    monkeypatch.setitem(QUICK, "linear_ln_linreg_d5", dict(steps=5, lr=1e-3, n_layers=1))
    assert asdict(_rebuilt(command)) == expected


def test_quick_expansion_spells_out_only_what_no_flag_sets():
    argv = ["--recipe", "gpt2_logreg_d5", "--quick", "--steps", "9", "--out", "x"]
    expanded = train._expand_quick(argv, build_parser().parse_args(argv))
    assert expanded.count("--steps") == 1 and expanded[expanded.index("--steps") + 1] == "9"
    assert "--batch-size" in expanded and "--no-curriculum" in expanded and "--no-compile" in expanded
    assert asdict(_parsed(expanded)) == asdict(_parsed(argv))
    plain = ["--recipe", "gpt2_logreg_d5", "--out", "x"]
    assert train._expand_quick(plain, build_parser().parse_args(plain)) == plain


# --------------------------------------------------------------------------- the measurements


def test_benchmark_plans_every_quick_variant_and_the_books_runs():
    bench = _bench()
    plan = bench.planned_runs()
    assert set(QUICK) <= set(plan)
    for label, run in plan.items():
        assert run["recipe"] in QUICK, label
        config = _parsed(bench.student_argv(run["recipe"], run["flags"], "x"))
        assert isinstance(config, TrainConfig) and config.steps == QUICK[run["recipe"]]["steps"]


@pytest.mark.slow  # a fresh process that imports torch: about 5 s on an idle machine
def test_benchmark_times_a_run_in_its_own_process(tmp_path):
    bench = _bench()
    out = tmp_path / "quick.json"
    # --update keeps the rows of the runs it does not measure.
    out.write_text(json.dumps({"runs": {"lstm_linreg_d5": {"ok": True, "cpu_seconds": 1.0}}}))
    assert bench.main(["--runs", "linear_ln_linreg_d5 width 8", "--smoke", "--update", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert set(record["runs"]) == {"lstm_linreg_d5", "linear_ln_linreg_d5 width 8"}
    row = record["runs"]["linear_ln_linreg_d5 width 8"]
    assert record["smoke"] is True and record["complete"] is False and record["machine"]["threads_per_run"] == 1
    assert row["error"] is None and row["steps"] == 2 and row["threads"] == 1 and 0 < row["cpu_seconds"]
    assert row["command"] == "python -m tfnewton train --recipe linear_ln_linreg_d5 --quick --width 8 --heads 2"
    assert row["recorded_command"].endswith("--width 8 --heads 2 --steps 2 --eval-prompts 16 --out OUT")
    with pytest.raises(SystemExit):
        bench.main(["--runs", "no such run", "--smoke"])


@pytest.mark.skipif(not RESULTS.is_file(), reason="benchmarks/quick_runs.py has not been run")
def test_committed_measurements_are_of_the_current_quick_variants_and_within_budget():
    """benchmarks/results/quick_runs.json (what the book quotes) measured every planned run
    as QUICK defines it today, each within 3 CPU-minutes."""
    record = json.loads(RESULTS.read_text())
    assert record["complete"] is True and record["smoke"] is False
    bench = _bench()
    plan = bench.planned_runs()
    assert set(record["runs"]) == set(plan)
    for label, row in record["runs"].items():
        assert row["error"] is None and row["ok"] is True, label
        assert row["cpu_seconds"] <= CPU_BUDGET_S, label
        now = _parsed(bench.student_argv(plan[label]["recipe"], plan[label]["flags"], "x"))
        assert asdict(_rebuilt(row["recorded_command"])) == asdict(now), f"{label}: rerun benchmarks/quick_runs.py"
