"""tfnewton.algorithms against independent numpy loops, and the convergence facts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import reference as ref
from tfnewton import algorithms as alg
from tfnewton import tasks

TOL = 1e-10  # float64 relative error against the numpy loops

problem_shapes = st.tuples(
    st.integers(1, 3),  # B
    st.integers(1, 12),  # n
    st.integers(1, 6),  # d
)
seeds = st.integers(0, 2**31 - 1)
kappas = st.sampled_from([1.0, 3.0, 30.0, 300.0, 1000.0])


def _regression(B, n, d, seed, kappa=1.0, noise=0.0):
    g = torch.Generator().manual_seed(seed)
    return tasks.sample_linear_regression(
        B, n, d, condition_number=kappa, noise_std=noise, generator=g, dtype=torch.float64
    )


def _per_problem_error(ours, reference_fn, *tensors_and_args):
    """Worst relative error over the batch: ours has shape (T, B, …)."""
    worst = 0.0
    B = ours.shape[1]
    for b in range(B):
        expected = reference_fn(b)
        worst = max(worst, ref.relative_error(ours[:, b].numpy(), expected))
    return worst


# --------------------------------------------------------------------------- against references


@settings(max_examples=40)
@given(st.integers(1, 3), st.integers(1, 8), seeds, kappas)
def test_newton_schulz_matches_reference(B, d, seed, kappa):
    A = tasks.sample_matrices(B, d, kappa, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    out = alg.newton_schulz(A, steps=12)
    alpha = 1.0 / torch.linalg.matrix_norm(A, ord=2) ** 2
    err = _per_problem_error(out, lambda b: ref.newton_schulz(A[b].numpy(), 12, alpha[b].item()))
    assert err <= TOL


@settings(max_examples=40)
@given(problem_shapes, seeds, kappas, st.sampled_from([0.0, 0.1]))
def test_newton_least_squares_matches_reference(shape, seed, kappa, ridge):
    B, n, d = shape
    t = _regression(B, n, d, seed, kappa)
    out = alg.newton_least_squares(t.X, t.y, steps=10, ridge=ridge)
    S = t.X.transpose(1, 2) @ t.X + ridge * torch.eye(d, dtype=torch.float64)
    alpha = 1.0 / torch.linalg.eigvalsh(S)[:, -1] ** 2
    err = _per_problem_error(
        out, lambda b: ref.newton_least_squares(t.X[b].numpy(), t.y[b].numpy(), 10, alpha[b].item(), ridge)
    )
    assert err <= TOL


@settings(max_examples=40)
@given(problem_shapes, seeds, kappas)
def test_gradient_descent_matches_reference(shape, seed, kappa):
    B, n, d = shape
    t = _regression(B, n, d, seed, kappa)
    out = alg.gradient_descent_least_squares(t.X, t.y, steps=25)
    H = t.X.transpose(1, 2) @ t.X / n
    lr = 1.0 / torch.linalg.eigvalsh(H)[:, -1]
    err = _per_problem_error(out, lambda b: ref.gradient_descent(t.X[b].numpy(), t.y[b].numpy(), 25, lr[b].item()))
    assert err <= TOL


@settings(max_examples=30)
@given(st.integers(1, 3), st.integers(1, 6), st.integers(0, 6), seeds, st.sampled_from([1.0, 10.0, 100.0]))
def test_conjugate_gradient_matches_reference(B, d, extra, seed, kappa):
    # CG is compared up to rank(S) - 1 steps: after exact convergence both divide
    # round-off by round-off, and the two would differ for reasons that say nothing.
    # CG's forward error grows like κ(S)·eps (it loses conjugacy), so the problems
    # are kept at n >= 2d, where κ(S) stays within a small factor of κ(Σ) <= 100.
    n = 2 * d + extra
    t = _regression(B, n, d, seed, kappa)
    steps = d - 1
    out = alg.conjugate_gradient_least_squares(t.X, t.y, steps=steps)
    err = _per_problem_error(out, lambda b: ref.conjugate_gradient(t.X[b].numpy(), t.y[b].numpy(), steps))
    assert err <= TOL


@settings(max_examples=30)
@given(st.integers(1, 3), st.integers(2, 6), st.integers(0, 6), seeds, st.sampled_from([1.0, 10.0, 100.0]))
def test_bfgs_matches_reference(B, d, extra, seed, kappa):
    t = _regression(B, 2 * d + extra, d, seed, kappa)
    steps = d - 1
    out = alg.bfgs_least_squares(t.X, t.y, steps=steps)
    err = _per_problem_error(out, lambda b: ref.bfgs(t.X[b].numpy(), t.y[b].numpy(), steps))
    assert err <= TOL


@settings(max_examples=30)
@given(st.integers(1, 3), st.integers(2, 6), st.integers(0, 6), seeds, st.integers(1, 4))
def test_lbfgs_matches_reference(B, d, extra, seed, memory):
    t = _regression(B, 2 * d + extra, d, seed, 10.0)
    steps = d - 1
    out = alg.lbfgs_least_squares(t.X, t.y, steps=steps, memory=memory)
    err = _per_problem_error(out, lambda b: ref.lbfgs(t.X[b].numpy(), t.y[b].numpy(), steps, memory))
    assert err <= TOL


@settings(max_examples=30)
@given(problem_shapes, seeds)
def test_online_gd_matches_reference(shape, seed):
    B, n, d = shape
    t = _regression(B, n, d, seed)
    out = alg.online_gradient_descent(t.X, t.y, lr=0.05)
    assert out.shape == (n + 1, B, d)
    err = _per_problem_error(out, lambda b: ref.online_gd(t.X[b].numpy(), t.y[b].numpy(), 0.05))
    assert err <= TOL


@settings(max_examples=30)
@given(problem_shapes, seeds, st.sampled_from([0.01, 0.1, 1.0]), kappas)
def test_damped_newton_logistic_matches_reference(shape, seed, mu, kappa):
    B, n, d = shape
    g = torch.Generator().manual_seed(seed)
    t = tasks.sample_logistic_regression(B, n, d, condition_number=kappa, generator=g, dtype=torch.float64)
    out = alg.damped_newton_logistic(t.X, t.y, mu=mu, steps=8)
    err = _per_problem_error(
        out, lambda b: ref.damped_newton_logistic(t.X[b].numpy(), t.y[b].numpy(), mu, 8)
    )
    assert err <= TOL


@settings(max_examples=30)
@given(problem_shapes, seeds, st.sampled_from([0.01, 0.1, 1.0]))
def test_gradient_descent_logistic_matches_reference(shape, seed, mu):
    B, n, d = shape
    g = torch.Generator().manual_seed(seed)
    t = tasks.sample_logistic_regression(B, n, d, generator=g, dtype=torch.float64)
    out = alg.gradient_descent_logistic(t.X, t.y, mu=mu, steps=20)
    L = torch.linalg.eigvalsh(t.X.transpose(1, 2) @ t.X)[:, -1] / (4 * n) + mu
    err = _per_problem_error(
        out, lambda b: ref.gradient_descent_logistic(t.X[b].numpy(), t.y[b].numpy(), mu, 20, 1.0 / L[b].item())
    )
    assert err <= TOL
    losses = alg.logistic_loss(t.X, t.y, out, mu)
    assert (losses[1:] <= losses[:-1] + 1e-12).all()  # 1/L steps decrease f


@settings(max_examples=30)
@given(st.integers(1, 3), st.integers(2, 10), st.integers(2, 16), seeds, st.sampled_from([0.01, 0.1]))
def test_ista_and_fista_match_reference(B, n, d, seed, lam):
    g = torch.Generator().manual_seed(seed)
    t = tasks.sample_sparse_recovery(B, n, d, sparsity=min(2, d), generator=g, dtype=torch.float64)
    lr = 1.0 / torch.linalg.eigvalsh(t.X.transpose(1, 2) @ t.X)[:, -1]
    ours_ista = alg.ista(t.X, t.y, lam, steps=30)
    ours_fista = alg.fista(t.X, t.y, lam, steps=30)
    err_i = _per_problem_error(ours_ista, lambda b: ref.ista(t.X[b].numpy(), t.y[b].numpy(), lam, 30, lr[b].item()))
    err_f = _per_problem_error(ours_fista, lambda b: ref.fista(t.X[b].numpy(), t.y[b].numpy(), lam, 30, lr[b].item()))
    assert err_i <= TOL and err_f <= TOL


# --------------------------------------------------------------------------- convergence facts


@pytest.mark.parametrize("kappa", [1.0, 10.0, 100.0, 1e3, 1e4])
@pytest.mark.parametrize("d", [2, 8, 20])
def test_newton_schulz_converges_within_log_condition_steps(kappa, d):
    # X₀ = αAᵀ makes the iteration see AᵀA, whose condition number is κ(A)²:
    # with α = 1/σ_max², ‖R_t‖ = (1 − 1/κ²)^(2^t), so t = ⌈log₂ κ(AᵀA)⌉ + 6 steps suffice
    # for 1e-10 (2^6 > ln(1e10)·e). For SPD A that is ⌈log₂ κ(A)²⌉ + 6.
    A = tasks.sample_spd(4, d, kappa, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    budget = math.ceil(math.log2(kappa**2)) + 6 if kappa > 1 else 6
    out = alg.newton_schulz(A, steps=budget)
    residual = torch.linalg.matrix_norm(out[-1] @ A - torch.eye(d, dtype=A.dtype), ord=2)
    assert residual.max().item() < 1e-10


def test_newton_schulz_residual_squares_each_step():
    A = tasks.sample_matrices(3, 6, 50.0, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    out = alg.newton_schulz(A, steps=6)
    eye = torch.eye(6, dtype=A.dtype)
    for t in range(6):
        R = eye - out[t] @ A
        assert torch.allclose(eye - out[t + 1] @ A, R @ R, atol=1e-12)


def test_newton_schulz_boundary_alpha_does_not_converge():
    # α = 2/σ_max² puts the top eigenvalue of I − αA² at exactly −1 (A symmetric): that
    # direction's residual stays at magnitude 1 forever.
    A = torch.diag(torch.tensor([1.0, 0.5], dtype=torch.float64)).unsqueeze(0)
    out = alg.newton_schulz(A, steps=30, alpha=2.0)
    residual = torch.linalg.matrix_norm(torch.eye(2, dtype=A.dtype) - out[-1] @ A, ord=2)
    assert residual.item() == pytest.approx(1.0, abs=1e-12)
    converged = alg.newton_schulz(A, steps=30)
    assert torch.allclose(converged[-1], torch.linalg.inv(A), atol=1e-12)


@settings(max_examples=25)
@given(st.integers(1, 3), st.integers(2, 8), st.integers(1, 8), seeds)
def test_newton_least_squares_reaches_min_norm_solution_when_underdetermined(B, d, deficit, seed):
    n = max(1, d - deficit)  # n < d unless d - deficit would be 0
    if n >= d:
        n = d - 1
    t = _regression(B, n, d, seed)
    out = alg.newton_least_squares(t.X, t.y, steps=60)
    min_norm = (torch.linalg.pinv(t.X) @ t.y.unsqueeze(-1)).squeeze(-1)
    err = (out[-1] - min_norm).norm(dim=-1) / min_norm.norm(dim=-1).clamp_min(1e-300)
    assert err.max().item() < 1e-8


@pytest.mark.parametrize("kappa", [1.0, 10.0, 100.0])
def test_iterative_newton_needs_far_fewer_steps_than_gd(kappa):
    t = _regression(8, 40, 8, seed=3, kappa=kappa)
    ols = alg.least_squares(t.X, t.y)

    def steps_to(traj, eps=1e-8):
        err = (traj - ols).norm(dim=-1).max(dim=-1).values / ols.norm(dim=-1).max()
        hit = (err < eps).nonzero()
        return int(hit[0]) if len(hit) else math.inf

    newton_steps = steps_to(alg.newton_least_squares(t.X, t.y, steps=60))
    gd_steps = steps_to(alg.gradient_descent_least_squares(t.X, t.y, steps=5000))
    assert newton_steps < 30
    assert gd_steps > 2 * newton_steps


def test_cg_exact_after_d_steps_and_lbfgs_bfgs_converge():
    t = _regression(4, 30, 6, seed=4, kappa=100.0)
    ols = alg.least_squares(t.X, t.y)
    assert torch.allclose(alg.conjugate_gradient_least_squares(t.X, t.y, 6)[-1], ols, atol=1e-9)
    assert torch.allclose(alg.bfgs_least_squares(t.X, t.y, 6)[-1], ols, atol=1e-9)
    assert torch.allclose(alg.lbfgs_least_squares(t.X, t.y, 40, memory=3)[-1], ols, atol=1e-8)
    # a converged problem stays put (no 0/0)
    cg = alg.conjugate_gradient_least_squares(t.X, t.y, 12)
    assert torch.isfinite(cg).all()


def test_damped_newton_reaches_stationary_point():
    t = tasks.sample_logistic_regression(4, 30, 5, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    mu = 0.01
    w = alg.damped_newton_logistic(t.X, t.y, mu, steps=40)[-1].requires_grad_(True)
    loss = alg.logistic_loss(t.X, t.y, w, mu).sum()
    (grad,) = torch.autograd.grad(loss, w)
    assert grad.norm(dim=-1).max().item() < 1e-10
    losses = alg.logistic_loss(t.X, t.y, alg.damped_newton_logistic(t.X, t.y, mu, steps=40), mu)
    assert (losses[1:] <= losses[:-1] + 1e-12).all()  # damped Newton decreases f monotonically


def test_fista_beats_ista_and_both_decrease():
    t = tasks.sample_sparse_recovery(16, 20, 40, sparsity=3, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    lam = 0.01
    obj_i = alg.lasso_objective(t.X, t.y, alg.ista(t.X, t.y, lam, 300), lam)
    obj_f = alg.lasso_objective(t.X, t.y, alg.fista(t.X, t.y, lam, 300), lam)
    best = torch.minimum(obj_i.min(0).values, obj_f.min(0).values)
    assert (obj_i[1:] <= obj_i[:-1] + 1e-12).all()  # ISTA with 1/L is monotone
    assert ((obj_f[50] - best) < (obj_i[50] - best)).float().mean() > 0.8


# --------------------------------------------------------------------------- dtype / device / validation


@pytest.mark.parametrize(
    "call",
    [
        lambda X, y: alg.newton_least_squares(X, y, 3),
        lambda X, y: alg.gradient_descent_least_squares(X, y, 3),
        lambda X, y: alg.conjugate_gradient_least_squares(X, y, 3),
        lambda X, y: alg.lbfgs_least_squares(X, y, 3),
        lambda X, y: alg.bfgs_least_squares(X, y, 3),
        lambda X, y: alg.online_gradient_descent(X, y),
        lambda X, y: alg.ista(X, y, 0.1, 3),
        lambda X, y: alg.fista(X, y, 0.1, 3),
        lambda X, y: alg.least_squares(X, y).unsqueeze(0),
        lambda X, y: alg.damped_newton_logistic(X, torch.sign(y) + (y == 0), 0.1, 3),
        lambda X, y: alg.gradient_descent_logistic(X, torch.sign(y) + (y == 0), 0.1, 3),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_and_shape_preserved(call, dtype):
    t = _regression(2, 7, 3, seed=0)
    X, y = t.X.to(dtype), t.y.to(dtype)
    out = call(X, y)
    assert out.dtype == dtype and out.device == X.device
    assert out.shape[1:] == (2, 3)
    assert torch.isfinite(out).all()


def test_float32_close_to_float64():
    t = _regression(4, 20, 5, seed=1, kappa=10.0)
    w64 = alg.newton_least_squares(t.X, t.y, 12)
    w32 = alg.newton_least_squares(t.X.float(), t.y.float(), 12)
    assert ref.relative_error(w32.double().numpy(), w64.numpy()) < 1e-4


@pytest.mark.cuda
def test_cuda_matches_cpu():
    t = _regression(3, 10, 4, seed=0)
    cpu = alg.newton_least_squares(t.X, t.y, 8)
    gpu = alg.newton_least_squares(t.X.cuda(), t.y.cuda(), 8)
    assert gpu.device.type == "cuda"
    assert torch.allclose(gpu.cpu(), cpu, atol=1e-10)


X_ok = torch.randn(2, 5, 3)
y_ok = torch.randn(2, 5)


@pytest.mark.parametrize(
    "call, error, words",
    [
        (lambda: alg.newton_least_squares(X_ok[0], y_ok, 3), ValueError, ["X", "3 dimensions", "(5, 3)"]),
        (lambda: alg.newton_least_squares(X_ok, y_ok[:, :4], 3), ValueError, ["y", "(2, 5)", "(2, 4)"]),
        (lambda: alg.newton_least_squares(X_ok, y_ok[:1], 3), ValueError, ["y", "(2, 5)"]),
        (lambda: alg.newton_least_squares(X_ok, y_ok.double(), 3), TypeError, ["dtype"]),
        (lambda: alg.newton_least_squares(X_ok.numpy(), y_ok, 3), TypeError, ["X", "torch.Tensor", "ndarray"]),
        (lambda: alg.newton_least_squares(X_ok.long(), y_ok, 3), TypeError, ["X", "floating"]),
        (lambda: alg.newton_least_squares(X_ok * float("nan"), y_ok, 3), ValueError, ["X", "NaN"]),
        (lambda: alg.newton_least_squares(X_ok, y_ok * float("inf"), 3), ValueError, ["y", "infinite"]),
        (lambda: alg.newton_least_squares(X_ok, y_ok, -1), ValueError, ["steps", ">= 0", "-1"]),
        (lambda: alg.newton_least_squares(X_ok, y_ok, 2.5), TypeError, ["steps", "int"]),
        (lambda: alg.newton_least_squares(X_ok, y_ok, 3, alpha=-1.0), ValueError, ["alpha", "> 0"]),
        (lambda: alg.newton_least_squares(X_ok, y_ok, 3, alpha=torch.ones(3)), ValueError, ["alpha", "(2,)"]),
        (lambda: alg.gradient_descent_least_squares(X_ok, y_ok, 3, lr=0.0), ValueError, ["lr", "> 0"]),
        (lambda: alg.newton_schulz(torch.randn(2, 3, 4), 3), ValueError, ["A", "square", "(2, 3, 4)"]),
        (lambda: alg.newton_schulz(torch.randn(3, 3), 3), ValueError, ["A", "3 dimensions"]),
        (lambda: alg.damped_newton_logistic(X_ok, y_ok, 0.1, 3), ValueError, ["y", "-1 or +1"]),
        (lambda: alg.damped_newton_logistic(X_ok, torch.sign(y_ok), 0.0, 3), ValueError, ["mu", "> 0"]),
        (lambda: alg.damped_newton_logistic(X_ok, torch.sign(y_ok), -1.0, 3), ValueError, ["mu", "> 0"]),
        (lambda: alg.gradient_descent_logistic(X_ok, y_ok, 0.1, 3), ValueError, ["y", "-1 or +1"]),
        (lambda: alg.gradient_descent_logistic(X_ok, torch.sign(y_ok), 0.1, 3, lr=-2.0), ValueError, ["lr", "> 0"]),
        (lambda: alg.ista(X_ok, y_ok, 0.0, 3), ValueError, ["lam", "> 0"]),
        (lambda: alg.fista(X_ok, y_ok, float("nan"), 3), ValueError, ["lam", "finite"]),
        (lambda: alg.lbfgs_least_squares(X_ok, y_ok, 3, memory=0), ValueError, ["memory", ">= 1"]),
        (lambda: alg.least_squares(X_ok, y_ok, ridge=-1.0), ValueError, ["ridge", ">= 0"]),
    ],
)
def test_bad_input_gets_a_clear_error(call, error, words):
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


# --------------------------------------------------------------------------- damped Newton: inner Newton–Schulz, scikit-learn


def _inexact_damped_newton_numpy(X, y, mu, steps, k):
    """Independent loop: M₀ = H/(1/4 + μ)², k Newton–Schulz steps, direction Mg, decrement gᵀMg."""
    n, d = X.shape
    w = np.zeros(d)
    out = [w]
    alpha = 1.0 / (0.25 + mu) ** 2
    for _ in range(steps):
        z = X @ w
        c = 1.0 / (1.0 + np.exp(-z)) - (1.0 + y) / 2.0
        h = 1.0 / (1.0 + np.exp(-z)) / (1.0 + np.exp(z))
        g = X.T @ c / n + mu * w
        H = (X.T * h) @ X / n + mu * np.eye(d)
        M = alpha * H
        for _ in range(k):
            M = 2 * M - M @ H @ M
        direction = M @ g
        lam = math.sqrt(max(g @ direction, 0.0))
        w = w - 2 * math.sqrt(mu) / (2 * math.sqrt(mu) + lam) * direction
        out.append(w)
    return np.stack(out)


@settings(max_examples=30)
@given(problem_shapes, seeds, st.sampled_from([0.01, 0.1, 1.0]), st.integers(0, 12), st.sampled_from([1.0, 30.0]))
def test_damped_newton_logistic_inner_steps_matches_reference(shape, seed, mu, k, kappa):
    B, n, d = shape
    t = tasks.sample_logistic_regression(B, n, d, condition_number=kappa, generator=torch.Generator().manual_seed(seed),
                                         dtype=torch.float64)
    out = alg.damped_newton_logistic(t.X, t.y, mu, 6, inner_steps=k)
    err = _per_problem_error(out, lambda b: _inexact_damped_newton_numpy(t.X[b].numpy(), t.y[b].numpy(), mu, 6, k))
    assert err <= TOL


def test_inner_steps_converge_to_the_exact_solve():
    t = tasks.sample_logistic_regression(8, 40, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    exact = alg.damped_newton_logistic(t.X, t.y, 0.1, 6)
    errors = [(alg.damped_newton_logistic(t.X, t.y, 0.1, 6, inner_steps=k) - exact).abs().max().item() for k in (2, 4, 6, 8)]
    assert errors[-1] <= 1e-12
    assert all(b < a for a, b in zip(errors, errors[1:]))
    assert alg.logistic_inner_alpha(0.1) == pytest.approx(1 / 0.35**2)
    # the decrement: λ(w) of the exact solve, zero at the minimizer
    lam = alg.newton_decrement_logistic(t.X, t.y, exact, 0.1)
    assert lam.shape == (7, 8) and lam[-1].max() <= 1e-10 and lam[0].min() > 0
    assert torch.allclose(alg.newton_decrement_logistic(t.X, t.y, exact[2], 0.1), lam[2])


def test_undamped_newton_from_zero_and_from_afar():
    """Full Newton steps converge from 0 on these prompts but fail from ‖w₀‖ = 10; damped ones converge from both."""
    mu = 0.01
    t = tasks.sample_logistic_regression(64, 64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    w_star = alg.damped_newton_logistic(t.X, t.y, mu, 60)[-1]
    u = torch.randn(64, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    far = 10 * u / u.norm(dim=-1, keepdim=True)

    def error(w):
        return torch.nan_to_num((w[-1] - w_star).norm(dim=-1) / w_star.norm(dim=-1), nan=float("inf"))

    assert error(alg.damped_newton_logistic(t.X, t.y, mu, 20, damped=False)).max() <= 1e-8
    assert error(alg.damped_newton_logistic(t.X, t.y, mu, 20, damped=False, w0=far)).max() > 1.0
    assert error(alg.damped_newton_logistic(t.X, t.y, mu, 40, w0=far)).max() <= 1e-8
    losses = alg.logistic_loss(t.X, t.y, alg.damped_newton_logistic(t.X, t.y, mu, 40, w0=far), mu)
    assert (losses[1:] <= losses[:-1] + 1e-12).all()  # damped Newton decreases f from any start


@settings(max_examples=6)
@given(st.integers(1, 2), st.integers(8, 40), st.integers(1, 6), seeds, st.sampled_from([0.01, 0.1, 1.0]))
def test_damped_newton_minimizer_matches_scikit_learn(B, n, d, seed, mu):
    sklearn = pytest.importorskip("sklearn.linear_model")
    t = tasks.sample_logistic_regression(B, n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    ours = alg.damped_newton_logistic(t.X, t.y, mu, 40)[-1]
    for b in range(B):
        clf = sklearn.LogisticRegression(C=1.0 / (n * mu), fit_intercept=False, tol=1e-10, max_iter=10_000)
        clf.fit(t.X[b].numpy(), t.y[b].numpy())
        theirs = clf.coef_[0]
        assert ref.relative_error(ours[b].numpy(), theirs) <= 1e-6


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        (dict(inner_steps=-1), ValueError, ["inner_steps", ">= 0"]),
        (dict(inner_steps=2.0), TypeError, ["inner_steps", "int"]),
        (dict(w0=torch.zeros(3, 3, dtype=torch.float64)), ValueError, ["w0", "(2, 3)"]),
        (dict(w0=torch.zeros(2, 3)), TypeError, ["w0", "dtype"]),
    ],
)
def test_damped_newton_inner_steps_bad_input(kwargs, error, words):
    t = tasks.sample_logistic_regression(2, 10, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with pytest.raises(error) as info:
        alg.damped_newton_logistic(t.X, t.y, 0.1, 3, **kwargs)
    for word in words:
        assert word in str(info.value)


def test_inner_steps_need_the_unit_ball():
    t = tasks.sample_logistic_regression(2, 10, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    alg.damped_newton_logistic(2 * t.X, t.y, 0.1, 3)  # the exact solve has no such assumption
    with pytest.raises(ValueError) as info:
        alg.damped_newton_logistic(2 * t.X, t.y, 0.1, 3, inner_steps=4)
    for word in ("X", "norm at most 1", "divide X", "mu/r²"):
        assert word in str(info.value)
