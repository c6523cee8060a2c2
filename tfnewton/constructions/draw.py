"""Pictures of the constructions: the token layout of the residual stream and the weights of a layer.

Generic plots (error curves, tables, one matrix) live in :mod:`tfnewton.plotting`; the two
drawings here need to know a construction's slots (its ``layout``), so they live beside the
constructions.

* :func:`draw_layout` — a schematic: for each kind of token, what each slot holds;
* :func:`draw_stream` — the residual stream of one problem as an image, tokens as rows,
  slots named along the top, after any number of blocks;
* :func:`draw_block_weights` — ``W_Q``, ``W_K``, ``W_V`` and ``W_Oᵀ`` of every head of one
  block as heat maps, their columns labelled by the slot they read or write.
"""

from __future__ import annotations

import numpy as np
import torch

from ..plotting import matrix_image, to_numpy
from ..layers import LinearAttention, ReluMLP
from ._base import Construction

__all__ = ["draw_layout", "draw_stream", "draw_block_weights", "token_labels"]


def _check_model(model) -> Construction:
    if not isinstance(model, Construction):
        raise TypeError(f"model must be a tfnewton construction, got {type(model).__name__}")
    return model


def token_labels(model: Construction, T: int) -> list[str]:
    """A short name for each of the ``T`` tokens of ``model``'s stream."""
    d = model.d
    if model.layout.sizes.keys() >= {"A", "X", "E"}:  # Newton–Schulz: one token per column
        return [f"token {j + 1}" for j in range(T)]
    # Constructions with a one-hot "E" slot end in d tokens of one coordinate each.
    n = T - 1 - (d if "E" in model.layout.sizes else 0)
    labels = [f"x{i + 1}" for i in range(n)] + ["query"]
    name = "M col" if "M" in model.layout.sizes else "coord"
    return labels + [f"{name} {j + 1}" for j in range(T - n - 1)]


def _label_slots(ax, model: Construction, axis: str = "x", rotate: bool = False) -> None:
    """Slot names at the centre of each slot, thin lines between slots."""
    layout = model.layout
    centres = [(s.start + s.stop - 1) / 2 for s in layout.slices.values()]
    names = list(layout.slices)
    for s in list(layout.slices.values())[1:]:
        (ax.axvline if axis == "x" else ax.axhline)(s.start - 0.5, color="k", lw=0.6)
    if axis == "x":
        ax.set_xticks(centres, labels=names, rotation=90 if rotate else 0)
        ax.set_xlabel("slot (coordinates of the stream)")
    else:
        ax.set_yticks(centres, labels=names)


