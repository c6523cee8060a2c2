r"""What an architecture choice shows in a trained model: width, depth, recurrence, LayerNorm.

Three questions of issue 17, each answered from measurements the book reads rather than trains:

* **Width and depth sweeps.** ``benchmarks/architecture_sweeps.py`` trains the homework recipe
  at widths 8 … 128 (Fu et al.'s claim 4: a hidden size of O(d) suffices) and two LSTMs at
  depths 1 … 8, and appends one row per run to ``benchmarks/results/width_sweep.json`` and
  ``lstm_depth.json``. :func:`load_results` reads a file, :func:`width_sweep` and
  :func:`depth_sweep` turn its rows into curves, and :func:`smallest_adequate_width` finds
  the smallest width whose error is within a factor of the widest model's.
* **A trained model's layers against algorithms.** :func:`match_checkpoint_layers` loads a checkpoint
  (refusing one trained for another ``d`` or condition number than the prompts have), fits
  Fu et al.'s per-layer read-outs and matches each against online GD, GD and Iterative
  Newton (:func:`tfnewton.metrics.match_algorithm`).
* **What the no-LayerNorm linear-attention model can hold.** :func:`krylov_linear_attention`
  writes weights into the library's trained-model class
  (:class:`tfnewton.models.linear.LinearAttentionRegressor`, ``layernorm=False``, no MLP) so
  that it computes, at every ``x`` token, a polynomial in the Gram matrix applied to
  ``Xᵀy``; :func:`krylov_features` computes the same numbers directly (the reference).

The Krylov predictor
--------------------
The model is causal and interleaved: the ``x`` token of position ``k`` (token ``t = 2k``)
attends to ``t + 1 = 2k + 1`` tokens, the ``k`` context pairs as two tokens each
(``(x_j, 0)`` and ``(x_j, y_j)``) and itself, and every head divides by that count. A head
with query ``x_t``, key ``x_s`` and value ``y_s`` gives ``x_qᵀb / (2k + 1)`` with
``b = Σ_{j<k} y_j x_j`` (von Oswald et al.'s one GD step: only the y tokens carry a ``y``);
with value ``x_s`` instead it gives ``G x_q / (2k + 1)`` where

.. math:: G = \sum_{s \le t} x_s x_s^\top = 2\,X^\top X + x_q x_q^\top

counts every context input twice (two tokens carry it) and the query once. Chaining the
second kind of head through the layers and closing each with the first gives, at layer ``ℓ``,

.. math:: f_{\ell-1} = \frac{x_q^\top G^{\ell-1} b}{(2k+1)^{\ell}}, \qquad \ell = 1, \dots, L,

and the read-out returns ``Σ_m c_m f_m``. Three layers hold a degree-2 polynomial in ``G``,
the degree of three GD steps, with three free coefficients where GD has one step size. It is
not GD: the causal mask lets no context token hold a residual computed from the whole context,
and ``G`` is not ``XᵀX``. Here the query's own ``x_q x_qᵀ`` stays in ``G`` (taking it out
needs a product of two quantities of the query's token, which costs this construction a
layer), so the construction shows what three layers *can* do, not the best they can do.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from . import _validate as v
from . import metrics

__all__ = [
    "load_results",
    "width_sweep",
    "depth_sweep",
    "smallest_adequate_width",
    "CheckpointMatches",
    "match_checkpoint_layers",
    "PromptSetComparison",
    "compare_on_prompt_sets",
    "krylov_features",
    "fit_krylov_coefficients",
    "krylov_linear_attention",
]


# --------------------------------------------------------------------------- the sweeps


def load_results(name: str, root=None) -> list:
    """The rows of ``benchmarks/results/<name>.json``, or ``[]`` where the file is absent.

    Parameters
    ----------
    name : str
        ``"width_sweep"`` or ``"lstm_depth"`` (any results file with a ``"runs"`` list).
    root : str or Path, optional
        The repository's root (the folder with ``_toc.yml``); by default
        :func:`tfnewton.notebooks.find_book_root`. Outside a clone there are no results
        files, and the answer is ``[]``.

    Returns
    -------
    list of dict
    """
    from .notebooks import find_book_root

    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a results file's name such as 'width_sweep', got {name!r}")
    try:
        base = find_book_root(root)
    except FileNotFoundError:
        return []
    path = Path(base) / "benchmarks" / "results" / f"{name}.json"
    if not path.is_file():
        return []
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list):
        raise ValueError(f"{path} must hold {{'runs': [...]}}, "
                         f"got {type(data).__name__} without a 'runs' list")
    return data["runs"]


def _curves(runs, group: str, x: str) -> dict:
    """``{value of group: (xs ascending, errors)}`` from rows with ``group``, ``x`` and ``error``."""
    if not isinstance(runs, (list, tuple)):
        raise TypeError(f"runs must be a list of result rows (dicts), got {type(runs).__name__}")
    curves: dict = {}
    for i, row in enumerate(runs):
        if not isinstance(row, dict) or any(key not in row for key in (group, x, "error")):
            raise ValueError(f"runs[{i}] must be a dict with keys {group!r}, {x!r} and 'error', got {row!r}")
        error = float(row["error"])
        if not math.isfinite(error) or error < 0:
            raise ValueError(f"runs[{i}]['error'] must be a finite error >= 0, got {row['error']!r}")
        points = curves.setdefault(row[group], {})
        value = v.check_int(row[x], f"runs[{i}][{x!r}]", minimum=1)
        if value in points:
            raise ValueError(f"runs hold two rows for {group} = {row[group]!r}, {x} = {value}: one run per point")
        points[value] = error
    return {key: (sorted(points), [points[p] for p in sorted(points)]) for key, points in sorted(curves.items())}


def width_sweep(runs) -> dict:
    """The width sweep's rows as one curve per input dimension.

    Parameters
    ----------
    runs : list of dict
        Rows with ``"d"``, ``"width"`` and ``"error"`` (``benchmarks/architecture_sweeps.py
        width``; :func:`load_results`).

    Returns
    -------
    dict
        ``{d: (widths, errors)}``, widths ascending.
    """
    return _curves(runs, "d", "width")


def depth_sweep(runs) -> dict:
    """The LSTM depth sweep's rows as one curve per architecture.

    Parameters
    ----------
    runs : list of dict
        Rows with ``"architecture"`` (``"residual"`` or ``"plain"``), ``"depth"`` and
        ``"error"`` (``benchmarks/architecture_sweeps.py lstm-depth``).

    Returns
    -------
    dict
        ``{architecture: (depths, errors)}``, depths ascending.
    """
    return _curves(runs, "architecture", "depth")


def smallest_adequate_width(widths, errors, factor: float = 2.0) -> int:
    """The smallest width from which on every model's error is within ``factor`` of the widest's.

    "Reaches the widest model's error" (issue 17's reading of Fu et al.'s claim 4, with
    ``factor = 2``): a width counts only if it and every wider one are at most
    ``factor × errors[-1]``, so a lucky narrow run between two failures does not.

    Parameters
    ----------
    widths : sequence of int
        Strictly increasing.
    errors : sequence of float
        The error of the model of each width (same length).
    factor : float
        ``>= 1``.

    Returns
    -------
    int
    """
    widths, errors = list(widths), [float(e) for e in errors]
    if not widths or len(widths) != len(errors):
        raise ValueError(f"widths and errors must be non-empty and of one length, got {len(widths)} and {len(errors)}")
    for i, w in enumerate(widths):
        v.check_int(w, f"widths[{i}]", minimum=1)
    if any(b <= a for a, b in zip(widths, widths[1:])):
        raise ValueError(f"widths must be strictly increasing, got {widths}")
    if any(not math.isfinite(e) or e < 0 for e in errors):
        raise ValueError(f"errors must be finite and >= 0, got {errors}")
    factor = v.check_positive(factor, "factor")
    if factor < 1:
        raise ValueError(f"factor must be >= 1 (the widest model is within any factor of itself), got {factor}")
    bound = factor * errors[-1]
    smallest = widths[-1]
    for w, e in zip(reversed(widths), reversed(errors)):
        if e > bound:
            break
        smallest = w
    return smallest


# --------------------------------------------------------------------------- a model's layers against algorithms


@dataclass
class CheckpointMatches:
    """Every layer's read-out of one trained model, matched against several algorithms.

    Attributes
    ----------
    name : str
        The checkpoint (its name or path).
    model : torch.nn.Module
    readouts : LayerReadouts
        Fu et al.'s per-layer read-outs, fit on part of the prompts
        (:func:`tfnewton.metrics.layer_readouts`).
    matches : dict
        ``{label: MatchTable}``, one per algorithm.
    """

    name: str
    model: torch.nn.Module
    readouts: metrics.LayerReadouts
    matches: dict

    def best_similarity(self) -> dict:
        """``{label: Tensor of shape (L + 1,)}``: each layer's similarity at its best step."""
        return {label: m.similarity.max(1).values for label, m in self.matches.items()}

    def output_similarity(self) -> dict:
        """``{label: float}``: the model's own output at the algorithm's best step."""
        return {label: float(m.model_similarity.max()) for label, m in self.matches.items()}

    def errors_at(self, k: int) -> torch.Tensor:
        """Each layer's read-out error at position ``k`` (``k`` examples seen): shape (L + 1,)."""
        n = self.readouts.y.shape[1]
        k = v.check_int(k, "k", minimum=0)
        if k >= n:
            raise ValueError(f"k must be < {n} (the prompts' length), got {k}")
        return self.readouts.errors()[:, k]


