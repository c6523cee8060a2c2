"""Train an in-context learner: a plain loop you can step through (nanoGPT's ``train.py``).

Read top to bottom: the recipe (:class:`TrainConfig`, :data:`RECIPES`, and the
exercise-sized variants :data:`QUICK`, :func:`quick_config`), the learning-rate
schedule and Garg et al.'s curriculum, the data (a task of :mod:`tfnewton.tasks` drawn on
the training device with a seeded ``torch.Generator``), the step (:class:`TrainStep`, the
plain step of :mod:`tfnewton.step` built from a recipe), the loop (:func:`train` and the
helpers it calls, in the order it calls them), and the command line.

Around the step, the loop does only what a real run needs:

- **the curriculum**: the effective dimension (the other coordinates of x are zero) and
  the prompt length start small and grow every ``curriculum_every`` steps;
- **the learning-rate schedule** measured to work on a CPU (the book's training chapter
  shows the plateau it leaves): linear warm-up, then constant, then a linear decay to 0
  over the last 30 % of the steps (``"linear_decay"``, default); ``"cosine"`` and
  ``"constant"`` are there to compare;
- **evaluation** every ``eval_every`` steps on a fixed set of ≥ 2000 prompts (fixed seed,
  so the numbers are comparable across steps and runs): the task's headline metric at
  ``k = 2d`` in-context examples (the normalized error ``E[(ŷ − y)²] / d`` for regression,
  the cross-entropy for logistic regression) next to its first baseline's
  (:mod:`tfnewton.baselines`);
- **checkpoints** written atomically with everything needed to continue bit-identically —
  model, optimizer, step, curriculum and the data generator's state — so ``resume=True``
  (``--resume``) after a crash, a kill or a ``stop_after`` ends with exactly the
  parameters of an uninterrupted run (same seed, same device);
- **DDP** under ``torchrun`` (one generator per rank, gradients averaged), the same code;
- **speed**: the step's flat parameter buffer on one CPU process, fused AdamW,
  ``skip_unused=True``, bf16 autocast where it pays (``precision``), and ``compile=True``
  (the small GPT-2 recipe's choice), which runs the step through ``torch.compile`` once the
  curriculum reaches the final prompt length. ``benchmarks/README.md`` has the figures.

The loop never branches on the task: :func:`tfnewton.tasks.training_task` gives its
sampler, loss, metrics and baselines.

Outputs in ``out_dir``: ``train_state.pt`` (to resume) and ``model.pt`` (the trained model
with its metadata, loadable by :func:`tfnewton.models.load_checkpoint`; the shipped
checkpoints in ``tfnewton/pretrained/`` are such files).

Command line::

    python -m tfnewton train --recipe gpt2_linreg_d5 --out runs/gpt2_linreg_d5
    python -m tfnewton train --recipe gpt2_linreg_d5 --out runs/gpt2_linreg_d5 --resume
    python -m tfnewton train --recipe linear_ln_linreg_d5 --quick --out runs/quick  # an exercise's run
    torchrun --nproc_per_node 2 -m tfnewton train --recipe gpt2_linreg_d5 --out runs/ddp
    python -m tfnewton train --recipe gpt2_linreg_d20_fu --device cuda --out runs/fu
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import shlex
import signal
import sys
import threading
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from . import __version__
from . import step as plain_step
from ._validate import check_device, check_int, check_positive
from .baselines import baseline_curves, evaluate_vs_k, predict
from .tasks import training_task

# Re-exported: the book, the benchmarks and earlier code import these from here.
from .step import (PRECISIONS, autocast_context, convert_optimizer_state, cpu_has_native_bf16,  # noqa: F401
                   flatten_parameters, resolve_precision, step_time_ms)

SCHEDULES = ("linear_decay", "cosine", "constant")
#: What the training loss may average over (``TrainConfig.loss_positions``).
LOSS_POSITIONS = ("all", "determined")
#: The recipe's fields a task may read (its sampler's options and its baselines').
TASK_OPTIONS = ("noise_std", "condition_number", "sparsity", "mu", "scaling", "support_size")


# --------------------------------------------------------------------------- configuration


@dataclass
class TrainConfig:
    """Everything that decides the trained weights (the recipe).

    Runtime choices that do not change the result on a given device (where to write, how
    often to evaluate or checkpoint, threads, progress bar) are arguments of :func:`train`.

    Parameters
    ----------
    task : {"linear_regression", "sparse_recovery", "logistic_regression"}
        A task of :data:`tfnewton.tasks.TRAINING_TASKS`: its sampler, loss, metrics and
        baselines. For logistic regression the model outputs a logit per position, trained
        with the binary cross-entropy against the ±1 labels.
    kind : {"gpt2", "linear", "lstm"}
        Model family (:func:`tfnewton.models.build_model`).
    d, n_points : int
        Input dimension and prompt length (pairs) at the end of the curriculum.
    n_layers, width, heads, layernorm
        Architecture.
    mlp : bool
        ``"linear"`` only: a ReLU MLP after each attention layer (``False``: attention only).
    mlp_ratio : int
        ``"gpt2"`` only: the MLP's hidden width in multiples of ``width`` (GPT-2: 4).
    residual : bool
        ``"lstm"`` only: a residual connection around each LSTM block. ``--no-residual
        --no-layernorm`` is Garg et al.'s and Fu et al.'s plain stacked LSTM.
    noise_std : float
        Standard deviation of the label noise, ``>= 0`` (``"linear_regression"`` and
        ``"sparse_recovery"``; logistic labels are already random, so it must stay 0 there).
    condition_number : float or tuple of float
        ``κ(Σ) >= 1`` of the input covariance (``"linear_regression"`` and
        ``"logistic_regression"``): Fu et al.'s ill-conditioned prompts, half the eigenvalues
        ``κ`` and half ``1`` in a random eigenbasis per prompt
        (:func:`tfnewton.tasks.sample_linear_regression`). Under the curriculum the
        covariance lives in the first ``d_eff`` coordinates. ``1`` gives isotropic inputs.
        A tuple is a mixture, one ``κ`` drawn uniformly per prompt (``(1, 10, 50)``: Giannou
        et al.'s logistic-regression setting; ``--condition-number 1,10,50``).
    sparsity : int
        Non-zeros of the signal (sparse recovery).
    scaling : {"unit_columns", "garg"}
        Sparse recovery: the measurement rows' scale (:func:`tfnewton.tasks.sample_sparse_recovery`);
        ``"garg"`` is Garg et al.'s and Liu et al.'s ``x ~ N(0, I)``.
    support_size : int
        Sparse recovery: ``> 0`` draws every support inside the first ``support_size``
        coordinates (a structure a learner can exploit); ``0``: anywhere in the ``d``.
    mu : float
        ``> 0``: the ℓ2 regularization of the damped-Newton baseline of logistic regression
        (Giannou et al.'s ``μ = 0.01``); it does not change the training.
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
    loss_positions : {"all", "determined"}
        Which positions the training loss averages over. ``"all"``: every position (Garg et
        al.'s loss). ``"determined"`` (linear regression only): from optimizer step
        ``loss_switch_step`` on, only the positions ``k >= d_eff`` (the curriculum's current
        dimension), where a noiseless problem has one answer; before ``d_eff`` examples even
        the best predictor keeps an error of about ``(d_eff - k)/d_eff``, and that irreducible
        part only adds noise to the gradient once the model has left the plateau
        (``benchmarks/time_to_quality.py``).
    loss_switch_step : int
        The step at which ``loss_positions`` takes over from ``"all"`` (``>= 0``).
    seed : int
        Seeds the initialisation and the training data.
    eval_prompts, eval_seed : int
        Size and seed of the fixed evaluation set (≥ 2000 prompts: ±10 % noise at 1000).
    precision : {"float32", "bfloat16", "auto"}
        Arithmetic of the forward pass: ``"bfloat16"`` runs it under bf16 autocast (matrix
        products in bf16, accumulation, weights, optimizer and loss in float32);
        ``"auto"`` is ``"bfloat16"`` where the device does bf16 natively (see
        :func:`tfnewton.step.resolve_precision`) and ``"float32"`` elsewhere. :func:`train`
        records the resolved value, so the recorded command repeats the run on any machine.
    compile : bool
        Run the training step's forward and backward through ``torch.compile`` (as nanoGPT
        does). It compiles once, for the final prompt length: the curriculum's shorter
        prompts run eagerly. Where compiling fails (no C++ compiler, say) training goes on
        eagerly, with a warning; under ``torchrun`` it stays eager. Compiled kernels round
        differently from eager ones, so a run resumes bit-identically only with the same
        setting.
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
    mlp_ratio: int = 4
    residual: bool = True
    noise_std: float = 0.0
    condition_number: float | tuple[float, ...] = 1.0
    sparsity: int = 3
    mu: float = 0.01
    scaling: str = "unit_columns"
    support_size: int = 0
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
    loss_positions: str = "all"
    loss_switch_step: int = 0
    seed: int = 0
    eval_prompts: int = 2000
    eval_seed: int = 1234
    precision: str = "float32"
    compile: bool = False

    def __post_init__(self):
        task = training_task(self.task)  # "task must be one of ..." for an unknown one
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        for name in ("d", "n_points", "n_layers", "width", "heads", "mlp_ratio", "batch_size", "steps",
                     "d_start", "n_start", "curriculum_every", "eval_prompts", "sparsity"):
            check_int(getattr(self, name), name, minimum=1)
        for name in ("warmup_steps", "d_inc", "n_inc", "seed", "eval_seed", "support_size", "loss_switch_step"):
            check_int(getattr(self, name), name, minimum=0)
        for name in ("layernorm", "mlp", "residual", "curriculum", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {type(getattr(self, name)).__name__}")
        if not self.residual and self.kind != "lstm":
            raise ValueError(f"residual=False is an option of kind='lstm' only, got kind={self.kind!r}")
        if self.kind in ("gpt2", "linear") and self.width % self.heads:
            raise ValueError(f"width must be a multiple of heads (each head gets width / heads "
                             f"dimensions), got width={self.width} and heads={self.heads}")
        check_positive(self.lr, "lr")
        for name in ("noise_std", "min_lr", "weight_decay", "grad_clip"):
            check_positive(getattr(self, name), name, allow_zero=True)
        if self.loss_positions not in LOSS_POSITIONS:
            raise ValueError(f"loss_positions must be one of {LOSS_POSITIONS}, got {self.loss_positions!r}")
        if self.loss_positions == "determined" and self.task != "linear_regression":
            raise ValueError("loss_positions='determined' needs task='linear_regression' (the positions "
                             f"k >= d where a noiseless problem has one answer), got task={self.task!r}")
        if not 0.0 <= self.decay_fraction <= 1.0:
            raise ValueError(f"decay_fraction must be in [0, 1], got {self.decay_fraction}")
        # Recorded as floats, so metadata and the reproduce command read the same either way.
        self.noise_std = float(self.noise_std)
        self.mu = check_positive(self.mu, "mu")
        self.condition_number = _condition_numbers(self.condition_number)
        task.check_options(self.d, self.task_options)

    @property
    def eval_k(self) -> int:
        """The number of in-context examples at which quality is measured, ``2d`` (capped)."""
        return min(2 * self.d, self.n_points - 1)

    @property
    def task_options(self) -> dict:
        """The fields a task may read (:data:`TASK_OPTIONS`), by name."""
        return {name: getattr(self, name) for name in TASK_OPTIONS}


def _condition_numbers(value) -> float | tuple[float, ...]:
    """A float ``κ >= 1``, or a tuple of two or more (a mixture); one value reads as a float."""
    values = list(value) if isinstance(value, (tuple, list)) else [value]
    if not values:
        raise ValueError("condition_number must be a number >= 1 or a non-empty tuple of them, got an empty one")
    for kappa in values:
        kappa = check_positive(kappa, "condition_number")
        if kappa < 1.0:
            raise ValueError(f"condition_number must be >= 1 (κ of the input covariance), got {kappa}")
    kappas = tuple(float(kappa) for kappa in values)
    return kappas[0] if len(kappas) == 1 else kappas


# The measurements behind the recipes' choices: the comments below and benchmarks/README.md.

#: Steps of the sparse-recovery recipes (about 20 minutes of a shared 2-core CPU, measured).
SPARSE_STEPS = 10_000

#: The recipes, named configurations whose trained models ship with the library (or, for
#: Fu et al.'s size, are meant for a GPU). ``--recipe NAME`` starts from one; flags override.
#:
#: :meta hide-value:
RECIPES: dict[str, dict] = {
    # 6 x 64 GPT-2, d = 5: the measured CPU recipe (~0.3 M parameters). 16,000 steps: the
    # error crosses 0.01 soon after the linear decay starts (step 13,500 here, 16,000 with the
    # 20,000 steps the shipped checkpoint was trained for; benchmarks/time_to_quality.py).
    # float32: at 6 x 64 a step is bound by per-operation overhead, not by matrix products, so
    # bf16 buys little or loses, and float32 repeats the shipped checkpoint's arithmetic.
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
    # single-layer LSTM blocks of width 64 on a residual stream (~134 k parameters). Measured
    # over 5,000 steps: lr 3e-3 reached error 0.09 at k = 10, 1e-3 only 0.15; the LSTM has no
    # plateau to fear at the higher rate.
    "lstm_linreg_d5": dict(kind="lstm", d=5, n_points=11, n_layers=4, width=64, lr=3e-3, steps=40_000),
    # In-context sparse recovery (Liu et al.'s task, scaled down for the CPU: d = 10, sparsity 2,
    # 21 points, noise 0.1, Garg's x ~ N(0, I); their reported d = 20, s = 3, noise 0.2 with
    # 41 points is out of a 2-core budget). The 6 x 64 GPT-2 of the linear-regression recipe.
    "gpt2_sparse_d10": dict(task="sparse_recovery", kind="gpt2", d=10, n_points=21, n_layers=6, width=64,
                            heads=4, sparsity=2, noise_std=0.1, scaling="garg", steps=SPARSE_STEPS,
                            curriculum_every=250, precision="float32", compile=True),
    # The same with every support inside the first 5 coordinates (Liu et al.'s structured tasks).
    "gpt2_sparse_d10_support5": dict(task="sparse_recovery", kind="gpt2", d=10, n_points=21, n_layers=6,
                                     width=64, heads=4, sparsity=2, noise_std=0.1, scaling="garg",
                                     support_size=5, steps=SPARSE_STEPS, curriculum_every=250,
                                     precision="float32", compile=True),
    # Giannou et al.'s logistic-regression setting: d = 5, 26 points, mu = 0.01, input
    # covariances of condition number 1, 10 and 50 mixed; the 6 x 64 GPT-2 trained with the
    # cross-entropy of its logits. Measured (2-core CPU, shared): at batch 64 the model sat at
    # log 2 for ~1,250 steps at lr 1e-3 (never left it in 2,000 steps at 3e-3) and reached 0.675
    # at k = 10 after 3,000; at batch 256 the labels' noise averages out and it was at 0.665 after
    # 500 steps. 10,000 steps (compiled) brought its cross-entropy to 0.0006 above the Bayes
    # predictor's on average over n >= d (3,000 steps: 0.0023).
    # book/logistic_regression_trained.md has the shipped model's figures.
    "gpt2_logreg_d5": dict(task="logistic_regression", kind="gpt2", d=5, n_points=26, n_layers=6, width=64,
                           heads=4, condition_number=(1.0, 10.0, 50.0), mu=0.01, batch_size=256, steps=10_000,
                           lr=1e-3, n_start=6, n_inc=4, curriculum_every=200, precision="float32", compile=True),
    # The homework recipe: error 0.01 at k = 10 in under 3 minutes on 2 cores
    # (benchmarks/time_to_quality.py; results/time_to_quality.json). Against gpt2_linreg_d5,
    # measured on one thread (benchmarks/README.md): lr 1e-3 after 500 warm-up steps left the
    # plateau by step ~2,500 (3e-4: ~4,500); from step 2,500 the loss counts the determined
    # positions k >= d only (at step 7,000: error 0.0085 against 0.017 with every position);
    # and a 5 x 32 model reached 0.01 by step 7,000 like a 5 x 64 one, at 0.6x its step.
    # 10,000 steps rather than 8,000: with 8,000, seed 0 crossed 0.01 at step 7,000 but seed 1
    # ended at 0.0103; with 10,000, seeds 1 and 2 crossed at step 9,500.
    "gpt2_linreg_d5_fast": dict(kind="gpt2", d=5, n_points=11, n_layers=5, width=32, heads=4, steps=10_000,
                                lr=1e-3, warmup_steps=500, decay_fraction=0.5, loss_positions="determined",
                                loss_switch_step=2_500, precision="float32", compile=True),
    # Fu et al.'s ill-conditioned inputs (κ(Σ) = 100), where Newton's and gradient descent's
    # errors can separate (book/linear_regression_probes.md; tfnewton.separation): the homework
    # recipe with 8 layers instead of 5, so that more of them are still climbing.
    "gpt2_linreg_d5_kappa100": dict(kind="gpt2", d=5, n_points=11, n_layers=8, width=32, heads=4,
                                    condition_number=100.0, steps=12_000, lr=1e-3, warmup_steps=500,
                                    decay_fraction=0.5, loss_positions="determined", loss_switch_step=2_500,
                                    precision="float32", compile=True),
    # The same at d = 10 (21 points), twice as wide: a second size where the separation
    # can show.
    "gpt2_linreg_d10_kappa100": dict(kind="gpt2", d=10, n_points=21, n_layers=8, width=64, heads=4,
                                     condition_number=100.0, steps=12_000, lr=1e-3, warmup_steps=500,
                                     decay_fraction=0.5, loss_positions="determined", loss_switch_step=2_500,
                                     precision="float32", compile=True),
    # Garg et al.'s and Fu et al.'s plain stacked LSTM (no residual connection, no LayerNorm)
    # in lstm_linreg_d5's shape and recipe, for the comparison with ours.
    "lstm_plain_linreg_d5": dict(kind="lstm", d=5, n_points=11, n_layers=4, width=64, layernorm=False,
                                 residual=False, lr=3e-3, steps=40_000),
    # Garg et al. / Fu et al.'s model: d = 20, 41 points, 12 x 256, 8 heads (a GPU run;
    # Garg et al. trained 500k steps at lr 1e-4 with this curriculum).
    "gpt2_linreg_d20_fu": dict(kind="gpt2", d=20, n_points=41, n_layers=12, width=256, heads=8,
                               batch_size=64, steps=500_000, lr=1e-4, warmup_steps=1000,
                               d_start=5, n_start=11, curriculum_every=2000, precision="auto"),
}

#: Exercise-sized variants of the recipes (``--quick``): for each recipe that has one, the
#: fields that replace the recipe's so that a run takes at most 3 CPU-minutes on one thread,
#: start-up and final evaluation included. None compiles: in a few thousand steps a compile
#: costs more than it saves. The book's exercises that train use them;
#: ``benchmarks/quick_runs.py`` measures each (``benchmarks/results/quick_runs.json``: CPU
#: time and the error reached, which is not the full recipe's).
#:
#: :meta hide-value:
QUICK: dict[str, dict] = {
    # Most of a short run is the plateau. A curriculum stage every 250 steps instead of 500
    # leaves it sooner: after 3,500 steps the error at k = 10 was 0.24 against 0.29 at the
    # recipe's pace (measured, one thread); 2,500 steps fit the budget.
    "gpt2_linreg_d5": dict(steps=2_500, curriculum_every=250, compile=False),
    # Book: training, exercise 4, and linear_regression_probes, exercise 7 (three widths,
    # one budget: each run a third of it).
    "linear_ln_linreg_d5": dict(steps=5_000),
    "linear_noln_linreg_d5": dict(steps=5_000),
    "lstm_linreg_d5": dict(steps=6_000),
    # Book: logistic_regression_trained, exercise 4 (two runs). Measured on one thread: the
    # recipe's 6 x 64 model on 26-point prompts was still at log 2 (0.693 at k = 10) after
    # 400 steps of 64 prompts (70 CPU-s), and a step of 256 prompts costs 0.8 CPU-s; a
    # 3 x 32 model on 11-point prompts (the exercise reads k = 10) at 128 prompts a step
    # leaves log 2 after about 1,300 steps and reached 0.647 after 2,200 (damped Newton:
    # 0.631), 68 CPU-s.
    "gpt2_logreg_d5": dict(n_points=11, n_layers=3, width=32, batch_size=128, steps=2_000,
                           curriculum=False, compile=False),
}


def quick_config(name: str, **overrides) -> TrainConfig:
    """The exercise-sized variant of a recipe: ``RECIPES[name]``, then ``QUICK[name]``, then
    ``overrides`` (what ``--recipe NAME --quick`` and further flags build).

    Parameters
    ----------
    name : str
        A recipe that has a quick variant (a key of :data:`QUICK`).
    **overrides
        Fields of :class:`TrainConfig` that replace the quick variant's, e.g. ``width=8``.

    Returns
    -------
    TrainConfig

    Raises
    ------
    ValueError
        If ``name`` has no quick variant; the message names the recipes that have one.

    Examples
    --------
    >>> config = quick_config("linear_ln_linreg_d5", width=8, heads=2)
    >>> config.steps == QUICK["linear_ln_linreg_d5"]["steps"], config.width
    (True, 8)
    """
    if name not in QUICK:
        kind = "recipe with no quick variant" if name in RECIPES else "unknown recipe"
        raise ValueError(f"quick: {kind} {name!r}; the recipes with a quick variant are "
                         f"{', '.join(sorted(QUICK))}")
    return TrainConfig(**{**RECIPES[name], **QUICK[name], **overrides})


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


def loss_start(step: int, config: TrainConfig) -> int:
    """The first position the training loss counts at optimizer step ``step``: ``0``, or the
    curriculum's ``d_eff`` once ``loss_positions = "determined"`` has taken over."""
    if config.loss_positions == "determined" and step >= config.loss_switch_step:
        return curriculum_at(step, config)[0]
    return 0


def curriculum_at(step: int, config: TrainConfig) -> tuple[int, int]:
    """``(effective d, prompt length)`` used at optimizer step ``step``."""
    c = config
    if not c.curriculum:
        return c.d, c.n_points
    stage = step // c.curriculum_every
    return min(c.d, c.d_start + c.d_inc * stage), min(c.n_points, c.n_start + c.n_inc * stage)


# --------------------------------------------------------------------------- data and evaluation


def sample_batch(config: TrainConfig, batch: int, n: int, d_eff: int, *, generator, device):
    """Fresh prompts ``X (B, n, d)``, ``y (B, n)`` of ``config.task`` with ``d - d_eff``
    zeroed coordinates.

    The problem is drawn in ``d_eff`` dimensions by the task's sampler
    (:meth:`tfnewton.tasks.TrainingTask.sample`) and x is padded with zeros to ``d``
    (Garg et al.'s curriculum: the model always sees ``d`` inputs).
    """
    problems = training_task(config.task).sample(batch, n, d_eff, generator=generator, device=device,
                                                 options=config.task_options)
    X = F.pad(problems.X, (0, config.d - d_eff)) if d_eff < config.d else problems.X
    return X, problems.y


def make_eval_set(config: TrainConfig, device=None, num_prompts: int | None = None, seed: int | None = None):
    """The fixed evaluation prompts: full ``d``, ``n_points`` pairs, seeded, on ``device``.

    Returns
    -------
    X : Tensor of shape (num_prompts, n_points, d)
    y : Tensor of shape (num_prompts, n_points)
    """
    return _draw_eval_set(config, check_device(device), num_prompts, seed)


def _draw_eval_set(config: TrainConfig, device: torch.device, num_prompts: int | None = None,
                   seed: int | None = None):
    generator = torch.Generator(device=device).manual_seed(config.eval_seed if seed is None else seed)
    num = config.eval_prompts if num_prompts is None else num_prompts
    return sample_batch(config, num, config.n_points, config.d, generator=generator, device=device)


def error_vs_k(model, config: TrainConfig | None = None, *, num_prompts: int = 2000, seed: int = 2024,
               baselines: bool = True, gd_steps: int = 3, device=None) -> dict:
    """The model's metrics against the number of in-context examples, with its task's baselines.

    Fresh prompts (seed ``seed``, not the training data) with ``n_points`` pairs; the
    prediction at position ``k`` has seen ``k`` examples
    (:func:`tfnewton.baselines.evaluate_vs_k`).

    Parameters
    ----------
    model : InContextRegressor
    config : TrainConfig, optional
        Task description; by default read from ``model.metadata["train_config"]`` (trained
        models) or linear regression at the model's ``d``.
    num_prompts, seed : int
    baselines : bool
        Also score the task's baselines: OLS and ``gd_steps`` steps of optimally tuned GD
        for regression, damped Newton (``config.mu``) for logistic regression.
    device : optional
        Default: the model's device.

    Returns
    -------
    dict
        Regression: ``{"k": [0..n-1], "model": [...], "ols": [...], "gd_tuned": [...],
        "gd_lr": [...], "gd_steps": gd_steps}`` (normalized errors). Logistic regression:
        ``"model"`` and ``"newton"`` hold cross-entropies, ``"model_accuracy"`` and
        ``"newton_accuracy"`` accuracies. Baselines absent if not asked for.
    """
    if config is None:
        meta = getattr(model, "metadata", None) or {}
        if "train_config" in meta:
            config = TrainConfig(**meta["train_config"])
        else:
            config = TrainConfig(d=model.config.d, n_points=getattr(model.config, "n_points", 2 * model.config.d + 1))
    parameter = next(model.parameters())
    device = parameter.device if device is None else check_device(device)
    X, y = _draw_eval_set(config, device, num_prompts, seed)
    X, y = X.to(parameter.dtype), y.to(parameter.dtype)
    return evaluate_vs_k(model, training_task(config.task), X, y, baselines=baselines, gd_steps=gd_steps,
                         **config.task_options)


# --------------------------------------------------------------------------- the step


class TrainStep(plain_step.TrainStep):
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
        super().__init__(model, loss=training_task(config.task).loss, lr=config.lr,
                         betas=(config.beta1, config.beta2), weight_decay=config.weight_decay,
                         grad_clip=config.grad_clip, precision=config.precision, flat=flat,
                         skip_unused=skip_unused)


# --------------------------------------------------------------------------- the loop, and the helpers it calls in order

STATE_FILE = "train_state.pt"
MODEL_FILE = "model.pt"
FLAT_ON_CPU = True  # one flat parameter buffer on a single CPU process (False: per parameter, to compare)


def _check_run_arguments(config, *, stop_after, eval_every, log_every, ckpt_every, threads) -> None:
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    for name, value in (("eval_every", eval_every), ("log_every", log_every), ("ckpt_every", ckpt_every)):
        check_int(value, name, minimum=1)
    if stop_after is not None:
        check_int(stop_after, "stop_after", minimum=1)
    if threads is not None:
        check_int(threads, "threads", minimum=1)


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


def _build_model(config: TrainConfig, device: torch.device):
    """The untrained model: initialised from the seed only (the same on every rank) on the
    CPU, then moved to ``device``."""
    from .models import build_model

    model = build_model(config.kind, config.d, n_layers=config.n_layers, width=config.width,
                        heads=config.heads, layernorm=config.layernorm, n_points=config.n_points,
                        mlp=config.mlp if config.kind == "linear" else None,
                        mlp_ratio=config.mlp_ratio if config.kind == "gpt2" else None,
                        residual=config.residual if config.kind == "lstm" else None, seed=config.seed)
    return model.to(device)


@dataclass
class _RunState:
    """Where a run stands, besides the model, the optimizer and the data generator."""

    step: int = 0
    elapsed: float = 0.0  # seconds of training before this process took over
    history: dict = dataclasses.field(default_factory=lambda: {
        "step": [], "loss": [], "lr": [], "eval_step": [], "eval_error": [], "eval_seconds": []})
    running: float = 0.0  # the loss summed since the last log line (a tensor while training) ...
    running_count: int = 0  # ... over this many steps


def _resume(path: Path, config: TrainConfig, world: int, rank: int, model, trainer, generator) -> _RunState:
    """Load a checkpoint into the model, the step's optimizer and the generator."""
    state = _load_state(path, config, world)
    model.load_state_dict(state["model"])
    trainer.load_optimizer_state(state["optimizer"], state.get("optimizer_layout", "per_parameter"))  # older states: per parameter
    generator.set_state(state["generators"][rank])
    running, running_count = state["running_loss"]
    return _RunState(state["step"], state["elapsed_seconds"], state["history"], running, running_count)


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


def _wrap_for_ddp(model, device: torch.device, world: int):
    """The module the step runs: the model, or under torchrun its DDP wrapper (gradients
    averaged over ranks)."""
    if world == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)


class _Evaluator:
    """The periodic evaluation: the task's headline metric at ``k = eval_k`` on the fixed
    evaluation prompts (own generator: evaluating never disturbs the training data), and
    the task's first baseline's on the same prompts, computed once."""

    def __init__(self, config: TrainConfig, device: torch.device):
        self.task, self.k = training_task(config.task), config.eval_k
        self.X, self.y = _draw_eval_set(config, device)
        self.reference = self.task.baselines[0] if self.task.baselines else None
        self.reference_value = None
        if self.reference is not None:
            k = self.k
            curves = baseline_curves(self.task, self.X[:, :k + 1], self.y[:, :k + 1], names=[self.reference],
                                     **config.task_options)
            self.reference_value = curves[self.reference][k]

    def __call__(self, model) -> float:
        metrics = self.task.metrics(predict(model, self.X, self.y), self.y, self.X.shape[-1])
        return float(metrics[self.task.headline][self.k])

    def describe(self, value: float) -> str:
        reference = "" if self.reference is None else f" ({self.reference} {self.reference_value:.4f})"
        return f"{self.task.headline} at k={self.k} {value:.4f}{reference}"


class _CompiledStep:
    """The step's forward and backward through ``torch.compile`` (one compile, for the final
    prompt length: the first call compiles). Where compiling fails it warns and runs the
    same step eagerly from then on."""

    def __init__(self, trainer, module, history: dict, write):
        self.trainer, self.module, self.history, self.write = trainer, module, history, write
        self.compiled, self.checked = torch.compile(module, dynamic=False), False

    def __call__(self, X: torch.Tensor, y: torch.Tensor, loss_from: int = 0) -> torch.Tensor:
        if self.compiled is None or self.checked:
            return self.trainer.forward_backward(X, y, self.module if self.compiled is None else self.compiled,
                                                 loss_from=loss_from)
        self.write("compiling the training step with torch.compile (about a minute on a 2-core CPU; "
                   "later runs reuse the on-disk cache) ...")
        t = time.perf_counter()
        try:  # the first call compiles (forward now, backward at loss.backward())
            loss = self.trainer.forward_backward(X, y, self.compiled, loss_from=loss_from)
        except Exception as err:  # no compiler, an unsupported op...: same step, eagerly
            reason = (str(err).strip().splitlines() or [""])[0][:300]
            warnings.warn(f"torch.compile failed ({type(err).__name__}: {reason}); training eagerly",
                          RuntimeWarning, stacklevel=3)
            self.compiled = None
            return self.trainer.forward_backward(X, y, self.module, loss_from=loss_from)
        self.checked = True
        self.history["compile_seconds"] = round(time.perf_counter() - t, 1)
        self.write(f"compiled in {self.history['compile_seconds']:.0f} s")
        return loss


def _compiled_step(config: TrainConfig, trainer, module, world: int, history: dict, write):
    """A :class:`_CompiledStep` where the recipe compiles; ``None`` for an eager run."""
    if not config.compile:
        return None
    if world > 1:  # compiling a DDP-wrapped model is not tested here
        warnings.warn("compile=True applies to single-process runs; under torchrun the step runs eagerly",
                      RuntimeWarning, stacklevel=3)
        return None
    return _CompiledStep(trainer, module, history, write)


def _progress_bar(config: TrainConfig, step: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=config.steps, initial=step, disable=not enabled, desc="train", dynamic_ncols=True,
                mininterval=1.0 if sys.stderr.isatty() else 30.0)


def _log_loss(run: _RunState, lr: float, world: int) -> None:
    """Append the mean loss since the last log line (averaged over ranks) to the history."""
    mean_loss = run.running / run.running_count
    if world > 1:
        import torch.distributed as dist

        dist.all_reduce(mean_loss)
        mean_loss = mean_loss / world
    run.history["step"].append(run.step)
    run.history["loss"].append(float(mean_loss))
    run.history["lr"].append(lr)
    run.running, run.running_count = torch.zeros_like(run.running), 0


def _evaluate(evaluator: _Evaluator, model, run: _RunState, seconds: float, write) -> None:
    value = evaluator(model)
    run.history["eval_step"].append(run.step)
    run.history["eval_error"].append(value)
    run.history["eval_seconds"].append(seconds)
    write(f"step {run.step}: {evaluator.describe(value)}, {seconds:.0f} s")


def _agree_to_stop(stopping: bool, world: int, device: torch.device) -> bool:
    """Every rank must agree to stop (a signal may reach one rank only)."""
    if world == 1:
        return stopping
    import torch.distributed as dist

    flag = torch.tensor([1.0 if stopping else 0.0], device=device)
    dist.all_reduce(flag)
    return bool(flag.item() > 0)


def _gather(obj, world: int) -> list:
    if world == 1:
        return [obj]
    import torch.distributed as dist

    out = [None] * world
    dist.all_gather_object(out, obj)
    return out


def _save_state(path: Path, config: TrainConfig, model, trainer, generator, run: _RunState, elapsed: float,
                rank: int, world: int) -> None:
    """Write ``train_state.pt`` atomically (rank 0), with every rank's generator state."""
    from .models.pretrained import atomic_save

    generator_states = _gather(generator.get_state(), world)
    if rank != 0:
        return
    atomic_save({
        "format": "tfnewton-train-state",
        "config": asdict(config),
        "model": model.state_dict(),
        "optimizer": trainer.optimizer_state(),
        "optimizer_layout": trainer.layout,
        "step": run.step,
        "curriculum": dict(zip(("d", "n_points"), curriculum_at(run.step, config))),
        "generators": generator_states,
        "history": run.history,
        "running_loss": [float(run.running), run.running_count],
        "elapsed_seconds": elapsed,
        "library_version": __version__,
    }, path)


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


def _finish(config: TrainConfig, model, run: _RunState, evaluator, *, out_dir: Path, rank: int, world: int,
            device: torch.device, final_eval: bool, command: str | None) -> dict:
    """Check that the ranks agree, write ``model.pt`` with its metadata (a finished run),
    and say how the run ended."""
    from .models.pretrained import save_checkpoint, state_dict_checksum

    # Every rank must hold the same weights (DDP keeps them in sync); record that we checked.
    in_sync = len(set(_gather(state_dict_checksum(model.state_dict()), world))) == 1
    finished = run.step >= config.steps
    result = {"finished": finished, "step": run.step, "state_path": str(out_dir / STATE_FILE), "model_path": None,
              "metrics": None, "history": run.history, "ranks_in_sync": in_sync, "world_size": world}
    if finished and rank == 0:
        headline, evals = evaluator.task.headline, run.history["eval_error"]
        metrics = {"eval_k": evaluator.k, "eval_metric": headline,
                   f"{headline}_at_eval_k": evals[-1] if evals else None}
        if evaluator.reference is not None:
            metrics[f"{evaluator.reference}_{headline}_at_eval_k"] = evaluator.reference_value
        if final_eval:
            metrics["error_vs_k"] = error_vs_k(model, config)
        meta = {
            "task": config.task, "d": config.d, "n_points": config.n_points, "kind": config.kind,
            "steps": run.step, "seed": config.seed, "train_config": asdict(config),
            "library_version": __version__, "torch_version": torch.__version__, "device": device.type,
            "precision": config.precision, "world_size": world, "ranks_in_sync": in_sync,
            "train_seconds": run.elapsed, "threads": torch.get_num_threads(), "metrics": metrics,
            "history": run.history,
            "command": command or f"python -m tfnewton train {' '.join(config_to_argv(config))} --out {shlex.quote(str(out_dir))}",
        }
        result.update(model_path=str(save_checkpoint(model, out_dir / MODEL_FILE, meta)), metrics=metrics)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    return result


def train(config: TrainConfig, out_dir: str | os.PathLike, *, device=None, resume: bool = False,
          stop_after: int | None = None, eval_every: int = 500, log_every: int = 50, ckpt_every: int = 500,
          threads: int | None = None, progress: bool = True, final_eval: bool = True,
          command: str | None = None) -> dict:
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
        The task's metrics against ``k`` next to its baselines at the end
        (:func:`error_vs_k`, stored in the metadata).
    command : str, optional
        The command line recorded in the metadata (the CLI fills it in).

    Returns
    -------
    dict
        ``{"finished", "step", "model_path", "state_path", "metrics", "history"}``.
    """
    _check_run_arguments(config, stop_after=stop_after, eval_every=eval_every, log_every=log_every,
                         ckpt_every=ckpt_every, threads=threads)
    device = check_device(device)  # the one check of the device; the helpers take the result
    if threads is not None:
        torch.set_num_threads(threads)
    rank, world, device = _distributed_setup(device)
    if config.batch_size % world:
        raise ValueError(f"batch_size = {config.batch_size} must be divisible by the {world} processes")
    out_dir = Path(out_dir)
    state_path = out_dir / STATE_FILE
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)

    # Model, step, data. On one CPU process the parameters live in one flat buffer
    # (tfnewton.step.flatten_parameters); GPUs and DDP keep per-parameter tensors.
    model = _build_model(config, device)
    trainer = TrainStep(model, config, flat=FLAT_ON_CPU and world == 1 and device.type == "cpu")
    config = dataclasses.replace(config, precision=trainer.precision)  # what "auto" meant here, recorded
    generator = torch.Generator(device=device).manual_seed(config.seed * 1_000_003 + 7919 * rank + 1)
    run = _RunState()
    if resume and state_path.is_file():
        run = _resume(state_path, config, world, rank, model, trainer, generator)
    run.running = torch.tensor(run.running, device=device)
    module = _wrap_for_ddp(model, device, world)
    evaluator = _Evaluator(config, device) if rank == 0 else None
    bar = _progress_bar(config, run.step, enabled=progress and rank == 0)
    compiled = _compiled_step(config, trainer, module, world, run.history, bar.write)
    local_batch = config.batch_size // world
    t0 = time.perf_counter() - run.elapsed

    model.train()
    with _StopRequested() as stop:
        while run.step < config.steps:
            lr = learning_rate(run.step, config)
            trainer.set_lr(lr)
            d_eff, n_eff = curriculum_at(run.step, config)
            X, y = sample_batch(config, local_batch, n_eff, d_eff, generator=generator, device=device)
            first = loss_start(run.step, config)
            if compiled is not None and n_eff == config.n_points:
                loss = compiled(X, y, first)
            else:
                loss = trainer.forward_backward(X, y, module, loss_from=first)
            if not trainer.clip_and_update():  # a non-finite gradient norm: no update
                run.history["skipped_steps"] = run.history.get("skipped_steps", 0) + 1
            run.step += 1
            run.running += loss.detach()
            run.running_count += 1
            bar.update(1)

            if run.step % log_every == 0 or run.step == config.steps:
                _log_loss(run, lr, world)
                bar.set_postfix(loss=f"{run.history['loss'][-1]:.4f}", d=d_eff, n=n_eff)
            if evaluator is not None and (run.step % eval_every == 0 or run.step == config.steps):
                _evaluate(evaluator, model, run, time.perf_counter() - t0, bar.write)
            stopping = _agree_to_stop(stop.flag or (stop_after is not None and run.step >= stop_after),
                                      world, device)
            if run.step % ckpt_every == 0 or stopping or run.step == config.steps:
                _save_state(state_path, config, model, trainer, generator, run, time.perf_counter() - t0,
                            rank, world)
            if stopping and run.step < config.steps:
                break
    bar.close()
    run.elapsed = time.perf_counter() - t0
    return _finish(config, model, run, evaluator, out_dir=out_dir, rank=rank, world=world, device=device,
                   final_eval=final_eval, command=command)


# --------------------------------------------------------------------------- command line


def config_to_argv(config: TrainConfig) -> list[str]:
    """Flags that rebuild ``config`` from the defaults (used in the recorded command)."""
    default = TrainConfig()
    argv = []
    for f in dataclasses.fields(TrainConfig):
        value = getattr(config, f.name)
        if value != getattr(default, f.name):
            argv += _field_argv(f.name, value)
    return argv


def _field_argv(name: str, value) -> list[str]:
    """The flag (and value) that sets recipe field ``name`` to ``value``."""
    flag = _flag(name)
    if isinstance(value, bool):
        return [flag if value else "--no-" + name.replace("_", "-")]
    if isinstance(value, tuple):  # a mixture of condition numbers: --condition-number 1.0,10.0,50.0
        return [flag, ",".join(str(v) for v in value)]
    return [flag, str(value)]


def float_or_floats(text: str) -> float | tuple[float, ...]:
    """``"10"`` → ``10.0``; ``"1,10,50"`` → ``(1.0, 10.0, 50.0)`` (the type of ``--condition-number``)."""
    values = tuple(float(part) for part in text.split(","))
    return values[0] if len(values) == 1 else values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tfnewton train",
        description="Train an in-context learner (see tfnewton.train). Flags override --recipe.",
    )
    p.add_argument("--recipe", choices=sorted(RECIPES), help="start from a named recipe")
    p.add_argument("--quick", action="store_true",
                   help="the recipe's exercise-sized variant (at most 3 CPU-minutes; recipes with one: "
                        f"{', '.join(sorted(QUICK))}); further flags override it")
    p.add_argument("--out", required=True, help="output folder (model.pt, train_state.pt)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N")
    p.add_argument("--resume", action="store_true", help="continue from OUT/train_state.pt if present")
    p.add_argument("--stop-after", type=int, default=None, help="checkpoint and exit after this many steps in total")
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--ckpt-every", type=int, default=500)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    p.add_argument("--no-final-eval", action="store_true", help="skip the metrics-vs-k curves at the end")
    for f in dataclasses.fields(TrainConfig):
        flags = [_flag(f.name)] + (["--d"] if f.name == "d" else [])
        if f.type in ("bool", bool):
            p.add_argument(*flags, dest=f.name, action="store_true", default=None)
            p.add_argument("--no-" + f.name.replace("_", "-"), dest=f.name, action="store_false")
        else:
            kind = {"int": int, "float": float, "str": str, "float | tuple[float, ...]": float_or_floats}[f.type]
            p.add_argument(*flags, dest=f.name, type=kind, default=None)
    return p


def _flag(name: str) -> str:
    # ``--dim`` rather than ``--d``: torchrun's own parser rejects ``--d`` as an ambiguous
    # abbreviation of its options even after the module name (``--d`` stays as an alias).
    return "--dim" if name == "d" else "--" + name.replace("_", "-")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The recipe the parsed flags ask for: ``--recipe`` (``--quick``: its quick variant),
    then each recipe flag given."""
    explicit = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
                if getattr(args, f.name) is not None}
    if getattr(args, "quick", False):
        if not args.recipe:
            raise ValueError(f"--quick needs --recipe, one of {', '.join(sorted(QUICK))}")
        return quick_config(args.recipe, **explicit)
    values = dict(RECIPES[args.recipe]) if args.recipe else {}
    return TrainConfig(**{**values, **explicit})


def _expand_quick(argv: list[str], args: argparse.Namespace) -> list[str]:
    """``argv`` with ``--quick`` replaced by the flags of the quick variant's fields that no
    explicit flag sets, so that the recorded command rebuilds the run whatever :data:`QUICK`
    later says."""
    given = [i for i, a in enumerate(argv) if len(a) > 3 and "--quick".startswith(a)]  # or abbreviated
    if not given:
        return argv
    flags = [a for name, value in QUICK[args.recipe].items() if getattr(args, name) is None
             for a in _field_argv(name, value)]
    rest = [a for i, a in enumerate(argv) if i not in given]
    at = given[0]
    return rest[:at] + flags + rest[at:]


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
    keep = _expand_quick(_reproducible_argv(argv), args)
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
            value = m[f"{m['eval_metric']}_at_eval_k"]
            print(f"done: {result['step']} steps; {m['eval_metric']} at k={m['eval_k']}: "
                  f"{'n/a' if value is None else f'{value:.4f}'}; model written to {result['model_path']}")
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
