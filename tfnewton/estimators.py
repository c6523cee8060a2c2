r"""In-context estimators: scikit-learn's ``fit``/``predict`` answered by a Transformer.

``fit(X, y)`` stores the context; ``predict(X_query)`` asks a model, one prompt per query
(the whole context, then that query), in batches. The model is a construction built at
fit time for ``X``'s number of features — Iterative Newton for
:class:`InContextRegressor`, Giannou et al.'s damped Newton for
:class:`InContextClassifier` — or a trained in-context learner passed as ``model=``
(a :mod:`tfnewton.models` model, e.g. ``load_pretrained("gpt2_linreg_d5")``).

Both are scikit-learn estimators (every check of ``check_estimator`` passes), so they sit
in ``cross_val_score``, ``GridSearchCV`` and a ``Pipeline`` beside ``LinearRegression`` and
``LogisticRegression``.
Neither fits an intercept: the constructions' algorithms have none (centre ``y`` or add a
constant column).

>>> import numpy as np
>>> from sklearn.linear_model import LinearRegression
>>> rng = np.random.default_rng(0)
>>> X, w = rng.normal(size=(20, 3)), rng.normal(size=3)
>>> X_query = rng.normal(size=(4, 3))
>>> newton = InContextRegressor().fit(X, X @ w)
>>> ols = LinearRegression(fit_intercept=False).fit(X, X @ w)
>>> bool(np.abs(newton.predict(X_query) - ols.predict(X_query)).max() < 1e-10)
True
"""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_is_fitted, validate_data

from . import _validate as v
from .capture import takes_query
from .constructions import (
    LogisticNewtonTransformer,
    logistic_newton_transformer,
    newton_regression_transformer,
)
from .constructions.logistic_newton import DEFAULT_WIDTH

__all__ = ["InContextRegressor", "InContextClassifier", "auto_newton_steps", "MAX_AUTO_STEPS"]

#: Most Newton steps ``steps="auto"`` picks (a context with ``κ(XᵀX) ≳ 10⁸`` gets this many).
MAX_AUTO_STEPS = 64

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def auto_newton_steps(X: torch.Tensor) -> int:
    r"""Newton steps that bring Iterative Newton's residual to rounding on the context ``X``.

    From ``M₀ = αS`` with ``α = 1/λ_max(S)²`` (``S = XᵀX``) the residual ``I − M_k S`` has
    eigenvalues ``(1 − λ²/λ_max²)^(2^k) ≤ exp(−2^k/κ(S)²)``, at most the dtype's ``ε`` once
    ``2^k ≥ κ(S)² ln(1/ε)``; ``κ`` is taken over the nonzero singular values (on the
    null space of ``S`` the iterates stay at zero: the minimum-norm solution).

    Parameters
    ----------
    X : Tensor of shape (n, d)

    Returns
    -------
    int
        ``⌈log₂(κ(S)² ln(1/ε))⌉ + 1``, capped at :data:`MAX_AUTO_STEPS`; 0 for ``X = 0``.
    """
    v.check_tensor(X, "X", ndim=2)
    s = torch.linalg.svdvals(X.to(torch.float64))
    eps = torch.finfo(X.dtype).eps
    if not bool(s.numel()) or float(s[0]) == 0.0:
        return 0
    nonzero = s[s > s[0] * max(X.shape) * eps]
    kappa_S = float(nonzero[0] / nonzero[-1]) ** 2
    steps = math.ceil(math.log2(kappa_S**2 * math.log(1 / eps))) + 1
    return int(min(max(steps, 1), MAX_AUTO_STEPS))


# --------------------------------------------------------------------------- shared


def _resolve_dtype(dtype) -> torch.dtype:
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be 'float32', 'float64' or a floating torch.dtype, got {dtype!r}")
        return _DTYPES[dtype]
    return v.check_dtype(dtype)


def _model_device(model) -> torch.device:
    return next(iter(model.parameters())).device


