r"""``compare``: error against layer or step for any mix of models and algorithms, written once.

Every chapter asks the same question — how fast does this thing reach the least-squares
answer? — of different things: a reference algorithm (error after ``k`` steps), a
construction or a trained model (error after ``ℓ`` layers). :func:`compare` answers it for
all of them on the same held-out prompts and returns a tidy :class:`ComparisonTable` (a list
of dicts; pandas is not needed) with the figure drawn by :func:`tfnewton.plotting.error_curves`.

How each kind of entry is measured, on the query point (the last point of each prompt):

* an **algorithm** (``"newton"``, ``"gd"``, … or a callable, see
  :func:`tfnewton.algorithms.iterates`): the prediction ``x_qᵀw_k`` of its ``k``-th iterate on
  the prompt's context;
* a **trained model** (a causal learner, ``forward(X, y)``, with ``blocks``): layer ℓ's
  prediction is a linear read-out of its hidden state at the query token, fit on other prompts
  of the task (Fu et al.'s probe, :class:`tfnewton.ridge.RidgeProbe`), and the model's own
  output is one more row (``readout = "output"``);
* a **construction** (``takes_query``, ``forward(X, y, x_query)``): its own ``readout`` applied
  after every block — reported per Newton (or GD) step ``k`` at the block that ends step ``k``
  when it declares its ``steps`` (``hidden_index_of_step``), so its curve lies on the
  algorithm's. The hook protocol is :class:`tfnewton.capture.PromptModel`.

The error is Garg et al.'s normalized squared error ``(ŷ − y)²/d`` against the query's label,
averaged over the held-out prompts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import torch
import torch.nn as nn

from . import _validate as v
from .algorithms import ALGORITHMS, as_algorithm, step_list
from .capture import check_hooked, query_position, run_with_cache, takes_query, task_prompts
from .metrics import normalized_error
from .ridge import RidgeProbe, check_enough_problems, split_indices
from .tables import Table, TableView

__all__ = ["ComparisonTable", "compare"]

COLUMNS = ("name", "kind", "axis", "index", "error", "median_error", "readout")


@dataclass
class ComparisonTable(TableView):
    """The tidy result of :func:`compare`: one row per (entry, layer or step).

    Each row is a dict with keys ``name`` (the entry's label), ``kind`` (``"algorithm"`` or
    ``"model"``), ``axis`` (``"step"`` or ``"layer"``), ``index`` (``k`` or ``ℓ``), ``error``
    (mean normalized squared error), ``median_error`` and ``readout``: ``"iterate"`` for an
    algorithm, ``"probe"`` for a trained model's layer read by a fitted probe, ``"output"`` for
    a trained model's own output, ``"readout"`` for a construction read by its own read-out
    (then ``axis`` is ``"step"`` when the construction says which block ends each step).

    Attributes
    ----------
    rows : list of dict
    ax : matplotlib Axes or None
        The figure, when one was drawn.
    num_fit, num_test : int
        Prompts the read-outs were fit on and prompts everything was scored on.
    """

    rows: list = field(default_factory=list)
    ax: object = None
    num_fit: int = 0
    num_test: int = 0

    def __iter__(self) -> Iterator[dict]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i) -> dict:
        return self.rows[i]

    def column(self, key: str) -> list:
        """Every row's value for ``key``."""
        if key not in COLUMNS:
            raise KeyError(f"no column {key!r}; columns are {COLUMNS}")
        return [row[key] for row in self.rows]

    def where(self, **conditions) -> "ComparisonTable":
        """The rows whose columns equal the given values, e.g. ``table.where(name="GD")``."""
        for key in conditions:
            if key not in COLUMNS:
                raise KeyError(f"no column {key!r}; columns are {COLUMNS}")
        rows = [r for r in self.rows if all(r[k] == val for k, val in conditions.items())]
        return ComparisonTable(rows, None, self.num_fit, self.num_test)

    def names(self) -> list:
        """Entry labels, in the order given."""
        return list(dict.fromkeys(r["name"] for r in self.rows))

    def curves(self) -> dict:
        """``name -> (indices, errors)`` for the layer/step curves (a trained model's own output excluded)."""
        out = {}
        for name in self.names():
            rows = [r for r in self.rows if r["name"] == name and r["readout"] != "output"]
            out[name] = ([r["index"] for r in rows], [r["error"] for r in rows])
        return out

    def final(self, name: str) -> dict:
        """The last row of an entry: its deepest layer's (or the model's own) or last step's error."""
        rows = [r for r in self.rows if r["name"] == name]
        if not rows:
            raise KeyError(f"no entry named {name!r}; entries are {self.names()}")
        return rows[-1]

    def to_table(self) -> Table:
        """Every row, errors to three significant digits.

        Returns
        -------
        Table
            Shown as HTML in Jupyter and the book, as Markdown by ``print``.
        """
        rows = [[r["name"], r["kind"], r["axis"], r["index"], f"{r['error']:.3g}", f"{r['median_error']:.3g}",
                 r["readout"]] for r in self.rows]
        return Table(list(COLUMNS), rows)

    def plot(self, ax=None, *, logy: bool = True, logx: bool = False, title: str | None = None):
        """Error against layer / step for every entry, with :func:`tfnewton.plotting.error_curves`.

        A trained model's own output is marked with a star at its last layer; an entry with a
        single value (online GD: one pass over the context) is drawn as a dashed level.

        Parameters
        ----------
        ax : matplotlib Axes, optional
        logy : bool
            Logarithmic error axis.
        logx : bool
            Symmetric-logarithmic layer/step axis (linear near 0): for step grids like
            ``1, 2, 4, …, 1024`` next to a handful of layers.
        title : str, optional

        Returns
        -------
        matplotlib Axes
        """
        import matplotlib.pyplot as plt

        from .plotting import error_curves

        if ax is None:
            _, ax = plt.subplots(figsize=(6.0, 4.0), layout="constrained")
        for name, (x, err) in self.curves().items():
            if len(err) == 1:
                ax.axhline(max(err[0], 1e-16) if logy else err[0], linestyle="--", color="0.45",
                           label=f"{name} (one value)")
                continue
            ax = error_curves({name: err}, ax, x=x, xlabel="layer ℓ  /  step k",
                              ylabel="normalized squared error (ŷ − y)²/d", logy=logy, title=title,
                              floor=1e-16 if logy else None)
            own = [r for r in self.rows if r["name"] == name and r["readout"] == "output"]
            if own:
                color = ax.get_lines()[-1].get_color()
                ax.scatter([own[0]["index"]], [own[0]["error"]], marker="*", s=120, color=color, zorder=3)
        ax.legend()
        if logx:
            ax.set_xscale("symlog", linthresh=1.0)
        return ax


