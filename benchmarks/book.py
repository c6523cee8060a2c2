"""How long each chapter of the book takes to execute, each in a fresh kernel, nothing cached.

Usage: python benchmarks/book.py [--chapters NAME ...] [--quick] [--out PATH] [--timeout 600]

Every page of ``_toc.yml`` that holds code becomes a notebook without outputs
(:func:`tfnewton.notebooks.chapter_notebook`, the conversion the book's download links and
``python -m tfnewton notebooks`` use) and runs top to bottom in a new ``python3`` kernel
started in ``book/``, as ``jupyter-book build`` runs it with ``execute_notebooks: force``:
no execution cache, one kernel per chapter. A chapter's time is the wall clock from starting
its kernel to shutting it down; its CPU time is what the kernel process used (all its
threads), which on a shared machine says what the chapter costs whatever the neighbours do.

Budgets (issue 19), on 2 cores: every chapter at most 60 s, the whole book at most 6 minutes.
The script prints a table (chapter, seconds, CPU seconds, budget, within it?) and the total,
and writes them as JSON to ``benchmarks/results/book_times.json`` with the command, the date
and the machine; the README's table and the "Using tfnewton in a course" page read it.

``--quick`` checks the machinery only: each chapter is cut to its first code cell (imports
and device), and nothing is written unless ``--out`` is given. Run the full measurement on
an otherwise idle machine: a busy neighbour inflates every wall-clock time.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import shlex
import sys
import time
from pathlib import Path

from _timing import machine as shared_machine

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "book_times.json"
CHAPTER_BUDGET_S = 60.0
BOOK_BUDGET_S = 6 * 60.0


def chapters(names=None, root=ROOT) -> list[tuple[str, Path]]:
    """(name, source) of every page of ``_toc.yml`` with code, in reading order.

    Parameters
    ----------
    names : list of str, optional
        Keep only these chapters (file stems), in reading order.

    Raises
    ------
    ValueError
        A name that is no chapter with code.
    """
    from tfnewton.notebooks import chapter_files, chapter_notebook

    found = [(path.stem, path) for path in chapter_files(root) if chapter_notebook(path) is not None]
    if names:
        unknown = sorted(set(names) - {name for name, _ in found})
        if unknown:
            raise ValueError(
                f"chapters must name pages of _toc.yml that hold code ({', '.join(n for n, _ in found)}); "
                f"got {', '.join(unknown)}"
            )
        found = [(name, path) for name, path in found if name in names]
    return found


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_notebook(notebook, cwd: Path, timeout: float = 600.0) -> dict:
    """Execute ``notebook`` in a fresh ``python3`` kernel started in ``cwd``.

    Returns
    -------
    dict
        ``seconds`` (wall clock, kernel start to shutdown), ``cpu_seconds`` (the kernel
        process's user + system time), and ``error`` (``None``, or the failing cell's exception as
        ``"Name: message"``; the first error stops the run, as it stops the build).
    """
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    client = NotebookClient(
        notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    )
    cpu0, wall0 = _children_cpu_seconds(), time.perf_counter()
    error = None
    try:
        client.execute()  # starts the kernel, runs every cell, shuts the kernel down (reaped)
    except (CellExecutionError, CellTimeoutError) as err:
        ename, evalue = getattr(err, "ename", type(err).__name__), getattr(err, "evalue", str(err))
        error = f"{ename}: {evalue}"
    wall, cpu = time.perf_counter() - wall0, _children_cpu_seconds() - cpu0
    return {"seconds": round(wall, 2), "cpu_seconds": round(cpu, 2), "error": error}


def first_code_cell_only(notebook):
    """The notebook cut to its first code cell (``--quick``)."""
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    notebook.cells = code[:1]
    return notebook


def machine() -> dict:
    """The machine the times were measured on (:func:`_timing.machine`) and its OpenMP setting."""
    return {**shared_machine(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}


def measure(names=None, *, quick: bool = False, timeout: float = 600.0, progress=print) -> list[dict]:
    """Time every chapter with code (or those named), each in a fresh kernel."""
    from tfnewton.notebooks import chapter_notebook

    rows = []
    for name, source in chapters(names):
        notebook = chapter_notebook(source)
        if quick:
            notebook = first_code_cell_only(notebook)
        row = {"chapter": name, **time_notebook(notebook, source.parent, timeout)}
        row["ok"] = row["error"] is None and row["seconds"] <= CHAPTER_BUDGET_S
        rows.append(row)
        if progress:
            status = "error: " + row["error"] if row["error"] else f"{row['seconds']:.1f} s"
            progress(f"  {name}: {status}", file=sys.stderr, flush=True)
    return rows


def summary(rows: list[dict]) -> dict:
    """The total and whether the book and every chapter are within their budgets."""
    total = round(sum(row["seconds"] for row in rows), 2)
    return {
        "total_seconds": total,
        "total_cpu_seconds": round(sum(row["cpu_seconds"] for row in rows), 2),
        "chapter_budget_seconds": CHAPTER_BUDGET_S,
        "book_budget_seconds": BOOK_BUDGET_S,
        "total_ok": total <= BOOK_BUDGET_S and all(row["error"] is None for row in rows),
        "all_ok": total <= BOOK_BUDGET_S and all(row["ok"] for row in rows),
    }


def table(rows: list[dict], totals: dict, total_label: str = "whole book") -> str:
    """The results as a Markdown table, one row per chapter and the total last."""

    def ok(flag, error=None):
        return "error" if error else ("yes" if flag else "**no**")

    lines = [
        "| chapter | seconds | CPU seconds | budget | within budget |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {row['chapter']} | {row['seconds']:.1f} | {row['cpu_seconds']:.1f} | "
        f"{CHAPTER_BUDGET_S:.0f} s | {ok(row['ok'], row['error'])} |"
        for row in rows
    ]
    lines.append(
        f"| **{total_label}** | {totals['total_seconds']:.1f} | {totals['total_cpu_seconds']:.1f} | "
        f"{BOOK_BUDGET_S / 60:.0f} min | {ok(totals['total_ok'])} |"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chapters", nargs="+", metavar="NAME", help="only these chapters (file stems)")
    parser.add_argument("--quick", action="store_true", help="first code cell of each chapter only; writes nothing unless --out")
    parser.add_argument("--out", type=Path, default=None, help=f"JSON file to write (default {RESULTS.relative_to(ROOT)}; none with --quick)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per cell, as _config.yml's execute.timeout")
    args = parser.parse_args(argv)
    out = args.out if args.out is not None else (None if args.quick else RESULTS)

    load_before = os.getloadavg()
    started = datetime.datetime.now(datetime.timezone.utc)
    print(f"executing each chapter in a fresh kernel (load average {load_before[0]:.2f})", file=sys.stderr)
    try:
        rows = measure(args.chapters, quick=args.quick, timeout=args.timeout)
    except ValueError as err:
        parser.error(str(err))
    totals = summary(rows)
    whole_book = not (args.quick or args.chapters)
    print(table(rows, totals, "whole book" if whole_book else "total"))
    for row in rows:
        if row["error"]:
            print(f"{row['chapter']} failed: {row['error']}")
    if out is not None:
        command = "python benchmarks/book.py" + "".join(f" {shlex.quote(a)}" for a in (argv if argv is not None else sys.argv[1:]))
        record = {
            "command": command,
            "date": started.isoformat(timespec="seconds"),
            "quick": args.quick,
            "complete": whole_book,  # every chapter, in full: what the course page reads
            "machine": machine(),
            "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
            **totals,
            "chapters": rows,
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
