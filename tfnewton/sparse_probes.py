r"""Reading a trained sparse-recovery Transformer layer by layer, and scoring it like ISTA.

A causal in-context learner trained on sparse recovery (``python -m tfnewton train --recipe
gpt2_sparse_d10``) answers ``ŷ_q ≈ x_qᵀβ̂`` at a query. Its estimate ``β̂`` is never written
anywhere, so it is read off the predictions: ask the model at ``m ≥ d`` probe queries after
the same context and solve ``x_{probe}ᵀβ̂ = ŷ`` by least squares (Fu et al.'s *induced
weights*, :func:`tfnewton.metrics.induced_weights`). Per layer the answer comes from a linear
read-out of that layer's hidden state at the query token (:func:`tfnewton.metrics.layer_readouts`,
one ridge read-out per layer fit on training prompts), so every layer has an estimate
``β̂_ℓ`` that can be scored exactly as ISTA's ``t``-th iterate is:
:func:`tfnewton.sparse.recovery_error` ``‖β̂ − β‖²/‖β‖²``.

* :func:`layer_estimates` — ``β̂_ℓ`` of every layer and of the model's own output;
* :func:`model_errors` — their recovery and query-prediction errors on a batch of prompts
  whose last point is the query;
* :func:`lasso_curves` — ISTA's and FISTA's errors per iteration on the same prompts, each
  with its LASSO weight chosen on validation prompts (:func:`tfnewton.sparse.choose_lambda`);
* :func:`support_recovered` — whether the ``s`` largest coordinates of an estimate are the
  true support.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from . import _validate as v
from . import algorithms, metrics
from .capture import check_hooked, run_with_cache, x_token_positions
from .sparse import choose_lambda, prediction_error, recovery_error

__all__ = ["LayerEstimates", "layer_estimates", "model_errors", "lasso_curves", "support_recovered",
           "split_query"]


@dataclass
class LayerEstimates:
    """Every layer's estimate of ``β``, read through probe queries.

    Attributes
    ----------
    layers : Tensor of shape (L + 1, B, d)
        ``β̂_ℓ``: the induced weights of layer ℓ's read-out (ℓ = 0 is the embedding).
    model : Tensor of shape (B, d)
        The induced weights of the model's own output (its trained read-out after the last block).
    layer_names : list of str
    """

    layers: torch.Tensor
    model: torch.Tensor
    layer_names: list


def split_query(task) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The context ``X (B, k, d), y (B, k)`` and the query ``x_q (B, d), y_q (B,)`` of prompts
    whose last point is the query (``task`` has ``X (B, k + 1, d)`` and ``y (B, k + 1)``)."""
    X, y = task.X, task.y
    v.check_tensor(X, "task.X", ndim=3)
    v.check_tensor(y, "task.y", ndim=2)
    if X.shape[1] < 2:
        raise ValueError(f"task must hold at least 2 points per prompt (context and query), got {X.shape[1]}")
    return X[:, :-1], y[:, :-1], X[:, -1], y[:, -1]


def _probe_points(num: int, d: int, seed: int, dtype, device) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn((num, d), generator=g, dtype=torch.float64).to(dtype=dtype, device=device)


def layer_estimates(model, X: torch.Tensor, y: torch.Tensor, readouts: metrics.LayerReadouts | None = None, *,
                    num_probes: int | None = None, seed: int = 0, batch_size: int | None = 4096) -> LayerEstimates:
    """The estimate of ``β`` of every layer (through ``readouts``) and of the model's output.

    Each prompt's context is followed, in ``m`` separate prompts, by each of ``m`` probe
    queries ``x ~ N(0, I)`` (the same for every prompt); causal attention makes the answer at a
    query depend on the context and that query only. The answers at the query token — layer ℓ's
    read-out, or the model's output — are solved for ``β̂`` by least squares.

    Parameters
    ----------
    model : torch.nn.Module
        A causal in-context learner with the hook protocol (``blocks``, ``x_token_positions``).
    X : Tensor of shape (B, k, d)
        The contexts.
    y : Tensor of shape (B, k)
    readouts : tfnewton.metrics.LayerReadouts, optional
        One read-out per layer (:func:`tfnewton.metrics.layer_readouts` on training prompts).
        ``None``: only the model's own estimate (``layers`` is then empty, shape (0, B, d)).
    num_probes : int, optional
        ``m >= d`` probe queries; default ``2d``.
    seed : int
        Seeds the probe queries.
    batch_size : int, optional
        Prompts per forward pass (there are ``B·m``).

    Returns
    -------
    LayerEstimates
    """
    check_hooked(model)
    v.check_tensor(X, "X", ndim=3)
    v.check_tensor(y, "y", ndim=2)
    B, k, d = X.shape
    v.check_shape(y, "y", (B, k))
    m = 2 * d if num_probes is None else v.check_int(num_probes, "num_probes", minimum=d)
    probe = _probe_points(m, d, v.check_int(seed, "seed", minimum=0), X.dtype, X.device)
    Xr = torch.cat([X.unsqueeze(1).expand(B, m, k, d), probe.expand(B, m, d).unsqueeze(2)], dim=2)
    yr = torch.cat([y.unsqueeze(1).expand(B, m, k), y.new_zeros((B, m, 1))], dim=2)
    position = x_token_positions(model, k + 1)[-1]
    out, cache = run_with_cache(model, Xr.reshape(B * m, k + 1, d), yr.reshape(B * m, k + 1), positions=position,
                                batch_size=batch_size)
    x_probe = probe.double().expand(B, m, d)
    own = metrics.induced_weights(x_probe, out[:, -1].double().reshape(B, m))
    if readouts is None:
        layers = own.new_zeros((0, B, d))
    else:
        states = cache.stack().double()  # (L + 1, B·m, D)
        answers = readouts.probe.predict(states.reshape(states.shape[0], B * m, -1))  # (L + 1, B·m)
        layers = metrics.induced_weights(x_probe, answers.reshape(-1, B, m))
    return LayerEstimates(layers=layers, model=own, layer_names=list(cache.layer_names))


