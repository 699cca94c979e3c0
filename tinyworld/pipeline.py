"""A Stable-Diffusion-shaped pipeline small enough for a CPU.

The tiny pipeline uses exactly the classes of Stable Diffusion v1.x -- ``AutoencoderKL``,
``UNet2DConditionModel`` with cross-attention, ``CLIPTextModel``, ``CLIPTokenizer`` with the
real 49,408-token vocabulary, SD's noise schedule -- assembled as a
``StableDiffusionPipeline``, so code written against it (the SD adapter, the Part III
chapters) runs unchanged on the real model. Only the sizes differ (:class:`TinySDConfig`).
SD v1.4's real shapes (for memory studies) are in :mod:`sa_utils.models.sd_configs`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from sa_utils.models.sd_configs import SD_BETAS
from tinyworld.tokenizer import MAX_LENGTH, VOCAB_SIZE, clip_tokenizer

SD_SCHEDULER_EXTRAS = {"steps_offset": 1, "clip_sample": False, "set_alpha_to_one": False}


@dataclass(frozen=True)
class TinySDConfig:
    """Sizes of the tiny pipeline. The defaults: 32x32 images, 8x8x4 latents, a 1.08M-parameter UNet
    with cross-attention at both levels, a 0.68M VAE and a 2-layer CLIP text encoder of width 64
    (3.2M parameters, all but 72k of them the 49,408-row token table)."""

    resolution: int = 32
    vae_channels: tuple[int, ...] = (16, 32, 64)
    """One entry per VAE level; the latents are ``resolution / 2**(levels-1)`` on a side."""
    vae_layers: int = 1
    latent_channels: int = 4
    unet_channels: tuple[int, ...] = (32, 64)
    unet_cross_attention: tuple[bool, ...] = (True, True)
    """Per down level (outermost first) whether it has cross-attention; the up path mirrors it."""
    unet_layers: int = 1
    unet_heads: int = 4
    norm_groups: int = 8
    text_hidden: int = 64
    text_layers: int = 2
    text_heads: int = 4
    text_intermediate: int = 128
    max_length: int = MAX_LENGTH
    """Token positions of the text encoder (77 as in SD; fewer is cheaper and allowed)."""

    def __post_init__(self):
        if len(self.unet_cross_attention) != len(self.unet_channels):
            raise ValueError("unet_cross_attention needs one flag per entry of unet_channels")
        if self.resolution % self.vae_scale_factor:
            raise ValueError(
                f"resolution {self.resolution} is not divisible by the VAE's factor {self.vae_scale_factor}"
            )
        if self.latent_size % 2 ** (len(self.unet_channels) - 1):
            raise ValueError(
                f"latent size {self.latent_size} is not divisible by 2**{len(self.unet_channels) - 1} "
                "for the UNet's levels; use fewer levels or a larger resolution"
            )

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae_channels) - 1)

    @property
    def latent_size(self) -> int:
        return self.resolution // self.vae_scale_factor

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TinySDConfig:
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})


TINY_SD = TinySDConfig()


def build_vae(cfg: TinySDConfig = TINY_SD):
    """``AutoencoderKL`` with SD's block types at the configured widths (``scaling_factor`` set after training)."""
    from diffusers import AutoencoderKL

    n = len(cfg.vae_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=cfg.vae_channels,
        layers_per_block=cfg.vae_layers,
        latent_channels=cfg.latent_channels,
        norm_num_groups=min(cfg.norm_groups, min(cfg.vae_channels)),
        sample_size=cfg.resolution,
    )


def unet_config(cfg: TinySDConfig = TINY_SD) -> dict[str, Any]:
    """The ``UNet2DConditionModel`` config of the tiny pipeline (SD's block types, smaller widths)."""
    down = tuple("CrossAttnDownBlock2D" if x else "DownBlock2D" for x in cfg.unet_cross_attention)
    up = tuple("CrossAttnUpBlock2D" if x else "UpBlock2D" for x in reversed(cfg.unet_cross_attention))
    return {
        "sample_size": cfg.latent_size,
        "in_channels": cfg.latent_channels,
        "out_channels": cfg.latent_channels,
        "down_block_types": down,
        "up_block_types": up,
        "block_out_channels": cfg.unet_channels,
        "layers_per_block": cfg.unet_layers,
        "cross_attention_dim": cfg.text_hidden,
        "attention_head_dim": cfg.unet_heads,
        "norm_num_groups": min(cfg.norm_groups, min(cfg.unet_channels)),
    }


def build_tiny_unet(cfg: TinySDConfig = TINY_SD):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**unet_config(cfg))


def text_encoder_config(cfg: TinySDConfig = TINY_SD):
    """A ``CLIPTextConfig`` with CLIP's vocabulary and special tokens and a tiny transformer."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=cfg.text_hidden,
        intermediate_size=cfg.text_intermediate,
        num_hidden_layers=cfg.text_layers,
        num_attention_heads=cfg.text_heads,
        max_position_embeddings=cfg.max_length,
        hidden_act="quick_gelu",
        projection_dim=cfg.text_hidden,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )


def build_text_encoder(cfg: TinySDConfig = TINY_SD):
    from transformers import CLIPTextModel

    return CLIPTextModel(text_encoder_config(cfg))


def training_scheduler():
    """SD's ``DDPMScheduler`` (epsilon prediction, scaled-linear betas): what training adds noise with."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(**SD_BETAS, steps_offset=1, clip_sample=False, prediction_type="epsilon")


