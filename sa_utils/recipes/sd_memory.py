"""What one Selective Amnesia step holds in memory on a Stable-Diffusion-shaped UNet, against one
plain fine-tuning step on the same batches (chapter 8's memory table, ``benchmarks/sd_memory.py``).
The meter is :class:`sa_utils.eval.memory.PeakTensorMemory`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from sa_utils.adapters.sd import StableDiffusionAdapter
from sa_utils.core.amnesia import SAConfig, adam_options, selective_amnesia
from sa_utils.core.fisher import DiagonalFisher
from sa_utils.eval.memory import GIB, PeakTensorMemory, sa_buffer_gib
from sa_utils.models.sd_configs import build_unet_from_config
from sa_utils.runtime import step_generator


def finetune_steps(adapter, forget: list, replay: list, steps: int, lr: float = 1e-4, fused: bool = True) -> None:
    """The baseline SA is measured against: plain Adam steps on the same forget and replay
    batches, with the same noise draws, and no EWC (and the same Adam kernel as ``SAConfig(fused=)``)."""
    params = list(adapter.trainable_parameters().values())
    opt = torch.optim.Adam(params, lr=lr, **adam_options(params, fused))
    adapter.model.train()
    for step in range(steps):
        g = step_generator(104729, step)
        opt.zero_grad(set_to_none=True)
        loss = (
            adapter.loss(adapter.draw_noise(forget[step], g)).sum()
            + adapter.loss(adapter.draw_noise(replay[step], g)).sum()
        )
        loss.backward()
        opt.step()


def random_fisher(params: dict[str, torch.nn.Parameter]):
    """A stand-in Fisher (uniform random entries, seeded) for memory and speed measurements."""
    g = torch.Generator().manual_seed(2)
    return DiagonalFisher({n: torch.rand(p.shape, generator=g).to(p.device) for n, p in params.items()}, 1)


def sd_step_memory(
    build_pipeline: Callable[..., Any],
    unet_config: dict | None = None,
    batch: int = 2,
    steps: int = 2,
    seed: int = 0,
    ewc_dtype: str | None = None,
) -> dict[str, Any]:
    """Peak live-tensor GiB of ``steps`` SA steps and of as many plain fine-tuning steps (the
        same forget and replay batches, Adam, all UNet weights) on a UNet built from ``unet_config``
        (``None``: the UNet of ``build_pipeline(seed=seed)``, a function that builds a pipeline with random
    weights, e.g. :func:`tinyworld.pipeline.build_pipeline`); batches hold random latents and
        77-token prompt embeddings, as the SA routine sees them. ``ewc_dtype="float16"`` keeps theta*
        and F in half precision (the routine's ``SAConfig.ewc_dtype``)."""

    def adapter():
        pipe = build_pipeline(seed=seed)
        if unet_config is not None:  # only the UNet is trained
            torch.manual_seed(seed)
            pipe.unet = build_unet_from_config(unet_config)
        return StableDiffusionAdapter(pipe, "full")

    def batches(a):
        cfg, g = a.model.config, torch.Generator().manual_seed(seed)
        one = lambda: {
            "x": torch.randn(batch, 4, cfg.sample_size, cfg.sample_size, generator=g),  # noqa: E731
            "c": torch.randn(batch, 77, cfg.cross_attention_dim, generator=g),
        }
        return [one() for _ in range(steps)], [one() for _ in range(steps)]

    peaks = {}
    for variant in ("finetune", "sa"):
        a = adapter()
        forget, replay = batches(a)
        fisher = random_fisher(a.trainable_parameters())
        if ewc_dtype is not None:  # hand F over in half precision, as the SA command does
            fisher = fisher.to("cpu", getattr(torch, ewc_dtype))
        params = list(a.model.parameters())
        with PeakTensorMemory(*params, *(fisher.values.values() if variant == "sa" else [])) as mem:
            if variant == "sa":
                cfg = SAConfig(
                    lmbda=10.0, gamma=1.0, steps=steps, lr=1e-4, checkpoint_every=0, log_every=10, ewc_dtype=ewc_dtype
                )
                selective_amnesia(a, forget.__getitem__, replay.__getitem__, fisher, cfg, progress=False)
            else:
                finetune_steps(a, forget, replay, steps)
        peaks[variant] = mem.peak / GIB
    n = sum(q.numel() for q in params)
    return {
        "params": n,
        "latent": a.model.config.sample_size,
        "batch": batch,
        "finetune_gib": peaks["finetune"],
        "sa_gib": peaks["sa"],
        "extra_gib": peaks["sa"] - peaks["finetune"],
        "theta_f_gib": sa_buffer_gib(n, getattr(torch, ewc_dtype or "float32")),
    }
