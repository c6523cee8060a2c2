"""What the constructions share: the token layout, weight writing, input checks.

A construction is a :class:`~tfnewton.layers.ResidualStack` whose weights are
written down rather than learned. Each one names the *slots* of its tokens (which
coordinates of the residual stream hold what) in a :class:`TokenLayout`, so the
weight-writing code, the pictures and the probes all speak of ``"X"`` or ``"M"``
rather than of index ranges.
"""

from __future__ import annotations

import torch

from .. import _validate as v
from ..layers import LinearAttention, Residual, ResidualStack, count_heads


class TokenLayout:
    """Named, contiguous slots of the residual stream's width.

    Parameters
    ----------
    **sizes : int
        ``slot name -> number of coordinates``, in the order they sit in a token.

    Examples
    --------
    >>> layout = TokenLayout(A=3, X=3, E=3)
    >>> layout.width, layout["X"]
    (9, slice(3, 6, None))
    """

    def __init__(self, **sizes: int):
        self.sizes = dict(sizes)
        self.slices: dict[str, slice] = {}
        start = 0
        for name, size in self.sizes.items():
            self.slices[name] = slice(start, start + size)
            start += size
        self.width = start

    def __getitem__(self, name: str) -> slice:
        return self.slices[name]

    def __iter__(self):
        return iter(self.slices)

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={s}" for k, s in self.sizes.items())
        return f"TokenLayout({inner}; width={self.width})"


def attention_block(width: int, n_heads: int, head_dim: int, value_dim: int, *, device=None, dtype=None) -> Residual:
    """A residual linear-attention block with every weight zero, ready to be written."""
    attn = LinearAttention(width, n_heads, head_dim, value_dim, device=device, dtype=dtype)
    with torch.no_grad():
        attn.in_proj.zero_()
        attn.out_proj.zero_()
    attn.requires_grad_(False)  # written down, not learned: no autograd graph in forward
    return Residual(attn)


def read_slot(W: torch.Tensor, head: int, slot: slice, coefficient: float = 1.0, *, offset: int = 0) -> None:
    """Make rows ``offset…`` of projection ``W[head]`` (shape (k, D)) copy a slot: ``W[head][i, slot.start + i] = c``."""
    size = slot.stop - slot.start
    idx = torch.arange(size, device=W.device)
    W[head, offset + idx, slot.start + idx] += coefficient


def write_slot(W_O: torch.Tensor, head: int, slot: slice, coefficient: float = 1.0, *, offset: int = 0) -> None:
    """Make ``W_O[head]`` (shape (D, dv)) add value coordinates ``offset…`` into a slot."""
    size = slot.stop - slot.start
    idx = torch.arange(size, device=W_O.device)
    W_O[head, slot.start + idx, offset + idx] += coefficient


class Construction(ResidualStack):
    """Base class: the hook protocol (:class:`tfnewton.capture.HookedModel`) plus shared helpers.

    Subclasses set ``self.layout`` (a :class:`TokenLayout`), ``self.d`` and ``self.steps``, fill
    ``self.blocks`` and define ``embed``, ``readout`` and ``block_of_step``.
    """

    layout: TokenLayout
    d: int
    steps: int
    #: ``forward`` takes a query (see :class:`tfnewton.capture.PromptModel`); a model of one
    #: input such as Newton–Schulz's ``forward(A)`` does not.
    takes_query: bool = False

    @property
    def width(self) -> int:
        """``D``, the width of the residual stream."""
        return self.layout.width

    @property
    def dtype(self) -> torch.dtype:
        return self.blocks[0].layer.in_proj.dtype if len(self.blocks) else torch.float64

    @property
    def device(self) -> torch.device:
        return self.blocks[0].layer.in_proj.device if len(self.blocks) else torch.device("cpu")

    def trace(self, H: torch.Tensor, read) -> torch.Tensor:
        """``read`` applied to the stream before the first block and after each block, stacked.

        Memory-light alternative to ``run_blocks(H, return_hidden=True)`` when only a slice
        of each stream is needed (the query token of a 1000-layer model, say).

        Parameters
        ----------
        H : Tensor of shape (B, T, D)
            The embedded input.
        read : callable
            Maps a stream ``(B, T, D)`` to a tensor.

        Returns
        -------
        Tensor of shape (L + 1, ...)
        """
        out = [read(H)]
        for block in self.blocks:
            H = block(H)
            out.append(read(H))
        return torch.stack(out)

    def heads_per_block(self) -> list[int]:
        """Number of attention heads in each block (0 for an MLP block)."""
        return [count_heads(block) for block in self.blocks]

    def block_of_step(self, k: int) -> int:
        """Index into ``blocks`` after which iterate ``k`` can be read (``-1``: the embedding)."""
        raise NotImplementedError

    def hidden_index_of_step(self, k: int) -> int:
        """Index into the ``(L + 1, …)`` hidden states where iterate ``k`` can be read."""
        return self.block_of_step(k) + 1

    def _check_step(self, k) -> int:
        k = v.check_int(k, "k", minimum=0)
        if k > self.steps:
            raise ValueError(f"k must be <= steps = {self.steps} (this model runs {self.steps} steps), got {k}")
        return k

    def _check_like_model(self, named: dict[str, torch.Tensor]) -> None:
        """Inputs share the model's dtype and device (a float32 model computes in float32)."""
        for name, value in named.items():
            if value.dtype != self.dtype:
                raise TypeError(
                    f"{name} has dtype {value.dtype} but this model's weights are {self.dtype}; "
                    f"build it with dtype={value.dtype} or convert it with model.to({value.dtype})"
                )
            if value.device != self.device:
                raise ValueError(
                    f"{name} is on {value.device} but this model is on {self.device}; "
                    f"move one of them (model.to(device))"
                )


