r"""How far apart Newton and gradient descent can be under a metric: its power, before any model.

A trained model "does Newton, not GD" when its similarity to Newton exceeds its similarity
to GD. How large can that gap be at all? Stand an exact Newton iterate in for the model:
its similarity to Newton is 1 (at its own step), and its gap is ``1 − (GD's best
similarity to it)``. That is the **ceiling**: no model that behaves like Newton's step
``t`` can show a larger gap under the same metric, prompts and GD protocol. A model that
*is* GD shows a negative gap.

GD protocols, since the answer depends on it (``../shared/notes/probes.md``):

* ``"global"``: one step size for all prompts, tuned on a grid — Fu et al. use a fixed η.
  The grid is ``c / λ*`` for ``c`` in ``gd_grid``, with ``λ*`` the 99th percentile over
  prompts and prefixes of the largest eigenvalue of ``XᵀX/i`` (the loss's Hessian).
* ``"per_problem"``: ``η = 1/λ_max`` of each prompt's own prefix (what a default "step
  ``1/L``" does); it adapts to each spectrum and separates far less.
* ``"fixed"``: one given step ``gd_lr`` on the *summed* loss ``½‖Xw − y‖²``, untuned (Fu et
  al.'s released code: η = 0.01, steps up to 4096).

Three metrics have a ceiling here: the similarity of errors (:func:`separation_ceiling`),
the similarity of induced weights (:func:`induced_weights_ceiling`) and a probe's R²
(:func:`probe_r2_ceiling`). All three compute the algorithms through one identity
(:func:`prefix_spectra`): Iterative Newton and GD from ``w = 0`` are both *spectral
filters* of the Gram matrix ``S = XᵀX`` (eigenpairs ``λ_j, u_j``),

.. math::

   w = \sum_j f(λ_j)\, \frac{u_j^\top X^\top y}{λ_j}\, u_j, \qquad
   f_{\text{Newton}, k}(λ) = 1 − (1 − αλ^2)^{2^k}, \qquad
   f_{\text{GD}, s}(λ) = 1 − (1 − ηλ/i)^{s},

so any step of either costs one product once the prefixes' spectra are known, where running
GD for 4096 steps on 40 prefixes would cost 160,000 batched matrix products.
:func:`compare_layers` puts a model's layers beside these ceilings and :func:`goal_verdict`
reads issue 17's goal off the result.

>>> import torch
>>> from tfnewton.tasks import sample_linear_regression
>>> from tfnewton.separation import separation_ceiling
>>> task = sample_linear_regression(256, 11, 5, generator=torch.Generator().manual_seed(0))
>>> table = separation_ceiling(task.X, task.y, newton_steps=[3, 6])   # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import _validate as v
from .algorithms import prefix_predictions
from .metrics import cosine_similarity, normalized_error, similarity_of_errors
from .tables import Table, TableView

__all__ = [
    "GD_GRID", "GD_STEPS", "GapTable", "gd_step_sizes", "newton_gd_gap", "separation_ceiling",
    "PrefixSpectra", "prefix_spectra", "newton_filter", "gd_filter",
    "induced_weights_ceiling", "probe_r2_ceiling", "LayerComparison", "compare_layers",
    "climbing_layers", "best_step_growth", "goal_verdict", "load_trained_model", "file_sha256",
    "ONLINE_GRID", "FU_GD_STEPS", "FU_LINEAR_GD_STEPS", "FU_TABLE1", "GD_VARIANTS", "position_sets", "ceiling_rows",
    "table1_hypotheses", "gd_cap_sweep", "closest_to_table1", "model_table1", "layer_study",
]

#: Multiples ``c`` of ``1/λ*`` tried for GD's one global step size.
GD_GRID = (0.25, 0.5, 1.0, 1.5, 1.9)

#: GD steps searched (Fu et al. search powers of two up to 4096).
GD_STEPS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

_PROTOCOLS = ("global", "per_problem", "fixed")


@dataclass
class GapTable(TableView):
    """Each row's best similarity to Newton and to GD, and the gap between them.

    Attributes
    ----------
    labels : list of str
        One per row (a model's layer, or ``"Newton step t"`` for a ceiling).
    newton_similarity, gd_similarity : Tensor of shape (R,)
        The best similarity over Newton's steps and over GD's (step, step size).
    newton_step, gd_step : list of int
        Where each best is reached.
    gd_lr : list
        GD's step size at its best (a float for ``"global"`` and ``"fixed"``, the string
        ``"1/λ_max"`` for ``"per_problem"``).
    gd_protocol : str
    num_prompts : int
    metric : str
        ``"errors"``, ``"induced weights"`` or ``"probe R²"``.
    """

    labels: list
    newton_similarity: torch.Tensor
    newton_step: list
    gd_similarity: torch.Tensor
    gd_step: list
    gd_lr: list
    gd_protocol: str
    num_prompts: int = 0
    extra: dict = field(default_factory=dict)
    metric: str = "errors"

    @property
    def gap(self) -> torch.Tensor:
        """``newton_similarity − gd_similarity`` (positive: closer to Newton), shape (R,)."""
        return self.newton_similarity - self.gd_similarity

    def to_table(self) -> Table:
        """One row per label: both bests, where they are reached, and the gap."""
        rows = [[label, float(self.newton_similarity[i]), self.newton_step[i], float(self.gd_similarity[i]),
                 self.gd_step[i], self.gd_lr[i] if isinstance(self.gd_lr[i], str) else f"{self.gd_lr[i]:.3g}",
                 float(self.gap[i])] for i, label in enumerate(self.labels)]
        header = ["row", "Newton: best similarity", "at step", "GD: best similarity", "at step", "GD step size", "gap"]
        name = "similarity of errors" if self.metric == "errors" else self.metric
        title = f"{name}, GD {self.gd_protocol} step size, {self.num_prompts} prompts"
        return Table(header, rows, title=title)


# --------------------------------------------------------------------------- spectral filters


@dataclass
class PrefixSpectra:
    """Every prefix's Gram spectrum, in the form that turns a spectral filter into a prediction.

    Attributes
    ----------
    eigenvalues : Tensor of shape (B, n, d)
        ``λ_j`` of ``S_i = X_{:i}ᵀX_{:i}`` (the first ``i`` pairs) at position ``i``; zeros at
        ``i = 0``.
    coefficients : Tensor of shape (B, n, d)
        ``(x_iᵀu_j)(u_jᵀX_{:i}ᵀy_{:i}) / λ_j``, ``0`` where ``λ_j`` is (numerically) zero: the
        prediction of ``y_i`` by a filter ``f`` is ``Σ_j f(λ_j) · coefficients_j``, and the
        all-ones filter gives the minimum-norm least-squares prediction.
    """

    eigenvalues: torch.Tensor
    coefficients: torch.Tensor

    @property
    def positions(self) -> torch.Tensor:
        """The number of pairs ``i`` in each position's prefix, shape (1, n, 1), float64."""
        n = self.eigenvalues.shape[1]
        return torch.arange(n, dtype=self.eigenvalues.dtype, device=self.eigenvalues.device).reshape(1, n, 1)

    def predict(self, filters: torch.Tensor) -> torch.Tensor:
        """Predictions ``(..., B, n)`` of filter values ``(..., B, n, d)``."""
        return (filters * self.coefficients).sum(-1)


def _prefix_eigh(X: torch.Tensor, y: torch.Tensor, prefix_sizes):
    """Eigenpairs of ``S_c`` and ``X_{:c}ᵀy_{:c}`` for each prefix size ``c`` (float64)."""
    X, y = X.double(), y.double()
    S = torch.stack([X[:, :c].mT @ X[:, :c] for c in prefix_sizes], 1)  # (B, C, d, d)
    b = torch.stack([(X[:, :c] * y[:, :c, None]).sum(1) for c in prefix_sizes], 1)  # (B, C, d)
    lam, U = torch.linalg.eigh(S)
    return lam, U, b


