"""tfnewton.ridge: the batched ridge probe, its penalty choice, R², and the one split helper."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tfnewton import ridge

F64 = torch.float64

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- split_indices


@settings(max_examples=30, deadline=None)
@given(num=st.integers(2, 300), fraction=st.floats(0.01, 0.99), seed=st.integers(0, 10_000))
def test_split_indices_is_a_partition_of_the_stated_size(num, fraction, seed):
    count = max(1, int(round(fraction * num)))
    if count >= num:
        with pytest.raises(ValueError, match="cannot hold out"):
            ridge.split_indices(num, fraction, generator=torch.Generator().manual_seed(seed))
        return
    held, rest = ridge.split_indices(num, fraction, generator=torch.Generator().manual_seed(seed))
    assert len(held) == count and len(rest) == num - count
    assert sorted(held.tolist() + rest.tolist()) == list(range(num))
    # one randperm, as every caller drew it before this helper existed
    order = torch.randperm(num, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(torch.cat([held, rest]), order)


def test_split_indices_refuses_bad_fractions():
    for bad in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="test_fraction"):
            ridge.split_indices(10, bad, name="test_fraction")


# --------------------------------------------------------------------------- R²


def test_r2_score_matches_scikit_learn():
    from sklearn.metrics import r2_score

    g = np.random.default_rng(0)
    t, p = g.normal(size=(50, 3)), g.normal(size=(50, 3))
    ours = ridge.r2_score(torch.from_numpy(p), torch.from_numpy(t)).numpy()
    np.testing.assert_allclose(ours, r2_score(t, p, multioutput="raw_values"), rtol=1e-12)


# --------------------------------------------------------------------------- one probe


def test_fit_linear_probe_equals_scikit_learn_ridge_at_the_chosen_penalty():
    from sklearn.linear_model import Ridge

    g = torch.Generator().manual_seed(1)
    F = torch.randn(300, 6, generator=g, dtype=F64) * torch.tensor([1, 2, 3, 0.1, 5, 1.0], dtype=F64)
    Y = F @ torch.randn(6, 2, generator=g, dtype=F64) + 0.5 * torch.randn(300, 2, generator=g, dtype=F64)
    probe = ridge.fit_linear_probe(F, Y, generator=torch.Generator().manual_seed(0))
    mean, std = F.mean(0).numpy(), F.std(0).numpy()  # torch's std is unbiased (ddof = 1)
    Z = (F.numpy() - mean) / std
    for k in range(2):
        ref = Ridge(alpha=300 * float(probe.penalty[k]), fit_intercept=True).fit(Z, Y[:, k].numpy())
        np.testing.assert_allclose(probe.coef[:, k].numpy(), ref.coef_, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(float(probe.intercept[k]), ref.intercept_, rtol=1e-9)
    Fn = torch.randn(100, 6, generator=g, dtype=F64)
    assert probe.predict(Fn).shape == (100, 2) and probe.score(Fn, Fn @ probe.coef).shape == (2,)


@settings(max_examples=8, deadline=None)
@given(P=st.integers(1, 12), K=st.integers(1, 3), seed=st.integers(0, 1000))
def test_fit_linear_probe_recovers_an_exact_linear_map_on_held_out_rows(P, K, seed):
    g = torch.Generator().manual_seed(seed)
    F = torch.randn(20 * P + 40, P, generator=g, dtype=F64)
    A = torch.randn(P, K, generator=g, dtype=F64)
    T = F @ A + 3.0
    probe = ridge.fit_linear_probe(F[:-30], T[:-30], generator=g)
    assert bool((probe.score(F[-30:], T[-30:]) > 0.9999).all())


def test_fit_linear_probe_picks_a_large_penalty_for_noise_and_a_small_one_for_signal():
    g = torch.Generator().manual_seed(2)
    F = torch.randn(400, 10, generator=g, dtype=F64)
    signal = F @ torch.randn(10, generator=g, dtype=F64)
    noise = torch.randn(400, generator=g, dtype=F64)
    small = ridge.fit_linear_probe(F, signal, generator=g).penalty
    large = ridge.fit_linear_probe(F, noise, generator=g).penalty
    assert float(small) <= 1e-6 and float(large) >= 1e-2
    probe = ridge.fit_linear_probe(F, signal, generator=g)
    assert probe.predict(F).shape == (400,) and probe.score(F, signal).ndim == 0


def test_float32_features_are_solved_in_float64_and_answered_in_float32():
    g = torch.Generator().manual_seed(3)
    F = torch.randn(200, 4, generator=g, dtype=F64)
    t = F @ torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=F64)
    probe = ridge.fit_linear_probe(F.float(), t.float(), generator=torch.Generator().manual_seed(0))
    assert probe.coef.dtype == F64 and probe.predict(F.float()).dtype == torch.float32


def test_fit_linear_probe_refuses_too_few_problems_and_bad_shapes():
    F = torch.randn(40, 64, dtype=F64)
    with pytest.raises(ValueError, match="too few probe problems.*dimension 64"):
        ridge.fit_linear_probe(F, torch.randn(40, dtype=F64))
    with pytest.raises(ValueError, match="one row per problem"):
        ridge.fit_linear_probe(F, torch.randn(39, dtype=F64))
    with pytest.raises(ValueError, match="val_fraction"):
        ridge.fit_linear_probe(F, torch.randn(40, dtype=F64), val_fraction=1.5)
    with pytest.raises(ValueError, match="penalties"):
        ridge.fit_linear_probe(torch.randn(400, 3, dtype=F64), torch.randn(400, dtype=F64), penalties=[-1.0])
    probe = ridge.fit_linear_probe(torch.randn(400, 3, dtype=F64), torch.randn(400, dtype=F64))
    with pytest.raises(ValueError, match=r"features must have shape \(N, 3\)"):
        probe.predict(torch.randn(10, 4, dtype=F64))
    with pytest.raises(RuntimeError, match="not fitted"):
        ridge.RidgeProbe().predict(torch.randn(10, 3, dtype=F64))
    with pytest.raises(ValueError, match="validation must be a bool mask"):
        ridge.RidgeProbe().fit(torch.randn(40, 3, dtype=F64), torch.randn(40, dtype=F64), validation=torch.zeros(40))


# --------------------------------------------------------------------------- one probe per layer


def test_the_batched_probe_is_one_probe_per_layer():
    """Fitting L layers at once equals fitting each layer alone (same split, same penalties)."""
    g = torch.Generator().manual_seed(4)
    L, N, P = 3, 240, 5
    F = torch.randn(L, N, P, generator=g, dtype=F64) * torch.tensor([1.0, 10.0, 0.1], dtype=F64).reshape(L, 1, 1)
    T = torch.stack([F[0, :, 0] + F[1, :, 1], torch.randn(N, generator=g, dtype=F64)], dim=1)  # (N, 2)
    probe = ridge.RidgeProbe(val_fraction=0.25)
    val = probe.validation_split(N, torch.Generator().manual_seed(0))
    batched = ridge.RidgeProbe(val_fraction=0.25).fit(F, T, validation=val)
    assert batched.coef.shape == (L, P, 2) and batched.penalty.shape == (L, 2)
    assert batched.mean.shape == (L, P) and batched.intercept.shape == (L, 2)
    Fn = torch.randn(L, 50, P, generator=g, dtype=F64)
    for layer in range(L):
        alone = ridge.RidgeProbe(val_fraction=0.25).fit(F[layer], T, validation=val)
        assert torch.equal(alone.penalty, batched.penalty[layer])
        torch.testing.assert_close(alone.coef, batched.coef[layer], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(alone.predict(Fn[layer]), batched.predict(Fn)[layer], rtol=1e-12, atol=1e-12)
    assert batched.score(Fn, T[:50]).shape == (L, 2)
    # the default validation split is the one validation_split draws from the same generator
    default = ridge.RidgeProbe(val_fraction=0.25).fit(F, T, generator=torch.Generator().manual_seed(0))
    assert torch.equal(default.coef, batched.coef)


def test_linear_probe_is_the_one_layer_ridge_probe():
    assert ridge.LinearProbe is ridge.RidgeProbe
    probe = ridge.fit_linear_probe(torch.randn(100, 2, dtype=F64), torch.randn(100, dtype=F64))
    assert isinstance(probe, ridge.LinearProbe) and probe.coef.shape == (2, 1) and probe.squeeze
