"""Trained in-context learners and their shipped checkpoints.

Three families, one file each, all following the same hook protocol
(:class:`tfnewton.capture.PromptModel`: ``embed``, ``blocks``, ``readout``,
``x_token_positions``, ``query_position``), the shared parts in their base class
:class:`InContextRegressor`.

``"gpt2"``    softmax Transformer, Garg et al.'s model (:mod:`~tfnewton.models.gpt2`)
``"linear"``  linear-attention Transformer, Giannou et al.'s setting (:mod:`~tfnewton.models.linear`)
``"lstm"``    stacked LSTM on the same tokens, Garg et al.'s recurrent baseline (:mod:`~tfnewton.models.lstm`)

>>> from tfnewton.models import build_model
>>> model = build_model("gpt2", d=5, n_layers=2, width=32, heads=2)
>>> model.config.n_points
11
"""

from __future__ import annotations

from .._validate import check_int
from ._common import InContextRegressor, ModelConfig
from .gpt2 import GPT2Config, GPT2Regressor
from .pretrained import (
    PretrainedError,
    list_pretrained,
    load_checkpoint,
    load_pretrained,
    pretrained_info,
    save_checkpoint,
)

__all__ = [
    "build_model",
    "model_from_config",
    "KINDS",
    "InContextRegressor",
    "ModelConfig",
    "GPT2Config",
    "GPT2Regressor",
    "LinearAttentionConfig",
    "LinearAttentionRegressor",
    "LSTMConfig",
    "LSTMRegressor",
    "list_pretrained",
    "load_pretrained",
    "pretrained_info",
    "load_checkpoint",
    "save_checkpoint",
    "PretrainedError",
    "from_garg_checkpoint",
    "to_garg_state_dict",
    "from_hf_gpt2",
]

KINDS = ("gpt2", "linear", "lstm")


def __getattr__(name):
    # linear.py needs tfnewton.layers; import it (and lstm.py) on first use only.
    if name in ("LinearAttentionConfig", "LinearAttentionRegressor"):
        from . import linear

        return getattr(linear, name)
    if name in ("LSTMConfig", "LSTMRegressor"):
        from . import lstm

        return getattr(lstm, name)
    if name in ("from_garg_checkpoint", "to_garg_state_dict", "from_hf_gpt2"):
        from . import garg  # it imports PyYAML: on first use only

        return getattr(garg, name)
    raise AttributeError(f"module 'tfnewton.models' has no attribute {name!r}")


def _config_class(kind: str):
    if kind == "gpt2":
        return GPT2Config, GPT2Regressor
    if kind == "linear":
        from .linear import LinearAttentionConfig, LinearAttentionRegressor

        return LinearAttentionConfig, LinearAttentionRegressor
    if kind == "lstm":
        from .lstm import LSTMConfig, LSTMRegressor

        return LSTMConfig, LSTMRegressor
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def build_model(
    kind: str,
    d: int,
    *,
    n_layers: int = 6,
    width: int = 64,
    heads: int = 4,
    layernorm: bool = True,
    n_points: int | None = None,
    mlp: bool | None = None,
    mlp_ratio: int | None = None,
    residual: bool | None = None,
    device=None,
    dtype=None,
    seed: int | None = None,
) -> InContextRegressor:
    """Build an untrained in-context learner.

    Parameters
    ----------
    kind : {"gpt2", "linear", "lstm"}
    d : int
        Input dimension.
    n_layers : int
        Number of blocks (``len(model.blocks)``).
    width : int
        Residual-stream width (the LSTM's hidden size).
    heads : int
        Attention heads (ignored by ``"lstm"``).
    layernorm : bool
        LayerNorm in the blocks (``"gpt2"``: pre-LN and final LN; ``"linear"``: pre-LN;
        ``"lstm"``: before each LSTM and at the end).
    n_points : int, optional
        Longest prompt in (x, y) pairs; default ``2 * d + 1`` (Garg et al.'s curriculum end).
        The LSTM has no positions and accepts any length.
    mlp : bool, optional
        ``"linear"`` only: a ReLU MLP after each attention layer (default ``True``);
        ``False`` gives attention-only blocks, the setting of the constructions.
    mlp_ratio : int, optional
        ``"gpt2"`` only: the MLP's hidden width is ``mlp_ratio * width`` (default 4, GPT-2's).
    residual : bool, optional
        ``"lstm"`` only: a residual connection around each LSTM block (default ``True``);
        ``residual=False, layernorm=False`` is the plain stacked LSTM of Garg et al.
    device, dtype : optional
        Where and in which dtype the parameters live (default CPU, float32).
    seed : int, optional
        Seed for the initialisation (``torch.manual_seed`` is left untouched when given).

    Returns
    -------
    InContextRegressor
        ``model(X, y) -> (B, n)``.
    """
    if not isinstance(kind, str):
        raise TypeError(f"kind must be a str, one of {KINDS}, got {type(kind).__name__}")
    d = check_int(d, "d", minimum=1)
    if n_points is None:
        n_points = 2 * d + 1
    if not isinstance(layernorm, bool):
        raise TypeError(f"layernorm must be a bool, got {type(layernorm).__name__}")
    config_cls, _ = _config_class(kind)
    fields = dict(d=d, n_points=n_points, n_layers=n_layers, width=width, heads=heads, layernorm=layernorm)
    if mlp is not None:
        if kind != "linear":
            raise ValueError(f"mlp is an option of the 'linear' model only, not of {kind!r}")
        fields["mlp"] = bool(mlp)
    if mlp_ratio is not None:
        if kind != "gpt2":
            raise ValueError(f"mlp_ratio is an option of the 'gpt2' model only, not of {kind!r}")
        fields["mlp_ratio"] = check_int(mlp_ratio, "mlp_ratio", minimum=1)
    if residual is not None:
        if kind != "lstm":
            raise ValueError(f"residual is an option of the 'lstm' model only, not of {kind!r}")
        if not isinstance(residual, bool):
            raise TypeError(f"residual must be a bool, got {type(residual).__name__}")
        fields["residual"] = residual
    allowed = set(config_cls.__dataclass_fields__)
    config = config_cls(**{k: v for k, v in fields.items() if k in allowed})
    return model_from_config(kind, config, device=device, dtype=dtype, seed=seed)


def model_from_config(kind: str, config, *, device=None, dtype=None, seed: int | None = None) -> InContextRegressor:
    """Build a model of family ``kind`` from its config (dataclass or dict)."""
    import torch

    from .._validate import check_device, check_dtype

    config_cls, model_cls = _config_class(kind)
    if isinstance(config, dict):
        config = config_cls.from_dict(config)
    elif not isinstance(config, config_cls):
        raise TypeError(f"config must be a {config_cls.__name__} or a dict, got {type(config).__name__}")
    device = check_device(device)
    dtype = torch.float32 if dtype is None else check_dtype(dtype)
    if seed is None:
        model = model_cls(config)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(check_int(seed, "seed"))
            model = model_cls(config)
    return model.to(device=device, dtype=dtype)
