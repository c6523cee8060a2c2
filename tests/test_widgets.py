"""tfnewton.widgets: one output that is a live widget in Jupyter and a PNG in the book."""

import base64

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import nbformat  # noqa: E402
import pytest  # noqa: E402
from nbclient import NotebookClient  # noqa: E402

from tfnewton.widgets import WIDGET_VIEW_MIME, InteractiveFigure, interact_figure  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _line(slope=1.0, label="line"):
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1], [0, slope], label=label)
    return ax


def test_bundle_holds_widget_view_and_png():
    panel = interact_figure(_line, slope=(0.5, 3.0, 0.5), label=["line", "other"])
    assert isinstance(panel, InteractiveFigure)
    bundle = panel._repr_mimebundle_()
    assert set(bundle) == {WIDGET_VIEW_MIME, "image/png", "text/plain"}
    assert bundle[WIDGET_VIEW_MIME]["model_id"] == panel.widget.model_id
    png = base64.b64decode(bundle["image/png"])
    assert png.startswith(PNG_MAGIC) and png == panel.png
    # The book must never fall back to the widget's repr text.
    assert not bundle["text/plain"].startswith("interactive(")
    assert "slope=1.0" in bundle["text/plain"]


def test_png_is_drawn_at_the_initial_values():
    calls = []

    def plot(a=2.0, b=7):
        calls.append((a, b))
        return _line(a)

    panel = interact_figure(plot, a=(1.0, 4.0, 0.5), b=(0, 10))
    assert panel.kwargs == {"a": 2.0, "b": 7}
    # once by the panel itself, once for the PNG, both at the initial values
    assert calls == [(2.0, 7), (2.0, 7)]


def test_png_depends_on_the_initial_values():
    low = interact_figure(lambda slope=0.5: _line(slope), slope=(0.5, 3.0, 0.5))
    high = interact_figure(lambda slope=3.0: _line(slope), slope=(0.5, 3.0, 0.5))
    assert low.png != high.png


def test_leaves_no_figure_open():
    before = plt.get_fignums()
    interact_figure(_line, slope=(0.5, 3.0, 0.5))
    assert plt.get_fignums() == before


def test_figure_returned_or_current_figure_both_work():
    def returns_figure(s=1.0):
        return _line(s).figure

    def returns_nothing(s=1.0):
        _line(s)

    for plot in (returns_figure, returns_nothing):
        assert interact_figure(plot, s=(0.5, 2.0)).png.startswith(PNG_MAGIC)


def test_an_error_in_the_plot_fails_loudly():
    # ipywidgets' interact swallows callback errors; the book build must not.
    def broken(x=1.0):
        raise RuntimeError("broken plot")

    with pytest.raises(RuntimeError, match="broken plot"):
        interact_figure(broken, x=(0.0, 2.0))


@pytest.mark.parametrize("plot, dpi, error", [(42, 100, TypeError), (_line, 0, ValueError), (_line, 1.5, TypeError)])
def test_validation(plot, dpi, error):
    with pytest.raises(error, match="plot|dpi"):
        interact_figure(plot, dpi=dpi)


LIVE_CELLS = [
    """\
import matplotlib.pyplot as plt
from tfnewton.widgets import interact_figure

def plot(slope=1.0):
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1], [0, slope])
    ax.set_ylim(0, 3)
    return ax

panel = interact_figure(plot, slope=(0.5, 3.0, 0.5))
panel""",
    # the panel's output area received the figure drawn at the initial value
    """\
first = [o for o in panel.widget.out.outputs if "image/png" in o.get("data", {})]
print(len(first))""",
    # moving the slider from the kernel redraws into the output area
    "panel.widget.children[0].value = 2.5",
    """\
second = [o for o in panel.widget.out.outputs if "image/png" in o.get("data", {})]
print(len(second), second[-1]["data"]["image/png"] != first[-1]["data"]["image/png"])""",
]


