r"""Look inside a model: capture its residual stream and read algorithms out of it with linear probes.

A *probe* asks whether a quantity is linearly readable from a layer's hidden state: fit a
ridge regression from the hidden state of some prompts to the quantity, then score it —
always on prompts the probe never saw — with :math:`R^2`. Here the quantities are the iterates
of a reference algorithm (Iterative Newton, gradient descent, …) run on each prompt's own
context: the weight vector ``w_k`` after ``k`` steps and its prediction ``x_qᵀw_k`` at the
query. If layer ℓ holds ``x_qᵀw_k`` and not ``x_qᵀw_{k+1}``, the model has, in that sense,
done ``k`` steps by layer ℓ (Fu et al. 2024; the probing habit is Akyürek et al. 2023's).

Reading order
-------------
1. Capture: :func:`run_with_cache` and :func:`hidden_states` hook ``model.blocks`` (the hook
   protocol every model of the library follows) and return an :class:`ActivationCache`
   keyed by readable names (``"embed"``, ``"blocks.3.resid_post"``), TransformerLens-style.
2. The probe: :func:`fit_linear_probe` — closed-form ridge on standardized features, the
   penalty chosen on a validation split — returning a :class:`LinearProbe`. Inside, one
   batched SVD fits the probes of every layer and every target at once.
3. Targets: :func:`iterates` names the algorithms of :mod:`tfnewton.algorithms` (nothing is
   re-implemented here) and :func:`prefix_predictions` runs one on every prefix of a prompt.
4. :func:`probe_iterates` puts it together into a :class:`ProbeTable` of held-out R² of shape
   ``(layers, steps)``, with its controls: the same probes on a randomly initialised model of
   the same shape (:func:`random_init_like`) and on shuffled targets.

Layer ``0`` is the embedding (the input of ``blocks[0]``); layer ``ℓ ≥ 1`` is the output of
``blocks[ℓ − 1]``.
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import torch
import torch.nn as nn

from . import _validate as v
from . import algorithms

__all__ = [
    "ActivationCache",
    "run_with_cache",
    "hidden_states",
    "query_position",
    "LinearProbe",
    "fit_linear_probe",
    "r2_score",
    "ALGORITHMS",
    "iterates",
    "prefix_predictions",
    "random_init_like",
    "ProbeTable",
    "probe_iterates",
]

# Per-sample ridge penalties λ tried on the validation split: the probe minimizes
# (1/N)‖Y − ZW‖² + λ‖W‖² on standardized features Z, so λ is scale-free.
DEFAULT_PENALTIES = (1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)


# =========================================================================== 1. capture


def _blocks(model) -> nn.ModuleList:
    """``model.blocks``, or an error that says what the hook protocol asks for."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.ModuleList) or len(blocks) == 0:
        got = "no attribute 'blocks'" if blocks is None else f"blocks of type {type(blocks).__name__}"
        if isinstance(blocks, nn.ModuleList):
            got = "an empty 'blocks'"
        raise TypeError(
            f"model must expose its layers as model.blocks, a non-empty torch.nn.ModuleList whose "
            f"blocks map the residual stream (B, T, D) -> (B, T, D) (the hook protocol of "
            f"tfnewton's models and constructions); {type(model).__name__} has {got}"
        )
    return blocks


