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
    "sparse_recovery_figure",
    "interact_sparse_recovery",
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


# --------------------------------------------------------------------------------------
# The sparse-recovery chapter's panel: sparsity and noise
# --------------------------------------------------------------------------------------
#: LASSO weights from which :func:`sparse_recovery_figure` picks ISTA's and FISTA's ``λ``.
SPARSE_LAMBDA_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)


def sparse_recovery_figure(sparsity: int = 3, noise_std: float = 0.2, *, model=None, d: int = 20, n: int = 16,
                           steps: int = 16, batch: int = 256, seed: int = 0):
    r"""ISTA and FISTA (and a fitted in-context model) at one sparsity and one noise level.

    Left: the recovery error ``Σ‖β_t − β‖²/Σ‖β‖²`` after each iteration (or layer) on
    ``batch`` prompts of :func:`tfnewton.tasks.sample_sparse_recovery` (Garg et al.'s scaling,
    ``x ~ N(0, I_d)``), with each LASSO method's ``λ`` picked from ``SPARSE_LAMBDA_GRID`` on
    separate validation prompts (:func:`tfnewton.sparse.choose_lambda`), beside the noise
    floor: least squares on the true support, which no method that must find the support
    beats on average. Right: one prompt's ``β`` against the last estimates.

    Parameters
    ----------
    sparsity : int
        ``s``, non-zeros of ``β``, ``1 <= s < n``.
    noise_std : float
        ``>= 0``.
    model : callable, optional
        ``model(X, y) -> (K + 1, B, d)``, e.g. a fitted :class:`tfnewton.sparse.InContextLISTA`
        (float64), drawn as a third curve.
    d, n : int
        Dimension and measurements per prompt.
    steps : int
        Iterations of ISTA and FISTA.
    batch : int
        Test prompts (as many validation prompts).
    seed : int

    Returns
    -------
    matplotlib Figure
    """
    import matplotlib.pyplot as plt
    import numpy as np
    import torch

    from .algorithms import fista, ista
    from .sparse import choose_lambda, oracle_least_squares, recovery_error
    from .tasks import sample_sparse_recovery

    d, n, steps, batch, seed = (check_int(value, name, minimum=0 if name == "seed" else 1)
                                for value, name in ((d, "d"), (n, "n"), (steps, "steps"), (batch, "batch"),
                                                    (seed, "seed")))
    sparsity = check_int(sparsity, "sparsity", minimum=1)
    if sparsity >= n or sparsity > d:
        raise ValueError(f"sparsity must be < n = {n} and <= d = {d} (the noise floor solves least squares on "
                         f"the support), got {sparsity}")
    if isinstance(noise_std, bool) or not isinstance(noise_std, numbers.Real) or not 0 <= noise_std < math.inf:
        raise ValueError(f"noise_std must be a finite number >= 0, got {noise_std!r}")
    if model is not None and not callable(model):
        raise TypeError(f"model must be callable as model(X, y), got {type(model).__name__}")
    generator = torch.Generator().manual_seed(seed)
    draw = dict(sparsity=sparsity, noise_std=float(noise_std), scaling="garg", generator=generator,
                dtype=torch.float64)
    validation = sample_sparse_recovery(batch, n, d, **draw)
    test = sample_sparse_recovery(batch, n, d, **draw)
    curves, last = {}, {}
    for name, solver in (("ISTA", ista), ("FISTA", fista)):
        lam = choose_lambda(solver, validation.X, validation.y, validation.w, steps, SPARSE_LAMBDA_GRID)
        betas = solver(test.X, test.y, lam, steps)
        curves[f"{name}, λ = {lam:g}"], last[name] = recovery_error(betas, test.w), betas[-1]
    if model is not None:
        with torch.no_grad():
            betas = model(test.X, test.y)
        curves[f"in-context variant, {betas.shape[0] - 1} layers"] = recovery_error(betas, test.w)
        last["in-context variant"] = betas[-1]
    floor = recovery_error(oracle_least_squares(test.X, test.y, test.support), test.w).item()

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    for (label, errors), marker in zip(curves.items(), "os^"):
        left.semilogy(np.arange(len(errors)), np.maximum(errors.numpy(), 1e-17), marker + "-", ms=3, label=label)
    if noise_std > 0:  # without noise the oracle is exact (round-off only)
        left.axhline(floor, color="k", ls="--", lw=1, label="least squares on the true support")
    left.set_xlabel("iteration $t$ or layer")
    left.set_ylabel(r"$\sum\|\beta_t - \beta\|^2 / \sum\|\beta\|^2$")
    left.legend(fontsize=8)
    left.grid(True, alpha=0.3)
    coords = np.arange(d)
    right.stem(coords, test.w[0].numpy(), linefmt="k-", markerfmt="ko", basefmt=" ", label=r"true $\beta$")
    for i, ((label, beta), marker) in enumerate(zip(last.items(), "xs^")):  # colours as on the left
        right.plot(coords, beta[0].numpy(), marker, color=f"C{i}", ms=6, mfc="none", label=f"{label}, last iterate")
    right.axhline(0, color="gray", lw=0.5)
    right.set_xlabel("coordinate $i$")
    right.set_ylabel(r"$\beta_i$")
    right.legend(fontsize=8)
    fig.suptitle(f"$s = {sparsity}$, noise {float(noise_std):g}, $d = {d}$, $n = {n}$: {batch} test prompts")
    return fig


def interact_sparse_recovery(*, sparsity: int = 3, noise_std: float = 0.2, model=None, d: int = 20, n: int = 16,
                             steps: int = 16, batch: int = 256, seed: int = 0, dpi: int = 100) -> InteractiveFigure:
    """Sliders for the sparsity and the noise of :func:`sparse_recovery_figure`.

    ``sparsity`` moves from 1 to ``min(d, n − 1, 10)``; ``noise_std`` from 0 to 1 in steps of
    0.05. Live in Jupyter, a PNG at the initial values in the book.

    Parameters
    ----------
    sparsity : int
        Initial ``s``.
    noise_std : float
        Initial noise, in ``[0, 1]``.
    model, d, n, steps, batch, seed
        Fixed for the panel (as in :func:`sparse_recovery_figure`).
    dpi : int
        Resolution of the PNG.

    Returns
    -------
    InteractiveFigure
    """
    d, n = check_int(d, "d", minimum=1), check_int(n, "n", minimum=2)
    top = min(d, n - 1, 10)
    sparsity = check_int(sparsity, "sparsity", minimum=1)
    if sparsity > top:
        raise ValueError(f"sparsity must be in [1, {top}] (at most min(d, n - 1, 10)), got {sparsity}")
    if isinstance(noise_std, bool) or not isinstance(noise_std, numbers.Real) or not 0 <= noise_std <= 1:
        raise ValueError(f"noise_std must be a number in [0, 1], got {noise_std!r}")
    import ipywidgets

    def panel(sparsity=int(sparsity), noise_std=float(noise_std)):
        return sparse_recovery_figure(sparsity, noise_std, model=model, d=d, n=n, steps=steps, batch=batch, seed=seed)

    panel.__name__ = "sparse_recovery_figure"
    return interact_figure(
        panel,
        dpi=dpi,
        sparsity=ipywidgets.IntSlider(value=int(sparsity), min=1, max=top, step=1, description="sparsity s"),
        noise_std=ipywidgets.FloatSlider(value=float(noise_std), min=0.0, max=1.0, step=0.05, description="noise"),
    )
