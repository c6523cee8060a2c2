"""What a user of the package meets besides the code: the citation, the licences, the
workflow that publishes the book.

CITATION.cff and the workflow are checked against their official JSON schemas, vendored in
tests/data/ (see SOURCES.md there), so the checks run offline.
"""

import copy
import json
import re
import sys
import unicodedata
from pathlib import Path

import jsonschema
import pytest
import yaml

import tfnewton

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
WORKFLOW = ROOT / ".github" / "workflows" / "book.yml"


class _Yaml12Loader(yaml.SafeLoader):
    """PyYAML reads YAML 1.1, where a bare ``on`` is the boolean True: GitHub reads 1.2."""


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _load_yaml(path):
    return yaml.load(path.read_text(encoding="utf-8"), Loader=_Yaml12Loader)


def _validator(schema_file):
    schema = json.loads((DATA / schema_file).read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _errors(validator, instance):
    return sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))


# --------------------------------------------------------------------------- CITATION.cff


@pytest.fixture(scope="module")
def citation():
    return _load_yaml(ROOT / "CITATION.cff")


@pytest.fixture(scope="module")
def cff_validator():
    return _validator("cff-1.2.0.schema.json")


def test_citation_is_valid_cff_1_2_0(citation, cff_validator):
    assert citation["cff-version"] == "1.2.0"
    assert not _errors(cff_validator, citation), [e.message for e in _errors(cff_validator, citation)]


@pytest.mark.parametrize(
    "break_it, words",
    [
        (lambda c: c.pop("authors"), "'authors' is a required property"),
        (lambda c: c.update({"cff-version": "1.2"}), "1.2"),
        (lambda c: c["references"][0].update({"type": "preprint"}), "'preprint' is not one of"),
        (lambda c: c["references"][1]["authors"][0].update({"surname": "Fu"}), "surname"),
    ],
    ids=["no authors", "bad version", "unknown reference type", "unknown author field"],
)
def test_the_schema_check_catches_a_broken_citation(citation, cff_validator, break_it, words):
    broken = copy.deepcopy(citation)
    break_it(broken)
    messages = " ".join(e.message for e in _errors(cff_validator, broken))
    assert words in messages


def test_citation_names_this_version_and_both_licences(citation):
    assert citation["type"] == "software"
    assert str(citation["version"]) == tfnewton.__version__
    assert sorted(citation["license"]) == ["CC-BY-4.0", "MIT"]


ARXIV = {  # the papers the README lists, by arXiv id
    "2403.03183": "giannou2024newton",
    "2310.17086": "fu2024secondorder",
    "2410.13981": "liu2024sparse",
    "2212.07677": "vonoswald2023gd",
    "2208.01066": "garg2022whatcan",
    "2211.15661": "akyurek2023whatlearning",
}


def _latex_to_text(text):
    """The little LaTeX that references.bib uses: accents and protective braces."""
    accents = {'"': "\u0308", "~": "\u0303", "'": "\u0301", "`": "\u0300", "^": "\u0302"}
    text = re.sub(r"\{\\([\"~'`^])\{?(\w)\}?\}", lambda m: m.group(2) + accents[m.group(1)], text)
    return unicodedata.normalize("NFC", text.replace("{", "").replace("}", ""))


_BIB_FIELD = re.compile(r"\s*,?\s*(\w+)\s*=\s*\{")


def _bib_entries():
    """{key: {field: value}} of book/references.bib (values may hold nested braces)."""
    text = (ROOT / "book" / "references.bib").read_text(encoding="utf-8")
    entries = {}
    for match in re.finditer(r"@\w+\{(\w+),", text):
        fields, pos = {}, match.end()
        while field := _BIB_FIELD.match(text, pos):
            depth, i = 1, field.end()
            while depth:
                depth += {"{": 1, "}": -1}.get(text[i], 0)
                i += 1
            fields[field.group(1).lower()] = _latex_to_text(text[field.end() : i - 1])
            pos = i
        entries[match.group(1)] = fields
    return entries


def test_citation_references_the_papers_as_the_book_cites_them(citation):
    bib = _bib_entries()
    by_arxiv = {}
    for reference in citation["references"]:
        (arxiv_id,) = re.findall(r"\d{4}\.\d{5}", reference.get("url", "") + reference.get("doi", ""))[:1]
        by_arxiv[arxiv_id] = reference
    assert sorted(by_arxiv) == sorted(ARXIV)
    for arxiv_id, key in ARXIV.items():
        reference, entry = by_arxiv[arxiv_id], bib[key]
        assert reference["title"] == entry["title"], key
        assert reference["year"] == int(entry["year"]), key
        family = [f"{a.get('name-particle', '')} {a['family-names']}".strip() for a in reference["authors"]]
        assert family == [name.split(",")[0].strip() for name in entry["author"].split(" and ")], key
        assert reference["url"] == f"https://arxiv.org/abs/{arxiv_id}"


