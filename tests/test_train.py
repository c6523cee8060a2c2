"""tfnewton.train: schedule, curriculum, resume bit-identity (stop and kill), DDP on gloo, CLI."""

import dataclasses
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tfnewton.models import load_checkpoint
from tfnewton.train import (
    TrainConfig,
    _reproducible_argv,
    autocast_context,
    cpu_has_native_bf16,
    resolve_precision,
    curriculum_at,
    error_vs_k,
    learning_rate,
    main,
    train,
)

ROOT = Path(__file__).resolve().parents[1]


def tiny(**overrides) -> TrainConfig:
    values = dict(d=3, n_points=7, n_layers=2, width=16, heads=2, batch_size=8, steps=40, warmup_steps=5,
                  d_start=1, n_start=3, curriculum_every=10, eval_prompts=64)
    values.update(overrides)
    return TrainConfig(**values)


def _params(model_or_path):
    if isinstance(model_or_path, (str, Path)):
        model_or_path, _ = load_checkpoint(model_or_path)
    return {k: v.clone() for k, v in model_or_path.state_dict().items()}


def _assert_same_params(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


RUN = dict(progress=False, final_eval=False, threads=1, eval_every=20, ckpt_every=10, log_every=5)


# --------------------------------------------------------------------------- schedule and curriculum


def test_learning_rate_schedule():
    c = TrainConfig(steps=1000, lr=1e-3, warmup_steps=100, decay_fraction=0.3)
    assert learning_rate(0, c) == pytest.approx(1e-5)
    assert learning_rate(99, c) == pytest.approx(1e-3)
    assert learning_rate(500, c) == learning_rate(699, c) == 1e-3  # constant until 70 %
    assert learning_rate(850, c) == pytest.approx(0.5e-3)  # halfway down the linear decay
    assert learning_rate(999, c) == pytest.approx(1e-3 / 300)
    cos = TrainConfig(steps=1000, lr=1e-3, warmup_steps=100, schedule="cosine")
    assert learning_rate(100, cos) == pytest.approx(1e-3)
    assert learning_rate(550, cos) == pytest.approx(0.5e-3)
    assert learning_rate(1000, cos) == pytest.approx(0.0, abs=1e-12)
    assert learning_rate(900, TrainConfig(steps=1000, schedule="constant")) == TrainConfig().lr


def test_curriculum_grows_then_caps():
    c = TrainConfig(d=5, n_points=11, d_start=2, n_start=5, curriculum_every=500)
    assert curriculum_at(0, c) == (2, 5)
    assert curriculum_at(499, c) == (2, 5)
    assert curriculum_at(500, c) == (3, 7)
    assert curriculum_at(1500, c) == (5, 11)
    assert curriculum_at(10**6, c) == (5, 11)
    assert curriculum_at(0, TrainConfig(curriculum=False)) == (5, 11)


def test_config_validation():
    with pytest.raises(ValueError, match="task must be one of"):
        TrainConfig(task="ranking")
    with pytest.raises(ValueError, match="schedule must be one of"):
        TrainConfig(schedule="step")
    with pytest.raises(ValueError, match="steps must be >= 1"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="lr must be > 0"):
        TrainConfig(lr=-1.0)
    with pytest.raises(ValueError, match="decay_fraction"):
        TrainConfig(decay_fraction=1.5)
    with pytest.raises(TypeError, match="config must be a TrainConfig"):
        train({"d": 3}, "/tmp/x")


# --------------------------------------------------------------------------- training and resume


def test_training_reduces_the_loss_and_writes_a_checkpoint(tmp_path):
    # d = 1: the smallest problem where a tiny model visibly learns in a few hundred steps
    cfg = tiny(d=1, n_points=5, steps=400, lr=3e-3, batch_size=32, warmup_steps=20, curriculum=False,
               eval_prompts=500)
    result = train(cfg, tmp_path, **{**RUN, "final_eval": True, "eval_every": 100, "log_every": 20})
    assert result["finished"] and result["step"] == 400
    h = result["history"]
    assert sum(h["loss"][-3:]) < 0.85 * sum(h["loss"][:3])
    assert h["eval_error"][-1] < 0.85 * h["eval_error"][0]
    model, meta = load_checkpoint(result["model_path"])
    assert meta["steps"] == 400 and meta["task"] == "linear_regression" and meta["seed"] == 0
    assert meta["train_config"]["width"] == 16 and meta["library_version"]
    curve = meta["metrics"]["error_vs_k"]
    assert len(curve["model"]) == 5 and curve["ols"][4] < 1e-10  # k = 4 > d: OLS is exact
    assert all(g >= o - 1e-12 for g, o in zip(curve["gd_tuned"], curve["ols"]))
    assert "--steps 400" in meta["command"]


def test_stop_and_resume_is_bit_identical(tmp_path):
    cfg = tiny()
    full = train(cfg, tmp_path / "full", **RUN)
    part = train(cfg, tmp_path / "part", stop_after=17, **RUN)  # not on a checkpoint boundary
    assert not part["finished"] and part["step"] == 17
    resumed = train(cfg, tmp_path / "part", resume=True, **RUN)
    assert resumed["finished"]
    _assert_same_params(_params(full["model_path"]), _params(resumed["model_path"]))
    assert resumed["history"]["loss"] == full["history"]["loss"]


def test_resume_refuses_another_recipe(tmp_path):
    train(tiny(), tmp_path, stop_after=5, **RUN)
    with pytest.raises(ValueError, match="recipe differs.*lr"):
        train(tiny(lr=1e-3), tmp_path, resume=True, **RUN)


def test_killed_run_resumes_to_the_same_parameters(tmp_path):
    """SIGKILL mid-run (no chance to save): the last atomic checkpoint is intact and resuming
    ends with exactly the parameters of an uninterrupted run."""
    args = ["--out", str(tmp_path / "killed"), "--d", "3", "--n-points", "7", "--n-layers", "2", "--width", "16",
            "--heads", "2", "--batch-size", "8", "--steps", "3000", "--warmup-steps", "5", "--d-start", "1",
            "--n-start", "3", "--curriculum-every", "10", "--eval-prompts", "64"]
    runtime = ["--threads", "1", "--ckpt-every", "10", "--eval-every", "100000", "--log-every", "5",
               "--no-progress", "--no-final-eval"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "tfnewton.train", *args, *runtime], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    state = tmp_path / "killed" / "train_state.pt"
    deadline = time.time() + 60
    while not state.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)  # let it run past the first checkpoint
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    saved_step = torch.load(state, weights_only=True)["step"]
    assert 0 < saved_step < 3000
    # finish both runs with a shorter recipe? No: the recipe must match. Resume in-process.
    cfg = tiny(steps=3000)
    quick = dict(RUN, eval_every=100000, ckpt_every=1000)
    resumed = train(cfg, tmp_path / "killed", resume=True, stop_after=saved_step + 15, **quick)
    reference = train(cfg, tmp_path / "ref", stop_after=saved_step + 15, **quick)
    a = torch.load(tmp_path / "killed" / "train_state.pt", weights_only=True)
    b = torch.load(tmp_path / "ref" / "train_state.pt", weights_only=True)
    assert a["step"] == b["step"] == resumed["step"] == reference["step"]
    _assert_same_params(a["model"], b["model"])
    assert torch.equal(a["generators"][0], b["generators"][0])


