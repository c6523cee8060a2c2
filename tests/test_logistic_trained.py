"""The trained in-context classifier and the per-layer comparisons of tfnewton.logistic_probes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from tfnewton import algorithms
from tfnewton.algorithms import ALGORITHMS, REQUIRED, iterates
from tfnewton.logistic_probes import (
    LogisticReadouts,
    best_match_between,
    bayes_logits,
    classification_curves,
    condition_step_sizes,
    logistic_readouts,
    match_probabilities,
    prefix_probabilities,
    tuned_gd_logits,
)
from tfnewton.models import build_model
from tfnewton.ridge import split_indices
from tfnewton.tasks import sample_logistic_regression

pytestmark = pytest.mark.usefixtures("one_thread")

F64 = torch.float64


def _task(B=60, n=9, d=3, seed=0, kappa=(1, 10, 50), dtype=torch.float32):
    return sample_logistic_regression(B, n, d, condition_number=kappa, generator=torch.Generator().manual_seed(seed),
                                      dtype=dtype)


def _tiny_model(d=3, n=9, layers=2, seed=0):
    return build_model("gpt2", d, n_layers=layers, width=8, heads=2, n_points=n, seed=seed)


# --------------------------------------------------------------------------- the registry


def test_logistic_algorithms_are_registered_and_run_their_functions():
    task = _task(5, 7, 3, dtype=F64)
    newton, gd = ALGORITHMS["damped_newton_logistic"], ALGORITHMS["gradient_descent_logistic"]
    assert newton.task == gd.task == "logistic_regression"
    assert newton.parameters["mu"] is REQUIRED and gd.parameters["mu"] is REQUIRED
    torch.testing.assert_close(iterates("damped_newton_logistic", task.X, task.y, 4, mu=0.1),
                               algorithms.damped_newton_logistic(task.X, task.y, 0.1, 4), rtol=0, atol=0)
    torch.testing.assert_close(iterates("damped_newton_logistic", task.X, task.y, 3, mu=0.1, inner_steps=2),
                               algorithms.damped_newton_logistic(task.X, task.y, 0.1, 3, inner_steps=2), rtol=0, atol=0)
    torch.testing.assert_close(iterates("gradient_descent_logistic", task.X, task.y, 5, mu=0.1, lr=2.0),
                               algorithms.gradient_descent_logistic(task.X, task.y, 0.1, 5, lr=2.0), rtol=0, atol=0)
    with pytest.raises(ValueError, match="needs mu"):
        iterates("damped_newton_logistic", task.X, task.y, 2)
    with pytest.raises(ValueError, match="takes mu, lr; got ridge"):
        iterates("gradient_descent_logistic", task.X, task.y, 2, mu=0.1, ridge=1.0)


# --------------------------------------------------------------------------- per-layer read-outs


def test_logistic_readouts_fit_the_penalized_cross_entropy_like_scikit_learn():
    """Each layer's read-out is the ℓ2-penalized logistic fit of its standardized state (checked
    against scikit-learn on two layers), on the split metrics.layer_readouts uses."""
    from sklearn.linear_model import LogisticRegression

    from tfnewton.capture import run_with_cache

    task = _task(80, 9, 3, seed=1)
    model = _tiny_model()
    mu = 1e-2
    ro = logistic_readouts(model, task, mu=mu, newton_steps=15, seed=3)
    L1, n = len(model.blocks) + 1, 9
    assert ro.logits.shape == (L1, 20, n) and ro.X.shape == (20, n, 3) and ro.model_logits.shape == (20, n)
    test_idx, fit_idx = split_indices(80, 0.25, generator=torch.Generator().manual_seed(3))
    assert torch.equal(ro.index, test_idx) and torch.equal(ro.y, task.y[test_idx])
    assert bool((ro.decrement < 1e-8).all())
    _, cache = run_with_cache(model, task.X, task.y, positions=model.x_token_positions(n))
    states = cache.stack().double()
    for layer in (0, L1 - 1):
        S = states[layer, fit_idx].reshape(-1, states.shape[-1])
        Z = ((S - S.mean(0)) / S.std(0)).numpy()
        Z1 = np.concatenate([Z, np.ones((len(Z), 1))], 1)  # the intercept is a (penalized) feature
        labels = task.y[fit_idx].reshape(-1).numpy()
        ref = LogisticRegression(C=1 / (len(Z1) * mu), fit_intercept=False, tol=1e-12, max_iter=10_000).fit(Z1, labels)
        np.testing.assert_allclose(ro.coef[layer].numpy(), ref.coef_[0], rtol=1e-5, atol=1e-7)
    # The held-out logits are the fitted read-outs applied to the held-out states.
    test_states = states[:, test_idx].reshape(L1, -1, states.shape[-1])
    torch.testing.assert_close(ro.apply(test_states).reshape(L1, 20, n), ro.logits)
    torch.testing.assert_close(ro.model_logits, model(task.X[test_idx], task.y[test_idx]).double())
    ce = ro.cross_entropy()
    assert ce.shape == (L1, n) and torch.allclose(ce, F.softplus(-ro.y.double() * ro.logits).mean(1))
    assert ro.accuracy().shape == (L1, n)


def test_readouts_subset_and_bad_input():
    task = _task(40, 9, 3)
    model = _tiny_model()
    ro = logistic_readouts(model, task)
    kappa = task.condition_number[ro.index]
    sub = ro.subset(kappa == 10)
    assert sub.X.shape[0] == int((kappa == 10).sum()) and torch.equal(sub.logits, ro.logits[:, kappa == 10])
    assert torch.equal(ro.w, task.w[ro.index].double()) and torch.equal(sub.w, ro.w[kappa == 10])
    with pytest.raises(ValueError, match="mask selects no prompt"):
        ro.subset(kappa == 3)
    with pytest.raises(ValueError, match=r"mask must have shape \(B_test,\)"):
        ro.subset(torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="task.y must hold labels -1 or \\+1"):
        logistic_readouts(model, (task.X, (task.y + 1) / 2))
    with pytest.raises(ValueError, match="mu must be > 0"):
        logistic_readouts(model, task, mu=0.0)
    from tfnewton.constructions import logistic_newton_transformer

    with pytest.raises(TypeError, match="answers one query per prompt"):
        logistic_readouts(logistic_newton_transformer(3, 1, 0.1, inner_steps=1, exact_scalars=True), task)


# --------------------------------------------------------------------------- similarity on probabilities


def _readouts_from_logits(logits, task):
    """LogisticReadouts whose 'layers' are the given logits (L + 1, B, n): a model we know."""
    L1, B, n = logits.shape
    return LogisticReadouts(logits=logits, X=task.X.double(), y=task.y.double(), index=torch.arange(B),
                            layer_names=[f"layer {i}" for i in range(L1)], model_logits=logits[-1],
                            coef=torch.zeros(L1, 2), mean=torch.zeros(L1, 1), scale=torch.ones(L1, 1), mu=1.0,
                            decrement=torch.zeros(L1))


def test_prefix_probabilities_are_each_prefix_fit():
    task = _task(6, 8, 3, dtype=F64)
    P = prefix_probabilities("damped_newton_logistic", task.X, task.y, [0, 2, 5], mu=0.05)
    assert P.shape == (3, 6, 8) and bool((P[:, :, 0] == 0.5).all()) and bool((P[0] == 0.5).all())
    for i in (1, 4, 7):
        w = algorithms.damped_newton_logistic(task.X[:, :i], task.y[:, :i], 0.05, 5)
        torch.testing.assert_close(P[1:, :, i], torch.sigmoid((w[[2, 5]] * task.X[:, i]).sum(-1)))


def test_a_layer_that_is_an_algorithm_step_matches_it_exactly():
    """Plant Newton's step-2 logits as layer 1 and GD's as layer 2: each layer's best match is
    the planted one, with similarity 1; the model's own output is layer 2."""
    task = _task(30, 9, 3, dtype=F64)
    mu = 0.05
    newton = torch.logit(prefix_probabilities("damped_newton_logistic", task.X, task.y, 4, mu=mu))  # (5, B, n)
    gd = torch.logit(prefix_probabilities("gradient_descent_logistic", task.X, task.y, [8], mu=mu, lr=3.0))[0]
    noise = torch.randn(30, 9, generator=torch.Generator().manual_seed(0), dtype=F64)
    ro = _readouts_from_logits(torch.stack([noise, newton[2], gd]), task)
    table = match_probabilities(ro, "damped_newton_logistic", 4, mu=mu)
    assert table.similarity.shape == (3, 5) and table.best_steps()[1] == 2
    assert float(table.similarity[1, 2]) == pytest.approx(1.0, abs=1e-12)
    # Noise matches no step exactly; it still scores high: the residual p − (y + 1)/2 of any
    # predictor near 1/2 is mostly ±1/2, set by the label (the metric's floor, see the chapter).
    assert 0.5 < float(table.similarity[0].max()) < 0.98
    gd_table = match_probabilities(ro, "gradient_descent_logistic", [1, 8, 64], mu=mu, lr=3.0, name="GD")
    assert gd_table.algorithm == "GD" and gd_table.best_steps()[2] == 8
    assert float(gd_table.model_similarity[1]) == pytest.approx(1.0, abs=1e-12)
    # the similarity is the cosine of the probability residuals p − (y + 1)/2, averaged over prompts
    r_layer = torch.sigmoid(newton[2]) - (task.y + 1) / 2
    r_algo = table.extra["probabilities"][3] - (task.y + 1) / 2
    cos = (r_layer * r_algo).sum(-1) / (r_layer.norm(dim=-1) * r_algo.norm(dim=-1))
    assert float(table.similarity[1, 3]) == pytest.approx(float(cos.mean()), abs=1e-12)
    # Against the truth: residuals p − σ(x_iᵀw); the planted layer still matches exactly, and
    # the label noise no longer lifts the unrelated layer.
    with pytest.raises(ValueError, match="without their weights"):
        match_probabilities(ro, "damped_newton_logistic", 4, mu=mu, residual="truth")
    ro.w = task.w.double()
    truth = match_probabilities(ro, "damped_newton_logistic", 4, mu=mu, residual="truth")
    assert truth.best_steps()[1] == 2 and float(truth.similarity[1, 2]) == pytest.approx(1.0, abs=1e-12)
    assert float(truth.similarity[0].max()) < float(table.similarity[0].max())
    p_true = torch.sigmoid((task.X * task.w.unsqueeze(1)).sum(-1))
    torch.testing.assert_close(ro.true_probabilities(), p_true)
    r_layer, r_algo = torch.sigmoid(newton[2]) - p_true, truth.extra["probabilities"][3] - p_true
    cos = (r_layer * r_algo).sum(-1) / (r_layer.norm(dim=-1) * r_algo.norm(dim=-1))
    assert float(truth.similarity[1, 3]) == pytest.approx(float(cos.mean()), abs=1e-12)
    again = match_probabilities(ro, "damped_newton_logistic", 4, mu=mu, residual="truth",
                                probabilities=table.extra["probabilities"])
    torch.testing.assert_close(again.similarity, truth.similarity, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"probabilities must have shape \(S, B_test, n\)"):
        match_probabilities(ro, "damped_newton_logistic", 3, mu=mu, probabilities=table.extra["probabilities"])
    with pytest.raises(ValueError, match="residual must be 'label' or 'truth'"):
        match_probabilities(ro, "damped_newton_logistic", 4, mu=mu, residual="labels")


