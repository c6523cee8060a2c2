r"""Reference optimizers, written once, returning every iterate.

Everything else in tfnewton — the constructions' exactness tests, the probes'
targets, the chapters' plots — calls these functions. Each one

* works on a batch of problems at once (batch axis first),
* accepts float32 and float64 tensors on any device and answers in the same
  dtype and on the same device,
* returns the whole trajectory, iterate 0 (the starting point) included, so
  ``out[k]`` is the k-th iterate,
* validates its inputs at the boundary and raises a ``ValueError`` or
  ``TypeError`` that names the argument.

Notation (used in the book too): ``X`` of shape ``(B, n, d)`` holds the ``n``
in-context inputs of each problem, ``y`` of shape ``(B, n)`` the targets,
``S = XᵀX`` the (unnormalized) Gram matrix and ``κ`` a condition number.

Step sizes and the boundary value of α
--------------------------------------
Newton–Schulz for ``A⁻¹`` starts from ``X₀ = α Aᵀ``. Its residual
``R_t = I − X_t A`` obeys ``R_{t+1} = R_t²`` (exactly, for this starting point),
so ``R_t = (I − α AᵀA)^{2^t}``. The eigenvalues of ``I − α AᵀA`` are
``1 − α σ_i²``; the iteration converges iff they all lie in ``(−1, 1]`` with the
non-zero ones strictly inside, i.e. ``0 < α < 2/σ_max²``. At the boundary
``α = 2/σ_max²`` (Fu et al.'s ``2/‖SSᵀ‖₂`` for ``A = S`` symmetric) the top
eigenvalue is exactly ``−1`` and that direction never converges.
The default here is ``α = 1/σ_max(A)²``: every eigenvalue of ``R₀`` then lies in
``[0, 1 − 1/κ(A)²]``, so convergence is monotone and provable, and the number of
steps to reach ``‖R_t‖ ≤ ε`` is ``⌈log₂(κ(A)² · ln(1/ε))⌉`` at most.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable

import torch

from . import _validate as v

__all__ = [
    "default_newton_alpha",
    "newton_schulz",
    "newton_least_squares",
    "gradient_descent_least_squares",
    "conjugate_gradient_least_squares",
    "lbfgs_least_squares",
    "bfgs_least_squares",
    "online_gradient_descent",
    "least_squares",
    "damped_newton_logistic",
    "newton_decrement_logistic",
    "logistic_inner_alpha",
    "gradient_descent_logistic",
    "logistic_loss",
    "ista",
    "fista",
    "lasso_objective",
    "soft_threshold",
    "REQUIRED",
    "TASK_KINDS",
    "Algorithm",
    "ALGORITHMS",
    "register_algorithm",
    "as_algorithm",
    "iterates",
    "prefix_predictions",
    "step_list",
]


# --------------------------------------------------------------------------- helpers


def _per_problem(value, B: int, like: torch.Tensor, name: str, trailing: int) -> torch.Tensor:
    """A float or a (B,) tensor of per-problem values, shaped to broadcast as (B, 1, …)."""
    if isinstance(value, torch.Tensor):
        v.check_tensor(value, name, ndim=(0, 1))
        if value.ndim == 1 and value.shape[0] != B:
            raise ValueError(f"{name} must be a float or have shape ({B},), got {tuple(value.shape)}")
        if bool((value <= 0).any()):
            raise ValueError(f"{name} must be > 0, got a tensor with entries <= 0")
        t = value.to(device=like.device, dtype=like.dtype).expand(B) if value.ndim == 0 else value.to(
            device=like.device, dtype=like.dtype
        )
    else:
        t = torch.full((B,), v.check_positive(value, name), device=like.device, dtype=like.dtype)
    return t.reshape((B,) + (1,) * trailing)


def _spectral_norm_sq(A: torch.Tensor) -> torch.Tensor:
    """σ_max(A)² per problem, shape (B,)."""
    return torch.linalg.matrix_norm(A, ord=2) ** 2


def _largest_eigenvalue(S: torch.Tensor) -> torch.Tensor:
    """λ_max of a batch of symmetric PSD matrices, shape (B,)."""
    return torch.linalg.eigvalsh(S)[..., -1]


def _check_steps(steps) -> int:
    return v.check_int(steps, "steps", minimum=0)


def _gram(X: torch.Tensor, ridge: float = 0.0) -> torch.Tensor:
    S = X.transpose(-1, -2) @ X
    if ridge:
        S = S + ridge * torch.eye(S.shape[-1], dtype=S.dtype, device=S.device)
    return S


def default_newton_alpha(A: torch.Tensor) -> torch.Tensor:
    """The default α of Newton–Schulz: ``1/σ_max(A)²`` per problem.

    Parameters
    ----------
    A : Tensor of shape (B, d, d)

    Returns
    -------
    Tensor of shape (B,)
        Strictly inside the stable range ``(0, 2/σ_max²)``; see the module
        docstring for why this value.
    """
    v.check_tensor(A, "A", ndim=3)
    return 1.0 / _spectral_norm_sq(A)


# --------------------------------------------------------------------------- matrix inversion


def newton_schulz(A: torch.Tensor, steps: int, alpha=None) -> torch.Tensor:
    r"""Newton–Schulz iteration for the inverse of a batch of square matrices.

    ``X₀ = α Aᵀ``, ``X_{t+1} = 2X_t − X_t A X_t``. The residual squares each
    step: ``I − X_{t+1}A = (I − X_t A)²``.

    Parameters
    ----------
    A : Tensor of shape (B, d, d)
        Square matrices, float32 or float64.
    steps : int
        Number of Newton–Schulz steps, ``>= 0``.
    alpha : float or Tensor of shape (B,), optional
        Scale of the starting point. ``None`` picks ``1/σ_max(A)²`` per problem,
        for which the iteration provably converges for every invertible ``A``
        (half the boundary value ``2/σ_max²``, where the top direction of
        ``I − αAᵀA`` sits at −1 and never converges). A given value is used as
        it is, even outside the stable range, so the book can show what happens.

    Returns
    -------
    Tensor of shape (steps + 1, B, d, d)
        ``out[t]`` is ``X_t``; ``out[0] = αAᵀ``.

    Examples
    --------
    >>> import torch
    >>> from tfnewton.algorithms import newton_schulz
    >>> A = torch.tensor([[[2.0, 0.0], [0.0, 4.0]]], dtype=torch.float64)
    >>> newton_schulz(A, steps=8)[-1].diagonal(dim1=-2, dim2=-1)
    tensor([[0.5000, 0.2500]], dtype=torch.float64)
    """
    v.check_tensor(A, "A", ndim=3)
    B, d, d2 = A.shape
    if d != d2:
        raise ValueError(f"A must hold square matrices (B, d, d), got shape {tuple(A.shape)}")
    steps = _check_steps(steps)
    a = default_newton_alpha(A).reshape(B, 1, 1) if alpha is None else _per_problem(alpha, B, A, "alpha", 2)
    out = A.new_empty((steps + 1, B, d, d))
    Xt = a * A.transpose(-1, -2)
    out[0] = Xt
    for t in range(steps):
        Xt = 2 * Xt - Xt @ A @ Xt
        out[t + 1] = Xt
    return out


# --------------------------------------------------------------------------- least squares


def least_squares(X: torch.Tensor, y: torch.Tensor, ridge: float = 0.0) -> torch.Tensor:
    """The minimum-norm least-squares solution (OLS), or ridge regression.

    Parameters
    ----------
    X : Tensor of shape (B, n, d)
    y : Tensor of shape (B, n)
    ridge : float, optional
        ``λ >= 0``; solves ``(XᵀX + λI) w = Xᵀy`` when positive.

    Returns
    -------
    Tensor of shape (B, d)
        ``pinv(X) y`` (the minimum-norm solution when ``n < d``) or the ridge solution.
    """
    v.check_regression_inputs(X, y)
    ridge = v.check_positive(ridge, "ridge", allow_zero=True)
    if ridge > 0:
        S = _gram(X, ridge)
        return torch.linalg.solve(S, (X.transpose(-1, -2) @ y.unsqueeze(-1))).squeeze(-1)
    return (torch.linalg.pinv(X) @ y.unsqueeze(-1)).squeeze(-1)


def newton_least_squares(X: torch.Tensor, y: torch.Tensor, steps: int, alpha=None, *, ridge: float = 0.0) -> torch.Tensor:
    r"""Iterative Newton for least squares (Fu et al. 2024).

    ``S = XᵀX (+ ridge·I)``, ``M₀ = αS``, ``M_{k+1} = 2M_k − M_k S M_k``,
    ``w_k = M_k Xᵀy``. This is Newton–Schulz for ``S⁻¹`` started at ``αSᵀ = αS``;
    it needs ``O(log κ(S) + log log 1/ε)`` steps where gradient descent needs
    ``O(κ(S) log 1/ε)``. When ``n < d`` (``S`` singular) the iterates stay in the
    row space of ``X`` and converge to the minimum-norm solution ``pinv(X) y``.

    Parameters
    ----------
    X : Tensor of shape (B, n, d)
    y : Tensor of shape (B, n)
    steps : int
        Number of Newton steps ``>= 0``.
    alpha : float or Tensor of shape (B,), optional
        ``None`` picks ``1/λ_max(S)²`` per problem (half the boundary value
        ``2/λ_max(S)²`` = Fu et al.'s ``2/‖SSᵀ‖₂``, at which the top eigen-direction
        oscillates forever). A given value is used as it is.
    ridge : float, optional
        ``λ >= 0`` added to ``S`` (noisy regression: Newton on ``XᵀX + λI``).

    Returns
    -------
    Tensor of shape (steps + 1, B, d)
        ``out[k]`` is ``w_k``; ``out[0] = αSXᵀy``.
    """
    v.check_regression_inputs(X, y)
    steps = _check_steps(steps)
    ridge = v.check_positive(ridge, "ridge", allow_zero=True)
    B, n, d = X.shape
    S = _gram(X, ridge)
    a = (1.0 / _largest_eigenvalue(S) ** 2).reshape(B, 1, 1) if alpha is None else _per_problem(alpha, B, X, "alpha", 2)
    b = (X.transpose(-1, -2) @ y.unsqueeze(-1))  # (B, d, 1) = Xᵀy
    out = X.new_empty((steps + 1, B, d))
    M = a * S
    out[0] = (M @ b).squeeze(-1)
    for k in range(steps):
        M = 2 * M - M @ S @ M
        out[k + 1] = (M @ b).squeeze(-1)
    return out


def gradient_descent_least_squares(X: torch.Tensor, y: torch.Tensor, steps: int, lr=None) -> torch.Tensor:
    r"""Gradient descent on ``L(w) = (1/2n)‖y − Xw‖²`` from ``w₀ = 0``.

    ``w_{t+1} = w_t − η (1/n) Xᵀ(Xw_t − y)``.

    Parameters
    ----------
    X : Tensor of shape (B, n, d)
    y : Tensor of shape (B, n)
    steps : int
    lr : float or Tensor of shape (B,), optional
        Step size η. ``None`` picks ``1/λ_max(S/n)`` per problem (the inverse
        smoothness constant: monotone decrease, provable convergence; the
        boundary is ``2/λ_max(S/n)``).

    Returns
    -------
    Tensor of shape (steps + 1, B, d)
    """
    v.check_regression_inputs(X, y)
    steps = _check_steps(steps)
    B, n, d = X.shape
    H = _gram(X) / n  # Hessian of the loss
    eta = (1.0 / _largest_eigenvalue(H)).reshape(B, 1) if lr is None else _per_problem(lr, B, X, "lr", 1)
    b = (X.transpose(-1, -2) @ y.unsqueeze(-1)).squeeze(-1) / n
    out = X.new_zeros((steps + 1, B, d))
    w = out[0].clone()
    for t in range(steps):
        grad = (H @ w.unsqueeze(-1)).squeeze(-1) - b
        w = w - eta * grad
        out[t + 1] = w
    return out


def _safe_div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num/den, 0 where den == 0 (a problem that has already converged exactly)."""
    zero = den == 0
    return torch.where(zero, torch.zeros_like(num), num / torch.where(zero, torch.ones_like(den), den))


