"""tfnewton.architectures: the sweeps' readers, the per-layer comparison's guard, the
prompt-set comparison and the Krylov weights of the no-LayerNorm linear-attention model."""

import json
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tfnewton import architectures as A
from tfnewton.baselines import tuned_gd_errors
from tfnewton.tasks import sample_linear_regression

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- the sweeps


def _rows(points, group="d", x="width"):
    return [{group: g, x: w, "error": e} for g, w, e in points]


def test_width_sweep_groups_by_d_and_sorts_by_width():
    rows = _rows([(10, 64, 0.02), (5, 16, 0.3), (5, 8, 0.9), (10, 8, 1.0), (5, 32, 0.01)])
    assert A.width_sweep(rows) == {5: ([8, 16, 32], [0.9, 0.3, 0.01]), 10: ([8, 64], [1.0, 0.02])}


def test_depth_sweep_groups_by_architecture():
    rows = _rows([("plain", 4, 0.2), ("residual", 1, 0.13), ("plain", 1, 0.14)], "architecture", "depth")
    assert A.depth_sweep(rows) == {"plain": ([1, 4], [0.14, 0.2]), "residual": ([1], [0.13])}


@pytest.mark.parametrize("rows, words", [
    ([{"d": 5, "width": 8}], ["runs[0]", "'error'"]),
    (_rows([(5, 8, 0.1), (5, 8, 0.2)]), ["two rows", "width = 8"]),
    (_rows([(5, 0, 0.1)]), ["width", ">= 1"]),
    (_rows([(5, 8, float("nan"))]), ["finite"]),
    ({"runs": []}, ["list of result rows"]),
])
def test_sweep_rows_that_cannot_be_read_are_refused(rows, words):
    with pytest.raises((ValueError, TypeError)) as err:
        A.width_sweep(rows)
    assert all(w in str(err.value) for w in words), str(err.value)


def test_smallest_adequate_width_ignores_a_dip_between_failures():
    # 16 is within 2x of the widest (0.01) but 32 is not: only 64 on counts.
    assert A.smallest_adequate_width([8, 16, 32, 64, 128], [1.0, 0.015, 0.05, 0.019, 0.01]) == 64
    assert A.smallest_adequate_width([8, 16, 32], [0.5, 0.02, 0.011]) == 16
    assert A.smallest_adequate_width([8, 16, 32], [0.5, 0.02, 0.011], factor=1.0) == 32
    assert A.smallest_adequate_width([32], [0.3]) == 32


@given(st.lists(st.floats(1e-4, 10.0), min_size=1, max_size=8), st.floats(1.0, 5.0))
def test_smallest_adequate_width_is_the_edge_of_the_adequate_tail(errors, factor):
    widths = [8 * 2**i for i in range(len(errors))]
    w = A.smallest_adequate_width(widths, errors, factor)
    i = widths.index(w)
    bound = factor * errors[-1]
    assert all(e <= bound for e in errors[i:])
    assert i == 0 or errors[i - 1] > bound


@pytest.mark.parametrize("widths, errors, factor, words", [
    ([16, 8], [0.1, 0.2], 2.0, ["strictly increasing"]),
    ([8, 16], [0.1], 2.0, ["one length"]),
    ([8, 16], [0.1, 0.2], 0.5, ["factor", ">= 1"]),
    ([8, 16], [0.1, -0.2], 2.0, ["errors", ">= 0"]),
    ([], [], 2.0, ["non-empty"]),
])
def test_smallest_adequate_width_refuses_bad_input(widths, errors, factor, words):
    with pytest.raises(ValueError) as err:
        A.smallest_adequate_width(widths, errors, factor)
    assert all(w in str(err.value) for w in words), str(err.value)


def test_load_results_reads_runs_and_is_empty_without_the_file(tmp_path):
    (tmp_path / "_toc.yml").write_text("format: jb-book\n")
    assert A.load_results("width_sweep", root=tmp_path) == []
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    rows = _rows([(5, 8, 0.5)])
    (results / "width_sweep.json").write_text(json.dumps({"machine": {}, "runs": rows}))
    assert A.load_results("width_sweep", root=tmp_path) == rows
    (results / "bad.json").write_text(json.dumps([1, 2]))
    with pytest.raises(ValueError, match="'runs' list"):
        A.load_results("bad", root=tmp_path)


# --------------------------------------------------------------------------- a checkpoint's layers


