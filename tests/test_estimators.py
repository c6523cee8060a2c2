"""tfnewton.estimators: scikit-learn's checks, least squares and logistic regression matched, trained models.

The scikit-learn checks run through ``estimator_checks_generator`` (what
``parametrize_with_checks`` uses) so that the few slow ones can be marked ``slow``. No check
is expected to fail. Two are skipped by scikit-learn itself, not by us:

* ``check_array_api_input``: runs only with ``SCIPY_ARRAY_API=1``; the estimators take NumPy
  input (torch is used inside) and do not declare array-API support.
* ``check_regressor_data_not_an_array`` / ``check_classifier_data_not_an_array``: the NumPy
  part runs; the pandas part is skipped when pandas is not installed.
"""

from __future__ import annotations

import doctest
import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.model_selection import KFold, cross_val_score, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import estimator_checks_generator

import reference
import tfnewton
from tfnewton import estimators
from tfnewton.algorithms import damped_newton_logistic
from tfnewton.estimators import InContextClassifier, InContextRegressor, auto_newton_steps
from tfnewton.models import load_pretrained

pytestmark = pytest.mark.usefixtures("one_thread")

# Small constructions keep the classifier's checks fast (3 damped steps, 3 inner steps: 29 blocks).
CHECKED = [InContextRegressor(), InContextClassifier(steps=3, inner_steps=3)]
#: Checks that fit 200 points and answer 200 prompts of 200 context points (2–7 s each here).
SLOW_CHECKS = {"check_regressors_train", "check_classifiers_train", "check_regressor_data_not_an_array"}
#: None: every check passes. A check that must fail would go here as {name: reason}.
EXPECTED_FAILED_CHECKS: dict[str, str] = {}


def _check_params():
    for estimator in CHECKED:
        for est, check in estimator_checks_generator(
            estimator, legacy=True, expected_failed_checks=EXPECTED_FAILED_CHECKS, mark="xfail"
        ):
            name = getattr(check, "func", check).__name__
            marks = [pytest.mark.slow] if name in SLOW_CHECKS else []
            yield pytest.param(est, check, id=f"{type(est).__name__}-{name}", marks=marks)