def conjugate_gradient_least_squares(X: torch.Tensor, y: torch.Tensor, steps: int) -> torch.Tensor:
    r"""Conjugate gradient on the normal equations ``S w = Xᵀy`` from ``w₀ = 0``.

    In exact arithmetic it reaches the (minimum-norm) least-squares solution in at
    most ``rank(S)`` steps; a problem that has converged exactly stays put.

    Parameters
    ----------
    X : Tensor of shape (B, n, d)
    y : Tensor of shape (B, n)
    steps : int

    Returns
    -------
    Tensor of shape (steps + 1, B, d)
    """
    v.check_regression_inputs(X, y)
    steps = _check_steps(steps)
    B, n, d = X.shape
    S = _gram(X)
    out = X.new_zeros((steps + 1, B, d))
    w = out[0].clone()
    r = (X.transpose(-1, -2) @ y.unsqueeze(-1)).squeeze(-1)  # b − S·0
    p = r.clone()
    rr = (r * r).sum(-1)
    for t in range(steps):
        Sp = (S @ p.unsqueeze(-1)).squeeze(-1)
        step = _safe_div(rr, (p * Sp).sum(-1))
        w = w + step.unsqueeze(-1) * p
        r = r - step.unsqueeze(-1) * Sp
        rr_new = (r * r).sum(-1)
        p = r + _safe_div(rr_new, rr).unsqueeze(-1) * p
        rr = rr_new
        out[t + 1] = w
    return out


