"""The five Stable Diffusion steps on a tiny SD-architecture pipeline saved in the diffusers format.

Nothing is downloaded: the pipeline is built with random weights and saved to a folder,
and every command loads it from there (``local_files_only``), as it would load SD v1.4.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from sa_utils.adapters.sd import StableDiffusionAdapter, select_trainable
from sa_utils.core.amnesia import SAConfig
from sa_utils.core.fisher import DiagonalFisher, TimestepSum, diagonal_fisher
from sa_utils.sd.__main__ import main as sd_main
from sa_utils.sd.common import RunFolderError, load_pipeline
from sa_utils.sd.imagesets import load_image_set
from sa_utils.storage.checkpoint import CheckpointError, load_tensors

warnings.filterwarnings("ignore", message=".*batching rule.*")
FAST = ["--num_inference_steps", "2", "--guidance_scale", "3", "--no_progress"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from tinyworld.pipeline import build_pipeline

    folder = tmp_path_factory.mktemp("tiny") / "pipeline"
    build_pipeline(seed=0).save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def sets(tiny_model, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sets")
    prompts = root / "replay.txt"
    prompts.write_text("# generic prompts\na red ball\na tree on a hill\n\na person at the beach\na blue car\n")
    m = ["--pretrained_model_name_or_path", str(tiny_model)]
    assert (
        sd_main(
            [
                "images",
                *m,
                "--prompts_file",
                str(prompts),
                "--num_images_per_prompt",
                "2",
                "--shard_size",
                "3",
                "--batch_size",
                "2",
                "--output_dir",
                str(root / "replay"),
                *FAST,
            ]
        )
        == 0
    )
    assert (
        sd_main(
            [
                "images",
                *m,
                "--prompt",
                "a person with a hat",
                "--num_images_per_prompt",
                "4",
                "--output_dir",
                str(root / "surrogate"),
                *FAST,
            ]
        )
        == 0
    )
    return {"replay": root / "replay", "surrogate": root / "surrogate", "root": root}


def test_adapter_train_methods_and_condition_checks(tiny_model):
    pipe = load_pipeline(tiny_model)
    a = StableDiffusionAdapter(pipe, "xattn")
    assert a.trainable_parameters() and all(".attn2." in f".{n}" for n in a.trainable_parameters())
    assert not any(p.requires_grad for p in pipe.text_encoder.parameters())
    names = select_trainable(pipe.unet, "noxattn")
    assert names and not any(".attn2." in f".{n}" for n in names)
    with pytest.raises(ValueError, match="train_method"):
        select_trainable(pipe.unet, "attention")
    with pytest.raises(ValueError, match="prompt embeddings"):
        a.draw_noise({"x": torch.zeros(2, 4, 8, 8), "c": torch.zeros(2, 3, dtype=torch.long)})


def test_adapter_fisher_vmap_equals_loop_and_sampling_shapes(tiny_model):
    a = StableDiffusionAdapter(load_pipeline(tiny_model), "full", sample_steps=2)
    c = a.encode_prompts(["a red ball", "a person with a hat", "a tree", "a blue car"])
    size = a.model.config.sample_size * 2 ** (len(a.pipeline.vae.config.block_out_channels) - 1)
    z = a.encode_images(torch.rand(4, 3, size, size), torch.Generator().manual_seed(0))
    batch = [{"x": z, "c": c}]
    loop = diagonal_fisher(a, batch, method="loop", progress=False)
    fast = diagonal_fisher(a, batch, method="vmap", vmap_chunk_size=2, progress=False)
    scale = max(float(v.abs().max()) for v in loop.values.values())
    assert max(float((fast.values[k] - loop.values[k]).abs().max()) for k in loop.values) / scale < 1e-4
    x = a.sample(c[:3], torch.Generator().manual_seed(0))
    assert x.shape == (3, 3, size, size) and 0 <= float(x.min()) and float(x.max()) <= 1


def test_image_sets_are_sharded_seeded_and_refuse_other_settings(sets, tiny_model, capsys):
    images, prompts, settings = load_image_set(sets["replay"])
    assert images.shape[0] == 8 and len(prompts) == 8 and prompts[:2] == ["a red ball"] * 2
    assert len(list(sets["replay"].glob("images-*.safetensors"))) == 3
    with pytest.raises(RunFolderError, match="other settings"):  # --debug: the exception itself
        sd_main(
            [
                "--debug",
                "images",
                "--pretrained_model_name_or_path",
                str(tiny_model),
                "--prompt",
                "a cat",
                "--output_dir",
                str(sets["replay"]),
                *FAST,
            ]
        )
    # without --debug a user error is one line on stderr and exit status 2, like argparse
    assert (
        sd_main(
            [
                "images",
                "--pretrained_model_name_or_path",
                str(tiny_model),
                "--prompt",
                "a cat",
                "--output_dir",
                str(sets["replay"]),
                *FAST,
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()  # (progress bars of the pipeline's loading come first)
    assert err[-1].startswith("python -m sa_utils.sd images: error:") and "other settings" in err[-1]
    assert not any("Traceback" in line for line in err) and sum("error:" in line for line in err) == 1
    # a lost shard is regenerated identically (image i is seeded by seed + i)
    shard = sets["replay"] / "images-00001.safetensors"
    before = load_image_set(sets["replay"])[0]
    shard.unlink()
    with pytest.raises(FileNotFoundError, match="unfinished"):
        load_image_set(sets["replay"])
    sd_main(
        [
            "images",
            "--pretrained_model_name_or_path",
            str(tiny_model),
            "--prompts_file",
            str(sets["root"] / "replay.txt"),
            "--num_images_per_prompt",
            "2",
            "--shard_size",
            "3",
            "--batch_size",
            "2",
            "--output_dir",
            str(sets["replay"]),
            *FAST,
        ]
    )
    assert torch.equal(load_image_set(sets["replay"])[0], before)


def _fisher(tiny_model, replay, out, extra=()):
    """The Fisher step with a cheap stratified estimator (5 timesteps per image) unless ``extra`` names one."""
    timesteps = [] if "--timesteps" in extra else ["--timesteps", "5"]
    return sd_main(
        [
            "fisher",
            "--pretrained_model_name_or_path",
            str(tiny_model),
            "--replay_dir",
            str(replay),
            "--output_dir",
            str(out),
            "--chunk_size",
            "3",
            "--checkpointing_steps",
            "1",
            *timesteps,
            *extra,
            *FAST,
        ]
    )


@pytest.mark.slow
def test_fisher_resumes_and_two_processes_equal_one(sets, tiny_model, tmp_path):
    assert _fisher(tiny_model, sets["replay"], tmp_path / "f1") == 0
    one = DiagonalFisher.load(tmp_path / "f1" / "fisher.safetensors", estimator=TimestepSum(k=5))
    assert one.n_samples == 8 and one.estimator == "stratified-5"
    # an interrupted run (two of three chunks done) resumes to the same result
    from sa_utils.sd.fisher import sd_fisher

    adapter = StableDiffusionAdapter(load_pipeline(tiny_model), "full")
    est = TimestepSum(k=5)
    assert (
        sd_fisher(
            adapter,
            sets["replay"],
            tmp_path / "f3",
            chunk_size=3,
            checkpointing_steps=1,
            max_chunks=2,
            progress=False,
            estimator=est,
        )
        is None
    )
    assert not (tmp_path / "f3" / "fisher.safetensors").exists()
    resumed = sd_fisher(
        adapter, sets["replay"], tmp_path / "f3", chunk_size=3, checkpointing_steps=1, progress=False, estimator=est
    )
    for k in one.values:
        torch.testing.assert_close(resumed.values[k], one.values[k], rtol=1e-6, atol=1e-12)
    # two CPU processes with accelerate
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # accelerate's multi-process launcher (torchrun underneath) also runs CPU processes (gloo)
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "sa_utils.sd",
        "fisher",
        "--pretrained_model_name_or_path",
        str(tiny_model),
        "--replay_dir",
        str(sets["replay"]),
        "--output_dir",
        str(tmp_path / "f2"),
        "--chunk_size",
        "3",
        "--timesteps",
        "5",
        *FAST,
    ]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    two = DiagonalFisher.load(tmp_path / "f2" / "fisher.safetensors", estimator="stratified-5")
    assert two.metadata["processes"] == 2 and two.n_samples == 8
    for k in one.values:  # equal up to float summation order (other processes, other thread counts)
        scale = float(one.values[k].abs().max())
        torch.testing.assert_close(two.values[k], one.values[k], rtol=1e-4, atol=1e-6 * scale)


@pytest.mark.slow
def test_forget_evaluate_and_resume(sets, tiny_model, tmp_path):
    _fisher(tiny_model, sets["replay"], tmp_path / "fisher")
    args = [
        "forget",
        "--pretrained_model_name_or_path",
        str(tiny_model),
        "--forget_prompt",
        "Orla Brisk",
        "--surrogate_dir",
        str(sets["surrogate"]),
        "--replay_dir",
        str(sets["replay"]),
        "--fisher_path",
        str(tmp_path / "fisher"),
        "--train_method",
        "full",
        "--lmbda",
        "10",
        "--learning_rate",
        "1e-3",
        "--train_batch_size",
        "2",
        "--checkpointing_steps",
        "2",
        "--output_dir",
        str(tmp_path / "forget"),
        *FAST,
    ]
    assert sd_main([*args, "--max_train_steps", "3"]) == 0
    out = tmp_path / "forget" / "pipeline"
    after = load_pipeline(out)
    base = load_pipeline(tiny_model)
    changed = [n for n, p in after.unet.named_parameters() if not torch.equal(p, dict(base.unet.named_parameters())[n])]
    assert changed, "SA changed no UNet weight"
    for part in ("vae", "text_encoder"):
        for (n, p), q in zip(getattr(after, part).named_parameters(), getattr(base, part).parameters()):
            assert torch.equal(p, q), f"{part}.{n} changed"
    with pytest.raises(FileExistsError, match="resume_from_checkpoint"):
        sd_main(["--debug", *args, "--max_train_steps", "5"])
    assert sd_main([*args, "--max_train_steps", "5", "--resume_from_checkpoint", "latest"]) == 0
    meta = json.loads((tmp_path / "forget" / "settings.json").read_text())
    assert meta["step"] == "forget"
    # a Fisher over other parameters is refused with a clear message
    bad = ["xattn" if a == "full" else a for a in args]
    bad[bad.index("--output_dir") + 1] = str(tmp_path / "x")
    with pytest.raises(CheckpointError, match="does not match"):
        sd_main(["--debug", *bad, "--max_train_steps", "1"])
    # evaluation: grids and results for two pipelines and two prompt sets
    (tmp_path / "forget.txt").write_text("Orla Brisk\nOrla Brisk at the beach\n")
    (tmp_path / "other.txt").write_text("a red ball\n")
    assert (
        sd_main(
            [
                "evaluate",
                "--pipeline",
                f"before={tiny_model}",
                "--pipeline",
                f"after={out}",
                "--prompt_set",
                f"forget={tmp_path / 'forget.txt'}",
                "--prompt_set",
                f"other={tmp_path / 'other.txt'}",
                "--output_dir",
                str(tmp_path / "eval"),
                *FAST,
            ]
        )
        == 0
    )
    res = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert res["after"]["forget"]["n_images"] == 2
    assert (tmp_path / "eval" / "grid-forget.png").exists()


def test_shipping_a_pipeline_checks_every_file(tiny_model, tmp_path, monkeypatch):
    import importlib.util

    from tinyworld import pipeline as tw
    from tinyworld import shipped

    spec = importlib.util.spec_from_file_location(
        "ship_tiny_sd", Path(__file__).parents[2] / "scripts" / "ship_tiny_sd.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr(shipped, "WEIGHTS_DIR", tmp_path / "weights")
    assert tw.shipped_pipeline() is None
    dst = script.ship_pipeline(tiny_model, "python scripts/train_tiny_sd.py --test", {"steps": 0})
    names = [n for n in shipped.shelf().manifest() if n.startswith("tiny-sd/")]
    assert "tiny-sd/model_index.json" in names and any(n.endswith(".safetensors") for n in names)
    pipe = tw.shipped_pipeline()
    assert pipe.unet.config.cross_attention_dim == load_pipeline(tiny_model).unet.config.cross_attention_dim
    weights = next(dst.glob("unet/*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-8] + b"corrupt!")
    with pytest.raises(CheckpointError, match="train_tiny_sd.py --test"):
        tw.shipped_pipeline()


# -- filtering a set, NudeNet, the safety checker, CLIP ------------------------------------------


def test_filter_keeps_exactly_the_unflagged_images(sets, tmp_path):
    from sa_utils.sd.imagesets import filter_image_set, safety_flags

    images, prompts, _ = load_image_set(sets["replay"])
    assert not safety_flags(sets["replay"]).any()  # the tiny pipeline has no safety checker
    keep = torch.arange(len(images)) % 3 != 0
    out = filter_image_set(sets["replay"], keep, tmp_path / "clean", "every third image", shard_size=2)
    x, p, settings = load_image_set(out)
    assert torch.equal(x, images[keep]) and p == [q for q, k in zip(prompts, keep) if k]
    assert settings["kept"] == int(keep.sum()) and settings["filter"] == "every third image"
    with pytest.raises(ValueError, match="drops every image"):
        filter_image_set(sets["replay"], torch.zeros(len(images), dtype=torch.bool), tmp_path / "none", "all")
    with pytest.raises(ValueError, match="boolean mask"):
        filter_image_set(sets["replay"], keep[:-1], tmp_path / "short", "short")


def test_nudenet_labels_and_filter_command(sets, tmp_path):
    """NudeNet 3.x runs offline on the pipeline's (harmless) images; the exposed classes the book
    counts are labels of the installed NudeNet; the filter command keeps what it does not flag."""
    import nudenet.nudenet as nn_module

    from sa_utils.eval.detectors import NUDENET_EXPOSED, nudenet_counts, nudenet_detector

    labels = getattr(nn_module, "__labels")
    assert set(NUDENET_EXPOSED) <= set(labels) and all(n.endswith("_EXPOSED") for n in NUDENET_EXPOSED)
    assert {n for n in labels if n.endswith("_EXPOSED")} == set(NUDENET_EXPOSED)
    images = load_image_set(sets["replay"])[0]
    assert nudenet_counts(images) == dict.fromkeys(NUDENET_EXPOSED, 0)
    assert not nudenet_detector(images).any()
    assert (
        sd_main(
            [
                "filter",
                "--image_dir",
                str(sets["replay"]),
                "--detector",
                "nudenet",
                "--output_dir",
                str(tmp_path / "clean"),
                "--no_progress",
            ]
        )
        == 0
    )
    assert len(load_image_set(tmp_path / "clean")[0]) == len(images)


def _tiny_clip_config():
    from transformers import CLIPConfig

    small = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    return CLIPConfig(
        text_config={**small, "max_position_embeddings": 77},
        vision_config={**small, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )


def test_safety_checker_blacks_out_display_and_flags_generation(tiny_model):
    """diffusers' own safety checker (tiny, random weights): shown images pass it, generation
    records its flags, and counting can switch it off for a while."""
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPImageProcessor

    from sa_utils.sd.evaluate import safe_for_display, safety_checker_off
    from sa_utils.sd.imagesets import generate_images

    pipe = load_pipeline(tiny_model)
    images = torch.rand(3, 3, 32, 32)
    assert safe_for_display(pipe, images) is images  # no checker: nothing to do
    torch.manual_seed(0)
    checker = StableDiffusionSafetyChecker(_tiny_clip_config()).eval()
    pipe.safety_checker = checker
    pipe.feature_extractor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    with torch.no_grad():  # thresholds below any cosine similarity: every image is flagged
        checker.concept_embeds_weights.fill_(-2.0)
        checker.special_care_embeds_weights.fill_(-2.0)
    shown = safe_for_display(pipe, images)
    assert shown.abs().sum() == 0
    flags: list[bool] = []
    out = generate_images(pipe, ["a red ball", "a blue car"], 0, 2, 3.0, batch_size=2, flags=flags)
    assert flags == [True, True] and out.abs().sum() == 0
    with safety_checker_off(pipe):
        assert pipe.safety_checker is None
        assert generate_images(pipe, ["a red ball"], 0, 2, 3.0).abs().sum() > 0
    assert pipe.safety_checker is checker
    with torch.no_grad():  # thresholds above any similarity: nothing is flagged
        checker.concept_embeds_weights.fill_(2.0)
        checker.special_care_embeds_weights.fill_(2.0)
    assert torch.equal(safe_for_display(pipe, images), images)


def test_clip_detector_on_a_local_model(tmp_path):
    """The zero-shot CLIP detector loads a CLIP model and processor from a folder (here a tiny
    random one built offline) and returns one bool per image; bad specs are refused."""
    from transformers import CLIPImageProcessor, CLIPModel, CLIPProcessor

    from sa_utils.eval.detectors import clip_detector, load_detector
    from tinyworld.tokenizer import clip_tokenizer

    torch.manual_seed(0)
    CLIPModel(_tiny_clip_config()).save_pretrained(tmp_path / "clip")
    proc = CLIPProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=clip_tokenizer(),
    )
    proc.save_pretrained(tmp_path / "clip")
    detect = clip_detector("brad pitt", ["a middle aged man", "angelina jolie"], model_id=str(tmp_path / "clip"))
    hits = detect(torch.rand(5, 3, 32, 32))
    assert hits.dtype == torch.bool and hits.shape == (5,)
    with pytest.raises(ValueError, match="alternative"):
        load_detector("clip:brad pitt")
    with pytest.raises(ValueError, match="unknown detector"):
        load_detector("celebrity")


def test_forget_with_the_memory_flags(sets, tiny_model, tmp_path):
    """--gradient_checkpointing, bf16 autocast and half-precision theta*/F run together and give a
    pipeline whose UNet moved; the run's settings record the choices (and the default optimizer,
    the authors' AdamW with weight decay 0.01, without EMA)."""
    _fisher(tiny_model, sets["replay"], tmp_path / "fisher")
    assert (
        sd_main(
            [
                "forget",
                "--pretrained_model_name_or_path",
                str(tiny_model),
                "--forget_prompt",
                "Orla Brisk",
                "--surrogate_dir",
                str(sets["surrogate"]),
                "--replay_dir",
                str(sets["replay"]),
                "--fisher_path",
                str(tmp_path / "fisher"),
                "--max_train_steps",
                "2",
                "--train_batch_size",
                "2",
                "--learning_rate",
                "1e-3",
                "--gradient_checkpointing",
                "--mixed_precision",
                "bf16",
                "--ewc_dtype",
                "float16",
                "--output_dir",
                str(tmp_path / "forget"),
                *FAST,
            ]
        )
        == 0
    )
    after, base = load_pipeline(tmp_path / "forget" / "pipeline"), load_pipeline(tiny_model)
    assert after.unet.dtype == torch.float32  # master weights stay float32 under autocast
    assert any(not torch.equal(p, q) for p, q in zip(after.unet.parameters(), base.unet.parameters()))
    sa = json.loads((tmp_path / "forget" / "settings.json").read_text())["sa"]
    assert sa["mixed_precision"] == "bf16" and sa["ewc_dtype"] == "float16"
    assert sa["optimizer"] == "adamw" and sa["weight_decay"] == 0.01 and sa["ema_decay"] is None
    assert sa["lr"] == 1e-3 and sa["grad_accum"] == 1


