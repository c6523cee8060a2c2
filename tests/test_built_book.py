"""Checks on the built book in _build/html, as a reader (offline) would meet it.

Build first: ``.venv/bin/jupyter-book build . --all -W -n --keep-going``. Without a build
these tests skip, except under CI (``CI`` set), where a missing build is a failure.
``TFNEWTON_BOOK_HTML=/elsewhere/_build/html`` checks a book built elsewhere
(``--path-output``) instead of ``_build/html``.

Two layers:

* static checks of the HTML (fast, no browser): every chapter page exists, nothing is
  loaded from the network, no widget repr text, figures and math present, the API page
  documents every public name; as a student reads a page: no Markdown table left as text
  in a ``<pre>``, every image a captioned figure with alt text, each chapter with code
  linking its notebook (and that notebook, downloaded, runs in a fresh kernel);
* headless Chromium (``/usr/bin/chromium``, driven over the DevTools protocol on a pipe
  with the standard library only): math is typeset by the local MathJax, every image
  loads, and no request leaves ``file://``.
"""

from __future__ import annotations

import fcntl
import importlib
import json
import os
import re
import select
import shutil
import subprocess
import tempfile
import time
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest
import yaml

from tfnewton.notebooks import chapter_files

ROOT = Path(__file__).resolve().parent.parent
HTML = Path(os.environ.get("TFNEWTON_BOOK_HTML") or ROOT / "_build" / "html").resolve()
CHROMIUM = "/usr/bin/chromium"

NETWORK = re.compile(r"^\s*(https?:)?//", re.IGNORECASE)
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:", "chrome-error:")


@pytest.fixture(scope="module")
def html_dir() -> Path:
    if not (HTML / "index.html").is_file():
        message = f"no built book in {HTML}: run `.venv/bin/jupyter-book build . --all -W -n --keep-going` first"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI builds the book before the tests)")
        pytest.skip(message)
    return HTML


def _pages():
    """(source, built html) for every page of _toc.yml."""
    return [(src, HTML / src.relative_to(ROOT).with_suffix(".html")) for src in chapter_files(ROOT)]


PAGES = _pages()
PAGE_IDS = [src.stem for src, _ in PAGES]


class _Refs(HTMLParser):
    """Every resource reference of a page: (tag, attribute, value), plus the visible text."""

    ATTRS = {
        "script": ("src",), "img": ("src", "srcset"), "link": ("href",), "iframe": ("src",),
        "source": ("src", "srcset"), "video": ("src", "poster"), "audio": ("src",),
        "embed": ("src",), "object": ("data",),
    }

    def __init__(self):
        super().__init__()
        self.refs, self.imgs, self.text, self._skip = [], [], [], 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name in self.ATTRS.get(tag, ()):
            if attrs.get(name):
                self.refs.append((tag, name, attrs[name]))
        if tag == "img":
            self.imgs.append(attrs.get("src", ""))
        if tag in ("script", "style"):
            self._skip += 1

    def handle_endtag(self, tag):
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data):
        if not self._skip:
            self.text.append(data)


def _parse(path: Path) -> _Refs:
    parser = _Refs()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def _has_math(source: Path) -> bool:
    text = source.read_text(encoding="utf-8")
    return bool(re.search(r"\$[^$\n]+\$|\{math\}|\\begin\{", text))


def _has_figure(source: Path) -> bool:
    text = source.read_text(encoding="utf-8")
    return bool(re.search(r"plt\.show\(\)|interact_figure\(|savefig|```\{figure\}|!\[", text))


# --------------------------------------------------------------------------- static checks


@pytest.mark.parametrize("source, page", PAGES, ids=PAGE_IDS)
def test_every_chapter_page_exists(html_dir, source, page):
    assert page.is_file(), f"{source.name} is in _toc.yml but {page} was not built"
    assert page.stat().st_mtime >= source.stat().st_mtime - 1, (
        f"{page} is older than {source}: rebuild the book"
    )


