r"""Learned ISTA for sparse recovery: LISTA, LISTA-CP and the in-context variant, and their scores.

The problem (:func:`tfnewton.tasks.sample_sparse_recovery`): recover an ``s``-sparse
``β ∈ R^d`` from ``n`` measurements ``y = Xβ + noise``. ISTA
(:func:`tfnewton.algorithms.ista`) runs ``β⁺ = soft(β + ηXᵀ(y − Xβ), ηλ)`` with one step
size and one threshold for every iteration and every problem. *Learning to optimize*
unrolls ``K`` such iterations into a network of ``K`` layers and learns what ISTA fixes:

=========================  ===================================  =======================================
module                     layer ``k`` (``β₀ = 0``)             learned, per layer
=========================  ===================================  =======================================
:class:`LISTA`             ``soft(W₁ᵏ y + W₂ᵏ β, θ_k)``         ``W₁ᵏ (d×n)``, ``W₂ᵏ (d×d)``, ``θ_k``
:class:`LISTACP`           ``soft(β + Wₖᵀ(y − Xβ), θ_k)``       ``Wₖ (n×d)``, ``θ_k``
:class:`InContextLISTA`    ``soft(β + γ_k Xᵀ(y − Xβ), θ_k)``    ``γ_k``, ``θ_k``
=========================  ===================================  =======================================

* **LISTA** (Gregor & LeCun 2010; untied weights as in Chen et al. 2018) and **LISTA-CP**
  (Chen et al. 2018, "coupled" weights, linear convergence under conditions on ``X``) are
  trained for *one* measurement matrix ``A``: their matrices stand in for it, so on prompts
  measured with another matrix they answer for the wrong one.
* **The in-context variant** learns only one step size and one threshold per layer, as
  ALISTA (Liu et al. 2019) does once its matrix is computed from ``A``; here the matrix *is*
  each prompt's own ``X``, so one set of ``2K`` numbers serves every measurement matrix. It is
  **our reading** of the LISTA-VM algorithm of Liu, Zhou, Shen and Yang (2024), whose
  per-layer update depends on the in-context ``X``; their exact rule is not available to us.
  :func:`tfnewton.constructions.in_context_ista_transformer` writes it into a Transformer.

Each module's ``forward(X, y)`` returns every layer's estimate, shape ``(K + 1, B, d)``
(entry 0 is ``β₀ = 0``), and ``fit(sampler)`` trains it with Adam on prompts drawn from a
task sampler. Scores: :func:`recovery_error` (``‖β̂ − β‖²/‖β‖²``), :func:`prediction_error`,
:func:`fitted_rate` (the linear rate: error per layer on a log scale) and
:func:`choose_lambda` (the LASSO weight of ISTA or FISTA picked on validation prompts).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn as nn

from . import _validate as v
from . import algorithms

__all__ = [
    "UnrolledISTA",
    "LISTA",
    "LISTACP",
    "InContextLISTA",
    "oracle_least_squares",
    "recovery_error",
    "prediction_error",
    "fitted_rate",
    "choose_lambda",
]


# --------------------------------------------------------------------------- shared machinery


def _check_layers(layers) -> int:
    return v.check_int(layers, "layers", minimum=0)


def _check_matrix(matrix) -> torch.Tensor:
    """The one measurement matrix ``A`` of a fixed-matrix network: a finite (n, d) tensor."""
    v.check_tensor(matrix, "matrix", ndim=2)
    if min(matrix.shape) == 0:
        raise ValueError(f"matrix must have shape (n, d) with n, d >= 1, got {tuple(matrix.shape)}")
    return matrix


def _ista_step_size(A: torch.Tensor) -> float:
    """ISTA's step ``1/λ_max(AᵀA)`` for one matrix."""
    return 1.0 / torch.linalg.matrix_norm(A.double(), ord=2).item() ** 2


