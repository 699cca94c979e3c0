"""Time every chapter cold and warm, and each stage (code cell) inside it; write the Performance table.

    python tools/timing.py                    # cold (empty cache) then warm (same cache), quick mode
    python tools/timing.py --only 07_         # chapters whose name contains 07_ (their parts' order kept)
    python tools/timing.py --cold-only        # skip the warm pass
    python tools/timing.py --record-last      # no run: record the times of the last execution (_build/timings.json)

*Cold* executes the chapters in an empty cache (``_build/timing-cache``, deleted first), as a clean
clone does; *warm* executes them again in the same cache, as a second ``make book`` would without
``--reuse``: trained models, Fisher files, SA runs and diffusion samples are then loaded. Both run as
``make book`` does (``--jobs`` lanes, default one), so the times are those a reader sees.
A stage is one code cell; papermill records its seconds. The machine's load average before and after
each pass is stored with the times, because these 2-core machines are shared and differ by up to 2x.

Writes ``benchmarks/results/chapter_times.json`` and re-renders ``book/appendix/performance.md``
(section 7) from the stored results.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import book  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "chapter_times.json"
CACHE = ROOT / "_build" / "timing-cache"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    return f"{os.cpu_count()} CPU cores, {cpu}, {platform.python_implementation()} {platform.python_version()}"


def snapshot(notebooks: list[Path]) -> dict:
    data = json.loads(book.TIMINGS.read_text()) if book.TIMINGS.exists() else {}
    return {nb.stem: data[nb.stem] for nb in notebooks if nb.stem in data}


def one_pass(notebooks: list[Path], jobs: int) -> dict:
    load = os.getloadavg()
    start = time.perf_counter()
    failed = book.run(notebooks, "quick", jobs=jobs)
    if failed:
        sys.exit("chapters failed:\n" + "\n".join(f"  {k}: {v}" for k, v in failed.items()))
    return {
        "wall_seconds": round(time.perf_counter() - start, 1),
        "load_before": [round(x, 2) for x in load],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "chapters": snapshot(notebooks),
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=None, help="time only chapters whose file name contains this text")
    p.add_argument("--jobs", type=int, default=None, help="lanes (default: as tools/book.py)")
    p.add_argument("--cold-only", action="store_true", help="skip the warm pass")
    p.add_argument(
        "--record-last",
        action="store_true",
        help="measure nothing: store the times of the last execution (e.g. a CI run) as the cold pass",
    )
    args = p.parse_args(argv)
    notebooks = [nb for nb in book.chapters() if not args.only or args.only in nb.name]
    if not notebooks:
        p.error(f"--only {args.only!r} matches no chapter")
    jobs = args.jobs if args.jobs is not None else book.default_jobs("quick")
    res = {"date": datetime.date.today().isoformat(), "machine": machine(), "jobs": jobs}
    if args.record_last:
        res["cold"] = {
            "wall_seconds": None,
            "load_before": None,
            "load_after": None,
            "chapters": snapshot(notebooks),
            "note": "recorded from _build/timings.json (the last execution), not run by this command",
        }
    else:
        shutil.rmtree(CACHE, ignore_errors=True)
        os.environ["SA_CACHE_DIR"] = str(CACHE)
        res["cold"] = one_pass(notebooks, jobs)
        if not args.cold_only:
            res["warm"] = one_pass(notebooks, jobs)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(res, indent=1) + "\n")
    print(
        json.dumps(
            {k: {c: v["seconds"] for c, v in res[k]["chapters"].items()} for k in ("cold", "warm") if k in res},
            indent=1,
        )
    )
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--render-only"], check=True)


if __name__ == "__main__":
    main()
