"""One home per idea: no library module imports another module's private names.

A name that starts with ``_`` is private to the module that defines it. Private *modules*
(``tfnewton._validate``, ``tfnewton.models._common``, ``tfnewton.constructions._base``) are shared
on purpose and may be imported from; dunder names (``__version__``) are public. Tests are exempt.
"""

import ast
from pathlib import Path

import pytest

import tfnewton

PACKAGE = Path(tfnewton.__file__).parent
ROOT_NAME = "tfnewton"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imported_from(module: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute module a ``from … import`` reads from."""
    if not node.level:
        return node.module or ""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    base = package.split(".")
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def private_imports(module: str, path: Path) -> list:
    """``(line, "from X import _name")`` for every private name ``module`` imports from the library."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.ImportFrom):
            source = _imported_from(module, path, node)
            if source != ROOT_NAME and not source.startswith(ROOT_NAME + "."):
                continue
            for alias in node.names:
                name = alias.name
                private = name.startswith("_") and not (name.startswith("__") and name.endswith("__"))
                if private and f"{source}.{name}" not in MODULES:  # a private module is fine
                    found.append((node.lineno, f"from {source} import {name}"))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                last = alias.name.rpartition(".")[2]
                if alias.name.startswith(ROOT_NAME + ".") and last.startswith("_") and alias.name not in MODULES:
                    found.append((node.lineno, f"import {alias.name}"))
    return found


def test_the_checker_finds_what_it_should(tmp_path):
    path = tmp_path / "tfnewton" / "fake.py"  # a module of the package, for its relative imports
    path.parent.mkdir()
    path.write_text(
        "from .probes import _capture\n"
        "from . import _validate\n"
        "from ._validate import check_int\n"
        "from .models._common import InContextRegressor\n"
        "from tfnewton.ridge import _fit_ridge, RidgeProbe\n"
        "from . import __version__\n"
        "from numpy import _private_elsewhere\n"
        "def lazy():\n"
        "    from .metrics import _reduce\n"
    )
    found = [text for _, text in private_imports("tfnewton.fake", path)]
    assert found == [
        "from tfnewton.probes import _capture",
        "from tfnewton.ridge import _fit_ridge",
        "from tfnewton.metrics import _reduce",  # imports inside functions count too
    ]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_another_modules_private_names(module):
    found = private_imports(module, MODULES[module])
    assert not found, f"{module} imports private names: " + "; ".join(f"line {n}: {t}" for n, t in found)


def test_names_that_moved_stay_importable_from_their_old_module():
    from tfnewton import algorithms, capture, probes, ridge

    for name in ("ActivationCache", "run_with_cache", "hidden_states", "query_position"):
        assert getattr(probes, name) is getattr(capture, name)
    for name in ("LinearProbe", "fit_linear_probe", "r2_score", "DEFAULT_PENALTIES"):
        assert getattr(probes, name) is getattr(ridge, name)
    for name in ("ALGORITHMS", "iterates", "prefix_predictions"):
        assert getattr(probes, name) is getattr(algorithms, name)