def match_checkpoint_layers(source, task, *, online_lr: float, gd_steps, newton_steps: int = 20,
                   device=None) -> CheckpointMatches:
    """Load a checkpoint and match each layer's read-out with online GD, GD and Iterative Newton.

    Parameters
    ----------
    source : str or Path
        A shipped checkpoint's name (:func:`tfnewton.models.list_pretrained`) or a file.
    task : LinearRegressionTask
        Noiseless prompts (:func:`tfnewton.tasks.sample_linear_regression`); read-outs are
        fit on part of them and everything is compared on the rest. Its ``d`` and
        ``condition_number`` must be the ones the checkpoint was trained for.
    online_lr : float
        Online GD's step size.
    gd_steps : int or sequence of int
        GD's steps to compare with (GD's step size: the algorithm's default).
    newton_steps : int
        Iterative Newton's steps ``0 … newton_steps``.
    device : optional

    Returns
    -------
    CheckpointMatches
        Labels ``"online GD"``, ``"gradient descent"``, ``"Iterative Newton"``.

    Raises
    ------
    ValueError
        The checkpoint was trained for another ``d`` or condition number than ``task`` has.
    """
    from .separation import load_trained_model

    X = getattr(task, "X", None)
    if not isinstance(X, torch.Tensor) or X.dim() != 3:
        raise TypeError(f"task must be a linear-regression task with X of shape (B, n, d), got {type(task).__name__}")
    kappa = getattr(task, "condition_number", 1.0)
    if isinstance(kappa, torch.Tensor):
        if kappa.numel() == 0 or not bool((kappa == kappa.flatten()[0]).all()):
            raise ValueError("task must have one condition number for every prompt (not a mixture), "
                             "to be matched with the checkpoint's")
        kappa = float(kappa.flatten()[0])
    online_lr = v.check_positive(online_lr, "online_lr")
    model, _ = load_trained_model(source, d=X.shape[-1], condition_number=float(kappa), device=device)
    readouts = metrics.layer_readouts(model, task)
    match = lambda algorithm, steps, **kw: metrics.match_algorithm(  # noqa: E731
        model, task, algorithm, steps, readouts=readouts, **kw)
    matches = {"online GD": match("online_gd", 0, lr=online_lr),
               "gradient descent": match("gd", gd_steps),
               "Iterative Newton": match("newton", newton_steps)}
    return CheckpointMatches(str(source), model, readouts, matches)


