"""A trained linear-attention Transformer, Giannou et al.'s (2024) experimental setting scaled down.

Learned positions and a read-out at the x tokens as in the GPT-2 model
(:mod:`tfnewton.models.gpt2`), but every block is built from the library's own layers
(:mod:`tfnewton.layers`) — the very classes the hand-written constructions use:

    block(h) = h + LinearAttention(ln_1(h))          causal, averaged over the tokens seen
               then h + ReluMLP(ln_2(h))              (if ``mlp``)

With ``layernorm=False`` the ``ln``'s are the identity: the model is then a polynomial in
its input, like the constructions (Giannou et al. train both kinds and compare). The
attention is *causal* and divides by the number of tokens attended to (``normalize``), so
prediction ``i`` uses ``x_i`` and the pairs before it only, at any prompt length.

**Tokens.** ``2n`` tokens in ``d + 1`` dimensions: the x token is ``(x_i, 0)`` and the y
token is the whole pair ``(x_i, y_i)`` (von Oswald et al.'s token), not Garg et al.'s
``(y_i, 0, ..., 0)``. With the pair in one token, a single linear-attention layer can form
``sum_j y_j x_j^T x_i`` at x_i's token — one step of gradient descent — and deeper layers
refine it. With Garg et al.'s layout the pair must first be assembled by attending from
each y token to the token before it, which softmax attention learns but linear attention
without LayerNorm did not: on the d = 5 recipe its error stayed at that of predicting 0
for 2,500 steps at three learning rates and two depths (measured).

Hook protocol: :class:`tfnewton.capture.PromptModel`, as every family (``readout`` at the x
tokens and ``x_token_positions`` from :class:`~tfnewton.models.InContextRegressor`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import LinearAttention, ReluMLP, Residual
from ._common import InContextRegressor, ModelConfig


@dataclass
class LinearAttentionConfig(ModelConfig):
    """Shape of a :class:`LinearAttentionRegressor`.

    Parameters
    ----------
    d, n_points, n_layers, width, heads
        As for :class:`~tfnewton.models.gpt2.GPT2Config`.
    layernorm : bool
        Pre-LayerNorm before each attention/MLP and a final LayerNorm; ``False``: none.
    mlp : bool
        A ReLU MLP (hidden ``mlp_ratio * width``) after each attention layer.
    mlp_ratio : int
    """

    d: int
    n_points: int
    n_layers: int = 4
    width: int = 64
    heads: int = 4
    layernorm: bool = True
    mlp: bool = True
    mlp_ratio: int = 4

    POSITIVE_INTS = ("d", "n_points", "n_layers", "width", "heads", "mlp_ratio")


class LinearBlock(nn.Module):
    """``h + attn(ln_1(h))`` then ``h + mlp(ln_2(h))``; each part a :class:`~tfnewton.layers.Residual`."""

    def __init__(self, config: LinearAttentionConfig):
        super().__init__()
        w = config.width
        norm = (lambda: nn.LayerNorm(w)) if config.layernorm else (lambda: None)
        attn = LinearAttention(w, config.heads, causal=True, normalize=True)
        self.attn = Residual(attn, norm())
        self.mlp = Residual(ReluMLP(w, config.mlp_ratio * w), norm()) if config.mlp else None

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = self.attn(h)
        return h if self.mlp is None else self.mlp(h)


class LinearAttentionRegressor(InContextRegressor):
    """In-context regressor made of linear-attention blocks.

    Parameters
    ----------
    config : LinearAttentionConfig

    Examples
    --------
    >>> import torch
    >>> from tfnewton.models.linear import LinearAttentionConfig, LinearAttentionRegressor
    >>> model = LinearAttentionRegressor(LinearAttentionConfig(d=3, n_points=7, n_layers=2, width=16))
    >>> model(torch.randn(4, 7, 3), torch.randn(4, 7)).shape
    torch.Size([4, 7])
    """

    kind = "linear"

    def __init__(self, config: LinearAttentionConfig):
        super().__init__()
        self.config = config
        self.read_in = nn.Linear(config.d + 1, config.width)
        self.wpe = nn.Embedding(2 * config.n_points, config.width)
        self.blocks = nn.ModuleList([LinearBlock(config) for _ in range(config.n_layers)])
        self.ln_f = nn.LayerNorm(config.width) if config.layernorm else nn.Identity()
        self.read_out = nn.Linear(config.width, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Scales chosen for a stack that must also train *without* LayerNorm.

        Read-in and read-out keep PyTorch's default (as in the GPT-2 model), so the stream
        starts with entries of order 0.5 — with N(0, 0.02) read-in weights the stream is
        ten times smaller, the cubic attention output a thousand times, and the model
        without LayerNorm learned nothing and then diverged (measured). Positions
        N(0, 0.02); queries, keys and values with variance 1/fan-in; the output projections
        N(0, 0.02 / sqrt(2 * n_layers)) as in GPT-2, so every block starts close to the
        identity (with variance-1/fan-in output projections the stream of a 6-layer model
        without LayerNorm overflows at initialisation: each block adds a cubic term)."""
        self.read_in.reset_parameters()
        self.read_out.reset_parameters()
        nn.init.normal_(self.wpe.weight, std=0.02)
        out_std = 0.02 / math.sqrt(2 * self.config.n_layers)
        for block in self.blocks:
            attn = block.attn.layer
            attn.reset_parameters()
            nn.init.normal_(attn.out_proj, std=out_std)
            if block.mlp is not None:
                mlp = block.mlp.layer
                nn.init.normal_(mlp.fc_in.weight, std=1.0 / math.sqrt(self.config.width))
                nn.init.zeros_(mlp.fc_in.bias)
                nn.init.normal_(mlp.fc_out.weight, std=out_std)
                nn.init.zeros_(mlp.fc_out.bias)

    def embed(self, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``(B, n, d), (B, n) -> (B, 2n, width)``: pair tokens, read in, add positions."""
        X, y = self._check_inputs(X, y)
        tokens = pair_tokens(X, y)
        return self.read_in(tokens) + self.wpe.weight[: tokens.shape[1]]


def pair_tokens(X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Tokens ``(x_1, 0), (x_1, y_1), (x_2, 0), ...``: ``(B, n, d), (B, n) -> (B, 2n, d + 1)``."""
    B, n, d = X.shape
    x_tokens = F.pad(X, (0, 1))  # (B, n, d + 1): y slot empty
    y_tokens = torch.cat((X, y.unsqueeze(-1)), dim=-1)  # (B, n, d + 1): the whole pair
    return torch.stack((x_tokens, y_tokens), dim=2).reshape(B, 2 * n, d + 1)
