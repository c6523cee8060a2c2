r"""Checkers for the book's exercises: run a student's function, say in words what is wrong.

``check_<name>(fn)`` runs ``fn`` on random, seeded problems and compares its answers with the
library's reference. On a wrong answer it raises :class:`ExerciseError` (an
``AssertionError``, so it also fails a test) whose message names the mistake: a wrong shape
(expected against got), a missing batch axis, a wrong dtype or device, a wrong sign, an
answer off by a constant factor (and which), a transposed answer, a known mistake of that
exercise by name, or else the largest error and where it is. On success it prints one line
and returns ``None``.

>>> import torch
>>> from tfnewton.exercises import ExerciseError, check_newton_schulz_step
>>> check_newton_schulz_step(lambda A, X: 2 * X - X @ A @ X)
newton_schulz_step: correct on 6 random cases (float64 and float32, batches of 1 to 8).
>>> try:
...     check_newton_schulz_step(lambda A, X: X @ A @ X - 2 * X)
... except ExerciseError as err:
...     print(str(err).splitlines()[0])
newton_schulz_step is wrong: the sign is flipped (you return −1 times the expected answer).

How a chapter adds its checker
------------------------------
Two ingredients, then one call to :func:`check_function`:

1. **cases**: a list of ``(arguments, expected)`` pairs. The arguments are drawn with a
   ``torch.Generator`` seeded by a fixed number (a student sees the same cases twice),
   batch axis first, in a few sizes, with at least one case of batch size 1 and one in
   float32 (dtype mistakes show only when the inputs are not float64), moved to
   ``device``. The expected answer comes from the library (an algorithm of
   :mod:`tfnewton.algorithms`), never from a second copy of the maths.
2. **known_mistakes** (optional): ``{"what the student did, in words": wrong_fn}`` for the
   mistakes the chapter expects; an answer equal to ``wrong_fn(*arguments)`` is reported
   by that sentence.

::

    def check_gradient_step(fn, *, device=None):
        generator = torch.Generator().manual_seed(0)
        cases = []
        for B, n, d, dtype in ((4, 8, 3, torch.float64), (1, 5, 2, torch.float64), (3, 6, 4, torch.float32)):
            task = sample_linear_regression(B, n, d, generator=generator, dtype=dtype, device=device)
            steps = gradient_descent_least_squares(task.X, task.y, 1, lr=0.1)   # (2, B, d)
            cases.append(((task.X, task.y, steps[0], 0.1), steps[1]))
        check_function(fn, cases, name="gradient_step", known_mistakes={
            "the gradient lacks its 1/n": lambda X, y, w, lr: ...})

The generic diagnoses (shape, batch, dtype, device, sign, factor, transposition, in-place
changes, exceptions) need no code in the chapter. :func:`diagnose` compares one answer with
one expected tensor, for checkers that need their own loop.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence

import torch

from ._validate import check_device
from .algorithms import (
    damped_newton_logistic,
    default_newton_alpha,
    gradient_descent_logistic,
    lasso_objective,
    logistic_loss,
    newton_decrement_logistic,
    newton_schulz,
    soft_threshold,
)
from .approx import relu_approximation
from .tasks import sample_logistic_regression, sample_matrices, sample_sparse_recovery

__all__ = [
    "ExerciseError",
    "check_function",
    "diagnose",
    "describe",
    "tolerance",
    "check_newton_schulz_step",
    # matrix inversion (more)
    "check_newton_schulz_layer",
    "check_residual_from_spectrum",
    "check_best_newton_alpha",
    # linear regression
    "check_gd_residual_update",
    "check_newton_least_squares_iterate",
    "check_gd_least_squares_iterate",
    # probing your model
    "check_held_out_r2",
    "check_best_matching_step",
    "check_newton_gd_gap",
    "check_loss_derivative",
    "check_newton_decrement",
    "check_damped_newton_step",
    "check_relu_square",
    "check_gd_logistic_logit",
    "check_probability_residual_similarity",
    "check_posterior_predictive",
    "check_soft_threshold",
    "check_ista_step",
    "check_soft_threshold_relu_units",
    "check_induced_weights",
    "check_recovery_error_per_prompt",
    "check_linear_rate",
    # training
    "check_learning_rate_schedule",
    "check_curriculum",
    "check_error_vs_k",
    # linear regression probes
    "check_similarity_of_errors",
    "check_newton_iterate",
    "check_min_norm_prefix_predictions",
    "check_smallest_adequate_width",
    # linear regression thesis
    "check_newton_spectral_filter",
    "check_fraction_of_the_way",
    "check_similarity_from_position",
]


class ExerciseError(AssertionError):
    """A student's function gave a wrong answer; the message says what is wrong, in words."""


def tolerance(dtype: torch.dtype) -> float:
    """Relative error accepted as correct: 1e-9 in float64, 1e-4 in float32, 1e-2 below.

    Rounding differs with the order of operations (``(XA)X`` against ``X(AX)``), so an
    answer is compared up to its dtype's rounding, never bit for bit.
    """
    if dtype == torch.float64:
        return 1e-9
    if dtype == torch.float32:
        return 1e-4
    return 1e-2


def describe(value) -> str:
    """A short description of a value: ``"a float64 tensor of shape (4, 3, 3)"``."""
    if value is None:
        return "None"
    if isinstance(value, torch.Tensor):
        device = "" if value.device.type == "cpu" else f" on {value.device}"
        return f"a {str(value.dtype).removeprefix('torch.')} tensor of shape {tuple(value.shape)}{device}"
    name = type(value).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def _relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    """‖got − expected‖ / ‖expected‖ over the whole tensor, in float64."""
    got, expected = got.double(), expected.double()
    scale = expected.norm().item()
    return (got - expected).norm().item() / (scale if scale > 0 else 1.0)


def diagnose(
    got,
    expected: torch.Tensor,
    *,
    inputs: Sequence | None = None,
    known_mistakes: Mapping[str, Callable] | None = None,
    rtol: float | None = None,
) -> str | None:
    """What is wrong with ``got``, in words; ``None`` when it equals ``expected``.

    Parameters
    ----------
    got : object
        What the student's function returned.
    expected : Tensor of shape (B, ...)
        The library's answer, batch axis first.
    inputs : sequence, optional
        The arguments the answer was computed from; needed for ``known_mistakes``.
    known_mistakes : mapping of str to callable, optional
        ``{"description": wrong_fn}``: when ``got`` equals ``wrong_fn(*inputs)`` the
        description is the diagnosis.
    rtol : float, optional
        Relative error accepted (default :func:`tolerance` of ``expected.dtype``).

    Returns
    -------
    str or None
        The first diagnosis that applies, in this order: not a tensor; wrong shape (a
        missing batch axis and a transposed shape are named); wrong dtype; wrong device;
        NaN or infinity; a known mistake; a flipped sign; a constant factor; a transposed
        answer; right for some problems of the batch only; else the largest error and
        where it is.
    """
    rtol = tolerance(expected.dtype) if rtol is None else rtol
    want = f"expected {describe(expected)}"
    if not isinstance(got, torch.Tensor):
        return f"it returns {describe(got)}; {want}."
    if got.shape != expected.shape:
        shape = tuple(got.shape)
        if expected.ndim >= 2 and shape == tuple(expected.shape[1:]):
            return (
                f"it is not batched: it returns shape {shape}, the shape of one problem, for a "
                f"batch of {expected.shape[0]} problems (expected shape {tuple(expected.shape)}). "
                "Keep the batch axis first: @ (torch.matmul) multiplies the last two axes problem by "
                "problem, and .mT transposes them (.T and torch.mm work on single matrices only)."
            )
        if expected.ndim >= 2 and shape == tuple(expected.mT.shape):
            return (
                f"the shape is transposed: it returns shape {shape}, expected {tuple(expected.shape)} "
                "(swap the last two axes, or multiply in the other order)."
            )
        return f"the shape is wrong: expected shape {tuple(expected.shape)}, got {shape}."
    if got.dtype != expected.dtype:
        return (
            f"the dtype is wrong: it returns {str(got.dtype).removeprefix('torch.')} for "
            f"{str(expected.dtype).removeprefix('torch.')} inputs. Return the inputs' dtype: do not "
            "hard-code dtype=... or call .double()/.float(); new tensors can take it from an input "
            "(torch.eye(d, dtype=A.dtype, device=A.device))."
        )
    if got.device != expected.device:
        return (
            f"the device is wrong: it returns a tensor on {got.device} for inputs on "
            f"{expected.device}. Create new tensors with device=A.device (or torch.zeros_like)."
        )
    if not bool(torch.isfinite(got).all()):
        return "it returns NaN or infinite values (a division by zero, or an overflow?)."
    if _relative_error(got, expected) <= rtol:
        return None
    for description, wrong in (known_mistakes or {}).items():
        try:
            candidate = wrong(*inputs)
        except Exception:  # noqa: BLE001 - a mistake that cannot apply to these inputs
            continue
        if candidate.shape == got.shape and _relative_error(got, candidate) <= rtol:
            return f"{description}."
    e, g = expected.double().flatten(), got.double().flatten()
    factor = (g @ e / (e @ e)).item() if (e @ e) > 0 else 0.0
    if factor != 0.0 and _relative_error(got, factor * expected) <= rtol:
        if abs(factor + 1) <= 1e-6:
            return "the sign is flipped (you return −1 times the expected answer)."
        sign = " and the sign is flipped" if factor < 0 else ""
        return (
            f"it is off by a constant factor: you return {factor:.6g} times the expected answer{sign} "
            "(a missing or extra constant, or a wrong scaling?)."
        )
    if expected.ndim >= 3 and expected.shape[-1] == expected.shape[-2] and _relative_error(got.mT, expected) <= rtol:
        return "it is transposed: you return the transpose of the expected answer (problem by problem)."
    if expected.ndim >= 1 and expected.shape[0] > 1:
        per_problem = [_relative_error(got[b], expected[b]) <= rtol for b in range(expected.shape[0])]
        if any(per_problem):
            right = [b for b, ok in enumerate(per_problem) if ok]
            return (
                f"it is right for problem(s) {right} of the batch of {expected.shape[0]} only: does it "
                "use one problem's input for all (A[0]), or mix problems (a sum or reshape over the "
                "batch axis)?"
            )
    err = (got.double() - expected.double()).abs()
    where = tuple(int(i) for i in torch.unravel_index(err.argmax(), err.shape))
    return (
        f"the values are wrong: relative error {_relative_error(got, expected):.2e} (accepted: "
        f"{rtol:.0e}); the largest error is at index {where}: expected "
        f"{expected[where].item():.6g}, got {got[where].item():.6g}."
    )


def _call(fn, args, name: str, where: str):
    """``fn(*args)``; an exception becomes an ExerciseError that says what the call was."""
    try:
        return fn(*args)
    except Exception as err:  # noqa: BLE001 - any error of the student's code is reported
        text = str(err).splitlines()[0] if str(err) else ""
        hint = ""
        lowered = text.lower()
        if any(s in lowered for s in ("shape", "size", "dimension", "matrix", "mat1", "2d")):
            hint = (
                " This is a shape error: the inputs have the batch axis first, so use @ "
                "(torch.matmul) and .mT, which act on the last two axes problem by problem."
            )
        elif "device" in lowered:
            hint = " Create new tensors on the inputs' device (device=A.device)."
        elif "dtype" in lowered or "scalar type" in lowered:
            hint = " Create new tensors in the inputs' dtype (dtype=A.dtype)."
        raise ExerciseError(
            f"{name} raised {type(err).__name__}: {text} ({where}).{hint}"
        ) from err


def check_function(
    fn: Callable,
    cases: Sequence[tuple[Sequence, torch.Tensor]],
    *,
    name: str,
    known_mistakes: Mapping[str, Callable] | None = None,
    rtol: float | None = None,
) -> None:
    """Run ``fn`` on every case; raise :class:`ExerciseError` at the first wrong answer.

    Parameters
    ----------
    fn : callable
        The student's function.
    cases : sequence of (arguments, expected) pairs
        ``arguments`` is a tuple passed as ``fn(*arguments)`` (batch axis first on every
        tensor; each tensor is passed as a copy, so an in-place change of an input is caught
        and named); ``expected`` is the library's answer, shape ``(B, ...)``.
    name : str
        The function's name in the messages.
    known_mistakes, rtol
        As in :func:`diagnose`.

    Raises
    ------
    ExerciseError
        With the diagnosis and the case (its shapes and dtype). When the answer is wrong on a
        batch but right on each of its problems alone, the diagnosis is that ``fn`` is not
        batched.
    TypeError
        ``fn`` is not callable.
    """
    if not callable(fn):
        raise TypeError(f"fn must be a function (your solution), got {describe(fn)}")
    try:
        arg_names = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):  # a builtin without a signature
        arg_names = []
    dtypes, batches = set(), set()
    for args, expected in cases:
        where = "on inputs " + ", ".join(describe(a) for a in args)
        copies = tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in args)
        got = _call(fn, copies, name, where)
        for i, (a, c) in enumerate(zip(args, copies)):
            # NaN == NaN here: an input that holds NaN is unchanged when its NaNs stay put
            if isinstance(a, torch.Tensor) and not (a.shape == c.shape and torch.equal(a.isnan(), c.isnan())
                                                    and torch.equal(a.nan_to_num(0.0), c.nan_to_num(0.0))):
                arg = arg_names[i] if i < len(arg_names) else f"number {i + 1}"
                raise ExerciseError(
                    f"{name} changes its argument {arg} in place ({where}); compute a new tensor "
                    "instead (X = 2 * X - ... makes a new one; X *= 2 or X.mul_(2) changes the input)."
                )
        problem = diagnose(got, expected, inputs=args, known_mistakes=known_mistakes, rtol=rtol)
        if problem is not None:
            if problem.startswith(("the values are wrong", "it is right for problem")):
                problem = _batch_diagnosis(fn, args, expected, rtol) or problem
            raise ExerciseError(f"{name} is wrong: {problem}\n({where})")
        dtypes.add(str(expected.dtype).removeprefix("torch."))
        batches.add(expected.shape[0])
    kinds = " and ".join(sorted(dtypes, reverse=True))
    sizes = f"batches of {min(batches)} to {max(batches)}" if len(batches) > 1 else f"batch size {min(batches)}"
    print(f"{name}: correct on {len(cases)} random cases ({kinds}, {sizes}).")


def _batch_diagnosis(fn, args, expected, rtol) -> str | None:
    """'not batched' when ``fn`` is right on every problem alone but wrong on the batch."""
    B = expected.shape[0]
    if B < 2:
        return None
    for b in range(B):
        one = tuple(a[b:b + 1].clone() if isinstance(a, torch.Tensor) else a for a in args)
        try:
            got = fn(*one)
        except Exception:  # noqa: BLE001 - then the batch is not the only problem
            return None
        if diagnose(got, expected[b:b + 1], rtol=rtol) is not None:
            return None
    return (
        f"it is not batched: it is right on each problem alone (batch size 1) but wrong on a batch "
        f"of {B}. Keep the batch axis first and never sum, reshape or index across it; @ and .mT "
        "act on the last two axes problem by problem."
    )


# --------------------------------------------------------------------------------------
# The chapters' checkers
# --------------------------------------------------------------------------------------
def check_newton_schulz_step(fn: Callable, *, device=None) -> None:
    r"""Check one Newton–Schulz step: ``fn(A, X)`` must return ``2X − X A X``.

    Parameters
    ----------
    fn : callable
        ``fn(A, X) -> Tensor of shape (B, d, d)`` for ``A, X`` of shape ``(B, d, d)``, in the
        inputs' dtype and on their device.
    device : str or torch.device, optional
        Where the cases live (default CPU).

    Raises
    ------
    ExerciseError
        On the first case answered wrongly, saying what is wrong.

    Notes
    -----
    The cases are Newton–Schulz iterates ``X_t`` (``t`` = 0, 1, 2) of random non-symmetric
    matrices (:func:`tfnewton.tasks.sample_matrices`, ``κ`` from 5 to 50) with a random
    start ``X_0 = αAᵀ``, so products in the wrong order or with a transposed factor give
    different numbers; the reference is ``X_{t+1}`` of
    :func:`tfnewton.algorithms.newton_schulz`. Batches of 1 to 8, ``d`` from 2 to 7, five
    cases in float64 and one in float32.
    """
    device = check_device(device)
    generator = torch.Generator().manual_seed(2024)
    cases = []
    # (batch, d, condition number, t, dtype)
    for B, d, kappa, t, dtype in ((4, 3, 10.0, 0, torch.float64), (1, 5, 5.0, 1, torch.float64),
                                  (8, 2, 20.0, 2, torch.float64), (3, 7, 50.0, 1, torch.float64),
                                  (2, 4, 10.0, 0, torch.float64), (5, 6, 10.0, 1, torch.float32)):
        A = sample_matrices(B, d, kappa, generator=generator, dtype=torch.float64)
        scale = 0.5 + 1.4 * torch.rand(B, generator=generator, dtype=torch.float64)  # α in (0.5, 1.9)/σ²
        iterates = newton_schulz(A, t + 1, alpha=scale * default_newton_alpha(A))  # (t + 2, B, d, d)
        A, X, X_next = (v.to(device=device, dtype=dtype) for v in (A, iterates[t], iterates[t + 1]))
        cases.append(((A, X), X_next))
    check_function(
        fn,
        cases,
        name="newton_schulz_step",
        known_mistakes={
            "X is transposed in the product: you compute 2X − XᵀAX; the step is 2X − XAX":
                lambda A, X: 2 * X - X.mT @ A @ X,
            "A is transposed in the product: you compute 2X − XAᵀX; the step is 2X − XAX":
                lambda A, X: 2 * X - X @ A.mT @ X,
            "the product is in the wrong order: you compute 2X − AXX; the step is 2X − XAX":
                lambda A, X: 2 * X - A @ X @ X,
            "the product is in the wrong order: you compute 2X − XXA; the step is 2X − XAX":
                lambda A, X: 2 * X - X @ X @ A,
            "you multiply entry by entry (*) where the step needs matrix products (@): 2X − X*A*X":
                lambda A, X: 2 * X - X * A * X,
            "the first term is X; it should be 2X (the step is 2X − XAX = X(2I − AX))":
                lambda A, X: X - X @ A @ X,
        },
    )


