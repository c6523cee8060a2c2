"""Issue 17's thesis, measured: the metric's power, the kappa = 100 model layer by layer, the goal, Table 1.

Usage:
    python benchmarks/thesis.py                # >= 2,000 held-out prompts, writes results/thesis.json
    python benchmarks/thesis.py --resume       # keep the sections already in the file (same checkpoint, same sizes)
    python benchmarks/thesis.py --smoke        # tiny sizes, no probes; writes nothing unless --out

Four sections, each written to the JSON as soon as it is done (so an interrupted run resumes):

- ``ceilings``: the metric's power (:func:`tfnewton.separation.ceiling_rows`): exact Iterative
  Newton at step t stands in for the model, and the table records how close GD's best comes to
  it under the similarity of errors (GD with one global step tuned on a grid, and 1/lambda_max
  per prefix), the similarity of induced weights (both protocols) and a probe's R^2; per
  setting (d = 5 kappa = 1, d = 5 kappa = 100, d = 20 kappa = 1) on --ceiling-prompts fresh
  prompts each;
- ``layers``: the shipped model ``gpt2_linreg_d5_kappa100`` (its training distribution: d = 5,
  11 points, kappa = 100), --prompts fresh prompts, half to fit the per-layer read-outs and half
  held out (:func:`tfnewton.separation.layer_study`): every layer against Newton, GD (both
  protocols), online GD and OLS, the gap against the ceiling, best-step growth, the probe R^2
  tables with their controls and the goal verdict;
- ``table1_hypotheses``: Fu et al.'s Table 1 with exact algorithms standing in for the model at
  d = 20 (41 points) and d = 5 (11 points), under every combination of positions and GD
  protocol (:func:`tfnewton.separation.table1_hypotheses`), and the combination nearest the
  paper's numbers;
- ``table1_models``: the kappa = 100 model's and the isotropic ``gpt2_linreg_d5``'s output under
  our protocol, Fu et al.'s code's protocol and the nearest one;
- ``layers_d10``: the same layer study for ``gpt2_linreg_d10_kappa100`` (d = 10, 21 points,
  kappa = 100), with its own checkpoint's sha256, when that checkpoint is shipped.

The JSON records the command, the date, the machine, torch's version, the checkpoint's sha256
and every seed; ``book/linear_regression_thesis.md`` reads it when the sha256 matches.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
import time
from pathlib import Path

import torch

from _timing import machine

RESULTS = Path(__file__).resolve().parent / "results" / "thesis.json"
NAME = "gpt2_linreg_d5_kappa100"
ISOTROPIC = "gpt2_linreg_d5"
NAME_D10 = "gpt2_linreg_d10_kappa100"
SETTINGS = ((5, 11, 1.0), (5, 11, 100.0), (20, 41, 1.0))
CEILING_STEPS = (0, 1, 2, 3, 4, 6, 8, 12, 16, 20)
FU_PROTOCOL = {"positions": "0 … n−1 (Fu et al.'s code)",
               "gd": "fixed η = 0.01 (summed loss), ≤ 4096 steps (Fu et al.'s code)", "newton_alpha": "frobenius",
               "online": "fu"}
OUR_PROTOCOL = {"positions": "1 … n−1 (ours)", "gd": "one step tuned on a grid, ≤ 4096 steps (ours)",
                "newton_alpha": "default", "online": "best"}


def prompts(batch, n, d, kappa, seed):
    from tfnewton.tasks import sample_linear_regression

    return sample_linear_regression(batch, n, d, condition_number=kappa, generator=torch.Generator().manual_seed(seed))


def section_ceilings(args):
    from tfnewton.separation import ceiling_rows

    out = []
    for i, (d, n, kappa) in enumerate(SETTINGS):
        seed = args.seed + 10 + i
        task = prompts(args.ceiling_prompts, n, d, kappa, seed)
        rows = ceiling_rows(task.X.double(), task.y.double(), CEILING_STEPS)
        out.append({"d": d, "n_points": n, "condition_number": kappa, "prompts": args.ceiling_prompts, "seed": seed,
                    "rows": rows})
        print(f"ceilings d={d} kappa={kappa:g}: done")
    return out


def section_layers(args, model, d=5, n_points=11, seed_offset=0):
    from tfnewton.separation import layer_study

    task = prompts(args.prompts, n_points, d, 100.0, args.seed + seed_offset)
    summary, _, heldout = layer_study(model, task, probes=not args.smoke)
    summary["prompts"], summary["seed"] = args.prompts, args.seed + seed_offset
    for row in summary["layers"]:
        print(f"  {row['label']}: error {row['readout_error']:.3f}  Newton {row['newton']:.3f} ({row['newton_step']})"
              f"  GD {row['gd_global']:.3f} ({row['gd_global_step']})  gap {row['gap_global']:+.3f}"
              f"  ceiling {row['ceiling_global']:.3f}")
    print("  verdict:", "passed" if summary["verdict"]["passed"] else "failed",
          {k: c["value"] for k, c in summary["verdict"]["conditions"].items()})
    return summary, heldout


def section_table1_hypotheses(args):
    from tfnewton.separation import closest_to_table1, gd_cap_sweep, table1_hypotheses

    out = []
    for i, (d, n) in enumerate(((20, 41), (5, 11))):
        seed = args.seed + 20 + i
        task = prompts(args.table1_prompts, n, d, 1.0, seed)
        rows = table1_hypotheses(task.X.double(), task.y.double())
        out.append({"d": d, "n_points": n, "condition_number": 1.0, "prompts": args.table1_prompts, "seed": seed,
                    "rows": rows, "closest": closest_to_table1(rows),
                    "cap_sweep": gd_cap_sweep(task.X.double(), task.y.double()),
                    "labels_equal_truth": float((task.y.double() - (task.X.double() @ task.w.double()[..., None])[..., 0])
                                                .abs().max())})
        print(f"table 1 hypotheses d={d}: nearest the paper: {out[-1]['closest']}")
    return out


def section_table1_models(args, heldout, hypotheses):
    from tfnewton.models import load_pretrained
    from tfnewton.separation import model_table1

    d20 = next(h for h in hypotheses if h["d"] == 20)["closest"]
    nearest = {"positions": d20["positions"], "gd": d20["gd"], "newton_alpha": "frobenius", "online": "fu"}
    protocols = {"ours": OUR_PROTOCOL, "fu_code": FU_PROTOCOL, "nearest": nearest}
    iso = load_pretrained(ISOTROPIC)
    task = prompts(args.prompts // 2, 11, 5, 1.0, args.seed + 30)
    with torch.no_grad():
        iso_out = iso(task.X, task.y).double()
    models = {NAME: (heldout["output"], heldout["X"], heldout["y"]),
              ISOTROPIC: (iso_out, task.X.double(), task.y.double())}
    out = {"protocols": protocols, "rows": []}
    for model_name, (pred, X, y) in models.items():
        for key, spec in protocols.items():
            row = model_table1(pred, X, y, **spec)
            out["rows"].append({"model": model_name, "protocol": key, **row})
            print(f"  {model_name} under {key}: Newton {row['newton']:.3f} GD {row['gd']:.3f} "
                  f"online GD {row['online_gd']:.3f}")
    out["isotropic_seed"], out["isotropic_prompts"] = args.seed + 30, args.prompts // 2
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=4000, help="kappa = 100 prompts; half are held out")
    parser.add_argument("--ceiling-prompts", type=int, default=2000)
    parser.add_argument("--table1-prompts", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1700)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--resume", action="store_true", help="keep the sections already in --out")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, no probes; writes nothing unless --out")
    parser.add_argument("--out", type=Path, default=None, help=f"default {RESULTS} (none with --smoke)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.prompts, args.ceiling_prompts, args.table1_prompts = 120, 60, 40
    out_path = args.out if args.out is not None else (None if args.smoke else RESULTS)
    torch.set_num_threads(args.threads)

    from tfnewton import __version__
    from tfnewton.separation import load_trained_model

    model, info = load_trained_model(NAME, d=5, condition_number=100.0)
    sizes = {"prompts": args.prompts, "ceiling_prompts": args.ceiling_prompts, "table1_prompts": args.table1_prompts,
             "seed": args.seed, "smoke": args.smoke}
    record = {}
    if args.resume and out_path is not None and out_path.is_file():
        old = json.loads(out_path.read_text())
        if old.get("checkpoint", {}).get("sha256") == info["sha256"] and old.get("sizes") == sizes:
            record = old
            print(f"resuming: {[k for k in ('ceilings', 'layers', 'table1_hypotheses', 'table1_models') if k in old]}")
    record.update({
        # --resume only skips the sections already measured with these sizes: not part of
        # the command that reproduces the record.
        "command": "python benchmarks/thesis.py " + shlex.join(
            a for a in (argv if argv is not None else sys.argv[1:]) if a != "--resume"),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(), "threads": args.threads, "torch": torch.__version__, "tfnewton": __version__,
        "checkpoint": {"name": NAME, "sha256": info["sha256"], "command": info["metadata"].get("command")},
        "sizes": sizes,
    })
    record.setdefault("seconds", {})

    def save():
        if out_path is not None:
            out_path.parent.mkdir(parents=True, exist_ok=True)
            out_path.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")

    t0 = time.process_time()
    if "ceilings" not in record:
        record["ceilings"] = section_ceilings(args)
        record["seconds"]["ceilings"] = round(time.process_time() - t0, 1)
        save()
    t1 = time.process_time()
    # The held-out prompts feed the model's Table 1 too: the layer study always runs again when
    # that section is missing (it is a few seconds without the probes).
    if "layers" not in record or "table1_models" not in record:
        summary, heldout = section_layers(args, model)
        if "layers" not in record:
            record["layers"] = summary
            record["seconds"]["layers"] = round(time.process_time() - t1, 1)
            save()
    t2 = time.process_time()
    if "table1_hypotheses" not in record:
        record["table1_hypotheses"] = section_table1_hypotheses(args)
        record["seconds"]["table1_hypotheses"] = round(time.process_time() - t2, 1)
        save()
    t3 = time.process_time()
    if "table1_models" not in record:
        record["table1_models"] = section_table1_models(args, heldout, record["table1_hypotheses"])
        record["seconds"]["table1_models"] = round(time.process_time() - t3, 1)
        save()
    from tfnewton.models import list_pretrained

    if NAME_D10 in list_pretrained():
        model_d10, info_d10 = load_trained_model(NAME_D10, d=10, condition_number=100.0)
        if record.get("layers_d10", {}).get("sha256") != info_d10["sha256"]:
            t4 = time.process_time()
            summary, _ = section_layers(args, model_d10, d=10, n_points=21, seed_offset=40)
            record["layers_d10"] = {"name": NAME_D10, "sha256": info_d10["sha256"],
                                    "command": info_d10["metadata"].get("command"), **summary}
            record["seconds"]["layers_d10"] = round(time.process_time() - t4, 1)
            save()
    verdict = record["layers"]["verdict"]
    print("goal:", "reached" if verdict["passed"] else "not reached",
          {k: c["value"] for k, c in verdict["conditions"].items()})
    if out_path is not None:
        print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
