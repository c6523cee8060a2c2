r"""A trained in-context classifier against damped Newton, gradient descent and the Bayes predictor.

The pieces the chapter *Logistic regression, part 2* needs beyond the generic probes
(:func:`tfnewton.probes.probe_iterates` reads the Newton logit ``x_qᵀw_t`` and ``w_t`` with the
algorithms ``"damped_newton_logistic"`` and ``"gradient_descent_logistic"`` of
:data:`tfnewton.algorithms.ALGORITHMS` as they are):

- :func:`logistic_readouts`: Fu et al.'s per-layer read-out for a classifier. The network is
  frozen and every layer gets a new linear read-out of the logit at each ``x_i`` token, fitted
  with the model's own training loss (the cross-entropy, by Newton's method) on some prompts
  and applied to held-out ones;
- :func:`prefix_probabilities` and :func:`match_probabilities`: Fu et al.'s similarity of
  errors on probabilities, the residual ``p_i − (y_i + 1)/2`` at every position of a prompt,
  between each layer's read-out and each step of an algorithm (a
  :class:`tfnewton.metrics.MatchTable`); :func:`best_match_between` asks how far apart two
  algorithms can be at all under this metric (the power of the comparison);
- :func:`condition_step_sizes`: one global gradient-descent step per condition number;
- :func:`classification_curves`: cross-entropy and accuracy against the number ``k`` of
  in-context examples for the model, the regularized maximum-likelihood fit (damped Newton,
  the same fit as scikit-learn's ``LogisticRegression(C = 1/(k·mu), fit_intercept=False)``),
  gradient descent with a few steps and the step size tuned per ``k`` or once for all ``k``
  (:func:`tuned_gd_logits`), and the Bayes posterior predictive (:func:`bayes_logits`, by
  importance sampling from a Laplace proposal), the best any predictor can do on these
  prompts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

from . import _validate as v
from .algorithms import damped_newton_logistic, gradient_descent_logistic, newton_decrement_logistic, prefix_predictions, step_list
from .baselines import newton_logistic_logits, predict
from .capture import check_hooked, run_with_cache, takes_query, task_prompts, x_token_positions
from .metrics import MatchTable, similarity_of_errors
from .ridge import check_enough_problems, split_indices

__all__ = [
    "LogisticReadouts",
    "logistic_readouts",
    "prefix_probabilities",
    "match_probabilities",
    "best_match_between",
    "condition_step_sizes",
    "tuned_gd_logits",
    "bayes_logits",
    "ClassificationCurves",
    "classification_curves",
]


def _labels01(y: torch.Tensor) -> torch.Tensor:
    """The ±1 labels as the probabilities a perfect predictor would give, ``(y + 1)/2``."""
    return (y.double() + 1.0) / 2.0


# --------------------------------------------------------------------------- read-outs per layer


@dataclass
class LogisticReadouts:
    """One logistic read-out per layer, fit on some prompts, with its held-out logits.

    Attributes
    ----------
    logits : Tensor of shape (L + 1, B_test, n)
        Layer ℓ's read-out logit for ``y_i`` at the token of ``x_i``, on the held-out prompts.
    X : Tensor of shape (B_test, n, d)
    y : Tensor of shape (B_test, n)
        The held-out prompts (labels ±1).
    index : LongTensor of shape (B_test,)
        Where the held-out prompts sit in the task (to look up, e.g., their condition numbers).
    layer_names : list of str
    model_logits : Tensor of shape (B_test, n)
        The model's own output on the held-out prompts.
    coef : Tensor of shape (L + 1, D + 1)
        Read-out weights on the standardized state, the intercept last.
    mean, scale : Tensor of shape (L + 1, D)
        The standardization of each layer's state (fit prompts).
    mu : float
        The ℓ2 penalty of the fits.
    decrement : Tensor of shape (L + 1,)
        Newton decrement of each fit at its last step (≈ 0: converged).
    w : Tensor of shape (B_test, d) or None
        The weights that drew the held-out prompts' labels, when the task has them
        (``task.w``): the true probabilities ``σ(x_iᵀw)`` of :meth:`true_probabilities`.
    """

    logits: torch.Tensor
    X: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor
    layer_names: list
    model_logits: torch.Tensor
    coef: torch.Tensor
    mean: torch.Tensor
    scale: torch.Tensor
    mu: float
    decrement: torch.Tensor
    w: torch.Tensor | None = None

    def subset(self, mask: torch.Tensor) -> "LogisticReadouts":
        """The same read-outs on some of the held-out prompts only (``mask`` of shape ``(B_test,)``).

        E.g. ``readouts.subset(task.condition_number[readouts.index] == 10)``: the prompts of one
        condition number.
        """
        v.check_tensor(mask, "mask", ndim=1, finite=False, floating=False)
        if tuple(mask.shape) != (self.X.shape[0],):
            raise ValueError(f"mask must have shape (B_test,) = ({self.X.shape[0]},), got {tuple(mask.shape)}")
        mask = mask.bool().cpu()
        if not bool(mask.any()):
            raise ValueError("mask selects no prompt")
        return replace(self, logits=self.logits[:, mask], X=self.X[mask], y=self.y[mask], index=self.index[mask],
                       model_logits=self.model_logits[mask], w=None if self.w is None else self.w[mask])

    def true_probabilities(self) -> torch.Tensor:
        """``σ(x_iᵀw)`` at every position of the held-out prompts, ``(B_test, n)``: the probability
        the labels were drawn with (``ValueError`` when the task gave no ``w``)."""
        if self.w is None:
            raise ValueError("these read-outs were fit on prompts without their weights (task.w); "
                             "pass a task such as tfnewton.tasks.sample_logistic_regression(...) to logistic_readouts")
        return torch.sigmoid((self.X.double() * self.w.double().unsqueeze(1)).sum(-1))

    def probabilities(self) -> torch.Tensor:
        """``σ(logits)``, shape ``(L + 1, B_test, n)``."""
        return torch.sigmoid(self.logits)

    def apply(self, states: torch.Tensor) -> torch.Tensor:
        """Every layer's read-out logit of captured states ``(L + 1, N, D)``: returns ``(L + 1, N)``."""
        Z = (states.double() - self.mean.unsqueeze(1)) / self.scale.unsqueeze(1)
        return (Z * self.coef[:, None, :-1]).sum(-1) + self.coef[:, None, -1]

    def cross_entropy(self) -> torch.Tensor:
        """Each layer's held-out cross-entropy at every position, ``(L + 1, n)``."""
        return F.softplus(-self.y.double() * self.logits).mean(1)

    def accuracy(self) -> torch.Tensor:
        """Each layer's held-out accuracy at every position, ``(L + 1, n)`` (a logit of 0 counts half)."""
        margins = self.y.double() * self.logits
        return ((margins > 0).double() + 0.5 * (margins == 0).double()).mean(1)


