"""tfnewton.approx: ReLU interpolants against their maps, the 1/width² rate, products, exact wiring."""

from __future__ import annotations

import math
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tfnewton import approx as A

pytestmark = pytest.mark.usefixtures("one_thread")

SMOOTH = {
    "sigmoid": (torch.sigmoid, (-4.0, 4.0)),
    "sin": (torch.sin, (-3.0, 2.0)),
    "exp": (torch.exp, (-1.0, 1.5)),
}


@settings(max_examples=25)
@given(st.sampled_from(sorted(SMOOTH)), st.integers(3, 400), st.sampled_from(["uniform", "curvature"]))
def test_relu_units_compute_the_interpolant_and_stay_within_the_bound(name, width, knots):
    fn, interval = SMOOTH[name]
    approx = A.relu_approximation(fn, interval, width, knots=knots)
    assert approx.width == width and approx.interval == interval
    u = torch.linspace(*interval, 777, dtype=torch.float64)
    relu_sum = approx(u)
    # the ReLU sum is the interpolant (up to rounding), and the standalone ReluMLP computes it
    assert (relu_sum - approx.interpolate(u)).abs().max() <= 1e-12
    assert (approx.to_mlp()(u.view(-1, 1, 1)).flatten() - relu_sum).abs().max() <= 1e-12
    # the measured sup error bounds the error anywhere and respects max|f''| h²/8 piece by piece
    assert (relu_sum - fn(u)).abs().max() <= approx.sup_error * (1 + 1e-3) + 1e-15
    assert approx.sup_error <= approx.predicted_error * 1.02
    # constant beyond both ends
    assert torch.allclose(approx(torch.tensor([interval[0] - 5.0, interval[1] + 5.0], dtype=torch.float64)),
                          fn(torch.tensor(interval, dtype=torch.float64)))


def test_uniform_knots_reach_the_predicted_rate():
    table = A.sup_error_against_width(torch.sigmoid, (-4.0, 4.0), [17, 33, 65, 129, 257])
    for err, pred in zip(table["sup_error"], table["predicted"]):
        assert 0.8 * pred <= err <= 1.02 * pred  # σ'' peaks inside a piece: the bound is nearly attained
    ratios = [b / a for a, b in zip(table["sup_error"], table["sup_error"][1:])]
    assert all(0.2 <= r <= 0.3 for r in ratios)  # halving h quarters the error


def test_damping_map_needs_graded_knots():
    mu = 0.1
    graded = [A.damping_map(mu, w).sup_error for w in (32, 64, 128, 256)]
    uniform = [A.damping_map(mu, w, knots="uniform").sup_error for w in (32, 64, 128, 256)]
    assert all(0.2 <= b / a <= 0.3 for a, b in zip(graded, graded[1:]))  # 1/width² with graded knots
    assert all(0.6 <= b / a <= 0.8 for a, b in zip(uniform, uniform[1:]))  # 1/√width with uniform ones
    assert graded[-1] < uniform[-1] / 100
    # λ² = 0 is a knot: the step is exactly 1 there
    assert float(A.damping_map(mu, 64)(torch.zeros(1, dtype=torch.float64))) == pytest.approx(1.0, abs=1e-15)


def test_named_maps_intervals():
    mu = 0.01
    R, S = A.logit_radius(mu), A.decrement_bound(mu)
    assert R == pytest.approx(math.sqrt(2 * math.log(2) / mu))
    assert A.sigmoid_map(mu, 64).interval == pytest.approx((-R, R))
    assert A.sigmoid_derivative_map(mu, 64).interval == pytest.approx((-R, R))
    assert A.damping_map(mu, 64).interval == pytest.approx((0.0, S))
    z = torch.linspace(-R, R, 501, dtype=torch.float64)
    s = torch.sigmoid(z)
    assert (A.sigmoid_derivative_map(mu, 257)(z) - s * (1 - s)).abs().max() <= 2e-5
    lam2 = torch.linspace(0, S, 501, dtype=torch.float64)
    exact = 2 * math.sqrt(mu) / (2 * math.sqrt(mu) + lam2.sqrt())
    damping = A.damping_map(mu, 257)
    assert (damping(lam2) - exact).abs().max() <= damping.sup_error * (1 + 1e-9)