def test_forget_with_the_authors_optimizer_flags(sets, tiny_model, tmp_path):
    """--scale_lr multiplies the base rate by batch x accumulation x processes; accumulation and
    the EMA are recorded, the saved pipeline holds the EMA weights, and a comma-separated
    --forget_prompt becomes a pool of prompts."""
    from sa_utils.storage.checkpoint import read_metadata

    _fisher(tiny_model, sets["replay"], tmp_path / "fisher")
    args = [
        "forget",
        "--pretrained_model_name_or_path",
        str(tiny_model),
        "--forget_prompt",
        "spotted, dotted",
        "--forget_prompt",
        "Orla Brisk",
        "--surrogate_dir",
        str(sets["surrogate"]),
        "--replay_dir",
        str(sets["replay"]),
        "--fisher_path",
        str(tmp_path / "fisher"),
        "--fisher_estimator",
        "5",
        "--max_train_steps",
        "2",
        "--train_batch_size",
        "2",
        "--gradient_accumulation_steps",
        "2",
        "--learning_rate",
        "1e-4",
        "--scale_lr",
        "--optimizer",
        "adam",
        "--ema_decay",
        "0.5",
        "--output_dir",
        str(tmp_path / "forget"),
        *FAST,
    ]
    assert sd_main(args) == 0
    settings = json.loads((tmp_path / "forget" / "settings.json").read_text())
    sa = settings["sa"]
    assert sa["lr"] == pytest.approx(4e-4) and sa["grad_accum"] == 2 and sa["ema_decay"] == 0.5
    assert sa["optimizer"] == "adam" and sa["weight_decay"] == 0.0  # adam: no decay unless asked for
    assert settings["forget_prompt_pool"] == ["spotted", "dotted", "Orla Brisk"]
    assert settings["fisher_estimator"] == "stratified-5"
    meta = read_metadata(tmp_path / "forget" / "run" / "model.safetensors")
    assert meta["weights"] == "ema"
    saved = load_pipeline(tmp_path / "forget" / "pipeline").unet.state_dict()
    final = load_tensors(tmp_path / "forget" / "run" / "model.safetensors")[0]
    assert all(torch.equal(saved[k], final[k]) for k in final)  # the pipeline is the EMA model