def _quadratic_line_search(g: torch.Tensor, p: torch.Tensor, H: torch.Tensor) -> torch.Tensor:
    """Exact minimizer of a quadratic along p: −gᵀp / pᵀHp, shape (B, 1)."""
    Hp = (H @ p.unsqueeze(-1)).squeeze(-1)
    return _safe_div(-(g * p).sum(-1), (p * Hp).sum(-1)).unsqueeze(-1)


def lbfgs_least_squares(X: torch.Tensor, y: torch.Tensor, steps: int, memory: int = 5) -> torch.Tensor:
    r"""L-BFGS on ``L(w) = (1/2n)‖y − Xw‖²`` with exact line search, from ``w₀ = 0``.

    The two-loop recursion with the last ``memory`` pairs ``(s, g⁺ − g)`` and the
    usual initial scaling ``γ = sᵀu / uᵀu``; the line search is exact because the
    objective is quadratic.

    Parameters
    ----------
    X : Tensor of shape (B, n, d)
    y : Tensor of shape (B, n)
    steps : int
    memory : int, optional
        Number of curvature pairs kept, ``>= 1``.

    Returns
    -------
    Tensor of shape (steps + 1, B, d)
    """
    v.check_regression_inputs(X, y)
    steps = _check_steps(steps)
    memory = v.check_int(memory, "memory", minimum=1)
    B, n, d = X.shape
    H = _gram(X) / n
    b = (X.transpose(-1, -2) @ y.unsqueeze(-1)).squeeze(-1) / n
    out = X.new_zeros((steps + 1, B, d))
    w = out[0].clone()
    g = -b
    pairs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (s, u, ρ)
    for t in range(steps):
        q = g.clone()
        alphas = []
        for s, u, rho in reversed(pairs):
            a = rho * (s * q).sum(-1, keepdim=True)
            q = q - a * u
            alphas.append(a)
        if pairs:
            s, u, _ = pairs[-1]
            gamma = _safe_div((s * u).sum(-1), (u * u).sum(-1)).unsqueeze(-1)
            q = gamma * q
        for (s, u, rho), a in zip(pairs, reversed(alphas)):
            beta = rho * (u * q).sum(-1, keepdim=True)
            q = q + (a - beta) * s
        p = -q
        step = _quadratic_line_search(g, p, H)
        s_new = step * p
        w = w + s_new
        g_new = (H @ w.unsqueeze(-1)).squeeze(-1) - b
        u_new = g_new - g
        rho_new = _safe_div(torch.ones_like(step.squeeze(-1)), (s_new * u_new).sum(-1)).unsqueeze(-1)
        pairs.append((s_new, u_new, rho_new))
        if len(pairs) > memory:
            pairs.pop(0)
        g = g_new
        out[t + 1] = w
    return out


def bfgs_least_squares(X: torch.Tensor, y: torch.Tensor, steps: int) -> torch.Tensor:
    r"""Full-memory BFGS on ``L(w) = (1/2n)‖y − Xw‖²`` with exact line search, from ``w₀ = 0``.

    The inverse-Hessian estimate starts at the identity and is updated with
    ``H⁺ = (I − ρsuᵀ) H (I − ρusᵀ) + ρssᵀ``. Fu et al. find trained Transformers
    resemble BFGS.

    Parameters
    ----------
    X : Tensor of shape (B, n, d)
    y : Tensor of shape (B, n)
    steps : int

    Returns
    -------
    Tensor of shape (steps + 1, B, d)
    """
    v.check_regression_inputs(X, y)
    steps = _check_steps(steps)
    B, n, d = X.shape
    Hess = _gram(X) / n
    b = (X.transpose(-1, -2) @ y.unsqueeze(-1)).squeeze(-1) / n
    eye = torch.eye(d, dtype=X.dtype, device=X.device).expand(B, d, d)
    Hinv = eye.clone()
    out = X.new_zeros((steps + 1, B, d))
    w = out[0].clone()
    g = -b
    for t in range(steps):
        p = -(Hinv @ g.unsqueeze(-1)).squeeze(-1)
        step = _quadratic_line_search(g, p, Hess)
        s = step * p
        w = w + s
        g_new = (Hess @ w.unsqueeze(-1)).squeeze(-1) - b
        u = g_new - g
        rho = _safe_div(torch.ones_like(step.squeeze(-1)), (s * u).sum(-1)).reshape(B, 1, 1)
        left = eye - rho * s.unsqueeze(-1) @ u.unsqueeze(-2)
        Hinv = left @ Hinv @ left.transpose(-1, -2) + rho * s.unsqueeze(-1) @ s.unsqueeze(-2)
        g = g_new
        out[t + 1] = w
    return out