@pytest.mark.parametrize(("estimator", "check"), list(_check_params()))
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_docstring_examples_run():
    result = doctest.testmod(estimators, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 10 and result.failed == 0


def test_lazy_submodule():
    assert "estimators" in tfnewton.__all__
    assert tfnewton.estimators.InContextRegressor is InContextRegressor


# --------------------------------------------------------------------------- regression


def _noiseless(n, d, seed, m=25):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * rng.uniform(0.1, 10.0, size=d)  # columns of uneven scale
    return X, X @ rng.normal(size=d), 3 * rng.normal(size=(m, d))


@pytest.mark.parametrize("d", [1, 2, 5, 10])
@pytest.mark.parametrize("n_over_d", ["n=d", "n=d+1", "n=2d", "n=50"])
def test_regressor_is_least_squares_on_noiseless_contexts(d, n_over_d):
    """Measured: worst relative difference 1.3e-12 over d ∈ {1, 2, 5, 10}, n ∈ {d, d+1, 2d, 4d+3, 50}."""
    n = {"n=d": d, "n=d+1": d + 1, "n=2d": 2 * d, "n=50": 50}[n_over_d]
    for seed in range(2):
        X, y, X_query = _noiseless(n, d, seed)
        ours = InContextRegressor().fit(X, y).predict(X_query)
        ols = LinearRegression(fit_intercept=False).fit(X, y).predict(X_query)
        assert ours.dtype == np.float64 and ours.shape == (len(X_query),)
        np.testing.assert_allclose(ours, ols, rtol=0, atol=1e-9 * np.abs(ols).max())


def test_regressor_underdetermined_context_gives_the_minimum_norm_answer():
    X, y, X_query = _noiseless(3, 6, 0)
    ours = InContextRegressor().fit(X, y).predict(X_query)
    np.testing.assert_allclose(ours, X_query @ (np.linalg.pinv(X) @ y), rtol=0, atol=1e-9 * np.abs(ours).max())


def test_regressor_steps_give_the_truncated_newton_iterate():
    X, y, X_query = _noiseless(12, 4, 1)
    for steps in (0, 2, 5):
        est = InContextRegressor(steps=steps).fit(X, y)
        alpha = 1 / np.linalg.norm(X, 2) ** 4  # 1/λ_max(XᵀX)²
        w = reference.newton_least_squares(X, y, steps, alpha)[-1]
        assert est.steps_ == steps and len(est.model_.blocks) == steps + 2
        np.testing.assert_allclose(est.alpha_, alpha, rtol=1e-12)
        np.testing.assert_allclose(est.predict(X_query), X_query @ w, rtol=1e-10, atol=1e-12)
    # newton_alpha is the construction's α, used as given
    w = reference.newton_least_squares(X, y, 3, 1e-6)[-1]
    est = InContextRegressor(steps=3, newton_alpha=1e-6).fit(X, y)
    np.testing.assert_allclose(est.predict(X_query), X_query @ w, rtol=1e-10, atol=1e-12)


def test_auto_steps_grow_with_the_condition_number():
    rng = np.random.default_rng(0)
    U, _ = np.linalg.qr(rng.normal(size=(20, 4)))
    steps = [auto_newton_steps(torch.tensor(U * [1, 1, 1, 1 / kappa])) for kappa in (1, 10, 1000)]
    # ⌈log₂(κ(X)⁴ · ln(1/ε))⌉ + 1 with ln(1/ε) = 36.04 in float64: log₂ = 5.17, 18.46, 45.03
    assert steps == [7, 20, 47]
    assert auto_newton_steps(torch.zeros(5, 3, dtype=torch.float64)) == 0
    assert auto_newton_steps(torch.tensor(U * [1, 1, 1, 1e-12])) == estimators.MAX_AUTO_STEPS


def test_regressor_batches_and_float32():
    X, y, X_query = _noiseless(15, 3, 2, m=23)
    full = InContextRegressor().fit(X, y).predict(X_query)
    for batch_size in (1, 7):
        np.testing.assert_allclose(InContextRegressor(batch_size=batch_size).fit(X, y).predict(X_query), full,
                                   rtol=1e-12, atol=1e-12)
    est32 = InContextRegressor(dtype="float32", device="cpu").fit(X, y)
    assert est32.context_X_.dtype == torch.float32 and est32.model_.dtype == torch.float32
    p32 = est32.predict(X_query)
    assert p32.dtype == np.float64
    # float32 Newton: measured up to 7.2e-4 relative over d ∈ {2, 5, 10}, n ∈ {d, 2d, 50}
    assert np.abs(p32 - full).max() < 1e-2 * np.abs(full).max()
    zero = InContextRegressor().fit(np.zeros((4, 2)), np.zeros(4)).predict(X_query[:, :2])
    assert np.array_equal(zero, np.zeros(len(X_query)))


def test_regressor_in_cross_val_score_and_pipeline_beside_linear_regression():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(60, 4)) * [1, 10, 0.1, 3] + 5  # uncentred, uneven scales: the scaler matters
    y = (X - 5) @ rng.normal(size=4) + 0.1 * rng.normal(size=60)
    cv = KFold(4, shuffle=True, random_state=0)
    ours = cross_val_score(make_pipeline(StandardScaler(), InContextRegressor()), X, y, cv=cv)
    ols = cross_val_score(make_pipeline(StandardScaler(), LinearRegression(fit_intercept=False)), X, y, cv=cv)
    np.testing.assert_allclose(ours, ols, rtol=0, atol=1e-10)
    assert ours.min() > 0.5


# --------------------------------------------------------------------------- classification


def _logistic_context(n, d, seed, m=30):
    rng = np.random.default_rng(seed)
    X = 2 * rng.normal(size=(n, d))
    y = np.where(rng.normal(size=n) + X @ rng.normal(size=d) > 0, "pos", "neg")
    X_query = 3 * rng.normal(size=(m, d))  # many outside the context's ball
    return X, y, X_query


#: (mu, d, n, steps): 12 damped steps (the default) reach rounding at mu = 0.1; mu = 0.01 needs 16
#: (12 leave |Δp| up to 3e-9 against the exact minimizer, 14 leave 2e-12).
CLASSIFIER_CASES = [(0.1, 1, 20, 12), (0.1, 2, 4, 12), (0.1, 5, 7, 12),
                    pytest.param(0.1, 5, 60, 12, marks=pytest.mark.slow),
                    (0.01, 1, 3, 16), (0.01, 2, 20, 16),
                    pytest.param(0.01, 5, 7, 16, marks=pytest.mark.slow)]


