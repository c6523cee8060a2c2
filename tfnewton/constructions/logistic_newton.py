r"""Damped Newton for in-context logistic regression: linear attention and ReLU layers (Giannou et al. 2024).

The algorithm (:func:`tfnewton.algorithms.damped_newton_logistic` with ``inner_steps=k``)
------------------------------------------------------------------------------------------
``f(w) = (1/n) Σ log(1 + exp(−y_i x_iᵀw)) + (μ/2)‖w‖²`` with ``‖x_i‖ ≤ 1``, from ``w₀ = 0``::

    z_i = x_iᵀw,  c_i = σ(z_i) − (1 + y_i)/2,  h_i = σ'(z_i)
    g = (1/n) Σ c_i x_i + μw,   H = (1/n) Σ h_i x_i x_iᵀ + μI
    M₀ = αH,  M ← 2M − MHM  (k times),  α = 1/(1/4 + μ)²
    v = Mg,  λ² = gᵀv,  η = 2√μ/(2√μ + √λ²),  w ← w − ηv

(``c_i`` is the loss derivative ``−y_i σ(−y_i z_i)`` written linearly in the label.)

The token layout
----------------
``T = n + 1 + d`` tokens: the ``n`` context points, the query, ``d`` matrix tokens that
hold the columns of ``H`` and ``M``. Width ``D = 8d + 12 + d(d+1)/2``::

    slot    size        context i      query          matrix token j
    "x"     d           x_i
    "y"     1           y_i
    "ctx"   1           1
    "P"     d(d+1)/2    x_i x_iᵀ (upper triangle; computed by the first MLP)
    "z"     1           x_iᵀw          x_qᵀw
    "c"     1           σ(z_i) − (1+y_i)/2
    "h"     1           σ'(z_i)
    "xq"    d                          x_q
    "qflag" 1                          1
    "inv_n" 1                          1/n
    "w"     d                          w_t
    "gq"    d                          g
    "lam2"  1                          λ²
    "eta"   1                          η
    "p"     1                          σ(x_qᵀw_t)
    "E"     d                                         e_j
    "En"    d                                         e_j/n
    "g"     1                                         g_j
    "H"     d                                         H[:, j]
    "M"     d                                         M[:, j]
    "v"     1                                         (Mg)_j

The vector ``w`` lives at the query; ``g`` both at the query (a vector) and in the matrix
tokens (one coordinate each), so that one attention layer forms ``v = Mg`` and
``λ² = gᵀMg`` together. The ``1/n`` of the averages comes from the embedding (``"inv_n"``,
``"En"``), never from the weights, so one model serves every ``n``.

The blocks of Newton step t (``6 + k`` of them; a head is ``out_t = Σ_s v_s ⟨k_s, q_t⟩``)
-----------------------------------------------------------------------------------------
1. **attention, logits**: ``q = "x" + "xq"``, ``k = "w"``, ``v = "qflag"``: every context
   token gets ``x_iᵀw`` and the query ``x_qᵀw`` in ``"z"`` (only the query has a key).
2. **MLP, scalar maps**: ``c_i = σ̂(z_i) − (1 + y_i)/2`` and ``h_i = σ̂'(z_i)`` at context
   tokens, ``p = σ̂(z)`` at the query; clears ``"z"`` and the old ``c, h, p``. In step 0 it
   also forms ``P = x_i x_iᵀ`` with ReLU squares (``x_a² `` one square,
   ``x_a x_b = ((x_a + x_b)² − (x_a − x_b)²)/4`` two; valid as ``|x_a ± x_b| ≤ √2``): the
   Hessian is cubic in a context token's numbers, attention bilinear, so the product
   ``x_i x_iᵀ`` must sit in the token before an attention layer can weigh it by ``h_i``.
3. **attention, gradient and Hessian** (``5 + d`` heads): ``g_j = ⟨e_j/n, Σ_i c_i x_i⟩``
   and ``μw_j`` into the matrix tokens; ``(1/n)Σ_i c_i x_i`` and ``μw`` into the query's
   ``"gq"``; head ``5 + j``: ``q = (e_t/n)_j``, ``k = h_i``, ``v = P_i[:, j]`` puts
   ``(1/n)Σ_i h_i x_i x_i[j]`` into ``H[:, j]`` and ``α`` times it into ``M[:, j]``; a head
   with ``q = k = "E"`` (each matrix token sees only itself) replaces the old ``g, H, M``
   by ``0, μe_j, αμe_j``. So ``H`` is complete and ``M₀ = αH``.
4. **k attention layers, Newton–Schulz** — the block of
   :mod:`~tfnewton.constructions.newton_schulz`: ``−MHM`` and ``+M`` into ``"M"``.
5. **attention, direction and decrement**: ``q = "M"``, ``k = "gq"`` gives ``v_j = ⟨M[:, j], g⟩``
   in the matrix tokens; ``q = "gq"``, ``k = "M"``, ``v = "g"`` gives ``Σ_j g_j ⟨M[:, j], g⟩ =
   gᵀMg`` at the query; two self-heads clear the old values.
6. **MLP, damping**: ``η = φ̂(λ²)`` at the query, ``φ(s) = 2√μ/(2√μ + √s)``.
7. **attention, update**: ``q = "eta"`` (query), ``k = "v"``, ``v = −"E"`` (matrix tokens):
   the query gets ``−Σ_j e_j v_j η = −ηv`` into ``"w"``. The product ``η·v`` of two numbers
   the network computed is bilinear across two tokens, so attention forms it exactly.

The read-out is blocks 1–2 once more: ``p = σ̂(x_qᵀw_T)`` at the query. Depth
**T(6 + k) + 2** — Giannou et al. bound it by ``T(11 + 2k)``. Every scratch slot is
replaced (old value subtracted in the same layer), never accumulated, so nothing drifts
from step to step.

Where things are: ``block_of_step(t) = t(6 + k) + 1``; after that block the query holds
``w_t`` (``"w"``) and ``σ(x_qᵀw_t)`` (``"p"``); :meth:`~LogisticNewtonTransformer.decrements`
reads each step's ``λ²``.

The scalar maps (``σ̂``, ``σ̂'``, ``φ̂``, squares) come from :mod:`tfnewton.approx`; with
``exact_scalars=True`` every MLP block is an :class:`~tfnewton.approx.ExactScalarMLP` with
the same wiring, and the model equals the algorithm to rounding. Their intervals follow from
``‖x_i‖ ≤ 1``: ``|z| ≤ R = √(2 ln 2/μ)`` and ``λ² ≤ (1 + √(2μ ln 2))²/μ``
(:func:`tfnewton.approx.logit_radius`, :func:`tfnewton.approx.decrement_bound`). Inputs
outside the unit ball are refused with a message that says how to rescale (divide the
inputs by ``r = max‖x_i‖`` and ``μ`` by ``r²``; the weights become ``r·w``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .. import _validate as v
from .. import approx as ap
from ..algorithms import damped_newton_logistic, logistic_inner_alpha
from ..layers import Residual
from ._base import RegressionConstruction, TokenLayout, attention_block, check_build, check_regression_query, read_slot, write_slot

__all__ = [
    "LogisticNewtonTransformer",
    "logistic_newton_transformer",
    "default_inner_steps",
    "DEFAULT_WIDTH",
    "LogisticConstructionError",
    "logistic_construction_error",
    "paper_width_bound",
    "steps_needed",
    "logistic_error_table",
    "smallest_width_for_median",
    "error_against_step",
    "undamped_newton_failures",
]

#: ReLU units per scalar map by default (per square in a product).
DEFAULT_WIDTH = 128


def _square(u):  # a module-level function, so a construction pickles
    return u * u


def default_inner_steps(mu: float) -> int:
    """``k = ⌈log₂(2κ_f²)⌉``, ``κ_f = (1/4 + μ)/μ``: Newton–Schulz's worst-case residual ``≤ e⁻²``.

    From ``M₀ = αH`` the residual is ``(1 − αλ²)^(2^k) ≤ (1 − 1/κ_f²)^(2^k)``; ``2^k ≥ 2κ_f²``
    makes it at most ``e⁻²`` for every problem with ``‖x_i‖ ≤ 1``: 5 at ``μ = 0.1``, 11 at
    ``μ = 0.01``.
    """
    mu = v.check_positive(mu, "mu")
    kappa = (0.25 + mu) / mu
    return max(1, math.ceil(math.log2(2 * kappa**2) - 1e-12))


def _pairs(d: int) -> list[tuple[int, int]]:
    return [(a, b) for a in range(d) for b in range(a, d)]


class LogisticNewtonTransformer(RegressionConstruction):
    """Damped Newton on the in-context logistic loss; build with :func:`logistic_newton_transformer`.

    Attributes
    ----------
    d, steps, inner_steps, width : int
    mu, alpha : float
        ``α = 1/(1/4 + μ)²``, the Newton–Schulz start ``M₀ = αH``.
    exact_scalars : bool
    layout : TokenLayout
    scalar_maps : dict
        ``name -> ReluApproximation / ReluProduct`` used by the MLP blocks, each with its
        ``sup_error`` and ``interval``.
    blocks : nn.ModuleList
        ``steps·(6 + inner_steps) + 2`` residual blocks (see the module docstring).
    """

    SLOT_CONTENTS = {
        "context i": {"x": "x_i", "y": "y_i", "ctx": "1", "P": "x_i x_iᵀ", "z": "x_iᵀw", "c": "c_i", "h": "h_i"},
        "query": {"z": "x_qᵀw", "xq": "x_q", "qflag": "1", "inv_n": "1/n", "w": "w_t", "gq": "g", "lam2": "λ²",
                  "eta": "η", "p": "σ(x_qᵀw)"},
        "matrix token j": {"E": "e_j", "En": "e_j/n", "g": "g_j", "H": "H[:, j]", "M": "M[:, j]", "v": "(Mg)_j"},
    }
    BLOCK_NAMES = ("logits", "scalar maps", "gradient, Hessian", "Newton–Schulz", "direction, decrement",
                   "damping", "update")

    def __init__(self, d: int, steps: int, mu: float, *, inner_steps=None, width: int = DEFAULT_WIDTH,
                 product_width=None, exact_scalars: bool = False, tol=None, dtype=torch.float64, device=None):
        d, steps, dtype, device = check_build(d, steps, dtype, device)
        mu = v.check_positive(mu, "mu")
        inner_steps = default_inner_steps(mu) if inner_steps is None else v.check_int(inner_steps, "inner_steps", minimum=0)
        width = v.check_int(width, "width", minimum=3)
        product_width = width if product_width is None else v.check_int(product_width, "product_width", minimum=3)
        if not isinstance(exact_scalars, bool):
            raise TypeError(f"exact_scalars must be a bool, got {type(exact_scalars).__name__}")
        super().__init__()
        self.d, self.steps, self.mu, self.inner_steps = d, steps, mu, inner_steps
        self.width_per_map, self.product_width = width, product_width
        self.exact_scalars = exact_scalars
        self.alpha = logistic_inner_alpha(mu)
        self.scalar_maps = self._scalar_maps(mu, width, product_width, tol)
        self.layout = TokenLayout(
            x=d, y=1, ctx=1, P=d * (d + 1) // 2, z=1, c=1, h=1,
            xq=d, qflag=1, inv_n=1, w=d, gq=d, lam2=1, eta=1, p=1,
            E=d, En=d, g=1, H=d, M=d, v=1,
        )
        kw = dict(dtype=dtype, device=device)
        for t in range(steps):
            self.blocks.append(self._logit_block(**kw))
            self.blocks.append(self._scalar_block(first=(t == 0), **kw))
            self.blocks.append(self._gradient_hessian_block(**kw))
            self.blocks.extend(self._newton_schulz_block(**kw) for _ in range(inner_steps))
            self.blocks.append(self._direction_block(**kw))
            self.blocks.append(self._damping_block(**kw))
            self.blocks.append(self._update_block(**kw))
        self.blocks.append(self._logit_block(**kw))
        self.blocks.append(self._scalar_block(first=(steps == 0), **kw))

    # ------------------------------------------------------------------ scalar maps

    @staticmethod
    def _scalar_maps(mu: float, width: int, product_width: int, tol) -> dict:
        maps = {
            "sigmoid": ap.sigmoid_map(mu, width),
            "sigmoid'": ap.sigmoid_derivative_map(mu, width),
            "damping": ap.damping_map(mu, width),
            "square": ap.relu_approximation(_square, (-1.0, 1.0), product_width, name="square"),
            "product": ap.relu_product(1 / math.sqrt(2), 1 / math.sqrt(2), product_width),
        }
        if tol is not None:
            tol = v.check_positive(tol, "tol")
            R, S = ap.logit_radius(mu), ap.decrement_bound(mu)
            problems = []
            main = {k: maps[k] for k in ("sigmoid", "sigmoid'", "damping")}
            name, worst = max(main.items(), key=lambda item: item[1].sup_error)
            if worst.sup_error > tol:
                needed = max(
                    ap.smallest_width(torch.sigmoid, (-R, R), tol, knots="curvature"),
                    ap.smallest_width(maps["sigmoid'"].fn, (-R, R), tol, knots="curvature"),
                    ap.smallest_width(maps["damping"].fn, (0.0, S), tol, knots="graded"),
                )
                problems.append(f"width={width} gives the {name} map a sup error of {worst.sup_error:.3g} on "
                                f"[{worst.interval[0]:.4g}, {worst.interval[1]:.4g}]; the smallest width that "
                                f"reaches tol is {needed}")
            products = {k: maps[k] for k in ("square", "product")}
            name, worst = max(products.items(), key=lambda item: item[1].sup_error)
            if worst.sup_error > tol:
                needed = max(
                    ap.smallest_width(maps["square"].fn, (-1.0, 1.0), tol),
                    ap.smallest_width(maps["square"].fn, (-math.sqrt(2), math.sqrt(2)), 4 * tol),
                )
                problems.append(f"product_width={product_width} gives the {name} a sup error of "
                                f"{worst.sup_error:.3g}; the smallest product_width that reaches tol is {needed}")
            if problems:
                raise ValueError(f"too few ReLU units for tol={tol:g}: " + "; ".join(problems))
        return maps

    # ------------------------------------------------------------------ blocks

    def _coordinate(self, slot: str, i: int = 0) -> int:
        return self.layout[slot].start + i

    def _sub(self, slot: str, i: int) -> slice:
        start = self._coordinate(slot, i)
        return slice(start, start + 1)

    def _logit_block(self, **kw):
        L = self.layout
        block = attention_block(L.width, n_heads=1, head_dim=self.d, value_dim=1, **kw)
        a = block.layer
        with torch.no_grad():
            read_slot(a.W_Q, 0, L["x"])
            read_slot(a.W_Q, 0, L["xq"])
            read_slot(a.W_K, 0, L["w"])
            read_slot(a.W_V, 0, L["qflag"])
            write_slot(a.W_O, 0, L["z"])
        return block

    def _scalar_block(self, first: bool, **kw):
        c = self._coordinate
        m = self.scalar_maps
        wiring = ap.MLPWiring(self.layout.width)
        wiring.map(m["sigmoid"], reads={c("z"): 1.0}, gate=c("ctx"), writes={c("c"): 1.0})
        wiring.linear(reads={c("ctx"): -0.5, c("y"): -0.5}, writes={c("c"): 1.0})  # − (1 + y_i)/2
        wiring.map(m["sigmoid'"], reads={c("z"): 1.0}, gate=c("ctx"), writes={c("h"): 1.0})
        wiring.map(m["sigmoid"], reads={c("z"): 1.0}, gate=c("qflag"), writes={c("p"): 1.0})
        for slot in ("z", "c", "h", "p"):
            wiring.linear(reads={c(slot): 1.0}, writes={c(slot): -1.0})
        if first:
            for index, (a, b) in enumerate(_pairs(self.d)):
                out = {c("P", index): 1.0}
                if a == b:
                    wiring.map(m["square"], reads={c("x", a): 1.0}, gate=c("ctx"), writes=out)
                else:
                    wiring.product(m["product"], reads_a={c("x", a): 1.0}, reads_b={c("x", b): 1.0}, gate=c("ctx"),
                                   writes=out)
        return self._mlp_block(wiring, **kw)

    def _damping_block(self, **kw):
        c = self._coordinate
        wiring = ap.MLPWiring(self.layout.width)
        wiring.map(self.scalar_maps["damping"], reads={c("lam2"): 1.0}, gate=c("qflag"), writes={c("eta"): 1.0})
        wiring.linear(reads={c("eta"): 1.0}, writes={c("eta"): -1.0})
        return self._mlp_block(wiring, **kw)

    def _mlp_block(self, wiring: ap.MLPWiring, *, dtype, device):
        return Residual(wiring.compile(exact=self.exact_scalars, dtype=dtype, device=device))

    def _gradient_hessian_block(self, **kw):
        L, d, mu, alpha = self.layout, self.d, self.mu, self.alpha
        block = attention_block(L.width, n_heads=5 + d, head_dim=d, value_dim=2 * d + 1, **kw)
        a = block.layer
        pairs = {pair: i for i, pair in enumerate(_pairs(d))}
        idx = torch.arange(d)
        with torch.no_grad():
            # head 0: g_j += ⟨e_j/n, Σ_i c_i x_i⟩ at matrix tokens
            read_slot(a.W_Q, 0, L["En"])
            read_slot(a.W_K, 0, L["x"])
            read_slot(a.W_V, 0, L["c"])
            write_slot(a.W_O, 0, L["g"])
            # head 1: g_j += μ w_j (w from the query)
            read_slot(a.W_Q, 1, L["E"])
            read_slot(a.W_K, 1, L["w"])
            read_slot(a.W_V, 1, L["qflag"], mu)
            write_slot(a.W_O, 1, L["g"])
            # head 2: the query's g = (1/n) Σ_i c_i x_i …
            read_slot(a.W_Q, 2, L["inv_n"])
            read_slot(a.W_K, 2, L["c"])
            read_slot(a.W_V, 2, L["x"])
            write_slot(a.W_O, 2, L["gq"])
            # head 3: … + μw − (old g), the query attending to itself
            read_slot(a.W_Q, 3, L["qflag"])
            read_slot(a.W_K, 3, L["qflag"])
            read_slot(a.W_V, 3, L["w"], mu)
            read_slot(a.W_V, 3, L["gq"], -1.0)
            write_slot(a.W_O, 3, L["gq"])
            # head 4: each matrix token to itself: g ← 0, H ← μe_j, M ← αμe_j (old values removed)
            read_slot(a.W_Q, 4, L["E"])
            read_slot(a.W_K, 4, L["E"])
            read_slot(a.W_V, 4, L["g"], -1.0)
            read_slot(a.W_V, 4, L["H"], -1.0, offset=1)
            read_slot(a.W_V, 4, L["E"], mu, offset=1)
            read_slot(a.W_V, 4, L["M"], -1.0, offset=1 + d)
            read_slot(a.W_V, 4, L["E"], alpha * mu, offset=1 + d)
            write_slot(a.W_O, 4, L["g"])
            write_slot(a.W_O, 4, L["H"], offset=1)
            write_slot(a.W_O, 4, L["M"], offset=1 + d)
            # heads 5 + j: H[:, j] += (1/n) Σ_i h_i x_i x_i[j] (and α times it into M[:, j])
            for j in range(d):
                h = 5 + j
                read_slot(a.W_Q, h, self._sub("En", j))
                read_slot(a.W_K, h, L["h"])
                cols = torch.tensor([pairs[(min(r, j), max(r, j))] for r in range(d)])
                a.W_V[h, idx, L["P"].start + cols] = 1.0
                write_slot(a.W_O, h, L["H"])
                write_slot(a.W_O, h, L["M"], alpha)
        return block

    def _newton_schulz_block(self, **kw):
        L = self.layout
        block = attention_block(L.width, n_heads=2, head_dim=self.d, value_dim=self.d, **kw)
        a = block.layer
        with torch.no_grad():
            read_slot(a.W_Q, 0, L["M"])  # −M H M
            read_slot(a.W_K, 0, L["H"])
            read_slot(a.W_V, 0, L["M"])
            write_slot(a.W_O, 0, L["M"], -1.0)
            read_slot(a.W_Q, 1, L["E"])  # +M
            read_slot(a.W_K, 1, L["E"])
            read_slot(a.W_V, 1, L["M"])
            write_slot(a.W_O, 1, L["M"], +1.0)
        return block

    def _direction_block(self, **kw):
        L = self.layout
        block = attention_block(L.width, n_heads=4, head_dim=self.d, value_dim=1, **kw)
        a = block.layer
        with torch.no_grad():
            read_slot(a.W_Q, 0, L["M"])  # v_j = ⟨M[:, j], g⟩
            read_slot(a.W_K, 0, L["gq"])
            read_slot(a.W_V, 0, L["qflag"])
            write_slot(a.W_O, 0, L["v"])
            read_slot(a.W_Q, 1, L["gq"])  # λ² = Σ_j g_j ⟨M[:, j], g⟩
            read_slot(a.W_K, 1, L["M"])
            read_slot(a.W_V, 1, L["g"])
            write_slot(a.W_O, 1, L["lam2"])
            read_slot(a.W_Q, 2, L["E"])  # old v removed
            read_slot(a.W_K, 2, L["E"])
            read_slot(a.W_V, 2, L["v"], -1.0)
            write_slot(a.W_O, 2, L["v"])
            read_slot(a.W_Q, 3, L["qflag"])  # old λ² removed
            read_slot(a.W_K, 3, L["qflag"])
            read_slot(a.W_V, 3, L["lam2"], -1.0)
            write_slot(a.W_O, 3, L["lam2"])
        return block

    def _update_block(self, **kw):
        L = self.layout
        block = attention_block(L.width, n_heads=1, head_dim=1, value_dim=self.d, **kw)
        a = block.layer
        with torch.no_grad():
            read_slot(a.W_Q, 0, L["eta"])  # w −= η Σ_j e_j v_j
            read_slot(a.W_K, 0, L["v"])
            read_slot(a.W_V, 0, L["E"], -1.0)
            write_slot(a.W_O, 0, L["w"])
        return block

    # ------------------------------------------------------------------ sizes

    @property
    def layers_per_step(self) -> int:
        """``6 + inner_steps``."""
        return 6 + self.inner_steps

    @property
    def mlp_hidden(self) -> list[int]:
        """ReLU units (or exact maps' equivalent) of every MLP block, in order."""
        out = []
        for block in self.blocks:
            layer = block.layer
            if hasattr(layer, "fc_in"):
                out.append(layer.fc_in.out_features)
            elif isinstance(layer, ap.ExactScalarMLP):
                out.append(0)
        return out

    # ------------------------------------------------------------------ hook protocol

    def _check(self, X, y, x_query, need_query=True):
        x_query = check_regression_query(X, y, x_query, self.d, need_query=need_query)
        v.check_labels_pm1(y)
        v.check_unit_ball(X, "X")
        v.check_unit_ball(x_query, "x_query", mu_name=None)
        self._check_like_model({"X": X})
        return x_query

    def embed(self, X: torch.Tensor, y: torch.Tensor, x_query: torch.Tensor | None = None) -> torch.Tensor:
        """The initial stream: context tokens, the query, ``d`` matrix tokens (``w₀ = 0``).

        Parameters
        ----------
        X : Tensor of shape (B, n, d)
            Rows of norm at most 1.
        y : Tensor of shape (B, n)
            Labels −1 or +1.
        x_query : Tensor of shape (B, d), optional
            Norm at most 1; zeros when omitted.

        Returns
        -------
        Tensor of shape (B, n + 1 + d, D)
        """
        x_query = self._check(X, y, x_query, need_query=False)
        L, d = self.layout, self.d
        B, n, _ = X.shape
        H = X.new_zeros((B, n + 1 + d, L.width))
        H[:, :n, L["x"]] = X
        H[:, :n, L["y"]] = y.unsqueeze(-1)
        H[:, :n, L["ctx"]] = 1.0
        H[:, n, L["xq"]] = x_query
        H[:, n, L["qflag"]] = 1.0
        H[:, n, L["inv_n"]] = 1.0 / n
        eye = torch.eye(d, dtype=X.dtype, device=X.device)
        H[:, n + 1 :, L["E"]] = eye
        H[:, n + 1 :, L["En"]] = eye / n
        return H

    def readout(self, H: torch.Tensor) -> torch.Tensor:
        """The probability ``σ(x_qᵀw)``: slot ``"p"`` of the query token, shape (B,) (or (…, B))."""
        n = H.shape[-2] - self.d - 1
        return H[..., n, self.layout["p"].start]

    def forward(self, X: torch.Tensor, y: torch.Tensor, x_query: torch.Tensor) -> torch.Tensor:
        """``σ(x_qᵀ w_steps)``: the probability that the query's label is +1.

        Parameters
        ----------
        X : Tensor of shape (B, n, d)
        y : Tensor of shape (B, n), labels ±1
        x_query : Tensor of shape (B, d)

        Returns
        -------
        Tensor of shape (B,)
        """
        return super().forward(X, y, x_query)

    def _query_trace(self, X, y, x_query, slot: str, blocks: list[int]) -> torch.Tensor:
        n, s = X.shape[1], self.layout[slot]
        trace = self.trace(self.embed(X, y, x_query), lambda H: H[:, n, s])  # (L + 1, B, size)
        return trace[[b + 1 for b in blocks]]

    def iterates(self, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Every ``w_t``, read from the query token after ``block_of_step(t)``: shape (steps + 1, B, d)."""
        return self._query_trace(X, y, None, "w", [self.block_of_step(t) for t in range(self.steps + 1)])

    def predictions(self, X: torch.Tensor, y: torch.Tensor, x_query: torch.Tensor) -> torch.Tensor:
        """Every ``σ(x_qᵀw_t)``: shape (steps + 1, B)."""
        self._check(X, y, x_query)
        return self._query_trace(X, y, x_query, "p", [self.block_of_step(t) for t in range(self.steps + 1)])[..., 0]

    def decrements(self, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The ``λ² = gᵀMg`` the network forms at each step (after the direction block): shape (steps, B)."""
        blocks = [t * self.layers_per_step + 3 + self.inner_steps for t in range(self.steps)]
        if not blocks:
            return X.new_zeros((0, X.shape[0]))
        return self._query_trace(X, y, None, "lam2", blocks)[..., 0]

    def block_of_step(self, k: int) -> int:
        """Block after which the query holds ``w_k`` and ``σ(x_qᵀw_k)``: ``k(6 + inner_steps) + 1``."""
        return self._check_step(k) * self.layers_per_step + 1


def logistic_newton_transformer(d: int, steps: int, mu: float, *, inner_steps=None, width: int = DEFAULT_WIDTH,
                                product_width=None, exact_scalars: bool = False, tol=None, dtype=torch.float64,
                                device=None) -> LogisticNewtonTransformer:
    r"""A Transformer of linear attention and ReLU MLP layers that runs damped Newton on the logistic loss.

    Parameters
    ----------
    d : int
        Input dimension.
    steps : int
        Damped Newton steps ``T``; the model has ``T(6 + inner_steps) + 2`` blocks.
    mu : float
        Regularization ``> 0`` (in the weights).
    inner_steps : int, optional
        Newton–Schulz steps ``k`` per Newton step; default :func:`~tfnewton.constructions.logistic_newton.default_inner_steps` (5 at
        ``μ = 0.1``, 11 at ``μ = 0.01``).
    width : int
        ReLU units per scalar map: σ, σ' and the damping factor. An MLP block of a Newton
        step has ``3·width + 13`` units (the damping block ``width + 3``).
    product_width : int, optional
        ReLU units per square in the products ``x_a x_b`` of the first MLP (default ``width``),
        which then has ``d²·product_width + d`` more units. These products only enter
        the Hessian, whose error slows Newton down but does not move its fixed point
        (``g = 0``), so they can be far coarser than σ (measured, d = 5: 17 units per
        square give the same errors as 65, and 5 units nearly so, at widths 32 to 512).
    exact_scalars : bool
        Replace every ReLU approximation, products included, by the exact map (same layers
        and wiring): the model then equals
        ``damped_newton_logistic(X, y, mu, steps, inner_steps=k)`` to rounding.
    tol : float, optional
        Required sup error of every scalar map; a ``ValueError`` names the smallest width
        that reaches it.
    dtype : torch.dtype
        Of the weights and of the inputs (float64 by default).
    device : str or torch.device, optional

    Returns
    -------
    LogisticNewtonTransformer
        ``forward(X, y, x_query) → (B,)`` probabilities ``σ(x_qᵀw_T)``;
        ``.iterates(X, y) → (steps + 1, B, d)``. Inputs need ``‖x_i‖ ≤ 1``.

    Examples
    --------
    >>> import torch
    >>> from tfnewton.tasks import sample_logistic_regression
    >>> from tfnewton.algorithms import damped_newton_logistic
    >>> task = sample_logistic_regression(4, 32, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> X, y, x_q, _ = task.context_and_query()
    >>> model = logistic_newton_transformer(3, steps=4, mu=0.1, inner_steps=5, exact_scalars=True)
    >>> w = damped_newton_logistic(X, y, 0.1, 4, inner_steps=5)
    >>> torch.allclose(model.iterates(X, y), w, atol=1e-12)
    True
    >>> len(model.blocks)   # 4 · (6 + 5) + 2
    46
    """
    return LogisticNewtonTransformer(d, steps, mu, inner_steps=inner_steps, width=width, product_width=product_width,
                                     exact_scalars=exact_scalars, tol=tol, dtype=dtype, device=device)


# --------------------------------------------------------------------------- measured, not only bounded


def paper_width_bound(d: int, mu: float, eps: float) -> float:
    """Giannou et al.'s width ``O(d(1 + μ)⁶/(ε⁴μ⁸))`` evaluated with constant 1."""
    d = v.check_int(d, "d", minimum=1)
    mu = v.check_positive(mu, "mu")
    eps = v.check_positive(eps, "eps")
    return d * (1 + mu) ** 6 / (eps**4 * mu**8)


@dataclass
class LogisticConstructionError:
    """Distance of a construction's iterates to the exact minimizer, per step and prompt.

    Attributes
    ----------
    relative : Tensor of shape (steps + 1, B)
        ``‖w_t − w*‖/‖w*‖`` of the construction's ``w_t``.
    algorithm : Tensor of shape (steps + 1, B)
        The same for ``damped_newton_logistic(..., inner_steps=k)`` (what the model emulates).
    scaled_decrement : Tensor of shape (steps + 1, B)
        ``M_f λ(w_t) = λ(w_t)/(2√μ)`` of the construction's iterates (exact λ).
    median, worst : float
        Of ``relative[-1]``.
    """

    relative: torch.Tensor
    algorithm: torch.Tensor
    scaled_decrement: torch.Tensor
    median: float
    worst: float


def logistic_construction_error(d: int, mu: float, steps: int, *, n: int = 64, batch: int = 64, inner_steps=None,
                                width: int = DEFAULT_WIDTH, product_width=None, exact_scalars: bool = False,
                                seed: int = 0, dtype=torch.float64, model=None) -> LogisticConstructionError:
    """Build the construction, run it on fresh prompts, and measure its distance to the exact minimizer.

    Prompts: :func:`tfnewton.tasks.sample_logistic_regression` (``‖x_i‖ ≤ 1`` already),
    drawn in float64 with ``torch.Generator().manual_seed(seed)`` and cast to ``dtype``. The
    minimizer: 60 exact damped Newton steps in float64 (quadratic convergence: gradient
    norm ≈ 1e-16).

    Parameters
    ----------
    d, mu, steps : as in :func:`logistic_newton_transformer`
    n, batch : int
        Context length and number of prompts.
    inner_steps, width, product_width, exact_scalars : as in :func:`logistic_newton_transformer`
    seed : int
    dtype : torch.dtype
        Of the model and its inputs.
    model : LogisticNewtonTransformer, optional
        Use this model (built for ``d, mu, steps``) instead of building one.

    Returns
    -------
    LogisticConstructionError
    """
    from ..algorithms import newton_decrement_logistic
    from ..tasks import sample_logistic_regression

    if model is None:
        model = logistic_newton_transformer(d, steps, mu, inner_steps=inner_steps, width=width,
                                            product_width=product_width, exact_scalars=exact_scalars, dtype=dtype)
    task = sample_logistic_regression(batch, n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    X, y = task.X, task.y
    w_star = damped_newton_logistic(X, y, mu, 60)[-1]
    with torch.no_grad():
        w_model = model.iterates(X.to(dtype), y.to(dtype)).to(torch.float64)
    w_alg = damped_newton_logistic(X, y, mu, steps, inner_steps=model.inner_steps)
    scale = w_star.norm(dim=-1)
    relative = (w_model - w_star).norm(dim=-1) / scale
    finite = torch.isfinite(w_model).all(-1)
    w_safe = torch.where(finite.unsqueeze(-1), w_model, torch.zeros_like(w_model))
    decrement = newton_decrement_logistic(X, y, w_safe, mu) / (2 * math.sqrt(mu))
    decrement = torch.where(finite, decrement, torch.full_like(decrement, float("nan")))
    final = relative[-1]
    return LogisticConstructionError(
        relative=relative,
        algorithm=(w_alg - w_star).norm(dim=-1) / scale,
        scaled_decrement=decrement,
        median=float(final.median()),
        worst=float(final.max()),
    )


# --------------------------------------------------------------------------- tables for benchmarks/logistic.py and the chapter


def steps_needed(mu: float) -> int:
    """Damped Newton steps the tables use: 8 at ``μ >= 0.1``, 14 below (enough for exact damped
    Newton to reach the minimizer to ~1e-12 on 64 prompts, d <= 10, n = 64: it takes about 10 at
    ``μ = 0.01``)."""
    return 8 if v.check_positive(mu, "mu") >= 0.1 else 14


def logistic_error_table(ds=(2, 5, 10), mus=(0.1, 0.01), widths=(16, 64, 256, 1024), inner_offsets=(-2, 0, 2), *,
                         n: int = 64, batch: int = 64, product_width: int = 33, k_width: int = DEFAULT_WIDTH,
                         dtype=torch.float64, seed: int = 0) -> list[dict]:
    """Distance of ``w_T`` to the exact minimizer over widths and inner steps.

    For each ``d`` and ``μ`` (``T = steps_needed(μ)``): one row per width at the default inner
    steps, one per ``k = default + offset`` (offset ≠ 0) at ``k_width``, and one with exact scalars.

    Returns
    -------
    list of dict
        Keys ``d, mu, steps, inner_steps, width, product_width, median, worst, algorithm_worst``
        (``algorithm_worst``: the emulated inexact algorithm's own error), ``depth``
        (blocks) and ``mlp_units`` (ReLU units of a Newton step's widest MLP); ``width`` is
        ``None`` for the exact-scalar row.
    """
    rows = []
    for mu in mus:
        steps = steps_needed(mu)
        k0 = default_inner_steps(mu)
        for d in ds:
            configs = [(w, k0) for w in widths] + [(k_width, k0 + o) for o in inner_offsets if o and k0 + o >= 0]
            configs.append((None, k0))
            for width, k in configs:
                model = logistic_newton_transformer(d, steps, mu, inner_steps=k, width=width or 3,
                                                    product_width=product_width, exact_scalars=width is None, dtype=dtype)
                r = logistic_construction_error(d, mu, steps, n=n, batch=batch, seed=seed, dtype=dtype, model=model)
                rows.append(dict(d=d, mu=mu, steps=steps, inner_steps=k, width=width, product_width=product_width,
                                 median=r.median, worst=r.worst, algorithm_worst=float(r.algorithm[-1].max()),
                                 depth=len(model.blocks), mlp_units=max(model.mlp_hidden[1:] or [0])))
    return rows


def smallest_width_for_median(d: int, mu: float, target: float, *, n: int = 64, batch: int = 64,
                              product_width: int = 33, seed: int = 0, start: int = 8, max_width: int = 8192) -> dict:
    """The smallest ``width`` (doubling, then bisection) whose median error over the prompts is ``<= target``.

    Returns
    -------
    dict
        ``width``, ``median``, ``worst`` at that width, and ``evaluations``.
    """
    steps = steps_needed(mu)
    cache = {}

    def run(w):
        if w not in cache:
            cache[w] = logistic_construction_error(d, mu, steps, n=n, batch=batch, width=w,
                                                   product_width=product_width, seed=seed)
        return cache[w]

    start = v.check_int(start, "start", minimum=3)
    low, high = 2, start  # widths start at 3: low = 2 is a sentinel never run
    while run(high).median > target:
        if high >= max_width:
            raise ValueError(f"no width up to {max_width} reaches a median error of {target:g}")
        low, high = high, min(2 * high, max_width)
    while high - low > 1:
        mid = (low + high) // 2
        if run(mid).median <= target:
            high = mid
        else:
            low = mid
    return dict(width=high, median=run(high).median, worst=run(high).worst, evaluations=len(cache))


def error_against_step(d: int, mu: float, widths=(16, 64, 256, 1024), *, steps=None, n: int = 64, batch: int = 64,
                       product_width: int = 33, seed: int = 0) -> dict:
    """Median ``‖w_t − w*‖/‖w*‖`` and ``M_f λ(w_t)`` at every step, for several widths and exact scalars.

    Returns
    -------
    dict
        ``"steps"``: list of t; ``"rows"``: one dict per width (``None`` = exact scalars) with
        ``width``, ``sigmoid_sup_error``, ``error`` (median per step), ``scaled_decrement``
        (median ``M_f λ`` per step).
    """
    steps = steps_needed(mu) if steps is None else steps
    rows = []
    for width in list(widths) + [None]:
        r = logistic_construction_error(d, mu, steps, n=n, batch=batch, width=width or 3, product_width=product_width,
                                        exact_scalars=width is None, seed=seed)
        rows.append(dict(
            width=width,
            sigmoid_sup_error=0.0 if width is None else ap.sigmoid_map(mu, width).sup_error,
            error=r.relative.median(dim=1).values.tolist(),
            scaled_decrement=r.scaled_decrement.nanmedian(dim=1).values.tolist(),
        ))
    return {"steps": list(range(steps + 1)), "rows": rows}


def undamped_newton_failures(d: int, mu: float, start_norms=(0.0, 3.0, 10.0), *, steps: int = 20, n: int = 64,
                             batch: int = 256, seed: int = 0, tol: float = 1e-6) -> list[dict]:
    """How often full Newton steps miss the minimizer, from ``w₀ = 0`` and from random starts of given norms.

    A prompt fails when ``‖w_steps − w*‖/‖w*‖ > tol`` (or is not finite) after ``steps`` steps;
    the same count for damped Newton from the same starts.

    Returns
    -------
    list of dict
        ``d, mu, start_norm, undamped_failures, damped_failures, batch``.
    """
    from ..tasks import sample_logistic_regression

    task = sample_logistic_regression(batch, n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    X, y = task.X, task.y
    w_star = damped_newton_logistic(X, y, mu, 60)[-1]
    u = torch.randn(batch, d, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    u = u / u.norm(dim=-1, keepdim=True)
    rows = []
    for norm in start_norms:
        w0 = norm * u
        counts = []
        for damped in (False, True):
            w = damped_newton_logistic(X, y, mu, steps, damped=damped, w0=w0)[-1]
            err = torch.nan_to_num((w - w_star).norm(dim=-1) / w_star.norm(dim=-1), nan=float("inf"))
            counts.append(int((err > tol).sum()))
        rows.append(dict(d=d, mu=mu, start_norm=float(norm), undamped_failures=counts[0], damped_failures=counts[1],
                         batch=batch))
    return rows