class UnrolledISTA(nn.Module):
    """Base class: ``K`` unrolled soft-thresholding layers with ``fit``, ``estimate`` and ``predict``.

    Subclasses define ``layer(k, X, y, beta, scale) -> beta⁺`` (``scale``: what
    ``_prompt_scale(X)`` returns, a per-prompt constant or ``None``) and may restrict which
    prompts they accept (``_check_prompts``). Thresholds are stored as ``log θ_k`` so that they stay
    positive and Adam's steps are relative changes whatever the scale of ``X``.

    Attributes
    ----------
    layers : int
        ``K``, the number of unrolled iterations.
    history : list of float
        The training loss after each ``fit`` step (empty before ``fit``).
    """

    layers: int
    d: int | None = None

    def __init__(self, layers: int):
        super().__init__()
        self.layers = _check_layers(layers)
        self.history: list[float] = []

    # ------------------------------------------------------------------ parameters

    @property
    def thresholds(self) -> torch.Tensor:
        """``θ_k`` of every layer, shape (K,)."""
        return self.log_thresholds.exp()

    @property
    def _dtype(self) -> torch.dtype:
        return self.log_thresholds.dtype

    @property
    def _device(self) -> torch.device:
        return self.log_thresholds.device

    def _lr_scales(self) -> dict[str, float]:
        """Per-parameter factor on Adam's learning rate (1 for parameters stored as logarithms)."""
        return {}

    # ------------------------------------------------------------------ forward

    def _check_prompts(self, X, y) -> None:
        """Shapes, finiteness, the model's dtype and device (subclasses add their own)."""
        v.check_regression_inputs(X, y)
        if self.d is not None and X.shape[-1] != self.d:
            raise ValueError(f"X must have shape (B, n, {self.d}) for this model of d = {self.d}, got {tuple(X.shape)}")
        if X.dtype != self._dtype:
            raise TypeError(
                f"X has dtype {X.dtype} but this model's parameters are {self._dtype}; "
                f"pass float tensors of the model's dtype or convert it with model.to({X.dtype})"
            )
        if X.device != self._device:
            raise ValueError(f"X is on {X.device} but this model is on {self._device}; move one of them")

    def _check_ready(self) -> None:
        """Raise if the model cannot run yet (the in-context variant before its step size is set)."""

    def _prompt_scale(self, X) -> torch.Tensor | None:
        """A per-prompt constant every layer may use (the in-context variant's ``1/λ_max(XᵀX)``)."""
        return None

    def layer(self, k: int, X: torch.Tensor, y: torch.Tensor, beta: torch.Tensor, scale=None) -> torch.Tensor:
        """Layer ``k`` (0-based): ``β_k → β_{k+1}``, shapes (B, d)."""
        raise NotImplementedError

    def forward(self, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Every layer's estimate of ``β``.

        Parameters
        ----------
        X : Tensor of shape (B, n, d)
        y : Tensor of shape (B, n)

        Returns
        -------
        Tensor of shape (K + 1, B, d)
            ``out[k]`` is the estimate after ``k`` layers; ``out[0] = 0``.
        """
        self._check_prompts(X, y)
        self._check_ready()
        beta = y.new_zeros((y.shape[0], self.d if X is None else X.shape[2]))
        scale = None if X is None else self._prompt_scale(X)
        out = [beta]
        for k in range(self.layers):
            beta = self.layer(k, X, y, beta, scale)
            out.append(beta)
        return torch.stack(out)

    def iterates(self, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Every layer's estimate without a gradient, shape (K + 1, B, d): the registry's view
        of a fitted module (:func:`tfnewton.algorithms.iterates` accepts it as an algorithm)."""
        with torch.no_grad():
            return self(X, y)

    def estimate(self, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The last layer's estimate ``β_K``, shape (B, d)."""
        return self(X, y)[-1]

    def predict(self, X: torch.Tensor, y: torch.Tensor, x_query: torch.Tensor) -> torch.Tensor:
        """``x_qᵀ β_K`` for each prompt, shape (B,).

        Parameters
        ----------
        X : Tensor of shape (B, n, d)
        y : Tensor of shape (B, n)
        x_query : Tensor of shape (B, d)
        """
        beta = self.estimate(X, y)
        v.check_tensor(x_query, "x_query", ndim=2)
        v.check_shape(x_query, "x_query", tuple(beta.shape))
        return (beta * x_query).sum(-1)

    # ------------------------------------------------------------------ training

    def _before_fit(self, X: torch.Tensor) -> None:
        """Called with the first training batch (the in-context variant sets its first step here)."""

    def fit(
        self,
        sampler: Callable,
        *,
        steps: int = 500,
        batch: int = 64,
        lr: float = 5e-2,
        clip: float | None = 1.0,
        loss: str = "all_layers",
        generator: torch.Generator | None = None,
        progress: bool = False,
    ) -> "UnrolledISTA":
        r"""Train with Adam on fresh prompts from ``sampler`` (a cosine decay of the rate to 0, clipped gradients).

        The loss is the normalized squared error ``Σ_b‖β_k − β‖² / Σ_b‖β‖²`` averaged over
        the layers ``k = 1…K`` (``loss="all_layers"``, so every layer is an estimate worth
        reading, as a per-layer error plot assumes) or at the last layer only (``"last"``).

        Parameters
        ----------
        sampler : callable
            ``sampler(batch, generator=generator)`` returns prompts with ``X (B, n, d)``,
            ``y (B, n)`` and the true ``w (B, d)``, e.g.
            ``functools.partial(tasks.sample_sparse_recovery, n=16, d=20, sparsity=3,
            noise_std=0.2, scaling="garg")``. They are cast to the model's dtype and device.
        steps : int
            Adam steps, one fresh batch each.
        batch : int
            Prompts per step.
        lr : float
            Adam's peak learning rate, decayed to 0 by a cosine over ``steps``. Thresholds and
            step sizes are learned as logarithms and matrices with a rate scaled by their
            initial size, so ``lr`` is a relative change per step whatever the scale of ``X``.
        clip : float or None
            Largest gradient norm (an unrolled network whose steps overshoot has exploding
            gradients; clipping keeps the fit stable); ``None``: no clipping.
        loss : {"all_layers", "last"}
        generator : torch.Generator, optional
            Passed to ``sampler``; default a CPU generator seeded with 0, so a fit repeats.
        progress : bool
            A tqdm bar with the loss.

        Returns
        -------
        self
        """
        if not callable(sampler):
            raise TypeError(f"sampler must be callable as sampler(batch, generator=...), got {type(sampler).__name__}")
        steps = v.check_int(steps, "steps", minimum=0)
        batch = v.check_int(batch, "batch", minimum=1)
        lr = v.check_positive(lr, "lr")
        clip = None if clip is None else v.check_positive(clip, "clip")
        if loss not in ("all_layers", "last"):
            raise ValueError(f"loss must be 'all_layers' or 'last', got {loss!r}")
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        elif not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        from tqdm.auto import tqdm

        optimizer = None
        self.train()
        bar = tqdm(range(steps if self.layers else 0), disable=not progress, desc=type(self).__name__)
        for _ in bar:
            X, y, beta = self._training_batch(sampler, batch, generator)
            if optimizer is None:  # built after the first batch, which may set the initial step
                self._before_fit(X)
                scales = self._lr_scales()
                optimizer = torch.optim.Adam(
                    [{"params": [p], "lr": lr * scales.get(name, 1.0)} for name, p in self.named_parameters()]
                )
                schedule = torch.optim.lr_scheduler.LambdaLR(
                    optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * step / steps))
                )
            estimates = self(X, y)[1:]  # (K, B, d)
            errors = ((estimates - beta) ** 2).sum(-1).sum(-1) / (beta**2).sum().clamp_min(1e-30)  # (K,)
            objective = errors.mean() if loss == "all_layers" else errors[-1]
            optimizer.zero_grad(set_to_none=True)
            objective.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(self.parameters(), clip)
            optimizer.step()
            schedule.step()
            self.history.append(objective.item())
            if progress:
                bar.set_postfix(loss=f"{self.history[-1]:.3g}")
        self.eval()
        return self

    def _training_batch(self, sampler, batch, generator):
        task = sampler(batch, generator=generator)
        for name in ("X", "y", "w"):
            if not isinstance(getattr(task, name, None), torch.Tensor):
                raise TypeError(
                    f"sampler must return prompts with tensors X, y and w (e.g. a SparseRecoveryTask), "
                    f"got {type(task).__name__} without {name!r}"
                )
        kw = dict(device=self._device, dtype=self._dtype)
        X, y, beta = task.X.to(**kw), task.y.to(**kw), task.w.to(**kw)
        self._check_prompts(X, y)
        v.check_shape(beta, "the sampler's w", (X.shape[0], X.shape[2]))
        return X, y, beta