def _task(d=5, n=11, batch=80, kappa=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return sample_linear_regression(batch, n, d, condition_number=kappa, generator=g)


@pytest.mark.parametrize("task, words", [
    (_task(d=3), ["trained for d = 5", "d = 3"]),
    (_task(kappa=10.0), ["condition number 1", "condition number 10"]),
])
def test_match_checkpoint_layers_refuses_a_checkpoint_for_other_prompts(task, words):
    with pytest.raises(ValueError) as err:
        A.match_checkpoint_layers("lstm_linreg_d5", task, online_lr=0.1, gd_steps=[1, 2])
    assert all(w in str(err.value) for w in words), str(err.value)


def test_match_checkpoint_layers_reads_every_layer_against_three_algorithms():
    result = A.match_checkpoint_layers("lstm_linreg_d5", _task(batch=120), online_lr=0.15, gd_steps=[1, 4],
                              newton_steps=4)
    layers = len(result.model.blocks) + 1
    assert set(result.matches) == {"online GD", "gradient descent", "Iterative Newton"}
    assert all(s.shape == (layers,) for s in result.best_similarity().values())
    assert all(-1 <= s <= 1 for s in result.output_similarity().values())
    assert result.errors_at(10).shape == (layers,)
    assert float(result.errors_at(10)[-1]) < float(result.errors_at(10)[0])  # the trained LSTM learned
    with pytest.raises(ValueError, match="k must be < 11"):
        result.errors_at(11)


# --------------------------------------------------------------------------- a model against tuned GD


class _Offset(torch.nn.Module):
    """A 'model' that predicts y plus a known offset per prompt (errors chosen by the test)."""

    def __init__(self, offsets):
        super().__init__()
        self.offsets = torch.nn.Parameter(offsets.double(), requires_grad=False)

    def forward(self, X, y):
        return y + self.offsets[:, None]


def test_compare_on_prompt_sets_counts_sets_and_tunes_gd_like_the_baseline():
    task = _task(batch=600, seed=3)
    offsets = torch.zeros(600, dtype=torch.float64)
    offsets[5] = 1e3  # one prompt of the first set carries a huge error
    result = A.compare_on_prompt_sets(_Offset(offsets), task.X, task.y, k=10, set_size=200)
    model_sets, gd_sets = result.set_means()
    assert model_sets.shape == gd_sets.shape == (3,)
    assert math.isclose(float(model_sets[0]), 1e6 / 5 / 200) and float(model_sets[1:].abs().max()) == 0
    assert result.sets_won() == 2
    assert math.isclose(result.share_of_worst(), 1.0)
    # GD's mean over all prompts is tuned_gd_errors' at k = 10 (the same grid, another code path).
    reference, lr = tuned_gd_errors(task.X, task.y, steps=3)
    assert math.isclose(float(result.gd_errors.mean()), float(reference[10]), rel_tol=1e-9)
    assert math.isclose(result.gd_lr, float(lr[10]))
    summary = result.summary()
    assert summary["sets"] == 3 and summary["model"]["max"] == pytest.approx(1e6 / 5)


@pytest.mark.parametrize("kw, words", [
    (dict(k=11), ["k must be < n = 11"]),
    (dict(k=10, set_size=7), ["multiple of set_size = 7"]),
    (dict(k=0), ["k", ">= 1"]),
])
def test_compare_on_prompt_sets_refuses_bad_arguments(kw, words):
    task = _task(batch=20)
    with pytest.raises(ValueError) as err:
        A.compare_on_prompt_sets(_Offset(torch.zeros(20)), task.X, task.y, **kw)
    assert all(w in str(err.value) for w in words), str(err.value)


# --------------------------------------------------------------------------- the Krylov weights


def _token_sums(X, y, n_terms):
    """The features from the interleaved tokens themselves: at x_k's token, sum over every
    token up to it (x tokens carry (x, 0), y tokens (x, y)) and divide by their count."""
    B, n, d = X.shape
    out = torch.zeros(n_terms, B, n, dtype=X.dtype)
    for b in range(B):
        for k in range(n):
            tokens = [(X[b, j], y[b, j] if t == 1 else 0.0) for j in range(k) for t in (0, 1)]
            tokens.append((X[b, k], 0.0))
            count = len(tokens)
            z = X[b, k]
            for m in range(n_terms):
                out[m, b, k] = sum(yy * torch.dot(x, z) for x, yy in tokens) / count
                z = sum(x * torch.dot(x, z) for x, _ in tokens) / count
    return out


@given(st.integers(1, 4), st.integers(1, 6), st.integers(1, 3), st.integers(0, 2**16))
def test_krylov_weights_compute_the_features_exactly(d, n, n_terms, seed):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(3, n, d, generator=g, dtype=torch.float64)
    y = torch.randn(3, n, generator=g, dtype=torch.float64)
    coefficients = torch.randn(n_terms, generator=g, dtype=torch.float64)
    features = A.krylov_features(X, y, n_terms)
    torch.testing.assert_close(features, _token_sums(X, y, n_terms), rtol=0, atol=1e-12)
    heads = 2
    width = heads * max(d, math.ceil((n_terms * d + n_terms + 1) / heads))
    model = A.krylov_linear_attention(coefficients.tolist(), d=d, n_points=n, width=width, heads=heads)
    with torch.no_grad():
        pred = model(X, y)
    expected = (coefficients[:, None, None] * features).sum(0)
    torch.testing.assert_close(pred, expected, rtol=0, atol=1e-9 * (1 + float(expected.abs().max())))


def test_krylov_coefficients_are_recovered_from_labels_they_generated():
    task = _task(batch=50, seed=4)
    X, y = task.X.double(), task.y.double().clone()
    c = torch.tensor([0.7, -0.3, 0.02], dtype=torch.float64)
    y[:, 10] = (c[:, None] * A.krylov_features(X, y, 3)[:, :, 10]).sum(0)  # f(k=10) reads y_<10 only
    torch.testing.assert_close(A.fit_krylov_coefficients(X, y, 10), c, rtol=0, atol=1e-9)


@pytest.mark.parametrize("kw, words", [
    (dict(coefficients=[1.0, 2.0, 3.0], width=16), ["width must be at least", "19", "got 16"]),
    (dict(coefficients=[1.0], width=8, heads=4), ["width / heads", ">= d = 5"]),
    (dict(coefficients=[]), ["non-empty"]),
    (dict(coefficients=[float("inf")]), ["finite"]),
    (dict(coefficients=[1.0], heads=1), ["heads", ">= 2"]),
])
def test_krylov_weights_refuse_shapes_they_cannot_fill(kw, words):
    kw = {"d": 5, "n_points": 11, **kw}
    with pytest.raises(ValueError) as err:
        A.krylov_linear_attention(**kw)
    assert all(w in str(err.value) for w in words), str(err.value)


def test_fit_krylov_coefficients_refuses_a_position_outside_the_prompts():
    task = _task(batch=10)
    with pytest.raises(ValueError, match="k must be < n = 11"):
        A.fit_krylov_coefficients(task.X, task.y, 11)
