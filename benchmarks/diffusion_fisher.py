"""Benchmark 6: the diffusion Fisher, exact (the loss summed over all T timesteps per sample, squared).

    python benchmarks/diffusion_fisher.py [--samples 2] [--timesteps 1000]

Both columns compute the same quantity on the same samples with the same noise:
* the authors' algorithm (``ddpm/runners/diffusion.py`` ``save_fim``): one forward and backward
  pass per timestep, gradients added over ``t`` and squared
  (:func:`sa_utils.core.fisher.sq_grad_sum_timestep_loop`);
* the project's batched version: the noised copies of a sample in chunks of 125, one backward
  pass per chunk (:func:`sa_utils.core.fisher.sq_grad_sum_timesteps`).
Printed: seconds per sample for each, the ratio, and the largest disagreement (per tensor,
relative to its largest entry, floored at 1e-6 of the model's largest entry).
"""

from __future__ import annotations

import argparse
import warnings

import torch
from common import device, machine, print_table, timed

from sa_utils.core.fisher import TimestepSum, diagonal_fisher

warnings.filterwarnings("ignore", message=".*batching rule.*")
MODELS = ("ddpm", "sd")


def build(model: str, dev, n: int, timesteps: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    if model == "sd":
        from fisher import tiny_sd_adapter

        a = tiny_sd_adapter(dev)
        s = a.model.config.sample_size
        batch = {
            "x": torch.randn(n, 4, s, s, generator=g).to(dev),
            "c": torch.randn(n, 77, a.model.config.cross_attention_dim, generator=g).to(dev),
        }
    else:
        from sa_utils.adapters.ddpm import DDPMAdapter
        from sa_utils.models.unet import MNIST_UNET, build_unet

        a = DDPMAdapter(build_unet(MNIST_UNET).to(dev).eval(), MNIST_UNET)
        batch = {
            "x": torch.rand(n, 1, 28, 28, generator=g).to(dev),
            "c": torch.randint(0, 10, (n,), generator=g).to(dev),
        }
    if timesteps != a.num_train_timesteps:
        a.noise_scheduler = type(a.noise_scheduler).from_config(a.noise_scheduler.config, num_train_timesteps=timesteps)
        a._init_schedule()
    return a, batch


def bench(model: str, n: int = 2, timesteps: int = 1000, seed: int = 0) -> dict:
    dev = device()
    a, batch = build(model, dev, n, timesteps, seed)
    est = TimestepSum(chunk=125)
    one = {k: v[:1] for k, v in batch.items()}
    diagonal_fisher(a, [one], estimator=TimestepSum(k=8, chunk=8), progress=False)  # warm-up
    t_loop, loop = timed(lambda: diagonal_fisher(a, [batch], estimator=est, method="loop", seed=seed, progress=False))
    t_fast, fast = timed(lambda: diagonal_fisher(a, [batch], estimator=est, seed=seed, progress=False))
    floor = 1e-6 * max(float(v.abs().max()) for v in loop.values.values())
    diff = max(
        float((fast.values[k] - loop.values[k]).abs().max()) / max(float(loop.values[k].abs().max()), floor)
        for k in loop.values
    )
    return {
        "model": model,
        "params": sum(p.numel() for p in a.model.parameters()),
        "samples": n,
        "T": timesteps,
        "loop_s": t_loop / n,
        "batched_s": t_fast / n,
        "speedup": t_loop / t_fast,
        "max_rel_diff": diff,
    }


def table_rows(rows: list[dict]) -> tuple[list[str], list[list]]:
    header = [
        "model (parameters)",
        "T",
        "samples",
        "authors' loop s/sample",
        "batched s/sample",
        "speed-up",
        "max rel. diff",
    ]
    return header, [
        [
            f"{r['model']} ({r['params'] / 1e6:.2f}M)",
            r["T"],
            r["samples"],
            f"{r['loop_s']:.2f}",
            f"{r['batched_s']:.2f}",
            f"{r['speedup']:.1f}x",
            f"{r['max_rel_diff']:.1e}",
        ]
        for r in rows
    ]


def run(models=MODELS, samples: int = 2, timesteps: int = 1000) -> list[dict]:
    return [bench(m, samples, timesteps) for m in models]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--samples", type=int, default=2)
    p.add_argument("--timesteps", type=int, default=1000)
    args = p.parse_args()
    print_table(f"Exact diffusion Fisher, {machine()}", *table_rows(run(args.models, args.samples, args.timesteps)))


if __name__ == "__main__":
    main()