# --------------------------------------------------------------------------- licences


def _pyproject():
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_code_is_mit_and_book_is_cc_by_4():
    code = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert code.startswith("MIT License") and "Permission is hereby granted, free of charge" in code
    book = (ROOT / "LICENSE-BOOK").read_text(encoding="utf-8")
    assert "Creative Commons Attribution 4.0 International" in book and "(CC BY 4.0)" in book
    assert "https://creativecommons.org/licenses/by/4.0/legalcode" in book
    project = _pyproject()["project"]
    assert project["license"] == "MIT AND CC-BY-4.0"
    assert project["license-files"] == ["LICENSE", "LICENSE-BOOK"]


def test_the_version_has_one_home():
    pyproject = _pyproject()
    assert "version" not in pyproject["project"] and "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "tfnewton.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", tfnewton.__version__)


# --------------------------------------------------------------------------- the workflow


@pytest.fixture(scope="module")
def workflow():
    return _load_yaml(WORKFLOW)


@pytest.fixture(scope="module")
def workflow_validator():
    return _validator("github-workflow.schema.json")


def test_workflow_is_valid(workflow, workflow_validator):
    errors = _errors(workflow_validator, workflow)
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors]


def _messages(errors):
    """Every message, with those of the alternatives an anyOf/oneOf error tried."""
    return [m for e in errors for m in [e.message, *_messages(e.context or [])]]


@pytest.mark.parametrize(
    "break_it, words",
    [
        (lambda w: w["jobs"]["build"].pop("runs-on"), "'runs-on' is a required property"),
        (
            lambda w: w["jobs"]["build"]["steps"][0].update({"run": "ls"}),
            "is valid under each of",  # a step either uses an action or runs a command
        ),
        (lambda w: w["jobs"]["deploy"]["permissions"].update({"pages": "yes"}), "'yes' is not one of"),
        (lambda w: w.update({"on": {"push": {"branch": ["main"]}}}), "'branch' was unexpected"),
    ],
    ids=["no runs-on", "step both uses and run", "bad permission level", "misspelt branches"],
)
def test_the_schema_check_catches_a_broken_workflow(workflow, workflow_validator, break_it, words):
    broken = copy.deepcopy(workflow)
    break_it(broken)
    assert any(words in m for m in _messages(_errors(workflow_validator, broken)))


def _readme_first_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    first_block = re.search(r"```bash\n(.*?)```", readme, re.DOTALL).group(1)
    return first_block.strip().splitlines()[0].strip()


def _uses(step):
    return step.get("uses", "").split("@")[0]


def test_workflow_builds_the_book_with_the_readmes_first_command(workflow):
    assert workflow["on"]["push"]["branches"] == ["main"]
    assert "workflow_dispatch" in workflow["on"]
    build = workflow["jobs"]["build"]
    assert build["runs-on"].startswith("ubuntu")
    steps = build["steps"]
    assert [_uses(s) for s in steps if "uses" in s] == [
        "actions/checkout",
        "actions/setup-python",
        "actions/upload-pages-artifact",
    ]
    (setup_python,) = [s for s in steps if _uses(s) == "actions/setup-python"]
    assert str(setup_python["with"]["python-version"]) == "3.11"
    runs = [s["run"].strip() for s in steps if "run" in s]
    assert runs == [_readme_first_command()]
    assert "jupyter-book build . --all -W -n --keep-going" in runs[0]
    (upload,) = [s for s in steps if _uses(s) == "actions/upload-pages-artifact"]
    assert upload["with"]["path"] == "_build/html"
    assert steps.index(upload) > [i for i, s in enumerate(steps) if "run" in s][0]


def test_workflow_deploys_to_github_pages(workflow):
    deploy = workflow["jobs"]["deploy"]
    assert deploy["needs"] == "build"
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert deploy["environment"]["name"] == "github-pages"
    (step,) = deploy["steps"]
    assert _uses(step) == "actions/deploy-pages" and step["id"] == "deployment"
    assert deploy["environment"]["url"] == "${{ steps.deployment.outputs.page_url }}"
    # Only the deploy job may write to Pages.
    assert workflow["permissions"] == {"contents": "read"}
    assert "permissions" not in workflow["jobs"]["build"]


def test_python_version_of_the_workflow_is_one_the_package_supports(workflow):
    requires = _pyproject()["project"]["requires-python"]
    minimum = tuple(int(p) for p in re.fullmatch(r">=(\d+)\.(\d+)", requires).groups())
    (setup_python,) = [s for s in workflow["jobs"]["build"]["steps"] if _uses(s) == "actions/setup-python"]
    assert tuple(int(p) for p in str(setup_python["with"]["python-version"]).split(".")) >= minimum
    assert sys.version_info >= minimum
