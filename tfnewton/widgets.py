"""Interactive figures that are live in Jupyter and still show a figure in the built book.

An executed ``ipywidgets.interact`` cell stores only a widget view; the figure
itself lives in the widget state, which the static HTML book could draw only by
loading a widget manager from a CDN (and the book is read offline). So
:func:`interact_figure` builds the usual ``interactive`` widget *and* renders the
plotting function once at the widgets' initial values to a PNG, and displays one
object whose mime bundle holds both:

* Jupyter ranks the widget view first: the reader gets live sliders;
* the book's ``_config.yml`` drops the widget view for HTML
  (``nb_mime_priority_overrides: [[html, application/vnd.jupyter.widget-view+json,
  null]]``), so the page shows the PNG of the default figure.

Usage, in a chapter::

    from tfnewton.widgets import interact_figure

    def plot(kappa=10.0, steps=8):
        ...                       # draw with matplotlib; return the Axes or Figure
    interact_figure(plot, kappa=(1.0, 100.0, 1.0), steps=(1, 20))

The controls are ipywidgets' ``interact`` abbreviations (``(min, max, step)``
tuples, lists of options, widget objects); the function's own defaults set the
initial values, as with ``interact``.
"""

from __future__ import annotations

import base64
import functools
import io
import math
import numbers
from typing import Callable

from ._validate import check_int

__all__ = [
    "InteractiveFigure",
    "interact_figure",
    "WIDGET_VIEW_MIME",
    "logistic_construction_figure",
    "interact_logistic_construction",
]

WIDGET_VIEW_MIME = "application/vnd.jupyter.widget-view+json"


def _figure_of(result):
    """The matplotlib Figure that a plotting function drew: returned, or the current one."""
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    if isinstance(result, Figure):
        return result
    figure = getattr(result, "figure", None)  # an Axes (or an artist) knows its figure
    if isinstance(figure, Figure):
        return figure
    if isinstance(result, (list, tuple)) and result:
        return _figure_of(result[0])
    return plt.gcf()


class InteractiveFigure:
    """A live ``ipywidgets.interactive`` panel together with a PNG of its initial figure.

    Displaying it (as the last expression of a cell) emits one output whose mime
    bundle holds the widget view, the PNG and a short text.

    Parameters
    ----------
    widget : ipywidgets.interactive
        The live panel (sliders plus an output area).
    png : bytes
        The figure drawn at the widgets' initial values, as PNG.
    description : str
        The ``text/plain`` representation.
    kwargs : dict
        The initial values the PNG was drawn with.

    Attributes
    ----------
    widget : ipywidgets.interactive
    png : bytes
    kwargs : dict
        The initial values the PNG was drawn with.
    """

    def __init__(self, widget, png: bytes, description: str, kwargs: dict):
        self.widget = widget
        self.png = png
        self.description = description
        self.kwargs = dict(kwargs)

    def _repr_mimebundle_(self, include=None, exclude=None):
        bundle = dict(self.widget._repr_mimebundle_())
        bundle["image/png"] = base64.b64encode(self.png).decode("ascii")
        # Never the widget's own repr ("interactive(children=(FloatSlider(...") as fallback text.
        bundle["text/plain"] = self.description
        return bundle

    def __repr__(self) -> str:
        return self.description


def interact_figure(plot: Callable, /, *, dpi: int = 100, **controls) -> InteractiveFigure:
    """Make a figure with sliders: live in Jupyter, a static PNG in the built book.

    Parameters
    ----------
    plot : callable
        Draws one figure with matplotlib from keyword arguments and returns the
        ``Axes`` or ``Figure`` (or nothing: the current figure is then used).
    dpi : int
        Resolution of the PNG.
    **controls
        One ipywidgets ``interact`` abbreviation per keyword argument of ``plot``:
        ``(min, max)`` or ``(min, max, step)``, a list of options, a bool, or a
        widget.

    Returns
    -------
    InteractiveFigure
        Display it (make it the last expression of the cell).

    Raises
    ------
    Exception
        Whatever ``plot`` raises at the initial values: unlike ``interact``, which
        prints a callback's traceback into its output area and carries on, a broken
        plot here fails the cell, and so the book build.
    """
    if not callable(plot):
        raise TypeError(f"plot must be callable, got {type(plot).__name__}")
    dpi = check_int(dpi, "dpi", minimum=1)

    import ipywidgets
    import matplotlib.pyplot as plt

    before = set(plt.get_fignums())
    # The panel draws `plot` once at its initial values into its own output area.
    widget = ipywidgets.interactive(plot, **controls)
    kwargs = {w._kwarg: w.get_interact_value() for w in widget.kwargs_widgets}

    # Draw once more, outside the panel, to keep a PNG for readers without a kernel.
    # This call is not wrapped by ipywidgets, so an exception propagates.
    figure = _figure_of(plot(**kwargs))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    # Close what this call opened, so the inline backend does not show the figure a second
    # time below the panel (figures drawn inside the panel were already flushed into it).
    for number in set(plt.get_fignums()) - before:
        plt.close(number)

    name = getattr(plot, "__name__", "plot")
    shown = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    return InteractiveFigure(widget, buffer.getvalue(), f"<interactive figure {name}({shown})>", kwargs)


# --------------------------------------------------------------------------------------
# Panels of the chapters
# --------------------------------------------------------------------------------------
#: Widths offered by :func:`interact_logistic_construction` (ReLU units per scalar map).
LOGISTIC_WIDTHS = (8, 16, 32, 64, 128, 256, 512, 1024)


