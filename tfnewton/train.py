"""Train an in-context learner: a plain loop you can step through (nanoGPT's ``train.py``).

Every step draws a fresh batch of prompts from :mod:`tfnewton.tasks` *on the training
device* with a seeded ``torch.Generator``, runs the model, and takes one AdamW step. Around
that loop sit only the things a real run needs:

- **Garg et al.'s curriculum**: the effective dimension (the other coordinates of x are
  zero) and the prompt length start small and grow every ``curriculum_every`` steps;
- **the learning-rate schedule** measured to work on a CPU (``shared/notes/training.md``):
  linear warm-up, then constant, then a linear decay to 0 over the last 30 % of the steps
  (``"linear_decay"``, default); ``"cosine"`` and ``"constant"`` are there to compare;
- gradient clipping, a tqdm bar with the loss;
- **mixed precision** (``precision="auto"``, Fu et al.'s recipe's choice; the small CPU
  recipes stay float32): bf16 autocast on a GPU and on a CPU with native bf16 matrix units
  (AVX512-BF16 / AMX), float32 elsewhere —
  the weights, the optimizer and the loss stay float32; :func:`resolve_precision` says what
  a machine gets, and the checkpoint records it;
- **evaluation** every ``eval_every`` steps on a fixed set of ≥ 2000 prompts (fixed seed,
  so the numbers are comparable across steps and runs): the normalized error
  ``E[(ŷ − y)²] / d`` at ``k = 2d`` in-context examples next to OLS's;
- **checkpoints** written atomically with everything needed to continue bit-identically —
  model, optimizer, step, curriculum and the data generator's state — so ``resume=True``
  (``--resume``) after a crash, a kill or a ``stop_after`` ends with exactly the
  parameters of an uninterrupted run (same seed, same device);
- **DDP** under ``torchrun`` (one generator per rank, gradients averaged), the same code;
- **speed on a laptop CPU**: the forward skips what no prediction reads
  (``skip_unused=True``); on one CPU process the parameters live in one flat buffer
  (:func:`flatten_parameters`), so clipping and AdamW are one call each; and
  ``compile=True`` (the small GPT-2 recipe's choice) runs the step through
  ``torch.compile`` once the curriculum reaches the final prompt length.

Outputs in ``out_dir``: ``train_state.pt`` (to resume) and ``model.pt`` (the trained model
with its metadata, loadable by :func:`tfnewton.models.load_checkpoint`; the shipped
checkpoints in ``tfnewton/pretrained/`` are such files).

Command line::

    python -m tfnewton train --recipe gpt2_linreg_d5 --out runs/gpt2_linreg_d5
    python -m tfnewton train --recipe gpt2_linreg_d5 --out runs/gpt2_linreg_d5 --resume
    torchrun --nproc_per_node 2 -m tfnewton train --recipe gpt2_linreg_d5 --out runs/ddp
    python -m tfnewton train --recipe gpt2_linreg_d20_fu --device cuda --out runs/fu
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import shlex
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from . import __version__
from ._validate import check_device, check_int, check_positive
from . import step as step_module
# Re-exported: the book, the benchmarks and older code import these from tfnewton.train.
from .step import (PRECISIONS, autocast_context, convert_optimizer_state, cpu_has_native_bf16,  # noqa: F401
                   flatten_parameters, resolve_precision, step_time_ms)

TASKS = ("linear_regression", "sparse_recovery", "logistic_regression")
SCHEDULES = ("linear_decay", "cosine", "constant")


# --------------------------------------------------------------------------- configuration


@dataclass
class TrainConfig:
    """Everything that decides the trained weights (the recipe).

    Runtime choices that do not change the result on a given device (where to write, how
    often to evaluate or checkpoint, threads, progress bar) are arguments of :func:`train`.

    Parameters
    ----------
    task : {"linear_regression", "sparse_recovery", "logistic_regression"}
    kind : {"gpt2", "linear", "lstm"}
        Model family (:func:`tfnewton.models.build_model`).
    d, n_points : int
        Input dimension and prompt length (pairs) at the end of the curriculum.
    n_layers, width, heads, layernorm
        Architecture.
    mlp : bool
        ``"linear"`` only: a ReLU MLP after each attention layer (``False``: attention only).
    noise_std : float
        Standard deviation of the label noise, ``>= 0`` (``"linear_regression"`` and
        ``"sparse_recovery"``; logistic labels are already random, so it must stay 0 there).
    condition_number : float
        ``κ(Σ) >= 1`` of the input covariance (``"linear_regression"`` and
        ``"logistic_regression"``): Fu et al.'s ill-conditioned prompts, half the eigenvalues
        ``κ`` and half ``1`` in a random eigenbasis per prompt
        (:func:`tfnewton.tasks.sample_linear_regression`). Under the curriculum the
        covariance lives in the first ``d_eff`` coordinates. ``1`` gives isotropic inputs.
    sparsity : int
        Non-zeros of the signal (sparse recovery).
    batch_size : int
        Prompts per step, summed over DDP ranks.
    steps : int
        Optimizer steps.
    lr, warmup_steps, schedule, decay_fraction, min_lr
        Peak learning rate, linear warm-up, then ``schedule``: ``"linear_decay"`` keeps
        ``lr`` and decays linearly to ``min_lr`` over the last ``decay_fraction`` of the
        steps; ``"cosine"`` decays from the end of warm-up; ``"constant"`` never decays.
    weight_decay, beta1, beta2, grad_clip
        AdamW and gradient-norm clipping (``0`` disables clipping).
    curriculum : bool
        Garg et al.'s curriculum: effective dimension ``d_start, d_start + d_inc, ...``
        and prompt length ``n_start, n_start + n_inc, ...``, one increment every
        ``curriculum_every`` steps, capped at ``d`` and ``n_points``.
    seed : int
        Seeds the initialisation and the training data.
    eval_prompts, eval_seed : int
        Size and seed of the fixed evaluation set (≥ 2000 prompts: ±10 % noise at 1000).
    precision : {"float32", "bfloat16", "auto"}
        Arithmetic of the forward pass: ``"bfloat16"`` runs it under bf16 autocast (matrix
        products in bf16, accumulation, weights, optimizer and loss in float32);
        ``"auto"`` is ``"bfloat16"`` where the device does bf16 natively (see
        :func:`resolve_precision`) and ``"float32"`` elsewhere. :func:`train` records the
        resolved value, so the recorded command repeats the run on any machine.
    compile : bool
        Run the training step's forward and backward through ``torch.compile`` (as nanoGPT
        does). It compiles once, for the final prompt length: the curriculum's shorter
        prompts run eagerly. On the 2-core CPU the small recipe's step took ~20 % less time
        after a first compile of ~1 minute (``benchmarks/train_step.py``; later runs reuse
        inductor's on-disk cache). Where compiling fails (no C++ compiler, say) training
        goes on eagerly, with a warning; under ``torchrun`` it stays eager. Compiled kernels
        round differently from eager ones, so a run resumes bit-identically only with the
        same setting.
    """

    task: str = "linear_regression"
    kind: str = "gpt2"
    d: int = 5
    n_points: int = 11
    n_layers: int = 6
    width: int = 64
    heads: int = 4
    layernorm: bool = True
    mlp: bool = True
    noise_std: float = 0.0
    condition_number: float = 1.0
    sparsity: int = 3
    batch_size: int = 64
    steps: int = 20_000
    lr: float = 3e-4
    warmup_steps: int = 200
    schedule: str = "linear_decay"
    decay_fraction: float = 0.3
    min_lr: float = 0.0
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    grad_clip: float = 1.0
    curriculum: bool = True
    d_start: int = 2
    d_inc: int = 1
    n_start: int = 5
    n_inc: int = 2
    curriculum_every: int = 500
    seed: int = 0
    eval_prompts: int = 2000
    eval_seed: int = 1234
    precision: str = "float32"
    compile: bool = False

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        for name in ("d", "n_points", "n_layers", "width", "heads", "batch_size", "steps",
                     "d_start", "n_start", "curriculum_every", "eval_prompts", "sparsity"):
            check_int(getattr(self, name), name, minimum=1)
        for name in ("warmup_steps", "d_inc", "n_inc", "seed", "eval_seed"):
            check_int(getattr(self, name), name, minimum=0)
        for name in ("layernorm", "mlp", "curriculum", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {type(getattr(self, name)).__name__}")
        check_positive(self.lr, "lr")
        for name in ("noise_std", "min_lr", "weight_decay", "grad_clip"):
            check_positive(getattr(self, name), name, allow_zero=True)
        if not 0.0 <= self.decay_fraction <= 1.0:
            raise ValueError(f"decay_fraction must be in [0, 1], got {self.decay_fraction}")
        if self.task == "sparse_recovery" and self.sparsity > self.d:
            raise ValueError(f"sparsity must be <= d = {self.d}, got {self.sparsity}")
        # Recorded as floats, so metadata and the reproduce command read the same either way.
        self.noise_std = float(self.noise_std)
        self.condition_number = check_positive(self.condition_number, "condition_number")
        if self.condition_number < 1.0:
            raise ValueError(f"condition_number must be >= 1 (κ of the input covariance), got {self.condition_number}")
        if self.task == "logistic_regression" and self.noise_std != 0.0:
            raise ValueError(
                f"noise_std must be 0 for task 'logistic_regression' (its ±1 labels are drawn at "
                f"random already), got {self.noise_std}"
            )
        if self.task == "sparse_recovery" and self.condition_number != 1.0:
            raise ValueError(
                f"condition_number must be 1 for task 'sparse_recovery' (its measurement matrix is "
                f"i.i.d. Gaussian), got {self.condition_number}"
            )

    @property
    def eval_k(self) -> int:
        """The number of in-context examples at which quality is measured, ``2d`` (capped)."""
        return min(2 * self.d, self.n_points - 1)


# Recipes: named configurations whose trained models ship with the library (or, for Fu
# et al.'s size, are meant for a GPU). ``--recipe NAME`` starts from one; flags override.
RECIPES: dict[str, dict] = {
    # 6 x 64 GPT-2, d = 5: the measured CPU recipe (~0.3 M parameters). 16,000 steps: the
    # error crosses 0.01 soon after the linear decay starts (step 13,500 here, 16,000 with the
    # 20,000 steps the shipped checkpoint was trained for; benchmarks/time_to_quality.py).
    # float32: at 6 x 64 a step is bound by per-operation overhead, not by matrix products, so
    # bf16 buys little or loses (2-core Intel Xeon with AMX: 52 ms bf16 vs 48 ms float32;
    # benchmarks/train_step.py), and float32 repeats the shipped checkpoint's arithmetic.
    "gpt2_linreg_d5": dict(kind="gpt2", d=5, n_points=11, n_layers=6, width=64, heads=4, steps=16_000,
                           precision="float32", compile=True),
    # Giannou et al.'s linear-attention model, scaled down: attention-only blocks (the layer
    # of the constructions), with and without LayerNorm, same shape and recipe. Three layers:
    # without LayerNorm the model is a polynomial of degree 3^L in its input and a 6-layer
    # one overflowed on rare prompts within a few hundred steps (measured).
    "linear_ln_linreg_d5": dict(kind="linear", d=5, n_points=11, n_layers=3, width=32, heads=4,
                                layernorm=True, mlp=False, steps=10_000),
    "linear_noln_linreg_d5": dict(kind="linear", d=5, n_points=11, n_layers=3, width=32, heads=4,
                                  layernorm=False, mlp=False, steps=10_000),
    # The recurrent baseline of Garg et al. and Fu et al. (they used a 10-layer LSTM): 4 stacked
    # single-layer LSTM blocks of width 64 on a residual stream (~134 k parameters, ~9 ms a
    # step on one CPU thread). Measured over 5,000 steps: lr 3e-3 reached error 0.09 at k = 10,
    # 1e-3 only 0.15; the LSTM has no plateau to fear at the higher rate.
    "lstm_linreg_d5": dict(kind="lstm", d=5, n_points=11, n_layers=4, width=64, lr=3e-3, steps=40_000),
    # Garg et al. / Fu et al.'s model: d = 20, 41 points, 12 x 256, 8 heads (a GPU run;
    # Garg et al. trained 500k steps at lr 1e-4 with this curriculum).
    "gpt2_linreg_d20_fu": dict(kind="gpt2", d=20, n_points=41, n_layers=12, width=256, heads=8,
                               batch_size=64, steps=500_000, lr=1e-4, warmup_steps=1000,
                               d_start=5, n_start=11, curriculum_every=2000, precision="auto"),
}


# --------------------------------------------------------------------------- schedule and curriculum


def learning_rate(step: int, config: TrainConfig) -> float:
    """Learning rate of optimizer step ``step`` (0-based)."""
    c = config
    if step < c.warmup_steps:
        return c.lr * (step + 1) / c.warmup_steps
    if c.schedule == "constant":
        return c.lr
    if c.schedule == "cosine":
        progress = (step - c.warmup_steps) / max(1, c.steps - c.warmup_steps)
        return c.min_lr + 0.5 * (c.lr - c.min_lr) * (1.0 + math.cos(math.pi * min(1.0, progress)))
    # "linear_decay": constant, then linearly down to min_lr over the last decay_fraction.
    decay_start = max(c.warmup_steps, int(round(c.steps * (1.0 - c.decay_fraction))))
    if step < decay_start:
        return c.lr
    remaining = (c.steps - step) / max(1, c.steps - decay_start)
    return c.min_lr + (c.lr - c.min_lr) * remaining


def curriculum_at(step: int, config: TrainConfig) -> tuple[int, int]:
    """``(effective d, prompt length)`` used at optimizer step ``step``."""
    c = config
    if not c.curriculum:
        return c.d, c.n_points
    stage = step // c.curriculum_every
    return min(c.d, c.d_start + c.d_inc * stage), min(c.n_points, c.n_start + c.n_inc * stage)


# --------------------------------------------------------------------------- data and loss


def sample_batch(config: TrainConfig, batch: int, n: int, d_eff: int, *, generator, device):
    """Fresh prompts ``X (B, n, d)``, ``y (B, n)`` with ``d - d_eff`` zeroed coordinates.

    The problem is drawn in ``d_eff`` dimensions by :mod:`tfnewton.tasks` and x is padded
    with zeros to ``d`` (Garg et al.'s curriculum: the model always sees ``d`` inputs).
    """
    from . import tasks

    if config.task == "linear_regression":
        t = tasks.sample_linear_regression(batch, n, d_eff, noise_std=config.noise_std,
                                           condition_number=config.condition_number,
                                           generator=generator, device=device)
    elif config.task == "sparse_recovery":
        t = tasks.sample_sparse_recovery(batch, n, d_eff, sparsity=min(config.sparsity, d_eff),
                                         noise_std=config.noise_std, generator=generator, device=device)
    else:
        t = tasks.sample_logistic_regression(batch, n, d_eff, condition_number=config.condition_number,
                                             generator=generator, device=device)
    X = F.pad(t.X, (0, config.d - d_eff)) if d_eff < config.d else t.X
    return X, t.y


def loss_fn(pred: torch.Tensor, y: torch.Tensor, task: str) -> torch.Tensor:
    """Mean squared error over every position (Garg et al.); logistic loss for ±1 labels."""
    pred = pred.float()
    if task == "logistic_regression":
        return F.softplus(-y * pred).mean()  # = BCE-with-logits on (y + 1) / 2
    return (pred - y).pow(2).mean()


# --------------------------------------------------------------------------- evaluation


def _prediction_errors(pred: torch.Tensor, y: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    """Per-position error, averaged over prompts: ``(n,)``.

    Regression: normalized squared error ``E[(ŷ − y)²] / d`` (Garg et al.; predicting 0
    gives ≈ 1 for linear regression). Logistic regression: misclassification rate of
    ``sign(ŷ)``.
    """
    if config.task == "logistic_regression":
        return (torch.sign(pred) != y).double().mean(0)
    return (pred.double() - y.double()).pow(2).mean(0) / config.d


def make_eval_set(config: TrainConfig, device=None, num_prompts: int | None = None, seed: int | None = None):
    """The fixed evaluation prompts: full ``d``, ``n_points`` pairs, seeded, on ``device``."""
    device = check_device(device)
    g = torch.Generator(device=device).manual_seed(config.eval_seed if seed is None else seed)
    num = config.eval_prompts if num_prompts is None else num_prompts
    return sample_batch(config, num, config.n_points, config.d, generator=g, device=device)


@torch.no_grad()
def predict(model, X: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """``model(X, y)`` in eval mode, in chunks of ``batch_size`` prompts."""
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(X[i:i + batch_size], y[i:i + batch_size])
                          for i in range(0, X.shape[0], batch_size)])
    finally:
        model.train(was_training)


def ols_errors(X: torch.Tensor, y: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    """Normalized error of OLS (minimum-norm least squares) with ``k`` examples, ``(n,)``.

    ``k = 0`` predicts 0. Uses :func:`tfnewton.algorithms.least_squares` in float64.
    """
    from .algorithms import least_squares

    Xd, yd = X.double(), y.double()
    preds = torch.zeros_like(yd)
    for k in range(1, X.shape[1]):
        w = least_squares(Xd[:, :k], yd[:, :k])
        preds[:, k] = (Xd[:, k] * w).sum(-1)
    return _prediction_errors(preds, yd, config)


def tuned_gd_errors(X: torch.Tensor, y: torch.Tensor, config: TrainConfig, steps: int = 3,
                    lrs: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalized error of ``steps`` steps of GD from 0 with the best step size for each ``k``.

    The step size is tuned on these very prompts (a grid of 81 values, log-spaced over
    ``[1e-3, 10]``), which favours GD: a model that beats it beats GD tuned fairly.
    Uses :func:`tfnewton.algorithms.gradient_descent_least_squares`.

    Returns
    -------
    errors : Tensor of shape (n,)
    best_lr : Tensor of shape (n,)   (NaN at ``k = 0``)
    """
    from .algorithms import gradient_descent_least_squares

    Xd, yd = X.double(), y.double()
    lrs = torch.logspace(-3, 1, 81, dtype=torch.float64) if lrs is None else lrs
    n = X.shape[1]
    errors = torch.empty(n, dtype=torch.float64)
    best = torch.full((n,), float("nan"), dtype=torch.float64)
    errors[0] = _prediction_errors(torch.zeros_like(yd), yd, config)[0]
    for k in range(1, n):
        trial = []
        for lr in lrs.tolist():
            w = gradient_descent_least_squares(Xd[:, :k], yd[:, :k], steps, lr=lr)[-1]
            pred = (Xd[:, k] * w).sum(-1)
            trial.append(float(((pred - yd[:, k]) ** 2).mean() / config.d))
        i = min(range(len(trial)), key=trial.__getitem__)
        errors[k], best[k] = trial[i], lrs[i]
    return errors, best


def error_vs_k(model, config: TrainConfig | None = None, *, num_prompts: int = 2000, seed: int = 2024,
               baselines: bool = True, gd_steps: int = 3, device=None) -> dict:
    """Error of ``model`` against the number of in-context examples, with baselines.

    Fresh prompts (seed ``seed``, not the training data) with ``n_points`` pairs; the
    prediction at position ``k`` has seen ``k`` examples.

    Parameters
    ----------
    model : InContextRegressor
    config : TrainConfig, optional
        Task description; by default read from ``model.metadata["train_config"]`` (trained
        models) or linear regression at the model's ``d``.
    num_prompts, seed : int
    baselines : bool
        Also compute OLS and ``gd_steps`` steps of optimally tuned GD (regression tasks).
    device : optional
        Default: the model's device.

    Returns
    -------
    dict
        ``{"k": [0..n-1], "model": [...], "ols": [...], "gd_tuned": [...],
        "gd_lr": [...], "gd_steps": gd_steps}`` (lists of floats; baselines absent if not
        asked for or not a regression task).
    """
    if config is None:
        meta = getattr(model, "metadata", None) or {}
        if "train_config" in meta:
            config = TrainConfig(**meta["train_config"])
        else:
            config = TrainConfig(d=model.config.d, n_points=getattr(model.config, "n_points", 2 * model.config.d + 1))
    if device is None:
        device = next(model.parameters()).device
    X, y = make_eval_set(config, device=device, num_prompts=num_prompts, seed=seed)
    X = X.to(next(model.parameters()).dtype)
    y = y.to(X.dtype)
    out = {"k": list(range(config.n_points)),
           "model": _prediction_errors(predict(model, X, y), y, config).tolist()}
    if baselines and config.task != "logistic_regression":
        Xc, yc = X.cpu(), y.cpu()
        out["ols"] = ols_errors(Xc, yc, config).tolist()
        gd, lr = tuned_gd_errors(Xc, yc, config, steps=gd_steps)
        out["gd_tuned"], out["gd_lr"], out["gd_steps"] = gd.tolist(), lr.tolist(), gd_steps
    return out


# --------------------------------------------------------------------------- distributed


def _distributed_setup(device: torch.device) -> tuple[int, int, torch.device]:
    """``(rank, world_size, device)``; joins the process group when run under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device
    import torch.distributed as dist

    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def _gather(obj, world: int) -> list:
    if world == 1:
        return [obj]
    import torch.distributed as dist

    out = [None] * world
    dist.all_gather_object(out, obj)
    return out


# --------------------------------------------------------------------------- checkpoints


STATE_FILE = "train_state.pt"
FLAT_ON_CPU = True  # one flat parameter buffer on a single CPU process (False: per parameter, to compare)
MODEL_FILE = "model.pt"


def _save_state(path, *, config, model, trainer, step, generator_states, history, running, elapsed):
    from .models.pretrained import atomic_save

    atomic_save({
        "format": "tfnewton-train-state",
        "config": asdict(config),
        "model": model.state_dict(),
        "optimizer": trainer.optimizer_state(),
        "optimizer_layout": trainer.layout,
        "step": step,
        "curriculum": dict(zip(("d", "n_points"), curriculum_at(step, config))),
        "generators": generator_states,
        "history": history,
        "running_loss": running,
        "elapsed_seconds": elapsed,
        "library_version": __version__,
    }, path)


def _load_state(path: Path, config: TrainConfig, world: int) -> dict:
    from .models.pretrained import PretrainedError

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise PretrainedError(f"cannot resume: {str(path)!r} is not a readable training state ({err})") from err
    if not isinstance(state, dict) or state.get("format") != "tfnewton-train-state":
        raise PretrainedError(f"cannot resume: {str(path)!r} is not a tfnewton training state")
    saved = state["config"]
    defaults = asdict(TrainConfig())
    # A field the saved run did not have yet counts as its default (older tfnewton versions).
    diffs = [f"{k}: saved {saved.get(k, defaults[k])!r}, now {v!r}" for k, v in asdict(config).items()
             if saved.get(k, defaults[k]) != v]
    if diffs:
        raise ValueError("cannot resume: the recipe differs from the interrupted run's (" + "; ".join(diffs) + ")")
    if len(state["generators"]) != world:
        raise ValueError(
            f"cannot resume: the run was saved with {len(state['generators'])} process(es), now {world}"
        )
    return state


class TrainStep(step_module.TrainStep):
    """The step of :func:`train` for a recipe: :class:`tfnewton.step.TrainStep` with the
    recipe's AdamW (``lr``, ``beta1``, ``beta2``, ``weight_decay``), ``grad_clip``,
    ``precision`` and the loss of its ``task``.

    Parameters
    ----------
    model : InContextRegressor
        Trained in place, where it lives.
    config : TrainConfig
    flat, skip_unused
        As in :class:`tfnewton.step.TrainStep`.

    Examples
    --------
    >>> import torch
    >>> from tfnewton.models import build_model
    >>> from tfnewton.train import TrainConfig, TrainStep
    >>> cfg = TrainConfig(d=3, n_points=5, n_layers=1, width=8, heads=2)
    >>> step = TrainStep(build_model("gpt2", 3, n_layers=1, width=8, heads=2, n_points=5, seed=0), cfg)
    >>> loss = step(torch.randn(4, 5, 3), torch.randn(4, 5))
    >>> loss.shape, step.skipped
    (torch.Size([]), 0)
    """

    def __init__(self, model, config: TrainConfig, *, flat: bool | None = None, skip_unused: bool = True):
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        super().__init__(model, loss=lambda pred, y: loss_fn(pred, y, config.task), lr=config.lr,
                         betas=(config.beta1, config.beta2), weight_decay=config.weight_decay,
                         grad_clip=config.grad_clip, precision=config.precision, flat=flat,
                         skip_unused=skip_unused)


# --------------------------------------------------------------------------- the loop


class _StopRequested:
    """Turns SIGTERM / SIGINT into 'checkpoint at the end of this step, then stop'."""

    def __init__(self):
        self.flag = False
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.flag = True

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


def train(
    config: TrainConfig,
    out_dir: str | os.PathLike,
    *,
    device=None,
    resume: bool = False,
    stop_after: int | None = None,
    eval_every: int = 500,
    log_every: int = 50,
    ckpt_every: int = 500,
    threads: int | None = None,
    progress: bool = True,
    final_eval: bool = True,
    command: str | None = None,
) -> dict:
    """Train a model on ``config`` and write ``model.pt`` (and ``train_state.pt``) to ``out_dir``.

    Parameters
    ----------
    config : TrainConfig
        The recipe.
    out_dir : str or Path
    device : str or torch.device, optional
        ``"cpu"`` (default) or ``"cuda"``; under torchrun each rank takes ``cuda:LOCAL_RANK``.
    resume : bool
        Continue from ``out_dir/train_state.pt`` if it exists (bit-identical continuation on
        the same device); start fresh otherwise.
    stop_after : int, optional
        Checkpoint and return after this many optimizer steps in total (chunked runs;
        the resume test). SIGTERM/SIGINT do the same at the end of the current step.
    eval_every, log_every, ckpt_every : int
        Cadence in steps of the evaluation at ``k = 2d``, the loss log and the checkpoint.
    threads : int, optional
        ``torch.set_num_threads`` for the run.
    progress : bool
        tqdm progress bar (rank 0 only).
    final_eval : bool
        Error vs ``k`` against OLS and tuned 3-step GD at the end (stored in the metadata).
    command : str, optional
        The command line recorded in the metadata (the CLI fills it in).

    Returns
    -------
    dict
        ``{"finished", "step", "model_path", "state_path", "metrics", "history"}``.
    """
    from tqdm.auto import tqdm

    from .models import build_model
    from .models.pretrained import save_checkpoint, state_dict_checksum

    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    device = check_device(device)
    for name, value in (("eval_every", eval_every), ("log_every", log_every), ("ckpt_every", ckpt_every)):
        check_int(value, name, minimum=1)
    if stop_after is not None:
        check_int(stop_after, "stop_after", minimum=1)
    if threads is not None:
        torch.set_num_threads(check_int(threads, "threads", minimum=1))
    rank, world, device = _distributed_setup(device)
    # Record what "auto" means here, so the checkpoint's command repeats this run anywhere.
    config = dataclasses.replace(config, precision=resolve_precision(config.precision, device))
    if config.batch_size % world:
        raise ValueError(f"batch_size = {config.batch_size} must be divisible by the {world} processes")
    out_dir = Path(out_dir)
    state_path, model_path = out_dir / STATE_FILE, out_dir / MODEL_FILE
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)

    # Model and optimizer. The initialisation depends on the seed only (same on every rank).
    model = build_model(config.kind, config.d, n_layers=config.n_layers, width=config.width,
                        heads=config.heads, layernorm=config.layernorm, n_points=config.n_points,
                        mlp=config.mlp if config.kind == "linear" else None, device=device, seed=config.seed)
    # On one CPU process the parameters live in one flat buffer (see flatten_parameters):
    # clipping and AdamW are then one call each. GPUs and DDP keep per-parameter tensors.
    trainer = TrainStep(model, config, flat=FLAT_ON_CPU and world == 1 and device.type == "cpu")
    # Training data: one generator per rank, on the training device.
    generator = torch.Generator(device=device).manual_seed(config.seed * 1_000_003 + 7919 * rank + 1)
    step, elapsed = 0, 0.0
    history = {"step": [], "loss": [], "lr": [], "eval_step": [], "eval_error": [], "eval_seconds": []}

    if resume and state_path.is_file():
        state = _load_state(state_path, config, world)
        model.load_state_dict(state["model"])
        trainer.load_optimizer_state(state["optimizer"], state.get("optimizer_layout", "per_parameter"))  # older states: per parameter
        generator.set_state(state["generators"][rank])
        step, elapsed, history = state["step"], state["elapsed_seconds"], state["history"]
        saved_running = state["running_loss"]

    train_model = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        train_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)

    # Fixed evaluation set (own generator: evaluating never disturbs the training data).
    eval_X = eval_y = None
    ols_at_k = None
    k = config.eval_k
    if rank == 0:
        eval_X, eval_y = make_eval_set(config, device=device)
        if config.task != "logistic_regression":
            ols_at_k = float(ols_errors(eval_X[:, : k + 1].cpu(), eval_y[:, : k + 1].cpu(), config)[k])

    def evaluate_now() -> float:
        err = _prediction_errors(predict(model, eval_X, eval_y), eval_y, config)
        return float(err[k])

    # torch.compile'd step, for the final prompt length only (one compile; see TrainConfig).
    # One process only: compiling a DDP-wrapped model is not tested here, so torchrun runs eagerly.
    compiled = None
    if config.compile and world > 1:
        import warnings

        warnings.warn("compile=True applies to single-process runs; under torchrun the step runs eagerly",
                      RuntimeWarning, stacklevel=2)
    elif config.compile:
        compiled = torch.compile(train_model, dynamic=False)
    compile_checked = False

    def compiled_forward_backward(X, y):
        nonlocal compiled, compile_checked
        if compile_checked:
            return trainer.forward_backward(X, y, compiled)
        bar.write("compiling the training step with torch.compile (about a minute on a 2-core CPU; "
                  "later runs reuse the on-disk cache) ...")
        t_compile = time.perf_counter()
        try:  # the first call compiles (forward now, backward at loss.backward())
            loss = trainer.forward_backward(X, y, compiled)
            compile_checked = True
            history["compile_seconds"] = round(time.perf_counter() - t_compile, 1)
            bar.write(f"compiled in {history['compile_seconds']:.0f} s")
            return loss
        except Exception as err:  # no compiler, an unsupported op...: same step, eagerly
            import warnings

            reason = (str(err).strip().splitlines() or [""])[0][:300]
            warnings.warn(f"torch.compile failed ({type(err).__name__}: {reason}); training eagerly",
                          RuntimeWarning, stacklevel=2)
            compiled = None
            return trainer.forward_backward(X, y, train_model)
    local_batch = config.batch_size // world
    bar = tqdm(total=config.steps, initial=step, disable=(not progress) or rank != 0,
               mininterval=1.0 if sys.stderr.isatty() else 30.0, dynamic_ncols=True, desc="train")
    running, running_count = torch.zeros((), device=device), 0
    if resume and state_path.is_file():  # the loss summed since the last log line
        running, running_count = torch.tensor(saved_running[0], device=device), saved_running[1]
    finished = False
    t0 = time.perf_counter() - elapsed

    def checkpoint():
        states = _gather(generator.get_state(), world)
        if rank == 0:
            _save_state(state_path, config=config, model=model, trainer=trainer, step=step,
                        generator_states=states, history=history,
                        running=[float(running), running_count], elapsed=time.perf_counter() - t0)

    model.train()
    with _StopRequested() as stop:
        while step < config.steps:
            lr = learning_rate(step, config)
            trainer.set_lr(lr)
            d_eff, n_eff = curriculum_at(step, config)
            X, y = sample_batch(config, local_batch, n_eff, d_eff, generator=generator, device=device)
            if compiled is not None and n_eff == config.n_points:
                loss = compiled_forward_backward(X, y)
            else:
                loss = trainer.forward_backward(X, y, train_model)
            if not trainer.clip_and_update():  # a non-finite gradient norm: no update
                history["skipped_steps"] = history.get("skipped_steps", 0) + 1
            step += 1
            running += loss.detach()
            running_count += 1
            bar.update(1)

            if step % log_every == 0 or step == config.steps:
                mean_loss = running / running_count
                if world > 1:
                    import torch.distributed as dist

                    dist.all_reduce(mean_loss)
                    mean_loss = mean_loss / world
                history["step"].append(step)
                history["loss"].append(float(mean_loss))
                history["lr"].append(lr)
                running, running_count = torch.zeros((), device=device), 0
                bar.set_postfix(loss=f"{history['loss'][-1]:.4f}", d=d_eff, n=n_eff)
            if rank == 0 and (step % eval_every == 0 or step == config.steps):
                err = evaluate_now()
                history["eval_step"].append(step)
                history["eval_error"].append(err)
                history["eval_seconds"].append(time.perf_counter() - t0)
                bar.write(f"step {step}: error at k={k} {err:.4f} (OLS {ols_at_k if ols_at_k is None else round(ols_at_k, 4)}), "
                          f"{time.perf_counter() - t0:.0f} s")
            stopping = stop.flag or (stop_after is not None and step >= stop_after)
            if world > 1:  # every rank must agree to stop (a signal may reach one rank only)
                import torch.distributed as dist

                flag = torch.tensor([1.0 if stopping else 0.0], device=device)
                dist.all_reduce(flag)
                stopping = bool(flag.item() > 0)
            if step % ckpt_every == 0 or stopping or step == config.steps:
                checkpoint()
            if stopping and step < config.steps:
                break
        else:
            finished = True
    bar.close()
    elapsed = time.perf_counter() - t0

    # Every rank must hold the same weights (DDP keeps them in sync); record that we checked.
    checksums = _gather(state_dict_checksum(model.state_dict()), world)
    in_sync = len(set(checksums)) == 1
    result = {"finished": finished, "step": step, "state_path": str(state_path), "model_path": None,
              "metrics": None, "history": history, "ranks_in_sync": in_sync, "world_size": world}
    if finished and rank == 0:
        metrics = {"eval_k": k, "error_at_eval_k": history["eval_error"][-1] if history["eval_error"] else None,
                   "ols_error_at_eval_k": ols_at_k}
        if final_eval:
            curve = error_vs_k(model, config)
            metrics["error_vs_k"] = curve
        meta = {
            "task": config.task,
            "d": config.d,
            "n_points": config.n_points,
            "kind": config.kind,
            "steps": step,
            "seed": config.seed,
            "train_config": asdict(config),
            "library_version": __version__,
            "torch_version": torch.__version__,
            "device": device.type,
            "precision": config.precision,
            "world_size": world,
            "ranks_in_sync": in_sync,
            "train_seconds": elapsed,
            "threads": torch.get_num_threads(),
            "metrics": metrics,
            "history": history,
            "command": command or f"python -m tfnewton train {' '.join(config_to_argv(config))} --out {shlex.quote(str(out_dir))}",
        }
        save_checkpoint(model, model_path, meta)
        result.update(model_path=str(model_path), metrics=metrics)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    return result


# --------------------------------------------------------------------------- command line


def config_to_argv(config: TrainConfig) -> list[str]:
    """Flags that rebuild ``config`` from the defaults (used in the recorded command)."""
    default = TrainConfig()
    argv = []
    for f in dataclasses.fields(TrainConfig):
        value = getattr(config, f.name)
        if value == getattr(default, f.name):
            continue
        flag = _flag(f.name)
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + f.name.replace("_", "-"))
        else:
            argv += [flag, str(value)]
    return argv


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tfnewton train",
        description="Train an in-context learner (see tfnewton.train). Flags override --recipe.",
    )
    p.add_argument("--recipe", choices=sorted(RECIPES), help="start from a named recipe")
    p.add_argument("--out", required=True, help="output folder (model.pt, train_state.pt)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N")
    p.add_argument("--resume", action="store_true", help="continue from OUT/train_state.pt if present")
    p.add_argument("--stop-after", type=int, default=None, help="checkpoint and exit after this many steps in total")
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--ckpt-every", type=int, default=500)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    p.add_argument("--no-final-eval", action="store_true", help="skip the error-vs-k curve at the end")
    for f in dataclasses.fields(TrainConfig):
        flags = [_flag(f.name)] + (["--d"] if f.name == "d" else [])
        if f.type in ("bool", bool):
            p.add_argument(*flags, dest=f.name, action="store_true", default=None)
            p.add_argument("--no-" + f.name.replace("_", "-"), dest=f.name, action="store_false")
        else:
            kind = {"int": int, "float": float, "str": str}[f.type if isinstance(f.type, str) else f.type.__name__]
            p.add_argument(*flags, dest=f.name, type=kind, default=None)
    return p


def _flag(name: str) -> str:
    # ``--dim`` rather than ``--d``: torchrun's own parser rejects ``--d`` as an ambiguous
    # abbreviation of its options even after the module name (``--d`` stays as an alias).
    return "--dim" if name == "d" else "--" + name.replace("_", "-")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    values = dict(RECIPES[args.recipe]) if args.recipe else {}
    for f in dataclasses.fields(TrainConfig):
        if getattr(args, f.name) is not None:
            values[f.name] = getattr(args, f.name)
    return TrainConfig(**values)


def main(argv: list[str] | None = None) -> int:
    """``python -m tfnewton train ...``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except (TypeError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    world = int(os.environ.get("WORLD_SIZE", "1"))
    prefix = f"torchrun --nproc_per_node {world} -m tfnewton train" if world > 1 else "python -m tfnewton train"
    # The recorded command: the recipe's own flags only (no resume/stop/threads/progress).
    keep = _reproducible_argv(argv)
    if config.precision == "auto":  # record what "auto" meant on this machine
        try:
            resolved = resolve_precision("auto", args.device)
        except (TypeError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        keep = _without_flag(keep, "--precision") + ["--precision", resolved]
    command = prefix + " " + " ".join(shlex.quote(a) for a in keep)
    result = train(config, args.out, device=args.device, resume=args.resume, stop_after=args.stop_after,
                   eval_every=args.eval_every, log_every=args.log_every, ckpt_every=args.ckpt_every,
                   threads=args.threads, progress=not args.no_progress,
                   final_eval=not args.no_final_eval, command=command)
    rank = int(os.environ.get("RANK", "0"))
    if rank == 0:
        if result["finished"]:
            m = result["metrics"]
            print(f"done: {result['step']} steps; error at k={m['eval_k']}: {m['error_at_eval_k']:.4f}; "
                  f"model written to {result['model_path']}")
        else:
            print(f"stopped at step {result['step']}; continue with --resume (state in {result['state_path']})")
    if world > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


_RUNTIME_FLAGS_WITH_VALUE = {"--stop-after", "--eval-every", "--log-every", "--ckpt-every", "--threads"}
_RUNTIME_FLAGS = {"--resume", "--no-progress", "--no-final-eval"}


def _without_flag(argv: list[str], flag: str) -> list[str]:
    """``argv`` without ``flag VALUE`` / ``flag=VALUE``."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == flag:
            skip = True
        elif not a.startswith(flag + "="):
            out.append(a)
    return out


def _reproducible_argv(argv: list[str]) -> list[str]:
    """``argv`` without the flags that do not change the trained weights."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        name = a.split("=", 1)[0]
        if name in _RUNTIME_FLAGS_WITH_VALUE:
            skip = "=" not in a
            continue
        if name in _RUNTIME_FLAGS:
            continue
        out.append(a)
    return out


if __name__ == "__main__":
    sys.exit(main())
