"""Issue 17's thesis: the ceilings' identities, the goal verdict, the Table-1 hypotheses, the
benchmark's --smoke, the chapter's exercises and its model check."""

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tfnewton.algorithms import gradient_descent_least_squares, iterates, prefix_predictions
from tfnewton.exercises import (
    ExerciseError,
    check_fraction_of_the_way,
    check_newton_spectral_filter,
    check_similarity_from_position,
)
from tfnewton.metrics import similarity_of_errors, similarity_of_induced_weights
from tfnewton.separation import (
    GD_VARIANTS,
    best_step_growth,
    climbing_layers,
    closest_to_table1,
    gd_filter,
    gd_step_sizes,
    goal_verdict,
    induced_weights_ceiling,
    load_trained_model,
    model_table1,
    newton_filter,
    newton_gd_gap,
    prefix_spectra,
    probe_r2_ceiling,
    separation_ceiling,
    table1_hypotheses,
)
from tfnewton.tasks import sample_linear_regression

from benchmark_scripts import load_benchmark

GD_STEPS = (1, 2, 4, 8, 16, 32, 64)


def _task(seed, B=40, n=9, d=3, kappa=1.0):
    return sample_linear_regression(B, n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64,
                                    condition_number=kappa)


# --------------------------------------------------------------------------- spectral filters = the iterations


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), d=st.integers(2, 6), extra=st.integers(-1, 6),
       kappa=st.sampled_from([1.0, 10.0, 100.0]))
def test_spectral_filters_reproduce_newton_and_gd_to_1e9(seed, d, extra, kappa):
    task = _task(seed, B=16, n=max(3, d + extra), d=d, kappa=kappa)
    spectra = prefix_spectra(task.X, task.y)
    lam = spectra.eigenvalues
    newton = prefix_predictions("newton", task.X, task.y, 7)[[0, 3, 7]]
    got = spectra.predict(newton_filter(lam, [0, 3, 7]))
    assert torch.allclose(got, newton, rtol=1e-9, atol=1e-9 * float(task.y.abs().max()))
    lr = gd_step_sizes(task.X)[2]
    for step_size, gd in ((lr, prefix_predictions("gd", task.X, task.y, 20, lr=lr)),
                          ("per_problem", prefix_predictions("gd", task.X, task.y, 20))):
        got = spectra.predict(gd_filter(lam, [1, 5, 20], step_size))
        assert torch.allclose(got, gd[[1, 5, 20]], rtol=1e-9, atol=1e-9 * float(task.y.abs().max()))
    ols = spectra.predict(torch.ones_like(lam))
    assert torch.allclose(ols, prefix_predictions("ols", task.X, task.y, 0)[0], atol=1e-8)


def test_fixed_step_on_the_summed_loss_is_the_library_gd_with_lr_times_i():
    task = _task(5, n=8, d=3)
    eta, steps = 0.01, 30
    spectra = prefix_spectra(task.X, task.y)
    got = spectra.predict(gd_filter(spectra.eigenvalues, [steps], eta, loss="sum"))[0]
    for i in range(1, 8):  # the mean loss's step is η·i for a prefix of i pairs
        w = gradient_descent_least_squares(task.X[:, :i], task.y[:, :i], steps, lr=eta * i)[-1]
        assert torch.allclose(got[:, i], (w * task.X[:, i]).sum(-1), atol=1e-10)


def test_normalized_online_gd_fits_each_new_pair():
    """Fu et al.'s online GD (step 1/‖x_i‖²), as the library's online GD with ``normalized=True``."""
    from tfnewton.algorithms import prefix_predictions

    task = _task(6, n=6, d=4)
    pred = prefix_predictions("online_gd", task.X, task.y, 0, normalized=True)[0]
    assert torch.equal(pred[:, 0], torch.zeros(40, dtype=torch.float64))
    # after the update on pair i, w fits it: run one more step by hand
    w = torch.zeros(40, 4, dtype=torch.float64)
    for i in range(6):
        x = task.X[:, i]
        assert torch.allclose(pred[:, i], (x * w).sum(-1), atol=1e-12)
        w = w + ((task.y[:, i] - (x * w).sum(-1)) / (x * x).sum(-1))[:, None] * x
        assert torch.allclose((x * w).sum(-1), task.y[:, i], atol=1e-10)


