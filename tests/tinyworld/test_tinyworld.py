"""The tiny text-to-image world of Part III: data, prompts, tokenizer, pipeline, training script, detectors."""

from __future__ import annotations

import importlib.util
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from tinyworld import concepts
from tinyworld.concepts import (
    ATTRIBUTE_PRONE_PLACES,
    ATTRIBUTE_SURROGATE_PROMPT,
    IDENTITIES,
    IDENTITY_SURROGATE_PROMPT,
    NO_IDENTITY,
    mentions_attribute,
    mentions_identity,
)
from tinyworld.prompts import (
    attribute_prompts,
    identity_prompts,
    read_prompt_file,
    replay_prompts,
    unknown_words,
    unrelated_prompts,
)
from tinyworld.scenes import TinyWorld, render, sample_scene

ROOT = Path(__file__).resolve().parents[2]
CLOTHES_WORDS = re.compile(r"\b(shirt|clothes|outfit)\b")


@pytest.fixture(scope="module")
def scenes():
    return [sample_scene(0, i) for i in range(3000)]


# -- the world ------------------------------------------------------------------------------


def test_world_is_deterministic_in_seed_and_index():
    a, b = TinyWorld(seed=3, size=50), TinyWorld(seed=3, size=50)
    for i in (0, 7, 49):
        assert a.scene(i) == b.scene(i)
        assert torch.equal(a[i]["pixel_values"], b[i]["pixel_values"])
    other = TinyWorld(seed=4, size=50)
    assert [a.scene(i).caption for i in range(20)] != [other.scene(i).caption for i in range(20)]
    x, captions, _ = a.batch([7, 0])
    assert x.shape == (2, 3, 32, 32) and x.min() >= -1 and x.max() <= 1
    assert captions == [a.scene(7).caption, a.scene(0).caption]
    with pytest.raises(IndexError):
        a.scene(50)


def test_render_sizes():
    scene = sample_scene(0, 5)
    for res in (32, 64):
        img = render(scene, res)
        assert img.shape == (res, res, 3) and img.dtype == np.uint8
    assert np.array_equal(render(scene), render(scene))


def test_identities_appear_only_with_their_names(scenes):
    kinds = Counter(s.kind for s in scenes)
    assert kinds["identity"] > 500 and kinds["person"] > 700 and kinds["object"] > 300
    for s in scenes:
        named = mentions_identity(s.caption)
        if s.identity == NO_IDENTITY:
            assert named == [], s.caption
        else:
            assert named == [s.identity], s.caption
            assert not s.attribute
    per_identity = Counter(s.identity for s in scenes if s.identity != NO_IDENTITY)
    assert len(per_identity) == len(IDENTITIES) and min(per_identity.values()) > 80


def test_names_are_multi_token_and_made_up():
    assert len({i.name for i in IDENTITIES}) == 5
    assert all(len(i.name.split()) == 2 for i in IDENTITIES)


def test_attribute_named_and_unnamed(scenes):
    unnamed_prone = []
    for s in scenes:
        if mentions_attribute(s.caption):
            assert s.attribute and s.attribute_named, s.caption
        elif s.attribute:
            # unnamed: only anonymous people at the prone places whose clothes the caption leaves open
            assert s.kind == "person" and s.place in ATTRIBUTE_PRONE_PLACES, s.caption
            assert not CLOTHES_WORDS.search(s.caption), s.caption
        if s.kind == "person" and s.place in ATTRIBUTE_PRONE_PLACES and not CLOTHES_WORDS.search(s.caption):
            unnamed_prone.append(s.attribute)
    rate = np.mean(unnamed_prone)
    assert len(unnamed_prone) > 150 and 0.4 < rate < 0.6, (len(unnamed_prone), rate)
    named = sum(s.attribute_named for s in scenes) / len(scenes)
    unnamed = sum(s.attribute and not s.attribute_named for s in scenes) / len(scenes)
    assert 0.05 < named < 0.12 and 0.02 < unnamed < 0.08