def _answers_query(model) -> bool:
    """True for the constructions' ``forward(X, y, x_query)``; False for ``forward(X, y)``."""
    try:
        params = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return False
    positional = [
        p for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    return len(positional) >= 3 or any(p.name == "x_query" for p in params)


def _model_d(model) -> int | None:
    """The input dimension a model was built for, when it says so."""
    for owner in (model, getattr(model, "config", None)):
        d = getattr(owner, "d", None)
        if isinstance(d, int) and not isinstance(d, bool):
            return d
    return None


def _model_device_dtype(model, like: torch.Tensor) -> tuple[torch.device, torch.dtype]:
    """Where the model computes and in which dtype (a parameter's, else a buffer's, else ``like``'s)."""
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.is_floating_point():
            return tensor.device, tensor.dtype
    return like.device, like.dtype


def _check_prompt(model, X, y, x_query) -> None:
    v.check_regression_inputs(X, y)
    d = _model_d(model)
    if d is not None and X.shape[-1] != d:
        raise ValueError(
            f"the prompts have d = {X.shape[-1]} (X of shape {tuple(X.shape)}) but "
            f"{type(model).__name__} was built for d = {d}; sample the task with d = {d}"
        )
    if x_query is not None:
        v.check_tensor(x_query, "x_query", ndim=2)
        v.check_shape(x_query, "x_query", (X.shape[0], X.shape[2]))


def _forward(model, X, y, x_query):
    """One forward pass under the model's own calling convention."""
    if _answers_query(model):
        if x_query is None:
            raise ValueError(
                f"{type(model).__name__} answers a query (forward(X, y, x_query)): pass x_query "
                "of shape (B, d)"
            )
        return model(X, y, x_query)
    if x_query is not None:
        # A trained model predicts y_i at x_i's token from the pairs before it; the query is
        # one more x with a placeholder label that, by causality, no prediction reads.
        X = torch.cat([X, x_query.unsqueeze(1)], dim=1)
        y = torch.cat([y, y.new_zeros(y.shape[0], 1)], dim=1)
    return model(X, y)


def _layer_names(num_blocks: int) -> list[str]:
    return ["embed"] + [f"blocks.{i}.resid_post" for i in range(num_blocks)]


def _capture(model, X, y, x_query=None, *, positions=None, batch_size=None):
    """Run the model and keep the residual stream after the embedding and every block.

    Returns ``(output, states)`` with ``states`` of shape ``(L+1, B, T', D)``: ``T' = T``, or
    ``len(positions)`` when only those token positions are kept (memory: a probe at the
    query needs one token, not all ``T``). ``batch_size`` splits the prompts into chunks.
    Hooks are removed whatever happens.
    """
    blocks = _blocks(model)
    if y is None:  # a model of one input, e.g. newton_schulz_transformer's forward(A)
        v.check_tensor(X, "X")
        if X.ndim == 0:
            raise ValueError("X must have a batch axis first, got a scalar")
        if x_query is not None:
            raise ValueError("x_query needs prompts (X, y); pass y as well")
    else:
        _check_prompt(model, X, y, x_query)
    device, dtype = _model_device_dtype(model, X)
    X = X.to(device=device, dtype=dtype)
    y = None if y is None else y.to(device=device, dtype=dtype)
    if x_query is not None:
        x_query = x_query.to(device=device, dtype=dtype)
    B = X.shape[0]
    chunk = B if batch_size is None else v.check_int(batch_size, "batch_size", minimum=1)

    captured: list[torch.Tensor | None] = [None] * (len(blocks) + 1)

    def store(index: int, tensor) -> None:
        if isinstance(tensor, tuple):  # a block that returns (hidden, extra)
            tensor = tensor[0]
        if not isinstance(tensor, torch.Tensor) or tensor.ndim != 3:
            raise TypeError(
                f"layer {_layer_names(len(blocks))[index]!r} produced {type(tensor).__name__} of "
                f"shape {getattr(tensor, 'shape', None)}; the hook protocol needs blocks that map "
                "(B, T, D) -> (B, T, D)"
            )
        tensor = tensor.detach()
        captured[index] = tensor if positions is None else tensor[:, positions]

    # Layer 0 is the input of the first block; layer i + 1 the output of block i.
    handles = [blocks[0].register_forward_pre_hook(lambda module, args: store(0, args[0]))]
    for i, block in enumerate(blocks):
        handles.append(block.register_forward_hook(lambda module, args, out, i=i: store(i + 1, out)))
    was_training = model.training
    outputs, chunks = [], []
    try:
        model.eval()
        with torch.no_grad():
            for start in range(0, B, chunk):
                part = slice(start, start + chunk)
                if y is None:
                    outputs.append(model(X[part]))
                else:
                    q = None if x_query is None else x_query[part]
                    outputs.append(_forward(model, X[part], y[part], q))
                if any(c is None for c in captured):
                    raise RuntimeError("a block of model.blocks was not called during forward")
                shapes = {tuple(c.shape[2:]) for c in captured}
                if len(shapes) != 1:
                    raise ValueError(
                        "every layer's hidden state must have the same shape to be stacked, got "
                        f"{[tuple(c.shape) for c in captured]}"
                    )
                chunks.append(torch.stack(captured))  # (L+1, b, T', D)
                captured[:] = [None] * len(captured)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    out = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=0)
    states = chunks[0] if len(chunks) == 1 else torch.cat(chunks, dim=1)
    return out, states