def _entries(models_and_algorithms) -> list:
    """Normalize the user's mapping or sequence into ``(label, thing, kwargs)`` triples."""
    if isinstance(models_and_algorithms, dict):
        items = list(models_and_algorithms.items())
    elif isinstance(models_and_algorithms, (list, tuple)):
        items = [(None, e) for e in models_and_algorithms]
    else:
        raise TypeError(
            "models_and_algorithms must be a dict label -> entry or a list of entries, got "
            f"{type(models_and_algorithms).__name__}"
        )
    if not items:
        raise ValueError("models_and_algorithms must not be empty")
    out = []
    for label, entry in items:
        kwargs = {}
        if isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[1], dict):
            entry, kwargs = entry
        if isinstance(entry, nn.Module):
            check_hooked(entry)  # a model must have layers to read: say so before any work
            default = getattr(entry, "kind", "") or type(entry).__name__
        elif isinstance(entry, str) or callable(entry):
            default = as_algorithm(entry).name  # raises for an unknown name
        else:
            raise TypeError(
                f"each entry must be an algorithm name {sorted(ALGORITHMS)}, a callable, a "
                f"(name, kwargs) pair or a torch.nn.Module with blocks; got {type(entry).__name__}"
            )
        out.append((str(label) if label is not None else default, entry, kwargs))
    labels = [label for label, _, _ in out]
    if len(set(labels)) != len(labels):
        raise ValueError(f"entry labels must be unique, got {labels}; pass a dict label -> entry")
    return out


def _row(name, kind, axis, index, errors, readout) -> dict:
    return {
        "name": name, "kind": kind, "axis": axis, "index": int(index), "error": float(errors.mean()),
        "median_error": float(errors.median()), "readout": readout,
    }


