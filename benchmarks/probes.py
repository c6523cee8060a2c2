"""Time to probe every layer of a model for every step of Iterative Newton, on the CPU.

Two measurements (each a full `probe_iterates` call: one capture of the hidden states, the
algorithm's iterates, one batched ridge solve per layer, and both controls — a randomly
initialised copy of the model, which costs a second forward pass, and shuffled targets):

1. the book's d = 5 model (6 blocks x 64 wide, 11 points): the shipped checkpoint when there
   is one, else the same shape freshly initialised — every layer x 10 Newton steps, target
   < 10 s on 2 cores, for the prediction x_qᵀw_k and for the vector w_k;
2. a stand-in of Fu et al.'s model (12 blocks x 256 wide, 8 heads, d = 20, 41 points, random
   init via build_model) — every layer x 20 Newton steps, target < 60 s.

Usage: python benchmarks/probes.py [--prompts 3000] [--big-prompts 1200] [--repeats 3] [--threads 2]
Prints the median of the repeats (the machine is shared: the median is the honest number).
"""

import argparse
import statistics
import time

import torch

from tfnewton import probes, tasks
from tfnewton.models import build_model, list_pretrained, load_pretrained


def small_model():
    """The shipped d = 5 GPT-2 checkpoint when there is one, else its shape at random init."""
    shipped = list_pretrained()
    if "gpt2_linreg_d5" in shipped:
        return load_pretrained("gpt2_linreg_d5"), "checkpoint 'gpt2_linreg_d5'"
    return build_model("gpt2", 5, n_layers=6, width=64, heads=4, n_points=11, seed=0), "random init (no checkpoint shipped yet)"


def timed(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=3000, help="prompts for the d = 5 model")
    parser.add_argument("--big-prompts", type=int, default=1200, help="prompts for the 12 x 256 stand-in")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-big", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    model, what = small_model()
    task = tasks.sample_linear_regression(args.prompts, 11, 5, generator=torch.Generator().manual_seed(0))
    capture, _ = timed(lambda: probes.hidden_states(model, task.X, task.y), args.repeats)
    print(f"\n[1] d = 5, 6 x 64 GPT-2 ({what}), {args.prompts} prompts x 11 points")
    print(f"    one forward pass with hooks (all positions kept): {capture:.2f} s")
    for target in ("prediction", "weights"):
        seconds, table = timed(lambda: probes.probe_iterates(model, task, "newton", 10, target=target), args.repeats)
        layer, step, r2 = table.best()
        verdict = "OK" if seconds < 10 else "over the 10 s target"
        print(f"    probe_iterates(newton, steps=10, target={target!r}, both controls): {seconds:.2f} s  [{verdict}]"
              f"  best: layer {layer}, step {step}, R² {r2:.3f};"
              f" random-init control max R² {float(table.controls['random_init'].max()):.3f}")

    if args.skip_big:
        return
    big = build_model("gpt2", 20, n_layers=12, width=256, heads=8, n_points=41, seed=0)
    big_task = tasks.sample_linear_regression(args.big_prompts, 41, 20, generator=torch.Generator().manual_seed(1))
    print(f"\n[2] Fu et al.'s shape: d = 20, 12 x 256 GPT-2, 8 heads, random init, {args.big_prompts} prompts x 41 points")
    seconds, table = timed(
        lambda: probes.probe_iterates(big, big_task, "newton", 20, target="prediction"), max(1, args.repeats - 2)
    )
    verdict = "OK" if seconds < 60 else "over the 60 s target"
    print(f"    probe_iterates(newton, steps=20, target='prediction', both controls): {seconds:.2f} s  [{verdict}]"
          f"  (fit on {table.num_fit}, scored on {table.num_test}; max R² {float(table.r2.max()):.3f} — random weights)")


if __name__ == "__main__":
    main()
