"""tfnewton.plotting: the chapters' shared figures."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from tfnewton.plotting import error_curves, heatmap, matrix_image, to_numpy  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_to_numpy_takes_tensors_that_need_grad_and_lists():
    t = torch.arange(3.0, requires_grad=True) * 2
    assert np.array_equal(to_numpy(t), [0.0, 2.0, 4.0]) and to_numpy(t).dtype == np.float64
    assert to_numpy([[1, 2]]).shape == (1, 2)


def test_error_curves_draws_one_labelled_median_per_curve_on_a_log_axis():
    rng = np.random.default_rng(0)
    batched = torch.tensor(rng.random((6, 5)) + 0.1, dtype=torch.float32)  # (T, B)
    single = 0.5 ** np.arange(4)
    ax = error_curves({"batched": batched, "single": single}, xlabel="layer", ylabel="err")
    assert ax.get_yscale() == "log" and ax.get_xlabel() == "layer" and ax.get_ylabel() == "err"
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"batched", "single"}
    np.testing.assert_allclose(lines["batched"].get_ydata(), np.median(batched.double().numpy(), axis=1))
    np.testing.assert_allclose(lines["single"].get_ydata(), single)
    assert len(ax.collections) == 1  # the interquartile band of the batched curve only
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["batched", "single"]


def test_error_curves_floor_and_given_axes():
    fig, ax = plt.subplots()
    out = error_curves({"exact": np.array([1.0, 0.0])}, ax=ax, floor=1e-16, logy=False, band=False)
    assert out is ax
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), [1.0, 1e-16])


@pytest.mark.parametrize("bad", [{}, [1, 2], {"x": np.zeros((2, 2, 2))}])
def test_error_curves_rejects_bad_input(bad):
    with pytest.raises(ValueError, match="curves"):
        error_curves(bad)


def test_heatmap_labels_and_colorbar():
    values = torch.arange(6.0).reshape(2, 3)
    ax = heatmap(values, xlabel="step", ylabel="layer", xticklabels=["a", "b", "c"],
                 colorbar_label="R²", annotate=True)
    assert ax.get_xlabel() == "step" and ax.get_ylabel() == "layer"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    np.testing.assert_array_equal(ax.images[0].get_array(), values.numpy())
    assert ax.images[0].colorbar.ax.get_ylabel() == "R²"
    assert len(ax.texts) == 6


def test_heatmap_rejects_bad_shapes_and_labels():
    with pytest.raises(ValueError, match="values"):
        heatmap(np.zeros(3))
    with pytest.raises(ValueError, match="xticklabels"):
        heatmap(np.zeros((2, 3)), xticklabels=["a"])


def test_matrix_image_is_centred_on_zero():
    ax = matrix_image(torch.tensor([[1.0, -3.0], [0.5, 2.0]]), title="A")
    assert ax.images[0].get_clim() == (-3.0, 3.0)
    assert ax.get_title() == "A"
    with pytest.raises(ValueError, match="matrix"):
        matrix_image(np.zeros((2, 2, 2)))
