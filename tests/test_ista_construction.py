"""The in-context LISTA construction runs its reference step for step (float64, 1e-9), in 2K + 1 layers."""

from __future__ import annotations

import functools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tfnewton import algorithms, tasks
from tfnewton.constructions import InContextISTATransformer, in_context_ista_transformer
from tfnewton.layers import LinearAttention, ReluMLP, count_heads
from tfnewton.probes import run_with_cache
from tfnewton.sparse import InContextLISTA

pytestmark = pytest.mark.usefixtures("one_thread")

F64 = torch.float64
TOL = 1e-9


def _task(B, n, d, s, seed, **kw):
    return tasks.sample_sparse_recovery(B, n + 1, d, sparsity=s, noise_std=0.1, generator=torch.Generator().manual_seed(seed),
                                        dtype=F64, **kw)


@settings(max_examples=30)
@given(
    B=st.integers(1, 3),
    n=st.integers(1, 14),
    d=st.integers(1, 8),
    s=st.integers(1, 3),
    K=st.integers(0, 8),
    scaling=st.sampled_from(["unit_columns", "garg"]),
    normalize=st.booleans(),
    data=st.data(),
)
def test_every_step_equals_the_in_context_variant(B, n, d, s, K, scaling, normalize, data):
    seed = data.draw(st.integers(0, 10**6), label="seed")
    t = _task(B, n, d, min(s, d), seed, scaling=scaling)
    X, y, x_query, _ = t.context_and_query()
    lam_max = torch.linalg.matrix_norm(X, ord=2).max().item() ** 2
    factors = data.draw(st.lists(st.floats(0.05, 1.9), min_size=K, max_size=K), label="γ_k·λ_max")
    gammas = factors if normalize else [c / max(lam_max, 1e-3) for c in factors]
    shrink = data.draw(st.lists(st.sampled_from([0.0, 0.01, 0.1, 0.5, 2.0]), min_size=K, max_size=K), label="θ_k/η_k")
    thetas = [r * c / max(lam_max, 1e-3) for r, c in zip(shrink, factors)]  # relative to the step in β's units

    model = in_context_ista_transformer(d, gammas, thetas, normalize_steps=normalize)
    assert len(model.blocks) == 2 * K + 1  # the layer count
    assert [count_heads(b) for b in model.blocks] == ([1, 0] + [3, 0] * (K - 1) if K else []) + [1]

    reference = InContextLISTA.from_schedule(gammas, [max(th, 1e-300) for th in thetas], normalize_steps=normalize,
                                             dtype=F64) if K else None
    with torch.no_grad():
        expected = reference(X, y) if K else X.new_zeros((1, B, d))
    got = model.iterates(X, y)
    assert got.shape == (K + 1, B, d)
    scale = 1.0 + expected.abs().max().item()
    assert (got - expected).abs().max().item() <= TOL * scale
    predictions = model.predictions(X, y, x_query)
    assert (predictions - (expected * x_query).sum(-1)).abs().max().item() <= TOL * scale * (1 + x_query.abs().sum().item())
    assert torch.equal(model(X, y, x_query), predictions[-1])


@pytest.mark.parametrize("d, n, K", [(20, 15, 12), (10, 41, 6)])
def test_constant_schedule_is_ista_with_a_fixed_step(d, n, K):
    t = _task(8, n, d, 3, 5, scaling="garg")
    X, y = t.X[:, :n], t.y[:, :n]
    eta = 1.0 / torch.linalg.matrix_norm(X, ord=2).max().item() ** 2
    model = in_context_ista_transformer(d, [eta] * K, [eta * 0.5] * K)
    assert torch.allclose(model.iterates(X, y), algorithms.ista(X, y, 0.5, K, lr=eta), rtol=0, atol=TOL)


