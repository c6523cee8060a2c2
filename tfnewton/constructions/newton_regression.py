r"""In-context least squares by Iterative Newton: a linear-attention Transformer of ``steps + 2`` layers.

The algorithm (:func:`tfnewton.algorithms.newton_least_squares`, Fu et al. 2024)
--------------------------------------------------------------------------------
``S = XᵀX``, ``M₀ = αS``, ``M_{k+1} = 2M_k − M_k S M_k``, ``w_k = M_k Xᵀy``; the
prediction for a query is ``p_k = x_qᵀ w_k``. It is Newton–Schulz for ``S⁻¹``
started at ``αSᵀ``, so the same one-layer step of
:mod:`~tfnewton.constructions.newton_schulz` applies once ``S`` sits in the tokens.

The token layout
----------------
``T = n + 1 + d`` tokens: the ``n`` context pairs, the query, then ``d``
*matrix tokens* that hold the columns of ``S`` and ``M_k``. Width ``D = 6d + 4``::

    slot   size  context i   query      matrix token j     written by
    "x"     d    c·x_i       0          0                  embedding
    "y"     1    c·y_i       0          0                  embedding
    "q"     d    0           x_q        0                  embedding
    "flag"  1    0           1          0                  embedding
    "E"     d    0           0          e_j                embedding
    "S"     d    0           0          S̃[:, j]           block 0
    "M"     d    0           0          M̃_k[:, j]         block 0, then every Newton block
    "u"     1    0           0          (X̃ᵀỹ)_j           block 0
    "w"     d    0           w_k        0                  Newton blocks, readout block
    "p"     1    0           x_qᵀw_k    0                  Newton blocks, readout block

The step size. The weights hold ``α = 1``; the embedding scales the context
(``x_i`` *and* ``y_i``) by ``c = α^{1/4}``, leaving the query alone. Then
``S̃ = c²S``, ``M̃_k = M_k / c²`` (induction: ``M̃₀ = S̃ = c²S = αS/c²``) and
``w̃_k = M̃_k X̃ᵀỹ = (M_k/c²)(c²Xᵀy) = w_k`` **exactly**, so slots ``"w"`` and ``"p"``
hold the algorithm's own iterate and prediction. ``alpha=None`` uses the
algorithm's default ``1/λ_max(S)²``, i.e. ``c = 1/σ_max(X)``
(:func:`tfnewton.algorithms.default_newton_alpha` applied to ``X`` gives
``1/σ_max(X)² = 1/λ_max(S)``): a per-prompt normalisation, the one non-linear
number the network does not compute (Fu et al. and Giannou et al. take the
scale as given).

The layers (a head: ``out_t = Σ_s v_s ⟨k_s, q_t⟩``)
---------------------------------------------------
* **Block 0, the Gram layer** (1 head): ``q = "E"``, ``k = "x"``, ``v = ["x"; "y"]``,
  so matrix token ``j`` receives ``Σ_i [x̃_i; ỹ_i] x̃_i[j] = [S̃[:, j]; (X̃ᵀỹ)_j]``;
  ``W_O`` writes the first part into ``"S"`` *and* ``"M"`` (``M̃₀ = S̃``), the last
  into ``"u"``. The other tokens have ``q = 0`` and receive nothing.
* **Block k = 1…steps, Newton step k** (4 heads, dimension ``d``, values ``d + 1``):

  - head 0: ``q = "M"``, ``k = "S"``, ``v = "M"`` → ``(M S M)[:, t]``, subtracted from ``"M"``;
  - head 1: ``q = "E"``, ``k = "E"``, ``v = "M"`` → ``M[:, t]``, added to ``"M"``;
    together ``M_{k−1} → 2M − MSM = M_k`` (as in Newton–Schulz);
  - head 2: ``q = "flag"``, ``k = "u" + "flag"``, ``v = ["M" − "w"; −"p"]`` → at the
    query ``Σ_j M[:, j] u_j − w = w_{k−1} − w``, written into ``["w"; "p"]``: the
    query's ``"w"`` becomes ``w_{k−1}`` (the old value is cancelled) and ``"p"`` is cleared;
  - head 3: ``q = "q"``, ``k = "M"``, ``v = "u"`` → at the query
    ``Σ_j u_j ⟨M[:, j], x_q⟩ = x_qᵀ M u = p_{k−1}``, written into ``"p"``.

  Heads 2–3 read ``M_{k−1}`` (the block's input), so after block ``k`` the query
  holds ``w_{k−1}`` and ``p_{k−1}`` while the matrix tokens hold ``M_k``.
* **Block steps + 1, the read-out layer**: heads 2 and 3 once more, for ``w_steps``
  and ``p_steps``. ``readout(H)`` returns slot ``"p"`` of the query token.

Count: **steps + 2 layers**, width ``6d + 4 = O(d)``, at most 4 heads. Fu et al.'s
Theorem uses ``steps + 8`` layers (3 to form ``M₀``, 5 to read out); Giannou et al.
``3 + steps``. We save layers because one attention layer forms ``S`` and ``Xᵀy``
at once (the matrix tokens' one-hot queries pick the columns) and because the
query's read-out heads ride along inside each Newton block.

Where iterate k is: the query token after block ``k + 1`` (``block_of_step(k)``),
in slots ``"w"`` (the vector ``w_k``) and ``"p"`` (the prediction ``x_qᵀw_k``); the
matrix ``M̃_k = M_k/c²`` after block ``k``.
"""

