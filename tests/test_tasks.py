"""Samplers: seeded repeatability, the statistics they promise, validation."""

from __future__ import annotations

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