def logistic_readouts(model, task, *, mu: float = 1e-3, newton_steps: int = 12, test_fraction: float = 0.25,
                      seed: int = 0, batch_size: int | None = 1024) -> LogisticReadouts:
    """Fit one logistic read-out per layer from the hidden state at each ``x_i`` token to ``y_i``.

    Fu et al.'s per-layer read-out, with the classifier's own loss: the network is frozen, each
    layer's state (standardized on the fit prompts, with an intercept) is mapped to a logit by a
    linear read-out that minimizes the mean cross-entropy plus ``(mu/2)‖coef‖²`` over every
    position of the fit prompts (Newton's method, :func:`tfnewton.algorithms.damped_newton_logistic`
    with full steps, all layers at once); the logits are returned for the held-out prompts.

    Parameters
    ----------
    model : torch.nn.Module
        A trained causal in-context classifier (``forward(X, y) -> (B, n)`` logits, ``blocks``,
        ``x_token_positions``).
    task : object with ``X (B, n, d)`` and ``y (B, n)``, or a pair ``(X, y)``
        Labels ±1.
    mu : float
        ℓ2 penalty of the read-outs, ``> 0`` (on standardized states: scale-free).
    newton_steps : int
        Newton steps of each fit (the decrement at the last one is kept in ``decrement``).
    test_fraction, seed, batch_size
        As in :func:`tfnewton.metrics.layer_readouts` (the same split for the same seed).

    Returns
    -------
    LogisticReadouts
    """
    X, y = task_prompts(task)
    v.check_labels_pm1(y, "task.y")
    check_hooked(model)
    if takes_query(model):
        raise TypeError(
            f"{type(model).__name__} answers one query per prompt (forward(X, y, x_query)); "
            "per-position read-outs need a causal in-context learner with forward(X, y) -> (B, n)"
        )
    mu = v.check_positive(mu, "mu")
    newton_steps = v.check_int(newton_steps, "newton_steps", minimum=1)
    seed = v.check_int(seed, "seed", minimum=0)
    B, n, d = X.shape
    g = torch.Generator().manual_seed(seed)
    test_idx, fit_idx = split_indices(B, test_fraction, generator=g, name="test_fraction")

    out, cache = run_with_cache(model, X, y, positions=x_token_positions(model, n), batch_size=batch_size)
    states = cache.stack().double().cpu()  # (L+1, B, n, D)
    L1, D = states.shape[0], states.shape[-1]
    check_enough_problems(len(fit_idx) * n, D + 1, " (prompt positions)")
    fit = states[:, fit_idx].reshape(L1, -1, D)
    mean, scale = fit.mean(1), fit.std(1).clamp_min(1e-12)

    def standardized(S):  # (L+1, N, D) -> (L+1, N, D + 1), the intercept's constant last
        Z = (S - mean.unsqueeze(1)) / scale.unsqueeze(1)
        return torch.cat([Z, Z.new_ones(Z.shape[:-1] + (1,))], -1)

    Z = standardized(fit)
    labels = y[fit_idx].double().reshape(1, -1).expand(L1, -1).contiguous()
    # Full Newton steps from 0: the first is the quadratic model's minimizer under H(0) ⪰ H(w),
    # and with the penalty the fit is well posed; the decrement says whether it converged.
    coef = damped_newton_logistic(Z, labels, mu, newton_steps, damped=False)[-1]  # (L+1, D+1)
    decrement = newton_decrement_logistic(Z, labels, coef, mu)
    test = standardized(states[:, test_idx].reshape(L1, -1, D))
    logits = (test @ coef.unsqueeze(-1)).squeeze(-1).reshape(L1, len(test_idx), n)
    w = getattr(task, "w", None)
    return LogisticReadouts(
        logits=logits, X=X[test_idx], y=y[test_idx], index=test_idx, layer_names=cache.layer_names,
        model_logits=out[test_idx].detach().double().cpu(), coef=coef, mean=mean, scale=scale, mu=mu,
        decrement=decrement, w=None if w is None else w.detach().double().cpu()[test_idx],
    )


# --------------------------------------------------------------------------- similarity of errors on probabilities