def online_gradient_descent(X: torch.Tensor, y: torch.Tensor, lr=None, *, normalized: bool = False) -> torch.Tensor:
    r"""Online (one example at a time) gradient descent, from ``w₀ = 0``.

    ``w_i = w_{i−1} + η (y_i − x_iᵀ w_{i−1}) x_i`` for ``i = 1…n``: one pass over
    the context in order, the algorithm Fu et al. find LSTMs resemble. With
    ``normalized=True`` the step is Fu et al.'s ``η_i = lr/‖x_i‖²`` (normalized LMS; with
    ``lr = 1`` each update makes the new pair fit exactly).

    Parameters
    ----------
    X : Tensor of shape (B, n, d)
    y : Tensor of shape (B, n)
    lr : float or Tensor of shape (B,), optional
        ``None`` picks ``1/mean_i ‖x_i‖²`` per problem (``1`` when ``normalized``).
    normalized : bool
        Divide each step by ``‖x_i‖²``.

    Returns
    -------
    Tensor of shape (n + 1, B, d)
        ``out[i]`` is the estimate after seeing the first ``i`` examples.
    """
    v.check_regression_inputs(X, y)
    if not isinstance(normalized, bool):
        raise TypeError(f"normalized must be a bool, got {type(normalized).__name__}")
    B, n, d = X.shape
    if lr is None:
        eta = X.new_ones(B, 1) if normalized else (1.0 / (X * X).sum(-1).mean(-1)).reshape(B, 1)
    else:
        eta = _per_problem(lr, B, X, "lr", 1)
    out = X.new_zeros((n + 1, B, d))
    w = out[0].clone()
    for i in range(n):
        x = X[:, i]
        residual = y[:, i] - (x * w).sum(-1)
        if normalized:
            residual = residual / (x * x).sum(-1).clamp_min(torch.finfo(X.dtype).tiny)
        w = w + eta * residual.unsqueeze(-1) * x
        out[i + 1] = w
    return out


# --------------------------------------------------------------------------- logistic regression


def _check_logistic_point(X, y, w, mu) -> float:
    """Prompts with labels ±1, ``mu > 0`` and ``w`` of shape (B, d) or (T, B, d); returns ``mu``."""
    v.check_regression_inputs(X, y)
    v.check_labels_pm1(y)
    mu = v.check_positive(mu, "mu")
    v.check_tensor(w, "w", ndim=(2, 3))
    if w.shape[-2:] != (X.shape[0], X.shape[2]):
        raise ValueError(f"w must have shape (B, d) = {(X.shape[0], X.shape[2])} or (T, B, d), got {tuple(w.shape)}")
    return mu


def logistic_loss(X: torch.Tensor, y: torch.Tensor, w: torch.Tensor, mu: float) -> torch.Tensor:
    """``mean_i log(1 + exp(−y_i x_iᵀw)) + (mu/2)‖w‖²`` per problem.

    Parameters
    ----------
    X : Tensor of shape (B, n, d)
    y : Tensor of shape (B, n), labels ±1
    w : Tensor of shape (B, d) or (T, B, d)
    mu : float, ``> 0``

    Returns
    -------
    Tensor of shape (B,) or (T, B)
    """
    mu = _check_logistic_point(X, y, w, mu)
    margins = y * (X @ w.unsqueeze(-1)).squeeze(-1)
    return torch.nn.functional.softplus(-margins).mean(-1) + 0.5 * mu * (w * w).sum(-1)


def logistic_hessian_bound(mu: float) -> float:
    """``1/4 + μ``: ``H = (1/n) Σ σ'(z_i) x_i x_iᵀ + μI ⪯ (1/4 + μ)I`` when every ``‖x_i‖ <= 1``."""
    return 0.25 + v.check_positive(mu, "mu")


def logistic_inner_alpha(mu: float) -> float:
    """The fixed Newton–Schulz start ``M₀ = αH`` of :func:`damped_newton_logistic`: ``α = 1/(1/4 + μ)²``.

    With ``‖x_i‖ <= 1``, ``μI ⪯ H ⪯ (1/4 + μ)I``, so the eigenvalues of ``I − αH²`` lie in
    ``[0, 1 − 1/κ_f²]`` with ``κ_f = (1/4 + μ)/μ``: the residual squares every inner step and
    ``k`` steps leave at most ``(1 − 1/κ_f²)^(2^k)`` — for every such problem, with one α
    that a network's weights can hold.
    """
    return 1.0 / logistic_hessian_bound(mu) ** 2


def _logistic_newton_system(X, y, w, mu):
    """Gradient ``(B, d)`` and Hessian ``(B, d, d)`` of the regularized logistic loss at ``w``."""
    n, d = X.shape[1], X.shape[2]
    margins = y * (X @ w.unsqueeze(-1)).squeeze(-1)  # (B, n)
    s = torch.sigmoid(-margins)  # = 1 − σ(margin)
    g = -(X.transpose(-1, -2) @ (y * s).unsqueeze(-1)).squeeze(-1) / n + mu * w
    curvature = s * (1 - s)  # σ(z)(1 − σ(z))
    eye = torch.eye(d, dtype=X.dtype, device=X.device)
    H = (X.transpose(-1, -2) * curvature.unsqueeze(-2)) @ X / n + mu * eye
    return g, H


def _newton_direction(g, H, mu, inner_steps):
    """``H⁻¹g`` (a solve), or ``M_k g`` after ``k`` Newton–Schulz steps from ``M₀ = αH``."""
    if inner_steps is None:
        return torch.linalg.solve(H, g.unsqueeze(-1)).squeeze(-1)
    M = logistic_inner_alpha(mu) * H
    for _ in range(inner_steps):
        M = 2 * M - M @ H @ M
    return (M @ g.unsqueeze(-1)).squeeze(-1)