def test_sigterm_checkpoints_before_exiting(tmp_path):
    out = tmp_path / "term"
    code = (
        "import os, signal, sys\n"
        "from tfnewton.train import train, TrainConfig\n"
        "import tfnewton.train as T\n"
        "cfg = TrainConfig(d=2, n_points=5, n_layers=1, width=8, heads=1, batch_size=4, steps=100000,\n"
        "                  eval_prompts=16, d_start=1, n_start=3)\n"
        "orig = T.sample_batch\n"
        "calls = [0]\n"
        "def patched(*a, **k):\n"
        "    calls[0] += 1\n"
        "    if calls[0] == 31: os.kill(os.getpid(), signal.SIGTERM)  # call 1 drew the eval set\n"
        "    return orig(*a, **k)\n"
        "T.sample_batch = patched\n"
        f"r = train(cfg, {str(out)!r}, progress=False, final_eval=False, threads=1, ckpt_every=10**6, eval_every=10**6)\n"
        "print('STEP', r['step'], r['finished'])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "STEP 30 False" in res.stdout
    assert torch.load(out / "train_state.pt", weights_only=True)["step"] == 30


def test_sparse_and_logistic_tasks_train(tmp_path):
    for task in ("sparse_recovery", "logistic_regression"):
        cfg = tiny(task=task, steps=6, sparsity=2, d=4, n_points=7)
        r = train(cfg, tmp_path / task, **{**RUN, "final_eval": True})
        assert r["finished"] and math.isfinite(r["history"]["loss"][-1])


def test_logistic_regression_in_giannou_et_al_setting_trains_saves_and_resumes(tmp_path):
    """d = 5, n = 26, mu = 0.01, input covariances of condition number 1, 10 and 50 mixed: a
    tiny model trains on the cross-entropy of its logits (finite, falling over 50 steps), its
    checkpoint holds the cross-entropy and accuracy against k next to damped Newton's, the
    recorded command rebuilds the recipe, and a stopped run resumes bit-identically."""
    import shlex

    from tfnewton.train import build_parser, config_from_args

    cfg = tiny(task="logistic_regression", d=5, n_points=26, condition_number=(1, 10, 50), mu=0.01, steps=50,
               batch_size=16, lr=3e-3, curriculum=False, eval_prompts=256)
    assert cfg.condition_number == (1.0, 10.0, 50.0)
    full = train(cfg, tmp_path / "full", **{**RUN, "final_eval": True, "eval_every": 25})
    losses = full["history"]["loss"]  # every 5 steps
    assert all(math.isfinite(x) for x in losses) and sum(losses[-3:]) < sum(losses[:3])
    model, meta = load_checkpoint(full["model_path"])
    metrics = meta["metrics"]
    assert metrics["eval_metric"] == "cross_entropy" and metrics["eval_k"] == 10
    assert 0.5 < metrics["cross_entropy_at_eval_k"] < 1.0 and 0.5 < metrics["newton_cross_entropy_at_eval_k"] < 0.69
    curve = metrics["error_vs_k"]
    assert len(curve["model"]) == len(curve["model_accuracy"]) == len(curve["newton"]) == 26
    assert curve["newton"][25] < curve["newton"][2] and curve["newton_accuracy"][25] > 0.6
    assert "--condition-number 1.0,10.0,50.0" in meta["command"]
    again = config_from_args(build_parser().parse_args(shlex.split(meta["command"])[4:]))
    assert again == TrainConfig(**meta["train_config"]) == cfg
    part = train(cfg, tmp_path / "part", stop_after=23, **RUN)
    assert not part["finished"]
    resumed = train(cfg, tmp_path / "part", resume=True, **RUN)
    _assert_same_params(_params(full["model_path"]), _params(resumed["model_path"]))
    assert resumed["history"]["loss"] == losses


def test_train_validates_the_device_once(tmp_path, monkeypatch):
    """One check of ``device`` along a call of train(); its helpers and the step take the result."""
    import tfnewton.step as step_module
    import tfnewton.train as tr

    calls = []
    for module in (tr, step_module):
        original = module.check_device
        monkeypatch.setattr(module, "check_device", lambda device, _check=original: calls.append(device) or _check(device))
    train(tiny(steps=3, precision="auto"), tmp_path, device="cpu", **{**RUN, "final_eval": True})
    assert calls == ["cpu"]


# --------------------------------------------------------------------------- conditioning and noise


def test_condition_number_and_noise_validation():
    with pytest.raises(ValueError, match="condition_number must be >= 1"):
        TrainConfig(condition_number=0.5)
    with pytest.raises(ValueError, match="condition_number must be > 0"):
        TrainConfig(condition_number=0.0)
    with pytest.raises(ValueError, match="condition_number must be finite"):
        TrainConfig(condition_number=float("inf"))
    with pytest.raises(TypeError, match="condition_number must be a real number"):
        TrainConfig(condition_number="100")
    with pytest.raises(ValueError, match="noise_std must be >= 0"):
        TrainConfig(noise_std=-0.1)
    with pytest.raises(ValueError, match="noise_std must be 0 for task 'logistic_regression'"):
        TrainConfig(task="logistic_regression", noise_std=0.1)
    with pytest.raises(ValueError, match="condition_number must be 1 for task 'sparse_recovery'"):
        TrainConfig(task="sparse_recovery", condition_number=10.0)
    cfg = TrainConfig(condition_number=100, noise_std=0)  # ints are recorded as floats
    assert isinstance(cfg.condition_number, float) and isinstance(cfg.noise_std, float)
    assert TrainConfig(task="logistic_regression", condition_number=10.0).condition_number == 10.0


def test_sampling_uses_the_condition_number_and_noise():
    from tfnewton import tasks
    from tfnewton.train import sample_batch

    cfg = tiny(d=4, condition_number=100.0, noise_std=0.3)
    X, y = sample_batch(cfg, 64, 9, 4, generator=torch.Generator().manual_seed(5), device=torch.device("cpu"))
    ref = tasks.sample_linear_regression(64, 9, 4, noise_std=0.3, condition_number=100.0,
                                         generator=torch.Generator().manual_seed(5))
    assert torch.equal(X, ref.X) and torch.equal(y, ref.y)
    # Under the curriculum the ill-conditioned covariance lives in the first d_eff coordinates.
    X2, _ = sample_batch(cfg, 64, 9, 2, generator=torch.Generator().manual_seed(5), device=torch.device("cpu"))
    assert X2.shape == (64, 9, 4) and not X2[..., 2:].any()
    # Statistically: inputs ill-conditioned, labels noisy (a default config gives neither).
    big = tiny(d=4, condition_number=100.0, noise_std=0.5)
    Xb, yb = sample_batch(big, 4000, 9, 4, generator=torch.Generator().manual_seed(0), device=torch.device("cpu"))
    eig = torch.linalg.eigvalsh(torch.einsum("bni,bnj->bij", Xb.double(), Xb.double()) / 9)
    assert float((eig[:, -1] / eig[:, 0]).median()) > 50
    Xi, _ = sample_batch(tiny(d=4), 4000, 9, 4, generator=torch.Generator().manual_seed(0), device=torch.device("cpu"))
    eig_iso = torch.linalg.eigvalsh(torch.einsum("bni,bnj->bij", Xi.double(), Xi.double()) / 9)
    assert float((eig_iso[:, -1] / eig_iso[:, 0]).median()) < 50
    # 9 points, d = 4: least squares leaves residuals of variance noise² (n − d)/n.
    from tfnewton.algorithms import least_squares

    w = least_squares(Xb.double(), yb.double())
    resid = yb.double() - (Xb.double() @ w.unsqueeze(-1)).squeeze(-1)
    assert float(resid.pow(2).mean()) == pytest.approx(0.25 * 5 / 9, rel=0.05)


def test_condition_number_and_noise_recorded_and_reproducible(tmp_path, capsys):
    from tfnewton.train import build_parser, config_from_args

    argv = ["--out", str(tmp_path), "--dim", "2", "--n-points", "5", "--n-layers", "1", "--width", "8",
            "--heads", "1", "--batch-size", "4", "--steps", "3", "--eval-prompts", "16", "--threads", "1",
            "--condition-number", "10", "--noise-std", "0.1", "--no-progress", "--no-final-eval"]
    assert main(argv) == 0
    _, meta = load_checkpoint(tmp_path / "model.pt")
    assert meta["train_config"]["condition_number"] == 10.0 and meta["train_config"]["noise_std"] == 0.1
    assert "--condition-number 10" in meta["command"] and "--noise-std 0.1" in meta["command"]
    # The recorded command rebuilds the same recipe.
    import shlex

    again = config_from_args(build_parser().parse_args(shlex.split(meta["command"])[4:]))
    assert dataclasses.asdict(again) == meta["train_config"]
    # The command train() writes itself (no CLI) carries the flags as well.
    r = train(tiny(condition_number=4.0, noise_std=0.2, steps=2), tmp_path / "api", **RUN)
    _, meta2 = load_checkpoint(r["model_path"])
    assert "--condition-number 4.0" in meta2["command"] and "--noise-std 0.2" in meta2["command"]
    assert main(["--out", str(tmp_path / "bad"), "--condition-number", "0.5"]) == 2
    assert "condition_number must be >= 1" in capsys.readouterr().err


@pytest.mark.parametrize("field, value", [("condition_number", 10.0), ("noise_std", 0.1)])
def test_resume_refuses_a_changed_condition_number_or_noise(tmp_path, field, value):
    train(tiny(), tmp_path, stop_after=5, **RUN)
    with pytest.raises(ValueError, match=f"recipe differs.*{field}: saved {TrainConfig().__dict__[field]!r}, now {value!r}"):
        train(tiny(**{field: value}), tmp_path, resume=True, **RUN)
    # ... and the other way round: a run started with the option resumes only with it.
    train(tiny(**{field: value}), tmp_path / "with", stop_after=5, **RUN)
    with pytest.raises(ValueError, match=f"recipe differs.*{field}"):
        train(tiny(), tmp_path / "with", resume=True, **RUN)
    assert train(tiny(**{field: value}), tmp_path / "with", resume=True, stop_after=8, **RUN)["step"] == 8


def test_states_and_checkpoints_without_the_new_fields_still_load(tmp_path):
    """Runs saved before condition_number/noise_std existed resume (as the defaults) and their
    models' metadata rebuilds a TrainConfig."""
    from tfnewton.models.pretrained import atomic_save, save_checkpoint

    train(tiny(), tmp_path, stop_after=5, **RUN)
    path = tmp_path / "train_state.pt"
    state = torch.load(path, weights_only=True)
    for key in ("condition_number", "noise_std"):
        del state["config"][key]
    atomic_save(state, path)
    assert train(tiny(), tmp_path, resume=True, stop_after=7, **RUN)["step"] == 7
    with pytest.raises(ValueError, match="condition_number: saved 1.0, now 3.0"):
        train(tiny(condition_number=3.0), tmp_path, resume=True, **RUN)
    # A model whose metadata predates the fields: error_vs_k reads its recipe as the defaults.
    from tfnewton.models import build_model

    model = build_model("gpt2", 3, n_layers=1, width=8, heads=2, n_points=7)
    old = {k: v for k, v in dataclasses.asdict(tiny()).items() if k not in ("condition_number", "noise_std")}
    save_checkpoint(model, tmp_path / "old.pt", {"task": "linear_regression", "train_config": old})
    loaded, meta = load_checkpoint(tmp_path / "old.pt")
    assert "condition_number" not in meta["train_config"]
    curve = error_vs_k(loaded, num_prompts=50, baselines=False)
    assert len(curve["model"]) == 7


# --------------------------------------------------------------------------- flat parameters and torch.compile


@pytest.mark.parametrize("kind", ["gpt2", "linear", "lstm"])
def test_flatten_parameters_keeps_values_and_accumulates_gradients_in_place(kind):
    from tfnewton.models import build_model
    from tfnewton.train import flatten_parameters

    model = build_model(kind, 3, n_layers=2, width=8, heads=2, n_points=5, dtype=torch.float64, seed=0)
    reference = build_model(kind, 3, n_layers=2, width=8, heads=2, n_points=5, dtype=torch.float64, seed=0)
    before = [p.detach().clone() for p in model.parameters()]
    flat = flatten_parameters(model)
    assert flat.shape == (sum(p.numel() for p in before),) and flat.grad.shape == flat.shape
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p, b)
        assert flat.data_ptr() <= p.data_ptr() < flat.data_ptr() + flat.numel() * flat.element_size()
    X, y = torch.randn(4, 5, 3, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    for _ in range(2):  # the second backward accumulates onto the first
        model(X, y).pow(2).mean().backward()
        reference(X, y).pow(2).mean().backward()
    expected = torch.cat([p.grad.reshape(-1) for p in reference.parameters()])
    torch.testing.assert_close(flat.grad, expected, rtol=1e-12, atol=1e-15)
    for p in model.parameters():  # still views of the flat gradient, not fresh tensors
        assert flat.grad.data_ptr() <= p.grad.data_ptr() < flat.grad.data_ptr() + flat.grad.numel() * 8
    with torch.no_grad():  # an update of the buffer is an update of the model
        flat.add_(1.0)
    assert torch.equal(next(model.parameters()), before[0] + 1.0)


def test_train_step_is_the_loops_step_and_skips_non_finite_updates():
    from tfnewton.models import build_model
    from tfnewton.train import TrainStep, step_time_ms

    cfg = tiny()
    build = lambda: build_model("gpt2", 3, n_layers=2, width=16, heads=2, n_points=7, seed=0)
    flat, per = TrainStep(build(), cfg), TrainStep(build(), cfg, flat=False)
    assert (flat.layout, per.layout) == ("flat", "per_parameter")
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(8, 7, 3, generator=g), torch.randn(8, 7, generator=g)
    for _ in range(3):
        la, lb = flat(X, y), per(X, y)
        assert torch.isfinite(la) and torch.isclose(la, lb, rtol=1e-5)
    for a, b in zip(flat.model.parameters(), per.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    before = [p.detach().clone() for p in flat.model.parameters()]
    bad = X.clone()
    bad[0, 0, 0] = float("inf")
    flat(bad, y)
    assert flat.skipped == 1
    assert all(torch.equal(p, b) for p, b in zip(flat.model.parameters(), before))  # no update
    assert step_time_ms(flat, X, y, repeats=3, warmup=0) > 0
    with pytest.raises(ValueError, match="repeats"):
        step_time_ms(flat, X, y, repeats=0)
    with pytest.raises(TypeError, match="config must be a TrainConfig, got dict"):
        TrainStep(build(), {"lr": 1e-3})


def test_flatten_parameters_refuses_mixed_dtypes():
    from tfnewton.train import flatten_parameters

    mixed = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2).double())
    with pytest.raises(ValueError, match="share one dtype and device"):
        flatten_parameters(mixed)
    with pytest.raises(ValueError, match="no parameters"):
        flatten_parameters(torch.nn.ReLU())


