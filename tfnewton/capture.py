r"""Capture a model's residual stream with hooks, TransformerLens-style.

:func:`run_with_cache` runs a model once with forward hooks on ``model.blocks`` (no model is
rewritten) and returns its output and an :class:`ActivationCache` keyed by readable names
(``"embed"``, ``"blocks.3.resid_post"``); :func:`hidden_states` returns the same states as one
tensor. Layer ``0`` is the embedding (the input of ``blocks[0]``); layer ``ℓ ≥ 1`` is the output
of ``blocks[ℓ − 1]``.

The hook protocol
-----------------
Every model of the library — the trained families of :mod:`tfnewton.models` and the
constructions of :mod:`tfnewton.constructions` — follows :class:`HookedModel`, and those that
read prompts ``(X, y)`` follow :class:`PromptModel` as well. This is the one place the protocol
is stated; the probes (:mod:`tfnewton.probes`), the read-outs (:mod:`tfnewton.metrics`) and
:func:`tfnewton.compare` rely on nothing else.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Protocol

import torch
import torch.nn as nn

from . import _validate as v

__all__ = [
    "HookedModel",
    "PromptModel",
    "ActivationCache",
    "run_with_cache",
    "hidden_states",
    "query_position",
    "x_token_positions",
    "takes_query",
    "check_hooked",
    "task_prompts",
]


# =========================================================================== the protocol


class HookedModel(Protocol):
    """What :func:`run_with_cache` needs of a model: ``embed``, then ``blocks``, then ``readout``.

    ``model(*inputs) == model.readout(blocks[-1](… blocks[0](model.embed(*inputs))))``, so a
    hook on ``blocks[i]`` sees exactly the residual stream the model computes with.

    Attributes
    ----------
    blocks : torch.nn.ModuleList
        Non-empty; each block maps the residual stream ``(B, T, D) -> (B, T, D)`` (a block may
        return a tuple whose first entry is that tensor).
    """

    blocks: nn.ModuleList

    def embed(self, *inputs: torch.Tensor) -> torch.Tensor:
        """The residual stream before the first block, ``(B, T, D)``."""

    def readout(self, H: torch.Tensor) -> torch.Tensor:
        """The model's answer read from a stream ``(B, T, D)`` (or stacked streams ``(…, B, T, D)``)."""


class PromptModel(HookedModel, Protocol):
    """A hooked model of in-context prompts: ``n`` context pairs ``(x_i, y_i)`` and a query.

    Two kinds follow it, told apart by the declared class attribute ``takes_query``:

    * a causal in-context learner (``takes_query = False``, the trained models):
      ``forward(X, y) -> (B, n)``, prediction ``i`` made at ``x_i``'s token from ``x_i`` and the
      pairs before it. A query is asked as one more point whose label no prediction reads.
    * a model that answers one query per prompt (``takes_query = True``, the regression
      constructions): ``forward(X, y, x_query) -> (B,)``. It also declares ``steps`` (the
      number of algorithm steps it runs, or ``None``) and, when ``steps`` is an int,
      ``hidden_index_of_step(k)``: the index into the ``L + 1`` hidden states where step
      ``k``'s answer can be read with ``readout``.

    A model that does not declare ``takes_query`` is taken to be a causal learner.

    Attributes
    ----------
    takes_query : bool
    steps : int or None
        Only read when ``takes_query`` is true.
    """

    takes_query: bool
    steps: int | None

    def x_token_positions(self, n: int) -> torch.Tensor:
        """Token index of ``x_i`` for the ``n`` context points, shape ``(n,)``."""

    def query_position(self, n: int) -> int:
        """Token index of the query in a prompt of ``n`` context pairs and a query."""

    def hidden_index_of_step(self, k: int) -> int:
        """Index into the ``(L + 1, …)`` hidden states where step ``k`` can be read (query models)."""


_MISSING = object()


