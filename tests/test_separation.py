"""tfnewton.separation: how far apart Newton and GD can be under the similarity of errors."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tfnewton.algorithms import prefix_predictions
from tfnewton.separation import gd_step_sizes, newton_gd_gap, separation_ceiling
from tfnewton.tasks import sample_linear_regression

GD_STEPS = (1, 2, 4, 8, 16, 32)


def _task(seed, B=48, n=8, d=3):
    return sample_linear_regression(B, n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), d=st.integers(2, 4), protocol=st.sampled_from(["global", "per_problem"]))
def test_newton_against_itself_gives_one_minus_best_gd(seed, d, protocol):
    task = _task(seed, n=2 * d + 2, d=d)
    table = separation_ceiling(task.X, task.y, newton_steps=[1, 3], gd_protocol=protocol, gd_steps=GD_STEPS)
    assert table.newton_step == [1, 3]
    assert torch.allclose(table.newton_similarity, torch.ones(2, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(table.gap, 1 - table.gd_similarity, atol=1e-12)
    assert bool((table.gd_similarity < 1 - 1e-6).all())  # GD does not reproduce Newton's iterates
    assert table.labels == ["Newton step 1", "Newton step 3"] and table.num_prompts == task.X.shape[0]


@pytest.mark.parametrize("protocol", ["global", "per_problem"])
def test_a_gd_model_has_a_negative_gap(protocol):
    task = _task(1)
    lr = gd_step_sizes(task.X)[2] if protocol == "global" else None
    gd_model = prefix_predictions("gd", task.X, task.y, 8, lr=lr)[[4, 8]]  # GD's steps 4 and 8
    table = newton_gd_gap(gd_model, task.X, task.y, labels=["gd 4", "gd 8"], newton_steps=range(0, 12),
                          gd_protocol=protocol, gd_steps=GD_STEPS)
    assert table.gd_step == [4, 8]
    assert torch.allclose(table.gd_similarity, torch.ones(2, dtype=torch.float64), atol=1e-12)
    assert bool((table.gap < 0).all())
    if protocol == "global":
        assert table.gd_lr == [lr, lr]
    else:
        assert table.gd_lr == ["1/λ_max", "1/λ_max"]


def test_per_problem_step_sizes_separate_less_than_a_global_one():
    task = sample_linear_regression(256, 11, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64,
                                    condition_number=100.0)
    ceilings = {p: separation_ceiling(task.X, task.y, newton_steps=[3], gd_protocol=p, gd_steps=GD_STEPS).gap
                for p in ("global", "per_problem")}
    assert float(ceilings["per_problem"][0]) < float(ceilings["global"][0])


def test_diverging_step_sizes_are_left_out_not_nan():
    task = _task(2)
    table = separation_ceiling(task.X, task.y, newton_steps=[2], gd_grid=(0.5, 1.0, 50.0), gd_steps=(1, 64, 512))
    assert bool(table.gd_similarity.isfinite().all()) and table.gd_lr[0] < gd_step_sizes(task.X, (50.0,))[0]


def test_renders_as_a_table():
    task = _task(3)
    table = separation_ceiling(task.X, task.y, newton_steps=[1], gd_steps=(1, 2))
    html = table._repr_html_()
    assert "<table" in html and "Newton step 1" in html and "gap" in html
    assert str(table).splitlines()[1].startswith("row | Newton: best similarity")


def test_bad_input_is_named():
    task = _task(4)
    with pytest.raises(ValueError, match=r"preds must have shape \(R, B, n\) = \(R, 48, 8\)"):
        newton_gd_gap(torch.zeros(2, 48, 7, dtype=torch.float64), task.X, task.y)
    with pytest.raises(ValueError, match="gd_protocol must be 'global', 'per_problem' or 'fixed', got 'adaptive'"):
        newton_gd_gap(torch.zeros(1, 48, 8, dtype=torch.float64), task.X, task.y, gd_protocol="adaptive")
    with pytest.raises(ValueError, match="labels must have one entry per row of preds"):
        newton_gd_gap(torch.zeros(2, 48, 8, dtype=torch.float64), task.X, task.y, labels=["a"])
    with pytest.raises(ValueError, match="first_position must be < n = 8"):
        newton_gd_gap(torch.zeros(1, 48, 8, dtype=torch.float64), task.X, task.y, first_position=8)
    with pytest.raises(ValueError, match="newton_steps must not be empty"):
        separation_ceiling(task.X, task.y, newton_steps=[])
