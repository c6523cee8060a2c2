"""Run the CUDA path for real on a lent GPU machine, in one go, and keep every figure.

Device time is short (15 minutes a session, machine start included), so this is the one
script to run there. Four phases, each in a subprocess with its own time limit, each
writing its output to ``OUT`` as soon as it ends (a run cut short still returns what it
measured):

1. ``tests``: the CUDA-marked tests (``pytest -m cuda``).
2. ``step``: ``benchmarks/train_step.py --device cuda``, our step against Hugging Face's
   GPT-2 stack at both configurations.
3. ``train``: Fu et al.'s recipe (``gpt2_linreg_d20_fu``) on the GPU for as many steps as
   fit in ``--train-seconds`` (the step count comes from a short timed start), then the
   error it reached on the recipe's evaluation prompts and the curriculum stage it was at.
4. ``book``: every chapter executed on the GPU (``benchmarks/book.py``), with its time.

``OUT/summary.json`` collects each phase's status, seconds and figures; ``OUT/<phase>.log``
holds what the phase printed. On the device machine::

    python benchmarks/gpu_check.py --out "$OUT"

On a CPU the same script checks its own plumbing in seconds (the tests do this)::

    python benchmarks/gpu_check.py --out /tmp/gpu_check --device cpu --quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
PHASES = ("tests", "step", "train", "book")

#: Seconds each phase may take on the GPU machine (all four well inside one 600 s call).
LIMITS = {"tests": 120, "step": 90, "train": 200, "book": 170}


def run_phase(name: str, argv: list, out: Path, limit: float, env: dict) -> dict:
    """Run ``argv`` from the repository root with a time limit; its output goes to
    ``out/<name>.log``. Returns ``{"status", "returncode", "seconds"}``."""
    start = time.perf_counter()
    with open(out / f"{name}.log", "w") as log:
        log.write("$ " + " ".join(map(str, argv)) + "\n")
        log.flush()
        try:
            code = subprocess.run(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=limit,
                                  env=env).returncode
            status = "ok" if code == 0 else "failed"
        except subprocess.TimeoutExpired:
            code, status = None, "timed out"
    return {"status": status, "returncode": code, "seconds": round(time.perf_counter() - start, 1)}


def phase_argv(name: str, args, out: Path) -> list:
    """The command line of one phase."""
    py = sys.executable
    if name == "tests":
        selection = ["tests/test_devices.py"] if args.quick else []
        return [py, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", *selection]
    if name == "step":
        extra = ["--only", "small", "--steps", "2", "--warmup", "1", "--compile", "none"] if args.quick else ["--steps", "20"]
        return [py, "benchmarks/train_step.py", "--device", args.device, *extra]
    if name == "book":
        extra = ["--quick"] if args.quick else []
        return [py, "benchmarks/book.py", "--out", str(out / "book_times.json"), *extra]
    raise ValueError(f"phase {name!r} has no single command line")


def train_argv(args, out: Path, stop_after: int) -> list:
    """Fu et al.'s recipe on ``args.device``, stopped after ``stop_after`` steps."""
    argv = [sys.executable, "-m", "tfnewton", "train", "--recipe", "gpt2_linreg_d20_fu", "--device", args.device,
            "--out", str(out / "fu_run"), "--resume", "--stop-after", str(stop_after), "--no-progress",
            "--eval-every", str(max(1, stop_after // 4)), "--ckpt-every", str(stop_after), "--no-final-eval"]
    if args.quick:  # a model the CPU trains in seconds: only the plumbing is checked
        argv += ["--n-layers", "1", "--width", "16", "--heads", "2", "--eval-prompts", "64"]
    return argv


def train_phase(args, out: Path, limit: float, env: dict) -> dict:
    """Time a short start, then run as many more steps as the limit allows; read the run's
    history for the error reached."""
    probe_steps = 5 if args.quick else 200
    first = run_phase("train", train_argv(args, out, probe_steps), out, limit / 2, env)
    if first["status"] != "ok":
        return first
    per_step = first["seconds"] / probe_steps  # start-up included: an overestimate, on purpose
    total = probe_steps + max(1, int((limit - 2 * first["seconds"]) / per_step)) if not args.quick else 2 * probe_steps
    second = run_phase("train_more", train_argv(args, out, total), out, limit - first["seconds"], env)
    state = torch.load(out / "fu_run" / "train_state.pt", map_location="cpu", weights_only=True)
    history = state["history"]
    result = {
        "status": second["status"], "returncode": second["returncode"],
        "seconds": round(first["seconds"] + second["seconds"], 1), "steps": int(state["step"]),
        "train_seconds": round(float(state["elapsed_seconds"]), 1),
        "curriculum": state["curriculum"] if isinstance(state["curriculum"], (int, float, list, dict)) else None,
        "eval_step": list(history.get("eval_step", [])), "eval_error": list(history.get("eval_error", [])),
    }
    (out / "fu_run" / "train_state.pt").unlink()  # 30 MB: too large to bring back, and not needed
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder for summary.json and the phases' logs")
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu to check the plumbing")
    p.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated subset of {','.join(PHASES)}")
    p.add_argument("--train-seconds", type=float, default=LIMITS["train"])
    p.add_argument("--quick", action="store_true", help="tiny settings: checks the script itself, on any device")
    args = p.parse_args(argv)
    phases = [name for name in args.phases.split(",") if name]
    unknown = sorted(set(phases) - set(PHASES))
    if unknown:
        p.error(f"--phases: unknown {unknown}; expected a subset of {list(PHASES)}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error(f"--device {args.device}: CUDA is not available on this machine (use --device cpu --quick)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, TFNEWTON_DEVICE=args.device, PYTHONUNBUFFERED="1")
    summary = {
        "device": torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else platform.processor(),
        "torch": torch.__version__, "python": platform.python_version(), "quick": args.quick,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"), "phases": {},
    }
    for name in phases:
        limit = args.train_seconds if name == "train" else LIMITS[name]
        print(f"=== {name} (limit {limit:.0f} s)", flush=True)
        if name == "train":
            result = train_phase(args, out, limit, env)
        else:
            result = run_phase(name, phase_argv(name, args, out), out, limit, env)
        summary["phases"][name] = result
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        print(json.dumps(result), flush=True)
    return 0 if all(r["status"] == "ok" for r in summary["phases"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
