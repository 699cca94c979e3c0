"""SD v1.4's real shapes (sa_utils/models/sd_configs.py), built on the meta device: no memory, no download."""

from __future__ import annotations

import pytest
import torch


def test_sd14_shapes_without_memory():
    pytest.importorskip("transformers")
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel

    from sa_utils.models.sd_configs import (
        build_unet_from_config,
        count_parameters,
        sd14_text_encoder_config,
        sd14_unet_config,
        sd14_vae_config,
        sd_small_unet_config,
    )

    assert count_parameters(build_unet_from_config(sd14_unet_config(), device="meta")) == 859_520_964
    with torch.device("meta"):
        assert count_parameters(AutoencoderKL(**sd14_vae_config())) == 83_653_863
        assert count_parameters(CLIPTextModel(sd14_text_encoder_config())) == 123_060_480
    small = build_unet_from_config(sd_small_unet_config(), device="meta")
    assert small.config.down_block_types == tuple(sd14_unet_config()["down_block_types"])
    assert 20e6 < count_parameters(small) < 50e6


# -- training script ----------------------------------------------------------------------------------