# --------------------------------------------------------------------------- fixed-matrix networks


class _FixedMatrixISTA(UnrolledISTA):
    """Shared part of LISTA and LISTA-CP: one matrix ``A``, initialized as ISTA on it."""

    def __init__(self, matrix: torch.Tensor, layers: int, *, lam: float):
        super().__init__(layers)
        A = _check_matrix(matrix)
        self.lam = v.check_positive(lam, "lam")
        self.register_buffer("matrix", A.detach().clone())
        self.n, self.d = A.shape
        self.step_size = _ista_step_size(A)  # η = 1/λ_max(AᵀA), ISTA's step
        log_theta = math.log(self.step_size * self.lam)
        self.log_thresholds = nn.Parameter(torch.full((self.layers,), log_theta, dtype=A.dtype, device=A.device))

    def _check_prompts(self, X, y) -> None:
        v.check_tensor(X, "X", ndim=3)
        if tuple(X.shape[1:]) != (self.n, self.d):
            raise ValueError(
                f"X must have shape (B, {self.n}, {self.d}): this {type(self).__name__} was trained for one "
                f"measurement matrix of shape ({self.n}, {self.d}), got X of shape {tuple(X.shape)}"
            )
        super()._check_prompts(X, y)

    def _training_batch(self, sampler, batch, generator):
        X, y, beta = super()._training_batch(sampler, batch, generator)
        if not torch.allclose(X, self.matrix.expand_as(X), rtol=1e-5, atol=1e-6):
            raise ValueError(
                f"{type(self).__name__} trains on one measurement matrix, but the sampler drew other "
                "matrices; sample with measurement_matrix=model.matrix "
                "(tasks.sample_sparse_recovery(..., measurement_matrix=...))"
            )
        return X, y, beta