def model_errors(model, task, readouts: metrics.LayerReadouts | None = None, **kwargs) -> dict:
    """Recovery and query-prediction errors of every layer's estimate and of the model's output.

    Parameters
    ----------
    model : torch.nn.Module
    task : SparseRecoveryTask
        Prompts of ``k + 1`` points whose last point is the query, with the true ``w`` (= ``β``).
    readouts : tfnewton.metrics.LayerReadouts, optional
    **kwargs
        Passed to :func:`layer_estimates`.

    Returns
    -------
    dict
        ``"recovery"`` (L + 1,) and ``"prediction"`` (L + 1,) per layer (empty without
        ``readouts``); ``"model_recovery"`` and ``"model_prediction"`` (floats): the model's own
        output, its prediction error measured on its actual answer at the query; ``"estimates"``
        (the :class:`LayerEstimates`).
    """
    X, y, x_q, y_q = split_query(task)
    est = layer_estimates(model, X, y, readouts, **kwargs)
    beta = task.w.double()
    parameter = next(model.parameters(), None)
    dtype = task.X.dtype if parameter is None else parameter.dtype
    with torch.no_grad():
        answer = model(task.X.to(dtype), task.y.to(dtype))[:, -1]
    return {
        "recovery": recovery_error(est.layers, beta) if len(est.layers) else beta.new_zeros(0),
        "prediction": prediction_error(est.layers, x_q.double(), y_q.double()) if len(est.layers) else beta.new_zeros(0),
        "model_recovery": float(recovery_error(est.model, beta)),
        "model_prediction": float(((answer.double() - y_q.double()) ** 2).mean()),
        "estimates": est,
    }


def lasso_curves(task, validation, steps: int, grid: Sequence[float], *, methods=("ista", "fista"),
                 choose_at: int | None = None) -> dict:
    """ISTA's and FISTA's recovery errors per iteration, each ``λ`` chosen on ``validation``.

    Parameters
    ----------
    task, validation : SparseRecoveryTask
        Scored prompts and validation prompts (``k + 1`` points, the last the query, which the
        solvers do not see).
    steps : int
        Iterations.
    grid : sequence of float
        Candidate LASSO weights (:func:`tfnewton.sparse.choose_lambda`).
    methods : sequence of {"ista", "fista"}
    choose_at : int, optional
        The iteration at which ``λ`` is chosen; default ``steps``.

    Returns
    -------
    dict
        ``{name: {"lam": float, "recovery": (steps + 1,), "prediction": (steps + 1,),
        "iterates": (steps + 1, B, d)}}``.
    """
    steps = v.check_int(steps, "steps", minimum=1)
    choose_at = steps if choose_at is None else v.check_int(choose_at, "choose_at", minimum=1)
    Xv, yv, _, _ = split_query(validation)
    X, y, x_q, y_q = split_query(task)
    solvers = {"ista": algorithms.ista, "fista": algorithms.fista}
    out = {}
    for name in methods:
        if name not in solvers:
            raise ValueError(f"methods must name 'ista' or 'fista', got {name!r}")
        lam = choose_lambda(name, Xv.double(), yv.double(), validation.w.double(), choose_at, grid)
        its = solvers[name](X.double(), y.double(), lam, steps)
        out[name] = {"lam": lam, "recovery": recovery_error(its, task.w.double()),
                     "prediction": prediction_error(its, x_q.double(), y_q.double()), "iterates": its}
    return out


def support_recovered(estimate: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """Whether the ``s`` largest ``|β̂_j|`` of each prompt are exactly its true support.

    Parameters
    ----------
    estimate : Tensor of shape (..., B, d)
    support : Tensor of shape (B, d), bool
        ``s`` true entries per row (the same ``s`` for every row).

    Returns
    -------
    Tensor of shape (..., B), bool
    """
    if not isinstance(support, torch.Tensor) or support.dtype != torch.bool or support.ndim != 2:
        raise TypeError(f"support must be a bool Tensor of shape (B, d), got "
                        f"{support.dtype if isinstance(support, torch.Tensor) else type(support).__name__}"
                        f"{'' if not isinstance(support, torch.Tensor) else f' of shape {tuple(support.shape)}'}")
    v.check_tensor(estimate, "estimate", finite=False)
    if tuple(estimate.shape[-2:]) != tuple(support.shape):
        raise ValueError(f"estimate must have shape (..., B, d) = (..., {tuple(support.shape)}), got {tuple(estimate.shape)}")
    sizes = support.sum(-1)
    s = int(sizes[0])
    if not bool((sizes == s).all()):
        raise ValueError("support must have the same number of true entries in every row")
    top = estimate.abs().topk(s, dim=-1).indices
    picked = torch.zeros(estimate.shape, dtype=torch.bool, device=estimate.device).scatter_(-1, top, True)
    return (picked == support.to(estimate.device)).all(-1)
