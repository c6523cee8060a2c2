"""Interop with Garg et al.'s checkpoints and HF GPT-2: exact parity, round trips, bad input.

The reference is Hugging Face's ``GPT2Model`` between a linear read-in and a linear read-out,
as Garg et al. describe their ``TransformerModel`` (written here from that description).
``transformers`` is a test/benchmark-only dependency: skipped when absent.
"""

from __future__ import annotations

import itertools
import math
import tempfile
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from tfnewton.models import build_model
from tfnewton.models.garg import (
    from_garg_checkpoint,
    from_hf_gpt2,
    read_garg_config,
    save_garg_run,
    to_garg_state_dict,
)
from tfnewton.models.gpt2 import GPT2Regressor
from tfnewton.probes import hidden_states

transformers = pytest.importorskip("transformers")


# --------------------------------------------------------------------------------------
# The reference: Garg et al.'s in-context learner around the installed HF GPT2Model
# --------------------------------------------------------------------------------------
class ReferenceTransformerModel(nn.Module):
    """Garg et al.'s learner as their paper describes it, on today's transformers.

    The prompt ``(x_1, y_1, ..., x_n, y_n)`` is the token sequence ``x_1, (y_1, 0, ..., 0),
    x_2, ...`` (``2n`` tokens of dimension ``d``); ``_read_in = nn.Linear(d, n_embd)`` lifts
    each token, ``_backbone = GPT2Model(config)`` runs on those embeddings (``2 n_positions``
    learned positions, every dropout 0, no cache) and ``_read_out = nn.Linear(n_embd, 1)``
    reads the prediction of ``y_i`` at ``x_i``'s token. With ``use_first_n_layer = k`` below
    ``n_layer`` (Fu et al.'s probing runs) it reads HF's ``hidden_states[k]`` instead: the
    residual stream after block ``k``, with no final LayerNorm.
    """

    def __init__(self, n_dims, n_positions, n_embd, n_layer, n_head, *, use_first_n_layer=None, vocab_size=8):
        super().__init__()
        config = transformers.GPT2Config(
            n_positions=2 * n_positions,
            n_embd=n_embd,
            n_layer=n_layer,
            n_head=n_head,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            use_cache=False,
            vocab_size=vocab_size,  # 50257 in theirs; never read (inputs_embeds), small keeps tests fast
            bos_token_id=None,
            eos_token_id=None,
        )
        config._attn_implementation = "eager"  # scores, mask, softmax written out, as in 2022
        self._read_in = nn.Linear(n_dims, n_embd)
        self._backbone = transformers.GPT2Model(config)
        self._read_out = nn.Linear(n_embd, 1)
        self.n_layer = n_layer
        self.read_out_after = n_layer if use_first_n_layer is None else min(use_first_n_layer, n_layer)

    @staticmethod
    def tokens(xs, ys):
        """``(B, n, d), (B, n) -> (B, 2n, d)``: x tokens at even, y tokens at odd positions."""
        B, n, d = xs.shape
        y_tokens = torch.cat((ys.unsqueeze(-1), xs.new_zeros(B, n, d - 1)), dim=-1)
        return torch.stack((xs, y_tokens), dim=2).reshape(B, 2 * n, d)

    def forward(self, xs, ys):
        out = self._backbone(inputs_embeds=self._read_in(self.tokens(xs, ys)), output_hidden_states=True)
        if self.read_out_after == self.n_layer:
            hidden = out.last_hidden_state  # after the final LayerNorm
        else:
            hidden = out.hidden_states[self.read_out_after]
        return self._read_out(hidden)[:, ::2, 0]


def randomize_(module: nn.Module, seed: int) -> nn.Module:
    """Weights of scale 1/sqrt(fan-in), random biases and LayerNorm affines.

    GPT-2's own init (std 0.02) leaves attention nearly uniform and the GELU nearly linear;
    these values make every non-linearity matter, so parity is not won by accident.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype)
            if p.ndim == 2:
                fan_in = p.shape[0] if "_backbone.h." in name else p.shape[-1]  # Conv1D is (in, out)
                p.copy_(noise / math.sqrt(fan_in) * (1.0 if "wpe" not in name else 0.5))
            elif name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name.endswith("ln_f.weight"):
                p.copy_(1.0 + 0.3 * noise)
            else:
                p.copy_(0.3 * noise)
    return module


def hf_residual_stream(garg: ReferenceTransformerModel, xs, ys):
    """Their embeddings, every block's output and the final LayerNormed state, via hooks."""
    seen = []

    def grab(_module, _inputs, output):
        seen.append(output[0] if isinstance(output, tuple) else output)

    hooks = [garg._backbone.drop.register_forward_hook(grab)]
    hooks += [block.register_forward_hook(grab) for block in garg._backbone.h]
    try:
        embeds = garg._read_in(garg.tokens(xs, ys))
        final = garg._backbone(inputs_embeds=embeds).last_hidden_state
    finally:
        for h in hooks:
            h.remove()
    return seen, final