# --------------------------------------------------------------------------- the ceilings' identities


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10_000), kappa=st.sampled_from([1.0, 100.0]),
       protocol=st.sampled_from(["global", "per_problem"]))
def test_every_ceiling_is_one_minus_gds_best_similarity_to_exact_newton(seed, kappa, protocol):
    task = _task(seed, n=10, d=4, kappa=kappa)
    for fn in (separation_ceiling, induced_weights_ceiling, probe_r2_ceiling):
        table = fn(task.X, task.y, [1, 4], gd_protocol=protocol, gd_steps=GD_STEPS)
        assert torch.allclose(table.newton_similarity, torch.ones(2, dtype=torch.float64), atol=1e-12)
        assert torch.allclose(table.gap, 1 - table.gd_similarity, atol=1e-12)
        assert bool((table.gap > 1e-6).all()), fn.__name__  # GD never reproduces Newton's step


def test_induced_weights_ceiling_is_the_metrics_similarity_of_the_weights():
    task = _task(7, n=10, d=3)
    c = 6
    wn = iterates("newton", task.X[:, :c], task.y[:, :c], 2)[2]
    best = 0.0
    x_probe = torch.randn(40, 8, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for lr in gd_step_sizes(task.X):
        W = iterates("gd", task.X[:, :c], task.y[:, :c], 64, lr=lr)[list(GD_STEPS)]
        preds = torch.einsum("sbd,bmd->sbm", W, x_probe)
        pn = torch.einsum("bd,bmd->bm", wn, x_probe)
        best = max(best, float(similarity_of_induced_weights(pn[None], preds, x_probe).max()))
    table = induced_weights_ceiling(task.X, task.y, [2], context_sizes=[c], gd_steps=GD_STEPS)
    assert float(table.gd_similarity[0]) == pytest.approx(best, abs=1e-10)


def test_a_gd_model_has_a_negative_gap_under_every_protocol():
    task = _task(8)
    lr = gd_step_sizes(task.X)[1]
    eta = 0.05  # on the summed loss: the library's mean-loss step η·i on a prefix of i pairs
    fixed_model = torch.zeros(2, 40, 9, dtype=torch.float64)
    for i in range(1, 9):
        W = gradient_descent_least_squares(task.X[:, :i], task.y[:, :i], 16, lr=eta * i)[[4, 16]]
        fixed_model[:, :, i] = (W * task.X[:, i]).sum(-1)
    models = {"global": (prefix_predictions("gd", task.X, task.y, 16, lr=lr)[[4, 16]], {}),
              "per_problem": (prefix_predictions("gd", task.X, task.y, 16)[[4, 16]], {}),
              "fixed": (fixed_model, {"gd_lr": eta})}
    for protocol, (gd_model, options) in models.items():
        table = newton_gd_gap(gd_model, task.X, task.y, newton_steps=range(0, 12), gd_protocol=protocol,
                              gd_steps=GD_STEPS, **options)
        assert table.gd_step == [4, 16], protocol
        assert torch.allclose(table.gd_similarity, torch.ones(2, dtype=torch.float64), atol=1e-12)
        assert bool((table.gap < 0).all()), protocol
    assert table.gd_lr == [eta, eta]


# --------------------------------------------------------------------------- Table 1's hypotheses


def test_table1_hypotheses_cover_every_protocol_and_capping_gd_never_helps_it():
    task = _task(9, B=60, n=9, d=4)
    rows = table1_hypotheses(task.X, task.y, stand_in_steps=(21,), newton_steps=range(0, 24))
    keys = {(r["stand_in"], r["positions"], r["gd"]) for r in rows}
    assert len(keys) == len(rows) == 2 * 5 * len(GD_VARIANTS)
    by = {(r["stand_in"], r["positions"], r["gd"]): r for r in rows}
    for (stand_in, positions, gd), row in by.items():
        assert row["gap"] == pytest.approx(row["newton"] - row["gd_similarity"])
        if gd == "fixed η = 0.01 (summed loss), ≤ 64 steps":  # a subset of the ≤ 4096 search
            full = by[(stand_in, positions, "fixed η = 0.01 (summed loss), ≤ 4096 steps (Fu et al.'s code)")]
            assert row["gd_similarity"] <= full["gd_similarity"] + 1e-12
        if stand_in.startswith("Newton step 21") and positions != "k ≥ d only":
            assert row["newton"] == pytest.approx(1.0, abs=1e-9) and row["newton_step"] == 21
    best = closest_to_table1(rows)
    assert best["distance"] == pytest.approx(min(
        ((r["newton"] - 0.991) ** 2 + (r["gd_similarity"] - 0.957) ** 2 + (r["online_gd"] - 0.806) ** 2) ** 0.5
        for r in rows))


def test_model_table1_of_exact_least_squares_and_bad_names():
    task = _task(10, n=9, d=4)
    ols = prefix_predictions("ols", task.X, task.y, 0)[0]
    row = model_table1(ols, task.X, task.y)
    assert row["newton"] > 0.95 and row["positions"] == "1 … n−1 (ours)"
    with pytest.raises(ValueError, match="positions must be one of"):
        model_table1(ols, task.X, task.y, positions="all of them")
    with pytest.raises(ValueError, match="gd must be one of"):
        model_table1(ols, task.X, task.y, gd="adam")


# --------------------------------------------------------------------------- the goal's verdict

PASSING = dict(layer_error=[1.0, 0.95, 0.8, 0.5, 0.3, 0.12, 0.1],  # climbing: layers 2, 3, 4
               gap=[0, 0, 0.04, 0.04, 0.02, 0, 0], ceiling=[0.05] * 7,
               newton_step=[0, 0, 2, 4, 6, 12, 20], gd_step=[1, 1, 8, 16, 64, 1024, 4096])


def _verdict(**changes):
    args = {k: list(v) for k, v in PASSING.items()}
    for key, (index, value) in changes.items():
        args[key][index] = value
    return goal_verdict(**args)


def test_goal_verdict_passes_hand_made_layers():
    verdict = _verdict()
    assert verdict["climbing"] == [2, 3, 4] and verdict["passed"]
    c = verdict["conditions"]
    assert c["climbing_layers"]["value"] == 3
    assert c["gap_at_each"]["value"] == pytest.approx(0.02)
    assert c["mean_gap_vs_ceiling"]["value"] == pytest.approx(0.1 / 3)
    assert c["mean_gap_vs_ceiling"]["mean_ceiling"] == pytest.approx(0.05)
    assert c["gd_step_ratio"]["value"] == pytest.approx(64 / 6) and c["gd_step_ratio"]["layer"] == 4


@pytest.mark.parametrize("changes, failing", [
    ({"layer_error": (3, 0.12)}, "climbing_layers"),  # layer 3 is done climbing: 2 layers left
    ({"gap": (4, 0.009)}, "gap_at_each"),
    ({"ceiling": (2, 0.5)}, "mean_gap_vs_ceiling"),
    ({"gd_step": (4, 32)}, "gd_step_ratio"),
])
def test_goal_verdict_fails_each_condition_alone(changes, failing):
    verdict = _verdict(**changes)
    assert not verdict["passed"]
    assert [k for k, c in verdict["conditions"].items() if not c["passed"]] == [failing]


def test_no_climbing_layer_fails_everything_and_bad_lengths_are_named():
    verdict = goal_verdict([1.0, 1.0, 1.0], [0.1] * 3, [0.1] * 3, [1] * 3, [100] * 3)
    assert verdict["climbing"] == [] and not any(c["passed"] for c in verdict["conditions"].values())
    with pytest.raises(ValueError, match=r"gap must have one entry per layer \(7, like layer_error\), got 6"):
        goal_verdict(PASSING["layer_error"], PASSING["gap"][:6], PASSING["ceiling"], PASSING["newton_step"],
                     PASSING["gd_step"])
    with pytest.raises(ValueError, match="band must be two fractions"):
        climbing_layers([1.0, 0.5, 0.1], band=(0.9, 0.1))


def test_best_step_growth():
    growth = best_step_growth([2, 3, 4], [2, 5, 8], [8, 32, 128])
    assert growth["newton_slope"] == pytest.approx(3.0) and growth["newton_r2"] == pytest.approx(1.0)
    assert growth["gd_log2_slope"] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="same length"):
        best_step_growth([1, 2], [1], [1, 2])


