"""CPU minutes until the small recipe's model is good: normalized error at k = 2d below
1.1 x OLS's + 0.01 (noiseless linear regression: below 0.01).

Three numbers, from cheapest to most expensive:

1. **steps to quality**, read from a checkpoint's stored evaluation history (every 500
   steps on 2,000 fixed prompts): the first evaluation below the threshold;
2. **wall-clock seconds** at that evaluation, also from the history — honest but only as
   clean as the machine was during the run (a shared machine inflates it);
3. **projected CPU minutes** = steps to quality x the median time of one training step of
   the recipe measured here and now with ``--threads`` threads (default 2: a 2-core laptop),
   plus the evaluations (one every 500 steps, also timed here). This is the number to compare with the 10-minute target on an
   otherwise idle machine.

``--train`` instead runs the recipe from scratch and reports the wall-clock time at which
the evaluation first crosses the threshold (about 10 minutes on a 2-core CPU; it trains in
chunks of 500 steps and stops at the first evaluation below the threshold).

    python benchmarks/time_to_quality.py                       # the shipped gpt2_linreg_d5
    python benchmarks/time_to_quality.py --checkpoint runs/gpt2_linreg_d5/model.pt
    python benchmarks/time_to_quality.py --train --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from tfnewton.models import load_checkpoint, load_pretrained
from tfnewton.train import (RECIPES, TrainConfig, autocast_context, curriculum_at, learning_rate, loss_fn,
                            resolve_precision, sample_batch, train)


def first_below(history: dict, threshold: float):
    for step, err, sec in zip(history["eval_step"], history["eval_error"], history["eval_seconds"]):
        if err < threshold:
            return step, err, sec
    return None


def step_time_ms(config: TrainConfig, steps: int = 40) -> float:
    """Median ms of one full training step of ``config`` (sampling, forward, backward, AdamW)."""
    from tfnewton.models import build_model

    model = build_model(config.kind, config.d, n_layers=config.n_layers, width=config.width, heads=config.heads,
                        layernorm=config.layernorm, n_points=config.n_points, seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.0, fused=True)
    g = torch.Generator().manual_seed(0)
    times = []
    for i in range(steps + 5):
        t = time.perf_counter()
        d_eff, n_eff = curriculum_at(10**9, config)  # the full-size problem (the slowest step)
        X, y = sample_batch(config, config.batch_size, n_eff, d_eff, generator=g, device="cpu")
        with autocast_context(config.precision, "cpu"):
            pred = model(X, y, skip_unused=True)
        loss = loss_fn(pred.float(), y, config.task)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        opt.step()
        if i >= 5:
            times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def eval_time_s(config: TrainConfig) -> float:
    """Seconds of one periodic evaluation (``eval_prompts`` prompts at full size)."""
    from tfnewton.models import build_model
    from tfnewton.train import make_eval_set, predict

    model = build_model(config.kind, config.d, n_layers=config.n_layers, width=config.width, heads=config.heads,
                        layernorm=config.layernorm, n_points=config.n_points, seed=0)
    X, y = make_eval_set(config)
    predict(model, X, y)
    t = time.perf_counter()
    predict(model, X, y)
    return time.perf_counter() - t


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None, help="a model.pt (default: the shipped gpt2_linreg_d5)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--train", action="store_true", help="train the recipe from scratch and time it")
    p.add_argument("--recipe", default="gpt2_linreg_d5", choices=sorted(RECIPES))
    p.add_argument("--precision", default=None, choices=["float32", "bfloat16", "auto"],
                   help="override the recipe's precision (with --train)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    if args.train:
        config = TrainConfig(**{**RECIPES[args.recipe], **({"precision": args.precision} if args.precision else {})})
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            # Train in chunks of 500 steps (one evaluation each; resuming is bit-identical)
            # and stop at the first evaluation below the threshold.
            step, hit = 0, None
            while step < config.steps and hit is None:
                r = train(config, out, resume=True, stop_after=min(config.steps, step + 500), threads=args.threads,
                          progress=False, final_eval=False, eval_every=500)
                step = r["step"]
                hit = first_below(r["history"], 1.1 * 0.0 + 0.01)
            minutes = (time.perf_counter() - t0) / 60
        if hit:
            print(f"{args.recipe} ({resolve_precision(config.precision)}): error {hit[1]:.4f} < 0.01 at step "
                  f"{hit[0]} after {minutes:.1f} wall-clock minutes on {args.threads} thread(s)")
        else:
            print(f"{args.recipe}: not below 0.01 after {step} steps ({minutes:.1f} min)")
        return

    if args.checkpoint:
        model, meta = load_checkpoint(args.checkpoint)
    else:
        model = load_pretrained("gpt2_linreg_d5")
        meta = model.metadata
    config = TrainConfig(**meta["train_config"])
    ols = meta["metrics"].get("ols_error_at_eval_k") or 0.0
    threshold = 1.1 * ols + 0.01
    hit = first_below(meta["history"], threshold)
    ms = step_time_ms(config)
    eval_s = eval_time_s(config)
    print(f"checkpoint: {meta['command']}")
    print(f"threshold at k = {config.eval_k}: 1.1 x OLS ({ols:.2g}) + 0.01 = {threshold:.4f}")
    if hit is None:
        print("the run never reached the threshold")
        return
    step, err, sec = hit
    evals = step // 500
    projected = (step * ms / 1000 + evals * eval_s) / 60
    print(f"| steps to quality | error there | wall-clock in the run ({meta.get('threads')} thread(s), shared machine) "
          f"| ms/step now ({args.threads} threads) | s/evaluation | projected CPU minutes |")
    print("|---|---|---|---|---|---|")
    print(f"| {step} | {err:.4f} | {sec / 60:.1f} min | {ms:.1f} | {eval_s:.2f} | {projected:.1f} |")


if __name__ == "__main__":
    main()