def our_residual_stream(model: GPT2Regressor, xs, ys):
    h = model.embed(xs, ys)
    seen = [h]
    for block in model.blocks:
        h = block(h)
        seen.append(h)
    return seen, model.ln_f(h)


def prompts(batch, n, d, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    xs = torch.randn(batch, n, d, generator=g, dtype=torch.float64)
    w = torch.randn(batch, d, generator=g, dtype=torch.float64)
    ys = torch.einsum("bnd,bd->bn", xs, w)
    return xs.to(dtype), ys.to(dtype)


# The grid of the issue: layers 1–4 × heads 1–4 (every pair), widths 16–64, d 2–8.
def _width(heads, i):
    candidates = [w for w in (16, 24, 32, 48, 64) if w % heads == 0]
    return candidates[i % len(candidates)]


GRID = [
    (layers, heads, _width(heads, i), 2 + i % 7)
    for i, (layers, heads) in enumerate(itertools.product(range(1, 5), range(1, 5)))
]
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}


def _max_err(a, b):
    return (a.detach() - b.detach()).abs().max().item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("layers,heads,width,d", GRID, ids=[f"L{a}H{b}W{c}d{e}" for a, b, c, e in GRID])
def test_parity_with_hf_gpt2(layers, heads, width, d, dtype):
    n_points = 2 * d + 1
    seed = 1000 * layers + 100 * heads + width + d
    garg = randomize_(ReferenceTransformerModel(d, n_points, width, layers, heads), seed).to(dtype).eval()
    xs, ys = prompts(8, n_points, d, dtype, seed)

    with torch.no_grad():
        want_pred = garg(xs, ys)
        want_stream, want_final = hf_residual_stream(garg, xs, ys)
        from_state = from_garg_checkpoint(garg.state_dict(), heads=heads)
        from_live = from_hf_gpt2(garg._backbone, garg._read_in, garg._read_out)
        for model in (from_state, from_live):
            assert model.config == from_state.config
            assert next(model.parameters()).dtype == dtype
            got_stream, got_final = our_residual_stream(model, xs, ys)
            assert len(got_stream) == len(want_stream) == layers + 1
            for layer, (got, want) in enumerate(zip(got_stream, want_stream)):
                assert _max_err(got, want) <= TOL[dtype], f"layer {layer}"
            assert _max_err(got_final, want_final) <= TOL[dtype]
            pred = model(xs, ys)
            assert pred.shape == want_pred.shape == (8, n_points)
            assert _max_err(pred, want_pred) <= TOL[dtype]
            # shorter prompts use the first positions only, in both
            assert _max_err(model(xs[:, :3], ys[:, :3]), garg(xs[:, :3], ys[:, :3])) <= TOL[dtype]