def prefix_probabilities(algorithm, X: torch.Tensor, y: torch.Tensor, steps, **params) -> torch.Tensor:
    """``σ(x_iᵀw_t)`` at every position ``i``, ``w_t`` fitted to the pairs before it, for each step ``t``.

    Parameters
    ----------
    algorithm : str, Algorithm, fitted module or callable
        E.g. ``"damped_newton_logistic"`` (``mu=`` required), ``"gradient_descent_logistic"``,
        or a construction with ``iterates(X, y)`` (:func:`tfnewton.algorithms.as_algorithm`).
    X : Tensor of shape (B, n, d)
    y : Tensor of shape (B, n)
        Labels ±1.
    steps : int or sequence of int
        ``0 … steps`` or the steps listed.
    **params
        The algorithm's own parameters (``mu``, ``lr`` as a float or one per prompt, …).

    Returns
    -------
    Tensor of shape (S, B, n)
        float64; ``0.5`` at position 0 (no context: ``w = 0``).
    """
    v.check_regression_inputs(X, y)
    v.check_labels_pm1(y)
    steps = step_list(steps)
    logits = prefix_predictions(algorithm, X.double(), y.double(), max(steps), **params)
    return torch.sigmoid(logits[steps])


def match_probabilities(readouts: LogisticReadouts, algorithm, steps, *, residual: str = "label",
                        name: str | None = None, probabilities: torch.Tensor | None = None,
                        **params) -> MatchTable:
    """Similarity of errors on probabilities between every layer's read-out and every step.

    For each held-out prompt the residuals ``p_i − (y_i + 1)/2`` over its positions (each
    prediction from the pairs before it) of a layer's read-out and of the algorithm are compared
    by cosine (:func:`tfnewton.metrics.similarity_of_errors`), then averaged over prompts.

    The label's part of that residual, ``σ(x_iᵀw) − (y_i + 1)/2``, is the same noise for every
    predictor and pulls every similarity towards 1; ``residual="truth"`` compares
    ``p_i − σ(x_iᵀw)`` instead, the error against the probability the label was drawn with.

    Parameters
    ----------
    readouts : LogisticReadouts
    algorithm, steps, **params
        As in :func:`prefix_probabilities`; a parameter given per prompt (``lr`` of shape
        ``(B_test,)``) follows the held-out prompts' order (``readouts.index``).
    residual : {"label", "truth"}
        Residuals against ``(y + 1)/2`` (Fu et al.'s, on probabilities) or against the true
        probabilities ``σ(x_iᵀw)`` (:meth:`LogisticReadouts.true_probabilities`).
    name : str, optional
        The algorithm's name in the table (default: its registered name).
    probabilities : Tensor of shape (S, B_test, n), optional
        The algorithm's prefix probabilities at ``steps`` if already computed (``extra`` of
        an earlier table on the same read-outs, say with the other ``residual``, or
        :func:`prefix_probabilities` of several step sizes stacked); ``steps`` may then be
        any ``S`` labels of the columns, such as ``(step size, steps)`` pairs, and
        ``algorithm`` is only read for the default ``name`` (``None`` is allowed: any predictor
        of every position, :func:`bayes_logits` through ``σ`` say).

    Returns
    -------
    tfnewton.metrics.MatchTable
        ``similarity (L + 1, S)``; ``layer_error``: each read-out's held-out cross-entropy
        averaged over positions; ``model_similarity (S,)``: the model's own output;
        ``extra["probabilities"]``: the algorithm's ``(S, B_test, n)``.
    """
    if not isinstance(readouts, LogisticReadouts):
        raise TypeError(f"readouts must be LogisticReadouts (from logistic_readouts), got {type(readouts).__name__}")
    target = _residual_target(readouts, residual)
    if probabilities is None:
        steps = step_list(steps)
        probs = prefix_probabilities(algorithm, readouts.X, readouts.y, steps, **params)
    else:  # the columns may then be any labels, e.g. (step size, steps) pairs of a grid
        steps = list(steps) if not isinstance(steps, int) else step_list(steps)
        v.check_tensor(probabilities, "probabilities", ndim=3)
        expected = (len(steps),) + tuple(readouts.y.shape)
        if tuple(probabilities.shape) != expected:
            raise ValueError(f"probabilities must have shape (S, B_test, n) = {expected}, got {tuple(probabilities.shape)}")
        probs = probabilities.double()
    sim = similarity_of_errors(readouts.probabilities()[:, None], probs[None], target)
    model_sim = similarity_of_errors(torch.sigmoid(readouts.model_logits)[None], probs, target)
    if name is None:
        from .algorithms import as_algorithm

        name = "given" if algorithm is None else as_algorithm(algorithm).name
    metric = "errors on probabilities" + (" (against the truth)" if residual == "truth" else "")
    return MatchTable(sim, steps, name, metric, readouts.layer_names, readouts.cross_entropy().mean(-1), model_sim,
                      extra={"probabilities": probs, "residual": residual})


def _residual_target(readouts: LogisticReadouts, residual: str) -> torch.Tensor:
    if residual == "label":
        return _labels01(readouts.y)
    if residual == "truth":
        return readouts.true_probabilities()
    raise ValueError(f"residual must be 'label' or 'truth', got {residual!r}")


