"""A stacked LSTM on the same tokens: Garg et al.'s recurrent baseline.

The prompt is the GPT-2 model's token sequence ``x_1, (y_1, 0, ..., 0), x_2, ...``, read in
linearly (no position embeddings: the recurrence knows the order). Each block is one
single-layer ``nn.LSTM``, by default with a residual connection,

    block(h) = h + LSTM(ln(h))        (ln = LayerNorm if ``layernorm``, else identity)

so that, like the Transformers, every block maps the residual stream ``(B, T, D)`` to
``(B, T, D)`` and a probe can read the stream after each one. With ``residual=False`` and
``layernorm=False`` the blocks are ``block(h) = LSTM(h)``: the plain stacked LSTM of Garg et al.
and Fu et al., whose layer ``i`` is the hidden state of the ``i``-th LSTM layer. An LSTM is causal by
construction: the output at token ``t`` has read tokens ``≤ t`` only, so prediction ``i``
(read at ``x_i``'s token) never sees ``y_i``.

Hook protocol: :class:`tfnewton.capture.PromptModel`, as every family. The model has no
positions, so it accepts prompts of any length.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ._common import InContextRegressor, ModelConfig
from .gpt2 import interleave


@dataclass
class LSTMConfig(ModelConfig):
    """Shape of an :class:`LSTMRegressor`: ``d``, ``n_layers`` LSTM blocks of hidden size
    ``width``, each with a LayerNorm before it (``layernorm``) and a residual connection around
    it (``residual``)."""

    d: int
    n_layers: int = 2
    width: int = 64
    layernorm: bool = True
    residual: bool = True

    POSITIVE_INTS = ("d", "n_layers", "width")


class LSTMBlock(nn.Module):
    """``h + LSTM(ln(h))`` (or ``LSTM(ln(h))`` without the residual): one single-layer LSTM
    wrapped to return a tensor."""

    def __init__(self, config: LSTMConfig):
        super().__init__()
        self.ln = nn.LayerNorm(config.width) if config.layernorm else nn.Identity()
        self.lstm = nn.LSTM(config.width, config.width, num_layers=1, batch_first=True)
        self.residual = config.residual

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.ln(h))  # (B, T, width); the (h_n, c_n) state is dropped
        return h + out if self.residual else out


class LSTMRegressor(InContextRegressor):
    """In-context regressor made of residual LSTM blocks.

    Examples
    --------
    >>> import torch
    >>> from tfnewton.models.lstm import LSTMConfig, LSTMRegressor
    >>> model = LSTMRegressor(LSTMConfig(d=3, n_layers=2, width=16))
    >>> model(torch.randn(4, 7, 3), torch.randn(4, 7)).shape
    torch.Size([4, 7])
    """

    kind = "lstm"

    def __init__(self, config: LSTMConfig):
        super().__init__()
        self.config = config
        self.read_in = nn.Linear(config.d, config.width)
        self.blocks = nn.ModuleList([LSTMBlock(config) for _ in range(config.n_layers)])
        self.ln_f = nn.LayerNorm(config.width) if config.layernorm else nn.Identity()
        self.read_out = nn.Linear(config.width, 1)

    def embed(self, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``(B, n, d), (B, n) -> (B, 2n, width)``."""
        X, y = self._check_inputs(X, y)
        return self.read_in(interleave(X, y))
