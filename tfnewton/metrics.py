r"""Fu et al.'s yardsticks: how alike are a model (or one of its layers) and an algorithm?

Fu, Chen, Jia and Sharan (2024) compare a Transformer with Iterative Newton, gradient
descent and the rest through two similarities, computed on the same prompts:

* **similarity of errors** (:func:`similarity_of_errors`): the residuals
  ``(ŷ_i^A − y_i)_i`` and ``(ŷ_i^B − y_i)_i`` over the positions ``i`` of a prompt, where
  ``ŷ_i`` is predicted from ``x_i`` and the pairs before it; their cosine, averaged over
  prompts;
* **similarity of induced weights** (:func:`similarity_of_induced_weights`): the weight
  vector ``w̃ = (X̃ᵀX̃)⁻¹X̃ᵀỹ`` that explains a predictor's answers ``ỹ`` on many query points
  ``X̃`` (same context), compared by cosine.

To compare a *layer* with an algorithm they freeze the network and fit one linear read-out
per layer (:func:`layer_readouts`); :func:`match_algorithm` then finds, for every layer, the
algorithm step (or any hyper-parameter) that layer is most similar to — the curve of their
claim 2 (the matching Newton step grows linearly with depth, the matching GD step
exponentially).

Everything that is an algorithm comes from :mod:`tfnewton.algorithms` (through
:func:`tfnewton.algorithms.prefix_predictions`); the read-outs are :mod:`tfnewton.ridge`'s
ridge probes, always scored on prompts they were not fit on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from . import _validate as v
from . import algorithms
from .algorithms import as_algorithm, prefix_predictions, step_list
from .capture import check_hooked, query_position, run_with_cache, takes_query, task_prompts, x_token_positions
from .ridge import RidgeProbe, check_enough_problems, split_indices
from .tables import Table, TableView

__all__ = [
    "cosine_similarity",
    "similarity_of_errors",
    "induced_weights",
    "similarity_of_induced_weights",
    "normalized_error",
    "LayerReadouts",
    "layer_readouts",
    "best_matching",
    "MatchTable",
    "match_algorithm",
]


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return values.mean(-1)
    if reduction == "none":
        return values
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def cosine_similarity(a: torch.Tensor, b: torch.Tensor, *, eps: float = 1e-12) -> torch.Tensor:
    """Cosine of the angle between ``a`` and ``b`` along the last axis (broadcasting the rest).

    A zero vector has similarity ``0`` with everything (it has no direction).

    Parameters
    ----------
    a, b : Tensor of shape (..., m)

    Returns
    -------
    Tensor of shape (...)
    """
    v.check_tensor(a, "a")
    v.check_tensor(b, "b")
    dot = (a * b).sum(-1)
    norms = a.norm(dim=-1) * b.norm(dim=-1)
    return dot / norms.clamp_min(eps)


def similarity_of_errors(pred_a, pred_b, y, *, reduction: str = "mean") -> torch.Tensor:
    """Fu et al.'s similarity of errors: the cosine of two predictors' residual vectors.

    For each prompt the residuals ``r^A = ŷ^A − y`` and ``r^B = ŷ^B − y`` over its positions
    are compared by cosine; the mean over prompts is returned. Leading axes broadcast, so
    ``similarity_of_errors(layers[:, None], steps[None], y)`` gives a ``(layers, steps)`` table.

    Parameters
    ----------
    pred_a, pred_b : Tensor of shape (..., B, n)
        Predictions of ``y`` at every position (each from the pairs before it).
    y : Tensor of shape (B, n)
    reduction : {"mean", "none"}
        Average over the ``B`` prompts, or return them all (shape ``(..., B)``).

    Returns
    -------
    Tensor of shape (...) (or (..., B))
        In ``[−1, 1]``; 1 when the residuals point the same way.

    Examples
    --------
    >>> import torch
    >>> from tfnewton.metrics import similarity_of_errors
    >>> y = torch.tensor([[1.0, 2.0, 3.0]])
    >>> float(similarity_of_errors(y + 1, y + 2, y))
    1.0
    """
    v.check_tensor(y, "y", ndim=2)
    for name, pred in (("pred_a", pred_a), ("pred_b", pred_b)):
        v.check_tensor(pred, name)
        if pred.ndim < 2 or tuple(pred.shape[-2:]) != tuple(y.shape):
            raise ValueError(f"{name} must have shape (..., B, n) = (..., {y.shape[0]}, {y.shape[1]}) like y, got {tuple(pred.shape)}")
    return _reduce(cosine_similarity(pred_a - y, pred_b - y), reduction)


def induced_weights(x_probe: torch.Tensor, preds: torch.Tensor) -> torch.Tensor:
    """The weight vector that explains a predictor's answers: ``w̃ = (X̃ᵀX̃)⁻¹X̃ᵀỹ``.

    Solved with :func:`tfnewton.algorithms.least_squares` (minimum-norm when there are fewer
    probe points than dimensions).

    Parameters
    ----------
    x_probe : Tensor of shape (B, m, d)
        ``m`` query points per problem (``m >= d`` for a unique answer).
    preds : Tensor of shape (..., B, m)
        The predictor's answers at them; leading axes (layers, steps) are kept.

    Returns
    -------
    Tensor of shape (..., B, d)
    """
    v.check_tensor(x_probe, "x_probe", ndim=3)
    v.check_tensor(preds, "preds")
    B, m, d = x_probe.shape
    if preds.ndim < 2 or tuple(preds.shape[-2:]) != (B, m):
        raise ValueError(f"preds must have shape (..., B, m) = (..., {B}, {m}) like x_probe, got {tuple(preds.shape)}")
    lead = preds.shape[:-2]
    flat = preds.reshape(-1, B, m)
    X = x_probe.to(preds.dtype).unsqueeze(0).expand(flat.shape[0], B, m, d).reshape(-1, m, d)
    w = algorithms.least_squares(X, flat.reshape(-1, m))
    return w.reshape(*lead, B, d)


def similarity_of_induced_weights(pred_a, pred_b, x_probe, *, reduction: str = "mean") -> torch.Tensor:
    """Fu et al.'s similarity of induced weights: cosine of the weights two predictors imply.

    Parameters
    ----------
    pred_a, pred_b : Tensor of shape (..., B, m)
        Each predictor's answers at the probe points (same context per problem).
    x_probe : Tensor of shape (B, m, d)
    reduction : {"mean", "none"}

    Returns
    -------
    Tensor of shape (...) (or (..., B))

    Examples
    --------
    >>> import torch
    >>> from tfnewton.metrics import similarity_of_induced_weights
    >>> x = torch.randn(2, 8, 3, dtype=torch.float64)
    >>> w = torch.randn(2, 3, dtype=torch.float64)
    >>> preds = (x @ w.unsqueeze(-1)).squeeze(-1)
    >>> round(float(similarity_of_induced_weights(preds, 3 * preds, x)), 6)
    1.0
    """
    wa = induced_weights(x_probe, pred_a)
    wb = induced_weights(x_probe, pred_b)
    return _reduce(cosine_similarity(wa, wb), reduction)


def normalized_error(pred: torch.Tensor, y: torch.Tensor, d: int, *, reduction: str = "mean") -> torch.Tensor:
    """Garg et al.'s normalized squared error ``(ŷ − y)² / d``, averaged over the batch axis.

    Parameters
    ----------
    pred : Tensor of shape (..., B) or (..., B, n)
    y : Tensor of shape (B,) or (B, n), broadcastable against ``pred``
    d : int
    reduction : {"mean", "none"}
        ``"mean"`` averages over ``B`` (axis ``-1`` for ``(B,)`` targets, ``-2`` for ``(B, n)``).

    Returns
    -------
    Tensor
    """
    d = v.check_int(d, "d", minimum=1)
    err = (pred - y) ** 2 / d
    if reduction == "none":
        return err
    if reduction != "mean":
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    return err.mean(-1 if y.ndim == 1 else -2)


# --------------------------------------------------------------------------- read-outs per layer


@dataclass
class LayerReadouts:
    """One linear read-out per layer, fit as Fu et al. did, with its held-out predictions.

    Attributes
    ----------
    predictions : Tensor of shape (L + 1, B_test, n)
        Layer ℓ's read-out of ``y_i`` at the token of ``x_i``, on the held-out prompts.
    X : Tensor of shape (B_test, n, d)
    y : Tensor of shape (B_test, n)
        The held-out prompts.
    probe : tfnewton.ridge.RidgeProbe
        The read-outs, one per layer (features of width ``D``, one target): its
        ``predict`` maps states ``(L + 1, N, D)`` to ``(L + 1, N)``.
    layer_names : list of str
    model_predictions : Tensor of shape (B_test, n)
        The model's own output on the held-out prompts (its trained read-out).
    """

    predictions: torch.Tensor
    X: torch.Tensor
    y: torch.Tensor
    probe: RidgeProbe
    layer_names: list
    model_predictions: torch.Tensor | None = None

    # The probe's parameters under batch 1's names and shapes:
    # pred = ((h − mean)/scale) @ coef + intercept per layer.
    @property
    def mean(self) -> torch.Tensor:
        """Feature means, shape ``(L+1, 1, D)``."""
        return self.probe.mean.unsqueeze(-2)

    @property
    def scale(self) -> torch.Tensor:
        """Feature scales, shape ``(L+1, 1, D)``."""
        return self.probe.scale.unsqueeze(-2)

    @property
    def coef(self) -> torch.Tensor:
        """Read-out weights, shape ``(L+1, D, 1)``."""
        return self.probe.coef

    @property
    def intercept(self) -> torch.Tensor:
        """Read-out intercepts, shape ``(L+1, 1, 1)``."""
        return self.probe.intercept.unsqueeze(-2)

    def apply(self, states: torch.Tensor) -> torch.Tensor:
        """Read every layer out of captured states ``(L + 1, N, D)``: returns ``(L + 1, N)``."""
        return self.probe.predict(states.double())[..., 0]

    def errors(self) -> torch.Tensor:
        """Normalized squared error of each layer's read-out per position: ``(L + 1, n)``."""
        return normalized_error(self.predictions, self.y.double(), self.X.shape[-1])


