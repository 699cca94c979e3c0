"""Measuring what a training step holds in memory, the same way on a CPU and a GPU.

:class:`PeakTensorMemory` counts the bytes of every live tensor storage while it is active.
:func:`sd_step_memory` uses it to compare one Selective Amnesia step with one plain
fine-tuning step on a Stable-Diffusion-shaped UNet (chapter 8's memory table;
``benchmarks/sd_memory.py`` prints the same rows), and :func:`sa_buffer_gib` gives the exact
size of what SA adds for a model too large to run here (theta* and F).
"""
from __future__ import annotations

import weakref
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

GIB = 2**30


class PeakTensorMemory(TorchDispatchMode):
    """Peak bytes held by live tensors while the context is active, on any device.

    Every tensor an operation returns is counted once per storage until that storage is freed
    (a weak-reference callback), plus the ``external`` tensors that existed before (parameters,
    the Fisher). Allocator caching, the interpreter and torch's own buffers are not counted,
    so the figure is the same on a CPU and a GPU and compares two training steps exactly.
    """

    def __init__(self, *external: torch.Tensor):
        super().__init__()
        self.current = 0
        self.peak = 0
        self._seen: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        for t in external:
            self._add(t)

    def _add(self, t: Any) -> None:
        if not isinstance(t, torch.Tensor) or t.is_meta:
            return
        st = t.untyped_storage()
        if st in self._seen:
            return
        n = st.nbytes()
        self._seen[st] = n
        self.current += n
        self.peak = max(self.peak, self.current)
        weakref.finalize(st, self._free, n)

    def _free(self, n: int) -> None:
        self.current -= n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            self._add(t)
        return out


def sa_buffer_gib(n_params: int, dtype: torch.dtype = torch.float32) -> float:
    """GiB of the two parameter-sized buffers SA holds beyond fine-tuning: theta* and F."""
    return 2 * n_params * torch.empty((), dtype=dtype).element_size() / GIB


def finetune_static_gib(n_params: int) -> float:
    """GiB of weights, gradients and Adam's two moments in float32 (activations not included)."""
    return 4 * n_params * 4 / GIB


def finetune_steps(adapter, forget: list, replay: list, steps: int, lr: float = 1e-4, fused: bool = True) -> None:
    """The baseline SA is measured against: plain Adam steps on the same forget and replay
    batches, with the same noise draws, and no EWC (and the same Adam kernel as ``SAConfig(fused=)``)."""
    from .amnesia import adam_options
    from .runtime import step_generator

    params = list(adapter.trainable_parameters().values())
    opt = torch.optim.Adam(params, lr=lr, **adam_options(params, fused))
    adapter.model.train()
    for step in range(steps):
        g = step_generator(104729, step)
        opt.zero_grad(set_to_none=True)
        loss = (adapter.loss(adapter.draw_noise(forget[step], g)).sum()
                + adapter.loss(adapter.draw_noise(replay[step], g)).sum())
        loss.backward()
        opt.step()


def random_fisher(params: dict[str, torch.nn.Parameter]):
    """A stand-in Fisher (uniform random entries, seeded) for memory and speed measurements."""
    from .fisher import DiagonalFisher

    g = torch.Generator().manual_seed(2)
    return DiagonalFisher({n: torch.rand(p.shape, generator=g).to(p.device) for n, p in params.items()}, 1)


def sd_step_memory(unet_config: dict | None = None, batch: int = 2, steps: int = 2, seed: int = 0,
                   ewc_dtype: str | None = None) -> dict[str, Any]:
    """Peak live-tensor GiB of ``steps`` SA steps and of as many plain fine-tuning steps (the
    same forget and replay batches, Adam, all UNet weights) on a UNet built from ``unet_config``
    (``None``: the tiny Part III UNet) with random weights; batches hold random latents and
    77-token prompt embeddings, as the SA routine sees them. ``ewc_dtype="float16"`` keeps theta*
    and F in half precision (the routine's ``SAConfig.ewc_dtype``)."""
    from .adapters.sd import StableDiffusionAdapter
    from .amnesia import SAConfig, selective_amnesia
    from .tinyworld.pipeline import build_pipeline, build_unet_from_config

    def adapter():
        pipe = build_pipeline(seed=seed)
        if unet_config is not None:  # only the UNet is trained
            torch.manual_seed(seed)
            pipe.unet = build_unet_from_config(unet_config)
        return StableDiffusionAdapter(pipe, "full")

    def batches(a):
        cfg, g = a.model.config, torch.Generator().manual_seed(seed)
        one = lambda: {"x": torch.randn(batch, 4, cfg.sample_size, cfg.sample_size, generator=g),  # noqa: E731
                       "c": torch.randn(batch, 77, cfg.cross_attention_dim, generator=g)}
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
                cfg = SAConfig(lmbda=10.0, gamma=1.0, steps=steps, lr=1e-4, checkpoint_every=0, log_every=10,
                               ewc_dtype=ewc_dtype)
                selective_amnesia(a, lambda s: forget[s], lambda s: replay[s], fisher, cfg, progress=False)
            else:
                finetune_steps(a, forget, replay, steps)
        peaks[variant] = mem.peak / GIB
    n = sum(q.numel() for q in params)
    return {"params": n, "latent": a.model.config.sample_size, "batch": batch, "finetune_gib": peaks["finetune"],
            "sa_gib": peaks["sa"], "extra_gib": peaks["sa"] - peaks["finetune"], "theta_f_gib": sa_buffer_gib(n, getattr(torch, ewc_dtype or "float32"))}