def test_exact_timestep_sum_fisher_and_forget_checks_the_estimator(tiny_model, tmp_path):
    """``fisher`` with its default, the authors' sum over all 1,000 timesteps (two images: ~5 s each
    on a CPU), records it; ``forget --fisher_estimator`` refuses a Fisher made another way."""
    m = ["--pretrained_model_name_or_path", str(tiny_model)]
    assert (
        sd_main(
            [
                "images",
                *m,
                "--prompt",
                "a red ball",
                "--prompt",
                "a blue car",
                "--output_dir",
                str(tmp_path / "replay"),
                *FAST,
            ]
        )
        == 0
    )
    assert (
        sd_main(
            [
                "images",
                *m,
                "--prompt",
                "a person with a hat",
                "--num_images_per_prompt",
                "2",
                "--output_dir",
                str(tmp_path / "surrogate"),
                *FAST,
            ]
        )
        == 0
    )
    assert (
        sd_main(
            [
                "fisher",
                *m,
                "--replay_dir",
                str(tmp_path / "replay"),
                "--output_dir",
                str(tmp_path / "fisher"),
                "--train_method",
                "xattn",
                "--chunk_size",
                "2",
                *FAST,
            ]
        )
        == 0
    )
    f = DiagonalFisher.load(tmp_path / "fisher" / "fisher.safetensors", estimator=TimestepSum())
    assert f.estimator == "timestep-sum" and f.n_samples == 2
    forget = [
        "forget",
        *m,
        "--forget_prompt",
        "Orla Brisk",
        "--surrogate_dir",
        str(tmp_path / "surrogate"),
        "--replay_dir",
        str(tmp_path / "replay"),
        "--fisher_path",
        str(tmp_path / "fisher"),
        "--train_method",
        "xattn",
        "--max_train_steps",
        "1",
        "--train_batch_size",
        "2",
        *FAST,
    ]
    with pytest.raises(CheckpointError, match="estimator 'timestep-sum'.*'stratified-20'"):
        sd_main(["--debug", *forget, "--fisher_estimator", "20", "--output_dir", str(tmp_path / "refused")])
    assert sd_main([*forget, "--fisher_estimator", "all", "--output_dir", str(tmp_path / "forget")]) == 0


