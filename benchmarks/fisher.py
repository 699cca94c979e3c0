"""Benchmark 1: the project's diagonal Fisher vs the per-sample backward loop (the authors' method).

    python benchmarks/fisher.py [--models cvae ddpm] [--samples 1000] [--repeats 3]

For each model both methods see the same samples, conditions and loss noise, so they must
agree to float rounding. Printed per model: seconds per 1,000 samples of the loop, of the
project's method (CVAE: the exact linear-layer identity; the UNets: ``torch.func.vmap`` per-sample
gradients in chunks of 16) and of one plain batched forward+backward over the same samples
(the practical lower bound: it yields the gradient of the batch sum, not per-sample squares),
the speed-up over the loop, the ratio to the plain pass, and the largest difference from the
loop (per tensor, relative to that tensor's largest entry, or to 1e-6 of the model's largest
entry for a tensor whose Fisher is zero in exact arithmetic).
"""

from __future__ import annotations

import argparse
import warnings

import torch
from common import device, machine, print_table, timed

from sa_utils.core.fisher import diagonal_fisher

warnings.filterwarnings("ignore", message=".*batching rule.*")

MODELS = ("cvae", "ddpm", "sd")
METHOD = {
    "cvae": ("linear", "linear-layer identity"),
    "ddpm": ("vmap", "vmap, chunks of 16"),
    "sd": ("vmap", "vmap, chunks of 16"),
}


def build(model: str, dev: torch.device, n: int, seed: int = 0):
    """A freshly initialised model of the book's size and ``n`` samples in batches (cost does
    not depend on the weights or on what the images show)."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    if model == "cvae":
        from sa_utils.adapters import VAEAdapter
        from sa_utils.core.replay import model_samples
        from sa_utils.models import CVAE

        adapter = VAEAdapter(CVAE().to(dev).eval())
        return adapter, list(model_samples(adapter, range(10), n, 500, seed=seed))
    if model == "sd":  # the tiny SD-architecture UNet of Part III on latents and prompt embeddings
        adapter = tiny_sd_adapter(dev)
        z = torch.randn(n, 4, adapter.model.config.sample_size, adapter.model.config.sample_size, generator=g).to(dev)
        c = torch.randn(n, 77, adapter.model.config.cross_attention_dim, generator=g).to(dev)
        return adapter, [{"x": z[i : i + 100], "c": c[i : i + 100]} for i in range(0, n, 100)]
    from sa_utils.adapters.ddpm import DDPMAdapter
    from sa_utils.models.unet import MNIST_UNET, build_unet

    adapter = DDPMAdapter(build_unet(MNIST_UNET).to(dev).eval(), MNIST_UNET)
    x = torch.rand(n, 1, 28, 28, generator=g).to(dev)
    c = torch.randint(0, 11, (n,), generator=g).to(dev)
    return adapter, [{"x": x[i : i + 100], "c": c[i : i + 100]} for i in range(0, n, 100)]


def tiny_sd_adapter(dev: torch.device, seed: int = 0):
    """The book's tiny Stable Diffusion pipeline with random weights, all UNet weights trainable."""
    from sa_utils.adapters.sd import StableDiffusionAdapter
    from tinyworld.pipeline import build_pipeline

    return StableDiffusionAdapter(build_pipeline(seed=seed).to(dev), "full")


def plain_pass(adapter, batches, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for b in batches:
        adapter.model.zero_grad(set_to_none=True)
        adapter.loss(adapter.draw_noise(b, gen)).sum().backward()


def bench(model: str, n: int, repeats: int, seed: int = 0) -> dict:
    dev = device()
    adapter, batches = build(model, dev, n, seed)
    method, label = METHOD[model]
    kw = {"vmap_chunk_size": 16} if method == "vmap" else {}
    for m in ("loop", method):  # warm-up on one batch, so no method pays first-call costs in its timing
        diagonal_fisher(adapter, batches[:1], method=m, seed=seed, progress=False, **(kw if m == method else {}))
    plain_pass(adapter, batches[:1], seed)
    t_loop, loop = timed(lambda: diagonal_fisher(adapter, batches, method="loop", seed=seed, progress=False), 1)
    t_fast, fast = timed(
        lambda: diagonal_fisher(adapter, batches, method=method, seed=seed, progress=False, **kw), repeats
    )
    t_plain, _ = timed(lambda: plain_pass(adapter, batches, seed), repeats)
    # per tensor, relative to its largest entry; tensors whose Fisher is structurally zero (the
    # attention key bias: softmax ignores a shift shared by all keys) are measured against 1e-6
    # of the largest entry of the whole model instead of their own rounding noise
    floor = 1e-6 * max(float(v.abs().max()) for v in loop.values.values())
    diff = max(
        float((fast.values[k] - loop.values[k]).abs().max()) / max(float(loop.values[k].abs().max()), floor)
        for k in loop.values
    )
    per_k = 1000 / n
    return {
        "model": model,
        "params": sum(p.numel() for p in adapter.model.parameters()),
        "samples": n,
        "method": label,
        "loop_s": t_loop * per_k,
        "fast_s": t_fast * per_k,
        "plain_s": t_plain * per_k,
        "speedup": t_loop / t_fast,
        "vs_plain": t_fast / t_plain,
        "max_rel_diff": diff,
    }


def target(row: dict) -> tuple[str, bool | None]:
    """The issue's targets: CVAE >= 20x the loop and <= 3x a plain pass; UNets: report."""
    if row["model"] == "cvae":
        return ">= 20x loop, <= 3x plain", row["speedup"] >= 20 and row["vs_plain"] <= 3
    return "report (exact)", None


def table_rows(rows: list[dict]) -> tuple[list[str], list[list]]:
    header = [
        "model (parameters)",
        "project's method",
        "loop s/1k",
        "project s/1k",
        "plain s/1k",
        "vs loop",
        "vs plain",
        "max rel. diff",
        "target",
    ]
    out = []
    for r in rows:
        goal, ok = target(r)
        status = "" if ok is None else (": met" if ok else ": **missed**")
        out.append(
            [
                f"{r['model']} ({r['params'] / 1e6:.2f}M)",
                r["method"],
                f"{r['loop_s']:.2f}",
                f"{r['fast_s']:.3f}",
                f"{r['plain_s']:.3f}",
                f"{r['speedup']:.1f}x",
                f"{r['vs_plain']:.2f}x",
                f"{r['max_rel_diff']:.1e}",
                goal + status,
            ]
        )
    return header, out


def run(models=MODELS, samples: int = 1000, repeats: int = 3, ddpm_samples: int | None = None) -> list[dict]:
    rows = []
    for m in models:
        rows.append(bench(m, ddpm_samples if (m != "cvae" and ddpm_samples) else samples, repeats))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument(
        "--repeats", type=int, default=3, help="timed repeats of the fast methods (best of; the loop runs once)"
    )
    args = p.parse_args()
    rows = run(args.models, args.samples, args.repeats)
    print_table(f"Diagonal Fisher, {machine()}", *table_rows(rows))


if __name__ == "__main__":
    main()