# --------------------------------------------------------------------------------------
# Logistic regression (book/logistic_regression.md)
# --------------------------------------------------------------------------------------
# ---------------------------------------------------------------------- matrix inversion (more)
def check_newton_schulz_layer(fn: Callable, *, device=None) -> None:
    r"""Check a hand-written Newton–Schulz layer: ``fn(d, dtype=..., device=...)`` must return a
    layer whose output on the stream ``[A | X_tᵀ | I]`` is the construction's.

    Parameters
    ----------
    fn : callable
        ``fn(d, *, dtype, device) -> layer``, a :class:`tfnewton.layers.LinearAttention` (or
        any module) of width ``3d`` whose weights the student wrote; ``layer(H)`` maps a
        stream ``H`` of shape ``(B, d, 3d)`` to the layer's output, shape ``(B, d, 3d)``,
        *without* the residual connection.
    device : str or torch.device, optional
        Where the cases live (default CPU).

    Raises
    ------
    ExerciseError
        On the first case answered wrongly, saying what is wrong (the sign of ``XAX``, a
        missing copy head, the value read from the wrong slot, the wrong slot written, the
        residual connection added twice, ...).

    Notes
    -----
    The reference is the first block of
    :func:`tfnewton.constructions.newton_schulz_transformer` applied to the same streams:
    token ``j`` holds ``[A[j, :] | X_t[:, j] | e_j]``, with ``X_t`` the ``t``-th
    Newton–Schulz iterate (``t`` = 0, 1, 2) of a random non-symmetric ``A``, so any layer
    that computes ``X_t − X_tAX_t`` in slot ``"X"`` (and nothing elsewhere) passes, one
    head or two. (Swapping the XAX head's query and key passes too: it forms ``X(AX)ᵀ``, and
    ``AX_t`` is symmetric for every iterate, ``X_t`` being a polynomial in ``AᵀA`` times ``Aᵀ``.)
    Five cases, ``d`` from 2 to 6, batches of 1 to 6, one in float32.
    """
    from .constructions import newton_schulz_transformer

    if not callable(fn):
        raise TypeError(f"fn must be a function (your solution), got {describe(fn)}")
    device = check_device(device)
    generator = torch.Generator().manual_seed(3)
    cases = []
    for B, d, kappa, t, dtype in ((4, 3, 10.0, 0, torch.float64), (1, 5, 5.0, 1, torch.float64),
                                  (6, 2, 20.0, 2, torch.float64), (3, 6, 10.0, 1, torch.float64),
                                  (2, 4, 10.0, 1, torch.float32)):
        A = sample_matrices(B, d, kappa, generator=generator, dtype=torch.float64)
        model = newton_schulz_transformer(d, max(t, 1))
        H = model.hidden_states(A)[t]  # (B, d, 3d): [A | X_tᵀ | I]
        expected = model.blocks[0].layer(H)
        cases.append(((H.to(device=device, dtype=dtype),), expected.to(device=device, dtype=dtype)))

    layers = {}  # (d, dtype) -> the student's layer, built once and checked for its dtype
    for (H,), _ in cases:
        d = H.shape[-1] // 3
        where = f"when called as fn({d}, dtype={H.dtype}, device={str(H.device)!r})"
        layer = _call(lambda: fn(d, dtype=H.dtype, device=H.device), (), "newton_schulz_layer", where)
        for p in layer.parameters() if isinstance(layer, torch.nn.Module) else ():
            if p.dtype != H.dtype or p.device != H.device:
                raise ExerciseError(
                    f"newton_schulz_layer is wrong: the layer's weights are "
                    f"{str(p.dtype).removeprefix('torch.')} on {p.device} for a "
                    f"{str(H.dtype).removeprefix('torch.')} stream on {H.device} ({where}): build it "
                    "with dtype=dtype and device=device (LinearAttention(..., dtype=dtype, device=device)) "
                    "and create the identity blocks the same way."
                )
        layers[d, H.dtype] = layer

    def newton_schulz_layer(H):
        return layers[H.shape[-1] // 3, H.dtype](H)

    def slots(H):
        d = H.shape[-1] // 3
        return d, H[..., :d], H[..., d:2 * d].mT  # d, A, X

    def writing(H, into, value):  # an output that is `value`ᵀ in one slot, zero elsewhere
        d, _, _ = slots(H)
        out = torch.zeros_like(H)
        out[..., into * d:(into + 1) * d] = value.mT
        return out

    check_function(
        newton_schulz_layer,
        cases,
        name="newton_schulz_layer",
        known_mistakes={
            "the XAX head adds XAX to slot X (its W_O is +I); it must subtract it (W_O = −I), "
            "so that the block gives 2X − XAX":
                lambda H: (lambda d, A, X: writing(H, 1, X + X @ A @ X))(*slots(H)),
            "the copy head is missing: your layer writes −XAX only, so the block gives X − XAX; "
            "a second head with one-hot query and key (slot E) must add X":
                lambda H: (lambda d, A, X: writing(H, 1, -X @ A @ X))(*slots(H)),
            "the XAX head's value reads slot A instead of slot X: it forms AᵀAX":
                lambda H: (lambda d, A, X: writing(H, 1, X - A.mT @ A @ X))(*slots(H)),
            "your layer writes into slot A (coordinates 0 to d − 1); W_O must write into slot X "
            "(coordinates d to 2d − 1), so that the next layer still reads A":
                lambda H: (lambda d, A, X: writing(H, 0, X - X @ A @ X))(*slots(H)),
            "you return the stream after the block, H + layer(H): return the layer's output "
            "alone (the block's residual connection adds H)":
                lambda H: H + (lambda d, A, X: writing(H, 1, X - X @ A @ X))(*slots(H)),
        },
    )


def _residual_norms(A: torch.Tensor, alpha: torch.Tensor, steps: int) -> torch.Tensor:
    """``‖I − X_t A‖₂`` of :func:`~tfnewton.algorithms.newton_schulz`'s iterates, shape (steps + 1, B)."""
    eye = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
    return torch.linalg.matrix_norm(eye - newton_schulz(A, steps, alpha=alpha) @ A, ord=2)


def check_residual_from_spectrum(fn: Callable, *, device=None) -> None:
    r"""Check the residual predicted from the spectrum: ``fn(A, alpha, t)`` must return
    ``‖I − X_tA‖₂ = max_i |1 − ασ_i²|^(2^t)`` for every problem, without iterating.

    Parameters
    ----------
    fn : callable
        ``fn(A, alpha, t) -> Tensor of shape (B,)`` for ``A`` of shape ``(B, d, d)``, the
        start's scale ``alpha`` of shape ``(B,)`` (``X₀ = αAᵀ``) and a step ``t >= 0``
        (an int), in the inputs' dtype and on their device.
    device : str or torch.device, optional
        Where the cases live (default CPU).

    Raises
    ------
    ExerciseError
        On the first case answered wrongly, saying what is wrong (gradient descent's
        exponent ``t + 1``, ``2t`` for ``2^t``, ``σ_i`` not squared, the absolute value
        forgotten, the smallest factor instead of the largest, ...).

    Notes
    -----
    The reference runs :func:`tfnewton.algorithms.newton_schulz` for ``t`` steps and takes
    the spectral norm of ``I − X_tA``. ``α`` is drawn in ``(0.5, 1.9)/σ_max²`` so that in some
    problems the top singular value's factor ``1 − ασ_max² < 0`` is the largest in size;
    ``t`` from 0 to 3 with the residual above ``1e-5``, where the iterates' rounding is far
    below the tolerance. Five cases, ``d`` from 2 to 6, batches of 1 to 6, one in float32.
    """
    device = check_device(device)
    generator = torch.Generator().manual_seed(5)
    cases = []
    for B, d, kappa, t, dtype in ((4, 3, 3.0, 1, torch.float64), (1, 5, 10.0, 2, torch.float64),
                                  (6, 2, 2.0, 3, torch.float64), (3, 6, 20.0, 0, torch.float64),
                                  (5, 4, 4.0, 2, torch.float32)):
        A = sample_matrices(B, d, kappa, generator=generator, dtype=torch.float64)
        alpha = (0.5 + 1.4 * torch.rand(B, generator=generator, dtype=torch.float64)) * default_newton_alpha(A)
        expected = _residual_norms(A, alpha, t)[t]
        A, alpha, expected = (v.to(device=device, dtype=dtype) for v in (A, alpha, expected))
        cases.append(((A, alpha, t), expected))

    def factors(A, alpha):  # (B, d): 1 − ασ_i²
        return 1 - alpha.unsqueeze(-1) * torch.linalg.svdvals(A) ** 2

    check_function(
        fn,
        cases,
        name="residual_from_spectrum",
        known_mistakes={
            "the exponent is t + 1, gradient descent's (R_t = R_0^(t+1)); Newton–Schulz squares "
            "the residual every step, so R_t = R_0^(2^t)":
                lambda A, alpha, t: factors(A, alpha).abs().amax(-1) ** (t + 1),
            "the exponent is 2t; squaring t times gives the power 2^t":
                lambda A, alpha, t: factors(A, alpha).abs().amax(-1) ** (2 * t),
            "σ_i is not squared: R_0 = I − αAᵀA has the eigenvalues 1 − ασ_i², not 1 − ασ_i":
                lambda A, alpha, t: (1 - alpha.unsqueeze(-1) * torch.linalg.svdvals(A)).abs().amax(-1) ** 2**t,
            "the absolute value is missing: for α > 1/σ_max² the top factor 1 − ασ_max² is negative "
            "and can be the largest in size; the norm is max_i |1 − ασ_i²|, not max_i (1 − ασ_i²)":
                lambda A, alpha, t: factors(A, alpha).amax(-1) ** 2**t,
            "you take the smallest |1 − ασ_i²|; the spectral norm is the largest":
                lambda A, alpha, t: factors(A, alpha).abs().amin(-1) ** 2**t,
        },
    )


def _best_alpha_by_search(A: torch.Tensor, iterations: int = 80) -> torch.Tensor:
    """The ``α`` that minimizes ``‖I − X₀A‖₂`` (``X₀`` from :func:`~tfnewton.algorithms.newton_schulz`),
    by golden-section search on ``(0, 2/σ_max²)``; ``‖I − αAᵀA‖₂`` is convex in ``α``."""
    ratio = (5**0.5 - 1) / 2
    lo, hi = torch.zeros_like(default_newton_alpha(A)), 2 * default_newton_alpha(A)
    for _ in range(iterations):
        a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        fa, fb = _residual_norms(A, a.clamp(min=1e-300), 0)[0], _residual_norms(A, b, 0)[0]
        lo, hi = torch.where(fa <= fb, lo, a), torch.where(fa <= fb, b, hi)
    return (lo + hi) / 2


def check_best_newton_alpha(fn: Callable, *, device=None) -> None:
    r"""Check the best start: ``fn(A)`` must return the ``α`` that minimizes ``‖I − αAᵀA‖₂``,
    ``α = 2/(σ_max² + σ_min²)``, for every problem.

    Parameters
    ----------
    fn : callable
        ``fn(A) -> Tensor of shape (B,)`` for ``A`` of shape ``(B, d, d)``, in its dtype and
        on its device.
    device : str or torch.device, optional
        Where the cases live (default CPU).

    Raises
    ------
    ExerciseError
        On the first case answered wrongly, saying what is wrong (the library's default
        ``1/σ_max²``, the boundary ``2/σ_max²``, the singular values not squared, the
        eigenvalues of a non-symmetric ``A``, ...).

    Notes
    -----
    The reference minimizes the spectral norm of ``I − X₀A``, with ``X₀`` from
    :func:`tfnewton.algorithms.newton_schulz` (0 steps), by golden-section search: the
    minimizer is found numerically, not from the formula. Five cases of random
    non-symmetric matrices (:func:`tfnewton.tasks.sample_matrices`, ``κ`` from 2 to 50),
    batches of 1 to 6, one in float32.
    """
    device = check_device(device)
    generator = torch.Generator().manual_seed(7)
    cases = []
    for B, d, kappa, dtype in ((4, 3, 10.0, torch.float64), (1, 5, 2.0, torch.float64),
                               (6, 2, 50.0, torch.float64), (3, 6, 5.0, torch.float64),
                               (5, 4, 10.0, torch.float32)):
        A = sample_matrices(B, d, kappa, generator=generator, dtype=torch.float64)
        expected = _best_alpha_by_search(A)
        cases.append(((A.to(device=device, dtype=dtype),), expected.to(device=device, dtype=dtype)))

    def extremes(A):  # σ_max, σ_min, shape (B,) each
        s = torch.linalg.svdvals(A)
        return s[..., 0], s[..., -1]

    check_function(
        fn,
        cases,
        name="best_newton_alpha",
        known_mistakes={
            "you return the library's default 1/σ_max²: safe, but it leaves 1 − 1/κ² at the small "
            "end and 0 at the large one; the best α balances the two ends, 1 − ασ_min² = ασ_max² − 1":
                lambda A: default_newton_alpha(A),
            "you return 2/σ_max², the edge of the stable range, where the top factor 1 − ασ_max² is "
            "−1 and never shrinks; balance the two ends instead":
                lambda A: 2 * default_newton_alpha(A),
            "the singular values are not squared: 2/(σ_max + σ_min) balances 1 − ασ_i, but "
            "R₀ = I − αAᵀA has the factors 1 − ασ_i²":
                lambda A: (lambda hi, lo: 2 / (hi + lo))(*extremes(A)),
            "you use the eigenvalues of A; A is not symmetric, and R₀ = I − αAᵀA depends on its "
            "singular values (the eigenvalues of AᵀA are σ_i²)":
                lambda A: (lambda m: 2 / (m.amax(-1) ** 2 + m.amin(-1) ** 2))(torch.linalg.eigvals(A).abs().to(A.dtype)),
        },
    )


# ---------------------------------------------------------------------- linear regression
def _least_squares_cases(generator, shapes):
    """Prompts ``(X, y)`` in float64 for the regression checkers, with the case's dtype.

    ``shapes`` holds ``(B, n, d, κ(Σ), dtype)``; ``n ≠ d`` everywhere, so ``XXᵀ`` and
    ``XᵀX`` cannot be confused without a shape error.
    """
    from .tasks import sample_linear_regression

    out = []
    for B, n, d, kappa, dtype in shapes:
        task = sample_linear_regression(B, n, d, condition_number=kappa, generator=generator,
                                        dtype=torch.float64)
        out.append((task.X, task.y, dtype))
    return out


def check_gd_residual_update(fn: Callable, *, device=None) -> None:
    r"""Check gradient descent as one attention layer: ``fn(X, r, lr)`` must return the residuals
    after one more step, ``r_i − (lr/n) Σ_j r_j ⟨x_j, x_i⟩``.

    With ``r = y − Xw_t`` the residuals of gradient descent's iterate ``w_t`` on
    ``L(w) = (1/2n)‖y − Xw‖²``, the step ``w_{t+1} = w_t + (lr/n) Xᵀr`` changes them to
    ``r − (lr/n) XXᵀr``: a value (``r_j``) times a key–query product (``⟨x_j, x_i⟩``), summed
    over the tokens ``j``.

    Parameters
    ----------
    fn : callable
        ``fn(X, r, lr) -> Tensor of shape (B, n)`` for ``X`` of shape ``(B, n, d)``, residuals
        ``r`` of shape ``(B, n)`` and a float ``lr``.
    device : str or torch.device, optional
        Where the cases live (default CPU).

    Raises
    ------
    ExerciseError
        On the first case answered wrongly, saying what is wrong (the 1/n missing, the step
        uphill, the change instead of the new residuals, each residual updated with itself
        only, ...).

    Notes
    -----
    The cases are the residuals ``y − Xw_t`` (``t`` = 0 to 3) of the iterates of
    :func:`tfnewton.algorithms.gradient_descent_least_squares` with a step ``lr`` between
    0.5 and 1.5 times ``1/λ_max(XᵀX/n)``; the reference is ``y − Xw_{t+1}``. Prompts of
    :func:`tfnewton.tasks.sample_linear_regression` (``κ(Σ)`` from 1 to 100), batches of 1
    to 6; four cases in float64 and one in float32.
    """
    from .algorithms import gradient_descent_least_squares

    device = check_device(device)
    generator = torch.Generator().manual_seed(61)
    shapes = ((4, 12, 3, 1.0, torch.float64), (1, 8, 5, 10.0, torch.float64),
              (6, 20, 4, 100.0, torch.float64), (3, 5, 7, 10.0, torch.float64),
              (2, 16, 3, 10.0, torch.float32))
    cases = []
    for (X, y, dtype), t in zip(_least_squares_cases(generator, shapes), (0, 1, 3, 2, 1)):
        n = X.shape[1]
        top = torch.linalg.eigvalsh(X.mT @ X / n)[:, -1].max()
        lr = float(0.5 + torch.rand((), generator=generator, dtype=torch.float64)) / float(top)
        w = gradient_descent_least_squares(X, y, t + 1, lr=lr)  # (t + 2, B, d)
        r_t, r_next = (y - (X @ w[s].unsqueeze(-1)).squeeze(-1) for s in (t, t + 1))
        X, r_t, r_next = (v.to(device=device, dtype=dtype) for v in (X, r_t, r_next))
        cases.append(((X, r_t, lr), r_next))

    def change(X, r, lr):
        return (X @ (X.mT @ r.unsqueeze(-1))).squeeze(-1) * lr / X.shape[1]  # (lr/n) XXᵀr

    check_function(
        fn,
        cases,
        name="gd_residual_update",
        known_mistakes={
            "the update lacks its 1/n: the loss is the mean (1/2n)‖y − Xw‖², so each step moves the "
            "residuals by (lr/n) Σ_j r_j ⟨x_j, x_i⟩":
                lambda X, r, lr: r - change(X, r, lr) * X.shape[1],
            "the residuals move uphill (r + (lr/n) XXᵀr): a gradient step makes them smaller, "
            "r − (lr/n) XXᵀr":
                lambda X, r, lr: r + change(X, r, lr),
            "you return the change −(lr/n) XXᵀr; the layer adds it to the residuals it read "
            "(a residual connection), so return r − (lr/n) XXᵀr":
                lambda X, r, lr: -change(X, r, lr),
            "each residual is updated with itself only ((lr/n)‖x_i‖² r_i): every token j contributes "
            "r_j ⟨x_j, x_i⟩, the attention sum over all keys":
                lambda X, r, lr: r - lr / X.shape[1] * (X * X).sum(-1) * r,
        },
    )


def check_newton_least_squares_iterate(fn: Callable, *, device=None) -> None:
    r"""Check Iterative Newton for least squares: ``fn(X, y, steps)`` must return ``w_steps``.

    ``S = XᵀX``, ``M₀ = αS`` with ``α = 1/λ_max(S)²``, ``M_{k+1} = 2M_k − M_k S M_k`` and
    ``w_k = M_k Xᵀy``, for every prompt of the batch.

    Parameters
    ----------
    fn : callable
        ``fn(X, y, steps) -> Tensor of shape (B, d)`` for ``X`` of shape ``(B, n, d)``, ``y``
        of shape ``(B, n)`` and an int ``steps >= 0``.
    device : str or torch.device, optional
        Where the cases live (default CPU).

    Raises
    ------
    ExerciseError
        On the first case answered wrongly, saying what is wrong (one step too few or too
        many, the start ``M₀ = αI``, ``α`` from the Frobenius norm, ...).

    Notes
    -----
    The reference is :func:`tfnewton.algorithms.newton_least_squares` (its default
    ``α``). Prompts of :func:`tfnewton.tasks.sample_linear_regression` with ``κ(Σ)`` from
    1 to 100, ``steps`` from 0 to 5 (before convergence, so the iterates still differ),
    batches of 1 to 6; five cases in float64 and one in float32.
    """
    from .algorithms import least_squares, newton_least_squares

    device = check_device(device)
    generator = torch.Generator().manual_seed(62)
    shapes = ((4, 12, 3, 10.0, torch.float64), (1, 8, 5, 1.0, torch.float64),
              (6, 20, 4, 100.0, torch.float64), (3, 9, 6, 10.0, torch.float64),
              (2, 7, 2, 100.0, torch.float64), (5, 16, 3, 10.0, torch.float32))
    cases = []
    for (X, y, dtype), steps in zip(_least_squares_cases(generator, shapes), (2, 3, 5, 1, 0, 3)):
        expected = newton_least_squares(X, y, steps)[steps]
        cases.append(((X.to(device=device, dtype=dtype), y.to(device=device, dtype=dtype), steps),
                      expected.to(device=device, dtype=dtype)))

    def from_identity(X, y, steps):
        S = X.mT @ X
        M = torch.eye(S.shape[-1], dtype=X.dtype, device=X.device) / torch.linalg.eigvalsh(S)[:, -1, None, None] ** 2
        for _ in range(steps):
            M = 2 * M - M @ S @ M
        return (M @ (X.mT @ y.unsqueeze(-1))).squeeze(-1)

    def frobenius(X, y, steps):
        S = X.mT @ X
        return newton_least_squares(X, y, steps, alpha=1 / torch.linalg.matrix_norm(S) ** 2)[steps]

    check_function(
        fn,
        cases,
        name="newton_least_squares_iterate",
        known_mistakes={
            "you take one step too few (w_k comes after k updates of M, starting from M₀)":
                lambda X, y, steps: newton_least_squares(X, y, steps - 1)[steps - 1],
            "you take one step too many (w₀ = M₀Xᵀy comes before any update of M)":
                lambda X, y, steps: newton_least_squares(X, y, steps + 1)[steps + 1],
            "the start is M₀ = αI; Iterative Newton starts from M₀ = αS (Newton–Schulz's αAᵀ for A = S)":
                from_identity,
            "α comes from the Frobenius norm, 1/‖S‖_F²; the chapter's α is 1/λ_max(S)², the spectral norm":
                frobenius,
            "you return the least-squares solution w⋆ = S⁻¹Xᵀy, the limit; the exercise asks for the "
            "iterate w_k after k = steps Newton steps":
                lambda X, y, steps: least_squares(X, y),
        },
    )


def check_gd_least_squares_iterate(fn: Callable, *, device=None) -> None:
    r"""Check gradient descent for least squares with its step from the spectrum: ``fn(X, y, steps)``
    must return ``w_steps``.

    ``w₀ = 0``, ``w_{t+1} = w_t − η (1/n) Xᵀ(Xw_t − y)`` with ``η = 1/λ_max(XᵀX/n)``, chosen for
    every prompt of the batch from its own spectrum.

    Parameters
    ----------
    fn : callable
        ``fn(X, y, steps) -> Tensor of shape (B, d)`` for ``X`` of shape ``(B, n, d)``, ``y``
        of shape ``(B, n)`` and an int ``steps >= 1``.
    device : str or torch.device, optional
        Where the cases live (default CPU).

    Raises
    ------
    ExerciseError
        On the first case answered wrongly, saying what is wrong (the step from ``XᵀX``
        without its ``1/n``, the boundary step ``2/λ_max``, one step for the whole batch, a
        summed gradient, one step too few, ...).

    Notes
    -----
    The reference is :func:`tfnewton.algorithms.gradient_descent_least_squares` (its default
    step). Prompts of :func:`tfnewton.tasks.sample_linear_regression` with ``κ(Σ)`` from 1 to
    100, ``steps`` from 1 to 6, batches of 1 to 6; four cases in float64 and one in float32.
    """
    from .algorithms import gradient_descent_least_squares

    device = check_device(device)
    generator = torch.Generator().manual_seed(63)
    shapes = ((4, 12, 3, 10.0, torch.float64), (1, 8, 5, 1.0, torch.float64),
              (6, 20, 4, 100.0, torch.float64), (3, 9, 6, 10.0, torch.float64),
              (5, 16, 3, 10.0, torch.float32))
    cases = []
    for (X, y, dtype), steps in zip(_least_squares_cases(generator, shapes), (3, 2, 6, 1, 4)):
        expected = gradient_descent_least_squares(X, y, steps)[steps]
        cases.append(((X.to(device=device, dtype=dtype), y.to(device=device, dtype=dtype), steps),
                      expected.to(device=device, dtype=dtype)))

    def with_step(step):
        return lambda X, y, steps: gradient_descent_least_squares(X, y, steps, lr=step(X))[steps]

    def top(X):
        return torch.linalg.eigvalsh(X.mT @ X / X.shape[1])[:, -1]

    check_function(
        fn,
        cases,
        name="gd_least_squares_iterate",
        known_mistakes={
            "the step is 1/λ_max(XᵀX), n times too small: the loss is the mean over the n points, "
            "whose Hessian is XᵀX/n, so η = 1/λ_max(XᵀX/n)":
                with_step(lambda X: 1 / (top(X) * X.shape[1])),
            "the step is 2/λ_max(XᵀX/n), the edge of the stable range, where the top direction "
            "oscillates and never shrinks; take η = 1/λ_max(XᵀX/n)":
                with_step(lambda X: 2 / top(X)),
            "you use one step size for the whole batch (from the largest λ_max of all prompts); "
            "each prompt takes its own, 1/λ_max of its own XᵀX/n":
                with_step(lambda X: 1 / top(X).max()),
            "the gradient sums over the n points (Xᵀ(Xw − y)) while the step is 1/λ_max(XᵀX/n): "
            "the mean loss's gradient is (1/n) Xᵀ(Xw − y)":
                with_step(lambda X: X.shape[1] / top(X)),
            "you take one step too few (the loop runs steps − 1 times)":
                lambda X, y, steps: gradient_descent_least_squares(X, y, steps - 1)[steps - 1],
        },
    )


# ---------------------------------------------------------------------- probing your model
def _ridge_r2_variant(F_fit, t_fit, F_test, t_test, penalty, *, unbiased=True, standardize=True,
                      test_stats=False, intercept=True, in_sample=False):
    """Held-out R² of a hand-written ridge probe, with the mistakes of :func:`check_held_out_r2`."""
    N = F_fit.shape[1]
    mean = F_fit.mean(1, keepdim=True)
    scale = F_fit.std(1, keepdim=True, correction=1 if unbiased else 0)
    if test_stats:
        test_mean, test_scale = F_test.mean(1, keepdim=True), F_test.std(1, keepdim=True)
    else:
        test_mean, test_scale = mean, scale
    if standardize:
        Z, Z_test = (F_fit - mean) / scale, (F_test - test_mean) / test_scale
    else:  # centred (the intercept needs that) but not scaled
        Z, Z_test = F_fit - mean, F_test - mean
    t_mean = t_fit.mean(1, keepdim=True) if intercept else torch.zeros_like(t_fit[:, :1])
    P = Z.shape[-1]
    eye = torch.eye(P, dtype=Z.dtype, device=Z.device)
    W = torch.linalg.solve(Z.mT @ Z + N * penalty * eye, Z.mT @ (t_fit - t_mean).unsqueeze(-1))
    if in_sample:
        Z_test, t_test = Z, t_fit
    pred = (Z_test @ W).squeeze(-1) + t_mean
    sse = ((pred - t_test) ** 2).sum(1)
    sst = ((t_test - t_test.mean(1, keepdim=True)) ** 2).sum(1)
    return 1 - sse / sst


def check_held_out_r2(fn: Callable, *, device=None) -> None:
    r"""Check a ridge probe scored on held-out problems: ``fn(F_fit, t_fit, F_test, t_test, penalty)``
    must return the held-out R² of the ridge probe fit on the first two.

    The probe (as :class:`tfnewton.ridge.RidgeProbe` fits it): standardize each feature with the
    fit problems' mean and standard deviation (``.std()``, which divides by ``N − 1``), minimize
    ``(1/N)‖t − t̄ − ZW‖² + λ‖W‖²`` over ``W`` (``t̄`` the fit targets' mean, the intercept),
    predict the test problems with the same mean, scale, ``W`` and ``t̄``, and score
    ``R² = 1 − Σ(pred − t)²/Σ(t − mean(t))²`` on them.

    Parameters
    ----------
    fn : callable
        ``fn(F_fit, t_fit, F_test, t_test, penalty) -> Tensor of shape (B,)`` for features
        ``F_fit (B, N, P)`` and ``F_test (B, M, P)``, targets ``t_fit (B, N)`` and
        ``t_test (B, M)`` and a float ``penalty`` ``λ >= 0``: ``B`` independent probes (for
        instance one per layer), each its own R².
    device : str or torch.device, optional
        Where the cases live (default CPU).

    Raises
    ------
    ExerciseError
        On the first case answered wrongly, saying what is wrong (scored on the fit problems,
        features not standardized, the test problems standardized with their own statistics,
        ``λ`` not scaled by ``N``, no intercept, the population standard deviation, ...).

    Notes
    -----
    The reference is :class:`tfnewton.ridge.RidgeProbe` with the single penalty ``λ``, fit on
    each probe's fit problems and scored (:meth:`~tfnewton.ridge.RidgeProbe.score`) on its test
    problems. Features are a noisy linear image of the target with an offset and unequal
    scales, ``P`` from 3 to 12 against ``N`` from 20 to 60, so the in-sample R² is visibly
    higher than the held-out one; four cases in float64 and one in float32.
    """
    from .ridge import RidgeProbe

    device = check_device(device)
    generator = torch.Generator().manual_seed(64)
    cases = []
    for B, N, M, P, penalty, dtype in ((3, 30, 40, 8, 0.05, torch.float64), (1, 20, 25, 6, 0.3, torch.float64),
                                       (4, 60, 50, 12, 0.01, torch.float64), (2, 25, 30, 3, 1.0, torch.float64),
                                       (3, 40, 30, 10, 0.1, torch.float32)):
        def draw(count):
            z = torch.randn(B, count, generator=generator, dtype=torch.float64)
            noise = torch.randn(B, count, P, generator=generator, dtype=torch.float64)
            return z, z.unsqueeze(-1) * mix.unsqueeze(1) + noise * spread.unsqueeze(1) + offset.unsqueeze(1)

        mix = torch.randn(B, P, generator=generator, dtype=torch.float64)
        spread = 0.5 + 2 * torch.rand(B, P, generator=generator, dtype=torch.float64)
        offset = 3 * torch.randn(B, P, generator=generator, dtype=torch.float64)
        (z_fit, F_fit), (z_test, F_test) = draw(N), draw(M)
        t_fit, t_test = 2 + z_fit, 2 + z_test  # an offset: a probe without intercept is far off
        expected = []
        for b in range(B):
            one_validation_problem = torch.zeros(N, dtype=torch.bool)
            one_validation_problem[0] = True  # one candidate penalty: nothing to choose, refit on all
            probe = RidgeProbe([penalty]).fit(F_fit[b], t_fit[b], validation=one_validation_problem)
            expected.append(probe.score(F_test[b], t_test[b]))
        args = tuple(v.to(device=device, dtype=dtype) for v in (F_fit, t_fit, F_test, t_test)) + (penalty,)
        cases.append((args, torch.stack(expected).to(device=device, dtype=dtype)))

    def variant(**mistake):
        return lambda *args: _ridge_r2_variant(*args, **mistake)

    check_function(
        fn,
        cases,
        name="held_out_r2",
        known_mistakes={
            "you score the probe on the problems it was fit on (in-sample R²); a probe's R² means "
            "something only on problems it never saw, F_test and t_test":
                variant(in_sample=True),
            "the features are not standardized: subtract the fit problems' mean and divide by their "
            "standard deviation first (the penalty λ assumes features of scale 1)":
                variant(standardize=False),
            "the test features are standardized with their own mean and scale; a probe applies the "
            "fit problems' statistics to every new problem":
                variant(test_stats=True),
            "the penalty is not scaled by N: the probe minimizes (1/N)‖t − t̄ − ZW‖² + λ‖W‖², i.e. "
            "solves (ZᵀZ + NλI) W = Zᵀ(t − t̄)":
                lambda F, t, Ft, tt, lam: _ridge_r2_variant(F, t, Ft, tt, lam / F.shape[1]),
            "the probe has no intercept: centre the targets with the fit problems' mean t̄ and add "
            "it back to every prediction":
                variant(intercept=False),
            "you standardize with the population standard deviation (÷N); the probe uses .std(), "
            "which divides by N − 1":
                variant(unbiased=False),
        },
    )


def check_best_matching_step(fn: Callable, *, device=None) -> None:
    r"""Check Fu et al.'s matching of layers to steps: ``fn(preds, algo, y, steps)`` must return,
    for every predictor (layer), the step whose predictions are most similar to its own.

    Similarity is :func:`tfnewton.metrics.similarity_of_errors` (the cosine of the two residual
    vectors of a prompt, averaged over the prompts); the best step is the one with the highest
    average, one step for all prompts.

    Parameters
    ----------
    fn : callable
        ``fn(preds, algo, y, steps) -> Tensor of shape (L,)`` for ``preds`` of shape
        ``(L, B, n)`` (``L`` predictors, e.g. the read-outs of ``L`` layers), the algorithm's
        answers ``algo`` of shape ``(S, B, n)`` (one row per step tried), labels ``y (B, n)``
        and the steps tried, ``steps``, a tensor of shape ``(S,)`` in the inputs' dtype;
        returns the chosen steps (values, not row indices) in that dtype.
    device : str or torch.device, optional
        Where the cases live (default CPU).

    Raises
    ------
    ExerciseError
        On the first case answered wrongly, saying what is wrong (the worst step, the row
        index instead of the step, a step per prompt averaged, predictions compared instead of
        residuals, the best similarity instead of its step, ...).

    Notes
    -----
    The reference is :func:`tfnewton.metrics.similarity_of_errors` for every pair of predictor
    and step, and :func:`tfnewton.metrics.best_matching` for the choice. The algorithms'
    answers are :func:`tfnewton.algorithms.prefix_predictions` of Iterative Newton (steps
    ``0, 1, …``) or gradient descent (powers of two); the predictors mix two steps with noise.
    ``L ≠ S``; four cases in float64 and one in float32.
    """
    from .algorithms import prefix_predictions
    from .metrics import best_matching, similarity_of_errors

    device = check_device(device)
    generator = torch.Generator().manual_seed(67)
    shapes = ((6, 11, 3, 1.0, torch.float64), (8, 9, 4, 10.0, torch.float64),
              (5, 13, 2, 10.0, torch.float64), (10, 16, 5, 100.0, torch.float64),
              (6, 11, 3, 10.0, torch.float32))
    cases = []
    for (X, y, dtype), (L, name) in zip(_least_squares_cases(generator, shapes),
                                        ((4, "newton"), (1, "gd"), (5, "newton"), (3, "gd"), (2, "newton"))):
        steps = list(range(9)) if name == "newton" else [1, 2, 4, 8, 16, 32, 64]
        algo = prefix_predictions(name, X, y, steps[-1])[steps]  # (S, B, n)
        pick = torch.randint(0, len(steps), (2, L), generator=generator)
        share = torch.rand(L, 1, 1, generator=generator, dtype=torch.float64)
        noise = 0.3 * torch.randn(L, *y.shape, generator=generator, dtype=torch.float64) * y.std()
        preds = share * algo[pick[0]] + (1 - share) * algo[pick[1]] + noise
        similarity = similarity_of_errors(preds[:, None], algo[None], y)  # (L, S)
        expected = torch.tensor([step for step, _ in best_matching(similarity, steps)], dtype=dtype)
        args = tuple(v.to(device=device, dtype=dtype) for v in (preds, algo, y)) + (
            torch.tensor(steps, dtype=dtype, device=device),)
        cases.append((args, expected.to(device)))

    def cosines(preds, algo, y, residuals=True):  # (L, S, B)
        a, b = (preds - y, algo - y) if residuals else (preds, algo)
        a, b = a[:, None], b[None]
        return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))

    check_function(
        fn,
        cases,
        name="best_matching_step",
        known_mistakes={
            "you choose the step with the lowest similarity; the best-matching step has the highest":
                lambda p, a, y, steps: steps[cosines(p, a, y).mean(-1).argmin(-1)],
            "you return the row index of the best step; return the step itself, steps[index]":
                lambda p, a, y, steps: cosines(p, a, y).mean(-1).argmax(-1).to(steps.dtype),
            "you choose a step for each prompt and average those steps; the protocol chooses one "
            "step for all prompts, the one with the highest mean similarity":
                lambda p, a, y, steps: steps[cosines(p, a, y).argmax(1)].mean(-1),
            "you compare the predictions themselves; the similarity compares residuals (prediction − y)":
                lambda p, a, y, steps: steps[cosines(p, a, y, residuals=False).mean(-1).argmax(-1)],
            "you return the best similarity; return the step at which it is reached":
                lambda p, a, y, steps: cosines(p, a, y).mean(-1).max(-1).values,
        },
    )


