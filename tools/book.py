"""Execute every chapter with papermill and build the book from the executed copies.

    python tools/book.py                 # execute (quick mode on a CPU) + build HTML
    python tools/book.py --mode full
    python tools/book.py --only 03       # execute chapters whose file name contains "03"
    python tools/book.py --jobs 2        # two parts of the book at once (default: one at a time)
    python tools/book.py --reuse         # skip chapters whose executed copy is up to date

Sources in book/ stay output-free: they are copied to ``_build/executed/`` with
``_config.yml``/``_toc.yml``, executed there in place, and the book is built from that copy
into ``_build/executed/_build/html``. The build uses ``-W -n --keep-going``: any Sphinx
warning fails it. A notebook error stops with papermill's message naming the cell.

**Lanes.** The chapters of one part share cached models (chapter 3 reuses chapter 2's CVAE), so
a part is executed in order, by one process. Parts do not depend on each other (every model a
part needs from another, the MNIST classifier, is shipped in ``sa_utils/storage/weights``), so with
``--jobs N`` up to N parts run at once, each in its own process with ``cpus // N`` torch threads,
longest part (by the last recorded time) first. The default is one lane: on the project's 2-core
machines torch already uses both cores almost fully (``benchmarks/lanes.py``: the same work on one
thread each, two at once, is no faster than one after the other on two threads), and two lanes
that finish at different times leave a core idle. Never run anything CPU-heavy next to a chapter:
a 2-thread process sharing its cores with another busy process was measured 20x slower.

**Reuse.** Each executed copy records a digest of everything its outputs depend on: the
chapter's source, the mode, every file of ``sa_utils`` and ``tinyworld`` (code and shipped
weights) and this script. With ``--reuse`` (``make test`` after ``make book``) a chapter whose executed copy has
the same digest is not executed again; any change to those files executes it again. A clean
clone has no executed copies, so CI always executes everything.

**Progress.** Chapters run with ``SA_PROGRESS=text`` (unless set otherwise): the library's
progress bars print a few plain lines instead of a notebook widget, which would be saved frozen
("0%| | 0/469") in the executed copy and render as an empty box in the HTML.

**Timings.** After each chapter, the seconds of the chapter and of each of its code cells
(papermill records them) are written to ``_build/timings.json``; ``tools/timing.py`` turns
them into the table of the Performance appendix.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXEC = ROOT / "_build" / "executed"
TIMINGS = ROOT / "_build" / "timings.json"
LOGS = ROOT / "_build" / "logs"
# the kernel's own log (e.g. "running over TCP without encryption") is not the reader's business
KERNEL_ARGS = ["--IPKernelApp.log_level=ERROR"]


PACKAGES = ("sa_utils", "tinyworld")
"""The packages every chapter's outputs depend on (code and shipped weights)."""


def chapters() -> list[Path]:
    """Chapter notebooks in book order (as listed in ``_toc.yml``)."""
    return [nb for part in parts() for nb in part]


def parts() -> list[list[Path]]:
    """The chapter notebooks of each part of ``_toc.yml`` (parts without notebooks left out)."""
    import yaml

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    out = []
    for part in toc.get("parts", []):
        files = [ROOT / (ch["file"] + ".ipynb") for ch in part.get("chapters", [])]
        files = [f for f in files if f.exists()]
        if files:
            out.append(files)
    return out


