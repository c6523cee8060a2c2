r"""ReLU approximations of scalar maps, written as the library's :class:`~tfnewton.layers.ReluMLP`.

Attention is bilinear in the stream, so a Transformer of linear attention and ReLU layers
gets every *non-linear* scalar map — the sigmoid, its derivative, the damping factor of
Newton's step, a product of two numbers a token computed — from its ReLU layers. This
module builds those approximations and says how good they are.

Piecewise-linear interpolation with ReLU units
----------------------------------------------
Given knots ``t₀ < t₁ < … < t_m`` on an interval ``[lo, hi] = [t₀, t_m]``, the
interpolant of ``f`` with slopes ``s_k = (f(t_{k+1}) − f(t_k)) / (t_{k+1} − t_k)`` is::

    f̂(u) = f(t₀) + Σ_{k=0}^{m} c_k relu(u − t_k),   c_0 = s_0,  c_k = s_k − s_{k−1},  c_m = −s_{m−1}

— one ReLU unit per knot (``width = m + 1`` units), constant beyond both ends. As a
``ReluMLP(1, width)``: ``fc_in`` has weight 1 and bias ``−t_k``, ``fc_out`` weights ``c_k``
and bias ``f(t₀)`` (:meth:`ReluApproximation.to_mlp`). On a piece of length ``h`` the
interpolation error is at most ``max|f''|·h²/8``; with uniform knots ``h = (hi − lo)/(width − 1)``,
so the sup error falls as ``1/width²`` (:func:`sup_error_against_width` measures it beside
that prediction).

Knots: ``"uniform"``; ``"curvature"`` (the knots equidistribute ``∫√|f''|``, which
balances ``|f''|·h²`` across pieces — the sigmoid's flat tails get few knots); ``"graded"``
(``t_k = lo + (hi − lo)(k/m)⁴``, dense at ``lo``: for a map that behaves like
``√(u − lo)`` near ``lo``, whose ``f''`` is unbounded there, these knots keep the
``1/width²`` rate where uniform knots give ``1/√width``); or an explicit array.

Products. ``ab = ((a + b)² − (a − b)²)/4`` with one ReLU square for each of the two squares
(:func:`relu_product`): ``2·width`` units. The square's interpolant lies above ``t²`` by at
most ``ε_sq``, so the product is off by at most ``ε_sq/4``; with symmetric knots it is even,
so a product with ``b = 0`` is exactly 0.

The named maps of damped Newton on the logistic loss (Giannou et al. 2024)
--------------------------------------------------------------------------
With ``‖x_i‖ ≤ 1`` and ``f(w) = mean log(1 + exp(−y_i x_iᵀw)) + (μ/2)‖w‖²``, damped Newton
decreases ``f`` from ``f(0) = ln 2`` and ``f(w) ≥ μ‖w‖²/2``, so every logit obeys
``|x_iᵀw| ≤ ‖w‖ ≤ R = √(2 ln 2/μ)`` (:func:`logit_radius`). On ``[−R, R]``:
:func:`sigmoid_map` (the loss derivative is ``σ(z) − (1 + y)/2``, linear in the label, so
``σ`` is the only non-linear part) and :func:`sigmoid_derivative_map` (``σ' = σ(1 − σ)``,
the Hessian's weights). The damping factor ``2√μ/(2√μ + λ)`` is wanted as a function of
``λ² = gᵀMg`` (what attention forms), :func:`damping_map`, on ``[0, S]`` with
``S = (1 + √(2μ ln 2))²/μ`` (:func:`decrement_bound`: ``‖g‖ ≤ 1 + μ‖w‖`` and ``‖M‖ ≤ 1/μ``);
it behaves like ``1 − √(λ²)/(2√μ)`` at 0, so it uses graded knots.

The exact counterparts
----------------------
:class:`MLPWiring` lists what an MLP block of a construction computes — scalar maps of a
linear read of the token, products, linear maps — with the slots it reads and writes.
It compiles to a :class:`~tfnewton.layers.ReluMLP` (the approximations) or to an
:class:`ExactScalarMLP` (the exact maps, same wiring), so a construction's structure and its
approximation error are tested apart.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn as nn

from . import _validate as v
from .layers import ReluMLP

__all__ = [
    "ReluApproximation",
    "ReluProduct",
    "relu_approximation",
    "relu_product",
    "smallest_width",
    "sup_error_against_width",
    "logit_radius",
    "decrement_bound",
    "sigmoid_map",
    "sigmoid_derivative_map",
    "damping_map",
    "MLPWiring",
    "ExactScalarMLP",
]

KNOT_RULES = ("uniform", "curvature", "graded")
_SAMPLES_PER_PIECE = 32  # the dense grid: at least this many points inside every piece (8192 in all at least)
_MAX_WIDTH = 1 << 16


# --------------------------------------------------------------------------- knots


def _check_interval(interval, name: str = "interval") -> tuple[float, float]:
    if not isinstance(interval, (tuple, list)) or len(interval) != 2:
        raise TypeError(f"{name} must be a pair (lo, hi), got {interval!r}")
    ends = []
    for end, label in zip(interval, ("lo", "hi")):
        if isinstance(end, bool) or not isinstance(end, numbers.Real) or not math.isfinite(end):
            raise ValueError(f"{name} must hold two finite real numbers (lo, hi), got {label} = {end!r}")
        ends.append(float(end))
    lo, hi = ends
    if not lo < hi:
        raise ValueError(f"{name} must satisfy lo < hi, got ({lo:g}, {hi:g})")
    return lo, hi


def _check_width(width, minimum: int = 2) -> int:
    width = v.check_int(width, "width", minimum=minimum)
    if width > _MAX_WIDTH:
        raise ValueError(f"width must be <= {_MAX_WIDTH}, got {width}")
    return width


def _evaluate(fn: Callable, u: torch.Tensor, name: str) -> torch.Tensor:
    out = fn(u)
    if not isinstance(out, torch.Tensor) or out.shape != u.shape:
        raise TypeError(
            f"fn must map a float64 tensor to a tensor of the same shape (a torch function such as "
            f"torch.sigmoid), got {type(out).__name__} of shape {getattr(out, 'shape', None)}"
        )
    out = out.to(torch.float64)
    if not bool(torch.isfinite(out).all()):
        raise ValueError(f"fn ({name}) is not finite everywhere on the interval")
    return out


def _curvature_knots(fn, lo: float, hi: float, count: int) -> torch.Tensor:
    """Knots that equidistribute ∫√(|f''| + floor) over [lo, hi] (f'' by second differences)."""
    N = max(8192, 64 * count)
    u = torch.linspace(lo, hi, N + 1, dtype=torch.float64)
    f = _evaluate(fn, u, "curvature")
    h = (hi - lo) / N
    second = torch.zeros_like(u)
    second[1:-1] = (f[2:] - 2 * f[1:-1] + f[:-2]) / h**2
    second[0], second[-1] = second[1], second[-2]
    density = second.abs().sqrt()
    # A floor keeps knots where f'' vanishes (σ'' at 0) and makes a linear f uniform.
    density = density + 0.05 * density.mean() + 1e-300
    mass = torch.cat([u.new_zeros(1), torch.cumsum((density[1:] + density[:-1]) * h / 2, 0)])
    targets = torch.linspace(0.0, float(mass[-1]), count, dtype=torch.float64)
    idx = torch.searchsorted(mass, targets).clamp(1, N)
    m0, m1 = mass[idx - 1], mass[idx]
    frac = torch.where(m1 > m0, (targets - m0) / (m1 - m0), torch.zeros_like(targets))
    knots = u[idx - 1] + frac * h
    knots[0], knots[-1] = lo, hi
    return knots


def _make_knots(fn, lo: float, hi: float, width: int, knots) -> torch.Tensor:
    if isinstance(knots, str):
        if knots not in KNOT_RULES:
            raise ValueError(f"knots must be one of {KNOT_RULES} or an increasing array, got {knots!r}")
        if knots == "uniform":
            return torch.linspace(lo, hi, width, dtype=torch.float64)
        if knots == "graded":
            return lo + (hi - lo) * torch.linspace(0.0, 1.0, width, dtype=torch.float64) ** 4
        return _curvature_knots(fn, lo, hi, width)
    t = torch.as_tensor(knots, dtype=torch.float64).flatten()
    if t.numel() < 2 or not bool((t[1:] > t[:-1]).all()) or not bool(torch.isfinite(t).all()):
        raise ValueError("knots must be a finite, strictly increasing array of at least 2 points")
    return t


# --------------------------------------------------------------------------- one scalar map


class ReluApproximation:
    r"""The piecewise-linear interpolant of a scalar map as a sum of ReLU units.

    ``f̂(u) = offset + Σ_k coefficients[k]·relu(u − knots[k])`` — build with
    :func:`relu_approximation`.

    Attributes
    ----------
    fn : callable
        The exact map (a torch function of a float64 tensor).
    name : str
    interval : (float, float)
        Where the approximation is valid: ``[knots[0], knots[-1]]``; beyond it ``f̂`` is constant.
    knots : Tensor of shape (width,), float64
    coefficients : Tensor of shape (width,), float64
        ``c_k``, the output weight of unit ``k``.
    offset : float
        ``f(knots[0])``, the output bias.
    width : int
        Number of ReLU units (= number of knots).
    sup_error : float
        ``max |f̂ − f|`` on a dense grid of the interval (every piece sampled at 32 points or more,
        8192 points in all at least).
    predicted_error : float
        What interpolation theory predicts: ``max_k max_{piece k}|f''|·h_k²/8``, with ``f''``
        from second differences on the dense grid.
    """

    def __init__(self, fn: Callable, knots: torch.Tensor, *, name: str = "f"):
        self.fn = fn
        self.name = name
        self.knots = knots
        self.values = _evaluate(fn, knots, name)
        slopes = (self.values[1:] - self.values[:-1]) / (knots[1:] - knots[:-1])
        zero = slopes.new_zeros(1)
        self.coefficients = torch.cat([slopes, zero]) - torch.cat([zero, slopes])
        self.offset = float(self.values[0])
        self.interval = (float(knots[0]), float(knots[-1]))
        self.sup_error, self.predicted_error = self._errors()

    @property
    def width(self) -> int:
        return int(self.knots.numel())

    @property
    def _samples(self) -> int:
        return max(_SAMPLES_PER_PIECE, 8192 // (self.knots.numel() - 1))

    def interpolate(self, u: torch.Tensor) -> torch.Tensor:
        """``f̂(u)`` by table look-up (the same numbers as the ReLU sum, up to rounding)."""
        u = u.to(torch.float64)
        t = self.knots
        idx = torch.searchsorted(t, u.clamp(t[0], t[-1])).clamp(1, t.numel() - 1)
        t0, t1 = t[idx - 1], t[idx]
        f0, f1 = self.values[idx - 1], self.values[idx]
        frac = (u.clamp(t[0], t[-1]) - t0) / (t1 - t0)
        return f0 + frac * (f1 - f0)

    def _dense_grid(self) -> torch.Tensor:
        t = self.knots
        frac = torch.linspace(0.0, 1.0, self._samples + 2, dtype=torch.float64)[:-1]
        inside = t[:-1, None] + (t[1:] - t[:-1])[:, None] * frac  # (pieces, S + 1)
        return torch.cat([inside.flatten(), t[-1:]])

    def _errors(self) -> tuple[float, float]:
        grid = self._dense_grid()
        exact = _evaluate(self.fn, grid, self.name)
        sup = float((self.interpolate(grid) - exact).abs().max())
        # predicted: per piece, max |f''| (second differences on the piece's samples) · h²/8
        S = self._samples + 1
        pieces = self.knots.numel() - 1
        f = exact[:-1].view(pieces, S)
        f = torch.cat([f, torch.cat([f[1:, :1], exact[-1:].view(1, 1)])], dim=1)  # (pieces, S + 1)
        h = (self.knots[1:] - self.knots[:-1])[:, None] / S
        second = (f[:, 2:] - 2 * f[:, 1:-1] + f[:, :-2]) / h**2
        predicted = float((second.abs().amax(dim=1) * (h[:, 0] * S) ** 2 / 8).max())
        return sup, predicted

    def __call__(self, u: torch.Tensor) -> torch.Tensor:
        """``f̂(u)`` as the ReLU units compute it, in ``u``'s dtype."""
        c = self.coefficients.to(u.dtype).to(u.device)
        t = self.knots.to(u.dtype).to(u.device)
        return self.offset + torch.relu(u.unsqueeze(-1) - t) @ c

    def to_mlp(self, *, dtype=torch.float64, device=None) -> ReluMLP:
        """A ``ReluMLP(1, width)`` computing ``f̂`` (input and output: coordinate 0 of a width-1 stream)."""
        mlp = ReluMLP(1, self.width, device=device, dtype=dtype)
        with torch.no_grad():
            mlp.fc_in.weight.fill_(1.0)
            mlp.fc_in.bias.copy_(-self.knots)
            mlp.fc_out.weight.copy_(self.coefficients.view(1, -1))
            mlp.fc_out.bias.fill_(self.offset)
        mlp.requires_grad_(False)
        return mlp

    def __repr__(self) -> str:
        lo, hi = self.interval
        return (f"ReluApproximation({self.name} on [{lo:.4g}, {hi:.4g}], width={self.width}, "
                f"sup_error={self.sup_error:.3g})")


