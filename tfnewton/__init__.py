"""tfnewton: how Transformers carry out Newton's method in context.

Submodules are imported lazily, so ``import tfnewton`` stays fast and
``tfnewton.algorithms`` (or any other submodule) loads on first use:

>>> import tfnewton
>>> tfnewton.algorithms.newton_schulz  # doctest: +SKIP

``algorithms``     reference optimizers, every iterate returned, and their registry
``tasks``          samplers of in-context problems
``approx``         ReLU approximations of scalar maps (sigmoid, damping, products)
``sparse``         the LISTA family for sparse recovery (fixed-matrix and in-context)
``layers``         linear attention, ReLU MLP and the residual stack
``constructions``  Transformers whose weights are written down
``models``         trained in-context learners and their checkpoints
``train``          the training loop
``step``           the training step: flat parameter buffer, precision, clipping, AdamW
``baselines``      OLS, tuned GD and damped Newton scored beside a model, per context length
``capture``        the hook protocol; a model's residual stream by layer name
``ridge``          the ridge probe (fit / predict / score) and the one train/test split
``probes``         linear probes from every layer to every step of an algorithm
``metrics``        Fu et al.'s similarity metrics
``comparison``     ``compare``: error vs layer/step for any mix of models and algorithms
``separation``     how far apart Newton and GD can be under a metric (its power, per step)
``logistic_probes`` per-layer read-outs and similarities of a trained in-context classifier
``sparse_probes``  per-layer estimates of the sparse signal from a trained model
``exercises``      checkers for the chapters' exercises
``tables``         results tables shown as HTML in Jupyter and the book
``devices``        the device the chapters run on (``TFNEWTON_DEVICE``)
``estimators``     scikit-learn estimators whose predictions come from a Transformer
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = (
    "algorithms",
    "tasks",
    "approx",
    "sparse",
    "layers",
    "constructions",
    "models",
    "train",
    "step",
    "baselines",
    "capture",
    "ridge",
    "probes",
    "metrics",
    "comparison",
    "separation",
    "architectures",
    "logistic_probes",
    "sparse_probes",
    "plotting",
    "widgets",
    "notebooks",
    "exercises",
    "tables",
    "devices",
    "estimators",
)

# Names re-exported at the top level: name -> submodule that defines it.
_REEXPORTS = {"compare": "comparison"}

__all__ = list(_SUBMODULES) + list(_REEXPORTS) + ["__version__"]


def __getattr__(name: str):
    if name in _SUBMODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    if name in _REEXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_REEXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tfnewton' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
