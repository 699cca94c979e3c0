"""Adapter for Stable Diffusion pipelines (Part III): SA trains the UNet, everything else is frozen.

Stable Diffusion is a conditional latent diffusion model: a frozen autoencoder (VAE) maps an
image to latents ``z``, a frozen text encoder maps a prompt to embeddings ``c``, and the UNet
``eps_theta(z_t, t, c)`` is trained with the same noise-prediction loss as the DDPM of
chapter 7, one Monte-Carlo term of a negative ELBO. So SA needs nothing new: the adapter
works on *latents and prompt embeddings* (computed once, :meth:`encode_images` and
:meth:`encode_prompts`), and the Fisher, EWC, replay and the training routine of Part I
apply unchanged.

Batches are ``{"x": latents [B, 4, h, w] (already scaled by the VAE's scaling factor),
"c": prompt embeddings [B, L, D]}``. Any diffusers ``StableDiffusionPipeline`` works: SD v1.x
from the hub, a local folder in the diffusers format, or the book's tiny model.

``train_method`` chooses which UNet weights SA may change, as in the SA and ESD papers:
``"full"`` (all; the celebrity experiment), ``"xattn"`` (only the cross-attention layers,
``attn2``, which read the prompt) and ``"noxattn"`` (all but the cross-attention layers, the time
embedding and the output block, as the authors and ESD; the nudity experiment, because nudity also
appears under prompts that do not name it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from sa_utils.adapters.base import Batch
from sa_utils.adapters.diffusion import DiffusionAdapter

TRAIN_METHODS = ("full", "xattn", "noxattn")
"""Which UNet weights SA trains (the SA and ESD papers' names; :func:`select_trainable` says exactly which):

* ``"full"``: every UNet weight (the authors' celebrity runs);
* ``"xattn"``: only the cross-attention layers ``attn2``, all of ``to_q``, ``to_k``, ``to_v`` and
  ``to_out`` (the layers that read the prompt);
* ``"noxattn"``: every UNet weight except ``attn2``, the time embedding and the output block
  (the authors' nudity runs)."""

NOXATTN_FROZEN_PREFIXES = ("time_embedding.", "conv_norm_out.", "conv_out.")
"""Top-level diffusers UNet modules ``noxattn`` leaves frozen besides ``attn2``: the time embedding
(CompVis ``time_embed``; diffusers' ``time_proj`` has no weights) and the output block (CompVis
``out.`` = the final GroupNorm and convolution, diffusers ``conv_norm_out`` and ``conv_out``)."""


def select_trainable(unet: nn.Module, train_method: str) -> list[str]:
    """Set ``requires_grad`` on the UNet's parameters for ``train_method``; return the trained names.

    The selection is the authors' ``LatentDiffusion.configure_optimizers`` in
    ``sd/ldm/models/diffusion/ddpm_forget.py`` (github clear-nus/selective-amnesia, itself taken
    from ESD's ``train-scripts/train-esd.py``), translated from CompVis to diffusers names:

    * ``"full"``: all parameters;
    * ``"xattn"``: names containing ``attn2`` -- every cross-attention projection, ``to_q``,
      ``to_k``, ``to_v`` and ``to_out.0`` (weights and biases);
    * ``"noxattn"``: all but names containing ``attn2``, those starting with ``out.`` (diffusers
      ``conv_norm_out.``, ``conv_out.``) and those containing ``time_embed`` (diffusers
      ``time_embedding.``; the ResNet blocks' ``time_emb_proj`` are CompVis ``emb_layers`` and
      stay trainable, as there).
    """
    if train_method not in TRAIN_METHODS:
        raise ValueError(f"train_method must be one of {TRAIN_METHODS}, got {train_method!r}")
    names = []
    for name, p in unet.named_parameters():
        cross = ".attn2." in f".{name}"
        frozen_by_noxattn = cross or name.startswith(NOXATTN_FROZEN_PREFIXES)
        keep = (
            train_method == "full"
            or (train_method == "xattn" and cross)
            or (train_method == "noxattn" and not frozen_by_noxattn)
        )
        p.requires_grad_(keep)
        if keep:
            names.append(name)
    if not names:
        raise ValueError(
            f"train_method {train_method!r} selects no parameter of this UNet (does it have cross-attention?)"
        )
    return names


class StableDiffusionAdapter(DiffusionAdapter):
    batch_reduction = "mean"
    """The authors average the latent-pixel mean squared error over the batch (and over GPUs)."""

    def __init__(
        self,
        pipeline,
        train_method: str = "full",
        guidance_scale: float = 7.5,
        sample_steps: int = 50,
        sample_batch: int = 8,
        height: int | None = None,
        width: int | None = None,
    ):
        from diffusers import DDPMScheduler

        self.pipeline = pipeline
        self.model = pipeline.unet
        self.train_method = train_method
        select_trainable(self.model, train_method)
        for frozen in (pipeline.vae, pipeline.text_encoder):
            frozen.requires_grad_(False).eval()
        # training noise schedule of the pipeline (its own scheduler may be a sampler such as PNDM)
        self.noise_scheduler = DDPMScheduler.from_config(pipeline.scheduler.config)
        self._init_schedule()
        self.prediction_type = self.noise_scheduler.config.get("prediction_type", "epsilon")
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"unsupported prediction_type {self.prediction_type!r}; use epsilon or v_prediction")
        self.guidance_scale, self.sample_steps, self.sample_batch = (
            float(guidance_scale),
            int(sample_steps),
            int(sample_batch),
        )
        self.height, self.width = height, width

    # ------------------------------------------------------------------ encoders (frozen)
    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        """Prompt embeddings ``[B, L, D]`` from the frozen text encoder."""
        prompts = list(prompts)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError("prompts must be a non-empty list of strings")
        tok = self.pipeline.tokenizer
        ids = tok(
            prompts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids
        enc = self.pipeline.text_encoder
        return enc(ids.to(enc.device))[0]

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Scaled latents of images in ``[0, 1]`` (``[B, 3, H, W]``): one draw from the VAE's posterior."""
        vae = self.pipeline.vae
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [B, 3, H, W] in [0, 1], got shape {tuple(images.shape)}")
        dist = vae.encode(images.to(vae.device, vae.dtype) * 2 - 1).latent_dist
        return dist.sample(generator) * vae.config.scaling_factor

    # ------------------------------------------------------------------ conditions
    def check_condition(self, c: torch.Tensor) -> None:
        dim = self.model.config.cross_attention_dim
        if not c.dtype.is_floating_point or c.dim() != 3 or c.shape[-1] != dim:
            raise ValueError(
                f"conditions must be prompt embeddings of shape [B, L, {dim}] (use encode_prompts), "
                f"got dtype {c.dtype}, shape {tuple(c.shape)}"
            )

    # ------------------------------------------------------------------ loss
    def loss(self, batch: Batch) -> torch.Tensor:
        """Per-sample ``mean (model output - target)^2`` over latent pixels, at each sample's own ``t``
        and noise (the authors' ``p_losses`` in ``sd/ldm/models/diffusion/ddpm_forget.py``)."""
        z0, eps, t = batch["x"], batch["eps"], batch["t"]
        ab = self._signal_level(z0, t)
        zt = self.noisy(z0, eps, t)
        target = eps if self.prediction_type == "epsilon" else ab.sqrt() * eps - (1 - ab).sqrt() * z0
        pred = self.model(zt, t, encoder_hidden_states=batch["c"].to(zt.dtype)).sample
        return (pred.float() - target.float()).pow(2).flatten(1).mean(1)

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample(
        self,
        c: torch.Tensor,
        generator: torch.Generator | None = None,
        steps: int | None = None,
        guidance_scale: float | None = None,
    ) -> torch.Tensor:
        """Images in ``[0, 1]`` (``[B, 3, H, W]``) for prompt embeddings ``c``, with classifier-free guidance."""
        self.check_condition(c)
        uncond = self.encode_prompts([""]).to(c.dtype)
        out = []
        was_training = self.model.training
        self.model.eval()
        try:
            for i in range(0, len(c), self.sample_batch):
                chunk = c[i : i + self.sample_batch].to(self.device)
                res = self.pipeline(
                    prompt_embeds=chunk,
                    negative_prompt_embeds=uncond.expand(len(chunk), -1, -1),
                    num_inference_steps=steps or self.sample_steps,
                    guidance_scale=self.guidance_scale if guidance_scale is None else guidance_scale,
                    generator=generator,
                    output_type="pt",
                    height=self.height,
                    width=self.width,
                    return_dict=True,
                )
                out.append(res.images.float().cpu())
        finally:
            self.model.train(was_training)
        return torch.cat(out)

    def sample_prompts(self, prompts: Sequence[str], generator: torch.Generator | None = None, **kw) -> torch.Tensor:
        """:meth:`sample` for prompts given as text."""
        return self.sample(self.encode_prompts(prompts), generator, **kw)

    def config(self) -> dict[str, Any]:
        unet = {
            k: (list(v) if isinstance(v, tuple) else v)
            for k, v in dict(self.model.config).items()
            if not k.startswith("_")
        }
        return {
            "model": "StableDiffusion-UNet2DConditionModel",
            "train_method": self.train_method,
            "unet": unet,
            "prediction_type": self.prediction_type,
            "num_train_timesteps": self.noise_scheduler.config.num_train_timesteps,
        }
