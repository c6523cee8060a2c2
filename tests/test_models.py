"""tfnewton.models: the three families, the hook protocol, causality, checkpoints."""

import pickle

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tfnewton.models import (
    KINDS,
    PretrainedError,
    build_model,
    list_pretrained,
    load_checkpoint,
    load_pretrained,
    model_from_config,
    save_checkpoint,
)
from tfnewton.models.gpt2 import interleave
from tfnewton.models.pretrained import PRETRAINED_DIR

TINY = dict(n_layers=2, width=16, heads=2)


def _prompts(B, n, d, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, n, d, generator=g, dtype=dtype), torch.randn(B, n, generator=g, dtype=dtype)


# --------------------------------------------------------------------------- shapes and the hook protocol


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("layernorm", [True, False])
def test_forward_shape_dtype_and_hook_protocol(kind, layernorm):
    model = build_model(kind, 3, layernorm=layernorm, n_points=6, seed=0, **TINY).double()
    X, y = _prompts(4, 6, 3)
    out = model(X, y)
    assert out.shape == (4, 6) and out.dtype == torch.float64
    assert isinstance(model.blocks, torch.nn.ModuleList) and len(model.blocks) == 2
    H = model.embed(X, y)
    assert H.shape == (4, 12, 16)
    for block in model.blocks:
        H = block(H)
        assert H.shape == (4, 12, 16)
    assert torch.equal(model.readout(H), out)
    pos = model.x_token_positions(6)
    assert pos.dtype == torch.long and pos.tolist() == [0, 2, 4, 6, 8, 10]
    # the x tokens are where the read-out looks: changing only the y-token states changes nothing
    H2 = H.clone()
    H2[:, 1::2] += 1.0
    assert torch.equal(model.readout(H2), out)


def test_float32_model_answers_in_input_dtype():
    model = build_model("gpt2", 2, n_points=4, seed=0, **TINY)
    X, y = _prompts(2, 4, 2, dtype=torch.float64)
    out = model(X, y)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out.float(), model(X.float(), y.float()))


def test_seed_makes_initialisation_reproducible_without_touching_global_rng():
    state = torch.random.get_rng_state()
    a = build_model("gpt2", 3, seed=7, **TINY)
    b = build_model("gpt2", 3, seed=7, **TINY)
    assert torch.equal(torch.random.get_rng_state(), state)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


@settings(deadline=None, max_examples=12)
@given(kind=st.sampled_from(KINDS), n=st.integers(2, 7), i=st.integers(0, 6), seed=st.integers(0, 1000))
def test_prediction_i_ignores_y_i_and_later_pairs(kind, n, i, seed):
    i = min(i, n - 1)
    model = build_model(kind, 3, n_points=7, seed=seed % 5, **TINY).double()
    X, y = _prompts(3, n, 3, seed=seed)
    X2, y2 = X.clone(), y.clone()
    X2[:, i + 1:] += torch.randn_like(X2[:, i + 1:])
    y2[:, i:] += 5.0  # y_i itself must not be used for prediction i
    before, after = model(X, y), model(X2, y2)
    torch.testing.assert_close(after[:, : i + 1], before[:, : i + 1], rtol=0, atol=1e-12)
    if i + 1 < n:  # and later predictions do depend on them (the test can fail)
        assert not torch.allclose(after[:, i + 1:], before[:, i + 1:])


def test_interleave_is_gargs_combine():
    X, y = _prompts(2, 3, 4)
    Z = interleave(X, y)
    assert Z.shape == (2, 6, 4)
    assert torch.equal(Z[:, 0::2], X)
    assert torch.equal(Z[:, 1::2, 0], y) and torch.equal(Z[:, 1::2, 1:], torch.zeros(2, 3, 3, dtype=X.dtype))