# --------------------------------------------------------------------------- a model against tuned GD, set by set


@dataclass
class PromptSetComparison:
    """A model's and tuned GD's errors at one position, per prompt and per set of prompts.

    Attributes
    ----------
    k : int
        The position scored (``k`` examples seen).
    model_errors, gd_errors : Tensor of shape (B,)
        Normalized squared error ``(ŷ − y)² / d`` of each prompt, float64.
    gd_lr : float
        GD's one step size, the one with the lowest mean error over all ``B`` prompts.
    set_size : int
        Prompts per set (``B`` is a multiple of it).
    """

    k: int
    model_errors: torch.Tensor
    gd_errors: torch.Tensor
    gd_lr: float
    set_size: int

    def set_means(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean error over each set: model's and GD's, each of shape (B / set_size,)."""
        return (self.model_errors.reshape(-1, self.set_size).mean(1),
                self.gd_errors.reshape(-1, self.set_size).mean(1))

    def sets_won(self) -> int:
        """In how many sets the model's mean error is below GD's."""
        model, gd = self.set_means()
        return int((model < gd).sum())

    def share_of_worst(self) -> float:
        """The share of the model's summed error that its single worst prompt carries."""
        return float(self.model_errors.max() / self.model_errors.sum())

    def summary(self) -> dict:
        """Means, medians, 99th percentiles and maxima of both, the sets won, as floats."""
        out = {"k": self.k, "prompts": len(self.model_errors), "set_size": self.set_size,
               "gd_lr": self.gd_lr, "sets": len(self.model_errors) // self.set_size,
               "sets_won": self.sets_won(), "share_of_worst": self.share_of_worst()}
        model_sets, gd_sets = self.set_means()
        for name, errors, sets in (("model", self.model_errors, model_sets), ("gd", self.gd_errors, gd_sets)):
            out[name] = {"mean": float(errors.mean()), "median": float(errors.median()),
                         "q99": float(errors.quantile(0.99)), "max": float(errors.max()),
                         "set_means": [float(m) for m in sets]}
        return out


def compare_on_prompt_sets(model, X: torch.Tensor, y: torch.Tensor, *, k: int, gd_steps: int = 3,
                           set_size: int = 2000, lrs=None, batch_size: int = 1000) -> PromptSetComparison:
    """Score a model against ``gd_steps`` steps of GD with one tuned step, prompt by prompt.

    The mean error over a few thousand prompts is a fair summary only when no single prompt
    dominates it; a model whose error has a heavy tail can beat GD on one set of prompts and
    lose by orders of magnitude on the next. This keeps every prompt's error, so the
    comparison can be made per set and per quantile.

    Parameters
    ----------
    model : torch.nn.Module
        ``model(X, y) -> (B, n)``, the prediction at position ``i`` from the pairs before it.
    X : Tensor of shape (B, n, d)
    y : Tensor of shape (B, n)
    k : int
        The position scored, ``1 <= k < n``.
    gd_steps : int
        GD's steps from ``w = 0`` (:func:`tfnewton.algorithms.gradient_descent_least_squares`).
    set_size : int
        ``B`` must be a multiple of it.
    lrs : Tensor, optional
        GD's step sizes to try (default: 81 values log-spaced over ``[1e-3, 10]``, as
        :func:`tfnewton.baselines.tuned_gd_errors`); the best for the mean over all prompts
        is kept.
    batch_size : int
        Prompts per forward pass (small batches keep the attention's memory in cache).

    Returns
    -------
    PromptSetComparison
    """
    from .algorithms import gradient_descent_least_squares

    X, y = v.check_regression_inputs(X, y)
    B, n, d = X.shape
    k = v.check_int(k, "k", minimum=1)
    if k >= n:
        raise ValueError(f"k must be < n = {n} (a position of the prompts), got {k}")
    set_size = v.check_int(set_size, "set_size", minimum=1)
    if B % set_size:
        raise ValueError(f"the number of prompts must be a multiple of set_size = {set_size}, got {B}")
    gd_steps = v.check_int(gd_steps, "gd_steps", minimum=1)
    batch_size = v.check_int(batch_size, "batch_size", minimum=1)
    param = next(model.parameters())
    with torch.no_grad():
        pred = torch.cat([model(X[i:i + batch_size].to(param), y[i:i + batch_size].to(param))[:, k]
                          for i in range(0, B, batch_size)]).double().cpu()
    Xd, yd = X.double().cpu(), y.double().cpu()
    model_errors = (pred - yd[:, k]).pow(2) / d
    lrs = torch.logspace(-3, 1, 81, dtype=torch.float64) if lrs is None else torch.as_tensor(lrs, dtype=torch.float64)
    best = None
    for lr in lrs.tolist():
        w = gradient_descent_least_squares(Xd[:, :k], yd[:, :k], gd_steps, lr=lr)[-1]
        errors = ((Xd[:, k] * w).sum(-1) - yd[:, k]).pow(2) / d
        if torch.isfinite(errors).all() and (best is None or errors.mean() < best[0].mean()):
            best = (errors, lr)
    if best is None:
        raise ValueError("every step size in lrs made GD diverge on these prompts; pass smaller ones")
    return PromptSetComparison(k, model_errors, best[0], float(best[1]), set_size)


# --------------------------------------------------------------------------- the Krylov predictor


def krylov_features(X: torch.Tensor, y: torch.Tensor, n_terms: int = 3) -> torch.Tensor:
    """``f_m = x_kᵀ G^m b / (2k + 1)^{m+1}`` at every position ``k`` (the module docstring).

    Computed directly, prompt by prompt and position by position: the reference that
    :func:`krylov_linear_attention`'s weights are checked against.

    Parameters
    ----------
    X : Tensor of shape (B, n, d)
    y : Tensor of shape (B, n)
    n_terms : int
        ``m = 0 … n_terms − 1``.

    Returns
    -------
    Tensor of shape (n_terms, B, n)
        Position 0 (no examples): ``b = 0``, so every feature is 0.
    """
    X, y = v.check_regression_inputs(X, y)
    n_terms = v.check_int(n_terms, "n_terms", minimum=1)
    B, n, d = X.shape
    out = X.new_zeros((n_terms, B, n))
    for k in range(n):
        Xc, yc, xq = X[:, :k], y[:, :k], X[:, k]  # (B, k, d), (B, k), (B, d)
        b = (Xc * yc.unsqueeze(-1)).sum(1)  # (B, d)
        G = 2 * Xc.mT @ Xc + xq.unsqueeze(-1) * xq.unsqueeze(-2)  # (B, d, d)
        z = xq
        for m in range(n_terms):
            out[m, :, k] = (z * b).sum(-1) / (2 * k + 1) ** (m + 1)
            z = (G @ z.unsqueeze(-1)).squeeze(-1)
    return out


def fit_krylov_coefficients(X: torch.Tensor, y: torch.Tensor, k: int, n_terms: int = 3) -> torch.Tensor:
    """The coefficients ``c`` for which ``Σ_m c_m f_m`` best predicts ``y_k`` (least squares).

    Parameters
    ----------
    X : Tensor of shape (B, n, d)
    y : Tensor of shape (B, n)
    k : int
        The position fitted (``1 <= k < n``): the predictor is tuned for ``k`` examples.
    n_terms : int

    Returns
    -------
    Tensor of shape (n_terms,), float64
    """
    X, y = v.check_regression_inputs(X, y)
    k = v.check_int(k, "k", minimum=1)
    if k >= X.shape[1]:
        raise ValueError(f"k must be < n = {X.shape[1]} (a position of the prompts), got {k}")
    F = krylov_features(X[:, : k + 1].double(), y[:, : k + 1].double(), n_terms)[:, :, k].T  # (B, n_terms)
    if F.shape[0] < n_terms:
        raise ValueError(f"need at least n_terms = {n_terms} prompts to fit the coefficients, got {F.shape[0]}")
    return torch.linalg.lstsq(F, y[:, k].double().unsqueeze(-1)).solution.squeeze(-1)


def krylov_linear_attention(coefficients, *, d: int, n_points: int, width: int = 32, heads: int = 4,
                            dtype=torch.float64, device=None):
    """The no-LayerNorm linear-attention model with weights that compute ``Σ_m c_m f_m``.

    A :class:`tfnewton.models.linear.LinearAttentionRegressor` (``layernorm=False``, no MLP)
    of ``L = len(coefficients)`` layers: the architecture of ``linear_noln_linreg_d5`` with
    written-down weights (module docstring). Its prediction at every position ``k`` equals
    ``Σ_m c_m f_m`` of :func:`krylov_features`.

    Stream slots: ``x`` (``d``), ``y`` (1), ``z_1 … z_{L−1}`` (``d`` each, ``G^ℓ x_q`` scaled)
    and ``p_1 … p_L`` (1 each, the features); two heads per layer do the work, the others
    are zero.

    Parameters
    ----------
    coefficients : sequence of float
        ``c_0 … c_{L−1}`` (:func:`fit_krylov_coefficients`).
    d, n_points : int
        Input dimension and prompt length (pairs).
    width, heads : int
        The stream's width (at least ``L·d + L + 1``) and the heads per layer (at least 2,
        each of ``width / heads >= d`` dimensions).
    dtype, device : optional

    Returns
    -------
    LinearAttentionRegressor
    """
    from .models.linear import LinearAttentionConfig, LinearAttentionRegressor

    coefficients = [float(c) for c in coefficients]
    if not coefficients or not all(math.isfinite(c) for c in coefficients):
        raise ValueError(f"coefficients must be a non-empty sequence of finite numbers, got {coefficients}")
    L = len(coefficients)
    d = v.check_int(d, "d", minimum=1)
    n_points = v.check_int(n_points, "n_points", minimum=1)
    width = v.check_int(width, "width", minimum=1)
    heads = v.check_int(heads, "heads", minimum=2)
    need = L * d + L + 1
    if width < need:
        raise ValueError(f"width must be at least L·d + L + 1 = {need} for {L} layers at d = {d} "
                         f"(slots x, y, z_1..z_{L - 1}, p_1..p_{L}), got {width}")
    if width % heads or width // heads < d:
        raise ValueError(f"width / heads must be a whole number >= d = {d} (a head reads an input), "
                         f"got width={width} and heads={heads}")
    config = LinearAttentionConfig(d=d, n_points=n_points, n_layers=L, width=width, heads=heads,
                                   layernorm=False, mlp=False)
    model = LinearAttentionRegressor(config).to(dtype=v.check_dtype(dtype), device=v.check_device(device))
    xs = list(range(d))
    y_slot = d
    z = [list(range(d + 1 + i * d, d + 1 + (i + 1) * d)) for i in range(L - 1)]  # z[ℓ−1]: G^ℓ x_q
    p = [d + 1 + (L - 1) * d + i for i in range(L)]
    with torch.no_grad():
        for param in model.parameters():
            param.zero_()
        for i in xs:
            model.read_in.weight[i, i] = 1.0
        model.read_in.weight[y_slot, d] = 1.0
        for layer, block in enumerate(model.blocks):
            attn = block.attn.layer
            query = xs if layer == 0 else z[layer - 1]  # the vector this layer multiplies by G
            # head 0: p ← Σ_s y_s ⟨x_s, query_t⟩ / (t + 1)
            for i in range(d):
                attn.W_Q[0, i, query[i]] = 1.0
                attn.W_K[0, i, xs[i]] = 1.0
            attn.W_V[0, 0, y_slot] = 1.0
            attn.W_O[0, p[layer], 0] = 1.0
            if layer < L - 1:  # head 1: z ← Σ_s x_s ⟨x_s, query_t⟩ / (t + 1)
                for i in range(d):
                    attn.W_Q[1, i, query[i]] = 1.0
                    attn.W_K[1, i, xs[i]] = 1.0
                    attn.W_V[1, i, xs[i]] = 1.0
                    attn.W_O[1, z[layer][i], i] = 1.0
        for m, c in enumerate(coefficients):
            model.read_out.weight[0, p[m]] = c
    return model