@pytest.mark.parametrize(("mu", "d", "n", "steps"), CLASSIFIER_CASES)
def test_classifier_is_regularized_logistic_regression(mu, d, n, steps):
    """Against scikit-learn on the rescaled inputs ``X/r`` with ``C = 1/(n·mu)``.

    Measured, max |Δp| over 30 queries (mu ∈ {0.1, 0.01}, d ∈ {1, 2, 5}, n ∈ {d+2, 20, 60}, two
    seeds): lbfgs (tol=1e-10) differs by up to 7.4e-8, its newton-cholesky solver (tol=1e-12)
    by up to 1.4e-11, and the exact minimizer (80 damped Newton steps with exact solves) by
    up to 1.4e-15: the lbfgs gap is lbfgs's.
    """
    for seed in range(2):
        X, y, X_query = _logistic_context(n, d, seed)
        clf = InContextClassifier(mu=mu, steps=steps).fit(X, y)
        r = clf.input_scale_
        assert r == pytest.approx(np.linalg.norm(X, axis=1).max())
        assert (np.linalg.norm(X_query, axis=1) > r).any()  # the query shrink is exercised
        proba = clf.predict_proba(X_query)
        assert list(clf.classes_) == ["neg", "pos"] and proba.shape == (len(X_query), 2)
        np.testing.assert_allclose(proba.sum(1), 1.0, rtol=0, atol=1e-15)
        lbfgs = LogisticRegression(C=1 / (n * mu), fit_intercept=False, tol=1e-10, max_iter=10_000).fit(X / r, y)
        np.testing.assert_allclose(proba, lbfgs.predict_proba(X_query / r), rtol=0, atol=1e-6)
        # the same fit in the original units: regularization mu·r²
        raw = LogisticRegression(C=1 / (n * mu * r * r), fit_intercept=False, tol=1e-10, max_iter=10_000).fit(X, y)
        np.testing.assert_allclose(proba, raw.predict_proba(X_query), rtol=0, atol=1e-6)
        newton = LogisticRegression(C=1 / (n * mu), fit_intercept=False, tol=1e-12, solver="newton-cholesky",
                                    max_iter=1000).fit(X / r, y)
        np.testing.assert_allclose(proba, newton.predict_proba(X_query / r), rtol=0, atol=1e-10)
        Xt, yt = torch.tensor(X / r)[None], torch.tensor(np.where(y == "pos", 1.0, -1.0))[None]
        w = damped_newton_logistic(Xt, yt, mu, 60)[-1, 0].numpy()  # exact solves: the minimizer
        np.testing.assert_allclose(proba[:, 1], 1 / (1 + np.exp(-(X_query / r) @ w)), rtol=0, atol=1e-12)
        np.testing.assert_array_equal(clf.predict(X_query), newton.predict(X_query / r))