def test_no_resource_comes_from_the_network(html_dir):
    offenders = []
    for page in html_dir.rglob("*.html"):
        for tag, attr, value in _parse(page).refs:
            # <link href> is a resource (stylesheet, preload, icon) except rel=canonical-style
            # links, which the theme does not emit; anchors (<a href>) are not checked.
            if any(NETWORK.match(part.strip()) for part in value.split(",")):
                offenders.append(f"{page.relative_to(html_dir)}: <{tag} {attr}={value!r}>")
    assert not offenders, "network references:\n" + "\n".join(offenders[:20])


def test_stylesheets_load_nothing_from_the_network(html_dir):
    pattern = re.compile(r"""(url\(\s*['"]?|@import\s+['"])(https?:)?//""", re.IGNORECASE)
    offenders = [
        str(css.relative_to(html_dir))
        for css in html_dir.rglob("*.css")
        if pattern.search(css.read_text(encoding="utf-8", errors="replace"))
    ]
    assert not offenders, f"stylesheets that fetch from the network: {offenders}"


def test_mathjax_is_local(html_dir):
    page = html_dir / "book" / "intro.html"
    scripts = [v for tag, _, v in _parse(page).refs if tag == "script" and "mathjax" in v.lower()]
    assert scripts, "no MathJax script on the intro page"
    for src in scripts:
        assert not NETWORK.match(src)
        assert (page.parent / src.split("?")[0]).resolve().is_file(), f"{src} is missing from the build"


@pytest.mark.parametrize("source, page", PAGES, ids=PAGE_IDS)
def test_no_widget_repr_text_and_no_traceback(html_dir, source, page):
    text = page.read_text(encoding="utf-8")
    assert "interactive(children=" not in text, "a widget shows as its repr text (see tfnewton.widgets)"
    visible = "".join(_parse(page).text)
    assert "Traceback (most recent call last)" not in visible


@pytest.mark.parametrize("source, page", PAGES, ids=PAGE_IDS)
def test_figures_present_and_on_disk(html_dir, source, page):
    imgs = _parse(page).imgs
    if _has_figure(source):
        assert imgs, f"{source.name} draws figures but its page shows no image"
    for src in imgs:
        assert not NETWORK.match(src) and not src.startswith("data:") or src.startswith("data:image/")
        if not src.startswith("data:"):
            path = (page.parent / src.split("?")[0]).resolve()
            assert path.is_file() and path.stat().st_size > 0, f"{page.name}: image {src} missing"


@pytest.mark.parametrize("source, page", PAGES, ids=PAGE_IDS)
def test_math_present(html_dir, source, page):
    if not _has_math(source):
        pytest.skip(f"{source.name} has no math")
    text = page.read_text(encoding="utf-8")
    assert re.search(r'class="[^"]*\bmath\b', text), f"{page.name} has no math element"
    assert "\\(" in text or "\\[" in text


def test_api_page_documents_every_public_name(html_dir):
    """Every class and function in the __all__ of a module on the API page has an entry.

    The entry may be under the module's name or where the object is defined (names a
    package exposes lazily are documented in their submodule).
    """
    api_source = (ROOT / "book" / "api.md").read_text(encoding="utf-8")
    modules = re.findall(r"automodule::\s*(tfnewton[\w.]*)", api_source)
    assert "tfnewton.algorithms" in modules and "tfnewton.tasks" in modules
    html = (html_dir / "book" / "api.html").read_text(encoding="utf-8")
    missing = []
    for name in modules:
        module = importlib.import_module(name)
        for public in getattr(module, "__all__", []):
            obj = getattr(module, public)
            if not isinstance(obj, (type, type(lambda: 0))):
                continue  # constants have no entry of their own
            anchors = {f"{name}.{public}", f"{obj.__module__}.{obj.__qualname__}"}
            if not any(f'id="{anchor}"' in html for anchor in anchors):
                missing.append(f"{name}.{public}")
    assert not missing, f"not on the API page: {missing}"


