"""LISTA, LISTA-CP and the in-context variant (tfnewton.sparse): maths, training, scores, bad input."""

from __future__ import annotations

import functools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tfnewton import algorithms, tasks
from tfnewton.sparse import (
    LISTA,
    LISTACP,
    InContextLISTA,
    choose_lambda,
    fitted_rate,
    prediction_error,
    recovery_error,
)

pytestmark = pytest.mark.usefixtures("one_thread")

F64 = torch.float64


def _problems(B, n, d, s, seed, **kw):
    return tasks.sample_sparse_recovery(B, n, d, sparsity=s, generator=torch.Generator().manual_seed(seed), dtype=F64, **kw)


def _fixed_matrix_sampler(n=8, d=12, s=2, seed=0):
    A = _problems(1, n, d, 1, seed, scaling="garg").X[0]
    return A, functools.partial(tasks.sample_sparse_recovery, n=n, d=d, sparsity=s, noise_std=0.05,
                                scaling="garg", measurement_matrix=A, dtype=F64)


# --------------------------------------------------------------------------- the maths


@settings(max_examples=25)
@given(st.integers(1, 4), st.integers(2, 12), st.integers(2, 14), st.integers(0, 6),
       st.floats(0.2, 1.5), st.floats(0.01, 0.5), st.integers(0, 10**6))
def test_in_context_variant_with_a_constant_schedule_is_ista(B, n, d, K, step_factor, lam, seed):
    t = _problems(B, n, d, min(2, d), seed, noise_std=0.1)
    eta = step_factor / torch.linalg.matrix_norm(t.X, ord=2).max().item() ** 2
    model = InContextLISTA(K, step_size=eta, lam=lam, dtype=F64)
    expected = algorithms.ista(t.X, t.y, lam, K, lr=eta)
    got = model(t.X, t.y)
    assert got.shape == (K + 1, B, d)
    assert torch.allclose(got, expected, rtol=0, atol=1e-12)


def test_in_context_variant_uses_each_layers_own_step_and_threshold():
    t = _problems(3, 7, 9, 2, 1, noise_std=0.1)
    gammas, thetas = [0.3, 0.05, 0.2], [0.02, 0.1, 0.001]
    model = InContextLISTA.from_schedule(gammas, thetas, dtype=F64)
    beta = torch.zeros(3, 9, dtype=F64)
    for k, (g, th) in enumerate(zip(gammas, thetas)):
        z = beta + g * (t.X.transpose(1, 2) @ (t.y - (t.X @ beta.unsqueeze(-1)).squeeze(-1)).unsqueeze(-1)).squeeze(-1)
        beta = torch.sign(z) * torch.clamp(z.abs() - th, min=0)
        assert torch.allclose(model(t.X, t.y)[k + 1], beta, atol=1e-14)
    assert torch.allclose(model.step_sizes, torch.tensor(gammas, dtype=F64))


@pytest.mark.parametrize("cls", [LISTA, LISTACP])
def test_fixed_matrix_networks_start_as_ista_on_their_matrix(cls):
    A, sampler = _fixed_matrix_sampler()
    t = sampler(5, generator=torch.Generator().manual_seed(3))
    model = cls(A, 6, lam=0.3)
    eta = 1.0 / torch.linalg.matrix_norm(A, ord=2).item() ** 2
    assert torch.allclose(model(t.X, t.y), algorithms.ista(t.X, t.y, 0.3, 6, lr=eta), atol=1e-12)
    if cls is LISTA:  # LISTA reads y only: the matrix argument may be left out
        assert torch.equal(model(None, t.y), model(t.X, t.y))


# --------------------------------------------------------------------------- training


def _held_out_error(model, t):
    with torch.no_grad():
        return recovery_error(model(t.X, t.y)[-1], t.w).item()