def test_classifier_decision_is_the_models_read_out():
    """The logit read before the last block is the one the model's own σ read-out turns into p."""
    X, y, X_query = _logistic_context(20, 3, 0)
    clf = InContextClassifier(mu=0.05, steps=4).fit(X, y)
    z = clf.decision_function(X_query)
    Xq = torch.tensor(X_query / clf.input_scale_)
    inside = Xq.norm(dim=1) <= 1
    n = len(X)
    p = clf.model_(clf.context_X_.expand(int(inside.sum()), n, 3), clf.context_y_.expand(int(inside.sum()), n),
                   Xq[inside])
    np.testing.assert_allclose(1 / (1 + np.exp(-z[inside.numpy()])), p.numpy(), rtol=0, atol=1e-14)
    # and it is x̃_qᵀ w_T of the algorithm the construction runs
    w = damped_newton_logistic(clf.context_X_[None], clf.context_y_[None], 0.05, 4, inner_steps=clf.model_.inner_steps)
    np.testing.assert_allclose(z, (Xq @ w[-1, 0]).numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(clf.predict_log_proba(X_query), np.log(clf.predict_proba(X_query)), rtol=1e-12)


def test_classifier_is_invariant_to_the_scale_of_x():
    X, y, X_query = _logistic_context(30, 3, 4)
    a = InContextClassifier().fit(X, y).predict_proba(X_query)
    b = InContextClassifier().fit(1000 * X, y).predict_proba(1000 * X_query)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


def test_classifier_relu_scalar_maps():
    """exact_scalars=False: the ReLU construction, close to the exact one at the default width."""
    X, y, X_query = _logistic_context(30, 2, 1)
    exact = InContextClassifier(steps=6).fit(X, y).predict_proba(X_query)
    relu = InContextClassifier(steps=6, exact_scalars=False).fit(X, y)
    assert relu.model_.mlp_hidden[1] > 0  # ReLU units, not exact maps
    proba = relu.predict_proba(X_query)
    assert np.isfinite(proba).all() and ((proba >= 0) & (proba <= 1)).all()
    # measured max |Δp| over 3 contexts: 1.3e-4 at width 32, 7.5e-6 at 128, 5.8e-7 at 512
    assert np.abs(proba - exact).max() < 1e-4


def test_classifier_pickles_and_rebuilds_its_construction():
    X, y, X_query = _logistic_context(15, 2, 2)
    clf = InContextClassifier(steps=3).fit(X, y)
    again = pickle.loads(pickle.dumps(clf))
    assert again.model_ is not clf.model_
    np.testing.assert_array_equal(again.predict_proba(X_query), clf.predict_proba(X_query))


@pytest.mark.slow  # 3-5 s on a busy 2-core machine
def test_classifier_in_cross_validate_and_pipeline_beside_logistic_regression():
    """Each fold's fitted pipeline is LogisticRegression with C = 1/(n·mu·r²) on the scaled fold."""
    rng = np.random.default_rng(5)
    X = rng.normal(size=(80, 3)) * [1, 5, 0.2] + 2
    y = (((X - 2) / [1, 5, 0.2]) @ [1.5, -1.0, 0.5] + 0.5 * rng.normal(size=80)) > 0
    cv = KFold(3, shuffle=True, random_state=0)
    ours = cross_validate(make_pipeline(StandardScaler(), InContextClassifier()), X, y, cv=cv,
                          return_estimator=True, return_indices=True)
    lr = cross_val_score(make_pipeline(StandardScaler(), LogisticRegression(fit_intercept=False)), X, y, cv=cv)
    assert ours["test_score"].mean() > 0.8 and lr.mean() > 0.8
    for pipe, train, test in zip(ours["estimator"], ours["indices"]["train"], ours["indices"]["test"]):
        clf, scaler = pipe[-1], pipe[0]
        C = 1 / (len(train) * clf.mu * clf.input_scale_**2)
        ref = LogisticRegression(C=C, fit_intercept=False, tol=1e-12, solver="newton-cholesky")
        ref.fit(scaler.transform(X[train]), y[train])
        np.testing.assert_allclose(pipe.predict_proba(X[test]), ref.predict_proba(scaler.transform(X[test])),
                                   rtol=0, atol=1e-10)


# --------------------------------------------------------------------------- trained models


@pytest.fixture(scope="module")
def linreg_model():
    return load_pretrained("gpt2_linreg_d5")


def test_trained_regressor_answers_and_refuses_another_d(linreg_model):
    rng = np.random.default_rng(0)
    X, w = rng.normal(size=(10, 5)), rng.normal(size=5)
    X_query = rng.normal(size=(64, 5))
    est = InContextRegressor(model=linreg_model, batch_size=16).fit(X, X @ w)
    assert est.model_ is linreg_model and est.steps_ is None
    pred = est.predict(X_query)
    assert pred.shape == (64,) and np.isfinite(pred).all()
    # it learned least squares: at n = 10 = 2d its mean squared error relative to the answer's is
    # 0.0032 in the median of 20 contexts (0.039 at worst)
    ols = X_query @ w
    assert np.mean((pred - ols) ** 2) < 0.1 * np.mean(ols**2)
    with pytest.raises(ValueError, match=r"model was built for d = 5 features but X has 3 features"):
        InContextRegressor(model=linreg_model).fit(X[:, :3], X[:, :3] @ w[:3])
    with pytest.raises(ValueError, match=r"n = 11 context points .* n_points = 11 .* at most 10 context points"):
        InContextRegressor(model=linreg_model).fit(rng.normal(size=(11, 5)), rng.normal(size=11))
    with pytest.raises(ValueError, match="X has 3 features, but InContextRegressor is expecting 5"):
        est.predict(X_query[:, :3])
    # the model is not changed by use, and a clone carries its own copy
    assert clone(est).model is not linreg_model
    assert next(linreg_model.parameters()).dtype == torch.float32


def test_trained_models_go_to_their_own_task():
    logreg = load_pretrained("gpt2_logreg_d5")
    rng = np.random.default_rng(1)
    X = rng.normal(size=(25, 5))
    y = X @ rng.normal(size=5) > 0
    with pytest.raises(ValueError, match="trained on 'logistic_regression' prompts; InContextRegressor needs"):
        InContextRegressor(model=logreg).fit(X, y.astype(float))
    clf = InContextClassifier(model=logreg).fit(X, y)
    proba = clf.predict_proba(rng.normal(size=(8, 5)))
    assert np.isfinite(proba).all() and proba.shape == (8, 2)
    assert (clf.predict(X) == y).mean() > 0.7  # on its own context


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("make", "fit_args", "error", "match"),
    [
        (InContextClassifier, (np.ones((6, 2)), [0, 1, 2, 0, 1, 2]), ValueError,
         "Only binary classification is supported. The type of the target is multiclass: y has 3 classes"),
        (InContextClassifier, (np.ones((4, 2)), [1, 1, 1, 1]), ValueError, "needs 2 classes in y, got 1 class"),
        (InContextClassifier, (np.ones((4, 2)), [0.5, 1.5, 2.5, 0.1]), ValueError, "Unknown label type"),
        (InContextRegressor, (np.ones(5), np.ones(5)), ValueError, "Expected 2D array, got 1D array"),
        (InContextRegressor, ([[1.0, np.nan], [0.0, 1.0]], [1.0, 2.0]), ValueError, "Input X contains NaN"),
        (InContextRegressor, (np.ones((3, 2)), [1.0, 2.0]), ValueError, "inconsistent numbers of samples"),
        (InContextRegressor, (np.ones((3, 2)), np.ones((3, 2))), ValueError, "y should be a 1d array"),
    ],
)
def test_bad_data_is_refused_with_sklearns_messages(make, fit_args, error, match):
    with pytest.raises(error, match=match):
        make().fit(*fit_args)