def _check_tol(tol):
    return None if tol is None else v.check_positive(tol, "tol")


def relu_approximation(fn: Callable, interval, width: int, *, knots="uniform", tol=None, name=None) -> ReluApproximation:
    """Approximate a scalar map on an interval by ``width`` ReLU units (piecewise-linear interpolation).

    Parameters
    ----------
    fn : callable
        A torch function of a float64 tensor, elementwise (e.g. ``torch.sigmoid``).
    interval : (float, float)
        ``(lo, hi)``, where the approximation must hold.
    width : int
        Number of ReLU units, ``>= 2`` (``width − 1`` pieces).
    knots : {"uniform", "curvature", "graded"} or array of shape (width,)
        Where the pieces meet; see the module docstring.
    tol : float, optional
        Required sup error. If ``width`` does not reach it, a ``ValueError`` names the
        smallest width that does.
    name : str, optional

    Returns
    -------
    ReluApproximation

    Examples
    --------
    >>> import torch
    >>> approx = relu_approximation(torch.sigmoid, (-4.0, 4.0), 65)
    >>> approx.sup_error < 0.0962 * (8 / 64) ** 2 / 8 * 1.01   # max|σ''| h²/8
    True
    >>> mlp = approx.to_mlp()
    >>> u = torch.linspace(-4, 4, 7, dtype=torch.float64).view(7, 1, 1)
    >>> float((mlp(u).flatten() - torch.sigmoid(u.flatten())).abs().max()) <= approx.sup_error
    True
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    lo, hi = _check_interval(interval)
    width = _check_width(width)
    tol = _check_tol(tol)
    name = name or getattr(fn, "__name__", "f")
    t = _make_knots(fn, lo, hi, width, knots)
    if t.numel() != width:
        raise ValueError(f"knots must hold width = {width} points, got {t.numel()}")
    if float(t[0]) != lo or float(t[-1]) != hi:
        raise ValueError(f"knots must start at lo = {lo:g} and end at hi = {hi:g}, got {float(t[0]):g} … {float(t[-1]):g}")
    approx = ReluApproximation(fn, t, name=name)
    if tol is not None and approx.sup_error > tol:
        if not isinstance(knots, str):
            raise ValueError(
                f"width={width} gives sup error {approx.sup_error:.3g} > tol={tol:g} for {name} on "
                f"[{lo:g}, {hi:g}] with the given knots; pass more knots"
            )
        best = smallest_width(fn, (lo, hi), tol, knots=knots)
        raise ValueError(
            f"width={width} is too small for tol={tol:g}: {name} on [{lo:g}, {hi:g}] with {knots} knots has "
            f"sup error {approx.sup_error:.3g}; the smallest width that reaches tol is {best}"
        )
    return approx


def smallest_width(fn: Callable, interval, tol: float, *, knots: str = "uniform", max_width: int = _MAX_WIDTH) -> int:
    """The smallest number of ReLU units whose interpolant of ``fn`` has sup error ``<= tol``.

    Doubling, then bisection (the sup error of interpolation falls as the width grows; the
    width returned is checked to reach ``tol``).

    Parameters
    ----------
    fn : callable
    interval : (float, float)
    tol : float
    knots : {"uniform", "curvature", "graded"}
    max_width : int

    Returns
    -------
    int
    """
    lo, hi = _check_interval(interval)
    tol = v.check_positive(tol, "tol")
    if not isinstance(knots, str) or knots not in KNOT_RULES:
        raise ValueError(f"knots must be one of {KNOT_RULES}, got {knots!r}")

    def error(w):
        return ReluApproximation(fn, _make_knots(fn, lo, hi, w, knots)).sup_error

    high = 2
    while error(high) > tol:
        if high >= max_width:
            raise ValueError(f"no width up to {max_width} reaches tol={tol:g} for this map")
        high = min(2 * high, max_width)
    low = max(2, high // 2)  # error(low) > tol unless low == high == 2
    if low == high:
        return high
    while high - low > 1:
        mid = (low + high) // 2
        if error(mid) <= tol:
            high = mid
        else:
            low = mid
    return high


def sup_error_against_width(fn: Callable, interval, widths: Sequence[int], *, knots="uniform") -> dict:
    """Measured sup error and the interpolation bound ``max|f''|·h²/8`` for each width.

    Parameters
    ----------
    fn : callable
    interval : (float, float)
    widths : sequence of int
    knots : {"uniform", "curvature", "graded"}

    Returns
    -------
    dict
        ``"width"``, ``"sup_error"``, ``"predicted"`` (lists, one entry per width). For
        uniform knots ``"predicted"`` is ``max|f''|·((hi − lo)/(width − 1))²/8`` with the
        maximum over the whole interval; for other knots the same bound piece by piece.
    """
    lo, hi = _check_interval(interval)
    rows = {"width": [], "sup_error": [], "predicted": []}
    curvature_max = None
    for w in widths:
        approx = relu_approximation(fn, (lo, hi), w, knots=knots)
        if knots == "uniform":
            if curvature_max is None:
                fine = relu_approximation(fn, (lo, hi), 4097, knots="uniform")
                curvature_max = fine.predicted_error * 8 / ((hi - lo) / 4096) ** 2
            predicted = curvature_max * ((hi - lo) / (w - 1)) ** 2 / 8
        else:
            predicted = approx.predicted_error
        rows["width"].append(int(w))
        rows["sup_error"].append(approx.sup_error)
        rows["predicted"].append(predicted)
    return rows


# --------------------------------------------------------------------------- products


class ReluProduct:
    r"""``a·b ≈ (q̂(a + b) − q̂(a − b))/4`` with ``q̂`` a ReLU square on ``[−(A + B), A + B]``.

    Build with :func:`relu_product`.

    Attributes
    ----------
    square : ReluApproximation
        The interpolant of ``t²`` on symmetric uniform knots.
    bounds : (float, float)
        ``(A, B)``: valid for ``|a| <= A``, ``|b| <= B``.
    width : int
        ``2 · square.width`` ReLU units.
    sup_error : float
        ``max |âb − ab|`` on a 129 × 129 grid of the box (at most ``square.sup_error/4``).
    """

    def __init__(self, square: ReluApproximation, bounds: tuple[float, float]):
        self.square = square
        self.bounds = bounds
        self.name = "product"
        A, B = bounds
        a = torch.linspace(-A, A, 129, dtype=torch.float64).view(-1, 1)
        b = torch.linspace(-B, B, 129, dtype=torch.float64).view(1, -1)
        approx = (square.interpolate(a + b) - square.interpolate(a - b)) / 4
        self.sup_error = float((approx - a * b).abs().max())

    @property
    def width(self) -> int:
        return 2 * self.square.width

    @property
    def interval(self) -> tuple[float, float]:
        return self.square.interval

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """The product as the ReLU units compute it."""
        return (self.square(a + b) - self.square(a - b)) / 4

    def __repr__(self) -> str:
        return f"ReluProduct(|a| <= {self.bounds[0]:g}, |b| <= {self.bounds[1]:g}, width={self.width}, sup_error={self.sup_error:.3g})"


def _square(u):
    return u * u


def relu_product(bound_a: float, bound_b: float, width: int, *, tol=None) -> ReluProduct:
    """A ReLU network for ``a·b`` on ``|a| <= bound_a``, ``|b| <= bound_b`` (two ReLU squares).

    Parameters
    ----------
    bound_a, bound_b : float
    width : int
        ReLU units per square (the product uses ``2·width``); an odd width puts a knot at 0.
    tol : float, optional
        Required sup error of the product; a ``ValueError`` names the smallest width that reaches it.

    Returns
    -------
    ReluProduct

    Examples
    --------
    >>> import torch
    >>> p = relu_product(1.0, 1.0, 33)
    >>> float(p(torch.tensor(0.5, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64)))
    0.0
    """
    A = v.check_positive(bound_a, "bound_a")
    B = v.check_positive(bound_b, "bound_b")
    width = _check_width(width, minimum=3)
    tol = _check_tol(tol)
    c = A + B
    product = ReluProduct(relu_approximation(_square, (-c, c), width, name="square"), (A, B))
    if tol is not None and product.sup_error > tol:
        # The product's error is the square's / 4 at most (and, in practice, about that).
        best = smallest_width(_square, (-c, c), 4 * tol)
        while ReluProduct(relu_approximation(_square, (-c, c), best), (A, B)).sup_error > tol:
            best += 1
        while best > 3 and ReluProduct(relu_approximation(_square, (-c, c), best - 1), (A, B)).sup_error <= tol:
            best -= 1
        raise ValueError(
            f"width={width} is too small for tol={tol:g}: the product on |a| <= {A:g}, |b| <= {B:g} has sup error "
            f"{product.sup_error:.3g}; the smallest width that reaches tol is {best} (units per square)"
        )
    return product


# --------------------------------------------------------------------------- the maps of damped Newton


def logit_radius(mu: float) -> float:
    """``R = √(2 ln 2/μ)``: a bound on ``|x_iᵀw|`` along damped Newton from 0 when ``‖x_i‖ <= 1``."""
    mu = v.check_positive(mu, "mu")
    return math.sqrt(2 * math.log(2) / mu)


def decrement_bound(mu: float) -> float:
    """``S = (1 + √(2μ ln 2))²/μ``: a bound on ``λ² = gᵀMg`` (``‖g‖ <= 1 + μ‖w‖``, ``‖M‖ <= 1/μ``)."""
    mu = v.check_positive(mu, "mu")
    return (1 + math.sqrt(2 * mu * math.log(2))) ** 2 / mu


def _sigmoid_derivative(z):
    s = torch.sigmoid(z)
    return s * (1 - s)


class _Damping:
    """``λ² ↦ 2√μ/(2√μ + √λ²)`` (λ² clamped at 0, as the algorithm does)."""

    def __init__(self, mu: float):
        self.mu = mu
        self.__name__ = "damping"

    def __call__(self, s):
        two_sqrt_mu = 2.0 * math.sqrt(self.mu)
        return two_sqrt_mu / (two_sqrt_mu + torch.sqrt(torch.clamp(s, min=0)))


def sigmoid_map(mu: float, width: int, *, knots="curvature", tol=None) -> ReluApproximation:
    """``σ`` on ``[−R, R]``, ``R = √(2 ln 2/μ)`` (:func:`logit_radius`).

    The loss derivative ``σ(z) − (1 + y)/2`` adds a term linear in the label.
    Curvature knots by default (the tails of σ are flat).
    """
    R = logit_radius(mu)
    return relu_approximation(torch.sigmoid, (-R, R), width, knots=knots, tol=tol, name="sigmoid")


def sigmoid_derivative_map(mu: float, width: int, *, knots="curvature", tol=None) -> ReluApproximation:
    """``σ' = σ(1 − σ)`` on ``[−R, R]``: the weight of ``x_i x_iᵀ`` in the Hessian."""
    R = logit_radius(mu)
    return relu_approximation(_sigmoid_derivative, (-R, R), width, knots=knots, tol=tol, name="sigmoid'")


