"""Median milliseconds per training step: tfnewton's "gpt2" model vs the Hugging Face stack.

The stack Garg et al. (2022) and Fu et al. (2024) trained with is Hugging Face's
``GPT2Model`` between a linear read-in and read-out (Garg et al.'s ``TransformerModel``),
optimized with ``torch.optim.Adam`` in float32. Ours is
``tfnewton.models.build_model("gpt2", ...)`` and the step of ``tfnewton.train`` (fused
AdamW, gradient clipping), in the precision its recipe asks for: ``"auto"``, i.e. bf16
autocast on a CPU with native bf16 (AVX512-BF16/AMX) and float32 on one without
(:func:`tfnewton.train.resolve_precision`). A step is forward, MSE loss, backward and the
optimizer update on a fresh batch. The stacks are timed *alternately in one process*
(ours, theirs, ours, ...) so that a noisy, shared machine slows all alike and the ratio
holds.

So that the gain of each change can be told apart, the table also has our step in float32
(same arithmetic as theirs: the difference is the attention backend), and Hugging Face's
under the same bf16 autocast as ours (its SDPA then takes the CPU flash kernel's bf16 path,
which is slow at these sizes).

Hugging Face's GPT-2 is timed twice: with its current default attention
(``F.scaled_dot_product_attention``, as ours) and with its ``"eager"`` attention (explicit
``softmax(QKᵀ/√d + mask)V``), the only attention the transformers 4.17 that Garg et al.'s
code pins had.

Configurations: Fu et al.'s (d = 20, 41 points, 12 layers, width 256, 8 heads, batch 64)
and the small CPU recipe (d = 5, 11 points, 6 x 64, 4 heads, batch 64).

    python benchmarks/train_step.py                 # both configs, a few steps each
    python benchmarks/train_step.py --steps 20 --threads 2

``transformers`` is a benchmark-only dependency (benchmarks/requirements.txt).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn as nn

from tfnewton.models import build_model
from tfnewton.models.gpt2 import interleave
from tfnewton.train import RECIPES, autocast_context, resolve_precision

CONFIGS = {
    "fu (d=20, 41 pts, 12x256, 8 heads)": dict(d=20, n_points=41, n_layers=12, width=256, heads=8, batch=64,
                                               recipe="gpt2_linreg_d20_fu"),
    "small cpu (d=5, 11 pts, 6x64, 4 heads)": dict(d=5, n_points=11, n_layers=6, width=64, heads=4, batch=64,
                                                   recipe="gpt2_linreg_d5"),
}


class GargTransformer(nn.Module):
    """Garg et al.'s ``TransformerModel`` (src/models.py), verbatim in substance."""

    def __init__(self, n_dims, n_positions, n_embd, n_layer, n_head, attn_implementation="sdpa"):
        super().__init__()
        from transformers import GPT2Config, GPT2Model

        config = GPT2Config(n_positions=2 * n_positions, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
                            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False)
        config._attn_implementation = attn_implementation
        self._read_in = nn.Linear(n_dims, n_embd)
        self._backbone = GPT2Model(config)
        self._read_out = nn.Linear(n_embd, 1)

    def forward(self, xs, ys):
        zs = interleave(xs, ys)  # Garg's _combine
        output = self._backbone(inputs_embeds=self._read_in(zs)).last_hidden_state
        return self._read_out(output)[:, ::2, 0]


def make_ours(c, precision):
    model = build_model("gpt2", c["d"], n_layers=c["n_layers"], width=c["width"], heads=c["heads"],
                        n_points=c["n_points"], seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0, fused=True)

    def step(X, y):  # tfnewton.train's step
        with autocast_context(precision, "cpu"):
            pred = model(X, y, skip_unused=True)
        loss = (pred.float() - y).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    return step


def make_theirs(c, attn_implementation="sdpa", precision="float32"):
    torch.manual_seed(0)
    model = GargTransformer(c["d"], c["n_points"], c["width"], c["n_layers"], c["heads"], attn_implementation)
    assert model._backbone.config._attn_implementation == attn_implementation
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)  # Garg et al.'s train.py

    def step(X, y):
        with autocast_context(precision, "cpu"):
            pred = model(X, y)
        loss = (pred.float() - y).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def bench(c, steps: int, warmup: int):
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(c["batch"], c["n_points"], c["d"], generator=g),
             torch.randn(c["batch"], c["n_points"], generator=g)) for _ in range(4)]
    recipe_precision = resolve_precision(RECIPES[c["recipe"]]["precision"], "cpu")
    fns = {"tfnewton": make_ours(c, recipe_precision), "tfnewton float32": make_ours(c, "float32"),
           "HF GPT2Model": make_theirs(c), "HF eager": make_theirs(c, "eager")}
    if recipe_precision != "float32":
        fns["HF bf16"] = make_theirs(c, precision=recipe_precision)
    times = {name: [] for name in fns}
    for i in range(warmup + steps):
        for name, fn in fns.items():  # alternate: ours, theirs, ours, theirs, ...
            X, y = data[i % len(data)]
            t = time.perf_counter()
            fn(X, y)
            if i >= warmup:
                times[name].append(time.perf_counter() - t)
    return recipe_precision, {name: 1000 * statistics.median(ts) for name, ts in times.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=None, help="timed steps per model (default: 5 Fu, 30 small)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--only", choices=["fu", "small"], default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); median ms per step "
          "(forward + backward + optimizer), measured alternately. HF = Garg et al.'s stack "
          "(GPT2Model + read-in/out, Adam, float32); ratio = tfnewton / HF.")
    print("| config | tfnewton, recipe precision | HF, SDPA | ratio | HF, eager | ratio "
          "| tfnewton float32 | ratio to HF SDPA | HF SDPA under our bf16 autocast |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, c in CONFIGS.items():
        if args.only and not name.startswith(args.only):
            continue
        steps = args.steps or (5 if c["width"] >= 256 else 30)
        precision, r = bench(c, steps, args.warmup)
        ours, theirs, eager, ours32 = r["tfnewton"], r["HF GPT2Model"], r["HF eager"], r["tfnewton float32"]
        hf_bf16 = f"{r['HF bf16']:.1f}" if "HF bf16" in r else "n/a (no native bf16)"
        print(f"| {name}, batch {c['batch']} | {ours:.1f} ({precision}) | {theirs:.1f} | {ours / theirs:.2f}x "
              f"| {eager:.1f} | {ours / eager:.2f}x | {ours32:.1f} | {ours32 / theirs:.2f}x | {hf_bf16} |", flush=True)


if __name__ == "__main__":
    main()
