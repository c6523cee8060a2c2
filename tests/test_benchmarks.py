"""The training-speed benchmarks still run (tiny shapes); their figures live in the README."""

import json
import pathlib
import sys

import pytest
import torch
from benchmark_scripts import load_benchmark

BENCHMARKS = pathlib.Path(__file__).parent.parent / "benchmarks"


def _load(name):
    return load_benchmark(name)


def test_train_step_benchmark_times_every_stack(one_thread):
    pytest.importorskip("transformers")
    bench = _load("train_step")
    tiny = dict(d=2, n_points=3, n_layers=1, width=8, heads=2, batch=4, recipe="gpt2_linreg_d5")
    times = bench.bench(tiny, steps=2, warmup=0)
    expected = {"float32", "HF", "HF eager"}
    if bench.cpu_has_native_bf16():
        expected |= {"bfloat16", "HF bf16"}
    assert set(times) == expected and all(t > 0 for t in times.values())


def test_train_step_benchmark_models_are_the_same_function():
    """Ours and Garg et al.'s stack at the same weights give the same predictions, so the
    benchmark compares two implementations of one model (float64, random weights)."""
    pytest.importorskip("transformers")
    from tfnewton.models import from_hf_gpt2

    bench = _load("train_step")
    torch.manual_seed(0)
    theirs = bench.GargTransformer(3, 5, 16, 2, 2).double().eval()
    ours = from_hf_gpt2(theirs._backbone, theirs._read_in, theirs._read_out).double()
    g = torch.Generator().manual_seed(1)
    X = torch.randn(4, 5, 3, generator=g, dtype=torch.float64)
    y = torch.randn(4, 5, generator=g, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(ours(X, y, skip_unused=True), theirs(X, y), rtol=0, atol=1e-12)


def test_attention_backends_benchmark_agrees_with_sdpa(one_thread):
    """Every timed attention computes the same outputs and input gradients (float32)."""
    bench = _load("attention_backends")
    shape = (2, 3, 7, 4)  # batch, heads, tokens, head size
    results = {name: bench.fwd_bwd(shape, torch.float32, backend)() for name, backend in bench.BACKENDS.items()}
    (ref_out, ref_grad), *others = results.values()
    assert ref_out.shape == (2, 3, 7, 4) and ref_grad.shape == (2, 7, 3 * 3 * 4)
    for out, grad in others:
        torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-5)
        torch.testing.assert_close(grad, ref_grad, rtol=0, atol=1e-5)


def test_time_to_quality_times_the_training_loops_step(tmp_path, capsys, one_thread):
    """step_time_ms times tfnewton.train's step, and the --checkpoint report finds the first
    evaluation below the threshold in a run's history and projects from it."""
    from tfnewton.models.pretrained import atomic_save
    from tfnewton.train import TrainConfig, train

    ttq = _load("time_to_quality")
    cfg = TrainConfig(d=2, n_points=3, n_layers=1, width=8, heads=2, batch_size=4, steps=6, warmup_steps=1,
                      eval_prompts=16, curriculum=False)
    assert ttq.step_time_ms(cfg, steps=3) > 0
    run = train(cfg, tmp_path, progress=False, final_eval=False, eval_every=3, threads=1)
    ttq.main(["--checkpoint", run["model_path"], "--threads", "1"])
    out = capsys.readouterr().out
    assert "threshold at k = 2" in out and "never reached the threshold" in out  # 2d = 4, capped by 3 points
    # The same run, its second evaluation (step 6) rewritten below the threshold:
    payload = torch.load(run["model_path"], weights_only=True)
    history = payload["metadata"]["history"]
    assert history["eval_step"] == [3, 6]
    history["eval_error"] = [0.5, 0.005]
    atomic_save(payload, run["model_path"])
    ttq.main(["--checkpoint", run["model_path"], "--threads", "1"])
    row = capsys.readouterr().out.strip().splitlines()[-1]
    assert row.startswith("| 6 | 0.0050 |"), row


