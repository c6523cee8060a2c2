"""One optimizer step of training, and what makes it cheap.

:class:`TrainStep` is the step :func:`tfnewton.train.train` takes (and the benchmarks time):
the forward pass under the chosen precision, the loss in float32, the backward pass,
gradient-norm clipping and fused AdamW; an update whose gradient norm is not finite is
skipped. It takes plain arguments (a model, a loss, AdamW's hyper-parameters), so it
serves any loop; :class:`tfnewton.train.TrainStep` builds one from a recipe.

What keeps the step cheap without changing what it computes:

- the forward's ``skip_unused=True`` (the models drop what no prediction reads);
- on a CPU, all parameters in one flat buffer (:func:`flatten_parameters`), so zeroing,
  clipping and AdamW are one call each; :func:`convert_optimizer_state` moves AdamW's
  state between that layout and the per-parameter one (a run saved on one process
  resumes on a GPU or under torchrun, and back);
- bf16 autocast where the device multiplies bf16 natively (:func:`resolve_precision`,
  :func:`autocast_context`); the weights, AdamW and the loss stay float32.

:func:`step_time_ms` times a step. The measured figures are in ``benchmarks/README.md``.
"""

from __future__ import annotations

import contextlib
import time
from typing import Callable

import torch

from ._validate import check_device, check_int, check_positive

__all__ = [
    "PRECISIONS",
    "TrainStep",
    "autocast_context",
    "convert_optimizer_state",
    "cpu_has_native_bf16",
    "flatten_parameters",
    "resolve_precision",
    "step_time_ms",
]

PRECISIONS = ("float32", "bfloat16", "auto")
LAYOUTS = ("flat", "per_parameter")


