"""logistic_newton_transformer: exact scalars = the inexact damped Newton algorithm; ReLU width buys accuracy."""

from __future__ import annotations

import math
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tfnewton import algorithms as alg
from tfnewton import approx as ap
from tfnewton import probes, tasks
from tfnewton.approx import ExactScalarMLP
from tfnewton.constructions import logistic_newton_transformer
from tfnewton.constructions.logistic_newton import (
    DEFAULT_WIDTH,
    default_inner_steps,
    logistic_construction_error,
    paper_width_bound,
)
from tfnewton.layers import LinearAttention, ReluMLP

pytestmark = pytest.mark.usefixtures("one_thread")


def _task(B, n, d, seed, kappa=1.0, dtype=torch.float64):
    return tasks.sample_logistic_regression(
        B, n, d, condition_number=kappa, generator=torch.Generator().manual_seed(seed), dtype=dtype
    )


@settings(max_examples=40)
@given(
    d=st.integers(1, 6),
    n=st.integers(1, 40),
    B=st.integers(1, 3),
    mu=st.sampled_from([0.01, 0.1, 1.0]),
    inner=st.integers(0, 8),
    steps=st.integers(0, 4),
    kappa=st.sampled_from([1.0, 10.0]),
    seed=st.integers(0, 2**31 - 1),
)
def test_exact_scalars_equal_the_algorithm(d, n, B, mu, inner, steps, kappa, seed):
    t = _task(B, n + 1, d, seed, kappa)
    X, y, x_q, _ = t.context_and_query()
    model = logistic_newton_transformer(d, steps, mu, inner_steps=inner, width=8, exact_scalars=True)
    assert len(model.blocks) == steps * (6 + inner) + 2
    assert all(isinstance(b.layer, (LinearAttention, ExactScalarMLP)) for b in model.blocks)
    ours = model.iterates(X, y)
    ref = alg.damped_newton_logistic(X, y, mu, steps, inner_steps=inner)
    assert ours.shape == ref.shape == (steps + 1, B, d)
    assert ((ours - ref).norm(dim=-1) <= 1e-9 * (1 + ref.norm(dim=-1))).all()
    p = model(X, y, x_q)
    assert torch.allclose(p, torch.sigmoid((ref[-1] * x_q).sum(-1)), rtol=0, atol=1e-9)
    # every step's probability and decrement as the algorithm has them
    expected = torch.sigmoid((ref * x_q).sum(-1))
    assert torch.allclose(model.predictions(X, y, x_q), expected, rtol=0, atol=1e-9)
    if steps:
        g, lam2 = [], []
        for w in ref[:-1]:
            grad, H = _gradient_hessian(X, y, w, mu)
            M = alg.logistic_inner_alpha(mu) * H
            for _ in range(inner):
                M = 2 * M - M @ H @ M
            lam2.append((grad * (M @ grad.unsqueeze(-1)).squeeze(-1)).sum(-1))
        assert torch.allclose(model.decrements(X, y), torch.stack(lam2), rtol=1e-9, atol=1e-12)


def _gradient_hessian(X, y, w, mu):
    n, d = X.shape[1:]
    z = (X @ w.unsqueeze(-1)).squeeze(-1)
    c = torch.sigmoid(z) - (1 + y) / 2
    h = torch.sigmoid(z) * torch.sigmoid(-z)
    g = (X * c.unsqueeze(-1)).sum(1) / n + mu * w
    H = torch.einsum("bi,bij,bik->bjk", h, X, X) / n + mu * torch.eye(d, dtype=X.dtype)
    return g, H