def damping_map(mu: float, width: int, *, knots="graded", tol=None) -> ReluApproximation:
    """The damped step ``2√μ/(2√μ + √λ²)`` as a function of ``λ²`` on ``[0, S]`` (:func:`decrement_bound`).

    Not smooth at 0 (``≈ 1 − √λ²/(2√μ)``): graded knots ``t_k = S(k/m)⁴`` by default.
    """
    mu = v.check_positive(mu, "mu")
    return relu_approximation(_Damping(mu), (0.0, decrement_bound(mu)), width, knots=knots, tol=tol, name="damping")


# --------------------------------------------------------------------------- MLP blocks: ReLU or exact


def _as_weights(reads, D: int, name: str) -> torch.Tensor:
    """``{coordinate: coefficient}`` (or a (D,) vector) as a float64 vector of length D."""
    out = torch.zeros(D, dtype=torch.float64)
    if isinstance(reads, torch.Tensor):
        if reads.shape != (D,):
            raise ValueError(f"{name} must have shape ({D},), got {tuple(reads.shape)}")
        return reads.to(torch.float64).clone()
    for index, coefficient in dict(reads).items():
        if not isinstance(index, numbers.Integral) or not 0 <= index < D:
            raise ValueError(f"{name}: coordinate {index!r} is outside the stream's width {D}")
        out[int(index)] += float(coefficient)
    return out