# --------------------------------------------------------------------------- precision


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices natively (AVX512-BF16 or AMX), via oneDNN.

    Without it, bf16 is emulated and *slower* than float32, so ``"auto"`` stays float32.
    """
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


def resolve_precision(precision: str, device=None) -> str:
    """``"float32"`` or ``"bfloat16"``: what ``precision`` means on ``device``.

    ``"auto"`` is ``"bfloat16"`` on a CUDA device that supports it and on a CPU with native
    bf16 (:func:`cpu_has_native_bf16`), ``"float32"`` elsewhere.

    Examples
    --------
    >>> resolve_precision("float32", "cpu")
    'float32'
    """
    _check_precision(precision)
    return _resolved(precision, check_device(device))


def autocast_context(precision: str, device):
    """The context the forward pass runs in: bf16 autocast, or nothing for float32."""
    _check_precision(precision)
    device = check_device(device)
    return _autocast(_resolved(precision, device), device)


def _check_precision(precision) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")


def _resolved(precision: str, device: torch.device) -> str:
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    if device.type == "cpu":
        return "bfloat16" if cpu_has_native_bf16() else "float32"
    return "float32"


def _autocast(resolved: str, device: torch.device):
    if resolved == "bfloat16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# --------------------------------------------------------------------------- the flat parameter buffer


def flatten_parameters(model: torch.nn.Module) -> torch.nn.Parameter:
    """Put all of ``model``'s parameters in one buffer and their gradients in another.

    Each parameter becomes a view of a slice of one flat tensor, and its ``.grad`` a view of
    the matching slice of a second one; autograd then accumulates into those views in
    place. The returned :class:`torch.nn.Parameter` *is* the flat buffer, with the flat
    gradient as its ``.grad``: AdamW over it and the gradient norm of it are one call each
    instead of one per parameter. Zero the gradients with ``flat.grad.zero_()``:
    ``zero_grad(set_to_none=True)`` on the model would drop the views.

    Parameters
    ----------
    model : torch.nn.Module
        Its parameters must share one dtype and device; their values are kept.

    Returns
    -------
    torch.nn.Parameter, shape (P,)
        ``P`` is the number of parameters of ``model``.
    """
    params = list(model.parameters())
    if not params:
        raise ValueError("model has no parameters to flatten")
    kinds = {(p.dtype, p.device) for p in params}
    if len(kinds) != 1:
        raise ValueError(f"model's parameters must share one dtype and device to be flattened, got {sorted(map(str, kinds))}")
    dtype, device = kinds.pop()
    total = sum(p.numel() for p in params)
    flat = torch.empty(total, dtype=dtype, device=device)
    grad = torch.zeros_like(flat)
    offset = 0
    with torch.no_grad():
        for p in params:
            n = p.numel()
            flat[offset:offset + n].copy_(p.reshape(-1))
            p.data = flat[offset:offset + n].view_as(p)
            p.grad = grad[offset:offset + n].view_as(p)
            offset += n
    flat = torch.nn.Parameter(flat)
    flat.grad = grad
    return flat


def convert_optimizer_state(state: dict, layout: str, to: str, shapes) -> dict:
    """An AdamW ``state_dict`` saved for one parameter layout, for the other.

    ``"flat"`` is one parameter (:func:`flatten_parameters`), ``"per_parameter"`` one entry
    per tensor of ``model.parameters()``, whose ``shapes`` (in that order) say how to cut the
    flat moments. So a run saved on one CPU process resumes on a GPU or under torchrun and
    back, and states from before the flat buffer resume into it. The moments are
    concatenated or sliced, not recomputed: AdamW then takes the same steps.
    """
    for name, value in (("layout", layout), ("to", to)):
        if value not in LAYOUTS:
            raise ValueError(f"{name} must be 'flat' or 'per_parameter', got {value!r}")
    if layout == to:
        return state
    groups = state["param_groups"]
    if len(groups) != 1:
        raise ValueError(f"expected an optimizer state with one parameter group, got {len(groups)}")
    shapes = [torch.Size(s) for s in shapes]
    saved = state["state"]
    if to == "flat":
        if len(groups[0]["params"]) != len(shapes):
            raise ValueError(f"the saved optimizer has {len(groups[0]['params'])} parameters, this model {len(shapes)}")
        new_state = {}
        if saved:  # empty before the first step
            entries = [saved[i] for i in groups[0]["params"]]
            steps = {float(e["step"]) for e in entries if "step" in e}
            if len(steps) > 1:
                raise ValueError(f"the saved parameters took different numbers of steps ({sorted(steps)}); "
                                 "one flat AdamW state cannot hold them")
            new_state[0] = {key: torch.cat([e[key].reshape(-1) for e in entries]) if entries[0][key].ndim else entries[0][key]
                            for key in entries[0]}
        return {"state": new_state, "param_groups": [{**groups[0], "params": [0]}]}
    sizes = [s.numel() for s in shapes]
    new_state = {}
    if saved:
        entry = saved[groups[0]["params"][0]]
        for key, value in entry.items():
            if value.ndim and value.numel() != sum(sizes):
                raise ValueError(f"the saved flat optimizer state has {value.numel()} values, this model {sum(sizes)}")
        offsets = [0]
        for n in sizes:
            offsets.append(offsets[-1] + n)
        for i, shape in enumerate(shapes):
            new_state[i] = {key: value[offsets[i]:offsets[i + 1]].reshape(shape).clone() if value.ndim else value.clone()
                            for key, value in entry.items()}
    return {"state": new_state, "param_groups": [{**groups[0], "params": list(range(len(shapes)))}]}


# --------------------------------------------------------------------------- the step


class TrainStep:
    """One optimizer step: forward, loss, backward, clipping, AdamW.

    ``step(X, y)`` runs the forward pass (``skip_unused=True`` by default, under the
    autocast of ``precision``), ``loss`` in float32, the backward pass, gradient-norm
    clipping at ``grad_clip`` and AdamW, and returns the loss. A step whose gradient norm is
    not finite is skipped (``step.skipped`` counts them). On a CPU (``flat=None``: decide by
    the model's device) the parameters live in one flat buffer (:func:`flatten_parameters`),
    so zeroing, clipping and AdamW are one call each.

    Parameters
    ----------
    model : torch.nn.Module
        Trained in place; ``model(X, y, skip_unused=...)`` returns the predictions
        ``(B, n)``. The step runs where its parameters live.
    loss : callable
        ``loss(pred, y)`` → scalar tensor, with ``pred`` the float32 predictions ``(B, n)``
        (e.g. the ``loss`` of :func:`tfnewton.tasks.training_task`).
    lr : float
        AdamW's learning rate (a loop changes it with :meth:`set_lr`).
    betas : tuple of float
    weight_decay : float
    grad_clip : float
        Largest gradient norm, ``0`` for no clipping.
    precision : {"float32", "bfloat16", "auto"}
        The forward's arithmetic (:func:`resolve_precision`); ``step.precision`` holds what
        it resolved to.
    flat : bool, optional
        Force the flat buffer on or off; by default on for a CPU.
    skip_unused : bool
        The forward's ``skip_unused`` (``False`` only to time the plain forward).

    Examples
    --------
    >>> import torch
    >>> from tfnewton.models import build_model
    >>> from tfnewton.step import TrainStep
    >>> model = build_model("gpt2", 3, n_layers=1, width=8, heads=2, n_points=5, seed=0)
    >>> step = TrainStep(model, loss=lambda pred, y: (pred - y).pow(2).mean(), lr=1e-3)
    >>> loss = step(torch.randn(4, 5, 3), torch.randn(4, 5))
    >>> loss.shape, step.skipped, step.layout
    (torch.Size([]), 0, 'flat')
    """

    def __init__(self, model: torch.nn.Module, *, loss: Callable, lr: float, betas=(0.9, 0.999),
                 weight_decay: float = 0.0, grad_clip: float = 1.0, precision: str = "float32",
                 flat: bool | None = None, skip_unused: bool = True):
        if not callable(loss):
            raise TypeError(f"loss must be a callable loss(pred, y), got {type(loss).__name__}")
        _check_precision(precision)
        betas = tuple(check_positive(b, "betas", allow_zero=True) for b in betas)
        params = list(model.parameters())
        if not params:
            raise ValueError("model has no parameters to train")
        device = params[0].device  # the model's own device: nothing to validate
        self.model, self.loss, self.skip_unused = model, loss, skip_unused
        self.grad_clip = check_positive(grad_clip, "grad_clip", allow_zero=True)
        self.precision = _resolved(precision, device)
        self.autocast = _autocast(self.precision, device)
        use_flat = device.type == "cpu" if flat is None else flat
        self.flat = flatten_parameters(model) if use_flat else None
        self.optimizer = torch.optim.AdamW([self.flat] if self.flat is not None else params,
                                           lr=check_positive(lr, "lr"), betas=betas,
                                           weight_decay=check_positive(weight_decay, "weight_decay", allow_zero=True),
                                           fused=True)
        self.skipped = 0

    @property
    def layout(self) -> str:
        """``"flat"`` or ``"per_parameter"``: how the optimizer holds the parameters."""
        return "flat" if self.flat is not None else "per_parameter"

    def set_lr(self, lr: float) -> None:
        """The learning rate of the next updates (a schedule's value)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def optimizer_state(self) -> dict:
        """AdamW's ``state_dict`` in this step's :attr:`layout`."""
        return self.optimizer.state_dict()

    def load_optimizer_state(self, state: dict, layout: str) -> None:
        """Load an AdamW ``state_dict`` saved in ``layout`` (converted to this step's)."""
        shapes = [p.shape for p in self.model.parameters()]
        self.optimizer.load_state_dict(convert_optimizer_state(state, layout, self.layout, shapes))

    def forward_backward(self, X: torch.Tensor, y: torch.Tensor, forward=None, *, loss_from: int = 0) -> torch.Tensor:
        """Forward, loss and backward (gradients zeroed first); ``forward`` defaults to the
        model (a loop passes its DDP wrapper or its compiled model). The loss counts the
        positions ``loss_from, ..., n - 1``. Returns the loss."""
        forward = self.model if forward is None else forward
        with self.autocast:
            pred = forward(X, y, skip_unused=self.skip_unused)
        loss = self.loss(pred.float()[:, loss_from:], y[:, loss_from:])  # float32 whatever the forward's precision
        if self.flat is not None:
            self.flat.grad.zero_()
        else:
            self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        return loss

    def clip_and_update(self) -> bool:
        """Clip the gradient norm and take the AdamW step; ``False`` (and no update) where the
        norm is not finite."""
        max_norm = self.grad_clip if self.grad_clip > 0 else float("inf")
        if self.flat is not None:  # clip_grad_norm_'s arithmetic, on the one flat gradient
            grad_norm = torch.linalg.vector_norm(self.flat.grad)
            if max_norm < float("inf"):
                self.flat.grad.mul_(torch.clamp(max_norm / (grad_norm + 1e-6), max=1.0))
        else:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        # A rare prompt can overflow a model without LayerNorm (its output is a polynomial
        # of high degree in the input); skip that update instead of poisoning the weights.
        if not bool(torch.isfinite(grad_norm)):
            self.skipped += 1
            return False
        self.optimizer.step()
        return True

    def __call__(self, X: torch.Tensor, y: torch.Tensor, forward=None) -> torch.Tensor:
        loss = self.forward_backward(X, y, forward)
        self.clip_and_update()
        return loss


def step_time_ms(step: TrainStep, X: torch.Tensor, y: torch.Tensor, *, repeats: int = 15, warmup: int = 3,
                 forward=None) -> float:
    """Median milliseconds of ``step(X, y)`` over ``repeats`` calls after ``warmup`` untimed
    ones (a GPU is synchronised around each call). The step trains the model: time a copy."""
    check_int(repeats, "repeats", minimum=1)
    check_int(warmup, "warmup", minimum=0)
    sync = torch.cuda.synchronize if X.device.type == "cuda" else (lambda: None)
    times = []
    for i in range(warmup + repeats):
        sync()
        t = time.perf_counter()
        step(X, y, forward)
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    times.sort()
    mid = len(times) // 2
    return 1000 * (times[mid] if len(times) % 2 else 0.5 * (times[mid - 1] + times[mid]))