def test_gpt2_parameter_names_mirror_hugging_face():
    model = build_model("gpt2", 3, n_layers=1, width=8, heads=2, n_points=4)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == {
        "read_in.weight": (8, 3), "read_in.bias": (8,), "wpe.weight": (8, 8),
        "blocks.0.ln_1.weight": (8,), "blocks.0.ln_1.bias": (8,),
        "blocks.0.attn.c_attn.weight": (24, 8), "blocks.0.attn.c_attn.bias": (24,),
        "blocks.0.attn.c_proj.weight": (8, 8), "blocks.0.attn.c_proj.bias": (8,),
        "blocks.0.ln_2.weight": (8,), "blocks.0.ln_2.bias": (8,),
        "blocks.0.mlp.c_fc.weight": (32, 8), "blocks.0.mlp.c_fc.bias": (32,),
        "blocks.0.mlp.c_proj.weight": (8, 32), "blocks.0.mlp.c_proj.bias": (8,),
        "ln_f.weight": (8,), "ln_f.bias": (8,), "read_out.weight": (1, 8), "read_out.bias": (1,),
    }
    assert model.ln_f.eps == 1e-5


def test_gpt2_block_matches_a_hand_written_reference():
    """One block against an independent float64 loop: pre-LN, causal softmax/sqrt(hs), tanh GELU."""
    torch.manual_seed(0)
    model = build_model("gpt2", 2, n_layers=1, width=8, heads=2, n_points=3).double()
    for p in model.parameters():  # non-trivial LayerNorm and biases too
        torch.nn.init.normal_(p, std=0.3)
    blk = model.blocks[0].requires_grad_(False)
    H = torch.randn(1, 6, 8, dtype=torch.float64)

    def ln(x, mod):
        mu, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
        return (x - mu) / torch.sqrt(var + 1e-5) * mod.weight + mod.bias

    a = ln(H[0], blk.ln_1)
    qkv = a @ blk.attn.c_attn.weight.T + blk.attn.c_attn.bias
    q, k, v = qkv[:, :8], qkv[:, 8:16], qkv[:, 16:]
    heads = []
    for h in range(2):
        sl = slice(4 * h, 4 * h + 4)
        out = torch.zeros(6, 4, dtype=torch.float64)
        for t in range(6):
            s = torch.tensor([q[t, sl] @ k[u, sl] / 2.0 for u in range(t + 1)], dtype=torch.float64)
            out[t] = torch.softmax(s, 0) @ v[: t + 1, sl]
        heads.append(out)
    h1 = H[0] + torch.cat(heads, 1) @ blk.attn.c_proj.weight.T + blk.attn.c_proj.bias
    m = ln(h1, blk.ln_2) @ blk.mlp.c_fc.weight.T + blk.mlp.c_fc.bias
    gelu = 0.5 * m * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (m + 0.044715 * m**3)))
    ref = h1 + gelu @ blk.mlp.c_proj.weight.T + blk.mlp.c_proj.bias
    torch.testing.assert_close(blk(H)[0], ref, rtol=0, atol=1e-12)


def test_gpt2_block_at_a_subset_of_rows_is_the_full_block_sliced():
    """Block(h, rows) computes only the queries at ``rows``; keys and values still come from
    every token, so the result is the full block's output at those rows."""
    torch.manual_seed(1)
    model = build_model("gpt2", 3, n_layers=1, width=12, heads=3, n_points=5).double()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.3)
    block = model.blocks[0]
    H = torch.randn(4, 9, 12, dtype=torch.float64)
    full = block(H)
    for rows in (slice(None, None, 2), slice(1, None, 2), slice(3, 7), slice(8, 9)):
        torch.testing.assert_close(block(H, rows=rows), full[:, rows], rtol=0, atol=1e-12)


@pytest.mark.parametrize("rows", [slice(None), slice(None, None, 2)])
def test_gpt2_cpu_attention_is_sdpas_arithmetic(rows):
    """The CPU path (baddbmm, softmax, bmm) against F.scaled_dot_product_attention itself."""
    import torch.nn.functional as F

    torch.manual_seed(2)
    model = build_model("gpt2", 2, n_layers=1, width=16, heads=4, n_points=6).double()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.5)
    attn = model.blocks[0].attn
    x = torch.randn(3, 11, 16, dtype=torch.float64)
    B, T, C = x.shape
    q, k, v = attn.c_attn(x).view(B, T, 3, 4, 4).permute(2, 0, 3, 1, 4).unbind(0)
    allowed = torch.ones(T, T, dtype=torch.bool).tril()  # query t sees keys s <= t
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)  # (B, H, T, hs)
    ref = attn.c_proj(y.transpose(1, 2).reshape(B, T, C))[:, rows]
    torch.testing.assert_close(attn(x, rows), ref, rtol=0, atol=1e-12)