def test_best_match_between_is_one_for_a_shared_predictor_and_below_otherwise():
    task = _task(40, 9, 3, dtype=F64)
    newton = prefix_probabilities("damped_newton_logistic", task.X, task.y, [1, 10], mu=0.01)
    gd = prefix_probabilities("gradient_descent_logistic", task.X, task.y, [1, 4, 16], mu=0.01, lr=4.0)
    best = best_match_between(newton, gd, task.y)
    assert best.shape == (2,) and bool((best < 1).all()) and bool((best > 0).all())
    assert float(best_match_between(newton, torch.cat([gd, newton[1:]]), task.y)[1]) == pytest.approx(1.0)
    p_true = torch.sigmoid((task.X * task.w.unsqueeze(1)).sum(-1))
    truth = best_match_between(newton, gd, task.y, target=p_true)
    assert bool((truth < best).all())  # without the shared label noise the algorithms are further apart


def test_condition_step_sizes_one_per_condition_number():
    task = _task(30, 7, 3, dtype=F64)
    mu = 0.01
    eta = condition_step_sizes(task.X, task.condition_number, mu)
    for kappa in (1.0, 10.0, 50.0):
        mask = task.condition_number == kappa
        values = []
        for b in mask.nonzero().flatten().tolist():
            for i in range(1, 7):
                Xi = task.X[b, :i].numpy()
                values.append(np.linalg.eigvalsh(Xi.T @ Xi)[-1] / (4 * i))
        assert torch.allclose(eta[mask], torch.tensor(1 / (np.median(values) + mu), dtype=F64), rtol=1e-6)
    high = condition_step_sizes(task.X, task.condition_number, mu, quantile=1.0)
    assert bool((high >= 1 / (0.25 + mu) - 1e-9).all()) and bool((high <= eta).all())
    assert torch.equal(condition_step_sizes(task.X, 1.0, mu), condition_step_sizes(task.X, torch.ones(30), mu))
    with pytest.raises(ValueError, match="quantile must be in"):
        condition_step_sizes(task.X, 1.0, mu, quantile=2.0)
    with pytest.raises(ValueError, match=r"condition_number must be a number or have shape \(B,\)"):
        condition_step_sizes(task.X, torch.ones(4), mu)


