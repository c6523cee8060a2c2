"""Does bf16 training reach float32's quality? The small recipe trained twice, once per precision.

Fu et al.'s recipe (``gpt2_linreg_d20_fu``) trains with ``precision="auto"``, which is bf16
autocast on a GPU and on a CPU with native bf16; its step is timed against the Hugging Face
stack at that precision (``train_step.py``). This checks that the cheaper arithmetic does not
cost quality: the small recipe (``gpt2_linreg_d5``, same seed, same prompts, same step count)
is trained in float32 and under bf16 autocast, and the two normalized errors at k = 2d on the
recipe's 2,000 evaluation prompts are compared. It passes when bf16's error is at most
``--tolerance`` (10 %) above float32's.

    python benchmarks/bf16_quality.py                 # the whole recipe, twice (2 x ~6 CPU-minutes)
    python benchmarks/bf16_quality.py --steps 200     # a plumbing check
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time

import torch

from tfnewton.step import resolve_precision
from tfnewton.train import RECIPES, TrainConfig, train


def run(config: TrainConfig, threads: int) -> dict:
    """Train ``config`` to its last step; its error at k = 2d on the evaluation prompts."""
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        result = train(config, out, threads=threads, progress=False, final_eval=False,
                       eval_every=max(1, config.steps // 8), ckpt_every=config.steps)
        seconds = time.perf_counter() - start
    history = result["history"]
    return {"precision": config.precision, "steps": result["step"], "error": history["eval_error"][-1],
            "eval_step": history["eval_step"], "eval_error": history["eval_error"], "seconds": round(seconds, 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default="gpt2_linreg_d5", choices=sorted(RECIPES))
    p.add_argument("--steps", type=int, default=None, help="default: the recipe's")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tolerance", type=float, default=0.10, help="bf16 error may exceed float32's by this fraction")
    p.add_argument("--json", default=None, help="also write the figures to this file")
    args = p.parse_args(argv)
    base = TrainConfig(**{k: v for k, v in RECIPES[args.recipe].items()})
    if args.steps is not None:
        base = dataclasses.replace(base, steps=args.steps, warmup_steps=min(base.warmup_steps, args.steps // 4),
                                   curriculum_every=max(1, min(base.curriculum_every, args.steps // 8)))
    if resolve_precision("bfloat16", "cpu") != "bfloat16":
        print("this CPU has no native bf16 (AVX512-BF16/AMX): nothing to compare here")
        return 0
    runs = [run(dataclasses.replace(base, precision=precision), args.threads) for precision in ("float32", "bfloat16")]
    f32, bf16 = runs
    ratio = bf16["error"] / f32["error"]
    passed = ratio <= 1.0 + args.tolerance
    print(f"recipe {args.recipe}, {base.steps} steps, {args.threads} thread(s); normalized error at k = 2d "
          f"on {base.eval_prompts} evaluation prompts")
    print("| precision | error | seconds |")
    print("|---|---|---|")
    for r in runs:
        print(f"| {r['precision']} | {r['error']:.4f} | {r['seconds']:.0f} |")
    print(f"bf16 / float32 = {ratio:.3f} (pass when <= {1 + args.tolerance:.2f}): {'PASS' if passed else 'FAIL'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"recipe": args.recipe, "steps": base.steps, "threads": args.threads, "ratio": ratio,
                       "passed": passed, "runs": runs, "command": " ".join(sys.argv)}, f, indent=2)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
