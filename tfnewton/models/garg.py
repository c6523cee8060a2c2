r"""Interop with the in-context models people already have: Garg et al.'s checkpoints and HF GPT-2.

Garg, Tsipras, Liang and Valiant (2022) trained their in-context learners with a Hugging Face
``GPT2Model`` between a linear read-in and a linear read-out (their ``TransformerModel``);
Fu et al. (2024) probed the linear-regression one they released (12 layers, 8 heads, width
256, ``d = 20``). A run of their code leaves a folder::

    <run>/config.yaml     yaml.dump of the run's arguments; the model section reads
                          model: {family: gpt2, n_dims, n_embd, n_head, n_layer, n_positions}
                          (Fu et al.'s probing runs add use_first_n_layer)
    <run>/state.pt        {"model_state_dict": ..., "optimizer_state_dict": ..., "train_step": int}
    <run>/model_<k>.pt    a bare model state dict, kept every ``keep_every_steps``

and their model state dict is named like this (``i`` = 0 … n_layer − 1)::

    _read_in.weight (n_embd, n_dims)           _read_in.bias (n_embd,)
    _backbone.wte.weight (50257, n_embd)        never read: inputs_embeds are passed
    _backbone.wpe.weight (2 n_positions, n_embd)
    _backbone.h.i.ln_1.{weight,bias}            _backbone.h.i.ln_2.{weight,bias}
    _backbone.h.i.attn.c_attn.{weight (n_embd, 3 n_embd), bias}
    _backbone.h.i.attn.c_proj.{weight (n_embd, n_embd), bias}
    _backbone.h.i.mlp.c_fc.{weight (n_embd, 4 n_embd), bias}
    _backbone.h.i.mlp.c_proj.{weight (4 n_embd, n_embd), bias}
    _backbone.h.i.attn.bias, .masked_bias      the causal-mask buffers of transformers < 4.31
    _backbone.ln_f.{weight,bias}
    _read_out.weight (1, n_embd)                _read_out.bias (1,)

HF's ``Conv1D`` stores its weight as ``(in, out)``, the transpose of ``nn.Linear``'s.
:class:`~tfnewton.models.gpt2.GPT2Regressor` names its modules after HF's, so converting is a
renaming plus four transposes per block — the function computed is the same (the tests check
predictions and every layer's hidden state against HF's ``GPT2Model`` to 1e-5 in float32 and
1e-10 in float64).

Reading order: :func:`from_garg_checkpoint` (a file, a run folder or a state dict in),
:func:`from_hf_gpt2` (live HF modules in), :func:`to_garg_state_dict` and
:func:`save_garg_run` (back out, for their code), :func:`read_garg_config`, then the private
pieces they share: loading without unpickling code, and the key-by-key conversion.

Nothing here imports ``transformers``: a live backbone is read through its ``state_dict``
and ``config`` attributes only. ``config.yaml`` is read and written by PyYAML's safe loader
and dumper, so no Python object is ever constructed from a file.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch
import yaml

from .._validate import check_device, check_dtype, check_int, check_positive
from .gpt2 import GPT2Config, GPT2Regressor
from .pretrained import atomic_save

__all__ = [
    "from_garg_checkpoint",
    "from_hf_gpt2",
    "to_garg_state_dict",
    "save_garg_run",
    "read_garg_config",
    "GPT2_VOCAB_SIZE",
]

GPT2_VOCAB_SIZE = 50257  # HF GPT2Config's default; Garg et al.'s models keep the (unused) table

# HF Conv1D weights are (in, out); ours are nn.Linear (out, in).
_BLOCK_TENSORS = {
    # garg name (after "_backbone.h.{i}.")  ->  (our name (after "blocks.{i}."), transposed)
    "ln_1.weight": ("ln_1.weight", False),
    "ln_1.bias": ("ln_1.bias", False),
    "attn.c_attn.weight": ("attn.c_attn.weight", True),
    "attn.c_attn.bias": ("attn.c_attn.bias", False),
    "attn.c_proj.weight": ("attn.c_proj.weight", True),
    "attn.c_proj.bias": ("attn.c_proj.bias", False),
    "ln_2.weight": ("ln_2.weight", False),
    "ln_2.bias": ("ln_2.bias", False),
    "mlp.c_fc.weight": ("mlp.c_fc.weight", True),
    "mlp.c_fc.bias": ("mlp.c_fc.bias", False),
    "mlp.c_proj.weight": ("mlp.c_proj.weight", True),
    "mlp.c_proj.bias": ("mlp.c_proj.bias", False),
}
_OUTER_TENSORS = {
    "_read_in.weight": "read_in.weight",
    "_read_in.bias": "read_in.bias",
    "_backbone.wpe.weight": "wpe.weight",
    "_backbone.ln_f.weight": "ln_f.weight",
    "_backbone.ln_f.bias": "ln_f.bias",
    "_read_out.weight": "read_out.weight",
    "_read_out.bias": "read_out.bias",
}
# Present in their files, not part of the function: the token table (inputs_embeds are
# passed, so it is never read) and the causal-mask buffers old transformers saved.
_IGNORED = re.compile(r"^_backbone\.(wte\.weight|h\.\d+\.attn\.(bias|masked_bias))$")
_LEGACY_BUFFER = re.compile(r"^_backbone\.h\.\d+\.attn\.(bias|masked_bias)$")
_LAYER = re.compile(r"^_backbone\.h\.(\d+)\.")


# --------------------------------------------------------------------------------------
# Public: in
# --------------------------------------------------------------------------------------
def from_garg_checkpoint(
    path,
    *,
    config=None,
    heads: int | None = None,
    step: int | None = None,
    device=None,
    dtype: torch.dtype | None = None,
) -> GPT2Regressor:
    """Load a model trained with Garg et al.'s code into tfnewton's ``"gpt2"`` family.

    Parameters
    ----------
    path : str, Path or mapping
        One of

        - their run folder: ``config.yaml`` and ``state.pt`` (its ``model_state_dict``), or
          ``model_<step>.pt`` when ``step`` is given;
        - a checkpoint file: their ``state.pt`` or a bare ``model_<step>.pt``; a
          ``config.yaml`` beside it is read when ``config`` is not given;
        - a state dict already in memory (or a dict holding one under ``model_state_dict``).
    config : str, Path or mapping, optional
        Their configuration: a path to a ``config.yaml``, the parsed dict (with a ``model``
        section) or the model section itself (``n_dims``, ``n_positions``, ``n_embd``,
        ``n_layer``, ``n_head``, and ``use_first_n_layer`` for Fu et al.'s probing runs).
        Every number in it is checked against the tensors. Without a config, ``d``, the
        width, the number of layers, the number of positions and the MLP width are read
        from the tensor shapes.
    heads : int, optional
        Attention heads. The tensors cannot tell (heads only split the width), so it is
        required when no config gives ``n_head``; when both give it they must agree.
        Their released linear-regression model has 8.
    step : int, optional
        With a run folder: load ``model_<step>.pt`` instead of ``state.pt``.
    device : str or torch.device, optional
        Where the model goes (default CPU; the file is always read onto the CPU first, so a
        checkpoint saved on a GPU loads on a laptop).
    dtype : torch.dtype, optional
        Parameter dtype (default: the checkpoint's, float32 for theirs). ``torch.float64``
        for exactness checks.

    Returns
    -------
    GPT2Regressor
        In eval mode. ``model(X, y) -> (B, n)`` equals their ``model(xs, ys)``.
        ``model.metadata`` records where it came from (``source``, ``path``,
        ``train_step`` when the file has one, and the parsed ``config``).

        When the config's ``model.use_first_n_layer`` is an ``n`` below ``n_layer`` (Fu et
        al.'s probing runs), their model reads its prediction out of the residual stream
        after block ``n``, without the final LayerNorm (``read_out(hidden_states[n])``), and
        so does the returned model: it has the first ``n`` blocks, and
        ``config.final_layernorm`` is ``False``. The blocks after ``n`` and the final
        LayerNorm are in the file (and checked) but compute nothing, so they are not kept.
        A value of ``n_layer`` or more means the whole model, as in their code.

    Raises
    ------
    ValueError
        The file is not a PyTorch checkpoint, or holds pickled objects other than tensors
        and plain containers (it is refused, never executed); the state dict is not one of
        Garg et al.'s GPT-2 models (missing or unexpected tensors are listed); a tensor's
        shape disagrees with the others or with the config (the tensor and both shapes are
        named); ``heads`` is missing or does not divide the width; ``use_first_n_layer``
        is below 1. Nothing is returned half-loaded: the model is built only after every
        tensor has been checked.

    Notes
    -----
    Files are read with ``torch.load(..., weights_only=True)``: tensors, numbers, strings
    and plain containers only. Their ``state.pt`` (model and Adam state dicts, the step
    count) needs no allow-listed type. ``config.yaml`` is read with ``yaml.safe_load``
    (:func:`~tfnewton.models.garg.read_garg_config`).

    Examples
    --------
    >>> import tempfile
    >>> from tfnewton.models import build_model
    >>> from tfnewton.models.garg import save_garg_run
    >>> original = build_model("gpt2", d=3, n_layers=2, width=16, heads=2, seed=0)
    >>> with tempfile.TemporaryDirectory() as run:
    ...     _ = save_garg_run(original, run)
    ...     model = from_garg_checkpoint(run)
    >>> model.config.n_layers, model.config.heads, model.config.n_points
    (2, 2, 7)
    """
    device = check_device(device)
    if dtype is not None:
        dtype = check_dtype(dtype)
    if step is not None:
        step = check_int(step, "step")
    source, state_dict, train_step, config_path = _read_source(path, step)
    conf = None
    if config is not None:
        conf, config_path = _read_config_argument(config)
    elif config_path is not None:
        conf = read_garg_config(config_path)
    model_conf = _model_section(conf, config_path) if conf is not None else None
    gpt2_config, ours = _convert(state_dict, model_conf, heads=heads, ln_eps=1e-5, source=source)
    model = _build(gpt2_config, ours, device=device, dtype=dtype)
    model.metadata = {
        "source": "garg",
        "path": source,
        "train_step": train_step,
        "config": conf,
    }
    return model


def from_hf_gpt2(
    backbone, read_in=None, read_out=None, *, use_first_n_layer: int | None = None, device=None, dtype=None
) -> GPT2Regressor:
    """Convert live Hugging Face modules — a ``GPT2Model`` between two ``nn.Linear`` — to ours.

    Parameters
    ----------
    backbone : transformers.GPT2Model, or a module with ``_backbone``, ``_read_in``, ``_read_out``
        The GPT-2 backbone (read through ``state_dict()`` and ``config`` only; ``transformers``
        is never imported here). Garg et al.'s whole ``TransformerModel`` may be passed alone.
    read_in : nn.Linear(d, width)
        Lifts each token (``x_i``, or ``(y_i, 0, …, 0)``) to the width.
    read_out : nn.Linear(width, 1)
        Reads the prediction at each x token from the backbone's final (LayerNormed) state.
    use_first_n_layer : int, optional
        Read out after block ``n`` without the final LayerNorm (HF's ``hidden_states[n]``),
        as Fu et al.'s probing runs do; ``n >= n_layer`` is the whole model. Default: the
        whole module's ``first_n_layer`` when it has one (Fu et al.'s variant of the
        ``TransformerModel`` keeps it there), else the whole model.
    device, dtype : optional
        As in :func:`~tfnewton.models.garg.from_garg_checkpoint` (default: CPU, the backbone's dtype).

    Returns
    -------
    GPT2Regressor
        In eval mode, computing what ``read_out(backbone(inputs_embeds=read_in(tokens))
        .last_hidden_state)[:, ::2, 0]`` computes on Garg et al.'s interleaved tokens.

    Raises
    ------
    ValueError
        The backbone is configured in a way our model does not compute: an activation
        other than the tanh GELU (``"gelu_new"`` / ``"gelu_pytorch_tanh"``), unscaled
        attention, per-layer attention scaling, cross-attention; or shapes that disagree.
    TypeError
        ``read_in``/``read_out`` missing or not modules with a ``state_dict``.

    Notes
    -----
    Dropout is not carried over (ours has none): the converted model equals the backbone in
    eval mode, or with ``*_pdrop = 0`` as Garg et al. configured it.
    """
    device = check_device(device)
    if dtype is not None:
        dtype = check_dtype(dtype)
    if read_in is None and read_out is None and all(
        hasattr(backbone, name) for name in ("_backbone", "_read_in", "_read_out")
    ):
        if use_first_n_layer is None:
            use_first_n_layer = getattr(backbone, "first_n_layer", None)
        backbone, read_in, read_out = backbone._backbone, backbone._read_in, backbone._read_out
    if use_first_n_layer is not None:
        use_first_n_layer = check_int(use_first_n_layer, "use_first_n_layer", minimum=1)
    for name, module in (("backbone", backbone), ("read_in", read_in), ("read_out", read_out)):
        if not callable(getattr(module, "state_dict", None)):
            raise TypeError(
                f"{name} must be a torch module (backbone: a transformers GPT2Model; read_in: "
                f"nn.Linear(d, width); read_out: nn.Linear(width, 1)), got {type(module).__name__}"
            )
    hf = getattr(backbone, "config", None)
    if hf is None:
        raise TypeError(
            f"backbone must be a transformers GPT2Model (it has a .config), got {type(backbone).__name__}"
        )
    _check_hf_config(hf)
    n_head = getattr(hf, "n_head", None) or getattr(hf, "num_attention_heads", None)
    ln_eps = float(getattr(hf, "layer_norm_epsilon", 1e-5))
    state_dict = {}
    for prefix, module in (("_read_in.", read_in), ("_backbone.", backbone), ("_read_out.", read_out)):
        for key, value in module.state_dict().items():
            state_dict[prefix + key] = value.detach()
    read_out_after = None if use_first_n_layer is None else {"use_first_n_layer": use_first_n_layer}
    gpt2_config, ours = _convert(state_dict, read_out_after, heads=n_head, ln_eps=ln_eps, source="the HF backbone")
    model = _build(gpt2_config, ours, device=device, dtype=dtype)
    model.metadata = {"source": "hf_gpt2", "hf_config": _jsonable_config(hf)}
    return model


# --------------------------------------------------------------------------------------
# Public: out
# --------------------------------------------------------------------------------------
def to_garg_state_dict(
    model: GPT2Regressor,
    *,
    legacy_buffers: bool = False,
    vocab_size: int = GPT2_VOCAB_SIZE,
) -> dict[str, torch.Tensor]:
    """The state dict Garg et al.'s ``TransformerModel`` of the same shape loads strictly.

    Parameters
    ----------
    model : GPT2Regressor
        A ``"gpt2"`` model with LayerNorm, the 4× MLP and the final LayerNorm (their
        architecture; anything else cannot be expressed in their code and is refused).
    legacy_buffers : bool
        Include the causal-mask buffers ``attn.bias`` (uint8 lower-triangular, ``(1, 1, P,
        P)`` with ``P = 2 n_points``) and ``attn.masked_bias`` (−1e4) that transformers
        before 4.31 keeps in every state dict (their code pins 4.17). The default ``False``
        is what a current ``GPT2Model`` loads strictly: it no longer saves them, and a
        strict load would call them unexpected.
    vocab_size : int
        Rows of the unused token table ``_backbone.wte.weight`` (zeros): 50257, HF's
        default, is what their code builds. Its size is the bulk of the file
        (``vocab_size × width`` floats).

    Returns
    -------
    dict of str to Tensor
        CPU tensors in the model's dtype, HF's ``Conv1D`` weights transposed back to
        ``(in, out)``; ``torch.save({"model_state_dict": it, ...})`` gives their ``state.pt``.
    """
    if not isinstance(model, GPT2Regressor):
        raise TypeError(f"model must be a GPT2Regressor (kind 'gpt2'), got {type(model).__name__}")
    if not isinstance(legacy_buffers, bool):
        raise TypeError(f"legacy_buffers must be a bool, got {type(legacy_buffers).__name__}")
    vocab_size = check_int(vocab_size, "vocab_size", minimum=1)
    cfg = model.config
    if not cfg.layernorm:
        raise ValueError(
            "model has layernorm=False; Garg et al.'s GPT-2 always has LayerNorms, so its state "
            "dict cannot express this model"
        )
    if not cfg.final_layernorm:
        raise ValueError(
            "model has final_layernorm=False (it reads out after an earlier block, as a Fu et "
            "al. probing run loaded with use_first_n_layer does); Garg et al.'s TransformerModel "
            "always applies the final LayerNorm, so its state dict cannot express this model"
        )
    if cfg.mlp_ratio != 4:
        raise ValueError(
            f"model has mlp_ratio={cfg.mlp_ratio}; Garg et al.'s TransformerModel builds the "
            "GPT-2 MLP of 4 × width, so its state dict cannot express this model"
        )
    if cfg.ln_eps != 1e-5:
        raise ValueError(
            f"model has ln_eps={cfg.ln_eps}; Garg et al.'s TransformerModel uses HF's default 1e-5"
        )
    ours = {k: v.detach().to("cpu") for k, v in model.state_dict().items()}
    dtype = ours["read_in.weight"].dtype
    P = ours["wpe.weight"].shape[0]
    out: dict[str, torch.Tensor] = {}
    # In the order their module registers them, so the file reads like theirs.
    out["_read_in.weight"] = ours["read_in.weight"].clone()
    out["_read_in.bias"] = ours["read_in.bias"].clone()
    out["_backbone.wte.weight"] = torch.zeros(vocab_size, cfg.width, dtype=dtype)
    out["_backbone.wpe.weight"] = ours["wpe.weight"].clone()
    for i in range(cfg.n_layers):
        for garg_name, (our_name, transposed) in _BLOCK_TENSORS.items():
            if garg_name == "attn.c_attn.weight" and legacy_buffers:
                out[f"_backbone.h.{i}.attn.bias"] = torch.tril(
                    torch.ones(P, P, dtype=torch.uint8)
                ).view(1, 1, P, P)
                out[f"_backbone.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
            t = ours[f"blocks.{i}.{our_name}"]
            out[f"_backbone.h.{i}.{garg_name}"] = (t.t() if transposed else t).contiguous().clone()
    out["_backbone.ln_f.weight"] = ours["ln_f.weight"].clone()
    out["_backbone.ln_f.bias"] = ours["ln_f.bias"].clone()
    out["_read_out.weight"] = ours["read_out.weight"].clone()
    out["_read_out.bias"] = ours["read_out.bias"].clone()
    return out


def save_garg_run(
    model: GPT2Regressor,
    folder,
    *,
    train_step: int = 0,
    keep_model_file: bool = False,
    config_extra: Mapping | None = None,
    legacy_buffers: bool = False,
    vocab_size: int = GPT2_VOCAB_SIZE,
) -> Path:
    """Write ``model`` as a run folder of Garg et al.'s code: ``config.yaml`` and ``state.pt``.

    Their evaluation code's ``get_model_from_run(folder)`` loads it, their training resumes
    from it (on today's transformers; pass ``legacy_buffers=True`` for the 4.17 they pin),
    and so does :func:`~tfnewton.models.garg.from_garg_checkpoint`. ``state.pt``
    holds ``model_state_dict`` (:func:`~tfnewton.models.garg.to_garg_state_dict`),
    ``optimizer_state_dict`` and ``train_step``. The optimizer state is that of
    ``torch.optim.Adam(their_model.parameters(), lr=training.learning_rate)`` before its first
    step (their optimizer; one parameter group over every parameter, the unused token table
    included, and no moments yet), so their ``optimizer.load_state_dict`` accepts it and the
    moments start afresh at the next step.

    Parameters
    ----------
    model : GPT2Regressor
    folder : str or Path
        Created if needed; existing ``config.yaml``/``state.pt`` are replaced (atomically).
    train_step : int
        Recorded as ``train_step`` (their resume point).
    keep_model_file : bool
        Also write ``model_<train_step>.pt`` (a bare state dict, as their
        ``keep_every_steps`` does).
    config_extra : mapping, optional
        Merged (recursively) into the written config, e.g. ``{"training": {"task":
        "linear_regression"}}``. The ``model`` section always describes ``model`` (the whole
        of it: a ``use_first_n_layer`` given here is dropped).
    legacy_buffers, vocab_size
        As in :func:`~tfnewton.models.garg.to_garg_state_dict`.

    Returns
    -------
    Path
        The folder.
    """
    train_step = check_int(train_step, "train_step")
    state_dict = to_garg_state_dict(model, legacy_buffers=legacy_buffers, vocab_size=vocab_size)
    cfg = model.config
    conf = {
        "model": {},
        "out_dir": str(folder),
        "test_run": False,
        "training": {
            "batch_size": 64,
            "curriculum": {
                "dims": {"start": cfg.d, "end": cfg.d, "inc": 1, "interval": 2000},
                "points": {"start": cfg.n_points, "end": cfg.n_points, "inc": 2, "interval": 2000},
            },
            "data": "gaussian",
            "keep_every_steps": 100000,
            "learning_rate": 0.0001,
            "num_tasks": None,
            "num_training_examples": None,
            "resume_id": None,
            "save_every_steps": 1000,
            "task": "linear_regression",
            "task_kwargs": {},
            "train_steps": train_step,
        },
        "wandb": {"entity": "", "log_every_steps": 100, "name": None, "notes": "", "project": ""},
    }
    if config_extra is not None:
        if not isinstance(config_extra, Mapping):
            raise TypeError(f"config_extra must be a mapping, got {type(config_extra).__name__}")
        _merge(conf, config_extra)
    if not isinstance(conf["model"], dict):
        raise TypeError(f"config_extra['model'] must be a mapping, got {type(conf['model']).__name__}")
    conf["model"].pop("use_first_n_layer", None)
    conf["model"].update(
        family="gpt2", n_dims=cfg.d, n_embd=cfg.width, n_head=cfg.heads,
        n_layer=cfg.n_layers, n_positions=cfg.n_points,
    )
    lr = conf["training"].get("learning_rate") if isinstance(conf["training"], dict) else None
    lr = check_positive(lr, "the config's training.learning_rate")
    try:
        text = yaml.safe_dump(conf, default_flow_style=False)
    except yaml.YAMLError as err:
        raise TypeError(f"config_extra holds a value YAML cannot write as plain data: {err}") from None
    # Adam over their model's parameters: every tensor but the causal-mask buffers.
    parameters = [t for k, t in state_dict.items() if not _LEGACY_BUFFER.match(k)]
    optimizer_state = torch.optim.Adam(parameters, lr=lr).state_dict()

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".config.yaml.tmp{os.getpid()}"
    tmp.write_text(text)
    os.replace(tmp, folder / "config.yaml")
    atomic_save(
        {"model_state_dict": state_dict, "optimizer_state_dict": optimizer_state, "train_step": train_step},
        folder / "state.pt",
    )
    if keep_model_file:
        atomic_save(state_dict, folder / f"model_{train_step}.pt")
    return folder


def read_garg_config(path) -> dict:
    """Read a ``config.yaml`` written by Garg et al.'s code (``yaml.dump`` of their arguments).

    Read with ``yaml.safe_load``, as their evaluation code reads it: plain data only (no
    Python object is constructed from the file), folded long strings and multi-line
    strings included.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    dict
        The parsed config (empty for an empty file).

    Raises
    ------
    ValueError
        The file cannot be read, is not YAML (the parser's message, with its line and
        column, is included), or its top level is not a mapping.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ValueError(f"cannot read the config {str(path)!r}: {err}") from err
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(f"{str(path)!r} is not a YAML file safe_load reads: {err}") from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{str(path)!r} must hold a mapping (its top level is a {type(value).__name__})")
    return value


# --------------------------------------------------------------------------------------
# Reading a source without executing anything
# --------------------------------------------------------------------------------------
def _read_source(path, step):
    """-> (description, state dict, train_step or None, path of a config.yaml or None)."""
    if isinstance(path, Mapping):
        payload, where, config_path = path, "the state dict passed in", None
    elif isinstance(path, (str, os.PathLike)):
        p = Path(path)
        if p.is_dir():
            if step is None:
                file = p / "state.pt"
                if not file.exists():
                    kept = sorted(q.name for q in p.glob("model_*.pt"))
                    hint = f"; it has {', '.join(kept)} (pass step=...)" if kept else ""
                    raise ValueError(
                        f"{str(p)!r} is not a Garg et al. run folder: it has no state.pt{hint}"
                    )
            else:
                file = p / f"model_{step}.pt"
                if not file.exists():
                    kept = sorted(q.name for q in p.glob("model_*.pt"))
                    raise ValueError(
                        f"{str(p)!r} has no model_{step}.pt (it has: {', '.join(kept) or 'none'})"
                    )
            config_path = p / "config.yaml" if (p / "config.yaml").exists() else None
        elif p.is_file():
            if step is not None:
                raise ValueError(f"step is for a run folder; {str(p)!r} is a file")
            file = p
            sibling = p.parent / "config.yaml"
            config_path = sibling if sibling.exists() else None
        else:
            raise ValueError(f"path {str(p)!r} does not exist")
        payload, where = _load_weights_only(file), str(file)
    else:
        raise TypeError(
            "path must be a run folder, a checkpoint file (str or Path) or a state dict, "
            f"got {type(path).__name__}"
        )
    if not isinstance(payload, Mapping):
        raise ValueError(
            f"{where} does not hold a state dict (a dict of tensors), it holds a {type(payload).__name__}"
        )
    train_step = None
    if "model_state_dict" in payload:  # their state.pt
        train_step = payload.get("train_step")
        payload = payload["model_state_dict"]
        if not isinstance(payload, Mapping):
            raise ValueError(f"{where}: model_state_dict is a {type(payload).__name__}, not a state dict")
    return where, dict(payload), train_step, config_path


def _load_weights_only(file: Path):
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "Weights only load failed" in str(err):
            first = next((ln for ln in str(err).splitlines() if "GLOBAL" in ln or "Unsupported" in ln), "")
            raise ValueError(
                f"{str(file)!r} holds pickled Python objects other than tensors and plain "
                f"containers; tfnewton loads weights only and refused it without running it. "
                f"{first.strip()}"
            ) from None
        raise ValueError(f"{str(file)!r} is not a PyTorch checkpoint ({err})") from None
    except Exception as err:  # noqa: BLE001 - torch raises many types for a foreign file
        raise ValueError(
            f"{str(file)!r} is not a PyTorch checkpoint (torch.load failed: "
            f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''})"
        ) from None


def _read_config_argument(config):
    if isinstance(config, Mapping):
        return dict(config), None
    if isinstance(config, (str, os.PathLike)):
        return read_garg_config(config), Path(config)
    raise TypeError(f"config must be a path to a config.yaml or a dict, got {type(config).__name__}")


def _model_section(conf: dict, where) -> dict:
    """The ``model`` section (or ``conf`` itself when it already is one), checked."""
    name = f"config {str(where)!r}" if where is not None else "config"
    section = conf.get("model", conf) if isinstance(conf, Mapping) else None
    if not isinstance(section, Mapping):
        raise ValueError(f"{name}: 'model' must be a mapping, got {type(section).__name__}")
    family = section.get("family", "gpt2")
    if family != "gpt2":
        raise ValueError(
            f"{name} describes a {family!r} model; only Garg et al.'s 'gpt2' family converts "
            "to tfnewton's GPT-2 (their LSTM is a different architecture)"
        )
    out = {}
    for key in ("n_dims", "n_positions", "n_embd", "n_layer", "n_head", "use_first_n_layer"):
        if key in section and section[key] is not None:
            value = section[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                hint = ""
                if key == "use_first_n_layer" and value == 0:
                    hint = " (0 would read the prediction out of the embeddings, before any block)"
                raise ValueError(f"{name}: model.{key} must be a positive int, got {value!r}{hint}")
            out[key] = value
    return out


# --------------------------------------------------------------------------------------
# The conversion: check everything, then rename and transpose
# --------------------------------------------------------------------------------------
def _convert(state_dict: dict, model_conf: dict | None, *, heads, ln_eps: float, source: str):
    """Garg-named state dict -> (GPT2Config, our state dict). Raises before building anything."""
    sd = _strip_prefix(state_dict)
    for key, value in sd.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(
                f"{source}: entry {key!r} is a {type(value).__name__}, not a tensor; this is not a state dict"
            )
    _check_architecture(sd, source)

    # Shapes read from the tensors.
    width, d = _shape(sd, "_read_in.weight", 2)
    layer_ids = sorted({int(m.group(1)) for k in sd if (m := _LAYER.match(k))})
    if layer_ids != list(range(len(layer_ids))):
        raise ValueError(f"{source}: blocks must be numbered 0..L-1, found {layer_ids}")
    n_layers = len(layer_ids)
    positions = _shape(sd, "_backbone.wpe.weight", 2)[0]
    inner = _shape(sd, "_backbone.h.0.mlp.c_fc.weight", 2)[1]

    conf = model_conf or {}
    if conf:
        # The config is the claim; each tensor below is checked against it.
        d = conf.get("n_dims", d)
        width = conf.get("n_embd", width)
        n_layers_conf = conf.get("n_layer", n_layers)
        if n_layers_conf != n_layers:
            raise ValueError(
                f"{source}: the config says n_layer = {n_layers_conf} but the state dict has "
                f"{n_layers} blocks (_backbone.h.0 … _backbone.h.{n_layers - 1})"
            )
        if "n_positions" in conf:
            positions = 2 * conf["n_positions"]
    conf_heads = conf.get("n_head")
    if heads is not None:
        heads = check_int(heads, "heads", minimum=1)
        if conf_heads is not None and conf_heads != heads:
            raise ValueError(f"heads={heads} but the config says n_head = {conf_heads}")
    heads = heads if heads is not None else conf_heads
    if heads is None:
        raise ValueError(
            "heads is required: the number of attention heads cannot be read from the tensor "
            "shapes (heads only split the width) and no config.yaml gives model.n_head; pass "
            "heads=... (Garg et al.'s released linear-regression model has 8) or config=..."
        )
    if width % heads:
        raise ValueError(f"heads={heads} does not divide the width {width} (from _read_in.weight)")
    if inner % width:
        raise ValueError(
            f"{source}: _backbone.h.0.mlp.c_fc.weight has shape {tuple(sd['_backbone.h.0.mlp.c_fc.weight'].shape)}; "
            f"its MLP width {inner} is not a multiple of the width {width}"
        )

    expected = _expected_garg_shapes(d, width, n_layers, positions, inner)
    for key, shape in expected.items():
        got = tuple(sd[key].shape)
        if got != shape:
            raise ValueError(
                f"{source}: {key} has shape {got} but {shape} was expected "
                f"({_explain(conf, d, width, positions, inner)})"
            )
    if "_backbone.wte.weight" in sd and sd["_backbone.wte.weight"].shape[-1] != width:
        got = tuple(sd["_backbone.wte.weight"].shape)
        raise ValueError(f"{source}: _backbone.wte.weight has shape {got}; its width should be {width}")
    for i in range(n_layers):
        mask = sd.get(f"_backbone.h.{i}.attn.bias")
        if mask is not None and tuple(mask.shape) not in ((1, 1, positions, positions), (positions, positions)):
            raise ValueError(
                f"{source}: _backbone.h.{i}.attn.bias (the causal mask) has shape {tuple(mask.shape)} "
                f"but {(1, 1, positions, positions)} was expected from _backbone.wpe.weight"
            )

    # Fu et al.'s probing runs read out after block n (their hidden_states[n], no final
    # LayerNorm); n >= n_layer is the whole model, as in their code.
    read_out_after = min(conf.get("use_first_n_layer", n_layers), n_layers)
    config = GPT2Config(
        d=d,
        n_points=positions // 2,  # an odd last position is unreachable by whole (x, y) pairs
        n_layers=read_out_after,
        width=width,
        heads=heads,
        layernorm=True,
        mlp_ratio=inner // width,
        ln_eps=ln_eps,
        final_layernorm=read_out_after == n_layers,
    )
    ours = {}
    for garg_name, our_name in _OUTER_TENSORS.items():
        if our_name.startswith("ln_f.") and not config.final_layernorm:
            continue
        ours[our_name] = sd[garg_name]
    ours["wpe.weight"] = ours["wpe.weight"][: 2 * config.n_points]
    for i in range(read_out_after):
        for garg_name, (our_name, transposed) in _BLOCK_TENSORS.items():
            t = sd[f"_backbone.h.{i}.{garg_name}"]
            ours[f"blocks.{i}.{our_name}"] = t.t() if transposed else t
    return config, ours


def _build(config: GPT2Config, ours: dict, *, device, dtype) -> GPT2Regressor:
    dtype = dtype or ours["read_in.weight"].dtype
    if dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        raise ValueError(f"the checkpoint's tensors have dtype {dtype}; pass dtype=torch.float32")
    model = GPT2Regressor(config).to(dtype=dtype)
    # strict: every parameter of ours is set, nothing else is accepted.
    model.load_state_dict(ours, strict=True)
    return model.to(device=device).eval()


def _strip_prefix(sd: dict) -> dict:
    # nn.DataParallel / DistributedDataParallel save every key under "module.".
    if sd and all(k.startswith("module.") for k in sd):
        return {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _check_architecture(sd: dict, source: str) -> None:
    keys = set(sd)
    needed = set(_OUTER_TENSORS) | {f"_backbone.h.0.{k}" for k in _BLOCK_TENSORS}
    missing = sorted(needed - keys)
    if missing:
        sample = ", ".join(sorted(keys)[:6]) + (", …" if len(keys) > 6 else "")
        hint = ""
        if any(k.startswith(("read_in.", "blocks.")) for k in keys):
            hint = " It looks like a tfnewton state dict: load it with model.load_state_dict or tfnewton.models.load_checkpoint."
        elif any(k.startswith(("h.0.", "wpe.")) for k in keys):
            hint = " It looks like a bare HF GPT2Model: use from_hf_gpt2(backbone, read_in, read_out)."
        elif any(k.startswith(("transformer.", "lm_head.")) for k in keys):
            hint = " It looks like an HF GPT2LMHeadModel (a language model), not an in-context regressor."
        elif any("lstm" in k or "weight_ih_l" in k for k in keys):
            hint = " It looks like Garg et al.'s LSTM baseline, a different architecture."
        raise ValueError(
            f"{source} is not a Garg et al. GPT-2 TransformerModel state dict: missing "
            f"{', '.join(missing[:5])}{' …' if len(missing) > 5 else ''} "
            f"({len(missing)} missing); it has {sample}.{hint}"
        )
    layer_ids = {int(m.group(1)) for k in keys if (m := _LAYER.match(k))}
    for i in layer_ids:
        for k in _BLOCK_TENSORS:
            if f"_backbone.h.{i}.{k}" not in keys:
                raise ValueError(f"{source}: block {i} is incomplete, _backbone.h.{i}.{k} is missing")
    known = set(_OUTER_TENSORS) | {f"_backbone.h.{i}.{k}" for i in layer_ids for k in _BLOCK_TENSORS}
    unexpected = sorted(k for k in keys - known if not _IGNORED.match(k))
    if unexpected:
        raise ValueError(
            f"{source} has tensors a Garg et al. GPT-2 does not: {', '.join(unexpected[:5])}"
            f"{' …' if len(unexpected) > 5 else ''} (cross-attention or another architecture?)"
        )


def _shape(sd, key, ndim):
    t = sd[key]
    if t.ndim != ndim:
        raise ValueError(f"{key} must have {ndim} dimensions, got shape {tuple(t.shape)}")
    return tuple(t.shape)


def _expected_garg_shapes(d, width, n_layers, positions, inner) -> dict:
    shapes = {
        "_read_in.weight": (width, d),
        "_read_in.bias": (width,),
        "_backbone.wpe.weight": (positions, width),
        "_backbone.ln_f.weight": (width,),
        "_backbone.ln_f.bias": (width,),
        "_read_out.weight": (1, width),
        "_read_out.bias": (1,),
    }
    block = {
        "ln_1.weight": (width,), "ln_1.bias": (width,),
        "attn.c_attn.weight": (width, 3 * width), "attn.c_attn.bias": (3 * width,),
        "attn.c_proj.weight": (width, width), "attn.c_proj.bias": (width,),
        "ln_2.weight": (width,), "ln_2.bias": (width,),
        "mlp.c_fc.weight": (width, inner), "mlp.c_fc.bias": (inner,),
        "mlp.c_proj.weight": (inner, width), "mlp.c_proj.bias": (width,),
    }
    for i in range(n_layers):
        for k, s in block.items():
            shapes[f"_backbone.h.{i}.{k}"] = s
    return shapes


def _explain(conf, d, width, positions, inner) -> str:
    if conf:
        given = ", ".join(f"{k} = {conf[k]}" for k in ("n_dims", "n_embd", "n_positions") if k in conf)
        return f"the config says {given}"
    return (
        f"d = {d} and width = {width} from _read_in.weight, {positions} positions from "
        f"_backbone.wpe.weight, MLP width {inner} from _backbone.h.0.mlp.c_fc.weight"
    )


def _check_hf_config(hf) -> None:
    act = getattr(hf, "activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ValueError(
            f"backbone.config.activation_function is {act!r}; tfnewton's GPT-2 uses the tanh GELU "
            "('gelu_new', Garg et al.'s), so it would compute a different function"
        )
    if not getattr(hf, "scale_attn_weights", True):
        raise ValueError("backbone.config.scale_attn_weights is False; ours scales attention by 1/sqrt(head size)")
    if getattr(hf, "scale_attn_by_inverse_layer_idx", False):
        raise ValueError("backbone.config.scale_attn_by_inverse_layer_idx is True; ours does not scale by layer")
    if getattr(hf, "add_cross_attention", False):
        raise ValueError("backbone.config.add_cross_attention is True; ours has no cross-attention")


def _jsonable_config(hf) -> dict:
    keys = ("n_embd", "n_layer", "n_head", "n_positions", "n_inner", "activation_function",
            "layer_norm_epsilon", "vocab_size")
    return {k: getattr(hf, k) for k in keys if hasattr(hf, k)}


def _merge(into: dict, extra: Mapping) -> None:
    for k, v in extra.items():
        if isinstance(v, Mapping) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = dict(v) if isinstance(v, Mapping) else v
