"""How long each exercise-sized training run takes (``--quick``), and the error it reaches.

Usage: python benchmarks/quick_runs.py [--runs LABEL ...] [--update] [--smoke] [--out PATH]

Every recipe with a quick variant (:data:`tfnewton.train.QUICK`) is trained from scratch with
the command a student types, ``python -m tfnewton train --recipe NAME --quick``, plus the
variants the book's exercises ask for (other widths, another condition number), each in its
own process with one thread (``--threads 1``, ``OMP_NUM_THREADS=1``). A run's CPU time is the
user + system time of that process: start-up, the data, every step, the evaluations and the
final metrics-against-k, as the student waits for them (no variant compiles). CPU time
depends far less than the wall clock on what else runs on the machine, but not at all only on
the run: the load average before and after is recorded with the figures.

Budget (issue 20): every exercise-sized run at most 3 CPU-minutes (180 s). The script prints
a table (run, exercise, CPU seconds, wall seconds, error reached, within budget?) and writes
it as JSON to ``benchmarks/results/quick_runs.json`` with the commands, the date, the
versions and the machine; the book's exercises read their times from it.

``--runs LABEL ... --update`` measures only those runs and replaces their rows in the
results file, keeping the others (each row has its own date and load average): after a
change to one quick variant, rerun that one. ``--smoke`` checks the machinery only: each
run is cut to 2 steps on 16 evaluation prompts without the final metrics, and nothing is
written unless ``--out`` is given.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _timing import machine as shared_machine

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "quick_runs.json"
CPU_BUDGET_S = 180.0
SMOKE_FLAGS = ["--steps", "2", "--eval-prompts", "16", "--no-final-eval"]

#: The runs the book's exercises ask for beyond ``--recipe NAME --quick``:
#: label -> (flags after ``--quick``, where the book uses it).
EXERCISE_RUNS = {
    "linear_ln_linreg_d5 width 16": (["--width", "16", "--heads", "2"],
                                     "linear_regression_probes, exercise 7"),
    "linear_ln_linreg_d5 width 8": (["--width", "8", "--heads", "2"],
                                    "linear_regression_probes, exercise 7"),
    "gpt2_logreg_d5 kappa 50": (["--condition-number", "50"],
                                "logistic_regression_trained, exercise 4"),
}
#: Where the book uses a recipe's plain quick variant.
USED_BY = {
    "linear_ln_linreg_d5": "training, exercise 4; linear_regression_probes, exercise 7",
    "gpt2_logreg_d5": "logistic_regression_trained, exercise 4",
}


def planned_runs() -> dict[str, dict]:
    """Every run to measure: label -> ``{"recipe", "flags", "exercise"}``, the plain quick
    variants first (in :data:`tfnewton.train.QUICK`'s order), then :data:`EXERCISE_RUNS`."""
    from tfnewton.train import QUICK

    runs = {name: {"recipe": name, "flags": [], "exercise": USED_BY.get(name)} for name in QUICK}
    for label, (flags, exercise) in EXERCISE_RUNS.items():
        runs[label] = {"recipe": label.split()[0], "flags": flags, "exercise": exercise}
    return runs


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def student_argv(recipe: str, flags: list[str], out: str) -> list[str]:
    """The arguments after ``python -m tfnewton train`` for one run (one thread, no bar)."""
    return ["--recipe", recipe, "--quick", *flags, "--threads", "1", "--no-progress", "--out", out]


def measure_run(recipe: str, flags: list[str], *, smoke: bool = False, timeout: float = 900.0) -> dict:
    """Train one quick run from scratch in a fresh process and time it.

    Returns
    -------
    dict
        ``cpu_seconds`` (the process's user + system time), ``wall_seconds``,
        ``train_seconds`` (the loop's own clock, from the checkpoint), ``steps``, the
        headline metric at ``k = 2d`` (``metric``, ``value``), ``command`` (what the student
        types, without the runtime flags) and ``recorded_command`` (the checkpoint's);
        ``error`` (``None``, or the end of the process's stderr).
    """
    from tfnewton.models import load_checkpoint

    extra = SMOKE_FLAGS if smoke else []
    with tempfile.TemporaryDirectory() as out:
        argv = student_argv(recipe, flags + extra, out)
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        cpu0, wall0 = _children_cpu_seconds(), time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "tfnewton", "train", *argv], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=timeout)
        wall, cpu = time.perf_counter() - wall0, _children_cpu_seconds() - cpu0
        row = {"command": "python -m tfnewton train " + shlex.join(["--recipe", recipe, "--quick", *flags]),
               "cpu_seconds": round(cpu, 1), "wall_seconds": round(wall, 1), "error": None}
        if proc.returncode != 0:
            return {**row, "error": proc.stderr[-2000:]}
        _, meta = load_checkpoint(Path(out) / "model.pt")
    metrics = meta["metrics"]
    row.update(train_seconds=round(meta["train_seconds"], 1), steps=meta["steps"], eval_k=metrics["eval_k"],
               metric=metrics["eval_metric"], value=metrics[f"{metrics['eval_metric']}_at_eval_k"],
               recorded_command=meta["command"].replace(out, "OUT"), threads=meta["threads"])
    reference = [key for key in metrics if key.endswith("_at_eval_k") and key != f"{metrics['eval_metric']}_at_eval_k"]
    if reference:
        row["baseline"] = {key: metrics[key] for key in reference}
    return row