@dataclass
class _MapTerm:
    approx: ReluApproximation
    reads: torch.Tensor
    gate: int
    writes: torch.Tensor


@dataclass
class _ProductTerm:
    approx: ReluProduct
    reads_a: torch.Tensor
    reads_b: torch.Tensor
    gate: int
    writes: torch.Tensor


@dataclass
class _LinearTerm:
    reads: torch.Tensor
    writes: torch.Tensor


class MLPWiring:
    """What one MLP block computes, slot by slot; compiles to a ReLU or an exact layer.

    Each term adds to the block's output (the residual stream adds the block's input):

    * :meth:`map` — ``writes · f(reads·h)`` at tokens whose ``gate`` coordinate is 1;
    * :meth:`product` — ``writes · (reads_a·h)(reads_b·h)``;
    * :meth:`linear` — ``writes · (reads·h)`` (a copy, or with −1 the clearing of a slot).

    Gates make the block exactly 0 at other tokens: a ReLU unit ``relu(u − t_k·gate)`` is
    ``relu(0) = 0`` where the read ``u`` and the gate are both 0, so constants ride on the
    gate coordinate (a token-kind flag) instead of a bias, and the layers have no biases.

    Parameters
    ----------
    d_model : int
        Width ``D`` of the stream.
    """

    def __init__(self, d_model: int):
        self.d_model = v.check_int(d_model, "d_model", minimum=1)
        self.terms: list = []

    def _gate(self, gate) -> int:
        gate = v.check_int(gate, "gate", minimum=0)
        if gate >= self.d_model:
            raise ValueError(f"gate must be a coordinate < {self.d_model}, got {gate}")
        return gate

    def map(self, approx: ReluApproximation, *, reads, gate: int, writes) -> "MLPWiring":
        """Add ``writes · f(reads·h)`` at tokens whose ``gate`` coordinate is 1 (0 elsewhere)."""
        D = self.d_model
        self.terms.append(_MapTerm(approx, _as_weights(reads, D, "reads"), self._gate(gate), _as_weights(writes, D, "writes")))
        return self

    def product(self, approx: ReluProduct, *, reads_a, reads_b, gate: int, writes) -> "MLPWiring":
        """Add ``writes · (reads_a·h)(reads_b·h)``."""
        D = self.d_model
        self.terms.append(_ProductTerm(approx, _as_weights(reads_a, D, "reads_a"), _as_weights(reads_b, D, "reads_b"),
                                       self._gate(gate), _as_weights(writes, D, "writes")))
        return self

    def linear(self, *, reads, writes) -> "MLPWiring":
        """Add ``writes · (reads·h)``, exact also in ReLU form (``u = relu(u) − relu(−u)``)."""
        D = self.d_model
        self.terms.append(_LinearTerm(_as_weights(reads, D, "reads"), _as_weights(writes, D, "writes")))
        return self

    @property
    def hidden(self) -> int:
        """ReLU units of the compiled :class:`~tfnewton.layers.ReluMLP`."""
        total = 0
        for term in self.terms:
            if isinstance(term, _MapTerm):
                total += term.approx.width + (term.approx.offset != 0.0)
            elif isinstance(term, _ProductTerm):
                total += term.approx.width
            else:
                total += 2
        return total

    def relu_mlp(self, *, dtype=torch.float64, device=None) -> ReluMLP:
        """The block with every map replaced by its ReLU units: a bias-free :class:`~tfnewton.layers.ReluMLP`."""
        D, hidden = self.d_model, max(self.hidden, 1)
        W_in = torch.zeros(hidden, D, dtype=torch.float64)
        W_out = torch.zeros(D, hidden, dtype=torch.float64)
        unit = 0

        def add_units(reads, gate, approx, writes, sign=1.0):
            nonlocal unit
            k = approx.width
            W_in[unit : unit + k] = sign * reads
            W_in[unit : unit + k, gate] -= approx.knots
            W_out[:, unit : unit + k] += writes[:, None] * approx.coefficients[None, :]
            unit += k

        for term in self.terms:
            if isinstance(term, _MapTerm):
                add_units(term.reads, term.gate, term.approx, term.writes)
                if term.approx.offset != 0.0:  # f(t₀)·relu(gate)
                    W_in[unit, term.gate] = 1.0
                    W_out[:, unit] = term.writes * term.approx.offset
                    unit += 1
            elif isinstance(term, _ProductTerm):
                sq = term.approx.square  # the two offsets cancel: no constant unit
                add_units(term.reads_a + term.reads_b, term.gate, sq, term.writes / 4)
                add_units(term.reads_a - term.reads_b, term.gate, sq, -term.writes / 4)
            else:
                W_in[unit], W_in[unit + 1] = term.reads, -term.reads
                W_out[:, unit], W_out[:, unit + 1] = term.writes, -term.writes
                unit += 2
        mlp = ReluMLP(D, hidden, bias=False, device=device, dtype=dtype)
        with torch.no_grad():
            mlp.fc_in.weight.copy_(W_in)
            mlp.fc_out.weight.copy_(W_out)
        mlp.requires_grad_(False)
        return mlp

    def exact_mlp(self, *, dtype=torch.float64, device=None) -> "ExactScalarMLP":
        """The same wiring with every map and product exact: an :class:`ExactScalarMLP`."""
        return ExactScalarMLP(self, dtype=dtype, device=device)

    def compile(self, *, exact: bool, dtype=torch.float64, device=None) -> nn.Module:
        """:meth:`exact_mlp` if ``exact`` else :meth:`relu_mlp`."""
        return self.exact_mlp(dtype=dtype, device=device) if exact else self.relu_mlp(dtype=dtype, device=device)