@functools.lru_cache(maxsize=32)
def _logistic_steps_table(d: int, mu: float, width: int, n: int, batch: int, seed: int) -> dict:
    """error_against_step for one width, cached: the panel draws each setting twice (live and PNG)."""
    from .constructions.logistic_newton import error_against_step

    return error_against_step(d, mu, widths=(width,), n=n, batch=batch, seed=seed)


def logistic_construction_figure(log10_mu: float = -1.0, width: int = 64, *, d: int = 5, n: int = 64,
                                 batch: int = 16, seed: int = 0):
    r"""Giannou et al.'s damped-Newton Transformer at one ``μ`` and one ReLU width, step by step.

    Left: the median relative error ``‖w_t − w*‖/‖w*‖`` of the construction with ReLU scalar
    maps of ``width`` units, beside the same layers with exact scalar maps, and the sigmoid
    map's sup error (the level at which the ReLU curve stops falling). Right: the median
    scaled decrement ``M_f λ(w_t) = λ(w_t)/(2√μ)`` of both, against the 1/4 that separates
    the damped phase from the quadratic one. From
    ``tfnewton.constructions.logistic_newton.error_against_step``, on ``batch`` prompts of
    :func:`tfnewton.tasks.sample_logistic_regression` (float64).

    Parameters
    ----------
    log10_mu : float
        ``μ = 10**log10_mu``, the regularization.
    width : int
        ReLU units per scalar map (σ, σ' and the damping factor), ``>= 3``.
    d, n, batch : int
        Dimension, context length and number of prompts.
    seed : int
        Seed of the prompts.

    Returns
    -------
    matplotlib Figure
    """
    import matplotlib.pyplot as plt
    import numpy as np

    from .constructions.logistic_newton import default_inner_steps

    if isinstance(log10_mu, bool) or not isinstance(log10_mu, numbers.Real) or not math.isfinite(log10_mu):
        raise TypeError(f"log10_mu must be a finite real number, got {log10_mu!r}")
    mu = 10.0**log10_mu
    width = check_int(width, "width", minimum=3)
    d, n, batch, seed = (check_int(value, name, minimum=1 if name != "seed" else 0)
                         for value, name in ((d, "d"), (n, "n"), (batch, "batch"), (seed, "seed")))
    table = _logistic_steps_table(d, mu, width, n, batch, seed)
    relu, exact = table["rows"]
    steps = np.asarray(table["steps"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    left.semilogy(steps, np.maximum(exact["error"], 1e-17), "o-", label="exact scalar maps")
    left.semilogy(steps, np.maximum(relu["error"], 1e-17), "s-", label=f"ReLU maps, width {width}")
    left.axhline(relu["sigmoid_sup_error"], color="gray", ls="--", lw=1, label="sup error of the σ map")
    left.set_xlabel("Newton step $t$")
    left.set_ylabel(r"median $\|w_t - w^\star\| / \|w^\star\|$")
    left.legend(fontsize=8)
    right.semilogy(steps, np.maximum(exact["scaled_decrement"], 1e-17), "o-", label="exact scalar maps")
    right.semilogy(steps, np.maximum(relu["scaled_decrement"], 1e-17), "s-", label=f"ReLU maps, width {width}")
    right.axhline(0.25, color="k", lw=1, label="1/4: damped above, quadratic below")
    right.set_xlabel("Newton step $t$")
    right.set_ylabel(r"median $M_f\,\lambda(w_t)$")
    right.legend(fontsize=8)
    for ax in (left, right):
        ax.grid(True, alpha=0.3)
    k = default_inner_steps(mu)
    fig.suptitle(rf"$\mu = {mu:.3g}$, $d = {d}$, $n = {n}$: $T = {steps[-1]}$ steps, $k = {k}$ inner steps, "
                 f"depth {steps[-1] * (6 + k) + 2} layers")
    return fig


def interact_logistic_construction(*, log10_mu: float = -1.0, width: int = 64, d: int = 5, n: int = 64,
                                   batch: int = 16, seed: int = 0, dpi: int = 100) -> InteractiveFigure:
    """Sliders for ``μ`` and the ReLU width of the logistic construction (:func:`logistic_construction_figure`).

    ``log10_mu`` moves from −2.5 to 0 in steps of 0.25; ``width`` is chosen among
    ``LOGISTIC_WIDTHS``. Live in Jupyter, a PNG at the initial values in the book.

    Parameters
    ----------
    log10_mu : float
        Initial ``log₁₀ μ``, in ``[−2.5, 0]``.
    width : int
        Initial width, one of ``LOGISTIC_WIDTHS``.
    d, n, batch, seed : int
        Fixed for the panel (as in :func:`logistic_construction_figure`).
    dpi : int
        Resolution of the PNG.

    Returns
    -------
    InteractiveFigure
    """
    if isinstance(log10_mu, bool) or not isinstance(log10_mu, numbers.Real) or not -2.5 <= log10_mu <= 0:
        raise ValueError(f"log10_mu must be a number in [-2.5, 0], got {log10_mu!r}")
    if width not in LOGISTIC_WIDTHS:
        raise ValueError(f"width must be one of {LOGISTIC_WIDTHS}, got {width!r}")
    import ipywidgets

    def panel(log10_mu=float(log10_mu), width=int(width)):
        return logistic_construction_figure(log10_mu, width, d=d, n=n, batch=batch, seed=seed)

    panel.__name__ = "logistic_construction_figure"
    return interact_figure(
        panel,
        dpi=dpi,
        log10_mu=ipywidgets.FloatSlider(value=float(log10_mu), min=-2.5, max=0.0, step=0.25, description="log10 mu"),
        width=ipywidgets.SelectionSlider(options=list(LOGISTIC_WIDTHS), value=int(width), description="width"),
    )