def test_layer_count_and_widths():
    d, steps, k, width = 5, 3, 4, 32
    model = logistic_newton_transformer(d, steps, 0.1, inner_steps=k, width=width, product_width=9)
    assert len(model.blocks) == steps * (6 + k) + 2 == model.n_layers
    assert len(model.blocks) <= steps * (11 + 2 * k)  # Giannou et al.'s depth
    kinds = ["mlp" if isinstance(b.layer, ReluMLP) else "attn" for b in model.blocks]
    assert kinds[: 6 + k] == ["attn", "mlp", "attn"] + ["attn"] * k + ["attn", "mlp", "attn"]
    assert kinds[-2:] == ["attn", "mlp"]
    # units: σ, σ', σ at the query (+1 constant each), −(1+y)/2 and four clearings; then the products
    assert model.mlp_hidden[0] == 3 * width + 13 + d * d * 9 + d
    assert model.mlp_hidden[1] == width + 3
    assert model.mlp_hidden[2] == 3 * width + 13
    assert model.heads_per_block()[2] == 5 + d
    assert model.width == 8 * d + 12 + d * (d + 1) // 2
    assert default_inner_steps(0.1) == 5 and default_inner_steps(0.01) == 11
    assert logistic_newton_transformer(2, 1, 0.01).inner_steps == 11


def test_default_width_reaches_the_minimizer():
    """d = 5, n = 64, mu = 0.1, T = 6, 64 prompts: median <= 1e-2, worst <= 5e-2 (measured 4.4e-5 / 7.5e-5)."""
    result = logistic_construction_error(5, 0.1, 6, n=64, batch=64, width=DEFAULT_WIDTH)
    assert result.median <= 1e-2 and result.worst <= 5e-2
    assert result.relative.shape == (7, 64)
    assert result.algorithm[-1].max() <= 1e-6  # the emulated algorithm itself has converged (1.9e-8)


def test_error_falls_as_the_width_grows():
    results = [logistic_construction_error(5, 0.1, 6, n=64, batch=32, width=w, product_width=9, seed=1)
               for w in (16, 32, 64, 128)]
    medians = [r.median for r in results]
    worst = [r.worst for r in results]
    assert all(b < a / 2 for a, b in zip(medians, medians[1:])), medians  # ~1/width²: each halving ≥ 2×
    assert all(b < a for a, b in zip(worst, worst[1:])), worst


def test_float32_model():
    result = logistic_construction_error(5, 0.1, 6, batch=16, width=64, dtype=torch.float32)
    assert result.worst <= 1e-3


def test_hook_protocol_probes_and_positions():
    t = _task(3, 13, 3, seed=4)
    X, y, x_q, _ = t.context_and_query()
    model = logistic_newton_transformer(3, 2, 0.1, inner_steps=2, width=16)
    out, cache = probes.run_with_cache(model, X, y, x_q)
    assert torch.equal(out, model(X, y, x_q))
    assert len(cache) == len(model.blocks) + 1
    states = probes.hidden_states(model, X, y, x_q)
    assert states.shape == (len(model.blocks) + 1, 3, 12 + 1 + 3, model.width)
    assert torch.equal(model.readout(states[model.hidden_index_of_step(2)]), out)
    assert model.query_position(12) == 12 and model.takes_query
    w = states[[model.hidden_index_of_step(k) for k in range(3)], :, 12, model.layout["w"]]
    assert torch.equal(w, model.iterates(X, y))
    assert model.block_of_step(0) == 1 and model.block_of_step(2) == 2 * (6 + 2) + 1 == len(model.blocks) - 1
    # scratch slots are replaced, not accumulated: after the last block, nothing is left in z
    assert states[-1][..., model.layout["z"]].abs().max() == 0


def test_drawing_helpers_accept_it():
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tfnewton.constructions import draw

    t = _task(1, 7, 2, seed=0)
    X, y, x_q, _ = t.context_and_query()
    model = logistic_newton_transformer(2, 1, 0.1, inner_steps=1, width=8)
    draw.draw_layout(model)
    draw.draw_stream(model, (X, y, x_q), blocks=(0, 2, len(model.blocks)))
    draw.draw_block_weights(model, 2)
    assert draw.token_labels(model, 6 + 1 + 2)[-1] == "M col 2"
    plt.close("all")