def best_match_between(reference: torch.Tensor, candidates: torch.Tensor, y: torch.Tensor, *,
                       target: torch.Tensor | None = None) -> torch.Tensor:
    """For each reference predictor, the highest similarity of errors any candidate reaches.

    The power of a comparison: stand an algorithm's own predictions in for a model and ask how
    close the other algorithm can get (best over its steps and step sizes). ``1 −`` the result
    is the largest gap the metric could show between the two at that step.

    Parameters
    ----------
    reference : Tensor of shape (S, B, n)
        Probabilities of ``S`` predictors (e.g. Newton's steps).
    candidates : Tensor of shape (C, B, n)
        Probabilities of ``C`` predictors (e.g. GD's steps and step sizes, flattened).
    y : Tensor of shape (B, n)
        Labels ±1.
    target : Tensor of shape (B, n), optional
        What the residuals are taken against; default ``(y + 1)/2`` (e.g. the true
        probabilities instead, as ``residual="truth"`` of :func:`match_probabilities`).

    Returns
    -------
    Tensor of shape (S,)
    """
    v.check_tensor(reference, "reference", ndim=3)
    v.check_tensor(candidates, "candidates", ndim=3)
    target = _labels01(y) if target is None else target.double()
    # One row at a time: (C, B, n) at once is small, (S, C, B, n) need not be.
    return torch.stack([similarity_of_errors(ref.double()[None], candidates.double(), target).max()
                        for ref in reference])


def condition_step_sizes(X: torch.Tensor, condition_number, mu: float, *, quantile: float = 0.5) -> torch.Tensor:
    """One global gradient-descent step ``1/L_κ`` per condition number, returned per prompt.

    ``L_κ`` is the ``quantile`` of the smoothness constant ``λ_max(X_{:i}ᵀX_{:i})/(4i) + μ`` of
    the logistic loss over every prefix ``i = 1 … n − 1`` of the prompts of that ``κ``: one step
    size per condition number, as Fu et al. use one fixed step. (With ``‖x_i‖ ≤ 1`` every
    prefix has ``L ≤ 1/4 + μ``, reached by the one-point prefixes of unit-norm points, so a high
    quantile is about ``1/4 + μ`` whatever ``κ``; the median follows the typical prefix.)

    Parameters
    ----------
    X : Tensor of shape (B, n, d)
    condition_number : float or Tensor of shape (B,)
        Each prompt's ``κ`` (a task's ``condition_number``).
    mu : float
        ``> 0``.
    quantile : float
        In ``(0, 1]``.

    Returns
    -------
    Tensor of shape (B,)
        float64, on the CPU.
    """
    v.check_tensor(X, "X", ndim=3)
    mu = v.check_positive(mu, "mu")
    quantile = v.check_positive(quantile, "quantile")
    if quantile > 1:
        raise ValueError(f"quantile must be in (0, 1], got {quantile}")
    B, n, d = X.shape
    if n < 2:
        raise ValueError(f"X must hold at least 2 points per prompt (a prefix and a position), got n = {n}")
    kappa = torch.as_tensor(condition_number, dtype=torch.float64).cpu()
    kappa = kappa.expand(B) if kappa.ndim == 0 else kappa
    if tuple(kappa.shape) != (B,):
        raise ValueError(f"condition_number must be a number or have shape (B,) = ({B},), got {tuple(kappa.shape)}")
    Xd = X.detach().double().cpu()
    smooth = torch.stack([torch.linalg.eigvalsh(Xd[:, :i].mT @ Xd[:, :i])[..., -1] / (4 * i)
                          for i in range(1, n)], 1)  # (B, n - 1)
    out = torch.empty(B, dtype=torch.float64)
    for value in kappa.unique():
        mask = kappa == value
        out[mask] = 1.0 / (float(torch.quantile(smooth[mask].flatten(), quantile)) + mu)
    return out


# --------------------------------------------------------------------------- against k: model, Newton, GD, Bayes


def _check_step_grid(lrs) -> torch.Tensor:
    """The grid of GD step sizes as a float64 CPU tensor (default: 25 values log-spaced over [0.1, 1000])."""
    if lrs is None:
        return torch.logspace(-1, 3, 25, dtype=torch.float64)
    grid = torch.as_tensor(lrs, dtype=torch.float64).cpu()
    v.check_tensor(grid, "lrs", ndim=1)
    if grid.numel() == 0 or bool((grid <= 0).any()):
        raise ValueError(f"lrs must be a non-empty sequence of step sizes > 0, got {grid.tolist()}")
    return grid


def _check_flag(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} ({value!r})")
    return value