def _invert_nonzero(lam: torch.Tensor, rtol: float) -> torch.Tensor:
    """``1/λ`` where ``λ > rtol·λ_max`` of its matrix, else 0 (the null space of a prefix with
    fewer pairs than dimensions, where ``u_jᵀXᵀy`` is zero up to rounding)."""
    keep = lam > rtol * lam.amax(-1, keepdim=True).clamp_min(torch.finfo(lam.dtype).tiny)
    return torch.where(keep, 1.0 / torch.where(keep, lam, torch.ones_like(lam)), torch.zeros_like(lam))


def prefix_spectra(X: torch.Tensor, y: torch.Tensor, *, rtol: float = 1e-10) -> PrefixSpectra:
    """The spectra of every prefix's Gram matrix, for :func:`newton_filter` and :func:`gd_filter`.

    Parameters
    ----------
    X : Tensor of shape (B, n, d)
    y : Tensor of shape (B, n)
    rtol : float
        Eigenvalues below ``rtol · λ_max`` count as zero (their coefficient is 0).

    Returns
    -------
    PrefixSpectra
        float64, on ``X``'s device.

    Examples
    --------
    >>> import torch
    >>> from tfnewton.tasks import sample_linear_regression
    >>> from tfnewton.algorithms import prefix_predictions
    >>> task = sample_linear_regression(4, 9, 3, generator=torch.Generator().manual_seed(0),
    ...                                 dtype=torch.float64)
    >>> spectra = prefix_spectra(task.X, task.y)
    >>> lam = spectra.eigenvalues
    >>> gd = spectra.predict(gd_filter(lam, [5], lr="per_problem"))       # (1, B, n)
    >>> bool(torch.allclose(gd, prefix_predictions("gd", task.X, task.y, 5)[[5]]))
    True
    """
    v.check_regression_inputs(X, y)
    rtol = v.check_positive(rtol, "rtol")
    B, n, d = X.shape
    lam, U, b = _prefix_eigh(X, y, range(n))
    proj_x = torch.einsum("bik,bikj->bij", X.double(), U)  # x_iᵀu_j
    proj_b = torch.einsum("bik,bikj->bij", b, U)  # u_jᵀX_{:i}ᵀy_{:i}
    lam = lam.clamp_min(0.0)
    return PrefixSpectra(eigenvalues=lam, coefficients=proj_x * proj_b * _invert_nonzero(lam, rtol))


def _one_minus_power(base: torch.Tensor, exponent: float) -> torch.Tensor:
    """``1 − base**exponent``, accurate when ``base`` is close to 1 (expm1/log1p where base ≥ 0)."""
    safe = base.clamp_min(0.0)
    accurate = -torch.expm1(exponent * torch.log1p(safe - 1.0))
    return torch.where(base >= 0, accurate, 1.0 - base.pow(exponent))


def newton_filter(eigenvalues: torch.Tensor, steps, alpha="default") -> torch.Tensor:
    r"""Iterative Newton's spectral filter ``1 − (1 − αλ²)^{2^k}`` at each of ``steps``.

    ``M_k S = I − (I − αS²)^{2^k}`` for ``M₀ = αS``, ``M_{k+1} = 2M_k − M_kSM_k``, so
    ``w_k = Σ_j f(λ_j) (u_jᵀXᵀy/λ_j) u_j`` (:func:`tfnewton.algorithms.newton_least_squares`).

    Parameters
    ----------
    eigenvalues : Tensor of shape (..., d)
        Eigenvalues of ``S`` (one matrix per leading index).
    steps : sequence of int
    alpha : {"default", "frobenius"} or float
        ``"default"``: ``1/λ_max(S)²`` (the library's); ``"frobenius"``: ``1/‖SSᵀ‖_F`` (Fu et
        al.'s released code); a float is used as it is.

    Returns
    -------
    Tensor of shape (len(steps), ..., d)
    """
    lam = v.check_tensor(eigenvalues, "eigenvalues")
    steps = [v.check_int(k, "steps[i]", minimum=0) for k in steps]
    if alpha == "default":
        a = 1.0 / lam.amax(-1, keepdim=True).pow(2).clamp_min(torch.finfo(lam.dtype).tiny)
    elif alpha == "frobenius":
        a = 1.0 / lam.pow(4).sum(-1, keepdim=True).sqrt().clamp_min(torch.finfo(lam.dtype).tiny)
    elif isinstance(alpha, str):
        raise ValueError(f"alpha must be 'default', 'frobenius' or a positive float, got {alpha!r}")
    else:
        a = v.check_positive(alpha, "alpha")
    base = 1.0 - a * lam * lam
    return torch.stack([_one_minus_power(base, 2.0 ** k) for k in steps])


def gd_filter(eigenvalues: torch.Tensor, steps, lr, *, loss: str = "mean") -> torch.Tensor:
    r"""Gradient descent's spectral filter from ``w₀ = 0``: ``1 − (1 − ηλ/i)^s`` at each of ``steps``.

    Parameters
    ----------
    eigenvalues : Tensor of shape (B, n, d)
        From :func:`prefix_spectra` (position ``i`` has ``i`` pairs).
    steps : sequence of int
    lr : float or "per_problem"
        One step size for every prompt and prefix, or ``1/λ_max`` of each prefix's Hessian.
    loss : {"mean", "sum"}
        ``"mean"``: the library's ``(1/2i)‖Xw − y‖²`` (Hessian ``S/i``);
        ``"sum"``: ``½‖Xw − y‖²`` (Hessian ``S``; Fu et al.'s code).

    Returns
    -------
    Tensor of shape (len(steps), B, n, d)
        Entries beyond ``±1`` mean the step size diverges on that prefix.
    """
    lam = v.check_tensor(eigenvalues, "eigenvalues", ndim=3)
    steps = [v.check_int(s, "steps[i]", minimum=0) for s in steps]
    if loss not in ("mean", "sum"):
        raise ValueError(f"loss must be 'mean' or 'sum', got {loss!r}")
    n = lam.shape[1]
    count = torch.arange(n, dtype=lam.dtype, device=lam.device).clamp_min(1).reshape(1, n, 1)
    hess = lam / count if loss == "mean" else lam
    if lr == "per_problem":
        eta = 1.0 / hess.amax(-1, keepdim=True).clamp_min(torch.finfo(lam.dtype).tiny)
    elif isinstance(lr, str):
        raise ValueError(f"lr must be a positive float or 'per_problem', got {lr!r}")
    else:
        eta = v.check_positive(lr, "lr")
    base = 1.0 - eta * hess
    return torch.stack([_one_minus_power(base, float(s)) for s in steps])


def gd_step_sizes(X: torch.Tensor, grid=GD_GRID, quantile: float = 0.99) -> list:
    """The global GD step sizes ``c / λ*`` tried: ``λ*`` is the ``quantile`` over prompts and
    prefixes ``i ≥ 1`` of ``λ_max(X_{:i}ᵀX_{:i} / i)``.

    Parameters
    ----------
    X : Tensor of shape (B, n, d)
    grid : sequence of float
    quantile : float

    Returns
    -------
    list of float
    """
    v.check_tensor(X, "X", ndim=3)
    B, n, d = X.shape
    lams = []
    for i in range(1, n):
        S = X[:, :i].mT @ X[:, :i] / i
        lams.append(torch.linalg.eigvalsh(S.to(torch.float64))[:, -1])
    lam = torch.quantile(torch.cat(lams), quantile).item()
    return [float(c) / lam for c in grid]


def _best(similarity: torch.Tensor):
    """Row-wise max of a (R, C) table and its column index."""
    values, index = similarity.nan_to_num(-2.0).max(dim=1)
    return values, index.tolist()


