r"""The three pieces every Transformer in tfnewton is built from.

* :class:`LinearAttention` — multi-head attention *without* the softmax,
  ``Attn(H)_t = Σ_h W_O^h Σ_s (W_V^h h_s) ⟨W_K^h h_s, W_Q^h h_t⟩``, bias-free,
  with an optional causal mask and an optional ``1/n`` scale;
* :class:`ReluMLP` — ``W₂ relu(W₁ h + b₁) + b₂`` applied to every token;
* :class:`Residual` and :class:`ResidualStack` — ``H ← H + layer(H)`` and a list
  of such blocks that can hand back the residual stream after every block.

The constructions (weights written down, :mod:`tfnewton.constructions`) and the
trained linear-attention models (:mod:`tfnewton.models.linear`) use these same
classes, so a probe or a picture that works for one works for the other.

Conventions
-----------
The residual stream ``H`` has shape ``(B, T, D)``: batch, tokens, width. Papers
write the stream as a ``D × T`` matrix whose *columns* are tokens,
``Attn(H) = Σ_h W_O^h (W_V^h H)(W_K^h H)ᵀ(W_Q^h H)``; here the tokens are *rows*,
so the same layer reads ``(Q Kᵀ) V`` — identical numbers, transposed bookkeeping.

Why linear attention multiplies matrices: the inner sum over tokens
``Σ_s v_s k_sᵀ = (W_V H)(W_K H)ᵀ`` is a matrix product of two blocks of the
stream, and multiplying by ``q_t`` is a second one. One layer therefore forms a
product of three matrices stored in the tokens — Newton–Schulz's ``X A X``.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import torch
import torch.nn as nn

__all__ = ["LinearAttention", "ReluMLP", "Residual", "ResidualStack", "count_heads"]


def _check_stream(H, name: str, width: int) -> None:
    """A (B, T, width) floating tensor; shape only (no finiteness scan: this runs every layer)."""
    if not isinstance(H, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(H).__name__}")
    if H.ndim != 3 or H.shape[-1] != width:
        raise ValueError(f"{name} must have shape (B, T, {width}), got {tuple(H.shape)}")
    if not H.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {H.dtype}")


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


class LinearAttention(nn.Module):
    r"""Multi-head linear (softmax-free) self-attention, bias-free.

    For every token ``t`` and head ``h``, with ``q_t = W_Q^h h_t``,
    ``k_s = W_K^h h_s``, ``v_s = W_V^h h_s``::

        out_t = scale · Σ_h W_O^h Σ_{s ∈ S(t)} v_s (k_s · q_t)   [/ |S(t)| if normalize]

    where ``S(t)`` is every token, or ``s ≤ t`` with ``causal=True``.

    Parameters
    ----------
    d_model : int
        Width ``D`` of the residual stream.
    n_heads : int
        Number of heads.
    head_dim : int, optional
        Size of queries and keys per head; default ``d_model // n_heads``.
    value_dim : int, optional
        Size of values per head; default ``head_dim``.
    causal : bool
        Token ``t`` attends to tokens ``s ≤ t`` only.
    normalize : bool
        Divide each token's output by the number of tokens it attends to
        (``T``, or ``t + 1`` when causal): the ``1/n`` of an average.
    scale : float
        A constant factor on the output (1 by default: the constructions put
        every constant into the weights).

    Attributes
    ----------
    in_proj : Parameter of shape (n_heads·(2·head_dim + value_dim), D)
        ``W_Q``, ``W_K`` and ``W_V`` of all heads stacked (one matmul for all three).
    out_proj : Parameter of shape (D, n_heads·value_dim)
        ``W_O`` of all heads side by side.
    W_Q, W_K : Tensor of shape (n_heads, head_dim, D)
        Views into ``in_proj`` (writing into them writes the layer's weights).
    W_V : Tensor of shape (n_heads, value_dim, D)
    W_O : Tensor of shape (n_heads, D, value_dim)
        A view into ``out_proj``.

    Examples
    --------
    >>> import torch
    >>> attn = LinearAttention(d_model=6, n_heads=2, head_dim=3)
    >>> attn(torch.randn(4, 5, 6)).shape
    torch.Size([4, 5, 6])
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int = 1,
        head_dim: int | None = None,
        value_dim: int | None = None,
        *,
        causal: bool = False,
        normalize: bool = False,
        scale: float = 1.0,
        device=None,
        dtype=None,
    ):
        super().__init__()
        self.d_model = _positive_int(d_model, "d_model")
        self.n_heads = _positive_int(n_heads, "n_heads")
        if head_dim is None:
            head_dim = max(d_model // n_heads, 1)
        self.head_dim = _positive_int(head_dim, "head_dim")
        self.value_dim = _positive_int(self.head_dim if value_dim is None else value_dim, "value_dim")
        self.causal = bool(causal)
        self.normalize = bool(normalize)
        self.scale = float(scale)
        h, dk, dv = self.n_heads, self.head_dim, self.value_dim
        kw = dict(device=device, dtype=dtype)
        self.in_proj = nn.Parameter(torch.empty(h * (2 * dk + dv), d_model, **kw))
        self.out_proj = nn.Parameter(torch.empty(d_model, h * dv, **kw))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Gaussian weights with variance 1/fan-in (the constructions overwrite them)."""
        nn.init.normal_(self.in_proj, std=1.0 / math.sqrt(self.d_model))
        nn.init.normal_(self.out_proj, std=1.0 / math.sqrt(self.n_heads * self.value_dim))

    # Views of the stacked weights, one matrix per head: what the papers (and the
    # heat maps in the book) call W_Q^h, W_K^h, W_V^h, W_O^h.
    @property
    def W_Q(self) -> torch.Tensor:
        h, dk = self.n_heads, self.head_dim
        return self.in_proj[: h * dk].view(h, dk, self.d_model)

    @property
    def W_K(self) -> torch.Tensor:
        h, dk = self.n_heads, self.head_dim
        return self.in_proj[h * dk : 2 * h * dk].view(h, dk, self.d_model)

    @property
    def W_V(self) -> torch.Tensor:
        h, dk, dv = self.n_heads, self.head_dim, self.value_dim
        return self.in_proj[2 * h * dk :].view(h, dv, self.d_model)

    @property
    def W_O(self) -> torch.Tensor:
        return self.out_proj.view(self.d_model, self.n_heads, self.value_dim).permute(1, 0, 2)

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, n_heads={self.n_heads}, head_dim={self.head_dim}, "
            f"value_dim={self.value_dim}, causal={self.causal}, normalize={self.normalize}"
            + (f", scale={self.scale}" if self.scale != 1.0 else "")
        )

    def forward(self, H: torch.Tensor) -> torch.Tensor:
        """Apply the layer (without the residual connection).

        Parameters
        ----------
        H : Tensor of shape (B, T, D)

        Returns
        -------
        Tensor of shape (B, T, D)
        """
        _check_stream(H, "H", self.d_model)
        B, T, _ = H.shape
        h, dk, dv = self.n_heads, self.head_dim, self.value_dim
        qkv = H @ self.in_proj.T  # (B, T, h·(2dk + dv)): all projections in one matmul
        q, k, v = qkv.split((h * dk, h * dk, h * dv), dim=-1)
        q = q.view(B, T, h, dk).transpose(1, 2)  # (B, h, T, dk)
        k = k.view(B, T, h, dk).transpose(1, 2)  # (B, h, T, dk)
        v = v.view(B, T, h, dv).transpose(1, 2)  # (B, h, T, dv)
        if self.causal:
            scores = q @ k.transpose(-1, -2)  # (B, h, T, T)
            mask = torch.ones(T, T, dtype=torch.bool, device=H.device).tril()
            out = scores.masked_fill(~mask, 0.0) @ v  # (B, h, T, dv)
        elif T * (dk + dv) < 2 * dk * dv:
            out = (q @ k.transpose(-1, -2)) @ v  # few tokens: (QKᵀ)V is cheaper
        else:
            # Q(KᵀV): the (dk, dv) matrix Σ_s k_s v_sᵀ first. On a tie (Newton–Schulz: T = dk = dv)
            # this order is the one that computes (X A) X as tfnewton.algorithms does, which in
            # float32 decides whether X is the better left or right inverse.
            out = q @ (k.transpose(-1, -2) @ v)
        if self.normalize:
            if self.causal:
                counts = torch.arange(1, T + 1, device=H.device, dtype=H.dtype)
            else:
                counts = torch.full((T,), float(T), device=H.device, dtype=H.dtype)
            out = out / counts.view(T, 1)
        out = out.transpose(1, 2).reshape(B, T, h * dv) @ self.out_proj.T  # (B, T, D)
        return out * self.scale if self.scale != 1.0 else out


class ReluMLP(nn.Module):
    """Token-wise two-layer ReLU network ``W₂ relu(W₁ h + b₁) + b₂``.

    Parameters
    ----------
    d_model : int
        Width ``D`` of the residual stream.
    hidden : int
        Number of ReLU units.
    bias : bool
        Include ``b₁`` and ``b₂``.

    Attributes
    ----------
    fc_in : nn.Linear (D → hidden)
    fc_out : nn.Linear (hidden → D)

    Examples
    --------
    >>> import torch
    >>> ReluMLP(4, 8)(torch.randn(2, 3, 4)).shape
    torch.Size([2, 3, 4])
    """

    def __init__(self, d_model: int, hidden: int, *, bias: bool = True, device=None, dtype=None):
        super().__init__()
        self.d_model = _positive_int(d_model, "d_model")
        self.hidden = _positive_int(hidden, "hidden")
        self.fc_in = nn.Linear(d_model, hidden, bias=bias, device=device, dtype=dtype)
        self.fc_out = nn.Linear(hidden, d_model, bias=bias, device=device, dtype=dtype)

    def forward(self, H: torch.Tensor) -> torch.Tensor:
        """Parameters: H of shape (B, T, D). Returns: (B, T, D), without the residual."""
        _check_stream(H, "H", self.d_model)
        return self.fc_out(torch.relu(self.fc_in(H)))


class Residual(nn.Module):
    """One block of the residual stream: ``H + layer(norm(H))``.

    Parameters
    ----------
    layer : nn.Module
        Maps ``(B, T, D) → (B, T, D)`` (a :class:`LinearAttention` or :class:`ReluMLP`).
    norm : nn.Module, optional
        Applied to the input of ``layer`` only (pre-norm, as in GPT-2); the
        constructions use none.
    """

    def __init__(self, layer: nn.Module, norm: nn.Module | None = None):
        super().__init__()
        if not isinstance(layer, nn.Module):
            raise TypeError(f"layer must be a torch.nn.Module, got {type(layer).__name__}")
        self.layer = layer
        self.norm = norm

    def forward(self, H: torch.Tensor) -> torch.Tensor:
        return H + self.layer(H if self.norm is None else self.norm(H))


class ResidualStack(nn.Module):
    """A list of residual blocks applied in order, with every intermediate stream on request.

    This is the hook protocol's middle part: ``self.blocks`` is an
    ``nn.ModuleList`` and each block maps the stream ``(B, T, D) → (B, T, D)``.
    A model built on it adds ``embed`` (inputs → stream) and ``readout``
    (stream → answer).

    Parameters
    ----------
    blocks : iterable of nn.Module
    """

    def __init__(self, blocks: Iterable[nn.Module] = ()):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def run_blocks(self, H: torch.Tensor, return_hidden: bool = False):
        """Push the stream through every block.

        Parameters
        ----------
        H : Tensor of shape (B, T, D)
            The embedded input.
        return_hidden : bool
            Also return the stream before the first block and after each block.

        Returns
        -------
        Tensor of shape (B, T, D)
            The stream after the last block; and, with ``return_hidden``, a
            Tensor of shape (L + 1, B, T, D) whose entry ``ℓ`` is the stream after
            ``ℓ`` blocks (entry 0 is ``H`` itself).
        """
        hidden = [H] if return_hidden else None
        for block in self.blocks:
            H = block(H)
            if return_hidden:
                hidden.append(H)
        if return_hidden:
            return H, torch.stack(hidden)
        return H

    def forward(self, H: torch.Tensor, return_hidden: bool = False):
        return self.run_blocks(H, return_hidden=return_hidden)

    @property
    def n_layers(self) -> int:
        """Number of blocks (the depth a construction's layer count refers to)."""
        return len(self.blocks)


def count_heads(block: nn.Module) -> int:
    """Number of attention heads in a block (0 for an MLP block)."""
    layer = block.layer if isinstance(block, Residual) else block
    return layer.n_heads if isinstance(layer, LinearAttention) else 0
