"""The wheel, as a student gets it: built like `python -m build` does (sdist, then a wheel
from the sdist), installed into a fresh virtual environment outside the source tree, where
`python -m tfnewton notebooks` writes the chapters (with and without solutions) from the
copy of the book the wheel carries, and one chapter runs in a fresh kernel of that
environment.

The environment is created with ``--system-site-packages`` from the interpreter running the
tests, so torch and Jupyter are not installed a second time. When that interpreter is itself
a virtual environment (``.venv``), whose packages ``--system-site-packages`` does not reach,
a ``.pth`` file adds its site-packages by path; ``.pth`` files found there are not processed,
so the editable install of tfnewton from the clone does not come along (checked below).
"""

import importlib.metadata
import json
import os
import re
import shutil
import site
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import nbformat
import pytest

from tfnewton.notebooks import chapter_files, write_notebooks

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
# `:tags: [...]` or, in a cell's YAML block, `tags: [...]`
SOLUTION_TAG_LINE = re.compile(r"^:?tags:\s*\[[^\]]*\bsolution\b[^\]]*\]", re.MULTILINE)
# Not part of a build: environments, outputs, caches, runs.
_NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv", "venv", "_build", "build", "dist", "*.egg-info", "runs", "notebooks",
    ".jupyter_cache", "jupyter_execute", "__pycache__", ".hypothesis", ".pytest_cache",
    ".ipynb_checkpoints", "_book",
)


def _run(args, *, cwd, timeout=300):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{' '.join(map(str, args))}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A copy of the source tree, so that edits made meanwhile do not reach the build."""
    folder = tmp_path_factory.mktemp("wheel") / "source"
    shutil.copytree(ROOT, folder, ignore=_NOT_SOURCES)
    return folder


@pytest.fixture(scope="module")
def wheel(source):
    """Build the sdist and, from it, the wheel (what `python -m build` does)."""
    setuptools_version = tuple(int(p) for p in importlib.metadata.version("setuptools").split(".")[:2])
    if setuptools_version < (77, 0):
        pytest.skip("building offline needs setuptools>=77 (pyproject's build requirement) here")
    tmp = source.parent
    started = time.perf_counter()
    sdist = _run(
        [sys.executable, "-c", "from setuptools import build_meta; print(build_meta.build_sdist('dist'))"],
        cwd=source,
    ).stdout.strip().splitlines()[-1]
    _run(
        [sys.executable, "-m", "pip", "wheel", source / "dist" / sdist, "--no-deps",
         "--no-build-isolation", "--no-index", "-q", "-w", tmp / "wheelhouse"],
        cwd=tmp,
    )
    seconds = time.perf_counter() - started
    (path,) = (tmp / "wheelhouse").glob("tfnewton-*.whl")
    print(f"\nsdist and wheel built in {seconds:.1f} s; {path.name}: {path.stat().st_size / 1e6:.2f} MB")
    return path


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory):
    """A fresh virtual environment, outside the source tree, with the wheel installed."""
    folder = tmp_path_factory.mktemp("venv") / "env"
    started = time.perf_counter()
    # No pip of its own (ensurepip takes half a minute here): the tests' pip installs into it.
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", folder], cwd=folder.parent)
    python = folder / "bin" / "python"
    purelib = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        cwd=folder.parent).stdout.strip())
    if sys.prefix != sys.base_prefix:  # the test interpreter is a venv: reach its packages
        (purelib / "_tfnewton_test_parent_env.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    # --ignore-installed: the clone's editable tfnewton is visible through that path; the
    # wheel goes into this environment regardless, and is found first.
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
          "--ignore-installed", "-q", wheel], cwd=folder.parent)
    print(f"\nvirtual environment with the wheel in {time.perf_counter() - started:.1f} s")
    return python


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A current folder with no book in it."""
    return tmp_path_factory.mktemp("student")


def test_wheel_carries_the_book_and_the_licences(wheel, source):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    book = {f"tfnewton/_book/{p.relative_to(source).as_posix()}" for p in chapter_files(source)}
    assert "tfnewton/_book/_toc.yml" in names
    assert book <= names, sorted(book - names)
    assert {n.split("/")[0] for n in names} == {"tfnewton", wheel.name.split("-py")[0] + ".dist-info"}
    assert not [n for n in names if "/tests/" in n or n.startswith(("tests/", "benchmarks/"))]
    dist_info = wheel.name.split("-py")[0] + ".dist-info"
    assert {f"{dist_info}/licenses/LICENSE", f"{dist_info}/licenses/LICENSE-BOOK"} <= names
    assert "License-Expression: MIT AND CC-BY-4.0" in metadata
    import tfnewton

    assert f"Version: {tfnewton.__version__}\n" in metadata


