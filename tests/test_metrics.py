"""tfnewton.metrics: Fu et al.'s similarities, per-layer read-outs and best-matching steps."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from probe_models import AlgorithmOracle

from tfnewton import algorithms, capture, metrics, tasks
from tfnewton.constructions import newton_regression_transformer
from tfnewton.models import build_model


pytestmark = pytest.mark.usefixtures("one_thread")


def _task(B, n, d, seed=0, dtype=torch.float64):
    return tasks.sample_linear_regression(B, n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _numpy_similarity_of_errors(a, b, y):
    ra, rb = a - y, b - y
    cos = [float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v))) for u, v in zip(ra, rb)]
    return float(np.mean(cos))


@settings(max_examples=10, deadline=None)
@given(B=st.integers(1, 6), n=st.integers(2, 9), seed=st.integers(0, 1000))
def test_similarity_of_errors_matches_a_numpy_loop(B, n, seed):
    g = np.random.default_rng(seed)
    a, b, y = g.normal(size=(B, n)), g.normal(size=(B, n)), g.normal(size=(B, n))
    ours = metrics.similarity_of_errors(torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(y))
    assert abs(float(ours) - _numpy_similarity_of_errors(a, b, y)) < 1e-12


def test_similarity_of_errors_extremes_and_broadcasting():
    y = torch.randn(4, 6, dtype=torch.float64)
    r = torch.randn(4, 6, dtype=torch.float64)
    assert float(metrics.similarity_of_errors(y + r, y + 2 * r, y)) == pytest.approx(1.0, abs=1e-12)
    assert float(metrics.similarity_of_errors(y + r, y - r, y)) == pytest.approx(-1.0, abs=1e-12)
    layers, steps = torch.randn(3, 4, 6, dtype=torch.float64), torch.randn(5, 4, 6, dtype=torch.float64)
    table = metrics.similarity_of_errors(layers[:, None], steps[None], y)
    assert table.shape == (3, 5)
    assert float(table[1, 2]) == pytest.approx(float(metrics.similarity_of_errors(layers[1], steps[2], y)), abs=1e-12)
    assert metrics.similarity_of_errors(layers, steps[:3], y, reduction="none").shape == (3, 4)
    with pytest.raises(ValueError, match="pred_b must have shape"):
        metrics.similarity_of_errors(layers, steps[..., :5], y)
    with pytest.raises(ValueError, match="reduction"):
        metrics.similarity_of_errors(layers, steps[:3], y, reduction="sum")


def test_induced_weights_recover_a_linear_predictor_and_similarity_ignores_scale():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 10, 4, generator=g, dtype=torch.float64)
    w = torch.randn(2, 3, 4, generator=g, dtype=torch.float64)  # two "layers"
    preds = torch.einsum("lbd,bmd->lbm", w, x)
    torch.testing.assert_close(metrics.induced_weights(x, preds), w, rtol=1e-10, atol=1e-12)
    sim = metrics.similarity_of_induced_weights(preds, 2.5 * preds, x)
    torch.testing.assert_close(sim, torch.ones(2, dtype=torch.float64))
    other = metrics.similarity_of_induced_weights(preds[0], -preds[0], x)
    assert float(other) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="preds must have shape"):
        metrics.induced_weights(x, preds[..., :9])


def test_normalized_error_and_best_matching():
    y = torch.zeros(4, 3, dtype=torch.float64)
    pred = torch.full((2, 4, 3), 2.0, dtype=torch.float64)
    torch.testing.assert_close(metrics.normalized_error(pred, y, 4), torch.ones(2, 3, dtype=torch.float64))
    sim = torch.tensor([[0.1, 0.9, 0.3], [0.5, 0.2, 0.8]])
    assert metrics.best_matching(sim, [1, 2, 4]) == [(2, pytest.approx(0.9)), (4, pytest.approx(0.8))]
    with pytest.raises(ValueError, match="candidates"):
        metrics.best_matching(sim, [1, 2])


def test_match_algorithm_finds_the_oracles_steps_by_errors_and_by_induced_weights():
    oracle = AlgorithmOracle(3, layer_steps=[0, 1, 2, 3])
    task = _task(300, 9, 3)
    readouts = metrics.layer_readouts(oracle, task)
    assert readouts.predictions.shape == (5, 75, 9)
    # the last layer's read-out (fit to y) follows the oracle's own output (slot p)
    a, b = readouts.predictions[-1].flatten(), readouts.model_predictions.flatten()
    assert float(torch.corrcoef(torch.stack([a, b]))[0, 1]) > 0.95
    table = metrics.match_algorithm(oracle, task, "newton", 5, readouts=readouts)
    assert table.similarity.shape == (5, 6)
    assert table.best_steps()[1:] == [0, 1, 2, 3]
    assert float(table.similarity[4, 3]) > 0.95  # a read-out fit to y, not the oracle's slot itself
    assert table.model_similarity.shape == (6,) and float(table.model_similarity[3]) > 0.999999
    weights = metrics.match_algorithm(oracle, task, "newton", 5, metric="induced_weights", readouts=readouts)
    assert weights.best_steps()[1:] == [0, 1, 2, 3]
    assert float(weights.similarity[4, 3]) > 0.95
    assert float(weights.model_similarity[3]) > 0.999999
    assert "best newton step" in weights.summary() and len(weights.rows()) == 30


def test_match_algorithm_for_online_gd_and_a_gd_step_grid():
    oracle = AlgorithmOracle(2, layer_steps=[1, 4, 16], algorithm=algorithms.gradient_descent_least_squares)
    task = _task(240, 7, 2)
    readouts = metrics.layer_readouts(oracle, task)
    gd = metrics.match_algorithm(oracle, task, "gd", [1, 2, 4, 8, 16, 32], readouts=readouts)
    assert gd.best_steps()[1:] == [1, 4, 16]
    online = metrics.match_algorithm(oracle, task, "online_gd", readouts=readouts)
    assert online.similarity.shape == (4, 1) and online.steps == [0]


def test_layer_readouts_refuse_constructions_and_too_few_prompts():
    task = _task(50, 8, 3)
    with pytest.raises(TypeError, match="forward\\(X, y\\) -> \\(B, n\\)"):
        metrics.layer_readouts(newton_regression_transformer(3, 1), task)
    model = build_model("gpt2", 3, n_points=8, n_layers=1, width=64, heads=2, seed=0)
    with pytest.raises(ValueError, match="too few probe problems"):
        metrics.layer_readouts(model, _task(8, 8, 3, dtype=torch.float32))
    with pytest.raises(ValueError, match="metric"):
        metrics.match_algorithm(model, task, metric="r2")


def test_layer_readouts_of_a_trained_model_shape():
    model = build_model("gpt2", 3, n_points=8, n_layers=2, width=16, heads=2, seed=0)
    task = _task(120, 8, 3, dtype=torch.float32)
    r = metrics.layer_readouts(model, task)
    assert r.predictions.shape == (3, 30, 8) and r.errors().shape == (3, 8)
    assert r.layer_names[-1] == "blocks.1.resid_post"
    # probes are ridge fits of y at x tokens: the prediction at layer 0 must be finite
    assert bool(torch.isfinite(r.predictions).all())
    assert capture.query_position(model, 7) == 14