def test_gpt2_cpu_attention_keeps_scores_and_softmax_in_float32_under_bf16_autocast():
    """Under bf16 autocast the CPU path computes the scores and their softmax in float32 (as
    the GPU's fused kernels do); only the weighted sum of values runs in bf16. With bf16
    scores, a score near 10 would be off by up to 0.03 and the weights by 3 %."""
    from torch.overrides import TorchFunctionMode

    class SoftmaxDtypes(TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.seen = []

        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if getattr(func, "__name__", "") == "softmax":
                self.seen.append((args[0].dtype, out.dtype))
            return out

    model = build_model("gpt2", 2, n_layers=1, width=16, heads=4, n_points=6, seed=0)
    x = torch.randn(3, 11, 16, generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16), SoftmaxDtypes() as mode:
        out = model.blocks[0].attn(x)
    assert mode.seen == [(torch.float32, torch.float32)]
    assert out.dtype == torch.bfloat16  # the projections still run in bf16
    torch.testing.assert_close(out.float(), model.blocks[0].attn(x), rtol=0.05, atol=0.02)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", [1, 2, 7])
def test_skip_unused_gives_the_same_predictions_and_gradients(kind, n):
    """The training loop's fast path: same predictions and same parameter gradients."""
    model = build_model(kind, 3, n_points=7, seed=3, n_layers=3, width=16, heads=2).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel()), dtype=p.dtype))
    X, y = _prompts(5, n, 3, seed=n)

    def loss_and_grads(**kw):
        model.zero_grad(set_to_none=True)
        pred = model(X, y, **kw)
        (pred - y).pow(2).mean().backward()
        return pred.detach(), [p.grad.clone() for p in model.parameters()]

    full, full_grads = loss_and_grads()
    fast, fast_grads = loss_and_grads(skip_unused=True)
    assert fast.shape == (5, n) and fast.dtype == torch.float64
    torch.testing.assert_close(fast, full, rtol=0, atol=1e-12)
    for a, b in zip(fast_grads, full_grads):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_skip_unused_float32_matches_to_rounding():
    model = build_model("gpt2", 5, seed=0)  # the small recipe's shape, float32
    X, y = _prompts(64, 11, 5, dtype=torch.float32)
    torch.testing.assert_close(model(X, y, skip_unused=True), model(X, y), rtol=0, atol=1e-5)


@pytest.mark.cuda
def test_gpt2_cuda_attention_matches_the_cpu_path():
    """On a GPU the model calls SDPA (is_causal, or the mask for a subset of rows)."""
    torch.manual_seed(4)
    model = build_model("gpt2", 3, n_layers=2, width=16, heads=4, n_points=6).double()
    X, y = _prompts(4, 6, 3)
    on_gpu = build_model("gpt2", 3, n_layers=2, width=16, heads=4, n_points=6).double().cuda()
    on_gpu.load_state_dict(model.state_dict())
    for kw in ({}, {"skip_unused": True}):
        torch.testing.assert_close(on_gpu(X.cuda(), y.cuda(), **kw).cpu(), model(X, y), rtol=0, atol=1e-10)


def test_linear_model_uses_the_librarys_layers():
    from tfnewton.layers import LinearAttention, ReluMLP

    model = build_model("linear", 3, **TINY)
    assert isinstance(model.blocks[0].attn.layer, LinearAttention)
    assert model.blocks[0].attn.layer.causal and model.blocks[0].attn.layer.normalize
    assert isinstance(model.blocks[0].mlp.layer, ReluMLP)
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in build_model("linear", 3, layernorm=False, **TINY).modules())


def test_linear_model_without_mlp_is_attention_only():
    model = build_model("linear", 3, mlp=False, **TINY)
    assert all(block.mlp is None for block in model.blocks)
    with pytest.raises(ValueError, match="mlp is an option of the 'linear' model only"):
        build_model("gpt2", 3, mlp=False)