# --------------------------------------------------------------------------- against k


def test_tuned_gd_picks_the_best_step_of_its_grid_per_k_and_group():
    task = _task(40, 6, 3, dtype=F64)
    lrs = [0.5, 2.0, 8.0, 32.0]
    logits, best = tuned_gd_logits(task.X, task.y, 0.01, steps=3, lrs=lrs, groups=task.condition_number)
    assert logits.shape == (40, 6) and best.shape == (3, 6) and bool(best[:, 0].isnan().all())
    assert bool((logits[:, 0] == 0).all())
    for j, kappa in enumerate((1.0, 10.0, 50.0)):
        mask = task.condition_number == kappa
        for k in (1, 5):
            losses = []
            for lr in lrs:
                w = algorithms.gradient_descent_logistic(task.X[mask, :k], task.y[mask, :k], 0.01, 3, lr=lr)[-1]
                losses.append(float(F.softplus(-task.y[mask, k] * (w * task.X[mask, k]).sum(-1)).mean()))
            assert best[j, k] == lrs[int(np.argmin(losses))]
            w = algorithms.gradient_descent_logistic(task.X[mask, :k], task.y[mask, :k], 0.01, 3, lr=float(best[j, k]))[-1]
            torch.testing.assert_close(logits[mask, k], (w * task.X[mask, k]).sum(-1))


