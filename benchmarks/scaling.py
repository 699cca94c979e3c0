"""Benchmark 5: how the Fisher and the SA step scale with samples and with model size.

    python benchmarks/scaling.py [--plot scaling.png]

(a) Fisher seconds vs number of samples on the CVAE: per-sample loop, the project's method
    and a plain batched forward+backward; (b) Fisher seconds per 1,000 samples vs parameter
    count (the CVAE and the DDPM UNet at several widths); (c) milliseconds per SA step and per
    plain fine-tuning step vs parameter count. Every point is measured in this run.
"""

from __future__ import annotations

import argparse
import warnings

import fisher as fisher_bench
import sa_step
import torch
from common import device, machine, print_table, timed

from sa_utils.core.fisher import diagonal_fisher

warnings.filterwarnings("ignore", message=".*batching rule.*")

SIZES = {
    "full": {
        "samples": (500, 2000, 8000, 32000),
        "loop_max": 2000,
        "widths": {"cvae": (0.5, 1, 2, 4), "ddpm": (0.5, 1, 1.5)},
        "fisher_n": {"cvae": 500, "ddpm": 64},
        "steps": {"cvae": 10, "ddpm": 4},
        "repeats": 3,
    },
    "smoke": {
        "samples": (100, 200),
        "loop_max": 100,
        "widths": {"cvae": (0.25, 0.5), "ddpm": (0.25,)},
        "fisher_n": {"cvae": 50, "ddpm": 8},
        "steps": {"cvae": 2, "ddpm": 2},
        "repeats": 1,
    },
}


def fisher_vs_samples(sizes: dict) -> list[dict]:
    rows = []
    for n in sizes["samples"]:
        adapter, batches = fisher_bench.build("cvae", device(), n)
        t_fast, _ = timed(lambda: diagonal_fisher(adapter, batches, method="linear", progress=False), sizes["repeats"])
        t_plain, _ = timed(lambda: fisher_bench.plain_pass(adapter, batches, 0), sizes["repeats"])
        t_loop = None
        if n <= sizes["loop_max"]:
            t_loop, _ = timed(lambda: diagonal_fisher(adapter, batches, method="loop", progress=False), 1)
        rows.append({"samples": n, "loop_s": t_loop, "fast_s": t_fast, "plain_s": t_plain})
    return rows


def vs_params(sizes: dict) -> list[dict]:
    rows = []
    dev = device()
    for model, widths in sizes["widths"].items():
        method = fisher_bench.METHOD[model][0]
        for w in widths:
            adapter, shape = sa_step.build(model, dev, w)
            n = sizes["fisher_n"][model]
            if model == "cvae":
                from sa_utils.core.replay import model_samples

                batches = list(model_samples(adapter, range(10), n, 500, seed=0))
            else:
                g = torch.Generator().manual_seed(0)
                batches = [
                    {
                        "x": torch.rand(n, *shape, generator=g).to(dev),
                        "c": torch.randint(0, 11, (n,), generator=g).to(dev),
                    }
                ]
            t_loop, _ = timed(lambda: diagonal_fisher(adapter, batches, method="loop", progress=False), 1)
            t_fast, _ = timed(
                lambda: diagonal_fisher(adapter, batches, method=method, progress=False), sizes["repeats"]
            )
            steps = sa_step.step_times(model, sizes["steps"][model], sizes["repeats"], width=w)
            rows.append(
                {
                    "model": model,
                    "width": w,
                    "params": steps["params"],
                    "fisher_loop_s_per_1k": 1000 * t_loop / n,
                    "fisher_fast_s_per_1k": 1000 * t_fast / n,
                    "finetune_ms": steps["finetune_ms"],
                    "sa_ms": steps["sa_ms"],
                }
            )
    return rows


def run(smoke: bool = False) -> dict:
    sizes = SIZES["smoke" if smoke else "full"]
    return {"samples": fisher_vs_samples(sizes), "params": vs_params(sizes)}


def table_rows(res: dict):
    h1 = ["samples", "loop s", "project s", "plain s"]
    r1 = [
        [
            f"{r['samples']:,}",
            "-" if r["loop_s"] is None else f"{r['loop_s']:.2f}",
            f"{r['fast_s']:.3f}",
            f"{r['plain_s']:.3f}",
        ]
        for r in res["samples"]
    ]
    h2 = [
        "model",
        "width",
        "parameters",
        "Fisher loop s/1k",
        "Fisher project s/1k",
        "fine-tune ms/step",
        "SA ms/step",
        "SA/fine-tune",
    ]
    r2 = [
        [
            r["model"],
            f"{r['width']:g}x",
            f"{r['params']:,}",
            f"{r['fisher_loop_s_per_1k']:.2f}",
            f"{r['fisher_fast_s_per_1k']:.3f}",
            f"{r['finetune_ms']:.1f}",
            f"{r['sa_ms']:.1f}",
            f"{r['sa_ms'] / r['finetune_ms']:.2f}",
        ]
        for r in res["params"]
    ]
    return (h1, r1), (h2, r2)


def plot(res: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # a script, not a notebook
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(13, 3.8))
    s = res["samples"]
    loops = [r for r in s if r["loop_s"] is not None]
    ax[0].loglog([r["samples"] for r in loops], [r["loop_s"] for r in loops], "o-", label="per-sample loop")
    ax[0].loglog([r["samples"] for r in s], [r["fast_s"] for r in s], "s-", label="project (linear identity)")
    ax[0].loglog([r["samples"] for r in s], [r["plain_s"] for r in s], "^--", label="plain fwd+bwd")
    ax[0].set(xlabel="samples", ylabel="seconds", title="(a) CVAE Fisher vs samples")
    for model, marker in (("cvae", "o"), ("ddpm", "s")):
        rows = [r for r in res["params"] if r["model"] == model]
        p = [r["params"] for r in rows]
        ax[1].loglog(p, [r["fisher_loop_s_per_1k"] for r in rows], marker + "--", label=f"{model}: loop")
        ax[1].loglog(p, [r["fisher_fast_s_per_1k"] for r in rows], marker + "-", label=f"{model}: project")
        ax[2].loglog(p, [r["finetune_ms"] for r in rows], marker + "--", label=f"{model}: fine-tune")
        ax[2].loglog(p, [r["sa_ms"] for r in rows], marker + "-", label=f"{model}: SA")
    ax[1].set(xlabel="parameters", ylabel="seconds per 1,000 samples", title="(b) Fisher vs model size")
    ax[2].set(xlabel="parameters", ylabel="ms per step", title="(c) training step vs model size")
    from matplotlib.ticker import NullFormatter

    for a in ax:
        a.xaxis.set_minor_formatter(NullFormatter())  # decade labels only: minor labels overlap
        a.legend(fontsize=8)
        a.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="toy sizes (checks the script, not the machine)")
    p.add_argument("--plot", help="write the figure to this PNG")
    args = p.parse_args()
    res = run(args.smoke)
    (h1, r1), (h2, r2) = table_rows(res)
    print_table(f"Fisher vs samples (CVAE), {machine()}", h1, r1)
    print_table("Fisher and training step vs parameters", h2, r2)
    if args.plot:
        plot(res, args.plot)


if __name__ == "__main__":
    main()