@pytest.mark.parametrize("cls", [LISTA, LISTACP])
def test_fit_improves_a_fixed_matrix_network_and_repeats(cls):
    A, sampler = _fixed_matrix_sampler()
    held_out = sampler(256, generator=torch.Generator().manual_seed(99))
    before = _held_out_error(cls(A, 4, lam=0.3), held_out)
    a = cls(A, 4, lam=0.3).fit(sampler, steps=60, batch=32, lr=0.1)
    b = cls(A, 4, lam=0.3).fit(sampler, steps=60, batch=32, lr=0.1)
    after = _held_out_error(a, held_out)
    assert after < 0.8 * before, (before, after)
    assert len(a.history) == 60 and a.history == b.history  # seeded: the same fit twice
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_fit_improves_the_in_context_variant_and_sets_its_first_step():
    sampler = functools.partial(tasks.sample_sparse_recovery, n=8, d=12, sparsity=2, noise_std=0.05,
                                scaling="garg", dtype=F64)
    held_out = sampler(256, generator=torch.Generator().manual_seed(99))
    model = InContextLISTA(4, lam=0.3, dtype=F64)
    with pytest.raises(RuntimeError, match="step_size"):
        model(held_out.X, held_out.y)
    model.fit(sampler, steps=0)  # nothing to fit, no step size set
    assert not model.initialized
    model.fit(sampler, steps=1, lr=1e-12)  # the first batch sets γ = 1/median λ_max(XᵀX)
    first = sampler(64, generator=torch.Generator().manual_seed(0))
    expected = 1.0 / (torch.linalg.matrix_norm(first.X, ord=2) ** 2).median().item()
    assert torch.allclose(model.step_sizes, torch.full((4,), expected, dtype=F64), rtol=1e-6)
    before = _held_out_error(model, held_out)
    model.fit(sampler, steps=200, batch=32, lr=0.1)
    assert _held_out_error(model, held_out) < 0.8 * before
    assert (model.thresholds > 0).all()
    other = _problems(4, 5, 7, 2, 3)  # any n and d: the matrix is the prompt's own
    assert model(other.X, other.y).shape == (5, 4, 7)


def test_normalized_steps_divide_by_each_prompts_lambda_max():
    t = _problems(5, 9, 14, 2, 8, noise_std=0.1, correlation=0.5)
    gammas, thetas = [1.0, 1.5, 0.5], [0.01, 0.02, 0.005]
    model = InContextLISTA.from_schedule(gammas, thetas, normalize_steps=True, dtype=F64)
    L = torch.linalg.matrix_norm(t.X, ord=2) ** 2
    for b in range(5):  # one prompt at a time: ISTA-like steps γ_k/L_b
        one = InContextLISTA.from_schedule([g / L[b].item() for g in gammas], thetas, dtype=F64)
        assert torch.allclose(model(t.X, t.y)[:, b], one(t.X[b : b + 1], t.y[b : b + 1])[:, 0], atol=1e-13)
    # the same model on the same prompts scaled by 10: steps adapt, the estimate is the same
    # (y scaled too, so β is unchanged and the thresholds, in β's units, still fit)
    assert torch.allclose(model(10 * t.X, 10 * t.y), model(t.X, t.y), atol=1e-12)
    sampler = functools.partial(tasks.sample_sparse_recovery, n=8, d=12, sparsity=2, noise_std=0.05, scaling="garg", dtype=F64)
    fitted = InContextLISTA(3, lam=0.3, normalize_steps=True, dtype=F64).fit(sampler, steps=1, lr=1e-12)
    first = sampler(64, generator=torch.Generator().manual_seed(0))
    typical = 1.0 / (torch.linalg.matrix_norm(first.X, ord=2) ** 2).median().item()
    assert torch.allclose(fitted.step_sizes, torch.ones(3, dtype=F64))
    assert torch.allclose(fitted.thresholds, torch.full((3,), 0.3 * typical, dtype=F64), rtol=1e-6)


def test_fixed_matrix_network_refuses_prompts_of_another_matrix():
    A, _ = _fixed_matrix_sampler()
    fresh = functools.partial(tasks.sample_sparse_recovery, n=8, d=12, sparsity=2, scaling="garg", dtype=F64)
    with pytest.raises(ValueError, match="one measurement matrix.*measurement_matrix=model.matrix"):
        LISTA(A, 3).fit(fresh, steps=2)


def test_fit_loss_last_layer_only_and_progress():
    A, sampler = _fixed_matrix_sampler()
    model = LISTA(A, 3).fit(sampler, steps=3, loss="last", progress=True)
    assert len(model.history) == 3


# --------------------------------------------------------------------------- scores


def test_recovery_and_prediction_errors():
    beta = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=F64)
    est = torch.stack([torch.zeros_like(beta), beta + torch.tensor([[0.5, 0.0], [0.0, 0.0]], dtype=F64), beta])
    assert torch.allclose(recovery_error(est, beta), torch.tensor([1.0, 0.25 / 5, 0.0], dtype=F64))
    assert recovery_error(beta, beta).ndim == 0
    xq = torch.tensor([[1.0, 1.0], [2.0, 0.0]], dtype=F64)
    yq = torch.tensor([1.0, 1.0], dtype=F64)
    # layer 0 predicts 0: errors 1 and 1; layer 1: 1.5 − 1 and 0 − 1; layer 2: 0 and −1.
    assert torch.allclose(prediction_error(est, xq, yq), torch.tensor([1.0, 0.625, 0.5], dtype=F64))


