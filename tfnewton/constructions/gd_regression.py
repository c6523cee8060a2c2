r"""Gradient descent on the in-context loss: one linear-attention layer per step (von Oswald et al. 2023).

The algorithm (:func:`tfnewton.algorithms.gradient_descent_least_squares`)
--------------------------------------------------------------------------
``L(w) = (1/2n)‖y − Xw‖²``, ``w₀ = 0``,
``w_{t+1} = w_t + (η/n) Σ_i r_i x_i`` with the residuals ``r_i = y_i − x_iᵀw_t``.

The idea (von Oswald et al.)
----------------------------
Do not store ``w``: store the residuals. One step changes every residual by
``r_i ← r_i − x_iᵀΔw = r_i − (η/n) Σ_j r_j ⟨x_j, x_i⟩`` — a sum over tokens of a
value (``r_j``) times a key–query product (``⟨x_j, x_i⟩``): one linear-attention
head. A query token that starts with "residual" ``0`` follows the same rule and
holds ``−x_qᵀw_t`` after ``t`` layers; minus that is the prediction.

The token layout
----------------
``T = n + 1`` tokens (the context pairs, then the query), width ``D = 3d + 2``::

    slot   size  context i       query         written by
    "x"     d    c·x_i           0             embedding
    "r"     1    c·(y_i − x_iᵀw)  −x_qᵀw        embedding (w₀ = 0), every block
    "q"     d    0               x_q           embedding
    "flag"  1    0               1             embedding
    "w"     d    0               w_t           every block

The step size and the 1/n live in the embedding: the weights hold ``η/n = 1``
and the context is scaled by ``c = √(η/n)`` (the query is not). Each
layer then adds ``c²(…) = (η/n)(…)`` exactly: ``Σ_j (c r_j)(c x_j) = (η/n) Σ_j r_j x_j``.
``lr=None`` uses the algorithm's default ``η = 1/λ_max(S/n)``, i.e. ``c = 1/σ_max(X)``
(:func:`tfnewton.algorithms.default_newton_alpha` of ``X`` is ``1/σ_max(X)²``).

One block = one GD step (a head: ``out_t = Σ_s v_s ⟨k_s, q_t⟩``)
----------------------------------------------------------------
* head 0: ``q = "x" + "q"`` (``c·x_i`` at context tokens, ``x_q`` at the query),
  ``k = "x"``, ``v = "r"``; ``W_O`` subtracts the result from ``"r"``: the residual
  update above, for every token at once (the query's ``"x"`` slot is empty, so
  the query never acts as a key: no mask needed);
* head 1: ``q = "flag"``, ``k = "r"``, ``v = "x"``; at the query
  ``Σ_j (c x_j)(c r_j) = Δw``, added to ``"w"`` — the iterate itself, written
  down so that probes can read ``w_t`` linearly (von Oswald's model keeps it implicit).

Count: **steps layers**, 2 heads of dimension ``d`` each, width ``3d + 2``.
After block ``t − 1`` (``block_of_step(t)``) the query holds ``w_t`` and ``−x_qᵀw_t``.
"""

from __future__ import annotations

import torch

from .. import _validate as v
from ..algorithms import default_newton_alpha
from ._base import RegressionConstruction, TokenLayout, attention_block, check_build, read_slot, write_slot

__all__ = ["GDRegressionTransformer", "gd_regression_transformer"]


