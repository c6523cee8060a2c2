r"""A linear-attention Transformer that runs Newton–Schulz: one layer, two heads per step.

The algorithm (:func:`tfnewton.algorithms.newton_schulz`)
----------------------------------------------------------
``X₀ = αAᵀ``, ``X_{t+1} = 2X_t − X_t A X_t``. With ``R_t = I − X_t A``,
``R_{t+1} = I − (2X_t − X_tAX_t)A = (I − X_tA)² = R_t²``, so the residual squares
every step; from ``R₀ = I − αAᵀA`` it converges iff ``0 < α < 2/σ_max(A)²``.

The token layout
----------------
One token per column ``j = 1…d``; the stream has width ``D = 3d``::

    token j = [ A[j, :]  |  X[:, j]  |  e_j ]
                 slot "A"   slot "X"   slot "E"
                 (column j  (column j  (one-hot
                  of Aᵀ)     of X_t)    position)

Read as a ``d × 3d`` matrix (tokens as rows) the stream is ``[A | X_tᵀ | I]``.
The embedding writes ``X₀ = αAᵀ`` into slot ``"X"`` (so row ``j`` is ``α A[j, :]``);
with ``alpha=None`` it uses the algorithm's default ``α = 1/σ_max(A)²`` per problem
(:func:`tfnewton.algorithms.default_newton_alpha`): the one non-linear number that
the network does not compute, as in Giannou et al., who assume a known bound on ‖A‖.

One step is one linear-attention layer
--------------------------------------
A head computes ``out_t = Σ_s v_s ⟨k_s, q_t⟩``. With the ``s``-sum running over the
``d`` tokens, choosing which slots feed ``q``, ``k``, ``v`` picks three of the
stored matrices and multiplies them:

* head 0, ``q_t = X[:, t]``, ``k_s = A[s, :]``, ``v_s = X[:, s]``:
  ``out_t = Σ_s X[:, s] (A X)[s, t] = (X A X)[:, t]``;  ``W_O`` writes ``−out`` into ``"X"``;
* head 1, ``q_t = e_t``, ``k_s = e_s``, ``v_s = X[:, s]``:
  ``out_t = Σ_s X[:, s] δ_{st} = X[:, t]``;  ``W_O`` writes ``+out`` into ``"X"``.

With the residual connection slot ``"X"`` becomes ``X + X − XAX = X_{t+1}``; slots
``"A"`` and ``"E"`` are never written, so the next layer has what it needs.

Count: **1 layer and 2 heads per step, width 3d**, head dimension ``d`` — within
Giannou et al.'s Theorem 4.1 (2 layers, 2 heads, width 4d per step). Every weight
is 0 or ±1; ``α`` lives in the embedding, so the same weights serve every problem.

Exactness: the layer performs the same products as the algorithm, grouped
differently (``(Σ_s v_s k_sᵀ) q_t``), so in float64 the two agree to rounding
(≈1e-13 relative after 20 steps with κ = 10³; see ``tests/test_constructions.py``).
"""

from __future__ import annotations

import torch

from .. import _validate as v
from ..algorithms import default_newton_alpha
from ._base import Construction, TokenLayout, attention_block, check_alpha, check_build, read_slot, write_slot

__all__ = ["NewtonSchulzTransformer", "newton_schulz_transformer"]


