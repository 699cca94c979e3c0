"""Peak memory of one SA step vs one fine-tuning step on Stable-Diffusion-shaped UNets.

    python benchmarks/sd_memory.py [--batch 2]

Measured with :class:`common.PeakTensorMemory` (bytes of live tensors, the same on a CPU and
a GPU) on the tiny UNet of Part III and on SD v1.4's UNet layout at reduced widths, with
the SA routine itself (``train_method full``). SD v1.4's own UNet is too large for this
machine; for it the table gives the exact sizes of the buffers SA adds (theta* and F, in
float32 or float16) from its parameter count, built on the meta device.
"""
from __future__ import annotations

import argparse
import warnings

import torch
from common import PeakTensorMemory, markdown_table
from sa_step import fisher_for, run_finetune, run_sa

warnings.filterwarnings("ignore")
GIB = 2**30


def adapter_for(unet_config: dict | None):
    from sa_utils.adapters.sd import StableDiffusionAdapter
    from sa_utils.tinyworld.pipeline import build_pipeline, build_unet_from_config

    pipe = build_pipeline(seed=0)
    if unet_config is not None:  # only the UNet is trained; the batches carry latents and embeddings
        torch.manual_seed(0)
        pipe.unet = build_unet_from_config(unet_config)
    return StableDiffusionAdapter(pipe, "full")


def batches(adapter, batch: int, steps: int):
    cfg = adapter.model.config
    g = torch.Generator().manual_seed(0)

    def one():
        return {"x": torch.randn(batch, 4, cfg.sample_size, cfg.sample_size, generator=g),
                "c": torch.randn(batch, 77, cfg.cross_attention_dim, generator=g)}
    return [one() for _ in range(steps)], [one() for _ in range(steps)]


def measure(name: str, unet_config: dict | None, batch: int, steps: int = 2) -> dict:
    out = {}
    for variant in ("finetune", "sa"):
        adapter = adapter_for(unet_config)
        forget, replay = batches(adapter, batch, steps)
        fisher = fisher_for(adapter)
        params = list(adapter.model.parameters())
        with PeakTensorMemory(*params, *(fisher.values.values() if variant == "sa" else [])) as mem:
            (run_sa(adapter, forget, replay, fisher, steps) if variant == "sa" else run_finetune(adapter, forget, replay, steps))
        out[variant] = mem.peak
    p = sum(q.numel() for q in params)
    return {"model": name, "params": p, "latent": adapter.model.config.sample_size, "batch": batch,
            "finetune_gib": out["finetune"] / GIB, "sa_gib": out["sa"] / GIB, "extra_gib": (out["sa"] - out["finetune"]) / GIB,
            "two_p_gib": 2 * 4 * p / GIB}


def main() -> None:
    from sa_utils.tinyworld.pipeline import build_unet_from_config, sd14_unet_config, sd_small_unet_config

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=2, help="forget and replay images per step (each)")
    args = p.parse_args()
    rows = [measure("tiny SD UNet (Part III)", None, args.batch),
            measure("SD v1.4 layout, width 32", sd_small_unet_config(32, 256, 16), args.batch),
            measure("SD v1.4 layout, width 64", sd_small_unet_config(64, 256, 16), args.batch)]
    n14 = sum(q.numel() for q in build_unet_from_config(sd14_unet_config(), "meta").parameters())
    header = ["UNet", "parameters", "latent", "batch", "fine-tune peak GiB", "SA peak GiB", "SA - fine-tune GiB",
              "2 x params (fp32) GiB"]
    table = [[r["model"], f"{r['params']:,}", f"{r['latent']}x{r['latent']}", r["batch"], f"{r['finetune_gib']:.3f}",
              f"{r['sa_gib']:.3f}", f"{r['extra_gib']:.3f}", f"{r['two_p_gib']:.3f}"] for r in rows]
    table.append(["SD v1.4 (exact sizes, not run here)", f"{n14:,}", "64x64", "-", "-", "-",
                  f"{2 * 4 * n14 / GIB:.2f} (fp32) / {2 * 2 * n14 / GIB:.2f} (fp16 θ*, F)", f"{2 * 4 * n14 / GIB:.2f}"])
    print(markdown_table(header, table))


if __name__ == "__main__":
    main()