def test_flat_training_matches_per_parameter_training(tmp_path, monkeypatch):
    """The flat buffer changes how many calls clipping and AdamW make, not what they compute:
    without clipping the runs are bit-identical; with it, the norm is summed in another
    order (float32 rounding)."""
    import tfnewton.train as tr

    for clip in (0.0, 1.0):
        cfg = tiny(grad_clip=clip, steps=25)
        flat = train(cfg, tmp_path / f"flat{clip}", **RUN)
        monkeypatch.setattr(tr, "FLAT_ON_CPU", False)
        per_param = train(cfg, tmp_path / f"per{clip}", **RUN)
        monkeypatch.setattr(tr, "FLAT_ON_CPU", True)
        a, b = _params(flat["model_path"]), _params(per_param["model_path"])
        if clip == 0.0:
            _assert_same_params(a, b)
        else:
            for key in a:  # measured: at most 2.3e-7 apart
                torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    # A run saved in one layout resumes in the other (states from before the flat buffer,
    # a CPU run continued on a GPU): the moments are cut or joined, and AdamW takes the
    # same steps, so without clipping the result is bit-identical to an uninterrupted run.
    cfg = tiny(grad_clip=0.0, steps=25)
    reference = _params(train(cfg, tmp_path / "reference", **RUN)["model_path"])
    for first, then in ((False, True), (True, False)):
        out = tmp_path / f"layout{first}"
        monkeypatch.setattr(tr, "FLAT_ON_CPU", first)
        train(cfg, out, stop_after=9, **RUN)
        state = torch.load(out / "train_state.pt", weights_only=True)
        assert state["optimizer_layout"] == ("flat" if first else "per_parameter")
        monkeypatch.setattr(tr, "FLAT_ON_CPU", then)
        _assert_same_params(_params(train(cfg, out, resume=True, **RUN)["model_path"]), reference)
    monkeypatch.setattr(tr, "FLAT_ON_CPU", True)