def test_api_page_lists_every_submodule():
    """Each submodule of tfnewton, and each public module of its packages, is on book/api.md."""
    import tfnewton

    api_source = (ROOT / "book" / "api.md").read_text(encoding="utf-8") + "\n"
    package = Path(tfnewton.__file__).parent
    present = []
    for name in tfnewton._SUBMODULES:
        if (package / f"{name}.py").is_file():
            present.append(f"tfnewton.{name}")
        elif (package / name / "__init__.py").is_file():
            present.append(f"tfnewton.{name}")
            present += [
                f"tfnewton.{name}.{path.stem}"
                for path in sorted((package / name).glob("*.py")) if not path.name.startswith("_")
            ]
    missing = [name for name in present if f"automodule:: {name}\n" not in api_source]
    assert not missing, f"add an automodule block (with :members:) for {missing} to book/api.md"


# --------------------------------------------------------------------------- as a student reads a page


CODE_CELL = re.compile(r"^```\{code-cell\}", re.MULTILINE)
# A Markdown table's delimiter row: dashes (optionally with alignment colons) between pipes,
# with or without the outer pipes ("|---|---|", "--- | ---"); the line above holds a pipe.
_DELIMITER_ROW = re.compile(r"^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)+\|?\s*$")
NOTEBOOK_LINK_TEXT = "Download this chapter as a notebook (.ipynb)"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".svg", ".gif", ".webp")


class _Reader(HTMLParser):
    """What the article of a page shows: the text of each ``<pre>``, each image with its
    alt text and the caption of the ``<figure>`` around it (``None`` when there is none),
    and each link (href, class, text)."""

    def __init__(self):
        super().__init__()
        self.pres, self.images, self.links = [], [], []
        self._article = self._pre = self._caption = 0
        self._figures = []  # open <figure>s: {"images": [...], "caption": [...]}
        self._link = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "article":
            self._article += 1
        if not self._article:
            return
        if tag == "pre":
            self._pre += 1
            if self._pre == 1:
                self.pres.append([])
        elif tag == "figure":
            self._figures.append({"images": [], "caption": []})
        elif tag == "figcaption":
            self._caption += 1
        elif tag == "img":
            image = {"src": attrs.get("src") or "", "alt": attrs.get("alt") or "", "caption": None}
            (self._figures[-1]["images"] if self._figures else self.images).append(image)
        elif tag == "a" and self._link is None:
            self._link = {"href": attrs.get("href") or "", "class": attrs.get("class") or "", "text": []}

    def handle_endtag(self, tag):
        if tag == "article" and self._article:
            self._article -= 1
        if not self._article:
            return
        if tag == "pre" and self._pre:
            self._pre -= 1
        elif tag == "figcaption" and self._caption:
            self._caption -= 1
        elif tag == "figure" and self._figures:
            figure = self._figures.pop()
            caption = " ".join("".join(figure["caption"]).split())
            caption = re.sub(r"^Fig\.\s*\d+(\.\d+)*\s*", "", caption).rstrip("#¶ ").strip()
            for image in figure["images"]:
                image["caption"] = caption
            (self._figures[-1]["images"] if self._figures else self.images).extend(figure["images"])
        elif tag == "a" and self._link is not None:
            self._link["text"] = " ".join("".join(self._link["text"]).split())
            self.links.append(self._link)
            self._link = None

    def handle_data(self, data):
        if not self._article:
            return
        if self._pre:
            self.pres[-1].append(data)
        if self._caption and self._figures:
            self._figures[-1]["caption"].append(data)
        if self._link is not None:
            self._link["text"].append(data)


def _read(page: Path) -> _Reader:
    reader = _Reader()
    reader.feed(page.read_text(encoding="utf-8"))
    reader.close()
    return reader


def pipe_tables(text: str) -> list[str]:
    """The Markdown pipe tables in a block of text: each as its header and delimiter rows."""
    lines = text.splitlines()
    return [
        f"{lines[i - 1].strip()}\n{line.strip()}"
        for i, line in enumerate(lines)
        if i > 0 and "|" in lines[i - 1] and _DELIMITER_ROW.match(line)
    ]


