"""Worst relative error of each reference algorithm against the plain numpy loops of
tests/reference.py, over random float64 problems of several sizes and condition numbers,
on problems with n >= 2d and κ(Σ) <= 100 for the Krylov methods; plus the time of one batched call (B = 256) on the CPU.

Usage: python benchmarks/algorithms_accuracy.py [--problems 60]
"""

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
import reference as ref  # noqa: E402

from tfnewton import algorithms as alg  # noqa: E402
from tfnewton import tasks  # noqa: E402


def cases(problems: int):
    g = torch.Generator().manual_seed(0)
    for i in range(problems):
        d = [2, 4, 8, 16][i % 4]
        n = [d, 2 * d, 4 * d][i % 3]
        kappa = [1.0, 10.0, 100.0, 1000.0][(i // 4) % 4]
        yield d, n, kappa, tasks.sample_linear_regression(1, n, d, condition_number=kappa, generator=g, dtype=torch.float64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--problems", type=int, default=60)
    args = parser.parse_args()
    torch.set_num_threads(2)
    worst: dict[str, float] = {}

    def record(name, ours, expected):
        worst[name] = max(worst.get(name, 0.0), ref.relative_error(ours[:, 0].numpy(), expected))

    g = torch.Generator().manual_seed(1)
    for d, n, kappa, t in cases(args.problems):
        X, y, Xn, yn = t.X, t.y, t.X[0].numpy(), t.y[0].numpy()
        S = Xn.T @ Xn
        import numpy as np

        A = tasks.sample_matrices(1, d, kappa, generator=g, dtype=torch.float64)
        record("newton_schulz", alg.newton_schulz(A, 15), ref.newton_schulz(A[0].numpy(), 15, 1 / np.linalg.norm(A[0].numpy(), 2) ** 2))
        record("newton_least_squares", alg.newton_least_squares(X, y, 15), ref.newton_least_squares(Xn, yn, 15, 1 / np.linalg.eigvalsh(S)[-1] ** 2))
        record("gradient_descent_least_squares", alg.gradient_descent_least_squares(X, y, 50), ref.gradient_descent(Xn, yn, 50, n / np.linalg.eigvalsh(S)[-1]))
        if n >= 2 * d and kappa <= 100:
            # Krylov methods lose conjugacy in floating point: two correct implementations agree
            # to round-off for the first few steps and then drift apart (both equally far from
            # OLS). Report both windows.
            k = min(d - 1, 6)
            for label, steps in ((f"first min(d-1, 6) steps", k), ("all d-1 steps", d - 1)):
                record(f"conjugate_gradient_least_squares ({label})", alg.conjugate_gradient_least_squares(X, y, steps), ref.conjugate_gradient(Xn, yn, steps))
                record(f"bfgs_least_squares ({label})", alg.bfgs_least_squares(X, y, steps), ref.bfgs(Xn, yn, steps))
                record(f"lbfgs_least_squares ({label})", alg.lbfgs_least_squares(X, y, steps, memory=3), ref.lbfgs(Xn, yn, steps, 3))
        record("online_gradient_descent", alg.online_gradient_descent(X, y, lr=0.5 / d), ref.online_gd(Xn, yn, 0.5 / d))
        lt = tasks.sample_logistic_regression(1, n, d, condition_number=kappa, generator=g, dtype=torch.float64)
        record("damped_newton_logistic", alg.damped_newton_logistic(lt.X, lt.y, 0.01, 10), ref.damped_newton_logistic(lt.X[0].numpy(), lt.y[0].numpy(), 0.01, 10))
        st = tasks.sample_sparse_recovery(1, n, 2 * d, sparsity=min(3, d), generator=g, dtype=torch.float64)
        L = np.linalg.eigvalsh(st.X[0].numpy().T @ st.X[0].numpy())[-1]
        record("ista", alg.ista(st.X, st.y, 0.05, 50), ref.ista(st.X[0].numpy(), st.y[0].numpy(), 0.05, 50, 1 / L))
        record("fista", alg.fista(st.X, st.y, 0.05, 50), ref.fista(st.X[0].numpy(), st.y[0].numpy(), 0.05, 50, 1 / L))

    print(f"{'algorithm':60s} worst relative error (float64, {args.problems} problems)")
    for name, err in worst.items():
        print(f"{name:60s} {err:.2e}")

    big = tasks.sample_linear_regression(256, 40, 20, generator=g, dtype=torch.float32)
    print(f"\nbatched timing, B=256, n=40, d=20, float32, CPU, {torch.get_num_threads()} threads")
    for name, fn in [
        ("newton_least_squares, 20 steps", lambda: alg.newton_least_squares(big.X, big.y, 20)),
        ("gradient_descent_least_squares, 100 steps", lambda: alg.gradient_descent_least_squares(big.X, big.y, 100)),
        ("conjugate_gradient_least_squares, 20 steps", lambda: alg.conjugate_gradient_least_squares(big.X, big.y, 20)),
    ]:
        fn()
        start = time.perf_counter()
        for _ in range(5):
            fn()
        print(f"  {name:44s} {(time.perf_counter() - start) / 5 * 1e3:8.2f} ms")


if __name__ == "__main__":
    main()