class LISTA(_FixedMatrixISTA):
    r"""LISTA (Gregor & LeCun 2010) for one measurement matrix ``A``, with untied layers.

    Layer ``k``: ``β⁺ = soft(W₁ᵏ y + W₂ᵏ β, θ_k)``, ``β₀ = 0``, with ``W₁ᵏ (d × n)``,
    ``W₂ᵏ (d × d)`` and ``θ_k`` learned for every layer (as in Chen et al. 2018's untied
    LISTA; Gregor & LeCun share them across layers). Initialized as ISTA on the LASSO
    ``(1/2)‖y − Aβ‖² + lam‖β‖₁``: ``W₁ = ηAᵀ``, ``W₂ = I − ηAᵀA``, ``θ = η·lam`` with
    ``η = 1/λ_max(AᵀA)``, so before ``fit`` it *is* ``K`` steps of ISTA on ``A``.

    The network never reads ``X``: its matrices stand in for ``A``. ``forward(X, y)`` checks
    ``X``'s shape (``(B, n, d)`` of ``A``) and otherwise ignores it, so on prompts measured
    with another matrix it answers as if they were measured with ``A`` (the failure Liu et al.
    contrast the Transformer with).

    Parameters
    ----------
    matrix : Tensor of shape (n, d)
        ``A``; its dtype and device are the model's.
    layers : int
        ``K``.
    lam : float
        LASSO weight of the ISTA initialization, ``> 0``.

    Examples
    --------
    >>> import functools, torch
    >>> from tfnewton import tasks
    >>> g = torch.Generator().manual_seed(0)
    >>> A = tasks.sample_sparse_recovery(1, 10, 20, scaling="garg", generator=g).X[0]
    >>> sampler = functools.partial(tasks.sample_sparse_recovery, n=10, d=20, sparsity=2,
    ...                             scaling="garg", measurement_matrix=A)
    >>> model = LISTA(A, layers=4, lam=0.1).fit(sampler, steps=20)
    >>> task = sampler(8, generator=g)
    >>> model(task.X, task.y).shape
    torch.Size([5, 8, 20])
    """

    def __init__(self, matrix: torch.Tensor, layers: int, *, lam: float = 0.1):
        super().__init__(matrix, layers, lam=lam)
        A, eta, K = self.matrix, self.step_size, self.layers
        eye = torch.eye(self.d, dtype=A.dtype, device=A.device)
        self.W1 = nn.Parameter((eta * A.T).expand(K, self.d, self.n).clone())  # (K, d, n)
        self.W2 = nn.Parameter((eye - eta * A.T @ A).expand(K, self.d, self.d).clone())  # (K, d, d)
        self._scales = {name: p.detach().pow(2).mean().sqrt().item() or 1.0 for name, p in (("W1", self.W1), ("W2", self.W2))}

    def _lr_scales(self):
        return dict(self._scales)

    def _check_prompts(self, X, y) -> None:
        if X is not None:
            return super()._check_prompts(X, y)
        v.check_tensor(y, "y", ndim=2)
        if y.shape[-1] != self.n or y.shape[0] == 0:
            raise ValueError(f"y must have shape (B, {self.n}) for this LISTA of n = {self.n}, got {tuple(y.shape)}")
        if y.dtype != self._dtype or y.device != self._device:
            raise TypeError(f"y must be {self._dtype} on {self._device} like this model, got {y.dtype} on {y.device}")

    def forward(self, X: torch.Tensor | None, y: torch.Tensor) -> torch.Tensor:
        """Every layer's estimate, shape (K + 1, B, d); ``X`` may be ``None`` (only ``y`` is read)."""
        return super().forward(X, y)

    def layer(self, k, X, y, beta, scale=None):
        z = y @ self.W1[k].T + beta @ self.W2[k].T  # (B, d)
        return algorithms.soft_threshold(z, self.thresholds[k])


