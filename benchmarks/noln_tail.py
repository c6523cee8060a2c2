"""The no-LayerNorm linear-attention model against tuned 3-step GD, prompt set by prompt set.

Usage::

    python benchmarks/noln_tail.py --runs runs/noln          # trains what is missing, then scores
    python benchmarks/noln_tail.py --runs /tmp/x --steps 20 --out /tmp/x.json   # plumbing

Issue 17, item 6: ``linear_noln_linreg_d5`` was reported worse at k = 2d than three steps of
tuned GD on one set of fresh prompts and better on another. This scores the shipped model and
three retrainings of its recipe, each a single change (each at most 3 CPU-minutes on one
thread), on the same 20,000 fresh prompts (seed 99), as ten sets of 2,000: per set the mean
normalized error at k = 2d of the model and of three GD steps with one step size tuned on all
20,000 prompts; over all prompts the median, 99th percentile and maximum
(:func:`tfnewton.architectures.compare_on_prompt_sets`). A variant's checkpoint is
``RUNS/<name>/model.pt``; a missing one is trained by the command its row records. Results:
``benchmarks/results/noln_tail.json`` (rewritten whole).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from _timing import machine

from tfnewton.architectures import compare_on_prompt_sets
from tfnewton.models import load_pretrained, pretrained_info
from tfnewton.models.pretrained import load_checkpoint
from tfnewton.separation import file_sha256
from tfnewton.train import TrainConfig, make_eval_set

RESULTS = Path(__file__).resolve().parent / "results" / "noln_tail.json"
RECIPE = "linear_noln_linreg_d5"
#: Each variant: one change to the recipe (flags of ``python -m tfnewton train``).
VARIANTS = {
    "determined loss": ["--loss-positions", "determined", "--loss-switch-step", "2500"],
    "weight decay 0.1": ["--weight-decay", "0.1"],
    "seed 1": ["--seed", "1"],
}
PROMPTS, SET_SIZE, SEED = 20_000, 2_000, 99


def folder(name: str) -> str:
    return name.replace(" ", "_").replace(".", "")


def train_command(flags: list, out: Path, steps: int | None) -> list:
    extra = ["--steps", str(steps), "--eval-prompts", "64"] if steps else []
    return [sys.executable, "-m", "tfnewton", "train", "--recipe", RECIPE, *flags, *extra,
            "--threads", "1", "--no-progress", "--out", str(out)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=Path, required=True, help="one folder per variant (trained if absent)")
    p.add_argument("--steps", type=int, default=None, help="train this many steps (a plumbing check)")
    p.add_argument("--prompts", type=int, default=PROMPTS)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    config = TrainConfig(**{k: v for k, v in load_pretrained(RECIPE).metadata["train_config"].items()})
    X, y = make_eval_set(config, num_prompts=args.prompts, seed=SEED)
    k = config.eval_k
    rows = []
    models = {"shipped": (load_pretrained(RECIPE), Path(pretrained_info(RECIPE)["file"]))}
    for name, flags in VARIANTS.items():
        out = args.runs / folder(name)
        if not (out / "model.pt").is_file():
            cmd = train_command(flags, out, args.steps)
            print("training:", " ".join(cmd[1:]), flush=True)
            start = time.process_time()
            subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            print(f"  {time.process_time() - start:.0f} CPU-s in this process (the run's own: its metadata)")
        models[name] = (load_checkpoint(out / "model.pt")[0], out / "model.pt")
    for name, (model, path) in models.items():
        result = compare_on_prompt_sets(model, X, y, k=k, set_size=min(SET_SIZE, args.prompts))
        meta = model.metadata
        row = {"variant": name, "flags": VARIANTS.get(name, []),
               "command": meta.get("command"), "train_seconds": meta.get("train_seconds"),
               "steps": meta.get("steps"), "sha256": file_sha256(path),
               **result.summary()}
        rows.append(row)
        print(f"{name:>18}: sets won {row['sets_won']}/{row['sets']}, median {row['model']['median']:.4f} "
              f"(GD {row['gd']['median']:.4f}), max {row['model']['max']:.3g}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "about": "linear_noln_linreg_d5 and one-change retrainings against 3-step GD (one tuned step) "
                 f"at k = {k}, {args.prompts} fresh prompts (seed {SEED}) in sets of {SET_SIZE}",
        "command": "python benchmarks/noln_tail.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.date.today().isoformat(), "machine": machine(), "prompt_seed": SEED,
        "runs": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