def test_convert_optimizer_state_round_trips_and_checks():
    from tfnewton.train import convert_optimizer_state

    shapes = [(2, 3), (3,), (1,)]
    per = {"state": {i: {"step": torch.tensor(4.0), "exp_avg": torch.randn(s), "exp_avg_sq": torch.rand(s)}
                     for i, s in enumerate(shapes)},
           "param_groups": [{"lr": 1e-3, "params": [0, 1, 2]}]}
    flat = convert_optimizer_state(per, "per_parameter", "flat", shapes)
    assert flat["param_groups"][0]["params"] == [0] and flat["state"][0]["exp_avg"].shape == (10,)
    back = convert_optimizer_state(flat, "flat", "per_parameter", shapes)
    for i in range(3):
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(back["state"][i][key], per["state"][i][key])
    assert back["param_groups"] == per["param_groups"]
    empty = {"state": {}, "param_groups": [{"lr": 1e-3, "params": [0, 1, 2]}]}
    assert convert_optimizer_state(empty, "per_parameter", "flat", shapes)["state"] == {}
    with pytest.raises(ValueError, match="saved optimizer has 3 parameters, this model 2"):
        convert_optimizer_state(per, "per_parameter", "flat", shapes[:2])
    with pytest.raises(ValueError, match="flat optimizer state has 10 values, this model 9"):
        convert_optimizer_state(flat, "flat", "per_parameter", [(2, 3), (3,)])
    per["state"][1]["step"] = torch.tensor(3.0)
    with pytest.raises(ValueError, match="different numbers of steps"):
        convert_optimizer_state(per, "per_parameter", "flat", shapes)
    with pytest.raises(ValueError, match="layout must be 'flat' or 'per_parameter'"):
        convert_optimizer_state(per, "rows", "flat", shapes)


