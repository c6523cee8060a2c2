r"""Samplers of in-context problems.

Every sampler takes a ``torch.Generator`` (so a run repeats exactly), a device
and a dtype, and returns a small dataclass whose tensors put the batch axis
first. Draws are made in float64 and then cast, so the float32 problems are the
float64 ones rounded: a book page can compare precisions on the same problems.

Given the same generator seed, device and arguments, a sampler returns the same
problems. CPU and CUDA generators are different streams, so the problems drawn
on a GPU differ from those drawn on the CPU for the same seed (each repeats
exactly on its own device).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from . import _validate as v

__all__ = [
    "LinearRegressionTask",
    "LogisticRegressionTask",
    "SparseRecoveryTask",
    "sample_linear_regression",
    "sample_logistic_regression",
    "sample_sparse_recovery",
    "sample_spd",
    "sample_matrices",
    "random_orthogonal",
    "covariance_eigenvalues",
]


# --------------------------------------------------------------------------- containers


class _Task:
    """Shared behaviour of the task dataclasses."""

    X: torch.Tensor
    y: torch.Tensor

    @property
    def batch(self) -> int:
        return self.X.shape[0]

    @property
    def n(self) -> int:
        return self.X.shape[1]

    @property
    def d(self) -> int:
        return self.X.shape[2]

    def to(self, device=None, dtype=None):
        """A copy with every tensor moved to ``device`` and floating tensors cast to ``dtype``."""
        changes = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                cast = dtype if (dtype is not None and value.is_floating_point()) else None
                changes[f.name] = value.to(device=device, dtype=cast)
        return type(self)(**{**{f.name: getattr(self, f.name) for f in fields(self)}, **changes})

    def __getitem__(self, index):
        """The same problems restricted to a batch index or slice (the batch axis is kept)."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        changes = {
            f.name: getattr(self, f.name)[index]
            for f in fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        return type(self)(**{**{f.name: getattr(self, f.name) for f in fields(self)}, **changes})

    def context_and_query(self, k: int | None = None):
        """Split each prompt into ``k`` context pairs and one query (the point after them).

        Parameters
        ----------
        k : int, optional
            Number of context pairs, ``0 <= k < n``; default ``n − 1`` (the last point
            is the query).

        Returns
        -------
        X_context : Tensor of shape (B, k, d)
        y_context : Tensor of shape (B, k)
        x_query : Tensor of shape (B, d)
        y_query : Tensor of shape (B,)
        """
        k = self.n - 1 if k is None else v.check_int(k, "k", minimum=0)
        if k >= self.n:
            raise ValueError(f"k must be < n = {self.n} so that a query point remains, got {k}")
        return self.X[:, :k], self.y[:, :k], self.X[:, k], self.y[:, k]


@dataclass
class LinearRegressionTask(_Task):
    """A batch of linear-regression prompts ``y = Xw + noise``.

    Attributes
    ----------
    X : Tensor of shape (B, n, d)
    y : Tensor of shape (B, n)
    w : Tensor of shape (B, d)
        The weights that generated ``y``.
    noise_std : float
    condition_number : float
        Condition number of the input covariance.
    """

    X: torch.Tensor
    y: torch.Tensor
    w: torch.Tensor
    noise_std: float = 0.0
    condition_number: float = 1.0


@dataclass
class LogisticRegressionTask(_Task):
    """A batch of binary classification prompts with labels ±1.

    Attributes
    ----------
    X : Tensor of shape (B, n, d)
        Inputs with ``‖x_i‖ ≤ 1`` (the bound under which Giannou et al.'s
        self-concordance constant holds).
    y : Tensor of shape (B, n)
        Labels −1 or +1.
    w : Tensor of shape (B, d)
        The weights of the logistic model that drew the labels.
    """

    X: torch.Tensor
    y: torch.Tensor
    w: torch.Tensor
    condition_number: float = 1.0


@dataclass
class SparseRecoveryTask(_Task):
    """A batch of sparse-recovery prompts ``y = Xβ + noise`` with ``k``-sparse ``β``.

    Attributes
    ----------
    X : Tensor of shape (B, n, d)
        Gaussian measurement matrices with entries ``N(0, 1/n)`` (columns of norm ≈ 1).
    y : Tensor of shape (B, n)
    w : Tensor of shape (B, d)
        The sparse vector ``β``.
    support : Tensor of shape (B, d), bool
        Where ``β`` is non-zero.
    """

    X: torch.Tensor
    y: torch.Tensor
    w: torch.Tensor
    support: torch.Tensor
    sparsity: int = 1
    noise_std: float = 0.0


