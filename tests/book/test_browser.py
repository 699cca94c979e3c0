"""The built book in a real browser: every page loads offline, renders and links to Colab.

Runs after ``tests/book/test_book.py`` in the same pytest session (pytest collects the files in
name order, and "test_book" sorts before "test_browser"); that test executes the chapters
and builds the book into ``_build/executed/_build/html``. Set ``SA_BOOK_HTML`` to check
another build (e.g. a quick unexecuted one while editing pages).

The HTML is served on 127.0.0.1 (an ephemeral port) and every page listed in ``_toc.yml``
is opened in headless Chromium (Debian's ``chromium``, driven by Playwright). Requests to
any other host are blocked, so the test also proves that the book works offline. For each
page it checks:

- the page loads, with no JavaScript exception and no console error (except the blocked
  requests to other hosts), and no local file (script, style, image, font) is missing;
- MathJax (served from the book itself, see ``sphinx-mathjax-offline`` in ``_config.yml``)
  has typeset every ``.math`` element and reported no TeX error;
- every ``<img>`` has loaded (``naturalWidth > 0``), and a page built from a notebook with
  figure outputs (an executed chapter) shows them;
- no cell output shows an error or a traceback;
- the Colab launch button of a chapter opens that chapter's notebook in the repository of
  ``_config.yml``, and every other Colab link points to a notebook that exists;
- every link inside the book points to an existing file and anchor.

A full-page screenshot of every page is saved in ``_build/screenshots/`` (the CI artifact).
Without Chromium or Playwright the test is skipped locally and fails in CI (``CI=true``).
"""

from __future__ import annotations

import functools
import html.parser
import http.server
import json
import os
import shutil
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
HTML = Path(os.environ.get("SA_BOOK_HTML", ROOT / "_build" / "executed" / "_build" / "html")).resolve()
SHOTS = ROOT / "_build" / "screenshots"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())
LOCAL = "127.0.0.1"

pytestmark = pytest.mark.slow


def unavailable(reason: str):
    """Skip on a developer's machine; fail in CI, where the browser test must run."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: the browser test must run in CI; .ci/run installs it)", pytrace=False)
    pytest.skip(reason)


def toc_pages() -> list[str]:
    """Docnames of every page in book order: the landing page, then each part's files."""
    pages = [TOC["root"]]
    for part in TOC.get("parts", []):
        pages += [ch["file"] for ch in part.get("chapters", [])]
    return pages


PAGES = toc_pages()


def source_of(doc: str) -> Path:
    matches = [ROOT / f"{doc}{ext}" for ext in (".ipynb", ".md") if (ROOT / f"{doc}{ext}").exists()]
    assert len(matches) == 1, f"{doc}: expected exactly one of .ipynb/.md in the repository, found {matches}"
    return matches[0]


def colab_url(notebook: str) -> str:
    """The Colab address of a notebook of the repository named in ``_config.yml``."""
    repo = CONFIG["repository"]
    owner_name = urlparse(repo["url"]).path.strip("/")
    path = "/".join(p for p in (repo.get("path_to_book", "").strip("/"), notebook) if p)
    base = CONFIG["launch_buttons"]["colab_url"].rstrip("/")
    return f"{base}/github/{owner_name}/blob/{repo.get('branch', 'main')}/{path}"


def notebook_of_colab_url(url: str) -> Path | None:
    """Inverse of ``colab_url``: the repository file that a Colab link opens (None: another repository)."""
    prefix = colab_url("")
    return ROOT / unquote(url[len(prefix) :]) if url.startswith(prefix) else None


def figures_in(notebook: Path) -> int:
    """PNG outputs of an executed notebook that the book shows (not removed by a tag, not glue-only)."""
    if not notebook.exists():
        return 0
    count = 0
    for cell in json.loads(notebook.read_text(encoding="utf-8"))["cells"]:
        tags = set(cell.get("metadata", {}).get("tags", []))
        if cell["cell_type"] != "code" or tags & {"remove-output", "remove-cell"}:
            continue
        count += sum(
            "image/png" in o.get("data", {}) and "scrapbook" not in o.get("metadata", {})
            for o in cell.get("outputs", [])
        )
    return count