def test_fitted_rate():
    errors = [0.9 * 0.5**k for k in range(8)]
    assert fitted_rate(errors) == pytest.approx(0.5)
    floored = [max(e, 0.05) for e in errors]  # the floor from layer 5 on
    assert fitted_rate(floored, layers=range(0, 8)) > 0.6  # a floor slows the fitted rate
    assert fitted_rate(floored, layers=range(0, 5)) == pytest.approx(0.5)


def test_choose_lambda_picks_the_best_candidate_on_the_validation_prompts():
    t = _problems(64, 12, 20, 2, 5, noise_std=0.05)
    grid = [1e-3, 0.03, 0.3, 30.0]
    chosen = choose_lambda("fista", t.X, t.y, t.w, 50, grid)
    errors = {lam: recovery_error(algorithms.fista(t.X, t.y, lam, 50)[-1], t.w).item() for lam in grid}
    assert chosen == min(errors, key=errors.get) and chosen != 30.0
    assert choose_lambda(algorithms.ista, t.X, t.y, t.w, 5, [0.1]) == 0.1


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "call, error, words",
    [
        (lambda A, t: LISTA(A, 3, lam=0.0), ValueError, ["lam", "> 0"]),
        (lambda A, t: LISTACP(A, 3, lam=-1.0), ValueError, ["lam", "> 0"]),
        (lambda A, t: InContextLISTA(3, lam=0.0), ValueError, ["lam", "> 0"]),
        (lambda A, t: InContextLISTA(3, step_size=-0.1), ValueError, ["step_size", "> 0"]),
        (lambda A, t: LISTA(A[0], 3), ValueError, ["matrix", "2 dimensions"]),
        (lambda A, t: LISTA(A.float().unsqueeze(0), 3), ValueError, ["matrix", "2 dimensions"]),
        (lambda A, t: LISTA(A, -1), ValueError, ["layers", ">= 0"]),
        (lambda A, t: LISTA(A, 3)(t.X[:, :5], t.y[:, :5]), ValueError, ["X", "(B, 8, 12)", "one measurement matrix", "(4, 5, 12)"]),
        (lambda A, t: LISTA(A, 3)(t.X.transpose(1, 2), t.y), ValueError, ["X", "(B, 8, 12)"]),
        (lambda A, t: LISTA(A, 3)(None, t.y[:, :5]), ValueError, ["y", "(B, 8)"]),
        (lambda A, t: LISTACP(A, 3)(t.X, t.y.float()), TypeError, ["y", "dtype"]),
        (lambda A, t: LISTA(A, 3)(t.X.float(), t.y.float()), TypeError, ["X", "float32", "model"]),
        (lambda A, t: LISTA(A, 3)(torch.full_like(t.X, float("nan")), t.y), ValueError, ["X", "NaN"]),
        (lambda A, t: InContextLISTA(3, step_size=0.1, dtype=F64)(t.X, torch.full_like(t.y, float("nan"))), ValueError, ["y", "NaN"]),
        (lambda A, t: InContextLISTA(3, step_size=0.1, dtype=F64)(t.X, t.y[:, :3]), ValueError, ["y", "(B, n)"]),
        (lambda A, t: InContextLISTA(3, step_size=0.1).fit("sampler"), TypeError, ["sampler", "callable"]),
        (lambda A, t: InContextLISTA(3, step_size=0.1).fit(lambda b, generator: (t.X, t.y)), TypeError, ["sampler", "X, y and w"]),
        (lambda A, t: InContextLISTA(3, step_size=0.1).fit(lambda b, generator: t, loss="first"), ValueError, ["loss", "'first'"]),
        (lambda A, t: InContextLISTA.from_schedule([0.1, 0.2], [0.1]), ValueError, ["same length"]),
        (lambda A, t: InContextLISTA.from_schedule([0.1], [-0.1]), ValueError, ["thresholds", "> 0"]),
        (lambda A, t: InContextLISTA(3, normalize_steps=1), TypeError, ["normalize_steps", "True or False"]),
        (lambda A, t: InContextLISTA(3, step_size=1.0, normalize_steps=True, dtype=F64)(t.X, t.y), RuntimeError, ["fit first"]),
        (lambda A, t: InContextLISTA(3, step_size=0.1, dtype=F64).predict(t.X, t.y, t.X[:, 0, :3]), ValueError, ["x_query", "(4, 12)"]),
        (lambda A, t: recovery_error(t.w[:, :3], t.w), ValueError, ["estimates", "(B, d)"]),
        (lambda A, t: fitted_rate([1.0, 0.0, 0.1]), ValueError, ["errors", "> 0"]),
        (lambda A, t: fitted_rate([1.0, 0.5], layers=[1]), ValueError, ["layers", "at least 2"]),
        (lambda A, t: fitted_rate([1.0, 0.5], layers=[0, 2]), ValueError, ["layers", "[0, 1]"]),
        (lambda A, t: choose_lambda("lars", t.X, t.y, t.w, 5, [0.1]), ValueError, ["algorithm", "fista"]),
        (lambda A, t: choose_lambda("ista", t.X, t.y, t.w, 5, [0.1, 0.0]), ValueError, ["lam", "> 0"]),
        (lambda A, t: choose_lambda("ista", t.X, t.y, t.w, 5, []), ValueError, ["grid"]),
    ],
)
def test_bad_input_gets_a_clear_error(call, error, words):
    A, sampler = _fixed_matrix_sampler()
    t = sampler(4, generator=torch.Generator().manual_seed(1))
    with pytest.raises(error) as info:
        call(A, t)
    for word in words:
        assert word in str(info.value), f"{word!r} not in {str(info.value)!r}"


