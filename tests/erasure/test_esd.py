"""ESD (sa_utils/erasure/esd.py): the loss against a hand computation on the tiny pipeline, which
weights each variant trains, exact resume, and the command."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("transformers")

from sa_utils.adapters.sd import StableDiffusionAdapter  # noqa: E402
from sa_utils.erasure.esd import ESDConfig, erase_esd, esd_sample, esd_trainable  # noqa: E402
from sa_utils.runtime import step_generator  # noqa: E402

FAST = dict(iterations=2, num_inference_steps=4, lr=1e-3)


def _pipe():
    from tinyworld.pipeline import build_pipeline

    return build_pipeline(seed=0)


def test_the_first_loss_is_the_negatively_guided_target_computed_by_hand():
    pipe = _pipe()
    adapter = StableDiffusionAdapter(pipe, "full")
    config = ESDConfig("spotted", iterations=1, num_inference_steps=4, negative_guidance=2.0)
    original = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    cond, null = adapter.encode_prompts(["spotted"]), adapter.encode_prompts([""])
    cfg = pipe.unet.config
    shape = (1, cfg.in_channels, cfg.sample_size, cfg.sample_size)
    # the same draw as iteration 0, then the paper's target with the untouched UNet
    x_t, t = esd_sample(pipe.unet, pipe.scheduler, cond, null, config, step_generator(0, 0), shape)
    with torch.no_grad():
        e_c = pipe.unet(x_t, t, encoder_hidden_states=cond).sample
        e_0 = pipe.unet(x_t, t, encoder_hidden_states=null).sample
        by_hand = F.mse_loss(e_c, e_c - 2.0 * (e_c - e_0)).item()  # = e_0 - (e_c - e_0): eta = 1 in the paper
    result = erase_esd(adapter, config, progress=False)
    assert result.losses[0] == pytest.approx(by_hand, rel=1e-5)
    changed = {k for k, v in pipe.unet.state_dict().items() if not torch.equal(v, original[k])}
    assert changed and all(".attn2." in f".{k}" for k in changed)  # esd-x trains cross-attention only


def test_esd_u_trains_linear_and_conv_weights_outside_cross_attention_only():
    pipe = _pipe()
    names = set(esd_trainable(pipe.unet, "esd-u"))
    assert names and not any(".attn2." in f".{n}" for n in names)
    norms = {
        f"{m}.{n}"
        for m, mod in pipe.unet.named_modules()
        if isinstance(mod, (torch.nn.GroupNorm, torch.nn.LayerNorm))
        for n, _ in mod.named_parameters(recurse=False)
    }
    assert norms and not (names & norms)  # only Linear and Conv2d weights, as the authors select them
    assert {n for n, p in pipe.unet.named_parameters() if p.requires_grad} == names
    x_names = set(esd_trainable(pipe.unet, "esd-x"))
    assert x_names and all(".attn2." in f".{n}" for n in x_names) and not (x_names & names)


def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path):
    whole = _pipe()
    erase_esd(StableDiffusionAdapter(whole, "full"), ESDConfig("spotted", **FAST), progress=False)
    parts = _pipe()
    first = ESDConfig("spotted", **{**FAST, "iterations": 1}, checkpoint_every=1)
    erase_esd(StableDiffusionAdapter(parts, "full"), first, run_dir=tmp_path, progress=False)
    again = _pipe()  # a fresh process: the original weights, then the checkpoint
    res = erase_esd(
        StableDiffusionAdapter(again, "full"),
        ESDConfig("spotted", **FAST, checkpoint_every=1),
        run_dir=tmp_path,
        progress=False,
    )
    assert res.resumed_from == 1 and len(res.losses) == 2
    for (n, a), b in zip(whole.unet.state_dict().items(), again.unet.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7, msg=n)


def test_bad_settings_are_refused_by_name():
    with pytest.raises(ValueError, match="method must be one of"):
        ESDConfig("x", method="esd-q")
    with pytest.raises(ValueError, match="non-empty concept"):
        ESDConfig("")
    with pytest.raises(ValueError, match="iterations must be a positive integer"):
        ESDConfig("x", iterations=0)


def test_the_erase_command_runs_esd_and_saves_a_pipeline(tmp_path):
    from diffusers import StableDiffusionPipeline

    from sa_utils.sd.__main__ import main

    src = tmp_path / "tiny"
    _pipe().save_pretrained(src, safe_serialization=True)
    argv = [
        "erase",
        "--method",
        "esd-u",
        "--pretrained_model_name_or_path",
        str(src),
        "--erase_concept",
        "spotted",
        "--iterations",
        "2",
        "--num_inference_steps",
        "3",
        "--output_dir",
        str(tmp_path / "esd"),
        "--no_progress",
    ]
    assert main(argv) == 0
    res = json.loads((tmp_path / "esd" / "results.json").read_text())
    assert res["method"] == "esd-u" and len(res["losses"]) == 2
    StableDiffusionPipeline.from_pretrained(tmp_path / "esd" / "pipeline", safety_checker=None)
    assert main([*argv, "--erase_concept", "dotted"]) == 2  # one concept per ESD run