def test_compiled_training_matches_eager_training(tmp_path):
    """compile=True: the final-length steps run through torch.compile (the curriculum's shorter
    prompts eagerly); the trained weights agree with an eager run's to float32 rounding."""
    import warnings

    cfg = tiny(steps=24, curriculum_every=4)  # n = 3, 5, then 7 (compiled) from step 8
    eager = train(cfg, tmp_path / "eager", **RUN)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback to eager would fail here
        compiled = train(dataclasses.replace(cfg, compile=True), tmp_path / "compiled", **RUN)
    a, b = _params(eager["model_path"]), _params(compiled["model_path"])
    assert any(not torch.equal(a[k], b[k]) for k in a)  # compiled kernels did run
    for key in a:  # measured: at most 2.0e-7 apart after these 24 steps
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=2e-6)
    _, meta = load_checkpoint(compiled["model_path"])
    assert meta["train_config"]["compile"] is True and "--compile" in meta["command"]


def test_compile_failure_falls_back_to_eager_with_a_warning(tmp_path, monkeypatch):
    def broken_compile(module, **kwargs):
        def fail(*args, **kw):
            raise RuntimeError("no C++ compiler found")
        return fail

    monkeypatch.setattr(torch, "compile", broken_compile)
    cfg = tiny(steps=12, curriculum=False)
    with pytest.warns(RuntimeWarning, match="torch.compile failed .*no C\\+\\+ compiler.*training eagerly"):
        fallback = train(dataclasses.replace(cfg, compile=True), tmp_path / "fallback", **RUN)
    eager = train(cfg, tmp_path / "eager", **RUN)
    _assert_same_params(_params(fallback["model_path"]), _params(eager["model_path"]))