def test_rescaling_recipe_in_the_error_message():
    """Dividing X by r and mu by r² gives the same logits: the minimizer becomes r·w."""
    t = _task(4, 20, 3, seed=2)
    r = 3.0
    X_big = t.X * r
    mu = 0.05
    w_big = alg.damped_newton_logistic(X_big, t.y, mu, 40)[-1]
    w_scaled = alg.damped_newton_logistic(X_big / r, t.y, mu / r**2, 40)[-1]
    assert torch.allclose(w_scaled, r * w_big, rtol=1e-10, atol=1e-12)
    model = logistic_newton_transformer(3, 1, mu, inner_steps=1, width=8)
    with pytest.raises(ValueError) as info:
        model(X_big, t.y, t.X[:, 0])
    message = str(info.value)
    for words in ("X", "norm at most 1", f"{float(X_big.norm(dim=-1).max()):.4g}", "mu/r²", "r·w"):
        assert words in message, (words, message)


def _ok():
    t = _task(2, 9, 3, seed=3)
    X, y, x_q, _ = t.context_and_query()
    return X, y, x_q


@pytest.mark.parametrize(
    "call, exc, words",
    [
        (lambda m, X, y, q: m(X, y.abs() * 0.5, q), ValueError, ["y", "-1 or +1"]),
        (lambda m, X, y, q: m(X, torch.zeros_like(y), q), ValueError, ["y", "-1 or +1"]),
        (lambda m, X, y, q: m(2 * X, y, q), ValueError, ["X", "norm at most 1", "divide X"]),
        (lambda m, X, y, q: m(X, y, 3 * q / q.norm(dim=-1, keepdim=True)), ValueError, ["x_query", "norm at most 1"]),
        (lambda m, X, y, q: m(X.float(), y.float(), q.float()), TypeError, ["dtype"]),
        (lambda m, X, y, q: m(X[..., :2], y, q[:, :2]), ValueError, ["X", "d = 3"]),
        (lambda m, X, y, q: m.iterates(X, y[:, :4]), ValueError, ["y", "shape"]),
        (lambda m, X, y, q: logistic_newton_transformer(3, 2, 0.0), ValueError, ["mu", "> 0"]),
        (lambda m, X, y, q: logistic_newton_transformer(3, 2, -0.1), ValueError, ["mu", "> 0"]),
        (lambda m, X, y, q: logistic_newton_transformer(3, 2, 0.1, inner_steps=-1), ValueError, ["inner_steps", ">= 0"]),
        (lambda m, X, y, q: logistic_newton_transformer(3, 2, 0.1, width=2), ValueError, ["width", ">= 3"]),
        (lambda m, X, y, q: logistic_newton_transformer(3, 2, 0.1, exact_scalars=1), TypeError, ["exact_scalars", "bool"]),
        (lambda m, X, y, q: logistic_newton_transformer(3, 2, 0.1, width=16, tol=1e-4), ValueError,
         ["width=16", "tol=0.0001", "smallest width that reaches tol is"]),
    ],
)
def test_bad_input(call, exc, words):
    X, y, x_q = _ok()
    model = logistic_newton_transformer(3, 2, 0.1, inner_steps=2, width=8)
    with pytest.raises(exc) as info:
        call(model, X, y, x_q)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_width_too_small_names_a_width_that_works():
    with pytest.raises(ValueError) as info:
        logistic_newton_transformer(2, 1, 0.1, width=16, product_width=16, tol=1e-4)
    message = str(info.value)
    width = int(re.search(r"smallest width that reaches tol is (\d+)", message).group(1))
    product_width = int(re.search(r"smallest product_width that reaches tol is (\d+)", message).group(1))
    model = logistic_newton_transformer(2, 1, 0.1, width=width, product_width=product_width, tol=1e-4)
    assert max(m.sup_error for m in model.scalar_maps.values()) <= 1e-4
    with pytest.raises(ValueError, match="too few ReLU units"):
        logistic_newton_transformer(2, 1, 0.1, width=width - 1, product_width=product_width, tol=1e-4)


