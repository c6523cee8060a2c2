r"""The in-context LISTA variant as a Transformer: attention takes the gradient step, a ReLU MLP soft-thresholds.

The algorithm (:class:`tfnewton.sparse.InContextLISTA`)
-------------------------------------------------------
``β₀ = 0``, ``β_k = soft(β_{k−1} + γ_k Xᵀ(y − Xβ_{k−1}), θ_k)`` for ``k = 1…K``, with one step
size ``γ_k`` and one threshold ``θ_k ≥ 0`` per layer and the prompt's own ``X`` — our reading
of Liu et al.'s (2024) LISTA-VM; ISTA with a fixed step when every ``γ_k = η`` and
``θ_k = η·λ``. The prediction for a query is ``p_k = x_qᵀβ_k``.

Two facts make it a Transformer:

* the gradient step is linear in what the tokens hold once ``S = XᵀX`` and ``u = Xᵀy`` sit in
  them: ``β + γ(u − Sβ)``, products that linear attention forms (``Xᵀ(y − Xβ) = u − Sβ``, and
  ``S`` and ``u`` are formed from the context tokens once, by the first attention layer);
* soft-thresholding *is* piecewise linear, ``soft(z, θ) = ReLU(z − θ) − ReLU(−z − θ)``, so a
  ReLU MLP computes it exactly, with no approximation.

The token layout
----------------
``T = n + 1 + d`` tokens: the ``n`` context pairs, the query, then ``d`` *coordinate tokens*,
token ``j`` holding coordinate ``j`` of ``β`` (and column ``j`` of ``S``), as
:mod:`~tfnewton.constructions.newton_regression` stores its matrices. Width ``D = 4d + 5``::

    slot    size  context i   query      coordinate token j   written by
    "x"      d    x_i         0          0                    embedding
    "y"      1    y_i         0          0                    embedding
    "q"      d    0           x_q        0                    embedding
    "flag"   1    0           1          0                    embedding
    "E"      d    0           0          e_j                  embedding
    "S"      d    0           0          S[:, j]              layer 0
    "u"      1    0           0          (Xᵀy)_j              layer 0
    "beta"   1    0           0          z_j, then β_j        every layer
    "p"      1    0           x_qᵀβ_k    0                    prediction heads

No scale enters the embedding: ``γ_k`` and ``θ_k`` are weights. With ``normalize_steps=True``
(the variant whose step is ``γ_k/λ_max(XᵀX)`` per prompt) the embedding scales the context,
``x_i`` *and* ``y_i``, by ``c = 1/σ_max(X)`` as :mod:`~tfnewton.constructions.gd_regression`
does: then ``S̃ = c²S``, ``ũ = c²u`` and ``γ(ũ − S̃β) = (γ/λ_max(XᵀX))(u − Sβ)`` exactly, while
``β``, the thresholds and the query keep their units. ``c`` is the one number the network does
not compute.

The layers (a head: ``out_t = Σ_s v_s ⟨k_s, q_t⟩``)
---------------------------------------------------
Step ``k`` is an attention layer (the gradient step, ``"beta" ← z = β + γ_k(u − Sβ)``) followed
by an MLP layer (the proximal step, ``"beta" ← soft(z, θ_k)``):

* **Attention of step 1** (1 head, the Gram head): ``q = "E"``, ``k = "x"``, ``v = ["x"; "y"]``,
  so coordinate token ``j`` receives ``Σ_i [x_i; y_i] x_i[j] = [S[:, j]; u_j]``; ``W_O`` writes
  them into ``"S"`` and ``"u"``, and ``γ₁u_j`` into ``"beta"`` (``z₁ = γ₁u`` since ``β₀ = 0``).
  The other tokens have ``q = 0`` and receive nothing.
* **Attention of step k ≥ 2** (3 heads):

  - head 0: ``q = "S"``, ``k = "E"``, ``v = "beta"`` → ``Σ_l β_l S[l, j] = (Sβ)_j``, times ``−γ_k``
    into ``"beta"``;
  - head 1: ``q = "E"``, ``k = "E"``, ``v = "u"`` → ``u_j`` (one-hot keys pick the token itself),
    times ``+γ_k`` into ``"beta"``: together ``z_j = β_j + γ_k(u − Sβ)_j``;
  - head 2, the prediction head: ``q = ["q"; "flag"]``, ``k = ["E"; "flag"]``,
    ``v = "beta" − "p"`` → at the query ``Σ_l β_l x_q[l] − p = x_qᵀβ_{k−1} − p`` into ``"p"``,
    which so holds ``p_{k−1}`` (the old value cancelled: only the query has a ``"flag"`` key).
* **MLP of step k** (4 ReLU units): ``ReLU(z − θ_k)``, ``ReLU(−z − θ_k)``, ``ReLU(z)``,
  ``ReLU(−z)`` from ``z = "beta"``; ``"beta" += (h₁ − h₂) − (h₃ − h₄) = soft(z, θ_k) − z``.
  Every other token has ``"beta" = 0`` and ``θ_k ≥ 0``, so it receives ``0``.
* **The read-out layer** (1 head): the prediction head once more, for ``p_K``.

Count: **2K + 1 layers** (``K`` attention + MLP pairs, i.e. one Transformer block per
iteration, and one read-out attention layer), width ``4d + 5``, at most 3 heads of dimension
``d + 1``, MLPs of 4 units. Every weight is ``0``, ``±1``, ``±γ_k`` or ``−θ_k``.

Where iterate k is (layers counted from 0): the coordinate tokens hold ``β_k`` in ``"beta"``
after layer ``2k − 1``, step ``k``'s MLP (``estimate_block_of_step(k)``; ``−1``: the embedding,
``β₀ = 0``); the next attention layer overwrites it with ``z_{k+1}`` while its prediction head
writes ``p_k`` into the query's ``"p"``, which is read after layer ``2k``
(``block_of_step(k)``, where ``readout`` gives step ``k``'s answer).
"""