class RegressionConstruction(Construction):
    """Base class of the in-context regression constructions (GD, Iterative Newton).

    The prompt's ``n`` context tokens come first and the query token at index ``n``;
    subclasses define ``embed(X, y, x_query)`` and ``readout(H)``. They follow
    :class:`tfnewton.capture.PromptModel` with ``takes_query = True``.
    """

    takes_query = True

    def _check(self, X, y, x_query, need_query=True):
        x_query = check_regression_query(X, y, x_query, self.d, need_query=need_query)
        self._check_like_model({"X": X})
        return x_query

    def x_token_positions(self, n: int) -> torch.Tensor:
        """Token of ``x_i`` for the ``n`` context points: ``0, 1, …, n − 1``."""
        return torch.arange(n)

    def query_position(self, n: int) -> int:
        """Token of the query in a prompt of ``n`` context pairs: ``n``, right after them."""
        return n

    def _coordinate_token_stream(self, X, y, x_query) -> torch.Tensor:
        """The stream of a layout with ``d`` coordinate tokens after the query: (B, n + 1 + d, D).

        Context token ``i`` holds ``c·x_i`` and ``c·y_i`` (``c = self.scale(X)``, one per
        prompt), the query ``x_q`` and a flag, coordinate token ``j`` the one-hot ``e_j``.
        """
        x_query = self._check(X, y, x_query, need_query=False)
        L, d = self.layout, self.d
        B, n, _ = X.shape
        c = self.scale(X).reshape(B, 1, 1)
        H = X.new_zeros((B, n + 1 + d, L.width))
        H[:, :n, L["x"]] = c * X
        H[:, :n, L["y"]] = c * y.unsqueeze(-1)
        H[:, n, L["q"]] = x_query
        H[:, n, L["flag"]] = 1.0
        H[:, n + 1 :, L["E"]] = torch.eye(d, dtype=X.dtype, device=X.device)
        return H

    def readout(self, H: torch.Tensor) -> torch.Tensor:
        """The prediction: slot ``"p"`` of the query token, shape (B,) (or (…, B) for stacked streams).

        Layouts with ``d`` coordinate tokens after the query (Newton, in-context ISTA); the
        GD construction, which has none, overrides it.
        """
        n = H.shape[-2] - self.d - 1
        return H[..., n, self.layout["p"].start]

    def forward(self, X: torch.Tensor, y: torch.Tensor, x_query: torch.Tensor) -> torch.Tensor:
        """Predict ``x_qᵀ w_steps`` of the construction's algorithm on each prompt.

        Parameters
        ----------
        X : Tensor of shape (B, n, d)
        y : Tensor of shape (B, n)
        x_query : Tensor of shape (B, d)

        Returns
        -------
        Tensor of shape (B,)
        """
        self._check(X, y, x_query)
        return self.readout(self.run_blocks(self.embed(X, y, x_query)))

    def hidden_states(self, X, y, x_query=None) -> torch.Tensor:
        """The stream after 0, 1, …, ``len(blocks)`` blocks: shape (len(blocks) + 1, B, T, D)."""
        return self.run_blocks(self.embed(X, y, x_query), return_hidden=True)[1]


def check_alpha(alpha, name: str = "alpha"):
    """``None`` or a positive real number (a model's weights cannot hold a per-problem value)."""
    if alpha is None:
        return None
    return v.check_positive(alpha, name)


def check_build(d, steps, dtype, device) -> tuple[int, int, torch.dtype, torch.device]:
    d = v.check_int(d, "d", minimum=1)
    steps = v.check_int(steps, "steps", minimum=0)
    dtype = v.check_dtype(dtype)
    device = v.check_device(device)
    return d, steps, dtype, device


def check_regression_query(X, y, x_query, d: int, *, need_query: bool = True):
    """X (B, n, d), y (B, n), x_query (B, d) for a model built for ``d``; finite, same dtype/device."""
    v.check_tensor(X, "X", ndim=3)
    if X.shape[-1] != d:
        raise ValueError(f"X must have shape (B, n, {d}) for this model built with d = {d}, got {tuple(X.shape)}")
    v.check_regression_inputs(X, y)
    if x_query is None:
        if need_query:
            raise TypeError("x_query is required: a Tensor of shape (B, d)")
        return X.new_zeros((X.shape[0], d))
    v.check_tensor(x_query, "x_query", ndim=2)
    if tuple(x_query.shape) != (X.shape[0], d):
        raise ValueError(
            f"x_query must have shape (B, d) = ({X.shape[0]}, {d}) to match X of shape "
            f"{tuple(X.shape)}, got {tuple(x_query.shape)}"
        )
    v.check_same_device_dtype({"X": X, "x_query": x_query})
    return x_query


__all__ = ["TokenLayout", "Construction", "attention_block", "read_slot", "write_slot"]
