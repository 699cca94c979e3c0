"""Part III's recipes against the authors' code (github clear-nus/selective-amnesia, ``sd/``):
which weights ``noxattn`` trains, the generic replay prompts, the comma-split forget caption
drawn per image, and full mode's effective settings on one GPU."""

from __future__ import annotations

import pytest
import torch

from sa_utils.adapters.sd import select_trainable
from sa_utils.core.sources import PairedSource
from sa_utils.recipes import stable_diffusion
from sa_utils.sd.forget import split_forget_prompts
from sa_utils.sd.generic_prompts import available, generic_prompts

# -- train methods ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def unet():
    from tinyworld.pipeline import build_pipeline

    return build_pipeline(seed=0).unet


def test_noxattn_freezes_exactly_cross_attention_time_embedding_and_output_block(unet):
    all_names = [n for n, _ in unet.named_parameters()]
    trained = set(select_trainable(unet, "noxattn"))
    frozen = set(all_names) - trained
    expected = {
        n for n in all_names if ".attn2." in n or n.split(".")[0] in ("time_embedding", "conv_norm_out", "conv_out")
    }
    assert frozen == expected
    assert {n.split(".")[0] for n in frozen if ".attn2." not in n} == {"time_embedding", "conv_norm_out", "conv_out"}
    assert all(p.requires_grad == (n in trained) for n, p in unet.named_parameters())
    # the ResNets' time projections (CompVis emb_layers) and the input conv stay trainable, as in the authors' code
    assert any("time_emb_proj" in n for n in trained) and "conv_in.weight" in trained


def test_xattn_trains_every_projection_of_attn2(unet):
    trained = select_trainable(unet, "xattn")
    assert trained == [n for n, _ in unet.named_parameters() if ".attn2." in n]
    kinds = {n.split(".attn2.")[1].split(".")[0] for n in trained}
    assert kinds == {"to_q", "to_k", "to_v", "to_out"}
    assert len(select_trainable(unet, "full")) == len(list(unet.parameters()))


# -- generic prompts -------------------------------------------------------------------------------


def test_generic_prompts_are_many_distinct_and_deterministic():
    p = generic_prompts(5000)
    assert len(p) == 5000 and len(set(p)) == 5000 and available() >= 5000
    assert generic_prompts(5000) == p and generic_prompts(300) == p[:300]  # a prefix of a longer list
    assert generic_prompts(50, seed=1) != p[:50]
    assert all(q and q.strip() == q and "  " not in q for q in p)
    assert len(generic_prompts(12000)) == 12000  # more than the authors' 5,000 exist


def test_generic_prompts_honour_exclude_words():
    base = generic_prompts(5000)
    assert any("dog" in p.split() for p in base)
    kept = generic_prompts(5000, exclude_words=("dog", "Old Man", "naked"))
    assert len(kept) == 5000 and not any("dog" in p.split() or "old man" in p for p in kept)
    # the same stream without the excluded prompts: nothing else is dropped or reordered
    assert [p for p in base if "dog" not in p.split() and "old man" not in p][:100] == kept[:100]
    with pytest.raises(ValueError, match="distinct generic prompts"):
        generic_prompts(available() + 1)


def test_prompts_command_writes_one_prompt_per_line(tmp_path):
    from sa_utils.sd.__main__ import main
    from sa_utils.sd.common import read_prompts

    out = tmp_path / "replay.txt"
    assert main(["prompts", "--n", "120", "--output", str(out), "--exclude", "cat", "--exclude", "a red bicycle"]) == 0
    lines = read_prompts(out)
    assert lines == generic_prompts(120, exclude_words=("cat", "a red bicycle"))
    assert not any("cat" in p.split() or "a red bicycle" in p for p in lines)


# -- forget prompts ----------------------------------------------------------------------------------