def test_parity_predictions_are_not_trivial():
    """The randomized models of the grid are far from constant: parity is a real check."""
    layers, heads, width, d = GRID[-1]
    garg = randomize_(ReferenceTransformerModel(d, 2 * d + 1, width, layers, heads), 0).eval()
    xs, ys = prompts(64, 2 * d + 1, d, torch.float32, 0)
    with torch.no_grad():
        pred = garg(xs, ys)
        model = from_hf_gpt2(garg)
        att = model.blocks[0].attn
        q, k, _ = att.c_attn(model.blocks[0].ln_1(model.embed(xs, ys))).split(width, dim=2)
    assert pred.std() > 0.1
    # attention logits of order one: softmax far from uniform
    assert (q @ k.transpose(1, 2) / math.sqrt(width // heads)).std() > 0.5


def test_hf_full_vocab_and_whole_module():
    """Their exact config (50257-row token table) and the whole wrapper passed alone."""
    garg = randomize_(ReferenceTransformerModel(4, 9, 32, 2, 4, vocab_size=50257), 3).eval()
    xs, ys = prompts(4, 9, 4, torch.float32, 3)
    with torch.no_grad():
        assert _max_err(from_hf_gpt2(garg)(xs, ys), garg(xs, ys)) <= 1e-5
        assert _max_err(from_garg_checkpoint(garg.state_dict(), heads=4)(xs, ys), garg(xs, ys)) <= 1e-5


# --------------------------------------------------------------------------------------
# Round trips and their file layout
# --------------------------------------------------------------------------------------
def test_round_trip_ours_to_garg_to_ours_and_into_hf():
    ours = randomize_(build_model("gpt2", d=5, n_layers=3, width=32, heads=4, seed=1), 5).eval()
    xs, ys = prompts(6, 11, 5, torch.float32, 5)
    # Into their (HF) model: a strict load of the default state dict, then the same predictions.
    garg = ReferenceTransformerModel(5, 11, 32, 3, 4).eval()
    garg.load_state_dict(to_garg_state_dict(ours, vocab_size=8), strict=True)
    with torch.no_grad():
        assert _max_err(garg(xs, ys), ours(xs, ys)) <= 1e-5
    # And back: bit for bit, with or without the old buffers.
    for legacy_buffers in (False, True):
        back = from_garg_checkpoint(to_garg_state_dict(ours, legacy_buffers=legacy_buffers), heads=4)
        assert back.config == ours.config
        for (k1, v1), (k2, v2) in zip(ours.state_dict().items(), back.state_dict().items()):
            assert k1 == k2 and torch.equal(v1, v2), k1


_BLOCK_KEYS = ["ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight",
               "attn.c_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
               "mlp.c_proj.weight", "mlp.c_proj.bias"]


def _expected_keys(block):
    return (["_read_in.weight", "_read_in.bias", "_backbone.wte.weight", "_backbone.wpe.weight"]
            + [f"_backbone.h.{i}.{k}" for i in range(2) for k in block]
            + ["_backbone.ln_f.weight", "_backbone.ln_f.bias", "_read_out.weight", "_read_out.bias"])


def test_default_state_dict_has_exactly_the_keys_of_todays_gpt2model():
    ours = build_model("gpt2", d=3, n_layers=2, width=16, heads=2, seed=0)
    sd = to_garg_state_dict(ours)
    assert list(sd) == _expected_keys(_BLOCK_KEYS)
    assert list(sd) == list(ReferenceTransformerModel(3, 7, 16, 2, 2).state_dict())
    assert sd["_backbone.wte.weight"].shape == (50257, 16)
    assert sd["_backbone.wpe.weight"].shape == (14, 16)
    assert sd["_backbone.h.0.attn.c_attn.weight"].shape == (16, 48)  # Conv1D: (in, out)
    assert sd["_backbone.h.0.mlp.c_proj.weight"].shape == (64, 16)


def test_legacy_state_dict_has_exactly_the_keys_of_transformers_4_17():
    ours = build_model("gpt2", d=3, n_layers=2, width=16, heads=2, seed=0)
    sd = to_garg_state_dict(ours, legacy_buffers=True)
    block = _BLOCK_KEYS[:2] + ["attn.bias", "attn.masked_bias"] + _BLOCK_KEYS[2:]
    assert list(sd) == _expected_keys(block)
    assert sd["_backbone.h.0.attn.bias"].dtype == torch.uint8
    assert torch.equal(sd["_backbone.h.0.attn.bias"][0, 0], torch.tril(torch.ones(14, 14, dtype=torch.uint8)))
    assert sd["_backbone.h.1.attn.masked_bias"].item() == -1e4


def _their_config(run, *, n_dims, n_positions, n_embd, n_layer, n_head, **model_extra):
    """The arguments their training script dumps to config.yaml (a real run's values)."""
    return {
        "config": "conf/linear_regression.yaml",
        "inherit": ["/home/u/in-context-learning/src/conf/wandb.yaml", "conf/models/standard.yaml"],
        "model": {"family": "gpt2", "n_dims": n_dims, "n_embd": n_embd, "n_head": n_head,
                  "n_layer": n_layer, "n_positions": n_positions, **model_extra},
        "out_dir": str(run),
        "test_run": False,
        "training": {"batch_size": 64, "curriculum": {"dims": {"end": 20, "inc": 1, "interval": 2000, "start": 5},
                                                      "points": {"end": 41, "inc": 2, "interval": 2000, "start": 11}},
                     "data": "gaussian", "keep_every_steps": 100000, "learning_rate": 0.0001,
                     "num_tasks": None, "num_training_examples": None, "resume_id": None,
                     "save_every_steps": 1000, "task": "linear_regression", "task_kwargs": {},
                     "train_steps": 500001},
        "wandb": {"entity": "in-context", "log_every_steps": 100, "name": "linear_regression_standard",
                  "notes": "", "project": "in-context-training"},
    }


def _their_run_folder(tmp_path, garg, *, n_dims, n_positions, n_embd, n_layer, n_head, steps=3, conf=None):
    """A run folder as their training leaves it: yaml.dump of the args, state.pt, model_<k>.pt."""
    optimizer = torch.optim.Adam(garg.parameters(), lr=1e-4)
    xs, ys = prompts(4, n_positions, n_dims, torch.float32, 11)
    for _ in range(steps):  # real Adam state in the file, as theirs has
        optimizer.zero_grad()
        (garg(xs, ys) - ys).square().mean().backward()
        optimizer.step()
    run = tmp_path / "0f3c9a4e-run"
    run.mkdir()
    if conf is None:
        conf = _their_config(run, n_dims=n_dims, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer,
                             n_head=n_head)
    with open(run / "config.yaml", "w") as f:
        yaml.dump(conf, f, default_flow_style=False)
    torch.save({"model_state_dict": garg.state_dict(), "optimizer_state_dict": optimizer.state_dict(),
                "train_step": steps}, run / "state.pt")
    torch.save(garg.state_dict(), run / "model_100000.pt")
    return run, conf


def test_their_run_folder_loads_with_config_and_without(tmp_path):
    garg = randomize_(ReferenceTransformerModel(4, 9, 32, 2, 4), 7)
    run, conf = _their_run_folder(tmp_path, garg, n_dims=4, n_positions=9, n_embd=32, n_layer=2, n_head=4)
    garg.eval()
    xs, ys = prompts(5, 9, 4, torch.float32, 8)
    with torch.no_grad():
        want = garg(xs, ys)
        model = from_garg_checkpoint(run)
        assert model.metadata["train_step"] == 3 and model.metadata["config"] == conf
        assert not model.training and next(model.parameters()).device.type == "cpu"
        assert _max_err(model(xs, ys), want) <= 1e-5
        assert _max_err(from_garg_checkpoint(run / "state.pt")(xs, ys), want) <= 1e-5
        assert _max_err(from_garg_checkpoint(run, step=100000)(xs, ys), want) <= 1e-5
        (run / "config.yaml").unlink()  # a bare model_<k>.pt: shapes + heads only
        bare = from_garg_checkpoint(run / "model_100000.pt", heads=4)
        assert bare.config == model.config
        assert _max_err(bare(xs, ys), want) <= 1e-5
        f64 = from_garg_checkpoint(run / "model_100000.pt", heads=4, dtype=torch.float64)
        assert next(f64.parameters()).dtype == torch.float64
        assert f64(xs.double(), ys.double()).dtype == torch.float64


def test_config_with_folded_long_and_multi_line_strings_loads(tmp_path):
    """yaml.dump folds a string longer than 80 columns onto the next line; a run's notes may span lines."""
    garg = randomize_(ReferenceTransformerModel(3, 7, 16, 2, 2), 4)
    notes = "Linear regression, d = 3, the curriculum of the paper; " * 4  # about 220 characters
    name = "first line of the name\nsecond line: with a # and 'quotes'"
    run = tmp_path / "0f3c9a4e-run"
    conf = _their_config(run, n_dims=3, n_positions=7, n_embd=16, n_layer=2, n_head=2)
    conf["wandb"].update(notes=notes, name=name)
    run, conf = _their_run_folder(tmp_path, garg, n_dims=3, n_positions=7, n_embd=16, n_layer=2, n_head=2,
                                  conf=conf)
    text = (run / "config.yaml").read_text()
    # the file really has the shapes at stake: the notes folded over lines, the name on two
    assert all(len(line) <= 84 for line in text.splitlines())
    assert not any(notes.strip() in line for line in text.splitlines())
    assert any(line.strip().startswith("second line") for line in text.splitlines())
    model = from_garg_checkpoint(run)
    assert model.metadata["config"] == conf
    assert model.metadata["config"]["wandb"]["notes"] == notes
    assert model.metadata["config"]["wandb"]["name"] == name
    xs, ys = prompts(4, 7, 3, torch.float32, 2)
    with torch.no_grad():
        assert _max_err(model(xs, ys), garg.eval()(xs, ys)) <= 1e-5


def test_save_garg_run_loads_strictly_in_todays_gpt2model_and_adam_resumes(tmp_path):
    ours = randomize_(build_model("gpt2", d=3, n_layers=2, width=16, heads=2, seed=0), 9).double().eval()
    run = save_garg_run(ours, tmp_path / "run", train_step=42, keep_model_file=True,
                        config_extra={"training": {"task": "noisy_linear_regression", "learning_rate": 3e-4}})
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml", "model_42.pt", "state.pt"]
    conf = yaml.safe_load((run / "config.yaml").read_text())  # what their evaluation code does
    assert conf["model"] == {"family": "gpt2", "n_dims": 3, "n_embd": 16, "n_head": 2,
                             "n_layer": 2, "n_positions": 7}
    assert conf["training"]["task"] == "noisy_linear_regression"
    assert conf == read_garg_config(run / "config.yaml")
    state = torch.load(run / "state.pt", weights_only=True)
    assert set(state) == {"model_state_dict", "optimizer_state_dict", "train_step"}
    assert state["train_step"] == 42

    # Their model on today's transformers loads it strictly and predicts what ours does.
    garg = ReferenceTransformerModel(3, 7, 16, 2, 2, vocab_size=50257).double()
    garg.load_state_dict(state["model_state_dict"], strict=True)
    xs, ys = prompts(5, 7, 3, torch.float64, 3)
    with torch.no_grad():
        assert _max_err(garg.eval()(xs, ys), ours(xs, ys)) <= 1e-10

    # Their optimizer resumes from the state: the same groups, then a step that moves the weights.
    optimizer = torch.optim.Adam(garg.parameters(), lr=1e-4)
    optimizer.load_state_dict(state["optimizer_state_dict"])
    assert optimizer.param_groups[0]["lr"] == 3e-4
    assert len(optimizer.param_groups[0]["params"]) == len(list(garg.parameters()))
    before = garg._read_out.weight.detach().clone()
    garg.train()
    optimizer.zero_grad()
    (garg(xs, ys) - ys).square().mean().backward()
    optimizer.step()
    assert not torch.equal(garg._read_out.weight, before)
    assert optimizer.state[garg._read_out.weight]["step"].item() == 1


def test_save_garg_run_bad_config_extra(tmp_path):
    ours = build_model("gpt2", d=3, n_layers=1, width=16, heads=2, seed=0)
    with pytest.raises(ValueError, match="learning_rate must be > 0"):
        save_garg_run(ours, tmp_path, vocab_size=4, config_extra={"training": {"learning_rate": 0.0}})
    with pytest.raises(TypeError, match="YAML cannot write"):
        save_garg_run(ours, tmp_path, vocab_size=4, config_extra={"out_dir": tmp_path})
    # a model section always describes the model written, all of it
    run = save_garg_run(ours, tmp_path, vocab_size=4, config_extra={"model": {"n_layer": 9, "use_first_n_layer": 1}})
    assert read_garg_config(run / "config.yaml")["model"] == {
        "family": "gpt2", "n_dims": 3, "n_embd": 16, "n_head": 2, "n_layer": 1, "n_positions": 7}


def test_read_garg_config_errors(tmp_path):
    bad = tmp_path / "config.yaml"
    bad.write_text("model: {family: gpt2\n  n_dims: [3\n")
    with pytest.raises(ValueError, match="not a YAML file"):
        read_garg_config(bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="must hold a mapping"):
        read_garg_config(bad)
    bad.write_text("model: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ValueError, match="not a YAML file"):  # safe_load constructs no objects
        read_garg_config(bad)
    with pytest.raises(ValueError, match="cannot read"):
        read_garg_config(tmp_path / "missing.yaml")


def test_save_garg_run_with_legacy_buffers_is_for_old_transformers(tmp_path):
    ours = build_model("gpt2", d=3, n_layers=1, width=16, heads=2, seed=0)
    state = torch.load(save_garg_run(ours, tmp_path, legacy_buffers=True, vocab_size=4) / "state.pt",
                       weights_only=True)
    garg = ReferenceTransformerModel(3, 7, 16, 1, 2, vocab_size=4)
    with pytest.raises(RuntimeError, match="Unexpected key"):  # today's GPT2Model has no such buffers
        garg.load_state_dict(state["model_state_dict"], strict=True)
    # the optimizer's parameters are the model's, not its buffers
    torch.optim.Adam(garg.parameters()).load_state_dict(state["optimizer_state_dict"])


_texts = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")) | st.sampled_from("\n\t #:'\"-"),
                 max_size=200)
_values = st.one_of(st.none(), st.booleans(), st.integers(-10**9, 10**9),
                    st.floats(allow_nan=False, width=64), _texts)
_extras = st.recursive(
    st.dictionaries(st.text("abcxyz_", min_size=1, max_size=8), _values, max_size=4),
    lambda inner: st.dictionaries(st.text("abcxyz_", min_size=1, max_size=8),
                                  st.one_of(inner, st.lists(_values, max_size=3)), max_size=3),
    max_leaves=12,
)


@settings(deadline=None, max_examples=40)
@given(notes=_texts, extra=_extras)
def test_a_real_config_round_trips(notes, extra):
    """Whatever their yaml.dump writes reads back equal, and so does what save_garg_run writes."""
    ours = build_model("gpt2", d=2, n_layers=1, width=8, heads=2, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp)
        conf = _their_config(run, n_dims=2, n_positions=5, n_embd=8, n_layer=1, n_head=2)
        conf["wandb"]["notes"] = notes
        conf["extra"] = extra
        torch.save({"model_state_dict": to_garg_state_dict(ours, vocab_size=4), "train_step": 0}, run / "state.pt")
        (run / "config.yaml").write_text(yaml.dump(conf, default_flow_style=False))
        assert from_garg_checkpoint(run).metadata["config"] == conf
        save_garg_run(ours, run, vocab_size=4, config_extra={"wandb": {"notes": notes}, "extra": extra})
        written = read_garg_config(run / "config.yaml")
        assert written["wandb"]["notes"] == notes and written["extra"] == extra
        assert written == yaml.safe_load((run / "config.yaml").read_text())


# --------------------------------------------------------------------------------------
# Fu et al.'s probing runs: use_first_n_layer reads out after an earlier block
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("first_n", [1, 2])
def test_use_first_n_layer_reads_out_after_that_block_without_final_layernorm(tmp_path, first_n):
    n_layer, d, n_positions = 3, 4, 9
    garg = randomize_(ReferenceTransformerModel(d, n_positions, 32, n_layer, 4, use_first_n_layer=first_n), 21)
    run = tmp_path / "probing"
    conf = _their_config(run, n_dims=d, n_positions=n_positions, n_embd=32, n_layer=n_layer, n_head=4,
                         use_first_n_layer=first_n)
    run, conf = _their_run_folder(tmp_path, garg, n_dims=d, n_positions=n_positions, n_embd=32,
                                  n_layer=n_layer, n_head=4, conf=conf)
    garg.eval()
    xs, ys = prompts(6, n_positions, d, torch.float64, 22)
    model = from_garg_checkpoint(run, dtype=torch.float64)
    assert model.config.n_layers == first_n and not model.config.final_layernorm
    assert len(model.blocks) == first_n
    garg = garg.double()
    with torch.no_grad():
        want_hidden = garg._backbone(inputs_embeds=garg._read_in(garg.tokens(xs, ys)),
                                     output_hidden_states=True).hidden_states
        want = garg._read_out(want_hidden[first_n])[:, ::2, 0]  # no final LayerNorm
        assert _max_err(garg(xs, ys), want) == 0
        assert _max_err(model(xs, ys), want) <= 1e-10
        # the whole model predicts something else: the test would see the option ignored
        full = from_garg_checkpoint(run, config={"model": {**conf["model"], "use_first_n_layer": None}},
                                    dtype=torch.float64)
        assert full.config.n_layers == n_layer
        assert _max_err(full(xs, ys), want) > 0.1
        # the probes hook model.blocks: every hidden state is HF's, and the last is the one read out
        stream = hidden_states(model, xs, ys)
        assert stream.shape == (first_n + 1, 6, 2 * n_positions, 32)
        for layer in range(first_n + 1):
            assert _max_err(stream[layer], want_hidden[layer]) <= 1e-10, layer
        assert _max_err(model.readout(stream[-1]), want) <= 1e-10
    # float32, from the file as it is
    with torch.no_grad():
        f32 = from_garg_checkpoint(run)
        assert _max_err(f32(xs.float(), ys.float()), want) <= 1e-5


def test_from_hf_gpt2_honours_use_first_n_layer():
    garg = randomize_(ReferenceTransformerModel(3, 7, 16, 3, 2, use_first_n_layer=2), 5).eval()
    xs, ys = prompts(4, 7, 3, torch.float32, 5)
    with torch.no_grad():
        want = garg(xs, ys)
        model = from_hf_gpt2(garg._backbone, garg._read_in, garg._read_out, use_first_n_layer=2)
        assert len(model.blocks) == 2 and _max_err(model(xs, ys), want) <= 1e-5
        garg.first_n_layer = 2  # where their probing variant of the whole module keeps it
        assert _max_err(from_hf_gpt2(garg)(xs, ys), want) <= 1e-5
        assert len(from_hf_gpt2(garg, use_first_n_layer=3).blocks) == 3


def test_use_first_n_layer_at_or_above_n_layer_is_the_whole_model():
    sd = _garg_sd(layers=2)
    whole = from_garg_checkpoint(sd, heads=2)
    for first_n in (2, 12):
        model = from_garg_checkpoint(sd, config={"n_head": 2, "use_first_n_layer": first_n})
        assert model.config == whole.config and model.config.final_layernorm


def test_use_first_n_layer_bad_values_and_no_way_back():
    with pytest.raises(ValueError, match="use_first_n_layer must be a positive int, got 0"):
        from_garg_checkpoint(_garg_sd(), config={"n_head": 2, "use_first_n_layer": 0})
    with pytest.raises(ValueError, match="use_first_n_layer must be a positive int"):
        from_garg_checkpoint(_garg_sd(), config={"n_head": 2, "use_first_n_layer": "1"})
    truncated = from_garg_checkpoint(_garg_sd(), config={"n_head": 2, "use_first_n_layer": 1})
    with pytest.raises(ValueError, match="final_layernorm=False"):
        to_garg_state_dict(truncated)


# --------------------------------------------------------------------------------------
# Bad input: clear errors, nothing half-loaded, nothing executed
# --------------------------------------------------------------------------------------
def _garg_sd(d=3, width=16, layers=2, heads=2):
    return to_garg_state_dict(build_model("gpt2", d=d, n_layers=layers, width=width, heads=heads, seed=0),
                              vocab_size=4)


def test_not_a_checkpoint(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello, not a checkpoint\n")
    with pytest.raises(ValueError, match="not a PyTorch checkpoint"):
        from_garg_checkpoint(text, heads=2)
    (tmp_path / "cut").mkdir()
    truncated = tmp_path / "cut" / "state.pt"
    torch.save({"model_state_dict": _garg_sd()}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:100])
    with pytest.raises(ValueError, match="not a PyTorch checkpoint"):
        from_garg_checkpoint(truncated, heads=2)
    with pytest.raises(ValueError, match="does not exist"):
        from_garg_checkpoint(tmp_path / "nowhere", heads=2)
    with pytest.raises(ValueError, match="no state.pt"):
        from_garg_checkpoint(tmp_path, heads=2)
    with pytest.raises(TypeError, match="path must be"):
        from_garg_checkpoint(42, heads=2)
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="does not hold a state dict"):
        from_garg_checkpoint(tmp_path / "list.pt", heads=2)


class _Payload:
    """Unpickling this with full pickle would create a file: weights-only must refuse it."""

    marker = None

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_code_is_refused_not_run(tmp_path):
    marker = tmp_path / "was_executed"
    _Payload.marker = str(marker)
    evil = tmp_path / "state.pt"
    torch.save({"model_state_dict": _garg_sd(), "train_step": _Payload()}, evil)
    with pytest.raises(ValueError, match="refused"):
        from_garg_checkpoint(evil, heads=2)
    assert not marker.exists()


def test_other_architectures_are_named():
    tfn = build_model("gpt2", d=3, n_layers=2, width=16, heads=2).state_dict()
    with pytest.raises(ValueError, match="tfnewton state dict"):
        from_garg_checkpoint(tfn, heads=2)
    hf = {k[len("_backbone."):]: v for k, v in _garg_sd().items() if k.startswith("_backbone.")}
    with pytest.raises(ValueError, match="from_hf_gpt2"):
        from_garg_checkpoint(hf, heads=2)
    lm = {"transformer." + k: v for k, v in hf.items()} | {"lm_head.weight": torch.zeros(4, 16)}
    with pytest.raises(ValueError, match="language model"):
        from_garg_checkpoint(lm, heads=2)
    lstm = nn.LSTM(16, 16, num_layers=2).state_dict()
    lstm = {"_read_in.weight": torch.zeros(16, 3), "_read_in.bias": torch.zeros(16)} | {
        f"_backbone.{k}": v for k, v in lstm.items()}
    with pytest.raises(ValueError, match="not a Garg et al. GPT-2"):
        from_garg_checkpoint(lstm, heads=2)
    extra = _garg_sd() | {"_backbone.h.0.crossattention.c_attn.weight": torch.zeros(16, 32)}
    with pytest.raises(ValueError, match="crossattention"):
        from_garg_checkpoint(extra, heads=2)
    with pytest.raises(ValueError, match="not a tensor"):
        from_garg_checkpoint(_garg_sd() | {"_read_out.bias": 0.5}, heads=2)
    with pytest.raises(ValueError, match="'lstm' model"):
        from_garg_checkpoint(_garg_sd(), config={"model": {"family": "lstm", "n_head": 2}})


def test_missing_or_wrong_heads():
    with pytest.raises(ValueError, match="heads is required"):
        from_garg_checkpoint(_garg_sd())
    with pytest.raises(ValueError, match="does not divide the width"):
        from_garg_checkpoint(_garg_sd(), heads=3)
    with pytest.raises(ValueError, match="config says n_head = 2"):
        from_garg_checkpoint(_garg_sd(), heads=4, config={"model": {"n_head": 2}})


def test_shape_mismatch_names_the_tensor_and_both_shapes():
    sd = _garg_sd()
    with pytest.raises(ValueError, match=r"_read_in\.weight has shape \(16, 3\) but \(32, 3\)"):
        from_garg_checkpoint(sd, config={"model": {"n_dims": 3, "n_embd": 32, "n_head": 2}})
    with pytest.raises(ValueError, match=r"_backbone\.wpe\.weight has shape \(14, 16\) but \(202, 16\)"):
        from_garg_checkpoint(sd, config={"model": {"n_positions": 101, "n_head": 2}})
    with pytest.raises(ValueError, match="n_layer = 12 but the state dict has 2 blocks"):
        from_garg_checkpoint(sd, config={"model": {"n_layer": 12, "n_head": 2}})
    broken = dict(sd)
    broken["_backbone.h.1.mlp.c_fc.weight"] = torch.zeros(16, 32)
    before = {k: v.clone() for k, v in broken.items()}
    with pytest.raises(ValueError, match=r"_backbone\.h\.1\.mlp\.c_fc\.weight has shape \(16, 32\) but \(16, 64\)"):
        from_garg_checkpoint(broken, heads=2)
    # nothing was changed in what the caller passed
    assert broken.keys() == before.keys() and all(torch.equal(broken[k], before[k]) for k in before)
    missing = dict(sd)
    del missing["_backbone.h.1.ln_2.bias"]
    with pytest.raises(ValueError, match=r"_backbone\.h\.1\.ln_2\.bias is missing"):
        from_garg_checkpoint(missing, heads=2)


def test_bad_hf_configs_are_refused():
    garg = ReferenceTransformerModel(3, 7, 16, 1, 2)
    garg._backbone.config.activation_function = "relu"
    with pytest.raises(ValueError, match="activation_function"):
        from_hf_gpt2(garg)
    garg._backbone.config.activation_function = "gelu_new"
    garg._backbone.config.scale_attn_by_inverse_layer_idx = True
    with pytest.raises(ValueError, match="scale_attn_by_inverse_layer_idx"):
        from_hf_gpt2(garg)
    with pytest.raises(TypeError, match="read_in"):
        from_hf_gpt2(garg._backbone, None, garg._read_out)


def test_to_garg_refuses_what_their_code_cannot_express():
    with pytest.raises(ValueError, match="layernorm=False"):
        to_garg_state_dict(build_model("gpt2", d=3, n_layers=1, width=16, heads=2, layernorm=False))
    with pytest.raises(TypeError, match="GPT2Regressor"):
        to_garg_state_dict(build_model("lstm", d=3, n_layers=1, width=16))
