"""The class-conditional DDPM adapter of Part II on a tiny UNet: loss, sampler, Fisher, SA, training."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from sa_utils.adapters.ddpm import DDPMAdapter
from sa_utils.core.amnesia import SAConfig, selective_amnesia
from sa_utils.core.fisher import diagonal_fisher, sq_grad_sum_loop, sq_grad_sum_vmap
from sa_utils.core.replay import frozen_copy
from sa_utils.core.sources import DataSource, ForgetSource
from sa_utils.core.surrogates import uniform_noise
from sa_utils.models.unet import UNetConfig, build_unet
from sa_utils.recipes import mnist_ddpm
from sa_utils.storage.checkpoint import CheckpointError
from sa_utils.training import train_ddpm

TINY_UNET = UNetConfig(block_out_channels=(8, 16), norm_num_groups=4, attention_levels=(1,))

warnings.filterwarnings("ignore", message=".*batching rule.*")


@pytest.fixture
def tiny_ddpm() -> DDPMAdapter:
    torch.manual_seed(0)
    return DDPMAdapter(build_unet(TINY_UNET), TINY_UNET, sample_steps=3)


def _batch(n: int = 6, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"x": torch.rand(n, 1, 28, 28, generator=g), "c": torch.randint(0, 11, (n,), generator=g)}


def test_loss_is_per_sample_and_deterministic_given_the_draws(tiny_ddpm):
    b = tiny_ddpm.draw_noise(_batch(), torch.Generator().manual_seed(0))
    assert b["t"].shape == (6,) and b["eps"].shape == (6, 1, 28, 28)
    assert int(b["t"].min()) >= 0 and int(b["t"].max()) < 1000
    loss = tiny_ddpm.loss(b)
    assert loss.shape == (6,) and torch.isfinite(loss).all() and (loss > 0).all()
    assert torch.equal(loss, tiny_ddpm.loss(b))
    # a sample's loss does not depend on the rest of the batch (GroupNorm is per sample)
    one = tiny_ddpm.loss({k: v[2:3] for k, v in b.items()})
    assert torch.allclose(one[0], loss[2], rtol=1e-5, atol=1e-6)


def test_sampler_shapes_range_and_reproducibility(tiny_ddpm):
    c = torch.tensor([0, 3, 9, 10])  # 10 is the null class: unguided samples
    x = tiny_ddpm.sample(c, torch.Generator().manual_seed(0))
    assert x.shape == (4, 1, 28, 28) and x.min() >= 0 and x.max() <= 1
    assert torch.equal(x, tiny_ddpm.sample(c, torch.Generator().manual_seed(0)))
    unguided = tiny_ddpm.sample(c, torch.Generator().manual_seed(0), guidance_scale=0.0)  # the authors' w = 0
    assert torch.allclose(unguided[3], x[3], atol=1e-5)  # guidance leaves the null class alone
    assert not torch.allclose(unguided[0], x[0], atol=1e-4)
    tiny_ddpm.sample_batch = 3  # chunked sampling gives the same images
    assert torch.allclose(tiny_ddpm.sample(c, torch.Generator().manual_seed(0)), x, atol=1e-4)  # float rounding


def test_bad_class_ids_are_clear_errors(tiny_ddpm):
    with pytest.raises(ValueError, match="null"):
        tiny_ddpm.sample(torch.tensor([11]))
    with pytest.raises(ValueError, match="integer class ids"):
        tiny_ddpm.draw_noise({"x": torch.rand(2, 1, 28, 28), "c": torch.tensor([0.0, 1.0])})
    with pytest.raises(ValueError, match="divisible"):
        build_unet(UNetConfig(sample_size=30, block_out_channels=(8, 16, 16), norm_num_groups=4))


def test_vmap_fisher_matches_the_per_sample_loop(tiny_ddpm):
    b = tiny_ddpm.draw_noise(_batch(8), torch.Generator().manual_seed(2))
    ref = sq_grad_sum_loop(tiny_ddpm, b)
    fast = sq_grad_sum_vmap(tiny_ddpm, b, chunk_size=3)
    assert ref.keys() == fast.keys()
    scale = max(float(v.abs().max()) for v in ref.values())
    for k in ref:  # relative to the largest entry: some entries are exactly zero in theory (key biases)
        assert float((ref[k] - fast[k]).abs().max()) <= 1e-4 * scale, k


def test_fisher_is_not_the_square_of_the_batch_gradient(tiny_ddpm):
    b = tiny_ddpm.draw_noise(_batch(8), torch.Generator().manual_seed(3))
    per_sample = sq_grad_sum_vmap(tiny_ddpm, b)
    params = tiny_ddpm.trainable_parameters()
    g = torch.autograd.grad(tiny_ddpm.loss(b).sum(), list(params.values()))
    total_sq = sum(float(x.pow(2).sum()) for x in g)
    assert abs(total_sq - sum(float(v.sum()) for v in per_sample.values())) > 0.05 * total_sq


def test_sa_steps_change_only_trainable_parameters(tiny_ddpm):
    pool_c = torch.tensor([1, 2, 10] * 4)
    pool_x = tiny_ddpm.sample(pool_c, torch.Generator().manual_seed(0))
    fisher = diagonal_fisher(tiny_ddpm, [{"x": pool_x, "c": pool_c}], progress=False)
    assert fisher.metadata["method"] == "vmap"  # a UNet is not all nn.Linear
    student = DDPMAdapter(frozen_copy(tiny_ddpm).model.requires_grad_(True), TINY_UNET, sample_steps=3)
    for n, p in student.model.named_parameters():
        p.requires_grad_(n.startswith("up_blocks"))
    sub = type(fisher)({k: v for k, v in fisher.values.items() if k.startswith("up_blocks")}, fisher.n_samples)
    before = {n: p.detach().clone() for n, p in student.model.named_parameters()}
    forget = ForgetSource(uniform_noise((1, 28, 28)), 0, 4)
    replay = DataSource(pool_x, pool_c, 4)
    res = selective_amnesia(
        student, forget, replay, sub, SAConfig(lmbda=10, steps=3, lr=1e-2, grad_clip=1.0), progress=False
    )
    assert res.steps_done == 3
    for n, p in student.model.named_parameters():
        changed = not torch.equal(p, before[n])
        assert changed == n.startswith("up_blocks") or (n.endswith("to_k.bias") and not changed), n
    assert all(torch.equal(p, before[n]) for n, p in tiny_ddpm.model.named_parameters())


def test_train_ddpm_resumes_exactly(tmp_path):
    x = torch.rand(40, 1, 28, 28)
    y = torch.randint(0, 10, (40,))

    def run(steps, ckpt):
        torch.manual_seed(0)
        a = DDPMAdapter(build_unet(TINY_UNET), TINY_UNET)
        train_ddpm(a, x, y, steps, batch_size=8, checkpoint=ckpt, checkpoint_every=2, progress=False, warmup=2)
        return a.model.state_dict()

    straight = run(4, tmp_path / "a.safetensors")
    run(2, tmp_path / "b.safetensors")
    resumed = run(4, tmp_path / "b.safetensors")
    for k in straight:
        assert torch.allclose(straight[k], resumed[k], atol=1e-6), k


def test_shipped_weights_are_checked_against_the_manifest(tmp_path, monkeypatch):
    from sa_utils.storage import shipped

    monkeypatch.setattr(shipped, "WEIGHTS_DIR", tmp_path)
    monkeypatch.setattr(shipped, "MANIFEST", tmp_path / "MANIFEST.json")
    assert mnist_ddpm.shipped_weights("absent.safetensors") is None
    f = tmp_path / "w.safetensors"
    f.write_bytes(b"weights")
    with pytest.raises(CheckpointError, match="not listed"):
        mnist_ddpm.shipped_weights("w.safetensors")
    (tmp_path / "MANIFEST.json").write_text(json.dumps({"w.safetensors": {"sha256": "0" * 64, "command": "make it"}}))
    with pytest.raises(CheckpointError, match="make it"):
        mnist_ddpm.shipped_weights("w.safetensors")


def test_the_shipped_manifest_matches_the_files():
    manifest = json.loads(mnist_ddpm.MANIFEST.read_text())
    for name, entry in manifest.items():
        assert mnist_ddpm.shipped_weights(name) is not None
        assert (mnist_ddpm.WEIGHTS_DIR / name).stat().st_size <= 20 * 2**20
        assert "python scripts/" in entry["command"]


def test_forget_class_rejects_bad_ids(cache):
    r = mnist_ddpm.recipe("quick", unet=TINY_UNET)
    with pytest.raises(ValueError, match="0..9"):
        mnist_ddpm.forget_class(None, r, forget=10)


def test_guidance_is_the_authors_convention(tiny_ddpm, monkeypatch):
    """(1 + w) eps_c - w eps_u (``ddpm/models/diffusion.py``): w = 2 is eps_u + 3 (eps_c - eps_u)."""
    seen = []
    real = tiny_ddpm.sampler

    def one_step(steps=None):
        s = real(1)
        orig = s.step

        def step(eps, t, x, **kw):
            seen.append(eps)
            return orig(eps, t, x, **kw)

        s.step = step
        return s

    monkeypatch.setattr(tiny_ddpm, "sampler", one_step)
    c = torch.tensor([3])
    tiny_ddpm.sample(c, torch.Generator().manual_seed(0), guidance_scale=2.0)
    x_T = torch.randn(1, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    t = real(1).timesteps[0]
    with torch.no_grad():
        e_c = tiny_ddpm.model(x_T, t, class_labels=c).sample
        e_u = tiny_ddpm.model(x_T, t, class_labels=torch.tensor([10])).sample
    torch.testing.assert_close(seen[0], e_u + 3 * (e_c - e_u), rtol=1e-4, atol=1e-5)


def test_ancestral_sampler_is_reproducible_and_refuses_few_steps():
    torch.manual_seed(0)
    a = DDPMAdapter(build_unet(TINY_UNET), TINY_UNET, num_train_timesteps=20, sampler="ddpm", sample_steps=20)
    c = torch.tensor([1, 10])
    x = a.sample(c, torch.Generator().manual_seed(0))
    assert x.shape == (2, 1, 28, 28) and torch.equal(x, a.sample(c, torch.Generator().manual_seed(0)))
    assert not torch.equal(x, a.sample(c, torch.Generator().manual_seed(1)))
    with pytest.raises(ValueError, match="all 20 steps"):
        a.sample(c, steps=5)


def test_loss_sums_over_pixels_and_sa_averages_over_the_batch(tiny_ddpm):
    """The authors' reductions (``ddpm/functions/losses.py``): the adapter, not a global switch, owns them."""
    b = tiny_ddpm.draw_noise(_batch(4), torch.Generator().manual_seed(0))
    with torch.no_grad():
        pred = tiny_ddpm.model(tiny_ddpm.noisy(b["x"] * 2 - 1, b["eps"], b["t"]), b["t"], class_labels=b["c"]).sample
    torch.testing.assert_close(tiny_ddpm.loss(b).detach(), (pred - b["eps"]).pow(2).sum((1, 2, 3)))
    assert tiny_ddpm.batch_reduction == "mean"