def image_faults(image: dict) -> list[str]:
    """What a reader misses about one image: a figure caption, a real alt text."""
    faults = []
    if image["caption"] is None:
        faults.append("not in a <figure>")
    elif not image["caption"]:
        faults.append("its <figcaption> is empty")
    alt, name = image["alt"].strip(), image["src"].split("?")[0].rsplit("/", 1)[-1]
    # Without image metadata, myst-nb writes the file's path as the alt text.
    if not alt or alt.lower().endswith(IMAGE_SUFFIXES) or name and name in alt:
        faults.append(f"no alt text (alt={image['alt']!r})")
    return faults


def _is_code_chapter(source: Path) -> bool:
    """A page with code cells, unless its front matter says ``tfnewton: {chapter: false}``."""
    if source.suffix == ".ipynb":
        return True
    text = source.read_text(encoding="utf-8")
    front = yaml.safe_load(text.split("\n---", 1)[0][3:]) if text.startswith("---") else {}
    not_a_chapter = ((front or {}).get("tfnewton") or {}).get("chapter") is False
    return bool(CODE_CELL.search(text)) and not not_a_chapter


def _notebook_links(page: Path) -> list[dict]:
    return [link for link in _read(page).links if link["text"] == NOTEBOOK_LINK_TEXT]


def test_pipe_table_detector():
    """The detector finds both Markdown layouts and leaves other text with pipes alone."""
    assert pipe_tables("title\n| a | b |\n|---|:--:|\n| 1 | 2 |") == ["| a | b |\n|---|:--:|"]
    assert pipe_tables("a | b\n--- | ---\n1 | 2") == ["a | b\n--- | ---"]
    assert pipe_tables("x = a | b\ny = 1\n----------\nrule") == []
    assert pipe_tables("header\n--- | ---") == []  # no pipe on the line above


def test_image_fault_finder():
    src = "../_images/0123abcd.png"
    good = {"src": src, "alt": "Error against step: GD falls slowly.", "caption": "Error."}
    assert image_faults(good) == []
    assert image_faults({**good, "caption": None}) == ["not in a <figure>"]
    assert image_faults({**good, "caption": ""}) == ["its <figcaption> is empty"]
    for alt in ("", "  ", "_images/0123abcd.png", "plot.png"):
        assert len(image_faults({**good, "alt": alt})) == 1, alt


@pytest.mark.parametrize("source, page", PAGES, ids=PAGE_IDS)
def test_no_markdown_table_inside_pre(html_dir, source, page):
    """A table printed as Markdown reaches the page as text in a <pre> block: show a
    tfnewton.tables.Table (or ProbeTable, ...) as the cell's value instead."""
    found = [table for pre in _read(page).pres for table in pipe_tables("".join(pre))]
    assert not found, f"{len(found)} Markdown table(s) shown as text in <pre>:\n" + "\n\n".join(found)


@pytest.mark.parametrize("source, page", PAGES, ids=PAGE_IDS)
def test_every_image_is_a_captioned_figure_with_alt_text(html_dir, source, page):
    """Every image of the article sits in a <figure> with a caption, and says in its alt
    text what it shows (myst-nb's ``mystnb: figure: caption`` and ``image: alt``)."""
    faults = [
        f"{image['src'].rsplit('/', 1)[-1]}: {'; '.join(problems)}"
        for image in _read(page).images
        if (problems := image_faults(image))
    ]
    assert not faults, f"{len(faults)} image(s) a reader cannot follow:\n" + "\n".join(faults)