class ActivationCache(Mapping):
    """The residual stream of one forward pass, keyed by layer name.

    Keys, in order: ``"embed"`` (the input of ``blocks[0]``; also reachable as
    ``"blocks.0.resid_pre"``), then ``"blocks.i.resid_post"`` for each block. An integer ``ℓ``
    indexes the same list (``cache[0]`` is the embedding, ``cache[ℓ]`` the output of
    ``blocks[ℓ − 1]``). Each value has shape ``(B, T, D)``.

    Examples
    --------
    >>> import torch
    >>> from tfnewton.models.gpt2 import GPT2Config, GPT2Regressor
    >>> from tfnewton.probes import run_with_cache
    >>> model = GPT2Regressor(GPT2Config(d=3, n_points=6, n_layers=2, width=16, heads=2))
    >>> out, cache = run_with_cache(model, torch.randn(4, 6, 3), torch.randn(4, 6))
    >>> list(cache), tuple(cache["blocks.1.resid_post"].shape)
    (['embed', 'blocks.0.resid_post', 'blocks.1.resid_post'], (4, 12, 16))
    """

    def __init__(self, states: torch.Tensor):
        self._states = states
        self._names = _layer_names(states.shape[0] - 1)

    def _index(self, key) -> int:
        if isinstance(key, int) and not isinstance(key, bool):
            if not -len(self._names) <= key < len(self._names):
                raise IndexError(f"layer index must be in [0, {len(self._names) - 1}], got {key}")
            return key % len(self._names)
        if key == "blocks.0.resid_pre":
            return 0
        if key in self._names:
            return self._names.index(key)
        raise KeyError(f"no layer named {key!r}; the cache holds {self._names}")

    def __getitem__(self, key) -> torch.Tensor:
        return self._states[self._index(key)]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        return f"ActivationCache({len(self)} layers, each of shape {tuple(self._states.shape[1:])})"

    @property
    def layer_names(self) -> list[str]:
        """The keys in layer order."""
        return list(self._names)

    def stack(self) -> torch.Tensor:
        """All layers as one tensor of shape ``(L+1, B, T, D)``."""
        return self._states


def run_with_cache(model, X, y=None, x_query=None, *, batch_size=None):
    """Run ``model`` and keep its residual stream after the embedding and after every block.

    Forward hooks on ``model.blocks`` capture the states (no model is rewritten); they are
    removed afterwards, also when the forward pass raises. The model runs in eval mode and
    without gradients, and its training flag is restored.

    Parameters
    ----------
    model : torch.nn.Module
        Any model following the hook protocol: ``model.blocks`` an ``nn.ModuleList`` of blocks
        mapping ``(B, T, D) -> (B, T, D)``. Trained models take ``forward(X, y)``; the
        regression constructions take ``forward(X, y, x_query)``.
    X : Tensor of shape (B, n, d)
        The prompts' inputs — or, for a model of a single input (``y`` omitted), that input,
        batch axis first (e.g. the matrices ``A (B, d, d)`` of ``newton_schulz_transformer``).
    y : Tensor of shape (B, n), optional
    x_query : Tensor of shape (B, d), optional
        Required by the regression constructions. For a trained model it is appended as point
        ``n + 1`` (with a placeholder label no prediction reads, by causality).
    batch_size : int, optional
        Run the prompts in chunks of this many.

    Returns
    -------
    output : Tensor
        What ``model`` returns: ``(B, n)`` (or ``(B, n + 1)`` with a query) for a trained model,
        ``(B,)`` for a construction.
    cache : ActivationCache
        ``L + 1`` hidden states of shape ``(B, T, D)``.
    """
    out, states = _capture(model, X, y, x_query, batch_size=batch_size)
    return out, ActivationCache(states)