def check_hooked(model) -> nn.ModuleList:
    """``model.blocks``, or a ``TypeError`` that says what the hook protocol asks for.

    Parameters
    ----------
    model : torch.nn.Module
        A model following :class:`HookedModel`.

    Returns
    -------
    torch.nn.ModuleList
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.ModuleList) or len(blocks) == 0:
        got = "no attribute 'blocks'" if blocks is None else f"blocks of type {type(blocks).__name__}"
        if isinstance(blocks, nn.ModuleList):
            got = "an empty 'blocks'"
        raise TypeError(
            f"model must expose its layers as model.blocks, a non-empty torch.nn.ModuleList whose "
            f"blocks map the residual stream (B, T, D) -> (B, T, D) (the hook protocol, "
            f"tfnewton.capture.HookedModel); {type(model).__name__} has {got}"
        )
    if takes_query(model):
        # A model that answers a query is read with its own read-out (tfnewton.compare): it
        # declares how, per the protocol.
        missing = [name for name in ("readout", "query_position") if not callable(getattr(model, name, None))]
        steps = getattr(model, "steps", _MISSING)
        if steps is _MISSING or not (steps is None or (isinstance(steps, int) and not isinstance(steps, bool))):
            missing.append("steps (an int or None)")
        elif steps is not None and not callable(getattr(model, "hidden_index_of_step", None)):
            missing.append("hidden_index_of_step(k)")
        if missing:
            raise TypeError(
                f"{type(model).__name__} declares takes_query = True, so the hook protocol "
                f"(tfnewton.capture.PromptModel) needs {', '.join(missing)}"
            )
    return blocks


def takes_query(model) -> bool:
    """True for a model with ``forward(X, y, x_query)`` (it declares ``takes_query = True``)."""
    return bool(getattr(model, "takes_query", False))


def x_token_positions(model, n: int) -> list:
    """Token index of ``x_i`` for the ``n`` context points, checked: ``model.x_token_positions(n)``.

    Parameters
    ----------
    model : PromptModel
    n : int

    Returns
    -------
    list of int, of length n
    """
    n = v.check_int(n, "n", minimum=0)
    if not callable(getattr(model, "x_token_positions", None)):
        raise TypeError(
            f"{type(model).__name__} has no x_token_positions(n); the hook protocol "
            "(tfnewton.capture.PromptModel) needs it to find the x tokens"
        )
    positions = torch.as_tensor(model.x_token_positions(n)).reshape(-1).tolist()
    if len(positions) != n:
        raise ValueError(
            f"{type(model).__name__}.x_token_positions({n}) returned {len(positions)} positions; "
            f"the hook protocol asks for the {n} context tokens (the query's is query_position(n))"
        )
    return [int(p) for p in positions]


def query_position(model, n: int) -> int:
    """Token index of the query when a prompt holds ``n`` context pairs and a query.

    ``model.query_position(n)``; a causal learner that does not define it has its query at the
    x token of point ``n + 1``, i.e. ``x_token_positions(n + 1)[n]``.

    Parameters
    ----------
    model : PromptModel
    n : int
        Number of context pairs.

    Returns
    -------
    int
    """
    n = v.check_int(n, "n", minimum=0)
    method = getattr(model, "query_position", None)
    if callable(method):
        return int(method(n))
    if takes_query(model):
        raise TypeError(
            f"{type(model).__name__} takes a query but has no query_position(n); the hook "
            "protocol (tfnewton.capture.PromptModel) needs it"
        )
    return x_token_positions(model, n + 1)[n]


def task_prompts(task) -> tuple[torch.Tensor, torch.Tensor]:
    """The prompts of a task, checked and on the CPU: ``(X (B, n, d), y (B, n))``.

    Parameters
    ----------
    task : object with ``X (B, n, d)`` and ``y (B, n)``, or a pair ``(X, y)``
        E.g. ``tfnewton.tasks.sample_linear_regression(...)``. Every prompt needs at least two
        points (a context and a query).

    Returns
    -------
    X, y : Tensor
        Detached, on the CPU (the probes' targets and solves are small; a model runs on its own
        device).
    """
    X, y = getattr(task, "X", None), getattr(task, "y", None)
    if X is None or y is None:
        if isinstance(task, (tuple, list)) and len(task) == 2:
            X, y = task
        else:
            raise TypeError(
                "task must hold prompts as task.X (B, n, d) and task.y (B, n) (e.g. "
                "tfnewton.tasks.sample_linear_regression(...)) or be a pair (X, y); got "
                f"{type(task).__name__}"
            )
    v.check_regression_inputs(X, y, "task.X", "task.y")
    if X.shape[1] < 2:
        raise ValueError(f"task prompts need at least 2 points (context and a query), got n = {X.shape[1]}")
    return X.detach().cpu(), y.detach().cpu()


# =========================================================================== the cache


def _layer_names(num_blocks: int) -> list:
    return ["embed"] + [f"blocks.{i}.resid_post" for i in range(num_blocks)]


class ActivationCache(Mapping):
    """The residual stream of one forward pass, keyed by layer name.

    Keys, in order: ``"embed"`` (the input of ``blocks[0]``; also reachable as
    ``"blocks.0.resid_pre"``), then ``"blocks.i.resid_post"`` for each block — or the subset
    asked for with ``names``. An integer ``ℓ`` names layer ``ℓ`` (``cache[0]`` is the
    embedding, ``cache[ℓ]`` the output of ``blocks[ℓ − 1]``, ``cache[-1]`` the last block's).
    Each value has shape ``(B, T, D)``, or ``(B, len(positions), D)`` / ``(B, D)`` when only
    some token positions were kept.

    Parameters
    ----------
    states : Tensor of shape (K, B, ...)
        The kept layers' states, stacked in layer order.
    num_blocks : int, optional
        Blocks of the model; default ``K − 1`` (every layer kept).
    layers : sequence of int, optional
        The layer numbers ``states`` holds; default all of them.

    Examples
    --------
    >>> import torch
    >>> from tfnewton.models.gpt2 import GPT2Config, GPT2Regressor
    >>> from tfnewton.capture import run_with_cache
    >>> model = GPT2Regressor(GPT2Config(d=3, n_points=6, n_layers=2, width=16, heads=2))
    >>> out, cache = run_with_cache(model, torch.randn(4, 6, 3), torch.randn(4, 6))
    >>> list(cache), tuple(cache["blocks.1.resid_post"].shape)
    (['embed', 'blocks.0.resid_post', 'blocks.1.resid_post'], (4, 12, 16))
    """

    def __init__(self, states: torch.Tensor, num_blocks: int | None = None, layers: Sequence[int] | None = None):
        num_blocks = states.shape[0] - 1 if num_blocks is None else num_blocks
        self._all = _layer_names(num_blocks)
        self._layers = list(range(num_blocks + 1)) if layers is None else [int(i) for i in layers]
        if len(self._layers) != states.shape[0]:
            raise ValueError(f"states hold {states.shape[0]} layers but layers lists {len(self._layers)}")
        self._states = states
        self._names = [self._all[i] for i in self._layers]

    def _index(self, key) -> int:
        if isinstance(key, int) and not isinstance(key, bool):
            if not -len(self._all) <= key < len(self._all):
                raise IndexError(f"layer index must be in [0, {len(self._all) - 1}], got {key}")
            layer = key % len(self._all)
        elif key == "blocks.0.resid_pre":
            layer = 0
        elif key in self._all:
            layer = self._all.index(key)
        else:
            raise KeyError(f"no layer named {key!r}; the cache holds {self._names}")
        if layer not in self._layers:
            raise KeyError(f"layer {layer} ({self._all[layer]!r}) was not kept; the cache holds {self._names}")
        return self._layers.index(layer)

    def __getitem__(self, key) -> torch.Tensor:
        return self._states[self._index(key)]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        return f"ActivationCache({len(self)} layers, each of shape {tuple(self._states.shape[1:])})"

    @property
    def layer_names(self) -> list:
        """The keys in layer order."""
        return list(self._names)

    @property
    def layers(self) -> list:
        """The layer numbers held, in order (``0`` is the embedding)."""
        return list(self._layers)

    def stack(self) -> torch.Tensor:
        """All kept layers as one tensor of shape ``(K, B, …)`` (``K = L + 1`` by default)."""
        return self._states


# =========================================================================== running a model


def _model_d(model) -> int | None:
    """The input dimension a model was built for, when it says so."""
    for owner in (model, getattr(model, "config", None)):
        d = getattr(owner, "d", None)
        if isinstance(d, int) and not isinstance(d, bool):
            return d
    return None


def _model_device_dtype(model, like: torch.Tensor) -> tuple[torch.device, torch.dtype]:
    """Where the model computes and in which dtype (a parameter's, else a buffer's, else ``like``'s)."""
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.is_floating_point():
            return tensor.device, tensor.dtype
    return like.device, like.dtype


def _check_prompt(model, X, y, x_query) -> None:
    v.check_regression_inputs(X, y)
    d = _model_d(model)
    if d is not None and X.shape[-1] != d:
        raise ValueError(
            f"the prompts have d = {X.shape[-1]} (X of shape {tuple(X.shape)}) but "
            f"{type(model).__name__} was built for d = {d}; sample the task with d = {d}"
        )
    if x_query is not None:
        v.check_tensor(x_query, "x_query", ndim=2)
        v.check_shape(x_query, "x_query", (X.shape[0], X.shape[2]))


def _forward(model, X, y, x_query):
    """One forward pass under the model's declared calling convention."""
    if takes_query(model):
        if x_query is None:
            raise ValueError(
                f"{type(model).__name__} answers a query (forward(X, y, x_query)): pass x_query "
                "of shape (B, d)"
            )
        return model(X, y, x_query)
    if x_query is not None:
        # A causal learner predicts y_i at x_i's token from the pairs before it; the query is
        # one more x with a placeholder label that, by causality, no prediction reads.
        X = torch.cat([X, x_query.unsqueeze(1)], dim=1)
        y = torch.cat([y, y.new_zeros(y.shape[0], 1)], dim=1)
    return model(X, y)


def _split_inputs(inputs, y, x_query):
    """``(X, y, x_query)`` from ``run_with_cache``'s positional inputs and keywords."""
    inputs = list(inputs)
    if y is not None:
        if len(inputs) != 1:
            raise TypeError("y was given both as a positional input and as a keyword")
        inputs.append(y)
    if len(inputs) == 3:
        if x_query is not None:
            raise TypeError("x_query was given both as a positional input and as a keyword")
        x_query = inputs.pop()
    if not 1 <= len(inputs) <= 2:
        raise TypeError(f"inputs must be (X,), (X, y) or (X, y, x_query), got {len(inputs)} tensors")
    X = inputs[0]
    y = inputs[1] if len(inputs) == 2 else None
    return X, y, x_query


def _selected_layers(names, num_blocks: int) -> list:
    """Layer numbers for ``names`` (layer names or ints), in layer order; all when ``None``."""
    every = _layer_names(num_blocks)
    if names is None:
        return list(range(num_blocks + 1))
    if isinstance(names, (str, int)):
        names = [names]
    layers = set()
    for name in names:
        if isinstance(name, int) and not isinstance(name, bool):
            if not -len(every) <= name < len(every):
                raise ValueError(f"names: layer index must be in [0, {num_blocks}], got {name}")
            layers.add(name % len(every))
        elif name == "blocks.0.resid_pre":
            layers.add(0)
        elif name in every:
            layers.add(every.index(name))
        else:
            raise ValueError(f"names: no layer named {name!r}; the model's layers are {every}")
    if not layers:
        raise ValueError("names must name at least one layer")
    return sorted(layers)


def _token_index(positions):
    """What to index a stream's token axis with: ``slice(None)``, an int or a list of ints."""
    if positions is None:
        return slice(None)
    if isinstance(positions, torch.Tensor):
        positions = positions.tolist()
    if isinstance(positions, int) and not isinstance(positions, bool):
        return positions
    out = list(positions) if isinstance(positions, Sequence) else None
    if out is None or not all(isinstance(p, int) and not isinstance(p, bool) for p in out):
        raise TypeError(f"positions must be None, an int or a sequence of ints, got {positions!r}")
    if not out:
        raise ValueError("positions must not be empty")
    return out


def run_with_cache(
    model,
    *inputs: torch.Tensor,
    y: torch.Tensor | None = None,
    x_query: torch.Tensor | None = None,
    positions=None,
    names=None,
    batch_size: int | None = None,
):
    """Run ``model`` and keep its residual stream after the embedding and after every block.

    Forward hooks on ``model.blocks`` capture the states (no model is rewritten); they are
    removed afterwards, also when the forward pass raises. The model runs in eval mode and
    without gradients, and its training flag is restored. Inputs are moved to the model's
    device and dtype.

    Parameters
    ----------
    model : HookedModel
        ``model.blocks`` an ``nn.ModuleList`` of blocks mapping ``(B, T, D) -> (B, T, D)``.
    *inputs : Tensor
        ``X (B, n, d), y (B, n)`` for a model of prompts, optionally followed by
        ``x_query (B, d)``; or the single input of a model of one input, batch axis first
        (e.g. the matrices ``A (B, d, d)`` of ``newton_schulz_transformer``).
    y : Tensor of shape (B, n), optional
        The labels, as a keyword instead of the second input.
    x_query : Tensor of shape (B, d), optional
        Required by models that take a query (``takes_query``, the regression constructions).
        For a causal learner it is appended as point ``n + 1`` (with a placeholder label no
        prediction reads, by causality).
    positions : int or sequence of int, optional
        Keep only these token positions of every layer (memory: a probe at the query needs one
        token, not all ``T``); an int drops the token axis. Default: every token.
    names : str, int or sequence of them, optional
        Keep only these layers (``"embed"``, ``"blocks.3.resid_post"``, or layer numbers).
        Default: all ``L + 1``.
    batch_size : int, optional
        Run the prompts in chunks of this many.

    Returns
    -------
    output : Tensor
        What ``model`` returns: ``(B, n)`` (or ``(B, n + 1)`` with a query) for a causal learner,
        ``(B,)`` for a construction of a query.
    cache : ActivationCache
        The kept layers, each of shape ``(B, T, D)`` (``T`` replaced by the positions kept).

    Raises
    ------
    TypeError
        The model has no ``blocks``; inputs given twice.
    ValueError
        The prompts' ``d`` is not the model's; a query model without ``x_query``; a position
        outside the stream.
    """
    blocks = check_hooked(model)
    X, y, x_query = _split_inputs(inputs, y, x_query)
    if y is None:  # a model of one input, e.g. newton_schulz_transformer's forward(A)
        v.check_tensor(X, "X")
        if X.ndim == 0:
            raise ValueError("X must have a batch axis first, got a scalar")
        if x_query is not None:
            raise ValueError("x_query needs prompts (X, y); pass y as well")
    else:
        _check_prompt(model, X, y, x_query)
    layers = _selected_layers(names, len(blocks))
    tokens = _token_index(positions)
    device, dtype = _model_device_dtype(model, X)
    X = X.to(device=device, dtype=dtype)
    y = None if y is None else y.to(device=device, dtype=dtype)
    if x_query is not None:
        x_query = x_query.to(device=device, dtype=dtype)
    B = X.shape[0]
    chunk = B if batch_size is None else v.check_int(batch_size, "batch_size", minimum=1)

    every = _layer_names(len(blocks))
    captured: dict = {}
    called = [False] * (len(blocks) + 1)

    def store(index: int, tensor) -> None:
        called[index] = True
        if index not in layers:
            return
        if isinstance(tensor, tuple):  # a block that returns (hidden, extra)
            tensor = tensor[0]
        if not isinstance(tensor, torch.Tensor) or tensor.ndim != 3:
            raise TypeError(
                f"layer {every[index]!r} produced {type(tensor).__name__} of shape "
                f"{getattr(tensor, 'shape', None)}; the hook protocol needs blocks that map "
                "(B, T, D) -> (B, T, D)"
            )
        try:
            captured[index] = tensor.detach()[:, tokens]
        except IndexError as err:
            raise ValueError(
                f"positions {positions!r} are outside the stream of {tensor.shape[1]} tokens of "
                f"layer {every[index]!r}"
            ) from err

    # Layer 0 is the input of the first block; layer i + 1 the output of block i.
    handles = [blocks[0].register_forward_pre_hook(lambda module, args: store(0, args[0]))]
    for i, block in enumerate(blocks):
        handles.append(block.register_forward_hook(lambda module, args, out, i=i: store(i + 1, out)))
    was_training = model.training
    outputs, chunks = [], []
    try:
        model.eval()
        with torch.no_grad():
            for start in range(0, B, chunk):
                part = slice(start, start + chunk)
                if y is None:
                    outputs.append(model(X[part]))
                else:
                    q = None if x_query is None else x_query[part]
                    outputs.append(_forward(model, X[part], y[part], q))
                if not all(called):
                    raise RuntimeError("a block of model.blocks was not called during forward")
                shapes = {tuple(captured[i].shape[1:]) for i in layers}
                if len(shapes) != 1:
                    raise ValueError(
                        "every layer's hidden state must have the same shape to be stacked, got "
                        f"{[tuple(captured[i].shape) for i in layers]}"
                    )
                chunks.append(torch.stack([captured[i] for i in layers]))  # (K, b, T', D)
                captured.clear()
                called[:] = [False] * len(called)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    out = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=0)
    states = chunks[0] if len(chunks) == 1 else torch.cat(chunks, dim=1)
    return out, ActivationCache(states, len(blocks), layers)


def hidden_states(
    model,
    *inputs: torch.Tensor,
    y: torch.Tensor | None = None,
    x_query: torch.Tensor | None = None,
    positions=None,
    names=None,
    batch_size: int | None = None,
) -> torch.Tensor:
    """The residual stream after the embedding and after every block, stacked.

    Parameters
    ----------
    model, *inputs, y, x_query, positions, names, batch_size
        As in :func:`run_with_cache`.

    Returns
    -------
    Tensor of shape (L + 1, B, T, D)
        ``out[0]`` is the input of ``blocks[0]``, ``out[ℓ]`` the output of ``blocks[ℓ − 1]``;
        in the model's dtype, on its device (fewer layers or tokens when ``names`` or
        ``positions`` say so).

    Examples
    --------
    >>> import torch
    >>> from tfnewton.models.gpt2 import GPT2Config, GPT2Regressor
    >>> from tfnewton.capture import hidden_states
    >>> model = GPT2Regressor(GPT2Config(d=3, n_points=6, n_layers=2, width=16, heads=2))
    >>> hidden_states(model, torch.randn(4, 6, 3), torch.randn(4, 6)).shape
    torch.Size([3, 4, 12, 16])
    """
    return run_with_cache(
        model, *inputs, y=y, x_query=x_query, positions=positions, names=names, batch_size=batch_size
    )[1].stack()