# --------------------------------------------------------------------------- the chapter's model check


def test_a_checkpoint_for_another_setting_is_refused_by_name():
    with pytest.raises(ValueError, match=r"trained on inputs of condition number 1.0, but these prompts have "
                                         r"condition number 100"):
        load_trained_model("gpt2_linreg_d5", d=5, condition_number=100.0)
    with pytest.raises(ValueError, match=r"trained for d = 5, but these prompts have d = 10"):
        load_trained_model("gpt2_linreg_d5_kappa100", d=10, condition_number=100.0)
    model, info = load_trained_model("gpt2_linreg_d5_kappa100", d=5, condition_number=100.0)
    assert len(info["sha256"]) == 64 and info["metadata"]["train_config"]["condition_number"] == 100.0


# --------------------------------------------------------------------------- exercises


@pytest.mark.parametrize("checker, right, wrong", [
    (check_newton_spectral_filter, lambda lam, a, k: 1 - (1 - a[:, None] * lam ** 2) ** (2 ** k),
     [(lambda lam, a, k: 1 - (1 - a[:, None] * lam) ** (2 ** k), "polynomial in λ²"),
      (lambda lam, a, k: 1 - (1 - a[:, None] * lam ** 2) ** max(k, 1), r"2\^k")]),
    (check_fraction_of_the_way, lambda e: (e - e[:, -1:]) / (e[:, :1] - e[:, -1:]),
     [(lambda e: (e[:, :1] - e) / (e[:, :1] - e[:, -1:]), "from the embedding"),
      (lambda e: e / e[:, :1], "not subtracted")]),
    (check_similarity_from_position,
     lambda a, b, y, f: similarity_of_errors(a[:, f:], b[:, f:], y[:, f:], reduction="none"),
     [(lambda a, b, y, f: similarity_of_errors(a, b, y, reduction="none"), "every position is kept"),
      (lambda a, b, y, f: similarity_of_errors(a[:, f - 1:], b[:, f - 1:], y[:, f - 1:], reduction="none"),
       "one position too many")]),
])
def test_thesis_checkers_accept_the_answer_and_name_wrong_ones(checker, right, wrong, capsys):
    checker(right)
    assert "correct" in capsys.readouterr().out
    for fn, words in wrong:
        with pytest.raises(ExerciseError, match=words):
            checker(fn)