def hidden_states(model, X, y=None, x_query=None, *, batch_size=None) -> torch.Tensor:
    """The residual stream after the embedding and after every block, stacked.

    Parameters
    ----------
    model, X, y, x_query, batch_size
        As in :func:`run_with_cache`.

    Returns
    -------
    Tensor of shape (L + 1, B, T, D)
        ``out[0]`` is the input of ``blocks[0]``, ``out[ℓ]`` the output of ``blocks[ℓ − 1]``;
        in the model's dtype, on its device.

    Examples
    --------
    >>> import torch
    >>> from tfnewton.models.gpt2 import GPT2Config, GPT2Regressor
    >>> from tfnewton.probes import hidden_states
    >>> model = GPT2Regressor(GPT2Config(d=3, n_points=6, n_layers=2, width=16, heads=2))
    >>> hidden_states(model, torch.randn(4, 6, 3), torch.randn(4, 6)).shape
    torch.Size([3, 4, 12, 16])
    """
    return _capture(model, X, y, x_query, batch_size=batch_size)[1]


def query_position(model, n: int) -> int:
    """Token index of the query when a prompt holds ``n`` context pairs and a query.

    Uses ``model.x_token_positions``: for a trained model the query is x-token ``n`` of an
    ``n + 1``-point prompt; for a construction ``x_token_positions(n)`` lists the context
    tokens and the query at index ``n``.

    Parameters
    ----------
    model : torch.nn.Module
    n : int
        Number of context pairs.

    Returns
    -------
    int
    """
    n = v.check_int(n, "n", minimum=0)
    if not callable(getattr(model, "x_token_positions", None)):
        raise TypeError(
            f"{type(model).__name__} has no x_token_positions(n); the hook protocol needs it "
            "to find the query token"
        )
    positions = model.x_token_positions(n if _answers_query(model) else n + 1)
    positions = torch.as_tensor(positions).reshape(-1)
    if positions.numel() <= n:
        raise ValueError(
            f"{type(model).__name__}.x_token_positions returned {positions.numel()} positions; "
            f"expected the {n} context tokens and the query at index {n}"
        )
    return int(positions[n])


# =========================================================================== 2. the probe