from __future__ import annotations

import torch

from .. import _validate as v
from ..algorithms import default_newton_alpha
from ..layers import ReluMLP, Residual
from ._base import RegressionConstruction, TokenLayout, attention_block, check_build, read_slot, write_slot

__all__ = ["InContextISTATransformer", "in_context_ista_transformer"]


def _schedule(values, name: str, *, allow_zero: bool) -> list[float]:
    """A sequence (or 1-D tensor) of real numbers > 0 (or >= 0), as floats."""
    if isinstance(values, torch.Tensor):
        if values.ndim != 1:
            raise ValueError(f"{name} must be a sequence or a 1-D tensor of K numbers, got shape {tuple(values.shape)}")
        values = values.detach().cpu().tolist()
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(f"{name} must be a sequence of K numbers, got {type(values).__name__}")
    return [v.check_positive(x, f"{name} entries", allow_zero=allow_zero) for x in values]


class InContextISTATransformer(RegressionConstruction):
    """The in-context LISTA variant, one attention + MLP pair per step; build with :func:`in_context_ista_transformer`.

    Attributes
    ----------
    d, steps : int
    step_sizes, thresholds : list of float
        ``γ_k`` and ``θ_k``, ``k = 1…steps``.
    layout : TokenLayout
        Slots ``x, y, q, flag, E, S, u, beta, p`` (see the module docstring).
    blocks : nn.ModuleList
        ``2·steps + 1`` residual layers: attention, MLP for each step, then the read-out attention.
    """

    HEAD_NAMES = ("−γSβ", "+γu", "p ← x_qᵀβ")
    SLOT_CONTENTS = {
        "context i": {"x": "x_i", "y": "y_i"},
        "query": {"q": "x_q", "flag": "1", "p": "x_qᵀβ_k"},
        "coordinate token j": {"E": "e_j", "S": "S[:, j]", "u": "(Xᵀy)_j", "beta": "β_k[j]"},
    }

    def __init__(self, d: int, step_sizes, thresholds, *, normalize_steps: bool = False, dtype=torch.float64, device=None):
        if not isinstance(normalize_steps, bool):
            raise TypeError(f"normalize_steps must be True or False, got {normalize_steps!r}")
        gammas = _schedule(step_sizes, "step_sizes", allow_zero=False)
        thetas = _schedule(thresholds, "thresholds", allow_zero=True)
        if len(gammas) != len(thetas):
            raise ValueError(
                f"step_sizes and thresholds must have one entry per step, got {len(gammas)} and {len(thetas)}"
            )
        d, steps, dtype, device = check_build(d, len(gammas), dtype, device)
        super().__init__()
        self.d, self.steps = d, steps
        self.step_sizes, self.thresholds = gammas, thetas
        self.normalize_steps = normalize_steps
        self.layout = TokenLayout(x=d, y=1, q=d, flag=1, E=d, S=d, u=1, beta=1, p=1)
        kw = dict(dtype=dtype, device=device)
        for k, (gamma, theta) in enumerate(zip(gammas, thetas)):
            self.blocks.append(self._gram_block(gamma, **kw) if k == 0 else self._gradient_block(gamma, **kw))
            self.blocks.append(self._threshold_block(theta, **kw))
        self.blocks.append(self._readout_block(**kw))

    # ------------------------------------------------------------------ weights

    def _attention(self, n_heads, **kw):
        return attention_block(self.layout.width, n_heads=n_heads, head_dim=self.d + 1, value_dim=self.d + 1, **kw)

    def _gram_block(self, gamma, **kw):
        L, d = self.layout, self.d
        block = self._attention(1, **kw)
        a = block.layer
        with torch.no_grad():
            read_slot(a.W_Q, 0, L["E"])
            read_slot(a.W_K, 0, L["x"])
            read_slot(a.W_V, 0, L["x"])
            read_slot(a.W_V, 0, L["y"], offset=d)
            write_slot(a.W_O, 0, L["S"])
            write_slot(a.W_O, 0, L["u"], offset=d)
            write_slot(a.W_O, 0, L["beta"], gamma, offset=d)  # z₁ = β₀ + γ₁u with β₀ = 0
        return block

    def _write_prediction_head(self, a, h: int) -> None:
        """Head ``h`` replaces the query's ``"p"`` by ``x_qᵀβ`` (β read from the coordinate tokens)."""
        L, d = self.layout, self.d
        read_slot(a.W_Q, h, L["q"])
        read_slot(a.W_Q, h, L["flag"], offset=d)
        read_slot(a.W_K, h, L["E"])
        read_slot(a.W_K, h, L["flag"], offset=d)
        read_slot(a.W_V, h, L["beta"])
        read_slot(a.W_V, h, L["p"], -1.0)  # the query's old prediction, cancelled
        write_slot(a.W_O, h, L["p"])

    def _gradient_block(self, gamma, **kw):
        L = self.layout
        block = self._attention(3, **kw)
        a = block.layer
        with torch.no_grad():
            read_slot(a.W_Q, 0, L["S"])  # head 0: −γ (Sβ)_j
            read_slot(a.W_K, 0, L["E"])
            read_slot(a.W_V, 0, L["beta"])
            write_slot(a.W_O, 0, L["beta"], -gamma)
            read_slot(a.W_Q, 1, L["E"])  # head 1: +γ u_j
            read_slot(a.W_K, 1, L["E"])
            read_slot(a.W_V, 1, L["u"])
            write_slot(a.W_O, 1, L["beta"], gamma)
            self._write_prediction_head(a, 2)
        return block

    def _threshold_block(self, theta, **kw):
        beta = self.layout["beta"].start
        mlp = ReluMLP(self.layout.width, 4, **kw)
        with torch.no_grad():
            mlp.fc_in.weight.zero_()
            mlp.fc_in.weight[:, beta] = mlp.fc_in.weight.new_tensor([1.0, -1.0, 1.0, -1.0])  # z, −z, z, −z
            mlp.fc_in.bias.copy_(mlp.fc_in.bias.new_tensor([-theta, -theta, 0.0, 0.0]))
            mlp.fc_out.weight.zero_()
            mlp.fc_out.weight[beta] = mlp.fc_out.weight.new_tensor([1.0, -1.0, -1.0, 1.0])  # soft(z, θ) − z
            mlp.fc_out.bias.zero_()
        mlp.requires_grad_(False)
        return Residual(mlp)

    def _readout_block(self, **kw):
        block = self._attention(1, **kw)
        with torch.no_grad():
            self._write_prediction_head(block.layer, 0)
        return block

    # ------------------------------------------------------------------ hook protocol

    def scale(self, X: torch.Tensor) -> torch.Tensor:
        """``c`` per prompt, shape (B,): ``1/σ_max(X)`` with ``normalize_steps``, else 1."""
        if self.normalize_steps:
            return default_newton_alpha(X).sqrt()  # 1/σ_max(X)
        return X.new_ones(X.shape[0])

    def embed(self, X: torch.Tensor, y: torch.Tensor, x_query: torch.Tensor | None = None) -> torch.Tensor:
        """The initial stream: context tokens, the query, ``d`` coordinate tokens.

        Parameters
        ----------
        X : Tensor of shape (B, n, d)
        y : Tensor of shape (B, n)
        x_query : Tensor of shape (B, d), optional
            Zeros when omitted (then only the estimates are meaningful).

        Returns
        -------
        Tensor of shape (B, n + 1 + d, 4d + 5)
        """
        return self._coordinate_token_stream(X, y, x_query)

    def read_estimate(self, H: torch.Tensor) -> torch.Tensor:
        """The estimate of ``β``: slot ``"beta"`` of the ``d`` coordinate tokens, shape (B, d) (or (…, B, d))."""
        return H[..., -self.d :, self.layout["beta"].start]

    def iterates(self, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Every ``β_k``, read from the coordinate tokens after layer ``2k − 1``: shape (steps + 1, B, d)."""
        trace = self.trace(self.embed(X, y), self.read_estimate)  # (L + 1, B, d)
        return trace[[self.estimate_block_of_step(k) + 1 for k in range(self.steps + 1)]]

    def predictions(self, X: torch.Tensor, y: torch.Tensor, x_query: torch.Tensor) -> torch.Tensor:
        """Every ``x_qᵀβ_k``, read from the query token after layer ``2k``: shape (steps + 1, B)."""
        self._check(X, y, x_query)
        trace = self.trace(self.embed(X, y, x_query), self.readout)  # (L + 1, B)
        return trace[[self.hidden_index_of_step(k) for k in range(self.steps + 1)]]

    def block_of_step(self, k: int) -> int:
        """Layer after which the query holds ``p_k = x_qᵀβ_k`` (``readout``): ``2k``."""
        return 2 * self._check_step(k)

    def estimate_block_of_step(self, k: int) -> int:
        """Layer after which the coordinate tokens hold ``β_k`` (:meth:`read_estimate`): ``2k − 1`` (``-1``: the embedding)."""
        return 2 * self._check_step(k) - 1


def in_context_ista_transformer(d: int, step_sizes, thresholds, *, normalize_steps: bool = False, dtype=torch.float64,
                                device=None) -> InContextISTATransformer:
    r"""A Transformer whose layers run the in-context LISTA variant ``β⁺ = soft(β + γ_k Xᵀ(y − Xβ), θ_k)``.

    Parameters
    ----------
    d : int
        Signal dimension (the number of coordinate tokens); any number ``n`` of measurements.
    step_sizes : sequence of float or Tensor of shape (K,)
        ``γ_k > 0``, one per step, e.g. a fitted :class:`tfnewton.sparse.InContextLISTA`'s
        ``step_sizes``.
    thresholds : sequence of float or Tensor of shape (K,)
        ``θ_k >= 0``.
    normalize_steps : bool
        Run the variant whose step is ``γ_k/λ_max(XᵀX)`` per prompt
        (:class:`~tfnewton.sparse.InContextLISTA` with ``normalize_steps=True``): the embedding
        scales the context by ``1/σ_max(X)``.
    dtype : torch.dtype
        Of the weights and of the inputs (float64 by default).
    device : str or torch.device, optional

    Returns
    -------
    InContextISTATransformer
        ``2K + 1`` layers; ``forward(X, y, x_query) → (B,)`` is ``x_qᵀβ_K``;
        ``.iterates(X, y) → (K + 1, B, d)``; ``.predictions(X, y, x_query) → (K + 1, B)``.

    Examples
    --------
    >>> import torch
    >>> from tfnewton import tasks
    >>> from tfnewton.sparse import InContextLISTA
    >>> task = tasks.sample_sparse_recovery(4, 12, 8, sparsity=2, generator=torch.Generator().manual_seed(0),
    ...                                     dtype=torch.float64)
    >>> reference = InContextLISTA.from_schedule([0.5, 0.4, 0.3], [0.05, 0.02, 0.01], dtype=torch.float64)
    >>> model = in_context_ista_transformer(8, reference.step_sizes, reference.thresholds)
    >>> torch.allclose(model.iterates(task.X, task.y), reference(task.X, task.y))
    True
    >>> len(model.blocks)
    7
    """
    return InContextISTATransformer(d, step_sizes, thresholds, normalize_steps=normalize_steps, dtype=dtype, device=device)
