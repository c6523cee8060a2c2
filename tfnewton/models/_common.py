"""What the three trained families share: the config round trip and the hook protocol's half.

:class:`ModelConfig` is the base of ``GPT2Config``, ``LinearAttentionConfig`` and
``LSTMConfig``: positive-int checks, ``to_dict`` and ``from_dict``. :class:`InContextRegressor`
is the base of the models: ``forward``, the input checks, and the parts of the hook protocol
(:class:`tfnewton.capture.PromptModel`) that all three read the same way — the x tokens at
``0, 2, 4, …`` and ``readout`` there (final LayerNorm, then the linear read-out).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
import torch.nn as nn

from .._validate import check_int


@dataclass
class ModelConfig:
    """Base of the families' configs (dataclasses): checks at construction and a dict round trip.

    A subclass lists its integer fields that must be positive in ``POSITIVE_INTS``; when it has
    ``heads``, ``width`` must be a multiple of it.
    """

    POSITIVE_INTS: ClassVar[tuple] = ()

    def __post_init__(self):
        for name in self.POSITIVE_INTS:
            check_int(getattr(self, name), name, minimum=1)
        if "heads" in self.POSITIVE_INTS and self.width % self.heads:
            raise ValueError(
                f"width must be a multiple of heads, got width={self.width} and heads={self.heads}"
            )

    def to_dict(self) -> dict:
        """The fields as a plain dict (what a checkpoint stores)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, fields: dict) -> "ModelConfig":
        """The config a :meth:`to_dict` dict describes; unknown fields are an error."""
        if not isinstance(fields, dict):
            raise TypeError(f"config must be a dict, got {type(fields).__name__}")
        unknown = set(fields) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"config has fields {sorted(unknown)} that a {cls.__name__} does not know")
        return cls(**fields)


class InContextRegressor(nn.Module):
    """Base class of the ``"gpt2"``, ``"linear"`` and ``"lstm"`` models.

    Subclasses set ``config`` (a :class:`ModelConfig` with at least ``d``, and ``n_points``
    when the model has positions), ``blocks`` (an ``nn.ModuleList``), ``ln_f`` and
    ``read_out``, and define ``embed``. ``forward`` is then fixed:
    ``readout(blocks(embed(X, y)))``, so a hook on ``blocks[i]`` sees exactly the residual
    stream the model uses. Every family puts ``x_i`` at token ``2i`` (its label right after).
    """

    kind: str = ""
    #: False for a causal learner, whose ``forward(X, y)`` takes no separate query (the hook protocol's flag).
    takes_query = False

    def forward(self, X: torch.Tensor, y: torch.Tensor, *, skip_unused: bool = False) -> torch.Tensor:
        """Predict every label from its x and the pairs before it.

        Parameters
        ----------
        X : Tensor of shape (B, n, d)
        y : Tensor of shape (B, n)
            ``y[:, i]`` is used by predictions ``i + 1, ...`` only.
        skip_unused : bool
            Skip the work that no prediction reads — the training loop's fast path, with the
            same predictions. The last token (``y_n``'s) is dropped, since no x token comes
            after it; the GPT-2 model also runs its last block at the x tokens only. The
            blocks then see a shorter stream than ``embed`` makes, so hooks that capture
            hidden states (the probes) need the default ``False``.

        Returns
        -------
        Tensor of shape (B, n)
            ``out[:, i]`` is the prediction of ``y[:, i]`` from ``x_i`` and
            ``(x_j, y_j)`` for ``j < i``; in the dtype of ``X``.
        """
        h = self.embed(X, y)
        if not skip_unused:
            for block in self.blocks:
                h = block(h)
            return self.readout(h).to(X.dtype)
        h = h[:, :-1]  # (B, 2n - 1, D): x_i sits at token 2i, so readout still finds every x
        for block in self.blocks[:-1]:
            h = block(h)
        return self._last_block_and_readout(h).to(X.dtype)

    # -- the hook protocol ---------------------------------------------------------------
    def x_token_positions(self, n: int) -> torch.Tensor:
        """Token index of ``x_i`` for the ``n`` context points: ``0, 2, 4, …``."""
        return torch.arange(n, device=self.read_out.weight.device) * 2

    def query_position(self, n: int) -> int:
        """Token index of the query after ``n`` context pairs: the x token of point ``n + 1``, ``2n``."""
        return 2 * n

    def readout(self, H: torch.Tensor) -> torch.Tensor:
        """Final LayerNorm and read-out at the x tokens: ``(…, 2n, width) -> (…, n)``."""
        return self.read_out(self.ln_f(H[..., ::2, :]))[..., 0]

    def _last_block_and_readout(self, h: torch.Tensor) -> torch.Tensor:
        """``readout(blocks[-1](h))``; a model whose last block can skip rows overrides it."""
        return self.readout(self.blocks[-1](h))

    @property
    def d(self) -> int:
        return self.config.d

    def num_parameters(self) -> int:
        """Number of trainable scalars."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def _check_inputs(self, X, y) -> tuple[torch.Tensor, torch.Tensor]:
        """Shapes, d and context length against the config; cast to the model's dtype.

        Finiteness is not checked here (that would synchronise the GPU every step); a NaN
        input gives NaN predictions.
        """
        if not isinstance(X, torch.Tensor) or not isinstance(y, torch.Tensor):
            bad = "X" if not isinstance(X, torch.Tensor) else "y"
            raise TypeError(f"{bad} must be a torch.Tensor, got {type(X if bad == 'X' else y).__name__}")
        if X.ndim != 3:
            raise ValueError(f"X must have shape (B, n, d), got shape {tuple(X.shape)}")
        if X.shape[-1] != self.config.d:
            raise ValueError(
                f"X has d = {X.shape[-1]} but this {self.kind!r} model was built for "
                f"d = {self.config.d} (X must have shape (B, n, {self.config.d}))"
            )
        n_max = getattr(self.config, "n_points", None)
        if n_max is not None and X.shape[1] > n_max:
            raise ValueError(
                f"X has n = {X.shape[1]} points but this model has positions for at most "
                f"n_points = {n_max}"
            )
        if not X.is_floating_point():
            raise TypeError(f"X must have a floating dtype (float32 or float64), got {X.dtype}")
        if not y.is_floating_point():
            raise TypeError(f"y must have a floating dtype (float32 or float64), got {y.dtype}")
        if y.shape != X.shape[:2]:
            raise ValueError(
                f"y must have shape (B, n) = {tuple(X.shape[:2])} to match X of shape "
                f"{tuple(X.shape)}, got {tuple(y.shape)}"
            )
        param = next(self.parameters())
        if X.device != param.device or y.device != param.device:
            raise ValueError(
                f"X is on {X.device} and y on {y.device} but the model is on {param.device}; "
                f"move them with .to({str(param.device)!r})"
            )
        # Computing happens in the model's dtype (float32 for training, float64 for exactness
        # checks after model.double()); forward returns the dtype X came in.
        return X.to(param.dtype), y.to(param.dtype)
