"""Samplers: seeded repeatability, the statistics they promise, validation."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tfnewton import tasks

SAMPLERS = {
    "linear": lambda g, **kw: tasks.sample_linear_regression(3, 7, 4, generator=g, **kw),
    "linear_ill": lambda g, **kw: tasks.sample_linear_regression(3, 7, 4, condition_number=50.0, noise_std=0.1, generator=g, **kw),
    "logistic": lambda g, **kw: tasks.sample_logistic_regression(3, 7, 4, generator=g, **kw),
    "sparse": lambda g, **kw: tasks.sample_sparse_recovery(3, 7, 12, sparsity=2, generator=g, **kw),
    "sparse_garg": lambda g, **kw: tasks.sample_sparse_recovery(
        3, 7, 12, sparsity=2, noise_std=0.2, scaling="garg", correlation=0.5, support_subset=[0, 3, 5], generator=g, **kw
    ),
    "spd": lambda g, **kw: tasks.sample_spd(3, 4, 20.0, generator=g, **kw),
    "matrices": lambda g, **kw: tasks.sample_matrices(3, 4, 20.0, generator=g, **kw),
}


def _tensors(sample):
    if isinstance(sample, torch.Tensor):
        return [sample]
    return [getattr(sample, name) for name in ("X", "y", "w")]


@pytest.mark.parametrize("name", SAMPLERS)
def test_same_seed_same_problems_and_different_seed_different(name):
    a = _tensors(SAMPLERS[name](torch.Generator().manual_seed(7)))
    b = _tensors(SAMPLERS[name](torch.Generator().manual_seed(7)))
    c = _tensors(SAMPLERS[name](torch.Generator().manual_seed(8)))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize("name", SAMPLERS)
def test_float32_is_the_float64_draw_rounded(name):
    s64 = _tensors(SAMPLERS[name](torch.Generator().manual_seed(3), dtype=torch.float64))
    s32 = _tensors(SAMPLERS[name](torch.Generator().manual_seed(3), dtype=torch.float32))
    for x64, x32 in zip(s64, s32):
        assert x32.dtype == torch.float32 and x64.dtype == torch.float64
        assert torch.equal(x64.float(), x32)


@settings(max_examples=25)
@given(st.integers(1, 4), st.integers(2, 10), st.sampled_from([1.0, 2.0, 10.0, 1e3, 1e6]), st.integers(0, 10**6))
def test_spd_and_matrices_have_the_exact_condition_number(B, d, kappa, seed):
    g = torch.Generator().manual_seed(seed)
    A = tasks.sample_spd(B, d, kappa, generator=g, dtype=torch.float64)
    assert torch.allclose(A, A.transpose(1, 2))
    eig = torch.linalg.eigvalsh(A)
    assert (eig > 0).all()
    assert torch.allclose(eig[:, -1] / eig[:, 0], torch.full((B,), kappa, dtype=torch.float64), rtol=1e-6)
    M = tasks.sample_matrices(B, d, kappa, generator=g, dtype=torch.float64)
    assert torch.allclose(torch.linalg.cond(M), torch.full((B,), kappa, dtype=torch.float64), rtol=1e-6)


def test_linear_regression_statistics():
    g = torch.Generator().manual_seed(0)
    t = tasks.sample_linear_regression(4000, 8, 3, generator=g, dtype=torch.float64)
    assert torch.allclose(t.y, (t.X @ t.w.unsqueeze(-1)).squeeze(-1))  # noiseless
    cov = torch.einsum("bni,bnj->ij", t.X, t.X) / (4000 * 8)
    assert torch.allclose(cov, torch.eye(3, dtype=torch.float64), atol=0.03)
    assert abs(t.w.var().item() - 1.0) < 0.05
    noisy = tasks.sample_linear_regression(4000, 8, 3, noise_std=0.5, generator=g, dtype=torch.float64)
    residual = noisy.y - (noisy.X @ noisy.w.unsqueeze(-1)).squeeze(-1)
    assert abs(residual.std().item() - 0.5) < 0.02


def test_ill_conditioned_covariance_per_prompt():
    # Within one prompt (many points), the empirical covariance has condition number κ.
    g = torch.Generator().manual_seed(1)
    t = tasks.sample_linear_regression(3, 20000, 6, condition_number=100.0, generator=g, dtype=torch.float64)
    for b in range(3):
        eig = torch.linalg.eigvalsh(t.X[b].T @ t.X[b] / 20000)
        assert 80 < (eig[-1] / eig[0]).item() < 125
        assert abs(eig.mean().item() - 1.0) < 0.05  # mean eigenvalue normalized to 1


def test_logistic_labels_and_norms():
    g = torch.Generator().manual_seed(2)
    t = tasks.sample_logistic_regression(500, 40, 5, generator=g, dtype=torch.float64)
    assert set(t.y.unique().tolist()) == {-1.0, 1.0}
    assert (t.X.norm(dim=-1) <= 1 + 1e-12).all()
    margins = (t.X @ t.w.unsqueeze(-1)).squeeze(-1)
    agree = (torch.sign(margins) == t.y).double().mean().item()
    assert 0.6 < agree < 0.95  # labels follow the logistic model, not the sign alone


def test_sparse_recovery_support():
    g = torch.Generator().manual_seed(3)
    t = tasks.sample_sparse_recovery(50, 10, 30, sparsity=4, generator=g, dtype=torch.float64)
    assert (t.support.sum(-1) == 4).all()
    assert ((t.w != 0) == t.support).all()
    assert torch.allclose(t.y, (t.X @ t.w.unsqueeze(-1)).squeeze(-1))
    col_norm_sq = (t.X**2).sum(1).mean().item()
    assert abs(col_norm_sq - 1.0) < 0.05


def test_sparse_recovery_default_draws_are_the_documented_recipe():
    # The book's ISTA/FISTA page relies on these draws: support scores, β, X/√n, noise, in order.
    g = torch.Generator().manual_seed(11)
    t = tasks.sample_sparse_recovery(6, 9, 15, sparsity=3, noise_std=0.1, generator=g, dtype=torch.float64)
    g = torch.Generator().manual_seed(11)
    scores = torch.rand((6, 15), generator=g, dtype=torch.float64)
    support = torch.zeros((6, 15), dtype=torch.bool).scatter_(1, scores.argsort(-1)[:, :3], True)
    beta = torch.randn((6, 15), generator=g, dtype=torch.float64) * support
    X = torch.randn((6, 9, 15), generator=g, dtype=torch.float64) / 9**0.5
    y = (X @ beta.unsqueeze(-1)).squeeze(-1) + 0.1 * torch.randn((6, 9), generator=g, dtype=torch.float64)
    assert torch.equal(t.support, support) and torch.equal(t.w, beta)
    assert torch.equal(t.X, X) and torch.equal(t.y, y)


def test_sparse_recovery_garg_scaling():
    g = torch.Generator().manual_seed(4)
    t = tasks.sample_sparse_recovery(2000, 10, 20, sparsity=3, noise_std=0.2, scaling="garg", generator=g, dtype=torch.float64)
    assert abs(t.X.var().item() - 1.0) < 0.02  # x ~ N(0, I_d), not N(0, I/n)
    assert abs(t.w[t.support].var().item() - 1.0) < 0.05
    residual = t.y - (t.X @ t.w.unsqueeze(-1)).squeeze(-1)
    assert abs(residual.std().item() - 0.2) < 0.005
    assert t.scaling == "garg" and t.correlation == 0.0


@pytest.mark.parametrize("scaling, scale", [("garg", 1.0), ("unit_columns", 1 / 12)])
def test_sparse_recovery_correlated_columns_have_the_toeplitz_covariance(scaling, scale):
    g = torch.Generator().manual_seed(5)
    t = tasks.sample_sparse_recovery(3000, 12, 6, sparsity=2, correlation=0.5, scaling=scaling, generator=g, dtype=torch.float64)
    cov = torch.einsum("bni,bnj->ij", t.X, t.X) / (3000 * 12)
    expected = scale * tasks.toeplitz_covariance(6, 0.5)
    assert torch.allclose(cov, expected, atol=0.03 * scale)
    assert abs(cov[0, 1].item() / cov[0, 0].item() - 0.5) < 0.03
    assert abs(cov[0, 2].item() / cov[0, 0].item() - 0.25) < 0.03


def test_toeplitz_covariance():
    S = tasks.toeplitz_covariance(4, 0.3)
    assert S[0, 3].item() == pytest.approx(0.3**3) and S[2, 1].item() == pytest.approx(0.3)
    assert torch.equal(S.diagonal(), torch.ones(4, dtype=torch.float64))
    assert torch.equal(tasks.toeplitz_covariance(3, 0.0), torch.eye(3, dtype=torch.float64))


def test_sparse_recovery_support_subset():
    g = torch.Generator().manual_seed(6)
    subset = [1, 4, 7, 9]
    t = tasks.sample_sparse_recovery(400, 8, 12, sparsity=2, support_subset=subset, generator=g, dtype=torch.float64)
    used = t.support.any(0).nonzero().flatten().tolist()
    assert used == subset  # every coordinate of the subset is used, none outside it
    assert (t.support.sum(-1) == 2).all() and ((t.w != 0) == t.support).all()
    assert t.support_subset == tuple(subset)
    exact = tasks.sample_sparse_recovery(5, 8, 12, sparsity=3, support_subset=torch.tensor([2, 0, 5]), generator=g)
    assert exact.support.nonzero()[:, 1].reshape(5, 3).sort(-1).values.tolist() == [[0, 2, 5]] * 5


def test_sparse_recovery_fixed_measurement_matrix():
    g = torch.Generator().manual_seed(7)
    A = tasks.sample_sparse_recovery(1, 6, 10, scaling="garg", generator=g, dtype=torch.float64).X[0]
    t = tasks.sample_sparse_recovery(5, 7, 10, sparsity=2, noise_std=0.1, scaling="garg",
                                     measurement_matrix=A, generator=g, dtype=torch.float64)
    assert all(torch.equal(t.X[b, :6], A) for b in range(5)) and t.fixed_rows == 6
    assert not torch.equal(t.X[0, 6], t.X[1, 6])  # the query rows are drawn per prompt
    residual = t.y - (t.X @ t.w.unsqueeze(-1)).squeeze(-1)
    assert 0 < residual.abs().max().item() < 1.0
    all_fixed = tasks.sample_sparse_recovery(3, 6, 10, measurement_matrix=A, generator=g)
    assert torch.equal(all_fixed.X[2], A.float()) and torch.equal(all_fixed.X[0], all_fixed.X[1])


def test_task_helpers():
    t = tasks.sample_linear_regression(5, 9, 2, generator=torch.Generator().manual_seed(0))
    Xc, yc, xq, yq = t.context_and_query(4)
    assert Xc.shape == (5, 4, 2) and yc.shape == (5, 4) and xq.shape == (5, 2) and yq.shape == (5,)
    assert torch.equal(xq, t.X[:, 4])
    assert t.context_and_query()[0].shape == (5, 8, 2)
    with pytest.raises(ValueError, match="k must be < n = 9"):
        t.context_and_query(9)
    assert t[1:3].X.shape == (2, 9, 2) and t[0].batch == 1
    assert t.to(dtype=torch.float64).X.dtype == torch.float64
    assert (t.batch, t.n, t.d) == (5, 9, 2)


@pytest.mark.cuda
def test_cuda_sampler_repeats():
    a = tasks.sample_linear_regression(2, 5, 3, generator=torch.Generator("cuda").manual_seed(0), device="cuda")
    b = tasks.sample_linear_regression(2, 5, 3, generator=torch.Generator("cuda").manual_seed(0), device="cuda")
    assert a.X.device.type == "cuda" and torch.equal(a.X, b.X)


@pytest.mark.parametrize(
    "call, error, words",
    [
        (lambda: tasks.sample_linear_regression(0, 5, 3), ValueError, ["batch", ">= 1", "0"]),
        (lambda: tasks.sample_linear_regression(2, 5, 3.0), TypeError, ["d", "int"]),
        (lambda: tasks.sample_linear_regression(2, 5, 3, condition_number=0.5), ValueError, ["condition_number", ">= 1", "0.5"]),
        (lambda: tasks.sample_linear_regression(2, 5, 3, noise_std=-0.1), ValueError, ["noise_std", ">= 0"]),
        (lambda: tasks.sample_linear_regression(2, 5, 3, device="tpu"), ValueError, ["device"]),
        (lambda: tasks.sample_linear_regression(2, 5, 3, device=3.5), TypeError, ["device"]),
        (lambda: tasks.sample_linear_regression(2, 5, 3, dtype=torch.int64), TypeError, ["dtype", "int64"]),
        (lambda: tasks.sample_linear_regression(2, 5, 3, generator=42), TypeError, ["generator", "torch.Generator"]),
        (lambda: tasks.sample_sparse_recovery(2, 5, 3, sparsity=4), ValueError, ["sparsity", "<= d = 3"]),
        (lambda: tasks.sample_sparse_recovery(2, 5, 3, sparsity=1, scaling="rows"), ValueError, ["scaling", "garg", "'rows'"]),
        (lambda: tasks.sample_sparse_recovery(2, 5, 3, sparsity=1, correlation=1.0), ValueError, ["correlation", "[0, 1)", "1.0"]),
        (lambda: tasks.sample_sparse_recovery(2, 5, 3, sparsity=1, correlation=-0.2), ValueError, ["correlation", ">= 0"]),
        (lambda: tasks.sample_sparse_recovery(2, 5, 3, sparsity=1, correlation=float("nan")), ValueError, ["correlation", "finite"]),
        (lambda: tasks.sample_sparse_recovery(2, 5, 3, sparsity=1, noise_std=float("nan")), ValueError, ["noise_std", "finite"]),
        (lambda: tasks.sample_sparse_recovery(2, 5, 4, sparsity=2, support_subset=[1]), ValueError, ["support_subset", "at least sparsity = 2"]),
        (lambda: tasks.sample_sparse_recovery(2, 5, 4, sparsity=1, support_subset=[1, 4]), ValueError, ["support_subset", "[0, 4)", "4"]),
        (lambda: tasks.sample_sparse_recovery(2, 5, 4, sparsity=1, support_subset=[1, 1]), ValueError, ["support_subset", "repeat"]),
        (lambda: tasks.sample_sparse_recovery(2, 5, 4, sparsity=1, support_subset=[1.0]), TypeError, ["support_subset", "int"]),
        (lambda: tasks.sample_sparse_recovery(2, 5, 4, sparsity=1, support_subset=3), TypeError, ["support_subset", "sequence"]),
        (lambda: tasks.sample_sparse_recovery(2, 5, 4, measurement_matrix=torch.zeros(5, 3)), ValueError, ["measurement_matrix", "(m, d)", "(5, 3)"]),
        (lambda: tasks.sample_sparse_recovery(2, 5, 4, measurement_matrix=torch.zeros(6, 4)), ValueError, ["measurement_matrix", "m <= n = 5"]),
        (lambda: tasks.sample_sparse_recovery(2, 5, 4, measurement_matrix=torch.zeros(2, 5, 4)), ValueError, ["measurement_matrix", "2 dimensions"]),
        (lambda: tasks.sample_sparse_recovery(2, 5, 4, measurement_matrix=torch.full((5, 4), float("nan"))), ValueError, ["measurement_matrix", "NaN"]),
        (lambda: tasks.toeplitz_covariance(3, 1.5), ValueError, ["correlation", "[0, 1)"]),
        (lambda: tasks.sample_spd(2, 3, 0.9), ValueError, ["condition_number", ">= 1"]),
        (lambda: tasks.sample_logistic_regression(2, 5, 3, weight_scale=0.0), ValueError, ["weight_scale", "> 0"]),
    ],
)
def test_bad_input_gets_a_clear_error(call, error, words):
    with pytest.raises(error) as info:
        call()
    for word in words:
        assert word in str(info.value), f"{word!r} not in {str(info.value)!r}"


def test_cuda_request_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ValueError, match="CUDA is not available"):
        tasks.sample_linear_regression(2, 5, 3, device="cuda")


def test_import_does_not_load_torch():
    # `import tfnewton` stays light because submodules load lazily; the time itself is
    # measured by benchmarks/import_time.py, not asserted here.
    code = "import sys, tfnewton; print('torch' in sys.modules); tfnewton.tasks; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True"]


# --------------------------------------------------------------------------- mixtures of condition numbers


def test_ill_conditioned_draws_are_the_documented_recipe():
    # The trained models' data rely on these draws: w, Z, then Q, with x = (Z * √λ) Qᵀ.
    t = tasks.sample_linear_regression(4, 6, 3, condition_number=10.0, noise_std=0.1,
                                       generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    g = torch.Generator().manual_seed(9)
    w = torch.randn((4, 3), generator=g, dtype=torch.float64)
    Z = torch.randn((4, 6, 3), generator=g, dtype=torch.float64)
    Q, R = torch.linalg.qr(torch.randn((4, 3, 3), generator=g, dtype=torch.float64))
    Q = Q * torch.sign(torch.diagonal(R, dim1=-2, dim2=-1)).unsqueeze(-2)
    X = (Z * tasks.covariance_eigenvalues(3, 10.0).sqrt()) @ Q.transpose(-1, -2)
    y = (X @ w.unsqueeze(-1)).squeeze(-1) + 0.1 * torch.randn((4, 6), generator=g, dtype=torch.float64)
    assert torch.equal(t.X, X) and torch.equal(t.y, y) and torch.equal(t.w, w)
    assert t.condition_number == 10.0


def test_a_mixture_draws_each_condition_number_per_prompt():
    """Giannou et al.'s logistic setting mixes κ = 1, 10, 50: each prompt's inputs have its own
    κ (read off a long prompt's empirical covariance), and each value is drawn about equally often."""
    t = tasks.sample_linear_regression(300, 3000, 5, condition_number=(1, 10, 50),
                                       generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    kappa = t.condition_number
    assert kappa.shape == (300,) and set(kappa.unique().tolist()) == {1.0, 10.0, 50.0}
    for value in (1.0, 10.0, 50.0):
        chosen = kappa == value
        assert 70 < int(chosen.sum()) < 130
        eig = torch.linalg.eigvalsh(t.X[chosen].transpose(1, 2) @ t.X[chosen] / 3000)
        ratio = (eig[:, -1] / eig[:, 0]).median().item()
        assert 0.85 * value < ratio < 1.2 * value + 0.2, (value, ratio)
    # Slicing keeps each prompt's κ with it; the logistic sampler takes the same mixture.
    assert torch.equal(t[5:9].condition_number, kappa[5:9])
    logistic = tasks.sample_logistic_regression(64, 26, 5, condition_number=(1.0, 10.0, 50.0),
                                                generator=torch.Generator().manual_seed(1))
    assert set(logistic.condition_number.unique().tolist()) <= {1.0, 10.0, 50.0}
    assert (logistic.X.norm(dim=-1) <= 1 + 1e-6).all() and set(logistic.y.unique().tolist()) == {-1.0, 1.0}


@pytest.mark.parametrize("mixture, words", [((), ["condition_number", "non-empty"]),
                                             ((1.0, 0.5), ["condition_number", ">= 1", "0.5"]),
                                             ((2.0, "x"), ["condition_number", "real number"])])
def test_a_bad_mixture_gets_a_clear_error(mixture, words):
    with pytest.raises((ValueError, TypeError)) as info:
        tasks.sample_linear_regression(2, 5, 3, condition_number=mixture)
    for word in words:
        assert word in str(info.value)


# --------------------------------------------------------------------------- tasks to train on


def test_training_tasks_sample_and_pass_only_their_options():
    options = {"noise_std": 0.0, "condition_number": (1.0, 10.0, 50.0), "sparsity": 5, "mu": 0.01}
    for name, task in tasks.TRAINING_TASKS.items():
        assert tasks.training_task(name) is task and task.headline in task.metrics(
            torch.zeros(2, 4), torch.ones(2, 4), 3)
        problems = task.sample(8, 6, 3, generator=torch.Generator().manual_seed(0), options=options)
        assert problems.X.shape == (8, 6, 3) and problems.y.shape == (8, 6)
    # Sparse recovery under the curriculum: the sparsity is capped at the dimension drawn.
    sparse = tasks.training_task("sparse_recovery").sample(4, 6, 3, options=options)
    assert (sparse.support.sum(-1) == 3).all()
    with pytest.raises(ValueError, match=r"task must be one of \('linear_regression'.*got 'ranking'"):
        tasks.training_task("ranking")


def test_training_losses_and_metrics_are_the_stated_formulas():
    g = torch.Generator().manual_seed(0)
    pred, y = torch.randn(50, 7, generator=g, dtype=torch.float64), torch.randn(50, 7, generator=g, dtype=torch.float64)
    labels = torch.where(y > 0, 1.0, -1.0).to(torch.float64)
    regression = tasks.training_task("linear_regression")
    assert torch.equal(regression.loss(pred, y), ((pred - y) ** 2).mean())
    torch.testing.assert_close(regression.metrics(pred, y, 4)["error"], ((pred - y) ** 2).mean(0) / 4)
    logistic = tasks.training_task("logistic_regression")
    bce = torch.nn.functional.binary_cross_entropy_with_logits(pred, (labels + 1) / 2)
    torch.testing.assert_close(logistic.loss(pred, labels), bce, rtol=1e-12, atol=0)
    metrics = logistic.metrics(pred, labels, 4)
    per_position = torch.nn.functional.binary_cross_entropy_with_logits(pred, (labels + 1) / 2, reduction="none").mean(0)
    torch.testing.assert_close(metrics["cross_entropy"], per_position, rtol=1e-12, atol=0)
    torch.testing.assert_close(metrics["accuracy"], (torch.sign(pred) == labels).double().mean(0))
    zero = logistic.metrics(torch.zeros(3, 2), torch.ones(3, 2), 4)  # a logit of 0 says nothing
    assert torch.allclose(zero["cross_entropy"], torch.full((2,), math.log(2), dtype=torch.float64))
    assert zero["accuracy"].tolist() == [0.5, 0.5]


@pytest.mark.parametrize("name, options, message", [
    ("logistic_regression", {"noise_std": 0.1}, "noise_std must be 0 for task 'logistic_regression'"),
    ("sparse_recovery", {"condition_number": 10.0}, "condition_number must be 1 for task 'sparse_recovery'"),
    ("sparse_recovery", {"sparsity": 6}, "sparsity must be <= d = 5, got 6"),
])
def test_training_tasks_refuse_options_they_cannot_run(name, options, message):
    with pytest.raises(ValueError, match=message):
        tasks.training_task(name).check_options(5, options)
    tasks.training_task("linear_regression").check_options(5, options)  # linear regression takes them all
