"""Small matplotlib helpers that every chapter draws with.

Three pictures recur throughout the book, so they are drawn once, here:

* :func:`error_curves` — error against iteration (or layer) on a log scale, one
  labelled curve per algorithm or model;
* :func:`heatmap` — a table of numbers (say probe R² per layer and per Newton
  step) with labelled axes and a colour bar, and :func:`mark_row_maxima` to circle each
  row's best entry;
* :func:`matrix_image` — one matrix (a weight matrix, ``X_t A``) as an image.

Each takes numpy arrays or torch tensors (any device, any float dtype), draws on
the ``ax`` it is given or on a new figure, and returns the matplotlib ``Axes``
so a chapter can add to it. matplotlib is imported on first use only, so
``import tfnewton`` stays light.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

__all__ = ["to_numpy", "error_curves", "heatmap", "mark_row_maxima", "matrix_image"]


def to_numpy(values) -> np.ndarray:
    """Return ``values`` (a tensor on any device, an array or a nested list) as a float64 array.

    Parameters
    ----------
    values : Tensor, ndarray or array-like

    Returns
    -------
    ndarray
        A float64 copy on the host.
    """
    if hasattr(values, "detach"):  # a torch.Tensor, perhaps on a GPU or requiring grad
        values = values.detach().to("cpu").double().numpy()
    return np.asarray(values, dtype=np.float64)


def _new_axes(ax, figsize):
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def error_curves(
    curves: Mapping[str, object],
    ax=None,
    *,
    x=None,
    xlabel: str = "iteration",
    ylabel: str = "error",
    title: str | None = None,
    logy: bool = True,
    band: bool = True,
    floor: float | None = None,
    figsize: tuple[float, float] = (6.0, 4.0),
):
    """Plot several error curves against iteration (or layer) on a log scale.

    Parameters
    ----------
    curves : mapping from str to array-like
        ``label -> errors``. Each value has shape ``(T,)`` (one curve) or ``(T, B)``
        (``B`` problems: the median is drawn, with the 25–75 % band shaded when
        ``band`` is true). Curves may have different lengths.
    ax : matplotlib Axes, optional
        Draw here; a new figure is made when ``None``.
    x : array-like of shape (T,), optional
        The abscissae; ``0, 1, …, T−1`` by default.
    xlabel, ylabel, title : str
        Axis labels and title.
    logy : bool
        Logarithmic y axis (the default: convergence rates read as slopes).
    band : bool
        Shade the interquartile band of batched curves.
    floor : float, optional
        Values below ``floor`` are drawn at ``floor`` (e.g. ``1e-16`` so that an
        exact zero does not vanish from a log plot).
    figsize : (float, float)
        Size of a new figure, in inches.

    Returns
    -------
    matplotlib Axes

    Examples
    --------
    >>> import numpy as np
    >>> from tfnewton.plotting import error_curves
    >>> ax = error_curves({"GD": 0.9 ** np.arange(20), "Newton": 0.5 ** (2 ** np.arange(6))})
    >>> ax.get_yscale()
    'log'
    """
    if not isinstance(curves, Mapping) or not curves:
        raise ValueError(f"curves must be a non-empty mapping label -> errors, got {type(curves).__name__}")
    ax = _new_axes(ax, figsize)
    for label, values in curves.items():
        values = to_numpy(values)
        if values.ndim not in (1, 2):
            raise ValueError(
                f"curves[{label!r}] must have shape (T,) or (T, B), got {values.shape}"
            )
        if floor is not None:
            values = np.maximum(values, floor)
        steps = np.arange(values.shape[0]) if x is None else to_numpy(x)[: values.shape[0]]
        if values.ndim == 1:
            ax.plot(steps, values, marker="o", markersize=3, label=str(label))
            continue
        median = np.median(values, axis=1)
        (line,) = ax.plot(steps, median, marker="o", markersize=3, label=str(label))
        if band and values.shape[1] > 1:
            low, high = np.percentile(values, [25, 75], axis=1)
            ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend()
    return ax


def heatmap(
    values,
    ax=None,
    *,
    xlabel: str = "",
    ylabel: str = "",
    xticklabels: Sequence | None = None,
    yticklabels: Sequence | None = None,
    colorbar_label: str = "",
    title: str | None = None,
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    annotate: bool = False,
    fmt: str = "{:.2f}",
    figsize: tuple[float, float] = (6.0, 4.5),
):
    """Draw a table of numbers as a heat map with labelled axes and a colour bar.

    Row ``i`` of ``values`` is drawn at height ``i`` from the top, column ``j`` at
    ``j`` from the left (the way the table is printed).

    Parameters
    ----------
    values : array-like of shape (rows, cols)
    ax : matplotlib Axes, optional
        Draw here; a new figure is made when ``None``.
    xlabel, ylabel : str
        What the columns and the rows are (e.g. ``"Newton step"``, ``"layer"``).
    xticklabels, yticklabels : sequence, optional
        One label per column / row; ``0, 1, …`` by default.
    colorbar_label : str
        What the colour means (e.g. ``"held-out R²"``).
    title : str, optional
    cmap : str
        A matplotlib colour map name.
    vmin, vmax : float, optional
        Colour limits; the data's range by default.
    annotate : bool
        Write each value in its cell (for small tables).
    fmt : str
        Format of the annotations.
    figsize : (float, float)
        Size of a new figure, in inches.

    Returns
    -------
    matplotlib Axes
    """
    values = to_numpy(values)
    if values.ndim != 2:
        raise ValueError(f"values must have shape (rows, cols), got {values.shape}")
    rows, cols = values.shape
    for name, labels, count in (("xticklabels", xticklabels, cols), ("yticklabels", yticklabels, rows)):
        if labels is not None and len(labels) != count:
            raise ValueError(f"{name} must have {count} entries, got {len(labels)}")
    ax = _new_axes(ax, figsize)
    image = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest")
    cbar = ax.figure.colorbar(image, ax=ax)
    if colorbar_label:
        cbar.set_label(colorbar_label)
    # One tick per cell when labels are given or the axis is short; otherwise matplotlib's
    # integer ticks keep a long axis readable.
    if xticklabels is not None or cols <= 20:
        ax.set_xticks(np.arange(cols), labels=list(xticklabels) if xticklabels is not None else range(cols))
    if yticklabels is not None or rows <= 20:
        ax.set_yticks(np.arange(rows), labels=list(yticklabels) if yticklabels is not None else range(rows))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if annotate:
        mid = np.nanmean([image.norm.vmin, image.norm.vmax])
        for i in range(rows):
            for j in range(cols):
                ax.text(
                    j, i, fmt.format(values[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if values[i, j] < mid else "black",
                )
    return ax


def mark_row_maxima(ax, values, min_value: float = -np.inf):
    """Circle the largest entry of each row of a heat map drawn by :func:`heatmap`.

    Parameters
    ----------
    ax : matplotlib Axes
        The heat map's axes.
    values : array-like of shape (rows, cols)
        The table drawn; NaN entries never win.
    min_value : float
        Rows whose maximum is below this are left unmarked (an argmax over noise means
        nothing).

    Returns
    -------
    matplotlib Axes
    """
    values = to_numpy(values)
    if values.ndim != 2:
        raise ValueError(f"values must have shape (rows, cols), got {values.shape}")
    clean = np.nan_to_num(values, nan=-np.inf)
    cols = clean.argmax(1)
    rows = [i for i in range(values.shape[0]) if clean[i, cols[i]] >= min_value]
    if rows:
        ax.scatter(cols[rows].tolist(), rows, s=140, facecolors="none", edgecolors="red", linewidths=1.5, zorder=3)
    return ax


def matrix_image(
    matrix,
    ax=None,
    *,
    title: str | None = None,
    cmap: str = "RdBu_r",
    symmetric: bool = True,
    colorbar: bool = True,
    figsize: tuple[float, float] = (4.5, 4.0),
):
    """Show one matrix as an image, entry ``(i, j)`` at row ``i``, column ``j``.

    Parameters
    ----------
    matrix : array-like of shape (rows, cols)
    ax : matplotlib Axes, optional
        Draw here; a new figure is made when ``None``.
    title : str, optional
    cmap : str
        A matplotlib colour map; a diverging one by default, so that zero is white.
    symmetric : bool
        Centre the colour scale on zero (``±max|entry|``).
    colorbar : bool
        Add a colour bar.
    figsize : (float, float)
        Size of a new figure, in inches.

    Returns
    -------
    matplotlib Axes
    """
    matrix = to_numpy(matrix)
    if matrix.ndim != 2:
        raise ValueError(f"matrix must have shape (rows, cols), got {matrix.shape}")
    ax = _new_axes(ax, figsize)
    limit = float(np.max(np.abs(matrix))) if symmetric and matrix.size else None
    if limit == 0.0:
        limit = 1.0
    image = ax.imshow(
        matrix, cmap=cmap, interpolation="nearest",
        vmin=-limit if limit else None, vmax=limit,
    )
    if colorbar:
        ax.figure.colorbar(image, ax=ax)
    ax.set_xlabel("column")
    ax.set_ylabel("row")
    if title:
        ax.set_title(title)
    return ax
