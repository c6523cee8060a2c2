r"""Read algorithms out of a model's layers with linear probes (Fu et al. 2024; Akyürek et al. 2023).

A probe asks whether a quantity is linearly readable from a layer's hidden state (see
:mod:`tfnewton.ridge`). Here the quantities are the iterates of a reference algorithm
(Iterative Newton, gradient descent, …, named in :data:`tfnewton.algorithms.ALGORITHMS`) run
on each prompt's own context: the weight vector ``w_k`` after ``k`` steps and its prediction
``x_qᵀw_k`` at the query. If layer ℓ holds ``x_qᵀw_k`` and not ``x_qᵀw_{k+1}``, the model has,
in that sense, done ``k`` steps by layer ℓ.

:func:`probe_iterates` captures every layer's hidden state at the query token
(:mod:`tfnewton.capture`), fits one batched ridge probe per layer to every step's target
(:class:`tfnewton.ridge.RidgeProbe`) and returns a :class:`ProbeTable` of held-out R² of shape
``(layers, steps)`` whose :meth:`ProbeTable.best_steps` matches each layer to a step. Its
controls: the same probes on a randomly initialised model of the same shape
(:func:`random_init_like`) and on targets shuffled across problems.

Layer ``0`` is the embedding (the input of ``blocks[0]``); layer ``ℓ ≥ 1`` is the output of
``blocks[ℓ − 1]``.

The capture (``run_with_cache``, ``hidden_states``, ``query_position``, ``ActivationCache``), the
probe (``fit_linear_probe``, ``LinearProbe``, ``r2_score``) and the algorithm registry
(``ALGORITHMS``, ``iterates``, ``prefix_predictions``) that batch 1 kept here live in
:mod:`tfnewton.capture`, :mod:`tfnewton.ridge` and :mod:`tfnewton.algorithms`, and stay
importable from this module.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn as nn

from . import _validate as v
# ALGORITHMS, iterates, prefix_predictions, ActivationCache, run_with_cache, hidden_states,
# query_position, LinearProbe, fit_linear_probe, r2_score and DEFAULT_PENALTIES lived here in
# batch 1: they stay importable from this module.
from .algorithms import ALGORITHMS, as_algorithm, iterates, prefix_predictions, step_list
from .capture import ActivationCache, check_hooked, hidden_states, query_position, run_with_cache, task_prompts
from .tables import Table, TableView
from .ridge import (
    DEFAULT_PENALTIES,
    LinearProbe,
    RidgeProbe,
    check_enough_problems,
    fit_linear_probe,
    r2_score,
    split_indices,
)

__all__ = ["random_init_like", "ProbeTable", "probe_iterates"]

_TARGETS = ("weights", "prediction")
_CONTROLS = ("random_init", "shuffled")


def random_init_like(model: nn.Module, *, seed: int = 0) -> nn.Module:
    """A copy of ``model`` with freshly initialised weights: the control of every probe.

    Calls the model's own ``reset_parameters()`` when it has one (the trained models do),
    else that of every submodule that has one; any parameter left untouched (a construction's
    written-down matrix, say) is redrawn from a normal distribution with its own mean and
    standard deviation. The original is not modified.

    Parameters
    ----------
    model : torch.nn.Module
    seed : int
        Seeds the draw (the global RNG is left as it was).

    Returns
    -------
    torch.nn.Module
    """
    seed = v.check_int(seed, "seed", minimum=0)
    clone = copy.deepcopy(model)
    before = {name: p.detach().clone() for name, p in clone.named_parameters()}
    devices = sorted({p.device.index or 0 for p in clone.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(seed)
        if callable(getattr(clone, "reset_parameters", None)):
            clone.reset_parameters()
        else:
            for module in clone.modules():
                if callable(getattr(module, "reset_parameters", None)):
                    module.reset_parameters()
        for name, p in clone.named_parameters():
            if p.numel() and torch.equal(p, before[name]):
                std = float(p.std()) if p.numel() > 1 else 0.0
                std = std if std > 0 else max(float(p.abs().mean()), 1e-2)
                p.copy_(torch.randn_like(p) * std + p.mean())
    return clone


@dataclass
class ProbeTable(TableView):
    """Held-out R² of linear probes, one row per layer and one column per algorithm step.

    Attributes
    ----------
    r2 : Tensor of shape (L + 1, S)
        ``r2[ℓ, j]``: how well layer ℓ's hidden state linearly predicts the target at step
        ``steps[j]``, on held-out problems (float64, CPU). Vector targets average the R² of
        their coordinates. NaN where the target is constant (GD's ``w_0 = 0``) or the layer's
        activations are not finite.
    steps : list of int
    layer_names : list of str
    algorithm, target, position : str
    controls : dict
        ``name -> Tensor (L + 1, S)``: the same probes on a randomly initialised copy of the
        model (``"random_init"``) and on targets shuffled across problems (``"shuffled"``).
    penalty : Tensor of shape (L + 1, S)
        Geometric mean of the ridge penalties chosen on the validation split.
    num_fit, num_test : int
        Problems the probes were fit on (validation included) and scored on.
    """

    r2: torch.Tensor
    steps: list
    layer_names: list
    algorithm: str
    target: str
    position: str
    controls: dict = field(default_factory=dict)
    penalty: torch.Tensor | None = None
    num_fit: int = 0
    num_test: int = 0

    def best_steps(self) -> list:
        """For each layer, the step whose target it predicts best (argmax of R² over steps)."""
        return [self.steps[j] for j in self.r2.nan_to_num(-math.inf).argmax(1).tolist()]

    def best(self) -> tuple:
        """``(layer, step, r2)`` of the highest R² in the table."""
        flat = int(self.r2.nan_to_num(-math.inf).argmax())
        layer, j = divmod(flat, self.r2.shape[1])
        return layer, self.steps[j], float(self.r2[layer, j])

    def rows(self) -> list:
        """The table as a list of dicts (``layer``, ``layer_name``, ``step``, ``r2``, one key per control)."""
        out = []
        for layer, name in enumerate(self.layer_names):
            for j, step in enumerate(self.steps):
                row = {"layer": layer, "layer_name": name, "step": step, "r2": float(self.r2[layer, j])}
                for key, table in self.controls.items():
                    row[f"r2_{key}"] = float(table[layer, j])
                out.append(row)
        return out

    def to_table(self, min_r2: float = 0.1) -> Table:
        """One row per layer: best-matching step, its R², and each control's R² for that step.

        A layer whose best R² is below ``min_r2`` reads no step at all: its "best" step is
        shown as ``–`` (an argmax over noise means nothing).

        Returns
        -------
        Table
            Shown as HTML in Jupyter and the book, as Markdown by ``print``.
        """
        best = self.r2.nan_to_num(-math.inf).argmax(1)
        header = ["layer", f"best {self.algorithm} step", "held-out R²"] + [f"{k} control" for k in self.controls]
        rows = []
        for layer in range(self.r2.shape[0]):
            j = int(best[layer])
            r2 = float(self.r2[layer, j])
            rows.append([layer, str(self.steps[j]) if r2 >= min_r2 else "–", r2]
                        + [float(t[layer, j]) for t in self.controls.values()])
        title = (f"ProbeTable({self.algorithm}, target={self.target!r}, position={self.position!r}, "
                 f"fit on {self.num_fit} problems, scored on {self.num_test})")
        return Table(header, rows, title=title)

    def summary(self, min_r2: float = 0.1) -> str:
        """:meth:`to_table` as a Markdown table, without its title."""
        table = self.to_table(min_r2)
        table.title = None
        return table.to_markdown()

    def plot(self, ax=None, *, control: str | None = None, mark_best: bool = True, **kwargs):
        """Heat map of R² (layers × steps) with :func:`tfnewton.plotting.heatmap`.

        Parameters
        ----------
        ax : matplotlib Axes, optional
        control : str, optional
            Draw that control's table instead (``"random_init"`` or ``"shuffled"``).
        mark_best : bool
            Circle each layer's best step (where its R² is at least 0.1).
        **kwargs
            Passed to :func:`tfnewton.plotting.heatmap`.

        Returns
        -------
        matplotlib Axes
        """
        from .plotting import heatmap, mark_row_maxima

        values = self.r2 if control is None else self.controls[control]
        what = "w_k" if self.target == "weights" else "x_qᵀw_k"
        options = dict(
            xlabel=f"{self.algorithm} step k", ylabel="layer", xticklabels=[str(s) for s in self.steps],
            colorbar_label="held-out R²", vmin=0.0, vmax=1.0,
            title=f"probe for {what}" + ("" if control is None else f" ({control} control)"),
        )
        options.update(kwargs)
        ax = heatmap(values.clamp(min=-0.05), ax, **options)
        if mark_best:
            mark_row_maxima(ax, values, min_value=0.1)
        return ax



def _positions(model, position, n: int):
    """Which token positions the features use: the query token, several, or all (None)."""
    if position == "query":
        return [query_position(model, n)]
    if position == "all":
        return None
    if isinstance(position, int) and not isinstance(position, bool):
        return [position]
    if isinstance(position, (list, tuple)) and all(isinstance(p, int) for p in position) and position:
        return list(position)
    raise ValueError(f"position must be 'query', 'all', an int or a list of ints, got {position!r}")


def probe_iterates(
    model: nn.Module,
    task,
    algorithm="newton",
    steps=10,
    *,
    target: str = "prediction",
    position="query",
    controls: Sequence[str] = ("random_init", "shuffled"),
    test_fraction: float = 0.25,
    val_fraction: float = 0.2,
    penalties=None,
    seed: int = 0,
    batch_size: int | None = 1024,
    **algorithm_kwargs,
) -> ProbeTable:
    r"""Held-out R² of linear probes from every layer to every iterate of an algorithm.

    Each prompt of ``task`` is split into its first ``n − 1`` pairs (the context) and its last
    point (the query). The algorithm runs on each context (in float64), giving ``w_k`` for every
    requested step ``k``; the model runs once on context + query (on its own device) and the
    hidden state of every layer at the query token (or at the ``position`` asked for) is kept.
    Then, per layer, one batched ridge solve (float64, CPU) fits a probe to every target on a
    fit split, the penalty chosen on a validation split inside it, and R² is measured on the
    held-out test split.

    Parameters
    ----------
    model : torch.nn.Module
        A model following the hook protocol (:class:`tfnewton.capture.PromptModel`).
    task : object with ``X (B, n, d)`` and ``y (B, n)``, or a pair ``(X, y)``
        E.g. ``tfnewton.tasks.sample_linear_regression(4000, 11, 5)``; ``d`` must be the model's.
    algorithm : str, Algorithm, fitted module or callable
        See :func:`tfnewton.algorithms.iterates`.
    steps : int or sequence of int
        ``k = 0 … steps``, or exactly the steps listed (e.g. ``[1, 2, 4, …, 1024]`` for GD).
    target : {"prediction", "weights"}
        ``"prediction"``: the scalar ``x_qᵀw_k`` (the robust read-out); ``"weights"``: the vector
        ``w_k`` (R² averaged over its ``d`` coordinates).
    position : "query", "all", int or list of int
        Token positions whose hidden states are concatenated into the features.
    controls : sequence of str
        ``"random_init"`` (same probes on :func:`random_init_like` of the model) and/or
        ``"shuffled"`` (targets permuted across problems, so no relation is left to find).
    test_fraction, val_fraction : float
        Share of the problems held out for scoring; share of the rest used to pick the penalty.
    penalties : sequence of float, optional
        Candidate ridge penalties, see :class:`tfnewton.ridge.RidgeProbe`.
    seed : int
        Seeds the splits, the shuffled control and the random initialisation.
    batch_size : int, optional
        Prompts per forward pass (bounds memory).
    **algorithm_kwargs
        Passed to the algorithm (``ridge=`` for noisy regression, ``lr=`` for GD, …).

    Returns
    -------
    ProbeTable

    Raises
    ------
    ValueError
        The task's ``d`` is not the model's; too few fit problems for the feature dimension.
    TypeError
        The model has no ``blocks`` to hook.
    """
    X, y = task_prompts(task)
    if target not in _TARGETS:
        raise ValueError(f"target must be one of {_TARGETS}, got {target!r}")
    seed = v.check_int(seed, "seed", minimum=0)
    controls = tuple(controls)
    for c in controls:
        if c not in _CONTROLS:
            raise ValueError(f"controls may hold 'random_init' and 'shuffled', got {c!r}")
    entry = as_algorithm(algorithm)
    steps = step_list(steps)
    probe = RidgeProbe(penalties, val_fraction=val_fraction)  # checks penalties and val_fraction
    check_hooked(model)

    B, n_points, d = X.shape
    n = n_points - 1
    Xc, yc, xq = X[:, :n], y[:, :n], X[:, n]
    g = torch.Generator().manual_seed(seed)
    test_idx, fit_idx = split_indices(B, test_fraction, generator=g, name="test_fraction")
    val_mask = probe.validation_split(len(fit_idx), g)
    shuffle = torch.randperm(B, generator=g)
    positions = _positions(model, position, n)
    # Refuse an under-determined probe before the expensive forward pass: one prompt tells
    # the feature dimension (and checks the prompts against the model).
    _, one = run_with_cache(model, Xc[:1], yc[:1], xq[:1], positions=positions)
    num_train = int((~val_mask).sum())
    check_enough_problems(num_train, one[0][0].numel(), f" for position={position!r}", share=num_train / B)

    # Targets, in float64: (B, S, d) weights or (B, S) predictions.
    W = entry(Xc.double(), yc.double(), max(steps), **algorithm_kwargs)
    if max(steps) >= W.shape[0]:
        raise ValueError(f"steps asks for iterate {max(steps)} but {entry.name} has only {W.shape[0]} iterates here")
    W = W[steps].transpose(0, 1)  # (B, S, d)
    if target == "weights":
        Y = W.reshape(B, -1)
        width = d
    else:
        Y = (W * xq.double().unsqueeze(1)).sum(-1)
        width = 1
    S = len(steps)

    def table_for(net, with_shuffled):
        _, cache = run_with_cache(net, Xc, yc, xq, positions=positions, batch_size=batch_size)
        states = cache.stack()
        feats = states.reshape(states.shape[0], B, -1).double().cpu()  # (L+1, B, P)
        # A layer whose activations overflowed (a random linear-attention stack can) has no
        # R²: solve on zeros there and report NaN rather than fail.
        broken = ~torch.isfinite(feats).flatten(1).all(1)
        feats[broken] = 0.0
        targets = Y if not with_shuffled else torch.cat([Y, Y[shuffle]], dim=1)
        fitted = probe.fit(feats[:, fit_idx], targets[fit_idx], validation=val_mask)
        r2 = fitted.score(feats[:, test_idx], targets[test_idx])  # (L+1, K)
        r2 = r2.reshape(r2.shape[0], -1, S, width).mean(-1)  # (L+1, 1 or 2, S)
        r2[broken] = torch.nan
        log_pen = fitted.penalty.log().reshape(r2.shape[0], -1, S, width).mean(-1).exp()
        return r2, log_pen, cache.layer_names

    r2, pen, names = table_for(model, "shuffled" in controls)
    results = {}
    if "random_init" in controls:
        results["random_init"] = table_for(random_init_like(model, seed=seed), False)[0][:, 0]
    if "shuffled" in controls:
        results["shuffled"] = r2[:, 1]
    return ProbeTable(
        r2=r2[:, 0], steps=steps, layer_names=names, algorithm=entry.name, target=target,
        position=str(position), controls={c: results[c] for c in controls}, penalty=pen[:, 0],
        num_fit=len(fit_idx), num_test=len(test_idx),
    )
