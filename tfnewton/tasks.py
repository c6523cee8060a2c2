r"""Samplers of in-context problems.

Every sampler takes a ``torch.Generator`` (so a run repeats exactly), a device
and a dtype, and returns a small dataclass whose tensors put the batch axis
first. Draws are made in float64 and then cast, so the float32 problems are the
float64 ones rounded: a book page can compare precisions on the same problems.

Given the same generator seed, device and arguments, a sampler returns the same
problems. CPU and CUDA generators are different streams, so the problems drawn
on a GPU differ from those drawn on the CPU for the same seed (each repeats
exactly on its own device).

The last section registers the tasks a model is trained on (:func:`training_task`):
for each, its sampler, the loss on the model's outputs, the metrics against the
number of in-context examples and the baselines to score beside the model.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable

import torch

from . import _validate as v

__all__ = [
    "LinearRegressionTask",
    "LogisticRegressionTask",
    "SparseRecoveryTask",
    "sample_linear_regression",
    "sample_logistic_regression",
    "sample_sparse_recovery",
    "toeplitz_covariance",
    "sample_spd",
    "sample_matrices",
    "random_orthogonal",
    "covariance_eigenvalues",
    "TrainingTask",
    "TRAINING_TASKS",
    "training_task",
    "squared_error_loss",
    "logistic_loss_of_logits",
    "normalized_error_by_position",
    "classification_metrics_by_position",
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
    condition_number : float or Tensor of shape (B,)
        Condition number of the input covariance; for a mixture, each prompt's.
    """

    X: torch.Tensor
    y: torch.Tensor
    w: torch.Tensor
    noise_std: float = 0.0
    condition_number: float | torch.Tensor = 1.0


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
    condition_number : float or Tensor of shape (B,)
        Condition number of the input covariance; for a mixture, each prompt's.
    """

    X: torch.Tensor
    y: torch.Tensor
    w: torch.Tensor
    condition_number: float | torch.Tensor = 1.0


@dataclass
class SparseRecoveryTask(_Task):
    """A batch of sparse-recovery prompts ``y = Xβ + noise`` with ``s``-sparse ``β``.

    Attributes
    ----------
    X : Tensor of shape (B, n, d)
        Gaussian measurement matrices: entries ``N(0, 1/n)`` (columns of norm ≈ 1) with
        ``scaling="unit_columns"``, rows ``x_i ~ N(0, Σ)`` with ``scaling="garg"``.
    y : Tensor of shape (B, n)
    w : Tensor of shape (B, d)
        The sparse vector ``β``.
    support : Tensor of shape (B, d), bool
        Where ``β`` is non-zero.
    sparsity : int
    noise_std : float
    scaling : str
        ``"unit_columns"`` or ``"garg"`` (see :func:`sample_sparse_recovery`).
    correlation : float
        ``ρ`` of the columns' Toeplitz covariance ``Σ_ij = ρ^|i−j|`` (0: independent).
    support_subset : tuple of int or None
        The coordinates every support was drawn from (``None``: all ``d``).
    fixed_rows : int
        How many leading rows of ``X`` are the same given matrix in every prompt (0: none).
    """

    X: torch.Tensor
    y: torch.Tensor
    w: torch.Tensor
    support: torch.Tensor
    sparsity: int = 1
    noise_std: float = 0.0
    scaling: str = "unit_columns"
    correlation: float = 0.0
    support_subset: tuple | None = None
    fixed_rows: int = 0


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


def _check_condition_numbers(condition_number) -> float | tuple[float, ...]:
    """One κ >= 1, or a non-empty tuple (or list) of them: a mixture."""
    if isinstance(condition_number, (tuple, list)):
        if not condition_number:
            raise ValueError("condition_number must be a number >= 1 or a non-empty tuple of them, got an empty one")
        return tuple(_check_condition_number(kappa) for kappa in condition_number)
    return _check_condition_number(condition_number)


def _gaussian_inputs(batch, n, d, kappa, generator, device):
    """x ~ N(0, Σ) with κ(Σ) = kappa and a random eigenbasis per prompt; float64 (B, n, d).

    Returns the inputs and the κ of each prompt: ``kappa`` itself, or for a mixture (a
    tuple) a float64 tensor (B,) of the values drawn uniformly from it, one per prompt.
    """
    Z = _randn((batch, n, d), generator, device)
    if isinstance(kappa, tuple):
        which = torch.randint(len(kappa), (batch,), generator=generator, device=device)
        spectra = torch.stack([covariance_eigenvalues(d, k, device=device) for k in kappa])  # (K, d)
        Q = _random_orthogonal(batch, d, generator, device)
        X = (Z * spectra[which].sqrt().unsqueeze(1)) @ Q.transpose(-1, -2)
        return X, torch.tensor(kappa, dtype=torch.float64, device=device)[which]
    if kappa == 1.0:
        return Z, kappa
    scales = covariance_eigenvalues(d, kappa, device=device).sqrt()
    Q = _random_orthogonal(batch, d, generator, device)
    return (Z * scales) @ Q.transpose(-1, -2), kappa


# --------------------------------------------------------------------------- samplers


def sample_linear_regression(
    batch: int,
    n: int,
    d: int,
    *,
    noise_std: float = 0.0,
    condition_number: float | tuple[float, ...] = 1.0,
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
    condition_number : float or tuple of float, optional
        ``κ(Σ) >= 1``. A tuple is a mixture: each prompt's ``κ`` is drawn uniformly from
        it (and recorded per prompt in the result's ``condition_number``).
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
    kappa = _check_condition_numbers(condition_number)
    w = _randn((batch, d), generator, device)
    X, kappa = _gaussian_inputs(batch, n, d, kappa, generator, device)
    y = (X @ w.unsqueeze(-1)).squeeze(-1)
    if noise_std > 0:
        y = y + noise_std * _randn((batch, n), generator, device)
    return LinearRegressionTask(X=X.to(dtype), y=y.to(dtype), w=w.to(dtype), noise_std=noise_std, condition_number=kappa)


def sample_logistic_regression(
    batch: int,
    n: int,
    d: int,
    *,
    condition_number: float | tuple[float, ...] = 1.0,
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
    condition_number : float or tuple of float, optional
        ``κ(Σ) >= 1``, or a mixture as in :func:`sample_linear_regression` (Giannou et
        al.'s experiments mix 1, 10 and 50).
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
    kappa = _check_condition_numbers(condition_number)
    weight_scale = v.check_positive(weight_scale, "weight_scale")
    w = weight_scale * _randn((batch, d), generator, device)
    Z, kappa = _gaussian_inputs(batch, n, d, kappa, generator, device)
    Z = Z / d**0.5
    X = Z / torch.clamp(Z.norm(dim=-1, keepdim=True), min=1.0)
    logits = (X @ w.unsqueeze(-1)).squeeze(-1)
    u = torch.rand((batch, n), generator=generator, device=device, dtype=torch.float64)
    y = torch.where(u < torch.sigmoid(logits), 1.0, -1.0).to(torch.float64)
    return LogisticRegressionTask(X=X.to(dtype), y=y.to(dtype), w=w.to(dtype), condition_number=kappa)


SPARSE_SCALINGS = ("unit_columns", "garg")


def toeplitz_covariance(d: int, correlation: float, *, dtype=torch.float64, device=None) -> torch.Tensor:
    """The covariance ``Σ_ij = ρ^|i−j|`` of inputs with correlated neighbouring coordinates.

    Parameters
    ----------
    d : int
    correlation : float
        ``ρ`` in ``[0, 1)``; ``0`` gives the identity.

    Returns
    -------
    Tensor of shape (d, d)
        Symmetric positive definite with unit diagonal.

    Examples
    --------
    >>> toeplitz_covariance(3, 0.5)
    tensor([[1.0000, 0.5000, 0.2500],
            [0.5000, 1.0000, 0.5000],
            [0.2500, 0.5000, 1.0000]], dtype=torch.float64)
    """
    d = v.check_int(d, "d", minimum=1)
    rho = _check_correlation(correlation)
    device = v.check_device(device)
    idx = torch.arange(d, device=device)
    distance = (idx.unsqueeze(0) - idx.unsqueeze(1)).abs().to(torch.float64)
    return torch.pow(torch.tensor(rho, dtype=torch.float64, device=device), distance).to(dtype)


def _check_correlation(correlation) -> float:
    rho = v.check_positive(correlation, "correlation", allow_zero=True)
    if rho >= 1:
        raise ValueError(f"correlation must be in [0, 1) (ρ of Σ_ij = ρ^|i−j|), got {rho}")
    return rho


def _check_support_subset(support_subset, d: int, sparsity: int) -> tuple[int, ...] | None:
    """``None``, or distinct coordinates in ``[0, d)``, at least ``sparsity`` of them."""
    if support_subset is None:
        return None
    if isinstance(support_subset, torch.Tensor):
        if support_subset.ndim != 1 or support_subset.is_floating_point() or support_subset.dtype == torch.bool:
            raise TypeError(
                "support_subset must be a sequence of int coordinates (or a 1-D integer tensor), "
                f"got a tensor of dtype {support_subset.dtype} and shape {tuple(support_subset.shape)}"
            )
        support_subset = support_subset.tolist()
    if isinstance(support_subset, (str, bytes)) or not hasattr(support_subset, "__iter__"):
        raise TypeError(f"support_subset must be a sequence of int coordinates, got {type(support_subset).__name__}")
    coords = tuple(v.check_int(c, "support_subset entries") for c in support_subset)
    bad = [c for c in coords if c >= d]
    if bad:
        raise ValueError(f"support_subset entries must be coordinates in [0, d) = [0, {d}), got {bad[0]}")
    if len(set(coords)) != len(coords):
        raise ValueError(f"support_subset must not repeat a coordinate, got {list(coords)}")
    if len(coords) < sparsity:
        raise ValueError(
            f"support_subset must hold at least sparsity = {sparsity} coordinates, got {len(coords)}"
        )
    return coords


def _check_measurement_matrix(matrix, n: int, d: int, device) -> torch.Tensor | None:
    """``None``, or a finite (m, d) tensor with ``1 <= m <= n``, as float64 on ``device``."""
    if matrix is None:
        return None
    v.check_tensor(matrix, "measurement_matrix", ndim=2)
    m, d_matrix = matrix.shape
    if d_matrix != d or not 1 <= m <= n:
        raise ValueError(
            f"measurement_matrix must have shape (m, d) with 1 <= m <= n = {n} and d = {d}, "
            f"got {tuple(matrix.shape)}"
        )
    return matrix.to(device=device, dtype=torch.float64)


def sample_sparse_recovery(
    batch: int,
    n: int,
    d: int,
    *,
    sparsity: int = 3,
    noise_std: float = 0.0,
    scaling: str = "unit_columns",
    correlation: float = 0.0,
    support_subset=None,
    measurement_matrix: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    device=None,
    dtype: torch.dtype = torch.float32,
) -> SparseRecoveryTask:
    """Sparse-recovery (compressed sensing) prompts as in Liu et al. (2024).

    ``β`` has ``sparsity`` non-zero coordinates at a uniformly random support (drawn from
    ``support_subset`` when one is given) with ``N(0, 1)`` values, and
    ``y = Xβ + noise_std·ε``. The rows of ``X`` are ``x_i ~ N(0, Σ)`` with the Toeplitz
    covariance ``Σ_ij = ρ^|i−j|`` (:func:`toeplitz_covariance`; ``Σ = I`` by default), and

    * ``scaling="unit_columns"`` (the default, which the book's ISTA/FISTA page uses) divides
      them by ``√n``: entries ``N(0, 1/n)``, columns of norm ≈ 1, ``‖Xβ‖ ≈ ‖β‖``;
    * ``scaling="garg"`` keeps them as drawn: ``x_i ~ N(0, Σ)`` as in Garg et al. (2022) and
      in Liu et al.'s setting (``y_i = x_iᵀβ + ε_i``), so ``noise_std`` is compared with a
      label of variance ``‖β‖²`` rather than ``‖β‖²/n``.

    With the default arguments the draws are exactly those of earlier versions.

    Parameters
    ----------
    batch, n, d : int
        ``n`` measurements of a ``d``-dimensional signal.
    sparsity : int, optional
        Number of non-zeros ``s``, ``1 <= s <= d``.
    noise_std : float, optional
        ``>= 0``.
    scaling : {"unit_columns", "garg"}, optional
    correlation : float, optional
        ``ρ`` in ``[0, 1)``: neighbouring columns of ``X`` have correlation ``ρ``.
    support_subset : sequence of int, optional
        Distinct coordinates in ``[0, d)``, at least ``sparsity`` of them: every support lies
        inside this set (tasks with structure a learner can exploit).
    measurement_matrix : Tensor of shape (m, d), optional
        ``1 <= m <= n``: the first ``m`` rows of every prompt's ``X`` are this matrix (used as
        given: ``scaling`` and ``correlation`` do not touch it), the same for every prompt
        (fixed-matrix LISTA trains on such prompts); the remaining ``n − m`` rows are drawn as
        usual, e.g. one fresh query point per prompt with ``m = n − 1``.
    generator, device, dtype
        As in :func:`sample_linear_regression`.

    Returns
    -------
    SparseRecoveryTask
        ``X (B, n, d)``, ``y (B, n)``, ``w (B, d)`` (= ``β``), ``support (B, d)``.

    Examples
    --------
    >>> import torch
    >>> from tfnewton.tasks import sample_sparse_recovery
    >>> g = torch.Generator().manual_seed(0)
    >>> task = sample_sparse_recovery(4, 10, 20, sparsity=3, noise_std=0.2, scaling="garg", generator=g)
    >>> task.X.shape, task.support.sum(-1).tolist()
    (torch.Size([4, 10, 20]), [3, 3, 3, 3])
    """
    batch, d, device, dtype = _setup(batch, d, generator, device, dtype, n=n)
    sparsity = v.check_int(sparsity, "sparsity", minimum=1)
    if sparsity > d:
        raise ValueError(f"sparsity must be <= d = {d}, got {sparsity}")
    noise_std = v.check_positive(noise_std, "noise_std", allow_zero=True)
    if scaling not in SPARSE_SCALINGS:
        raise ValueError(f"scaling must be one of {SPARSE_SCALINGS}, got {scaling!r}")
    rho = _check_correlation(correlation)
    subset = _check_support_subset(support_subset, d, sparsity)
    fixed = _check_measurement_matrix(measurement_matrix, n, d, device)

    scores = torch.rand((batch, d), generator=generator, device=device, dtype=torch.float64)
    if subset is not None:  # coordinates outside the subset sort last, so are never picked
        outside = torch.ones(d, dtype=torch.bool, device=device)
        outside[list(subset)] = False
        scores = scores.masked_fill(outside, 2.0)
    support_idx = scores.argsort(dim=-1)[:, :sparsity]
    support = torch.zeros((batch, d), dtype=torch.bool, device=device)
    support.scatter_(1, support_idx, True)
    beta = _randn((batch, d), generator, device) * support
    X = _randn((batch, n, d), generator, device)
    if rho > 0:
        cholesky = torch.linalg.cholesky(toeplitz_covariance(d, rho, device=device))
        X = X @ cholesky.T  # rows ~ N(0, L Lᵀ = Σ)
    if scaling == "unit_columns":
        X = X / n**0.5
    if fixed is not None:
        X[:, : fixed.shape[0]] = fixed
    y = (X @ beta.unsqueeze(-1)).squeeze(-1)
    if noise_std > 0:
        y = y + noise_std * _randn((batch, n), generator, device)
    return SparseRecoveryTask(
        X=X.to(dtype), y=y.to(dtype), w=beta.to(dtype), support=support, sparsity=sparsity, noise_std=noise_std,
        scaling=scaling, correlation=rho, support_subset=subset, fixed_rows=0 if fixed is None else fixed.shape[0],
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


# --------------------------------------------------------------------------- tasks to train on
#
# What the training loop (tfnewton.train) needs to know about each kind of problem: how to
# draw it, the loss on the model's outputs, the metrics at each context length, and which
# baselines (tfnewton.baselines) to score beside the model. train() looks a task up by
# name and never branches on it; a new task is one entry of TRAINING_TASKS.


def squared_error_loss(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error over every position of every prompt (Garg et al.'s training loss).

    Parameters
    ----------
    pred, y : Tensor of shape (B, n)

    Returns
    -------
    Tensor of shape ()
    """
    return (pred - y).pow(2).mean()


