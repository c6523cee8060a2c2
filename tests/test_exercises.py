"""tfnewton.exercises: right answers pass quietly, wrong ones are named in words."""

from __future__ import annotations

import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tfnewton.exercises import (
    ExerciseError,
    check_damped_newton_step,
    check_function,
    check_loss_derivative,
    check_newton_decrement,
    check_newton_schulz_step,
    check_relu_square,
    diagnose,
)


def _eye_like(A):
    return torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)


# --------------------------------------------------------------------------------------
# The pattern checker: one Newton–Schulz step
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("solution", [
    lambda A, X: 2 * X - X @ A @ X,
    lambda A, X: X @ (2 * _eye_like(A) - A @ X),
    lambda A, X: (2 * _eye_like(A) - X @ A) @ X,
], ids=["2X-XAX", "X(2I-AX)", "(2I-XA)X"])
def test_a_correct_solution_passes_and_says_so(solution, capsys):
    assert check_newton_schulz_step(solution) is None
    out = capsys.readouterr().out
    assert out.startswith("newton_schulz_step: correct on 6 random cases")
    assert "float64 and float32" in out


WRONG = {
    "sign": (lambda A, X: X @ A @ X - 2 * X, ["sign is flipped"]),
    "transposed factor": (lambda A, X: 2 * X - X.mT @ A @ X, ["transposed", "XᵀAX"]),
    "transposed answer": (lambda A, X: (2 * X - X @ A @ X).mT, ["transpose of the expected answer"]),
    "one problem's shape": (lambda A, X: (2 * X - X @ A @ X)[0], ["not batched", "shape (3, 3)", "(4, 3, 3)"]),
    "wrong shape": (lambda A, X: (2 * X - X @ A @ X)[..., :1], ["shape is wrong", "(4, 3, 3)", "(4, 3, 1)"]),
    "factor": (lambda A, X: 3 * (2 * X - X @ A @ X), ["constant factor", "3 times"]),
    "first term X": (lambda A, X: X - X @ A @ X, ["first term is X", "2X"]),
    "entrywise": (lambda A, X: 2 * X - X * A * X, ["entry by entry"]),
    "wrong order": (lambda A, X: 2 * X - A @ X @ X, ["wrong order", "AXX"]),
    "dtype": (lambda A, X: (2 * X - X @ A @ X).double(), ["dtype is wrong", "float64 for float32"]),
    "first problem's A": (lambda A, X: 2 * X - X @ A[0] @ X, ["not batched", "batch size 1"]),
    "in place": (lambda A, X: X.mul_(2) - (X / 2) @ A @ (X / 2), ["changes its argument X in place"]),
    "single-matrix op": (lambda A, X: 2 * X - torch.mm(torch.mm(X, A), X), ["raised RuntimeError", "@"]),
    "returns nothing": (lambda A, X: None, ["returns None", "expected a float64 tensor"]),
}


@pytest.mark.parametrize("mistake", list(WRONG))
def test_a_wrong_solution_is_named(mistake, capsys):
    fn, words = WRONG[mistake]
    with pytest.raises(ExerciseError) as info:
        check_newton_schulz_step(fn)
    message = str(info.value)
    for word in words:
        assert word in message, (word, message)
    assert "on inputs" in message  # the case is described
    assert capsys.readouterr().out == ""  # no confirmation for a wrong answer


def test_exercise_error_is_an_assertion_error_and_fn_must_be_callable():
    assert issubclass(ExerciseError, AssertionError)
    with pytest.raises(TypeError, match="fn must be a function"):
        check_newton_schulz_step(torch.zeros(3))


def test_device_is_a_parameter(capsys):
    check_newton_schulz_step(lambda A, X: 2 * X - X @ A @ X, device="cpu")
    assert "correct" in capsys.readouterr().out
    with pytest.raises(ValueError, match="device"):
        check_newton_schulz_step(lambda A, X: X, device="no-such-device")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_solution_that_leaves_the_device_is_named():
    check_newton_schulz_step(lambda A, X: 2 * X - X @ A @ X, device="cuda")
    with pytest.raises(ExerciseError, match="device is wrong"):
        check_newton_schulz_step(lambda A, X: (2 * X - X @ A @ X).cpu(), device="cuda")


# --------------------------------------------------------------------------------------
# The reusable pieces
# --------------------------------------------------------------------------------------
_shapes = st.tuples(st.integers(1, 5), st.integers(1, 4), st.integers(1, 4))


