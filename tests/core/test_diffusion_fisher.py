"""The diffusion Fisher as the authors compute it: per sample, the gradient of the loss summed over
all timesteps, squared. Batched (chunks of noised copies) against their one-timestep loop."""

from __future__ import annotations

import warnings

import pytest
import torch

from sa_utils.adapters.ddpm import DDPMAdapter
from sa_utils.adapters.sd import StableDiffusionAdapter
from sa_utils.core.fisher import DiagonalFisher, TimestepSum, diagonal_fisher
from sa_utils.models.unet import UNetConfig, build_unet
from sa_utils.storage.checkpoint import CheckpointError

warnings.filterwarnings("ignore", message=".*batching rule.*")
TINY_UNET = UNetConfig(block_out_channels=(8, 16), norm_num_groups=4, attention_levels=(1,))
T = 40  # a short noise schedule keeps the per-timestep reference loop fast


def _rel(a: DiagonalFisher, b: DiagonalFisher) -> float:
    """Largest entry difference relative to the largest entry of its tensor.

    Tensors whose exact Fisher is zero (an attention key's bias cannot change a softmax) hold
    float noise ~1e-17 of the largest entries; their scale is floored at 1e-6 of the global one."""
    floor = 1e-6 * max(float(v.abs().max()) for v in b.values.values())
    return max(
        float((a.values[k] - b.values[k]).abs().max()) / max(float(b.values[k].abs().max()), floor) for k in b.values
    )


@pytest.fixture(scope="module")
def ddpm() -> DDPMAdapter:
    torch.manual_seed(0)
    return DDPMAdapter(build_unet(TINY_UNET), TINY_UNET, num_train_timesteps=T)


@pytest.fixture(scope="module")
def samples() -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(3)
    x, c = torch.rand(3, 1, 28, 28, generator=g), torch.tensor([0, 4, 10])
    return [{"x": x[:2], "c": c[:2]}, {"x": x[2:], "c": c[2:]}]


@pytest.mark.parametrize("est", [TimestepSum(chunk=7), TimestepSum(chunk=16, cond_drop=0.3), TimestepSum(k=8, chunk=3)])
def test_batched_timestep_sum_equals_the_authors_loop(ddpm, samples, est):
    fast = diagonal_fisher(ddpm, samples, estimator=est, seed=1, progress=False)
    ref = diagonal_fisher(ddpm, samples, estimator=est, method="loop", seed=1, progress=False)
    assert fast.n_samples == 3 and fast.estimator == est.name
    assert _rel(fast, ref) < 1e-5
    # the result does not depend on the chunk size or on how the samples are batched
    one_batch = [{k: torch.cat([s[k] for s in samples]) for k in ("x", "c")}]
    other = diagonal_fisher(
        ddpm, one_batch, estimator=TimestepSum(k=est.k, chunk=5, cond_drop=est.cond_drop), seed=1, progress=False
    )
    assert _rel(other, ref) < 1e-5


def test_sum_before_square_is_not_the_one_draw_fisher(ddpm, samples):
    exact = diagonal_fisher(ddpm, samples, estimator=TimestepSum(), progress=False)
    single = diagonal_fisher(ddpm, samples, method="loop", progress=False)
    ratio = float(exact.flat().sum() / single.flat().sum())
    assert ratio > T  # the square of a sum of T gradients, not the square of one


def test_stratified_draws_cover_every_stratum_and_weights_sum_to_T():
    g = torch.Generator().manual_seed(0)
    t, w = TimestepSum(k=7).draw(1000, g)
    edges = torch.linspace(0, 1000, 8).round().long()
    assert ((t >= edges[:-1]) & (t < edges[1:])).all() and float(w.sum()) == 1000
    t, w = TimestepSum().draw(1000, g)
    assert torch.equal(t, torch.arange(1000)) and float(w.sum()) == 1000
    with pytest.raises(ValueError, match="positive integer"):
        TimestepSum(k=0)


def test_fisher_file_records_its_estimator_and_loading_refuses_another(ddpm, samples, tmp_path):
    f = diagonal_fisher(ddpm, samples, estimator=TimestepSum(k=4), progress=False)
    path = f.save(tmp_path / "f.safetensors")
    assert DiagonalFisher.load(path, ddpm.model, estimator=TimestepSum(k=4)).estimator == "stratified-4"
    with pytest.raises(CheckpointError, match="estimator 'stratified-4'.*'timestep-sum'"):
        DiagonalFisher.load(path, ddpm.model, estimator=TimestepSum())
    with pytest.raises(ValueError, match="not a diffusion adapter"):
        from sa_utils.adapters.vae import VAEAdapter
        from sa_utils.models.cvae import CVAE, CVAEConfig

        diagonal_fisher(VAEAdapter(CVAE(CVAEConfig())), samples, estimator=TimestepSum(), progress=False)


def test_tiny_sd_unet_batched_equals_loop():
    from tinyworld.pipeline import build_pipeline

    a = StableDiffusionAdapter(build_pipeline(seed=0), "full")
    a.noise_scheduler = type(a.noise_scheduler).from_config(a.noise_scheduler.config, num_train_timesteps=T)
    a._init_schedule()
    c = a.encode_prompts(["a red ball", "a person with a hat"])
    z = torch.randn(
        2,
        a.model.config.in_channels,
        a.model.config.sample_size,
        a.model.config.sample_size,
        generator=torch.Generator().manual_seed(0),
    )
    batch = [{"x": z, "c": c}]
    fast = diagonal_fisher(a, batch, estimator=TimestepSum(chunk=9), progress=False)
    ref = diagonal_fisher(a, batch, estimator=TimestepSum(), method="loop", progress=False)
    assert _rel(fast, ref) < 1e-5