# --------------------------------------------------------------------------- the benchmark


@pytest.mark.slow
def test_thesis_benchmark_smoke_writes_every_section(tmp_path):
    bench = load_benchmark("thesis")
    assert bench.main(["--smoke"]) == 0  # writes nothing
    out = tmp_path / "thesis.json"
    assert bench.main(["--smoke", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    for key in ("command", "date", "machine", "checkpoint", "ceilings", "layers", "table1_hypotheses", "table1_models"):
        assert key in record
    assert len(record["checkpoint"]["sha256"]) == 64
    assert {(c["d"], c["condition_number"]) for c in record["ceilings"]} == {(5, 1.0), (5, 100.0), (20, 1.0)}
    assert set(record["layers"]["verdict"]["conditions"]) == {"climbing_layers", "gap_at_each",
                                                              "mean_gap_vs_ceiling", "gd_step_ratio"}
    first = out.read_text()
    assert bench.main(["--smoke", "--out", str(out), "--resume"]) == 0  # nothing left to do
    assert json.loads(first)["ceilings"] == json.loads(out.read_text())["ceilings"]


def test_normalized_online_gd_refuses_a_non_bool():
    from tfnewton.algorithms import online_gradient_descent

    task = _task(2, n=4, d=3)
    with pytest.raises(TypeError, match="normalized must be a bool, got int"):
        online_gradient_descent(task.X, task.y, normalized=1)