@settings(max_examples=20)
@given(st.floats(0.1, 3.0), st.floats(0.1, 3.0), st.integers(3, 201), st.integers(0, 2**31 - 1))
def test_relu_product(bound_a, bound_b, width, seed):
    p = A.relu_product(bound_a, bound_b, width)
    g = torch.Generator().manual_seed(seed)
    a = (torch.rand(300, generator=g, dtype=torch.float64) * 2 - 1) * bound_a
    b = (torch.rand(300, generator=g, dtype=torch.float64) * 2 - 1) * bound_b
    err = (p(a, b) - a * b).abs().max()
    h = 2 * (bound_a + bound_b) / (width - 1)
    square_error = h**2 / 4  # interpolating t² on pieces of length h: exactly h²/4 at each midpoint
    assert p.square.sup_error <= square_error * (1 + 1e-9)
    assert err <= square_error / 4 * (1 + 1e-9) + 1e-12
    assert p.sup_error <= square_error / 4 * (1 + 1e-9)
    assert torch.equal(p(a, torch.zeros_like(a)), torch.zeros_like(a))  # exact zero when b = 0


def test_smallest_width_is_smallest():
    fn, interval = torch.sigmoid, (-4.0, 4.0)
    for knots in ("uniform", "curvature"):
        w = A.smallest_width(fn, interval, 1e-4, knots=knots)
        assert A.relu_approximation(fn, interval, w, knots=knots).sup_error <= 1e-4
        assert A.relu_approximation(fn, interval, w - 1, knots=knots).sup_error > 1e-4


def test_width_too_small_for_tol_names_the_smallest_width():
    best = A.smallest_width(torch.sigmoid, (-4.0, 4.0), 1e-4)
    with pytest.raises(ValueError, match=rf"width=10 is too small for tol=0.0001.*smallest width that reaches tol is {best}\b"):
        A.relu_approximation(torch.sigmoid, (-4.0, 4.0), 10, tol=1e-4)
    assert A.relu_approximation(torch.sigmoid, (-4.0, 4.0), best, tol=1e-4).sup_error <= 1e-4
    with pytest.raises(ValueError, match="smallest width") as info:
        A.damping_map(0.1, 8, tol=1e-3)
    named = int(re.search(r"reaches tol is (\d+)", str(info.value)).group(1))
    assert A.damping_map(0.1, named).sup_error <= 1e-3 < A.damping_map(0.1, named - 1).sup_error
    with pytest.raises(ValueError, match=r"smallest width that reaches tol is (\d+)") as info:
        A.relu_product(1.0, 1.0, 5, tol=1e-4)
    named = int(re.search(r"reaches tol is (\d+)", str(info.value)).group(1))
    assert A.relu_product(1.0, 1.0, named).sup_error <= 1e-4 < A.relu_product(1.0, 1.0, named - 1).sup_error


