"""Benchmark: per-sample Fisher of the Part II DDPM UNet, vmap in chunks vs the per-sample loop.

    python benchmarks/fisher_ddpm.py [--samples 200] [--chunks 8 16 32] [--repeats 2]

Both methods see the same images, classes, timesteps and noise, so they must agree to float
rounding. Printed: seconds per 100 samples for the loop (the authors' method: one backward
pass per sample) and for ``torch.func.vmap`` per-sample gradients at several chunk sizes,
each one's speed-up over the loop, a plain batched forward+backward over the same samples
(the practical lower bound: it computes the gradient of the batch sum, not per-sample
squares), and the largest difference from the loop relative to the largest Fisher entry.
"""
from __future__ import annotations

import argparse
import warnings

import torch
from common import machine, timed

from sa_utils.adapters.ddpm import DDPMAdapter
from sa_utils.fisher import diagonal_fisher
from sa_utils.models.unet import MNIST_UNET, build_unet

warnings.filterwarnings("ignore", message=".*batching rule.*")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--chunks", type=int, nargs="+", default=[8, 16, 32])
    p.add_argument("--repeats", type=int, default=2, help="timed repeats of the fast methods (the loop runs once)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    torch.manual_seed(args.seed)
    adapter = DDPMAdapter(build_unet(MNIST_UNET).eval(), MNIST_UNET)
    g = torch.Generator().manual_seed(args.seed)
    x = torch.rand(args.samples, 1, 28, 28, generator=g)  # the cost does not depend on what the images show
    c = torch.randint(0, 11, (args.samples,), generator=g)
    batches = [{"x": x[i:i + 100], "c": c[i:i + 100]} for i in range(0, args.samples, 100)]
    n_params = sum(q.numel() for q in adapter.model.parameters())
    print(f"UNet2DModel with {n_params:,} parameters, {args.samples} samples, {machine()}")

    per100 = lambda t: 100 * t / args.samples
    t_loop, loop = timed(lambda: diagonal_fisher(adapter, batches, method="loop", seed=args.seed, progress=False), 1)
    scale = max(float(v.abs().max()) for v in loop.values.values())

    def plain():
        gen = torch.Generator().manual_seed(args.seed)
        for b in batches:
            adapter.model.zero_grad(set_to_none=True)
            adapter.loss(adapter.draw_noise(b, gen)).sum().backward()

    t_plain, _ = timed(plain, args.repeats)
    rows = [("per-sample loop (reference)", t_loop, 0.0)]
    for chunk in args.chunks:
        t, fast = timed(lambda: diagonal_fisher(adapter, batches, method="vmap", seed=args.seed, progress=False,
                                                vmap_chunk_size=chunk), args.repeats)
        diff = max(float((fast.values[k] - loop.values[k]).abs().max()) for k in loop.values) / scale
        rows.append((f"vmap, chunks of {chunk}", t, diff))
    print(f"{'method':<30}{'s / 100 samples':>16}{'vs loop':>9}{'vs plain':>10}{'max diff':>10}")
    for name, t, diff in rows:
        print(f"{name:<30}{per100(t):>16.2f}{t_loop / t:>8.1f}x{t / t_plain:>9.1f}x{diff:>10.1e}")
    print(f"{'plain batched fwd+bwd':<30}{per100(t_plain):>16.2f}{t_loop / t_plain:>8.1f}x{1.0:>9.1f}x{'-':>10}")
    print("max diff: largest |vmap - loop| over all entries, relative to the largest Fisher entry")


if __name__ == "__main__":
    main()
