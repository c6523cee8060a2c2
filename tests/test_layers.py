"""tfnewton.layers against plain numpy loops written from the formula, token by token."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tfnewton.layers import LinearAttention, ReluMLP, Residual, ResidualStack, count_heads


pytestmark = pytest.mark.usefixtures("one_thread")


def attention_loop(H, W_Q, W_K, W_V, W_O, causal, normalize, scale=1.0):
    """out_t = scale · Σ_h W_O^h Σ_{s ∈ S(t)} (W_V^h h_s) ⟨W_K^h h_s, W_Q^h h_t⟩ [/|S(t)|], one problem."""
    T, D = H.shape
    out = np.zeros((T, D))
    for t in range(T):
        keys = range(t + 1) if causal else range(T)
        for h in range(W_Q.shape[0]):
            q = W_Q[h] @ H[t]
            acc = np.zeros(W_V.shape[1])
            for s in keys:
                acc += (W_V[h] @ H[s]) * ((W_K[h] @ H[s]) @ q)
            if normalize:
                acc /= len(keys)
            out[t] += W_O[h] @ acc
    return scale * out


def _np(t):
    return t.detach().double().numpy()


@settings(deadline=None, max_examples=25)
@given(
    B=st.integers(1, 3),
    T=st.integers(1, 12),
    D=st.integers(1, 9),
    heads=st.integers(1, 3),
    dk=st.integers(1, 6),
    dv=st.integers(1, 6),
    causal=st.booleans(),
    normalize=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_linear_attention_matches_loop(B, T, D, heads, dk, dv, causal, normalize, seed):
    torch.manual_seed(seed)
    attn = LinearAttention(D, heads, dk, dv, causal=causal, normalize=normalize, scale=0.7, dtype=torch.float64)
    H = torch.randn(B, T, D, dtype=torch.float64)
    out = attn(H)
    assert out.shape == (B, T, D) and out.dtype == torch.float64
    for b in range(B):
        ref = attention_loop(_np(H[b]), _np(attn.W_Q), _np(attn.W_K), _np(attn.W_V), _np(attn.W_O), causal, normalize, 0.7)
        np.testing.assert_allclose(_np(out[b]), ref, rtol=1e-10, atol=1e-10 * (1 + np.abs(ref).max()))


@pytest.mark.parametrize("T", [2, 50])  # both association orders: (QKᵀ)V for few tokens, Q(KᵀV) for many
def test_both_association_orders_agree(T):
    torch.manual_seed(0)
    attn = LinearAttention(8, 2, 4, 3, dtype=torch.float64)
    H = torch.randn(2, T, 8, dtype=torch.float64)
    ref = np.stack([attention_loop(_np(H[b]), _np(attn.W_Q), _np(attn.W_K), _np(attn.W_V), _np(attn.W_O), False, False) for b in range(2)])
    np.testing.assert_allclose(_np(attn(H)), ref, rtol=1e-10, atol=1e-10)


def test_weight_views_write_through():
    attn = LinearAttention(5, 2, 3, 4)
    with torch.no_grad():
        attn.in_proj.zero_()
        attn.out_proj.zero_()
        attn.W_Q[1, 2, 4] = 1.0
        attn.W_K[0, 0, 1] = 2.0
        attn.W_V[1, 3, 0] = 3.0
        attn.W_O[1, 4, 3] = 5.0
    h, dk = 2, 3
    assert attn.in_proj[1 * dk + 2, 4] == 1.0
    assert attn.in_proj[h * dk + 0, 1] == 2.0
    assert attn.in_proj[2 * h * dk + 1 * 4 + 3, 0] == 3.0
    assert attn.out_proj[4, 1 * 4 + 3] == 5.0
    assert attn.W_Q.shape == (2, 3, 5) and attn.W_V.shape == (2, 4, 5) and attn.W_O.shape == (2, 5, 4)


def test_causal_attention_ignores_the_future():
    torch.manual_seed(1)
    attn = LinearAttention(6, 2, causal=True)
    H = torch.randn(2, 7, 6)
    H2 = H.clone()
    H2[:, 4:] += torch.randn(2, 3, 6)
    torch.testing.assert_close(attn(H)[:, :4], attn(H2)[:, :4])


def test_dtype_is_kept_and_gradients_flow():
    attn = LinearAttention(4, 2)
    H = torch.randn(3, 5, 4, requires_grad=True)
    out = attn(H)
    assert out.dtype == torch.float32
    out.square().sum().backward()
    assert attn.in_proj.grad is not None and H.grad is not None


def test_relu_mlp_matches_numpy():
    torch.manual_seed(2)
    mlp = ReluMLP(4, 7, dtype=torch.float64)
    H = torch.randn(2, 3, 4, dtype=torch.float64)
    W1, b1 = _np(mlp.fc_in.weight), _np(mlp.fc_in.bias)
    W2, b2 = _np(mlp.fc_out.weight), _np(mlp.fc_out.bias)
    ref = np.maximum(_np(H) @ W1.T + b1, 0) @ W2.T + b2
    np.testing.assert_allclose(_np(mlp(H)), ref, rtol=1e-12)
    assert ReluMLP(4, 7, bias=False).fc_in.bias is None


def test_residual_stack_returns_every_stream():
    torch.manual_seed(3)
    stack = ResidualStack([Residual(LinearAttention(6, 2)), Residual(ReluMLP(6, 12)), Residual(LinearAttention(6, 3, 2))])
    H = torch.randn(2, 4, 6)
    out, hidden = stack(H, return_hidden=True)
    assert hidden.shape == (4, 2, 4, 6) and stack.n_layers == 3
    torch.testing.assert_close(hidden[0], H)
    torch.testing.assert_close(hidden[-1], out)
    torch.testing.assert_close(stack(H), out)
    # hidden[ℓ] is what a forward hook on block ℓ−1 sees: the hook protocol of the probes
    seen = []
    handles = [b.register_forward_hook(lambda m, i, o: seen.append(o)) for b in stack.blocks]
    stack(H)
    for hdl in handles:
        hdl.remove()
    for ell, o in enumerate(seen, start=1):
        torch.testing.assert_close(o, hidden[ell])
    torch.testing.assert_close(hidden[1], H + stack.blocks[0].layer(H))
    assert [count_heads(b) for b in stack.blocks] == [2, 0, 3]


def test_residual_with_norm():
    norm = torch.nn.LayerNorm(4)
    block = Residual(ReluMLP(4, 5), norm=norm)
    H = torch.randn(2, 3, 4)
    torch.testing.assert_close(block(H), H + block.layer(norm(H)))


def test_bad_inputs_name_the_argument():
    attn = LinearAttention(4, 2)
    with pytest.raises(ValueError, match=r"H must have shape \(B, T, 4\)"):
        attn(torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match="H must have shape"):
        attn(torch.randn(3, 4))
    with pytest.raises(TypeError, match="H must be a torch.Tensor"):
        attn(np.zeros((1, 2, 4)))
    with pytest.raises(TypeError, match="floating"):
        attn(torch.zeros(1, 2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="n_heads"):
        LinearAttention(4, 0)
    with pytest.raises(ValueError, match="head_dim"):
        LinearAttention(4, 2, head_dim=-1)
    with pytest.raises(ValueError, match="d_model"):
        ReluMLP(0, 3)
    with pytest.raises(TypeError, match="layer"):
        Residual("not a module")