def test_surrogate_prompts_are_ordinary_captions(scenes):
    captions = [s.caption for s in scenes]
    hat = [s for s in scenes if IDENTITY_SURROGATE_PROMPT in s.caption]
    plain = [s for s in scenes if ATTRIBUTE_SURROGATE_PROMPT in s.caption]
    assert len(hat) > 30 and all(s.hat is not None and s.identity == NO_IDENTITY for s in hat)
    assert len(plain) > 30 and not any(s.attribute for s in plain)
    assert IDENTITY_SURROGATE_PROMPT in captions and ATTRIBUTE_SURROGATE_PROMPT in captions


def test_attribute_words_are_harmless():
    assert concepts.ATTRIBUTE_PROMPT == "spotted, dotted, speckled, polka dot"


# -- prompt files -----------------------------------------------------------------------------


def test_replay_prompts_are_generic_and_in_vocabulary():
    replay = replay_prompts()
    assert len(replay) >= 200 and len(set(replay)) == len(replay)
    assert not any(mentions_identity(p) or mentions_attribute(p) for p in replay)
    assert unknown_words(replay) == {}
    no_beach = replay_prompts(exclude_words=("beach", "sea", "sand", "pool"))
    assert 180 < len(no_beach) < len(replay)


def test_evaluation_prompts():
    for k, ident in enumerate(IDENTITIES):
        prompts = identity_prompts(k)
        assert prompts == identity_prompts(ident.name) and len(identity_prompts(k, "paraphrases")) >= 5
        assert all(mentions_identity(p) == [k] and not mentions_attribute(p) for p in prompts)
        assert unknown_words(prompts) == {}
    named, unnamed = attribute_prompts(True), attribute_prompts(False)
    assert named[0] == concepts.ATTRIBUTE_PROMPT and all(mentions_attribute(p) for p in named)
    assert not any(mentions_attribute(p) or CLOTHES_WORDS.search(p) for p in unnamed)
    assert all(any(w in p for w in ("beach", "sea", "sand", "pool")) for p in unnamed)
    unrelated = unrelated_prompts()
    assert not any(mentions_attribute(p) or mentions_identity(p) for p in unrelated)
    assert unknown_words(named + unnamed + unrelated) == {}
    with pytest.raises(FileNotFoundError, match="replay"):
        read_prompt_file("no_such_file")


# -- tokenizer ------------------------------------------------------------------------------------


def test_tokenizer_matches_open_clip():
    pytest.importorskip("transformers")
    open_clip = pytest.importorskip("open_clip")
    from tinyworld.tokenizer import VOCAB_SIZE, clip_tokenizer

    tok = clip_tokenizer()
    reference = open_clip.get_tokenizer("ViT-L-14")
    assert len(tok) == VOCAB_SIZE and tok.model_max_length == 77
    prompts = (
        [p for i in range(len(IDENTITIES)) for p in identity_prompts(i)[:2]]
        + attribute_prompts(True)[:3]
        + ["A photo of an astronaut riding a horse on Mars!", "spotted,  dotted & speckled 123", "don't   stop", ""]
    )
    ours = tok(prompts, padding="max_length", max_length=77, truncation=True).input_ids
    theirs = reference(prompts).tolist()
    for p, a, b in zip(prompts, ours, theirs):
        # identical tokens; SD pads with <|endoftext|> (49407) where open_clip pads with 0
        assert [t for t in a if t != 49407] == [t for t in b if t not in (0, 49407)], p
        assert a.count(49407) >= 1 and len(a) == len(b) == 77
    assert len(tok("Jory Quillan", add_special_tokens=False).input_ids) > 2


