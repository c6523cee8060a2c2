"""A trained linear-attention Transformer, Giannou et al.'s (2024) experimental setting scaled down.

The same prompt layout, read-in, learned positions and read-out as the GPT-2 model
(:mod:`tfnewton.models.gpt2`), but every block is built from the library's own layers
(:mod:`tfnewton.layers`) — the very classes the hand-written constructions use:

    block(h) = h + LinearAttention(ln_1(h))          causal, averaged over the tokens seen
               then h + ReluMLP(ln_2(h))              (if ``mlp``)

With ``layernorm=False`` the ``ln``'s are the identity: the model is then a polynomial in
its input, like the constructions (Giannou et al. train both kinds and compare). The
attention is *causal* and divides by the number of tokens attended to (``normalize``), so
prediction ``i`` uses ``x_i`` and the pairs before it only, at any prompt length.

Hook protocol: as in :mod:`tfnewton.models.gpt2` (``embed``, ``blocks``, ``readout``,
``x_token_positions``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from .._validate import check_int
from ..layers import LinearAttention, ReluMLP, Residual
from ._common import InContextRegressor
from .gpt2 import interleave


@dataclass
class LinearAttentionConfig:
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

    def __post_init__(self):
        for name in ("d", "n_points", "n_layers", "width", "heads", "mlp_ratio"):
            check_int(getattr(self, name), name, minimum=1)
        if self.width % self.heads:
            raise ValueError(
                f"width must be a multiple of heads, got width={self.width} and heads={self.heads}"
            )

    def to_dict(self) -> dict:
        return asdict(self)


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
        self.read_in = nn.Linear(config.d, config.width)
        self.wpe = nn.Embedding(2 * config.n_points, config.width)
        self.blocks = nn.ModuleList([LinearBlock(config) for _ in range(config.n_layers)])
        self.ln_f = nn.LayerNorm(config.width) if config.layernorm else nn.Identity()
        self.read_out = nn.Linear(config.width, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Read-in/out and positions N(0, 0.02); attention with variance-1/fan-in queries,
        keys and values (so their product is not vanishingly small) and an output
        projection scaled by 1/sqrt(2 * n_layers), so every block starts close to the
        identity and the stack trains without LayerNorm too."""
        for module in (self.read_in, self.read_out, self.wpe):
            nn.init.normal_(module.weight, std=0.02)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        depth_scale = 1.0 / math.sqrt(2 * self.config.n_layers)
        for block in self.blocks:
            attn = block.attn.layer
            attn.reset_parameters()
            with torch.no_grad():
                attn.out_proj.mul_(depth_scale)
            if block.mlp is not None:
                mlp = block.mlp.layer
                nn.init.normal_(mlp.fc_in.weight, std=1.0 / math.sqrt(self.config.width))
                nn.init.zeros_(mlp.fc_in.bias)
                nn.init.normal_(mlp.fc_out.weight, std=depth_scale / math.sqrt(mlp.hidden))
                nn.init.zeros_(mlp.fc_out.bias)

    def x_token_positions(self, n: int) -> torch.Tensor:
        """Token index of ``x_i``: ``0, 2, 4, ...``."""
        return torch.arange(n, device=self.wpe.weight.device) * 2

    def embed(self, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``(B, n, d), (B, n) -> (B, 2n, width)``: interleave, read in, add positions."""
        X, y = self._check_inputs(X, y)
        tokens = interleave(X, y)
        return self.read_in(tokens) + self.wpe.weight[: tokens.shape[1]]

    def readout(self, H: torch.Tensor) -> torch.Tensor:
        """``(B, 2n, width) -> (B, n)``: final LayerNorm (if any) and read-out at the x tokens."""
        return self.read_out(self.ln_f(H[:, ::2]))[..., 0]