@pytest.mark.parametrize(
    "call, exc, words",
    [
        (lambda: A.relu_approximation(torch.sigmoid, (1.0, -1.0), 8), ValueError, ["interval", "lo < hi"]),
        (lambda: A.relu_approximation(torch.sigmoid, (0.0, float("inf")), 8), ValueError, ["interval", "finite"]),
        (lambda: A.relu_approximation(torch.sigmoid, 3.0, 8), TypeError, ["interval", "pair"]),
        (lambda: A.relu_approximation(torch.sigmoid, (0.0, 1.0), 1), ValueError, ["width", ">= 2"]),
        (lambda: A.relu_approximation(torch.sigmoid, (0.0, 1.0), 2.5), TypeError, ["width", "int"]),
        (lambda: A.relu_approximation("sigmoid", (0.0, 1.0), 8), TypeError, ["fn", "callable"]),
        (lambda: A.relu_approximation(torch.sigmoid, (0.0, 1.0), 8, knots="cubic"), ValueError, ["knots"]),
        (lambda: A.relu_approximation(torch.sigmoid, (0.0, 1.0), 3, knots=[0.0, 0.7, 0.5]), ValueError, ["knots", "increasing"]),
        (lambda: A.relu_approximation(torch.sigmoid, (0.0, 1.0), 4, knots=[0.0, 0.5, 1.0]), ValueError, ["knots", "width = 4"]),
        (lambda: A.relu_approximation(torch.sigmoid, (0.0, 1.0), 8, tol=0.0), ValueError, ["tol", "> 0"]),
        (lambda: A.relu_approximation(lambda u: u[:1], (0.0, 1.0), 8), TypeError, ["fn", "same shape"]),
        (lambda: A.relu_approximation(torch.log, (0.0, 1.0), 8), ValueError, ["fn", "finite"]),
        (lambda: A.sigmoid_map(0.0, 8), ValueError, ["mu", "> 0"]),
        (lambda: A.damping_map(-1.0, 8), ValueError, ["mu", "> 0"]),
        (lambda: A.relu_product(0.0, 1.0, 8), ValueError, ["bound_a", "> 0"]),
        (lambda: A.MLPWiring(4).linear(reads={7: 1.0}, writes={0: 1.0}), ValueError, ["reads", "width 4"]),
    ],
)
def test_bad_input(call, exc, words):
    with pytest.raises(exc) as info:
        call()
    for word in words:
        assert word in str(info.value)


def _stream(gate_pattern, D=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    H = torch.rand(3, len(gate_pattern), D, generator=g, dtype=torch.float64) * 2 - 1
    H[..., 1] = torch.tensor(gate_pattern, dtype=torch.float64)
    off = H[..., 1] == 0
    H[off] = torch.where(torch.arange(D) == 5, H[off], torch.zeros_like(H[off]))
    return H


def test_wiring_relu_and_exact_agree_and_gates_give_exact_zeros():
    sig = A.relu_approximation(torch.sigmoid, (-1.0, 1.0), 65)
    prod = A.relu_product(1.0, 1.0, 65)
    wiring = (
        A.MLPWiring(6)
        .map(sig, reads={0: 1.0}, gate=1, writes={2: 1.0, 3: -2.0})
        .product(prod, reads_a={0: 1.0}, reads_b={4: 1.0}, gate=1, writes={4: 1.0})
        .linear(reads={5: 1.0}, writes={5: -1.0})
    )
    H = _stream([1, 1, 0, 1, 0])
    relu, exact = wiring.relu_mlp()(H), wiring.exact_mlp()(H)
    assert wiring.relu_mlp().hidden == wiring.hidden == 65 + 1 + 2 * 65 + 2
    expected = torch.zeros_like(H)
    expected[..., 2] = torch.sigmoid(H[..., 0]) * H[..., 1]
    expected[..., 3] = -2 * expected[..., 2]
    expected[..., 4] = H[..., 0] * H[..., 4]
    expected[..., 5] = -H[..., 5]
    assert (exact - expected).abs().max() <= 1e-15
    assert (relu - exact)[..., 2].abs().max() <= sig.sup_error * (1 + 1e-9)
    assert (relu - exact)[..., 4].abs().max() <= prod.sup_error * 1.1
    assert torch.equal(relu[..., 5], -H[..., 5])  # the clearing is exact in ReLU form too
    off = H[..., 1] == 0
    assert torch.equal(relu[off][:, :5], torch.zeros_like(relu[off][:, :5]))  # nothing leaks to ungated tokens


def test_exact_mlp_follows_dtype():
    wiring = A.MLPWiring(6).map(A.relu_approximation(torch.sigmoid, (-1.0, 1.0), 9), reads={0: 1.0}, gate=1, writes={2: 1.0})
    layer = wiring.exact_mlp(dtype=torch.float32)
    H = _stream([1, 0]).float()
    assert layer(H).dtype == torch.float32
    assert wiring.relu_mlp(dtype=torch.float32)(H).dtype == torch.float32