def test_compile_must_be_a_bool():
    with pytest.raises(TypeError, match="compile must be a bool, got str"):
        TrainConfig(compile="yes")


# --------------------------------------------------------------------------- precision


def test_precision_validation_and_resolution():
    with pytest.raises(ValueError, match="precision must be one of.*got 'fp16'"):
        TrainConfig(precision="fp16")
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("half", "cpu")
    assert resolve_precision("float32", "cpu") == "float32"
    assert resolve_precision("bfloat16", "cpu") == "bfloat16"
    assert resolve_precision("auto", "cpu") == ("bfloat16" if cpu_has_native_bf16() else "float32")
    assert TrainConfig().precision == "float32"  # the plain default is exact everywhere
    # float32 runs the forward untouched; bf16 really changes the arithmetic of a matmul.
    a, b = torch.randn(8, 16, generator=torch.Generator().manual_seed(0)), torch.randn(16, 4)
    with autocast_context("float32", "cpu"):
        assert (a @ b).dtype == torch.float32
    with autocast_context("bfloat16", "cpu"):
        assert (a @ b).dtype == torch.bfloat16


def test_bf16_training_records_its_precision_and_resumes_bit_identically(tmp_path):
    cfg = tiny(precision="bfloat16")
    full = train(cfg, tmp_path / "full", **RUN)
    part = train(cfg, tmp_path / "part", stop_after=13, **RUN)
    assert part["step"] == 13
    resumed = train(cfg, tmp_path / "part", resume=True, **RUN)
    _assert_same_params(_params(full["model_path"]), _params(resumed["model_path"]))
    model, meta = load_checkpoint(full["model_path"])
    assert meta["precision"] == meta["train_config"]["precision"] == "bfloat16"
    assert "--precision bfloat16" in meta["command"]
    # The weights stay float32, and bf16 gave other weights than float32 would have.
    assert all(p.dtype == torch.float32 for p in model.parameters())
    fp32 = train(tiny(), tmp_path / "fp32", **RUN)
    assert not all(torch.equal(a, b) for a, b in zip(_params(full["model_path"]).values(),
                                                      _params(fp32["model_path"]).values()))


def test_auto_precision_is_recorded_as_what_it_resolved_to(tmp_path, capsys):
    argv = ["--out", str(tmp_path), "--d", "2", "--n-points", "5", "--n-layers", "1", "--width", "8", "--heads", "1",
            "--batch-size", "4", "--steps", "3", "--eval-prompts", "16", "--no-curriculum", "--threads", "1",
            "--no-progress", "--no-final-eval", "--precision", "auto"]
    assert main(argv) == 0
    _, meta = load_checkpoint(tmp_path / "model.pt")
    resolved = resolve_precision("auto", "cpu")
    assert meta["precision"] == meta["train_config"]["precision"] == resolved
    assert meta["command"].endswith(f"--precision {resolved}") and "--precision auto" not in meta["command"]
    # Resuming an "auto" run: the saved recipe holds the resolved value, and still matches.
    assert train(tiny(steps=6, precision="auto"), tmp_path / "r", stop_after=3, **RUN)["step"] == 3
    assert train(tiny(steps=6, precision="auto"), tmp_path / "r", resume=True, **RUN)["finished"]


# --------------------------------------------------------------------------- evaluation


