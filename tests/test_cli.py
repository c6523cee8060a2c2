"""The command line: python -m tfnewton {notebooks,train}."""

import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

from tfnewton.__main__ import main

ROOT = Path(__file__).resolve().parent.parent


def run(*args, cwd=ROOT):
    return subprocess.run(
        [sys.executable, "-m", "tfnewton", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_help_lists_both_commands():
    result = run("--help")
    assert result.returncode == 0
    assert "notebooks" in result.stdout and "train" in result.stdout


def test_no_command_is_a_usage_error():
    result = run()
    assert result.returncode == 2
    assert "usage:" in result.stderr


def test_unknown_command_is_a_usage_error():
    result = run("fly")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def test_notebooks_writes_into_a_new_folder(tmp_path):
    target = tmp_path / "notebooks"
    result = run("notebooks", str(target))
    assert result.returncode == 0, result.stderr
    written = sorted(target.glob("*.ipynb"))
    assert written and "jupyter lab" in result.stdout
    assert all(str(path) in result.stdout for path in written)


def test_notebooks_refuses_a_non_empty_folder_without_force(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    result = run("notebooks", str(tmp_path))
    assert result.returncode == 2
    assert "not empty" in result.stderr and "--force" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]

    forced = run("notebooks", str(tmp_path), "--force")
    assert forced.returncode == 0, forced.stderr
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert list(tmp_path.glob("*.ipynb"))


def test_notebooks_from_another_directory_with_book_option(tmp_path):
    """--book points at the repository; the command may run from anywhere."""
    result = run("notebooks", "out", "--book", str(ROOT), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert list((tmp_path / "out").glob("*.ipynb"))


def test_notebooks_with_a_wrong_book_folder_is_a_clear_error(tmp_path):
    result = run("notebooks", str(tmp_path / "out"), "--book", str(tmp_path))
    assert result.returncode == 2
    assert "_toc.yml" in result.stderr and "Traceback" not in result.stderr


_SOLVED_CHAPTER = """---
kernelspec:
  name: python3
  display_name: Python 3
---

# A chapter

1. **Exercise 3** (about 5 min). Print two.

```{code-cell} ipython3
:tags: [hide-cell, solution]
# Solution to exercise 3.
print(2)
```
"""


def _solved_book(folder, chapter=_SOLVED_CHAPTER):
    folder.mkdir()
    (folder / "_toc.yml").write_text("format: jb-book\nroot: chapter\n")
    (folder / "chapter.md").write_text(chapter)
    return folder


def test_notebooks_no_solutions_writes_student_copies(tmp_path):
    import nbformat

    book = _solved_book(tmp_path / "book")
    result = run("notebooks", str(tmp_path / "out"), "--book", str(book), "--no-solutions")
    assert result.returncode == 0, result.stderr
    assert "student copies" in result.stdout
    (written,) = (tmp_path / "out").glob("*.ipynb")
    sources = [c.source for c in nbformat.read(written, as_version=4).cells]
    assert "# Your solution to exercise 3.\n" in sources
    assert not any("print(2)" in s for s in sources)
    assert any("Print two." in s for s in sources)

    full = run("notebooks", str(tmp_path / "full"), "--book", str(book))
    assert full.returncode == 0, full.stderr
    (written,) = (tmp_path / "full").glob("*.ipynb")
    assert any("print(2)" in c.source for c in nbformat.read(written, as_version=4).cells)


def test_notebooks_no_solutions_with_a_malformed_solution_is_a_clear_error(tmp_path):
    book = _solved_book(tmp_path / "book", _SOLVED_CHAPTER.replace("# Solution to exercise 3.", "print(1)"))
    result = run("notebooks", str(tmp_path / "out"), "--book", str(book), "--no-solutions")
    assert result.returncode == 2
    assert "Solution to exercise N." in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_notebooks_without_myst_nb_says_which_extra_to_install(tmp_path):
    """A plain `pip install tfnewton` has no myst-nb; the command names the extra that does."""
    code = (
        "import sys; sys.modules['myst_nb'] = None; from tfnewton.__main__ import main; "
        f"sys.exit(main(['notebooks', {str(tmp_path / 'out')!r}]))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "myst_nb" in result.stderr and "pip install 'tfnewton[book]'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def fake_train(monkeypatch):
    """Stand in for tfnewton.train, recording the argv it is given."""
    calls = []
    module = types.ModuleType("tfnewton.train")

    def fake_main(argv):
        calls.append(list(argv))
        return module.status

    module.main = fake_main
    module.status = None
    monkeypatch.setitem(sys.modules, "tfnewton.train", module)
    return module, calls


def test_train_forwards_every_argument_untouched(fake_train):
    module, calls = fake_train
    argv = ["--task", "linear_regression", "--steps", "3", "--resume", "--help"]
    assert main(["train", *argv]) == 0
    assert calls == [argv]


def test_train_forwards_the_exit_status(fake_train):
    module, calls = fake_train
    module.status = 3
    assert main(["train"]) == 3
    assert calls == [[]]


def test_notebooks_does_not_import_training(tmp_path):
    """`train` is imported lazily: the notebooks command never loads the models."""
    code = (
        "import sys; from tfnewton.__main__ import main; "
        f"assert main(['notebooks', {str(tmp_path / 'nb')!r}]) == 0; "
        "print('tfnewton.train' in sys.modules, 'torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False False"


# --------------------------------------------------------------------------- README and CI


def _readme():
    return (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_opens_with_the_two_commands_that_ci_runs():
    first_block = re.search(r"```bash\n(.*?)```", _readme(), re.DOTALL)
    assert first_block and _readme().index(first_block.group(0)) < _readme().index("\n## ")
    install_and_build, run_tests = first_block.group(1).strip().splitlines()
    assert install_and_build.startswith("python3 -m venv .venv && ")
    assert "jupyter-book build . --all -W -n --keep-going" in install_and_build
    assert run_tests == ".venv/bin/python -m pytest"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    for step in install_and_build.split(" && "):
        words = step.split()
        if words[0] == ".venv/bin/pip":  # CI adds quiet flags; the packages must match
            assert " ".join(words[2:]) in ci, step
        else:
            assert step in ci, step
    assert run_tests in ci


def test_readme_python_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", _readme(), re.DOTALL)
    example = next(b for b in blocks if "newton_least_squares" in b and "sample_spd" in b)
    result = subprocess.run([sys.executable, "-c", example], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    newton, gd, residual = result.stdout.strip().splitlines()
    assert newton.startswith("Newton") and gd.startswith("GD")
    final_newton = float(newton.rsplit("'", 2)[-2])
    final_gd = float(gd.rsplit("'", 2)[-2])
    assert final_newton < 1e-12 < final_gd  # what the README says it prints
    assert float(re.search(r"tensor\(([^,)]+)", residual).group(1)) < 1e-12