@pytest.mark.parametrize("source, page", PAGES, ids=PAGE_IDS)
def test_code_chapter_links_its_notebook(html_dir, source, page):
    """Under the title, a relative link to the chapter as a notebook: a valid nbformat 4
    notebook with every code cell of the chapter and no outputs. Pages without code, and
    pages that are not chapters (the course page), have none."""
    links = _notebook_links(page)
    if not _is_code_chapter(source):
        assert not links, f"{source.name} has no code but links a notebook"
        return
    assert len(links) == 1, f"{page.name}: expected one link {NOTEBOOK_LINK_TEXT!r}, found {len(links)}"
    href = links[0]["href"]
    assert href.endswith(".ipynb") and not NETWORK.match(href) and not href.startswith(("/", "file:")), (
        f"the notebook link must be relative, to work from disk: {href!r}"
    )
    html = page.read_text(encoding="utf-8")
    at, title_end = html.find(NOTEBOOK_LINK_TEXT), html.find("</h1>", html.find("<article"))
    assert 0 <= title_end < at, "the notebook link is not under the article's title"
    assert "cell docutils container" not in html[title_end:at] and "<h2" not in html[title_end:at], (
        "the notebook link is not at the top of the article"
    )
    notebook = (page.parent / href).resolve()
    assert notebook.is_file(), f"{page.name} links {href}, which is not in the build"
    nb = nbformat.read(notebook, as_version=nbformat.NO_CONVERT)
    assert nb.nbformat == 4, f"{notebook.name} is nbformat {nb.nbformat}, not 4"
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    if source.suffix == ".md":
        assert len(code) == len(CODE_CELL.findall(source.read_text(encoding="utf-8")))
    assert code and all(cell.outputs == [] for cell in code), f"{notebook.name} holds outputs"


@pytest.mark.slow
def test_downloaded_notebook_runs_in_a_fresh_kernel(html_dir, tmp_path):
    """The matrix-inversion chapter, downloaded through its page's link into an empty folder,
    runs top to bottom in a fresh kernel."""
    from notebook_run import run_in_fresh_kernel

    page = html_dir / "book" / "matrix_inversion.html"
    links = _notebook_links(page)
    assert links, f"{page.name} links no notebook"
    downloaded = tmp_path / "matrix_inversion.ipynb"
    shutil.copyfile(page.parent / links[0]["href"], downloaded)
    nb = nbformat.read(downloaded, as_version=4)
    run_in_fresh_kernel(nb, tmp_path)


# --------------------------------------------------------------------------- headless Chromium