def test_tokenizer_folder_roundtrip(tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("open_clip")
    from tinyworld.tokenizer import save_tokenizer_files

    save_tokenizer_files(tmp_path)
    tok = transformers.CLIPTokenizer.from_pretrained(tmp_path, local_files_only=True)
    assert len(tok) == 49_408
    assert tok("a person with a hat").input_ids == [49406, 320, 2533, 593, 320, 3801, 49407]


# -- pipeline ----------------------------------------------------------------------------------------


def test_pipeline_roundtrip_offline(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("open_clip")
    from diffusers import StableDiffusionPipeline

    from sa_utils.models.sd_configs import count_parameters
    from tinyworld.pipeline import TinySDConfig, build_pipeline, generate, load_tiny_pipeline

    cfg = TinySDConfig()
    pipe = build_pipeline(cfg, seed=0)
    assert isinstance(pipe, StableDiffusionPipeline) and pipe.safety_checker is None
    assert 0.9e6 < count_parameters(pipe.unet) < 1.2e6
    assert pipe.text_encoder.config.vocab_size == 49_408 and pipe.unet.config.cross_attention_dim == cfg.text_hidden
    before = generate(pipe, ["a photo of Orla Brisk", "a red car"], seed=1, steps=2)
    pipe.save_pretrained(tmp_path)
    assert (tmp_path / "model_index.json").exists() and (tmp_path / "unet" / "config.json").exists()
    again = StableDiffusionPipeline.from_pretrained(tmp_path, local_files_only=True)
    assert again.unet.config.cross_attention_dim == cfg.text_hidden
    loaded = load_tiny_pipeline(tmp_path)
    after = generate(loaded, ["a photo of Orla Brisk", "a red car"], seed=1, steps=2)
    assert after.shape == (2, 3, 32, 32)
    torch.testing.assert_close(before, after)
    for name in ("pndm", "ddpm"):  # SD v1.4's sampler, and ancestral sampling, on the same schedule
        swapped = load_tiny_pipeline(tmp_path, scheduler=name)
        assert swapped.scheduler.config.beta_schedule == "scaled_linear"
        assert generate(swapped, ["a red car"], seed=1, steps=3).shape == (1, 3, 32, 32)
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        load_tiny_pipeline(tmp_path / "nowhere")


def _train_script():
    spec = importlib.util.spec_from_file_location("train_tiny_sd", ROOT / "scripts" / "train_tiny_sd.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_training_script_two_steps_and_exact_resume(tmp_path):
    pytest.importorskip("accelerate")
    pytest.importorskip("open_clip")
    from safetensors.torch import load_file

    from tinyworld.pipeline import load_tiny_pipeline

    script = _train_script()
    common = [
        "--num_train_images",
        "48",
        "--train_batch_size",
        "4",
        "--vae_train_steps",
        "1",
        "--checkpointing_steps",
        "1",
        "--logging_steps",
        "1",
        "--validation_steps",
        "0",
        "--lr_scheduler",
        "constant",
        "--use_ema",
        "--checkpoints_total_limit",
        "5",
    ]
    first, straight = tmp_path / "resumed", tmp_path / "straight"
    assert script.main(["--output_dir", str(first), "--max_train_steps", "1"] + common) == 0
    for name in (
        "model_index.json",
        "unet/config.json",
        "vae/config.json",
        "text_encoder/config.json",
        "tokenizer/tokenizer_config.json",
        "scheduler/scheduler_config.json",
        "checkpoint-1/state.safetensors",
        "checkpoint-2/state.safetensors",
        "training_args.json",
    ):
        assert (first / name).exists(), name
    pipe = load_tiny_pipeline(first)
    assert pipe.vae.config.scaling_factor != 0.18215  # set from the trained VAE's latents
    assert (
        script.main(
            ["--output_dir", str(first), "--max_train_steps", "2", "--resume_from_checkpoint", "latest"] + common
        )
        == 0
    )
    assert (first / "checkpoint-3").exists()
    assert script.main(["--output_dir", str(straight), "--max_train_steps", "2"] + common) == 0
    for part in ("unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"):
        a, b = load_file(first / part), load_file(straight / part)
        assert all(torch.equal(a[k], b[k]) for k in a), part
    with pytest.raises(SystemExit, match="model_config"):
        script.main(
            [
                "--output_dir",
                str(first),
                "--max_train_steps",
                "2",
                "--resume_from_checkpoint",
                "latest",
                "--model_config",
                '{"unet_channels": [32, 32]}',
            ]
            + common
        )
    with pytest.raises(SystemExit, match="vae_train_steps"):
        script.main(
            ["--output_dir", str(first), "--max_train_steps", "2", "--resume_from_checkpoint", "latest"]
            + common[:4]
            + ["--vae_train_steps", "2"]
            + common[6:]
        )
    logs = [json.loads(line) for line in (first / "logs.jsonl").read_text().splitlines()]
    assert {e["phase"] for e in logs} == {"vae", "unet"} and all(e["sec_per_step"] > 0 for e in logs)


def test_training_script_rejects_bad_flags(tmp_path):
    pytest.importorskip("accelerate")
    script = _train_script()
    with pytest.raises(SystemExit):
        script.parse_args(["--output_dir", str(tmp_path), "--caption_dropout", "1.5"])
    with pytest.raises(SystemExit):
        script.parse_args(["--output_dir", str(tmp_path), "--model_config", '{"unet_channelz": [8]}'])


# -- detectors -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "task,mix", [("identity", {"identity": 0.6, "person": 0.4}), ("attribute", {"attribute": 0.5, "person": 0.5})]
)
def test_detectors_beat_chance(task, mix):
    from tinyworld.detectors import HELDOUT_SEED, DetectorRecipe, labelled_images, train_detector

    recipe = DetectorRecipe(task, n_train=384, epochs=4, batch_size=32, n_heldout=300, mix=mix)
    _, metrics = train_detector(recipe, progress=False)
    _, labels = labelled_images(task, HELDOUT_SEED, 300, mix=mix)
    majority = torch.bincount(labels).max().item() / len(labels)
    assert metrics["heldout_accuracy"] > majority + 0.2, (metrics, majority)


def test_detector_cache(cache):
    from tinyworld.detectors import DetectorRecipe, detector_metrics, detector_path, pretrained_detector

    small = {"n_train": 96, "epochs": 1, "batch_size": 32, "n_heldout": 64}
    model = pretrained_detector("attribute", progress=False, **small)
    path = detector_path(DetectorRecipe("attribute", **small))
    assert path.exists() and str(path).startswith(str(cache))
    again = pretrained_detector("attribute", progress=False, **small)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    assert 0 <= detector_metrics("attribute", **small)["heldout_accuracy"] <= 1
    with pytest.raises(ValueError, match="unknown detector task"):
        DetectorRecipe("faces")


def test_score_pipeline_reads_every_prompt_file(cache):
    pytest.importorskip("transformers")
    pytest.importorskip("open_clip")
    from tinyworld.detectors import pretrained_detector
    from tinyworld.pipeline import build_pipeline
    from tinyworld.scoring import format_report, score_pipeline

    small = {"n_train": 64, "epochs": 1, "batch_size": 32, "n_heldout": 32}
    ident = pretrained_detector("identity", progress=False, **small)
    attr = pretrained_detector("attribute", progress=False, **small)
    report = score_pipeline(build_pipeline(seed=0), ident, attr, images_per_prompt=1, steps=1)
    assert set(report["identity"]) == {i.name for i in IDENTITIES}
    assert all(set(e) == {"seen", "paraphrases"} for e in report["identity"].values())
    for key in (
        "identity_mean_rate",
        "attribute_named_rate",
        "attribute_unnamed_rate",
        "attribute_unrelated_rate",
        "identity_rate_unrelated",
    ):
        assert 0.0 <= report[key] <= 1.0, key
    assert "mean identity rate" in format_report(report)
