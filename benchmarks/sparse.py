"""Sparse recovery: error against depth for ISTA, FISTA, LISTA, LISTA-CP and the in-context LISTA
variant (with fitted linear rates), and fixed-matrix LISTA against the in-context variant on
measurement matrices they were not trained on (claim (b) of issue 18).

Setting (default): Liu et al.'s as it is reported: d = 20, s = 3 non-zeros N(0, 1), x ~ N(0, I_d)
(Garg et al.'s scaling), noise 0.2; n = 16 measurements (fewer than d: a compressed-sensing
problem) and one query point; K = 16 layers or iterations. Errors are ‖β̂ − β‖²/‖β‖² (ratio of
sums over the test prompts) and the query's squared prediction error (its floor is the noise
variance 0.04). ISTA's and FISTA's λ are picked on validation prompts from a grid, at iteration K.
LISTA and LISTA-CP are trained on prompts that all share one Gaussian matrix A; the in-context
variant on prompts with a fresh Gaussian X each. `--small` runs d = 10, s = 2, n = 8, K = 10.

Usage: python benchmarks/sparse.py [--small] [--n 16] [--layers 16] [--fit-steps 1000] [--test 2048]
"""

from __future__ import annotations

import argparse
import functools
import time

import torch

from tfnewton import algorithms, tasks
from tfnewton.constructions import in_context_ista_transformer
from tfnewton.sparse import LISTA, LISTACP, InContextLISTA, choose_lambda, fitted_rate, prediction_error, recovery_error

LAMBDA_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
FLOOR_STEPS = 1000  # FISTA iterations for the LASSO solution (converged to well below the errors shown)
F64 = torch.float64


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small", action="store_true",
                   help="defaults d = 10, s = 2, n = 8, K = 10, 300 fit steps, 512 test prompts (flags still override)")
    p.add_argument("--d", type=int, default=20)
    p.add_argument("--sparsity", type=int, default=3)
    p.add_argument("--noise", type=float, default=0.2)
    p.add_argument("--n", type=int, default=16, help="measurements per prompt (context points)")
    p.add_argument("--layers", type=int, default=16, help="K, layers of the learned methods and iterations of ISTA/FISTA")
    p.add_argument("--fit-steps", type=int, default=1000)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--test", type=int, default=2048, help="test prompts per setting")
    p.add_argument("--rho", type=float, default=0.5, help="correlation of neighbouring columns for claim (b)")
    p.add_argument("--seed", type=int, default=0)
    if p.parse_known_args(argv)[0].small:
        p.set_defaults(d=10, sparsity=2, n=8, layers=10, fit_steps=300, test=512)
    return p.parse_args(argv)


def _split(task, n):
    """Context (X, y), query (x_q, y_q) and the true β of prompts with n + 1 points."""
    X, y, xq, yq = task.context_and_query(n)
    return X, y, xq, yq, task.w


def _scores(estimates, prompts):
    X, y, xq, yq, beta = prompts
    return recovery_error(estimates, beta), prediction_error(estimates, xq, yq)


def run(args) -> dict:
    torch.manual_seed(args.seed)
    d, s, n, K = args.d, args.sparsity, args.n, args.layers
    sampler = functools.partial(tasks.sample_sparse_recovery, n=n + 1, d=d, sparsity=s, noise_std=args.noise, scaling="garg")
    g = torch.Generator().manual_seed(args.seed)
    A = sampler(1, generator=g, dtype=F64).X[0, :n]  # LISTA's one matrix
    A_fresh = sampler(1, generator=g, dtype=F64).X[0, :n]  # a fixed matrix LISTA never saw
    own_sampler = functools.partial(sampler, measurement_matrix=A)
    settings = {
        "training (fresh X)": sampler(args.test, generator=g, dtype=F64),
        "LISTA's matrix A": own_sampler(args.test, generator=g, dtype=F64),
        "unseen fixed matrix": sampler(args.test, measurement_matrix=A_fresh, generator=g, dtype=F64),
        f"correlated ρ = {args.rho}": sampler(args.test, correlation=args.rho, generator=g, dtype=F64),
    }
    prompts = {name: _split(task, n) for name, task in settings.items()}
    validation = _split(sampler(512, generator=g, dtype=F64), n)
    timings = {}

    # --- ISTA and FISTA, λ on the validation grid at iteration K; the LASSO solution as a floor
    lams = {name: choose_lambda(name, *validation[:2], validation[4], K, LAMBDA_GRID) for name in ("ista", "fista")}
    lam_floor = choose_lambda("fista", *validation[:2], validation[4], FLOOR_STEPS, LAMBDA_GRID)

    def run_lasso(name, P):
        return getattr(algorithms, name)(P[0], P[1], lams[name], K)

    # --- the learned methods
    in_context = {}
    for normalize in (False, True):
        t0 = time.perf_counter()
        in_context[normalize] = InContextLISTA(K, lam=lams["ista"], normalize_steps=normalize, dtype=F64).fit(
            sampler, steps=args.fit_steps, batch=args.batch, lr=args.lr, generator=torch.Generator().manual_seed(args.seed + 1))
        timings["in-context variant" + (" (γ/L)" if normalize else "")] = time.perf_counter() - t0
    fixed = {}
    for cls in (LISTA, LISTACP):
        t0 = time.perf_counter()
        # trained on the n context rows of prompts that share A (the query row is not a measurement)
        context_sampler = functools.partial(tasks.sample_sparse_recovery, n=n, d=d, sparsity=s, noise_std=args.noise,
                                            scaling="garg", measurement_matrix=A)
        fixed[cls.__name__] = cls(A, K, lam=lams["ista"]).fit(
            context_sampler, steps=args.fit_steps, batch=args.batch, lr=args.lr,
            generator=torch.Generator().manual_seed(args.seed + 2))
        timings[cls.__name__] = time.perf_counter() - t0
    constructions = {
        normalize: in_context_ista_transformer(d, m.step_sizes, m.thresholds, normalize_steps=normalize)
        for normalize, m in in_context.items()
    }

    methods = {
        "ISTA": lambda P: run_lasso("ista", P),
        "FISTA": lambda P: run_lasso("fista", P),
        "LISTA": lambda P: fixed["LISTA"](P[0], P[1]),
        "LISTA-CP": lambda P: fixed["LISTACP"](P[0], P[1]),
        "in-context variant": lambda P: in_context[False](P[0], P[1]),
        "in-context, γ_k/L": lambda P: in_context[True](P[0], P[1]),
    }
    results = {}
    with torch.no_grad():
        for method, fn in methods.items():
            results[method] = {setting: _scores(fn(P), P) for setting, P in prompts.items()}
        P = prompts["training (fresh X)"]
        floor = _scores(algorithms.fista(P[0], P[1], lam_floor, FLOOR_STEPS)[-1], P)
        # the Transformers' rows would repeat the variants' to round-off: say how close instead
        deviation = max(
            (constructions[k].iterates(Q[0][:64], Q[1][:64]) - in_context[k](Q[0][:64], Q[1][:64])).abs().max().item()
            for k in constructions for Q in prompts.values()
        )
    return dict(args=args, lams=lams, lam_floor=lam_floor, results=results, floor=floor, deviation=deviation,
                construction=constructions[False], in_context=in_context, timings=timings)