class ExactScalarMLP(nn.Module):
    """A token-wise layer computing the exact maps of an :class:`MLPWiring` (no ReLU approximation).

    Same reads, gates and writes as the wiring's :class:`~tfnewton.layers.ReluMLP`; each map
    ``f`` is evaluated exactly (times the gate, which is 0 or 1), each product exactly. It
    lets a construction's layer structure be checked against its algorithm to rounding,
    apart from the approximation error of the ReLU units.

    Parameters
    ----------
    wiring : MLPWiring
    dtype, device
        Of the stored read/write weights.

    Attributes
    ----------
    d_model : int
    maps : list of callable
        The exact scalar maps, one per map term.
    """

    def __init__(self, wiring: MLPWiring, *, dtype=torch.float64, device=None):
        super().__init__()
        self.d_model = wiring.d_model
        D = self.d_model
        kw = dict(dtype=dtype, device=device)
        maps = [t for t in wiring.terms if isinstance(t, _MapTerm)]
        products = [t for t in wiring.terms if isinstance(t, _ProductTerm)]
        linears = [t for t in wiring.terms if isinstance(t, _LinearTerm)]
        self.maps = [t.approx.fn for t in maps]
        self.map_names = [t.approx.name for t in maps]

        def stack(rows, shape):
            return torch.stack(rows).to(**kw) if rows else torch.zeros(shape, **kw)

        self.register_buffer("map_reads", stack([t.reads for t in maps], (0, D)))
        self.register_buffer("map_writes", stack([t.writes for t in maps], (0, D)).T.contiguous())
        self.register_buffer("map_gates", torch.tensor([t.gate for t in maps], dtype=torch.long, device=device))
        self.register_buffer("product_a", stack([t.reads_a for t in products], (0, D)))
        self.register_buffer("product_b", stack([t.reads_b for t in products], (0, D)))
        self.register_buffer("product_writes", stack([t.writes for t in products], (0, D)).T.contiguous())
        linear = torch.zeros(D, D, dtype=torch.float64)
        for t in linears:
            linear += torch.outer(t.writes, t.reads)
        self.register_buffer("linear", linear.to(**kw))

    def forward(self, H: torch.Tensor) -> torch.Tensor:
        """Parameters: H of shape (B, T, D). Returns: (B, T, D), without the residual."""
        if not isinstance(H, torch.Tensor) or H.ndim != 3 or H.shape[-1] != self.d_model:
            raise ValueError(f"H must have shape (B, T, {self.d_model}), got {tuple(getattr(H, 'shape', ()))}")
        out = H @ self.linear.T
        if self.maps:
            u = H @ self.map_reads.T  # (B, T, maps)
            gates = H[..., self.map_gates]  # (B, T, maps)
            values = torch.stack([f(u[..., i]) for i, f in enumerate(self.maps)], dim=-1) * gates
            out = out + values @ self.map_writes.T
        if self.product_a.shape[0]:
            out = out + ((H @ self.product_a.T) * (H @ self.product_b.T)) @ self.product_writes.T
        return out

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, maps={self.map_names}, products={self.product_a.shape[0]}"
