"""Time to probe every layer of a model for every step of Iterative Newton, on the CPU.

Two measurements (each a full `probe_iterates` call: one capture of the hidden states, the
algorithm's iterates, one batched ridge solve per layer, and both controls — a randomly
initialised copy of the model, which costs a second forward pass, and shuffled targets):

1. the book's d = 5 model (6 blocks x 64 wide, 11 points): the shipped checkpoint when there
   is one, else the same shape freshly initialised — every layer x 10 Newton steps, target
   < 10 s on 2 cores, for the prediction x_qᵀw_k and for the vector w_k;
2. a stand-in of Fu et al.'s model (12 blocks x 256 wide, 8 heads, d = 20, 41 points, random
   init via build_model) — every layer x 20 Newton steps, target < 60 s.

Usage: python benchmarks/probes.py [--prompts 2000] [--big-prompts 800] [--repeats 3] [--threads 2]
Prints the median wall-clock and CPU seconds of the repeats (on a shared machine the wall clock
also measures the neighbours; the CPU time is what the probing itself costs).

Measured here (torch 2.13 CPU, the team's shared 2-core box, shipped gpt2_linreg_d5):

| run | threads | wall | CPU |
|---|---|---|---|
| [1] d = 5 model, every layer x 10 Newton steps, prediction, both controls | 2 (load ≈ 1.5) | 0.72 s | 1.44 s |
| [1] same, target w_k | 2 (load ≈ 1.5) | 0.74 s | 1.48 s |
| [1] same, prediction | 1 | 1.52 s | 1.52 s |
| [2] 12 x 256 stand-in, 800 prompts, 13 layers x 21 Newton steps, no controls | 1 | 20.6 s | 20.4 s |
| [2] same, both controls (a second forward pass for the random-init copy) | 1 | 41.4 s | 41.1 s |

Nearly all of [2] is the forward pass (≈ 1.3 TFLOP per pass; the batched ridge solves of 13
layers take 0.2 s). With two threads on a box whose other core is busy, small-matrix work can
run several times *slower* than on one thread (OpenMP threads wait on each other): compare
`--threads 1` and `--threads 2` before trusting a wall-clock number there.
"""

import argparse

import torch
from _timing import timed

from tfnewton import capture, probes, tasks
from tfnewton.models import build_model, list_pretrained, load_pretrained


def small_model():
    """The shipped d = 5 GPT-2 checkpoint when there is one, else its shape at random init."""
    shipped = list_pretrained()
    if "gpt2_linreg_d5" in shipped:
        return load_pretrained("gpt2_linreg_d5"), "checkpoint 'gpt2_linreg_d5'"
    return build_model("gpt2", 5, n_layers=6, width=64, heads=4, n_points=11, seed=0), "random init (no checkpoint shipped yet)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=2000, help="prompts for the d = 5 model")
    parser.add_argument("--big-prompts", type=int, default=800, help="prompts for the 12 x 256 stand-in (> 256 features after the splits)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-big", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    model, what = small_model()
    task = tasks.sample_linear_regression(args.prompts, 11, 5, generator=torch.Generator().manual_seed(0))
    capture_wall, capture_cpu, _ = timed(lambda: capture.hidden_states(model, task.X, task.y), args.repeats)
    print(f"\n[1] d = 5, 6 x 64 GPT-2 ({what}), {args.prompts} prompts x 11 points")
    print(f"    one forward pass with hooks (all positions kept): {capture_wall:.2f} s wall, {capture_cpu:.2f} s CPU")
    for target in ("prediction", "weights"):
        wall, cpu, table = timed(lambda: probes.probe_iterates(model, task, "newton", 10, target=target), args.repeats)
        layer, step, r2 = table.best()
        verdict = "OK" if wall < 10 else "over the 10 s target"
        print(f"    probe_iterates(newton, steps=10, target={target!r}, both controls): {wall:.2f} s wall, "
              f"{cpu:.2f} s CPU  [{verdict}]  best: layer {layer}, step {step}, R² {r2:.3f};"
              f" random-init control max R² {float(table.controls['random_init'].max()):.3f}")

    if args.skip_big:
        return
    big = build_model("gpt2", 20, n_layers=12, width=256, heads=8, n_points=41, seed=0)
    big_task = tasks.sample_linear_regression(args.big_prompts, 41, 20, generator=torch.Generator().manual_seed(1))
    print(f"\n[2] Fu et al.'s shape: d = 20, 12 x 256 GPT-2, 8 heads, random init, {args.big_prompts} prompts x 41 points")
    for controls in ((), ("random_init", "shuffled")):
        wall, cpu, table = timed(
            lambda: probes.probe_iterates(big, big_task, "newton", 20, target="prediction", controls=controls),
            max(1, args.repeats - 2),
        )
        verdict = "OK" if wall < 60 else "over the 60 s target"
        print(f"    probe_iterates(newton, steps=20, target='prediction', controls={controls}): {wall:.2f} s wall, "
              f"{cpu:.2f} s CPU  [{verdict}]  (fit on {table.num_fit}, scored on {table.num_test})")


if __name__ == "__main__":
    main()
