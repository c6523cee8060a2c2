r"""How far apart Newton and gradient descent can be under a metric: its power, before any model.

A trained model "does Newton, not GD" when its similarity to Newton exceeds its similarity
to GD. How large can that gap be at all? Stand an exact Newton iterate in for the model:
its similarity to Newton is 1 (at its own step), and its gap is ``1 − (GD's best
similarity to it)``. That is the **ceiling**: no model that behaves like Newton's step
``t`` can show a larger gap under the same metric, prompts and GD protocol. A model that
*is* GD shows a negative gap.

Two GD protocols, since the answer depends on it (``../shared/notes/probes.md``):

* ``"global"``: one step size for all prompts, tuned on a grid — Fu et al. use a fixed η.
  The grid is ``c / λ*`` for ``c`` in ``gd_grid``, with ``λ*`` the 99th percentile over
  prompts and prefixes of the largest eigenvalue of ``XᵀX/i`` (the loss's Hessian).
* ``"per_problem"``: ``η = 1/λ_max`` of each prompt's own prefix (what a default "step
  ``1/L``" does); it adapts to each spectrum and separates far less.

>>> import torch
>>> from tfnewton.tasks import sample_linear_regression
>>> from tfnewton.separation import separation_ceiling
>>> task = sample_linear_regression(256, 11, 5, generator=torch.Generator().manual_seed(0))
>>> table = separation_ceiling(task.X, task.y, newton_steps=[3, 6])   # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from . import _validate as v
from .algorithms import prefix_predictions
from .metrics import similarity_of_errors
from .tables import Table, TableView

__all__ = ["GD_GRID", "GD_STEPS", "GapTable", "gd_step_sizes", "newton_gd_gap", "separation_ceiling"]

#: Multiples ``c`` of ``1/λ*`` tried for GD's one global step size.
GD_GRID = (0.25, 0.5, 1.0, 1.5, 1.9)

#: GD steps searched (Fu et al. search powers of two up to 4096).
GD_STEPS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


@dataclass
class GapTable(TableView):
    """Each row's best similarity to Newton and to GD, and the gap between them.

    Attributes
    ----------
    labels : list of str
        One per row (a model's layer, or ``"Newton step t"`` for a ceiling).
    newton_similarity, gd_similarity : Tensor of shape (R,)
        The best similarity of errors over Newton's steps and over GD's (step, step size).
    newton_step, gd_step : list of int
        Where each best is reached.
    gd_lr : list
        GD's step size at its best (a float for ``"global"``, the string ``"1/λ_max"`` for
        ``"per_problem"``).
    gd_protocol : str
    num_prompts : int
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
        title = f"similarity of errors, GD {self.gd_protocol} step size, {self.num_prompts} prompts"
        return Table(header, rows, title=title)


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


def newton_gd_gap(preds: torch.Tensor, X: torch.Tensor, y: torch.Tensor, *, labels=None, newton_steps=range(0, 21),
                  gd_protocol: str = "global", gd_steps=GD_STEPS, gd_grid=GD_GRID, first_position: int = 1) -> GapTable:
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
        Iterative Newton's steps searched (α = the library's default).
    gd_protocol : {"global", "per_problem"}
        One step size tuned over ``gd_grid`` (see :func:`gd_step_sizes`), or ``1/λ_max`` of
        each prefix.
    gd_steps : iterable of int
        GD's steps searched.
    gd_grid : sequence of float
        The multiples of ``1/λ*`` tried (``"global"`` only).
    first_position : int
        Residuals are compared at positions ``first_position … n−1`` (position 0 has no
        context: every predictor says 0 there, which only adds agreement).

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
    if gd_protocol not in ("global", "per_problem"):
        raise ValueError(f"gd_protocol must be 'global' or 'per_problem', got {gd_protocol!r}")
    v.check_int(first_position, "first_position", minimum=0)
    if first_position >= n:
        raise ValueError(f"first_position must be < n = {n}, got {first_position}")
    newton_steps, gd_steps = sorted(set(newton_steps)), sorted(set(gd_steps))
    R = preds.shape[0]
    labels = [str(i) for i in range(R)] if labels is None else list(labels)
    if len(labels) != R:
        raise ValueError(f"labels must have one entry per row of preds ({R}), got {len(labels)}")
    keep = slice(first_position, None)

    def similarity(candidates):  # (C, B, n) -> (R, C); NaN for a candidate that diverged
        finite = candidates.isfinite().flatten(1).all(1)  # (C,)
        sim = similarity_of_errors(preds[:, None, :, keep], candidates.nan_to_num(0.0, 0.0, 0.0)[None, :, :, keep],
                                   y[:, keep])
        return sim.masked_fill(~finite, float("nan"))

    newton = prefix_predictions("newton", X, y, newton_steps[-1])[newton_steps]
    newton_sim, newton_at = _best(similarity(newton))
    lrs = gd_step_sizes(X, gd_grid) if gd_protocol == "global" else [None]
    gd_sims = []
    for lr in lrs:
        gd = prefix_predictions("gd", X, y, gd_steps[-1], lr=lr)[gd_steps]
        gd_sims.append(similarity(gd))
    gd_sim, gd_at = _best(torch.cat(gd_sims, dim=1))  # columns: (lr, step), lr-major
    return GapTable(
        labels=labels, newton_similarity=newton_sim, newton_step=[newton_steps[j] for j in newton_at],
        gd_similarity=gd_sim, gd_step=[gd_steps[j % len(gd_steps)] for j in gd_at],
        gd_lr=[lrs[j // len(gd_steps)] if gd_protocol == "global" else "1/λ_max" for j in gd_at],
        gd_protocol=gd_protocol, num_prompts=B,
    )


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
        ``first_position``); its Newton search covers ``0 … max(newton_steps)``.

    Returns
    -------
    GapTable
        Rows ``"Newton step t"``; ``table.gap`` is the ceiling.
    """
    steps = [v.check_int(t, "newton_steps[i]", minimum=0) for t in newton_steps]
    if not steps:
        raise ValueError("newton_steps must not be empty")
    v.check_regression_inputs(X, y)
    newton = prefix_predictions("newton", X, y, max(steps))[steps]
    return newton_gd_gap(newton, X, y, labels=[f"Newton step {t}" for t in steps],
                         newton_steps=range(0, max(steps) + 1), **options)