class _DevTools:
    """Chromium's DevTools protocol over --remote-debugging-pipe (fd 3 in, fd 4 out).

    Messages are JSON objects separated by NUL bytes. Only the standard library is used.
    """

    def __init__(self, binary: str):
        self.profile = tempfile.mkdtemp(prefix="tfnewton-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def wire_fds():  # in the child: its fd 3 reads our commands, fd 4 writes replies
            # (moved out of the way first, in case the pipes themselves landed on fd 3 or 4)
            read_end = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10)
            write_end = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)
            os.dup2(read_end, 3)
            os.dup2(write_end, 4)

        self.process = subprocess.Popen(
            [
                binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-extensions",
                "--remote-debugging-pipe", f"--user-data-dir={self.profile}", "about:blank",
            ],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=wire_fds, pass_fds=(3, 4),  # kept open past close_fds
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout=30.0):
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, session: str, timeout=30.0) -> dict:
        deadline = time.monotonic() + timeout
        for i, event in enumerate(self.events):
            if event.get("method") == method and event.get("sessionId") == session:
                return self.events.pop(i)
        while True:
            event = self._read(deadline)
            if event.get("method") == method and event.get("sessionId") == session:
                return event
            self.events.append(event)

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("Chromium did not answer in time")
            ready, _, _ = select.select([self._from_browser], [], [], remaining)
            if ready:
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    raise RuntimeError("Chromium closed the DevTools pipe")
                self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def close(self):
        try:
            self.send("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)


# Evaluated in each page once it has loaded: wait for MathJax's first typesetting pass,
# then report what a reader sees.
_INSPECT = """
(async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await MathJax.startup.promise;
  }
  const images = Array.from(document.images).map(img => ({
    src: img.currentSrc || img.src, complete: img.complete, width: img.naturalWidth}));
  const rawMath = Array.from(document.querySelectorAll('.math'))
    .filter(el => !el.querySelector('mjx-container') && /\\\\\\(|\\\\\\[|\\$\\$/.test(el.textContent)).length;
  return JSON.stringify({
    mjx: document.querySelectorAll('mjx-container').length,
    mathjax: !!(window.MathJax && MathJax.version),
    rawMath, images, title: document.title});
})()
"""

# The theme emits the thebe launcher script twice, so every page logs this one error
# (../shared/notes/jupyter-book.md); anything else is a real problem.
_KNOWN_CONSOLE_ERRORS = ("THEBE_JS_URL",)


@pytest.fixture(scope="module")
def browsed(html_dir):
    """Open every chapter page in headless Chromium; per page: what it saw and requested."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is absent (`apt-get install -y chromium`; .ci/run installs it)")
    browser = _DevTools(CHROMIUM)
    results = {}
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Network", "Page", "Runtime"):
            browser.send(f"{domain}.enable", session=session)
        for source, page in PAGES:
            browser.events.clear()
            browser.send("Page.navigate", {"url": page.as_uri()}, session=session)
            browser.wait_for("Page.loadEventFired", session, timeout=60)
            reply = browser.send(
                "Runtime.evaluate",
                {"expression": _INSPECT, "awaitPromise": True, "returnByValue": True},
                session=session, timeout=60,
            )
            seen = json.loads(reply["result"]["value"])
            requests, failed, errors = [], [], []
            urls = {}
            for event in browser.events:
                method, params = event.get("method"), event.get("params", {})
                if method == "Network.requestWillBeSent":
                    urls[params["requestId"]] = params["request"]["url"]
                    requests.append(params["request"]["url"])
                elif method == "Network.loadingFailed" and not params.get("canceled"):
                    failed.append((urls.get(params["requestId"], "?"), params.get("errorText")))
                elif method == "Runtime.exceptionThrown":
                    details = params["exceptionDetails"]
                    errors.append(details.get("exception", {}).get("description") or details.get("text"))
            results[source.stem] = {**seen, "requests": requests, "failed": failed, "errors": errors}
    finally:
        browser.close()
    return results


@pytest.mark.parametrize("source, page", PAGES, ids=PAGE_IDS)
def test_browser_no_request_leaves_file(browsed, source, page):
    seen = browsed[source.stem]
    assert seen["requests"], "no request recorded (the DevTools Network domain saw nothing)"
    outside = [url for url in seen["requests"] if not url.startswith(LOCAL_SCHEMES)]
    assert not outside, f"requests that left file://: {outside}"
    assert not seen["failed"], f"resources that failed to load: {seen['failed']}"


@pytest.mark.parametrize("source, page", PAGES, ids=PAGE_IDS)
def test_browser_math_is_typeset(browsed, source, page):
    seen = browsed[source.stem]
    has_math = re.search(r'class="[^"]*\bmath\b', page.read_text(encoding="utf-8"))
    if not (has_math or _has_math(source)):
        pytest.skip(f"{page.name} has no math (Sphinx loads no MathJax there)")
    assert seen["mathjax"], "MathJax did not start"
    assert seen["mjx"] > 0, "no typeset formula (mjx-container) on a page with math"
    assert seen["rawMath"] == 0, f"{seen['rawMath']} formulas left as raw TeX"


@pytest.mark.parametrize("source, page", PAGES, ids=PAGE_IDS)
def test_browser_images_load(browsed, source, page):
    seen = browsed[source.stem]
    broken = [img["src"] for img in seen["images"] if not (img["complete"] and img["width"] > 0)]
    assert not broken, f"images that did not load: {broken}"
    if _has_figure(source):
        assert seen["images"], "a page that draws figures shows none"


@pytest.mark.parametrize("source, page", PAGES, ids=PAGE_IDS)
def test_browser_no_script_errors(browsed, source, page):
    errors = [e for e in browsed[source.stem]["errors"] if not any(k in (e or "") for k in _KNOWN_CONSOLE_ERRORS)]
    assert not errors, f"uncaught script errors: {errors}"
