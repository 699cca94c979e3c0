"""Every chapter executes in quick mode with papermill, then the book builds without warnings.

These are the slow end-to-end checks CI runs (``make test``). Chapters share the cache in
``$SA_CACHE_DIR`` (``_build/cache`` under make), so later chapters reuse earlier models.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import book  # noqa: E402

CHAPTERS = book.chapters()


@pytest.fixture(scope="module", autouse=True)
def staged():
    book.stage()


def test_notebooks_are_committed_without_outputs():
    for nb in CHAPTERS:
        cells = json.loads(nb.read_text())["cells"]
        assert not any(c.get("outputs") or c.get("execution_count") for c in cells if c["cell_type"] == "code"), nb.name
        tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1 and "MODE" in "".join(tagged[0]["source"]), f"{nb.name}: needs one parameters cell with MODE"


@pytest.mark.slow
@pytest.mark.parametrize("notebook", CHAPTERS, ids=[nb.stem for nb in CHAPTERS])
def test_chapter_executes_in_quick_mode(notebook):
    book.execute(notebook, "quick")
    executed = json.loads((book.EXEC / notebook.relative_to(ROOT)).read_text())
    outputs = [o for c in executed["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    assert not any(o.get("output_type") == "error" for o in outputs)
    assert any("image/png" in o.get("data", {}) for o in outputs), "every chapter shows at least one figure"


@pytest.mark.slow
def test_book_builds_without_warnings():
    missing = [nb for nb in CHAPTERS if not (book.EXEC / nb.relative_to(ROOT)).exists()]
    if missing:
        for nb in missing:
            book.execute(nb, "quick")
    book.build()
    html = book.EXEC / "_build" / "html"
    assert (html / "index.html").exists()
    for nb in CHAPTERS:
        assert (html / nb.relative_to(ROOT).with_suffix(".html")).exists(), nb.name