def _check_protocol(gd_protocol, gd_lr):
    if gd_protocol not in _PROTOCOLS:
        raise ValueError(f"gd_protocol must be 'global', 'per_problem' or 'fixed', got {gd_protocol!r}")
    if gd_protocol == "fixed":
        if gd_lr is None:
            raise ValueError("gd_protocol='fixed' needs gd_lr (the step on the summed loss ½‖Xw − y‖², e.g. 0.01)")
        return v.check_positive(gd_lr, "gd_lr")
    return None


def _gd_candidates(X, gd_protocol, gd_grid, gd_lr):
    """``(lr label, lr argument, loss)`` for each GD step size the protocol tries."""
    if gd_protocol == "global":
        return [(lr, lr, "mean") for lr in gd_step_sizes(X, gd_grid)]
    if gd_protocol == "per_problem":
        return [("1/λ_max", "per_problem", "mean")]
    return [(gd_lr, gd_lr, "sum")]


def _check_positions(positions, first_position, n):
    if positions is None:
        v.check_int(first_position, "first_position", minimum=0)
        if first_position >= n:
            raise ValueError(f"first_position must be < n = {n}, got {first_position}")
        return list(range(first_position, n))
    try:
        out = sorted({v.check_int(p, "positions[i]", minimum=0) for p in positions})
    except TypeError as err:
        raise TypeError(f"positions must be a sequence of ints, got {positions!r}") from err
    if not out or out[-1] >= n:
        raise ValueError(f"positions must be a non-empty set of positions in 0 … n − 1 = {n - 1}, got {positions!r}")
    return out


