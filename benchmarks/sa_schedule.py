"""Benchmark 10: how many SA steps the short schedule of Part I's quick mode needs.

Chapters 4-6 run their ablations, the lambda sweep and the demo on the recipe's short schedule
(``schedule="short"``: 1,500 steps at learning rate 1e-3 in quick mode, the same as its main run).
Session 9 measured whether 750 would do (it would have saved about two minutes of CI).

    python benchmarks/sa_schedule.py [--steps 1500 750] [--seeds 0 1]

For each number of steps (at the quick recipe's learning rate 1e-3, batch 128), the four arms of
chapter 5's ablation forget the digit 0 with the uniform-noise surrogate: surrogate only,
surrogate + EWC, surrogate + replay, full SA. Each forgotten model is scored as chapter 5 scores it
(500 samples per digit) with every evaluation seed. The spread between evaluation seeds is the
yardstick: a step count whose numbers differ from 1,500 steps' by less than the seeds differ from
each other changes nothing chapter 5 reports. SA runs come from (and go to) the cache, so after a
`make book` only the runs of step counts the book does not use are trained.
Writes ``benchmarks/results/sa_schedule.json``, shown in the Performance appendix.
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

ARMS = {
    "surrogate only": dict(lmbda=0.0, gamma=0.0),
    "surrogate + EWC": dict(gamma=0.0),
    "surrogate + replay": dict(lmbda=0.0),
    "full SA": dict(),
}
METRICS = ("entropy_forget", "p_forget", "acc_remember", "fd_remember")


def run(steps=(1500, 750), seeds=(0, 1)) -> list[dict]:
    from sa_utils.eval import metrics
    from sa_utils.recipes import mnist_vae

    rows = []
    for k in steps:
        # exactly the run chapter 5's ablation makes with a short schedule of k steps (and finds in the cache)
        r = mnist_vae.recipe("quick", short_steps=int(k))
        base = mnist_vae.pretrained_cvae(r, progress=False)
        clf = mnist_vae.pretrained_classifier(r, progress=False)
        real = mnist_vae.mnist(False)
        for arm, kw in ARMS.items():
            model, _ = mnist_vae.forget_digits(base, r, 0, progress=True, schedule="short", **kw)
            for seed in seeds:
                e = metrics.evaluate_forgetting(
                    model, clf, forget=[0], n_per_class=r.eval_per_class, seed=seed, real=real
                )
                rows.append({"steps": int(k), "arm": arm, "seed": seed, **{m: e[m] for m in METRICS}})
                print(json.dumps(rows[-1]), flush=True)
    return rows


def table_rows(rows: list[dict]):
    header = ["SA steps", "arm", "eval seed", "entropy on 0s", "P(y=0)", "acc on 1-9", "FD on 1-9"]
    return header, [
        [
            r["steps"],
            r["arm"],
            r["seed"],
            f"{r['entropy_forget']:.3f}",
            f"{r['p_forget']:.3f}",
            f"{r['acc_remember']:.3f}",
            f"{r['fd_remember']:.2f}",
        ]
        for r in rows
    ]


def verdict(rows: list[dict]) -> list[str]:
    """For each arm and metric: the largest same-seed difference from the longest schedule, next to the
    evaluation seeds' own spread there."""
    ref_steps = max(r["steps"] for r in rows)
    out = []
    for arm in dict.fromkeys(r["arm"] for r in rows):
        ref = {r["seed"]: r for r in rows if r["steps"] == ref_steps and r["arm"] == arm}
        parts = []
        for m in METRICS:
            spread = max(r[m] for r in ref.values()) - min(r[m] for r in ref.values())
            for k in sorted({r["steps"] for r in rows} - {ref_steps}):
                d = max(
                    abs(r[m] - ref[r["seed"]][m])
                    for r in rows
                    if r["steps"] == k and r["arm"] == arm and r["seed"] in ref
                )
                shown = f"{d:.3f} vs spread {spread:.3f}"
                # outside only when the difference exceeds the spread by more than the printed precision
                outside = d > spread + 0.0005
                parts.append(f"{m} {shown}" + (" (**outside**)" if outside else ""))
        out.append(
            f"- {arm}: largest difference from {ref_steps} steps at the same evaluation seed: " + "; ".join(parts) + "."
        )
    return out + [""]


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", nargs="+", type=int, default=[1500, 750])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    a = ap.parse_args()
    import torch

    res = {"date": time.strftime("%Y-%m-%d"), "threads": torch.get_num_threads(), "rows": run(a.steps, a.seeds)}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "sa_schedule.json").write_text(json.dumps(res, indent=1) + "\n")
    print("\n".join(verdict(res["rows"])))
    sys.exit(0)