def check_newton_gd_gap(fn: Callable, *, device=None) -> None:
    r"""Check the Newton-versus-GD gap of a predictor: ``fn(preds, newton, gd, y)`` must return, for
    each predictor, its best similarity of errors with Iterative Newton minus its best with GD.

    For predictor ``ℓ`` (a layer's read-out, or the model's output) the similarity with step ``s``
    of an algorithm is :func:`tfnewton.metrics.similarity_of_errors` averaged over the prompts;
    the best step is the one with the highest average (one step for all prompts), and the gap is
    ``max_s sim(ℓ, Newton_s) − max_s sim(ℓ, GD_s)``: positive when the predictor is closer to
    Newton.

    Parameters
    ----------
    fn : callable
        ``fn(preds, newton, gd, y) -> Tensor of shape (L,)`` for ``preds`` of shape ``(L, B, n)``
        (``L`` predictors), the algorithms' answers ``newton (S1, B, n)`` and ``gd (S2, B, n)``
        (one row per step tried) and labels ``y (B, n)``.
    device : str or torch.device, optional
        Where the cases live (default CPU).

    Raises
    ------
    ExerciseError
        On the first case answered wrongly, saying what is wrong (the best step chosen per
        prompt, an average over steps, the last step only, predictions compared instead of
        residuals, the size of the gap without its sign, ...).

    Notes
    -----
    The reference is :func:`tfnewton.metrics.similarity_of_errors` for every pair of predictor
    and step, maximized over the steps (:func:`tfnewton.separation.newton_gd_gap` computes the
    same gap from the prompts, running the algorithms itself). The algorithms' answers are
    :func:`tfnewton.algorithms.prefix_predictions` of Iterative Newton (steps 0 to 6) and
    gradient descent (steps 1 to 64, doubling); the predictors mix a Newton step and a GD step
    with noise, so some are closer to one algorithm and some to the other. ``L`` from 1 to 5;
    four cases in float64 and one in float32.
    """
    from .algorithms import prefix_predictions
    from .metrics import similarity_of_errors

    device = check_device(device)
    generator = torch.Generator().manual_seed(66)
    shapes = ((6, 11, 3, 1.0, torch.float64), (8, 9, 4, 10.0, torch.float64),
              (5, 13, 2, 10.0, torch.float64), (10, 16, 5, 100.0, torch.float64),
              (6, 11, 3, 10.0, torch.float32))
    gd_steps = [1, 2, 4, 8, 16, 32, 64]
    cases = []
    for (X, y, dtype), L in zip(_least_squares_cases(generator, shapes), (4, 1, 5, 3, 4)):
        newton = prefix_predictions("newton", X, y, 6)  # (7, B, n)
        gd = prefix_predictions("gd", X, y, gd_steps[-1])[gd_steps]  # (7, B, n)
        pick = torch.randint(0, 7, (2, L), generator=generator)
        share = torch.rand(L, 1, 1, generator=generator, dtype=torch.float64)
        noise = 0.3 * torch.randn(L, *y.shape, generator=generator, dtype=torch.float64)
        preds = share * newton[pick[0]] + (1 - share) * gd[pick[1]] + noise * y.std()
        expected = (similarity_of_errors(preds[:, None], newton[None], y).max(-1).values
                    - similarity_of_errors(preds[:, None], gd[None], y).max(-1).values)
        args = tuple(v.to(device=device, dtype=dtype) for v in (preds, newton, gd, y))
        cases.append((args, expected.to(device=device, dtype=dtype)))

    def table(preds, algo, y, reduction="mean"):
        residual = (preds - y)[:, None], (algo - y)[None]  # (L, 1, B, n), (1, S, B, n)
        cosine = (residual[0] * residual[1]).sum(-1) / (residual[0].norm(dim=-1) * residual[1].norm(dim=-1))
        return cosine.mean(-1) if reduction == "mean" else cosine  # (L, S) or (L, S, B)

    def gap(best):
        return lambda p, a, b, y: best(table(p, a, y), p, a, y) - best(table(p, b, y), p, b, y)

    def raw_cosine(p, algo, y):
        c = (p[:, None] * algo[None]).sum(-1) / (p[:, None].norm(dim=-1) * algo[None].norm(dim=-1))
        return c.mean(-1).max(-1).values

    check_function(
        fn,
        cases,
        name="newton_gd_gap",
        known_mistakes={
            "you choose the best step for each prompt separately and then average; the protocol "
            "chooses one step for all prompts (the highest average similarity)":
                lambda p, a, b, y: (table(p, a, y, "none").max(1).values.mean(-1)
                                    - table(p, b, y, "none").max(1).values.mean(-1)),
            "you average the similarity over the steps; take the best step of each algorithm (the maximum)":
                gap(lambda sim, *_: sim.mean(-1)),
            "you compare with the last step of each algorithm only; take the best step (the maximum "
            "over the steps tried)":
                gap(lambda sim, *_: sim[:, -1]),
            "you compare the predictions themselves; the metric compares the residuals (prediction − y)":
                lambda p, a, b, y: raw_cosine(p, a, y) - raw_cosine(p, b, y),
            "you return the size of the gap without its sign; the sign says which algorithm is closer "
            "(positive: Newton)":
                lambda p, a, b, y: (table(p, a, y).max(-1).values - table(p, b, y).max(-1).values).abs(),
        },
    )