class NewtonSchulzTransformer(Construction):
    """Newton–Schulz for ``A⁻¹`` as a stack of linear-attention layers.

    Use :func:`newton_schulz_transformer` to build one.

    Attributes
    ----------
    d, steps : int
    alpha : float or None
        ``None``: ``1/σ_max(A)²`` per problem, the default of
        :func:`tfnewton.algorithms.newton_schulz`.
    layout : TokenLayout
        Slots ``"A"``, ``"X"``, ``"E"`` of width ``d`` each.
    blocks : nn.ModuleList
        ``steps`` residual linear-attention blocks, block ``t`` maps ``X_t`` to ``X_{t+1}``.
    """

    HEAD_NAMES = ("XAX (−)", "copy X (+)")
    SLOT_CONTENTS = {"token j": {"A": "A[j, :]", "X": "X_t[:, j]", "E": "e_j"}}

    def __init__(self, d: int, steps: int, alpha=None, *, dtype=torch.float64, device=None):
        d, steps, dtype, device = check_build(d, steps, dtype, device)
        super().__init__()
        self.d, self.steps, self.alpha = d, steps, check_alpha(alpha)
        self.layout = TokenLayout(A=d, X=d, E=d)
        self.blocks.extend(self._step_block(dtype, device) for _ in range(steps))

    def _step_block(self, dtype, device):
        L = self.layout
        block = attention_block(L.width, n_heads=2, head_dim=self.d, value_dim=self.d, dtype=dtype, device=device)
        attn = block.layer
        with torch.no_grad():
            W_Q, W_K, W_V, W_O = attn.W_Q, attn.W_K, attn.W_V, attn.W_O
            # head 0: X A X
            read_slot(W_Q, 0, L["X"])
            read_slot(W_K, 0, L["A"])
            read_slot(W_V, 0, L["X"])
            write_slot(W_O, 0, L["X"], -1.0)
            # head 1: X (the positional one-hots make Σ_s v_s ⟨e_s, e_t⟩ = v_t)
            read_slot(W_Q, 1, L["E"])
            read_slot(W_K, 1, L["E"])
            read_slot(W_V, 1, L["X"])
            write_slot(W_O, 1, L["X"], +1.0)
        return block

    # ------------------------------------------------------------------ hook protocol

    def _check_A(self, A) -> torch.Tensor:
        v.check_tensor(A, "A", ndim=3)
        if A.shape[-1] != A.shape[-2]:
            raise ValueError(f"A must hold square matrices (B, d, d), got shape {tuple(A.shape)}")
        if A.shape[-1] != self.d:
            raise ValueError(
                f"A must have shape (B, {self.d}, {self.d}) for this model built with d = {self.d}, "
                f"got {tuple(A.shape)}"
            )
        if A.shape[0] == 0:
            raise ValueError("A must hold at least one matrix, got batch size 0")
        self._check_like_model({"A": A})
        return A

    def embed(self, A: torch.Tensor) -> torch.Tensor:
        """The initial stream ``[A | X₀ᵀ | I]``, one token per row.

        Parameters
        ----------
        A : Tensor of shape (B, d, d)

        Returns
        -------
        Tensor of shape (B, d, 3d)
        """
        self._check_A(A)
        B, d = A.shape[0], self.d
        alpha = default_newton_alpha(A).reshape(B, 1, 1) if self.alpha is None else self.alpha
        eye = torch.eye(d, dtype=A.dtype, device=A.device).expand(B, d, d)
        # Row j of X₀ᵀ = αAᵀ is α·A[j, :]: the "X" slot of token j is α times its "A" slot.
        return torch.cat([A, alpha * A, eye], dim=-1)

    def readout(self, H: torch.Tensor) -> torch.Tensor:
        """``X_t`` from a stream: slot ``"X"`` of every token, as columns.

        Parameters
        ----------
        H : Tensor of shape (B, d, 3d)

        Returns
        -------
        Tensor of shape (B, d, d)
        """
        return H[..., self.layout["X"]].transpose(-1, -2)

    def forward(self, A: torch.Tensor) -> torch.Tensor:
        """The estimate ``X_steps`` of ``A⁻¹``.

        Parameters
        ----------
        A : Tensor of shape (B, d, d)
            In the model's dtype and on its device.

        Returns
        -------
        Tensor of shape (B, d, d)
        """
        return self.readout(self.run_blocks(self.embed(A)))

    def hidden_states(self, A: torch.Tensor) -> torch.Tensor:
        """The stream before the first block and after each block: shape (steps + 1, B, d, 3d)."""
        return self.run_blocks(self.embed(A), return_hidden=True)[1]

    def iterates(self, A: torch.Tensor) -> torch.Tensor:
        """Every ``X_t`` read out of the hidden states.

        Parameters
        ----------
        A : Tensor of shape (B, d, d)

        Returns
        -------
        Tensor of shape (steps + 1, B, d, d)
            ``out[t]`` is the stream after ``t`` blocks read as ``X_t``; compare with
            ``tfnewton.algorithms.newton_schulz(A, steps, alpha)``.
        """
        return self.readout(self.hidden_states(A))

    def block_of_step(self, k: int) -> int:
        """Block after which the stream holds ``X_k``: ``k − 1`` (``-1``: the embedding holds ``X₀``)."""
        return self._check_step(k) - 1


def newton_schulz_transformer(d: int, steps: int, alpha=None, *, dtype=torch.float64, device=None) -> NewtonSchulzTransformer:
    r"""A linear-attention Transformer whose forward pass is ``steps`` Newton–Schulz steps.

    Parameters
    ----------
    d : int
        Size of the matrices ``A`` it inverts.
    steps : int
        Number of Newton–Schulz steps = number of layers.
    alpha : float, optional
        ``X₀ = αAᵀ``. ``None`` uses :func:`tfnewton.algorithms.newton_schulz`'s default
        ``1/σ_max(A)²`` per problem, computed in the embedding.
    dtype : torch.dtype
        Of the weights, and of the inputs the model accepts (float64 by default).
    device : str or torch.device, optional

    Returns
    -------
    NewtonSchulzTransformer
        ``steps`` blocks, each one linear-attention layer with 2 heads of dimension
        ``d``, width ``3d``. ``forward(A) → (B, d, d)``; ``.iterates(A) → (steps+1, B, d, d)``.

    Examples
    --------
    >>> import torch
    >>> from tfnewton.constructions import newton_schulz_transformer
    >>> from tfnewton.algorithms import newton_schulz
    >>> A = torch.tensor([[[2.0, 1.0], [0.0, 4.0]]], dtype=torch.float64)
    >>> model = newton_schulz_transformer(d=2, steps=10)
    >>> torch.allclose(model(A), newton_schulz(A, 10)[-1])
    True
    >>> len(model.blocks), model.heads_per_block()[0], model.width
    (10, 2, 6)
    """
    return NewtonSchulzTransformer(d, steps, alpha, dtype=dtype, device=device)