def newton_gd_gap(preds: torch.Tensor, X: torch.Tensor, y: torch.Tensor, *, labels=None, newton_steps=range(0, 21),
                  gd_protocol: str = "global", gd_steps=GD_STEPS, gd_grid=GD_GRID, first_position: int = 1,
                  positions=None, newton_alpha="default", gd_lr=None, spectra: PrefixSpectra | None = None) -> GapTable:
    """How much closer to Newton than to GD each row of predictions is (similarity of errors).

    Parameters
    ----------
    preds : Tensor of shape (R, B, n)
        Predictions of every label from the pairs before it (``R`` rows: a model's layers'
        read-outs, or anything else), on the prompts ``X, y``.
    X : Tensor of shape (B, n, d)
    y : Tensor of shape (B, n)
    labels : list of str, optional
        One per row (default ``"0" … "R−1"``).
    newton_steps : iterable of int
        Iterative Newton's steps searched.
    gd_protocol : {"global", "per_problem", "fixed"}
        One step size tuned over ``gd_grid`` (see :func:`gd_step_sizes`), ``1/λ_max`` of
        each prefix, or ``gd_lr`` on the summed loss (untuned).
    gd_steps : iterable of int
        GD's steps searched.
    gd_grid : sequence of float
        The multiples of ``1/λ*`` tried (``"global"`` only).
    first_position : int
        Residuals are compared at positions ``first_position … n−1`` (position 0 has no
        context: every predictor says 0 there, which only adds agreement).
    positions : sequence of int, optional
        The positions compared, overriding ``first_position`` (e.g. only ``k < d``).
    newton_alpha : {"default", "frobenius"} or float
        Newton's ``M₀ = αS`` (see :func:`newton_filter`).
    gd_lr : float, optional
        The step of ``gd_protocol="fixed"``.
    spectra : PrefixSpectra, optional
        :func:`prefix_spectra` of these prompts, when already computed.

    Returns
    -------
    GapTable

    Raises
    ------
    ValueError
        ``preds`` not of shape ``(R, B, n)`` matching ``y``; an unknown ``gd_protocol``.
    """
    v.check_regression_inputs(X, y)
    v.check_tensor(preds, "preds", ndim=3)
    B, n, d = X.shape
    if tuple(preds.shape[1:]) != (B, n):
        raise ValueError(f"preds must have shape (R, B, n) = (R, {B}, {n}) like y, got {tuple(preds.shape)}")
    gd_lr = _check_protocol(gd_protocol, gd_lr)
    keep = _check_positions(positions, first_position, n)
    newton_steps, gd_steps = sorted(set(newton_steps)), sorted(set(gd_steps))
    R = preds.shape[0]
    labels = [str(i) for i in range(R)] if labels is None else list(labels)
    if len(labels) != R:
        raise ValueError(f"labels must have one entry per row of preds ({R}), got {len(labels)}")
    spectra = prefix_spectra(X, y) if spectra is None else spectra
    rows, target = preds.double()[..., keep], y.double()[:, keep]

    def similarity(filters):  # (C, B, n, d) -> (R, C); NaN for a candidate that diverged
        candidates = spectra.predict(filters)[..., keep]
        finite = candidates.isfinite().flatten(1).all(1)
        sim = similarity_of_errors(rows[:, None], candidates.nan_to_num(0.0, 0.0, 0.0)[None], target)
        return sim.masked_fill(~finite, float("nan"))

    lam = spectra.eigenvalues
    newton_sim, newton_at = _best(similarity(newton_filter(lam, newton_steps, newton_alpha)))
    lrs = _gd_candidates(X, gd_protocol, gd_grid, gd_lr)
    gd_sim, gd_at = _best(torch.cat([similarity(gd_filter(lam, gd_steps, lr, loss=loss)) for _, lr, loss in lrs], 1))
    return GapTable(
        labels=labels, newton_similarity=newton_sim, newton_step=[newton_steps[j] for j in newton_at],
        gd_similarity=gd_sim, gd_step=[gd_steps[j % len(gd_steps)] for j in gd_at],
        gd_lr=[lrs[j // len(gd_steps)][0] for j in gd_at], gd_protocol=gd_protocol, num_prompts=B,
        extra={"positions": keep, "newton_alpha": newton_alpha},
    )


def _check_ceiling_steps(newton_steps):
    steps = [v.check_int(t, "newton_steps[i]", minimum=0) for t in newton_steps]
    if not steps:
        raise ValueError("newton_steps must not be empty")
    return steps


def separation_ceiling(X: torch.Tensor, y: torch.Tensor, newton_steps=(1, 2, 3, 4, 6, 8, 12), **options) -> GapTable:
    """The largest gap the similarity of errors can show, per Newton step: exact Newton's
    iterate at step ``t`` stands in for the model (so its Newton similarity is 1 and its gap
    is ``1 −`` GD's best similarity to it).

    Parameters
    ----------
    X : Tensor of shape (B, n, d)
    y : Tensor of shape (B, n)
    newton_steps : sequence of int
        The Newton steps whose ceilings are wanted (one row each).
    **options
        Passed to :func:`newton_gd_gap` (``gd_protocol``, ``gd_steps``, ``gd_grid``,
        ``first_position``, ``positions``, ``newton_alpha``, ``gd_lr``); its Newton search
        covers ``0 … max(newton_steps)``.

    Returns
    -------
    GapTable
        Rows ``"Newton step t"``; ``table.gap`` is the ceiling.
    """
    steps = _check_ceiling_steps(newton_steps)
    v.check_regression_inputs(X, y)
    spectra = options.pop("spectra", None) or prefix_spectra(X, y)
    newton = spectra.predict(newton_filter(spectra.eigenvalues, steps, options.get("newton_alpha", "default")))
    return newton_gd_gap(newton, X, y, labels=[f"Newton step {t}" for t in steps],
                         newton_steps=range(0, max(steps) + 1), spectra=spectra, **options)


def induced_weights_ceiling(X: torch.Tensor, y: torch.Tensor, newton_steps=(1, 2, 3, 4, 6, 8, 12), *,
                            context_sizes=None, gd_protocol: str = "global", gd_steps=GD_STEPS, gd_grid=GD_GRID,
                            gd_lr=None, rtol: float = 1e-10) -> GapTable:
    """The largest gap the similarity of induced weights can show, per Newton step.

    An exact algorithm's induced weights (Fu et al.: the ``w̃`` that explains its answers on
    many query points) are its weights, so the similarity is the cosine between Newton's
    ``w_t`` and GD's ``w_s`` on the first ``c`` pairs, averaged over prompts and over the
    context sizes ``c``; the ceiling is ``1 −`` GD's best.

    Parameters
    ----------
    X : Tensor of shape (B, n, d)
    y : Tensor of shape (B, n)
    newton_steps : sequence of int
    context_sizes : sequence of int, optional
        Default ``d, 2d, …`` below ``n``, at most 4 (as :func:`tfnewton.metrics.match_algorithm`).
    gd_protocol, gd_steps, gd_grid, gd_lr
        As in :func:`newton_gd_gap`.
    rtol : float
        As in :func:`prefix_spectra`.

    Returns
    -------
    GapTable
        ``metric = "induced weights"``.
    """
    steps = _check_ceiling_steps(newton_steps)
    v.check_regression_inputs(X, y)
    gd_lr = _check_protocol(gd_protocol, gd_lr)
    B, n, d = X.shape
    if context_sizes is None:
        context_sizes = [c for c in range(d, n, d)][:4] or [n - 1]
    sizes = [v.check_int(c, "context_sizes[i]", minimum=1) for c in context_sizes]
    if not sizes or max(sizes) > n:
        raise ValueError(f"context_sizes must be non-empty sizes in 1 … n = {n}, got {context_sizes!r}")
    gd_steps = sorted(set(gd_steps))
    lam, U, b = _prefix_eigh(X, y, sizes)  # (B, C, d), (B, C, d, d), (B, C, d)
    lam = lam.clamp_min(0.0)
    # w = Σ_j f(λ_j) a_j with a_j = (u_jᵀb/λ_j) u_j: (B, C, j, d)
    a = (torch.einsum("bck,bckj->bcj", b, U) * _invert_nonzero(lam, rtol))[..., None] * U.mT
    count = torch.tensor(sizes, dtype=lam.dtype).reshape(1, -1, 1)
    newton = torch.einsum("tbcj,bcjd->tbcd", newton_filter(lam, steps), a)
    lrs = _gd_candidates(X, gd_protocol, gd_grid, gd_lr)
    sims = []
    for _, lr, loss in lrs:
        hess = lam / count if loss == "mean" else lam
        eta = 1.0 / hess.amax(-1, keepdim=True) if lr == "per_problem" else lr
        base = 1.0 - eta * hess
        f = torch.stack([_one_minus_power(base, float(s)) for s in gd_steps])
        gd = torch.einsum("sbcj,bcjd->sbcd", f, a)
        finite = gd.isfinite().flatten(1).all(1)
        sim = cosine_similarity(newton[:, None], gd.nan_to_num(0.0, 0.0, 0.0)[None]).mean((-1, -2))  # (T, S)
        sims.append(sim.masked_fill(~finite, float("nan")))
    gd_sim, gd_at = _best(torch.cat(sims, 1))
    return GapTable(
        labels=[f"Newton step {t}" for t in steps], newton_similarity=torch.ones(len(steps), dtype=torch.float64),
        newton_step=steps, gd_similarity=gd_sim, gd_step=[gd_steps[j % len(gd_steps)] for j in gd_at],
        gd_lr=[lrs[j // len(gd_steps)][0] for j in gd_at], gd_protocol=gd_protocol, num_prompts=B,
        extra={"context_sizes": sizes}, metric="induced weights",
    )


def probe_r2_ceiling(X: torch.Tensor, y: torch.Tensor, newton_steps=(1, 2, 3, 4, 6, 8, 12), *,
                     gd_protocol: str = "global", gd_steps=GD_STEPS, gd_grid=GD_GRID, gd_lr=None) -> GapTable:
    """The largest gap a probe's R² can show, per Newton step.

    A layer that holds exactly Newton's prediction ``x_qᵀw_t`` at the query (context: the
    first ``n − 1`` pairs, as :func:`tfnewton.probes.probe_iterates`) scores R² = 1 for
    Newton's target at step ``t`` and, for GD's target at step ``s``, the R² of the best
    affine fit of one on the other across prompts: their squared correlation. The ceiling is
    ``1 −`` the best of those over GD's steps and step sizes. (A richer layer can score
    higher on GD; this is the gap of a layer that holds Newton's prediction and nothing else.)

    Parameters
    ----------
    X : Tensor of shape (B, n, d)
    y : Tensor of shape (B, n)
    newton_steps : sequence of int
    gd_protocol, gd_steps, gd_grid, gd_lr
        As in :func:`newton_gd_gap`.

    Returns
    -------
    GapTable
        ``metric = "probe R²"``; ``newton_similarity`` is 1.
    """
    steps = _check_ceiling_steps(newton_steps)
    v.check_regression_inputs(X, y)
    gd_lr = _check_protocol(gd_protocol, gd_lr)
    B, n, d = X.shape
    gd_steps = sorted(set(gd_steps))
    lam, U, b = _prefix_eigh(X, y, [n - 1])  # the context: the first n − 1 pairs
    lam = lam.clamp_min(0.0)
    coef = (torch.einsum("bk,bckj->bcj", X[:, -1].double(), U) * torch.einsum("bck,bckj->bcj", b, U)
            * _invert_nonzero(lam, 1e-10))
    last = PrefixSpectra(lam, coef)  # one "position", the query, with n − 1 pairs before it
    newton = last.predict(newton_filter(lam, steps))[..., 0]  # (T, B)

    def r2(a, b):  # (T, B), (C, B) -> (T, C): squared correlation across prompts
        a = a - a.mean(-1, keepdim=True)
        b = b - b.mean(-1, keepdim=True)
        return cosine_similarity(a[:, None], b[None]).pow(2)

    lrs = _gd_candidates(X, gd_protocol, gd_grid, gd_lr)
    sims = []
    for _, lr, loss in lrs:
        hess = lam / (n - 1) if loss == "mean" else lam
        eta = 1.0 / hess.amax(-1, keepdim=True) if lr == "per_problem" else lr
        gd = last.predict(torch.stack([_one_minus_power(1.0 - eta * hess, float(s)) for s in gd_steps]))[..., 0]
        finite = gd.isfinite().all(1)
        sims.append(r2(newton, gd.nan_to_num(0.0, 0.0, 0.0)).masked_fill(~finite, float("nan")))
    gd_sim, gd_at = _best(torch.cat(sims, 1))
    return GapTable(
        labels=[f"Newton step {t}" for t in steps], newton_similarity=torch.ones(len(steps), dtype=torch.float64),
        newton_step=steps, gd_similarity=gd_sim, gd_step=[gd_steps[j % len(gd_steps)] for j in gd_at],
        gd_lr=[lrs[j // len(gd_steps)][0] for j in gd_at], gd_protocol=gd_protocol, num_prompts=B,
        metric="probe R²",
    )


# --------------------------------------------------------------------------- a model's layers


#: Online GD's step sizes tried, as multiples of ``1/mean_i ‖x_i‖²`` (the library's default).
ONLINE_GRID = (0.25, 0.5, 1.0)


@dataclass
class LayerComparison(TableView):
    """Each layer's read-out beside Newton, GD (two protocols), online GD and OLS, with the ceiling.

    Attributes
    ----------
    labels : list of str
    layer_error : Tensor of shape (R,) or None
        Each row's normalized squared error (mean over positions), when given.
    global_gd, per_problem_gd : GapTable
        :func:`newton_gd_gap` under each protocol (same Newton columns).
    ceiling, ceiling_per_problem : Tensor of shape (R,)
        The ceiling (:func:`separation_ceiling`) at each row's best Newton step, per protocol.
    online_gd : Tensor of shape (R,)
        Best similarity to online GD over its step rules; ``online_gd_rule`` says which.
    ols : Tensor of shape (R,)
        Similarity to the (minimum-norm) least-squares prediction.
    """

    labels: list
    layer_error: torch.Tensor | None
    global_gd: GapTable
    per_problem_gd: GapTable
    ceiling: torch.Tensor
    ceiling_per_problem: torch.Tensor
    online_gd: torch.Tensor
    online_gd_rule: list
    ols: torch.Tensor

    @property
    def newton_similarity(self) -> torch.Tensor:
        """Each row's best similarity to Newton, shape (R,)."""
        return self.global_gd.newton_similarity

    @property
    def newton_step(self) -> list:
        """Where each row's best Newton similarity is reached."""
        return self.global_gd.newton_step

    @property
    def gap(self) -> torch.Tensor:
        """Newton's best minus GD's best (global step), shape (R,)."""
        return self.global_gd.gap

    def to_table(self) -> Table:
        """One row per layer: error, each algorithm's best similarity (at its step), gap, ceiling."""
        g, p = self.global_gd, self.per_problem_gd
        rows = []
        for i, label in enumerate(self.labels):
            err = "" if self.layer_error is None else float(self.layer_error[i])
            rows.append([label, err, float(g.newton_similarity[i]), g.newton_step[i],
                         float(g.gd_similarity[i]), g.gd_step[i], float(p.gd_similarity[i]), p.gd_step[i],
                         float(self.online_gd[i]), float(self.ols[i]), float(g.gap[i]), float(self.ceiling[i])])
        header = ["layer", "read-out error", "Newton", "step", "GD (global)", "step", "GD (1/λ_max)", "step",
                  "online GD", "OLS", "gap (global)", "ceiling"]
        return Table(header, rows, title=f"similarity of errors per layer, {g.num_prompts} prompts")


def compare_layers(preds: torch.Tensor, X: torch.Tensor, y: torch.Tensor, *, labels=None, layer_error=None,
                   newton_steps=range(0, 21), gd_steps=GD_STEPS, gd_grid=GD_GRID, first_position: int = 1,
                   online_grid=ONLINE_GRID) -> LayerComparison:
    """Every row of predictions beside Newton, GD (both protocols), online GD and OLS.

    Parameters
    ----------
    preds : Tensor of shape (R, B, n)
        E.g. :class:`tfnewton.metrics.LayerReadouts`' ``predictions`` (held-out prompts).
    X : Tensor of shape (B, n, d)
    y : Tensor of shape (B, n)
    labels : list of str, optional
    layer_error : Tensor of shape (R,), optional
        Carried into the table (e.g. ``readouts.errors().mean(-1)``).
    newton_steps, gd_steps, gd_grid, first_position
        As in :func:`newton_gd_gap`; the ceilings use the same prompts and grids.
    online_grid : sequence of float
        Online GD's step sizes, multiples of ``1/mean‖x‖²``; Fu et al.'s rule ``1/‖x_i‖²``
        (:func:`tfnewton.algorithms.online_gradient_descent` with ``normalized=True``) is
        always tried too.

    Returns
    -------
    LayerComparison
    """
    v.check_regression_inputs(X, y)
    v.check_tensor(preds, "preds", ndim=3)
    R = preds.shape[0]
    labels = [str(i) for i in range(R)] if labels is None else list(labels)
    if layer_error is not None:
        v.check_tensor(layer_error, "layer_error", ndim=1)
        if layer_error.shape[0] != R:
            raise ValueError(f"layer_error must have one entry per row of preds ({R}), got {layer_error.shape[0]}")
    newton_steps = sorted(set(newton_steps))
    spectra = prefix_spectra(X, y)
    newton_rows = spectra.predict(newton_filter(spectra.eigenvalues, newton_steps))
    both = torch.cat([preds.double(), newton_rows])
    row_labels = labels + [f"Newton step {t}" for t in newton_steps]
    tables, ceilings = {}, {}
    for protocol in ("global", "per_problem"):
        table = newton_gd_gap(both, X, y, labels=row_labels, newton_steps=newton_steps, gd_protocol=protocol,
                              gd_steps=gd_steps, gd_grid=gd_grid, first_position=first_position, spectra=spectra)
        ceiling_at = dict(zip(newton_steps, table.gap[R:].tolist()))
        tables[protocol] = _first_rows(table, R)
        ceilings[protocol] = torch.tensor([ceiling_at[t] for t in table.newton_step[:R]], dtype=torch.float64)
    keep = tables["global"].extra["positions"]
    target, rows = y.double()[:, keep], preds.double()[..., keep]
    Xd, yd = X.double(), y.double()
    mean_sq = (Xd * Xd).sum(-1).mean(-1)
    online = {f"η = {c:g}/mean‖x‖²": prefix_predictions("online_gd", Xd, yd, 0, lr=c / mean_sq)[0]
              for c in online_grid}
    online["η = 1/‖x_i‖² (Fu et al.)"] = prefix_predictions("online_gd", Xd, yd, 0, normalized=True)[0]
    online_sim = torch.stack([similarity_of_errors(rows, pred[:, keep], target) for pred in online.values()], 1)
    online_best, online_at = _best(online_sim)
    ols = similarity_of_errors(rows, spectra.predict(torch.ones_like(spectra.coefficients))[:, keep], target)
    return LayerComparison(
        labels=labels, layer_error=None if layer_error is None else layer_error.double().cpu(),
        global_gd=tables["global"], per_problem_gd=tables["per_problem"], ceiling=ceilings["global"],
        ceiling_per_problem=ceilings["per_problem"], online_gd=online_best,
        online_gd_rule=[list(online)[j] for j in online_at], ols=ols,
    )


def _first_rows(table: GapTable, R: int) -> GapTable:
    return GapTable(labels=table.labels[:R], newton_similarity=table.newton_similarity[:R],
                    newton_step=table.newton_step[:R], gd_similarity=table.gd_similarity[:R],
                    gd_step=table.gd_step[:R], gd_lr=table.gd_lr[:R], gd_protocol=table.gd_protocol,
                    num_prompts=table.num_prompts, extra=table.extra, metric=table.metric)


def climbing_layers(layer_error, band=(0.05, 0.90)) -> list:
    """The layers still climbing: read-out error between ``band[0]`` and ``band[1]`` of the way
    from the last layer's error to the embedding's (layer 0).

    Parameters
    ----------
    layer_error : sequence of float or Tensor of shape (L + 1,)
        Layer 0 is the embedding, the last entry the last layer.
    band : (float, float)

    Returns
    -------
    list of int
    """
    errors = torch.as_tensor(layer_error, dtype=torch.float64)
    if errors.ndim != 1 or errors.shape[0] < 2:
        raise ValueError(f"layer_error must hold one error per layer, embedding first (at least 2), got shape {tuple(errors.shape)}")
    low, high = (float(b) for b in band)
    if not 0 <= low < high <= 1:
        raise ValueError(f"band must be two fractions 0 <= low < high <= 1, got {band!r}")
    first, last = float(errors[0]), float(errors[-1])
    if not first > last:
        return []
    way = (errors - last) / (first - last)
    return [i for i in range(len(errors)) if low <= float(way[i]) <= high]


def best_step_growth(layers, newton_step, gd_step) -> dict:
    """How fast the best-matching steps grow with depth over the given layers.

    Parameters
    ----------
    layers : sequence of int
    newton_step, gd_step : sequence of int
        The best step at each of ``layers``.

    Returns
    -------
    dict
        ``newton_slope`` and ``newton_r2`` (a straight-line fit of Newton's step on the layer
        index: Fu et al.'s "linear"), ``gd_log2_slope`` (the slope of ``log2`` of GD's step:
        its doublings per layer). NaN with fewer than two layers.
    """
    layers = [float(x) for x in layers]
    if not (len(layers) == len(newton_step) == len(gd_step)):
        raise ValueError(f"layers, newton_step and gd_step must have the same length, got "
                         f"{len(layers)}, {len(newton_step)}, {len(gd_step)}")
    nan = float("nan")
    if len(layers) < 2:
        return {"newton_slope": nan, "newton_r2": nan, "gd_log2_slope": nan}

    def fit(values):
        x = torch.tensor(layers, dtype=torch.float64)
        t = torch.tensor([float(z) for z in values], dtype=torch.float64)
        xc, tc = x - x.mean(), t - t.mean()
        slope = float((xc * tc).sum() / (xc * xc).sum())
        total = float((tc * tc).sum())
        r2 = 1.0 - float(((tc - slope * xc) ** 2).sum()) / total if total > 0 else nan
        return slope, r2

    newton_slope, newton_r2 = fit(newton_step)
    gd_slope, _ = fit([math.log2(max(s, 1)) for s in gd_step])
    return {"newton_slope": newton_slope, "newton_r2": newton_r2, "gd_log2_slope": gd_slope}


def goal_verdict(layer_error, gap, ceiling, newton_step, gd_step, *, band=(0.05, 0.90), min_layers: int = 3,
                 min_gap: float = 0.01, ceiling_share: float = 0.5, step_ratio: float = 10.0) -> dict:
    """Issue 17's goal, read off per-layer numbers; every condition reports its number.

    1. at least ``min_layers`` climbing layers (:func:`climbing_layers`);
    2. at each, Newton's best similarity exceeds GD's best (global step) by ``>= min_gap``;
    3. the mean gap over them is ``>= ceiling_share`` × the mean ceiling (at each layer's best
       Newton step);
    4. GD's best step at the last climbing layer is ``>= step_ratio`` × Newton's.

    Parameters
    ----------
    layer_error : sequence of float, shape (L + 1,)
        Embedding first, last layer last.
    gap, ceiling : sequence of float, shape (L + 1,)
    newton_step, gd_step : sequence of int, shape (L + 1,)

    Returns
    -------
    dict
        ``climbing`` (the layers), ``conditions`` (name -> ``{"passed", ...numbers}``) and
        ``passed`` (all four).
    """
    L1 = len(layer_error)
    for name, values in (("gap", gap), ("ceiling", ceiling), ("newton_step", newton_step), ("gd_step", gd_step)):
        if len(values) != L1:
            raise ValueError(f"{name} must have one entry per layer ({L1}, like layer_error), got {len(values)}")
    climbing = climbing_layers(layer_error, band)
    gaps = [float(gap[i]) for i in climbing]
    ceilings = [float(ceiling[i]) for i in climbing]
    conditions = {"climbing_layers": {"value": len(climbing), "required": min_layers,
                                      "passed": len(climbing) >= min_layers}}
    if climbing:
        mean_gap, mean_ceiling = sum(gaps) / len(gaps), sum(ceilings) / len(ceilings)
        last = climbing[-1]
        n_step, g_step = int(newton_step[last]), int(gd_step[last])
        ratio = g_step / n_step if n_step > 0 else float("inf")
        conditions["gap_at_each"] = {"value": min(gaps), "per_layer": gaps, "required": min_gap,
                                     "passed": min(gaps) >= min_gap}
        conditions["mean_gap_vs_ceiling"] = {"value": mean_gap, "mean_ceiling": mean_ceiling,
                                             "required": ceiling_share * mean_ceiling,
                                             "passed": mean_gap >= ceiling_share * mean_ceiling}
        conditions["gd_step_ratio"] = {"value": ratio, "layer": last, "gd_step": g_step, "newton_step": n_step,
                                       "required": step_ratio, "passed": ratio >= step_ratio}
    else:
        for key, required in (("gap_at_each", min_gap), ("mean_gap_vs_ceiling", None), ("gd_step_ratio", step_ratio)):
            conditions[key] = {"value": None, "required": required, "passed": False}
    return {"climbing": climbing, "band": list(band), "conditions": conditions,
            "passed": all(c["passed"] for c in conditions.values())}


# --------------------------------------------------------------------------- checkpoints


def file_sha256(path) -> str:
    """SHA-256 of a file's bytes (what a results file records of the checkpoint it measured)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_trained_model(source, *, d: int, condition_number: float, device=None):
    """Load a trained regressor and refuse one trained for another ``d`` or condition number.

    Parameters
    ----------
    source : str or Path
        A shipped checkpoint's name (:func:`tfnewton.models.list_pretrained`) or a file path.
    d : int
        The input dimension the caller's prompts have.
    condition_number : float
        The input covariance's condition number the caller's prompts have.
    device : optional

    Returns
    -------
    model, info
        ``info``: ``{"file", "sha256", "metadata"}``.

    Raises
    ------
    ValueError
        The checkpoint was trained for another ``d`` or condition number (the message names
        both values).
    """
    from .models import load_pretrained, pretrained_info
    from .models.pretrained import load_checkpoint

    d = v.check_int(d, "d", minimum=1)
    condition_number = v.check_positive(condition_number, "condition_number")
    path = Path(source)
    if isinstance(source, str) and not path.suffix:
        info = pretrained_info(source)
        path = Path(info["file"])
        meta = info["metadata"]
        model = load_pretrained(source, device=device)
    else:
        model, meta = load_checkpoint(path, device=device)
    config = meta.get("train_config", {})
    trained_d = config.get("d", meta.get("d"))
    trained_kappa = config.get("condition_number", 1.0)
    if trained_d != d:
        raise ValueError(f"{str(source)!r} was trained for d = {trained_d}, but these prompts have d = {d}: "
                         f"use a checkpoint trained for d = {d}")
    if isinstance(trained_kappa, (list, tuple)) or not math.isclose(float(trained_kappa), condition_number):
        raise ValueError(f"{str(source)!r} was trained on inputs of condition number {trained_kappa}, but these "
                         f"prompts have condition number {condition_number:g}: use a checkpoint trained on them")
    return model, {"file": str(path), "sha256": file_sha256(path), "metadata": meta}


# --------------------------------------------------------------------------- issue 17's study

#: Fu et al.'s power-of-two grid of GD steps, 1 … 4096.
FU_GD_STEPS = tuple(2 ** i for i in range(13))

#: Fu et al.'s linear grid of GD steps (1, 50, 100, …, 1300).
FU_LINEAR_GD_STEPS = (1,) + tuple(range(50, 1301, 50))

#: Fu et al.'s Table 1 (d = 20, their 12-layer GPT-2), the Transformer's similarity of errors
#: with Iterative Newton, GD and online GD (arXiv 2310.17086).
FU_TABLE1 = {"newton": 0.991, "gd": 0.957, "online_gd": 0.806}


def position_sets(n: int, d: int) -> dict:
    """The sets of positions the Table-1 hypotheses average over (name -> list of int)."""
    n, d = v.check_int(n, "n", minimum=2), v.check_int(d, "d", minimum=1)
    return {
        "1 … n−1 (ours)": list(range(1, n)),
        "0 … n−1 (Fu et al.'s code)": list(range(n)),
        "k < d only": list(range(1, min(d, n))),
        "k ≥ d only": list(range(min(d, n - 1), n)),
        "d−2 … d+2 (Gram ill-conditioned)": list(range(max(1, d - 2), min(n, d + 3))),
    }


#: GD protocols of the Table-1 hypotheses (name -> :func:`newton_gd_gap` options).
GD_VARIANTS = {
    "one step tuned on a grid, ≤ 4096 steps (ours)": dict(gd_protocol="global", gd_steps=FU_GD_STEPS),
    "one step tuned on a grid, ≤ 64 steps": dict(gd_protocol="global", gd_steps=FU_GD_STEPS[:7]),
    "1/λ_max per prefix, ≤ 4096 steps": dict(gd_protocol="per_problem", gd_steps=FU_GD_STEPS),
    "fixed η = 0.01 (summed loss), ≤ 4096 steps (Fu et al.'s code)": dict(gd_protocol="fixed", gd_lr=0.01,
                                                                         gd_steps=FU_GD_STEPS),
    "fixed η = 0.01 (summed loss), 1 … 1300 every 50": dict(gd_protocol="fixed", gd_lr=0.01,
                                                            gd_steps=FU_LINEAR_GD_STEPS),
    "fixed η = 0.01 (summed loss), ≤ 64 steps": dict(gd_protocol="fixed", gd_lr=0.01, gd_steps=FU_GD_STEPS[:7]),
}


def ceiling_rows(X: torch.Tensor, y: torch.Tensor, newton_steps, *, gd_steps=FU_GD_STEPS) -> list:
    """The ceiling table of one setting: every metric and GD protocol, per Newton step.

    Parameters
    ----------
    X : Tensor of shape (B, n, d)
    y : Tensor of shape (B, n)
    newton_steps : sequence of int
    gd_steps : sequence of int

    Returns
    -------
    list of dict
        ``metric``, ``gd_protocol``, ``newton_step``, ``gd_similarity``, ``gd_step``, ``gd_lr``,
        ``ceiling`` (plain types, for a results file).
    """
    spectra = prefix_spectra(X, y)
    tables = [separation_ceiling(X, y, newton_steps, gd_protocol=p, gd_steps=gd_steps, spectra=spectra)
              for p in ("global", "per_problem")]
    tables += [induced_weights_ceiling(X, y, newton_steps, gd_protocol=p, gd_steps=gd_steps)
               for p in ("global", "per_problem")]
    tables.append(probe_r2_ceiling(X, y, newton_steps, gd_protocol="global", gd_steps=gd_steps))
    return [{"metric": t.metric, "gd_protocol": t.gd_protocol, "newton_step": t.newton_step[i],
             "gd_similarity": float(t.gd_similarity[i]), "gd_step": t.gd_step[i],
             "gd_lr": t.gd_lr[i] if isinstance(t.gd_lr[i], str) else float(t.gd_lr[i]), "ceiling": float(t.gap[i])}
            for t in tables for i in range(len(t.labels))]


def _online_similarities(rows, X, y, keep, rules):
    """Similarity of each row (R, B, n) with online GD under each rule, at positions ``keep``: (R, K)."""
    Xd, yd = X.double(), y.double()
    mean_sq = (Xd * Xd).sum(-1).mean(-1)
    preds = []
    for rule in rules:
        params = dict(normalized=True) if rule == "fu" else dict(lr=float(rule) / mean_sq)
        preds.append(prefix_predictions("online_gd", Xd, yd, 0, **params)[0])
    target = yd[:, keep]
    return torch.stack([similarity_of_errors(rows[..., keep], p[:, keep], target) for p in preds], -1)


def table1_hypotheses(X: torch.Tensor, y: torch.Tensor, *, stand_in_steps=(21,), gd_variants=None,
                      newton_steps=range(0, 24)) -> list:
    """Fu et al.'s Table 1 with exact algorithms standing in for the model, under each protocol.

    The stand-ins: Iterative Newton at each of ``stand_in_steps`` (α = ``1/‖SSᵀ‖_F``, Fu et
    al.'s code; their model matches Newton's step 21 at its output) and the least-squares
    solution. For each stand-in, set of positions (:func:`position_sets`) and GD protocol
    (:data:`GD_VARIANTS`): the best similarity of errors with Newton (α as above, steps
    ``newton_steps``), with GD, and with online GD (step ``1/‖x_i‖²``), and the gap.

    Parameters
    ----------
    X : Tensor of shape (B, n, d)
    y : Tensor of shape (B, n)
    stand_in_steps : sequence of int
    gd_variants : dict, optional
        Name -> :func:`newton_gd_gap` options; default :data:`GD_VARIANTS`.
    newton_steps : sequence of int

    Returns
    -------
    list of dict
        ``stand_in``, ``positions``, ``gd``, ``newton``, ``newton_step``, ``gd_similarity``,
        ``gd_step``, ``online_gd``, ``gap``.
    """
    v.check_regression_inputs(X, y)
    B, n, d = X.shape
    gd_variants = GD_VARIANTS if gd_variants is None else gd_variants
    spectra = prefix_spectra(X, y)
    stand_ins = {f"Newton step {t} (α = 1/‖SSᵀ‖_F)": spectra.predict(newton_filter(spectra.eigenvalues, [t],
                                                                                     "frobenius"))[0]
                 for t in stand_in_steps}
    stand_ins["least squares"] = spectra.predict(torch.ones_like(spectra.coefficients))
    rows_in = torch.stack(list(stand_ins.values()))  # (R, B, n)
    out = []
    for pos_name, keep in position_sets(n, d).items():
        online = _online_similarities(rows_in, X, y, keep, ["fu"])[:, 0]
        for gd_name, options in gd_variants.items():
            table = newton_gd_gap(rows_in, X, y, positions=keep, newton_steps=newton_steps,
                                  newton_alpha="frobenius", spectra=spectra, **options)
            for i, name in enumerate(stand_ins):
                out.append({"stand_in": name, "positions": pos_name, "gd": gd_name,
                            "newton": float(table.newton_similarity[i]), "newton_step": table.newton_step[i],
                            "gd_similarity": float(table.gd_similarity[i]), "gd_step": table.gd_step[i],
                            "online_gd": float(online[i]), "gap": float(table.gap[i])})
    return out


def gd_cap_sweep(X: torch.Tensor, y: torch.Tensor, caps=FU_GD_STEPS, *, stand_in_step: int = 21,
                 positions: str = "0 … n−1 (Fu et al.'s code)", gd_lr: float = 0.01) -> list:
    """GD's best similarity of errors to Newton's step ``stand_in_step`` when GD may run at most
    ``cap`` steps, for each cap: how the Table-1 gap depends on the step range searched.

    Parameters
    ----------
    X : Tensor of shape (B, n, d)
    y : Tensor of shape (B, n)
    caps : sequence of int
        GD searches the powers of two up to each cap.
    stand_in_step : int
        Newton's step standing in for the model (α = ``1/‖SSᵀ‖_F``).
    positions : str
        A key of :func:`position_sets`.
    gd_lr : float
        The fixed step (summed loss) of the ``"fixed"`` rows; the ``"global"`` rows tune one.

    Returns
    -------
    list of dict
        ``cap``, ``gd`` (``"fixed"`` or ``"global"``), ``gd_similarity``, ``gd_step``, ``gap``.
    """
    v.check_regression_inputs(X, y)
    B, n, d = X.shape
    keep = position_sets(n, d)[positions]
    spectra = prefix_spectra(X, y)
    stand_in = spectra.predict(newton_filter(spectra.eigenvalues, [stand_in_step], "frobenius"))
    out = []
    for cap in caps:
        steps = [s for s in FU_GD_STEPS if s <= cap] or [1]
        for protocol, options in (("fixed", {"gd_lr": gd_lr}), ("global", {})):
            table = newton_gd_gap(stand_in, X, y, positions=keep, newton_steps=[stand_in_step],
                                  newton_alpha="frobenius", gd_protocol=protocol, gd_steps=steps, spectra=spectra,
                                  **options)
            out.append({"cap": int(cap), "gd": protocol, "gd_similarity": float(table.gd_similarity[0]),
                        "gd_step": table.gd_step[0], "gap": float(table.gap[0])})
    return out


def closest_to_table1(rows: list, reference: dict = FU_TABLE1) -> dict:
    """The hypothesis row whose (Newton, GD, online GD) similarities are nearest the paper's.

    Parameters
    ----------
    rows : list of dict
        From :func:`table1_hypotheses`.
    reference : dict
        ``newton``, ``gd``, ``online_gd``.

    Returns
    -------
    dict
        The row, with ``distance`` (Euclidean, over the three numbers).
    """
    if not rows:
        raise ValueError("rows must not be empty (the output of table1_hypotheses)")

    def distance(r):
        return math.sqrt((r["newton"] - reference["newton"]) ** 2 + (r["gd_similarity"] - reference["gd"]) ** 2
                         + (r["online_gd"] - reference["online_gd"]) ** 2)

    best = min(rows, key=distance)
    return {**best, "distance": distance(best)}


def model_table1(pred: torch.Tensor, X: torch.Tensor, y: torch.Tensor, *, positions: str = "1 … n−1 (ours)",
                 gd: str = "one step tuned on a grid, ≤ 4096 steps (ours)", newton_alpha="default",
                 newton_steps=range(0, 24), online: str = "fu") -> dict:
    """A model's Table 1 (similarity of errors of its output with Newton, GD and online GD).

    Parameters
    ----------
    pred : Tensor of shape (B, n)
        The model's prediction at every position.
    X : Tensor of shape (B, n, d)
    y : Tensor of shape (B, n)
    positions : str
        A key of :func:`position_sets`.
    gd : str
        A key of :data:`GD_VARIANTS`.
    newton_alpha : {"default", "frobenius"} or float
    newton_steps : sequence of int
    online : {"fu", "best"}
        Online GD with step ``1/‖x_i‖²``, or the best of that and :data:`ONLINE_GRID`.

    Returns
    -------
    dict
        ``newton``, ``newton_step``, ``gd``, ``gd_step``, ``online_gd``, ``gap``.
    """
    v.check_regression_inputs(X, y)
    B, n, d = X.shape
    sets = position_sets(n, d)
    if positions not in sets:
        raise ValueError(f"positions must be one of {list(sets)}, got {positions!r}")
    if gd not in GD_VARIANTS:
        raise ValueError(f"gd must be one of {list(GD_VARIANTS)}, got {gd!r}")
    if online not in ("fu", "best"):
        raise ValueError(f"online must be 'fu' or 'best', got {online!r}")
    v.check_tensor(pred, "pred", ndim=2)
    keep = sets[positions]
    rows = pred.double()[None]
    table = newton_gd_gap(rows, X, y, positions=keep, newton_steps=newton_steps, newton_alpha=newton_alpha,
                          **GD_VARIANTS[gd])
    rules = ["fu"] if online == "fu" else ["fu", *ONLINE_GRID]
    online_sim = _online_similarities(rows, X, y, keep, rules)[0].max()
    return {"newton": float(table.newton_similarity[0]), "newton_step": table.newton_step[0],
            "gd": float(table.gd_similarity[0]), "gd_step": table.gd_step[0], "online_gd": float(online_sim),
            "gap": float(table.gap[0]), "positions": positions, "gd_protocol": gd}


def layer_study(model, task, *, test_fraction: float = 0.5, newton_steps=range(0, 21), gd_steps=FU_GD_STEPS,
                probe_gd_steps=FU_GD_STEPS[:11], seed: int = 0, probes: bool = True):
    """Issue 17's per-layer comparison of a trained model, its best-step growth and its goal verdict.

    Fu et al.'s probing (:func:`tfnewton.metrics.layer_readouts`: a linear read-out refit on
    every layer, scored on held-out prompts), :func:`compare_layers` on the read-outs,
    :func:`best_step_growth` and :func:`goal_verdict` over the climbing layers, and the probe
    R² tables (:func:`tfnewton.probes.probe_iterates`, Newton's and GD's predictions at the
    query, with the random-init and shuffled controls).

    Parameters
    ----------
    model : torch.nn.Module
    task : object with ``X (B, n, d)`` and ``y (B, n)``
    test_fraction : float
        Share of the prompts held out (all similarities are measured on them).
    newton_steps, gd_steps : sequence of int
    probe_gd_steps : sequence of int
        GD's steps in the probe table (step ``1/λ_max`` per prompt, the probes' default).
    seed : int
    probes : bool
        Fit the probe tables (the slow part).

    Returns
    -------
    summary : dict
        Plain types: ``layers`` (one dict per layer), ``output``, ``climbing``, ``growth``,
        ``verdict``, ``probes``, ``num_heldout``.
    comparison : LayerComparison
        Rows: the layers, then the model's output.
    heldout : dict
        ``X``, ``y`` and the model's ``output`` on the held-out prompts (tensors).
    """
    from .metrics import layer_readouts
    from .probes import probe_iterates

    readouts = layer_readouts(model, task, test_fraction=test_fraction, seed=seed)
    X, y = readouts.X.double(), readouts.y.double()
    error = readouts.errors().mean(-1)  # (L + 1,)
    L1 = error.shape[0]
    output_error = normalized_error(readouts.model_predictions, y, X.shape[-1]).mean()
    comparison = compare_layers(torch.cat([readouts.predictions, readouts.model_predictions[None]]), X, y,
                                labels=[f"layer {i}" for i in range(L1)] + ["output"],
                                layer_error=torch.cat([error, output_error.reshape(1)]),
                                newton_steps=newton_steps, gd_steps=gd_steps)
    g, p = comparison.global_gd, comparison.per_problem_gd
    layers = [{"layer": i, "label": comparison.labels[i], "readout_error": float(comparison.layer_error[i]),
               "newton": float(g.newton_similarity[i]), "newton_step": g.newton_step[i],
               "gd_global": float(g.gd_similarity[i]), "gd_global_step": g.gd_step[i], "gd_global_lr": float(g.gd_lr[i]),
               "gd_per_problem": float(p.gd_similarity[i]), "gd_per_problem_step": p.gd_step[i],
               "online_gd": float(comparison.online_gd[i]), "online_gd_rule": comparison.online_gd_rule[i],
               "ols": float(comparison.ols[i]), "gap_global": float(g.gap[i]), "gap_per_problem": float(p.gap[i]),
               "ceiling_global": float(comparison.ceiling[i]),
               "ceiling_per_problem": float(comparison.ceiling_per_problem[i])}
              for i in range(L1 + 1)]
    per_layer = layers[:L1]
    verdict = goal_verdict([r["readout_error"] for r in per_layer], [r["gap_global"] for r in per_layer],
                           [r["ceiling_global"] for r in per_layer], [r["newton_step"] for r in per_layer],
                           [r["gd_global_step"] for r in per_layer])
    climbing = verdict["climbing"]
    growth = best_step_growth(climbing, [per_layer[i]["newton_step"] for i in climbing],
                              [per_layer[i]["gd_global_step"] for i in climbing])
    summary = {"layers": per_layer, "output": layers[L1], "climbing": climbing, "growth": growth, "verdict": verdict,
               "num_heldout": int(X.shape[0]), "num_fit": int(_task_size(task) - X.shape[0])}
    if probes:
        summary["probes"] = {}
        for name, steps in (("newton", list(newton_steps)), ("gd", list(probe_gd_steps))):
            table = probe_iterates(model, task, name, steps, target="prediction", test_fraction=test_fraction,
                                   seed=seed)
            best = table.r2.nan_to_num(-math.inf).argmax(1)
            summary["probes"][name] = {
                "steps": list(table.steps),
                "rows": [{"layer": i, "best_step": table.steps[int(j)], "r2": float(table.r2[i, j]),
                          "random_init_max": float(table.controls["random_init"][i].nan_to_num(-math.inf).max()),
                          "shuffled_max": float(table.controls["shuffled"][i].max())}
                         for i, j in enumerate(best.tolist())],
                "num_fit": table.num_fit, "num_test": table.num_test}
    heldout = {"X": X, "y": y, "output": readouts.model_predictions.double()}
    return summary, comparison, heldout


def _task_size(task) -> int:
    """Number of prompts of a task or an ``(X, y)`` pair."""
    X = task[0] if isinstance(task, tuple) else task.X
    return int(X.shape[0])