def layer_readouts(
    model,
    task,
    *,
    test_fraction: float = 0.25,
    val_fraction: float = 0.2,
    penalties=None,
    seed: int = 0,
    batch_size: int | None = 1024,
) -> LayerReadouts:
    """Fit one linear read-out per layer from the hidden state at each ``x_i`` token to ``y_i``.

    Fu et al.'s probe: freeze the network and retrain its read-out on the output of the
    first ℓ layers. Here the read-out is a ridge probe (penalty chosen on a validation split)
    fit on all positions of the fit prompts; predictions are returned for the held-out ones.

    Parameters
    ----------
    model : torch.nn.Module
        A trained in-context learner (``forward(X, y) -> (B, n)``, ``blocks``,
        ``x_token_positions``).
    task : object with ``X (B, n, d)`` and ``y (B, n)``, or a pair ``(X, y)``
    test_fraction, val_fraction, penalties, seed, batch_size
        As in :func:`tfnewton.probes.probe_iterates`.

    Returns
    -------
    LayerReadouts
    """
    X, y = task_prompts(task)
    check_hooked(model)
    if takes_query(model):
        raise TypeError(
            f"{type(model).__name__} answers one query per prompt (forward(X, y, x_query)); "
            "per-position read-outs need a causal in-context learner with forward(X, y) -> (B, n)"
        )
    probe = RidgeProbe(penalties, val_fraction=val_fraction)
    seed = v.check_int(seed, "seed", minimum=0)
    B, n, d = X.shape
    g = torch.Generator().manual_seed(seed)
    test_idx, fit_idx = split_indices(B, test_fraction, generator=g, name="test_fraction")
    if len(fit_idx) < 2:
        raise ValueError(f"too few probe problems: {B} prompts leave {len(fit_idx)} to fit read-outs on")

    positions = x_token_positions(model, n)
    out, cache = run_with_cache(model, X, y, positions=positions, batch_size=batch_size)
    states = cache.stack().double().cpu()  # (L+1, B, n, D)
    L1, _, _, D = states.shape
    fit = states[:, fit_idx].reshape(L1, -1, D)  # (L+1, B_fit·n, D)
    targets = y[fit_idx].double().cpu().reshape(-1, 1)
    # Validation split by prompt (not by position), so no prompt is on both sides.
    val_mask = probe.validation_split(len(fit_idx), g).repeat_interleave(n)
    check_enough_problems(int((~val_mask).sum()), D, " (prompt positions)")
    probe.fit(fit, targets, validation=val_mask)
    test = states[:, test_idx]  # (L+1, B_test, n, D)
    pred = probe.predict(test.reshape(L1, -1, D))  # (L+1, B_test·n, 1)
    return LayerReadouts(
        predictions=pred[..., 0].reshape(L1, len(test_idx), n),
        X=X[test_idx].cpu(), y=y[test_idx].cpu(), probe=probe,
        layer_names=cache.layer_names, model_predictions=out[test_idx].detach().double().cpu(),
    )