def test_error_vs_k_baselines():
    from tfnewton.models import build_model

    model = build_model("gpt2", 3, n_layers=1, width=8, heads=2, n_points=7)
    curve = error_vs_k(model, num_prompts=300, seed=3)
    assert curve["k"] == list(range(7))
    assert curve["ols"][0] == pytest.approx(curve["gd_tuned"][0])
    assert max(curve["ols"][3:]) < 1e-10  # k >= d: noiseless OLS is exact
    assert curve["ols"][1] > 0.3  # k < d: it cannot be
    assert all(g >= o - 1e-12 for g, o in zip(curve["gd_tuned"], curve["ols"]))
    assert 0.5 < curve["model"][6] < 2.0  # untrained: about as bad as predicting 0


@pytest.mark.parametrize("n, d", [(4, 6), (9, 3), (12, 12)])
def test_ols_predictions_are_least_squares_on_each_prefix(n, d):
    """Against NumPy's minimum-norm lstsq, prompt by prompt and prefix by prefix (float64)."""
    import numpy as np

    from tfnewton.baselines import ols_errors, ols_predictions

    g = torch.Generator().manual_seed(n * d)
    X, y = torch.randn(5, n, d, generator=g, dtype=torch.float64), torch.randn(5, n, generator=g, dtype=torch.float64)
    preds = ols_predictions(X, y)
    expected = np.zeros((5, n))
    for b in range(5):
        for k in range(1, n):
            w = np.linalg.lstsq(X[b, :k].numpy(), y[b, :k].numpy(), rcond=None)[0]
            expected[b, k] = X[b, k].numpy() @ w
    np.testing.assert_allclose(preds.numpy(), expected, rtol=0, atol=1e-9)
    torch.testing.assert_close(ols_errors(X, y), ((preds - y) ** 2).mean(0) / d, rtol=1e-12, atol=0)


def test_newton_logistic_baseline_is_the_regularized_maximum_likelihood_fit():
    """Its logit at position k uses w = argmin mean log(1 + exp(-y x^T w)) + (mu/2)|w|^2 over the
    first k pairs: compared with scikit-learn's fit of the same objective (C = 1 / (mu k))."""
    from sklearn.linear_model import LogisticRegression

    from tfnewton.baselines import newton_logistic_logits
    from tfnewton.tasks import sample_logistic_regression

    t = sample_logistic_regression(4, 12, 5, condition_number=(1.0, 10.0, 50.0), dtype=torch.float64,
                                   generator=torch.Generator().manual_seed(3))
    mu = 0.01
    logits = newton_logistic_logits(t.X, t.y, mu=mu)
    assert logits.shape == (4, 12) and torch.equal(logits[:, 0], torch.zeros(4, dtype=torch.float64))
    compared = 0
    for b in range(4):
        for k in (3, 7, 11):
            labels = t.y[b, :k].numpy()
            if len(set(labels)) < 2:  # scikit-learn needs both classes
                continue
            fit = LogisticRegression(C=1 / (mu * k), fit_intercept=False, solver="newton-cg", tol=1e-12,
                                     max_iter=10_000).fit(t.X[b, :k].numpy(), labels)
            expected = float(t.X[b, k].numpy() @ fit.coef_[0])
            assert logits[b, k].item() == pytest.approx(expected, abs=1e-9)  # measured: 6e-12
            compared += 1
    assert compared >= 10


# --------------------------------------------------------------------------- command line and DDP


def test_cli_writes_model_and_records_the_command(tmp_path, capsys):
    argv = ["--out", str(tmp_path), "--d", "2", "--n-points", "5", "--n-layers", "1", "--width", "8", "--heads", "1",
            "--batch-size", "4", "--steps", "4", "--eval-prompts", "16", "--no-curriculum", "--threads", "1",
            "--no-progress", "--no-final-eval"]
    assert main(argv) == 0
    assert "done: 4 steps" in capsys.readouterr().out
    _, meta = load_checkpoint(tmp_path / "model.pt")
    assert meta["command"].startswith("python -m tfnewton train --out ")
    assert "--threads" not in meta["command"] and "--no-curriculum" in meta["command"]
    assert meta["train_config"]["curriculum"] is False
    assert main(["--out", str(tmp_path), "--lr", "-1"]) == 2
    assert "lr must be > 0" in capsys.readouterr().err


def test_reproducible_argv_drops_runtime_flags():
    argv = ["--recipe", "gpt2_linreg_d5", "--out", "r", "--resume", "--threads", "1", "--eval-every=10",
            "--stop-after", "5", "--steps", "9"]
    assert _reproducible_argv(argv) == ["--recipe", "gpt2_linreg_d5", "--out", "r", "--steps", "9"]


def test_recipe_flag_and_override(tmp_path):
    from tfnewton.train import build_parser, config_from_args

    args = build_parser().parse_args(["--recipe", "gpt2_linreg_d20_fu", "--out", "x", "--steps", "10"])
    cfg = config_from_args(args)
    assert (cfg.d, cfg.n_points, cfg.n_layers, cfg.width, cfg.heads, cfg.steps) == (20, 41, 12, 256, 8, 10)