def compare(
    models_and_algorithms,
    task,
    *,
    steps=10,
    test_fraction: float = 0.25,
    val_fraction: float = 0.2,
    penalties=None,
    seed: int = 0,
    batch_size: int | None = 1024,
    plot: bool = True,
    ax=None,
    logy: bool = True,
    logx: bool = False,
    title: str | None = None,
) -> ComparisonTable:
    """Error against layer (models) or step (algorithms) on the same held-out prompts.

    Parameters
    ----------
    models_and_algorithms : dict or list
        ``label -> entry`` (or a list of entries, labelled by name or class). An entry is an
        algorithm name (``"newton"``, ``"gd"``, ``"cg"``, ``"lbfgs"``, ``"bfgs"``, ``"online_gd"``,
        ``"ols"``), a callable ``(X, y, steps, **kwargs) -> (steps + 1, B, d)``, a pair
        ``(name or callable, kwargs)`` such as ``("gd", {"lr": 0.5})``, or a model following the
        hook protocol (a trained model or a construction).
    task : object with ``X (B, n, d)`` and ``y (B, n)``, or a pair ``(X, y)``
        The last point of each prompt is the query, the others its context.
    steps : int or sequence of int
        Algorithm steps to report (``0 … steps`` or the listed ones).
    test_fraction, val_fraction, penalties, seed, batch_size
        Held-out share, the read-out probes' validation share and penalties, the seed of the
        split, prompts per forward pass (see :func:`tfnewton.probes.probe_iterates`).
    plot : bool
        Draw the figure (on ``ax``, or a new one).
    ax : matplotlib Axes, optional
    logy, logx : bool
        Logarithmic error axis; symmetric-logarithmic layer/step axis (see
        :meth:`tfnewton.comparison.ComparisonTable.plot`).
    title : str, optional

    Returns
    -------
    ComparisonTable

    Examples
    --------
    >>> import torch
    >>> from tfnewton import compare, tasks
    >>> task = tasks.sample_linear_regression(200, 11, 5, generator=torch.Generator().manual_seed(0))
    >>> table = compare(["newton", ("gd", {"lr": 1.0})], task, steps=3, plot=False)
    >>> table.names(), len(table)
    (['newton', 'gd'], 8)
    """
    entries = _entries(models_and_algorithms)
    X, y = task_prompts(task)
    steps = step_list(steps)
    probe = RidgeProbe(penalties, val_fraction=val_fraction)  # checks penalties and val_fraction
    seed = v.check_int(seed, "seed", minimum=0)
    B, n_points, d = X.shape
    n = n_points - 1
    g = torch.Generator().manual_seed(seed)
    test_idx, fit_idx = split_indices(B, test_fraction, generator=g, name="test_fraction")
    Xc, yc, xq, yq = X[:, :n], y[:, :n], X[:, n], y[:, n].double()

    rows = []
    for label, entry, kwargs in entries:
        if not isinstance(entry, nn.Module):
            algorithm = as_algorithm(entry)
            W = algorithm(Xc[test_idx].double(), yc[test_idx].double(), max(steps), **kwargs)  # (S+1, B_test, d)
            if algorithm.online:
                pred = (W[-1] * xq[test_idx].double()).sum(-1)  # one pass over the context
                rows.append(_row(label, "algorithm", "step", n, normalized_error(pred, yq[test_idx], d, reduction="none"), "iterate"))
                continue
            for k in steps:
                pred = (W[k] * xq[test_idx].double()).sum(-1)
                rows.append(_row(label, "algorithm", "step", k, normalized_error(pred, yq[test_idx], d, reduction="none"), "iterate"))
            continue

        if takes_query(entry):
            # A construction says where its answer sits: read it with its own read-out
            # after every block (no probe to fit), at the block that ends each step when
            # it declares its steps (then the curve lies on the algorithm's).
            _, cache = run_with_cache(entry, Xc[test_idx], yc[test_idx], xq[test_idx], batch_size=batch_size)
            per_layer = entry.readout(cache.stack()).double().cpu()  # (L+1, B_test)
            errs = normalized_error(per_layer, yq[test_idx], d, reduction="none")
            if entry.steps is not None:
                for k in range(entry.steps + 1):
                    rows.append(_row(label, "model", "step", k, errs[entry.hidden_index_of_step(k)], "readout"))
            else:
                for layer in range(errs.shape[0]):
                    rows.append(_row(label, "model", "layer", layer, errs[layer], "readout"))
            continue
        if len(fit_idx) < 2:
            raise ValueError(f"too few probe problems: {B} prompts leave {len(fit_idx)} to fit read-outs on")
        out, cache = run_with_cache(entry, Xc, yc, xq, positions=query_position(entry, n), batch_size=batch_size)
        feats = cache.stack().double().cpu()  # (L+1, B, D)
        val_mask = probe.validation_split(len(fit_idx), g)
        num_train = int((~val_mask).sum())
        check_enough_problems(num_train, feats.shape[-1], f" for {label!r}", share=num_train / B)
        probe.fit(feats[:, fit_idx], yq[fit_idx].reshape(-1, 1), validation=val_mask)
        pred = probe.predict(feats[:, test_idx])[..., 0]  # (L+1, B_test)
        errs = normalized_error(pred, yq[test_idx], d, reduction="none")
        for layer in range(errs.shape[0]):
            rows.append(_row(label, "model", "layer", layer, errs[layer], "probe"))
        own = out[:, -1] if out.ndim == 2 else out  # a trained model: the prediction at the query token
        rows.append(_row(label, "model", "layer", errs.shape[0] - 1,
                         normalized_error(own[test_idx].double().cpu(), yq[test_idx], d, reduction="none"), "output"))

    table = ComparisonTable(rows, None, len(fit_idx), len(test_idx))
    if plot:
        table.ax = table.plot(ax, logy=logy, logx=logx, title=title)
    return table
