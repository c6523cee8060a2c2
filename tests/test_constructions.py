"""The constructions reproduce their algorithms: float64 exactness, layer counts, hooks, errors.

Two references for every construction: :mod:`tfnewton.algorithms` (the library's one
copy of the maths) and the plain numpy loops of ``tests/reference.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import reference
from tfnewton.algorithms import gradient_descent_least_squares, newton_least_squares, newton_schulz
from tfnewton.constructions import (
    GDRegressionTransformer,
    NewtonRegressionTransformer,
    NewtonSchulzTransformer,
    gd_regression_transformer,
    newton_regression_transformer,
    newton_schulz_transformer,
)
from tfnewton.layers import LinearAttention, Residual
from tfnewton.tasks import sample_linear_regression, sample_matrices, sample_spd

pytestmark = pytest.mark.usefixtures("one_thread")


TOL = 1e-9  # the bar for float64 exactness (observed: ≈1e-13)
F64 = torch.float64


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """max over iterates and problems of ‖ours − ref‖ / ‖ref‖ (Frobenius over the trailing axes)."""
    ours, ref = ours.double(), ref.double()
    flat = lambda t: t.reshape(t.shape[0], t.shape[1], -1)  # noqa: E731  (steps, B, ·)
    num = (flat(ours) - flat(ref)).norm(dim=-1)
    den = flat(ref).norm(dim=-1).clamp_min(1e-300)
    return float((num / den).max())


def regression_problem(B, n, d, kappa, seed):
    task = sample_linear_regression(B, n + 1, d, condition_number=kappa, noise_std=0.1,
                                    generator=torch.Generator().manual_seed(seed), dtype=F64)
    X, y, x_q, _ = task.context_and_query()
    return X, y, x_q


kappas = st.sampled_from([1.0, 10.0, 100.0, 1000.0])


# --------------------------------------------------------------------------- Newton–Schulz


@settings(deadline=None, max_examples=20)
@given(d=st.integers(2, 32), B=st.integers(1, 4), kappa=kappas, spd=st.booleans(), seed=st.integers(0, 10**6))
def test_newton_schulz_exact_float64(d, B, kappa, spd, seed):
    g = torch.Generator().manual_seed(seed)
    sample = sample_spd if spd else sample_matrices
    A = sample(B, d, kappa, generator=g, dtype=F64)
    steps = 24  # enough to converge at κ = 10³ (log₂(κ² ln 1/ε) ≈ 24)
    model = newton_schulz_transformer(d, steps)
    ours = model.iterates(A)
    ref = newton_schulz(A, steps)
    assert ours.shape == (steps + 1, B, d, d)
    assert rel_err(ours, ref) <= TOL
    torch.testing.assert_close(model(A), ours[-1], rtol=0, atol=0)
    alpha = 1.0 / float(torch.linalg.matrix_norm(A, ord=2).max()) ** 2
    loop = np.stack([reference.newton_schulz(A[b].numpy(), steps, alpha) for b in range(B)], axis=1)
    assert rel_err(newton_schulz_transformer(d, steps, alpha=alpha).iterates(A), torch.from_numpy(loop)) <= TOL


def test_newton_schulz_converges_to_the_inverse():
    A = sample_matrices(8, 16, 1e3, generator=torch.Generator().manual_seed(0), dtype=F64)
    X = newton_schulz_transformer(16, 26)(A)
    assert float((X @ A - torch.eye(16, dtype=F64)).abs().max()) < 1e-10


def test_newton_schulz_alpha_beyond_the_boundary_diverges_like_the_algorithm():
    A = sample_spd(2, 4, 10.0, generator=torch.Generator().manual_seed(1), dtype=F64)  # ‖A‖ = 1
    for alpha in (2.0, 2.2):  # the boundary 2/σ_max² and beyond it
        ours = newton_schulz_transformer(4, 6, alpha=alpha).iterates(A)
        assert rel_err(ours, newton_schulz(A, 6, alpha=alpha)) <= TOL


def test_newton_schulz_layer_counts():
    for d, steps in [(2, 1), (5, 7), (32, 3)]:
        model = newton_schulz_transformer(d, steps)
        assert len(model.blocks) == steps  # 1 layer per step (Giannou et al.: ≤ 2)
        for block in model.blocks:
            assert isinstance(block, Residual) and isinstance(block.layer, LinearAttention)
            assert block.layer.n_heads <= 2 and block.layer.head_dim == d
        assert model.width == 3 * d <= 4 * d
        assert model.embed(torch.eye(d, dtype=F64).expand(2, d, d)).shape == (2, d, 3 * d)


def test_newton_schulz_hook_protocol_and_steps():
    A = sample_matrices(3, 5, 10.0, generator=torch.Generator().manual_seed(2), dtype=F64)
    model = newton_schulz_transformer(5, 4)
    captured = [None] * len(model.blocks)
    hooks = [b.register_forward_hook(lambda m, i, o, k=k: captured.__setitem__(k, o)) for k, b in enumerate(model.blocks)]
    out = model(A)
    for h in hooks:
        h.remove()
    ref = newton_schulz(A, 4)
    for k in range(5):
        idx = model.block_of_step(k)
        H = model.embed(A) if idx < 0 else captured[idx]
        assert rel_err(model.readout(H)[None], ref[k][None]) <= TOL
        assert model.hidden_index_of_step(k) == k
    torch.testing.assert_close(out, model.readout(captured[-1]))
    with pytest.raises(ValueError, match="k must be <= steps"):
        model.block_of_step(5)


def test_newton_schulz_float32_runs_in_float32():
    A = sample_spd(4, 6, 10.0, generator=torch.Generator().manual_seed(3), dtype=torch.float32)
    model = newton_schulz_transformer(6, 10, dtype=torch.float32)
    out = model.iterates(A)
    assert out.dtype == torch.float32
    ref = newton_schulz(A.double(), 10)
    assert rel_err(out, ref) < 1e-4  # float32 rounding, not a different algorithm
    assert rel_err(newton_schulz_transformer(6, 10).float().iterates(A), ref) < 1e-4


def test_newton_schulz_bad_inputs():
    model = newton_schulz_transformer(3, 2)
    with pytest.raises(ValueError, match=r"A must have shape \(B, 3, 3\)"):
        model(torch.eye(4, dtype=F64)[None])
    with pytest.raises(ValueError, match="A must hold square matrices"):
        model(torch.zeros(1, 3, 4, dtype=F64))
    with pytest.raises(ValueError, match="A contains NaN"):
        model(torch.full((1, 3, 3), float("nan"), dtype=F64))
    with pytest.raises(ValueError, match="A must have 3 dimensions"):
        model(torch.eye(3, dtype=F64))
    with pytest.raises(TypeError, match="A must be a torch.Tensor"):
        model(np.eye(3)[None])
    with pytest.raises(TypeError, match="A has dtype torch.float32"):
        model(torch.eye(3)[None])
    with pytest.raises(ValueError, match="d must be >= 1"):
        newton_schulz_transformer(0, 2)
    with pytest.raises(ValueError, match="steps must be >= 0"):
        newton_schulz_transformer(3, -1)
    with pytest.raises(ValueError, match="alpha must be > 0"):
        newton_schulz_transformer(3, 2, alpha=-1.0)
    with pytest.raises(TypeError, match="alpha must be a real number"):
        newton_schulz_transformer(3, 2, alpha="big")


# --------------------------------------------------------------------------- Iterative Newton


@settings(deadline=None, max_examples=20)
@given(d=st.integers(2, 32), n_factor=st.sampled_from([0.5, 1.0, 2.0, 4.0]), B=st.integers(1, 4),
       kappa=kappas, seed=st.integers(0, 10**6))
def test_newton_regression_exact_float64(d, n_factor, B, kappa, seed):
    n = max(1, int(n_factor * d))
    X, y, x_q = regression_problem(B, n, d, kappa, seed)
    steps = 16
    model = newton_regression_transformer(d, steps)
    ref = newton_least_squares(X, y, steps)
    assert rel_err(model.iterates(X, y), ref) <= TOL
    pred_ref = (ref * x_q).sum(-1)  # (steps + 1, B)
    pred = model.predictions(X, y, x_q)
    scale = pred_ref.abs().amax(0).clamp_min(1e-12)  # relative to the size of the answer
    assert float(((pred - pred_ref).abs() / scale).max()) <= TOL
    assert float(((model(X, y, x_q) - pred_ref[-1]).abs() / scale).max()) <= TOL


def test_newton_regression_matches_numpy_loop_with_explicit_alpha():
    X, y, x_q = regression_problem(3, 20, 6, 100.0, 7)
    alpha = 0.5 / float(torch.linalg.eigvalsh(X.transpose(-1, -2) @ X)[..., -1].max()) ** 2
    model = newton_regression_transformer(6, 10, alpha=alpha)
    loop = np.stack([reference.newton_least_squares(X[b].numpy(), y[b].numpy(), 10, alpha) for b in range(3)], axis=1)
    assert rel_err(model.iterates(X, y), torch.from_numpy(loop)) <= TOL
    assert rel_err(model.iterates(X, y), newton_least_squares(X, y, 10, alpha=alpha)) <= TOL


def test_newton_regression_matrix_tokens_hold_m_k_after_matrix_block_of_step():
    """The matrix tokens carry M̃_k = M_k / c² (c² = √α) after block matrix_block_of_step(k)."""
    d, n, steps = 4, 10, 5
    X, y, x_q = regression_problem(3, n, d, 30.0, 5)
    S = X.transpose(-1, -2) @ X
    alpha = 0.8 / float(torch.linalg.eigvalsh(S)[..., -1].max()) ** 2
    model = newton_regression_transformer(d, steps, alpha=alpha)
    hidden = model.hidden_states(X, y, x_q)  # (L + 1, B, n + 1 + d, D)
    M = newton_schulz(S, steps, alpha=alpha)  # M_0 = αS, M_{k+1} = 2M_k − M_k S M_k
    for k in range(steps + 1):
        tokens = hidden[model.matrix_block_of_step(k) + 1, :, n + 1:, model.layout["M"]]  # row j: M̃_k[:, j]
        assert rel_err(tokens.transpose(-1, -2), M[k] / alpha**0.5) <= TOL


def test_newton_regression_layer_counts():
    for d, steps in [(2, 0), (4, 5), (16, 12)]:
        model = newton_regression_transformer(d, steps)
        assert len(model.blocks) == steps + 2  # Fu et al.: steps + 8; Giannou et al.: steps + 3
        assert len(model.blocks) < steps + 3
        assert model.width == 6 * d + 4
        assert all(isinstance(b.layer, LinearAttention) for b in model.blocks)
        assert max(model.heads_per_block()) <= 4


def _r2_of_linear_probe(features: np.ndarray, target: np.ndarray) -> float:
    """Held-out R² of least squares (with intercept) fitted on the first half."""
    feats = np.concatenate([features, np.ones((features.shape[0], 1))], axis=1)
    half = features.shape[0] // 2
    coef, *_ = np.linalg.lstsq(feats[:half], target[:half], rcond=None)
    resid = target[half:] - feats[half:] @ coef
    return 1.0 - float((resid**2).sum() / ((target[half:] - target[half:].mean(0)) ** 2).sum())


@pytest.mark.parametrize("kind", ["newton", "gd"])
def test_probe_reads_iterate_k_from_the_query_token_at_block_of_step(kind):
    """What tfnewton.probes does with hooks, in miniature: R² ≥ 0.999 exactly where block_of_step says."""
    d, n, steps, B = 4, 12, 4, 400
    X, y, x_q = regression_problem(B, n, d, 10.0, 11)
    if kind == "newton":
        model, ref = newton_regression_transformer(d, steps), newton_least_squares(X, y, steps)
    else:
        model, ref = gd_regression_transformer(d, steps, lr=0.5), gradient_descent_least_squares(X, y, steps, lr=0.5)
    hidden = model.hidden_states(X, y, x_q)  # (L + 1, B, T, D)
    # The hook protocol: x_token_positions(n) are the n context tokens, the query sits at
    # query_position(n), right after them.
    assert model.x_token_positions(n).tolist() == list(range(n))
    query = model.query_position(n)
    assert query == n and model.takes_query
    captured = []
    hooks = [b.register_forward_hook(lambda m, i, o: captured.append(o)) for b in model.blocks]
    model(X, y, x_q)
    for h in hooks:
        h.remove()
    torch.testing.assert_close(torch.stack(captured), hidden[1:])
    for k in range(1, steps + 1):
        feats = hidden[model.hidden_index_of_step(k), :, query].numpy()
        pred = (ref[k] * x_q).sum(-1).numpy()
        assert _r2_of_linear_probe(feats, pred) >= 0.999
        assert _r2_of_linear_probe(feats, ref[k].numpy()) >= 0.999
    # and the readout of the whole model is the last iterate's prediction
    torch.testing.assert_close(model(X, y, x_q), (ref[-1] * x_q).sum(-1))


def test_newton_regression_bad_inputs():
    model = newton_regression_transformer(3, 2)
    X, y, x_q = regression_problem(2, 5, 3, 1.0, 0)
    with pytest.raises(ValueError, match=r"X must have shape \(B, n, 3\)"):
        model(torch.zeros(2, 5, 4, dtype=F64), y, x_q)
    with pytest.raises(ValueError, match="y must have shape"):
        model(X, y[:1], x_q)
    with pytest.raises(ValueError, match="x_query must have shape"):
        model(X, y, x_q[:1])
    with pytest.raises(ValueError, match="x_query must have shape"):
        model(X, y, torch.zeros(2, 4, dtype=F64))
    Xn = X.clone()
    Xn[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="X contains NaN"):
        model(Xn, y, x_q)
    with pytest.raises(ValueError, match="x_query contains NaN"):
        model(X, y, torch.full_like(x_q, float("inf")))
    with pytest.raises(TypeError, match="X has dtype torch.float32"):
        model(X.float(), y.float(), x_q.float())
    with pytest.raises(TypeError, match="x_query has dtype"):
        model(X, y, x_q.float())


# --------------------------------------------------------------------------- gradient descent


@settings(deadline=None, max_examples=20)
@given(d=st.integers(2, 32), n=st.integers(1, 64), B=st.integers(1, 4), kappa=kappas,
       lr=st.sampled_from([None, 0.01, 0.1]), seed=st.integers(0, 10**6))
def test_gd_regression_exact_float64(d, n, B, kappa, lr, seed):
    X, y, x_q = regression_problem(B, n, d, kappa, seed)
    steps = 12
    model = gd_regression_transformer(d, steps, lr=lr)
    ref = gradient_descent_least_squares(X, y, steps, lr=lr)
    ours = model.iterates(X, y)
    assert float(ours[0].abs().max()) == 0.0  # w₀ = 0
    assert rel_err(ours[1:], ref[1:]) <= TOL
    pred_ref = (ref * x_q).sum(-1)
    scale = pred_ref.abs().amax(0).clamp_min(1e-12)
    assert float(((model.predictions(X, y, x_q) - pred_ref).abs() / scale).max()) <= TOL
    if lr is not None:
        loop = np.stack([reference.gradient_descent(X[b].numpy(), y[b].numpy(), steps, lr) for b in range(B)], axis=1)
        assert rel_err(ours[1:], torch.from_numpy(loop[1:])) <= TOL


def test_gd_regression_layer_counts():
    for d, steps in [(2, 1), (8, 20)]:
        model = gd_regression_transformer(d, steps)
        assert len(model.blocks) == steps  # one layer per step (von Oswald et al.)
        assert model.heads_per_block() == [2] * steps and model.width == 3 * d + 2
        assert model.block_of_step(0) == -1 and model.block_of_step(steps) == steps - 1


def test_gd_regression_bad_inputs():
    model = gd_regression_transformer(3, 2)
    X, y, x_q = regression_problem(2, 5, 3, 1.0, 0)
    with pytest.raises(ValueError, match=r"X must have shape \(B, n, 3\)"):
        model(torch.zeros(2, 5, 2, dtype=F64), y, x_q)
    with pytest.raises(ValueError, match="y must have shape"):
        model(X, y[:, :3], x_q)
    with pytest.raises(ValueError, match="lr must be > 0"):
        gd_regression_transformer(3, 2, lr=0.0)
    with pytest.raises(TypeError, match="x_query is required"):
        model(X, y, None)


def test_builders_return_the_documented_classes():
    assert isinstance(newton_schulz_transformer(2, 1), NewtonSchulzTransformer)
    assert isinstance(newton_regression_transformer(2, 1), NewtonRegressionTransformer)
    assert isinstance(gd_regression_transformer(2, 1), GDRegressionTransformer)
    float32 = gd_regression_transformer(2, 1, dtype=torch.float32)
    assert float32.dtype == torch.float32


# --------------------------------------------------------------------------- pictures and benchmark


def test_drawings_run_for_every_construction():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tfnewton.constructions.draw import draw_block_weights, draw_layout, draw_stream

    A = sample_spd(1, 3, 5.0, generator=torch.Generator().manual_seed(0), dtype=F64)
    X, y, x_q = regression_problem(1, 4, 3, 1.0, 0)
    for model, inputs in [(newton_schulz_transformer(3, 2), (A,)),
                          (newton_regression_transformer(3, 1), (X, y, x_q)),
                          (gd_regression_transformer(3, 2), (X, y, x_q))]:
        assert draw_layout(model) is not None
        assert len(draw_stream(model, inputs, blocks=(0, 1))) == 2
        fig = draw_block_weights(model, 0, head_names=model.HEAD_NAMES[: model.blocks[0].layer.n_heads])
        assert len(fig.axes) == 4 * model.blocks[0].layer.n_heads
        plt.close("all")
    with pytest.raises(TypeError, match="model must be a tfnewton construction"):
        draw_layout(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="block must lie in"):
        draw_block_weights(newton_schulz_transformer(3, 2), 5)


def test_benchmark_counts_flops_and_errors():
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).parent.parent / "benchmarks" / "constructions.py"
    spec = importlib.util.spec_from_file_location("bench_constructions", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = bench.run(bench.KINDS, [4], batch=8, steps=3, dtype=F64, device=torch.device("cpu"), repeats=1,
                     print_row=lambda row: None)
    assert [r["kind"] for r in rows] == list(bench.KINDS)
    ns = rows[0]
    assert ns["flop_ratio"] == pytest.approx(14.0)  # per step: 56d³ (projections + 2 heads) vs 4d³ (two products)
    assert all(r["err"] < 1e-12 for r in rows)


def test_draw_block_weights_draws_relu_blocks_and_refuses_exact_scalar_ones():
    import matplotlib

    matplotlib.use("Agg")
    from tfnewton.constructions import logistic_newton_transformer
    from tfnewton.constructions.draw import draw_block_weights
    from tfnewton.layers import ReluMLP

    model = logistic_newton_transformer(3, 1, 0.1, inner_steps=1, width=16)
    mlp_block = next(i for i, b in enumerate(model.blocks) if isinstance(b.layer, ReluMLP))
    fig = draw_block_weights(model, mlp_block)
    assert len(fig.axes) >= 2 and "ReLU" in fig._suptitle.get_text()
    assert model.heads_per_block()[mlp_block] == 0
    exact = logistic_newton_transformer(3, 1, 0.1, inner_steps=1, width=16, exact_scalars=True)
    with pytest.raises(TypeError, match="exact_scalars=False"):
        draw_block_weights(exact, mlp_block)