def _tensor(shape, seed, dtype=torch.float64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@settings(deadline=None, max_examples=50)
@given(shape=_shapes, seed=st.integers(0, 2**16),
       factor=st.floats(-100, 100).filter(lambda c: abs(c) > 1e-3 and abs(abs(c) - 1) > 1e-3))
def test_diagnose_names_the_factor_and_passes_the_right_answer(shape, seed, factor):
    expected = _tensor(shape, seed)
    assert diagnose(expected.clone(), expected) is None
    assert diagnose(expected * (1 + 1e-12), expected) is None  # rounding is not a mistake
    message = diagnose(factor * expected, expected)
    assert "constant factor" in message and f"{factor:.6g} times" in message
    assert ("sign is flipped" in message) == (factor < 0)
    assert "sign is flipped" in diagnose(-expected, expected)


@settings(deadline=None, max_examples=30)
@given(shape=_shapes, seed=st.integers(0, 2**16))
def test_diagnose_shapes_dtype_and_device(shape, seed):
    expected = _tensor(shape, seed)
    assert "not batched" in diagnose(expected[0], expected)
    assert "dtype is wrong" in diagnose(expected.float(), expected)
    assert "device is wrong" in diagnose(torch.empty(shape, dtype=torch.float64, device="meta"), expected)
    assert "shape is wrong" in diagnose(expected.unsqueeze(0).expand(2, *shape), expected)
    assert "NaN" in diagnose(torch.full(shape, float("nan"), dtype=torch.float64), expected)


def test_diagnose_transposition_batch_mixing_and_largest_error():
    expected = _tensor((3, 4, 4), 0)
    assert "transpose of the expected answer" in diagnose(expected.mT, expected)
    assert "shape is transposed" in diagnose(_tensor((3, 2, 5), 1).mT, _tensor((3, 2, 5), 1))
    mixed = expected.clone()
    mixed[1:] += 1.0
    assert "right for problem(s) [0]" in diagnose(mixed, expected)
    wrong = expected.clone()
    wrong[2, 1, 3] += 5.0
    wrong[:2] -= 0.5
    message = diagnose(wrong, expected)
    assert "values are wrong" in message and "index (2, 1, 3)" in message


def test_check_function_is_the_pattern(capsys):
    """A chapter's checker in a few lines: cases from the library, known mistakes by name."""
    g = torch.Generator().manual_seed(0)
    cases = []
    for B, d in ((3, 4), (1, 2)):
        v = torch.randn(B, d, generator=g, dtype=torch.float64)
        cases.append(((v,), v / v.norm(dim=-1, keepdim=True)))
    mistakes = {"you divide by the squared norm": lambda v: v / (v * v).sum(-1, keepdim=True)}
    check_function(lambda v: v / v.norm(dim=-1, keepdim=True), cases, name="normalize", known_mistakes=mistakes)
    assert capsys.readouterr().out.startswith("normalize: correct on 2 random cases (float64, batches of 1 to 3)")
    with pytest.raises(ExerciseError, match="you divide by the squared norm"):
        check_function(lambda v: v / (v * v).sum(-1, keepdim=True), cases, name="normalize",
                       known_mistakes=mistakes)
    with pytest.raises(ExerciseError, match="not batched"):  # normalises the whole batch at once
        check_function(lambda v: v / v.norm(), cases, name="normalize")


# --------------------------------------------------------------------------------------
# Logistic regression: loss derivative, Newton decrement, damped step, ReLU square
# --------------------------------------------------------------------------------------
def _logistic_g_H(X, y, w, mu):
    """A student's gradient and Hessian, written from the formulas (not the library's)."""
    n, d = X.shape[-2:]
    s = torch.sigmoid((X @ w.unsqueeze(-1)).squeeze(-1))
    g = (X.mT @ (s - (1 + y) / 2).unsqueeze(-1)).squeeze(-1) / n + mu * w
    H = X.mT @ (X * (s * (1 - s)).unsqueeze(-1)) / n + mu * _eye_like(X.mT @ X)
    return g, H


def _newton_dir(X, y, w, mu):
    g, H = _logistic_g_H(X, y, w, mu)
    return g, torch.linalg.solve(H, g.unsqueeze(-1)).squeeze(-1)


def _decrement(X, y, w, mu):
    g, v = _newton_dir(X, y, w, mu)
    return (g * v).sum(-1).sqrt()


def _damped_step(X, y, w, mu, factor=lambda lam, mu: 2 * mu**0.5 / (2 * mu**0.5 + lam)):
    g, v = _newton_dir(X, y, w, mu)
    return w - factor((g * v).sum(-1).sqrt(), mu).unsqueeze(-1) * v


def _relu_square(u, width, knots=None):
    t = torch.linspace(-1.0, 1.0, knots or width, dtype=u.dtype, device=u.device)
    f = t * t
    slope = (f[1:] - f[:-1]) / (t[1:] - t[:-1])
    zero = slope.new_zeros(1)
    c = torch.cat([slope, zero]) - torch.cat([zero, slope])
    return f[0] + torch.relu(u.unsqueeze(-1) - t) @ c


LOGISTIC_CHECKERS = {
    "loss_derivative": (check_loss_derivative, [
        lambda z, y: torch.sigmoid(z) - (1 + y) / 2,
        lambda z, y: -y * torch.sigmoid(-y * z),
    ], {
        "labels 0/1": (lambda z, y: torch.sigmoid(z) - y, ["labels as 0/1", "(1 + y)/2"]),
        "no -y": (lambda z, y: torch.sigmoid(-y * z), ["factor −y is missing"]),
        "argument sign": (lambda z, y: -y * torch.sigmoid(y * z), ["wrong sign"]),
        "the loss": (lambda z, y: torch.nn.functional.softplus(-y * z), ["the loss", "not its derivative"]),
        "second derivative": (lambda z, y: torch.sigmoid(z) * (1 - torch.sigmoid(z)), ["second derivative"]),
        "sign": (lambda z, y: (1 + y) / 2 - torch.sigmoid(z), ["sign is flipped"]),
        "float64": (lambda z, y: (torch.sigmoid(z) - (1 + y) / 2).double(), ["dtype is wrong"]),
    }),
    "newton_decrement": (check_newton_decrement, [
        _decrement,
        lambda X, y, w, mu: torch.sqrt(_newton_dir(X, y, w, mu)[0].unsqueeze(-2)
                                       @ torch.linalg.inv(_logistic_g_H(X, y, w, mu)[1])
                                       @ _newton_dir(X, y, w, mu)[0].unsqueeze(-1)).flatten(),
    ], {
        "squared": (lambda X, y, w, mu: _decrement(X, y, w, mu) ** 2, ["λ(w)²", "square root"]),
        "H not inverted": (lambda X, y, w, mu: (lambda g, H: (g.unsqueeze(-2) @ H @ g.unsqueeze(-1)).flatten().sqrt())(
            *_logistic_g_H(X, y, w, mu)), ["not inverted"]),
        "step length": (lambda X, y, w, mu: _newton_dir(X, y, w, mu)[1].norm(dim=-1), ["‖H⁻¹g‖"]),
        "no mu in g": (lambda X, y, w, mu: (lambda g, H: torch.sqrt(
            ((g - mu * w) * torch.linalg.solve(H, (g - mu * w).unsqueeze(-1)).squeeze(-1)).sum(-1)))(
            *_logistic_g_H(X, y, w, mu)), ["gradient lacks", "μw"]),
        "scaled": (lambda X, y, w, mu: _decrement(X, y, w, mu) / 2, ["constant factor", "0.5 times"]),
        "one problem": (lambda X, y, w, mu: _decrement(X[:1], y[:1], w[:1], mu).expand(X.shape[0]),
                        ["not batched"]),
    }),
    "damped_newton_step": (check_damped_newton_step, [
        _damped_step,
        lambda X, y, w, mu: w - _newton_dir(X, y, w, mu)[1] / (1 + _decrement(X, y, w, mu) / (2 * mu**0.5)).unsqueeze(-1),
    ], {
        "full step": (lambda X, y, w, mu: w - _newton_dir(X, y, w, mu)[1], ["full Newton step"]),
        "other convention": (lambda X, y, w, mu: _damped_step(X, y, w, mu, lambda lam, mu: 1 / (1 + lam / mu**0.5)),
                             ["√μ/(√μ + λ(w))", "M_f = 1/(2√μ)"]),
        "lambda squared": (lambda X, y, w, mu: _damped_step(X, y, w, mu, lambda lam, mu: 2 * mu**0.5 / (2 * mu**0.5 + lam**2)),
                           ["uses λ(w)²"]),
        "uphill": (lambda X, y, w, mu: 2 * w - _damped_step(X, y, w, mu), ["uphill"]),
        "the step only": (lambda X, y, w, mu: _damped_step(X, y, w, mu) - w, ["values are wrong"]),
    }),
    "relu_square": (check_relu_square, [
        _relu_square,
        lambda u, width: torch.stack([torch.from_numpy(__import__("numpy").interp(
            r.double().numpy(), torch.linspace(-1, 1, width, dtype=torch.float64).numpy(),
            torch.linspace(-1, 1, width, dtype=torch.float64).numpy() ** 2)) for r in u]).to(u.dtype),
    ], {
        "exact square": (lambda u, width: u * u, ["exact square u²"]),
        "one knot too many": (lambda u, width: _relu_square(u, width, knots=width + 1), ["width + 1 knots"]),
        "one knot too few": (lambda u, width: _relu_square(u, width, knots=width - 1), ["width − 1 knots"]),
        "no constant": (lambda u, width: _relu_square(u, width) - 1, ["constant term is missing"]),
        "one problem's shape": (lambda u, width: _relu_square(u, width)[0], ["not batched"]),
    }),
}





# --------------------------------------------------------------------------------------
# The trained classifier's chapter: GD's logit, similarity on probabilities, Bayes
# --------------------------------------------------------------------------------------
from tfnewton.exercises import (  # noqa: E402
    check_gd_logistic_logit,
    check_posterior_predictive,
    check_probability_residual_similarity,
)


def _gd_logit(X, y, xq, mu, lr, steps, *, mu_term=True):
    w = torch.zeros_like(xq)
    for _ in range(steps):
        p = torch.sigmoid((X @ w.unsqueeze(-1)).squeeze(-1))
        g = (X.mT @ (p - (y + 1) / 2).unsqueeze(-1)).squeeze(-1) / X.shape[1] + (mu * w if mu_term else 0)
        w = w - lr * g
    return (w * xq).sum(-1)


def _gd_logit_softplus(X, y, xq, mu, lr, steps):
    """The gradient written with the margins: −(1/n) Σ y_i σ(−y_i x_iᵀw) x_i + μw."""
    w = torch.zeros_like(xq)
    for _ in range(steps):
        m = y * (X @ w.unsqueeze(-1)).squeeze(-1)
        w = w - lr * (-(X * (y * torch.sigmoid(-m)).unsqueeze(-1)).mean(1) + mu * w)
    return (w * xq).sum(-1)


def _residual_cosine(a, b, y):
    ra, rb = torch.sigmoid(a) - (y + 1) / 2, torch.sigmoid(b) - (y + 1) / 2
    return (ra * rb).sum(-1) / (ra.norm(dim=-1) * rb.norm(dim=-1))


def _posterior(X, y, xq, W):
    loglik = torch.nn.functional.logsigmoid(y.unsqueeze(-1) * (X @ W.mT)).sum(1)  # (B, M)
    return (torch.softmax(loglik, -1) * torch.sigmoid(xq @ W.mT)).sum(-1)


def _posterior_by_products(X, y, xq, W):
    like = torch.sigmoid(y.unsqueeze(-1) * (X @ W.mT)).prod(1)  # fine for n <= 26
    return (like * torch.sigmoid(xq @ W.mT)).sum(-1) / like.sum(-1)


CLASSIFIER_CHECKERS = {
    "gd_logistic_logit": (check_gd_logistic_logit, [_gd_logit, _gd_logit_softplus], {
        "summed": (lambda X, y, xq, mu, lr, steps: _gd_logit(X, y, xq, mu / X.shape[1], lr * X.shape[1], steps),
                   ["sums over the n points"]),
        "no mu": (lambda X, y, xq, mu, lr, steps: _gd_logit(X, y, xq, mu, lr, steps, mu_term=False), ["μw"]),
        "one step short": (lambda X, y, xq, mu, lr, steps: _gd_logit(X, y, xq, mu, lr, steps - 1), ["one step too few"]),
        "uphill": (lambda X, y, xq, mu, lr, steps: _gd_logit(X, y, xq, mu, -lr, steps), ["uphill"]),
    }),
    "probability_residual_similarity": (check_probability_residual_similarity, [
        _residual_cosine,
        lambda a, b, y: torch.nn.functional.cosine_similarity(torch.sigmoid(a) - (y > 0).to(a.dtype),
                                                              torch.sigmoid(b) - (y > 0).to(a.dtype), dim=-1),
    ], {
        "pm1 labels": (lambda a, b, y: torch.nn.functional.cosine_similarity(torch.sigmoid(a) - y,
                                                                            torch.sigmoid(b) - y, dim=-1),
                       ["±1 labels as probabilities", "(y_i + 1)/2"]),
        "logits": (lambda a, b, y: torch.nn.functional.cosine_similarity(a - y, b - y, dim=-1),
                   ["residuals of the logits"]),
        "mean over prompts": (lambda a, b, y: _residual_cosine(a, b, y).mean(), ["shape is wrong"]),
    }),
    "posterior_predictive": (check_posterior_predictive, [_posterior, _posterior_by_products], {
        "prior predictive": (lambda X, y, xq, W: torch.sigmoid(xq @ W.mT).mean(-1), ["prior predictive"]),
        "labels ignored": (lambda X, y, xq, W: _posterior(X, torch.ones_like(y), xq, W), ["ignores the labels"]),
        "log-odds": (lambda X, y, xq, W: torch.logit(_posterior(X, y, xq, W)), ["log-odds"]),
        "unnormalized": (lambda X, y, xq, W: _posterior_by_products(X, y, xq, W)
                         * torch.sigmoid(y.unsqueeze(-1) * (X @ W.mT)).prod(1).sum(-1), ["not normalized"]),
    }),
}





# --------------------------------------------------------------------------------------
# The sparse-recovery chapter: soft thresholding, one ISTA step, the two ReLU units
# --------------------------------------------------------------------------------------
from tfnewton.exercises import (  # noqa: E402
    check_ista_step,
    check_soft_threshold,
    check_soft_threshold_relu_units,
)


def _ista_step(X, y, beta, lam, lr):
    z = beta - lr * (X.mT @ (X @ beta.unsqueeze(-1) - y.unsqueeze(-1))).squeeze(-1)
    return torch.sign(z) * torch.clamp(z.abs() - lr * lam, min=0)


def _ista_step_by_where(X, y, beta, lam, lr):
    z = beta + lr * torch.einsum("bnd,bn->bd", X, y - torch.einsum("bnd,bd->bn", X, beta))
    t = lr * lam
    return torch.where(z > t, z - t, torch.where(z < -t, z + t, torch.zeros_like(z)))


def _relu_units(z, theta):
    return torch.stack([torch.relu(z - theta), torch.relu(-z - theta)], dim=-1)


SPARSE_CHECKERS = {
    "soft_threshold": (check_soft_threshold, [
        lambda z, theta: torch.sign(z) * torch.clamp(z.abs() - theta, min=0),
        lambda z, theta: torch.relu(z - theta) - torch.relu(-z - theta),
    ], {
        "hard": (lambda z, theta: z * (z.abs() > theta), ["hard-threshold"]),
        "no sign": (lambda z, theta: torch.clamp(z.abs() - theta, min=0), ["sign is lost"]),
        "no zeroing": (lambda z, theta: z - theta * torch.sign(z), ["without setting", "to zero"]),
        "clip": (lambda z, theta: torch.clamp(z, -0.7, 0.7) if not isinstance(theta, torch.Tensor)
                 else torch.maximum(torch.minimum(z, theta), -theta), ["clip z"]),
        "positive only": (lambda z, theta: torch.relu(z - theta), ["only positive"]),
        "float64": (lambda z, theta: (torch.relu(z - theta) - torch.relu(-z - theta)).double(), ["dtype is wrong"]),
    }),
    "ista_step": (check_ista_step, [_ista_step, _ista_step_by_where], {
        "threshold lam": (lambda X, y, b, lam, lr: _ista_step(X, y, b, lam / lr, lr), ["threshold is λ", "η·λ"]),
        "uphill": (lambda X, y, b, lam, lr: (lambda z: torch.sign(z) * torch.clamp(z.abs() - lr * lam, min=0))(
            b + lr * (X.mT @ (X @ b.unsqueeze(-1) - y.unsqueeze(-1))).squeeze(-1)), ["uphill"]),
        "threshold first": (lambda X, y, b, lam, lr: (lambda c: c - lr * (X.mT @ (X @ c.unsqueeze(-1)
                                                                                   - y.unsqueeze(-1))).squeeze(-1))(
            torch.sign(b) * torch.clamp(b.abs() - lr * lam, min=0)), ["threshold β first"]),
        "no threshold": (lambda X, y, b, lam, lr: b - lr * (X.mT @ (X @ b.unsqueeze(-1) - y.unsqueeze(-1))).squeeze(-1),
                         ["gradient step alone"]),
        "one problem": (lambda X, y, b, lam, lr: _ista_step(X[:1], y[:1], b[:1], lam, lr).expand_as(b),
                        ["not batched"]),
    }),
    "soft_threshold_relu_units": (check_soft_threshold_relu_units, [
        _relu_units,
        lambda z, theta: torch.relu(torch.stack([z, -z], -1) - (theta.unsqueeze(-1) if isinstance(theta, torch.Tensor)
                                                                 else theta)),
    ], {
        "swapped": (lambda z, theta: _relu_units(z, theta).flip(-1), ["swapped"]),
        "bias sign": (lambda z, theta: _relu_units(z, -theta), ["wrong sign"]),
        "not negated": (lambda z, theta: torch.stack([torch.relu(z - theta), torch.relu(z - theta)], -1),
                        ["not negated"]),
        "the difference": (lambda z, theta: torch.relu(z - theta) - torch.relu(-z - theta), ["shape is wrong"]),
    }),
}




def test_ista_step_reference_is_istas_first_iterate():
    from tfnewton.algorithms import ista
    from tfnewton.exercises import _ista_step_reference  # noqa: PLC2701 - the checker's own reference
    from tfnewton.tasks import sample_sparse_recovery

    task = sample_sparse_recovery(3, 6, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    beta0 = torch.full((3, 8), 1e-30, dtype=torch.float64)  # ~0 with no zero entry (sign is defined)
    expected = ista(task.X, task.y, 0.05, 1, lr=0.4)[1]
    torch.testing.assert_close(_ista_step_reference(task.X, task.y, beta0, 0.05, 0.4), expected, rtol=1e-12, atol=1e-12)



# --------------------------------------------------------------------------------------
# The trained sparse-recovery chapter: induced weights, per-prompt recovery error, linear rate
# --------------------------------------------------------------------------------------
from tfnewton.exercises import check_induced_weights, check_linear_rate, check_recovery_error_per_prompt  # noqa: E402


def _rate_by_polyfit(errors):
    k = torch.arange(errors.shape[-1], dtype=errors.dtype)
    A = torch.stack([k, torch.ones_like(k)], -1)  # (K+1, 2)
    coef = torch.linalg.lstsq(A.expand(errors.shape[0], -1, -1), errors.log().unsqueeze(-1)).solution
    return coef[:, 0, 0].exp()


TRAINED_SPARSE_CHECKERS = {
    "induced_weights": (check_induced_weights, [
        lambda x, a: torch.linalg.lstsq(x, a.unsqueeze(-1)).solution.squeeze(-1),
        lambda x, a: torch.linalg.solve(x.mT @ x, x.mT @ a.unsqueeze(-1)).squeeze(-1),
    ], {
        "correlation": (lambda x, a: (x.mT @ a.unsqueeze(-1)).squeeze(-1), ["correlation", "(X̃ᵀX̃)⁻¹"]),
        "over m": (lambda x, a: (x.mT @ a.unsqueeze(-1)).squeeze(-1) / x.shape[1], ["X̃ᵀỹ/m"]),
        "first problem": (lambda x, a: torch.linalg.lstsq(x[:1], a[:1].unsqueeze(-1)).solution.squeeze(-1).expand(
            x.shape[0], -1), ["not batched"]),
    }),
    "recovery_error_per_prompt": (check_recovery_error_per_prompt, [
        lambda e, b: (e - b).pow(2).sum(-1) / b.pow(2).sum(-1),
        lambda e, b: ((e - b).norm(dim=-1) / b.norm(dim=-1)) ** 2,
    ], {
        "norms": (lambda e, b: (e - b).norm(dim=-1) / b.norm(dim=-1), ["squared norms"]),
        "estimate norm": (lambda e, b: (e - b).pow(2).sum(-1) / e.pow(2).sum(-1), ["estimate's"]),
        "unnormalized": (lambda e, b: (e - b).pow(2).sum(-1), ["not normalized"]),
        "ratio of sums": (lambda e, b: ((e - b).pow(2).sum() / b.pow(2).sum()).expand(e.shape[0]), []),
    }),
    "linear_rate": (check_linear_rate, [
        _rate_by_polyfit,
        lambda e: torch.tensor([float(__import__("numpy").exp(__import__("numpy").polyfit(
            range(r.numel()), r.double().log().numpy(), 1)[0])) for r in e], dtype=e.dtype),
    ], {
        "slope": (lambda e: _rate_by_polyfit(e).log(), ["exp(slope)"]),
        "end points": (lambda e: (e[:, -1] / e[:, 0]) ** (1.0 / (e.shape[-1] - 1)), ["end points"]),
        "log10": (lambda e: torch.exp(_rate_by_polyfit(e).log() / 2.302585092994046), ["log10"]),
    }),
}


# --------------------------------------------------------------------------------------
# The training chapter: the schedule, the curriculum, the error against k
# --------------------------------------------------------------------------------------
import dataclasses  # noqa: E402

from tfnewton.exercises import check_curriculum, check_error_vs_k, check_learning_rate_schedule  # noqa: E402
from tfnewton.train import curriculum_at  # noqa: E402


def _rates(steps, c, *, from_zero=False, decay_at_warmup=False, floor=None):
    """The recipe's schedule written with torch.where (a student's vectorized answer)."""
    start = c.warmup_steps if decay_at_warmup else max(c.warmup_steps, round(c.steps * (1 - c.decay_fraction)))
    low = c.min_lr if floor is None else floor
    warm = c.lr * (steps + (0 if from_zero else 1)) / max(c.warmup_steps, 1)
    decay = low + (c.lr - low) * (c.steps - steps) / max(1, c.steps - start)
    return torch.where(steps < c.warmup_steps, warm, torch.where(steps < start, torch.full_like(steps, c.lr), decay))


def _rates_by_loop(steps, c):
    out = []
    for s in steps.tolist():
        if s < c.warmup_steps:
            out.append(c.lr * (s + 1) / c.warmup_steps)
            continue
        start = max(c.warmup_steps, int(round(c.steps * (1 - c.decay_fraction))))
        out.append(c.lr if s < start else c.min_lr + (c.lr - c.min_lr) * (c.steps - s) / (c.steps - start))
    return torch.tensor(out, dtype=steps.dtype)


def _stages(steps, c, *, capped=True):
    if not c.curriculum:
        return torch.tensor([c.d, c.n_points], dtype=steps.dtype).expand(len(steps), 2).clone()
    stage = torch.div(steps, c.curriculum_every, rounding_mode="floor")
    d_eff, n_eff = c.d_start + c.d_inc * stage, c.n_start + c.n_inc * stage
    if capped:
        d_eff, n_eff = d_eff.clamp(max=c.d), n_eff.clamp(max=c.n_points)
    return torch.stack([d_eff, n_eff], -1)


TRAINING_CHECKERS = {  # book/training.md
    "learning_rate_schedule": (check_learning_rate_schedule, [_rates, _rates_by_loop], {
        "warm-up from 0": (lambda s, c: _rates(s, c, from_zero=True), ["warm-up starts at 0", "(step + 1)"]),
        "decay from warm-up": (lambda s, c: _rates(s, c, decay_at_warmup=True), ["decay starts at the end of the warm-up"]),
        "decay to 0": (lambda s, c: _rates(s, c, floor=0.0), ["ends at 0", "min_lr"]),
        "float64": (lambda s, c: _rates(s, c).double(), ["dtype is wrong"]),
    }),
    "curriculum": (check_curriculum, [
        _stages,
        lambda s, c: torch.tensor([curriculum_at(int(t), c) for t in s.tolist()], dtype=s.dtype),
    ], {
        "uncapped": (lambda s, c: _stages(s, c, capped=False), ["not capped"]),
        "from 1": (lambda s, c: _stages(s + c.curriculum_every, c), ["counted from 1"]),
        "swapped": (lambda s, c: _stages(s, c).flip(-1), ["columns are swapped"]),
        "switch ignored": (lambda s, c: _stages(s, dataclasses.replace(c, curriculum=True)), ["config.curriculum"]),
    }),
    "error_vs_k": (check_error_vs_k, [
        lambda p, y, d: ((p - y) ** 2).mean(0) / d,
        lambda p, y, d: torch.stack([((p[:, k] - y[:, k]) ** 2).sum() / (d * p.shape[0]) for k in range(p.shape[1])]),
    ], {
        "no 1/d": (lambda p, y, d: ((p - y) ** 2).mean(0), ["not divided by d"]),
        "rms": (lambda p, y, d: (((p - y) ** 2).mean(0) / d).sqrt(), ["root"]),
        "over positions": (lambda p, y, d: ((p - y) ** 2).mean(1) / d, ["shape is wrong"]),
    }),
}


# --------------------------------------------------------------------------------------
# The probes chapter: similarity of errors, Iterative Newton's w_k, least squares in context
# --------------------------------------------------------------------------------------
from tfnewton.exercises import (  # noqa: E402
    check_min_norm_prefix_predictions,
    check_newton_iterate,
    check_similarity_of_errors,
    check_smallest_adequate_width,
)


def _newton_w(X, y, alpha, steps, *, start_eye=False, extra=0):
    S = X.mT @ X
    M = alpha[:, None, None] * (torch.eye(S.shape[-1], dtype=S.dtype).expand_as(S) if start_eye else S)
    for _ in range(steps + extra):
        M = 2 * M - M @ S @ M
    return (M @ X.mT @ y.unsqueeze(-1)).squeeze(-1)


def _newton_w_by_residual(X, y, alpha, steps):
    """The same iterate through R_k = I − M_k S: M_{k+1} = (I + R_k) M_k."""
    S = X.mT @ X
    eye = torch.eye(S.shape[-1], dtype=S.dtype)
    M = alpha[:, None, None] * S
    for _ in range(steps):
        M = (2 * eye - M @ S) @ M
    return torch.einsum("bij,bnj,bn->bi", M, X, y)


def _prefix_ols(X, y, *, upto=0, zero_below_d=False):
    B, n, d = X.shape
    out = torch.zeros_like(y)
    for i in range(1, n):
        k = min(n, i + upto)
        if zero_below_d and k < d:
            continue
        w = torch.linalg.pinv(X[:, :k]) @ y[:, :k].unsqueeze(-1)
        out[:, i] = (X[:, i:i + 1] @ w)[:, 0, 0]
    return out


def _prefix_ols_lstsq(X, y):
    """Through torch.linalg.lstsq with the SVD driver (minimum norm when rank-deficient)."""
    out = torch.zeros_like(y)
    for i in range(1, X.shape[1]):
        w = torch.linalg.lstsq(X[:, :i].double(), y[:, :i, None].double(), driver="gelsd").solution
        out[:, i] = (X[:, i:i + 1].double() @ w)[:, 0, 0].to(y.dtype)
    return out


def _residual_cosine_errors(a, b, y):
    return torch.nn.functional.cosine_similarity(a - y, b - y, dim=-1)


def _adequate_tail(widths, errors, factor, *, bound=None):
    """The smallest width of the run of widths within the bound that ends each row."""
    bound = factor * errors[:, -1:] if bound is None else bound
    ok = (errors <= bound).flip(1).int().cumprod(1).flip(1)
    return widths[(ok.shape[1] - ok.sum(1)).clamp(max=len(widths) - 1)]


def _adequate_loop(widths, errors, factor):
    out = []
    for row in errors:
        i = len(row) - 1
        while i > 0 and row[i - 1] <= factor * row[-1]:
            i -= 1
        out.append(widths[i])
    return torch.stack(out)


LINEAR_REGRESSION_PROBES_CHECKERS = {  # book/linear_regression_probes.md
    "similarity_of_errors": (check_similarity_of_errors, [
        _residual_cosine_errors,
        lambda a, b, y: ((a - y) * (b - y)).sum(-1) / ((a - y).norm(dim=-1) * (b - y).norm(dim=-1)),
    ], {
        "predictions": (lambda a, b, y: torch.nn.functional.cosine_similarity(a, b, dim=-1), ["compare the predictions"]),
        "correlation": (lambda a, b, y: torch.stack([torch.corrcoef(torch.stack([u, v]))[0, 1]
                                                     for u, v in zip(a - y, b - y)]), ["center the residuals"]),
        "mean": (lambda a, b, y: _residual_cosine_errors(a, b, y).mean(), ["shape is wrong"]),
        "sign": (lambda a, b, y: _residual_cosine_errors(a, 2 * y - b, y), ["sign is flipped"]),
    }),
    "newton_iterate": (check_newton_iterate, [_newton_w, _newton_w_by_residual], {
        "from identity": (lambda X, y, a, k: _newton_w(X, y, a, k, start_eye=True), ["M₀ = αI"]),
        "one too many": (lambda X, y, a, k: _newton_w(X, y, a, k, extra=1), ["one step too many"]),
        "over n": (lambda X, y, a, k: _newton_w(X / X.shape[1] ** 0.5, y / X.shape[1] ** 0.5, a, k),
                   ["XᵀX/n"]),
        "not batched alpha": (lambda X, y, a, k: _newton_w(X, y, a[:1].expand_as(a), k), ["not batched"]),
    }),
    "min_norm_prefix_predictions": (check_min_norm_prefix_predictions, [_prefix_ols, _prefix_ols_lstsq], {
        "itself": (lambda X, y: _prefix_ols(X, y, upto=1), ["includes the pair it predicts"]),
        "whole prompt": (lambda X, y: _prefix_ols(X, y, upto=X.shape[1]), ["whole prompt"]),
        "zero below d": (lambda X, y: _prefix_ols(X, y, zero_below_d=True), ["predict 0 where fewer than d"]),
    }),
    "smallest_adequate_width": (check_smallest_adequate_width, [_adequate_tail, _adequate_loop], {
        "first within": (lambda w, e, f: w[(e <= f * e[:, -1:]).int().argmax(1)], ["first width within"]),
        "smallest error": (lambda w, e, f: _adequate_tail(w, e, f, bound=f * e.min(1, keepdim=True).values),
                           ["smallest error"]),
        "position": (lambda w, e, f: torch.searchsorted(w, _adequate_tail(w, e, f)).to(e.dtype), ["position"]),
        "int": (lambda w, e, f: _adequate_tail(w, e, f).int(), ["dtype is wrong"]),
    }),
}


# The chapters' other checkers, one table each (same format as above).
# --------------------------------------------------------------------------------------
# The matrix-inversion chapter: the step's layer, the residual from the spectrum, the best α
# --------------------------------------------------------------------------------------
from tfnewton.exercises import (  # noqa: E402
    check_best_newton_alpha,
    check_newton_schulz_layer,
    check_residual_from_spectrum,
)
from tfnewton.layers import LinearAttention  # noqa: E402


def _ns_layer(d, *, dtype=torch.float64, device=None, sign=-1.0, copy=True, q="X", k="A", v="X", out="X"):
    """The two-head Newton–Schulz layer written by hand; the keywords make its mistakes."""
    slot = {"A": slice(0, d), "X": slice(d, 2 * d), "E": slice(2 * d, 3 * d)}
    layer = LinearAttention(3 * d, n_heads=2, head_dim=d, value_dim=d, dtype=dtype, device=device)
    eye = torch.eye(d, dtype=dtype, device=device)
    with torch.no_grad():
        layer.in_proj.zero_()
        layer.out_proj.zero_()
        layer.W_Q[0][:, slot[q]], layer.W_K[0][:, slot[k]], layer.W_V[0][:, slot[v]] = eye, eye, eye
        layer.W_O[0][slot[out], :] = sign * eye
        if copy:
            layer.W_Q[1][:, slot["E"]], layer.W_K[1][:, slot["E"]], layer.W_V[1][:, slot["X"]] = eye, eye, eye
            layer.W_O[1][slot[out], :] = eye
    return layer


def _ns_layer_one_head(d, *, dtype=torch.float64, device=None):
    """One head of key dimension 2d: ⟨[e_s; A[s,:]], [e_j; −X[:,j]]⟩ = δ_sj − (AX)[s, j]."""
    A_, X_, E_ = slice(0, d), slice(d, 2 * d), slice(2 * d, 3 * d)
    layer = LinearAttention(3 * d, n_heads=1, head_dim=2 * d, value_dim=d, dtype=dtype, device=device)
    eye = torch.eye(d, dtype=dtype, device=device)
    with torch.no_grad():
        layer.in_proj.zero_()
        layer.out_proj.zero_()
        layer.W_K[0][:d, E_], layer.W_K[0][d:, A_] = eye, eye
        layer.W_Q[0][:d, E_], layer.W_Q[0][d:, X_] = eye, -eye
        layer.W_V[0][:, X_], layer.W_O[0][X_, :] = eye, eye
    return layer


class _StreamAfterBlock(torch.nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, H):
        return H + self.layer(H)


def _spectral_residual(A, alpha, t):
    return (1 - alpha.unsqueeze(-1) * torch.linalg.svdvals(A) ** 2).abs().amax(-1) ** 2**t


def _iterated_residual(A, alpha, t):
    from tfnewton.algorithms import newton_schulz

    X = newton_schulz(A, t, alpha=alpha)[t]
    return torch.linalg.matrix_norm(_eye_like(A) - X @ A, ord=2)


def _gram_extremes(A):
    lam = torch.linalg.eigvalsh(A.mT @ A)  # σ_i², ascending
    return lam[..., -1], lam[..., 0]


MATRIX_INVERSION_CHECKERS: dict = {  # book/matrix_inversion.md
    "newton_schulz_layer": (check_newton_schulz_layer, [_ns_layer, _ns_layer_one_head], {
        "plus XAX": (lambda d, **kw: _ns_layer(d, sign=+1.0, **kw), ["adds XAX", "W_O = −I"]),
        "no copy head": (lambda d, **kw: _ns_layer(d, copy=False, **kw), ["copy head is missing"]),
        "value from A": (lambda d, **kw: _ns_layer(d, v="A", **kw), ["value reads slot A"]),
        "slot A written": (lambda d, **kw: _ns_layer(d, out="A", **kw), ["writes into slot A"]),
        "stream returned": (lambda d, **kw: _StreamAfterBlock(_ns_layer(d, **kw)), ["H + layer(H)"]),
        "dtype ignored": (lambda d, dtype=None, device=None: _ns_layer(d, device=device), ["weights are float64", "dtype=dtype"]),
    }),
    "residual_from_spectrum": (check_residual_from_spectrum, [_spectral_residual, _iterated_residual], {
        "gd exponent": (lambda A, alpha, t: _spectral_residual(A, alpha, 0) ** (t + 1), ["t + 1", "2^t"]),
        "2t": (lambda A, alpha, t: _spectral_residual(A, alpha, 0) ** (2 * t), ["exponent is 2t"]),
        "sigma not squared": (lambda A, alpha, t: (1 - alpha.unsqueeze(-1) * torch.linalg.svdvals(A)).abs().amax(-1)
                              ** 2**t, ["not squared"]),
        "no abs": (lambda A, alpha, t: (1 - alpha.unsqueeze(-1) * torch.linalg.svdvals(A) ** 2).amax(-1)
                   ** 2**t, ["absolute value is missing"]),
        "smallest": (lambda A, alpha, t: (1 - alpha.unsqueeze(-1) * torch.linalg.svdvals(A) ** 2).abs().amin(-1)
                     ** 2**t, ["smallest"]),
    }),
    "best_newton_alpha": (check_best_newton_alpha, [
        lambda A: (lambda s: 2 / (s[..., 0] ** 2 + s[..., -1] ** 2))(torch.linalg.svdvals(A)),
        lambda A: (lambda hi, lo: 2 / (hi + lo))(*_gram_extremes(A)),
    ], {
        "default": (lambda A: 1 / torch.linalg.matrix_norm(A, ord=2) ** 2, ["default 1/σ_max²"]),
        "boundary": (lambda A: 2 / torch.linalg.matrix_norm(A, ord=2) ** 2, ["edge of the stable range"]),
        "not squared": (lambda A: (lambda s: 2 / (s[..., 0] + s[..., -1]))(torch.linalg.svdvals(A)), ["not squared"]),
        "eigenvalues": (lambda A: (lambda m: 2 / (m.amax(-1) ** 2 + m.amin(-1) ** 2))(
            torch.linalg.eigvals(A).abs().to(A.dtype)), ["eigenvalues of A"]),
        "half": (lambda A: (lambda hi, lo: 1 / (hi + lo))(*_gram_extremes(A)), ["constant factor", "0.5 times"]),
    }),
}
# --------------------------------------------------------------------------------------
# The linear-regression chapter: GD as an attention layer, Iterative Newton's and GD's iterates
# --------------------------------------------------------------------------------------
from tfnewton.exercises import (  # noqa: E402
    check_gd_least_squares_iterate,
    check_gd_residual_update,
    check_newton_least_squares_iterate,
)


def _newton_iterate(X, y, steps, *, start="S", norm=2):
    S = X.mT @ X
    alpha = 1 / torch.linalg.matrix_norm(S, ord=norm).reshape(-1, 1, 1) ** 2  # 1/λ_max(S)² for norm=2
    M = alpha * (S if start == "S" else torch.eye(S.shape[-1], dtype=S.dtype))
    for _ in range(steps):
        M = 2 * M - M @ S @ M
    return (M @ (X.mT @ y.unsqueeze(-1))).squeeze(-1)


def _newton_iterate_normalized(X, y, steps):
    """On S/n and Xᵀy/n: the iterates are the same (M_k scales by n, Xᵀy by 1/n)."""
    n = X.shape[1]
    return _newton_iterate(X / n**0.5, y / n**0.5, steps)


def _gd_iterate(X, y, steps, *, step=None, mean=True, loop=None):
    n = X.shape[1]
    H = X.mT @ X / n
    eta = 1 / torch.linalg.eigvalsh(H)[:, -1:] if step is None else step(H)
    w = torch.zeros_like(X[:, 0])
    for _ in range(steps if loop is None else loop(steps)):
        grad = (X.mT @ ((X @ w.unsqueeze(-1)).squeeze(-1) - y).unsqueeze(-1)).squeeze(-1)
        w = w - eta * grad / (n if mean else 1)
    return w


def _gd_iterate_by_residuals(X, y, steps):
    """The same iterate through the residuals, as the Transformer computes it."""
    n = X.shape[1]
    eta = 1 / torch.linalg.eigvalsh(X.mT @ X / n)[:, -1:]
    w, r = torch.zeros_like(X[:, 0]), y
    for _ in range(steps):
        dw = eta * (X.mT @ r.unsqueeze(-1)).squeeze(-1) / n
        w, r = w + dw, r - (X @ dw.unsqueeze(-1)).squeeze(-1)
    return w


def _residual_update(X, r, lr):
    return r - lr / X.shape[1] * (X @ (X.mT @ r.unsqueeze(-1))).squeeze(-1)


LINEAR_REGRESSION_CHECKERS = {
    "gd_residual_update": (check_gd_residual_update, [
        _residual_update,
        lambda X, r, lr: r - lr * torch.einsum("bjd,bid,bj->bi", X, X, r) / X.shape[1],
    ], {
        "no 1/n": (lambda X, r, lr: _residual_update(X, r, lr * X.shape[1]), ["lacks its 1/n"]),
        "uphill": (lambda X, r, lr: _residual_update(X, r, -lr), ["uphill"]),
        "the change": (lambda X, r, lr: _residual_update(X, r, lr) - r, ["return the change"]),
        "diagonal": (lambda X, r, lr: r - lr / X.shape[1] * (X * X).sum(-1) * r, ["with itself only"]),
        "one problem": (lambda X, r, lr: _residual_update(X[:1], r[:1], lr).expand_as(r), ["not batched"]),
    }),
    "newton_least_squares_iterate": (check_newton_least_squares_iterate, [
        _newton_iterate, _newton_iterate_normalized,
    ], {
        "one too few": (lambda X, y, steps: _newton_iterate(X, y, max(steps - 1, 0)), ["one step too few"]),
        "one too many": (lambda X, y, steps: _newton_iterate(X, y, steps + 1), ["one step too many"]),
        "identity start": (lambda X, y, steps: _newton_iterate(X, y, steps, start="identity"), ["M₀ = αI"]),
        "Frobenius": (lambda X, y, steps: _newton_iterate(X, y, steps, norm="fro"), ["Frobenius"]),
        "the limit": (lambda X, y, steps: torch.linalg.lstsq(X, y.unsqueeze(-1)).solution.squeeze(-1), ["the limit"]),
        "Xᵀy/n": (lambda X, y, steps: _newton_iterate_normalized(X, y, steps) * X.shape[1], ["constant factor"]),
    }),
    "gd_least_squares_iterate": (check_gd_least_squares_iterate, [_gd_iterate, _gd_iterate_by_residuals], {
        "no 1/n in the step": (lambda X, y, s: _gd_iterate(X, y, s, step=lambda H: 1 / (
            X.shape[1] * torch.linalg.eigvalsh(H)[:, -1:])), ["n times too small"]),
        "boundary": (lambda X, y, s: _gd_iterate(X, y, s, step=lambda H: 2 / torch.linalg.eigvalsh(H)[:, -1:]),
                     ["edge of the stable range"]),
        "one step size": (lambda X, y, s: _gd_iterate(X, y, s, step=lambda H: 1 / torch.linalg.eigvalsh(H)[:, -1].max()),
                          ["one step size for the whole batch"]),
        "summed": (lambda X, y, s: _gd_iterate(X, y, s, mean=False), ["sums over the n points"]),
        "one too few": (lambda X, y, s: _gd_iterate(X, y, s, loop=lambda s: s - 1), ["one step too few"]),
    }),
}

# --------------------------------------------------------------------------------------
# The probing chapter: a held-out ridge probe's R², the best-matching step, the Newton-GD gap
# --------------------------------------------------------------------------------------
from tfnewton.exercises import check_best_matching_step, check_held_out_r2, check_newton_gd_gap  # noqa: E402


def _held_out_r2(F, t, F_test, t_test, lam, *, in_sample=False, scale=True, own_stats=False, lam_n=True,
                 intercept=True, ddof=1):
    mean, std = F.mean(1, keepdim=True), F.std(1, keepdim=True, correction=ddof)
    if not scale:
        std = torch.ones_like(std)
    Z = (F - mean) / std
    Zt = (F_test - F_test.mean(1, keepdim=True)) / F_test.std(1, keepdim=True) if own_stats else (F_test - mean) / std
    t_mean = t.mean(1, keepdim=True) if intercept else 0 * t[:, :1]
    N, P = F.shape[1:]
    A = Z.mT @ Z + (N if lam_n else 1) * lam * torch.eye(P, dtype=F.dtype)
    W = torch.linalg.solve(A, Z.mT @ (t - t_mean).unsqueeze(-1))
    if in_sample:
        Zt, t_test = Z, t
    pred = (Zt @ W).squeeze(-1) + t_mean
    return 1 - ((pred - t_test) ** 2).sum(1) / ((t_test - t_test.mean(1, keepdim=True)) ** 2).sum(1)


def _held_out_r2_by_lstsq(F, t, F_test, t_test, lam):
    """Ridge as least squares on rows stacked with √(Nλ)·I (no normal equations)."""
    mean, std = F.mean(1, keepdim=True), F.std(1, keepdim=True)
    Z, Zt = (F - mean) / std, (F_test - mean) / std
    B, N, P = F.shape
    rows = torch.cat([Z, (N * lam) ** 0.5 * torch.eye(P, dtype=F.dtype).expand(B, P, P)], 1)
    target = torch.cat([t - t.mean(1, keepdim=True), torch.zeros(B, P, dtype=F.dtype)], 1)
    W = torch.linalg.lstsq(rows, target.unsqueeze(-1)).solution
    pred = (Zt @ W).squeeze(-1) + t.mean(1, keepdim=True)
    residual, spread = pred - t_test, t_test - t_test.mean(1, keepdim=True)
    return 1 - residual.pow(2).sum(1) / spread.pow(2).sum(1)


def _cosine(u, v):
    return (u * v).sum(-1) / (u.norm(dim=-1) * v.norm(dim=-1))


def _best(preds, algo, y, *, per_prompt=False, residuals=True):
    sim = _cosine((preds - y)[:, None] if residuals else preds[:, None], (algo - y)[None] if residuals else algo[None])
    return sim.max(1).values.mean(-1) if per_prompt else sim.mean(-1).max(-1).values  # (L,)


def _gap(p, a, b, y, **kw):
    return _best(p, a, y, **kw) - _best(p, b, y, **kw)


PROBING_YOUR_MODEL_CHECKERS = {
    "held_out_r2": (check_held_out_r2, [_held_out_r2, _held_out_r2_by_lstsq], {
        "in-sample": (lambda *a: _held_out_r2(*a, in_sample=True), ["fit on (in-sample R²)"]),
        "not standardized": (lambda *a: _held_out_r2(*a, scale=False), ["not standardized"]),
        "test statistics": (lambda *a: _held_out_r2(*a, own_stats=True), ["their own mean and scale"]),
        "penalty not scaled": (lambda *a: _held_out_r2(*a, lam_n=False), ["not scaled by N"]),
        "no intercept": (lambda *a: _held_out_r2(*a, intercept=False), ["no intercept"]),
        "population std": (lambda *a: _held_out_r2(*a, ddof=0), ["population standard deviation"]),
    }),
    "best_matching_step": (check_best_matching_step, [
        lambda p, a, y, steps: steps[_cosine((p - y)[:, None], (a - y)[None]).mean(-1).argmax(-1)],
        lambda p, a, y, steps: torch.tensor([steps[max(range(len(a)), key=lambda j: (
            float(torch.nn.functional.cosine_similarity(q - y, a[j] - y, dim=-1).mean()), -j))] for q in p],
            dtype=p.dtype),
    ], {
        "argmin": (lambda p, a, y, steps: steps[_cosine((p - y)[:, None], (a - y)[None]).mean(-1).argmin(-1)],
                   ["lowest similarity"]),
        "index": (lambda p, a, y, steps: _cosine((p - y)[:, None], (a - y)[None]).mean(-1).argmax(-1).to(p.dtype),
                  ["row index"]),
        "steps averaged": (lambda p, a, y, steps: steps[_cosine((p - y)[:, None], (a - y)[None]).argmax(1)].mean(-1),
                           ["each prompt and average those steps"]),
        "predictions": (lambda p, a, y, steps: steps[_cosine(p[:, None], a[None]).mean(-1).argmax(-1)],
                        ["predictions themselves"]),
        "the similarity": (lambda p, a, y, steps: _cosine((p - y)[:, None], (a - y)[None]).mean(-1).max(-1).values,
                           ["best similarity"]),
        "best predictor per step": (lambda p, a, y, steps: _cosine((p - y)[:, None], (a - y)[None]).mean(-1).argmax(0)
                                    .to(p.dtype), ["shape is wrong"]),
    }),
    "newton_gd_gap": (check_newton_gd_gap, [
        _gap,
        lambda p, a, b, y: torch.tensor([max(float(_cosine(q - y, s - y).mean()) for s in a)
                                         - max(float(_cosine(q - y, s - y).mean()) for s in b)
                                         for q in p], dtype=p.dtype),
    ], {
        "per prompt": (lambda p, a, b, y: _gap(p, a, b, y, per_prompt=True), ["best step for each prompt"]),
        "mean over steps": (lambda p, a, b, y: (_cosine((p - y)[:, None], (a - y)[None]).mean(-1).mean(-1)
                                                - _cosine((p - y)[:, None], (b - y)[None]).mean(-1).mean(-1)),
                            ["average the similarity over the steps"]),
        "last step": (lambda p, a, b, y: _gap(p, a[-1:], b[-1:], y), ["last step"]),
        "predictions": (lambda p, a, b, y: _gap(p, a, b, y, residuals=False), ["predictions themselves"]),
        "unsigned": (lambda p, a, b, y: _gap(p, a, b, y).abs(), ["without its sign"]),
        "GD minus Newton": (lambda p, a, b, y: _gap(p, b, a, y), ["sign is flipped"]),
    }),
}


# --------------------------------------------------------------------------------------
# Linear regression, part 3 (book/linear_regression_thesis.md)
# --------------------------------------------------------------------------------------
from tfnewton.exercises import (  # noqa: E402
    check_fraction_of_the_way,
    check_newton_spectral_filter,
    check_similarity_from_position,
)


def _cos(u, v, dim=-1):
    return (u * v).sum(dim) / (u.norm(dim=dim) * v.norm(dim=dim))


LINEAR_REGRESSION_THESIS_CHECKERS = {
    "newton_spectral_filter": (check_newton_spectral_filter, [
        lambda lam, a, k: 1 - (1 - a[:, None] * lam ** 2) ** (2 ** k),
        lambda lam, a, k: 1 - torch.pow(1 - a[:, None] * lam * lam, 2.0 ** k),
    ], {
        "GD's shape": (lambda lam, a, k: 1 - (1 - a[:, None] * lam) ** (2 ** k), ["polynomial in λ²"]),
        "k not 2^k": (lambda lam, a, k: 1 - (1 - a[:, None] * lam ** 2) ** max(k, 1), ["2^k"]),
        "no 1 −": (lambda lam, a, k: (1 - a[:, None] * lam ** 2) ** (2 ** k), ["one minus"]),
    }),
    "fraction_of_the_way": (check_fraction_of_the_way, [
        lambda e: (e - e[:, -1:]) / (e[:, :1] - e[:, -1:]),
        lambda e: 1 - (e[:, :1] - e) / (e[:, :1] - e[:, -1:]),
    ], {
        "from the embedding": (lambda e: (e[:, :1] - e) / (e[:, :1] - e[:, -1:]), ["from the embedding"]),
        "not subtracted": (lambda e: e / e[:, :1], ["not subtracted"]),
    }),
    "similarity_from_position": (check_similarity_from_position, [
        lambda a, b, y, f: _cos((a - y)[:, f:], (b - y)[:, f:]),
    ], {
        "every position": (lambda a, b, y, f: _cos(a - y, b - y), ["every position is kept"]),
        "one too many": (lambda a, b, y, f: _cos((a - y)[:, f - 1:], (b - y)[:, f - 1:]), ["one position too many"]),
        "across prompts": (lambda a, b, y, f: _cos((a - y)[:, f:], (b - y)[:, f:], dim=0), ["shape"]),
    }),
}


# --------------------------------------------------------------------------------------
# Every chapter's checkers, one set of tests: correct solutions pass and say so, each named
# mistake raises with its words, bad fn or device is refused
# --------------------------------------------------------------------------------------
CHAPTER_CHECKERS = {
    **LOGISTIC_CHECKERS, **CLASSIFIER_CHECKERS, **SPARSE_CHECKERS, **TRAINED_SPARSE_CHECKERS,
    **MATRIX_INVERSION_CHECKERS, **LINEAR_REGRESSION_CHECKERS, **PROBING_YOUR_MODEL_CHECKERS,
    **TRAINING_CHECKERS, **LINEAR_REGRESSION_PROBES_CHECKERS, **LINEAR_REGRESSION_THESIS_CHECKERS,
}


@pytest.mark.parametrize("checker", list(CHAPTER_CHECKERS))
def test_chapter_checkers_pass_correct_solutions(checker, capsys):
    check, solutions, _ = CHAPTER_CHECKERS[checker]
    for solution in solutions:
        assert check(solution) is None
        out = capsys.readouterr().out
        assert re.match(rf"{checker}: correct on \d+ random cases", out) and "float64 and float32" in out, out


@pytest.mark.parametrize("checker, mistake", [(c, m) for c, (_, _, wrong) in CHAPTER_CHECKERS.items() for m in wrong])
def test_chapter_checkers_name_wrong_solutions(checker, mistake, capsys):
    check, _, wrong = CHAPTER_CHECKERS[checker]
    fn, words = wrong[mistake]
    with pytest.raises(ExerciseError) as info:
        check(fn)
    message = str(info.value)
    assert message.startswith(f"{checker} is wrong"), message
    for word in words:
        assert word in message, (word, message)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("checker", list(CHAPTER_CHECKERS))
def test_chapter_checkers_validate_fn_and_device(checker):
    check = CHAPTER_CHECKERS[checker][0]
    with pytest.raises(TypeError, match="fn must be a function"):
        check(torch.zeros(3))
    with pytest.raises(ValueError, match="device"):
        check(lambda *args: None, device="no-such-device")


def test_an_input_holding_nan_is_not_reported_as_changed_in_place(capsys):
    """NaN != NaN, so a plain equality check would call every NaN-holding input 'changed'."""
    x = torch.tensor([[1.0, float("nan")], [2.0, 3.0]], dtype=torch.float64)
    expected = x.nan_to_num(0.0)
    check_function(lambda t: t.nan_to_num(0.0), [((x,), expected), ((x.float(),), expected.float())], name="zero_nan")
    assert "zero_nan: correct" in capsys.readouterr().out

    def in_place(t):
        t.nan_to_num_(0.0)
        return t

    with pytest.raises(ExerciseError, match="changes its argument"):
        check_function(in_place, [((x.clone(),), expected)], name="zero_nan")
