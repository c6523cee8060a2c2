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
  gradient descent with a few steps and the step size tuned per ``k``, and the Bayes posterior
  predictive (:func:`bayes_logits`), the best any predictor can do on these prompts.
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


def tuned_gd_logits(X: torch.Tensor, y: torch.Tensor, mu: float, *, steps: int = 3, lrs=None,
                    groups=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of ``steps`` steps of gradient descent from 0 with the step size tuned per ``k`` (and group).

    At every position ``k`` GD runs on the first ``k`` pairs and predicts ``x_kᵀw``; the step
    size is the one of ``lrs`` with the lowest mean cross-entropy at that position over the
    prompts of each group — tuned on these very prompts, which favours GD.

    Parameters
    ----------
    X : Tensor of shape (B, n, d)
    y : Tensor of shape (B, n)
        Labels ±1.
    mu : float
        The loss's ℓ2 regularization, ``> 0``.
    steps : int
    lrs : sequence of float, optional
        Default 25 values log-spaced over ``[0.1, 1000]`` (six per decade).
    groups : Tensor of shape (B,), optional
        A label per prompt (e.g. its condition number): one step size per group and ``k``.

    Returns
    -------
    logits : Tensor of shape (B, n)
        float64; 0 at position 0.
    best_lr : Tensor of shape (G, n)
        The chosen step per group (sorted group labels) and position; NaN at ``k = 0``.
    """
    X, y = v.check_regression_inputs(X, y)
    v.check_labels_pm1(y)
    mu = v.check_positive(mu, "mu")
    steps = v.check_int(steps, "steps", minimum=1)
    lrs = torch.logspace(-1, 3, 25, dtype=torch.float64) if lrs is None else torch.as_tensor(lrs, dtype=torch.float64)
    B, n, d = X.shape
    group = torch.zeros(B) if groups is None else torch.as_tensor(groups).cpu()
    if tuple(group.shape) != (B,):
        raise ValueError(f"groups must have shape (B,) = ({B},), got {tuple(group.shape)}")
    labels = group.unique()
    Xd, yd = X.detach().double().cpu(), y.detach().double().cpu()
    R = len(lrs)
    logits = torch.zeros(B, n, dtype=torch.float64)
    best = torch.full((len(labels), n), math.nan, dtype=torch.float64)
    for k in range(1, n):
        # Every step size at once: the prompts repeated, one step size per copy.
        W = gradient_descent_logistic(Xd[:, :k].repeat(R, 1, 1), yd[:, :k].repeat(R, 1), mu, steps,
                                      lr=lrs.repeat_interleave(B))[-1].reshape(R, B, d)
        z = (W * Xd[:, k]).sum(-1)  # (R, B)
        loss = F.softplus(-yd[:, k] * z)
        for j, label in enumerate(labels):
            mask = group == label
            r = int(loss[:, mask].mean(1).argmin())
            logits[mask, k] = z[r, mask]
            best[j, k] = lrs[r]
    return logits, best


@torch.no_grad()
def bayes_logits(X: torch.Tensor, y: torch.Tensor, *, prior_std: float = 2.0, num_samples: int = 4096,
                 generator: torch.Generator | None = None, samples: torch.Tensor | None = None,
                 chunk: int = 512) -> torch.Tensor:
    """Log-odds of the Bayes posterior predictive at every position, from the pairs before it.

    Labels are drawn as ``P(y = +1 | x, w) = σ(xᵀw)`` with ``w ~ N(0, prior_std²·I)`` (the
    sampler :func:`tfnewton.tasks.sample_logistic_regression` with ``weight_scale = prior_std``).
    Given the first ``k`` pairs, the probability that ``y_k = +1`` is ``E[σ(x_kᵀw) | pairs]``,
    estimated by importance sampling: ``num_samples`` draws from the prior (the same for every
    prompt), each weighted by its likelihood of the pairs. No predictor of these labels has a
    lower expected cross-entropy (up to the sampling error).

    Parameters
    ----------
    X : Tensor of shape (B, n, d)
    y : Tensor of shape (B, n)
        Labels ±1.
    prior_std : float
        ``> 0``: the standard deviation of each coordinate of ``w``.
    num_samples : int
    generator : torch.Generator, optional
        Seeds the prior draws (CPU).
    samples : Tensor of shape (M, d), optional
        Use these draws from the prior instead (``prior_std``, ``num_samples`` and
        ``generator`` are then ignored).
    chunk : int
        Prompts per pass (memory: ``chunk × num_samples`` float64).

    Returns
    -------
    Tensor of shape (B, n)
        float64, on the CPU; 0 at position 0.
    """
    X, y = v.check_regression_inputs(X, y)
    v.check_labels_pm1(y)
    prior_std = v.check_positive(prior_std, "prior_std")
    num_samples = v.check_int(num_samples, "num_samples", minimum=1)
    chunk = v.check_int(chunk, "chunk", minimum=1)
    B, n, d = X.shape
    if samples is None:
        W = prior_std * torch.randn(num_samples, d, generator=generator, dtype=torch.float64)
    else:
        v.check_tensor(samples, "samples", ndim=2)
        if samples.shape[1] != d:
            raise ValueError(f"samples must have shape (M, d) = (M, {d}), got {tuple(samples.shape)}")
        W = samples.detach().double().cpu()
        num_samples = W.shape[0]
    Xd, yd = X.detach().double().cpu(), y.detach().double().cpu()
    out = torch.empty(B, n, dtype=torch.float64)
    for start in range(0, B, chunk):
        Xc, yc = Xd[start:start + chunk], yd[start:start + chunk]
        loglik = torch.zeros(Xc.shape[0], num_samples, dtype=torch.float64)
        for i in range(n):
            z = Xc[:, i] @ W.T  # (b, M)
            p = (torch.softmax(loglik, -1) * torch.sigmoid(z)).sum(-1)
            out[start:start + chunk, i] = torch.logit(p, eps=1e-12)
            loglik += F.logsigmoid(yc[:, i:i + 1] * z)
    return out


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
        Settings (``mu``, the tuned GD steps ``gd_lr``, …).
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


def classification_curves(model, task, *, mu: float, gd_steps: int = 3, gd_lrs=None, prior_std: float | None = 2.0,
                          num_samples: int = 4096, newton_steps: int = 20, seed: int = 0,
                          batch_size: int = 1000) -> ClassificationCurves:
    """Cross-entropy and accuracy against ``k`` of a model and its references on the same prompts.

    Predictors, each at position ``k`` from the first ``k`` pairs:

    - ``"model"``: the model's logits;
    - ``"newton"``: the ℓ2-regularized maximum-likelihood fit (``newton_steps`` damped Newton
      steps, :func:`tfnewton.baselines.newton_logistic_logits`), which is scikit-learn's
      ``LogisticRegression(C = 1/(k·mu), fit_intercept=False)`` on the same ``k`` pairs;
    - ``"gd_tuned"``: ``gd_steps`` steps of GD, the step size tuned per ``k`` and condition
      number on these prompts (:func:`tuned_gd_logits`);
    - ``"bayes"``: the posterior predictive (:func:`bayes_logits`; omitted when ``prior_std``
      is ``None``).

    Parameters
    ----------
    model : torch.nn.Module or None
        A causal in-context classifier (``None``: the references only).
    task : object with ``X``, ``y`` (and ``condition_number``), or a pair ``(X, y)``
    mu : float
        The regularization of Newton's fit and of GD's loss.
    gd_steps, gd_lrs
        As ``steps`` and ``lrs`` of :func:`tuned_gd_logits`.
    prior_std, num_samples
        As in :func:`bayes_logits` (the sampler's ``weight_scale`` is 2).
    newton_steps : int
    seed : int
        Seeds the Bayes predictor's prior draws.
    batch_size : int
        Prompts per forward pass of the model.

    Returns
    -------
    ClassificationCurves
    """
    X, y = task_prompts(task)
    v.check_labels_pm1(y, "task.y")
    mu = v.check_positive(mu, "mu")
    kappa = getattr(task, "condition_number", None)
    groups = torch.as_tensor(kappa, dtype=torch.float64).cpu().expand(X.shape[0]) if kappa is not None else None
    logits = {}
    if model is not None:
        parameter = next(model.parameters())
        logits["model"] = predict(model, X.to(parameter.device, parameter.dtype),
                                  y.to(parameter.device, parameter.dtype), batch_size).double().cpu()
    logits["newton"] = newton_logistic_logits(X, y, mu=mu, steps=newton_steps)
    logits["gd_tuned"], gd_lr = tuned_gd_logits(X, y, mu, steps=gd_steps, lrs=gd_lrs, groups=groups)
    if prior_std is not None:
        logits["bayes"] = bayes_logits(X, y, prior_std=prior_std, num_samples=num_samples,
                                       generator=torch.Generator().manual_seed(seed))
    return ClassificationCurves(logits, y.double(), groups,
                                extra={"mu": mu, "gd_steps": gd_steps, "gd_lr": gd_lr,
                                       "groups": None if groups is None else groups.unique().tolist()})