class _InContextEstimator(BaseEstimator):
    """What the two estimators share: the context, the model, the batched prompts."""

    #: Tasks a trained model may have been trained on to answer this estimator's queries.
    _refused_tasks: tuple = ()
    _wanted_task = ""

    def _setup(self) -> tuple[torch.dtype, torch.device]:
        """Check the hyper-parameters every estimator shares (at fit, as scikit-learn asks)."""
        dtype = _resolve_dtype(self.dtype)
        v.check_int(self.batch_size, "batch_size", minimum=1)
        device = None if self.device is None else v.check_device(self.device)
        if self.model is not None:
            model = self.model
            if not isinstance(model, torch.nn.Module) or not hasattr(model, "d"):
                raise TypeError(
                    f"model must be a tfnewton model (a trained one from tfnewton.models, e.g. "
                    f"load_pretrained(name), or a construction), got {type(model).__name__}"
                )
            model_device = _model_device(model)
            same = device is None or (device.type == model_device.type
                                      and device.index in (None, model_device.index))  # "cuda" is "cuda:0"
            if not same:
                raise ValueError(
                    f"device={str(device)!r} but the model is on {model_device}; move the model "
                    f"(model.to({str(device)!r})) or leave device=None"
                )
            device = model_device
            task = (getattr(model, "metadata", None) or {}).get("task")
            if task in self._refused_tasks:
                raise ValueError(
                    f"model was trained on {task!r} prompts; {type(self).__name__} needs a model of "
                    f"{self._wanted_task} prompts"
                )
        return dtype, device or torch.device("cpu")

    def _check_model_fits_context(self, model, n: int, d: int) -> None:
        """The given model's ``d`` and maximum context length against the context."""
        if model.d != d:
            raise ValueError(
                f"model was built for d = {model.d} features but X has {d} features; pass a context "
                f"with {model.d} features or a model built for d = {d}"
            )
        n_points = getattr(getattr(model, "config", None), "n_points", None)
        if not takes_query(model) and n_points is not None and n + 1 > n_points:
            raise ValueError(
                f"X has n = {n} context points but model has positions for n_points = {n_points} "
                f"points: at most {n_points - 1} context points and the query; fit on a shorter "
                f"context, e.g. X[:{n_points - 1}], y[:{n_points - 1}]"
            )

    def _as_tensor(self, array: np.ndarray) -> torch.Tensor:
        # torch.tensor copies: no warning on read-only (memory-mapped) arrays
        return torch.tensor(np.asarray(array), dtype=self.dtype_, device=self.device_)

    def _prompt_answers(self, X_query: torch.Tensor, answer) -> torch.Tensor:
        """``answer(X, y, x_query)`` on prompts of ``batch_size`` queries; shape (m,)."""
        X_ctx, y_ctx = self.context_X_, self.context_y_
        n, d = X_ctx.shape
        out = []
        with torch.no_grad():
            for start in range(0, X_query.shape[0], self.batch_size):
                x_query = X_query[start : start + self.batch_size]
                b = x_query.shape[0]
                out.append(answer(X_ctx.expand(b, n, d), y_ctx.expand(b, n), x_query))
        return torch.cat(out) if out else X_query.new_zeros((0,))

    @staticmethod
    def _causal_answer(model, X, y, x_query) -> torch.Tensor:
        """A causal learner's prediction at the query, asked as point ``n + 1`` (its label unread)."""
        n = X.shape[1]
        prompt_X = torch.cat([X, x_query.unsqueeze(1)], dim=1)  # (b, n + 1, d)
        prompt_y = torch.cat([y, y.new_zeros((y.shape[0], 1))], dim=1)  # the query's label: never read
        return model(prompt_X, prompt_y)[:, n]

    def _query_tensor(self, X) -> torch.Tensor:
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return self._as_tensor(X)

    def __getstate__(self):
        state = super().__getstate__()
        if self.model is None and "model_" in state:
            state = dict(state)
            del state["model_"]  # the construction is rebuilt from the hyper-parameters on load
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        if self.model is None and "n_features_in_" in state and "model_" not in state:
            self.model_ = self._build_construction(self.n_features_in_)