def test_paper_width_bound():
    assert paper_width_bound(5, 0.1, 1e-2) == pytest.approx(5 * 1.1**6 / (1e-8 * 1e-8))
    with pytest.raises(ValueError, match="eps"):
        paper_width_bound(5, 0.1, 0.0)


def test_scalar_maps_cover_the_intervals_the_proof_needs():
    mu = 0.01
    model = logistic_newton_transformer(2, 1, mu, width=16)
    R = math.sqrt(2 * math.log(2) / mu)
    assert model.scalar_maps["sigmoid"].interval == pytest.approx((-R, R))
    assert model.scalar_maps["damping"].interval == pytest.approx((0.0, ap.decrement_bound(mu)))
    # along exact damped Newton every logit stays inside [−R, R] and every λ² inside [0, S]
    t = _task(16, 64, 5, seed=9)
    w = alg.damped_newton_logistic(t.X, t.y, mu, 15, inner_steps=default_inner_steps(mu))
    assert (t.X @ w.transpose(0, 1).transpose(1, 2)).abs().max() <= R
    assert (alg.newton_decrement_logistic(t.X, t.y, w, mu) ** 2).max() <= ap.decrement_bound(mu)


def test_benchmark_tables_small():
    from tfnewton.constructions import logistic_newton as LN

    rows = LN.logistic_error_table(ds=(2,), mus=(0.1,), widths=(16, 64), inner_offsets=(-2, 0), batch=4, n=16)
    assert [r["width"] for r in rows] == [16, 64, DEFAULT_WIDTH, None]
    assert [r["inner_steps"] for r in rows] == [5, 5, 3, 5]
    assert rows[1]["median"] < rows[0]["median"]
    assert rows[-1]["worst"] <= 1e-9 + rows[-1]["algorithm_worst"]  # exact scalars: the algorithm's own error
    assert rows[0]["depth"] == 8 * (6 + 5) + 2 and rows[0]["mlp_units"] == 3 * 16 + 13
    found = LN.smallest_width_for_median(2, 0.1, 1e-3, batch=4, n=16)
    assert found["median"] <= 1e-3
    assert LN.logistic_construction_error(2, 0.1, 8, batch=4, n=16, width=found["width"] - 1,
                                          product_width=33).median > 1e-3
    table = LN.error_against_step(2, 0.1, widths=(16,), steps=4, batch=4, n=16)
    assert table["steps"] == [0, 1, 2, 3, 4] and len(table["rows"]) == 2
    assert table["rows"][-1]["error"][-1] < table["rows"][0]["error"][-1]
    assert table["rows"][0]["error"][0] == pytest.approx(1.0)  # w0 = 0
    failures = LN.undamped_newton_failures(2, 0.01, start_norms=(0.0, 10.0), batch=32)
    assert [f["damped_failures"] for f in failures] == [0, 0]
    assert failures[0]["undamped_failures"] == 0 and failures[1]["undamped_failures"] > 0


@pytest.mark.cuda
def test_cuda_equals_cpu():
    t = _task(2, 9, 3, seed=5)
    X, y, x_q, _ = t.context_and_query()
    for exact in (True, False):
        cpu = logistic_newton_transformer(3, 2, 0.1, inner_steps=3, width=16, exact_scalars=exact)
        gpu = logistic_newton_transformer(3, 2, 0.1, inner_steps=3, width=16, exact_scalars=exact, device="cuda")
        out = gpu(X.cuda(), y.cuda(), x_q.cuda())
        assert out.device.type == "cuda"
        assert torch.allclose(out.cpu(), cpu(X, y, x_q), atol=1e-12)