from __future__ import annotations

import torch

from ..algorithms import default_newton_alpha
from ._base import (
    RegressionConstruction,
    TokenLayout,
    attention_block,
    check_alpha,
    check_build,
    read_slot,
    write_slot,
)

__all__ = ["NewtonRegressionTransformer", "newton_regression_transformer"]


class NewtonRegressionTransformer(RegressionConstruction):
    """Iterative Newton for in-context least squares; build with :func:`newton_regression_transformer`.

    Attributes
    ----------
    d, steps : int
    alpha : float or None
    layout : TokenLayout
        Slots ``x, y, q, flag, E, S, M, u, w, p`` (see the module docstring).
    blocks : nn.ModuleList
        ``steps + 2`` residual linear-attention blocks: Gram, ``steps`` Newton steps, read-out.
    """

    HEAD_NAMES = ("MSM (−)", "copy M (+)", "w ← Mu", "p ← x_qᵀMu")
    SLOT_CONTENTS = {
        "context i": {"x": "c·x_i", "y": "c·y_i"},
        "query": {"q": "x_q", "flag": "1", "w": "w_k", "p": "x_qᵀw_k"},
        "matrix token j": {"E": "e_j", "S": "S̃[:, j]", "M": "M̃_k[:, j]", "u": "(X̃ᵀỹ)_j"},
    }

    def __init__(self, d: int, steps: int, alpha=None, *, dtype=torch.float64, device=None):
        d, steps, dtype, device = check_build(d, steps, dtype, device)
        super().__init__()
        self.d, self.steps, self.alpha = d, steps, check_alpha(alpha)
        self.layout = TokenLayout(x=d, y=1, q=d, flag=1, E=d, S=d, M=d, u=1, w=d, p=1)
        kw = dict(dtype=dtype, device=device)
        self.blocks.append(self._gram_block(**kw))
        self.blocks.extend(self._newton_block(**kw) for _ in range(steps))
        self.blocks.append(self._readout_block(**kw))

    # ------------------------------------------------------------------ weights

    def _gram_block(self, **kw):
        L, d = self.layout, self.d
        block = attention_block(L.width, n_heads=1, head_dim=d, value_dim=d + 1, **kw)
        a = block.layer
        with torch.no_grad():
            read_slot(a.W_Q, 0, L["E"])
            read_slot(a.W_K, 0, L["x"])
            read_slot(a.W_V, 0, L["x"])
            read_slot(a.W_V, 0, L["y"], offset=d)
            write_slot(a.W_O, 0, L["S"])
            write_slot(a.W_O, 0, L["M"])  # M̃₀ = S̃ (α = 1 in the weights)
            write_slot(a.W_O, 0, L["u"], offset=d)
        return block

    def _write_query_heads(self, a, h_w: int, h_p: int) -> None:
        """Heads that give the query w = M u and p = x_qᵀ M u, replacing the old values."""
        L, d = self.layout, self.d
        # w-head: key u_j at matrix tokens and 1 at the query, query vector = flag.
        read_slot(a.W_Q, h_w, L["flag"])
        read_slot(a.W_K, h_w, L["u"])
        read_slot(a.W_K, h_w, L["flag"])
        read_slot(a.W_V, h_w, L["M"])
        read_slot(a.W_V, h_w, L["w"], -1.0)  # the query's old w, cancelled
        read_slot(a.W_V, h_w, L["p"], -1.0, offset=d)  # the query's old p, cleared
        write_slot(a.W_O, h_w, L["w"])
        write_slot(a.W_O, h_w, L["p"], offset=d)
        # p-head: Σ_j u_j ⟨M[:, j], x_q⟩.
        read_slot(a.W_Q, h_p, L["q"])
        read_slot(a.W_K, h_p, L["M"])
        read_slot(a.W_V, h_p, L["u"])
        write_slot(a.W_O, h_p, L["p"])

    def _newton_block(self, **kw):
        L, d = self.layout, self.d
        block = attention_block(L.width, n_heads=4, head_dim=d, value_dim=d + 1, **kw)
        a = block.layer
        with torch.no_grad():
            read_slot(a.W_Q, 0, L["M"])  # head 0: M S M
            read_slot(a.W_K, 0, L["S"])
            read_slot(a.W_V, 0, L["M"])
            write_slot(a.W_O, 0, L["M"], -1.0)
            read_slot(a.W_Q, 1, L["E"])  # head 1: M
            read_slot(a.W_K, 1, L["E"])
            read_slot(a.W_V, 1, L["M"])
            write_slot(a.W_O, 1, L["M"], +1.0)
            self._write_query_heads(a, 2, 3)
        return block

    def _readout_block(self, **kw):
        block = attention_block(self.layout.width, n_heads=2, head_dim=self.d, value_dim=self.d + 1, **kw)
        with torch.no_grad():
            self._write_query_heads(block.layer, 0, 1)
        return block

    # ------------------------------------------------------------------ hook protocol

    def scale(self, X: torch.Tensor) -> torch.Tensor:
        """``c = α^{1/4}`` per prompt, shape (B,): the embedding's scale of the context."""
        if self.alpha is None:
            return default_newton_alpha(X).sqrt()  # 1/σ_max(X) = (1/λ_max(S)²)^{1/4}
        return X.new_full((X.shape[0],), self.alpha**0.25)

    def embed(self, X: torch.Tensor, y: torch.Tensor, x_query: torch.Tensor | None = None) -> torch.Tensor:
        """The initial stream: context tokens, the query, ``d`` matrix tokens.

        Parameters
        ----------
        X : Tensor of shape (B, n, d)
        y : Tensor of shape (B, n)
        x_query : Tensor of shape (B, d), optional
            Zeros when omitted (then only slot ``"w"`` is meaningful).

        Returns
        -------
        Tensor of shape (B, n + 1 + d, 6d + 4)
        """
        return self._coordinate_token_stream(X, y, x_query)

    def _query_trace(self, X, y, x_query, slot: str) -> torch.Tensor:
        n, s = X.shape[1], self.layout[slot]
        trace = self.trace(self.embed(X, y, x_query), lambda H: H[:, n, s])  # (L + 1, B, size)
        idx = [self.hidden_index_of_step(k) for k in range(self.steps + 1)]
        return trace[idx]

    def iterates(self, X, y) -> torch.Tensor:
        """Every ``w_k``, read from the query token after block ``k + 1``: shape (steps + 1, B, d)."""
        return self._query_trace(X, y, None, "w")

    def predictions(self, X, y, x_query) -> torch.Tensor:
        """Every ``x_qᵀ w_k``, read from the query token: shape (steps + 1, B)."""
        self._check(X, y, x_query)
        return self._query_trace(X, y, x_query, "p")[..., 0]

    def block_of_step(self, k: int) -> int:
        """Block after which the query token holds ``w_k`` and ``x_qᵀw_k``: ``k + 1``."""
        return self._check_step(k) + 1

    def matrix_block_of_step(self, k: int) -> int:
        """Block after which the matrix tokens hold ``M̃_k = M_k/c²``: ``k``."""
        return self._check_step(k)


