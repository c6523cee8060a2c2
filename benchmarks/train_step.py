"""Median milliseconds per training step: tfnewton's "gpt2" model vs the Hugging Face stack.

The stack Garg et al. (2022) and Fu et al. (2024) trained with is Hugging Face's
``GPT2Model`` between a linear read-in and read-out (Garg et al.'s ``TransformerModel``),
optimized with ``torch.optim.Adam`` in float32. Ours is
``tfnewton.models.build_model("gpt2", ...)`` and the step of ``tfnewton.train`` on one CPU
process (``tfnewton.step.TrainStep``): the forward pass with ``skip_unused=True``, the
parameters in one flat buffer (``flatten_parameters``), gradient clipping and fused AdamW on
it, and, where the recipe sets ``compile=True`` (the small one), the step through
``torch.compile`` (the ``compiled`` column; its compile time is printed, not counted in the
median). A step is forward,
MSE loss, backward and the optimizer update on a fresh batch. The stacks are timed
*alternately in one process* (ours, theirs, ours, ...) so that a noisy, shared machine
slows all alike and the ratio holds.

Ours is timed in float32 (the same arithmetic as theirs) and, on a CPU with native bf16
(AVX512-BF16/AMX, :func:`tfnewton.step.cpu_has_native_bf16`), under bf16 autocast; the
``recipe`` column is the ratio at the precision the config's recipe resolves to
(:func:`tfnewton.step.resolve_precision`): float32 for the small recipe, ``"auto"`` for
Fu et al.'s. Where bf16 is timed, Hugging Face's stack is also timed under the same bf16
autocast (its SDPA then takes the CPU flash kernel's bf16 path, slow at these sizes).

Hugging Face's GPT-2 is timed twice: with its current default attention
(``F.scaled_dot_product_attention``) and with its ``"eager"`` attention (explicit
``softmax(QKᵀ/√d + mask)V``), the only attention the transformers 4.17 that Garg et al.'s
code pins had.

Configurations: Fu et al.'s (d = 20, 41 points, 12 layers, width 256, 8 heads, batch 64)
and the small CPU recipe (d = 5, 11 points, 6 x 64, 4 heads, batch 64).

    python benchmarks/train_step.py                 # both configs, a few steps each
    python benchmarks/train_step.py --steps 20 --threads 2
    python benchmarks/train_step.py --only small --compile all

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
from tfnewton.step import autocast_context, cpu_has_native_bf16, resolve_precision
from tfnewton.train import RECIPES, TrainConfig, TrainStep

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


def make_ours(c, precision, compile=False, device="cpu"):
    """tfnewton.train's step (:class:`tfnewton.train.TrainStep`: flat parameters on a CPU,
    fused AdamW, clipping, ``skip_unused=True``); ``compile=True`` runs its forward and
    backward through ``torch.compile`` as ``TrainConfig(compile=True)`` does at the final
    prompt length."""
    model = build_model("gpt2", c["d"], n_layers=c["n_layers"], width=c["width"], heads=c["heads"],
                        n_points=c["n_points"], seed=0).to(device)
    config = TrainConfig(d=c["d"], n_points=c["n_points"], n_layers=c["n_layers"], width=c["width"],
                         heads=c["heads"], lr=1e-4, precision=precision, grad_clip=1.0)
    step = TrainStep(model, config)
    forward = torch.compile(model, dynamic=False) if compile else None
    return lambda X, y: step(X, y, forward)


def make_theirs(c, attn_implementation="sdpa", precision="float32", device="cpu"):
    torch.manual_seed(0)
    model = GargTransformer(c["d"], c["n_points"], c["width"], c["n_layers"], c["heads"], attn_implementation).to(device)
    assert model._backbone.config._attn_implementation == attn_implementation
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)  # Garg et al.'s train.py

    def step(X, y):
        with autocast_context(precision, device):
            pred = model(X, y)
        loss = (pred.float() - y).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def native_bf16(device) -> bool:
    """bf16 arithmetic in hardware on ``device`` (a CUDA GPU that supports it, or AMX/AVX512-BF16)."""
    device = torch.device(device)
    return torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_has_native_bf16()


def bench(c, steps: int, warmup: int, compile: bool = False, device="cpu"):
    """Median ms per step of each stack; with ``compile``, also ours through torch.compile
    (``"compiled"``; its first two calls, which compile, are reported as ``"compile s"``)."""
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(c["batch"], c["n_points"], c["d"], generator=g).to(device),
             torch.randn(c["batch"], c["n_points"], generator=g).to(device)) for _ in range(4)]
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    fns = {"float32": make_ours(c, "float32", device=device), "HF": make_theirs(c, device=device),
           "HF eager": make_theirs(c, "eager", device=device)}
    compile_seconds = None
    if compile:
        fns["compiled"] = make_ours(c, "float32", compile=True, device=device)
        t = time.perf_counter()
        for X, y in data[:2]:
            fns["compiled"](X, y)
        sync()
        compile_seconds = time.perf_counter() - t
    if native_bf16(device):
        fns["bfloat16"] = make_ours(c, "bfloat16", device=device)
        fns["HF bf16"] = make_theirs(c, precision="bfloat16", device=device)
    times = {name: [] for name in fns}
    for i in range(warmup + steps):
        for name, fn in fns.items():  # alternate: ours, theirs, ours, theirs, ...
            X, y = data[i % len(data)]
            sync()
            t = time.perf_counter()
            fn(X, y)
            sync()
            if i >= warmup:
                times[name].append(time.perf_counter() - t)
    result = {name: 1000 * statistics.median(ts) for name, ts in times.items()}
    if compile_seconds is not None:
        result["compile s"] = compile_seconds
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=None, help="timed steps per model (default: 5 Fu, 30 small)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--only", choices=["fu", "small"], default=None)
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--compile", choices=["recipe", "all", "none"], default="recipe",
                   help="time ours through torch.compile where the recipe compiles (default), everywhere, or nowhere")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    where = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else \
        f"{torch.get_num_threads()} thread(s)"
    print(f"torch {torch.__version__}, {args.device}: {where}, native bf16: {native_bf16(args.device)}; "
          "median ms per step (forward + backward + optimizer), measured alternately. HF = Garg et al.'s stack "
          "(GPT2Model + read-in/out, Adam, float32); ratio = tfnewton / HF (SDPA).")
    print("| config | HF, SDPA | HF, eager | tfnewton float32 | ratio | compiled | ratio | tfnewton bf16 | ratio "
          "| HF under bf16 autocast | the recipe's step: ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, c in CONFIGS.items():
        if args.only and not name.startswith(args.only):
            continue
        recipe = RECIPES[c["recipe"]]
        compile = args.compile == "all" or (args.compile == "recipe" and recipe.get("compile", False))
        steps = args.steps or (5 if c["width"] >= 256 else 30)
        r = bench(c, steps, args.warmup, compile=compile, device=args.device)
        hf = r["HF"]
        precision = resolve_precision(recipe["precision"], args.device)
        key = "compiled" if recipe.get("compile", False) and "compiled" in r else precision
        label = f"{precision}{', compiled' if key == 'compiled' else ''}"
        compiled = (f"{r['compiled']:.1f} (compile {r['compile s']:.0f} s) | {r['compiled'] / hf:.2f}x"
                    if "compiled" in r else "not timed |")
        bf16 = (f"{r['bfloat16']:.1f} | {r['bfloat16'] / hf:.2f}x | {r['HF bf16']:.1f}" if "bfloat16" in r
                else "n/a | | n/a (no native bf16)")
        print(f"| {name}, batch {c['batch']} | {hf:.1f} | {r['HF eager']:.1f} | {r['float32']:.1f} "
              f"| {r['float32'] / hf:.2f}x | {compiled} | {bf16} | {label}: {r[key] / hf:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
