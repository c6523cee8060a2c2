"""Transformers whose weights are written down: each one *is* an optimizer.

One file per construction, the derivation in its docstring:

``newton_schulz_transformer``     :mod:`~tfnewton.constructions.newton_schulz`
    Newton–Schulz for ``A⁻¹``: 1 linear-attention layer, 2 heads, width ``3d`` per step.
``newton_regression_transformer`` :mod:`~tfnewton.constructions.newton_regression`
    Iterative Newton for in-context least squares: ``steps + 2`` layers.
``gd_regression_transformer``     :mod:`~tfnewton.constructions.gd_regression`
    Gradient descent on the in-context loss: 1 layer per step (von Oswald et al.).
``logistic_newton_transformer``   :mod:`~tfnewton.constructions.logistic_newton`
    Damped Newton on the logistic loss (Giannou et al.): attention + ReLU MLP, ``T(6 + k) + 2`` layers.
``in_context_ista_transformer``   :mod:`~tfnewton.constructions.ista_transformer`
    The in-context LISTA variant for sparse recovery: attention + ReLU MLP per step, ``2K + 1`` layers.

Every model follows the hook protocol of the library (``embed`` → ``blocks`` →
``readout``), is made of :mod:`tfnewton.layers` classes only, and says where each
iterate can be read (``block_of_step``). :mod:`~tfnewton.constructions.draw` draws
their token layouts and weights.
"""

from __future__ import annotations

from ._base import Construction, RegressionConstruction, TokenLayout
from .gd_regression import GDRegressionTransformer, gd_regression_transformer
from .ista_transformer import InContextISTATransformer, in_context_ista_transformer
from .logistic_newton import LogisticNewtonTransformer, logistic_newton_transformer
from .newton_regression import NewtonRegressionTransformer, newton_regression_transformer
from .newton_schulz import NewtonSchulzTransformer, newton_schulz_transformer

__all__ = [
    "Construction",
    "RegressionConstruction",
    "TokenLayout",
    "newton_schulz_transformer",
    "NewtonSchulzTransformer",
    "newton_regression_transformer",
    "NewtonRegressionTransformer",
    "gd_regression_transformer",
    "GDRegressionTransformer",
    "logistic_newton_transformer",
    "LogisticNewtonTransformer",
    "in_context_ista_transformer",
    "InContextISTATransformer",
]
