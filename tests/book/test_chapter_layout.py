"""Every chapter opens the way CONTRIBUTING.md says, so that it launches on Colab and tells
the reader what a run costs; the back matter pages are in the book.

Fast (reads the notebooks' JSON); the rendered pages are checked in tests/book/test_browser.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())
DOCS = [ch["file"] for part in TOC["parts"] for ch in part["chapters"]]
NOTEBOOKS = [ROOT / f"{doc}.ipynb" for doc in DOCS if (ROOT / f"{doc}.ipynb").exists()]
TEMPLATE = ROOT / "book" / "_template.ipynb"
"""The opening and closing every chapter shares (CONTRIBUTING.md, "Adding a chapter")."""
WITH_TEMPLATE = [*NOTEBOOKS, TEMPLATE]


def colab_url(path: Path) -> str:
    repo = CONFIG["repository"]
    owner_name = urlparse(repo["url"]).path.strip("/")
    rel = "/".join(p for p in (repo.get("path_to_book", "").strip("/"), path.relative_to(ROOT).as_posix()) if p)
    colab = CONFIG["launch_buttons"]["colab_url"].rstrip("/")
    return f"{colab}/github/{owner_name}/blob/{repo.get('branch', 'main')}/{rel}"


@pytest.mark.parametrize("notebook", WITH_TEMPLATE, ids=[nb.stem for nb in WITH_TEMPLATE])
def test_chapter_opens_with_running_note_and_colab_setup(notebook):
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    intro = "".join(cells[0]["source"])
    assert cells[0]["cell_type"] == "markdown" and intro.startswith("# "), "a chapter starts with its title"
    assert "Running this chapter" in intro, "the first cell needs the 'Running this chapter' note"
    note = " ".join(intro[intro.index("Running this chapter") :].split())  # line breaks as spaces
    assert f"({colab_url(notebook)})" in note, f"the note's Colab link must be {colab_url(notebook)}"
    for mode in ("Quick mode", "Full mode"):
        assert mode in note, f"the note must state the expected {mode.lower()} run time"
    assert "min" in note[note.index("Quick mode") : note.index("Full mode")], "quick mode needs a run time"

    setup = next(c for c in cells if c["cell_type"] == "code")
    lines = [line.strip() for line in "".join(setup["source"]).splitlines() if line.strip()]
    guard = next(
        (i for i, line in enumerate(lines) if line.startswith("if") and '"google.colab" in sys.modules' in line), None
    )
    assert guard is not None, (
        'the first code cell installs sa_utils only on Colab (`if "google.colab" in sys.modules:`)'
    )
    installs = [i for i, line in enumerate(lines) if "pip install" in line]
    assert installs and all(i > guard for i in installs), (
        "every install in the setup cell must sit under the Colab guard"
    )
    assert CONFIG["repository"]["url"] in "\n".join(lines[guard:]), (
        "the setup cell installs sa_utils from this repository"
    )


def headings(notebook: Path) -> list[str]:
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    return [
        line[3:].strip()
        for c in cells
        if c["cell_type"] == "markdown"
        for line in "".join(c["source"]).splitlines()
        if line.startswith("## ")
    ]


@pytest.mark.parametrize("notebook", WITH_TEMPLATE, ids=[nb.stem for nb in WITH_TEMPLATE])
def test_chapter_is_shaped_like_the_template(notebook):
    """What you will learn, one parameters cell, setup with the part's recipe; closing Summary, Exercises."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    assert "What you will learn" in "".join(cells[0]["source"]), "the first cell says what the reader will learn"
    params = [i for i, c in enumerate(cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1 and "MODE = None" in "".join(cells[params[0]]["source"]), "one parameters cell, MODE"
    after = "".join(cells[params[0] + 1]["source"])
    assert "chapter.setup(" in after and ".recipe, MODE)" in after, (
        "the cell after the parameters calls chapter.setup(<part's recipe>, MODE)"
    )
    assert headings(notebook)[-2:] == ["Summary", "Exercises"], "a chapter closes with Summary, then Exercises"
    exercises = "".join(
        c["source"] if isinstance(c["source"], str) else "".join(c["source"])
        for c in cells
        if c["cell_type"] == "markdown"
    )
    assert ":::{admonition} Solution" in exercises and ":class: dropdown" in exercises, "exercises carry solutions"


def test_the_template_is_not_a_page_of_the_book():
    assert "book/_template" not in DOCS and CONFIG.get("only_build_toc_files") is True


def test_back_matter_pages_are_in_the_book():
    back = next(part for part in TOC["parts"] if part["caption"] == "Back matter")["chapters"]
    files = [ch["file"] for ch in back]
    for page in ("book/glossary", "book/instructors", "book/bibliography"):
        assert page in files and (ROOT / f"{page}.md").exists(), page
    assert "```{glossary}" in (ROOT / "book" / "glossary.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[nb.stem for nb in NOTEBOOKS])
def test_chapter_does_not_redefine_the_book_api(notebook):
    """A helper that `sa_utils.chapter` offers is called from there, not copied into a chapter
    (chapters 2-5 each carried their own `table` until session 11)."""
    import ast

    import sa_utils.chapter as chapter

    api = {
        name
        for name, obj in vars(chapter).items()
        if callable(obj) and getattr(obj, "__module__", "") == chapter.__name__
    }
    assert "table" in api and "setup" in api
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        lines = "".join(cell["source"]).splitlines()
        source = "\n".join(  # an IPython magic is not Python: keep its indentation, drop its text
            line[: len(line) - len(line.lstrip())] + "pass" if line.lstrip().startswith(("%", "!")) else line
            for line in lines
        )
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assert node.name not in api, (
                    f"{notebook.name} defines its own `{node.name}`; call `chapter.{node.name}` instead"
                )