def _gd_pooled_brute_force(X, y, mu, steps, lrs, tune_from):
    """The global protocol by hand: for each step size, GD on every prefix k >= tune_from, the
    mean cross-entropy at x_k pooled over those positions; the first minimizer."""
    n = X.shape[1]
    scores = []
    for lr in lrs:
        losses = []
        for k in range(tune_from, n):
            w = algorithms.gradient_descent_logistic(X[:, :k], y[:, :k], mu, steps, lr=lr)[-1]
            losses.append(F.softplus(-y[:, k] * (w * X[:, k]).sum(-1)))
        scores.append(float(torch.stack(losses).mean()))
    return lrs[int(np.argmin(scores))]


def test_global_gd_step_is_the_grid_value_of_lowest_pooled_cross_entropy():
    """per_position=False: one step per group, the grid value minimizing the mean cross-entropy over
    k >= tune_from (default d), checked against a brute-force loop; the logits at every k use it."""
    task = _task(45, 7, 3, seed=4, dtype=F64)
    lrs = [0.5, 2.0, 8.0, 32.0, 128.0]
    mu = 0.01
    for tune_from, expected_from in ((None, 3), (1, 1), (6, 6)):
        logits, best = tuned_gd_logits(task.X, task.y, mu, steps=3, lrs=lrs, groups=task.condition_number,
                                       per_position=False, tune_from=tune_from)
        assert logits.shape == (45, 7) and best.shape == (3, 7) and bool(best[:, 0].isnan().all())
        for j, kappa in enumerate((1.0, 10.0, 50.0)):
            mask = task.condition_number == kappa
            lr = _gd_pooled_brute_force(task.X[mask], task.y[mask], mu, 3, lrs, expected_from)
            assert bool((best[j, 1:] == lr).all()), (tune_from, kappa, best[j], lr)
            for k in range(1, 7):
                w = algorithms.gradient_descent_logistic(task.X[mask, :k], task.y[mask, :k], mu, 3, lr=lr)[-1]
                torch.testing.assert_close(logits[mask, k], (w * task.X[mask, k]).sum(-1), rtol=1e-12, atol=1e-12)
    # without groups: one step for all prompts
    _, best = tuned_gd_logits(task.X, task.y, mu, lrs=lrs, per_position=False)
    assert best.shape == (1, 7) and float(best[0, 1]) == _gd_pooled_brute_force(task.X, task.y, mu, 3, lrs, 3)


