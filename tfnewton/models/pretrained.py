"""Checkpoints: one file holds a model's weights, its architecture and how it was trained.

A checkpoint is a ``torch.save``'d dict of plain types only (tensors, numbers, strings,
lists, dicts), so it loads with ``torch.load(..., weights_only=True)`` and never executes
pickled code::

    {"format": "tfnewton-checkpoint", "format_version": 1,
     "kind": "gpt2", "config": {...}, "state_dict": {...}, "checksum": "<sha256>",
     "metadata": {"task": ..., "d": ..., "n_points": ..., "steps": ..., "seed": ...,
                  "library_version": ..., "metrics": {...}, "history": {...},
                  "command": "python -m tfnewton train ..."}}

Loading rebuilds the model from ``kind`` and ``config``, checks that the stored weights
are exactly the ones that model has (names and shapes), that their checksum matches, and
that the metadata describes the same model; anything else is refused with a
:class:`PretrainedError` that says what differs. Files are written atomically (a
temporary file, then ``os.replace``), so an interrupted save never leaves half a file.

The checkpoints shipped with the library live in ``tfnewton/pretrained/``;
:func:`list_pretrained` describes them and :func:`load_pretrained` loads one by name.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

FORMAT = "tfnewton-checkpoint"
FORMAT_VERSION = 1
PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"


class PretrainedError(ValueError):
    """A checkpoint that cannot be used: unknown name, corrupted file, or a mismatch."""


def state_dict_checksum(state_dict: dict) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of a state dict (order-independent)."""
    h = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key].detach().to("cpu").contiguous()
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def atomic_save(obj, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file next to ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)  # atomic on POSIX and Windows
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def save_checkpoint(model, path: str | os.PathLike, metadata: dict | None = None) -> Path:
    """Write ``model`` and ``metadata`` to ``path`` (atomically).

    Parameters
    ----------
    model : InContextRegressor
        A model of :mod:`tfnewton.models` (has ``kind`` and ``config``).
    path : str or Path
    metadata : dict, optional
        JSON-serialisable description (task, steps, metrics, command, ...). ``d`` and
        ``n_points`` are filled in from the model's config.

    Returns
    -------
    Path
    """
    kind = getattr(model, "kind", None)
    if not kind or not hasattr(model, "config"):
        raise TypeError(f"model must be a tfnewton.models model, got {type(model).__name__}")
    config = model.config.to_dict()
    meta = dict(metadata or {})
    meta.setdefault("d", config["d"])
    if "n_points" in config:
        meta.setdefault("n_points", config["n_points"])
    try:
        meta = json.loads(json.dumps(meta))  # plain types only, so weights_only loading works
    except TypeError as err:
        raise TypeError(f"metadata must be JSON-serialisable: {err}") from err
    state = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "config": config,
        "state_dict": state,
        "checksum": state_dict_checksum(state),
        "metadata": meta,
    }
    return atomic_save(payload, path)