def best_matching(similarity: torch.Tensor, candidates) -> list:
    """For each row (layer), the candidate (step, hyper-parameter) with the highest similarity.

    Parameters
    ----------
    similarity : Tensor of shape (L, S)
    candidates : sequence of length S
        What each column stands for (a step count, a step size, a label).

    Returns
    -------
    list of (candidate, similarity) pairs, one per row
    """
    v.check_tensor(similarity, "similarity", ndim=2, finite=False)
    candidates = list(candidates)
    if len(candidates) != similarity.shape[1]:
        raise ValueError(f"candidates must have {similarity.shape[1]} entries (one per column), got {len(candidates)}")
    best = similarity.nan_to_num(-math.inf).argmax(1)
    return [(candidates[int(j)], float(similarity[i, j])) for i, j in enumerate(best)]


@dataclass
class MatchTable(TableView):
    """How similar each layer is to each step of an algorithm (Fu et al.'s matching).

    Attributes
    ----------
    similarity : Tensor of shape (L + 1, S)
        ``similarity[ℓ, j]`` between layer ℓ's read-out and the algorithm at ``steps[j]``.
    steps : list
    algorithm, metric : str
    layer_names : list of str
    layer_error : Tensor of shape (L + 1,)
        Normalized squared error of each layer's read-out, averaged over positions.
    model_similarity : Tensor of shape (S,)
        The same similarity for the model's own output.
    """

    similarity: torch.Tensor
    steps: list
    algorithm: str
    metric: str
    layer_names: list
    layer_error: torch.Tensor | None = None
    model_similarity: torch.Tensor | None = None
    extra: dict = field(default_factory=dict)

    def best_steps(self) -> list:
        """The best-matching step of every layer."""
        return [c for c, _ in best_matching(self.similarity, self.steps)]

    def rows(self) -> list:
        """A tidy list of dicts: ``layer``, ``step``, ``similarity``."""
        return [
            {"layer": layer, "layer_name": name, "step": step, "similarity": float(self.similarity[layer, j])}
            for layer, name in enumerate(self.layer_names)
            for j, step in enumerate(self.steps)
        ]

    def to_table(self) -> Table:
        """One row per layer: best-matching step, its similarity, the read-out's error.

        Returns
        -------
        Table
            Shown as HTML in Jupyter and the book, as Markdown by ``print``.
        """
        header = ["layer", f"best {self.algorithm} step", f"similarity of {self.metric}", "read-out error"]
        rows = []
        for layer, (step, sim) in enumerate(best_matching(self.similarity, self.steps)):
            err = "" if self.layer_error is None else f"{float(self.layer_error[layer]):.4f}"
            rows.append([layer, str(step), sim, err])
        return Table(header, rows, title=f"MatchTable({self.algorithm}, metric={self.metric!r})")

    def summary(self) -> str:
        """:meth:`to_table` as a Markdown table, without its title."""
        table = self.to_table()
        table.title = None
        return table.to_markdown()

    def plot(self, ax=None, *, mark_best: bool = True, **kwargs):
        """Heat map of the similarity (layers × steps) with :func:`tfnewton.plotting.heatmap`.

        Parameters
        ----------
        ax : matplotlib Axes, optional
        mark_best : bool
            Circle each layer's best-matching step.
        **kwargs
            Passed to :func:`tfnewton.plotting.heatmap`.

        Returns
        -------
        matplotlib Axes
        """
        from .plotting import heatmap, mark_row_maxima

        options = dict(xlabel=f"{self.algorithm} step", ylabel="layer", xticklabels=[str(s) for s in self.steps],
                       colorbar_label=f"similarity of {self.metric}")
        options.update(kwargs)
        ax = heatmap(self.similarity, ax, **options)
        if mark_best:
            mark_row_maxima(ax, self.similarity)
        return ax