def _number(x: float) -> str:
    """4 decimals, or 3 significant digits in e-notation for a method that diverged."""
    return f"{x:.4f}" if abs(x) < 1000 else f"{x:.2e}"


def _row(label, values, width=8, fmt=None):
    return f"{label:<22}" + "".join(f"{(fmt.format(x) if fmt else _number(x)):>{width}}" for x in values)


def report(out: dict) -> None:
    args, results, K = out["args"], out["results"], out["args"].layers
    shown = sorted({0, 1, 2, 4, 8, 12, K} & set(range(K + 1)) | {K})
    print(f"d = {args.d}, s = {args.sparsity}, noise {args.noise}, n = {args.n} measurements + 1 query, x ~ N(0, I_d), "
          f"K = {K}; {args.test} test prompts per setting; fits: {args.fit_steps} Adam steps of {args.batch} prompts")
    print(f"λ on the validation grid at iteration K: ISTA {out['lams']['ista']}, FISTA {out['lams']['fista']}; "
          f"LASSO solution (FISTA, {FLOOR_STEPS} steps, λ = {out['lam_floor']}): recovery {out['floor'][0].item():.4f}, "
          f"prediction {out['floor'][1].item():.4f}")
    print("fit times: " + ", ".join(f"{k} {v:.1f} s" for k, v in out["timings"].items()))

    # LISTA-type rows are scored on their own matrix: that is their training distribution.
    home = {m: ("LISTA's matrix A" if m in ("LISTA", "LISTA-CP") else "training (fresh X)") for m in results}
    for title, index in (("recovery error ‖β̂ − β‖²/‖β‖²", 0), ("query prediction error (x_qᵀβ̂ − y_q)²", 1)):
        print(f"\n{title} after k layers / iterations, on each method's training distribution "
              "(LISTA, LISTA-CP: their matrix A; the rest: a fresh Gaussian X per prompt)")
        print(_row("method", [f"k={k}" for k in shown], fmt="{}") + f"{'rate 0..K':>11}{'rate 0..K/2':>12}")
        for method, by_setting in results.items():
            errors = by_setting[home[method]][index]
            rates = (fitted_rate(errors), fitted_rate(errors, layers=range(0, K // 2 + 1)))
            print(_row(method, errors[shown].tolist()) + f"{rates[0]:>11.3f}{rates[1]:>12.3f}")
    print(f"\nin_context_ista_transformer ({len(out['construction'].blocks)} layers = 2K + 1, width "
          f"{out['construction'].width}) with each variant's fitted γ_k, θ_k, against that variant, every layer, "
          f"64 prompts of every setting: max |β̂ difference| {out['deviation']:.1e} (float64)")

    settings = list(next(iter(results.values())))
    print(f"\nclaim (b): recovery error after K = {K} layers on each kind of measurement matrix")
    print(f"{'method':<22}" + "".join(f"{s:>22}" for s in settings))
    for method, by_setting in results.items():
        print(f"{method:<22}" + "".join(f"{_number(by_setting[s][0][K].item()):>22}" for s in settings))
    training, own, unseen, correlated = settings
    lista = {s: results["LISTA"][s][0][K].item() for s in settings}
    print(f"LISTA: unseen fixed matrix / its own matrix = {lista[unseen] / lista[own]:.1f}x (want > 5x); "
          f"correlated / own = {lista[correlated] / lista[own]:.1f}x")
    for method in ("in-context variant", "in-context, γ_k/L"):
        icl = {s: results[method][s][0][K].item() for s in settings}
        print(f"{method}: correlated / training = {icl[correlated] / icl[training]:.2f}x, "
              f"unseen fixed matrix / training = {icl[unseen] / icl[training]:.2f}x (want within 2x)")


def main(argv=None) -> None:
    torch.set_num_threads(1)  # tensors this small gain nothing from a second thread; on a busy machine they lose 10x
    args = parse(argv)
    t0 = time.perf_counter()
    out = run(args)
    report(out)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