class _Ids(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("id", "name") and value:
                self.ids.add(value)


@functools.cache
def anchors(path: Path) -> frozenset[str]:
    parser = _Ids()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    return frozenset(parser.ids)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest's output readable
        pass


@pytest.fixture(scope="module")
def site():
    """Base URL of the built book served on 127.0.0.1 (ephemeral port)."""
    if not (HTML / "index.html").exists():
        unavailable(
            f"no built book at {HTML}: run `make test` (tests/book/test_book.py builds it) or `make book` first"
        )
    server = http.server.ThreadingHTTPServer((LOCAL, 0), functools.partial(_QuietHandler, directory=str(HTML)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://{LOCAL}:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        unavailable("Debian's chromium is not installed (`apt-get install chromium`)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("Playwright for Python is not installed (`pip install -e '.[test]'`)")
    if SHOTS.exists():
        for old in SHOTS.glob("*.png"):
            old.unlink()
    SHOTS.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium, headless=True, args=["--disable-dev-shm-usage"])
        yield b
        b.close()
    print(f"\nbrowser test: {time.perf_counter() - start:.1f} s; screenshots in {SHOTS}")


def is_local(url: str) -> bool:
    return urlparse(url).hostname == LOCAL or url.startswith(("data:", "blob:", "about:"))


def is_favicon(url: str) -> bool:
    """Browsers probe /favicon.ico on their own; the book has none, and needs none."""
    return urlparse(url).path == "/favicon.ico"


# JavaScript run in the page after it has loaded.
WAIT_FOR_IMAGES = """async () => {
  const imgs = [...document.images];
  imgs.forEach(i => { i.loading = "eager"; });
  await Promise.all(imgs.map(i => i.complete ? null : new Promise(done => {
    i.addEventListener("load", done); i.addEventListener("error", done); setTimeout(done, 15000);
  })));
  return imgs.map(i => ({src: i.currentSrc || i.src, ok: i.complete && i.naturalWidth > 0}));
}"""

TYPESET_MATH = """async () => {
  const math = document.querySelectorAll(".math");
  const script = [...document.scripts].map(s => s.src).find(s => /mathjax/i.test(s)) || null;
  if (math.length === 0) return {math: 0, script};
  const t0 = Date.now();
  while (!(window.MathJax && MathJax.startup && MathJax.startup.promise) && Date.now() - t0 < 30000)
    await new Promise(r => setTimeout(r, 100));
  if (!(window.MathJax && MathJax.startup && MathJax.startup.promise))
    return {math: math.length, script, loaded: false};
  await MathJax.startup.promise;
  const untypeset = [...math].filter(m => !m.querySelector("mjx-container")).map(m => m.textContent.slice(0, 80));
  const errors = [...document.querySelectorAll("mjx-merror")].map(e => e.textContent.slice(0, 80));
  // MathJax's noundefined package draws an unknown macro as red text instead of failing.
  const undefinedMacros = [...document.querySelectorAll("mjx-assistive-mml mtext[mathcolor='red']")]
    .map(e => e.textContent).filter(t => t.startsWith(String.fromCharCode(92)));
  return {math: math.length, script, loaded: true, rendered: document.querySelectorAll("mjx-container").length,
          untypeset, errors: errors.concat(undefinedMacros.map(t => `undefined macro ${t}`))};
}"""

PAGE_FACTS = """() => {
  const text = e => (e.innerText || e.textContent || "");
  const outputs = [...document.querySelectorAll(".cell_output .output, .cell_output")];
  return {
    title: document.title,
    errorOutputs: [...document.querySelectorAll(".output.traceback, .output.error")].map(e => text(e).slice(0, 300)),
    tracebackText: outputs.filter(e => /Traceback \\(most recent call last\\)|^\\w*Error: /m.test(text(e)))
                          .map(e => text(e).slice(0, 300)),
    stderr: [...document.querySelectorAll(".output.stderr")].map(e => text(e).slice(0, 200)),
    colab: [...document.querySelectorAll("a[href*='colab.research.google.com']")].map(a => a.href),
    links: [...document.querySelectorAll("a[href]")].map(a => a.href),
    figures: document.querySelectorAll(".cell_output img, figure img").length,
  };
}"""


def local_file(url: str) -> Path:
    path = unquote(urlparse(url).path).lstrip("/")
    target = HTML / path
    return target / "index.html" if target.is_dir() or path == "" else target


@pytest.mark.parametrize("doc", PAGES)
def test_page_renders_offline(doc, site, browser, request):
    source = source_of(doc)
    page_file = HTML / f"{doc}.html"
    assert page_file.exists(), f"{page_file} is missing: the build is older than _toc.yml, rebuild the book"

    blocked, problems = [], []
    context = browser.new_context(viewport={"width": 1280, "height": 900})

    def route(r):
        if is_local(r.request.url):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort("blockedbyclient")

    context.route("**/*", route)
    request.addfinalizer(context.close)
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.on("pageerror", lambda e: problems.append(f"JavaScript exception: {e}"))

    def console(message):
        where = message.location.get("url") or ""
        if message.type != "error" or is_favicon(where):
            return
        if (where and not is_local(where)) or any(u in message.text for u in blocked):
            return  # a request to another host, blocked above: the book must not need it
        problems.append(f"console error: {message.text} at {where}:{message.location.get('lineNumber')}")

    page.on("console", console)
    page.on(
        "requestfailed",
        lambda r: (
            is_local(r.url)
            and not is_favicon(r.url)
            and problems.append(f"local request failed: {r.url} ({r.failure})")
        ),
    )
    page.on(
        "response",
        lambda r: (
            is_local(r.url)
            and r.status >= 400
            and not is_favicon(r.url)
            and problems.append(f"HTTP {r.status}: {r.url}")
        ),
    )

    # The landing page is reached through index.html's redirect, as a reader would.
    url = site + ("index.html" if doc == TOC["root"] else f"{doc}.html")
    response = page.goto(url, wait_until="load")
    assert response is not None and response.ok, f"{url}: {response.status if response else 'no response'}"
    if doc == TOC["root"]:
        page.wait_for_url(f"{site}{doc}.html", wait_until="load")

    math = page.evaluate(TYPESET_MATH)
    images = page.evaluate(WAIT_FOR_IMAGES)
    facts = page.evaluate(PAGE_FACTS)
    shot = SHOTS / (doc.removeprefix("book/").replace("/", "-") + ".png")
    page.screenshot(path=str(shot), full_page=True)
    page.wait_for_timeout(200)  # late console messages

    # MathJax: local, loaded, every formula typeset, no TeX error.
    if math["math"]:
        assert math["script"] and is_local(math["script"]), f"MathJax must be served by the book, got {math['script']}"
        assert math.get("loaded"), f"MathJax did not start ({math['math']} formulas on the page)"
        if math["untypeset"]:
            problems.append(f"{len(math['untypeset'])} formulas not typeset, e.g. {math['untypeset'][:3]}")
        if math["errors"]:
            problems.append(f"MathJax TeX errors: {math['errors'][:5]}")
    problems += [f"image did not load: {i['src']}" for i in images if not i["ok"]]
    problems += [f"error output: {t!r}" for t in dict.fromkeys(facts["errorOutputs"] + facts["tracebackText"])]

    # Colab: a chapter's launch button opens its own notebook; every Colab link opens a notebook
    # that exists in the repository.
    if source.suffix == ".ipynb":
        expected = colab_url(source.relative_to(ROOT).as_posix())
        if expected not in facts["colab"]:
            problems.append(f"no Colab launch link to {expected}; Colab links: {facts['colab']}")
    for link in facts["colab"]:
        target = notebook_of_colab_url(link)
        if target is None:
            problems.append(
                f"Colab link outside this repository's {CONFIG['repository'].get('branch', 'main')} branch: {link}"
            )
        elif not (target.suffix == ".ipynb" and target.exists()):
            problems.append(f"Colab link to a notebook that is not in the repository: {link}")
        elif source.suffix == ".ipynb" and target != source:
            problems.append(f"Colab link on {doc} opens another notebook: {link}")

    # Figures: the notebook the page was built from (next to _build/html) has figure outputs
    # (an executed build), so the page must show them.
    built_from = HTML.parent.parent / f"{doc}.ipynb"
    if figures_in(built_from) and not facts["figures"]:
        problems.append(f"{built_from} has {figures_in(built_from)} figure outputs, the page shows none")

    # Links inside the book.
    for link in set(facts["links"]):
        if not link.startswith(site):
            continue
        target = local_file(link)
        fragment = unquote(urlparse(link).fragment)
        if not target.exists():
            problems.append(f"broken link: {link}")
        elif fragment and target.suffix == ".html" and fragment not in anchors(target):
            problems.append(f"broken anchor: {link}")

    info = (
        f"{doc}: {math['math']} formulas, {len(images)} images ({facts['figures']} in outputs or figures), "
        f"{len(facts['colab'])} Colab links"
    )
    if facts["stderr"]:
        info += f", {len(facts['stderr'])} stderr outputs (not errors): {facts['stderr'][:2]}"
    if blocked:
        info += f", blocked {len(blocked)} requests to other hosts: {sorted({urlparse(u).hostname for u in blocked})}"
    print(info, f"-> {shot}")
    assert shot.stat().st_size > 0
    assert not problems, f"{doc} ({url}):\n  " + "\n  ".join(problems)