def damped_newton_logistic(
    X: torch.Tensor, y: torch.Tensor, mu: float, steps: int, *, inner_steps=None, damped: bool = True, w0=None
) -> torch.Tensor:
    r"""Damped Newton on ℓ2-regularized logistic regression (Giannou et al. 2024, §5).

    Loss ``f(w) = mean_i log(1 + exp(−y_i x_iᵀw)) + (μ/2)‖w‖²``; from ``w₀ = 0``,
    ``w⁺ = w − (2√μ / (2√μ + λ(w))) H⁻¹g`` with the Newton decrement
    ``λ(w) = √(gᵀH⁻¹g)``. The step is Nesterov's ``1/(1 + M_f λ)`` for the
    self-concordance constant ``M_f = 1/(2√μ)`` of ``f`` when ``‖x_i‖ <= 1`` (his
    convention ``|D³f[u,u,u]| <= 2M_f ‖u‖³``). The damping keeps every step inside the
    Dikin ellipsoid; once ``M_f λ < 1/4`` the step tends to the full Newton step and
    convergence is quadratic.

    Parameters
    ----------
    X : Tensor of shape (B, n, d)
    y : Tensor of shape (B, n)
        Labels −1 or +1.
    mu : float
        Regularization ``> 0``.
    steps : int
    inner_steps : int, optional
        ``None``: ``H⁻¹g`` by a linear solve. ``k``: ``H⁻¹`` replaced by ``M_k`` after ``k``
        Newton–Schulz steps ``M ← 2M − MHM`` from ``M₀ = αH`` with the fixed
        ``α = 1/(1/4 + μ)²`` (:func:`logistic_inner_alpha`; it needs ``‖x_i‖ <= 1``, which is
        then checked), used for the direction ``M_k g`` *and* the decrement
        ``λ² = gᵀM_k g`` — the inexact damped Newton that
        :func:`tfnewton.constructions.logistic_newton_transformer` performs.
    damped : bool
        ``False`` takes full Newton steps (``w⁺ = w − H⁻¹g``). From ``w₀ = 0`` these happen
        to be safe in practice (``H(w) ⪯ H(0)`` for every ``w``, so the first step minimizes a
        quadratic upper bound of ``f``); from a start far from the minimizer they can
        oscillate or diverge where the damped steps converge.
    w0 : Tensor of shape (B, d), optional
        Starting point; zeros by default.

    Returns
    -------
    Tensor of shape (steps + 1, B, d)
    """
    v.check_regression_inputs(X, y)
    v.check_labels_pm1(y)
    mu = v.check_positive(mu, "mu")
    steps = _check_steps(steps)
    if inner_steps is not None:
        inner_steps = v.check_int(inner_steps, "inner_steps", minimum=0)
        v.check_unit_ball(X, "X")
    B, n, d = X.shape
    out = X.new_zeros((steps + 1, B, d))
    if w0 is not None:
        v.check_tensor(w0, "w0", ndim=2)
        v.check_shape(w0, "w0", (B, d))
        v.check_same_device_dtype({"X": X, "w0": w0})
        out[0] = w0
    w = out[0].clone()
    two_sqrt_mu = 2.0 * math.sqrt(mu)
    for t in range(steps):
        g, H = _logistic_newton_system(X, y, w, mu)
        newton_dir = _newton_direction(g, H, mu, inner_steps)
        if damped:
            decrement = torch.sqrt(torch.clamp((g * newton_dir).sum(-1), min=0))
            step = two_sqrt_mu / (two_sqrt_mu + decrement)
            w = w - step.unsqueeze(-1) * newton_dir
        else:
            w = w - newton_dir
        out[t + 1] = w
    return out


def newton_decrement_logistic(X: torch.Tensor, y: torch.Tensor, w: torch.Tensor, mu: float) -> torch.Tensor:
    r"""The Newton decrement ``λ(w) = √(gᵀH⁻¹g)`` of the regularized logistic loss.

    Damped Newton's two phases read on ``M_f λ(w) = λ(w)/(2√μ)``: a constant decrease of
    ``f`` while it is ``>= 1/4``, quadratic convergence below.

    Parameters
    ----------
    X : Tensor of shape (B, n, d)
    y : Tensor of shape (B, n), labels ±1
    w : Tensor of shape (B, d) or (T, B, d)
    mu : float, ``> 0``

    Returns
    -------
    Tensor of shape (B,) or (T, B)
    """
    mu = _check_logistic_point(X, y, w, mu)
    ws = w.unsqueeze(0) if w.ndim == 2 else w
    out = []
    for wt in ws:
        g, H = _logistic_newton_system(X, y, wt, mu)
        newton_dir = torch.linalg.solve(H, g.unsqueeze(-1)).squeeze(-1)
        out.append(torch.sqrt(torch.clamp((g * newton_dir).sum(-1), min=0)))
    out = torch.stack(out)
    return out[0] if w.ndim == 2 else out


def _logistic_gradient(X, y, w, mu):
    """∇f(w) for the regularized logistic loss, shape (B, d)."""
    n = X.shape[1]
    margins = y * (X @ w.unsqueeze(-1)).squeeze(-1)
    return -(X.transpose(-1, -2) @ (y * torch.sigmoid(-margins)).unsqueeze(-1)).squeeze(-1) / n + mu * w


def gradient_descent_logistic(X: torch.Tensor, y: torch.Tensor, mu: float, steps: int, lr=None) -> torch.Tensor:
    r"""Gradient descent on ℓ2-regularized logistic regression, from ``w₀ = 0``.

    The first-order baseline for :func:`damped_newton_logistic`: the same loss
    ``f(w) = mean_i log(1 + exp(−y_i x_iᵀw)) + (μ/2)‖w‖²`` and
    ``w⁺ = w − η ∇f(w)``.

    Parameters
    ----------
    X : Tensor of shape (B, n, d)
    y : Tensor of shape (B, n)
        Labels −1 or +1.
    mu : float
        Regularization ``> 0``.
    steps : int
    lr : float or Tensor of shape (B,), optional
        ``None`` picks ``1/β`` per problem with the smoothness constant
        ``β = λ_max(XᵀX)/(4n) + μ`` (the logistic curvature is at most 1/4), for
        which ``f`` decreases monotonically; GD then needs ``O(κ_f log 1/ε)`` steps
        with ``κ_f = β/μ``.

    Returns
    -------
    Tensor of shape (steps + 1, B, d)
    """
    v.check_regression_inputs(X, y)
    v.check_labels_pm1(y)
    mu = v.check_positive(mu, "mu")
    steps = _check_steps(steps)
    B, n, d = X.shape
    if lr is None:
        eta = (1.0 / (_largest_eigenvalue(_gram(X)) / (4 * n) + mu)).reshape(B, 1)
    else:
        eta = _per_problem(lr, B, X, "lr", 1)
    out = X.new_zeros((steps + 1, B, d))
    w = out[0].clone()
    for t in range(steps):
        w = w - eta * _logistic_gradient(X, y, w, mu)
        out[t + 1] = w
    return out