# --------------------------------------------------------------------------- regression


class InContextRegressor(RegressorMixin, _InContextEstimator):
    r"""Least squares in context: each query answered by a Transformer that runs Iterative Newton.

    ``fit`` stores the context ``(X, y)`` and, unless ``model`` is given, builds
    :func:`tfnewton.constructions.newton_regression_transformer` for ``X``'s ``d``;
    ``predict`` feeds one prompt per query (the ``n`` context pairs, then the query) and
    returns the model's answer. On a noiseless context with ``n ≥ d`` the construction's
    answer is least squares' ``x_qᵀ(XᵀX)⁻¹Xᵀy`` (measured: within 1e-12 of
    ``LinearRegression(fit_intercept=False)``); with ``n < d`` or dependent columns, the
    minimum-norm solution's. No intercept is fitted.

    Parameters
    ----------
    steps : int or "auto", default="auto"
        Newton steps of the construction (it has ``steps + 2`` layers). ``"auto"`` picks,
        at fit, the steps that bring Newton's residual to rounding on this context
        (:func:`auto_newton_steps`: ``⌈log₂(κ(XᵀX)² ln(1/ε))⌉ + 1``, at most
        :data:`MAX_AUTO_STEPS`); a smaller number gives the truncated iterate ``w_steps``.
    newton_alpha : float, optional
        The construction's ``alpha`` (``M₀ = αXᵀX``); default ``1/λ_max(XᵀX)²`` of the
        context, Newton's stable start.
    model : tfnewton model, optional
        Answer with this model instead of a construction: a trained in-context learner
        (:mod:`tfnewton.models`, e.g. ``load_pretrained("gpt2_linreg_d5")``) or a regression
        construction built by the caller. Its ``d`` must equal ``X``'s number of features,
        and a trained model's context is at most ``n_points − 1`` pairs (it has positions for
        ``n_points`` points, the query one of them); a longer context is refused at fit.
        ``steps`` and ``newton_alpha`` are then unused. A trained model computes in its own
        dtype (float32) and is never modified.
    batch_size : int, default=256
        Queries (prompts) per forward pass.
    device : str or torch.device, optional
        Where the model runs; default CPU, or the given model's device.
    dtype : {"float64", "float32"} or torch.dtype, default="float64"
        Of the stored context and of the construction.

    Attributes
    ----------
    context_X_ : Tensor of shape (n, d)
    context_y_ : Tensor of shape (n,)
        The context, on ``device_`` in ``dtype_``.
    model_ : torch.nn.Module
        The model that answers (the construction built at fit, or ``model``).
    steps_ : int or None
        The construction's Newton steps (``None`` with a given ``model``).
    alpha_ : float or None
        The construction's ``α``.
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Only when ``X`` had string column names.
    dtype_, device_
        Resolved ``dtype`` and ``device``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.model_selection import cross_val_score
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(30, 4))
    >>> y = X @ rng.normal(size=4) + 0.1 * rng.normal(size=30)
    >>> scores = cross_val_score(InContextRegressor(), X, y, cv=3)
    >>> bool(scores.min() > 0.9)
    True
    """

    _refused_tasks = ("logistic_regression",)
    _wanted_task = "regression"

    def __init__(self, steps="auto", newton_alpha=None, model=None, batch_size=256, device=None, dtype="float64"):
        self.steps = steps
        self.newton_alpha = newton_alpha
        self.model = model
        self.batch_size = batch_size
        self.device = device
        self.dtype = dtype

    def fit(self, X, y):
        """Store the context and build the model that will answer the queries.

        Parameters
        ----------
        X : array-like of shape (n, d)
            Context inputs.
        y : array-like of shape (n,)
            Context targets.

        Returns
        -------
        self
        """
        X, y = validate_data(self, X, y, dtype=np.float64, y_numeric=True)
        dtype, device = self._setup()
        if self.steps != "auto":
            v.check_int(self.steps, "steps", minimum=0)
        if self.newton_alpha is not None:
            v.check_positive(self.newton_alpha, "newton_alpha")
        self.dtype_, self.device_ = dtype, device
        self.context_X_, self.context_y_ = self._as_tensor(X), self._as_tensor(y)
        n, d = X.shape
        if self.model is not None:
            self._check_model_fits_context(self.model, n, d)
            if isinstance(self.model, LogisticNewtonTransformer):
                raise TypeError("model is a logistic construction (it answers probabilities); use InContextClassifier")
            self.model_, self.steps_, self.alpha_ = self.model, None, None
            return self
        self.steps_ = auto_newton_steps(self.context_X_) if self.steps == "auto" else int(self.steps)
        if self.newton_alpha is not None:
            self.alpha_ = float(self.newton_alpha)
        else:
            top = float(torch.linalg.matrix_norm(self.context_X_.to(torch.float64), ord=2))
            self.alpha_ = 1.0 / top**4 if top > 0 else 1.0  # 1/λ_max(XᵀX)²; X = 0 answers 0 with any α
        self.model_ = self._build_construction(d)
        return self

    def _build_construction(self, d: int):
        return newton_regression_transformer(d, self.steps_, self.alpha_, dtype=self.dtype_, device=self.device_)

    def predict(self, X):
        """Each query's answer from a prompt of the whole context and that query.

        Parameters
        ----------
        X : array-like of shape (m, d)
            Queries.

        Returns
        -------
        ndarray of shape (m,)
            float64.
        """
        X_query = self._query_tensor(X)
        model = self.model_
        if takes_query(model):
            dtype = model.dtype

            def answer(Xc, yc, xq):
                return model(Xc.to(dtype), yc.to(dtype), xq.to(dtype))
        else:

            def answer(Xc, yc, xq):
                return self._causal_answer(model, Xc, yc, xq)

        return self._prompt_answers(X_query, answer).to(torch.float64).cpu().numpy()