def match_algorithm(
    model,
    task,
    algorithm="newton",
    steps=20,
    *,
    metric: str = "errors",
    readouts: LayerReadouts | None = None,
    context_sizes=None,
    num_queries: int | None = None,
    seed: int = 0,
    batch_size: int | None = 1024,
    **algorithm_kwargs,
) -> MatchTable:
    """Similarity of every layer's read-out to every step of an algorithm (Fu et al.'s matching).

    Parameters
    ----------
    model : torch.nn.Module
        A trained in-context learner.
    task : object with ``X (B, n, d)`` and ``y (B, n)``
        Read-outs are fit on part of it and everything is compared on the held-out rest.
    algorithm : str or callable
        See :func:`tfnewton.algorithms.iterates`.
    steps : int or sequence of int
        Steps (hyper-parameters) to compare with, e.g. ``[1, 2, 4, …, 1024]`` for GD.
    metric : {"errors", "induced_weights"}
        ``"errors"``: :func:`similarity_of_errors` over all positions of each held-out prompt.
        ``"induced_weights"``: :func:`similarity_of_induced_weights` — every layer answers
        ``num_queries`` fresh query points after the first ``c`` pairs of each prompt, for
        each ``c`` in ``context_sizes``, and the cosines are averaged over ``c``.
    readouts : LayerReadouts, optional
        Reuse read-outs already fit by :func:`layer_readouts` (on this ``task``).
    context_sizes : sequence of int, optional
        For ``"induced_weights"``; default ``d, 2d, …`` up to ``n − 1``, at most 4 of them.
    num_queries : int, optional
        For ``"induced_weights"``; default ``2d``.
    seed, batch_size
        As in :func:`layer_readouts`.
    **algorithm_kwargs
        Passed to the algorithm.

    Returns
    -------
    MatchTable
    """
    if metric not in ("errors", "induced_weights"):
        raise ValueError(f"metric must be 'errors' or 'induced_weights', got {metric!r}")
    entry = as_algorithm(algorithm)
    steps = [0] if entry.online else step_list(steps)
    if readouts is None:
        readouts = layer_readouts(model, task, seed=seed, batch_size=batch_size)
    X, y = readouts.X.double(), readouts.y.double()
    B, n, d = X.shape
    errors = readouts.errors().mean(-1)
    if metric == "errors":
        algo = prefix_predictions(entry, X, y, max(steps), **algorithm_kwargs)[steps]  # (S, B, n)
        sim = similarity_of_errors(readouts.predictions[:, None], algo[None], y)  # (L+1, S)
        model_sim = similarity_of_errors(readouts.model_predictions[None], algo, y)
        return MatchTable(sim, steps, entry.name, metric, readouts.layer_names, errors, model_sim)

    m = 2 * d if num_queries is None else v.check_int(num_queries, "num_queries", minimum=1)
    if context_sizes is None:
        context_sizes = [c for c in range(d, n, d)][:4] or [n - 1]
    g = torch.Generator().manual_seed(seed + 1)
    sims, model_sims = [], []
    for c in context_sizes:
        c = v.check_int(c, "context_sizes[i]", minimum=1)
        if c >= n:
            raise ValueError(f"context_sizes must be < n = {n} (a query has to fit after the context), got {c}")
        x_new = torch.randn(B, m, d, generator=g, dtype=torch.float64)
        # Every prompt's first c pairs, m times, each followed by one fresh query point.
        Xc = X[:, :c].repeat_interleave(m, 0)
        yc = y[:, :c].repeat_interleave(m, 0)
        xq = x_new.reshape(B * m, d)
        out, cache = run_with_cache(model, Xc, yc, xq, positions=query_position(model, c), batch_size=batch_size)
        layer_preds = readouts.apply(cache.stack().cpu()).reshape(-1, B, m)  # (L+1, B, m)
        model_preds = out[:, c].double().cpu().reshape(B, m)
        W = entry(X[:, :c], y[:, :c], max(steps), **algorithm_kwargs)
        W = W[-1:] if entry.online else W[steps]  # online GD: after all c examples
        algo_preds = torch.einsum("sbd,bmd->sbm", W, x_new)  # (S, B, m)
        sims.append(similarity_of_induced_weights(layer_preds[:, None], algo_preds[None], x_new))
        model_sims.append(similarity_of_induced_weights(model_preds[None], algo_preds, x_new))
    sim = torch.stack(sims).mean(0)
    return MatchTable(sim, steps, entry.name, metric, readouts.layer_names, errors, torch.stack(model_sims).mean(0),
                      extra={"context_sizes": list(context_sizes), "num_queries": m})
