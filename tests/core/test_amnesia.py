import dataclasses
import re

import pytest
import torch

from sa_utils.adapters import VAEAdapter
from sa_utils.core.amnesia import CHECKPOINT, FINAL, NonFiniteLossError, SAConfig, selective_amnesia
from sa_utils.core.fisher import diagonal_fisher
from sa_utils.core.replay import frozen_copy
from sa_utils.core.sources import ForgetSource, ReplaySource
from sa_utils.core.surrogates import constant_image, other_class, uniform_noise
from sa_utils.storage.checkpoint import CheckpointError, load_model


def _parts(adapter, batches, **cfg):
    frozen = frozen_copy(adapter)
    fisher = diagonal_fisher(adapter, batches, progress=False)
    forget = ForgetSource(uniform_noise(), 0, 8, seed=0)
    replay = ReplaySource(frozen, range(1, 10), 8, seed=0)
    config = SAConfig(**{"lmbda": 10.0, "steps": 6, "lr": 1e-3, "checkpoint_every": 2, "log_every": 1, **cfg})
    return frozen, fisher, forget, replay, config


def _state(adapter):
    return {k: v.clone() for k, v in adapter.model.state_dict().items()}


def test_sa_steps_lower_the_surrogate_loss_and_keep_the_frozen_copy(tiny_vae, tiny_batches):
    frozen, fisher, forget, replay, config = _parts(tiny_vae, tiny_batches, steps=30)
    before = _state(frozen)
    result = selective_amnesia(tiny_vae, forget, replay, fisher, config, progress=False)
    assert result.steps_done == 30
    assert result.history[-1]["forget_loss"] < result.history[0]["forget_loss"]
    assert result.history[-1]["ewc_penalty"] > 0
    assert all(torch.equal(before[k], v) for k, v in frozen.model.state_dict().items())


def test_only_trainable_parameters_change(tiny_vae, tiny_batches):
    tiny_vae.model.enc1.requires_grad_(False)
    frozen, fisher, forget, replay, config = _parts(tiny_vae, tiny_batches)
    before = _state(tiny_vae)
    selective_amnesia(tiny_vae, forget, replay, fisher, config, progress=False)
    after = tiny_vae.model.state_dict()
    assert torch.equal(before["enc1.weight"], after["enc1.weight"])
    assert not torch.equal(before["dec3.weight"], after["dec3.weight"])


def test_resume_reproduces_an_uninterrupted_run_exactly(tiny_vae, tiny_batches, tmp_path):
    start = _state(tiny_vae)
    frozen, fisher, forget, replay, config = _parts(tiny_vae, tiny_batches)
    selective_amnesia(tiny_vae, forget, replay, fisher, config, run_dir=tmp_path / "a", progress=False)
    straight = _state(tiny_vae)

    tiny_vae.model.load_state_dict(start)
    short = SAConfig(**{**config.to_dict(), "steps": 4})
    selective_amnesia(tiny_vae, forget, replay, fisher, short, run_dir=tmp_path / "b", progress=False)
    assert (tmp_path / "b" / CHECKPOINT).exists() and (tmp_path / "b" / FINAL).exists()
    fresh = VAEAdapter(frozen_copy(frozen).model.train().requires_grad_(True))
    fresh.model.load_state_dict(start)  # a new process would rebuild theta* the same way
    result = selective_amnesia(fresh, forget, replay, fisher, config, run_dir=tmp_path / "b", progress=False)
    assert result.resumed_from == 4 and result.steps_done == 6
    for k, v in straight.items():
        torch.testing.assert_close(fresh.model.state_dict()[k], v, rtol=0, atol=0)
    meta = load_model(fresh.model, tmp_path / "b" / FINAL)
    assert meta["steps"] == 6


