"""A GPT-2-style in-context regressor, as trained by Garg et al. (2022) and probed by Fu et al.

The prompt ``(x_1, y_1, ..., x_n, y_n)`` becomes ``2n`` tokens in ``d`` dimensions: the x
token is ``x_i`` itself and the y token is ``(y_i, 0, ..., 0)`` (Garg et al.'s ``_combine``).
A linear read-in lifts every token to the model width, learned position embeddings are
added, pre-LayerNorm blocks with causal softmax attention mix the tokens, and a final
LayerNorm and a linear read-out turn the hidden state *at each x token* into the prediction
of that x's label. Because attention is causal and ``x_i``'s token comes before ``y_i``'s,
prediction ``i`` sees ``x_i`` and the pairs before it, never ``y_i``.

Reading order (nanoGPT's): :class:`GPT2Config`, :class:`CausalSelfAttention`, :class:`MLP`,
:class:`Block`, :class:`GPT2Regressor`. The module names mirror Hugging Face's
``GPT2Model`` (``wpe``, ``h.i.ln_1``, ``attn.c_attn``, ``attn.c_proj``, ``mlp.c_fc``,
``mlp.c_proj``, ``ln_f``), so a Garg et al. checkpoint converts by renaming keys and
transposing HF's ``Conv1D`` weights — no rewrite.

The model follows the library's hook protocol (:class:`tfnewton.capture.PromptModel`):
``model(X, y) == model.readout(blocks(model.embed(X, y)))``; ``readout``,
``x_token_positions`` and ``query_position`` come from the families' base class
(:class:`~tfnewton.models.InContextRegressor`).

``model(X, y, skip_unused=True)`` gives the same predictions without the work none of them
reads (the last token; the y-token rows of the last block): the training loop's forward.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._common import InContextRegressor, ModelConfig


@dataclass
class GPT2Config(ModelConfig):
    """Shape of a :class:`GPT2Regressor`.

    Parameters
    ----------
    d : int
        Dimension of the inputs ``x``.
    n_points : int
        Longest prompt, in (x, y) pairs; the model has ``2 * n_points`` learned positions.
    n_layers, width, heads : int
        Blocks, residual-stream width and attention heads (``width % heads == 0``).
    layernorm : bool
        Pre-LayerNorm blocks and a final LayerNorm (GPT-2); ``False`` replaces each by the
        identity (an ablation, not Garg et al.'s model).
    mlp_ratio : int
        Hidden width of the MLP is ``mlp_ratio * width`` (GPT-2: 4).
    ln_eps : float
        LayerNorm epsilon (GPT-2 and Hugging Face: 1e-5).
    final_layernorm : bool
        The LayerNorm between the last block and the read-out. ``False`` reads the raw
        residual stream out, as Fu et al.'s probing runs read out after an earlier block
        (``use_first_n_layer``; see :func:`~tfnewton.models.garg.from_garg_checkpoint`).
    """

    d: int
    n_points: int
    n_layers: int = 6
    width: int = 64
    heads: int = 4
    layernorm: bool = True
    mlp_ratio: int = 4
    ln_eps: float = 1e-5
    final_layernorm: bool = True

    POSITIVE_INTS = ("d", "n_points", "n_layers", "width", "heads", "mlp_ratio")


def _layernorm(config: GPT2Config) -> nn.Module:
    return nn.LayerNorm(config.width, eps=config.ln_eps) if config.layernorm else nn.Identity()


class CausalSelfAttention(nn.Module):
    """Multi-head causal softmax attention, queries/keys/values from one fused Linear.

    ``softmax(q kᵀ / √hs + causal mask) v`` per head. On a GPU this is
    ``F.scaled_dot_product_attention`` (its fused kernels). On the CPU the same arithmetic
    is written out — one ``baddbmm`` for the scaled, masked scores, a softmax, one ``bmm``
    — which is what SDPA's "math" backend computes (they agree to 1e-12 in float64, tested),
    without its per-call mask building and checks, which is faster on the CPU (figures in
    ``benchmarks/README.md``, from ``benchmarks/attention_backends.py``).
    """

    def __init__(self, config: GPT2Config):
        super().__init__()
        self.heads = config.heads
        self.c_attn = nn.Linear(config.width, 3 * config.width)  # q, k, v for all heads
        self.c_proj = nn.Linear(config.width, config.width)
        T = 2 * config.n_points
        # Added to the scores: 0 where token t may attend to token s (s <= t), -inf above the
        # diagonal. Not part of the state dict; follows the model's device and dtype.
        self.register_buffer("causal_bias", torch.full((T, T), float("-inf")).triu_(1), persistent=False)

    def forward(self, x: torch.Tensor, rows: slice = slice(None)) -> torch.Tensor:
        """``(B, T, C) -> (B, T', C)``: the attention output at the tokens ``x[:, rows]``.

        Every token up to a query's own position is a key and value; ``rows`` only picks the
        queries (the last block of ``model(X, y, skip_unused=True)`` needs the x tokens
        alone).
        """
        B, T, C = x.shape
        H, hs = self.heads, C // self.heads
        if rows == slice(None):
            # One copy to head-major (3, B, H, T, hs); q, k, v are contiguous slices of it.
            q, k, v = self.c_attn(x).view(B, T, 3, H, hs).permute(2, 0, 3, 1, 4).contiguous().unbind(0)
        else:
            weight, bias = self.c_attn.weight, self.c_attn.bias
            q = F.linear(x[:, rows], weight[:C], bias[:C])
            q = q.view(B, q.shape[1], H, hs).transpose(1, 2).contiguous()
            k, v = F.linear(x, weight[C:], bias[C:]).view(B, T, 2, H, hs).permute(2, 0, 3, 1, 4).contiguous().unbind(0)
        Tq = q.shape[2]
        if x.device.type == "cpu":
            # Scores and softmax in at least float32, also under bf16 autocast, as the GPU's
            # fused kernels keep them: a bf16 score near 10 is off by up to 0.03, which moves
            # the attention weights by 3 %. The weights then meet v in v's dtype.
            exact = torch.promote_types(q.dtype, torch.float32)
            mask = self.causal_bias[:T, :T][rows].to(exact)  # (Tq, T)
            with torch.autocast(device_type="cpu", enabled=False):
                scores = torch.baddbmm(mask, q.view(B * H, Tq, hs).to(exact),
                                       k.view(B * H, T, hs).transpose(1, 2).to(exact),
                                       alpha=hs ** -0.5)  # (B*H, Tq, T)
                weights = scores.softmax(dim=-1)
            y = torch.bmm(weights.to(v.dtype), v.view(B * H, T, hs)).view(B, H, Tq, hs)
        elif rows == slice(None):
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, hs)
        else:  # is_causal would align the Tq queries with the first Tq keys: pass the mask
            mask = self.causal_bias[:T, :T][rows].to(q.dtype)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.c_proj(y.transpose(1, 2).reshape(B, Tq, C))


class MLP(nn.Module):
    """Linear -> GELU (tanh approximation, GPT-2's ``gelu_new``) -> Linear."""

    def __init__(self, config: GPT2Config):
        super().__init__()
        self.c_fc = nn.Linear(config.width, config.mlp_ratio * config.width)
        self.c_proj = nn.Linear(config.mlp_ratio * config.width, config.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class Block(nn.Module):
    """Pre-LN Transformer block: ``h + attn(ln_1(h))`` then ``h + mlp(ln_2(h))``."""

    def __init__(self, config: GPT2Config):
        super().__init__()
        self.ln_1 = _layernorm(config)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = _layernorm(config)
        self.mlp = MLP(config)

    def forward(self, h: torch.Tensor, rows: slice = slice(None)) -> torch.Tensor:
        """``(B, T, C) -> (B, T', C)``: the block's output at the tokens ``h[:, rows]`` (all by default)."""
        h = h[:, rows] + self.attn(self.ln_1(h), rows)
        h = h + self.mlp(self.ln_2(h))
        return h


class GPT2Regressor(InContextRegressor):
    """Garg et al.'s in-context learner: read-in, GPT-2 backbone, read-out at the x tokens.

    Parameters
    ----------
    config : GPT2Config

    Examples
    --------
    >>> import torch
    >>> from tfnewton.models.gpt2 import GPT2Config, GPT2Regressor
    >>> model = GPT2Regressor(GPT2Config(d=3, n_points=7, n_layers=2, width=16, heads=2))
    >>> X, y = torch.randn(4, 7, 3), torch.randn(4, 7)
    >>> model(X, y).shape
    torch.Size([4, 7])
    """

    kind = "gpt2"

    def __init__(self, config: GPT2Config):
        super().__init__()
        self.config = config
        self.read_in = nn.Linear(config.d, config.width)
        self.wpe = nn.Embedding(2 * config.n_points, config.width)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layers)])
        self.ln_f = _layernorm(config) if config.final_layernorm else nn.Identity()
        self.read_out = nn.Linear(config.width, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Garg et al.'s initialisation.

        The backbone gets GPT-2's (Hugging Face's ``_init_weights``): N(0, 0.02) weights and
        position embeddings, zero biases, unit LayerNorms, and the two residual projections
        of each block scaled by 1/sqrt(2 * n_layers). The read-in and read-out are plain
        ``nn.Linear`` layers outside the backbone in Garg et al.'s ``TransformerModel``, so
        they keep PyTorch's default initialisation — which matters: with a N(0, 0.02)
        read-in the inputs start as small as the position embeddings, and the 6 x 64
        model of the d = 5 recipe left the loss plateau ~2,500 steps later (measured).
        """
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        std = 0.02 / math.sqrt(2 * self.config.n_layers)
        for block in self.blocks:
            nn.init.normal_(block.attn.c_proj.weight, mean=0.0, std=std)
            nn.init.normal_(block.mlp.c_proj.weight, mean=0.0, std=std)
        self.read_in.reset_parameters()
        self.read_out.reset_parameters()

    # -- the hook protocol (readout, x_token_positions: InContextRegressor) ---------------
    def embed(self, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Interleave, read in and add positions: ``(B, n, d), (B, n) -> (B, 2n, width)``."""
        X, y = self._check_inputs(X, y)
        tokens = interleave(X, y)  # (B, 2n, d)
        T = tokens.shape[1]
        return self.read_in(tokens) + self.wpe.weight[:T]

    def _last_block_and_readout(self, h: torch.Tensor) -> torch.Tensor:
        # The last block's output is read at the x tokens only: compute just those rows
        # (their queries, attention output and MLP; keys and values still come from all).
        h = self.blocks[-1](h, rows=slice(None, None, 2))  # (B, n, width)
        return self.read_out(self.ln_f(h))[..., 0]


def interleave(X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Garg et al.'s token layout ``x_1, (y_1, 0, ..., 0), x_2, ...``: ``(B, n, d), (B, n) -> (B, 2n, d)``."""
    B, n, d = X.shape
    y_tokens = F.pad(y.unsqueeze(-1), (0, d - 1))  # (B, n, d): y in the first coordinate
    return torch.stack((X, y_tokens), dim=2).reshape(B, 2 * n, d)