@pytest.mark.parametrize(
    "x, says",
    [
        (torch.rand(4, 3, 32, 32), r"shape \(4, 3, 32, 32\), this model needs \[N, 1, 28, 28\] \(1-channel 28x28"),
        (torch.rand(4, 1, 28, 28) * 2 - 1, r"values in \[-[\d.]+, [\d.]+\]; this model needs \[0, 1\]"),
        (torch.full((4, 1, 28, 28), float("nan")), r"3136 NaN"),
    ],
)
def test_images_of_another_dataset_are_refused_before_sa_or_the_fisher(tiny_ddpm, x, says):
    from sa_utils.core.amnesia import SAConfig, selective_amnesia
    from sa_utils.core.fisher import diagonal_fisher

    bad = {"x": x, "c": torch.zeros(4, dtype=torch.long)}
    good = _batch(4)
    before = {k: v.clone() for k, v in tiny_ddpm.model.state_dict().items()}
    with pytest.raises(ValueError, match="forget \\(surrogate\\) source's batch .*" + says):
        selective_amnesia(tiny_ddpm, lambda s: bad, lambda s: good, None, SAConfig(lmbda=0.0, steps=2), progress=False)
    with pytest.raises(ValueError, match="Fisher's first batch .*" + says):
        diagonal_fisher(tiny_ddpm, [bad], progress=False)
    assert all(torch.equal(before[k], v) for k, v in tiny_ddpm.model.state_dict().items())


