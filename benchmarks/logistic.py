"""Giannou et al.'s damped-Newton Transformer for logistic regression, measured rather than bounded.

Prints, from the library functions of ``tfnewton.approx`` and
``tfnewton.constructions.logistic_newton`` (the chapter calls the same ones):

1. the ReLU approximations: sup error against width beside interpolation's ``max|f''|h²/8``;
2. the distance of the construction's ``w_T`` to the exact minimizer (median and worst over
   the prompts) for d ∈ {2, 5, 10}, n = 64, μ ∈ {0.1, 0.01}, over widths and inner steps k,
   with the depth and the widest MLP of a Newton step; the width at which the median reaches
   1e-4, beside Giannou et al.'s width bound ``d(1+μ)⁶/(ε⁴μ⁸)`` (constant 1);
3. the two phases: median ``M_f λ(w_t)`` against 1/4, and the error per step for several
   widths (the paper's warning: a scalar-map error above about √ε stops the quadratic phase);
4. why damping: full Newton steps from ``w₀ = 0`` and from random starts of norm 3 and 10;
5. float32 against float64.

Prompts: ``tasks.sample_logistic_regression`` (its inputs already satisfy ‖x_i‖ ≤ 1). The
products ``x_a x_b`` use 33 ReLU units per square (``product_width``): they only enter the
Hessian, and 17 units already give the same errors as 512 (see the construction's docstring).

Measured on the project's shared 2-core CPU (1 thread, other jobs running; 119 s in all):

* ReLU approximations (μ = 0.01, R = 11.8): σ with uniform knots 1.6e-3 / 1.0e-4 / 6.4e-6 at
  width 65 / 257 / 1025, as max|f''|h²/8 predicts; curvature knots 8× better (2.0e-4 / 1.2e-5 /
  7.2e-7). The damping map with uniform knots falls like 1/√width (0.60 → 0.31 from 65 to
  1025), with graded knots like 1/width² (6.4e-3 → 4.2e-4 → 2.7e-5).
* w_T against w* (64 prompts, n = 64): the median falls as 1/width² for every d and μ, e.g.
  d = 5, μ = 0.1, T = 8, k = 5: 2.2e-3 / 1.8e-4 / 1.1e-5 / 7.1e-7 at width 16 / 64 / 256 / 1024
  (worst 2.9e-3 … 1.5e-6); μ = 0.01, T = 14, k = 11: 7.8e-3 / 4.5e-4 / 2.9e-5 / 1.7e-6. Exact
  scalars: the algorithm's own error (≤ 1.7e-10). Depth 90 (μ = 0.1) and 240 (μ = 0.01) blocks
  against Giannou et al.'s T(11 + 2k) = 168 and 462. Median ≤ 1e-4 from width 88 (d = 5,
  μ = 0.1; 277 ReLU units per MLP; the paper's bound with constant 1: 8.9e24).
* Phases (d = 5): M_f λ < 1/4 from step 1 at μ = 0.1 and from step 5 at μ = 0.01; each width's
  error follows exact damped Newton until it reaches a floor of 1.2–2.5 × sup(σ), then stays.
* Full Newton steps: from w₀ = 0, no prompt of 256 missed w* at either μ; from random starts
  of norm 10 at μ = 0.01, 238 / 80 / 0 of 256 (d = 2 / 5 / 10); damped Newton: none.
* float32 matches float64 down to width 1024 (7e-7); exact scalars in float32: 8e-8 median.

Usage:
    python benchmarks/logistic.py            # the full tables (about 2 minutes on 2 cores)
    python benchmarks/logistic.py --quick    # d ∈ {2, 5}, 16 prompts, fewer widths (under a minute)
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from tfnewton import approx
from tfnewton.constructions import logistic_newton as LN


def fmt(x) -> str:
    return "exact" if x is None else (f"{x:.1e}" if isinstance(x, float) else str(x))


def print_table(rows: list[dict], keys: list[str], title: str) -> None:
    print(f"\n{title}")
    widths = {k: max(len(k), *(len(fmt(r[k])) for r in rows)) for k in keys}
    print("  ".join(k.rjust(widths[k]) for k in keys))
    for r in rows:
        print("  ".join(fmt(r[k]).rjust(widths[k]) for k in keys))


def approximations(widths) -> None:
    mu = 0.01
    R, S = approx.logit_radius(mu), approx.decrement_bound(mu)
    damping = approx.damping_map(mu, 8).fn
    maps = [
        ("sigmoid, uniform", torch.sigmoid, (-R, R), "uniform"),
        ("sigmoid, curvature", torch.sigmoid, (-R, R), "curvature"),
        ("sigmoid', curvature", approx.sigmoid_derivative_map(mu, 8).fn, (-R, R), "curvature"),
        ("damping, uniform", damping, (0.0, S), "uniform"),
        ("damping, graded", damping, (0.0, S), "graded"),
        ("square on [-1, 1]", lambda u: u * u, (-1.0, 1.0), "uniform"),
    ]
    rows = []
    for name, fn, interval, knots in maps:
        table = approx.sup_error_against_width(fn, interval, widths, knots=knots)
        for w, err, pred in zip(table["width"], table["sup_error"], table["predicted"]):
            rows.append(dict(map=name, width=w, sup_error=err, predicted=pred))
    print_table(rows, ["map", "width", "sup_error", "predicted"],
                f"1. ReLU approximations at mu = {mu} (|z| <= R = {R:.2f}, lambda^2 <= S = {S:.1f}); predicted = "
                "max|f''| h^2/8 (per piece for non-uniform knots; loose on the damping map's first piece, where "
                "f'' is unbounded)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="d in {2, 5}, 16 prompts, fewer widths")
    parser.add_argument("--batch", type=int, default=None, help="prompts per configuration (64; 16 with --quick)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    quick = args.quick
    batch = args.batch or (16 if quick else 64)
    ds = (2, 5) if quick else (2, 5, 10)
    widths = (16, 64, 256) if quick else (16, 64, 256, 1024)
    t0 = time.perf_counter()

    approximations((17, 65, 257) if quick else (17, 65, 257, 1025))

    rows = LN.logistic_error_table(ds=ds, widths=widths, batch=batch)
    print_table(rows, ["d", "mu", "steps", "inner_steps", "width", "depth", "mlp_units", "median", "worst",
                       "algorithm_worst"],
                f"2. ||w_T - w*|| / ||w*|| of the construction, n = 64, {batch} prompts, float64 "
                "(algorithm_worst: damped_newton_logistic with the same inner steps; depth = T(6 + k) + 2, "
                "Giannou et al.: T(11 + 2k); mlp_units: ReLU units of a Newton step's widest MLP)")

    target = 1e-4
    found = LN.smallest_width_for_median(5, 0.1, target, batch=batch)
    print(f"\n   smallest width with median <= {target:g} (d = 5, mu = 0.1, T = {LN.steps_needed(0.1)}): "
          f"{found['width']} (median {found['median']:.2e}, worst {found['worst']:.2e}); a Newton step's "
          f"MLP then has {3 * found['width'] + 13} ReLU units")
    print("   Giannou et al.'s width bound d(1+mu)^6 / (eps^4 mu^8) with constant 1, beside the ReLU units we needed:")
    bound_rows = []
    for d, mu in ((5, 0.1), (5, 0.01)):
        for eps in (1e-2, 1e-4):
            got = LN.smallest_width_for_median(d, mu, eps, batch=batch) if (d, mu, eps) != (5, 0.1, target) else found
            bound_rows.append(dict(d=d, mu=mu, eps=eps, paper_bound=LN.paper_width_bound(d, mu, eps),
                                   width=got["width"], mlp_units=3 * got["width"] + 13))
    print_table(bound_rows, ["d", "mu", "eps", "paper_bound", "width", "mlp_units"], "")

    for mu in (0.1, 0.01):
        table = LN.error_against_step(5, mu, widths=(16, 64, 256), batch=batch)
        steps = table["steps"]
        print(f"\n3. d = 5, mu = {mu}: median M_f lambda(w_t) (the damped phase while >= 1/4) and median error, per step t")
        header = "width    sup(sigma) | " + " ".join(f"{t:>7d}" for t in steps)
        print(header)
        for r in table["rows"]:
            print(f"{fmt(r['width']):>5}  {r['sigmoid_sup_error']:.1e}  M_f.lam | "
                  + " ".join(f"{x:7.1e}" for x in r["scaled_decrement"]))
            print(f"{'':>5}  {'':>7}  error   | " + " ".join(f"{x:7.1e}" for x in r["error"]))
        exact = table["rows"][-1]["scaled_decrement"]
        first_quadratic = next((t for t, x in zip(steps, exact) if x < 0.25), None)
        print(f"   exact scalars: M_f lambda < 1/4 from step {first_quadratic}, then the error squares to rounding.")
        exact_error = table["rows"][-1]["error"]
        for r in table["rows"][:-1]:
            floor = r["error"][-1]
            reached = next(t for t, e in zip(steps, r["error"]) if e <= 1.1 * floor)
            print(f"   width {r['width']:>4}: floor {floor:.1e} = {floor / r['sigmoid_sup_error']:.1f} x sup(sigma), "
                  f"reached at step {reached}, where exact damped Newton is at {exact_error[reached]:.1e}: "
                  f"the squaring stops once the error is below about sqrt(floor) = {math.sqrt(floor):.1e}")

    failure_rows = []
    for mu in (0.1, 0.01):
        for d in ds:
            failure_rows += LN.undamped_newton_failures(d, mu, batch=4 * batch)
    print_table(failure_rows, ["d", "mu", "start_norm", "undamped_failures", "damped_failures", "batch"],
                "4. Prompts on which 20 Newton steps miss w* by more than 1e-6 (relative): full steps vs damped, "
                "from w0 = 0 and from random starts of norm 3 and 10")

    f32 = []
    for mu in (0.1, 0.01):
        for width in (64, 1024) if not quick else (64,):
            for dtype in (torch.float64, torch.float32):
                r = LN.logistic_construction_error(5, mu, LN.steps_needed(mu), batch=batch, width=width,
                                                   product_width=33, dtype=dtype)
                f32.append(dict(mu=mu, width=width, dtype=str(dtype).replace("torch.", ""), median=r.median,
                                worst=r.worst))
        r = LN.logistic_construction_error(5, mu, LN.steps_needed(mu), batch=batch, exact_scalars=True,
                                           dtype=torch.float32)
        f32.append(dict(mu=mu, width=None, dtype="float32", median=r.median, worst=r.worst))
    print_table(f32, ["mu", "width", "dtype", "median", "worst"], "5. float32 vs float64 (d = 5)")
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