def test_lstm_accepts_any_length():
    model = build_model("lstm", 2, **TINY)
    X, y = _prompts(2, 30, 2, dtype=torch.float32)
    assert model(X, y).shape == (2, 30)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("kind", KINDS)
def test_wrong_d_is_refused_with_a_clear_error(kind):
    model = build_model(kind, 3, **TINY)
    X, y = _prompts(2, 4, 5, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"d = 5.*built for d = 3"):
        model(X, y)


def test_bad_inputs():
    model = build_model("gpt2", 3, n_points=4, **TINY)
    X, y = _prompts(2, 4, 3, dtype=torch.float32)
    with pytest.raises(ValueError, match="n_points = 4"):
        model(*_prompts(2, 5, 3, dtype=torch.float32))
    with pytest.raises(ValueError, match=r"y must have shape \(B, n\)"):
        model(X, y[:, :3])
    with pytest.raises(TypeError, match="X must be a torch.Tensor"):
        model(X.numpy(), y)
    with pytest.raises(ValueError, match=r"shape \(B, n, d\)"):
        model(X[0], y)
    with pytest.raises(TypeError, match="floating"):
        model(X.long(), y)
    with pytest.raises(ValueError, match="kind must be one of"):
        build_model("rnn", 3)
    with pytest.raises(ValueError, match="multiple of heads"):
        build_model("gpt2", 3, width=10, heads=4)
    with pytest.raises(TypeError, match="d must be an int"):
        build_model("gpt2", 2.5)
    with pytest.raises(ValueError, match="d must be >= 1"):
        build_model("gpt2", 0)
    with pytest.raises(ValueError, match="does not know"):
        model_from_config("gpt2", {"d": 3, "n_points": 4, "depth": 2})


@pytest.mark.parametrize("kind", KINDS)
def test_config_round_trip_and_shared_protocol_in_the_base_class(kind):
    from tfnewton.models import InContextRegressor, ModelConfig

    model = build_model(kind, 3, n_points=6, seed=0, **TINY)
    config = model.config
    assert isinstance(config, ModelConfig) and isinstance(model, InContextRegressor)
    assert type(config).from_dict(config.to_dict()) == config
    assert model_from_config(kind, config.to_dict()).config == config
    # the families do not redefine what the base class holds for all three
    for name in ("x_token_positions", "query_position", "readout", "forward"):
        assert name not in type(model).__dict__, f"{type(model).__name__} redefines {name}"
    # readout reads stacked streams (layers first) as it reads one
    X, y = _prompts(4, 6, 3, dtype=torch.float32)
    H = model.embed(X, y)
    stacked = torch.stack([H, 2 * H])
    assert torch.equal(model.readout(stacked)[1], model.readout(2 * H))
    with pytest.raises(ValueError, match="does not know"):
        type(config).from_dict({**config.to_dict(), "depth": 2})
    with pytest.raises(ValueError, match="n_layers must be >= 1"):
        type(config)(**{**config.to_dict(), "n_layers": 0})


# --------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("kind", KINDS)
def test_checkpoint_round_trip_is_exact(tmp_path, kind):
    model = build_model(kind, 3, seed=1, **TINY)
    path = save_checkpoint(model, tmp_path / "m.pt", {"task": "linear_regression", "steps": 5})
    loaded, meta = load_checkpoint(path)
    assert meta["task"] == "linear_regression" and meta["d"] == 3 and loaded.metadata == meta
    X, y = _prompts(2, 5, 3, dtype=torch.float32)
    assert torch.equal(loaded(X, y), model(X, y))
    assert not loaded.training
    assert not list(tmp_path.glob(".*tmp*")), "the atomic write left a temporary file"