def machine() -> dict:
    """The machine (:func:`_timing.machine`) and the versions the times were measured with."""
    import torch

    import tfnewton

    return {**shared_machine(), "threads_per_run": 1, "torch": torch.__version__, "tfnewton": tfnewton.__version__}


def table(rows: dict[str, dict]) -> str:
    """The results as a Markdown table, one row per run."""
    lines = ["| run | exercise | CPU s | wall s | steps | metric at k = 2d | within 180 CPU-s |",
             "|---|---|---|---|---|---|---|"]
    for label, row in rows.items():
        if row["error"]:
            lines.append(f"| {label} | {row['exercise'] or ''} | {row['cpu_seconds']:.1f} | {row['wall_seconds']:.1f} "
                         "| | failed | error |")
            continue
        value = "n/a" if row["value"] is None else f"{row['metric']} {row['value']:.4f}"
        lines.append(f"| {label} | {row['exercise'] or ''} | {row['cpu_seconds']:.1f} | {row['wall_seconds']:.1f} | "
                     f"{row['steps']:,} | {value} | {'yes' if row['ok'] else '**no**'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", metavar="LABEL", help="only these runs (labels as printed)")
    parser.add_argument("--update", action="store_true",
                        help="keep the other runs' rows of the results file, replace these")
    parser.add_argument("--smoke", action="store_true", help="2 steps per run; writes nothing unless --out")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"JSON file to write (default {RESULTS.relative_to(ROOT)}; none with --smoke)")
    args = parser.parse_args(argv)
    out = args.out if args.out is not None else (None if args.smoke else RESULTS)
    plan = planned_runs()
    if args.runs:
        unknown = sorted(set(args.runs) - set(plan))
        if unknown:
            parser.error(f"--runs must name runs of {', '.join(plan)}; got {', '.join(unknown)}")
        plan = {label: run for label, run in plan.items() if label in args.runs}

    load_before = os.getloadavg()
    started = datetime.datetime.now(datetime.timezone.utc)
    print(f"training {len(plan)} quick run(s), one thread each (load average {load_before[0]:.2f})",
          file=sys.stderr)
    rows = {}
    for label, run in plan.items():
        load = os.getloadavg()[0]
        row = {"exercise": run["exercise"], **measure_run(run["recipe"], run["flags"], smoke=args.smoke),
               "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "load_average_before_after": [round(load, 2), round(os.getloadavg()[0], 2)]}
        row["ok"] = row["error"] is None and row["cpu_seconds"] <= CPU_BUDGET_S
        rows[label] = row
        status = "error" if row["error"] else f"{row['cpu_seconds']:.1f} CPU-s, {row['metric']} {row['value']}"
        print(f"  {label}: {status} (load {os.getloadavg()[0]:.2f})", file=sys.stderr, flush=True)
    print(table(rows))
    failed = [label for label, row in rows.items() if row["error"]]
    for label in failed:
        print(f"{label} failed:\n{rows[label]['error']}")
    if out is not None:
        if args.update and out.is_file():
            kept = json.loads(out.read_text(encoding="utf-8")).get("runs", {})
            rows = {label: rows.get(label, kept.get(label)) for label in planned_runs()
                    if label in rows or label in kept}
        record = {
            "command": "python benchmarks/quick_runs.py" + "".join(
                f" {shlex.quote(a)}" for a in (argv if argv is not None else sys.argv[1:])),
            "date": started.isoformat(timespec="seconds"),
            "smoke": args.smoke,
            "complete": not args.smoke and set(rows) == set(planned_runs()),
            "machine": machine(),
            "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
            "cpu_budget_seconds": CPU_BUDGET_S,
            "all_ok": all(row.get("ok") for row in rows.values()),
            "runs": rows,
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {out}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