def test_a_fitted_reference_runs_as_the_transformer():
    sampler = functools.partial(tasks.sample_sparse_recovery, n=10, d=12, sparsity=2, noise_std=0.1, scaling="garg", dtype=F64)
    reference = InContextLISTA(5, lam=0.5, dtype=F64).fit(sampler, steps=30, batch=16, lr=5e-2)
    model = in_context_ista_transformer(12, reference.step_sizes, reference.thresholds)
    t = sampler(6, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = reference(t.X, t.y)
    assert (model.iterates(t.X, t.y) - expected).abs().max().item() <= TOL
    # the same weights answer on correlated columns and on other n: the matrix is the prompt's own
    other = _task(3, 25, 12, 2, 9, scaling="garg", correlation=0.5)
    with torch.no_grad():
        assert (model.iterates(other.X, other.y) - reference(other.X, other.y)).abs().max().item() <= TOL


def test_a_fitted_normalized_reference_runs_as_the_transformer_on_any_matrix():
    sampler = functools.partial(tasks.sample_sparse_recovery, n=10, d=12, sparsity=2, noise_std=0.1, scaling="garg", dtype=F64)
    reference = InContextLISTA(4, lam=0.5, normalize_steps=True, dtype=F64).fit(sampler, steps=20, batch=16, lr=5e-2)
    model = in_context_ista_transformer(12, reference.step_sizes, reference.thresholds, normalize_steps=True)
    assert len(model.blocks) == 9
    for t in (sampler(6, generator=torch.Generator().manual_seed(4)), _task(3, 25, 12, 2, 9, correlation=0.5)):
        X, y = t.X, t.y
        with torch.no_grad():
            assert (model.iterates(X, y) - reference(X, y)).abs().max().item() <= TOL


def test_weights_are_zero_one_step_sizes_and_thresholds():
    gammas, thetas = [0.25, 0.125, 0.5], [0.0625, 0.03125, 0.0]
    model = in_context_ista_transformer(4, gammas, thetas)
    allowed = {0.0, 1.0, -1.0} | set(gammas) | {-g for g in gammas} | {-t for t in thetas}
    values = set(torch.cat([p.flatten() for p in model.parameters()]).tolist())
    assert values <= allowed and {0.25, -0.125, -0.5, -0.0625} <= values  # step 1 has no −γSβ (β₀ = 0)
    kinds = [type(b.layer) for b in model.blocks]
    assert kinds == [LinearAttention, ReluMLP] * 3 + [LinearAttention]
    assert all(b.layer.hidden == 4 for b in model.blocks if isinstance(b.layer, ReluMLP))
    assert model.width == 4 * 4 + 5
    assert not any(p.requires_grad for p in model.parameters())


def test_hook_protocol():
    model = in_context_ista_transformer(6, [0.1, 0.1, 0.05], [0.01, 0.01, 0.01])
    t = _task(4, 9, 6, 2, 2)
    X, y, x_query, _ = t.context_and_query()
    out, cache = run_with_cache(model, X, y, x_query)
    assert torch.equal(out, model(X, y, x_query))
    assert torch.equal(model.readout(model.run_blocks(model.embed(X, y, x_query))), out)
    states = cache.stack()  # (L + 1, B, T, D)
    assert states.shape == (2 * 3 + 2, 4, 9 + 1 + 6, model.width)
    per_step = model.readout(states)[[model.hidden_index_of_step(k) for k in range(4)]]
    assert torch.allclose(per_step, model.predictions(X, y, x_query), atol=0)
    estimates = model.read_estimate(states)[[model.estimate_block_of_step(k) + 1 for k in range(4)]]
    assert torch.equal(estimates, model.iterates(X, y))
    assert model.takes_query and model.steps == 3
    assert model.query_position(9) == 9 and list(model.x_token_positions(9)) == list(range(9))
    assert [model.block_of_step(k) for k in range(4)] == [0, 2, 4, 6]
    assert [model.estimate_block_of_step(k) for k in range(4)] == [-1, 1, 3, 5]


@pytest.mark.parametrize(
    "call, error, words",
    [
        (lambda m, X, y, q: m(torch.full_like(X, float("nan")), y, q), ValueError, ["X", "NaN"]),
        (lambda m, X, y, q: m.iterates(X, torch.full_like(y, float("nan"))), ValueError, ["y", "NaN"]),
        (lambda m, X, y, q: m(X, y, torch.full_like(q, float("inf"))), ValueError, ["x_query", "NaN or infinite"]),
        (lambda m, X, y, q: m.iterates(X[..., :3], y), ValueError, ["X", "(B, n, 5)", "d = 5"]),
        (lambda m, X, y, q: m.iterates(X, y[:, :2]), ValueError, ["y", "(B, n)"]),
        (lambda m, X, y, q: m.iterates(X.float(), y.float()), TypeError, ["X", "float32", "float64"]),
        (lambda m, X, y, q: m(X, y, None), TypeError, ["x_query"]),
        (lambda m, X, y, q: m.block_of_step(3), ValueError, ["k", "steps = 2"]),
        (lambda m, X, y, q: in_context_ista_transformer(5, [0.1, 0.1], [0.01]), ValueError, ["one entry per step", "2 and 1"]),
        (lambda m, X, y, q: in_context_ista_transformer(5, [0.1], [-0.01]), ValueError, ["thresholds", ">= 0"]),
        (lambda m, X, y, q: in_context_ista_transformer(5, [0.0], [0.01]), ValueError, ["step_sizes", "> 0"]),
        (lambda m, X, y, q: in_context_ista_transformer(5, [float("nan")], [0.01]), ValueError, ["step_sizes", "finite"]),
        (lambda m, X, y, q: in_context_ista_transformer(5, 0.1, [0.01]), TypeError, ["step_sizes", "sequence"]),
        (lambda m, X, y, q: in_context_ista_transformer(5, torch.ones(2, 2), [0.01]), ValueError, ["step_sizes", "1-D"]),
        (lambda m, X, y, q: in_context_ista_transformer(0, [0.1], [0.01]), ValueError, ["d", ">= 1"]),
        (lambda m, X, y, q: in_context_ista_transformer(3, [0.1], [0.01], normalize_steps="yes"), TypeError, ["normalize_steps"]),
    ],
)
def test_bad_input_gets_a_clear_error(call, error, words):
    model = in_context_ista_transformer(5, [0.1, 0.1], [0.01, 0.01])
    X, y, q, _ = _task(2, 6, 5, 2, 0).context_and_query()
    with pytest.raises(error) as info:
        call(model, X, y, q)
    for word in words:
        assert word in str(info.value), f"{word!r} not in {str(info.value)!r}"


def test_class_is_exported():
    assert isinstance(in_context_ista_transformer(2, [], []), InContextISTATransformer)