# --------------------------------------------------------------------------- the benchmark


def test_sparse_benchmark_runs_and_reports_every_method(capsys):
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).parent.parent / "benchmarks" / "sparse.py"
    spec = importlib.util.spec_from_file_location("bench_sparse", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = bench.parse(["--small", "--layers", "3", "--fit-steps", "3", "--test", "64", "--batch", "8"])
    assert (args.d, args.sparsity, args.n, args.layers) == (10, 2, 8, 3)
    out = bench.run(args)
    assert set(out["results"]) == {"ISTA", "FISTA", "LISTA", "LISTA-CP", "in-context variant", "in-context, γ_k/L"}
    assert out["deviation"] <= 1e-9  # the construction runs the fitted variants
    assert len(out["construction"].blocks) == 2 * 3 + 1
    for by_setting in out["results"].values():
        assert len(by_setting) == 4 and all(err.shape == (4,) and pred.shape == (4,) for err, pred in by_setting.values())
        assert all(err[0].item() == pytest.approx(1.0) for err, _ in by_setting.values())  # β₀ = 0 scores 1
    bench.report(out)
    text = capsys.readouterr().out
    assert "claim (b)" in text and "LISTA: unseen fixed matrix / its own matrix" in text and "rate 0..K" in text


def test_the_learned_methods_are_registered():
    A, sampler = _fixed_matrix_sampler()
    t = sampler(5, generator=torch.Generator().manual_seed(2))
    entry = algorithms.ALGORITHMS["lista"]
    assert entry.needs_fit and entry.task == "sparse_recovery"
    model = entry.build(matrix=A, layers=3, lam=0.3)
    assert isinstance(model, LISTA) and model.layers == 3
    with pytest.raises(ValueError, match="needs matrix"):
        entry.build(layers=3)
    assert isinstance(algorithms.ALGORITHMS["lista_cp"].build(matrix=A, layers=2), LISTACP)
    icl = algorithms.ALGORITHMS["in_context_lista"].build(layers=4, step_size=0.01, dtype=F64)
    assert torch.equal(algorithms.iterates(icl, t.X, t.y, 4), icl(t.X, t.y).detach())
    assert algorithms.iterates(model, t.X, t.y, 2).shape == (3, 5, 12)


def test_oracle_least_squares_is_least_squares_on_the_support():
    from tfnewton.sparse import oracle_least_squares

    gen = torch.Generator().manual_seed(3)
    X = torch.randn(4, 12, 6, generator=gen, dtype=torch.float64)
    support = torch.zeros(4, 6, dtype=torch.bool)
    support[:, [1, 4]] = True
    support[2, 0] = True
    y = torch.randn(4, 12, generator=gen, dtype=torch.float64)
    got = oracle_least_squares(X, y, support)
    for b in range(4):
        cols = support[b].nonzero().squeeze(-1)
        want = torch.linalg.lstsq(X[b][:, cols], y[b]).solution
        assert torch.allclose(got[b, cols], want, atol=1e-12)
        assert (got[b, ~support[b]] == 0).all()
    with pytest.raises(ValueError, match="support"):
        oracle_least_squares(X, y, support[:, :5])