def test_live_in_a_kernel():
    """With a real kernel and ipywidgets' comm (nbclient plays the front end's part)."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in LIVE_CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    NotebookClient(nb, timeout=120, kernel_name="python3", store_widget_state=True).execute()

    (panel_output,) = nb.cells[0].outputs
    assert WIDGET_VIEW_MIME in panel_output["data"] and "image/png" in panel_output["data"]
    assert nb.cells[1].outputs[0]["text"].strip() == "1"
    assert nb.cells[3].outputs[0]["text"].strip() == "1 True"
    # the saved widget state holds the slider and the output area
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    models = {m["model_name"] for m in state.values()}
    assert {"FloatSliderModel", "OutputModel", "VBoxModel"} <= models


# --------------------------------------------------------------------------------------
# The logistic chapter's panel: mu and width of Giannou et al.'s construction
# --------------------------------------------------------------------------------------
SMALL = dict(d=2, n=8, batch=2)


def test_logistic_construction_figure_shows_the_floor_and_the_quarter():
    from tfnewton.approx import sigmoid_map
    from tfnewton.widgets import logistic_construction_figure

    fig = logistic_construction_figure(-1.0, 16, **SMALL)
    left, right = fig.axes
    exact, relu, floor = left.get_lines()
    # the dashed line is the σ map's sup error; the ReLU curve stops near it, the exact one goes on
    assert floor.get_ydata()[0] == pytest.approx(sigmoid_map(0.1, 16).sup_error)
    assert relu.get_ydata()[-1] > 100 * exact.get_ydata()[-1]
    assert relu.get_ydata()[-1] > 0.1 * floor.get_ydata()[0]
    assert right.get_lines()[-1].get_ydata()[0] == 0.25
    assert "k = 5" in fig._suptitle.get_text()  # μ = 0.1: five inner Newton–Schulz steps
    plt.close(fig)


def test_interact_logistic_construction_is_a_panel_at_its_initial_values():
    from tfnewton.widgets import interact_logistic_construction

    panel = interact_logistic_construction(log10_mu=-1.0, width=16, **SMALL)
    assert isinstance(panel, InteractiveFigure)
    assert panel.kwargs == {"log10_mu": -1.0, "width": 16}
    assert panel.png.startswith(PNG_MAGIC)
    assert set(panel._repr_mimebundle_()) == {WIDGET_VIEW_MIME, "image/png", "text/plain"}


@pytest.mark.parametrize("kwargs, match", [
    (dict(width=10), "width must be one of"),
    (dict(log10_mu=1.0), "log10_mu must be a number in"),
    (dict(log10_mu="-1"), "log10_mu"),
])
def test_interact_logistic_construction_validates(kwargs, match):
    from tfnewton.widgets import interact_logistic_construction

    with pytest.raises(ValueError, match=match):
        interact_logistic_construction(**kwargs, **SMALL)


def test_logistic_construction_figure_validates():
    from tfnewton.widgets import logistic_construction_figure

    with pytest.raises(ValueError, match="width"):
        logistic_construction_figure(-1.0, 2, **SMALL)
    with pytest.raises(TypeError, match="log10_mu"):
        logistic_construction_figure(float("nan"), 16, **SMALL)
    with pytest.raises(ValueError, match="batch"):
        logistic_construction_figure(-1.0, 16, d=2, n=8, batch=0)


# --------------------------------------------------------------------------------------
# The sparse-recovery chapter's panel: sparsity and noise
# --------------------------------------------------------------------------------------
SPARSE_SMALL = dict(d=8, n=6, steps=12, batch=16)


def test_sparse_recovery_figure_curves_fall_to_the_oracle_floor():
    import torch

    from tfnewton.sparse import InContextLISTA
    from tfnewton.widgets import sparse_recovery_figure

    model = InContextLISTA.from_schedule([0.05] * 5, [0.01] * 5, normalize_steps=True, dtype=torch.float64)
    fig = sparse_recovery_figure(2, 0.1, model=model, **SPARSE_SMALL)
    left, right = fig.axes
    ista, fista, learned, floor = left.get_lines()
    assert len(ista.get_ydata()) == 13 and len(learned.get_ydata()) == 6
    assert ista.get_ydata()[0] == pytest.approx(1.0) and fista.get_ydata()[-1] < 0.9
    # the oracle (least squares on the true support) is below what the LASSO iterates reach
    assert 0 < floor.get_ydata()[0] < fista.get_ydata()[-1]
    assert "λ = " in ista.get_label()
    plt.close(fig)
    noiseless = sparse_recovery_figure(2, 0.0, **SPARSE_SMALL)
    assert len(noiseless.axes[0].get_lines()) == 2  # no floor line: the oracle is exact without noise
    plt.close(noiseless)


def test_interact_sparse_recovery_is_a_panel_at_its_initial_values():
    from tfnewton.widgets import interact_sparse_recovery

    panel = interact_sparse_recovery(sparsity=2, noise_std=0.3, **SPARSE_SMALL)
    assert isinstance(panel, InteractiveFigure)
    assert panel.kwargs == {"sparsity": 2, "noise_std": 0.3}
    assert panel.png.startswith(PNG_MAGIC)
    assert set(panel._repr_mimebundle_()) == {WIDGET_VIEW_MIME, "image/png", "text/plain"}


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(sparsity=6), ValueError, "sparsity must be in"),
    (dict(noise_std=1.5), ValueError, "noise_std must be a number in"),
    (dict(noise_std="0.1"), ValueError, "noise_std"),
])
def test_interact_sparse_recovery_validates(kwargs, error, match):
    from tfnewton.widgets import interact_sparse_recovery

    with pytest.raises(error, match=match):
        interact_sparse_recovery(**kwargs, **SPARSE_SMALL)


def test_sparse_recovery_figure_validates():
    from tfnewton.widgets import sparse_recovery_figure

    with pytest.raises(ValueError, match="sparsity must be < n"):
        sparse_recovery_figure(6, 0.1, **SPARSE_SMALL)
    with pytest.raises(ValueError, match="noise_std"):
        sparse_recovery_figure(2, -0.1, **SPARSE_SMALL)
    with pytest.raises(TypeError, match="model must be callable"):
        sparse_recovery_figure(2, 0.1, model=3, **SPARSE_SMALL)
