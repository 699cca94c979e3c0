"""Peak memory of one SA step vs one fine-tuning step on Stable-Diffusion-shaped UNets.

    python benchmarks/sd_memory.py [--batch 2]

Measured with :func:`sa_utils.recipes.sd_memory.sd_step_memory`, which counts the bytes of live
tensors (the same on a CPU and a GPU), on the tiny UNet of Part III and on SD v1.4's UNet layout at reduced widths, with
the SA routine itself (``train_method full``). SD v1.4's own UNet is too large for this
machine; for it the table gives the exact sizes of the buffers SA adds (theta* and F, in
float32 or float16) from its parameter count, built on the meta device.
"""

from __future__ import annotations

import argparse

import torch
from common import markdown_table

from sa_utils.eval.memory import sa_buffer_gib
from sa_utils.recipes.sd_memory import sd_step_memory


def measure(name: str, unet_config: dict | None, batch: int, steps: int = 2) -> dict:
    from tinyworld.pipeline import build_pipeline

    return {"model": name, **sd_step_memory(build_pipeline, unet_config, batch, steps)}


def main() -> None:
    from sa_utils.models.sd_configs import build_unet_from_config, sd14_unet_config, sd_small_unet_config

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=2, help="forget and replay images per step (each)")
    args = p.parse_args()
    rows = [
        measure("tiny SD UNet (Part III)", None, args.batch),
        measure("SD v1.4 layout, width 32", sd_small_unet_config(32, 256, 16), args.batch),
        measure("SD v1.4 layout, width 64", sd_small_unet_config(64, 256, 16), args.batch),
    ]
    n14 = sum(q.numel() for q in build_unet_from_config(sd14_unet_config(), "meta").parameters())
    header = [
        "UNet",
        "parameters",
        "latent",
        "batch",
        "fine-tune peak GiB",
        "SA peak GiB",
        "SA - fine-tune GiB",
        "2 x params (fp32) GiB",
    ]
    table = [
        [
            r["model"],
            f"{r['params']:,}",
            f"{r['latent']}x{r['latent']}",
            r["batch"],
            f"{r['finetune_gib']:.3f}",
            f"{r['sa_gib']:.3f}",
            f"{r['extra_gib']:.3f}",
            f"{r['theta_f_gib']:.3f}",
        ]
        for r in rows
    ]
    table.append(
        [
            "SD v1.4 (exact sizes, not run here)",
            f"{n14:,}",
            "64x64",
            "-",
            "-",
            "-",
            f"{sa_buffer_gib(n14):.2f} (fp32) / {sa_buffer_gib(n14, torch.float16):.2f} (fp16 θ*, F)",
            f"{sa_buffer_gib(n14):.2f}",
        ]
    )
    print(markdown_table(header, table))


if __name__ == "__main__":
    main()