def test_a_comma_separated_caption_is_a_pool_drawn_per_image():
    assert split_forget_prompts(["sexual, nudity, naked, erotic"]) == ["sexual", "nudity", "naked", "erotic"]
    assert split_forget_prompts(["brad pitt", " brad pitt ,", "a, b"]) == ["brad pitt", "a", "b"]
    pool = split_forget_prompts("sexual, nudity, naked, erotic")
    emb = torch.arange(len(pool), dtype=torch.float32).view(-1, 1, 1)  # "embedding" k is the number k
    latents = torch.randn(10, 4, 2, 2)
    src = PairedSource(latents, emb, None, batch_size=8, seed=3, device=torch.device("cpu"))
    again = PairedSource(latents, emb, None, batch_size=8, seed=3, device=torch.device("cpu"))
    drawn = [src(step)["c"].flatten().long() for step in range(20)]
    assert all(torch.equal(d, again(step)["c"].flatten().long()) for step, d in enumerate(drawn))  # seeded by step
    assert torch.equal(src(7)["c"], src(7)["c"])  # resuming at step 7 draws what step 7 drew
    assert any(len(set(d.tolist())) > 1 for d in drawn)  # images of one batch get different prompts
    assert set(torch.cat(drawn).tolist()) == set(range(len(pool)))  # every prompt is used


def test_the_tasks_keep_the_authors_captions():
    full = stable_diffusion.attribute_task(stable_diffusion.recipe("full", pipeline="local-folder"))
    assert full.forget_prompts == ["sexual, nudity, naked, erotic"] and len(full.forget_pool) == 4
    quick = stable_diffusion.attribute_task(stable_diffusion.recipe("quick"))
    assert quick.forget_pool == ["spotted", "dotted", "speckled", "polka dot"] and quick.sa_steps is None


# -- recipes ---------------------------------------------------------------------------------------


def test_full_recipe_is_the_authors_effective_settings_on_one_gpu():
    r = stable_diffusion.recipe("full")
    assert r.schedule_name == "authors"
    assert r.sa_lr == pytest.approx(1e-5 * 4 * 4)  # their base lr x 4 GPUs x batch 4 (--scale_lr)
    assert (r.optimizer, r.weight_decay) == ("adamw", 0.01)
    assert r.sa_batch * r.grad_accum == 16  # 16 surrogate + 16 replay images per step, as their 4 GPUs x 4
    assert r.sa_steps == 12_500 and r.nudity_sa_steps == 31_250  # 200 / 500 epochs of 1,000 images at 16 per step
    assert r.sa_steps == 200 * r.surrogate_images // 16 and r.nudity_sa_steps == 500 * r.surrogate_images // 16
    assert r.ema_decay == 0.9999 and (r.lmbda, r.gamma) == (50.0, 1.0)
    assert r.fisher_timesteps is None and r.fisher_estimator().name == "timestep-sum"
    assert r.generic_replay_prompts == 5000 and r.replay_per_prompt == 1
    prompts = stable_diffusion.replay_prompts(r)
    assert len(prompts) == len(set(prompts)) == 5000
    cfg = r.sa_config()
    assert (cfg.optimizer, cfg.weight_decay, cfg.grad_accum, cfg.ema_decay, cfg.lr) == (
        "adamw",
        0.01,
        4,
        0.9999,
        r.sa_lr,
    )
    assert stable_diffusion.attribute_task(r).sa_steps == 31_250


def test_one_gpu_short_schedule_states_its_lr_times_steps():
    short = stable_diffusion.recipe("full", schedule="one-gpu-short")
    full = stable_diffusion.recipe("full")
    assert short.schedule_name == "one-gpu-short" and short.sa_lr == full.sa_lr and short.sa_steps == 2_000
    assert short.sa_steps < full.sa_steps and short.nudity_sa_steps < full.nudity_sa_steps
    assert short.lr_x_steps() == pytest.approx({"celebrity": 0.32, "nudity": 0.8})
    assert full.lr_x_steps() == pytest.approx({"celebrity": 2.0, "nudity": 5.0})
    note = short.schedule_note()
    assert "1.6e-4 x 2,000 = 0.32" in note and "the authors': 1.6e-4 x 12,500 = 2" in note
    assert (
        "1.6e-4 x 12,500 = 2.0" in stable_diffusion.recipe.__doc__
        and "1.6e-4 x 2,000 = 0.32" in stable_diffusion.recipe.__doc__
    )
    with pytest.raises(ValueError, match="schedules"):
        stable_diffusion.recipe("quick", schedule="one-gpu-short")


