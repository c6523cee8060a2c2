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
for a recipe that compiles; ``--cold-cache`` compiles into an empty inductor cache, as on a
new machine). ``--json FILE`` appends the run's record (the README's table is
``benchmarks/results/time_to_quality.json``).

    python benchmarks/time_to_quality.py                       # the shipped gpt2_linreg_d5
    python benchmarks/time_to_quality.py --checkpoint runs/gpt2_linreg_d5/model.pt
    python benchmarks/time_to_quality.py --train --recipe gpt2_linreg_d5_fast --threads 2 \
        --json benchmarks/results/time_to_quality.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

import tfnewton

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
                        layernorm=config.layernorm, n_points=config.n_points, seed=0,
                        mlp_ratio=config.mlp_ratio if config.kind == "gpt2" else None)
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
                        layernorm=config.layernorm, n_points=config.n_points, seed=0,
                        mlp_ratio=config.mlp_ratio if config.kind == "gpt2" else None)
    X, y = make_eval_set(config)
    predict(model, X, y)
    t = time.perf_counter()
    predict(model, X, y)
    return time.perf_counter() - t


THRESHOLD = 0.01  # noiseless linear regression: OLS is exact at k = 2d


def train_and_time(recipe: str, *, threads: int, precision: str | None = None, eval_every: int = 250,
                   cold_cache: bool = False, seed: int | None = None) -> dict:
    """Train ``recipe`` from scratch in this process and time it.

    The clock starts before the model is built and includes the compile (where the recipe
    compiles) and every evaluation; ``seconds_to_quality`` is the time of the first
    evaluation below :data:`THRESHOLD`, counted from the start of :func:`tfnewton.train.train`
    (the loop's own clock, plus the set-up before it).
    """
    overrides = {**({"precision": precision} if precision else {}), **({"seed": seed} if seed is not None else {})}
    config = TrainConfig(**{**RECIPES[recipe], **overrides})
    previous_cache = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    with tempfile.TemporaryDirectory() as out, tempfile.TemporaryDirectory() as cache:
        if cold_cache:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
        try:
            start = time.perf_counter()
            result = train(config, out, threads=threads, progress=False, final_eval=False, eval_every=eval_every)
            total = time.perf_counter() - start
        finally:
            if cold_cache:
                if previous_cache is None:
                    os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
                else:
                    os.environ["TORCHINDUCTOR_CACHE_DIR"] = previous_cache
    history = result["history"]
    setup = total - history["eval_seconds"][-1]  # model, evaluation prompts, saving: outside the loop's clock
    hit = first_below(history, THRESHOLD)
    return {
        "recipe": recipe, "seed": config.seed, "date": time.strftime("%Y-%m-%d %H:%M"), "threads": threads,
        "precision": resolve_precision(config.precision), "compiled": config.compile,
        # "empty": compiled into a fresh cache; "default": inductor's on-disk cache, warm where an
        # earlier run compiled the same graph (then the compile takes seconds, not half a minute).
        "compile_cache": ("empty" if cold_cache else "default") if config.compile else None,
        "compile_seconds": history.get("compile_seconds"),
        "steps": result["step"], "final_error": history["eval_error"][-1],
        "step_to_quality": hit[0] if hit else None, "error_there": hit[1] if hit else None,
        "seconds_to_quality": round(hit[2] + setup, 1) if hit else None,
        "total_seconds": round(total, 1), "load_average": os.getloadavg(),
        "versions": {"torch": torch.__version__, "tfnewton": tfnewton.__version__},
    }


def describe(record: dict) -> str:
    head = (f"{record['recipe']} ({record['precision']}{', compiled' if record['compiled'] else ''}"
            f"{'' if record['compile_seconds'] is None else ', compile %.0f s' % record['compile_seconds']}) "
            f"on {record['threads']} thread(s)")
    if record["step_to_quality"] is None:
        return f"{head}: not below {THRESHOLD} after {record['steps']} steps ({record['final_error']:.4f})"
    return (f"{head}: error {record['error_there']:.4f} < {THRESHOLD} at step {record['step_to_quality']} after "
            f"{record['seconds_to_quality']:.0f} s ({record['seconds_to_quality'] / 60:.2f} min) of wall-clock; "
            f"{record['final_error']:.4f} at step {record['steps']}, {record['total_seconds']:.0f} s in all")


def append_record(path: Path, record: dict) -> None:
    """Add ``record`` to the list of runs in ``path`` (created if absent)."""
    runs = json.loads(path.read_text())["runs"] if path.is_file() else []
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"runs": runs + [record]}, indent=1) + "\n")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None, help="a model.pt (default: the shipped gpt2_linreg_d5)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--train", action="store_true", help="train the recipe from scratch and time it")
    p.add_argument("--recipe", default="gpt2_linreg_d5", choices=sorted(RECIPES))
    p.add_argument("--precision", default=None, choices=["float32", "bfloat16", "auto"],
                   help="override the recipe's precision (with --train)")
    p.add_argument("--seed", type=int, default=None, help="with --train: the run's seed (default: the recipe's)")
    p.add_argument("--eval-every", type=int, default=250, help="with --train: steps between evaluations")
    p.add_argument("--cold-cache", action="store_true",
                   help="with --train: compile into a fresh, empty inductor cache (a first run on a new machine)")
    p.add_argument("--json", default=None, help="with --train: append the run's record to this JSON file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    if args.train:
        record = train_and_time(args.recipe, threads=args.threads, precision=args.precision,
                                eval_every=args.eval_every, cold_cache=args.cold_cache, seed=args.seed)
        record["command"] = "python benchmarks/time_to_quality.py " + " ".join(sys.argv[1:] if argv is None else argv)
        print(describe(record))
        if args.json:
            append_record(Path(args.json), record)
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
