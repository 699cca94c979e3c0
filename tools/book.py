"""Execute every chapter with papermill and build the book from the executed copies.

    python tools/book.py            # execute (quick mode on a CPU) + build HTML
    python tools/book.py --mode full
    python tools/book.py --only 03  # execute chapters whose file name contains "03"

Sources in book/ stay output-free: they are copied to ``_build/executed/`` with
``_config.yml``/``_toc.yml``, executed there in place, and the book is built from that copy
into ``_build/executed/_build/html``. The build uses ``-W -n --keep-going``: any Sphinx
warning fails it. A notebook error stops with papermill's message naming the cell.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXEC = ROOT / "_build" / "executed"


def chapters() -> list[Path]:
    """Chapter notebooks in book order (as listed in ``_toc.yml``)."""
    import yaml

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = []
    for part in toc.get("parts", []):
        for ch in part.get("chapters", []):
            path = ROOT / (ch["file"] + ".ipynb")
            if path.exists():
                files.append(path)
    return files


def stage() -> None:
    """Copy book sources to the execution folder.

    A file is copied only when the source is newer, so executed notebooks and the figures
    they wrote (e.g. ``book/_static/headline.png`` from chapter 5) are kept.
    """
    EXEC.mkdir(parents=True, exist_ok=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(ROOT / name, EXEC / name)
    for src in (ROOT / "book").rglob("*"):
        if src.is_file() and ".ipynb_checkpoints" not in src.parts:
            dst = EXEC / src.relative_to(ROOT)
            dst.parent.mkdir(parents=True, exist_ok=True)
            if not dst.exists() or src.stat().st_mtime > dst.stat().st_mtime:
                shutil.copy2(src, dst)


def execute(notebook: Path, mode: str, kernel: str = "python3") -> float:
    """Run one chapter (already staged) in place with papermill; returns seconds taken."""
    import papermill as pm

    target = EXEC / notebook.relative_to(ROOT)
    shutil.copy2(notebook, target)  # start from the output-free source
    start = time.perf_counter()
    pm.execute_notebook(str(target), str(target), parameters={"MODE": mode}, kernel_name=kernel,
                        cwd=str(target.parent), progress_bar=False, log_output=False)
    return time.perf_counter() - start


def build() -> None:
    """``jupyter-book build`` of the executed copy; raises on any warning."""
    exe = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(exe), "build", "--all", "-W", "-n", "--keep-going", str(EXEC)]
    subprocess.run(cmd, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", default=os.environ.get("SA_MODE", "quick"), choices=["quick", "full"],
                        help="run size passed to every chapter's parameters cell (default: $SA_MODE or quick)")
    parser.add_argument("--only", default=None, help="execute only chapters whose file name contains this text")
    parser.add_argument("--no-build", action="store_true", help="execute the chapters but skip the HTML build")
    args = parser.parse_args()
    stage()
    for nb in chapters():
        if args.only and args.only not in nb.name:
            continue
        print(f"executing {nb.relative_to(ROOT)} ({args.mode} mode) ...", flush=True)
        print(f"  done in {execute(nb, args.mode):.0f} s", flush=True)
    if not args.no_build:
        build()
        print(f"book: {EXEC / '_build' / 'html' / 'index.html'}")


if __name__ == "__main__":
    main()
