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
import io
from typing import Callable

from ._validate import check_int

__all__ = ["InteractiveFigure", "interact_figure", "WIDGET_VIEW_MIME"]

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