def test_the_shipped_pool_is_the_one_of_the_shipped_model_and_other_settings_draw_their_own(cache):
    r = mnist_ddpm.recipe("quick")
    base = mnist_ddpm.pretrained_ddpm(r, progress=False)
    name = mnist_ddpm.pool_name(base, r)
    assert mnist_ddpm.shipped_weights(name) is not None  # quick mode's pool ships with theta*
    x, c = mnist_ddpm.model_pool(base, r, progress=False)
    assert x.shape == (11 * r.pool_per_class, 1, 28, 28) and not (mnist_ddpm._dir(r) / name).exists()
    assert torch.equal(torch.bincount(c), torch.full((11,), r.pool_per_class))
    # another model (one weight nudged) has another name: it draws and caches its own pool
    with torch.no_grad():
        next(base.model.parameters()).view(-1)[0] += 1e-3
    r2 = mnist_ddpm.recipe("quick", pool_per_class=1)
    other = mnist_ddpm.pool_name(base, r2)
    assert other != name and mnist_ddpm.shipped_weights(other) is None
    x2, c2 = mnist_ddpm.model_pool(base, r2, progress=False)
    assert x2.shape == (11, 1, 28, 28) and (mnist_ddpm._dir(r2) / other).exists()
    # a file whose settings are not the ones asked for is refused, not returned
    from sa_utils.storage.checkpoint import save_tensors

    save_tensors(mnist_ddpm._dir(r2) / other, {"x": x2, "c": c2}, {**mnist_ddpm.pool_settings(base, r2), "seed": 7})
    with pytest.raises(CheckpointError, match="delete it"):
        mnist_ddpm.model_pool(base, r2, progress=False)