@settings(max_examples=25)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 8), d=st.integers(1, 4), steps=st.integers(1, 4),
       tune_from=st.integers(1, 7), grid=st.lists(st.floats(0.05, 200.0), min_size=1, max_size=6, unique=True))
def test_per_position_tuning_is_never_worse_than_one_global_step_on_its_prompts(seed, n, d, steps, tune_from,
                                                                                grid):
    """Property: on the prompts both were tuned on, per group and at every position, GD with a step
    per position has a mean cross-entropy no higher than GD with one step (it minimizes each
    position's mean over the same grid, the global step is one of the candidates)."""
    task = _task(24, n, d, seed=seed, dtype=F64)
    tune_from = min(tune_from, n - 1)
    per, _ = tuned_gd_logits(task.X, task.y, 0.05, steps=steps, lrs=grid, groups=task.condition_number)
    one, _ = tuned_gd_logits(task.X, task.y, 0.05, steps=steps, lrs=grid, groups=task.condition_number,
                             per_position=False, tune_from=tune_from)
    for kappa in (1.0, 10.0, 50.0):
        mask = task.condition_number == kappa
        ce_per = F.softplus(-task.y[mask] * per[mask]).mean(0)
        ce_one = F.softplus(-task.y[mask] * one[mask]).mean(0)
        assert bool((ce_per <= ce_one + 1e-12).all()), (kappa, ce_per - ce_one)
    if len(grid) == 1:  # a grid of one value: the two protocols are the same GD
        torch.testing.assert_close(per, one, rtol=0, atol=0)


def test_tuned_gd_bad_arguments_name_the_argument():
    task = _task(6, 5, 2, dtype=F64)
    with pytest.raises(TypeError, match="per_position must be True or False"):
        tuned_gd_logits(task.X, task.y, 0.01, per_position="no")
    with pytest.raises(ValueError, match="tune_from must be >= 1"):
        tuned_gd_logits(task.X, task.y, 0.01, per_position=False, tune_from=0)
    with pytest.raises(ValueError, match=r"tune_from must be at most n - 1 = 4"):
        tuned_gd_logits(task.X, task.y, 0.01, per_position=False, tune_from=5)
    with pytest.raises(TypeError, match="tune_from must be an int"):
        tuned_gd_logits(task.X, task.y, 0.01, per_position=False, tune_from=2.0)
    with pytest.raises(ValueError, match="lrs must be a non-empty sequence of step sizes > 0"):
        tuned_gd_logits(task.X, task.y, 0.01, lrs=[1.0, -2.0])
    with pytest.raises(ValueError, match="lrs must be a non-empty"):
        tuned_gd_logits(task.X, task.y, 0.01, lrs=[])
    with pytest.raises(ValueError, match="lrs must have 1 dimensions"):
        tuned_gd_logits(task.X, task.y, 0.01, lrs=[[1.0, 2.0]])
    with pytest.raises(ValueError, match=r"groups must have shape \(B,\) = \(6,\)"):
        tuned_gd_logits(task.X, task.y, 0.01, groups=torch.ones(5))
    with pytest.raises(ValueError, match="at least 2 points per prompt"):
        tuned_gd_logits(task.X[:, :1], task.y[:, :1], 0.01, per_position=False)