def test_resume_with_other_settings_is_refused(tiny_vae, tiny_batches, tmp_path):
    frozen, fisher, forget, replay, config = _parts(tiny_vae, tiny_batches)
    selective_amnesia(tiny_vae, forget, replay, fisher, config, run_dir=tmp_path, progress=False)
    other = SAConfig(**{**config.to_dict(), "lmbda": 1.0})
    with pytest.raises(CheckpointError, match="different run_dir"):
        selective_amnesia(tiny_vae, forget, replay, fisher, other, run_dir=tmp_path, progress=False)


def test_a_nan_surrogate_is_refused_before_the_first_update(tiny_vae, tiny_batches):
    frozen, fisher, _, replay, config = _parts(tiny_vae, tiny_batches)
    before = _state(tiny_vae)
    bad = ForgetSource(constant_image(float("nan")), 0, 8)
    with pytest.raises(ValueError, match=r"forget \(surrogate\) source's batch holds 6272 NaN"):
        selective_amnesia(tiny_vae, bad, replay, fisher, config, progress=False)
    assert all(torch.equal(before[k], v) for k, v in tiny_vae.model.state_dict().items())


def _nan_from(source, first_bad: int):
    """``source``'s batches, NaN from step ``first_bad`` on (a loss that diverges mid-run)."""

    def draw(step):
        batch = source(step)
        return batch if step < first_bad else {**batch, "x": torch.full_like(batch["x"], float("nan"))}

    return draw


def test_nan_loss_stops_before_the_update(tiny_vae, tiny_batches):
    frozen, fisher, forget, replay, config = _parts(tiny_vae, tiny_batches)
    one_step = frozen_copy(tiny_vae)
    one_step.model.requires_grad_(True)
    selective_amnesia(one_step, forget, replay, fisher, dataclasses.replace(config, steps=1), progress=False)
    with pytest.raises(NonFiniteLossError, match="step 1: .*not updated"):
        selective_amnesia(tiny_vae, _nan_from(forget, 1), replay, fisher, config, progress=False)
    # step 0 updated the weights, the NaN step 1 did not: they equal a one-step run's
    ref = one_step.model.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in tiny_vae.model.state_dict().items())


def test_bad_inputs_are_clear_errors(tiny_vae, tiny_batches):
    frozen, fisher, forget, replay, config = _parts(tiny_vae, tiny_batches)
    with pytest.raises(ValueError, match=r"class ids must lie in \[0, 9\]"):
        ReplaySource(frozen, [3, 11], 8)
    with pytest.raises(ValueError, match="no Fisher"):
        selective_amnesia(tiny_vae, forget, replay, None, config, progress=False)
    with pytest.raises(ValueError, match="no remember source"):
        selective_amnesia(tiny_vae, forget, None, fisher, config, progress=False)
    with pytest.raises(ValueError, match="class ids"):
        selective_amnesia(tiny_vae, ForgetSource(uniform_noise(), 12, 8), replay, fisher, config, progress=False)
    with pytest.raises(ValueError, match="class ids"):
        other_class(frozen, 10)


def test_ablations_run_without_ewc_or_replay(tiny_vae, tiny_batches):
    frozen, fisher, forget, replay, config = _parts(tiny_vae, tiny_batches)
    surrogate_only = SAConfig(**{**config.to_dict(), "lmbda": 0.0, "gamma": 0.0})
    result = selective_amnesia(tiny_vae, forget, None, None, surrogate_only, progress=False)
    assert all(r["replay_loss"] == 0 and r["ewc_penalty"] == 0 for r in result.history)