def test_time_to_quality_train_records_a_run(tmp_path, monkeypatch, one_thread):
    """--train times a recipe from scratch and appends its record: the step and seconds of
    the first evaluation below 0.01, or None where the run never got there."""
    from tfnewton import train as training

    ttq = _load("time_to_quality")
    tiny = dict(d=2, n_points=5, n_layers=1, width=8, heads=2, batch_size=4, steps=4, warmup_steps=1,
                eval_prompts=16, curriculum=False)
    monkeypatch.setitem(training.RECIPES, "tiny_for_test", tiny)
    monkeypatch.setitem(ttq.RECIPES, "tiny_for_test", tiny)
    out = tmp_path / "runs.json"
    ttq.main(["--train", "--recipe", "tiny_for_test", "--threads", "1", "--eval-every", "2", "--json", str(out)])
    ttq.main(["--train", "--recipe", "tiny_for_test", "--threads", "1", "--eval-every", "2", "--json", str(out)])
    runs = json.loads(out.read_text())["runs"]
    assert len(runs) == 2 and runs[0]["steps"] == 4 and runs[0]["step_to_quality"] is None
    assert runs[0]["final_error"] > 0.01 and runs[0]["compile_cache"] is None  # not compiled
    assert runs[1]["command"].startswith("python benchmarks/time_to_quality.py --train")
    history = {"eval_step": [2, 4], "eval_error": [0.5, 0.004], "eval_seconds": [1.0, 2.0]}
    assert ttq.first_below(history, ttq.THRESHOLD) == (4, 0.004, 2.0)


@pytest.mark.slow
def test_book_benchmark_times_chapters_in_fresh_kernels(tmp_path, capsys):
    """--quick runs a chapter's first cell in a new kernel, prints the budget table and
    writes the JSON record; the kernel's CPU time is counted (it is this process's child)."""
    import json

    book = _load("book")
    out = tmp_path / "book_times.json"
    assert book.main(["--quick", "--chapters", "matrix_inversion", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| matrix_inversion |" in printed and "| **total** |" in printed
    record = json.loads(out.read_text())
    assert record["quick"] is True and record["complete"] is False
    assert record["command"].startswith("python benchmarks/book.py --quick")
    assert record["machine"]["threads_available"] >= 1 and record["date"]
    (row,) = record["chapters"]
    assert row["chapter"] == "matrix_inversion" and row["error"] is None
    assert row["seconds"] > 0 and row["cpu_seconds"] > 0
    assert record["total_seconds"] == row["seconds"] and record["book_budget_seconds"] == 360
    with pytest.raises(SystemExit):
        book.main(["--quick", "--chapters", "no_such_chapter"])
    assert "no_such_chapter" in capsys.readouterr().err


@pytest.mark.slow
def test_book_benchmark_reports_a_failing_cell(tmp_path):
    import nbformat

    book = _load("book")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1"),
                                         nbformat.v4.new_code_cell("raise ValueError('the chapter broke')")])
    row = book.time_notebook(nb, tmp_path, timeout=60)
    assert "the chapter broke" in row["error"] and row["seconds"] > 0
    assert book.summary([{**row, "chapter": "x", "ok": False}])["all_ok"] is False


@pytest.mark.slow
def test_gpu_check_plumbing_on_the_cpu(tmp_path):
    """The GPU script's training phase, in its quick mode on the CPU: it times a short start,
    trains on, and brings back the steps and errors it reached (the GPU run's figures)."""
    import json
    import subprocess

    out = tmp_path / "out"
    code = subprocess.run([sys.executable, str(BENCHMARKS / "gpu_check.py"), "--out", str(out), "--device", "cpu",
                           "--quick", "--phases", "train"], capture_output=True, text=True, timeout=600)
    assert code.returncode == 0, code.stdout + code.stderr
    summary = json.loads((out / "summary.json").read_text())
    train = summary["phases"]["train"]
    assert train["status"] == "ok" and train["steps"] == 10
    assert len(train["eval_error"]) >= 2 and all(e > 0 for e in train["eval_error"])
    assert (out / "train.log").is_file() and (out / "train_more.log").is_file()
    assert not (out / "fu_run" / "train_state.pt").exists()  # too large to bring back