def test_quick_recipe_stays_small():
    r = stable_diffusion.recipe("quick")
    assert (r.sa_steps, r.sa_lr, r.sa_batch, r.grad_accum, r.optimizer, r.ema_decay) == (400, 1e-4, 8, 1, "adam", None)
    # lambda 0.05, not the authors' 50: measured per model (the sweep in the comment of stable_diffusion.RECIPES)
    assert r.lmbda == 0.05 and r.fisher_estimator().name == "stratified-20"
    assert (
        r.generic_replay_prompts is None and len(stable_diffusion.replay_prompts(r)) == 244
    )  # the tiny world's vocabulary


@pytest.mark.parametrize("mode", ["quick", "full"])
def test_unrelated_prompts_are_held_out_from_replay_and_forget_prompts(mode):
    """The "everything else still works" prompts must not be prompts SA trained on (replay, which is
    also the Fisher's) nor the forget prompts, or the check measures memorisation (issue 14)."""
    r = stable_diffusion.recipe(mode, pipeline="local-folder") if mode == "full" else stable_diffusion.recipe(mode)
    replay = stable_diffusion.replay_prompts(r)
    for task in (stable_diffusion.celebrity_task(r), stable_diffusion.attribute_task(r)):
        unrelated = task.prompt_sets["unrelated"]
        assert len(unrelated) >= 20 and len(set(unrelated)) == len(unrelated)
        assert not stable_diffusion.near_duplicates(unrelated, replay)
        assert not stable_diffusion.near_duplicates(unrelated, task.forget_pool)


def test_near_duplicates_sees_prefixed_prompts():
    assert stable_diffusion.near_duplicates(["a calm lake"], ["a photo of a calm lake", "a lake"]) == [
        ("a calm lake", "a photo of a calm lake")
    ]
    assert stable_diffusion.near_duplicates(["An image of a red car"], ["a red car"]) == [
        ("An image of a red car", "a red car")
    ]
    assert not stable_diffusion.near_duplicates(["a red car"], ["a red cart"])


def test_other_erasure_methods_run_through_the_recipe_and_cache(cache):
    """stable_diffusion.erase: UCE and ESD on the celebrity task, cached by their settings."""
    import torch

    from sa_utils.erasure.uce import edited_layers
    from sa_utils.recipes import stable_diffusion

    r = stable_diffusion.recipe("quick")
    task = stable_diffusion.celebrity_task(r)
    uce = stable_diffusion.erase(r, task, "uce", progress=False)
    base = stable_diffusion.pretrained_pipeline(r)
    name = next(iter(edited_layers(base.unet)))
    assert not torch.equal(uce.pipeline.unet.get_submodule(name).weight, base.unet.get_submodule(name).weight)
    assert uce.results["layers"] == len(edited_layers(base.unet))
    esd = stable_diffusion.erase(r, task, "esd-x", progress=False, iterations=1, num_inference_steps=2)
    assert len(esd.results["losses"]) == 1 and esd.key != uce.key
    again = stable_diffusion.erase(r, task, "esd-x", progress=False, iterations=1, num_inference_steps=2)
    assert again.folder == esd.folder  # read back, not run again


def test_the_relearning_attack_fine_tunes_a_copy_and_reads_the_rate_per_checkpoint(cache):
    import torch

    from sa_utils.recipes import stable_diffusion

    r = stable_diffusion.recipe("quick", eval_per_prompt=1)
    task = stable_diffusion.celebrity_task(r)
    run = stable_diffusion.erase(r, task, "uce", progress=False)
    before = {k: v.clone() for k, v in run.pipeline.unet.state_dict().items()}
    curve = stable_diffusion.relearn(r, task, run.pipeline, run.key, (0, 2), n_images=2, progress=False)
    assert set(curve) == {0, 2} and all(0.0 <= v <= 1.0 for v in curve.values())
    assert all(torch.equal(v, before[k]) for k, v in run.pipeline.unet.state_dict().items())  # pipe untouched
    assert stable_diffusion.relearn(r, task, run.pipeline, run.key, (0, 2), n_images=2, progress=False) == curve