@pytest.mark.parametrize(
    "field, value, says",
    [
        ("lmbda", -5.0, ">= 0"),
        ("gamma", -1.0, ">= 0"),
        ("lmbda", float("nan"), "finite"),
        ("lr", -1e-4, ">= 0"),
        ("steps", 0, "integer >= 1"),
        ("steps", 2.5, "integer >= 1"),
        ("grad_accum", 0, "integer >= 1"),
        ("checkpoint_every", -1, "integer >= 0"),
        ("log_every", 0, "integer >= 1"),
        ("grad_clip", 0.0, "> 0"),
        ("ema_decay", 1.0, "(0, 1)"),
        ("optimizer", "sgd", "'adam' or 'adamw'"),
        ("mixed_precision", "fp8", "'bf16'"),
        ("ewc_dtype", "int8", "'bfloat16'"),
        ("weight_decay", -0.01, ">= 0"),
        ("fused", "yes", "True (fused"),
    ],
)
def test_every_invalid_setting_is_refused_where_it_is_made(field, value, says):
    with pytest.raises(ValueError, match=rf"SAConfig\.{field} = .*{re.escape(says)}"):
        SAConfig(**{field: value})


def test_a_divergence_before_the_first_checkpoint_says_there_is_none(tiny_vae, tiny_batches, tmp_path):
    frozen, fisher, _, replay, config = _parts(tiny_vae, tiny_batches)
    frozen, fisher, forget, replay, config = _parts(tiny_vae, tiny_batches)  # the first checkpoint after step 2
    with pytest.raises(NonFiniteLossError, match="no checkpoint was written yet") as err:
        selective_amnesia(
            tiny_vae, _nan_from(forget, 1), replay, fisher, config, run_dir=tmp_path / "run", progress=False
        )
    assert "last checkpoint" not in str(err.value) and not (tmp_path / "run" / CHECKPOINT).exists()


def test_a_divergence_after_a_checkpoint_names_it_and_its_step(tiny_vae, tiny_batches, tmp_path):
    frozen, fisher, forget, replay, config = _parts(tiny_vae, tiny_batches)  # checkpoints every 2 steps
    with pytest.raises(NonFiniteLossError, match=r"the last checkpoint \(step 2\) is .*checkpoint\.safetensors"):
        selective_amnesia(
            tiny_vae, _nan_from(forget, 3), replay, fisher, config, run_dir=tmp_path / "run", progress=False
        )


_TWO_PROCESS_RUN = """
import sys, torch
sys.path.insert(0, {tests!r})
from conftest import TINY
from sa_utils.adapters import VAEAdapter
from sa_utils.core.amnesia import SAConfig, selective_amnesia
from sa_utils.storage.checkpoint import weights_digest
from sa_utils.models import CVAE
from sa_utils.core.sources import ForgetSource
from sa_utils.core.surrogates import uniform_noise
torch.manual_seed(0)
a = VAEAdapter(CVAE(TINY))
res = selective_amnesia(a, ForgetSource(uniform_noise(), 0, 8), None, None,
                        SAConfig(lmbda=0, gamma=0, steps=40, lr=1e-3, checkpoint_every=10), run_dir={run!r},
                        progress=False)
print(res.resumed_from, weights_digest(a.model))
"""