class GDRegressionTransformer(RegressionConstruction):
    """Gradient descent for in-context least squares; build with :func:`gd_regression_transformer`.

    Attributes
    ----------
    d, steps : int
    lr : float or None
    layout : TokenLayout
        Slots ``x, r, q, flag, w`` (see the module docstring).
    blocks : nn.ModuleList
        ``steps`` residual linear-attention blocks, one per GD step.
    """

    HEAD_NAMES = ("residuals (−)", "w += Δw")
    SLOT_CONTENTS = {
        "context i": {"x": "c·x_i", "r": "c·(y_i − x_iᵀw_t)"},
        "query": {"r": "−x_qᵀw_t", "q": "x_q", "flag": "1", "w": "w_t"},
    }

    def __init__(self, d: int, steps: int, lr=None, *, dtype=torch.float64, device=None):
        d, steps, dtype, device = check_build(d, steps, dtype, device)
        super().__init__()
        self.d, self.steps = d, steps
        self.lr = None if lr is None else v.check_positive(lr, "lr")
        self.layout = TokenLayout(x=d, r=1, q=d, flag=1, w=d)
        self.blocks.extend(self._step_block(dtype=dtype, device=device) for _ in range(steps))

    def _step_block(self, **kw):
        L, d = self.layout, self.d
        block = attention_block(L.width, n_heads=2, head_dim=d, value_dim=d, **kw)
        a = block.layer
        with torch.no_grad():
            # head 0: r_t ← r_t − Σ_j r_j ⟨x_j, x_t⟩
            read_slot(a.W_Q, 0, L["x"])
            read_slot(a.W_Q, 0, L["q"])
            read_slot(a.W_K, 0, L["x"])
            read_slot(a.W_V, 0, L["r"])
            write_slot(a.W_O, 0, L["r"], -1.0)
            # head 1: w ← w + Σ_j r_j x_j at the query
            read_slot(a.W_Q, 1, L["flag"])
            read_slot(a.W_K, 1, L["r"])
            read_slot(a.W_V, 1, L["x"])
            write_slot(a.W_O, 1, L["w"])
        return block

    def scale(self, X: torch.Tensor) -> torch.Tensor:
        """``c = √(η/n)`` per prompt, shape (B,)."""
        if self.lr is None:
            return default_newton_alpha(X).sqrt()  # η/n = 1/λ_max(XᵀX) = 1/σ_max(X)²
        return X.new_full((X.shape[0],), (self.lr / X.shape[1]) ** 0.5)

    def embed(self, X, y, x_query=None) -> torch.Tensor:
        """The initial stream, shape (B, n + 1, 3d + 2); see the module docstring."""
        x_query = self._check(X, y, x_query, need_query=False)
        L = self.layout
        B, n, _ = X.shape
        c = self.scale(X).reshape(B, 1, 1)
        H = X.new_zeros((B, n + 1, L.width))
        H[:, :n, L["x"]] = c * X
        H[:, :n, L["r"]] = c * y.unsqueeze(-1)
        H[:, n, L["q"]] = x_query
        H[:, n, L["flag"]] = 1.0
        return H

    def readout(self, H: torch.Tensor) -> torch.Tensor:
        """The prediction ``x_qᵀw``: minus slot ``"r"`` of the last token; shape (B,)."""
        return -H[..., -1, self.layout["r"].start]

    def iterates(self, X, y) -> torch.Tensor:
        """Every ``w_t`` read from the query token: shape (steps + 1, B, d)."""
        w = self.layout["w"]
        return self.trace(self.embed(X, y), lambda H: H[:, -1, w])

    def predictions(self, X, y, x_query) -> torch.Tensor:
        """Every ``x_qᵀw_t``: shape (steps + 1, B)."""
        self._check(X, y, x_query)
        return self.trace(self.embed(X, y, x_query), self.readout)

    def block_of_step(self, k: int) -> int:
        """Block after which the query holds ``w_k``: ``k − 1`` (``-1``: the embedding, ``w₀ = 0``)."""
        return self._check_step(k) - 1


def gd_regression_transformer(d: int, steps: int, lr=None, *, dtype=torch.float64, device=None) -> GDRegressionTransformer:
    r"""A linear-attention Transformer whose prediction is gradient descent's ``x_qᵀ w_steps``.

    Parameters
    ----------
    d : int
        Input dimension.
    steps : int
        Number of GD steps = number of layers.
    lr : float, optional
        Step size η on ``(1/2n)‖y − Xw‖²``; ``None`` is
        :func:`tfnewton.algorithms.gradient_descent_least_squares`'s default
        ``1/λ_max(XᵀX/n)`` per prompt.
    dtype : torch.dtype
        Of the weights and of the inputs (float64 by default).
    device : str or torch.device, optional

    Returns
    -------
    GDRegressionTransformer
        ``forward(X, y, x_query) → (B,)``; ``.iterates(X, y) → (steps + 1, B, d)``.

    Examples
    --------
    >>> import torch
    >>> from tfnewton.tasks import sample_linear_regression
    >>> from tfnewton.algorithms import gradient_descent_least_squares
    >>> task = sample_linear_regression(4, 12, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> X, y, x_q, _ = task.context_and_query()
    >>> model = gd_regression_transformer(d=3, steps=5, lr=0.1)
    >>> w = gradient_descent_least_squares(X, y, 5, lr=0.1)[-1]
    >>> torch.allclose(model(X, y, x_q), (w * x_q).sum(-1))
    True
    """
    return GDRegressionTransformer(d, steps, lr, dtype=dtype, device=device)
