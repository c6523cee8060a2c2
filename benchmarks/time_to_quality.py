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

``--train`` instead runs the recipe from scratch, to its last step, and reports the
wall-clock time at which the evaluation first crossed the threshold (its compile included,
for a recipe that compiles).

    python benchmarks/time_to_quality.py                       # the shipped gpt2_linreg_d5
    python benchmarks/time_to_quality.py --checkpoint runs/gpt2_linreg_d5/model.pt
    python benchmarks/time_to_quality.py --train --threads 2
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from tfnewton.models import load_checkpoint, load_pretrained
from tfnewton.baselines import predict
from tfnewton.step import resolve_precision
from tfnewton.step import step_time_ms as train_step_time_ms
from tfnewton.train import RECIPES, TrainConfig, TrainStep, curriculum_at, make_eval_set, sample_batch, train


def first_below(history: dict, threshold: float):
    for step, err, sec in zip(history["eval_step"], history["eval_error"], history["eval_seconds"]):
        if err < threshold:
            return step, err, sec
    return None


def step_time_ms(config: TrainConfig, steps: int = 40) -> float:
    """Median ms of one training step of ``config`` at the final prompt length, as
    :func:`tfnewton.train.train` takes it on one CPU process (:class:`tfnewton.train.TrainStep`;
    through ``torch.compile`` if ``config.compile``, its compiling calls untimed)."""
    from tfnewton.models import build_model

    model = build_model(config.kind, config.d, n_layers=config.n_layers, width=config.width, heads=config.heads,
                        layernorm=config.layernorm, n_points=config.n_points, seed=0)
    step = TrainStep(model, config)
    forward = torch.compile(model, dynamic=False) if config.compile else None
    d_eff, n_eff = curriculum_at(10**9, config)  # the full-size problem (the slowest step)
    X, y = sample_batch(config, config.batch_size, n_eff, d_eff, generator=torch.Generator().manual_seed(0),
                        device="cpu")
    return train_step_time_ms(step, X, y, repeats=steps, warmup=5, forward=forward)


def eval_time_s(config: TrainConfig) -> float:
    """Seconds of one periodic evaluation (``eval_prompts`` prompts at full size)."""
    from tfnewton.models import build_model

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
            # One uninterrupted run (a compiled recipe compiles once); the wall clock at the
            # first evaluation below the threshold is in its history.
            r = train(config, out, threads=args.threads, progress=False, final_eval=False, eval_every=500)
        hit = first_below(r["history"], 1.1 * 0.0 + 0.01)
        final = r["history"]["eval_error"][-1]
        if hit:
            print(f"{args.recipe} ({resolve_precision(config.precision)}{', compiled' if config.compile else ''}): "
                  f"error {hit[1]:.4f} < 0.01 at step {hit[0]} after {hit[2] / 60:.1f} wall-clock minutes on "
                  f"{args.threads} thread(s); {final:.4f} at the end (step {r['step']})")
        else:
            print(f"{args.recipe}: not below 0.01 after {r['step']} steps ({final:.4f})")
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