def test_installed_package_is_the_wheel_not_the_clone(venv, workdir):
    probe = textwrap.dedent("""
        import json, sys, tfnewton, torch
        from tfnewton.notebooks import find_book_root
        print(json.dumps({"prefix": sys.prefix, "file": tfnewton.__file__,
                          "book": str(find_book_root()), "torch": torch.__file__}))
    """)
    found = json.loads(_run([venv, "-c", probe], cwd=workdir).stdout.strip().splitlines()[-1])
    env = venv.parent.parent
    assert Path(found["prefix"]) == env
    assert Path(found["file"]).is_relative_to(env), found["file"]
    assert Path(found["book"]) == Path(found["file"]).parent / "_book"
    assert not Path(found["file"]).is_relative_to(ROOT)
    assert not Path(found["torch"]).is_relative_to(env)  # torch came from the test environment


@pytest.fixture(scope="module")
def exported(venv, workdir):
    """`python -m tfnewton notebooks` from the installed wheel, with and without solutions."""
    full = _run([venv, "-m", "tfnewton", "notebooks", "full"], cwd=workdir)
    student = _run([venv, "-m", "tfnewton", "notebooks", "student", "--no-solutions"], cwd=workdir)
    assert "student copies" in student.stdout and "student copies" not in full.stdout
    return sorted((workdir / "full").glob("*.ipynb")), sorted((workdir / "student").glob("*.ipynb"))


def _tagged_solutions(nb):
    return [c for c in nb.cells if "solution" in c.get("metadata", {}).get("tags", [])]


def test_notebooks_from_the_wheel_are_the_sources(exported, source, tmp_path):
    full, student = exported
    clone_full = write_notebooks(tmp_path / "full", root=source)
    clone_student = write_notebooks(tmp_path / "student", root=source, solutions=False)
    assert [p.name for p in full] == [p.name for p in clone_full] and full
    assert [p.read_bytes() for p in full] == [p.read_bytes() for p in clone_full]
    assert [p.read_bytes() for p in student] == [p.read_bytes() for p in clone_student]


def test_student_copies_from_the_wheel_leave_the_solutions_out(exported, source):
    full, student = exported
    pages = {p.stem: p for p in chapter_files(source)}
    total = 0
    for with_path, without_path in zip(full, student):
        chapter = pages[with_path.stem.split("_", 1)[1]]
        tagged = len(SOLUTION_TAG_LINE.findall(chapter.read_text(encoding="utf-8")))
        with_nb = nbformat.read(with_path, as_version=4)
        without_nb = nbformat.read(without_path, as_version=4)
        assert len(_tagged_solutions(with_nb)) == tagged, chapter.name
        assert _tagged_solutions(without_nb) == [], chapter.name
        placeholders = [c for c in without_nb.cells if c.source.startswith("# Your solution to exercise")]
        assert len(placeholders) == tagged and all(c.cell_type == "code" for c in placeholders)
        total += tagged
    assert total > 0, "no cell of the book is tagged 'solution' (course_conventions point 6)"


def test_a_chapter_from_the_wheel_runs_in_a_fresh_kernel_of_its_environment(venv, exported, workdir):
    full, _ = exported
    (chapter,) = [p for p in full if p.stem.endswith("_matrix_inversion")]
    env = venv.parent.parent
    _run([venv, "-m", "ipykernel", "install", "--prefix", env, "--name", "tfnewton-wheel"], cwd=workdir)
    runner = textwrap.dedent(f"""
        import json, sys, time
        import nbformat
        from nbclient import NotebookClient

        nb = nbformat.read({str(chapter)!r}, as_version=4)
        where = "import json, sys, tfnewton; print(json.dumps([sys.prefix, tfnewton.__file__]))"
        nb.cells.insert(0, nbformat.v4.new_code_cell(where))
        started = time.perf_counter()
        NotebookClient(nb, timeout=600, kernel_name="tfnewton-wheel",
                       resources={{"metadata": {{"path": {str(workdir)!r}}}}}).execute()
        print(f"executed in {{time.perf_counter() - started:.1f}} s", file=sys.stderr)
        nbformat.write(nb, "executed.ipynb")
    """)
    result = _run([venv, "-c", runner], cwd=workdir, timeout=900)
    print("\n" + result.stderr.strip().splitlines()[-1])
    nb = nbformat.read(workdir / "executed.ipynb", as_version=4)
    prefix, module = json.loads(nb.cells[0].outputs[0]["text"])
    assert Path(prefix) == env and Path(module).is_relative_to(env)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "the chapter drew no figure"