@pytest.mark.slow
def test_ddp_on_cpu_with_gloo_two_processes(tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "tfnewton.train", "--out", str(out), "--dim", "2", "--n-points", "5", "--n-layers", "1",
           "--width", "8", "--heads", "1", "--batch-size", "8", "--steps", "12", "--eval-prompts", "32",
           "--d-start", "1", "--n-start", "3", "--curriculum-every", "4", "--threads", "1",
           "--ckpt-every", "5", "--no-progress", "--no-final-eval", "--compile"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "under torchrun the step runs eagerly" in res.stderr  # compile is single-process
    _, meta = load_checkpoint(out / "model.pt")
    assert meta["world_size"] == 2 and meta["ranks_in_sync"] is True
    assert meta["command"].startswith("torchrun --nproc_per_node 2 -m tfnewton train")
    state = torch.load(out / "train_state.pt", weights_only=True)
    assert len(state["generators"]) == 2 and not torch.equal(state["generators"][0], state["generators"][1])


@pytest.mark.cuda
def test_cuda_training_and_resume(tmp_path):
    """The same code on a GPU: generators on the device, bf16 autocast, resume on the device."""
    cfg = tiny(steps=30, precision="auto")
    cuda_run = dict(RUN, threads=None)
    full = train(cfg, tmp_path / "full", device="cuda", **cuda_run)
    train(cfg, tmp_path / "part", device="cuda", stop_after=13, **cuda_run)
    resumed = train(cfg, tmp_path / "part", device="cuda", resume=True, **cuda_run)
    model, meta = load_checkpoint(resumed["model_path"], device="cuda")
    assert meta["device"] == "cuda" and next(model.parameters()).is_cuda
    assert meta["precision"] == ("bfloat16" if torch.cuda.is_bf16_supported() else "float32")
    X = torch.randn(4, 7, 3, device="cuda")
    assert model(X, torch.randn(4, 7, device="cuda")).is_cuda
    # GPU kernels (atomics in backward) need not be bit-reproducible: close, not equal
    a, b = _params(full["model_path"]), _params(resumed["model_path"])
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- the loss over determined positions


def test_loss_start_switches_to_the_curriculums_dimension():
    from tfnewton.train import loss_start

    config = TrainConfig(d=5, n_points=11, loss_positions="determined", loss_switch_step=1000,
                         curriculum_every=500)
    assert [loss_start(s, config) for s in (0, 999)] == [0, 0]
    assert [loss_start(s, config) for s in (1000, 1499, 1500, 10_000)] == [4, 4, 5, 5]
    assert all(loss_start(s, TrainConfig()) == 0 for s in (0, 10**6))


def test_determined_loss_counts_the_positions_from_loss_from():
    """forward_backward(loss_from=k): the loss and gradient of the squared error over
    positions k, ..., n - 1 only (computed here by hand on a copy of the model)."""
    from tfnewton.models import build_model
    from tfnewton.train import TrainStep

    config = TrainConfig(d=3, n_points=7, n_layers=1, width=8, heads=2, loss_positions="determined")
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(4, 7, 3, generator=g), torch.randn(4, 7, generator=g)
    for k in (0, 3, 6):
        model = build_model("gpt2", 3, n_layers=1, width=8, heads=2, n_points=7, seed=0)
        reference = build_model("gpt2", 3, n_layers=1, width=8, heads=2, n_points=7, seed=0)
        loss = TrainStep(model, config, flat=False).forward_backward(X, y, loss_from=k)
        expected = (reference(X, y)[:, k:] - y[:, k:]).pow(2).mean()
        expected.backward()
        assert torch.allclose(loss, expected, rtol=1e-6, atol=0)
        for p, q in zip(model.parameters(), reference.parameters()):
            assert torch.allclose(p.grad, q.grad, rtol=1e-5, atol=1e-8)
    full = TrainStep(build_model("gpt2", 3, n_layers=1, width=8, heads=2, n_points=7, seed=0), config,
                     flat=False).forward_backward(X, y, loss_from=0)
    assert not torch.allclose(full, loss)  # the positions before k did count at loss_from = 0


def test_determined_loss_is_for_linear_regression_and_known_values():
    with pytest.raises(ValueError, match="loss_positions='determined' needs task='linear_regression'"):
        TrainConfig(task="logistic_regression", loss_positions="determined")
    with pytest.raises(ValueError, match="loss_positions must be one of"):
        TrainConfig(loss_positions="late")
    with pytest.raises(ValueError, match="loss_switch_step"):
        TrainConfig(loss_positions="determined", loss_switch_step=-1)
    from tfnewton.train import config_to_argv

    argv = config_to_argv(TrainConfig(loss_positions="determined", loss_switch_step=250))
    assert argv == ["--loss-positions", "determined", "--loss-switch-step", "250"]


def test_mlp_ratio_sets_the_gpt2_mlp_width_and_is_gpt2_only(tmp_path):
    from tfnewton.models import build_model

    run = train(tiny(mlp_ratio=2, steps=2), tmp_path, progress=False, final_eval=False, threads=1)
    model, meta = load_checkpoint(run["model_path"])
    assert meta["train_config"]["mlp_ratio"] == 2
    assert model.blocks[0].mlp.c_fc.out_features == 2 * 16
    with pytest.raises(ValueError, match="mlp_ratio is an option of the 'gpt2' model only"):
        build_model("lstm", 3, mlp_ratio=2)
    with pytest.raises(ValueError, match="mlp_ratio"):
        TrainConfig(mlp_ratio=0)