class LISTACP(_FixedMatrixISTA):
    r"""LISTA-CP (Chen, Liu, Wang and Yin 2018): coupled weights, for one measurement matrix ``A``.

    Layer ``k``: ``β⁺ = soft(β + Wₖᵀ(y − Xβ), θ_k)``, ``β₀ = 0``, with ``Wₖ (n × d)`` and
    ``θ_k`` learned per layer; Chen et al.'s coupling ``W₂ = I − WᵀA`` is what makes the
    estimate a residual correction, the structure behind their linear-convergence result.
    Initialized as ISTA on ``A``: ``Wₖ = ηA``, ``θ_k = η·lam``, ``η = 1/λ_max(AᵀA)``.

    The residual ``y − Xβ`` uses the prompt's own ``X`` (on the training prompts ``X = A``);
    the learned ``Wₖ`` are tuned to ``A``, so on another matrix only the residual adapts.

    Parameters
    ----------
    matrix : Tensor of shape (n, d)
    layers : int
    lam : float
        LASSO weight of the ISTA initialization, ``> 0``.
    """

    def __init__(self, matrix: torch.Tensor, layers: int, *, lam: float = 0.1):
        super().__init__(matrix, layers, lam=lam)
        self.W = nn.Parameter((self.step_size * self.matrix).expand(self.layers, self.n, self.d).clone())  # (K, n, d)
        self._scale = self.W.detach().pow(2).mean().sqrt().item() or 1.0

    def _lr_scales(self):
        return {"W": self._scale}

    def layer(self, k, X, y, beta, scale=None):
        residual = y - (X @ beta.unsqueeze(-1)).squeeze(-1)  # (B, n)
        return algorithms.soft_threshold(beta + residual @ self.W[k], self.thresholds[k])


# --------------------------------------------------------------------------- the in-context variant