def draw_layout(model: Construction, ax=None, *, figsize=None):
    """Draw the token layout as a table: one row per kind of token, one column per slot.

    Each cell says what that slot of that token holds (from ``model.SLOT_CONTENTS``);
    an empty cell is zero. Column headers give the slot's name and size.

    Parameters
    ----------
    model : Construction
    ax : matplotlib Axes, optional
    figsize : (float, float), optional

    Returns
    -------
    matplotlib Axes
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    model = _check_model(model)
    rows = model.SLOT_CONTENTS
    slots = list(model.layout.sizes.items())
    if ax is None:
        size = figsize or (1.2 + 1.25 * len(slots), 0.9 + 0.6 * len(rows))
        _, ax = plt.subplots(figsize=size, layout="constrained")
    colours = plt.get_cmap("tab10")
    for r, (kind, contents) in enumerate(rows.items()):
        for c, (slot, _) in enumerate(slots):
            text = contents.get(slot, "")
            face = colours(r % 10) if text else "white"
            ax.add_patch(Rectangle((c, -r - 1), 1, 1, facecolor=face, alpha=0.25 if text else 1.0,
                                   edgecolor="black", lw=0.8))
            if text:
                ax.text(c + 0.5, -r - 0.5, text, ha="center", va="center", fontsize=9)
    d = model.d
    for c, (slot, size) in enumerate(slots):
        ax.text(c + 0.5, 0.15, f"{slot}\n({'d' if size == d else size})", ha="center", va="bottom", fontsize=9,
                fontweight="bold")
    for r, kind in enumerate(rows):
        ax.text(-0.1, -r - 0.5, kind, ha="right", va="center", fontsize=9)
    ax.set_xlim(-0.1 - 0.12 * max(len(k) for k in rows), len(slots) + 0.05)
    ax.set_ylim(-len(rows) - 0.05, 1.0)
    ax.set_axis_off()
    ax.set_title(f"{type(model).__name__}: width {model.width} = "
                 + " + ".join(('d' if s == d else str(s)) for _, s in slots), fontsize=10)
    return ax


def draw_stream(model: Construction, inputs: tuple, *, blocks=(0,), problem: int = 0, axes=None, figsize=None):
    """Draw the residual stream of one problem after some blocks.

    Parameters
    ----------
    model : Construction
        A model of :mod:`tfnewton.constructions`.
    inputs : tuple of Tensor
        What ``model.embed`` takes, e.g. ``(A,)`` or ``(X, y, x_query)``.
    blocks : sequence of int
        How many blocks to apply before each picture (``0``: the embedding).
    problem : int
        Which problem of the batch to draw.
    axes : sequence of matplotlib Axes, optional
        One per entry of ``blocks``.
    figsize : (float, float), optional

    Returns
    -------
    list of matplotlib Axes
    """
    import matplotlib.pyplot as plt

    model = _check_model(model)
    with torch.no_grad():
        hidden = model.run_blocks(model.embed(*inputs), return_hidden=True)[1]
    blocks = list(blocks)
    for b in blocks:
        if not 0 <= b < hidden.shape[0]:
            raise ValueError(f"blocks must lie in 0..{hidden.shape[0] - 1}, got {b}")
    if axes is None:
        T, D = hidden.shape[-2:]
        size = figsize or (min(4.0 + 0.25 * D, 14.0) / max(1, 2 - len(blocks) + 1) * len(blocks), 1.5 + 0.28 * T)
        _, axes = plt.subplots(1, len(blocks), figsize=size, layout="constrained", squeeze=False)
        axes = axes[0]
    labels = token_labels(model, hidden.shape[-2])
    for ax, b in zip(axes, blocks):
        H = hidden[b, problem]
        matrix_image(H, ax=ax, title="embedding" if b == 0 else f"after block {b}", colorbar=True)
        _label_slots(ax, model, rotate=len(model.layout.sizes) > 4)
        ax.set_yticks(np.arange(len(labels)), labels=labels, fontsize=7 if len(labels) > 12 else 9)
        ax.set_ylabel("token")
    return list(axes)


def draw_block_weights(model: Construction, block: int = 0, *, head_names=None, figsize=None):
    """Heat maps of every head's ``W_Q``, ``W_K``, ``W_V`` and ``W_Oᵀ`` in one block.

    Each matrix is drawn with the stream's coordinates along the horizontal axis (so a
    column says which slot is read, or for ``W_Oᵀ`` written) and the head's own coordinates
    down the vertical axis.

    Parameters
    ----------
    model : Construction
    block : int
        Index into ``model.blocks``.
    head_names : sequence of str, optional
        A title per head.
    figsize : (float, float), optional

    Returns
    -------
    matplotlib Figure
    """
    import matplotlib.pyplot as plt

    model = _check_model(model)
    if not 0 <= block < len(model.blocks):
        raise ValueError(f"block must lie in 0..{len(model.blocks) - 1}, got {block}")
    layer = model.blocks[block].layer
    if isinstance(layer, ReluMLP):
        return _draw_mlp_weights(model, block, layer, figsize=figsize)
    if not isinstance(layer, LinearAttention):
        raise TypeError(
            f"block {block} is a {type(layer).__name__}; draw_block_weights draws LinearAttention "
            "and ReluMLP blocks (an exact-scalar block has no weights to draw: build the model "
            "with exact_scalars=False)"
        )
    attn = layer
    H = attn.n_heads
    mats = {"W_Q": attn.W_Q, "W_K": attn.W_K, "W_V": attn.W_V, "W_Oᵀ": attn.W_O.transpose(-1, -2)}
    size = figsize or (12.0, 1.0 + 1.5 * H)
    fig, axes = plt.subplots(H, 4, figsize=size, layout="constrained", squeeze=False)
    for h in range(H):
        for c, (name, W) in enumerate(mats.items()):
            ax = axes[h, c]
            matrix_image(to_numpy(W[h]), ax=ax, colorbar=False, title=f"{name}  (head {h})")
            ax.set_aspect("auto")
            _label_slots(ax, model, rotate=True)
            ax.set_xlabel("")
            ax.set_ylabel("head coordinate" if c == 0 else "")
        if head_names is not None:
            axes[h, 0].set_ylabel(f"{head_names[h]}\nhead coordinate")
    entries = torch.cat([W.reshape(-1) for W in mats.values()])
    if bool(((entries == 0) | (entries.abs() == 1)).all()):
        fig.suptitle(f"block {block}: every entry is 0 (white), +1 (red) or −1 (blue)")
    else:
        fig.suptitle(f"block {block}: 0 is white, positive entries red, negative blue")
    return fig


def _draw_mlp_weights(model: Construction, block: int, mlp: ReluMLP, *, figsize=None):
    """``W₁`` (with ``b₁`` as a last column) and ``W₂ᵀ`` of a ReLU block, one row per unit."""
    import matplotlib.pyplot as plt

    W_in = torch.cat([mlp.fc_in.weight, mlp.fc_in.bias[:, None]], dim=1) if mlp.fc_in.bias is not None \
        else mlp.fc_in.weight
    W_out = mlp.fc_out.weight.T
    fig, axes = plt.subplots(1, 2, figsize=figsize or (12.0, 4.0), layout="constrained", squeeze=False)
    for ax, W, name in [(axes[0, 0], W_in, "W₁ | b₁ (read)"), (axes[0, 1], W_out, "W₂ᵀ (written)")]:
        matrix_image(to_numpy(W.detach()), ax=ax, colorbar=True, title=name)
        ax.set_aspect("auto")
        _label_slots(ax, model, rotate=True)
        ax.set_xlabel("")
        ax.set_ylabel("ReLU unit")
    fig.suptitle(f"block {block}: a ReLU layer of {mlp.hidden} units")
    return fig
