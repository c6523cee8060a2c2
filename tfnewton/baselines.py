"""Baselines: what classical estimators score on the prompts a trained model sees.

A model's prediction at position ``k`` of a prompt has seen the ``k`` pairs before it.
Each baseline here predicts at position ``k`` from the same ``k`` pairs, with a reference
algorithm of :mod:`tfnewton.algorithms` in float64, so the two compare at every ``k``:

- ``"ols"``: minimum-norm least squares (:func:`ols_predictions`), exact once ``k >= d``
  on noiseless linear regression;
- ``"gd_tuned"``: a few steps of gradient descent from 0 with the step size tuned for
  each ``k`` on these very prompts (:func:`tuned_gd_errors`), which favours GD;
- ``"newton"``: damped Newton on ℓ2-regularized logistic regression (Giannou et al.), its
  logit at the query (:func:`newton_logistic_logits`).

:func:`evaluate_vs_k` scores a model and the baselines of a task
(:class:`tfnewton.tasks.TrainingTask`) with the task's metrics;
:func:`tfnewton.train.error_vs_k` calls it with a recipe's evaluation prompts.
"""

from __future__ import annotations

import torch

from . import _validate as v
from .algorithms import gradient_descent_least_squares, prefix_predictions
from .tasks import TrainingTask

__all__ = [
    "BASELINES",
    "baseline_curves",
    "evaluate_vs_k",
    "newton_logistic_logits",
    "ols_errors",
    "ols_predictions",
    "predict",
    "tuned_gd_errors",
]


@torch.no_grad()
def predict(model, X: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """``model(X, y)`` in eval mode, in chunks of ``batch_size`` prompts.

    Parameters
    ----------
    model : InContextRegressor
    X : Tensor of shape (B, n, d)
    y : Tensor of shape (B, n)

    Returns
    -------
    Tensor of shape (B, n)
    """
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(X[i:i + batch_size], y[i:i + batch_size])
                          for i in range(0, X.shape[0], batch_size)])
    finally:
        model.train(was_training)


# --------------------------------------------------------------------------- the estimators


