"""Benchmark 9: how many DDIM steps chapter 7's quick mode needs, measured on the shipped MNIST DDPM.

    python benchmarks/sampler_steps.py [--steps 25 15 10] [--per-class 30] [--seeds 0 1]

For each number of DDIM steps, the pretrained model draws ``--per-class`` guided samples of every
digit (the authors' guidance, w = 2) for each seed, and the independent classifier scores them as
chapter 7 does: accuracy on the digits 1-9, P(y=0) and entropy on the 0s, and the Frechet distance to
real test digits 1-9. The spread between seeds is the yardstick: a step count whose numbers differ
from 25 steps' by less than the seeds differ from each other changes nothing a chapter reports.
Writes ``benchmarks/results/sampler_steps.json``, shown in the Performance appendix.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if "SA_DATA_DIR" not in os.environ and (HERE.parents[1] / "shared" / "data" / "MNIST" / "raw").exists():
    os.environ["SA_DATA_DIR"] = str(HERE.parents[1] / "shared" / "data")


def run(steps=(25, 15, 10), per_class: int = 30, seeds=(0, 1)) -> list[dict]:
    from sa_utils.eval import metrics
    from sa_utils.recipes import mnist_ddpm

    r = mnist_ddpm.recipe("quick")
    base = mnist_ddpm.pretrained_ddpm(r, progress=False)
    clf = mnist_ddpm.pretrained_classifier(r, progress=False)
    real = mnist_ddpm.dataset(r.dataset, False)
    rows = []
    for k in steps:
        base.sample_steps = int(k)
        for seed in seeds:
            start = time.perf_counter()
            x, c = metrics.generate_per_class(base, range(10), per_class, seed, cache=False)
            sec = (time.perf_counter() - start) / len(c)
            e = metrics.evaluate_samples(x, c, clf, [0], 10, real)
            rows.append(
                {
                    "steps": int(k),
                    "seed": seed,
                    "s_per_image": sec,
                    "acc_remember": e["acc_remember"],
                    "p_forget": e["p_forget"],
                    "entropy_forget": e["entropy_forget"],
                    "fd_remember": e["fd_remember"],
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def table_rows(rows: list[dict]):
    header = ["DDIM steps", "seed", "s / guided image", "acc on 1-9", "P(y=0) on 0s", "entropy on 0s", "FD on 1-9"]
    return header, [
        [
            r["steps"],
            r["seed"],
            f"{r['s_per_image']:.3f}",
            f"{r['acc_remember']:.3f}",
            f"{r['p_forget']:.3f}",
            f"{r['entropy_forget']:.3f}",
            f"{r['fd_remember']:.2f}",
        ]
        for r in rows
    ]


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", nargs="+", type=int, default=[25, 15, 10])
    ap.add_argument("--per-class", type=int, default=30)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    a = ap.parse_args()
    import torch

    res = {
        "date": time.strftime("%Y-%m-%d"),
        "threads": torch.get_num_threads(),
        "per_class": a.per_class,
        "rows": run(a.steps, a.per_class, a.seeds),
    }
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "sampler_steps.json").write_text(json.dumps(res, indent=1) + "\n")
    sys.exit(0)