def _posterior_predictive_by_quadrature(X, y, s, *, half_width=14.0, num=601):
    """P(y_k = +1 | first k pairs) for w ~ N(0, s²I), d = 1 or 2: the posterior's integrals as sums
    over a regular grid of [-half_width, half_width]^d (7 prior standard deviations; the integrands
    are smooth and negligible at the edges, so the sums converge fast: halving the spacing changes
    them by < 1e-11)."""
    B, n, d = X.shape
    axis = torch.linspace(-half_width, half_width, num, dtype=F64)
    W = axis[:, None] if d == 1 else torch.cartesian_prod(axis, axis)
    log_prior = -0.5 * (W * W).sum(-1) / s**2
    out = torch.empty(B, n, dtype=F64)
    for b in range(B):
        log_post = log_prior.clone()
        for k in range(n):
            z = W @ X[b, k]
            out[b, k] = (torch.softmax(log_post, 0) * torch.sigmoid(z)).sum()
            log_post += F.logsigmoid(y[b, k] * z)
    return out


@pytest.mark.parametrize("d, n", [(1, 30), (2, 20)])
@pytest.mark.parametrize("defensive", [0.1, 0.0])
def test_laplace_bayes_logits_match_quadrature(d, n, defensive):
    """The Laplace-proposal estimate (the default) against the posterior predictive by quadrature,
    in one and two dimensions, every position of five prompts: with 20,000 draws the Monte Carlo
    error is a few thousandths where the posterior is broad (few pairs) and less later; tolerance
    6e-3 at every position, 1.5e-3 on average, 3e-3 from k = 10 on."""
    task = _task(5, n, d, seed=11, dtype=F64, kappa=1)
    reference = _posterior_predictive_by_quadrature(task.X, task.y, 2.0)
    logits, ess = bayes_logits(task.X, task.y, prior_std=2.0, num_samples=20_000, defensive=defensive,
                               generator=torch.Generator().manual_seed(2), return_ess=True)
    err = (torch.sigmoid(logits) - reference).abs()
    assert float(err.max()) <= 6e-3 and float(err.mean()) <= 1.5e-3 and float(err[:, 10:].max()) <= 3e-3
    assert bool((logits[:, 0] == 0).all())  # no pairs: the prior predictive is exactly 1/2
    assert ess.shape == (5, n) and bool((ess <= 20_000 + 1e-6).all()) and bool((ess[:, 0] == 20_000).all())
    assert float(ess.min()) > 0.5 * 20_000  # the proposal fits the posterior: most draws count


def test_prior_and_laplace_samplers_agree_where_the_prior_is_reliable():
    """With a few pairs (k <= 5 in d = 5) the likelihood is flat enough for prior draws (ESS above
    5 % of them): the two estimates agree to 8e-3 (their Monte Carlo standard errors, from
    200,000 prior and 20,000 Laplace draws, are about 3e-3 together); with 25 pairs the prior
    sampler's effective sample size collapses while the Laplace proposal keeps most of its draws."""
    task = _task(24, 26, 5, seed=12, dtype=F64)
    prior, prior_ess = bayes_logits(task.X[:, :6], task.y[:, :6], proposal="prior", num_samples=200_000,
                                    generator=torch.Generator().manual_seed(0), return_ess=True)
    laplace = bayes_logits(task.X[:, :6], task.y[:, :6], num_samples=20_000,
                           generator=torch.Generator().manual_seed(1))
    assert float((torch.sigmoid(prior) - torch.sigmoid(laplace)).abs().max()) <= 8e-3
    assert float(prior_ess.min()) > 0.05 * 200_000
    _, prior_ess = bayes_logits(task.X, task.y, proposal="prior", num_samples=4096,
                                generator=torch.Generator().manual_seed(0), return_ess=True)
    _, laplace_ess = bayes_logits(task.X, task.y, num_samples=1024, generator=torch.Generator().manual_seed(0),
                                  return_ess=True)
    assert float(prior_ess[:, 25].median()) / 4096 < 0.1 < 0.5 < float(laplace_ess[:, 25].min()) / 1024