# --------------------------------------------------------------------------- building blocks


def _setup(batch, d, generator, device, dtype, *, n=None):
    batch = v.check_int(batch, "batch", minimum=1)
    d = v.check_int(d, "d", minimum=1)
    if n is not None:
        v.check_int(n, "n", minimum=1)
    device = v.check_device(device)
    dtype = v.check_dtype(dtype)
    v.check_generator(generator, device)
    return batch, d, device, dtype


def _randn(shape, generator, device) -> torch.Tensor:
    return torch.randn(shape, generator=generator, device=device, dtype=torch.float64)


def random_orthogonal(batch: int, d: int, *, generator=None, device=None, dtype=torch.float64) -> torch.Tensor:
    """Haar-random orthogonal matrices (QR of a Gaussian matrix with the sign fixed).

    Returns
    -------
    Tensor of shape (batch, d, d)
    """
    batch, d, device, dtype = _setup(batch, d, generator, device, dtype)
    return _random_orthogonal(batch, d, generator, device).to(dtype)


def _random_orthogonal(batch, d, generator, device) -> torch.Tensor:
    Q, R = torch.linalg.qr(_randn((batch, d, d), generator, device))
    return Q * torch.sign(torch.diagonal(R, dim1=-2, dim2=-1)).unsqueeze(-2)