def test_gpu_check_refuses_cuda_without_a_gpu_and_unknown_phases(tmp_path, capsys):
    gpu_check = _load("gpu_check")
    with pytest.raises(SystemExit):
        gpu_check.main(["--out", str(tmp_path), "--phases", "tests,warp"])
    assert "unknown ['warp']" in capsys.readouterr().err
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            gpu_check.main(["--out", str(tmp_path)])
        assert "CUDA is not available" in capsys.readouterr().err


def test_logistic_trained_benchmark_writes_every_context_length(tmp_path, one_thread):
    bench = _load("logistic_trained")
    out = tmp_path / "bar.json"
    assert bench.main(["--quick", "--out", str(out)]) == 0
    import json

    record = json.loads(out.read_text())
    assert [row["n"] for row in record["rows"]] == list(range(5, 26))
    assert len(record["checkpoint"]["sha256"]) == 64


def test_architecture_sweeps_add_rows_resume_and_refuse_bad_widths(tmp_path, one_thread):
    """Two-step runs: each row has the error, the parameter count and the command that repeats
    the run; a second call skips what is measured; a width the heads do not divide fails
    before anything trains."""
    import shlex

    from tfnewton.train import build_parser, config_from_args

    bench = _load("architecture_sweeps")
    out = tmp_path / "lstm.json"
    assert bench.main(["lstm-depth", "--depths", "1", "--steps", "2", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["runs"]
    assert [(r["depth"], r["architecture"]) for r in rows] == [(1, "residual"), (1, "plain")]
    assert rows[1]["parameters"] < rows[0]["parameters"]  # no LayerNorm weights
    args = build_parser().parse_args(shlex.split(rows[1]["command"])[4:])
    config = config_from_args(args)
    assert (config.n_layers, config.residual, config.layernorm, config.steps) == (1, False, False, 2)
    before = out.read_text()
    assert bench.main(["lstm-depth", "--depths", "1", "--steps", "2", "--out", str(out)]) == 0
    assert out.read_text() == before
    with pytest.raises(ValueError, match="got width=30 and heads=4"):
        bench.main(["width", "--d", "3", "--widths", "8", "30", "--steps", "2", "--out", str(tmp_path / "w.json")])
    assert not (tmp_path / "w.json").exists()


def test_bf16_quality_compares_means_over_seeds_and_reuses_measured_runs(tmp_path, monkeypatch):
    """The verdict is the ratio of the mean errors over the seeds; a second call with one more
    seed trains only that seed's two runs (the others are read back from --json)."""
    bench = _load("bf16_quality")
    monkeypatch.setattr(bench, "resolve_precision", lambda precision, device: "bfloat16")
    errors = {("float32", 0): 0.010, ("bfloat16", 0): 0.012, ("float32", 1): 0.020, ("bfloat16", 1): 0.020,
              ("float32", 2): 0.012, ("bfloat16", 2): 0.020}
    trained = []

    def fake_run(config, threads):
        trained.append((config.precision, config.seed))
        return {"precision": config.precision, "steps": config.steps, "error": errors[config.precision, config.seed],
                "eval_step": [], "eval_error": [], "seconds": 0.0}

    monkeypatch.setattr(bench, "run", fake_run)
    out = tmp_path / "bf16.json"
    assert bench.main(["--seeds", "0", "1", "--json", str(out)]) == 0  # 0.016 / 0.015 = 1.067
    record = json.loads(out.read_text())
    assert record["ratio"] == pytest.approx(0.032 / 0.030) and record["passed"] and record["complete"]
    assert trained == [("float32", 0), ("bfloat16", 0), ("float32", 1), ("bfloat16", 1)]
    assert bench.main(["--seeds", "0", "1", "2", "--json", str(out)]) == 1  # 0.052 / 0.042 = 1.24
    assert trained[4:] == [("float32", 2), ("bfloat16", 2)]
    record = json.loads(out.read_text())
    assert record["ratio"] == pytest.approx(0.052 / 0.042) and not record["passed"]
    assert [(r["seed"], r["precision"]) for r in record["runs"]] == [
        (s, p) for s in (0, 1, 2) for p in ("float32", "bfloat16")]