def test_bayes_logits_bad_arguments_name_the_argument():
    task = _task(4, 5, 2, dtype=F64)
    W = torch.randn(16, 2, dtype=F64)
    with pytest.raises(ValueError, match="proposal must be one of"):
        bayes_logits(task.X, task.y, proposal="posterior")
    with pytest.raises(ValueError, match="samples are draws from the prior: pass proposal='prior'"):
        bayes_logits(task.X, task.y, proposal="laplace", samples=W)
    with pytest.raises(ValueError, match=r"samples must have shape \(M, d\) = \(M, 2\)"):
        bayes_logits(task.X, task.y, samples=torch.randn(16, 3, dtype=F64))
    with pytest.raises(ValueError, match=r"defensive must be in \[0, 1\)"):
        bayes_logits(task.X, task.y, defensive=1.0)
    with pytest.raises(ValueError, match="inflation must be > 0"):
        bayes_logits(task.X, task.y, inflation=0.0)
    with pytest.raises(ValueError, match="num_samples must be >= 1"):
        bayes_logits(task.X, task.y, num_samples=0)
    with pytest.raises(ValueError, match="too few to hold both kinds of draws"):
        bayes_logits(task.X, task.y, num_samples=2, defensive=0.1)
    with pytest.raises(TypeError, match="return_ess must be True or False"):
        bayes_logits(task.X, task.y, return_ess=1)
    with pytest.raises(ValueError, match="prior_std must be > 0"):
        bayes_logits(task.X, task.y, prior_std=-1.0)
    torch.testing.assert_close(bayes_logits(task.X, task.y, samples=W),  # samples: the prior sampler
                               bayes_logits(task.X, task.y, samples=W, proposal="prior"))


def test_bayes_logits_prior_sampler_matches_quadrature_in_one_dimension():
    """d = 1: the posterior predictive ∫σ(x w) Π σ(y_i x_i w) N(w; 0, s²) dw / ∫Π σ(y_i x_i w) N(w; 0, s²) dw
    on a fine grid, against the importance-sampling estimate from prior draws."""
    task = _task(5, 6, 1, dtype=F64, kappa=1)
    s = 2.0
    est = bayes_logits(task.X, task.y, prior_std=s, proposal="prior", num_samples=400_000,
                       generator=torch.Generator().manual_seed(0))
    w = torch.linspace(-12, 12, 24_001, dtype=F64)
    prior = torch.exp(-0.5 * (w / s) ** 2)
    for b in range(5):
        loglik = torch.zeros_like(w)
        for i in range(6):
            p = (prior * torch.exp(loglik) * torch.sigmoid(task.X[b, i, 0] * w)).sum() / (prior * torch.exp(loglik)).sum()
            assert float(est[b, i]) == pytest.approx(float(torch.logit(p)), abs=0.02)
            loglik = loglik + F.logsigmoid(task.y[b, i] * task.X[b, i, 0] * w)


def test_classification_curves_newton_is_scikit_learns_fit_and_gaps_are_paired():
    from sklearn.linear_model import LogisticRegression

    task = _task(30, 9, 3, seed=2)
    model = _tiny_model()
    mu = 0.01
    curves = classification_curves(model, task, mu=mu, num_samples=512)
    assert set(curves.logits) == {"model", "newton", "gd_tuned", "gd_global", "bayes"}
    ce, acc = curves.cross_entropy(), curves.accuracy()
    assert all(v.shape == (9,) for v in ce.values()) and all(v.shape == (9,) for v in acc.values())
    assert ce["newton"][0] == pytest.approx(math.log(2)) and acc["newton"][0] == 0.5  # no context: logit 0
    for b in (0, 7):
        for k in (3, 8):
            X = task.X[b, :k].double().numpy()
            labels = task.y[b, :k].numpy()
            if len(set(labels)) < 2:
                continue
            ref = LogisticRegression(C=1 / (k * mu), fit_intercept=False, tol=1e-10, max_iter=10_000).fit(X, labels)
            expected = float(task.X[b, k].double().numpy() @ ref.coef_[0])
            assert float(curves.logits["newton"][b, k]) == pytest.approx(expected, rel=1e-6, abs=1e-8)
    mean, se = curves.gap("model", "gd_tuned")
    diff = curves.losses("model") - curves.losses("gd_tuned")
    torch.testing.assert_close(mean, diff.mean(0))
    torch.testing.assert_close(se, diff.std(0) / math.sqrt(30))
    by_kappa = curves.cross_entropy(group=10.0)
    mask = task.condition_number == 10.0
    torch.testing.assert_close(by_kappa["model"], curves.losses("model")[mask].mean(0))
    assert curves.extra["gd_lr"].shape == (3, 9)
    # the two GD protocols are tuned_gd_logits's, on the same grid; the Bayes predictor's ESS is kept
    for per_position, name, key in ((True, "gd_tuned", "gd_lr"), (False, "gd_global", "gd_global_lr")):
        logits, best = tuned_gd_logits(task.X, task.y, mu, groups=task.condition_number, per_position=per_position)
        torch.testing.assert_close(curves.logits[name], logits, rtol=0, atol=0)
        torch.testing.assert_close(curves.extra[key], best if per_position else best[:, -1], rtol=0, atol=0,
                                   equal_nan=True)
    assert curves.extra["gd_tune_from"] == 3 and curves.extra["bayes_proposal"] == "laplace"
    assert curves.extra["bayes_ess"].shape == (30, 9) and float(curves.extra["bayes_ess"].min()) > 100
    references = classification_curves(None, task, mu=mu, prior_std=None, gd_tune_from=1)
    assert set(references.logits) == {"newton", "gd_tuned", "gd_global"} and references.extra["gd_tune_from"] == 1


