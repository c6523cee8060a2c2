"""Independent reference implementations: plain numpy float64 loops, one problem at a time.

Written from the textbook formulas without looking at tfnewton.algorithms' code
paths (no batching, no torch), so agreement between the two is evidence, not a
tautology. Also used by other test files.
"""

from __future__ import annotations

import math

import numpy as np


def newton_schulz(A, steps, alpha):
    Xt = alpha * A.T
    out = [Xt]
    for _ in range(steps):
        Xt = Xt @ (2 * np.eye(A.shape[0]) - A @ Xt)
        out.append(Xt)
    return np.stack(out)


def newton_least_squares(X, y, steps, alpha, ridge=0.0):
    S = X.T @ X + ridge * np.eye(X.shape[1])
    M = alpha * S
    out = [M @ X.T @ y]
    for _ in range(steps):
        M = M @ (2 * np.eye(S.shape[0]) - S @ M)
        out.append(M @ X.T @ y)
    return np.stack(out)


def gradient_descent(X, y, steps, lr):
    n, d = X.shape
    w = np.zeros(d)
    out = [w]
    for _ in range(steps):
        grad = sum((X[i] @ w - y[i]) * X[i] for i in range(n)) / n
        w = w - lr * grad
        out.append(w)
    return np.stack(out)


def conjugate_gradient(X, y, steps):
    S, b = X.T @ X, X.T @ y
    w = np.zeros(X.shape[1])
    r = b - S @ w
    p = r.copy()
    out = [w]
    for _ in range(steps):
        a = (r @ r) / (p @ S @ p)
        w = w + a * p
        r_new = r - a * S @ p
        p = r_new + (r_new @ r_new) / (r @ r) * p
        r = r_new
        out.append(w)
    return np.stack(out)


def bfgs(X, y, steps):
    n, d = X.shape
    H, b = X.T @ X / n, X.T @ y / n
    Hinv = np.eye(d)
    w = np.zeros(d)
    g = H @ w - b
    out = [w]
    for _ in range(steps):
        p = -Hinv @ g
        step = -(g @ p) / (p @ H @ p)
        s = step * p
        w = w + s
        g_new = H @ w - b
        u = g_new - g
        rho = 1.0 / (s @ u)
        V = np.eye(d) - rho * np.outer(s, u)
        Hinv = V @ Hinv @ V.T + rho * np.outer(s, s)
        g = g_new
        out.append(w)
    return np.stack(out)


def lbfgs(X, y, steps, memory):
    n, d = X.shape
    H, b = X.T @ X / n, X.T @ y / n
    w = np.zeros(d)
    g = H @ w - b
    s_list, u_list = [], []
    out = [w]
    for _ in range(steps):
        q = g.copy()
        a_list = []
        for s, u in zip(reversed(s_list), reversed(u_list)):
            a = (s @ q) / (s @ u)
            q = q - a * u
            a_list.append(a)
        if s_list:
            q = q * (s_list[-1] @ u_list[-1]) / (u_list[-1] @ u_list[-1])
        for (s, u), a in zip(zip(s_list, u_list), reversed(a_list)):
            beta = (u @ q) / (s @ u)
            q = q + (a - beta) * s
        p = -q
        step = -(g @ p) / (p @ H @ p)
        w = w + step * p
        g_new = H @ w - b
        s_list.append(step * p)
        u_list.append(g_new - g)
        s_list, u_list = s_list[-memory:], u_list[-memory:]
        g = g_new
        out.append(w)
    return np.stack(out)


def online_gd(X, y, lr):
    w = np.zeros(X.shape[1])
    out = [w]
    for i in range(X.shape[0]):
        w = w + lr * (y[i] - X[i] @ w) * X[i]
        out.append(w)
    return np.stack(out)


def damped_newton_logistic(X, y, mu, steps):
    n, d = X.shape
    w = np.zeros(d)
    out = [w]
    sig = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731
    for _ in range(steps):
        g = mu * w
        H = mu * np.eye(d)
        for i in range(n):
            m = y[i] * (X[i] @ w)
            g = g - y[i] * sig(-m) * X[i] / n
            H = H + sig(m) * sig(-m) * np.outer(X[i], X[i]) / n
        step_dir = np.linalg.solve(H, g)
        lam = math.sqrt(g @ step_dir)
        w = w - (2 * math.sqrt(mu)) / (2 * math.sqrt(mu) + lam) * step_dir
        out.append(w)
    return np.stack(out)


def gradient_descent_logistic(X, y, mu, steps, lr):
    n, d = X.shape
    w = np.zeros(d)
    out = [w]
    for _ in range(steps):
        g = mu * w
        for i in range(n):
            g = g - y[i] * X[i] / (1.0 + np.exp(y[i] * (X[i] @ w))) / n
        w = w - lr * g
        out.append(w)
    return np.stack(out)


def _soft(z, t):
    return np.sign(z) * np.maximum(np.abs(z) - t, 0.0)


def ista(X, y, lam, steps, lr):
    beta = np.zeros(X.shape[1])
    out = [beta]
    for _ in range(steps):
        beta = _soft(beta - lr * X.T @ (X @ beta - y), lr * lam)
        out.append(beta)
    return np.stack(out)


def fista(X, y, lam, steps, lr):
    beta = np.zeros(X.shape[1])
    z, t = beta.copy(), 1.0
    out = [beta]
    for _ in range(steps):
        beta_new = _soft(z - lr * X.T @ (X @ z - y), lr * lam)
        t_new = (1 + math.sqrt(1 + 4 * t * t)) / 2
        z = beta_new + (t - 1) / t_new * (beta_new - beta)
        beta, t = beta_new, t_new
        out.append(beta)
    return np.stack(out)


def relative_error(ours, ref) -> float:
    """max over iterates of ‖ours − ref‖ / max(‖ref‖, 1e-300)."""
    ours, ref = np.asarray(ours), np.asarray(ref)
    axes = tuple(range(1, ref.ndim))
    num = np.sqrt(((ours - ref) ** 2).sum(axis=axes))
    den = np.maximum(np.sqrt((ref**2).sum(axis=axes)), 1e-300)
    return float((num / den).max())