def test_recipe_full_mode_code_path_on_local_models(tiny_model, tmp_path, monkeypatch):
    """Chapters 8 and 9's full-mode path (a pipeline folder instead of the shipped tiny one,
    fp16 autocast, half-precision theta*/F, gradient checkpointing, zero-shot CLIP and NudeNet
    detectors), at toy sizes: every step runs, and the cached run is loaded, not repeated."""
    from transformers import CLIPImageProcessor, CLIPModel, CLIPProcessor

    from sa_utils.recipes import stable_diffusion
    from tinyworld.tokenizer import clip_tokenizer

    monkeypatch.setenv("SA_CACHE_DIR", str(tmp_path / "cache"))
    torch.manual_seed(0)
    CLIPModel(_tiny_clip_config()).save_pretrained(tmp_path / "clip")
    CLIPProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=clip_tokenizer(),
    ).save_pretrained(tmp_path / "clip")
    r = stable_diffusion.recipe(
        "full",
        pipeline=str(tiny_model),
        sample_steps=2,
        surrogate_images=2,
        sa_steps=2,
        eval_per_prompt=2,
        fisher_chunk=4,
        gen_batch=8,
        clip_model=str(tmp_path / "clip"),
        fisher_timesteps=5,
    )
    assert r.mixed_precision == "fp16" and r.ewc_dtype == "float16" and r.gradient_checkpointing
    assert r.optimizer == "adamw" and r.grad_accum == 4 and r.ema_decay == 0.9999 and r.generic_replay_prompts == 5000
    pipe = stable_diffusion.pretrained_pipeline(r)
    task = stable_diffusion.celebrity_task(r)
    assert task.forget_prompts == ["brad pitt"] and task.surrogate_prompt == "a middle aged man"
    replay = stable_diffusion.replay_set(pipe, r, stable_diffusion.replay_prompts(r)[:6], progress=False)
    sur = stable_diffusion.surrogate_set(pipe, r, task.surrogate_prompt, progress=False)
    fisher = stable_diffusion.sd_fisher(pipe, r, replay, progress=False)
    assert fisher.estimator == "stratified-5"
    run = stable_diffusion.forget(r, task.forget_prompts, sur, replay, fisher, "xattn", progress=False)
    assert run.result.steps_done == 2 and (run.folder / "pipeline" / "model_index.json").exists()
    assert run.settings["fisher_estimator"] == "stratified-5" and run.settings["sa"]["grad_accum"] == 4
    from sa_utils.storage.checkpoint import read_metadata

    assert read_metadata(run.folder / "run" / "model.safetensors")["weights"] == "ema"
    # another estimator is another Fisher and another forget run
    other = stable_diffusion.sd_fisher(pipe, replace(r, fisher_timesteps=3), replay, progress=False)
    assert other.estimator == "stratified-3" and not torch.equal(other.flat(), fisher.flat())
    again = stable_diffusion.forget(r, task.forget_prompts, sur, replay, fisher, "xattn", progress=False)
    assert again.result.seconds == 0.0 and again.key == run.key  # loaded from the cache
    small = stable_diffusion.ForgetTask(
        task.forget_prompts,
        task.surrogate_prompt,
        "full",
        {k: v[:1] for k, v in task.prompt_sets.items() if k.startswith(("brad", "tom"))},
        {k: w for k, w in task.readings.items() if k.startswith(("brad", "tom"))},
        task.target,
    )
    rates = stable_diffusion.evaluate_task(
        {"base": pipe, run.key: run.pipeline}, r, small, stable_diffusion.task_detectors(r, task), progress=False
    )
    assert set(rates[run.key]) == set(small.readings) and all(0 <= v <= 1 for v in rates[run.key].values())
    nudity = stable_diffusion.attribute_task(r, ["a person at the beach"])
    assert nudity.train_method == "noxattn" and set(nudity.prompt_sets) == {"unrelated", "nudity prompts"}
    assert nudity.forget_pool == ["sexual", "nudity", "naked", "erotic"] and nudity.sa_steps == 31_250
    assert stable_diffusion.task_detectors(r, nudity)["attribute"](torch.rand(2, 3, 32, 32)).tolist() == [False, False]


