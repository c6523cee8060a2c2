"""The command line: ``python -m tfnewton COMMAND ...`` (or ``tfnewton COMMAND ...``).

Commands
--------
``notebooks DIR [--force] [--book ROOT] [--no-solutions]``
    Write every chapter of the book as a runnable ``.ipynb`` into ``DIR``
    (``--no-solutions``: student copies, each exercise's solution an empty cell).
``train ...``
    Train an in-context learner; every argument after ``train`` goes to
    :func:`tfnewton.train.main` (``python -m tfnewton train --help`` lists them).
"""

from __future__ import annotations

import argparse
import sys

_DESCRIPTION = "tfnewton: how Transformers carry out Newton's method in context."


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tfnewton", description=_DESCRIPTION)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    nb = commands.add_parser(
        "notebooks",
        help="write every chapter of the book as a runnable .ipynb into DIR",
        description="Write every chapter listed in _toc.yml as a runnable notebook (no outputs) into DIR.",
    )
    nb.add_argument("directory", metavar="DIR", help="folder to write into (created if missing; must be empty)")
    nb.add_argument("--force", action="store_true", help="write into a non-empty DIR, overwriting notebooks of the same name")
    nb.add_argument(
        "--book",
        metavar="ROOT",
        default=None,
        help="the book's folder (holding _toc.yml); default: the clone tfnewton was installed from, "
        "else the current folder, else the copy of the book inside the installed package",
    )
    nb.add_argument(
        "--no-solutions",
        dest="solutions",
        action="store_false",
        help="student copies: each cell tagged 'solution' becomes an empty cell "
        "'# Your solution to exercise N.'",
    )

    # Parsed by tfnewton.train itself; listed here so that --help shows it.
    commands.add_parser(
        "train",
        help="train an in-context learner (arguments go to tfnewton.train; see `train --help`)",
        add_help=False,
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)

    if argv and argv[0] == "train":
        # Imported here: training pulls in the models, which `notebooks` does not need.
        import importlib

        train = importlib.import_module("tfnewton.train")
        status = train.main(argv[1:])
        return 0 if status is None else int(status)

    args = _parser().parse_args(argv)
    if args.command == "notebooks":
        from tfnewton.notebooks import write_notebooks

        try:
            written = write_notebooks(
                args.directory, force=args.force, root=args.book, solutions=args.solutions
            )
        except (FileExistsError, FileNotFoundError, NotADirectoryError, ValueError) as error:
            print(f"python -m tfnewton notebooks: error: {error}", file=sys.stderr)
            return 2
        except ModuleNotFoundError as error:  # myst-nb reads the chapters; the book extra has it
            if (error.name or "").split(".")[0] not in {"myst_nb", "myst_parser", "nbformat"}:
                raise
            print(
                f"python -m tfnewton notebooks: error: {error}; the chapters are read with "
                "myst-nb, which comes with: pip install 'tfnewton[book]'",
                file=sys.stderr,
            )
            return 2
        for path in written:
            print(path)
        copies = "notebooks" if args.solutions else "student copies (solutions left out)"
        print(f"wrote {len(written)} {copies} into {args.directory}; open them with: jupyter lab {args.directory}")
        return 0
    raise AssertionError(f"unhandled command {args.command!r}")  # argparse rejects unknown ones


if __name__ == "__main__":
    sys.exit(main())
