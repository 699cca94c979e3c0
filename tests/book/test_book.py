"""Every chapter executes in quick mode with papermill, then the book builds without warnings.

These are the slow end-to-end checks CI runs (``make test``). Chapters share the cache in
``$SA_CACHE_DIR`` (``_build/cache`` under make), so later chapters reuse earlier models.

The chapters are executed once, in book order, by ``tools/book.py`` (``SA_BOOK_JOBS=2`` runs two
parts at once in separate processes), then each chapter's test checks its executed copy. After
``make book`` the executed copies that were made from the current sources are reused
(``SA_BOOK_REUSE=0`` executes everything again); a clean clone (CI) has none, so there every chapter is executed.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import book  # noqa: E402

CHAPTERS = book.chapters()
REUSE = os.environ.get("SA_BOOK_REUSE", "1") != "0"


@pytest.fixture(scope="module")
def executed():
    """Execute every chapter that is not up to date; returns {chapter stem: error} of the failures."""
    return book.run(CHAPTERS, "quick", jobs=book.default_jobs("quick"), reuse=REUSE)


def test_notebooks_are_committed_without_outputs():
    for nb in CHAPTERS:
        cells = json.loads(nb.read_text())["cells"]
        assert not any(c.get("outputs") or c.get("execution_count") for c in cells if c["cell_type"] == "code"), nb.name
        assert all("id" in c for c in cells), f"{nb.name}: every cell needs an id (nbformat 4.5)"
        tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1 and "MODE" in "".join(tagged[0]["source"]), (
            f"{nb.name}: needs one parameters cell with MODE"
        )


@pytest.mark.slow
@pytest.mark.parametrize("notebook", CHAPTERS, ids=[nb.stem for nb in CHAPTERS])
def test_chapter_executes_in_quick_mode(notebook, executed):
    assert notebook.stem not in executed, executed.get(notebook.stem)
    assert book.is_current(notebook, "quick"), (
        f"{notebook.name} was not executed to the end (an earlier chapter of its part failed?)"
    )
    executed_nb = json.loads((book.EXEC / notebook.relative_to(ROOT)).read_text())
    outputs = [o for c in executed_nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    assert not any(o.get("output_type") == "error" for o in outputs)
    assert any("image/png" in o.get("data", {}) for o in outputs), "every chapter shows at least one figure"
    frozen = [
        o["data"].get("text/plain")
        for o in outputs
        if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
        and re.search(r"\d+%\|", str(o["data"].get("text/plain", "")))
    ]  # a tqdm bar
    assert not frozen, f"progress widgets saved in the executed chapter (run it with SA_PROGRESS=text): {frozen[:2]}"
    streams = "".join("".join(o.get("text", "")) for o in outputs if o.get("output_type") == "stream")
    assert "\r" not in streams and "\x1b[" not in streams, "text progress must be whole lines (no redraws)"


@pytest.mark.slow
def test_book_builds_without_warnings(executed):
    book.build()
    html = book.EXEC / "_build" / "html"
    assert (html / "index.html").exists()
    for nb in CHAPTERS:
        assert (html / nb.relative_to(ROOT).with_suffix(".html")).exists(), nb.name