# --------------------------------------------------------------------------- classification


class InContextClassifier(ClassifierMixin, _InContextEstimator):
    r"""Regularized logistic regression in context, answered by Giannou et al.'s damped-Newton Transformer.

    ``fit`` stores the context and, unless ``model`` is given, builds
    :func:`tfnewton.constructions.logistic_newton_transformer` for ``X``'s ``d``: linear
    attention and ReLU layers that run ``steps`` damped Newton steps on

    ``f(w) = (1/n) Σ log(1 + exp(−y_i x̃_iᵀw)) + (μ/2)‖w‖²``

    over the context, then read the query's logit ``x̃_qᵀw``. Binary only: the two classes
    of ``y`` become the labels −1 (``classes_[0]``) and +1 (``classes_[1]``). No intercept.

    **Rescaling.** The construction assumes ``‖x_i‖ ≤ 1``, so the inputs are divided by
    ``r = max_i ‖x_i‖`` of the context (``input_scale_``): ``x̃ = x/r``. ``mu`` is the
    regularization *of the rescaled problem*; in the original units the logit is
    ``xᵀ(w/r)`` and the penalty ``(μ/2)‖w‖² = (μr²/2)‖w/r‖²``, so the estimator fits
    logistic regression on ``X`` with regularization ``μr²`` — scikit-learn's
    ``LogisticRegression(C=1/(n·μ·r²), fit_intercept=False)`` on ``X``, or ``C = 1/(n·μ)``
    on ``X/r``. Scaling ``X`` by a constant therefore leaves the predictions unchanged.
    A query with ``‖x̃_q‖ > 1`` is shrunk to the unit ball (``x̃_q/s``, ``s = ‖x̃_q‖``)
    and its logit multiplied back by ``s``; the logit is linear in the query, so this is
    exact (a trained ``model`` gets the query as it is).

    Parameters
    ----------
    mu : float, default=0.1
        Regularization ``μ > 0`` of the rescaled problem (see above).
    steps : int, default=12
        Damped Newton steps ``T``; the construction has ``T(6 + inner_steps) + 2`` blocks.
        With the defaults the iterate is within rounding of the minimizer (measured).
    inner_steps : int, optional
        Newton–Schulz steps per Newton step; default
        :func:`~tfnewton.constructions.logistic_newton.default_inner_steps` (5 at
        ``μ = 0.1``, 11 at ``μ = 0.01``).
    exact_scalars : bool, default=True
        The construction's scalar maps (σ, σ', the damping factor, the products) exact
        instead of ReLU approximations of ``width`` units: then the model's answer equals
        ``damped_newton_logistic(..., inner_steps=k)`` to rounding.
    width : int, default=128
        ReLU units per scalar map when ``exact_scalars=False``.
    model : tfnewton model, optional
        Answer with this model instead: a trained in-context classifier
        (:mod:`tfnewton.models`, e.g. ``load_pretrained("gpt2_logreg_d5")``, whose output is
        the query's logit for label +1) or a :class:`~tfnewton.constructions.LogisticNewtonTransformer`
        built by the caller. Its ``d`` must match ``X``'s; a trained model's context is at
        most ``n_points − 1`` pairs (refused at fit otherwise). Inputs are rescaled as above.
    batch_size : int, default=256
        Queries (prompts) per forward pass.
    device : str or torch.device, optional
        Default CPU, or the given model's device.
    dtype : {"float64", "float32"} or torch.dtype, default="float64"

    Attributes
    ----------
    classes_ : ndarray of shape (2,)
    context_X_ : Tensor of shape (n, d)
        The rescaled context ``X/r`` (rows of norm ≤ 1).
    context_y_ : Tensor of shape (n,)
        Labels ±1.
    input_scale_ : float
        ``r = max_i ‖x_i‖`` (1 when ``X = 0``).
    model_ : torch.nn.Module
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Only when ``X`` had string column names.
    dtype_, device_

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(40, 3))
    >>> y = np.where(X @ [2.0, -1.0, 0.5] > 0, "yes", "no")
    >>> clf = InContextClassifier().fit(X, y)
    >>> clf.predict_proba(X[:2]).shape
    (2, 2)
    >>> bool((clf.predict(X) == y).mean() > 0.9)
    True
    """

    _refused_tasks = ("linear_regression", "sparse_recovery")
    _wanted_task = "logistic_regression"

    def __init__(self, mu=0.1, steps=12, inner_steps=None, exact_scalars=True, width=DEFAULT_WIDTH, model=None,
                 batch_size=256, device=None, dtype="float64"):
        self.mu = mu
        self.steps = steps
        self.inner_steps = inner_steps
        self.exact_scalars = exact_scalars
        self.width = width
        self.model = model
        self.batch_size = batch_size
        self.device = device
        self.dtype = dtype

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        return tags

    def fit(self, X, y):
        """Store the rescaled context with labels ±1 and build the model that will answer.

        Parameters
        ----------
        X : array-like of shape (n, d)
        y : array-like of shape (n,)
            Exactly two classes.

        Returns
        -------
        self
        """
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        classes = np.unique(y)
        target = type_of_target(y, input_name="y")
        if target != "binary":
            raise ValueError(
                f"Only binary classification is supported. The type of the target is {target}: y has "
                f"{classes.shape[0]} classes {list(classes)[:5]}, {type(self).__name__} needs 2"
            )
        if classes.shape[0] != 2:
            raise ValueError(
                f"{type(self).__name__} needs 2 classes in y, got 1 class ({classes[0]!r}): a context "
                f"of one class has no decision boundary"
            )
        dtype, device = self._setup()
        v.check_positive(self.mu, "mu")
        v.check_int(self.steps, "steps", minimum=0)
        if self.inner_steps is not None:
            v.check_int(self.inner_steps, "inner_steps", minimum=0)
        if not isinstance(self.exact_scalars, (bool, np.bool_)):
            raise TypeError(f"exact_scalars must be a bool, got {type(self.exact_scalars).__name__}")
        v.check_int(self.width, "width", minimum=3)
        self.classes_ = classes
        self.dtype_, self.device_ = dtype, device
        norms = np.linalg.norm(X, axis=1)
        self.input_scale_ = float(norms.max()) if norms.max() > 0 else 1.0
        self.context_X_ = self._as_tensor(X / self.input_scale_)
        self.context_y_ = self._as_tensor(np.where(y == classes[1], 1.0, -1.0))
        n, d = X.shape
        if self.model is not None:
            self._check_model_fits_context(self.model, n, d)
            if takes_query(self.model) and not isinstance(self.model, LogisticNewtonTransformer):
                raise TypeError(
                    f"model is a {type(self.model).__name__}, a regression construction; InContextClassifier takes "
                    f"a LogisticNewtonTransformer or a trained in-context classifier"
                )
            self.model_ = self.model
            return self
        self.model_ = self._build_construction(d)
        return self

    def _build_construction(self, d: int):
        return logistic_newton_transformer(
            d, self.steps, self.mu, inner_steps=self.inner_steps, width=self.width,
            exact_scalars=bool(self.exact_scalars), dtype=self.dtype_, device=self.device_,
        )

    @staticmethod
    def _construction_logit(model, X, y, x_query) -> torch.Tensor:
        """The query's logit ``x_qᵀw_T``: slot ``"z"`` before the read-out's scalar map (the last block)."""
        shrink = torch.clamp(torch.linalg.vector_norm(x_query, dim=-1), min=1.0)  # (b,)
        H = model.embed(X, y, x_query / shrink.unsqueeze(-1))
        for block in model.blocks[:-1]:
            H = block(H)
        return H[:, X.shape[1], model.layout["z"].start] * shrink

    def decision_function(self, X):
        """The logit of class ``classes_[1]`` for each query.

        Parameters
        ----------
        X : array-like of shape (m, d)
            Queries (in the original units; rescaled by ``input_scale_`` here).

        Returns
        -------
        ndarray of shape (m,)
            The construction's ``x̃_qᵀw_T`` (= ``x_qᵀ(w_T/r)``), or a trained model's output.
        """
        X_query = self._query_tensor(X) / self.input_scale_
        model = self.model_
        if isinstance(model, LogisticNewtonTransformer):
            dtype = model.dtype

            def answer(Xc, yc, xq):
                return self._construction_logit(model, Xc.to(dtype), yc.to(dtype), xq.to(dtype))
        else:

            def answer(Xc, yc, xq):
                return self._causal_answer(model, Xc, yc, xq)

        return self._prompt_answers(X_query, answer).to(torch.float64).cpu().numpy()

    def predict_proba(self, X):
        """Probabilities of the two classes, ``σ`` of :meth:`decision_function`.

        With ``exact_scalars=True`` this is the construction's own read-out
        ``σ(x̃_qᵀw_T)``; with ReLU scalar maps the read-out's ``σ̂`` (whose error is
        ``model_.scalar_maps["sigmoid"].sup_error``) is replaced by the exact ``σ``, so the
        probabilities stay in ``[0, 1]`` and agree with :meth:`decision_function`.

        Parameters
        ----------
        X : array-like of shape (m, d)

        Returns
        -------
        ndarray of shape (m, 2)
            Columns in the order of ``classes_``.
        """
        z = torch.from_numpy(self.decision_function(X))
        return torch.stack([torch.sigmoid(-z), torch.sigmoid(z)], dim=1).numpy()

    def predict_log_proba(self, X):
        """Log-probabilities of the two classes, ``log σ(∓z)`` computed stably.

        Parameters
        ----------
        X : array-like of shape (m, d)

        Returns
        -------
        ndarray of shape (m, 2)
        """
        z = torch.from_numpy(self.decision_function(X))
        return torch.stack([torch.nn.functional.logsigmoid(-z), torch.nn.functional.logsigmoid(z)], dim=1).numpy()

    def predict(self, X):
        """The more probable class of each query (``classes_[1]`` when the logit is > 0).

        Parameters
        ----------
        X : array-like of shape (m, d)

        Returns
        -------
        ndarray of shape (m,)
            Labels from ``classes_``.
        """
        positive = self.decision_function(X) > 0  # checks is-fitted before classes_ is read
        return self.classes_[positive.astype(int)]