def stage() -> None:
    """Copy book sources to the execution folder.

    A file is copied only when the source is newer, so executed notebooks and the figures
    they wrote (e.g. ``book/_static/headline.png`` from chapter 5) are kept.
    """
    EXEC.mkdir(parents=True, exist_ok=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(ROOT / name, EXEC / name)
    for src in (ROOT / "book").rglob("*"):
        if src.is_file() and ".ipynb_checkpoints" not in src.parts and src.suffix != ".ipynb":
            dst = EXEC / src.relative_to(ROOT)
            dst.parent.mkdir(parents=True, exist_ok=True)
            if not dst.exists() or src.stat().st_mtime > dst.stat().st_mtime:
                shutil.copy2(src, dst)
    for src in chapters():  # a notebook is copied only when it is executed, or when no copy exists yet
        dst = EXEC / src.relative_to(ROOT)
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.exists():
            shutil.copy2(src, dst)


def source_digest(notebook: Path, mode: str) -> str:
    """Digest of what an executed chapter depends on: its source, the mode, the two packages, this script."""
    h = hashlib.sha256()
    h.update(mode.encode())
    files = [notebook, Path(__file__).resolve(), ROOT / "pyproject.toml"]
    for package in PACKAGES:
        files += sorted(p for p in (ROOT / package).rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    for f in files:
        h.update(str(f.relative_to(ROOT)).encode())
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()[:16]


def executed_digest(notebook: Path) -> str | None:
    target = EXEC / notebook.relative_to(ROOT)
    if not target.exists():
        return None
    try:
        meta = json.loads(target.read_text()).get("metadata", {}).get("sa_book", {})
    except json.JSONDecodeError:
        return None
    return meta.get("digest") if meta.get("complete") else None


def is_current(notebook: Path, mode: str) -> bool:
    """True when the executed copy ran to the end from exactly the current sources and mode."""
    return executed_digest(notebook) == source_digest(notebook, mode)


def execute(notebook: Path, mode: str, kernel: str = "python3") -> float:
    """Run one chapter (already staged) in place with papermill; returns seconds taken."""
    import papermill as pm

    target = EXEC / notebook.relative_to(ROOT)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(notebook, target)  # start from the output-free source
    digest = source_digest(notebook, mode)
    # nobody watches an unattended run: text progress, not widgets frozen into the saved notebook.
    # The kernel inherits the environment (sa_utils/progress.py); this process gets its own back.
    before = os.environ.get("SA_PROGRESS")
    os.environ["SA_PROGRESS"] = before or "text"
    start = time.perf_counter()
    try:
        pm.execute_notebook(
            str(target),
            str(target),
            parameters={"MODE": mode},
            kernel_name=kernel,
            cwd=str(target.parent),
            progress_bar=False,
            log_output=False,
            extra_arguments=KERNEL_ARGS,
        )
    finally:
        if before is None:
            del os.environ["SA_PROGRESS"]
    seconds = time.perf_counter() - start
    nb = json.loads(target.read_text())
    nb.setdefault("metadata", {})["sa_book"] = {
        "digest": digest,
        "mode": mode,
        "complete": True,
        "seconds": round(seconds, 1),
    }
    target.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    record_timing(notebook, mode, seconds)
    return seconds


def cell_times(notebook: Path) -> list[dict]:
    """Seconds of every code cell of an executed chapter, with the cell's first line as its label."""
    nb = json.loads((EXEC / notebook.relative_to(ROOT)).read_text())
    rows = []
    for i, c in enumerate(nb["cells"]):
        if c["cell_type"] != "code":
            continue
        lines = [ln for ln in "".join(c["source"]).splitlines() if ln.strip()]
        rows.append(
            {
                "cell": i,
                "label": lines[0][:100] if lines else "",
                "seconds": round(float(c.get("metadata", {}).get("papermill", {}).get("duration") or 0), 2),
            }
        )
    return rows


def record_timing(notebook: Path, mode: str, seconds: float) -> None:
    """Add one chapter's time (and its cells') to ``_build/timings.json``, safely across lanes."""
    TIMINGS.parent.mkdir(parents=True, exist_ok=True)
    lock = TIMINGS.with_suffix(".lock")
    import fcntl

    with open(lock, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        data = json.loads(TIMINGS.read_text()) if TIMINGS.exists() else {}
        data[notebook.stem] = {
            "mode": mode,
            "seconds": round(seconds, 1),
            "threads": os.environ.get("OMP_NUM_THREADS"),
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "cells": cell_times(notebook),
        }
        tmp = TIMINGS.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(tmp, TIMINGS)


def _run_in_order(notebooks: list[Path], mode: str, reuse: bool) -> None:
    for nb in notebooks:
        if reuse and is_current(nb, mode):
            print(f"up to date: {nb.relative_to(ROOT)} (executed from the same sources; not run again)", flush=True)
            continue
        print(f"executing {nb.relative_to(ROOT)} ({mode} mode) ...", flush=True)
        print(f"  done in {execute(nb, mode):.0f} s", flush=True)


def run(notebooks: list[Path], mode: str, jobs: int = 1, reuse: bool = False, staged: bool = False) -> dict[str, str]:
    """Execute ``notebooks``: in order with ``jobs=1``; else each part in its own process, ``jobs`` at once.

    Returns the chapters that failed, each with the error (``jobs=1``) or the log holding papermill's
    message; a part stops at its first failing chapter, the other parts go on.
    """
    if not staged:
        stage()
    groups = [[nb for nb in part if nb in notebooks] for part in parts()]
    groups = [g for g in groups if g and not (reuse and all(is_current(nb, mode) for nb in g))]
    if reuse:
        for nb in notebooks:
            if is_current(nb, mode) and not any(nb in g for g in groups):
                print(f"up to date: {nb.relative_to(ROOT)} (executed from the same sources; not run again)")
    if jobs <= 1 or len(groups) <= 1:
        errors = {}
        for g in groups:
            try:
                _run_in_order(g, mode, reuse)
            except Exception as err:  # papermill's PapermillExecutionError names the cell
                bad = next(nb for nb in g if not is_current(nb, mode))
                errors[bad.stem] = f"{type(err).__name__}: {err}"
        return errors
    last = json.loads(TIMINGS.read_text()) if TIMINGS.exists() else {}
    cost = lambda g: sum(last.get(nb.stem, {}).get("seconds", 600) for nb in g)  # noqa: E731
    queue = sorted(groups, key=cost, reverse=True)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    LOGS.mkdir(parents=True, exist_ok=True)
    running: list[tuple[subprocess.Popen, list[Path], Path, object]] = []
    failed: dict[str, str] = {}
    print(f"{len(queue)} parts in {jobs} lanes, {threads} torch thread(s) each; logs in {LOGS}", flush=True)
    while queue or running:
        while queue and len(running) < jobs:
            g = queue.pop(0)
            log = LOGS / f"{g[0].stem}.log"
            fh = open(log, "w")
            cmd = [
                sys.executable,
                str(Path(__file__).resolve()),
                "--mode",
                mode,
                "--jobs",
                "1",
                "--no-build",
                "--staged",
                "--chapters",
                ",".join(str(nb.relative_to(ROOT)) for nb in g),
            ] + (["--reuse"] if reuse else [])
            print("started: " + ", ".join(nb.stem for nb in g), flush=True)
            running.append((subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env), g, log, fh))
        time.sleep(1)
        for item in list(running):
            proc, g, log, fh = item
            if proc.poll() is None:
                continue
            running.remove(item)
            fh.close()
            done = [
                ln.strip() for ln in log.read_text().splitlines() if ln.startswith(("executing", "  done", "up to"))
            ]
            print("\n".join(f"  {ln}" for ln in done), flush=True)
            if proc.returncode != 0:
                bad = next((nb for nb in g if not is_current(nb, mode)), g[0])
                failed[bad.stem] = f"exit {proc.returncode}; papermill's message is in {log}"
                print(f"FAILED: {', '.join(nb.stem for nb in g)} (exit {proc.returncode}); see {log}", flush=True)
                print("\n".join(log.read_text().splitlines()[-40:]), flush=True)
    return failed


def build() -> None:
    """``jupyter-book build`` of the executed copy; raises on any warning."""
    exe = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(exe), "build", "--all", "-W", "-n", "--keep-going", str(EXEC)]
    subprocess.run(cmd, check=True)


def default_jobs(mode: str) -> int:
    """``$SA_BOOK_JOBS``, else 1: one chapter at a time with every core (see *Lanes* above)."""
    env = os.environ.get("SA_BOOK_JOBS", "1")
    if not env.isdigit() or int(env) < 1:
        raise ValueError(f"SA_BOOK_JOBS must be a positive integer, got {env!r}")
    return int(env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--mode",
        default=os.environ.get("SA_MODE", "quick"),
        choices=["quick", "full"],
        help="run size passed to every chapter's parameters cell (default: $SA_MODE or quick)",
    )
    parser.add_argument("--only", default=None, help="execute only chapters whose file name contains this text")
    parser.add_argument("--chapters", default=None, help="comma-separated notebook paths (used by the lanes)")
    parser.add_argument(
        "--jobs", type=int, default=None, help="parts executed at once (default: $SA_BOOK_JOBS, else 1)"
    )
    parser.add_argument(
        "--reuse", action="store_true", help="skip chapters whose executed copy was made from the same sources and mode"
    )
    parser.add_argument("--no-build", action="store_true", help="execute the chapters but skip the HTML build")
    parser.add_argument("--staged", action="store_true", help=argparse.SUPPRESS)  # a lane: the parent staged
    args = parser.parse_args()
    if args.chapters:
        chosen = [ROOT / p for p in args.chapters.split(",")]
        missing = [str(p) for p in chosen if not p.exists()]
        if missing:
            parser.error(f"--chapters: no such notebook: {', '.join(missing)}")
    else:
        chosen = [nb for nb in chapters() if not args.only or args.only in nb.name]
        if not chosen:
            parser.error(
                f"--only {args.only!r} matches no chapter; chapters: {', '.join(nb.stem for nb in chapters())}"
            )
    jobs = args.jobs if args.jobs is not None else default_jobs(args.mode)
    failed = run(chosen, args.mode, jobs=jobs, reuse=args.reuse, staged=args.staged)
    if failed:
        sys.exit("chapters failed:\n" + "\n".join(f"  {k}: {v}" for k, v in failed.items()))
    if not args.no_build:
        build()
        print(f"book: {EXEC / '_build' / 'html' / 'index.html'}")


if __name__ == "__main__":
    main()