def logistic_loss_of_logits(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the logits ``pred`` against labels ±1, over every position.

    ``mean log(1 + exp(−y·pred))``, which is ``binary_cross_entropy_with_logits`` against
    the 0/1 labels ``(y + 1) / 2``.

    Parameters
    ----------
    pred : Tensor of shape (B, n)
        Logits.
    y : Tensor of shape (B, n)
        Labels −1 or +1.

    Returns
    -------
    Tensor of shape ()
    """
    return torch.nn.functional.softplus(-y * pred).mean()


def normalized_error_by_position(pred: torch.Tensor, y: torch.Tensor, d: int) -> dict[str, torch.Tensor]:
    """``{"error": E[(ŷ − y)²] / d}`` at each position, averaged over prompts, in float64.

    Garg et al.'s normalized squared error: predicting 0 on isotropic linear regression
    gives about 1. Position ``k`` has seen ``k`` in-context examples.

    Returns
    -------
    dict of Tensor of shape (n,)
    """
    return {"error": (pred.double() - y.double()).pow(2).mean(0) / d}


def classification_metrics_by_position(pred: torch.Tensor, y: torch.Tensor, d: int) -> dict[str, torch.Tensor]:
    """Cross-entropy of the logits and accuracy of their sign at each position, in float64.

    ``{"cross_entropy": E[log(1 + exp(−y·ŷ))], "accuracy": P(y·ŷ > 0)}`` averaged over
    prompts (``d`` is unused; every task's metrics take it). A logit of 0 is a coin toss:
    it scores ``log 2`` and half a correct answer.

    Returns
    -------
    dict of Tensor of shape (n,)
    """
    margins = y.double() * pred.double()
    return {"cross_entropy": torch.nn.functional.softplus(-margins).mean(0),
            "accuracy": ((margins > 0).double() + 0.5 * (margins == 0).double()).mean(0)}


def _no_option_checks(d: int, options: dict) -> None:
    """Every option the sampler accepts will do."""


@dataclass(frozen=True)
class TrainingTask:
    """One kind of in-context problem as the training loop sees it.

    Attributes
    ----------
    name : str
    sampler : callable
        ``sampler(batch, n, d, *, generator, device, **options)`` → problems with
        ``X (B, n, d)`` and ``y (B, n)`` (one of the samplers above).
    options : tuple of str
        The recipe's options the sampler takes (keyword arguments of ``sampler``).
    loss : callable
        ``loss(pred, y)`` → scalar: the training loss of the model's outputs ``(B, n)``.
    metrics : callable
        ``metrics(pred, y, d)`` → ``{name: Tensor of shape (n,)}``: each metric at every
        position, that is against the number ``k`` of in-context examples.
    headline : str
        The metric the loop logs and evaluates during training (lower is better).
    baselines : tuple of str
        Estimators of :data:`tfnewton.baselines.BASELINES` scored beside the model; the
        loop prints the first one's headline metric next to the model's.
    check_options : callable
        ``check_options(d, options)`` raises ``ValueError`` for options this task cannot
        run (``options`` a dict of the recipe's task options). By default nothing beyond
        what the sampler checks when it draws.
    """

    name: str
    sampler: Callable
    options: tuple[str, ...]
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    metrics: Callable[[torch.Tensor, torch.Tensor, int], dict]
    headline: str
    baselines: tuple[str, ...] = ()
    check_options: Callable[[int, dict], None] = _no_option_checks

    def sample(self, batch: int, n: int, d: int, *, generator=None, device=None, options: dict | None = None):
        """Problems from ``sampler`` with the entries of ``options`` it takes (others ignored).

        Returns
        -------
        The sampler's dataclass: ``X (B, n, d)``, ``y (B, n)``, ...
        """
        options = options or {}
        return self.sampler(batch, n, d, generator=generator, device=device,
                            **{name: options[name] for name in self.options if name in options})


def _sample_sparse_recovery_capped(batch, n, d, *, sparsity, noise_std, scaling="unit_columns", support_size=0,
                                   generator=None, device=None):
    # Under the curriculum d grows from below the sparsity (and the support subset): cap both at d.
    subset = None if support_size == 0 else tuple(range(min(support_size, d)))
    cap = d if subset is None else len(subset)
    return sample_sparse_recovery(batch, n, d, sparsity=min(sparsity, cap), noise_std=noise_std, scaling=scaling,
                                  support_subset=subset, generator=generator, device=device)


def _check_logistic_options(d: int, options: dict) -> None:
    if options.get("noise_std", 0.0) != 0.0:
        raise ValueError(f"noise_std must be 0 for task 'logistic_regression' (its ±1 labels are drawn at "
                         f"random already), got {options['noise_std']}")


def _check_sparse_recovery_options(d: int, options: dict) -> None:
    if options.get("condition_number", 1.0) != 1.0:
        raise ValueError(f"condition_number must be 1 for task 'sparse_recovery' (its measurement matrix is "
                         f"i.i.d. Gaussian), got {options['condition_number']}")
    if options.get("sparsity", 1) > d:
        raise ValueError(f"sparsity must be <= d = {d}, got {options['sparsity']}")
    if options.get("scaling", "unit_columns") not in SPARSE_SCALINGS:
        raise ValueError(f"scaling must be one of {SPARSE_SCALINGS}, got {options['scaling']!r}")
    support_size = options.get("support_size", 0)
    if support_size and not options.get("sparsity", 1) <= support_size <= d:
        raise ValueError(f"support_size must be 0 (no restriction) or between sparsity = {options.get('sparsity', 1)} "
                         f"and d = {d}, got {support_size}")


#: The tasks a model can be trained on, by name (:func:`training_task` looks one up).
#:
#: :meta hide-value:
TRAINING_TASKS: dict[str, TrainingTask] = {
    "linear_regression": TrainingTask(
        "linear_regression", sample_linear_regression, ("noise_std", "condition_number"),
        squared_error_loss, normalized_error_by_position, "error", baselines=("ols", "gd_tuned")),
    "sparse_recovery": TrainingTask(
        "sparse_recovery", _sample_sparse_recovery_capped, ("sparsity", "noise_std", "scaling", "support_size"),
        squared_error_loss, normalized_error_by_position, "error", baselines=("ols", "gd_tuned"),
        check_options=_check_sparse_recovery_options),
    # The model outputs a logit per position; Giannou et al.'s setting is d = 5, n = 26,
    # mu = 0.01 (the damped-Newton baseline's) and condition numbers 1, 10, 50 mixed.
    "logistic_regression": TrainingTask(
        "logistic_regression", sample_logistic_regression, ("condition_number",),
        logistic_loss_of_logits, classification_metrics_by_position, "cross_entropy", baselines=("newton",),
        check_options=_check_logistic_options),
}


def training_task(name: str) -> TrainingTask:
    """The :class:`TrainingTask` registered as ``name`` in :data:`TRAINING_TASKS`.

    Examples
    --------
    >>> from tfnewton.tasks import training_task
    >>> task = training_task("logistic_regression")
    >>> task.headline, task.baselines
    ('cross_entropy', ('newton',))
    """
    if name not in TRAINING_TASKS:
        raise ValueError(f"task must be one of {tuple(TRAINING_TASKS)}, got {name!r}")
    return TRAINING_TASKS[name]