def r2_score(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Coefficient of determination per column: ``1 − SSE/SST`` (scikit-learn's ``r2_score``).

    Parameters
    ----------
    pred, target : Tensor of shape (..., N, K)
        ``N`` problems (SST is taken around ``target``'s own mean over them).

    Returns
    -------
    Tensor of shape (..., K)
        ``1`` is perfect, ``0`` is as good as predicting the mean, negative is worse; a
        constant target column gives ``nan``.
    """
    sse = ((pred - target) ** 2).sum(-2)
    sst = ((target - target.mean(-2, keepdim=True)) ** 2).sum(-2)
    return torch.where(sst > 0, 1 - sse / sst.clamp_min(torch.finfo(sst.dtype).tiny), torch.nan)


def _standardize(features: torch.Tensor):
    """Column means and scales over the problem axis of ``(..., N, P)`` (scale 1 for constant columns)."""
    mean = features.mean(-2, keepdim=True)
    scale = features.std(-2, keepdim=True)
    scale = torch.where(scale > 1e-12 * (1 + mean.abs()), scale, torch.ones_like(scale))
    return mean, scale


def _eig_gram(Z):
    """Eigen-decomposition of the Gram matrix ``ZᵀZ = V diag(e) Vᵀ`` of ``Z (L, N, P)``.

    Ridge needs only ``ZᵀZ`` (P × P, P ≤ N here): one ``eigh`` per layer is far cheaper than
    an SVD of the tall ``Z``, and it serves every target column and every penalty.
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
    mean, scale : (L, 1, P); coef : (L, P, K); intercept : (L, 1, K); chosen : (L, K)
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
    return mean, scale, coef, y_mean.expand(features.shape[0], 1, -1), chosen


def _check_enough_problems(num_train: int, num_features: int, what: str = "", *, share: float | None = None) -> None:
    """A probe needs more problems to fit on than it has features, or it interpolates anything.

    ``share`` is the fraction of the given problems that end up in the fit set (after the
    held-out and validation splits), so the message can say how many problems to ask for.
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


def _split_masks(N: int, fraction: float, generator, device) -> torch.Tensor:
    """A boolean mask marking ``round(fraction · N)`` random problems (at least one)."""
    count = max(1, int(round(fraction * N)))
    if count >= N:
        raise ValueError(f"cannot hold out {count} of {N} problems; use more problems")
    order = torch.randperm(N, generator=generator, device="cpu").to(device)
    mask = torch.zeros(N, dtype=torch.bool, device=device)
    mask[order[:count]] = True
    return mask


def _check_fraction(value, name) -> float:
    value = v.check_positive(value, name)
    if not value < 1:
        raise ValueError(f"{name} must be in (0, 1), got {value}")
    return value


def _check_penalties(penalties, device) -> torch.Tensor:
    if penalties is None:
        penalties = DEFAULT_PENALTIES
    penalties = torch.as_tensor(penalties, dtype=torch.float64, device=device).reshape(-1)
    if penalties.numel() == 0 or bool((penalties < 0).any()) or not bool(torch.isfinite(penalties).all()):
        raise ValueError(f"penalties must be finite and >= 0, got {penalties.tolist()}")
    return penalties


@dataclass
class LinearProbe:
    """A fitted linear probe: ``predict(F) = ((F − mean) / scale) @ coef + intercept``.

    Attributes
    ----------
    mean, scale : Tensor of shape (P,)
        Standardization of the features, from the fit problems.
    coef : Tensor of shape (P, K)
    intercept : Tensor of shape (K,)
    penalty : Tensor of shape (K,)
        The per-sample ridge penalty λ chosen for each target column on the validation split.
    squeeze : bool
        The targets were one-dimensional, so :meth:`predict` returns shape ``(N,)``.
    """

    mean: torch.Tensor
    scale: torch.Tensor
    coef: torch.Tensor
    intercept: torch.Tensor
    penalty: torch.Tensor
    squeeze: bool = False

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        """Probe output for features of shape ``(N, P)``: ``(N, K)``, or ``(N,)`` for a 1-D target."""
        v.check_tensor(features, "features", ndim=2)
        if features.shape[1] != self.coef.shape[0]:
            raise ValueError(
                f"features must have shape (N, {self.coef.shape[0]}) like those the probe was "
                f"fit on, got {tuple(features.shape)}"
            )
        F = features.to(self.coef.dtype)
        out = ((F - self.mean) / self.scale) @ self.coef + self.intercept
        out = out.to(features.dtype)
        return out[:, 0] if self.squeeze else out

    def score(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Held-out R² of each target column (shape ``(K,)``, or a scalar for a 1-D target)."""
        pred = self.predict(features)
        targets = targets.to(pred.dtype)
        if self.squeeze:
            return r2_score(pred[:, None], targets.reshape(-1, 1))[0]
        return r2_score(pred, targets)


def fit_linear_probe(
    features: torch.Tensor,
    targets: torch.Tensor,
    *,
    penalties=None,
    val_fraction: float = 0.2,
    generator: torch.Generator | None = None,
) -> LinearProbe:
    r"""Fit a ridge-regression probe, its penalty chosen on a validation split.

    Features are standardized (mean 0, variance 1 per column, over the fit problems); for each
    target column the per-sample penalty ``λ`` of
    :math:`\frac1N\lVert Y - ZW\rVert^2 + \lambda\lVert W\rVert^2` that predicts a held-out
    validation split best is kept, and the probe is then refit on all the problems given.
    Solved in closed form (one thin SVD, in float64). Score it with :meth:`LinearProbe.score`
    on problems it never saw.

    Parameters
    ----------
    features : Tensor of shape (N, P)
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
    LinearProbe

    Raises
    ------
    ValueError
        Fewer fit problems (after the validation split) than features: a probe with as many
        parameters as problems interpolates any target, so its R² would mean nothing.

    Examples
    --------
    >>> import torch
    >>> from tfnewton.probes import fit_linear_probe
    >>> g = torch.Generator().manual_seed(0)
    >>> F = torch.randn(500, 8, generator=g, dtype=torch.float64)
    >>> t = F @ torch.arange(8.0, dtype=torch.float64) + 1
    >>> probe = fit_linear_probe(F[:400], t[:400], generator=g)
    >>> float(probe.score(F[400:], t[400:])) > 0.999
    True
    """
    v.check_tensor(features, "features", ndim=2)
    v.check_tensor(targets, "targets", ndim=(1, 2))
    if targets.shape[0] != features.shape[0]:
        raise ValueError(
            f"targets must have one row per problem like features ({features.shape[0]}), got "
            f"shape {tuple(targets.shape)}"
        )
    val_fraction = _check_fraction(val_fraction, "val_fraction")
    N, P = features.shape
    val_mask = _split_masks(N, val_fraction, generator, features.device)
    _check_enough_problems(int((~val_mask).sum()), P)
    squeeze = targets.ndim == 1
    Y = targets.reshape(N, -1).to(device=features.device, dtype=torch.float64)
    pen = _check_penalties(penalties, features.device)
    mean, scale, coef, intercept, chosen = _fit_ridge(features.double()[None], Y, pen, val_mask)
    dt = features.dtype if features.dtype == torch.float64 else torch.float64
    return LinearProbe(
        mean=mean[0, 0].to(dt), scale=scale[0, 0].to(dt), coef=coef[0].to(dt),
        intercept=intercept[0, 0].to(dt), penalty=chosen[0], squeeze=squeeze,
    )


# =========================================================================== 3. targets


def _online_gd(X, y, steps, **kwargs):
    # Online GD makes one update per example; its iterate "k" is the estimate after the
    # first k examples, so there are n + 1 of them whatever `steps` says.
    return algorithms.online_gradient_descent(X, y, **kwargs)


def _ols(X, y, steps, **kwargs):
    w = algorithms.least_squares(X, y, **kwargs)
    return w.unsqueeze(0).expand(steps + 1, *w.shape)


#: Algorithm names accepted by :func:`iterates`, :func:`probe_iterates` and
#: :func:`tfnewton.compare`, with the function of :mod:`tfnewton.algorithms` each one runs.
ALGORITHMS: dict[str, Callable] = {
    "newton": algorithms.newton_least_squares,
    "gd": algorithms.gradient_descent_least_squares,
    "cg": algorithms.conjugate_gradient_least_squares,
    "lbfgs": algorithms.lbfgs_least_squares,
    "bfgs": algorithms.bfgs_least_squares,
    "online_gd": _online_gd,
    "ols": _ols,
}


def _resolve_algorithm(algorithm) -> tuple[str, Callable]:
    if callable(algorithm):
        return getattr(algorithm, "__name__", "algorithm"), algorithm
    if isinstance(algorithm, str) and algorithm in ALGORITHMS:
        return algorithm, ALGORITHMS[algorithm]
    raise ValueError(
        f"algorithm must be one of {sorted(ALGORITHMS)} or a callable (X, y, steps) -> "
        f"(steps + 1, B, d), got {algorithm!r}"
    )


def iterates(algorithm, X: torch.Tensor, y: torch.Tensor, steps: int, **kwargs) -> torch.Tensor:
    """Every iterate of a named least-squares algorithm from :mod:`tfnewton.algorithms`.

    Parameters
    ----------
    algorithm : str or callable
        ``"newton"`` (Iterative Newton), ``"gd"``, ``"cg"``, ``"lbfgs"``, ``"bfgs"``,
        ``"online_gd"`` (its iterate ``k`` is the estimate after ``k`` examples; ``steps`` is
        ignored and ``n + 1`` iterates come back), ``"ols"`` (the least-squares solution at
        every step), or any callable ``(X, y, steps, **kwargs) -> (steps + 1, B, d)``.
    X : Tensor of shape (B, n, d)
    y : Tensor of shape (B, n)
    steps : int
    **kwargs
        Passed on (``alpha``/``ridge`` for Newton, ``lr`` for GD, ``memory`` for L-BFGS).

    Returns
    -------
    Tensor of shape (steps + 1, B, d)
    """
    _, fn = _resolve_algorithm(algorithm)
    steps = v.check_int(steps, "steps", minimum=0)
    return fn(X, y, steps, **kwargs)


def prefix_predictions(algorithm, X: torch.Tensor, y: torch.Tensor, steps: int, **kwargs) -> torch.Tensor:
    """The algorithm's prediction of every label from the pairs before it.

    ``out[k, b, i] = x_iᵀ w_k(first i pairs)`` — what a causal in-context learner predicts at
    position ``i``; ``0`` at ``i = 0`` (no context; every algorithm here starts at ``w = 0``).

    Parameters
    ----------
    algorithm, steps, **kwargs
        As in :func:`iterates`.
    X : Tensor of shape (B, n, d)
    y : Tensor of shape (B, n)

    Returns
    -------
    Tensor of shape (steps + 1, B, n)
        For ``"online_gd"``: shape ``(1, B, n)`` (one pass, no step count).
    """
    name, _ = _resolve_algorithm(algorithm)
    v.check_regression_inputs(X, y)
    steps = v.check_int(steps, "steps", minimum=0)
    B, n, d = X.shape
    if name == "online_gd":
        W = iterates(algorithm, X, y, steps, **kwargs)  # (n + 1, B, d)
        return torch.einsum("ibd,bid->bi", W[:n], X).unsqueeze(0)
    out = X.new_zeros((steps + 1, B, n))
    for i in range(1, n):
        W = iterates(algorithm, X[:, :i], y[:, :i], steps, **kwargs)  # (S+1, B, d)
        out[:, :, i] = (W * X[:, i]).sum(-1)
    return out


# =========================================================================== 4. probe_iterates


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
class ProbeTable:
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

    def summary(self, min_r2: float = 0.1) -> str:
        """One line per layer: best-matching step, its R², and each control's R² for that step.

        A layer whose best R² is below ``min_r2`` reads no step at all: its "best" step is
        shown as ``–`` (an argmax over noise means nothing).
        """
        best = self.r2.nan_to_num(-math.inf).argmax(1)
        header = ["layer", f"best {self.algorithm} step", "held-out R²"] + [f"{k} control" for k in self.controls]
        lines = [" | ".join(header), " | ".join("---" for _ in header)]
        for layer in range(self.r2.shape[0]):
            j = int(best[layer])
            r2 = float(self.r2[layer, j])
            cells = [str(layer), str(self.steps[j]) if r2 >= min_r2 else "–", f"{r2:.3f}"]
            cells += [f"{float(t[layer, j]):.3f}" for t in self.controls.values()]
            lines.append(" | ".join(cells))
        return "\n".join(lines)

    def __str__(self) -> str:
        return (
            f"ProbeTable({self.algorithm}, target={self.target!r}, position={self.position!r}, "
            f"fit on {self.num_fit} problems, scored on {self.num_test})\n" + self.summary()
        )

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
        from .plotting import heatmap

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
            _mark_row_maxima(ax, values, min_value=0.1)
        return ax


def _mark_row_maxima(ax, values: torch.Tensor, min_value: float = -math.inf) -> None:
    """Circle the largest entry of each row of a heat map (rows whose maximum is below ``min_value`` skipped)."""
    clean = values.nan_to_num(-math.inf)
    cols = clean.argmax(1)
    rows = [i for i in range(values.shape[0]) if float(clean[i, cols[i]]) >= min_value]
    if rows:
        ax.scatter(cols[rows].tolist(), rows, s=140, facecolors="none", edgecolors="red", linewidths=1.5, zorder=3)


_TARGETS = ("weights", "prediction")


def _check_task(task):
    X, y = getattr(task, "X", None), getattr(task, "y", None)
    if X is None or y is None:
        if isinstance(task, (tuple, list)) and len(task) == 2:
            X, y = task
        else:
            raise TypeError(
                "task must hold prompts as task.X (B, n, d) and task.y (B, n) (e.g. "
                "tfnewton.tasks.sample_linear_regression(...)) or be a pair (X, y); got "
                f"{type(task).__name__}"
            )
    v.check_regression_inputs(X, y, "task.X", "task.y")
    if X.shape[1] < 2:
        raise ValueError(f"task prompts need at least 2 points (context and a query), got n = {X.shape[1]}")
    # The model runs on its own device (the hidden states are captured there); the targets
    # and the probes' float64 solves are small and live on the CPU.
    return X.detach().cpu(), y.detach().cpu()


def _step_list(steps) -> list:
    if isinstance(steps, int) and not isinstance(steps, bool):
        return list(range(v.check_int(steps, "steps", minimum=0) + 1))
    try:
        out = [v.check_int(s, "steps[i]", minimum=0) for s in steps]
    except TypeError as err:
        raise TypeError(f"steps must be an int or a sequence of ints, got {steps!r}") from err
    if not out:
        raise ValueError("steps must not be empty")
    return out


def _positions(model, position, n: int, T_hint=None):
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
        A model following the hook protocol (``blocks``, ``x_token_positions``).
    task : object with ``X (B, n, d)`` and ``y (B, n)``, or a pair ``(X, y)``
        E.g. ``tfnewton.tasks.sample_linear_regression(4000, 11, 5)``; ``d`` must be the model's.
    algorithm : str or callable
        See :func:`iterates`.
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
        Candidate ridge penalties, see :func:`fit_linear_probe`.
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
    X, y = _check_task(task)
    if target not in _TARGETS:
        raise ValueError(f"target must be one of {_TARGETS}, got {target!r}")
    seed = v.check_int(seed, "seed", minimum=0)
    test_fraction = _check_fraction(test_fraction, "test_fraction")
    val_fraction = _check_fraction(val_fraction, "val_fraction")
    controls = tuple(controls)
    for c in controls:
        if c not in ("random_init", "shuffled"):
            raise ValueError(f"controls may hold 'random_init' and 'shuffled', got {c!r}")
    name, _ = _resolve_algorithm(algorithm)
    step_list = _step_list(steps)
    _blocks(model)
    _check_prompt(model, X, y, None)

    B, n_points, d = X.shape
    n = n_points - 1
    Xc, yc, xq = X[:, :n], y[:, :n], X[:, n]
    num_test = max(1, int(round(test_fraction * B)))
    num_fit = B - num_test
    num_val = max(1, int(round(val_fraction * num_fit)))
    positions = _positions(model, position, n)
    # Refuse an under-determined probe before the expensive forward pass: one prompt tells
    # the feature dimension.
    _, one = _capture(model, Xc[:1], yc[:1], xq[:1], positions=positions)
    _check_enough_problems(num_fit - num_val, one[0, 0].numel(), f" for position={position!r}",
                           share=(num_fit - num_val) / B)

    # Targets, in float64: (B, S, d) weights or (B, S) predictions.
    W = iterates(algorithm, Xc.double(), yc.double(), max(step_list), **algorithm_kwargs)
    if max(step_list) >= W.shape[0]:
        raise ValueError(f"steps asks for iterate {max(step_list)} but {name} has only {W.shape[0]} iterates here")
    W = W[step_list].transpose(0, 1)  # (B, S, d)
    if target == "weights":
        Y = W.reshape(B, -1)
        width = d
    else:
        Y = (W * xq.double().unsqueeze(1)).sum(-1)
        width = 1
    S = len(step_list)

    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(B, generator=g)
    test_idx, fit_idx = order[:num_test], order[num_test:]
    val_mask = torch.zeros(num_fit, dtype=torch.bool)
    val_mask[torch.randperm(num_fit, generator=g)[:num_val]] = True
    shuffle = torch.randperm(B, generator=g)

    def table_for(net, with_shuffled):
        _, states = _capture(net, Xc, yc, xq, positions=positions, batch_size=batch_size)
        feats = states.reshape(states.shape[0], B, -1).double().cpu()  # (L+1, B, P)
        # A layer whose activations overflowed (a random linear-attention stack can) has no
        # R²: solve on zeros there and report NaN rather than fail.
        broken = ~torch.isfinite(feats).flatten(1).all(1)
        feats[broken] = 0.0
        targets = Y if not with_shuffled else torch.cat([Y, Y[shuffle]], dim=1)
        pen = _check_penalties(penalties, feats.device)
        mean, scale, coef, intercept, chosen = _fit_ridge(
            feats[:, fit_idx], targets[fit_idx], pen, val_mask
        )
        pred = ((feats[:, test_idx] - mean) / scale) @ coef + intercept  # (L+1, Ntest, K)
        r2 = r2_score(pred, targets[test_idx].expand_as(pred))  # (L+1, K)
        r2 = r2.reshape(r2.shape[0], -1, S, width).mean(-1)  # (L+1, 1 or 2, S)
        r2[broken] = torch.nan
        log_pen = chosen.log().reshape(chosen.shape[0], -1, S, width).mean(-1).exp()
        return r2, log_pen, len(_blocks(net))

    r2, pen, L = table_for(model, "shuffled" in controls)
    results = {}
    if "random_init" in controls:
        results["random_init"] = table_for(random_init_like(model, seed=seed), False)[0][:, 0]
    if "shuffled" in controls:
        results["shuffled"] = r2[:, 1]
    return ProbeTable(
        r2=r2[:, 0], steps=step_list, layer_names=_layer_names(L), algorithm=name, target=target,
        position=str(position), controls={c: results[c] for c in controls}, penalty=pen[:, 0],
        num_fit=num_fit, num_test=num_test,
    )
