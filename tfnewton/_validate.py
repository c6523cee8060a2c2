"""Validation at the boundary of every public function.

Public functions call these once on their inputs and then trust them inside
(scikit-learn's ``check_array`` habit). Every error names the argument, what was
expected and what came, so a student never has to read a torch traceback.
"""

from __future__ import annotations

import math
import numbers
from typing import Sequence

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_tensor(
    value,
    name: str,
    *,
    ndim: int | Sequence[int] | None = None,
    finite: bool = True,
    floating: bool = True,
) -> torch.Tensor:
    """Check that ``value`` is a floating tensor of the given rank with finite entries.

    Parameters
    ----------
    value : object
        What the caller passed.
    name : str
        The argument's name, used in the error message.
    ndim : int or sequence of int, optional
        Allowed number of dimensions.
    finite : bool
        Reject NaN and ±inf.
    floating : bool
        Require a floating dtype (float16/bfloat16/float32/float64).

    Returns
    -------
    Tensor
        ``value`` itself (never copied or cast).
    """
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if floating and value.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} must have a floating dtype (float32 or float64), got {value.dtype}"
        )
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if value.ndim not in allowed:
            expected = " or ".join(str(a) for a in allowed)
            raise ValueError(
                f"{name} must have {expected} dimensions, got shape {tuple(value.shape)}"
            )
    if finite and value.numel() and not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} contains NaN or infinite entries")
    return value


def check_shape(value: torch.Tensor, name: str, expected: Sequence[int | None]) -> None:
    """Check ``value.shape`` against ``expected`` (``None`` matches any size)."""
    shape = tuple(value.shape)
    ok = len(shape) == len(expected) and all(
        e is None or e == s for e, s in zip(expected, shape)
    )
    if not ok:
        pretty = "(" + ", ".join("*" if e is None else str(e) for e in expected) + ")"
        raise ValueError(f"{name} must have shape {pretty}, got {shape}")


def check_same_device_dtype(named: dict[str, torch.Tensor]) -> None:
    """All tensors share one device and one dtype."""
    items = list(named.items())
    first_name, first = items[0]
    for other_name, other in items[1:]:
        if other.dtype != first.dtype:
            raise TypeError(
                f"{other_name} has dtype {other.dtype} but {first_name} has {first.dtype}; "
                "pass both in the same dtype"
            )
        if other.device != first.device:
            raise ValueError(
                f"{other_name} is on {other.device} but {first_name} is on {first.device}; "
                "pass both on the same device"
            )


def check_int(value, name: str, *, minimum: int = 0) -> int:
    """An integer (not a bool) no smaller than ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_positive(value, name: str, *, allow_zero: bool = False) -> float:
    """A finite real number > 0 (or >= 0 with ``allow_zero``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} ({value!r})")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return value


def check_optional_positive(value, name: str):
    """``None`` or a positive real; a float or a tensor of per-problem values."""
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        check_tensor(value, name, ndim=(0, 1))
        if bool((value <= 0).any()):
            raise ValueError(f"{name} must be > 0, got a tensor with entries <= 0")
        return value
    return check_positive(value, name)


def check_device(device) -> torch.device:
    """``None`` (CPU), a string or a ``torch.device``; CUDA only where there is one."""
    if device is None:
        return torch.device("cpu")
    if isinstance(device, torch.device):
        resolved = device
    elif isinstance(device, str):
        try:
            resolved = torch.device(device)
        except RuntimeError as err:
            raise ValueError(
                f"device must be 'cpu', 'cuda', 'cuda:N' or a torch.device, got {device!r}"
            ) from err
    else:
        raise TypeError(f"device must be a str or torch.device, got {type(device).__name__}")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for but CUDA is not available here")
    if resolved.type not in ("cpu", "cuda", "mps", "meta"):
        raise ValueError(f"device must be a CPU or CUDA device, got {device!r}")
    return resolved


def check_dtype(dtype, name: str = "dtype") -> torch.dtype:
    """A floating torch dtype."""
    if not isinstance(dtype, torch.dtype) or dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be a floating torch.dtype such as torch.float64, got {dtype!r}")
    return dtype


def check_generator(generator, device: torch.device) -> None:
    """A ``torch.Generator`` living on ``device`` (or ``None``)."""
    if generator is None:
        return
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if generator.device.type != device.type:
        raise ValueError(
            f"generator lives on {generator.device} but the samples are drawn on {device}; "
            f"make it with torch.Generator(device={str(device)!r})"
        )


def as_batch(value: torch.Tensor, name: str, unbatched_ndim: int) -> tuple[torch.Tensor, bool]:
    """Add a leading batch axis to an unbatched input; report whether one was added."""
    if value.ndim == unbatched_ndim:
        return value.unsqueeze(0), True
    if value.ndim == unbatched_ndim + 1:
        return value, False
    raise ValueError(
        f"{name} must have {unbatched_ndim} dimensions (one problem) or "
        f"{unbatched_ndim + 1} (a batch), got shape {tuple(value.shape)}"
    )


def check_regression_inputs(X, y, name_X: str = "X", name_y: str = "y") -> tuple[torch.Tensor, torch.Tensor]:
    """X of shape (B, n, d) and y of shape (B, n), same device and dtype, finite."""
    check_tensor(X, name_X, ndim=3)
    check_tensor(y, name_y, ndim=2)
    B, n, d = X.shape
    if n == 0 or d == 0 or B == 0:
        raise ValueError(f"{name_X} must have non-empty dimensions (B, n, d), got {tuple(X.shape)}")
    if tuple(y.shape) != (B, n):
        raise ValueError(
            f"{name_y} must have shape (B, n) = ({B}, {n}) to match {name_X} of shape "
            f"{tuple(X.shape)}, got {tuple(y.shape)}"
        )
    check_same_device_dtype({name_X: X, name_y: y})
    return X, y


def check_labels_pm1(y: torch.Tensor, name: str = "y") -> None:
    """Binary labels coded as -1 and +1."""
    if not bool(((y == 1) | (y == -1)).all()):
        bad = y[(y != 1) & (y != -1)].flatten()[:3].tolist()
        raise ValueError(f"{name} must hold labels -1 or +1 only, got values such as {bad}")


#: Slack on ``‖x‖ <= 1`` (float32 rounding of a normalised row is ~1e-7).
UNIT_BALL_SLACK = 1e-5


def check_unit_ball(X: torch.Tensor, name: str = "X", *, mu_name: str | None = "mu") -> None:
    """Rows (last axis) of norm at most 1, as Giannou et al.'s logistic construction assumes.

    The message says how to rescale: dividing the inputs by ``r = max‖x_i‖`` and ``mu`` by
    ``r²`` gives the same predictions, with weights ``r·w``.
    """
    norms = torch.linalg.vector_norm(X.detach(), dim=-1)
    largest = float(norms.max()) if norms.numel() else 0.0
    if largest > 1.0 + UNIT_BALL_SLACK:
        if mu_name is None:  # a query: it shares the context's scale
            fix = f"divide {name} and the context X by one r >= {largest:.4g} (and mu by r²)"
        else:
            fix = (f"divide {name} (and the queries) by r = max‖x_i‖ = {largest:.4g} and use {mu_name}/r²: the "
                   f"loss is the same function of the logits, so the predictions are unchanged and the "
                   f"weights become r·w")
        raise ValueError(f"{name} must have rows of norm at most 1 (‖x_i‖ <= 1 is assumed), got a row of norm "
                         f"{largest:.4g}; {fix}")
