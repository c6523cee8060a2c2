r"""The ridge probe: closed-form ridge regression, one probe per layer, scored on held-out problems.

A *probe* asks whether a quantity is linearly readable from a hidden state: fit a ridge
regression from the features of some problems to the quantity, then score it — always on
problems it never saw — with :math:`R^2`. :class:`RidgeProbe` does this for every layer and
every target column at once: features are standardized, the per-sample penalty ``λ`` of
:math:`\frac1N\lVert Y - ZW\rVert^2 + \lambda\lVert W\rVert^2` is chosen per column on a
validation split, and the probe is refit on every fit problem. The solve is one eigen-
decomposition of the Gram matrix ``ZᵀZ`` per layer (``torch.linalg.eigh``, float64), shared by
every target column and every candidate penalty.

:func:`split_indices` is the one random split of problems that every caller uses — the held-out
test set of :func:`tfnewton.probes.probe_iterates`, :func:`tfnewton.metrics.layer_readouts` and
:func:`tfnewton.compare`, and the probe's validation set.
"""

from __future__ import annotations

import math

import torch

from . import _validate as v

__all__ = [
    "DEFAULT_PENALTIES",
    "r2_score",
    "split_indices",
    "check_enough_problems",
    "RidgeProbe",
    "LinearProbe",
    "fit_linear_probe",
]

#: Per-sample ridge penalties λ tried on the validation split (the probe minimizes
#: (1/N)‖Y − ZW‖² + λ‖W‖² on standardized features Z, so λ is scale-free).
DEFAULT_PENALTIES = (1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)


