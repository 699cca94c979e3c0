"""SA against other erasure methods on the tiny world's celebrity task (chapter 8's quick mode).

    python benchmarks/erasure_compare.py [--esd-iterations 200] [--store]

The first report card of Part IV (issue 17), before its chapter: the pretrained tiny pipeline, SA
(chapter 8's run, ``train_method="full"``), UCE and ESD-x / ESD-u at the authors' defaults, each read
the way chapter 8 reads SA: the identity detector's rate on the forgotten identity's seen prompts and
paraphrases, the lowest rate of the other identities (on their seen prompts), the change on
unrelated prompts (1 = as far apart as two seeds), and the Frechet distance to held-out world scenes.
Rates come with 95 % Wilson intervals. Every run is cached like chapter 8's, so a second call only reads.
``--store`` writes ``benchmarks/results/erasure_compare.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import machine  # noqa: E402

from sa_utils.eval.metrics import rate_with_interval  # noqa: E402
from sa_utils.recipes import stable_diffusion as sd  # noqa: E402


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--esd-iterations", type=int, default=200, help="ESD iterations (the authors' default: 200)")
    p.add_argument("--methods", nargs="+", default=["sa", "uce", "esd-x", "esd-u"])
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="METHOD:KEY=VALUE,...",
        help="also run a method with other settings, e.g. 'uce:erase_scale=100' or 'esd-x:lr=1e-3' (repeatable)",
    )
    p.add_argument(
        "--relearn",
        type=int,
        nargs="*",
        default=[0, 10, 25, 50],
        help="relearning attack: the target's rate after these many fine-tuning steps (none: skip)",
    )
    p.add_argument("--store", action="store_true", help="write benchmarks/results/erasure_compare.json")
    args = p.parse_args(argv)
    r = sd.recipe("quick")
    task = sd.celebrity_task(r)
    pipe = sd.pretrained_pipeline(r)
    detect = sd.task_detectors(r, task)
    pipes, seconds, keys = {"base": pipe}, {}, {"base": "base"}
    runs = [(m, m, {}) for m in args.methods]
    for spec in args.variant:
        method, _, kv = spec.partition(":")
        settings = {
            k: float(v) if "." in v or "e" in v else int(v) for k, v in (s.split("=") for s in kv.split(",") if s)
        }
        runs.append((spec, method, settings))
    for label, method, settings in runs:
        start = time.perf_counter()
        if method == "sa":
            replay_dir = sd.replay_set(pipe, r)
            surrogate_dir = sd.surrogate_set(pipe, r, task.surrogate_prompt)
            fisher = sd.sd_fisher(pipe, r, replay_dir)
            run = sd.forget(r, task, surrogate_dir, replay_dir, fisher, "full")
        else:
            extra = {"iterations": args.esd_iterations} if method.startswith("esd") else {}
            run = sd.erase(r, task, method, **{**extra, **settings})
        # an erasure run records its own seconds; SA's: this call's (0 when its run was read from the cache)
        seconds[label] = run.results["seconds"] if method != "sa" else time.perf_counter() - start
        pipes[label], keys[label] = run.pipeline, run.key  # the key: the run's name in the image cache
    rates = sd.evaluate_task({keys[m]: p_ for m, p_ in pipes.items()}, r, task, detect)
    sizes = sd.set_sizes(r, task)
    names = [n for n in dict.fromkeys(task.readings.values())]
    target, others = task.target, [n for n in names if n != task.target]
    unrelated = {m: sd.images(p_, r, task.prompt_sets["unrelated"], keys[m]) for m, p_ in pipes.items()}
    rows, out = [], {}
    for m in pipes:
        k = keys[m]
        low = min(others, key=lambda n: rates[k][f"{n} | seen"])
        row = {
            "seen": rates[k][f"{target} | seen"],
            "paraphrases": rates[k][f"{target} | paraphrases"],
            "others_lowest": rates[k][f"{low} | seen"],
            "change": sd.image_change(unrelated["base"], unrelated[m], r.eval_per_prompt),
            "fd": sd.world_fd(pipes[m], r, k),
            "seconds": seconds.get(m, 0.0),
        }
        out[m] = row
        rows.append(
            [
                m,
                rate_with_interval(row["seen"], sizes[f"{target} | seen"]),
                rate_with_interval(row["paraphrases"], sizes[f"{target} | paraphrases"]),
                rate_with_interval(row["others_lowest"], sizes[f"{low} | seen"]),
                f"{row['change']:.2f}",
                f"{row['fd']:.3f}",
                f"{row['seconds']:.0f}",
            ]
        )
    header = [
        "method",
        f"{target}: seen",
        "paraphrases",
        "others: lowest",
        "change",
        "FD to the world",
        "s (method)",
    ]
    print(f"| {' | '.join(header)} |\n|{'---|' * len(header)}")
    for row in rows:
        print(f"| {' | '.join(str(c) for c in row)} |")
    if args.relearn:
        print(
            f"\nrelearning attack: {target}'s rate on its seen prompts after N steps of plain fine-tuning on "
            "images of it drawn by the pretrained model"
        )
        print("| method | " + " | ".join(f"N = {n}" for n in args.relearn) + " |\n|" + "---|" * (len(args.relearn) + 1))
        for m in pipes:
            curve = sd.relearn(r, task, pipes[m], keys[m], tuple(args.relearn), progress=False)
            out[m]["relearn"] = {str(k): v for k, v in curve.items()}
            print(f"| {m} | " + " | ".join(f"{curve[n]:.2f}" for n in args.relearn) + " |")
    res = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine(),
        "esd_iterations": args.esd_iterations,
        "task": {"target": target, "surrogate": task.surrogate_prompt},
        "results": out,
    }
    if args.store:
        (HERE / "results" / "erasure_compare.json").write_text(json.dumps(res, indent=2) + "\n")
    return res


if __name__ == "__main__":
    main()