@pytest.mark.parametrize(
    ("estimator", "error", "match"),
    [
        (InContextRegressor(steps=-1), ValueError, "steps must be"),
        (InContextRegressor(steps="many"), TypeError, "steps must be"),
        (InContextRegressor(newton_alpha=0.0), ValueError, "newton_alpha must be"),
        (InContextRegressor(batch_size=0), ValueError, "batch_size must be"),
        (InContextRegressor(dtype="float16"), ValueError, "dtype must be 'float32', 'float64'"),
        (InContextRegressor(device="tpu"), ValueError, "device must be"),
        (InContextRegressor(model="gpt2_linreg_d5"), TypeError, "model must be a tfnewton model .* got str"),
        (InContextClassifier(mu=0), ValueError, "mu must be"),
        (InContextClassifier(steps=1.5), TypeError, "steps must be"),
        (InContextClassifier(inner_steps=-2), ValueError, "inner_steps must be"),
        (InContextClassifier(exact_scalars="yes"), TypeError, "exact_scalars must be a bool"),
        (InContextClassifier(width=2), ValueError, "width must be"),
    ],
)
def test_bad_hyperparameters_are_named_at_fit(estimator, error, match):
    X = np.random.default_rng(0).normal(size=(6, 2))
    with pytest.raises(error, match=match):
        estimator.fit(X, [0, 1, 0, 1, 1, 0])


def test_a_construction_of_the_other_kind_is_refused():
    from tfnewton.constructions import logistic_newton_transformer, newton_regression_transformer

    X = np.random.default_rng(0).normal(size=(6, 2))
    with pytest.raises(TypeError, match="use InContextClassifier"):
        InContextRegressor(model=logistic_newton_transformer(2, 1, 0.1)).fit(X, np.ones(6))
    with pytest.raises(TypeError, match="a regression construction; InContextClassifier takes"):
        InContextClassifier(model=newton_regression_transformer(2, 3)).fit(X, [0, 1] * 3)
    # a caller's own construction of the right kind answers
    ours = InContextRegressor(model=newton_regression_transformer(2, 30)).fit(X, X @ [1.0, -2.0])
    np.testing.assert_allclose(ours.predict(X), X @ [1.0, -2.0], rtol=0, atol=1e-10)


@pytest.mark.cuda
def test_estimators_on_cuda_answer_as_on_cpu():
    X, y, X_query = _noiseless(20, 4, 0)
    cpu = InContextRegressor().fit(X, y).predict(X_query)
    gpu = InContextRegressor(device="cuda").fit(X, y)
    assert gpu.context_X_.device.type == "cuda" and gpu.model_.device.type == "cuda"
    np.testing.assert_allclose(gpu.predict(X_query), cpu, rtol=0, atol=1e-9 * np.abs(cpu).max())
    X, y, X_query = _logistic_context(20, 3, 0)
    cpu = InContextClassifier(steps=6).fit(X, y).predict_proba(X_query)
    gpu = InContextClassifier(steps=6, device="cuda").fit(X, y).predict_proba(X_query)
    np.testing.assert_allclose(gpu, cpu, rtol=0, atol=1e-12)
