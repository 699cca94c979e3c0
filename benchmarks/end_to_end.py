"""Benchmark 3: the VAE chapter's full-mode pipeline, end to end, wall time per stage.

    python benchmarks/end_to_end.py [--mode full] [--json benchmarks/results/end_to_end.json]

Runs what chapter 5 runs in full mode (the authors' settings), in a fresh, empty cache so
that every stage really trains: the CVAE (40 epochs), the evaluation classifier (10 epochs),
the diagonal Fisher over 50,000 model samples, 10,000 SA steps forgetting digit 0, and the
evaluation on 1,000 samples per digit. Needs MNIST in ``$SA_DATA_DIR``. ``--mode smoke`` runs
the same stages at toy size (CI checks that the script works, not how fast it is).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import tempfile
import time
from pathlib import Path

from common import machine, print_table

STAGES = ("train CVAE", "train classifier", "Fisher", "SA", "evaluation")


def run(mode: str = "full") -> dict:
    with tempfile.TemporaryDirectory(prefix="sa-e2e-") as tmp:
        old = os.environ.get("SA_CACHE_DIR")
        os.environ["SA_CACHE_DIR"] = tmp
        try:
            return _pipeline(mode)
        finally:
            if old is None:
                os.environ.pop("SA_CACHE_DIR")
            else:
                os.environ["SA_CACHE_DIR"] = old


def _pipeline(mode: str) -> dict:
    from sa_utils.eval import metrics
    from sa_utils.recipes import mnist_vae

    if mode == "smoke":
        r = mnist_vae.recipe(
            "quick", cvae_epochs=1, classifier_epochs=1, fisher_samples=1000, sa_steps=20, eval_per_class=20
        )
    else:
        r = mnist_vae.recipe(mode)
    seconds, start = {}, time.perf_counter()

    def lap(name, fn):
        t = time.perf_counter()
        out = fn()
        seconds[name] = time.perf_counter() - t
        return out

    base = lap("train CVAE", lambda: mnist_vae.pretrained_cvae(r))
    clf = lap("train classifier", lambda: mnist_vae.pretrained_classifier(r))
    fisher = lap("Fisher", lambda: mnist_vae.mnist_fisher(base, r))
    student, _ = lap("SA", lambda: mnist_vae.forget_digits(base, r, 0, fisher=fisher))
    result = lap(
        "evaluation",
        lambda: metrics.evaluate_forgetting(
            student, clf, 0, n_per_class=r.eval_per_class, real=mnist_vae.mnist(False), progress=True
        ),
    )
    return {
        "mode": mode,
        "seconds": seconds,
        "total_s": time.perf_counter() - start,
        "settings": {
            "cvae_epochs": r.cvae_epochs,
            "classifier_epochs": r.classifier_epochs,
            "fisher_samples": r.fisher_samples,
            "sa_steps": r.sa_steps,
            "sa_batch": r.sa_batch,
            "eval_per_class": r.eval_per_class,
        },
        "metrics": {k: result[k] for k in ("entropy_forget", "p_forget", "acc_remember")},
        "machine": machine(),
        "date": datetime.date.today().isoformat(),
    }


def table_rows(res: dict):
    header = ["stage", "seconds"]
    rows = [[s, f"{res['seconds'][s]:.0f}"] for s in STAGES]
    ok = res["total_s"] <= 600
    rows.append([f"**total** (target <= 600 s: {'met' if ok else '**missed**'})", f"{res['total_s']:.0f}"])
    return header, rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", default="full", choices=["full", "quick", "smoke"])
    p.add_argument("--json", type=Path, help="write the result to this JSON file")
    args = p.parse_args()
    res = run(args.mode)
    print_table(f"VAE pipeline end to end ({args.mode} mode), {res['machine']}", *table_rows(res))
    print("after SA:", ", ".join(f"{k}={v:.3f}" for k, v in res["metrics"].items()))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