def r2_score(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Coefficient of determination per column: ``1 − SSE/SST`` (scikit-learn's ``r2_score``).

    Parameters
    ----------
    pred, target : Tensor of shape (..., N, K)
        ``N`` problems (SST is taken around ``target``'s own mean over them); leading axes
        broadcast.

    Returns
    -------
    Tensor of shape (..., K)
        ``1`` is perfect, ``0`` is as good as predicting the mean, negative is worse; a
        constant target column gives ``nan``.
    """
    sse = ((pred - target) ** 2).sum(-2)
    sst = ((target - target.mean(-2, keepdim=True)) ** 2).sum(-2)
    return torch.where(sst > 0, 1 - sse / sst.clamp_min(torch.finfo(sst.dtype).tiny), torch.nan)


def _check_fraction(value, name: str) -> float:
    value = v.check_positive(value, name)
    if not value < 1:
        raise ValueError(f"{name} must be in (0, 1), got {value}")
    return value


def split_indices(num: int, fraction: float, *, generator: torch.Generator | None = None,
                  name: str = "fraction") -> tuple[torch.Tensor, torch.Tensor]:
    """Hold out ``round(fraction · num)`` random problems (at least one): ``(held_out, rest)``.

    Both are index tensors (on the CPU) from one ``torch.randperm(num, generator=generator)``:
    the first ``count`` entries are held out, the others kept.

    Parameters
    ----------
    num : int
        Number of problems.
    fraction : float
        In ``(0, 1)``.
    generator : torch.Generator, optional
        Seeds the draw (the global RNG when ``None``).
    name : str
        What the caller calls ``fraction`` (for the error message).

    Returns
    -------
    held_out, rest : LongTensor

    Raises
    ------
    ValueError
        ``fraction`` outside ``(0, 1)``; nothing would be left after holding out.

    Examples
    --------
    >>> import torch
    >>> from tfnewton.ridge import split_indices
    >>> test, fit = split_indices(10, 0.3, generator=torch.Generator().manual_seed(0))
    >>> len(test), len(fit), sorted(test.tolist() + fit.tolist()) == list(range(10))
    (3, 7, True)
    """
    num = v.check_int(num, "num", minimum=1)
    fraction = _check_fraction(fraction, name)
    count = max(1, int(round(fraction * num)))
    if count >= num:
        raise ValueError(f"cannot hold out {count} of {num} problems ({name} = {fraction}); use more problems")
    order = torch.randperm(num, generator=generator, device="cpu")
    return order[:count], order[count:]


def check_enough_problems(num_train: int, num_features: int, what: str = "", *, share: float | None = None) -> None:
    """A probe needs more problems to fit on than it has features, or it interpolates anything.

    Parameters
    ----------
    num_train : int
        Problems the probe is fit on (after the held-out and validation splits).
    num_features : int
    what : str
        Appended to "too few probe problems" (e.g. ``" for position='all'"``).
    share : float, optional
        Fraction of the given problems that end up in the fit set, so the message can say how
        many problems to ask for.

    Raises
    ------
    ValueError
        ``num_train <= num_features``.
    """
    if num_train > num_features:
        return
    advice = f"more than {num_features} fit problems"
    if share:
        advice = f"at least {math.ceil((num_features + 1) / share)} problems in the task"
    raise ValueError(
        f"too few probe problems{what}: the probe would be fit on {num_train} problems (after "
        f"the held-out and validation splits) but the features have dimension {num_features}; a "
        f"linear probe needs more problems than features or it can fit anything. Use {advice}, "
        "or fewer features (position='query' rather than 'all')"
    )


def _standardize(features: torch.Tensor):
    """Column means and scales over the problem axis of ``(..., N, P)`` (scale 1 for constant columns)."""
    mean = features.mean(-2, keepdim=True)
    scale = features.std(-2, keepdim=True)
    scale = torch.where(scale > 1e-12 * (1 + mean.abs()), scale, torch.ones_like(scale))
    return mean, scale


def _eig_gram(Z):
    """Eigen-decomposition of the Gram matrix ``ZᵀZ = V diag(e) Vᵀ`` of ``Z (L, N, P)``.

    Ridge needs only ``ZᵀZ`` (P × P, P ≤ N here): one ``eigh`` per layer instead of an SVD of
    the tall ``Z``, and it serves every target column and every penalty.
    """
    e, V = torch.linalg.eigh(Z.mT @ Z)  # (L, P), (L, P, P)
    return e.clamp_min(0), V


def _fit_ridge(features, targets, penalties, val_mask):
    """Ridge probes for every layer and every target column, penalty chosen per column.

    The probe is ``W = (ZᵀZ + NλI)⁻¹ ZᵀY`` on standardized features ``Z``, i.e.
    ``V diag(1 / (e + Nλ)) Vᵀ ZᵀY``: with the eigen-decomposition of ``ZᵀZ`` in hand each
    penalty costs two small matrix products.

    Parameters
    ----------
    features : (L, N, P) float64
    targets : (N, K) float64 (shared by all layers)
    penalties : (A,) candidate per-sample penalties
    val_mask : (N,) bool, the validation problems

    Returns
    -------
    mean, scale : (L, 1, P); coef : (L, P, K); y_mean : (K,); chosen : (L, K)
    """
    train = ~val_mask
    Ftr, Fva = features[:, train], features[:, val_mask]
    Ytr, Yva = targets[train], targets[val_mask]
    # 1. Pick λ per (layer, column) by validation error of the probe fit on the rest.
    mean, scale = _standardize(Ftr)
    y_mean = Ytr.mean(0)
    Z, Zva = (Ftr - mean) / scale, (Fva - mean) / scale
    e, V = _eig_gram(Z)
    VtZtY = V.mT @ (Z.mT @ (Ytr - y_mean))  # (L, P, K)
    ZvaV = Zva @ V  # (L, Nva, P): validation features in the eigenbasis
    val_error = []
    for lam in penalties:  # one (L, Nva, P) @ (L, P, K) product per candidate
        pred = ZvaV @ (VtZtY / (e + Z.shape[-2] * lam).unsqueeze(-1)) + y_mean
        val_error.append(((pred - Yva) ** 2).mean(-2))  # (L, K)
    chosen = penalties[torch.stack(val_error).argmin(0)]  # (L, K)
    # 2. Refit on every fit problem with the chosen penalties.
    mean, scale = _standardize(features)
    y_mean = targets.mean(0)
    Z = (features - mean) / scale
    e, V = _eig_gram(Z)
    VtZtY = V.mT @ (Z.mT @ (targets - y_mean))  # (L, P, K)
    coef = V @ (VtZtY / (e.unsqueeze(-1) + Z.shape[-2] * chosen.unsqueeze(-2)))  # (L, P, K)
    return mean, scale, coef, y_mean, chosen


def _check_penalties(penalties) -> torch.Tensor:
    if penalties is None:
        penalties = DEFAULT_PENALTIES
    penalties = torch.as_tensor(penalties, dtype=torch.float64).reshape(-1)
    if penalties.numel() == 0 or bool((penalties < 0).any()) or not bool(torch.isfinite(penalties).all()):
        raise ValueError(f"penalties must be finite and >= 0, got {penalties.tolist()}")
    return penalties


class RidgeProbe:
    """Ridge probes from features to targets — one per layer — their penalty chosen on a validation split.

    ``predict(F) = ((F − mean) / scale) @ coef + intercept``: the features standardized with the
    fit problems' mean and standard deviation, then a linear map. Fit on features of shape
    ``(N, P)`` (one probe) or ``(L, N, P)`` (one probe per layer, every layer against the same
    targets, in one batched solve); the fitted attributes then have that leading ``L`` axis or
    not.

    Parameters
    ----------
    penalties : sequence of float, optional
        Candidate per-sample penalties ``λ``; default :data:`DEFAULT_PENALTIES` (``1e-8 … 10``
        in decades).
    val_fraction : float
        Share of the fit problems held out to choose ``λ`` (when :meth:`fit` is not given a
        validation mask).

    Attributes
    ----------
    mean, scale : Tensor of shape ([L,] P)
        Standardization of the features.
    coef : Tensor of shape ([L,] P, K)
    intercept : Tensor of shape ([L,] K)
    penalty : Tensor of shape ([L,] K)
        The penalty chosen for each target column (and layer).
    squeeze : bool
        The targets were one-dimensional: :meth:`predict` returns ``([L,] N)``.

    Examples
    --------
    >>> import torch
    >>> from tfnewton.ridge import RidgeProbe
    >>> g = torch.Generator().manual_seed(0)
    >>> F = torch.randn(3, 500, 8, generator=g, dtype=torch.float64)  # 3 layers
    >>> t = F[1] @ torch.arange(8.0, dtype=torch.float64) + 1  # what layer 1 holds
    >>> probe = RidgeProbe().fit(F[:, :400], t[:400], generator=g)
    >>> probe.score(F[:, 400:], t[400:]) > 0.999
    tensor([False,  True, False])
    """

    def __init__(self, penalties=None, *, val_fraction: float = 0.2):
        self.penalties = _check_penalties(penalties)
        self.val_fraction = _check_fraction(val_fraction, "val_fraction")
        self.mean = self.scale = self.coef = self.intercept = self.penalty = None
        self.squeeze = False

    def __repr__(self) -> str:
        if self.coef is None:
            return "RidgeProbe(not fitted)"
        return f"RidgeProbe(coef of shape {tuple(self.coef.shape)})"

    def validation_split(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """The validation mask :meth:`fit` draws for ``num`` problems: bool ``(num,)``, CPU."""
        held_out, _ = split_indices(num, self.val_fraction, generator=generator, name="val_fraction")
        mask = torch.zeros(num, dtype=torch.bool)
        mask[held_out] = True
        return mask

    def fit(self, features: torch.Tensor, targets: torch.Tensor, *, validation: torch.Tensor | None = None,
            generator: torch.Generator | None = None) -> "RidgeProbe":
        """Choose each column's penalty on the validation problems, then refit on all of them.

        Parameters
        ----------
        features : Tensor of shape (N, P) or (L, N, P)
            One row per problem (e.g. a layer's hidden state at the query token), per layer.
        targets : Tensor of shape (N,) or (N, K)
            Shared by every layer.
        validation : bool Tensor of shape (N,), optional
            The problems that choose the penalty; default :meth:`validation_split`.
        generator : torch.Generator, optional
            Seeds the default validation split.

        Returns
        -------
        RidgeProbe
            ``self``, fitted (float64, on the features' device).

        Raises
        ------
        ValueError
            Fewer fit problems (after the validation split) than features: a probe with as
            many parameters as problems interpolates any target, so its R² would mean nothing.
        """
        v.check_tensor(features, "features", ndim=(2, 3))
        v.check_tensor(targets, "targets", ndim=(1, 2))
        N, P = features.shape[-2:]
        if targets.shape[0] != N:
            raise ValueError(
                f"targets must have one row per problem like features ({N}), got shape {tuple(targets.shape)}"
            )
        if validation is None:
            validation = self.validation_split(N, generator)
        elif validation.dtype != torch.bool or tuple(validation.shape) != (N,):
            raise ValueError(f"validation must be a bool mask of shape ({N},), got {validation.dtype} {tuple(validation.shape)}")
        validation = validation.to(features.device)
        check_enough_problems(int((~validation).sum()), P)
        batched = features.ndim == 3
        F = features.double() if batched else features.double()[None]
        Y = targets.reshape(N, -1).to(device=features.device, dtype=torch.float64)
        mean, scale, coef, y_mean, chosen = _fit_ridge(F, Y, self.penalties.to(features.device), validation)
        pick = (lambda t: t) if batched else (lambda t: t[0])
        self.mean, self.scale = pick(mean[:, 0]), pick(scale[:, 0])
        self.coef, self.penalty = pick(coef), pick(chosen)
        self.intercept = pick(y_mean.expand(F.shape[0], -1))
        self.squeeze = targets.ndim == 1
        return self

    def _check_fitted(self, features) -> None:
        if self.coef is None:
            raise RuntimeError("this RidgeProbe is not fitted yet: call fit(features, targets) first")
        v.check_tensor(features, "features", ndim=self.coef.ndim)
        lead, P = tuple(self.coef.shape[:-2]), self.coef.shape[-2]
        if tuple(features.shape[:-2]) != lead or features.shape[-1] != P:
            expected = ", ".join([str(s) for s in lead] + ["N", str(P)])
            raise ValueError(
                f"features must have shape ({expected}) like those the probe was fit on, got "
                f"{tuple(features.shape)}"
            )

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        """Probe output for features ``([L,] N, P)``: ``([L,] N, K)``, or ``([L,] N)`` for a 1-D target.

        Computed in float64, returned in the features' dtype.
        """
        self._check_fitted(features)
        F = features.to(self.coef.dtype)
        out = ((F - self.mean.unsqueeze(-2)) / self.scale.unsqueeze(-2)) @ self.coef + self.intercept.unsqueeze(-2)
        out = out.to(features.dtype)
        return out[..., 0] if self.squeeze else out

    def score(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Held-out R² of each target column: ``([L,] K)``, or ``([L,])`` for a 1-D target."""
        pred = self.predict(features)
        targets = targets.to(pred.dtype)
        if self.squeeze:
            return r2_score(pred.unsqueeze(-1), targets.reshape(-1, 1))[..., 0]
        return r2_score(pred, targets)


#: The one-layer probe of batch 1: :class:`RidgeProbe` fit on features of shape ``(N, P)``.
LinearProbe = RidgeProbe


def fit_linear_probe(
    features: torch.Tensor,
    targets: torch.Tensor,
    *,
    penalties=None,
    val_fraction: float = 0.2,
    generator: torch.Generator | None = None,
) -> RidgeProbe:
    r"""Fit a ridge-regression probe, its penalty chosen on a validation split.

    ``RidgeProbe(penalties, val_fraction=val_fraction).fit(features, targets, generator=generator)``:
    features are standardized (mean 0, variance 1 per column, over the fit problems); for each
    target column the per-sample penalty ``λ`` of
    :math:`\frac1N\lVert Y - ZW\rVert^2 + \lambda\lVert W\rVert^2` that predicts a held-out
    validation split best is kept, and the probe is then refit on all the problems given.
    Solved in closed form (an eigen-decomposition of the Gram matrix, in float64). Score it
    with :meth:`RidgeProbe.score` on problems it never saw.

    Parameters
    ----------
    features : Tensor of shape (N, P) or (L, N, P)
        One row per problem (e.g. a layer's hidden state at the query token).
    targets : Tensor of shape (N,) or (N, K)
    penalties : sequence of float, optional
        Candidate ``λ``; default ``1e-8 … 10`` in decades.
    val_fraction : float
        Share of the problems held out to choose ``λ``.
    generator : torch.Generator, optional
        Seeds the validation split.

    Returns
    -------
    RidgeProbe

    Raises
    ------
    ValueError
        Fewer fit problems (after the validation split) than features.

    Examples
    --------
    >>> import torch
    >>> from tfnewton.ridge import fit_linear_probe
    >>> g = torch.Generator().manual_seed(0)
    >>> F = torch.randn(500, 8, generator=g, dtype=torch.float64)
    >>> t = F @ torch.arange(8.0, dtype=torch.float64) + 1
    >>> probe = fit_linear_probe(F[:400], t[:400], generator=g)
    >>> float(probe.score(F[400:], t[400:])) > 0.999
    True
    """
    return RidgeProbe(penalties, val_fraction=val_fraction).fit(features, targets, generator=generator)
