"""What every trained in-context learner shares: input checks and the hook protocol's forward."""

from __future__ import annotations

import torch
import torch.nn as nn

from .._validate import check_regression_inputs


class InContextRegressor(nn.Module):
    """Base class of the ``"gpt2"``, ``"linear"`` and ``"lstm"`` models.

    Subclasses set ``config`` (a dataclass with at least ``d``, and ``n_points`` when the
    model has positions), ``blocks`` (an ``nn.ModuleList``) and define ``embed``,
    ``readout`` and ``x_token_positions``. ``forward`` is then fixed:
    ``readout(blocks(embed(X, y)))``, so a hook on ``blocks[i]`` sees exactly the residual
    stream the model uses.
    """

    kind: str = ""

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
