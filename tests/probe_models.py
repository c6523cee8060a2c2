"""Test models for the probes: they follow the hook protocol and hold known quantities.

:class:`AlgorithmOracle` is a causal in-context "model" whose block ℓ *computes* an
algorithm's iterate ``w_k`` (``k = layer_steps[ℓ]``) from the tokens in the residual stream,
for every prefix of the prompt, and writes it (and its prediction ``x_iᵀw_k``) into each x
token. A probe that works must find step ``k`` exactly at layer ℓ + 1; Fu et al.'s matching
must say the same. The iterates come from :mod:`tfnewton.algorithms`, like the probes'
targets, but through a different path (token bookkeeping, a loop over prefixes).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from tfnewton import algorithms


class OracleBlock(nn.Module):
    """Overwrite slots ``w`` and ``p`` of every x token with step ``k`` of the algorithm on its prefix."""

    def __init__(self, d: int, k: int, algorithm):
        super().__init__()
        self.d, self.k, self.algorithm = d, k, algorithm

    def forward(self, H: torch.Tensor) -> torch.Tensor:
        d = self.d
        X = H[:, 0::2, :d]  # x tokens: [x, 0, w, p]
        y = H[:, 1::2, 0]  # y tokens: [y, 0, ..., 0]
        B, n, _ = X.shape
        out = H.clone()
        for i in range(n):
            if i == 0:
                w = X.new_zeros(B, d)
            else:
                w = self.algorithm(X[:, :i], y[:, :i], self.k)[self.k]
            out[:, 2 * i, d:2 * d] = w
            out[:, 2 * i, 2 * d] = (w * X[:, i]).sum(-1)
        return out


class AlgorithmOracle(nn.Module):
    """A protocol-following model whose layer ℓ + 1 holds step ``layer_steps[ℓ]`` of ``algorithm``.

    Tokens interleave ``x_i`` and ``y_i`` (GPT-2 layout), width ``2d + 1``: slots ``x`` (d),
    ``w`` (d), ``p`` (1). ``forward(X, y) -> (B, n)`` returns slot ``p`` of the x tokens.
    It defines no ``query_position``: a causal learner's query is its next x token.
    """

    takes_query = False

    def __init__(self, d: int, layer_steps, algorithm=algorithms.newton_least_squares):
        super().__init__()
        self.d = d
        self.blocks = nn.ModuleList(OracleBlock(d, k, algorithm) for k in layer_steps)

    def x_token_positions(self, n: int) -> torch.Tensor:
        return torch.arange(n) * 2

    def embed(self, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        B, n, d = X.shape
        H = X.new_zeros(B, 2 * n, 2 * d + 1)
        H[:, 0::2, :d] = X
        H[:, 1::2, 0] = y
        return H

    def readout(self, H: torch.Tensor) -> torch.Tensor:
        return H[:, 0::2, 2 * self.d]

    def forward(self, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if X.shape[-1] != self.d:
            raise ValueError(f"X must have d = {self.d}")
        H = self.embed(X, y)
        for block in self.blocks:
            H = block(H)
        return self.readout(H)


class NoBlocks(nn.Module):
    """A model with no ``blocks``: the probes must refuse it clearly."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 1)

    def forward(self, X, y):
        return self.lin(X)[..., 0]