# --------------------------------------------------------------------------- sparse recovery


def soft_threshold(z: torch.Tensor, threshold) -> torch.Tensor:
    """``sign(z) · max(|z| − threshold, 0)``, the proximal map of ``threshold·‖·‖₁``."""
    return torch.sign(z) * torch.clamp(z.abs() - threshold, min=0)


def lasso_objective(X: torch.Tensor, y: torch.Tensor, beta: torch.Tensor, lam: float) -> torch.Tensor:
    """``(1/2)‖y − Xβ‖² + lam‖β‖₁`` per problem; ``beta`` of shape (B, d) or (T, B, d)."""
    v.check_regression_inputs(X, y)
    lam = v.check_positive(lam, "lam")
    v.check_tensor(beta, "beta", ndim=(2, 3))
    residual = y - (X @ beta.unsqueeze(-1)).squeeze(-1)
    return 0.5 * (residual * residual).sum(-1) + lam * beta.abs().sum(-1)


def _lasso_setup(X, y, lam, steps, lr):
    v.check_regression_inputs(X, y)
    lam = v.check_positive(lam, "lam")
    steps = _check_steps(steps)
    B, n, d = X.shape
    S = _gram(X)
    eta = (1.0 / _largest_eigenvalue(S)).reshape(B, 1) if lr is None else _per_problem(lr, B, X, "lr", 1)
    Xty = (X.transpose(-1, -2) @ y.unsqueeze(-1)).squeeze(-1)
    return lam, steps, S, eta, Xty


def ista(X: torch.Tensor, y: torch.Tensor, lam: float, steps: int, lr=None) -> torch.Tensor:
    r"""ISTA (proximal gradient) on the LASSO ``(1/2)‖y − Xβ‖² + lam‖β‖₁``, from ``β₀ = 0``.

    ``β⁺ = soft(β − η Xᵀ(Xβ − y), η·lam)``.

    Parameters
    ----------
    X : Tensor of shape (B, n, d)
        Measurement matrices.
    y : Tensor of shape (B, n)
    lam : float
        ℓ1 weight ``> 0``.
    steps : int
    lr : float or Tensor of shape (B,), optional
        ``None`` picks ``1/λ_max(XᵀX)`` per problem (the inverse Lipschitz constant
        of the gradient), for which the objective decreases monotonically.

    Returns
    -------
    Tensor of shape (steps + 1, B, d)
    """
    lam, steps, S, eta, Xty = _lasso_setup(X, y, lam, steps, lr)
    out = X.new_zeros((steps + 1,) + Xty.shape)
    beta = out[0].clone()
    for t in range(steps):
        grad = (S @ beta.unsqueeze(-1)).squeeze(-1) - Xty
        beta = soft_threshold(beta - eta * grad, eta * lam)
        out[t + 1] = beta
    return out


def fista(X: torch.Tensor, y: torch.Tensor, lam: float, steps: int, lr=None) -> torch.Tensor:
    r"""FISTA (Beck & Teboulle 2009) on the LASSO, from ``β₀ = 0``.

    ISTA's proximal step taken at an extrapolated point
    ``z = β_t + ((τ_{t−1} − 1)/τ_t)(β_t − β_{t−1})``, ``τ_{t} = (1 + √(1 + 4τ_{t−1}²))/2``,
    ``τ₀ = 1``: objective error ``O(1/t²)`` instead of ISTA's ``O(1/t)``.

    Parameters and returns as in :func:`ista`.
    """
    lam, steps, S, eta, Xty = _lasso_setup(X, y, lam, steps, lr)
    out = X.new_zeros((steps + 1,) + Xty.shape)
    beta = out[0].clone()
    z = beta.clone()
    tau = 1.0
    for t in range(steps):
        grad = (S @ z.unsqueeze(-1)).squeeze(-1) - Xty
        beta_new = soft_threshold(z - eta * grad, eta * lam)
        tau_new = (1.0 + math.sqrt(1.0 + 4.0 * tau * tau)) / 2.0
        z = beta_new + ((tau - 1.0) / tau_new) * (beta_new - beta)
        beta, tau = beta_new, tau_new
        out[t + 1] = beta
    return out


# =========================================================================== the registry
#
# The names that tfnewton.probes.probe_iterates, tfnewton.metrics.match_algorithm and
# tfnewton.compare accept for an algorithm, each with what it solves and its own parameters.


class _Required:
    """The default of a parameter that has none (``mu`` of a logistic method, ``lam`` of ISTA)."""

    def __repr__(self) -> str:
        return "REQUIRED"


#: Marks a parameter of an :class:`Algorithm` that has no default and must be given.
REQUIRED = _Required()

#: The task kinds an :class:`Algorithm` may say it solves.
TASK_KINDS = ("linear_regression", "logistic_regression", "sparse_recovery")


