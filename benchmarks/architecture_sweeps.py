"""Sweeps of model size the book reads but cannot train: width (Fu et al.'s claim 4) and the
depth of two LSTMs (ours, residual with LayerNorm, against Garg et al.'s plain stack).

Usage::

    python benchmarks/architecture_sweeps.py width --d 5 --widths 8 16 32 64 128
    python benchmarks/architecture_sweeps.py width --d 10 --widths 8 16 32 64 128
    python benchmarks/architecture_sweeps.py lstm-depth --depths 1 2 4 8
    python benchmarks/architecture_sweeps.py width --d 5 --widths 8 --steps 4 --out /tmp/x.json  # plumbing

``width`` trains the homework recipe ``gpt2_linreg_d5_fast`` (5 layers, 4 heads, 10,000 steps,
compiled) at each width, with ``--d`` and ``n_points = 2d + 1`` in place of the recipe's; the
MLP stays ``4 x width``. ``lstm-depth`` trains ``lstm_linreg_d5``'s exercise-sized variant
(6,000 steps, width 64, lr 3e-3) at each depth, once as the library's residual LSTM with
LayerNorm and once plain (``--no-residual --no-layernorm``). Every run is a fresh training
from seed 0 on one thread; its row holds the normalized error at k = 2d on the recipe's 2,000
evaluation prompts (the final evaluation and the curve), the training seconds, the parameter
count and the command that repeats it. Rows are added to the results file as each run ends
(``benchmarks/results/width_sweep.json`` or ``lstm_depth.json``); a run already in the file
is skipped, so an interrupted sweep resumes where it stopped, and two sweeps may write the
same file (a lock serialises the writes).
"""

from __future__ import annotations

import argparse
import datetime
import fcntl
import json
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from _timing import machine

from tfnewton.models.pretrained import load_checkpoint
from tfnewton.train import QUICK, RECIPES, TrainConfig, train

RESULTS = Path(__file__).resolve().parent / "results"
WIDTH_RECIPE = "gpt2_linreg_d5_fast"
LSTM_RECIPE = "lstm_linreg_d5"


def width_config(d: int, width: int, steps: int | None = None) -> TrainConfig:
    """``gpt2_linreg_d5_fast`` at input dimension ``d`` and residual width ``width``."""
    fields = {**RECIPES[WIDTH_RECIPE], "d": d, "n_points": 2 * d + 1, "width": width}
    if steps is not None:
        fields.update(_shortened(fields, steps))
    return TrainConfig(**fields)


def lstm_config(depth: int, plain: bool, steps: int | None = None) -> TrainConfig:
    """``lstm_linreg_d5 --quick`` with ``depth`` blocks; ``plain``: no residual, no LayerNorm."""
    fields = {**RECIPES[LSTM_RECIPE], **QUICK[LSTM_RECIPE], "n_layers": depth}
    if plain:
        fields.update(residual=False, layernorm=False)
    if steps is not None:
        fields.update(_shortened(fields, steps))
    return TrainConfig(**fields)


def _shortened(fields: dict, steps: int) -> dict:
    """A plumbing run of ``steps`` steps: the schedule's milestones scaled to fit."""
    return dict(steps=steps, warmup_steps=min(fields.get("warmup_steps", 200), steps // 4),
                loss_switch_step=min(fields.get("loss_switch_step", 0), steps // 4),
                curriculum_every=max(1, min(fields.get("curriculum_every", 500), steps // 8)),
                eval_prompts=64)


def command(recipe: str, config: TrainConfig, quick: bool = False) -> str:
    """The ``python -m tfnewton train`` line that repeats a run."""
    base = TrainConfig(**{**RECIPES[recipe], **(QUICK[recipe] if quick else {})})
    flags = []
    for name in ("d", "n_points", "width", "n_layers", "steps", "warmup_steps", "loss_switch_step",
                 "curriculum_every", "eval_prompts"):
        if getattr(config, name) != getattr(base, name):
            flags += [f"--{name.replace('_', '-')}", str(getattr(config, name))]
    for name in ("residual", "layernorm"):
        if getattr(config, name) != getattr(base, name):
            flags.append(("--" if getattr(config, name) else "--no-") + name)
    quick_flag = ["--quick"] if quick else []
    return " ".join(["python -m tfnewton train --recipe", recipe, *quick_flag, *flags,
                     "--threads 1 --out OUT"])


@contextmanager
def _locked(path: Path):
    """The results file, read under an exclusive lock; what the block leaves in it is written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = json.loads(path.read_text()) if path.exists() else {"runs": []}
        yield data
        path.write_text(json.dumps(data, indent=2) + "\n")


def _done(path: Path, key: dict) -> bool:
    if not path.exists():
        return False
    return any(all(row.get(k) == v for k, v in key.items()) for row in json.loads(path.read_text())["runs"])


def run_one(config: TrainConfig, key: dict, cmd: str, path: Path) -> dict | None:
    """Train ``config`` unless ``key`` is already in ``path``; add its row."""
    if _done(path, key):
        print(f"already measured: {key}")
        return None
    print(f"training {key} ...", flush=True)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        result = train(config, out, threads=1, progress=False, final_eval=False,
                       eval_every=max(1, config.steps // 20), ckpt_every=config.steps)
        seconds = time.perf_counter() - start
        model, _ = load_checkpoint(result["model_path"])
    history = result["history"]
    row = {**key, "error": history["eval_error"][-1], "eval_k": config.eval_k,
           "eval_step": history["eval_step"], "eval_error": history["eval_error"],
           "parameters": model.num_parameters(), "steps": config.steps, "seconds": round(seconds, 1),
           "command": cmd, "date": datetime.date.today().isoformat()}
    print(f"  error at k = {config.eval_k}: {row['error']:.4f} after {seconds:.0f} s", flush=True)
    with _locked(path) as data:
        data["machine"] = machine()
        data["runs"].append(row)
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="sweep", required=True)
    w = sub.add_parser("width", help="the homework recipe at several widths")
    w.add_argument("--d", type=int, required=True)
    w.add_argument("--widths", type=int, nargs="+", required=True)
    l = sub.add_parser("lstm-depth", help="residual and plain LSTMs at several depths")
    l.add_argument("--depths", type=int, nargs="+", required=True)
    for q in (w, l):
        q.add_argument("--steps", type=int, default=None, help="default: the recipe's (a plumbing check)")
        q.add_argument("--out", type=Path, default=None, help="results file (default benchmarks/results/...)")
    args = p.parse_args(argv)
    if args.sweep == "width":
        path = args.out or RESULTS / "width_sweep.json"
        configs = [width_config(args.d, width, args.steps) for width in args.widths]  # errors before training
        for width, config in zip(args.widths, configs):
            run_one(config, {"d": args.d, "width": width}, command(WIDTH_RECIPE, config), path)
    else:
        path = args.out or RESULTS / "lstm_depth.json"
        for depth in args.depths:
            for plain in (False, True):
                config = lstm_config(depth, plain, args.steps)
                run_one(config, {"depth": depth, "architecture": "plain" if plain else "residual"},
                        command(LSTM_RECIPE, config, quick=True), path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