def newton_regression_transformer(d: int, steps: int, alpha=None, *, dtype=torch.float64, device=None) -> NewtonRegressionTransformer:
    r"""A linear-attention Transformer whose prediction is Iterative Newton's ``x_qᵀ w_steps``.

    Parameters
    ----------
    d : int
        Input dimension.
    steps : int
        Number of Newton steps; the model has ``steps + 2`` layers.
    alpha : float, optional
        ``M₀ = αXᵀX``; ``None`` is :func:`tfnewton.algorithms.newton_least_squares`'s
        default ``1/λ_max(XᵀX)²`` per prompt.
    dtype : torch.dtype
        Of the weights and of the inputs (float64 by default).
    device : str or torch.device, optional

    Returns
    -------
    NewtonRegressionTransformer
        ``forward(X, y, x_query) → (B,)``; ``.iterates(X, y) → (steps + 1, B, d)``.

    Examples
    --------
    >>> import torch
    >>> from tfnewton.tasks import sample_linear_regression
    >>> from tfnewton.algorithms import newton_least_squares
    >>> task = sample_linear_regression(4, 12, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> X, y, x_q, _ = task.context_and_query()
    >>> model = newton_regression_transformer(d=3, steps=6)
    >>> w = newton_least_squares(X, y, 6)[-1]
    >>> torch.allclose(model(X, y, x_q), (w * x_q).sum(-1))
    True
    >>> len(model.blocks)
    8
    """
    return NewtonRegressionTransformer(d, steps, alpha, dtype=dtype, device=device)