def covariance_eigenvalues(d: int, condition_number: float, *, dtype=torch.float64, device=None) -> torch.Tensor:
    """Eigenvalues of the input covariance with condition number ``κ``.

    Fu et al.'s ill-conditioned setting: the first ``⌈d/2⌉`` eigenvalues equal
    ``κ``, the rest ``1`` (for ``d = 1`` a single eigenvalue). Here they are then
    scaled so that their mean is 1 (``E‖x‖² = d``, as for isotropic inputs), so a
    model trained on isotropic data sees inputs of the usual size.

    Returns
    -------
    Tensor of shape (d,)
    """
    d = v.check_int(d, "d", minimum=1)
    kappa = _check_condition_number(condition_number)
    device = v.check_device(device)
    eig = torch.ones(d, dtype=torch.float64, device=device)
    if d > 1:
        eig[: (d + 1) // 2] = kappa
    return (eig / eig.mean()).to(dtype)


def _check_condition_number(condition_number) -> float:
    kappa = v.check_positive(condition_number, "condition_number")
    if kappa < 1:
        raise ValueError(f"condition_number must be >= 1, got {kappa}")
    return kappa


def _gaussian_inputs(batch, n, d, kappa, generator, device) -> torch.Tensor:
    """x ~ N(0, Σ) with κ(Σ) = kappa and a random eigenbasis per prompt; float64 (B, n, d)."""
    Z = _randn((batch, n, d), generator, device)
    if kappa == 1.0:
        return Z
    scales = covariance_eigenvalues(d, kappa, device=device).sqrt()
    Q = _random_orthogonal(batch, d, generator, device)
    return (Z * scales) @ Q.transpose(-1, -2)


# --------------------------------------------------------------------------- samplers


def sample_linear_regression(
    batch: int,
    n: int,
    d: int,
    *,
    noise_std: float = 0.0,
    condition_number: float = 1.0,
    generator: torch.Generator | None = None,
    device=None,
    dtype: torch.dtype = torch.float32,
) -> LinearRegressionTask:
    """Linear-regression prompts as in Garg et al. (2022) and Fu et al. (2024).

    ``w ~ N(0, I_d)``, ``x_i ~ N(0, Σ)``, ``y_i = w·x_i + noise_std·ε_i``.
    ``Σ = I`` when ``condition_number = 1``; otherwise ``Σ = Q diag(λ) Qᵀ`` with a
    random orthogonal ``Q`` per prompt and the eigenvalues of
    :func:`covariance_eigenvalues` (half ``κ``, half ``1``, mean 1).

    Parameters
    ----------
    batch, n, d : int
        Number of prompts, points per prompt, input dimension.
    noise_std : float, optional
        Standard deviation of the label noise, ``>= 0``.
    condition_number : float, optional
        ``κ(Σ) >= 1``.
    generator : torch.Generator, optional
        On ``device``; the same seed gives the same problems.
    device : str or torch.device, optional
        Default CPU.
    dtype : torch.dtype, optional
        Default float32.

    Returns
    -------
    LinearRegressionTask
        ``X (B, n, d)``, ``y (B, n)``, ``w (B, d)``.

    Examples
    --------
    >>> import torch
    >>> from tfnewton.tasks import sample_linear_regression
    >>> task = sample_linear_regression(4, 10, 3, generator=torch.Generator().manual_seed(0))
    >>> task.X.shape, task.y.shape, task.w.shape
    (torch.Size([4, 10, 3]), torch.Size([4, 10]), torch.Size([4, 3]))
    """
    batch, d, device, dtype = _setup(batch, d, generator, device, dtype, n=n)
    noise_std = v.check_positive(noise_std, "noise_std", allow_zero=True)
    kappa = _check_condition_number(condition_number)
    w = _randn((batch, d), generator, device)
    X = _gaussian_inputs(batch, n, d, kappa, generator, device)
    y = (X @ w.unsqueeze(-1)).squeeze(-1)
    if noise_std > 0:
        y = y + noise_std * _randn((batch, n), generator, device)
    return LinearRegressionTask(X=X.to(dtype), y=y.to(dtype), w=w.to(dtype), noise_std=noise_std, condition_number=kappa)


def sample_logistic_regression(
    batch: int,
    n: int,
    d: int,
    *,
    condition_number: float = 1.0,
    weight_scale: float = 2.0,
    generator: torch.Generator | None = None,
    device=None,
    dtype: torch.dtype = torch.float32,
) -> LogisticRegressionTask:
    """Logistic-regression prompts with labels ±1 and ``‖x_i‖ ≤ 1``.

    ``z_i ~ N(0, Σ/d)`` (``Σ`` as in :func:`sample_linear_regression`), then
    ``x_i = z_i / max(1, ‖z_i‖)`` so that ``‖x_i‖ ≤ 1`` (Giannou et al.'s
    assumption); ``w ~ N(0, weight_scale²·I)``, so logits ``x_iᵀw`` have standard
    deviation ≈ ``weight_scale``; ``y_i = +1`` with probability
    ``σ(x_iᵀw)``, else ``−1``.

    Parameters
    ----------
    batch, n, d : int
    condition_number : float, optional
        ``κ(Σ) >= 1``.
    weight_scale : float, optional
        Standard deviation of each coordinate of ``w`` (logits have standard
        deviation ≈ ``weight_scale``), ``> 0``.
    generator, device, dtype
        As in :func:`sample_linear_regression`.

    Returns
    -------
    LogisticRegressionTask
        ``X (B, n, d)``, ``y (B, n)`` in {−1, +1}, ``w (B, d)``.
    """
    batch, d, device, dtype = _setup(batch, d, generator, device, dtype, n=n)
    kappa = _check_condition_number(condition_number)
    weight_scale = v.check_positive(weight_scale, "weight_scale")
    w = weight_scale * _randn((batch, d), generator, device)
    Z = _gaussian_inputs(batch, n, d, kappa, generator, device) / d**0.5
    X = Z / torch.clamp(Z.norm(dim=-1, keepdim=True), min=1.0)
    logits = (X @ w.unsqueeze(-1)).squeeze(-1)
    u = torch.rand((batch, n), generator=generator, device=device, dtype=torch.float64)
    y = torch.where(u < torch.sigmoid(logits), 1.0, -1.0).to(torch.float64)
    return LogisticRegressionTask(X=X.to(dtype), y=y.to(dtype), w=w.to(dtype), condition_number=kappa)


def sample_sparse_recovery(
    batch: int,
    n: int,
    d: int,
    *,
    sparsity: int = 3,
    noise_std: float = 0.0,
    generator: torch.Generator | None = None,
    device=None,
    dtype: torch.dtype = torch.float32,
) -> SparseRecoveryTask:
    """Sparse-recovery (compressed sensing) prompts as in Liu et al. (2024).

    ``β`` has ``sparsity`` non-zero coordinates at a uniformly random support with
    ``N(0, 1)`` values; the measurement matrix has i.i.d. ``N(0, 1/n)`` entries;
    ``y = Xβ + noise_std·ε``.

    Parameters
    ----------
    batch, n, d : int
        ``n`` measurements of a ``d``-dimensional signal (typically ``n < d``).
    sparsity : int, optional
        Number of non-zeros, ``1 <= sparsity <= d``.
    noise_std : float, optional
    generator, device, dtype
        As in :func:`sample_linear_regression`.

    Returns
    -------
    SparseRecoveryTask
        ``X (B, n, d)``, ``y (B, n)``, ``w (B, d)`` (= ``β``), ``support (B, d)``.
    """
    batch, d, device, dtype = _setup(batch, d, generator, device, dtype, n=n)
    sparsity = v.check_int(sparsity, "sparsity", minimum=1)
    if sparsity > d:
        raise ValueError(f"sparsity must be <= d = {d}, got {sparsity}")
    noise_std = v.check_positive(noise_std, "noise_std", allow_zero=True)
    scores = torch.rand((batch, d), generator=generator, device=device, dtype=torch.float64)
    support_idx = scores.argsort(dim=-1)[:, :sparsity]
    support = torch.zeros((batch, d), dtype=torch.bool, device=device)
    support.scatter_(1, support_idx, True)
    beta = _randn((batch, d), generator, device) * support
    X = _randn((batch, n, d), generator, device) / n**0.5
    y = (X @ beta.unsqueeze(-1)).squeeze(-1)
    if noise_std > 0:
        y = y + noise_std * _randn((batch, n), generator, device)
    return SparseRecoveryTask(
        X=X.to(dtype), y=y.to(dtype), w=beta.to(dtype), support=support, sparsity=sparsity, noise_std=noise_std
    )


def _log_spaced_spectrum(batch, d, kappa, generator, device) -> torch.Tensor:
    """Values in [1/κ, 1], log-uniform, with both extremes present (so κ is exact)."""
    if d == 1:
        return torch.ones((batch, 1), dtype=torch.float64, device=device)
    u = torch.rand((batch, d), generator=generator, device=device, dtype=torch.float64)
    u[:, 0], u[:, 1] = 0.0, 1.0
    return torch.exp(-u * torch.log(torch.tensor(kappa, dtype=torch.float64, device=device)))


def sample_spd(
    batch: int,
    d: int,
    condition_number: float,
    *,
    generator: torch.Generator | None = None,
    device=None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Symmetric positive-definite matrices with an exact condition number.

    ``A = Q diag(λ) Qᵀ`` with a Haar-random ``Q`` and eigenvalues log-uniform in
    ``[1/κ, 1]``, both extremes included, so ``κ(A) = condition_number`` and
    ``‖A‖₂ = 1``.

    Parameters
    ----------
    batch, d : int
    condition_number : float
        ``κ >= 1``.
    generator, device, dtype
        As in :func:`sample_linear_regression`.

    Returns
    -------
    Tensor of shape (batch, d, d)
    """
    batch, d, device, dtype = _setup(batch, d, generator, device, dtype)
    kappa = _check_condition_number(condition_number)
    eig = _log_spaced_spectrum(batch, d, kappa, generator, device)
    Q = _random_orthogonal(batch, d, generator, device)
    A = (Q * eig.unsqueeze(-2)) @ Q.transpose(-1, -2)
    return (0.5 * (A + A.transpose(-1, -2))).to(dtype)


def sample_matrices(
    batch: int,
    d: int,
    condition_number: float,
    *,
    generator: torch.Generator | None = None,
    device=None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """General (non-symmetric) square matrices with an exact condition number.

    ``A = U diag(σ) Vᵀ`` with independent Haar-random ``U, V`` and singular values
    log-uniform in ``[1/κ, 1]``, both extremes included.

    Returns
    -------
    Tensor of shape (batch, d, d)
    """
    batch, d, device, dtype = _setup(batch, d, generator, device, dtype)
    kappa = _check_condition_number(condition_number)
    sigma = _log_spaced_spectrum(batch, d, kappa, generator, device)
    U = _random_orthogonal(batch, d, generator, device)
    V = _random_orthogonal(batch, d, generator, device)
    return ((U * sigma.unsqueeze(-2)) @ V.transpose(-1, -2)).to(dtype)