# --------------------------------------------------------------------------- the recipe and the shipped classifier

NAME = "gpt2_logreg_d5"


def test_the_recipe_is_giannou_et_al_setting_and_trains_a_few_steps(tmp_path):
    """One recipe, Giannou et al.'s setting (d = 5, n = 26, mu = 0.01, κ ∈ {1, 10, 50} mixed);
    it trains (a few steps of it, full size) and writes a checkpoint that loads."""
    import dataclasses

    from tfnewton.models import load_checkpoint
    from tfnewton.train import RECIPES, TrainConfig, train

    recipe = TrainConfig(**RECIPES[NAME])
    assert (recipe.task, recipe.kind, recipe.d, recipe.n_points, recipe.mu) == ("logistic_regression", "gpt2", 5, 26, 0.01)
    assert recipe.condition_number == (1.0, 10.0, 50.0) and recipe.precision == "float32"
    short = dataclasses.replace(recipe, steps=3, warmup_steps=1, eval_prompts=64)
    result = train(short, tmp_path, progress=False, final_eval=False, threads=1, eval_every=3, log_every=1)
    assert result["finished"] and all(math.isfinite(x) for x in result["history"]["loss"])
    model, meta = load_checkpoint(result["model_path"])
    assert len(model.blocks) == recipe.n_layers and meta["train_config"]["steps"] == 3


def test_shipped_classifier_loads_with_weights_only_and_gives_its_recorded_error():
    """The shipped checkpoint: a plain weights_only file under 2 MB, built by its recipe (the
    recorded command names it), and its recorded cross-entropy at k = eval_k on the recipe's
    fixed evaluation prompts is what the loaded model gives."""
    import shlex
    from dataclasses import asdict

    from tfnewton.baselines import predict
    from tfnewton.models import load_pretrained
    from tfnewton.models.pretrained import PRETRAINED_DIR
    from tfnewton.tasks import classification_metrics_by_position
    from tfnewton.train import RECIPES, TrainConfig, build_parser, config_from_args, make_eval_set

    path = PRETRAINED_DIR / f"{NAME}.pt"
    assert path.stat().st_size <= 2 * 1024**2
    payload = torch.load(path, map_location="cpu", weights_only=True)
    assert payload["format"] == "tfnewton-checkpoint" and payload["kind"] == "gpt2"
    meta = payload["metadata"]
    recipe = asdict(TrainConfig(**RECIPES[NAME]))
    assert asdict(TrainConfig(**meta["train_config"])) == recipe and meta["steps"] == recipe["steps"]
    assert meta["command"].startswith(f"python -m tfnewton train --recipe {NAME} ")
    assert asdict(config_from_args(build_parser().parse_args(shlex.split(meta["command"])[4:]))) == recipe
    model = load_pretrained(NAME)
    config = TrainConfig(**meta["train_config"])
    X, y = make_eval_set(config)
    value = classification_metrics_by_position(predict(model, X, y), y, config.d)["cross_entropy"][config.eval_k]
    recorded = meta["metrics"]["cross_entropy_at_eval_k"]
    assert float(value) == pytest.approx(recorded, abs=1e-6)
    # It learned in context: far below log 2 (no context) and below the regularized fit at k = eval_k.
    assert recorded < math.log(2) - 0.05 and recorded < meta["metrics"]["newton_cross_entropy_at_eval_k"]