class InContextLISTA(UnrolledISTA):
    r"""The in-context LISTA variant: ``β⁺ = soft(β + γ_k Xᵀ(y − Xβ), θ_k)`` with each prompt's own ``X``.

    Only ``2K`` numbers are learned, a step size ``γ_k`` and a threshold ``θ_k`` per layer,
    shared by every task; the matrix is the prompt's ``X`` (ALISTA's analytic weight matrix
    with ``W = X``), so the same model runs on any measurement matrix, any ``n`` and any ``d``.
    This is **our reading** of the LISTA-VM algorithm of Liu, Zhou, Shen and Yang (2024)
    (a LISTA variant whose update depends on the in-context ``X``); their exact rule is not
    available to us. With ``γ_k = η`` and ``θ_k = η·lam`` for every ``k`` it is ISTA with a
    fixed step ``η`` (:func:`tfnewton.algorithms.ista` with ``lr=η``).

    The steps ``γ_k`` are numbers, not fractions of the prompt's scale: learned on one
    distribution of ``X``, they can overshoot ``2/λ_max(XᵀX)`` on matrices with a larger top
    eigenvalue (correlated columns) and diverge there. With ``normalize_steps=True`` each
    prompt's step is ``γ_k/λ_max(XᵀX)`` (ISTA's ``1/L`` times a learned factor), the one
    per-prompt scale that the library's constructions take as given (their embedding scales
    the context by ``1/σ_max(X)``); thresholds stay in the units of ``β``.

    Parameters
    ----------
    layers : int
        ``K``.
    step_size : float, optional
        The initial ``γ_k`` of every layer, ``> 0``. ``None``: at the start of ``fit``,
        ``1/median λ_max(XᵀX)`` over the first training batch (ISTA's step for a typical
        prompt), or ``1`` with ``normalize_steps``; a model without one cannot run before ``fit``.
    lam : float
        LASSO weight of the initialization, ``θ_k = γ_k·lam``, ``> 0`` (with
        ``normalize_steps``: ``θ_k = γ_k·lam/median λ_max(XᵀX)`` over the first training batch).
    normalize_steps : bool
        Divide ``γ_k`` by each prompt's ``λ_max(XᵀX)``.
    dtype : torch.dtype
    device : str or torch.device, optional

    Attributes
    ----------
    step_sizes : Tensor of shape (K,)
        ``γ_k`` (learned as ``log γ_k``).
    thresholds : Tensor of shape (K,)
        ``θ_k`` (learned as ``log θ_k``).

    Examples
    --------
    >>> import torch
    >>> from tfnewton import algorithms, tasks
    >>> task = tasks.sample_sparse_recovery(4, 10, 20, generator=torch.Generator().manual_seed(0),
    ...                                     dtype=torch.float64)
    >>> model = InContextLISTA(5, step_size=0.2, lam=0.05, dtype=torch.float64)
    >>> ista = algorithms.ista(task.X, task.y, 0.05, 5, lr=0.2)
    >>> torch.allclose(model(task.X, task.y), ista)
    True
    """

    def __init__(self, layers: int, *, step_size: float | None = None, lam: float = 0.1,
                 normalize_steps: bool = False, dtype: torch.dtype = torch.float32, device=None):
        super().__init__(layers)
        self.lam = v.check_positive(lam, "lam")
        if not isinstance(normalize_steps, bool):
            raise TypeError(f"normalize_steps must be True or False, got {normalize_steps!r}")
        self.normalize_steps = normalize_steps
        self.initial_step_size = None if step_size is None else v.check_positive(step_size, "step_size")
        dtype = v.check_dtype(dtype)
        device = v.check_device(device)
        self.log_step_sizes = nn.Parameter(torch.zeros(self.layers, dtype=dtype, device=device))
        self.log_thresholds = nn.Parameter(torch.zeros(self.layers, dtype=dtype, device=device))
        self.initialized = False
        if step_size is not None and not normalize_steps:
            self._initialize(step_size, step_size * self.lam)

    def _initialize(self, step_size: float, threshold: float) -> None:
        with torch.no_grad():
            self.log_step_sizes.fill_(math.log(step_size))
            self.log_thresholds.fill_(math.log(threshold))
        self.initialized = True

    @classmethod
    def from_schedule(cls, step_sizes: Sequence[float], thresholds: Sequence[float], *,
                      normalize_steps: bool = False, dtype: torch.dtype = torch.float32, device=None) -> "InContextLISTA":
        """A model with the given ``γ_k`` and ``θ_k`` (positive; equal lengths ``K``)."""
        gammas = [v.check_positive(g, "step_sizes entries") for g in step_sizes]
        thetas = [v.check_positive(t, "thresholds entries") for t in thresholds]
        if len(gammas) != len(thetas):
            raise ValueError(f"step_sizes and thresholds must have the same length, got {len(gammas)} and {len(thetas)}")
        model = cls(len(gammas), normalize_steps=normalize_steps, dtype=dtype, device=device)
        model.initialized = True
        with torch.no_grad():
            model.log_step_sizes.copy_(torch.tensor(gammas, dtype=torch.float64).log())
            model.log_thresholds.copy_(torch.tensor(thetas, dtype=torch.float64).log())
        return model

    @property
    def step_sizes(self) -> torch.Tensor:
        """``γ_k`` of every layer, shape (K,)."""
        return self.log_step_sizes.exp()

    def _check_ready(self) -> None:
        if not self.initialized:
            raise RuntimeError(
                "this InContextLISTA has no step size yet: give step_size=... or call fit first "
                "(which sets it from the first batch)"
            )

    def _before_fit(self, X):
        if not self.initialized:
            typical = 1.0 / (torch.linalg.matrix_norm(X.detach().double(), ord=2) ** 2).median().item()
            if self.normalize_steps:
                gamma = 1.0 if self.initial_step_size is None else self.initial_step_size
                self._initialize(gamma, gamma * self.lam * typical)
            else:
                self._initialize(typical, typical * self.lam)

    def _prompt_scale(self, X):
        if not self.normalize_steps:
            return None
        return 1.0 / torch.linalg.matrix_norm(X.detach(), ord=2).pow(2).unsqueeze(-1)  # 1/λ_max(XᵀX), (B, 1)

    def layer(self, k, X, y, beta, scale=None):
        residual = y - (X @ beta.unsqueeze(-1)).squeeze(-1)  # (B, n)
        gradient_step = (X.transpose(-1, -2) @ residual.unsqueeze(-1)).squeeze(-1)  # Xᵀ(y − Xβ), (B, d)
        step = self.step_sizes[k] if scale is None else self.step_sizes[k] * scale
        return algorithms.soft_threshold(beta + step * gradient_step, self.thresholds[k])