@dataclass(frozen=True)
class Algorithm:
    """One entry of :data:`ALGORITHMS`: an iterative method the probes and ``compare`` can name.

    Calling it runs it: ``algorithm(X, y, steps, **params) -> (steps + 1, B, d)``, every
    iterate from ``w_0``.

    Parameters
    ----------
    name : str
    function : callable
        ``function(X, y, steps, **params) -> Tensor (steps + 1, B, d)``. For an algorithm that
        ``needs_fit``, a builder ``function(**params) -> module`` instead: the module has
        ``fit(...)`` and ``iterates(X, y) -> (layers + 1, B, d)`` (every layer's estimate);
        pass the *fitted* module wherever an algorithm is asked for.
    task : str
        The kind of problem it solves, one of :data:`TASK_KINDS`.
    parameters : mapping, optional
        Its own parameters and their defaults (:data:`REQUIRED` when there is none), e.g.
        ``{"mu": REQUIRED}`` or ``{"lr": None}``. Only these are accepted; ``None`` accepts
        any keyword (a user's callable).
    needs_fit : bool
        A learned method (LISTA-type): its parameters are fitted on problems before it runs.
    online : bool
        Its iterate ``k`` is the estimate after the first ``k`` examples (one pass over the
        context): ``steps`` is ignored and ``n + 1`` iterates come back.
    description : str
        One line for tables and error messages.
    """

    name: str
    function: Callable
    task: str = "linear_regression"
    parameters: Mapping | None = field(default_factory=dict)
    needs_fit: bool = False
    online: bool = False
    description: str = ""

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"name must be a non-empty str, got {self.name!r}")
        if not callable(self.function):
            raise TypeError(f"function must be callable, got {type(self.function).__name__}")
        if self.task not in TASK_KINDS:
            raise ValueError(f"task must be one of {TASK_KINDS}, got {self.task!r}")
        if self.parameters is not None:
            if not isinstance(self.parameters, Mapping) or not all(isinstance(k, str) for k in self.parameters):
                raise TypeError(f"parameters must be a mapping name -> default, got {self.parameters!r}")
            object.__setattr__(self, "parameters", MappingProxyType(dict(self.parameters)))

    def resolve_parameters(self, **params) -> dict:
        """The keyword arguments a run uses: the defaults, overridden by ``params``.

        Raises
        ------
        ValueError
            A parameter the algorithm does not take, or a required one missing.
        """
        if self.parameters is None:
            return dict(params)
        unknown = sorted(set(params) - set(self.parameters))
        if unknown:
            takes = ", ".join(self.parameters) or "no parameters"
            raise ValueError(f"{self.name} takes {takes}; got {', '.join(unknown)}")
        merged = {**self.parameters, **params}
        missing = [k for k, value in merged.items() if value is REQUIRED]
        if missing:
            raise ValueError(f"{self.name} needs {', '.join(missing)} (no default)")
        return merged

    def build(self, **params):
        """A new, unfitted module of a learned algorithm (``needs_fit``): ``function(**params)``."""
        if not self.needs_fit:
            raise TypeError(f"{self.name} is not fitted; run it with {self.name}(X, y, steps, ...)")
        return self.function(**self.resolve_parameters(**params))

    def __call__(self, X: torch.Tensor, y: torch.Tensor, steps: int, **params) -> torch.Tensor:
        if self.needs_fit:
            raise TypeError(
                f"{self.name} must be fitted before it runs: module = ALGORITHMS[{self.name!r}].build(...); "
                "module.fit(...); then pass the fitted module as the algorithm"
            )
        steps = _check_steps(steps)
        return self.function(X, y, steps, **self.resolve_parameters(**params))


#: Every named algorithm, ``name -> Algorithm``; add one with :func:`register_algorithm`.
ALGORITHMS: dict = {}