def test_checkpoint_refuses_bad_files(tmp_path):
    model = build_model("gpt2", 3, **TINY)
    good = save_checkpoint(model, tmp_path / "good.pt", {"task": "linear_regression"})
    raw = good.read_bytes()

    with pytest.raises(FileNotFoundError, match="no checkpoint file"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "truncated.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(PretrainedError, match="corrupted"):
        load_checkpoint(tmp_path / "truncated.pt")
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(PretrainedError, match="not a readable tfnewton checkpoint"):
        load_checkpoint(tmp_path / "text.pt")
    torch.save({"model_state_dict": model.state_dict()}, tmp_path / "other.pt")
    with pytest.raises(PretrainedError, match="not a tfnewton checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(PretrainedError, match="for d = 3, but d = 5"):
        load_checkpoint(good, d=5)
    with pytest.raises(PretrainedError, match="not the 'lstm'"):
        load_checkpoint(good, kind="lstm")

    payload = torch.load(good, weights_only=True)
    payload["state_dict"]["read_out.bias"] += 1.0  # flipped weights, stale checksum
    torch.save(payload, tmp_path / "tampered.pt")
    with pytest.raises(PretrainedError, match="checksum"):
        load_checkpoint(tmp_path / "tampered.pt")

    payload = torch.load(good, weights_only=True)
    payload["config"]["width"] = 32  # config describing another model than the weights
    torch.save(payload, tmp_path / "mismatch.pt")
    with pytest.raises(PretrainedError, match="has shape .* needs"):
        load_checkpoint(tmp_path / "mismatch.pt")

    payload = torch.load(good, weights_only=True)
    payload["metadata"]["d"] = 7
    torch.save(payload, tmp_path / "meta.pt")
    with pytest.raises(PretrainedError, match="metadata says d = 7"):
        load_checkpoint(tmp_path / "meta.pt")


class _Evil:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_checkpoint_never_runs_pickled_code(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        torch.save({"format": "tfnewton-checkpoint", "x": _Evil()}, f, pickle_module=pickle)
    with pytest.raises(PretrainedError, match="not a readable"):
        load_checkpoint(path)


def test_unknown_pretrained_name():
    with pytest.raises(PretrainedError, match="no pretrained model named 'nope'; available"):
        load_pretrained("nope")
    with pytest.raises(TypeError, match="name must be a str"):
        load_pretrained(3)


# --------------------------------------------------------------------------- shipped checkpoints


SHIPPED = sorted(p.stem for p in PRETRAINED_DIR.glob("*.pt"))


def test_shipped_checkpoints_are_small_and_described():
    info = list_pretrained()
    assert sorted(info) == SHIPPED
    total = 0
    for name, meta in info.items():
        assert meta["size_bytes"] <= 2 * 1024**2, name
        total += meta["size_bytes"]
        assert meta["command"].startswith(("python -m tfnewton train", "torchrun")), name
        assert meta["d"] and meta["task"] and meta["steps"] and meta["metrics"], name
    assert total <= 10 * 1024**2


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_checkpoint_command_rebuilds_its_recipe(name):
    """The recorded command parses back to the exact recipe stored with the weights, the
    precision included (every shipped model was trained in float32 on a CPU)."""
    import shlex
    from dataclasses import asdict

    from tfnewton.models import pretrained_info
    from tfnewton.train import TrainConfig, build_parser, config_from_args

    meta = pretrained_info(name)["metadata"]
    args = build_parser().parse_args(shlex.split(meta["command"])[4:])
    # A field added after a model was trained reads as its default (as resume does).
    # JSON stores a mixture of condition numbers as a list; TrainConfig reads it back as a tuple.
    assert asdict(config_from_args(args)) == asdict(TrainConfig(**{**asdict(TrainConfig()), **meta["train_config"]}))
    assert meta["precision"] == meta["train_config"]["precision"] == "float32"


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_checkpoint_loads_and_is_causal(name):
    model = load_pretrained(name)
    d = model.config.d
    X, y = _prompts(4, 2 * d + 1, d, dtype=torch.float32)
    out = model(X, y)
    assert out.shape == (4, 2 * d + 1) and torch.isfinite(out).all()
    with pytest.raises(PretrainedError, match="for d ="):
        load_pretrained(name, d=d + 1)


@pytest.mark.skipif("gpt2_linreg_d5" not in SHIPPED, reason="checkpoint not shipped yet")
def test_shipped_gpt2_d5_reaches_the_issue_quality():
    """Issue 4: normalized error <= 0.01 at k = 2d on fresh tasks; beats tuned 3-step GD for k >= d/2."""
    from tfnewton.train import error_vs_k

    model = load_pretrained("gpt2_linreg_d5")
    curve = error_vs_k(model, num_prompts=2000, seed=99)
    assert curve["model"][10] <= 0.01
    for k in range(3, 11):
        assert curve["model"][k] < curve["gd_tuned"][k], k


@pytest.mark.skipif("lstm_linreg_d5" not in SHIPPED, reason="checkpoint not shipped yet")
def test_shipped_lstm_is_its_recipe_and_learned_in_context():
    """The shipped LSTM: built and trained by its recipe (the recorded command rebuilds it),
    several stacked single-layer LSTM blocks, and the quality it shipped with (0.011 at k = 10
    on these prompts; three tuned GD steps: 0.17)."""
    import shlex
    from dataclasses import asdict

    from tfnewton.models import pretrained_info
    from tfnewton.train import RECIPES, TrainConfig, build_parser, config_from_args, error_vs_k

    info = pretrained_info("lstm_linreg_d5")
    meta = info["metadata"]
    recipe = asdict(TrainConfig(**RECIPES["lstm_linreg_d5"]))
    assert info["kind"] == "lstm" and meta["task"] == "linear_regression" and meta["steps"] == recipe["steps"]
    # A field added after the model was trained reads as its default (as resume does).
    assert {**asdict(TrainConfig()), **meta["train_config"]} == recipe
    args = build_parser().parse_args(shlex.split(meta["command"])[4:])
    assert asdict(config_from_args(args)) == recipe
    model = load_pretrained("lstm_linreg_d5")
    assert len(model.blocks) == recipe["n_layers"] >= 2
    assert all(block.lstm.num_layers == 1 for block in model.blocks)
    curve = error_vs_k(model, num_prompts=1000, seed=99, baselines=False)
    assert curve["model"][0] > 0.7  # no context: nothing to learn from
    assert curve["model"][10] < 0.05


def test_plain_lstm_has_no_residual_and_no_layernorm():
    """``residual=False, layernorm=False``: each block is the bare LSTM (Garg et al.'s stack),
    so block i's output is the i-th LSTM layer's hidden state; the default keeps ``h + LSTM(ln(h))``."""
    plain = build_model("lstm", 3, n_layers=2, width=8, layernorm=False, residual=False, seed=0).double()
    residual = build_model("lstm", 3, n_layers=2, width=8, layernorm=False, seed=0).double()
    h = torch.randn(2, 6, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for block in plain.blocks:
        expected, _ = block.lstm(h)
        torch.testing.assert_close(block(h), expected, rtol=0, atol=0)
    residual.load_state_dict(plain.state_dict())
    torch.testing.assert_close(residual.blocks[0](h), h + plain.blocks[0](h), rtol=0, atol=1e-15)
    assert not isinstance(plain.ln_f, torch.nn.LayerNorm) and isinstance(plain.blocks[0].ln, torch.nn.Identity)


def test_residual_is_an_lstm_option_only():
    from tfnewton.train import TrainConfig, build_parser, config_from_args

    with pytest.raises(ValueError, match="residual is an option of the 'lstm' model only, not of 'gpt2'"):
        build_model("gpt2", 3, residual=False)
    with pytest.raises(TypeError, match="residual must be a bool, got int"):
        build_model("lstm", 3, residual=0)
    with pytest.raises(ValueError, match="residual=False is an option of kind='lstm' only, got kind='linear'"):
        TrainConfig(kind="linear", residual=False)
    args = build_parser().parse_args(["--recipe", "lstm_linreg_d5", "--no-residual", "--no-layernorm", "--out", "x"])
    config = config_from_args(args)
    assert (config.kind, config.residual, config.layernorm) == ("lstm", False, False)


@pytest.mark.parametrize("kind", ["gpt2", "linear"])
def test_train_config_refuses_a_width_the_heads_do_not_divide(kind):
    """A sweep over widths fails at its configuration, naming both numbers, not mid-training."""
    from tfnewton.train import TrainConfig

    with pytest.raises(ValueError, match="width must be a multiple of heads .* got width=30 and heads=4"):
        TrainConfig(kind=kind, width=30, heads=4)
    assert TrainConfig(kind="lstm", width=30, heads=4).width == 30  # the LSTM has no heads