# --------------------------------------------------------------------------- scores


def _check_estimates(estimates, beta, name="estimates") -> torch.Tensor:
    v.check_tensor(beta, "beta", ndim=2)
    v.check_tensor(estimates, name, ndim=(2, 3), finite=False)
    if tuple(estimates.shape[-2:]) != tuple(beta.shape):
        raise ValueError(
            f"{name} must have shape (B, d) or (K + 1, B, d) with (B, d) = {tuple(beta.shape)}, "
            f"got {tuple(estimates.shape)}"
        )
    return estimates


def oracle_least_squares(X: torch.Tensor, y: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """Least squares on the true support, zero elsewhere: the floor no sparse method beats.

    Parameters
    ----------
    X : Tensor of shape (B, n, d)
    y : Tensor of shape (B, n)
    support : bool Tensor of shape (B, d)
        The coordinates allowed to be non-zero (a task's ``support``).

    Returns
    -------
    Tensor of shape (B, d)
    """
    X, y = v.check_regression_inputs(X, y)
    v.check_tensor(support, "support", ndim=2, floating=False)
    v.check_shape(support, "support", (X.shape[0], X.shape[2]))
    mask = support.to(device=X.device, dtype=X.dtype).unsqueeze(-2)  # (B, 1, d)
    XS = X * mask  # the columns off the support zeroed
    gram = XS.mT @ XS + torch.diag_embed(1 - mask.squeeze(-2))  # identity off the support
    return torch.linalg.solve(gram, XS.mT @ y.unsqueeze(-1)).squeeze(-1)


def recovery_error(estimates: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    r"""Normalized squared error ``Σ_b ‖β̂_b − β_b‖² / Σ_b ‖β_b‖²`` (per layer when stacked).

    The ratio of sums (the NMSE of the LISTA literature) rather than a mean of ratios, which
    a prompt with a tiny ``β`` would dominate. ``0`` is perfect recovery; ``β̂ = 0`` scores 1.

    Parameters
    ----------
    estimates : Tensor of shape (B, d) or (K + 1, B, d)
    beta : Tensor of shape (B, d)
        The true signals.

    Returns
    -------
    Tensor of shape () or (K + 1,)
    """
    estimates = _check_estimates(estimates, beta)
    return ((estimates - beta) ** 2).sum((-1, -2)) / (beta**2).sum().clamp_min(torch.finfo(beta.dtype).tiny)


def prediction_error(estimates: torch.Tensor, x_query: torch.Tensor, y_query: torch.Tensor) -> torch.Tensor:
    r"""Mean squared error of the query prediction ``(x_qᵀβ̂ − y_q)²`` over prompts (per layer when stacked).

    Against the noisy label, so its floor is the noise variance ``σ²``.

    Parameters
    ----------
    estimates : Tensor of shape (B, d) or (K + 1, B, d)
    x_query : Tensor of shape (B, d)
    y_query : Tensor of shape (B,)

    Returns
    -------
    Tensor of shape () or (K + 1,)
    """
    estimates = _check_estimates(estimates, x_query)
    v.check_tensor(y_query, "y_query", ndim=1)
    v.check_shape(y_query, "y_query", (x_query.shape[0],))
    return (((estimates * x_query).sum(-1) - y_query) ** 2).mean(-1)


def fitted_rate(errors, layers: Sequence[int] | None = None) -> float:
    r"""The linear rate ``r``: error ≈ ``C·rᵏ``, fitted by least squares on ``log error`` against ``k``.

    ``r < 1`` is geometric decay (``log r`` is the slope of the log-scale error curve); a
    method with a linear rate falls by a factor ``r`` per layer.

    Parameters
    ----------
    errors : Tensor or sequence of shape (K + 1,)
        Error after ``k = 0…K`` layers or iterations, all > 0.
    layers : sequence of int, optional
        Which ``k`` to fit (e.g. ``range(1, 9)`` before a noise floor); default all.

    Returns
    -------
    float
        ``exp(slope)``.

    Examples
    --------
    >>> round(fitted_rate([1.0, 0.5, 0.25, 0.125]), 6)
    0.5
    """
    e = torch.as_tensor(errors, dtype=torch.float64).reshape(-1)
    ks = torch.arange(e.numel()) if layers is None else torch.as_tensor(list(layers), dtype=torch.long)
    if ks.numel() < 2:
        raise ValueError(f"layers must name at least 2 layers to fit a slope, got {ks.tolist()}")
    if int(ks.min()) < 0 or int(ks.max()) >= e.numel():
        raise ValueError(f"layers must lie in [0, {e.numel() - 1}], got {ks.tolist()}")
    values = e[ks]
    if not bool((values > 0).all()) or not bool(torch.isfinite(values).all()):
        raise ValueError("errors must be finite and > 0 at the fitted layers (a log scale)")
    k = ks.to(torch.float64)
    logs = values.log()
    slope = ((k - k.mean()) * (logs - logs.mean())).sum() / ((k - k.mean()) ** 2).sum()
    return math.exp(slope.item())


_LASSO_SOLVERS = {"ista": algorithms.ista, "fista": algorithms.fista}


def choose_lambda(algorithm, X: torch.Tensor, y: torch.Tensor, beta: torch.Tensor, steps: int,
                  grid: Sequence[float]) -> float:
    r"""The LASSO weight from ``grid`` whose ``steps``-th iterate recovers ``β`` best on these prompts.

    Pass validation prompts, not the ones the method is then scored on.

    Parameters
    ----------
    algorithm : {"ista", "fista"} or callable
        A solver ``(X, y, lam, steps) -> (steps + 1, B, d)``.
    X : Tensor of shape (B, n, d)
    y : Tensor of shape (B, n)
    beta : Tensor of shape (B, d)
    steps : int
        The iteration at which the error is compared.
    grid : sequence of float
        Candidate weights, each ``> 0``.

    Returns
    -------
    float
        The candidate with the smallest :func:`recovery_error` at iteration ``steps``.
    """
    if isinstance(algorithm, str):
        if algorithm not in _LASSO_SOLVERS:
            raise ValueError(f"algorithm must be one of {sorted(_LASSO_SOLVERS)} or a callable, got {algorithm!r}")
        solver = _LASSO_SOLVERS[algorithm]
    elif callable(algorithm):
        solver = algorithm
    else:
        raise TypeError(f"algorithm must be a name or a callable, got {type(algorithm).__name__}")
    steps = v.check_int(steps, "steps", minimum=1)
    grid = [v.check_positive(lam, "lam") for lam in grid]
    if not grid:
        raise ValueError("grid must hold at least one candidate lam")
    errors = [recovery_error(solver(X, y, lam, steps)[-1], beta).item() for lam in grid]
    return grid[min(range(len(grid)), key=errors.__getitem__)]


# --------------------------------------------------------------------------- the registry
# Learned methods are registered as builders (needs_fit): ALGORITHMS["lista"].build(matrix=A,
# layers=16) gives an unfitted module; after .fit(...), pass the module itself as the algorithm.

algorithms.register_algorithm(
    "lista", LISTA, task="sparse_recovery", parameters={"matrix": algorithms.REQUIRED, "layers": algorithms.REQUIRED,
                                                        "lam": 0.1},
    needs_fit=True, description="LISTA (Gregor & LeCun 2010), trained for one measurement matrix")
algorithms.register_algorithm(
    "lista_cp", LISTACP, task="sparse_recovery", parameters={"matrix": algorithms.REQUIRED,
                                                             "layers": algorithms.REQUIRED, "lam": 0.1},
    needs_fit=True, description="LISTA-CP (Chen et al. 2018), trained for one measurement matrix")
algorithms.register_algorithm(
    "in_context_lista", InContextLISTA, task="sparse_recovery",
    parameters={"layers": algorithms.REQUIRED, "step_size": None, "lam": 0.1, "normalize_steps": False,
                "dtype": torch.float32, "device": None},
    needs_fit=True, description="the in-context LISTA variant soft(β + γ_k Xᵀ(y − Xβ), θ_k) (our reading of LISTA-VM)")
