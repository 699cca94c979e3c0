"""Benchmark 8: are two chapters at once, one torch thread each, faster than one after the other on all cores?

    python benchmarks/lanes.py [--work ddpm cvae] [--steps 6]

``tools/book.py --jobs 2`` runs two parts of the book at once, each with ``cpus // 2`` threads. That
pays only if the chapters' work does not scale to all cores inside one process. This measures it on
the work the chapters do, for each kind of work:

* ``sequential``: the work twice, one process after the other, each with all torch threads;
* ``parallel``: the same two processes at the same time, each with ``cpus // 2`` threads.

Each worker is a fresh process (``--worker``) and reports the seconds of its work alone (after
imports and a warm-up step), so process start-up, which lanes also overlap, is not counted. The ratio
sequential / parallel above 1 means lanes save compute time. ``ddpm`` is SA steps on the MNIST UNet
(batch 16 + 16, as chapter 7's quick mode) and guided sampling; ``cvae`` is SA steps of the CVAE
(batch 128 + 128, as Part I's quick mode). Writes ``benchmarks/results/lanes.json``, shown in the
Performance appendix.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def worker(kind: str, steps: int) -> float:
    """Seconds of one unit of ``kind`` work in this process (after a warm-up step)."""
    import torch

    sys.path.insert(0, str(HERE))
    from sa_step import build, fisher_for, make_batches, run_sa

    batch = {"ddpm": 16, "cvae": 128}[kind]
    adapter, shape = build(kind, torch.device("cpu"))
    forget, replay = make_batches(shape, steps + 1, batch, torch.device("cpu"))
    fisher = fisher_for(adapter)
    run_sa(adapter, forget[:1], replay[:1], fisher, 1)
    start = time.perf_counter()
    run_sa(adapter, forget, replay, fisher, steps)
    if kind == "ddpm":  # guided DDIM sampling, as in the pool and the evaluations
        adapter.sample(torch.arange(8) % 10, torch.Generator().manual_seed(0), steps=10)
    return time.perf_counter() - start


def _spawn(kind: str, steps: int, threads: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    return subprocess.Popen(
        [sys.executable, __file__, "--worker", kind, "--steps", str(steps)], env=env, stdout=subprocess.PIPE, text=True
    )


def _seconds(p: subprocess.Popen) -> float:
    out, _ = p.communicate()
    if p.returncode != 0:
        raise RuntimeError(f"benchmark worker failed (exit {p.returncode})")
    return float(out.strip().splitlines()[-1])


def measure(kind: str, steps: int) -> dict:
    cpus = os.cpu_count() or 1
    sequential = sum(_seconds(_spawn(kind, steps, cpus)) for _ in range(2))
    procs = [_spawn(kind, steps, max(1, cpus // 2)) for _ in range(2)]
    parallel = max(_seconds(p) for p in procs)  # both start together; the pair is done when the slower is
    return {
        "work": kind,
        "steps": steps,
        "cpus": cpus,
        "sequential_s": sequential,
        "parallel_s": parallel,
        "ratio": sequential / parallel,
    }


def run(kinds=("ddpm", "cvae"), steps: int = 6) -> list[dict]:
    return [measure(k, steps if k == "ddpm" else steps * 20) for k in kinds]


def table_rows(rows: list[dict]):
    header = [
        "work",
        "two runs one after the other, all threads (s)",
        "two runs at once, cpus/2 threads each (s)",
        "ratio (> 1: lanes save time)",
    ]
    return header, [
        [r["work"], f"{r['sequential_s']:.1f}", f"{r['parallel_s']:.1f}", f"{r['ratio']:.2f}"] for r in rows
    ]


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", nargs="+", default=["ddpm", "cvae"])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print(worker(a.worker, a.steps))
    else:
        res = {"date": time.strftime("%Y-%m-%d"), "rows": run(a.work, a.steps)}
        (HERE / "results").mkdir(exist_ok=True)
        (HERE / "results" / "lanes.json").write_text(json.dumps(res, indent=1) + "\n")
        print(json.dumps(res, indent=1))
