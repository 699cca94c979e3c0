"""Stable Diffusion v1.4's real architecture, written out: configs to build its networks with
random weights (no download) for memory and speed studies, and a smaller UNet of the same layout.

:func:`sd14_unet_config` (and the VAE / text-encoder configs next to it) are SD v1.4's
``config.json`` files; :func:`sd_small_unet_config` keeps SD's layout (4 levels, 3 with
cross-attention, 2 layers per block) at a size a CPU can still step through.
"""

from __future__ import annotations

from typing import Any

import torch

SD_BETAS = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
"""SD v1.x's noise schedule (shared by its training and sampling schedulers)."""

CLIP_VOCAB_SIZE = 49_408
"""Tokens of CLIP's BPE vocabulary (SD v1.x's tokenizer)."""


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# -- Stable Diffusion v1.4's real shapes (random weights, no download) ---------------------


def sd14_unet_config() -> dict[str, Any]:
    """SD v1.4's ``unet/config.json`` (CompVis/stable-diffusion-v1-4): 859,520,964 parameters."""
    return {
        "sample_size": 64,
        "in_channels": 4,
        "out_channels": 4,
        "center_input_sample": False,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        "block_out_channels": (320, 640, 1280, 1280),
        "layers_per_block": 2,
        "downsample_padding": 1,
        "mid_block_scale_factor": 1,
        "act_fn": "silu",
        "norm_num_groups": 32,
        "norm_eps": 1e-5,
        "cross_attention_dim": 768,
        "attention_head_dim": 8,
    }


def sd14_vae_config() -> dict[str, Any]:
    """SD v1.4's ``vae/config.json``: 83,653,863 parameters, 8x downsampling, 4 latent channels."""
    return {
        "in_channels": 3,
        "out_channels": 3,
        "latent_channels": 4,
        "sample_size": 512,
        "layers_per_block": 2,
        "block_out_channels": (128, 256, 512, 512),
        "down_block_types": ("DownEncoderBlock2D",) * 4,
        "up_block_types": ("UpDecoderBlock2D",) * 4,
        "act_fn": "silu",
        "norm_num_groups": 32,
        "scaling_factor": 0.18215,
    }


def sd14_text_encoder_config():
    """CLIP ViT-L/14's text tower, SD v1.4's ``text_encoder``: 123,060,480 parameters."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=CLIP_VOCAB_SIZE,
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        projection_dim=768,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=1,
    )


def sd_small_unet_config(width: int = 64, cross_attention_dim: int = 256, sample_size: int = 16) -> dict[str, Any]:
    """SD v1.4's UNet layout (same blocks, levels, layers and heads) at ``width / 320`` of its channels."""
    cfg = sd14_unet_config()
    cfg.update(
        block_out_channels=(width, 2 * width, 4 * width, 4 * width),
        cross_attention_dim=cross_attention_dim,
        sample_size=sample_size,
        norm_num_groups=min(32, width),
    )
    return cfg


def build_unet_from_config(config: dict[str, Any], device: str | torch.device = "cpu"):
    """``UNet2DConditionModel(**config)``; ``device="meta"`` builds the shapes without allocating memory."""
    from diffusers import UNet2DConditionModel

    with torch.device(device):
        return UNet2DConditionModel(**config)
