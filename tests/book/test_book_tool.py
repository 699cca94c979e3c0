"""tools/book.py: which executed chapters may be reused, and its settings' checks (no chapter is run)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import book  # noqa: E402


def test_parts_cover_every_chapter_in_book_order():
    flat = [nb for part in book.parts() for nb in part]
    assert flat == book.chapters() and len(book.parts()) >= 3
    assert all(len({nb.parent for nb in part}) == 1 for part in book.parts())  # a part is one folder


def test_an_executed_copy_is_reused_only_for_the_same_sources_and_mode(tmp_path, monkeypatch):
    src = book.chapters()[0]
    monkeypatch.setattr(book, "EXEC", tmp_path / "executed")
    target = book.EXEC / src.relative_to(ROOT)
    target.parent.mkdir(parents=True)
    assert not book.is_current(src, "quick")  # no executed copy
    nb = json.loads(src.read_text())
    nb["metadata"]["sa_book"] = {"digest": book.source_digest(src, "quick"), "complete": True}
    target.write_text(json.dumps(nb))
    assert book.is_current(src, "quick")
    assert not book.is_current(src, "full")  # another mode
    nb["metadata"]["sa_book"]["complete"] = False  # a run that did not finish
    target.write_text(json.dumps(nb))
    assert not book.is_current(src, "quick")


def test_the_digest_follows_the_library_and_the_chapter(tmp_path, monkeypatch):
    src = book.chapters()[0]
    before = book.source_digest(src, "quick")
    fake_root = tmp_path / "repo"
    for rel in (src.relative_to(ROOT), Path("tools") / "book.py", Path("pyproject.toml")):
        (fake_root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, fake_root / rel)
    for package in book.PACKAGES:
        shutil.copytree(ROOT / package, fake_root / package, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(book, "ROOT", fake_root)
    monkeypatch.setattr(book, "__file__", str(fake_root / "tools" / "book.py"))
    copy = fake_root / src.relative_to(ROOT)
    assert book.source_digest(copy, "quick") == before  # same bytes, same digest
    metrics = fake_root / "sa_utils" / "eval" / "metrics.py"
    metrics.write_text(metrics.read_text() + "\n# edit\n")
    after_lib = book.source_digest(copy, "quick")
    assert after_lib != before
    world = fake_root / "tinyworld" / "scenes.py"
    world.write_text(world.read_text() + "\n# edit\n")
    after_world = book.source_digest(copy, "quick")
    assert after_world not in (before, after_lib)
    copy.write_text(copy.read_text().replace("MODE", "MODE ", 1))
    assert book.source_digest(copy, "quick") not in (before, after_lib, after_world)


def test_jobs_setting_is_checked(monkeypatch):
    monkeypatch.delenv("SA_BOOK_JOBS", raising=False)
    assert book.default_jobs("quick") == 1
    monkeypatch.setenv("SA_BOOK_JOBS", "2")
    assert book.default_jobs("quick") == 2
    monkeypatch.setenv("SA_BOOK_JOBS", "two")
    with pytest.raises(ValueError, match="SA_BOOK_JOBS must be a positive integer"):
        book.default_jobs("quick")