def ols_predictions(X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """OLS's prediction at every position from the pairs before it, in float64.

    Position ``k`` gets ``x_kᵀ w`` with ``w`` the minimum-norm least-squares fit of the
    first ``k`` pairs (:func:`tfnewton.algorithms.least_squares`); position 0 gets 0.

    Parameters
    ----------
    X : Tensor of shape (B, n, d)
    y : Tensor of shape (B, n)

    Returns
    -------
    Tensor of shape (B, n)
    """
    X, y = v.check_regression_inputs(X, y)
    return prefix_predictions("ols", X.double(), y.double(), 0)[-1]


def ols_errors(X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Normalized error ``E[(ŷ − y)²] / d`` of OLS with ``k`` examples, for every ``k``.

    Parameters
    ----------
    X : Tensor of shape (B, n, d)
    y : Tensor of shape (B, n)

    Returns
    -------
    Tensor of shape (n,)
        float64; ``k = 0`` predicts 0.
    """
    preds = ols_predictions(X, y)
    return (preds - y.double()).pow(2).mean(0) / X.shape[-1]


def tuned_gd_errors(X: torch.Tensor, y: torch.Tensor, steps: int = 3,
                    lrs: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalized error of ``steps`` steps of GD from 0 with the best step size for each ``k``.

    The step size is tuned on these very prompts (by default a grid of 81 values,
    log-spaced over ``[1e-3, 10]``), which favours GD: a model that beats it beats GD tuned
    fairly. Uses :func:`tfnewton.algorithms.gradient_descent_least_squares` in float64.

    Parameters
    ----------
    X : Tensor of shape (B, n, d)
    y : Tensor of shape (B, n)
    steps : int
    lrs : Tensor of shape (L,), optional
        The step sizes to try.

    Returns
    -------
    errors : Tensor of shape (n,)
    best_lr : Tensor of shape (n,)
        NaN at ``k = 0`` (GD from 0 predicts 0 whatever its step).
    """
    X, y = v.check_regression_inputs(X, y)
    steps = v.check_int(steps, "steps", minimum=1)
    Xd, yd = X.double(), y.double()
    d = X.shape[-1]
    lrs = torch.logspace(-3, 1, 81, dtype=torch.float64) if lrs is None else lrs
    n = X.shape[1]
    errors = torch.empty(n, dtype=torch.float64)
    best = torch.full((n,), float("nan"), dtype=torch.float64)
    errors[0] = yd.pow(2).mean(0)[0] / d  # GD from 0 predicts 0 at k = 0
    for k in range(1, n):
        trial = []
        for lr in lrs.tolist():
            w = gradient_descent_least_squares(Xd[:, :k], yd[:, :k], steps, lr=lr)[-1]
            pred = (Xd[:, k] * w).sum(-1)
            trial.append(float(((pred - yd[:, k]) ** 2).mean() / d))
        i = min(range(len(trial)), key=trial.__getitem__)
        errors[k], best[k] = trial[i], lrs[i]
    return errors, best


def newton_logistic_logits(X: torch.Tensor, y: torch.Tensor, mu: float = 0.01, steps: int = 20) -> torch.Tensor:
    """The logit ``x_kᵀ w`` at every position, ``w`` fitted to the pairs before it by
    damped Newton on ℓ2-regularized logistic regression, in float64.

    ``w`` is the last of ``steps`` iterates of
    :func:`tfnewton.algorithms.damped_newton_logistic` from 0 on the first ``k`` pairs (with
    ``mu = 0.01`` and ``‖x‖ ≤ 1``, 15 steps reach it to rounding); position 0 gets 0.

    Parameters
    ----------
    X : Tensor of shape (B, n, d)
    y : Tensor of shape (B, n)
        Labels −1 or +1.
    mu : float
        The regularization ``> 0`` (Giannou et al.'s ``μ``).
    steps : int

    Returns
    -------
    Tensor of shape (B, n)
    """
    X, y = v.check_regression_inputs(X, y)
    return prefix_predictions("damped_newton_logistic", X.double(), y.double(), steps, mu=mu)[-1]


# --------------------------------------------------------------------------- scored with a task's metrics


def _scored(name: str, pred: torch.Tensor, y: torch.Tensor, d: int, task: TrainingTask) -> dict:
    """``{name: headline metric, "<name>_<metric>": each other metric}``, lists over positions."""
    metrics = task.metrics(pred, y, d)
    out = {name: metrics[task.headline].tolist()}
    out.update({f"{name}_{metric}": values.tolist() for metric, values in metrics.items() if metric != task.headline})
    return out


def _ols_curve(X, y, task, **options) -> dict:
    return _scored("ols", ols_predictions(X, y), y, X.shape[-1], task)


def _gd_tuned_curve(X, y, task, *, gd_steps: int = 3, **options) -> dict:
    errors, best_lr = tuned_gd_errors(X, y, steps=gd_steps)
    return {"gd_tuned": errors.tolist(), "gd_lr": best_lr.tolist(), "gd_steps": gd_steps}


def _newton_curve(X, y, task, *, mu: float = 0.01, newton_steps: int = 20, **options) -> dict:
    logits = newton_logistic_logits(X, y, mu=mu, steps=newton_steps)
    return {**_scored("newton", logits, y, X.shape[-1], task), "newton_mu": mu, "newton_steps": newton_steps}


#: The baselines a :class:`tfnewton.tasks.TrainingTask` may name: ``name`` →
#: ``curve(X, y, task, **options)``, a dict of lists over positions (``options``: the
#: recipe's task options such as ``mu``, and ``gd_steps`` / ``newton_steps``).
#:
#: :meta hide-value:
BASELINES = {"ols": _ols_curve, "gd_tuned": _gd_tuned_curve, "newton": _newton_curve}


def baseline_curves(task: TrainingTask, X: torch.Tensor, y: torch.Tensor, *, names=None, **options) -> dict:
    """Each baseline of ``task`` (or those in ``names``), scored at every position.

    Runs on the CPU in float64 whatever the device and dtype of ``X`` and ``y``.

    Parameters
    ----------
    task : TrainingTask
    X : Tensor of shape (B, n, d)
    y : Tensor of shape (B, n)
    names : sequence of str, optional
        Default ``task.baselines``.
    **options
        Passed to the baselines (``mu``, ``gd_steps``, ``newton_steps``, ...); each takes
        what it knows.

    Returns
    -------
    dict
        For a baseline ``b``: ``b`` → the task's headline metric against ``k`` and
        ``b_<metric>`` → each other metric (lists of floats), plus its settings
        (``"gd_lr"`` and ``"gd_steps"`` for ``"gd_tuned"``, ...).
    """
    names = task.baselines if names is None else tuple(names)
    unknown = [name for name in names if name not in BASELINES]
    if unknown:
        raise ValueError(f"names must be baselines among {tuple(BASELINES)}, got {unknown}")
    Xc, yc = X.cpu(), y.cpu()
    out = {}
    for name in names:
        out.update(BASELINES[name](Xc, yc, task, **options))
    return out


def evaluate_vs_k(model, task: TrainingTask, X: torch.Tensor, y: torch.Tensor, *, baselines: bool = True,
                  batch_size: int = 1000, **options) -> dict:
    """The model's metrics and its task's baselines' against the number of examples ``k``.

    Parameters
    ----------
    model : InContextRegressor
        Its prediction at position ``k`` has seen ``k`` pairs.
    task : TrainingTask
    X : Tensor of shape (B, n, d)
        On the model's device and in its dtype.
    y : Tensor of shape (B, n)
    baselines : bool
        Also score ``task.baselines`` (:func:`baseline_curves`).
    batch_size : int
        Prompts per forward pass.
    **options
        For the baselines.

    Returns
    -------
    dict
        ``"k"``: ``[0, ..., n − 1]``; ``"model"``: the headline metric; ``"model_<metric>"``:
        the others; then the baselines' entries (:func:`baseline_curves`).
    """
    if not isinstance(task, TrainingTask):
        raise TypeError(f"task must be a TrainingTask (tfnewton.tasks.training_task(name)), got {type(task).__name__}")
    out = {"k": list(range(X.shape[1]))}
    out.update(_scored("model", predict(model, X, y, batch_size), y, X.shape[-1], task))
    if baselines:
        out.update(baseline_curves(task, X, y, **options))
    return out
