"""Load a stand-in of Garg et al.'s released linear-regression checkpoint and probe it, on the CPU.

The stand-in has the released model's exact shape and file layout: a run folder with
``config.yaml`` (``yaml.dump`` of their arguments: family gpt2, n_dims 20, n_embd 256, n_head 8,
n_layer 12, n_positions 101) and ``state.pt`` (``model_state_dict`` with the 50257-row token
table and the mask buffers of the transformers 4.17 they trained with, an
``optimizer_state_dict`` holding real Adam moments for every trained tensor, ``train_step``) —
about as large as theirs. Its weights are
random (a freshly initialised model of that shape), so R² values mean nothing here; the
times are what this measures:

1. writing the stand-in (not the point; printed for scale);
2. ``from_garg_checkpoint(run)``: weights-only load of ``state.pt``, config parse, checks,
   conversion;
3. ``probe_iterates(model, task, "newton", steps=20)``: every layer (13 = embedding + 12
   blocks) x 21 Newton iterates k = 0..20, with both controls (a random-init copy: a second
   forward pass; shuffled targets), on prompts of 41 points in d = 20 — the issue's target
   is < 60 s on 2 cores;
4. ``match_algorithm(model, task, "newton", steps=20)``: Fu et al.'s per-layer read-outs and
   similarity of errors with every Newton step (the second table of the book page).

Usage: python benchmarks/garg_checkpoint.py [--prompts 1200] [--threads 2] [--repeats 1]
Prints the median over the repeats (the machine is shared: the median is the honest number).
"""

import argparse
import tempfile
import time
from pathlib import Path

import torch
from _timing import timed

from tfnewton import tasks
from tfnewton.metrics import match_algorithm
from tfnewton.models import build_model, from_garg_checkpoint
from tfnewton.models.garg import save_garg_run, to_garg_state_dict
from tfnewton.probes import probe_iterates

SHAPE = dict(d=20, n_layers=12, width=256, heads=8, n_points=101)  # their released linear-regression model


def write_stand_in(folder: Path) -> Path:
    """A run folder shaped like the linear-regression run of their release."""
    model = build_model("gpt2", SHAPE["d"], n_layers=SHAPE["n_layers"], width=SHAPE["width"],
                        heads=SHAPE["heads"], n_points=SHAPE["n_points"], seed=0)
    run = save_garg_run(model, folder, train_step=500000, legacy_buffers=True, config_extra={
        "config": "conf/linear_regression.yaml",
        "inherit": ["conf/base.yaml", "conf/wandb.yaml"],
        "training": {"curriculum": {"dims": {"start": 5, "end": 20}, "points": {"start": 11, "end": 41}},
                     "train_steps": 500001},
        "wandb": {"name": "linear_regression_pretrained", "project": "in-context-training"},
    })
    # Their state.pt also carries Adam's moments for every tensor that had a gradient (all but
    # the unused token table): take a real torch.optim.Adam step so the file is as large as theirs.
    state_dict = to_garg_state_dict(model, legacy_buffers=True)
    names = [k for k in state_dict if not k.endswith((".attn.bias", ".attn.masked_bias"))]
    params = [torch.nn.Parameter(state_dict[k].clone()) for k in names]
    adam = torch.optim.Adam(params, lr=1e-4)
    for name, p in zip(names, params):
        if not name.endswith("wte.weight"):
            p.grad = torch.randn_like(p) * 1e-3
    adam.step()
    torch.save({"model_state_dict": state_dict, "optimizer_state_dict": adam.state_dict(),
                "train_step": 500000}, run / "state.pt")
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=1200, help="probe prompts of 41 points")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--skip-match", action="store_true", help="skip the similarity-of-errors table")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run = write_stand_in(Path(tmp) / "linear_regression" / "pretrained")
        size = sum(p.stat().st_size for p in run.iterdir()) / 2**20
        print(f"stand-in of Garg et al.'s 12 x 8 x 256, d = 20 run folder written in "
              f"{time.perf_counter() - t0:.1f} s: {sorted(p.name for p in run.iterdir())}, {size:.0f} MiB")

        load_s, load_cpu, model = timed(lambda: from_garg_checkpoint(run), args.repeats)
        c = model.config
        print(f"from_garg_checkpoint(run): {load_s:.2f} s wall, {load_cpu:.2f} s CPU  ({c.n_layers} layers, {c.heads} heads, width {c.width}, "
              f"d = {c.d}, {c.n_points} positions, {model.num_parameters() / 1e6:.2f} M parameters)")

    task = tasks.sample_linear_regression(args.prompts, 41, 20, generator=torch.Generator().manual_seed(1))
    probe_s, probe_cpu, table = timed(lambda: probe_iterates(model, task, "newton", steps=20), args.repeats)
    print(f"probe_iterates(newton, steps=20, both controls), {args.prompts} prompts x 41 points: "
          f"{probe_s:.1f} s wall, {probe_cpu:.1f} s CPU -> R² table {tuple(table.r2.shape)} (layers x steps)")
    total_wall, total_cpu = load_s + probe_s, load_cpu + probe_cpu
    idle = total_cpu / args.threads
    if total_wall < 60:
        verdict = "met"
    elif idle < 60:
        verdict = (f"not met in wall time on this (shared) machine; the CPU time allows it on an idle one "
                   f"(lower bound {idle:.0f} s), which this run could not measure")
    else:
        verdict = "not met: even the CPU time alone is over"
    print(f"load + probe: {total_wall:.1f} s wall, {total_cpu:.1f} s CPU over {args.threads} threads "
          f"(CPU / threads = {idle:.1f} s); target < 60 s: {verdict}")
    if not args.skip_match:
        match_s, match_cpu, match = timed(lambda: match_algorithm(model, task, "newton", steps=20), args.repeats)
        print(f"match_algorithm(newton, steps=20, similarity of errors): {match_s:.1f} s wall, {match_cpu:.1f} s CPU "
              f"-> table {tuple(match.similarity.shape)}")


if __name__ == "__main__":
    main()