# ---------------------------------------------------------------------- logistic regression


def _loss_derivative_reference(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``∂/∂z_i log(1 + exp(−y_i z_i))`` by autograd through :func:`~tfnewton.algorithms.logistic_loss`.

    With inputs ``x_i = e_i`` (``X = I``) the logits are the weights, ``z_i = x_iᵀw = w_i``,
    so ``n(∇f(w) − μw)`` holds the derivative of each example's loss.
    """
    B, n = z.shape
    eye = torch.eye(n, dtype=torch.float64).expand(B, n, n)
    mu = 1e-30
    w = z.detach().double().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(logistic_loss(eye, y.double(), w, mu).sum(), w)
    return n * (grad - mu * w.detach())


def check_loss_derivative(fn: Callable, *, device=None) -> None:
    r"""Check the loss derivative: ``fn(z, y)`` must return ``σ(z) − (1 + y)/2``.

    That is ``∂/∂z log(1 + exp(−yz)) = −y σ(−yz)`` for labels ``y = ±1``, elementwise.

    Parameters
    ----------
    fn : callable
        ``fn(z, y) -> Tensor of shape (B, n)`` for logits ``z`` and labels ``y`` (±1) of shape
        ``(B, n)``, in the inputs' dtype and on their device.
    device : str or torch.device, optional
        Where the cases live (default CPU).

    Raises
    ------
    ExerciseError
        On the first case answered wrongly, saying what is wrong (labels taken as 0/1, a
        missing factor −y, the sigmoid's argument of the wrong sign, the loss instead of its
        derivative, the second derivative, ...).

    Notes
    -----
    The reference differentiates :func:`tfnewton.algorithms.logistic_loss` by autograd.
    Logits ``N(0, 3²)`` (one case up to ±30, where σ saturates), batches of 1 to 4, three
    cases in float64 and one in float32.
    """
    device = check_device(device)
    generator = torch.Generator().manual_seed(16)
    cases = []
    for B, n, scale, dtype in ((4, 8, 3.0, torch.float64), (1, 5, 3.0, torch.float64),
                               (2, 16, 10.0, torch.float64), (3, 6, 3.0, torch.float32)):
        z = scale * torch.randn(B, n, generator=generator, dtype=torch.float64)
        y = torch.where(torch.rand(B, n, generator=generator, dtype=torch.float64) < 0.5, -1.0, 1.0)
        y = y.to(torch.float64)
        expected = _loss_derivative_reference(z, y)
        z, y, expected = (t.to(device=device, dtype=dtype) for t in (z, y, expected))
        cases.append(((z, y), expected))
    check_function(
        fn,
        cases,
        name="loss_derivative",
        known_mistakes={
            "you treat the labels as 0/1 (σ(z) − y); with labels ±1 the target is (1 + y)/2, "
            "so the derivative is σ(z) − (1 + y)/2":
                lambda z, y: torch.sigmoid(z) - y,
            "the factor −y is missing: the derivative of log(1 + e^(−yz)) is −y·σ(−yz), not σ(−yz)":
                lambda z, y: torch.sigmoid(-y * z),
            "the sigmoid's argument has the wrong sign: the derivative is −y·σ(−yz), not −y·σ(yz)":
                lambda z, y: -y * torch.sigmoid(y * z),
            "you return the loss log(1 + e^(−yz)) itself, not its derivative":
                lambda z, y: torch.nn.functional.softplus(-y * z),
            "you return σ(z)(1 − σ(z)), the second derivative (the Hessian's weight), not the first":
                lambda z, y: torch.sigmoid(z) * (1 - torch.sigmoid(z)),
        },
    )


def _gradient_and_hessian(X, y, w, mu, *, mean=True, mu_in_g=True, mu_in_H=True):
    """g and H of the regularized logistic loss, with optional mistakes (for the checkers' messages)."""
    n, d = X.shape[-2:]
    scale = 1.0 / n if mean else 1.0
    z = (X @ w.unsqueeze(-1)).squeeze(-1)
    s = torch.sigmoid(z)
    c = s - (1 + y) / 2
    g = scale * (X.mT @ c.unsqueeze(-1)).squeeze(-1) + (mu * w if mu_in_g else 0.0)
    eye = torch.eye(d, dtype=X.dtype, device=X.device)
    H = scale * (X.mT * (s * (1 - s)).unsqueeze(-2)) @ X + (mu * eye if mu_in_H else 0.0)
    return g, H


def _newton_direction_of(X, y, w, mu):
    g, H = _gradient_and_hessian(X, y, w, mu)
    return torch.linalg.solve(H, g.unsqueeze(-1)).squeeze(-1)


def _quadratic_form(g, H, invert=True):
    v = torch.linalg.solve(H, g.unsqueeze(-1)).squeeze(-1) if invert else (H @ g.unsqueeze(-1)).squeeze(-1)
    return (g * v).sum(-1)


def _logistic_cases(generator):
    """Prompts, labels, points w and μ for the logistic checkers: ((X, y, w, mu), dtype) pairs, in float64."""
    out = []
    for B, n, d, mu, dtype in ((4, 16, 3, 0.1, torch.float64), (1, 8, 2, 0.01, torch.float64),
                               (8, 26, 5, 0.01, torch.float64), (3, 12, 4, 1.0, torch.float64),
                               (2, 10, 3, 0.1, torch.float32)):
        task = sample_logistic_regression(B, n, d, generator=generator, dtype=torch.float64)
        # a point that is neither 0 nor the minimizer, so every term of g and H matters
        w = torch.randn(B, d, generator=generator, dtype=torch.float64) * (0.5 + 2.0 * torch.rand(
            B, 1, generator=generator, dtype=torch.float64))
        out.append(((task.X, task.y, w, mu), dtype))
    return out


def _to(args, device, dtype):
    return tuple(a.to(device=device, dtype=dtype) if isinstance(a, torch.Tensor) else a for a in args)


def check_newton_decrement(fn: Callable, *, device=None) -> None:
    r"""Check the Newton decrement: ``fn(X, y, w, mu)`` must return ``λ(w) = √(gᵀH⁻¹g)``.

    ``g`` and ``H`` are the gradient and Hessian of
    ``f(w) = (1/n) Σ log(1 + exp(−y_i x_iᵀw)) + (μ/2)‖w‖²``.

    Parameters
    ----------
    fn : callable
        ``fn(X, y, w, mu) -> Tensor of shape (B,)`` for ``X`` of shape ``(B, n, d)``, labels
        ``y`` (±1) of shape ``(B, n)``, ``w`` of shape ``(B, d)`` and a float ``mu``.
    device : str or torch.device, optional
        Where the cases live (default CPU).

    Raises
    ------
    ExerciseError
        On the first case answered wrongly, saying what is wrong (λ² instead of λ, ``H`` not
        inverted, the length of the Newton step, a missing ``μw``, ``μI`` or ``1/n``, ...).

    Notes
    -----
    Prompts of :func:`tfnewton.tasks.sample_logistic_regression` (``‖x_i‖ ≤ 1``) with
    ``μ ∈ {1, 0.1, 0.01}`` at random points ``w``; the reference is
    :func:`tfnewton.algorithms.newton_decrement_logistic`. Four cases in float64, one in float32.
    """
    device = check_device(device)
    generator = torch.Generator().manual_seed(17)
    cases = []
    for args, dtype in _logistic_cases(generator):
        expected = newton_decrement_logistic(*args)
        args, expected = _to(args, device, dtype), expected.to(device=device, dtype=dtype)
        cases.append((args, expected))

    def mistake(**options):
        return lambda X, y, w, mu: _quadratic_form(*_gradient_and_hessian(X, y, w, mu, **options)).sqrt()

    check_function(
        fn,
        cases,
        name="newton_decrement",
        known_mistakes={
            "you return λ(w)² = gᵀH⁻¹g; the decrement is its square root":
                lambda X, y, w, mu: _quadratic_form(*_gradient_and_hessian(X, y, w, mu)),
            "the Hessian is not inverted: you compute √(gᵀHg); the decrement is √(gᵀH⁻¹g)":
                lambda X, y, w, mu: _quadratic_form(*_gradient_and_hessian(X, y, w, mu), invert=False).sqrt(),
            "you return ‖H⁻¹g‖, the Euclidean length of the Newton step; the decrement is its length in "
            "the Hessian's norm, √(gᵀH⁻¹g)":
                lambda X, y, w, mu: _newton_direction_of(X, y, w, mu).norm(dim=-1),
            "the gradient lacks the regularization term μw (g = (1/n) Σ c_i x_i + μw)": mistake(mu_in_g=False),
            "the Hessian lacks the regularization term μI (H = (1/n) Σ σ'(z_i) x_i x_iᵀ + μI)": mistake(mu_in_H=False),
            "you sum over the examples where the loss averages: g and H need their 1/n": mistake(mean=False),
        },
    )


def _damped_step_with(X, y, w, mu, factor):
    g, _ = _gradient_and_hessian(X, y, w, mu)
    v = _newton_direction_of(X, y, w, mu)
    lam = (g * v).sum(-1).clamp(min=0).sqrt()
    return w - factor(lam, mu).unsqueeze(-1) * v


def check_damped_newton_step(fn: Callable, *, device=None) -> None:
    r"""Check one damped Newton step: ``fn(X, y, w, mu)`` must return ``w − (2√μ/(2√μ + λ(w))) H⁻¹g``.

    Parameters
    ----------
    fn : callable
        ``fn(X, y, w, mu) -> Tensor of shape (B, d)`` for ``X`` of shape ``(B, n, d)``, labels
        ``y`` (±1) of shape ``(B, n)``, ``w`` of shape ``(B, d)`` and a float ``mu``.
    device : str or torch.device, optional
        Where the cases live (default CPU).

    Raises
    ------
    ExerciseError
        On the first case answered wrongly, saying what is wrong (a full Newton step, the
        damping constant of the other convention, λ² in the damping, a step uphill, a gradient
        step, ...).

    Notes
    -----
    The reference is step 1 of :func:`tfnewton.algorithms.damped_newton_logistic` started at
    ``w`` (``w0=w``), on the cases of :func:`check_newton_decrement`.
    """
    device = check_device(device)
    generator = torch.Generator().manual_seed(18)
    cases = []
    for args, dtype in _logistic_cases(generator):
        X, y, w, mu = args
        expected = damped_newton_logistic(X, y, mu, 1, w0=w)[1]
        cases.append((_to(args, device, dtype), expected.to(device=device, dtype=dtype)))

    def gradient_step(X, y, w, mu):
        g, H = _gradient_and_hessian(X, y, w, mu)
        lam = _quadratic_form(g, H).clamp(min=0).sqrt()
        return w - (2 * mu**0.5 / (2 * mu**0.5 + lam)).unsqueeze(-1) * g

    check_function(
        fn,
        cases,
        name="damped_newton_step",
        known_mistakes={
            "you take the full Newton step w − H⁻¹g; the damped step multiplies H⁻¹g by 2√μ/(2√μ + λ(w))":
                lambda X, y, w, mu: w - _newton_direction_of(X, y, w, mu),
            "the damping factor is √μ/(√μ + λ(w)), that is 1/(1 + M_f λ) with M_f = 1/√μ, the constant of the "
            "convention without the factor 2 (Giannou et al.'s); with Nesterov's |D³f[u,u,u]| ≤ 2M_f‖u‖³ the "
            "constant is M_f = 1/(2√μ) and the factor 2√μ/(2√μ + λ(w))":
                lambda X, y, w, mu: _damped_step_with(X, y, w, mu, lambda lam, mu: mu**0.5 / (mu**0.5 + lam)),
            "the damping factor uses λ(w)² where it needs λ(w): 2√μ/(2√μ + λ(w))":
                lambda X, y, w, mu: _damped_step_with(X, y, w, mu, lambda lam, mu: 2 * mu**0.5 / (2 * mu**0.5 + lam**2)),
            "the damping factor 1/(1 + λ(w)) has lost μ: it is 2√μ/(2√μ + λ(w))":
                lambda X, y, w, mu: _damped_step_with(X, y, w, mu, lambda lam, mu: 1 / (1 + lam)),
            "the step goes uphill (w + τH⁻¹g); Newton moves against the gradient, w − τH⁻¹g":
                lambda X, y, w, mu: 2 * w - _damped_step_with(X, y, w, mu, lambda lam, mu: 2 * mu**0.5 / (2 * mu**0.5 + lam)),
            "you step along the gradient g; the direction is the Newton direction H⁻¹g": gradient_step,
        },
    )


def check_relu_square(fn: Callable, *, device=None) -> None:
    r"""Check a ReLU square: ``fn(u, width)`` must return the ReLU interpolant of ``u²`` on ``[−1, 1]``.

    With ``width`` uniform knots ``t_k = −1 + 2k/(width − 1)`` (``k = 0, …, width − 1``), the
    interpolant is ``q̂(u) = 1 + Σ_k c_k relu(u − t_k)``, one ReLU unit per knot, with
    ``c_0 = s_0``, ``c_k = s_k − s_{k−1}``, ``c_{width−1} = −s_{width−2}`` and ``s_k`` the slope
    of the chord on ``[t_k, t_{k+1}]``. It equals ``u²`` at the knots and lies above it in between.

    Parameters
    ----------
    fn : callable
        ``fn(u, width) -> Tensor`` of ``u``'s shape, for ``u`` of shape ``(B, m)`` with entries in
        ``[−1, 1]`` and an int ``width >= 3``.
    device : str or torch.device, optional
        Where the cases live (default CPU).

    Raises
    ------
    ExerciseError
        On the first case answered wrongly, saying what is wrong (the exact square, one knot
        too many or too few, the constant term missing, ...).

    Notes
    -----
    The reference is ``tfnewton.approx.relu_approximation`` of ``u ↦ u²`` on ``(−1, 1)``
    with uniform knots. Widths 3 to 64; points drawn uniformly, and one case with the knots
    themselves; four cases in float64, one in float32.
    """
    device = check_device(device)
    generator = torch.Generator().manual_seed(19)

    def reference(u, width):
        approx = relu_approximation(lambda t: t * t, (-1.0, 1.0), width, name="square")
        return approx(u.double()).to(u.dtype)

    cases = []
    for B, m, width, dtype in ((4, 9, 5, torch.float64), (1, 7, 3, torch.float64), (3, 40, 17, torch.float64),
                               (5, 11, 9, torch.float64), (2, 50, 64, torch.float32)):
        u = 2 * torch.rand(B, m, generator=generator, dtype=torch.float64) - 1
        if width == 17:  # the knots themselves, where q̂ = u² exactly
            u[0, :17] = torch.linspace(-1.0, 1.0, 17, dtype=torch.float64)
        cases.append(((u.to(device=device, dtype=dtype), width), reference(u, width).to(device=device, dtype=dtype)))
    check_function(
        fn,
        cases,
        name="relu_square",
        known_mistakes={
            "you return the exact square u²; the exercise asks for its ReLU interpolant, which lies above u² "
            "between the knots (by up to h²/4, h = 2/(width − 1))":
                lambda u, width: u * u,
            "you use width + 1 knots (width pieces); width ReLU units are width knots and width − 1 pieces":
                lambda u, width: reference(u, width + 1),
            "you use width − 1 knots; width ReLU units are width knots, t_k = −1 + 2k/(width − 1)":
                lambda u, width: reference(u, width - 1),
            "the constant term is missing: q̂(u) = q(t₀) + Σ c_k relu(u − t_k), with q(t₀) = (−1)² = 1":
                lambda u, width: reference(u, width) - 1,
        },
    )


# --------------------------------------------------------------------------------------
# The trained classifier (chapter "Logistic regression, part 2: a trained classifier")
# --------------------------------------------------------------------------------------
def _classifier_prompts(generator, B: int, n: int, d: int, kappa) -> tuple[torch.Tensor, torch.Tensor]:
    task = sample_logistic_regression(B, n, d, condition_number=kappa, generator=generator, dtype=torch.float64)
    return task.X, task.y


def check_gd_logistic_logit(fn: Callable, *, device=None) -> None:
    r"""Check gradient descent's logit at a query: ``fn(X, y, x_query, mu, lr, steps)`` must return
    ``x_qᵀw_steps`` with ``w_{t+1} = w_t − lr·∇f(w_t)`` from ``w_0 = 0``.

    ``f(w) = (1/n) Σ_i log(1 + exp(−y_i x_iᵀw)) + (μ/2)‖w‖²``, whose gradient is
    ``(1/n) Σ_i (σ(x_iᵀw) − (y_i + 1)/2) x_i + μw``.

    Parameters
    ----------
    fn : callable
        ``fn(X, y, x_query, mu, lr, steps) -> Tensor of shape (B,)`` for ``X (B, n, d)``, labels
        ``y (B, n)`` (±1), ``x_query (B, d)``, floats ``mu`` and ``lr`` and an int ``steps``.
    device : str or torch.device, optional
        Where the cases live (default CPU).

    Raises
    ------
    ExerciseError
        On the first case answered wrongly, saying what is wrong (the gradient summed instead of
        averaged, μw forgotten, the ±1 labels used as probabilities, a step uphill, one step too
        few, ...).

    Notes
    -----
    The reference is the last iterate of :func:`tfnewton.algorithms.gradient_descent_logistic`
    with the given ``lr``, times the query. Prompts of
    :func:`tfnewton.tasks.sample_logistic_regression` (``κ`` from 1 to 50), batches of 1 to 6,
    ``n`` from 4 to 26; five cases in float64 and one in float32.
    """
    device = check_device(device)
    generator = torch.Generator().manual_seed(31)
    cases = []
    for B, n, d, kappa, mu, lr, steps, dtype in ((4, 10, 3, 1.0, 0.01, 4.0, 3, torch.float64),
                                                  (1, 6, 2, 10.0, 0.1, 2.0, 5, torch.float64),
                                                  (6, 26, 5, 50.0, 0.01, 6.0, 3, torch.float64),
                                                  (3, 4, 4, 10.0, 0.05, 1.5, 1, torch.float64),
                                                  (2, 15, 5, 1.0, 0.01, 3.0, 8, torch.float64),
                                                  (5, 12, 3, 50.0, 0.02, 4.0, 4, torch.float32)):
        X, y = _classifier_prompts(generator, B, n + 1, d, kappa)
        X, y, x_query = X[:, :n], y[:, :n], X[:, n]
        w = gradient_descent_logistic(X, y, mu, steps, lr=lr)[-1]
        expected = (w * x_query).sum(-1)
        args = tuple(t.to(device=device, dtype=dtype) for t in (X, y, x_query)) + (mu, lr, steps)
        cases.append((args, expected.to(device=device, dtype=dtype)))

    def variant(*, summed=False, no_mu=False, pm1=False, uphill=False, minus_one=False):
        def run(X, y, x_query, mu, lr, steps):
            n = X.shape[1]
            w = torch.zeros_like(x_query)
            for _ in range(steps - 1 if minus_one else steps):
                z = (X @ w.unsqueeze(-1)).squeeze(-1)
                c = torch.sigmoid(z) - (y if pm1 else (y + 1) / 2)
                g = (X.mT @ c.unsqueeze(-1)).squeeze(-1) / (1 if summed else n) + (0 if no_mu else mu) * w
                w = w + lr * g if uphill else w - lr * g
            return (w * x_query).sum(-1)
        return run

    check_function(
        fn,
        cases,
        name="gd_logistic_logit",
        known_mistakes={
            "the gradient sums over the n points; the loss is their mean, so divide by n": variant(summed=True),
            "the gradient lacks the regularization's μw": variant(no_mu=True),
            "the residual uses the ±1 label as a probability, σ(x_iᵀw) − y_i; the probability a perfect "
            "predictor gives is (y_i + 1)/2": variant(pm1=True),
            "the step goes uphill (w + lr·∇f); gradient descent moves against the gradient": variant(uphill=True),
            "you take one step too few (the loop runs steps − 1 times)": variant(minus_one=True),
        },
    )


def check_probability_residual_similarity(fn: Callable, *, device=None) -> None:
    r"""Check the similarity of errors on probabilities: ``fn(logits_a, logits_b, y)`` must return,
    per prompt, the cosine between the residuals ``σ(a_i) − (y_i + 1)/2`` and
    ``σ(b_i) − (y_i + 1)/2`` over the prompt's positions ``i``.

    Parameters
    ----------
    fn : callable
        ``fn(logits_a, logits_b, y) -> Tensor of shape (B,)`` for logits and labels (±1) of shape
        ``(B, n)``.
    device : str or torch.device, optional
        Where the cases live (default CPU).

    Raises
    ------
    ExerciseError
        On the first case answered wrongly, saying what is wrong (the ±1 labels used as
        probabilities, logits compared instead of probabilities, the probabilities compared
        instead of their residuals, ...).

    Notes
    -----
    The reference is :func:`tfnewton.metrics.similarity_of_errors` with ``reduction="none"`` on
    ``σ(a)``, ``σ(b)`` and ``(y + 1)/2``. Labels from
    :func:`tfnewton.tasks.sample_logistic_regression`; ``a`` is a damped-Newton-like logit plus
    noise and ``b`` another noisy copy, so the cosines are neither 0 nor 1. Batches of 1 to 9 with
    ``B ≠ n``; five cases in float64 and one in float32.
    """
    from .metrics import similarity_of_errors

    device = check_device(device)
    generator = torch.Generator().manual_seed(47)
    cases = []
    for B, n, dtype in ((5, 8, torch.float64), (1, 12, torch.float64), (9, 4, torch.float64),
                        (3, 26, torch.float64), (7, 10, torch.float64), (4, 6, torch.float32)):
        X, y = _classifier_prompts(generator, B, n, 3, 10.0)
        base = 2.0 * (X * X[:, :1]).sum(-1) * y[:, :1]  # some signal, shared by a and b
        a = base + torch.randn(B, n, generator=generator, dtype=torch.float64)
        b = base + 0.5 * torch.randn(B, n, generator=generator, dtype=torch.float64)
        expected = similarity_of_errors(torch.sigmoid(a), torch.sigmoid(b), (y + 1) / 2, reduction="none")
        args = tuple(t.to(device=device, dtype=dtype) for t in (a, b, y))
        cases.append((args, expected.to(device=device, dtype=dtype)))

    def cosine(u, v):
        return (u * v).sum(-1) / (u.norm(dim=-1) * v.norm(dim=-1))

    check_function(
        fn,
        cases,
        name="probability_residual_similarity",
        known_mistakes={
            "the residuals use the ±1 labels as probabilities, σ(a_i) − y_i; the probability a perfect predictor "
            "gives is (y_i + 1)/2":
                lambda a, b, y: cosine(torch.sigmoid(a) - y, torch.sigmoid(b) - y),
            "you compare residuals of the logits, a_i − y_i; the exercise compares probabilities, σ(a_i) − (y_i + 1)/2":
                lambda a, b, y: cosine(a - y, b - y),
            "you compare the probabilities σ(a_i) and σ(b_i) themselves; the metric compares their residuals "
            "σ(a_i) − (y_i + 1)/2":
                lambda a, b, y: cosine(torch.sigmoid(a), torch.sigmoid(b)),
            "you compare the logits a_i and b_i themselves; the metric compares probability residuals "
            "σ(a_i) − (y_i + 1)/2":
                lambda a, b, y: cosine(a, b),
        },
    )


def check_posterior_predictive(fn: Callable, *, device=None) -> None:
    r"""Check the Bayes posterior predictive by importance sampling: ``fn(X, y, x_query, W)`` must return
    ``Σ_m ω_m σ(x_qᵀW_m)`` with ``ω_m ∝ Π_i σ(y_i x_iᵀW_m)`` and ``Σ_m ω_m = 1``.

    ``W`` holds ``M`` draws of ``w`` from its prior; weighting each by its likelihood of the
    context turns their average into the posterior average, the probability that the query's
    label is +1 given the context.

    Parameters
    ----------
    fn : callable
        ``fn(X, y, x_query, W) -> Tensor of shape (B,)`` for ``X (B, n, d)``, labels ``y (B, n)``
        (±1), ``x_query (B, d)`` and prior draws ``W (M, d)`` (the same for every prompt).
    device : str or torch.device, optional
        Where the cases live (default CPU).

    Raises
    ------
    ExerciseError
        On the first case answered wrongly, saying what is wrong (weights that ignore the
        labels, unnormalized weights, the prior predictive, the best sample only, a logit
        instead of a probability, ...).

    Notes
    -----
    The reference is :func:`tfnewton.logistic_probes.bayes_logits` with ``samples=W`` at the
    query, through ``σ``. Prompts of :func:`tfnewton.tasks.sample_logistic_regression`,
    ``M`` from 64 to 2048 draws of ``N(0, 4I)``; five cases in float64 and one in float32.
    """
    from .logistic_probes import bayes_logits

    device = check_device(device)
    generator = torch.Generator().manual_seed(53)
    cases = []
    for B, n, d, M, dtype in ((4, 10, 3, 256, torch.float64), (1, 5, 2, 64, torch.float64),
                              (6, 25, 5, 2048, torch.float64), (3, 1, 4, 128, torch.float64),
                              (5, 15, 5, 512, torch.float64), (2, 8, 3, 256, torch.float32)):
        X, y = _classifier_prompts(generator, B, n + 1, d, 10.0)
        W = 2.0 * torch.randn(M, d, generator=generator, dtype=torch.float64)
        yq = torch.cat([y[:, :n], torch.ones(B, 1, dtype=torch.float64)], 1)  # the query's label is never read
        expected = torch.sigmoid(bayes_logits(X, yq, samples=W)[:, n])
        args = tuple(t.to(device=device, dtype=dtype) for t in (X[:, :n], y[:, :n], X[:, n], W))
        cases.append((args, expected.to(device=device, dtype=dtype)))

    def weighted(loglik, p):
        return (torch.softmax(loglik, -1) * p).sum(-1)

    def loglik_of(X, y, W, labels=True):
        z = X @ W.mT  # (B, n, M)
        return torch.nn.functional.logsigmoid((y.unsqueeze(-1) if labels else 1.0) * z).sum(1)

    check_function(
        fn,
        cases,
        name="posterior_predictive",
        known_mistakes={
            "the likelihood ignores the labels, Π σ(x_iᵀW_m); a draw is weighted by the probability of the "
            "labels it would have produced, Π σ(y_i x_iᵀW_m)":
                lambda X, y, xq, W: weighted(loglik_of(X, y, W, labels=False), torch.sigmoid(xq @ W.mT)),
            "the weights are not normalized: divide by Σ_m Π σ(y_i x_iᵀW_m) so that they sum to 1":
                lambda X, y, xq, W: (loglik_of(X, y, W).exp() * torch.sigmoid(xq @ W.mT)).sum(-1),
            "you average σ(x_qᵀW_m) over the draws without weighting them: that is the prior predictive, "
            "which ignores the context":
                lambda X, y, xq, W: torch.sigmoid(xq @ W.mT).mean(-1),
            "you use the single most likely draw; the posterior predictive averages over all of them":
                lambda X, y, xq, W: torch.sigmoid(
                    (xq * W[loglik_of(X, y, W).argmax(-1)]).sum(-1)),
            "you return the log-odds; the exercise asks for the probability":
                lambda X, y, xq, W: torch.logit(weighted(loglik_of(X, y, W), torch.sigmoid(xq @ W.mT))),
        },
    )


# --------------------------------------------------------------------------------------
# Sparse recovery (chapter "Sparse recovery"): soft thresholding, one ISTA step, two ReLUs
# --------------------------------------------------------------------------------------
def _threshold_cases(generator, device):
    """``(z, θ)`` pairs: batches of 1 to 4, thresholds a scalar or one per problem, one float32 case."""
    cases = []
    for B, m, per_problem, dtype in ((4, 9, False, torch.float64), (1, 7, False, torch.float64),
                                     (3, 12, True, torch.float64), (2, 10, False, torch.float32)):
        z = 2 * torch.randn(B, m, generator=generator, dtype=torch.float64)
        theta = (0.2 + torch.rand(B, 1, generator=generator, dtype=torch.float64)) if per_problem else 0.7
        z[0, :3] = torch.tensor([0.0, 0.7, -0.7], dtype=torch.float64)  # zero and ±θ-ish points
        cases.append((z.to(device=device, dtype=dtype),
                      theta.to(device=device, dtype=dtype) if isinstance(theta, torch.Tensor) else theta))
    return cases


def check_soft_threshold(fn: Callable, *, device=None) -> None:
    r"""Check soft thresholding: ``fn(z, theta)`` must return ``sign(z)·max(|z| − θ, 0)`` elementwise.

    Parameters
    ----------
    fn : callable
        ``fn(z, theta) -> Tensor`` of ``z``'s shape ``(B, m)``; ``theta`` is a float or a tensor of
        shape ``(B, 1)`` (one threshold per problem), ``>= 0``.
    device : str or torch.device, optional
        Where the cases live (default CPU).

    Raises
    ------
    ExerciseError
        On the first case answered wrongly, saying what is wrong (hard thresholding, the sign
        lost, shrinking without setting small entries to zero, clipping instead of shrinking, ...).

    Notes
    -----
    The reference is :func:`tfnewton.algorithms.soft_threshold`. Four cases: batches of 1 to 4,
    one with a threshold per problem, one in float32.
    """
    device = check_device(device)
    generator = torch.Generator().manual_seed(21)
    cases = [((z, theta), soft_threshold(z, theta)) for z, theta in _threshold_cases(generator, device)]
    check_function(
        fn,
        cases,
        name="soft_threshold",
        known_mistakes={
            "you hard-threshold (keep z where |z| > θ): soft thresholding also shrinks the survivors by θ, "
            "sign(z)·max(|z| − θ, 0)":
                lambda z, theta: z * (z.abs() > theta),
            "the sign is lost: max(|z| − θ, 0) must be multiplied by sign(z)":
                lambda z, theta: torch.clamp(z.abs() - theta, min=0),
            "you shrink every entry by θ (z − θ·sign(z)) without setting those with |z| ≤ θ to zero":
                lambda z, theta: z - theta * torch.sign(z),
            "you clip z to [−θ, θ]; soft thresholding is z minus that clip, sign(z)·max(|z| − θ, 0)":
                lambda z, theta: torch.maximum(torch.minimum(z, theta + 0 * z), -theta + 0 * z),
            "you shrink only positive entries (max(z − θ, 0)); negative ones shrink towards 0 too":
                lambda z, theta: torch.clamp(z - theta, min=0),
        },
    )


def check_ista_step(fn: Callable, *, device=None) -> None:
    r"""Check one ISTA step: ``fn(X, y, beta, lam, lr)`` must return ``soft(β − η Xᵀ(Xβ − y), η·λ)``.

    The proximal-gradient step on the LASSO ``(1/2)‖y − Xβ‖² + λ‖β‖₁`` with step ``η = lr``.

    Parameters
    ----------
    fn : callable
        ``fn(X, y, beta, lam, lr) -> Tensor of shape (B, d)`` for ``X (B, n, d)``, ``y (B, n)``,
        ``beta (B, d)`` and floats ``lam``, ``lr``, in the inputs' dtype and on their device.
    device : str or torch.device, optional
        Where the cases live (default CPU).

    Raises
    ------
    ExerciseError
        On the first case answered wrongly, saying what is wrong (the threshold λ instead of
        ηλ, a step uphill, the threshold applied before the gradient step, the gradient step
        alone, ...).

    Notes
    -----
    The reference differentiates :func:`tfnewton.algorithms.lasso_objective` by autograd and
    thresholds with :func:`tfnewton.algorithms.soft_threshold`; from ``beta = 0`` it equals the
    first iterate of :func:`tfnewton.algorithms.ista` with ``lr=η``. Prompts from :func:`tfnewton.tasks.sample_sparse_recovery`, batches of 1 to 4, one case in
    float32.
    """
    device = check_device(device)
    generator = torch.Generator().manual_seed(22)
    cases = []
    for B, n, d, dtype in ((4, 8, 12, torch.float64), (1, 5, 6, torch.float64), (3, 10, 10, torch.float64),
                           (2, 6, 9, torch.float32)):
        task = sample_sparse_recovery(B, n, d, sparsity=2, noise_std=0.1, generator=generator, dtype=torch.float64)
        beta = 0.5 * torch.randn(B, d, generator=generator, dtype=torch.float64)
        lam, lr = 0.05, 0.6
        expected = _ista_step_reference(task.X, task.y, beta, lam, lr)
        args = tuple(t.to(device=device, dtype=dtype) for t in (task.X, task.y, beta)) + (lam, lr)
        cases.append((args, expected.to(device=device, dtype=dtype)))

    def step_with(X, y, beta, lam, lr, *, threshold, sign=1.0):
        grad = (X.mT @ ((X @ beta.unsqueeze(-1)).squeeze(-1) - y).unsqueeze(-1)).squeeze(-1)
        return soft_threshold(beta - sign * lr * grad, threshold)

    check_function(
        fn,
        cases,
        name="ista_step",
        known_mistakes={
            "the threshold is λ; after a step of size η the proximal map of ηλ‖·‖₁ thresholds at η·λ":
                lambda X, y, beta, lam, lr: step_with(X, y, beta, lam, lr, threshold=lam),
            "the step goes uphill (β + ηXᵀ(Xβ − y)); the gradient of (1/2)‖y − Xβ‖² is Xᵀ(Xβ − y), "
            "and the step subtracts it":
                lambda X, y, beta, lam, lr: step_with(X, y, beta, lam, lr, threshold=lr * lam, sign=-1.0),
            "you threshold β first and take the gradient step after; ISTA thresholds the gradient step's result":
                lambda X, y, beta, lam, lr: (lambda b: b - lr * (X.mT @ ((X @ b.unsqueeze(-1)).squeeze(-1) - y)
                                                                  .unsqueeze(-1)).squeeze(-1))(
                    soft_threshold(beta, lr * lam)),
            "you return the gradient step alone; it must then be soft-thresholded at η·λ":
                lambda X, y, beta, lam, lr: step_with(X, y, beta, lam, lr, threshold=0.0),
        },
    )


def _ista_step_reference(X, y, beta, lam, lr):
    """One ISTA step from ``beta``: the gradient of the smooth part by autograd through
    :func:`~tfnewton.algorithms.lasso_objective` (less ``λ·sign(β)``, the ℓ1 term's slope at an
    ``beta`` with no zero entry), then :func:`~tfnewton.algorithms.soft_threshold` at ``η·λ``."""
    b = beta.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(lasso_objective(X, y, b, lam).sum(), b)
    smooth = grad - lam * torch.sign(beta)  # Xᵀ(Xβ − y)
    return soft_threshold(beta - lr * smooth, lr * lam)


def check_soft_threshold_relu_units(fn: Callable, *, device=None) -> None:
    r"""Check the two ReLU units of soft thresholding: ``fn(z, theta)`` must return, stacked on a
    new last axis, ``ReLU(z − θ)`` and ``ReLU(−z − θ)``, whose difference is ``soft(z, θ)``.

    These are the hidden units of the MLP in
    :func:`tfnewton.constructions.in_context_ista_transformer`:
    ``soft(z, θ) = ReLU(z − θ) − ReLU(−z − θ)`` for ``θ ≥ 0``.

    Parameters
    ----------
    fn : callable
        ``fn(z, theta) -> Tensor of shape (B, m, 2)`` for ``z`` of shape ``(B, m)`` and ``theta``
        a float or a tensor of shape ``(B, 1)``; unit 0 is ``ReLU(z − θ)``, unit 1 ``ReLU(−z − θ)``.
    device : str or torch.device, optional
        Where the cases live (default CPU).

    Raises
    ------
    ExerciseError
        On the first case answered wrongly, saying what is wrong (the units swapped, a bias of
        the wrong sign, the input of the second unit not negated, the difference returned
        instead of the units, ...).

    Notes
    -----
    The reference is built from ``torch.relu``; the difference of its units is checked
    against :func:`tfnewton.algorithms.soft_threshold` when the cases are made.
    """
    device = check_device(device)
    generator = torch.Generator().manual_seed(23)

    def units(z, theta, *, bias=-1.0, negate=True):
        return torch.stack([torch.relu(z + bias * theta), torch.relu((-z if negate else z) + bias * theta)], -1)

    cases = []
    for z, theta in _threshold_cases(generator, device):
        expected = units(z, theta)
        if not torch.allclose(expected[..., 0] - expected[..., 1], soft_threshold(z, theta)):
            raise RuntimeError("the two-ReLU identity failed on a case; the checker is broken")
        cases.append(((z, theta), expected))
    check_function(
        fn,
        cases,
        name="soft_threshold_relu_units",
        known_mistakes={
            "the two units are swapped: unit 0 is ReLU(z − θ), unit 1 is ReLU(−z − θ)":
                lambda z, theta: units(z, theta).flip(-1),
            "the biases have the wrong sign: the units are ReLU(z − θ) and ReLU(−z − θ), with −θ in both":
                lambda z, theta: units(z, theta, bias=1.0),
            "the second unit's input is not negated: it is ReLU(−z − θ), which is non-zero for z < −θ":
                lambda z, theta: units(z, theta, negate=False),
        },
    )


# --------------------------------------------------------------------------------------
# The trained sparse-recovery model: reading β̂ through probe queries, scoring it
# --------------------------------------------------------------------------------------


def check_induced_weights(fn: Callable, *, device=None) -> None:
    r"""Check the induced weights: ``fn(x_probe, answers)`` must return the ``β̂`` with ``x_probe β̂ ≈ answers``
    in the least-squares sense, ``β̂ = (X̃ᵀX̃)⁻¹X̃ᵀỹ`` per problem.

    Parameters
    ----------
    fn : callable
        ``fn(x_probe, answers) -> Tensor of shape (B, d)`` for probe queries ``x_probe (B, m, d)``
        (``m >= d``) and a predictor's answers at them, ``answers (B, m)``.
    device : str or torch.device, optional
        Where the cases live (default CPU).

    Raises
    ------
    ExerciseError
        On the first case answered wrongly, saying what is wrong (``X̃ᵀỹ`` without the inverse,
        ``X̃ᵀỹ/m``, the answers averaged, ...).

    Notes
    -----
    The reference is :func:`tfnewton.metrics.induced_weights`. Answers are a linear predictor's
    plus a small non-linear part, so only a least-squares fit is right. Four cases, batches of 1
    to 5, ``m`` from ``d`` to ``4d``, one in float32.
    """
    from .metrics import induced_weights

    device = check_device(device)
    generator = torch.Generator().manual_seed(61)
    cases = []
    for B, m, d, dtype in ((4, 20, 10, torch.float64), (1, 5, 5, torch.float64), (5, 24, 6, torch.float64),
                           (3, 12, 4, torch.float32)):
        x = 1.5 * torch.randn(B, m, d, generator=generator, dtype=torch.float64)
        beta = torch.randn(B, d, generator=generator, dtype=torch.float64)
        answers = (x @ beta.unsqueeze(-1)).squeeze(-1) + 0.3 * torch.tanh(x[..., 0] * x[..., -1])
        expected = induced_weights(x, answers)
        cases.append(((x.to(device=device, dtype=dtype), answers.to(device=device, dtype=dtype)),
                      expected.to(device=device, dtype=dtype)))
    check_function(
        fn,
        cases,
        name="induced_weights",
        known_mistakes={
            "you return X̃ᵀỹ, a correlation: the least-squares solution also multiplies by (X̃ᵀX̃)⁻¹":
                lambda x, a: (x.mT @ a.unsqueeze(-1)).squeeze(-1),
            "you return X̃ᵀỹ/m, which equals β̂ only when X̃ᵀX̃/m = I; solve the normal equations (X̃ᵀX̃)β̂ = X̃ᵀỹ":
                lambda x, a: (x.mT @ a.unsqueeze(-1)).squeeze(-1) / x.shape[1],
            "you average the answers over the probes and divide by the probes' mean: solve for β̂ by least squares":
                lambda x, a: a.mean(-1, keepdim=True) * x.mean(1) / x.mean(1).pow(2).sum(-1, keepdim=True),
        },
    )


def check_recovery_error_per_prompt(fn: Callable, *, device=None) -> None:
    r"""Check the normalized recovery error of each prompt: ``fn(estimate, beta)`` must return
    ``‖β̂_b − β_b‖² / ‖β_b‖²`` for every prompt ``b``.

    Parameters
    ----------
    fn : callable
        ``fn(estimate, beta) -> Tensor of shape (B,)`` for ``estimate (B, d)`` and the true
        ``beta (B, d)``.
    device : str or torch.device, optional
        Where the cases live (default CPU).

    Raises
    ------
    ExerciseError
        On the first case answered wrongly, saying what is wrong (norms instead of squared
        norms, the estimate's norm in the denominator, no normalization, ...).

    Notes
    -----
    The reference is :func:`tfnewton.sparse.recovery_error` applied to each prompt alone. Four
    cases of sparse ``β`` (:func:`tfnewton.tasks.sample_sparse_recovery`), one in float32.
    """
    from .sparse import recovery_error

    device = check_device(device)
    generator = torch.Generator().manual_seed(67)
    cases = []
    for B, d, s, dtype in ((4, 10, 2, torch.float64), (1, 5, 1, torch.float64), (6, 20, 3, torch.float64),
                           (3, 8, 2, torch.float32)):
        beta = sample_sparse_recovery(B, 2, d, sparsity=s, generator=generator, dtype=torch.float64).w
        estimate = beta + 0.3 * torch.randn(B, d, generator=generator, dtype=torch.float64)
        expected = torch.stack([recovery_error(estimate[b:b + 1], beta[b:b + 1]) for b in range(B)])
        cases.append(((estimate.to(device=device, dtype=dtype), beta.to(device=device, dtype=dtype)),
                      expected.to(device=device, dtype=dtype)))
    check_function(
        fn,
        cases,
        name="recovery_error_per_prompt",
        known_mistakes={
            "you divide norms, ‖β̂ − β‖/‖β‖: the error is a ratio of squared norms":
                lambda e, b: (e - b).norm(dim=-1) / b.norm(dim=-1),
            "the denominator is the estimate's ‖β̂‖²; normalize by the true signal's ‖β‖²":
                lambda e, b: (e - b).pow(2).sum(-1) / e.pow(2).sum(-1),
            "the error is not normalized: divide ‖β̂ − β‖² by ‖β‖²":
                lambda e, b: (e - b).pow(2).sum(-1),
            "you average over coordinates (a mean squared error) before normalizing; sum them":
                lambda e, b: (e - b).pow(2).mean(-1) / b.pow(2).sum(-1),
        },
    )


def check_linear_rate(fn: Callable, *, device=None) -> None:
    r"""Check the fitted linear rate: ``fn(errors)`` must return, per row, ``exp`` of the least-squares
    slope of ``log errors[k]`` against ``k = 0…K`` (error ≈ ``C·rᵏ``).

    Parameters
    ----------
    fn : callable
        ``fn(errors) -> Tensor of shape (B,)`` for ``errors (B, K + 1)``, all ``> 0``.
    device : str or torch.device, optional
        Where the cases live (default CPU).

    Raises
    ------
    ExerciseError
        On the first case answered wrongly, saying what is wrong (the slope without ``exp``, the
        end points only, base 10, ...).

    Notes
    -----
    The reference is :func:`tfnewton.sparse.fitted_rate` applied to each row. Curves are
    geometric with noise (so the end points alone do not give the fit); four cases, one in float32.
    """
    from .sparse import fitted_rate

    device = check_device(device)
    generator = torch.Generator().manual_seed(71)
    cases = []
    for B, K, dtype in ((4, 6, torch.float64), (1, 3, torch.float64), (5, 12, torch.float64), (3, 8, torch.float32)):
        rates = 0.3 + 0.6 * torch.rand(B, 1, generator=generator, dtype=torch.float64)
        k = torch.arange(K + 1, dtype=torch.float64)
        errors = rates**k * torch.exp(0.3 * torch.randn(B, K + 1, generator=generator, dtype=torch.float64))
        expected = torch.tensor([fitted_rate(row) for row in errors], dtype=torch.float64)
        cases.append(((errors.to(device=device, dtype=dtype),), expected.to(device=device, dtype=dtype)))

    def slope(errors, log=torch.log):
        k = torch.arange(errors.shape[-1], dtype=errors.dtype, device=errors.device)
        logs = log(errors)
        kc = k - k.mean()
        return (kc * (logs - logs.mean(-1, keepdim=True))).sum(-1) / kc.pow(2).sum()

    check_function(
        fn,
        cases,
        name="linear_rate",
        known_mistakes={
            "you return the slope of log error: the rate is its exponential, r = exp(slope)":
                lambda e: slope(e),
            "you use the end points only, (e_K/e_0)^(1/K): fit the slope by least squares over every k":
                lambda e: (e[:, -1] / e[:, 0]) ** (1.0 / (e.shape[-1] - 1)),
            "you fit log10 but exponentiate with e: use one base (r = exp(slope of ln error) = 10^(slope of log10))":
                lambda e: torch.exp(slope(e, torch.log10)),
        },
    )


# ---------------------------------------------------------------------- training


def _schedule_configs():
    """Recipes for the schedule and curriculum checkers: the shipped one and three small ones
    whose boundaries (warm-up, decay start, curriculum stages, caps) fall among few steps."""
    from .train import RECIPES, TrainConfig

    return [
        TrainConfig(**RECIPES["gpt2_linreg_d5"]),
        TrainConfig(steps=100, warmup_steps=10, decay_fraction=0.5, min_lr=1e-5, lr=1e-3,
                    curriculum_every=7, d=8, n_points=17, d_start=3, d_inc=2, n_start=4, n_inc=3),
        TrainConfig(steps=50, warmup_steps=0, decay_fraction=1.0, lr=2e-3, curriculum=False),
        TrainConfig(steps=400, warmup_steps=40, decay_fraction=0.25, min_lr=2e-4, lr=1e-3,
                    curriculum_every=50, d=4, n_points=9, d_start=1, n_start=3),
    ]


def _schedule_cases(reference, device):
    """``((steps, config), expected)`` per recipe of :func:`_schedule_configs`: its boundaries
    (warm-up, decay start, curriculum stages) and random steps, as a float tensor; one case of
    a single step; the last recipe in float32. ``reference(step, config)`` is one answer."""
    generator = torch.Generator().manual_seed(83)
    cases = []
    for i, config in enumerate(_schedule_configs()):
        decay_start = round(config.steps * (1 - config.decay_fraction))
        every = config.curriculum_every
        edges = {0, 1, config.warmup_steps - 1, config.warmup_steps, decay_start - 1, decay_start,
                 config.steps - 1, every - 1, every, 2 * every, 5 * every - 1}
        edges |= set(torch.randint(0, config.steps, (12,), generator=generator).tolist())
        steps = sorted(s for s in edges if 0 <= s < config.steps)
        dtype = torch.float32 if i == len(_schedule_configs()) - 1 else torch.float64
        for chosen in ([steps, steps[len(steps) // 2:len(steps) // 2 + 1]] if i == 0 else [steps]):
            expected = torch.tensor([reference(s, config) for s in chosen], dtype=dtype, device=device)
            cases.append(((torch.tensor(chosen, dtype=dtype, device=device), config), expected))
    return cases


def _check_steps(fn, cases, *, name, known_mistakes, phase) -> None:
    """:func:`check_function` for answers indexed by training step: a wrong answer that no
    named mistake explains is reported by the steps it is wrong at, each with its ``phase``."""
    import contextlib
    import io

    for args, expected in cases:
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # one line at the end, for all cases
                check_function(fn, [(args, expected)], name=name, known_mistakes=known_mistakes)
        except ExerciseError as err:
            if "the values are wrong" not in str(err) and "it is right for problem" not in str(err):
                raise
            steps, config = args
            got = fn(steps.clone(), config).to(expected.dtype).reshape(expected.shape)
            wrong = [b for b in range(len(steps))
                     if diagnose(got[b:b + 1], expected[b:b + 1], rtol=tolerance(expected.dtype)) is not None]
            def text(row):
                values = [f"{x:.6g}" for x in row.flatten().tolist()]
                return values[0] if len(values) == 1 else "(" + ", ".join(values) + ")"

            shown = "; ".join(f"step {int(steps[b])} ({phase(int(steps[b]), config)}): expected "
                              f"{text(expected[b])}, got {text(got[b])}" for b in wrong[:3])
            raise ExerciseError(
                f"{name} is wrong at {len(wrong)} of {len(steps)} steps: {shown}"
                f"{'; …' if len(wrong) > 3 else ''}.\n(on inputs {describe(steps)}, {describe(config)})"
            ) from None
    dtypes = " and ".join(sorted({str(e.dtype).removeprefix("torch.") for _, e in cases}, reverse=True))
    sizes = sorted(e.shape[0] for _, e in cases)
    print(f"{name}: correct on {len(cases)} random cases ({dtypes}, batches of {sizes[0]} to {sizes[-1]}).")


def _schedule_phase(step: int, config) -> str:
    """Which part of the schedule a step is in, for the messages."""
    decay_start = max(config.warmup_steps, round(config.steps * (1 - config.decay_fraction)))
    if step < config.warmup_steps:
        return f"warm-up, steps 0 … {config.warmup_steps - 1}"
    if step < decay_start:
        return f"constant, steps {config.warmup_steps} … {decay_start - 1}"
    return f"decay, steps {decay_start} … {config.steps - 1}"


def _curriculum_phase(step: int, config) -> str:
    """The curriculum stage of a step, for the messages."""
    if not config.curriculum:
        return "config.curriculum is False"
    return f"stage {step // config.curriculum_every}, curriculum_every = {config.curriculum_every}"


def _rates_with(steps, config, *, warmup="from_one", decay_from=None, floor=None, shape="linear"):
    """The recipe's schedule with one thing changed (the schedule checker's known mistakes)."""
    import math

    c = config
    start = max(c.warmup_steps, round(c.steps * (1 - c.decay_fraction))) if decay_from is None else decay_from(c)
    low = c.min_lr if floor is None else floor
    out = []
    for s in steps.tolist():
        s = int(s)
        if s < c.warmup_steps and warmup != "none":
            out.append(c.lr * (s + 1 if warmup == "from_one" else s) / c.warmup_steps)
        elif s < start:
            out.append(c.lr)
        else:
            remaining = (c.steps - s) / max(1, c.steps - start)
            if shape == "cosine":
                remaining = 0.5 * (1 + math.cos(math.pi * (1 - remaining)))
            out.append(low + (c.lr - low) * remaining)
    return torch.tensor(out, dtype=steps.dtype, device=steps.device)


def check_learning_rate_schedule(fn: Callable, *, device=None) -> None:
    r"""Check the training schedule: ``fn(steps, config)`` must return the learning rate of every
    optimizer step in ``steps`` — linear warm-up, constant, then a linear decay to ``min_lr``.

    Parameters
    ----------
    fn : callable
        ``fn(steps, config) -> Tensor of shape (B,)`` for ``steps``, a float tensor of 0-based
        step numbers of shape ``(B,)``, and a :class:`tfnewton.train.TrainConfig`; the rates
        in ``steps``' dtype and on its device.
    device : str or torch.device, optional
        Where the cases live (default CPU).

    Raises
    ------
    ExerciseError
        On the first case answered wrongly, saying what is wrong (a warm-up that starts at 0,
        a decay from the end of the warm-up, a decay to 0 instead of ``min_lr``, a cosine, ...).

    Notes
    -----
    The reference is :func:`tfnewton.train.learning_rate` (``"linear_decay"`` schedule). Five
    cases: the shipped recipe's boundaries and random steps, the same for a single step, and
    three small recipes (with and without warm-up, ``min_lr`` zero and not), one in float32.
    """
    from .train import learning_rate

    device = check_device(device)
    cases = _schedule_cases(learning_rate, device)
    _check_steps(
        fn,
        cases,
        phase=_schedule_phase,
        name="learning_rate_schedule",
        known_mistakes={
            "the warm-up starts at 0 (lr·step/warmup_steps): step 0 already trains, at "
            "lr·(step + 1)/warmup_steps": lambda s, c: _rates_with(s, c, warmup="from_zero"),
            "there is no warm-up: the first warmup_steps steps climb linearly to lr":
                lambda s, c: _rates_with(s, c, warmup="none"),
            "the decay starts at the end of the warm-up; it covers only the last decay_fraction "
            "of the steps (from round(steps·(1 − decay_fraction)))":
                lambda s, c: _rates_with(s, c, decay_from=lambda c: c.warmup_steps),
            "the decay ends at 0; it ends at config.min_lr": lambda s, c: _rates_with(s, c, floor=0.0),
            "the decay is a cosine; the recipe's is linear": lambda s, c: _rates_with(s, c, shape="cosine"),
        },
    )


def _stages_with(steps, config, *, capped=True, first=0, rounding="floor", honour_switch=True, swap=False):
    """The curriculum with one thing changed (the curriculum checker's known mistakes)."""
    c = config
    rows = []
    for s in steps.tolist():
        if not c.curriculum and honour_switch:
            rows.append((c.d, c.n_points))
            continue
        stage = (int(s) // c.curriculum_every if rounding == "floor" else round(s / c.curriculum_every)) + first
        d_eff, n_eff = c.d_start + c.d_inc * stage, c.n_start + c.n_inc * stage
        rows.append((min(c.d, d_eff), min(c.n_points, n_eff)) if capped else (d_eff, n_eff))
    out = torch.tensor(rows, dtype=steps.dtype, device=steps.device)
    return out.flip(-1) if swap else out


def check_curriculum(fn: Callable, *, device=None) -> None:
    r"""Check the curriculum: ``fn(steps, config)`` must return, for every optimizer step in
    ``steps``, the effective dimension and the prompt length the training loop uses.

    Parameters
    ----------
    fn : callable
        ``fn(steps, config) -> Tensor of shape (B, 2)`` for ``steps``, a float tensor of 0-based
        step numbers of shape ``(B,)``, and a :class:`tfnewton.train.TrainConfig`; row ``b`` is
        ``(d_eff, n_eff)`` at ``steps[b]``, in ``steps``' dtype and on its device.
    device : str or torch.device, optional
        Where the cases live (default CPU).

    Raises
    ------
    ExerciseError
        On the first case answered wrongly, saying what is wrong (no cap at ``d`` and
        ``n_points``, stages counted from 1, ``config.curriculum`` ignored, ...).

    Notes
    -----
    The reference is :func:`tfnewton.train.curriculum_at`. Five cases: the shipped recipe's
    stage boundaries and random steps, the same for a single step, a recipe without
    curriculum and two small ones with other starts and increments, one in float32.
    """
    from .train import curriculum_at

    device = check_device(device)
    cases = _schedule_cases(lambda s, c: list(curriculum_at(s, c)), device)
    _check_steps(
        fn,
        cases,
        phase=_curriculum_phase,
        name="curriculum",
        known_mistakes={
            "the stages are not capped: d_eff stops at config.d and n_eff at config.n_points":
                lambda s, c: _stages_with(s, c, capped=False),
            "the stages are counted from 1: steps 0 … curriculum_every − 1 are stage 0 "
            "(d_start, n_start)": lambda s, c: _stages_with(s, c, first=1),
            "the stage is rounded (round(step/curriculum_every)); it is the floor, "
            "step // curriculum_every": lambda s, c: _stages_with(s, c, rounding="round"),
            "config.curriculum = False is ignored: then every step sees (d, n_points)":
                lambda s, c: _stages_with(s, c, honour_switch=False),
            "the columns are swapped: each row is (d_eff, n_eff)": lambda s, c: _stages_with(s, c, swap=True),
        },
    )


def check_error_vs_k(fn: Callable, *, device=None) -> None:
    r"""Check the evaluation curve: ``fn(pred, y, d)`` must return the normalized squared error
    ``mean_b (ŷ_bk − y_bk)² / d`` at every position ``k`` (the prediction made after ``k``
    examples).

    Parameters
    ----------
    fn : callable
        ``fn(pred, y, d) -> Tensor of shape (n,)`` for predictions and labels of shape
        ``(B, n)`` and the input dimension ``d``.
    device : str or torch.device, optional
        Where the cases live (default CPU).

    Raises
    ------
    ExerciseError
        On the first case answered wrongly, saying what is wrong (no ``1/d``, a root mean
        square, absolute errors, ...).

    Notes
    -----
    The reference is :func:`tfnewton.metrics.normalized_error`. Predictions are Iterative
    Newton's (:func:`tfnewton.algorithms.prefix_predictions`, two steps) on random prompts of
    :func:`tfnewton.tasks.sample_linear_regression`; four cases, one of a single prompt, one
    in float32.
    """
    from .algorithms import prefix_predictions
    from .metrics import normalized_error
    from .tasks import sample_linear_regression

    device = check_device(device)
    generator = torch.Generator().manual_seed(89)
    cases = []
    for B, n, d, dtype in ((6, 11, 5, torch.float64), (1, 7, 3, torch.float64), (9, 9, 4, torch.float64),
                           (5, 13, 6, torch.float32)):
        task = sample_linear_regression(B, n, d, generator=generator, dtype=torch.float64)
        pred = prefix_predictions("newton", task.X, task.y, 2)[2]
        expected = normalized_error(pred, task.y, d)
        cases.append(((pred.to(device=device, dtype=dtype), task.y.to(device=device, dtype=dtype), d),
                      expected.to(device=device, dtype=dtype)))
    check_function(
        fn,
        cases,
        name="error_vs_k",
        known_mistakes={
            "the error is not divided by d: Garg et al.'s normalized error is (ŷ − y)²/d, so that "
            "predicting 0 scores about 1 whatever d": lambda p, y, d: ((p - y) ** 2).mean(0),
            "you take the root (an RMS error); the normalized error is squared":
                lambda p, y, d: (((p - y) ** 2).mean(0) / d).sqrt(),
            "you average absolute errors |ŷ − y|/d; the normalized error squares them":
                lambda p, y, d: (p - y).abs().mean(0) / d,
            "you divide by n (the prompt length) instead of d": lambda p, y, d: ((p - y) ** 2).mean(0) / y.shape[-1],
        },
    )


# ---------------------------------------------------------------------- linear regression probes


def check_similarity_of_errors(fn: Callable, *, device=None) -> None:
    r"""Check Fu et al.'s similarity of errors: ``fn(pred_a, pred_b, y)`` must return, for every
    prompt, the cosine between the residual vectors ``(ŷ^A_i − y_i)_i`` and ``(ŷ^B_i − y_i)_i``
    over its positions.

    Parameters
    ----------
    fn : callable
        ``fn(pred_a, pred_b, y) -> Tensor of shape (B,)`` for two predictors' answers and the
        labels, each of shape ``(B, n)``.
    device : str or torch.device, optional
        Where the cases live (default CPU).

    Raises
    ------
    ExerciseError
        On the first case answered wrongly, saying what is wrong (the cosine of the
        predictions, a correlation, a mean over prompts, ...).

    Notes
    -----
    The reference is :func:`tfnewton.metrics.similarity_of_errors` with ``reduction="none"``.
    The predictors are Iterative Newton after a few steps and gradient descent
    (:func:`tfnewton.algorithms.prefix_predictions`) on random prompts, so their residuals are
    alike but not equal; four cases, one of a single prompt, one in float32.
    """
    from .algorithms import prefix_predictions
    from .metrics import similarity_of_errors
    from .tasks import sample_linear_regression

    device = check_device(device)
    generator = torch.Generator().manual_seed(97)
    cases = []
    for B, n, d, steps, dtype in ((6, 11, 5, 3, torch.float64), (1, 9, 4, 2, torch.float64),
                                  (8, 13, 6, 4, torch.float64), (5, 11, 5, 3, torch.float32)):
        task = sample_linear_regression(B, n, d, generator=generator, dtype=torch.float64, noise_std=0.1)
        a = prefix_predictions("newton", task.X, task.y, steps)[steps]
        b = prefix_predictions("gd", task.X, task.y, 4 * steps)[4 * steps]
        expected = similarity_of_errors(a, b, task.y, reduction="none")
        args = tuple(t.to(device=device, dtype=dtype) for t in (a, b, task.y))
        cases.append((args, expected.to(device=device, dtype=dtype)))

    def cosine(u, v):
        return (u * v).sum(-1) / (u.norm(dim=-1) * v.norm(dim=-1))

    def centered(u):
        return u - u.mean(-1, keepdim=True)

    check_function(
        fn,
        cases,
        name="similarity_of_errors",
        known_mistakes={
            "you compare the predictions ŷ^A and ŷ^B; the metric compares the residuals ŷ − y":
                lambda a, b, y: cosine(a, b),
            "you center the residuals (a correlation coefficient); the metric is their plain cosine":
                lambda a, b, y: cosine(centered(a - y), centered(b - y)),
            "the dot product of the residuals is not divided by their norms (a cosine is)":
                lambda a, b, y: ((a - y) * (b - y)).sum(-1),
        },
    )


def check_newton_iterate(fn: Callable, *, device=None) -> None:
    r"""Check Iterative Newton for least squares: ``fn(X, y, alpha, steps)`` must return
    ``w_k = M_k Xᵀy`` after ``k = steps`` steps of ``M_{k+1} = 2M_k − M_k S M_k`` from
    ``M_0 = αS``, ``S = XᵀX``.

    Parameters
    ----------
    fn : callable
        ``fn(X, y, alpha, steps) -> Tensor of shape (B, d)`` for ``X (B, n, d)``, ``y (B, n)``,
        one ``α`` per prompt, ``alpha (B,)``, and an int ``steps >= 0``.
    device : str or torch.device, optional
        Where the cases live (default CPU).

    Raises
    ------
    ExerciseError
        On the first case answered wrongly, saying what is wrong (``M_0 = αI``, ``S = XᵀX/n``,
        a step too few or too many, the ``2`` missing, ...).

    Notes
    -----
    The reference is :func:`tfnewton.algorithms.newton_least_squares`. ``α`` is between 0.5 and
    1.5 times :func:`tfnewton.algorithms.default_newton_alpha` of ``S`` (``1/λ_max(S)²``),
    different per prompt; prompts from :func:`tfnewton.tasks.sample_linear_regression`, some
    with fewer points than dimensions, some ill-conditioned; five cases, one in float32.
    """
    from .algorithms import newton_least_squares
    from .tasks import sample_linear_regression

    device = check_device(device)
    generator = torch.Generator().manual_seed(101)
    cases = []
    for B, n, d, steps, kappa, dtype in ((4, 10, 5, 3, 1.0, torch.float64), (1, 8, 3, 0, 1.0, torch.float64),
                                         (6, 4, 6, 5, 1.0, torch.float64), (3, 12, 4, 8, 100.0, torch.float64),
                                         (5, 11, 5, 2, 1.0, torch.float32)):
        task = sample_linear_regression(B, n, d, generator=generator, dtype=torch.float64, condition_number=kappa)
        S = task.X.mT @ task.X
        alpha = (0.5 + torch.rand(B, generator=generator, dtype=torch.float64)) * default_newton_alpha(S)
        expected = newton_least_squares(task.X, task.y, steps, alpha=alpha)[steps]
        args = tuple(t.to(device=device, dtype=dtype) for t in (task.X, task.y, alpha)) + (steps,)
        cases.append((args, expected.to(device=device, dtype=dtype)))

    def newton(X, y, alpha, steps, *, start="S", scale=1.0, first=2.0):
        S = X.mT @ X / scale
        eye = torch.eye(S.shape[-1], dtype=S.dtype, device=S.device)
        M = alpha.reshape(-1, 1, 1) * (S if start == "S" else eye)
        for _ in range(steps):
            M = first * M - M @ S @ M
        return (M @ (X.mT @ y.unsqueeze(-1)) / scale).squeeze(-1)

    check_function(
        fn,
        cases,
        name="newton_iterate",
        known_mistakes={
            "you start from M₀ = αI; Iterative Newton starts from M₀ = αS (S = XᵀX)":
                lambda X, y, a, k: newton(X, y, a, k, start="I"),
            "you use S = XᵀX/n; here S = XᵀX, the α given is scaled for it":
                lambda X, y, a, k: newton(X, y, a, k, scale=X.shape[1]),
            "one step too few: w_k needs k updates of M after M₀ (w₀ = αSXᵀy)":
                lambda X, y, a, k: newton(X, y, a, k - 1),
            "one step too many: w_0 is M₀Xᵀy, with no update": lambda X, y, a, k: newton(X, y, a, k + 1),
            "the update lacks its 2: M_{k+1} = 2M_k − M_k S M_k":
                lambda X, y, a, k: newton(X, y, a, k, first=1.0),
        },
    )


def check_min_norm_prefix_predictions(fn: Callable, *, device=None) -> None:
    r"""Check least squares as an in-context learner: ``fn(X, y)`` must return, at every position
    ``i``, the prediction ``x_iᵀ ŵ`` of the minimum-norm least-squares fit ``ŵ = X_{<i}⁺ y_{<i}``
    on the pairs before it (``0`` at ``i = 0``).

    Parameters
    ----------
    fn : callable
        ``fn(X, y) -> Tensor of shape (B, n)`` for ``X (B, n, d)``, ``y (B, n)``.
    device : str or torch.device, optional
        Where the cases live (default CPU).

    Raises
    ------
    ExerciseError
        On the first case answered wrongly, saying what is wrong (the pair itself or the whole
        prompt in the fit, 0 where fewer than ``d`` pairs were seen, ...).

    Notes
    -----
    The reference is :func:`tfnewton.algorithms.prefix_predictions` with ``"ols"``
    (:func:`tfnewton.algorithms.least_squares`, ``pinv``). Labels carry noise, so a fit that
    sees the pair it predicts is caught at every position. Four cases, one of a single prompt,
    one in float32.
    """
    from .algorithms import least_squares, prefix_predictions
    from .tasks import sample_linear_regression

    device = check_device(device)
    generator = torch.Generator().manual_seed(103)
    cases = []
    for B, n, d, dtype in ((5, 11, 5, torch.float64), (1, 7, 3, torch.float64), (4, 9, 6, torch.float64),
                           (6, 11, 4, torch.float32)):
        task = sample_linear_regression(B, n, d, generator=generator, dtype=torch.float64, noise_std=0.3)
        expected = prefix_predictions("ols", task.X, task.y, 0)[0]
        args = tuple(t.to(device=device, dtype=dtype) for t in (task.X, task.y))
        cases.append((args, expected.to(device=device, dtype=dtype)))

    def fit_on(X, y, pairs, *, zero_below_d=False, first=1):
        """Prediction at positions first … n − 1 from the pairs pairs(i, n) (a slice); 0 before."""
        B, n, d = X.shape
        out = torch.zeros_like(y)
        for i in range(first, n):
            rows = pairs(i, n)
            if rows.stop == 0 or (zero_below_d and rows.stop - (rows.start or 0) < d):
                continue
            w = least_squares(X[:, rows], y[:, rows])
            out[:, i] = (w * X[:, i]).sum(-1)
        return out

    check_function(
        fn,
        cases,
        name="min_norm_prefix_predictions",
        known_mistakes={
            **{f"the fit includes the pair it predicts (pairs 0 … i){where}; position i may only use "
               "the pairs before it, 0 … i − 1": lambda X, y, first=first: fit_on(
                   X, y, lambda i, n: slice(0, i + 1), first=first)
               for first, where in ((1, ""), (0, ", from position 0 on"))},
            **{f"the fit uses the whole prompt, later pairs included{where}; position i may only use "
               "the pairs before it": lambda X, y, first=first: fit_on(X, y, lambda i, n: slice(0, n), first=first)
               for first, where in ((1, ""), (0, ", from position 0 on"))},
            "you predict 0 where fewer than d pairs were seen; there the minimum-norm solution "
            "X⁺y (torch.linalg.pinv) still predicts": lambda X, y: fit_on(X, y, lambda i, n: slice(0, i),
                                                                          zero_below_d=True),
        },
    )


def check_smallest_adequate_width(fn: Callable, *, device=None) -> None:
    r"""Check the reading of a width sweep: ``fn(widths, errors, factor)`` must return, for each
    sweep, the smallest width from which on every model's error is at most ``factor`` times the
    widest model's.

    Parameters
    ----------
    fn : callable
        ``fn(widths, errors, factor) -> Tensor of shape (B,)`` for ``widths (W,)`` (increasing,
        in the dtype of the errors), ``errors (B, W)`` (one sweep per row) and a float
        ``factor >= 1``.
    device : str or torch.device, optional
        Where the cases live (default CPU).

    Raises
    ------
    ExerciseError
        On the first case answered wrongly, saying what is wrong (the first width within the
        factor although a wider one fails, a bound from the smallest error, a position instead
        of a width, ...).

    Notes
    -----
    The reference is :func:`tfnewton.architectures.smallest_adequate_width`, row by row. The
    sweeps fall with width and have random dips and bumps, so a narrow model within the factor
    is often followed by a wider one that is not; four cases, one of a single sweep, one in
    float32.
    """
    from .architectures import smallest_adequate_width

    device = check_device(device)
    generator = torch.Generator().manual_seed(71)
    cases = []
    for B, W, factor, dtype in ((8, 5, 2.0, torch.float64), (1, 4, 2.0, torch.float64),
                                (12, 6, 1.5, torch.float64), (8, 5, 2.0, torch.float32)):
        widths = torch.tensor([8.0 * 2**i for i in range(W)], dtype=torch.float64)
        trend = torch.logspace(0, -2, W, dtype=torch.float64)  # errors fall with width
        errors = trend * torch.exp(0.6 * torch.randn(B, W, generator=generator, dtype=torch.float64))
        errors = errors.to(dtype).double()  # the reference sees the values the student sees
        expected = torch.tensor([float(smallest_adequate_width(widths.int().tolist(), row.tolist(), factor))
                                 for row in errors], dtype=torch.float64)
        cases.append(((widths.to(device=device, dtype=dtype), errors.to(device=device, dtype=dtype), factor),
                      expected.to(device=device, dtype=dtype)))

    def first_within(widths, errors, factor):
        return widths[(errors <= factor * errors[:, -1:]).int().argmax(dim=1)]

    def tail_start(errors, bound):  # the first position of the run of True that ends the row
        ok = (errors <= bound).flip(1).int().cumprod(1).flip(1)
        return ok.shape[1] - ok.sum(1)

    def position(widths, errors, factor):
        return tail_start(errors, factor * errors[:, -1:]).to(errors.dtype)

    check_function(
        fn,
        cases,
        name="smallest_adequate_width",
        known_mistakes={
            "you return the first width within the factor, but a wider model above the bound "
            "comes after it: count a width only if every wider one is within the factor too":
                first_within,
            "the bound is factor × the smallest error in the sweep; it is factor × the widest "
            "model's error (the last column)":
                lambda w, e, f: w[tail_start(e, f * e.min(1, keepdim=True).values).clamp(max=len(w) - 1)],
            "you return the position of the width in the grid, not the width itself": position,
        },
    )


# ---------------------------------------------------------------------- linear regression thesis


def check_newton_spectral_filter(fn: Callable, *, device=None) -> None:
    r"""Check Iterative Newton's spectral filter: ``fn(lam, alpha, k)`` must return
    ``1 − (1 − αλ²)^{2^k}`` for every eigenvalue ``λ`` of ``S = XᵀX``.

    Parameters
    ----------
    fn : callable
        ``fn(lam, alpha, k) -> Tensor of shape (B, d)`` for eigenvalues ``lam (B, d)``, one
        ``α`` per problem, ``alpha (B,)``, and an int ``k >= 0``.
    device : str or torch.device, optional
        Where the cases live (default CPU).

    Raises
    ------
    ExerciseError
        On the first wrong case, naming the mistake (GD's filter in ``λ``, ``k`` steps where
        there are ``2^k`` squarings, the filter without its ``1 −``).

    Notes
    -----
    The reference is :func:`tfnewton.separation.newton_filter`; the eigenvalues are those of
    random prompts' Gram matrices (:func:`tfnewton.separation.prefix_spectra`), ``α =
    1/λ_max²``.
    """
    from .separation import newton_filter
    from .tasks import sample_linear_regression

    device = check_device(device)
    generator = torch.Generator().manual_seed(171)
    cases = []
    for B, n, d, k, kappa, dtype in ((5, 9, 4, 2, 1.0, torch.float64), (1, 7, 3, 0, 1.0, torch.float64),
                                     (6, 12, 5, 3, 100.0, torch.float64), (4, 9, 4, 1, 10.0, torch.float32)):
        task = sample_linear_regression(B, n, d, generator=generator, dtype=torch.float64, condition_number=kappa)
        lam = torch.linalg.eigvalsh(task.X.mT @ task.X)
        alpha = 1.0 / lam[:, -1] ** 2
        expected = newton_filter(lam, [k], float(alpha[0]) if B == 1 else "default")[0]
        args = (lam.to(device=device, dtype=dtype), alpha.to(device=device, dtype=dtype), k)
        cases.append((args, expected.to(device=device, dtype=dtype)))

    check_function(
        fn,
        cases,
        name="newton_spectral_filter",
        known_mistakes={
            "your filter is in λ (gradient descent's shape); Newton's residual I − M_k S is "
            "(I − αS²)^(2^k), a polynomial in λ²":
                lambda lam, alpha, k: 1 - (1 - alpha[:, None] * lam) ** (2 ** k),
            "the power is k; each Newton step squares the residual, so after k steps it is 2^k":
                lambda lam, alpha, k: 1 - (1 - alpha[:, None] * lam ** 2) ** max(k, 1),
            "you return the residual's eigenvalue (1 − αλ²)^(2^k); the filter is one minus it":
                lambda lam, alpha, k: (1 - alpha[:, None] * lam ** 2) ** (2 ** k),
        },
    )


def check_fraction_of_the_way(fn: Callable, *, device=None) -> None:
    r"""Check the climbing-layer yardstick: ``fn(errors)`` must return, for every layer, how far
    its read-out error is from the last layer's, as a fraction of the embedding's distance:
    ``(e_ℓ − e_L) / (e_0 − e_L)`` (1 at the embedding, 0 at the last layer).

    Parameters
    ----------
    fn : callable
        ``fn(errors) -> Tensor of shape (B, L + 1)`` for read-out errors ``(B, L + 1)``, one row
        per model, the embedding first.
    device : str or torch.device, optional

    Raises
    ------
    ExerciseError
        Naming the mistake (measured from the embedding, no subtraction of the last layer's
        error, ...).

    Notes
    -----
    The reference is the rule of :func:`tfnewton.separation.climbing_layers` (a layer climbs
    when the fraction lies in [0.05, 0.90]), on random decreasing error curves.
    """
    device = check_device(device)
    generator = torch.Generator().manual_seed(172)
    cases = []
    for B, L1, dtype in ((4, 9, torch.float64), (1, 7, torch.float64), (3, 5, torch.float32)):
        drops = torch.rand(B, L1 - 1, generator=generator, dtype=torch.float64)
        errors = 0.05 + torch.cat([torch.zeros(B, 1, dtype=torch.float64), drops], 1).flip(1).cumsum(1).flip(1)
        errors = errors + 0.02 * torch.rand(B, L1, generator=generator, dtype=torch.float64)
        expected = (errors - errors[:, -1:]) / (errors[:, :1] - errors[:, -1:])
        cases.append(((errors.to(device=device, dtype=dtype),), expected.to(device=device, dtype=dtype)))

    check_function(
        fn,
        cases,
        name="fraction_of_the_way",
        known_mistakes={
            "you measure from the embedding ((e_0 − e_ℓ)/(e_0 − e_L)); the fraction is the way left "
            "to the last layer, 1 at the embedding and 0 at the last layer":
                lambda e: (e[:, :1] - e) / (e[:, :1] - e[:, -1:]),
            "the last layer's error is not subtracted (e_ℓ / e_0); the yardstick runs from the last "
            "layer's error, not from 0":
                lambda e: e / e[:, :1],
        },
    )


def check_similarity_from_position(fn: Callable, *, device=None) -> None:
    r"""Check the similarity of errors over positions ``first … n − 1``: ``fn(pred_a, pred_b, y,
    first)`` must return, per prompt, the cosine of the two residual vectors restricted to
    those positions.

    Parameters
    ----------
    fn : callable
        ``fn(pred_a, pred_b, y, first) -> Tensor of shape (B,)`` for predictions and labels of
        shape ``(B, n)`` and an int ``first``.
    device : str or torch.device, optional

    Raises
    ------
    ExerciseError
        Naming the mistake (every position kept, a cosine per position across prompts, ...).

    Notes
    -----
    The reference is :func:`tfnewton.metrics.similarity_of_errors` on the kept positions (the
    protocol of :func:`tfnewton.separation.newton_gd_gap`'s ``first_position``); the predictors
    are Newton's and GD's prefix predictions, whose position-0 residuals are both ``−y_0``.
    """
    from .metrics import similarity_of_errors
    from .separation import gd_filter, newton_filter, prefix_spectra
    from .tasks import sample_linear_regression

    device = check_device(device)
    generator = torch.Generator().manual_seed(173)
    cases = []
    for B, n, d, first, dtype in ((5, 11, 5, 5, torch.float64), (6, 11, 5, 1, torch.float64),
                                  (1, 9, 4, 1, torch.float64), (4, 11, 5, 2, torch.float32)):
        task = sample_linear_regression(B, n, d, generator=generator, dtype=torch.float64, condition_number=30.0)
        spectra = prefix_spectra(task.X, task.y)
        a = spectra.predict(newton_filter(spectra.eigenvalues, [3]))[0]
        b = spectra.predict(gd_filter(spectra.eigenvalues, [16], "per_problem"))[0]
        expected = similarity_of_errors(a[:, first:], b[:, first:], task.y[:, first:], reduction="none")
        args = tuple(t.to(device=device, dtype=dtype) for t in (a, b, task.y)) + (first,)
        cases.append((args, expected.to(device=device, dtype=dtype)))

    def cosine(u, v, dim=-1):
        return (u * v).sum(dim) / (u.norm(dim=dim) * v.norm(dim=dim))

    check_function(
        fn,
        cases,
        name="similarity_from_position",
        known_mistakes={
            "every position is kept; compare positions first … n − 1 only":
                lambda a, b, y, first: cosine(a - y, b - y),
            "one position too many: positions first − 1 … n − 1 are kept":
                lambda a, b, y, first: cosine((a - y)[:, first - 1:], (b - y)[:, first - 1:]),
            "the cosine is taken over the prompts at each position; it is over the positions of each prompt":
                lambda a, b, y, first: cosine((a - y)[:, first:], (b - y)[:, first:], dim=0),
        },
    )