def test_two_processes_on_one_run_folder_give_one_result(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = _TWO_PROCESS_RUN.format(tests=str(Path(__file__).parents[1]), run=str(tmp_path / "run"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env) for _ in range(2)
    ]
    outs = [p.communicate(timeout=300)[0].split("\n") for p in procs]
    assert all(p.returncode == 0 for p in procs)
    lines = sorted(o[-2] if o[-1] == "" else o[-1] for o in outs)  # "<resumed_from> <digest>"
    resumed = sorted(int(line.split()[0]) for line in lines)
    assert resumed == [0, 40], outs  # one trained, the other waited and loaded the finished run
    assert len({line.split()[1] for line in lines}) == 1  # the same weights in both


@pytest.mark.parametrize(
    "make, says",
    [
        (lambda b: {**b, "x": b["x"][:, :, :16, :16]}, r"shape \(8, 1, 16, 16\), this model needs \[N, 1, 28, 28\]"),
        (lambda b: {**b, "x": b["x"].repeat(1, 3, 1, 1)}, r"shape \(8, 3, 28, 28\)"),
        (lambda b: {**b, "x": (b["x"] * 255).to(torch.uint8)}, r"dtype torch.uint8; .*divide by 255"),
        (
            lambda b: {**b, "x": b["x"] * 2 - 1},
            r"values in \[-[\d.]+, [\d.]+\]; this model needs \[0, 1\].*\(x \+ 1\) / 2",
        ),
        (lambda b: {**b, "c": b["c"][:4]}, r"'x' holds 8 items but 'c' holds 4"),
        (lambda b: {"x": b["x"]}, r"a batch is a dict with 'x' \(data\) and 'c'"),
    ],
)
def test_a_wrong_batch_source_is_refused_before_the_first_update(tiny_vae, tiny_batches, make, says):
    frozen, fisher, forget, replay, config = _parts(tiny_vae, tiny_batches)
    before = _state(tiny_vae)
    with pytest.raises(ValueError, match="forget \\(surrogate\\) source's batch.*" + says):
        selective_amnesia(tiny_vae, lambda step: make(forget(step)), replay, fisher, config, progress=False)
    with pytest.raises(ValueError, match="remember \\(replay\\) source's batch.*" + says):
        selective_amnesia(tiny_vae, forget, lambda step: make(replay(step)), fisher, config, progress=False)
    assert all(torch.equal(before[k], v) for k, v in tiny_vae.model.state_dict().items())


def test_the_fisher_and_the_classifier_refuse_wrong_images(tiny_vae, tiny_batches):
    from sa_utils.eval import metrics
    from sa_utils.models import MNISTClassifier

    bad = [{**tiny_batches[0], "x": tiny_batches[0]["x"] * 2 - 1}]
    with pytest.raises(
        ValueError, match=r"Fisher.s first batch has values in \[-0\.282, 0\.248\]; this model needs \[0, 1\]"
    ):
        diagonal_fisher(tiny_vae, bad, progress=False)
    clf = MNISTClassifier()
    with pytest.raises(ValueError, match=r"classify: .*uint8 of shape"):
        metrics.classify(clf, torch.zeros(4, 1, 28, 28, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"classify: images must be finite and in \[0, 1\]; got values in \[-1"):
        metrics.classify(clf, torch.full((4, 1, 28, 28), -1.0))
    probs, _ = metrics.classify(clf, torch.rand(4, 1, 28, 28))  # valid images still pass
    assert probs.shape == (4, 10)


class _SeparateVAE(VAEAdapter):
    joint_batches = False


@pytest.mark.parametrize("fused", [True, False])
def test_joined_batches_and_the_fused_adam_give_the_separate_loop_up_to_rounding(tiny_vae, tiny_batches, fused):
    """The CVAE's forget and replay losses in one call, and PyTorch's fused Adam, are speed-ups
    only: the same run as two calls and the per-tensor Adam loop, to float32 rounding."""
    start = _state(tiny_vae)
    frozen, fisher, forget, replay, config = _parts(tiny_vae, tiny_batches, checkpoint_every=0)
    joined = selective_amnesia(
        tiny_vae, forget, replay, fisher, dataclasses.replace(config, fused=fused), progress=False
    )
    fast = _state(tiny_vae)
    separate = _SeparateVAE(tiny_vae.model)
    separate.model.load_state_dict(start)
    loop = selective_amnesia(separate, forget, replay, fisher, dataclasses.replace(config, fused=False), progress=False)
    slow = _state(separate)
    moved = max((slow[k] - start[k]).abs().max().item() for k in start)
    assert moved > 1e-3  # the run did move the weights
    for k in start:
        torch.testing.assert_close(fast[k], slow[k], rtol=1e-4, atol=1e-5, msg=k)
    for a, b in zip(joined.history, loop.history):
        for term in ("forget_loss", "replay_loss", "ewc_penalty"):
            assert a[term] == pytest.approx(b[term], rel=1e-4, abs=1e-6), term