def sampling_scheduler(name: str = "ddim", config: dict | None = None):
    """A sampler with SD's schedule: ``"ddim"`` (deterministic, the book's default), ``"pndm"``
    (SD v1.4's) or ``"ddpm"``; ``config`` takes the schedule from an existing scheduler."""
    from diffusers import DDIMScheduler, DDPMScheduler, PNDMScheduler

    classes = {"ddim": DDIMScheduler, "pndm": PNDMScheduler, "ddpm": DDPMScheduler}
    if name not in classes:
        raise ValueError(f"unknown scheduler {name!r}; choose from {sorted(classes)}")
    extras = {
        "ddim": dict(SD_SCHEDULER_EXTRAS),
        "pndm": {"steps_offset": 1, "skip_prk_steps": True, "set_alpha_to_one": False},
        "ddpm": {"steps_offset": 1, "clip_sample": False},
    }[name]
    if config is not None:
        return classes[name].from_config(config, **extras)
    return classes[name](**SD_BETAS, **extras)


def assemble_pipeline(vae, text_encoder, tokenizer, unet, scheduler=None):
    """``StableDiffusionPipeline`` without a safety checker (the tiny world has nothing to check)."""
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler or sampling_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build_pipeline(cfg: TinySDConfig = TINY_SD, seed: int = 0, scheduler: str = "ddim"):
    """A randomly initialised tiny pipeline (deterministic in ``seed``)."""
    torch.manual_seed(seed)
    vae, text, unet = build_vae(cfg), build_text_encoder(cfg), build_tiny_unet(cfg)
    pipe = assemble_pipeline(vae, text, clip_tokenizer(cfg.max_length), unet, sampling_scheduler(scheduler))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def load_tiny_pipeline(path: str | Path, scheduler: str | None = None, device: str | torch.device = "cpu"):
    """Load a pipeline folder offline (``local_files_only``), optionally swapping the sampler."""
    from diffusers import StableDiffusionPipeline

    from sa_utils.progress import quiet_library_bars

    quiet_library_bars()
    path = Path(path)
    if not (path / "model_index.json").exists():
        raise FileNotFoundError(
            f"{path} is not a diffusers pipeline folder (no model_index.json); train one with "
            "scripts/train_tiny_sd.py or save one with pipe.save_pretrained(path)"
        )
    pipe = StableDiffusionPipeline.from_pretrained(path, local_files_only=True)
    if scheduler is not None:
        pipe.scheduler = sampling_scheduler(scheduler, pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


@torch.no_grad()
def generate(
    pipe, prompts: list[str], seed: int = 0, steps: int = 20, guidance_scale: float = 5.0, batch_size: int = 32
) -> torch.Tensor:
    """Images for ``prompts`` as a float tensor ``[N, 3, H, W]`` in ``[-1, 1]`` (the data convention).

    Image ``i`` uses the generator seeded with ``seed + i``, so a prompt list and its prefix
    give the same first images whatever the batch size.
    """
    out = []
    device = pipe.device
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        gens = [torch.Generator(device=device).manual_seed(seed + start + k) for k in range(len(chunk))]
        imgs = pipe(
            chunk, num_inference_steps=steps, guidance_scale=guidance_scale, generator=gens, output_type="pt"
        ).images
        out.append(imgs.float().cpu() * 2 - 1)
    return torch.cat(out)


# -- the trained tiny pipeline shipped with the package -------------------------------------

SHIPPED = "tiny-sd"
"""Folder under ``tinyworld/weights`` holding the trained tiny pipeline (diffusers format);
``scripts/ship_tiny_sd.py`` puts it there."""


def shipped_pipeline(scheduler: str | None = None, device: str | torch.device = "cpu"):
    """The trained tiny pipeline shipped with the package, every file checked against the manifest,
    or ``None`` when it is not shipped (train one with ``scripts/train_tiny_sd.py``)."""
    from tinyworld.shipped import shelf

    s = shelf()
    names = [n for n in s.manifest() if n.startswith(SHIPPED + "/")]
    if not names:
        return None
    for n in names:
        if s.file(n) is None:
            raise FileNotFoundError(f"{s.folder / n} is listed in the manifest but missing; restore it from git")
    return load_tiny_pipeline(s.folder / SHIPPED, scheduler, device)


def shipped_weights_digest() -> list[str]:
    """The sha256 of every shipped weight file of the tiny pipeline (its identity in cache keys)."""
    from tinyworld.shipped import shelf

    return sorted(
        v["sha256"] for k, v in shelf().manifest().items() if k.startswith(SHIPPED + "/") and k.endswith(".safetensors")
    )