def _gd_grid_logits(Xd: torch.Tensor, yd: torch.Tensor, mu: float, steps: int, lrs: torch.Tensor) -> torch.Tensor:
    """``x_kᵀw`` after ``steps`` GD steps from 0 on the first ``k`` pairs, for every step size of
    the grid: ``(R, B, n)``, 0 at position 0."""
    B, n, d = Xd.shape
    R = len(lrs)
    z = torch.zeros(R, B, n, dtype=torch.float64)
    for k in range(1, n):
        # Several step sizes at once (the prompts repeated, one step size per copy), in blocks
        # that keep the copies to about 2^24 numbers.
        block = max(1, (1 << 24) // (B * k * d))
        for r0 in range(0, R, block):
            rs = lrs[r0:r0 + block]
            W = gradient_descent_logistic(Xd[:, :k].repeat(len(rs), 1, 1), yd[:, :k].repeat(len(rs), 1), mu,
                                          steps, lr=rs.repeat_interleave(B))[-1].reshape(len(rs), B, d)
            z[r0:r0 + block, :, k] = (W * Xd[:, k]).sum(-1)
    return z


def _choose_gd_steps(z: torch.Tensor, yd: torch.Tensor, lrs: torch.Tensor, group: torch.Tensor, *,
                     per_position: bool, tune_from: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per group, the step of the grid with the lowest mean cross-entropy, at each position
    (``per_position``) or pooled over the positions ``k >= tune_from`` (one step for all)."""
    R, B, n = z.shape
    loss = F.softplus(-yd * z)  # (R, B, n)
    labels = group.unique()
    logits = torch.zeros(B, n, dtype=torch.float64)
    best = torch.full((len(labels), n), math.nan, dtype=torch.float64)
    for j, label in enumerate(labels):
        mask = group == label
        zg = z[:, mask]  # (R, B_g, n)
        if per_position:
            r = loss[:, mask].mean(1).argmin(0)  # (n,): the first of equal minima
            logits[mask] = zg.gather(0, r.expand(1, zg.shape[1], n)).squeeze(0)
            best[j, 1:] = lrs[r[1:]]
        else:
            r = int(loss[:, mask, tune_from:].mean((1, 2)).argmin())
            logits[mask] = zg[r]
            best[j, 1:] = lrs[r]
    return logits, best


def _gd_setup(X, y, mu, steps, lrs, groups, tune_from, global_step):
    """Validated float64 CPU prompts, grid, groups and ``tune_from`` of :func:`tuned_gd_logits`
    (``tune_from`` is only read, and ``n >= 2`` only needed, for a ``global_step``)."""
    X, y = v.check_regression_inputs(X, y)
    v.check_labels_pm1(y)
    mu = v.check_positive(mu, "mu")
    steps = v.check_int(steps, "steps", minimum=1)
    grid = _check_step_grid(lrs)
    B, n, d = X.shape
    group = torch.zeros(B) if groups is None else torch.as_tensor(groups).cpu()
    if tuple(group.shape) != (B,):
        raise ValueError(f"groups must have shape (B,) = ({B},), got {tuple(group.shape)}")
    if tune_from is not None:
        tune_from = v.check_int(tune_from, "tune_from", minimum=1)
    if global_step:
        if n < 2:
            raise ValueError(f"X must hold at least 2 points per prompt to tune one step over its positions, "
                             f"got n = {n}")
        tune_from = min(d, n - 1) if tune_from is None else tune_from
        if tune_from > n - 1:
            raise ValueError(f"tune_from must be at most n - 1 = {n - 1} (the last position), got {tune_from}")
    return X.detach().double().cpu(), y.detach().double().cpu(), mu, steps, grid, group, tune_from


def tuned_gd_logits(X: torch.Tensor, y: torch.Tensor, mu: float, *, steps: int = 3, lrs=None,
                    groups=None, per_position: bool = True,
                    tune_from: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of ``steps`` steps of gradient descent from 0, the step size tuned on a grid per group.

    At every position ``k`` GD runs on the first ``k`` pairs and predicts ``x_kᵀw``. The step
    size is chosen from ``lrs`` on these very prompts (which favours GD), separately for each
    group (e.g. condition number), in one of two ways:

    - ``per_position=True`` (the default): at each ``k``, the step with the lowest mean
      cross-entropy at that position, one step per group *and* position — the strictest
      baseline;
    - ``per_position=False``: one step per group for every position, the one with the lowest
      mean cross-entropy pooled over the positions ``k >= tune_from`` (Giannou et al.'s
      comparison as issue 16 states it: "one global step, tuned on a grid per condition
      number").

    Per group and position the first protocol is never worse on the tuning prompts: it
    minimizes each position's mean where the second minimizes their sum.

    Parameters
    ----------
    X : Tensor of shape (B, n, d)
    y : Tensor of shape (B, n)
        Labels ±1; ``n >= 2``.
    mu : float
        The loss's ℓ2 regularization, ``> 0``.
    steps : int
    lrs : sequence of float or Tensor of shape (R,), optional
        The grid of step sizes, each ``> 0``. Default 25 values log-spaced over ``[0.1, 1000]``
        (six per decade).
    groups : Tensor of shape (B,), optional
        A label per prompt (e.g. its condition number): one tuning per group.
    per_position : bool
        Tune at each position (``True``) or once over the positions ``k >= tune_from``.
    tune_from : int, optional
        The first position the global step is tuned on (``1 <= tune_from <= n - 1``; read only
        when ``per_position=False``). Default ``d`` (``n - 1`` if the prompts are shorter): the
        positions from which the regularized fit is determined by the data.

    Returns
    -------
    logits : Tensor of shape (B, n)
        float64, on the CPU; 0 at position 0.
    best_lr : Tensor of shape (G, n)
        The chosen step per group (sorted group labels) and position, NaN at ``k = 0``; with
        ``per_position=False`` one value repeated along the positions.
    """
    per_position = _check_flag(per_position, "per_position")
    Xd, yd, mu, steps, grid, group, tune_from = _gd_setup(X, y, mu, steps, lrs, groups, tune_from,
                                                          global_step=not per_position)
    z = _gd_grid_logits(Xd, yd, mu, steps, grid)
    return _choose_gd_steps(z, yd, grid, group, per_position=per_position, tune_from=tune_from)


BAYES_PROPOSALS = ("laplace", "prior")


@torch.no_grad()
def bayes_logits(X: torch.Tensor, y: torch.Tensor, *, prior_std: float = 2.0, proposal: str | None = None,
                 num_samples: int | None = None, inflation: float = 1.5, defensive: float = 0.1,
                 newton_steps: int = 20, generator: torch.Generator | None = None,
                 samples: torch.Tensor | None = None, chunk: int | None = None, return_ess: bool = False):
    r"""Log-odds of the Bayes posterior predictive at every position, from the pairs before it.

    Labels are drawn as ``P(y = +1 | x, w) = σ(xᵀw)`` with ``w ~ N(0, prior_std²·I)`` (the
    sampler :func:`tfnewton.tasks.sample_logistic_regression` with ``weight_scale = prior_std``).
    Given the first ``k`` pairs, the probability that ``y_k = +1`` is ``E[σ(x_kᵀw) | pairs]``:
    no predictor of these labels has a lower expected cross-entropy. It is estimated by
    self-normalized importance sampling, ``Σ_m ω_m σ(x_kᵀw_m)`` with
    ``ω_m ∝ prior(w_m)·Π_{i<k} σ(y_i x_iᵀw_m) / q(w_m)`` for draws ``w_m ~ q``, from one of two
    proposals ``q``:

    - ``"laplace"`` (the default): per prompt and position, the Laplace approximation of the
      posterior, ``N(ŵ, inflation·H⁻¹)`` with ``ŵ`` the MAP (``newton_steps`` damped Newton
      steps on the same loss with ``mu = 1/(prior_std²·k)``,
      :func:`tfnewton.algorithms.damped_newton_logistic`) and ``H`` the log posterior's
      Hessian there, mixed with the prior in the fraction ``defensive`` of the draws
      ("defensive" importance sampling: ``q >= defensive·prior``, so every unnormalized
      weight ``prior·likelihood/q`` is at most ``1/defensive`` and the estimate's variance is
      finite whatever the posterior's tails). The draws are ``ŵ + L·ε`` and
      ``prior_std·ξ`` for standard normal ``ε, ξ`` shared by every prompt and position. The
      proposal's centre and spread only change the estimate's variance, not what it estimates;
      position 0 (no pairs) is exactly 0 (the prior is symmetric);
    - ``"prior"``: ``num_samples`` draws from the prior (the same for every prompt), each
      weighted by its likelihood of the pairs. Reliable for small ``k``; with more pairs the
      likelihood concentrates and few draws carry the weight (see ``return_ess``).

    Parameters
    ----------
    X : Tensor of shape (B, n, d)
    y : Tensor of shape (B, n)
        Labels ±1.
    prior_std : float
        ``> 0``: the standard deviation of each coordinate of ``w``.
    proposal : {"laplace", "prior"}, optional
        Default ``"laplace"``, or ``"prior"`` when ``samples`` is given.
    num_samples : int, optional
        Draws per prompt and position, ``>= 1``. Default 1024 (``"laplace"``) or 4096
        (``"prior"``).
    inflation : float
        ``> 0``: the Laplace covariance ``H⁻¹`` is scaled by it (``"laplace"`` only).
    defensive : float
        The share of prior draws in the Laplace proposal, in ``[0, 1)`` (``"laplace"`` only).
    newton_steps : int
        Damped Newton steps to the MAP, ``>= 1`` (``"laplace"`` only).
    generator : torch.Generator, optional
        Seeds the draws (CPU).
    samples : Tensor of shape (M, d), optional
        Use these draws from the prior (``proposal="prior"``; ``prior_std``,
        ``num_samples`` and ``generator`` are then ignored).
    chunk : int, optional
        Prompts per pass, ``>= 1``; default: as many as keep a pass to about 2^24 numbers
        (``"laplace"`` holds ``chunk × n × num_samples`` float64, ``"prior"``
        ``chunk × num_samples``).
    return_ess : bool
        Also return the effective sample size of the weights, ``1/Σ_m ω_m²`` (between 1 and
        ``num_samples``; ``num_samples`` at position 0).

    Returns
    -------
    logits : Tensor of shape (B, n)
        float64, on the CPU; the log-odds of the estimated ``P(y_k = +1 | first k pairs)``.
    ess : Tensor of shape (B, n)
        Only with ``return_ess=True``.
    """
    X, y = v.check_regression_inputs(X, y)
    v.check_labels_pm1(y)
    prior_std = v.check_positive(prior_std, "prior_std")
    return_ess = _check_flag(return_ess, "return_ess")
    if proposal is None:
        proposal = "prior" if samples is not None else "laplace"
    if proposal not in BAYES_PROPOSALS:
        raise ValueError(f"proposal must be one of {BAYES_PROPOSALS}, got {proposal!r}")
    if samples is not None and proposal != "prior":
        raise ValueError("samples are draws from the prior: pass proposal='prior' (or leave it unset) with them, "
                         f"got proposal={proposal!r}")
    if num_samples is not None:
        num_samples = v.check_int(num_samples, "num_samples", minimum=1)
    if chunk is not None:
        chunk = v.check_int(chunk, "chunk", minimum=1)
    B, n, d = X.shape
    Xd, yd = X.detach().double().cpu(), y.detach().double().cpu()
    if proposal == "prior":
        if samples is None:
            W = prior_std * torch.randn(num_samples or 4096, d, generator=generator, dtype=torch.float64)
        else:
            v.check_tensor(samples, "samples", ndim=2)
            if samples.shape[1] != d:
                raise ValueError(f"samples must have shape (M, d) = (M, {d}), got {tuple(samples.shape)}")
            W = samples.detach().double().cpu()
        logits, ess = _bayes_prior(Xd, yd, W, chunk or max(1, (1 << 24) // W.shape[0]))
    else:
        inflation = v.check_positive(inflation, "inflation")
        defensive = v.check_positive(defensive, "defensive", allow_zero=True)
        if defensive >= 1:
            raise ValueError(f"defensive must be in [0, 1) (the share of prior draws), got {defensive}")
        newton_steps = v.check_int(newton_steps, "newton_steps", minimum=1)
        M = num_samples or 1024
        M_prior = int(round(defensive * M))
        if defensive > 0 and (M_prior == 0 or M_prior == M):
            raise ValueError(f"num_samples = {M} is too few to hold both kinds of draws at defensive = {defensive}: "
                             "use more samples or defensive=0")
        eps = torch.randn(M, d, generator=generator, dtype=torch.float64)
        logits, ess = _bayes_laplace(Xd, yd, eps, M_prior, prior_std, inflation, newton_steps,
                                     chunk or max(1, (1 << 24) // (M * n)))
    return (logits, ess) if return_ess else logits


def _bayes_prior(Xd, yd, W, chunk):
    """Importance sampling from the prior draws ``W (M, d)``: logits and ESS, ``(B, n)`` each."""
    B, n, d = Xd.shape
    logits = torch.empty(B, n, dtype=torch.float64)
    ess = torch.empty(B, n, dtype=torch.float64)
    for start in range(0, B, chunk):
        Xc, yc = Xd[start:start + chunk], yd[start:start + chunk]
        loglik = torch.zeros(Xc.shape[0], W.shape[0], dtype=torch.float64)
        for i in range(n):
            z = Xc[:, i] @ W.T  # (b, M)
            weights = torch.softmax(loglik, -1)
            p = (weights * torch.sigmoid(z)).sum(-1)
            logits[start:start + chunk, i] = torch.logit(p, eps=1e-12)
            ess[start:start + chunk, i] = 1.0 / (weights * weights).sum(-1)
            loglik += F.logsigmoid(yc[:, i:i + 1] * z)
    return logits, ess


def _bayes_laplace(Xd, yd, eps, M_prior, s, inflation, newton_steps, chunk):
    """Importance sampling from the defensive Laplace mixture (see :func:`bayes_logits`)."""
    B, n, d = Xd.shape
    M = eps.shape[0]
    alpha = M_prior / M
    half_log_2pi = 0.5 * math.log(2 * math.pi)
    eye = torch.eye(d, dtype=torch.float64)
    logits = torch.zeros(B, n, dtype=torch.float64)
    ess = torch.full((B, n), float(M), dtype=torch.float64)
    for start in range(0, B, chunk):
        Xc, yc = Xd[start:start + chunk], yd[start:start + chunk]
        b = Xc.shape[0]
        for k in range(1, n):
            Xk, yk = Xc[:, :k], yc[:, :k]
            w_map = damped_newton_logistic(Xk, yk, 1.0 / (s * s * k), newton_steps)[-1]  # (b, d)
            curvature = torch.sigmoid(Xk @ w_map.unsqueeze(-1)).squeeze(-1)
            curvature = curvature * (1 - curvature)  # σ'(x_iᵀŵ), (b, k)
            H = (Xk.mT * curvature.unsqueeze(1)) @ Xk + eye / (s * s)  # (b, d, d)
            C = torch.linalg.cholesky(H)  # H = C Cᵀ, so H⁻¹ = C⁻ᵀ C⁻¹
            # Laplace draws ŵ + √inflation · C⁻ᵀ ε, then prior draws s·ε.
            laplace = torch.linalg.solve_triangular(C.mT, eps[M_prior:].T, upper=True).mT  # (b, M - M_prior, d)
            W = torch.cat([s * eps[:M_prior].expand(b, M_prior, d),
                           w_map.unsqueeze(1) + math.sqrt(inflation) * laplace], 1)  # (b, M, d)
            log_prior = -0.5 * (W * W).sum(-1) / (s * s) - d * (math.log(s) + half_log_2pi)
            u = (W - w_map.unsqueeze(1)) @ C / math.sqrt(inflation)  # Cᵀ(w − ŵ)/√inflation, (b, M, d)
            log_laplace = (-0.5 * (u * u).sum(-1) - 0.5 * d * math.log(inflation)
                           + torch.log(torch.diagonal(C, dim1=-2, dim2=-1)).sum(-1, keepdim=True) - d * half_log_2pi)
            if M_prior:
                log_q = torch.logaddexp(math.log(1 - alpha) + log_laplace, math.log(alpha) + log_prior)
            else:
                log_q = log_laplace
            margins = W @ (Xk * yk.unsqueeze(-1)).mT  # y_i x_iᵀw_m, (b, M, k)
            log_weight = F.logsigmoid(margins).sum(-1) + log_prior - log_q
            weights = torch.softmax(log_weight, -1)  # (b, M)
            p = (weights * torch.sigmoid((W * Xc[:, k].unsqueeze(1)).sum(-1))).sum(-1)
            logits[start:start + b, k] = torch.logit(p, eps=1e-12)
            ess[start:start + b, k] = 1.0 / (weights * weights).sum(-1)
    return logits, ess


@dataclass
class ClassificationCurves:
    """Logits of several predictors at every position of the same prompts, and their scores.

    Attributes
    ----------
    logits : dict
        ``name -> Tensor (B, n)`` (float64, CPU); position ``k`` has seen ``k`` pairs.
    y : Tensor of shape (B, n)
        Labels ±1.
    groups : Tensor of shape (B,) or None
        Each prompt's group (its condition number), for per-group scores.
    extra : dict
        Settings (``mu``, the tuned GD steps ``gd_lr`` and ``gd_global_lr``, the Bayes
        predictor's effective sample sizes ``bayes_ess``, …; see :func:`classification_curves`).
    """

    logits: dict
    y: torch.Tensor
    groups: torch.Tensor | None = None
    extra: dict = field(default_factory=dict)

    def _mask(self, group):
        if group is None:
            return slice(None)
        if self.groups is None:
            raise ValueError("these curves have no groups")
        return self.groups == group

    def losses(self, name: str) -> torch.Tensor:
        """Per-prompt cross-entropy of ``name`` at every position, ``(B, n)``."""
        return F.softplus(-self.y.double() * self.logits[name])

    def cross_entropy(self, group=None) -> dict:
        """``name -> Tensor (n,)``: mean cross-entropy at every ``k`` (over a group's prompts only if given)."""
        mask = self._mask(group)
        return {name: self.losses(name)[mask].mean(0) for name in self.logits}

    def accuracy(self, group=None) -> dict:
        """``name -> Tensor (n,)``: accuracy of the logit's sign at every ``k`` (a logit of 0 counts half)."""
        mask = self._mask(group)
        out = {}
        for name, z in self.logits.items():
            margins = (self.y.double() * z)[mask]
            out[name] = ((margins > 0).double() + 0.5 * (margins == 0).double()).mean(0)
        return out

    def gap(self, name: str, other: str, group=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy of ``name`` minus that of ``other`` at every ``k``, with its standard error.

        The difference is taken prompt by prompt (the same prompts and labels), so the noise
        of the labels cancels out of it.

        Returns
        -------
        mean, standard_error : Tensor of shape (n,)
        """
        mask = self._mask(group)
        diff = (self.losses(name) - self.losses(other))[mask]
        return diff.mean(0), diff.std(0) / math.sqrt(diff.shape[0])


def classification_curves(model, task, *, mu: float, gd_steps: int = 3, gd_lrs=None, gd_tune_from: int | None = None,
                          prior_std: float | None = 2.0, bayes_proposal: str | None = None,
                          num_samples: int | None = None, newton_steps: int = 20, seed: int = 0,
                          batch_size: int = 1000) -> ClassificationCurves:
    """Cross-entropy and accuracy against ``k`` of a model and its references on the same prompts.

    Predictors, each at position ``k`` from the first ``k`` pairs:

    - ``"model"``: the model's logits;
    - ``"newton"``: the ℓ2-regularized maximum-likelihood fit (``newton_steps`` damped Newton
      steps, :func:`tfnewton.baselines.newton_logistic_logits`), which is scikit-learn's
      ``LogisticRegression(C = 1/(k·mu), fit_intercept=False)`` on the same ``k`` pairs;
    - ``"gd_tuned"``: ``gd_steps`` steps of GD, the step size tuned per ``k`` and condition
      number on these prompts (:func:`tuned_gd_logits`);
    - ``"gd_global"``: the same GD with one step size per condition number for every ``k``,
      tuned on these prompts' mean cross-entropy over ``k >= gd_tune_from``
      (:func:`tuned_gd_logits` with ``per_position=False``; the same grid);
    - ``"bayes"``: the posterior predictive (:func:`bayes_logits`; omitted when ``prior_std``
      is ``None``).

    Parameters
    ----------
    model : torch.nn.Module or None
        A causal in-context classifier (``None``: the references only).
    task : object with ``X``, ``y`` (and ``condition_number``), or a pair ``(X, y)``
    mu : float
        The regularization of Newton's fit and of GD's loss.
    gd_steps, gd_lrs, gd_tune_from
        As ``steps``, ``lrs`` and ``tune_from`` of :func:`tuned_gd_logits`.
    prior_std, bayes_proposal, num_samples
        As ``prior_std``, ``proposal`` and ``num_samples`` of :func:`bayes_logits` (the
        sampler's ``weight_scale`` is 2).
    newton_steps : int
    seed : int
        Seeds the Bayes predictor's draws.
    batch_size : int
        Prompts per forward pass of the model.

    Returns
    -------
    ClassificationCurves
        ``extra`` holds ``gd_lr (G, n)``, the per-position steps (NaN at ``k = 0``),
        ``gd_global_lr (G,)``, the one step per group, ``gd_tune_from``, ``groups`` (the
        ``G`` sorted group labels, or ``None``) and, with the Bayes predictor,
        ``bayes_ess (B, n)`` (its effective sample sizes) and ``bayes_proposal``.
    """
    X, y = task_prompts(task)
    v.check_labels_pm1(y, "task.y")
    mu = v.check_positive(mu, "mu")
    kappa = getattr(task, "condition_number", None)
    groups = torch.as_tensor(kappa, dtype=torch.float64).cpu().expand(X.shape[0]) if kappa is not None else None
    Xd, yd, mu, gd_steps, grid, group, tune_from = _gd_setup(X, y, mu, gd_steps, gd_lrs, groups, gd_tune_from,
                                                             global_step=True)
    logits = {}
    if model is not None:
        parameter = next(model.parameters())
        logits["model"] = predict(model, X.to(parameter.device, parameter.dtype),
                                  y.to(parameter.device, parameter.dtype), batch_size).double().cpu()
    logits["newton"] = newton_logistic_logits(X, y, mu=mu, steps=newton_steps)
    z = _gd_grid_logits(Xd, yd, mu, gd_steps, grid)  # every step of the grid, shared by both protocols
    logits["gd_tuned"], gd_lr = _choose_gd_steps(z, yd, grid, group, per_position=True, tune_from=tune_from)
    logits["gd_global"], gd_global_lr = _choose_gd_steps(z, yd, grid, group, per_position=False,
                                                         tune_from=tune_from)
    del z
    extra = {"mu": mu, "gd_steps": gd_steps, "gd_lr": gd_lr, "gd_global_lr": gd_global_lr[:, -1].clone(),
             "gd_tune_from": tune_from, "groups": None if groups is None else groups.unique().tolist()}
    if prior_std is not None:
        logits["bayes"], extra["bayes_ess"] = bayes_logits(
            X, y, prior_std=prior_std, proposal=bayes_proposal, num_samples=num_samples,
            generator=torch.Generator().manual_seed(seed), return_ess=True)
        extra["bayes_proposal"] = bayes_proposal or "laplace"
    return ClassificationCurves(logits, y.double(), groups, extra=extra)