def register_algorithm(
    name: str,
    function: Callable,
    *,
    task: str = "linear_regression",
    parameters: Mapping | None = None,
    needs_fit: bool = False,
    online: bool = False,
    description: str = "",
    replace: bool = False,
) -> Algorithm:
    """Add an algorithm to :data:`ALGORITHMS`, so the probes and ``compare`` accept its name.

    Parameters
    ----------
    name : str
    function : callable
        ``function(X, y, steps, **params) -> (steps + 1, B, d)``: adapt a function whose
        arguments come in another order with a small wrapper (see the example). For
        ``needs_fit``, a builder ``function(**params) -> module`` (see :class:`Algorithm`).
    task, parameters, needs_fit, online, description
        As in :class:`Algorithm`; ``parameters`` defaults to none.
    replace : bool
        Overwrite an entry of the same name (otherwise that is an error).

    Returns
    -------
    Algorithm

    Examples
    --------
    Damped Newton for logistic regression takes ``(X, y, mu, steps)``, with ``mu`` required:
    wrap it into the registry's order and declare its parameters (the module that defines the
    algorithm registers it, once, at import):

    >>> from tfnewton.algorithms import REQUIRED, damped_newton_logistic, register_algorithm
    >>> def damped_newton(X, y, steps, mu):
    ...     return damped_newton_logistic(X, y, mu, steps)
    >>> register_algorithm("damped_newton", damped_newton, task="logistic_regression",
    ...                    parameters={"mu": REQUIRED}, description="damped Newton")  # doctest: +SKIP

    A learned method registers a builder instead, with ``needs_fit=True``; its fitted module
    (``fit(...)``, then ``iterates(X, y)`` gives every layer's estimate) is what callers pass:

    >>> register_algorithm("lista", LISTA, task="sparse_recovery", parameters={"layers": 16},
    ...                    needs_fit=True)  # doctest: +SKIP
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty str, got {name!r}")
    if name in ALGORITHMS and not replace:
        raise ValueError(f"an algorithm named {name!r} is registered already; pass replace=True to overwrite it")
    entry = Algorithm(name, function, task, {} if parameters is None else parameters, needs_fit, online, description)
    ALGORITHMS[name] = entry
    return entry


def as_algorithm(algorithm) -> Algorithm:
    """An :class:`Algorithm` for a registered name, a fitted module or a plain callable.

    Parameters
    ----------
    algorithm : str, Algorithm, fitted module or callable
        A name of :data:`ALGORITHMS`; an :class:`Algorithm`; an object with
        ``iterates(X, y) -> (layers + 1, B, d)`` (a fitted learned method, or a construction);
        or a callable ``(X, y, steps, **kwargs) -> (steps + 1, B, d)``.

    Returns
    -------
    Algorithm
    """
    if isinstance(algorithm, Algorithm):
        return algorithm
    if isinstance(algorithm, str):
        if algorithm in ALGORITHMS:
            return ALGORITHMS[algorithm]
    elif callable(getattr(algorithm, "iterates", None)):
        fitted = algorithm

        def run_fitted(X, y, steps):
            W = fitted.iterates(X, y)
            if steps >= W.shape[0]:
                raise ValueError(f"steps = {steps} but {type(fitted).__name__} has {W.shape[0] - 1} layers")
            return W[: steps + 1]

        return Algorithm(type(fitted).__name__, run_fitted, parameters={})
    elif callable(algorithm):
        return Algorithm(getattr(algorithm, "__name__", "algorithm"), algorithm, parameters=None)
    raise ValueError(
        f"algorithm must be one of {sorted(ALGORITHMS)}, a fitted module with iterates(X, y), or a "
        f"callable (X, y, steps) -> (steps + 1, B, d), got {algorithm!r}"
    )


def iterates(algorithm, X: torch.Tensor, y: torch.Tensor, steps: int, **params) -> torch.Tensor:
    """Every iterate of an algorithm, named or given (see :func:`as_algorithm`).

    Parameters
    ----------
    algorithm : str, Algorithm, fitted module or callable
        ``"newton"`` (Iterative Newton), ``"gd"``, ``"cg"``, ``"lbfgs"``, ``"bfgs"``,
        ``"online_gd"`` (its iterate ``k`` is the estimate after ``k`` examples; ``steps`` is
        ignored and ``n + 1`` iterates come back), ``"ols"`` (the least-squares solution at
        every step), ``"ista"``, ``"fista"`` (``lam=`` required), anything registered with
        :func:`register_algorithm`, or see :func:`as_algorithm`.
    X : Tensor of shape (B, n, d)
    y : Tensor of shape (B, n)
    steps : int
    **params
        The algorithm's own parameters (``alpha``/``ridge`` for Newton, ``lr`` for GD,
        ``memory`` for L-BFGS, ``lam`` for ISTA, …).

    Returns
    -------
    Tensor of shape (steps + 1, B, d)
    """
    return as_algorithm(algorithm)(X, y, steps, **params)


def prefix_predictions(algorithm, X: torch.Tensor, y: torch.Tensor, steps: int, **params) -> torch.Tensor:
    """The algorithm's prediction of every label from the pairs before it.

    ``out[k, b, i] = x_iᵀ w_k(first i pairs)`` — what a causal in-context learner predicts at
    position ``i``; ``0`` at ``i = 0`` (no context; every algorithm here starts at ``w = 0``).

    Parameters
    ----------
    algorithm, steps, **params
        As in :func:`iterates`.
    X : Tensor of shape (B, n, d)
    y : Tensor of shape (B, n)

    Returns
    -------
    Tensor of shape (steps + 1, B, n)
        For an ``online`` algorithm (``"online_gd"``): shape ``(1, B, n)`` (one pass, no step
        count).
    """
    entry = as_algorithm(algorithm)
    v.check_regression_inputs(X, y)
    steps = _check_steps(steps)
    B, n, d = X.shape
    if entry.online:
        W = entry(X, y, steps, **params)  # (n + 1, B, d)
        return torch.einsum("ibd,bid->bi", W[:n], X).unsqueeze(0)
    out = X.new_zeros((steps + 1, B, n))
    for i in range(1, n):
        W = entry(X[:, :i], y[:, :i], steps, **params)  # (S+1, B, d)
        out[:, :, i] = (W * X[:, i]).sum(-1)
    return out


def step_list(steps) -> list:
    """The steps to report: ``0 … steps`` for an int, else the listed ones (non-negative ints).

    Parameters
    ----------
    steps : int or sequence of int

    Returns
    -------
    list of int
    """
    if isinstance(steps, int) and not isinstance(steps, bool):
        return list(range(v.check_int(steps, "steps", minimum=0) + 1))
    try:
        out = [v.check_int(s, "steps[i]", minimum=0) for s in steps]
    except TypeError as err:
        raise TypeError(f"steps must be an int or a sequence of ints, got {steps!r}") from err
    if not out:
        raise ValueError("steps must not be empty")
    return out


def _run_online_gd(X, y, steps, **params):
    return online_gradient_descent(X, y, **params)


def _run_least_squares(X, y, steps, **params):
    w = least_squares(X, y, **params)
    return w.unsqueeze(0).expand(steps + 1, *w.shape)


def _run_ista(X, y, steps, lam, **params):
    return ista(X, y, lam, steps, **params)


def _run_fista(X, y, steps, lam, **params):
    return fista(X, y, lam, steps, **params)


register_algorithm("newton", newton_least_squares, parameters={"alpha": None, "ridge": 0.0},
                   description="Iterative Newton (Fu et al.)")
register_algorithm("gd", gradient_descent_least_squares, parameters={"lr": None}, description="gradient descent")
register_algorithm("cg", conjugate_gradient_least_squares, description="conjugate gradient")
register_algorithm("lbfgs", lbfgs_least_squares, parameters={"memory": 5}, description="L-BFGS")
register_algorithm("bfgs", bfgs_least_squares, description="BFGS")
register_algorithm("online_gd", _run_online_gd, parameters={"lr": None, "normalized": False}, online=True,
                   description="online gradient descent (one pass over the context)")
register_algorithm("ols", _run_least_squares, parameters={"ridge": 0.0},
                   description="the least-squares solution at every step")
register_algorithm("ista", _run_ista, task="sparse_recovery", parameters={"lam": REQUIRED, "lr": None},
                   description="ISTA on the LASSO")
register_algorithm("fista", _run_fista, task="sparse_recovery", parameters={"lam": REQUIRED, "lr": None},
                   description="FISTA on the LASSO")


def _run_damped_newton_logistic(X, y, steps, mu, **params):
    return damped_newton_logistic(X, y, mu, steps, **params)


def _run_gradient_descent_logistic(X, y, steps, mu, **params):
    return gradient_descent_logistic(X, y, mu, steps, **params)


register_algorithm("damped_newton_logistic", _run_damped_newton_logistic, task="logistic_regression",
                   parameters={"mu": REQUIRED, "inner_steps": None, "damped": True, "w0": None},
                   description="damped Newton on the regularized logistic loss (Giannou et al.)")
register_algorithm("gradient_descent_logistic", _run_gradient_descent_logistic, task="logistic_regression",
                   parameters={"mu": REQUIRED, "lr": None},
                   description="gradient descent on the regularized logistic loss")