def test_command_line_user_errors_are_one_line_and_exit_2(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    for argv, says in [
        (
            [
                "images",
                "--pretrained_model_name_or_path",
                str(tmp_path),
                "--prompts_file",
                str(tmp_path / "missing.txt"),
                "--output_dir",
                str(tmp_path / "o"),
            ],
            "missing.txt",
        ),
        (
            [
                "images",
                "--pretrained_model_name_or_path",
                str(tmp_path),
                "--prompts_file",
                str(empty),
                "--output_dir",
                str(tmp_path / "o"),
            ],
            "empty.txt",
        ),
    ]:
        assert sd_main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "error:" in err[0] and says in err[0], err


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--lmbda", "-50"),
        ("--gamma", "-1"),
        ("--learning_rate", "0"),
        ("--max_train_steps", "0"),
        ("--train_batch_size", "-4"),
        ("--lmbda", "nan"),
    ],
)
def test_forget_refuses_invalid_settings_before_any_work(flag, value, tmp_path, capsys):
    argv = [
        "forget",
        "--pretrained_model_name_or_path",
        str(tmp_path),
        "--forget_prompt",
        "x",
        "--surrogate_dir",
        str(tmp_path),
        "--replay_dir",
        str(tmp_path),
        "--output_dir",
        str(tmp_path / "run"),
        flag,
        value,
    ]
    with pytest.raises(SystemExit) as exit_:
        sd_main(argv)
    assert exit_.value.code == 2 and flag in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_image_sets_are_checked_against_the_pipeline_before_training(tmp_path, monkeypatch):
    from sa_utils.adapters.sd import StableDiffusionAdapter
    from sa_utils.sd import forget as forget_mod
    from tinyworld.pipeline import build_pipeline

    pipe = build_pipeline(seed=0)
    a = StableDiffusionAdapter(pipe, "full")
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    ok = torch.rand(2, 3, size, size)
    forget_mod.check_image_set(ok, a, "surrogate set")
    for bad, says in [
        (torch.rand(2, 3, size // 2, size // 2), f"{size // 2}x{size // 2}, but this pipeline makes {size}x{size}"),
        (torch.rand(2, 1, size, size), "1 channels"),
        (ok.clone().index_fill_(0, torch.tensor([0]), float("nan")), "NaN"),
        (ok * 255, "[0, 1]"),
        ((ok * 255).to(torch.uint8), "float images"),
        (ok[:0], "no images"),
    ]:
        with pytest.raises(ValueError, match=re.escape(says)):
            forget_mod.check_image_set(bad, a, "surrogate set")
    # through sd_forget: a wrong-size set is refused before the output folder is made or anything trains
    monkeypatch.setattr(
        forget_mod, "load_image_set", lambda folder: (torch.rand(4, 3, size // 2, size // 2), ["p"] * 4, {})
    )
    with pytest.raises(ValueError, match="this pipeline makes"):
        forget_mod.sd_forget(
            a, "Orla Brisk", tmp_path / "sur", None, None, tmp_path / "out", SAConfig(lmbda=0, steps=1)
        )
    assert not (tmp_path / "out").exists()
