"""Constructed Transformers vs the plain algorithms they emulate: time, FLOPs, error.

For each construction and each d, on a batch of B problems (B = 256 by default), the
script times the model's forward pass and the reference algorithm of
``tfnewton.algorithms`` for the same number of steps, counts the matrix-multiply FLOPs of
both with ``torch.utils.flop_counter.FlopCounterMode`` (2·m·n·k per product), and reports

* ``time ratio``  = time(construction) / time(algorithm),
* ``FLOP ratio``  = FLOPs(construction) / FLOPs(algorithm),
* ``time/FLOP``   = time ratio / FLOP ratio: ≤ 2 means the construction spends its extra
  arithmetic as efficiently as the algorithm (within a factor 2) — the goal of issue 3,
* ``max rel err`` of the construction's answer against the algorithm's (float64 by default).

Regression problems use n = 2d context points. Times are medians over repeats after a
warm-up (a call longer than 2 s is measured once); the CPU uses ``--threads`` threads, 1 by
default: on a shared 2-core machine two OpenMP threads made the small products of d = 8 up to
100× slower whenever another process was busy.

The max relative error is ‖model − algorithm‖/‖algorithm‖ per problem for Newton–Schulz
(the d × d inverse) and |model − algorithm| / max|algorithm| over the batch for the two
regression constructions (their answer is one prediction per prompt).

Measured on the project's shared 2-core CPU (1 thread, other jobs running; float64,
batch 256, 8 steps; torch 2.13.0):

    construction        d  layers   model ms    alg ms  time ratio  FLOP ratio  time/FLOP  max rel err
    newton_schulz       8       8        7.9       2.5         3.2        14.0       0.23      2.0e-15
    newton_schulz      32       8      361.1      62.2         5.8        14.0       0.41      1.2e-15
    newton_schulz     128       8    16286.9    2518.0         6.5        14.0       0.46      1.6e-15
    newton_regression   8      10       65.4       1.3        48.7       168.6       0.29      5.3e-16
    newton_regression  32      10     2923.3      29.5        99.0       155.8       0.64      9.3e-16
    newton_regression 128      10   226984.6    2691.6        84.3       152.7       0.55      1.7e-15
    gd_regression       8       8       15.2       0.8        18.8       156.9       0.12      3.6e-16
    gd_regression      32       8      513.5      19.1        27.0       200.3       0.13      6.0e-16
    gd_regression     128       8   198396.2     928.4       213.7       217.4       0.98      1.3e-15

Every time/FLOP is below 1: the constructions' dense products run at least as efficiently
as the algorithms' smaller ones. The whole default run takes about 15 minutes there, almost
all of it the two d = 128 regression models (T = 385 and 257 tokens of width 772 and 386);
``--d 8 32`` takes under a minute.

Usage:
    python benchmarks/constructions.py                      # CPU (and CUDA if present), d = 8, 32, 128
    python benchmarks/constructions.py --d 8 32 --batch 64  # smaller
    python benchmarks/constructions.py --kinds newton_schulz --dtype float32
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from tfnewton import algorithms, constructions, tasks

KINDS = ("newton_schulz", "newton_regression", "gd_regression")


def problem(kind: str, d: int, batch: int, dtype, device, seed: int = 0):
    g = torch.Generator(device=device).manual_seed(seed)
    if kind == "newton_schulz":
        A = tasks.sample_matrices(batch, d, 100.0, generator=g, device=device, dtype=dtype)
        return (A,)
    task = tasks.sample_linear_regression(batch, 2 * d + 1, d, condition_number=10.0, generator=g, device=device, dtype=dtype)
    X, y, x_q, _ = task.context_and_query()
    return X, y, x_q


def pair(kind: str, d: int, steps: int, dtype, device):
    """(construction's forward, the algorithm on the same inputs, returning the same answer)."""
    if kind == "newton_schulz":
        model = constructions.newton_schulz_transformer(d, steps, dtype=dtype, device=device)
        return model, lambda A: algorithms.newton_schulz(A, steps)[-1]
    if kind == "newton_regression":
        model = constructions.newton_regression_transformer(d, steps, dtype=dtype, device=device)
        return model, lambda X, y, x_q: (algorithms.newton_least_squares(X, y, steps)[-1] * x_q).sum(-1)
    model = constructions.gd_regression_transformer(d, steps, dtype=dtype, device=device)
    return model, lambda X, y, x_q: (algorithms.gradient_descent_least_squares(X, y, steps)[-1] * x_q).sum(-1)


def timed(fn, inputs, device, repeats: int) -> float:
    """Median wall time of ``fn(*inputs)`` in seconds, after one warm-up call."""

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    with torch.inference_mode():
        start = time.perf_counter()
        fn(*inputs)
        sync()
        first = time.perf_counter() - start
        if first > 2.0:  # a long call: start-up costs are noise, one measurement will do
            return first
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn(*inputs)
            sync()
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def flops(fn, inputs) -> int:
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        fn(*inputs)
    return counter.get_total_flops()


def relative_error(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """max over problems of ‖ours − ref‖ / ‖ref‖."""
    ours, ref = ours.reshape(ours.shape[0], -1).double(), ref.reshape(ref.shape[0], -1).double()
    return float(((ours - ref).norm(dim=-1) / ref.norm(dim=-1).clamp_min(1e-300)).max())


def run(kinds, ds, batch, steps, dtype, device, repeats, print_row=print):
    rows = []
    for kind in kinds:
        for d in ds:
            inputs = problem(kind, d, batch, dtype, device)
            model, algorithm = pair(kind, d, steps, dtype, device)
            with torch.inference_mode():
                err = relative_error(model(*inputs), algorithm(*inputs)) if kind == "newton_schulz" else \
                    float(((model(*inputs) - algorithm(*inputs)).abs() / algorithm(*inputs).abs().max()).max())
            t_model, t_alg = timed(model, inputs, device, repeats), timed(algorithm, inputs, device, repeats)
            f_model, f_alg = flops(model, inputs), flops(algorithm, inputs)
            row = dict(kind=kind, device=device.type, d=d, layers=len(model.blocks), t_model=t_model, t_alg=t_alg,
                       time_ratio=t_model / t_alg, flop_ratio=f_model / f_alg, err=err,
                       gflops_model=f_model / 1e9, gflops_alg=f_alg / 1e9)
            row["time_over_flop"] = row["time_ratio"] / row["flop_ratio"]
            rows.append(row)
            print_row(format_row(row))
    return rows


HEADER = (f"{'construction':<18} {'dev':<4} {'d':>4} {'layers':>6} {'model ms':>10} {'alg ms':>9} "
          f"{'time ratio':>10} {'FLOP ratio':>10} {'time/FLOP':>9} {'max rel err':>11}")


def format_row(r) -> str:
    return (f"{r['kind']:<18} {r['device']:<4} {r['d']:>4} {r['layers']:>6} {1e3 * r['t_model']:>10.2f} "
            f"{1e3 * r['t_alg']:>9.2f} {r['time_ratio']:>10.1f} {r['flop_ratio']:>10.1f} "
            f"{r['time_over_flop']:>9.2f} {r['err']:>11.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--d", nargs="+", type=int, default=[8, 32, 128])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cpu-only", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    devices = [torch.device("cpu")]
    if torch.cuda.is_available() and not args.cpu_only:
        devices.append(torch.device("cuda"))
    print(f"batch {args.batch}, {args.steps} steps, {args.dtype}, regression n = 2d, "
          f"{args.threads} CPU threads, torch {torch.__version__}")
    print(HEADER)
    for device in devices:
        run(args.kinds, args.d, args.batch, args.steps, dtype, device, args.repeats)


if __name__ == "__main__":
    main()