def _read(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {str(path)!r}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # zip errors, unpickling errors, EOF: all mean "not a usable file"
        raise PretrainedError(
            f"{str(path)!r} is not a readable tfnewton checkpoint (corrupted, truncated or not a "
            f"checkpoint at all): {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        ) from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise PretrainedError(
            f"{str(path)!r} is not a tfnewton checkpoint (no 'format': {FORMAT!r} entry); "
            "for a Garg et al. checkpoint use tfnewton.models.from_garg_checkpoint"
        )
    if payload.get("format_version") != FORMAT_VERSION:
        raise PretrainedError(
            f"{str(path)!r} has checkpoint format version {payload.get('format_version')!r}; "
            f"this version of tfnewton reads version {FORMAT_VERSION}"
        )
    for key in ("kind", "config", "state_dict", "checksum", "metadata"):
        if key not in payload:
            raise PretrainedError(f"{str(path)!r} lacks the {key!r} entry of a tfnewton checkpoint")
    return payload


def load_checkpoint(path: str | os.PathLike, *, device=None, d: int | None = None, kind: str | None = None):
    """Load a checkpoint written by :func:`save_checkpoint` (or by training).

    Parameters
    ----------
    path : str or Path
    device : str or torch.device, optional
        Default CPU.
    d, kind : optional
        When given, the checkpoint must be for this input dimension / model family.

    Returns
    -------
    model : InContextRegressor
        In eval mode, on ``device``; ``model.metadata`` holds the metadata.
    metadata : dict

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    PretrainedError
        Corrupted file, a checkpoint of another format, weights that do not fit the model
        the config builds, a failed checksum, or a ``d``/``kind`` other than asked for.
    """
    from . import KINDS, model_from_config

    path = Path(path)
    payload = _read(path)
    ckpt_kind, config, meta = payload["kind"], payload["config"], payload["metadata"]
    if ckpt_kind not in KINDS:
        raise PretrainedError(f"{str(path)!r} holds a model of unknown kind {ckpt_kind!r}; known: {KINDS}")
    if kind is not None and kind != ckpt_kind:
        raise PretrainedError(f"{str(path)!r} holds a {ckpt_kind!r} model, not the {kind!r} asked for")
    if not isinstance(config, dict) or not isinstance(meta, dict):
        raise PretrainedError(f"{str(path)!r}: 'config' and 'metadata' must be dicts")
    for key in ("d", "n_points"):
        if key in meta and key in config and meta[key] != config[key]:
            raise PretrainedError(
                f"{str(path)!r}: metadata says {key} = {meta[key]} but the architecture config "
                f"says {key} = {config[key]}; the file is inconsistent"
            )
    if d is not None and config.get("d") != d:
        raise PretrainedError(
            f"{str(path)!r} is a checkpoint for d = {config.get('d')}, but d = {d} was asked for"
        )
    state = payload["state_dict"]
    if state_dict_checksum(state) != payload["checksum"]:
        raise PretrainedError(f"{str(path)!r}: the weights do not match their stored checksum (corrupted file)")
    try:
        model = model_from_config(ckpt_kind, config)
    except (TypeError, ValueError) as err:
        raise PretrainedError(f"{str(path)!r}: its config does not build a {ckpt_kind!r} model: {err}") from err
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise PretrainedError(
            f"{str(path)!r}: the weights do not fit the {ckpt_kind!r} model its config describes "
            f"(missing: {missing[:5]}, unexpected: {unexpected[:5]})"
        )
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise PretrainedError(
                f"{str(path)!r}: weight {key!r} has shape {tuple(state[key].shape)} but the model "
                f"its config describes needs {tuple(tensor.shape)}"
            )
    model.load_state_dict(state, strict=True)
    from .._validate import check_device

    model = model.to(check_device(device)).eval()
    model.metadata = meta
    return model, meta


# --------------------------------------------------------------------------- shipped checkpoints


def _shipped() -> dict[str, Path]:
    if not PRETRAINED_DIR.is_dir():
        return {}
    return {p.stem: p for p in sorted(PRETRAINED_DIR.glob("*.pt"))}


def _summary(name: str, payload: dict, path: Path) -> dict:
    meta = payload["metadata"]
    return {
        "name": name,
        "kind": payload["kind"],
        "task": meta.get("task"),
        "d": payload["config"].get("d"),
        "n_points": payload["config"].get("n_points", meta.get("n_points")),
        "architecture": payload["config"],
        "steps": meta.get("steps"),
        "seed": meta.get("seed"),
        "metrics": meta.get("metrics"),
        "train_seconds": meta.get("train_seconds"),
        "library_version": meta.get("library_version"),
        "command": meta.get("command"),
        "file": str(path),
        "size_bytes": path.stat().st_size,
    }


def list_pretrained() -> dict[str, dict]:
    """The checkpoints shipped with tfnewton, with their metadata.

    Returns
    -------
    dict
        name -> ``{"kind", "task", "d", "n_points", "architecture", "steps", "seed",
        "metrics", "train_seconds", "library_version", "command", "file", "size_bytes"}``;
        ``command`` is the exact command line that retrains it.

    Examples
    --------
    >>> from tfnewton.models import list_pretrained
    >>> "gpt2_linreg_d5" in list_pretrained()  # doctest: +SKIP
    True
    """
    return {name: _summary(name, _read(path), path) for name, path in _shipped().items()}


def pretrained_info(name: str) -> dict:
    """Metadata of one shipped checkpoint (see :func:`list_pretrained`), history included."""
    path = _path_of(name)
    payload = _read(path)
    info = _summary(name, payload, path)
    info["metadata"] = payload["metadata"]
    return info


def _path_of(name) -> Path:
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    shipped = _shipped()
    if name not in shipped:
        known = ", ".join(sorted(shipped)) or "(none shipped)"
        raise PretrainedError(f"no pretrained model named {name!r}; available: {known}")
    return shipped[name]


def load_pretrained(name: str, device=None, *, d: int | None = None):
    """Load a shipped checkpoint by name.

    Parameters
    ----------
    name : str
        One of ``list_pretrained()``.
    device : str or torch.device, optional
        Default CPU.
    d : int, optional
        When given, refuse a checkpoint for another input dimension.

    Returns
    -------
    InContextRegressor
        In eval mode; ``model.metadata`` holds the training metadata (task, steps, metrics,
        loss history, the command that reproduces it).

    Examples
    --------
    >>> from tfnewton.models import load_pretrained
    >>> model = load_pretrained("gpt2_linreg_d5")  # doctest: +SKIP
    """
    model, _ = load_checkpoint(_path_of(name), device=device, d=d)
    return model
