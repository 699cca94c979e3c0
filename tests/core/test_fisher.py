import pytest
import torch
from torch import nn

from sa_utils.adapters import GenerativeAdapter, VAEAdapter
from sa_utils.core.fisher import DiagonalFisher, diagonal_fisher, linear_eligible, sq_grad_sum_loop
from sa_utils.models import CVAE, CVAEConfig
from sa_utils.storage.checkpoint import CheckpointError, save_tensors


def _max_rel(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max() / b[k].abs().max()) for k in b)


@pytest.mark.parametrize("method", ["linear", "vmap"])
def test_fast_fisher_matches_per_sample_loop(tiny_vae, tiny_batches, method):
    ref = diagonal_fisher(tiny_vae, tiny_batches, method="loop", seed=3, progress=False)
    fast = diagonal_fisher(tiny_vae, tiny_batches, method=method, seed=3, progress=False)
    assert fast.n_samples == ref.n_samples == 48
    assert set(fast.values) == set(ref.values) == set(dict(tiny_vae.model.named_parameters()))
    assert _max_rel(fast.values, ref.values) < 1e-5


def test_fisher_is_not_the_square_of_the_batch_gradient(tiny_vae, tiny_batches):
    """Squaring a batch-mean gradient is a different (much smaller) quantity."""
    fisher = diagonal_fisher(tiny_vae, tiny_batches, method="linear", seed=3, progress=False)
    batch = tiny_vae.draw_noise(tiny_batches[0], torch.Generator().manual_seed(0))
    params = list(tiny_vae.trainable_parameters().values())
    grads = torch.autograd.grad(tiny_vae.loss(batch).mean(), params)
    squared_mean = sum(float(g.pow(2).sum()) for g in grads)
    assert sum(float(v.sum()) for v in fisher.values.values()) > 2 * squared_mean


def test_auto_picks_linear_for_the_cvae_and_vmap_otherwise(tiny_vae):
    assert linear_eligible(tiny_vae)
    conv = _ConvAdapter()
    assert not linear_eligible(conv)
    fisher = diagonal_fisher(conv, [{"x": torch.rand(6, 1, 8, 8), "c": torch.arange(6) % 2}], progress=False)
    assert fisher.metadata["method"] == "vmap"
    ref = diagonal_fisher(
        conv,
        [{"x": torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0)), "c": torch.arange(6) % 2}],
        method="loop",
        progress=False,
    )
    fast = diagonal_fisher(
        conv,
        [{"x": torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0)), "c": torch.arange(6) % 2}],
        method="vmap",
        progress=False,
    )
    assert _max_rel(fast.values, ref.values) < 1e-5


def test_frozen_parameters_are_left_out(tiny_vae, tiny_batches):
    tiny_vae.model.enc1.requires_grad_(False)
    fisher = diagonal_fisher(tiny_vae, tiny_batches, progress=False)
    assert "enc1.weight" not in fisher.values and "dec3.weight" in fisher.values


def test_fisher_file_round_trip_and_mismatch(tiny_vae, tiny_batches, tmp_path):
    fisher = diagonal_fisher(tiny_vae, tiny_batches, progress=False)
    path = fisher.save(tmp_path / "f.safetensors")
    back = DiagonalFisher.load(path, tiny_vae.model)
    assert back.n_samples == 48 and back.metadata["model_config"]["z_dim"] == 4
    assert all(torch.equal(back.values[k], fisher.values[k]) for k in fisher.values)
    other = CVAE(CVAEConfig(h_dims=(32, 16), z_dim=5))
    with pytest.raises(CheckpointError, match="wrong shape"):
        DiagonalFisher.load(path, other)


def test_loading_a_non_fisher_or_corrupt_file_is_a_clear_error(tmp_path):
    save_tensors(tmp_path / "w.safetensors", {"a": torch.zeros(2)}, {"kind": "weights"})
    with pytest.raises(CheckpointError, match="not a Fisher file"):
        DiagonalFisher.load(tmp_path / "w.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00\x01garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        DiagonalFisher.load(tmp_path / "bad.safetensors")


def test_reference_loop_equals_a_hand_computed_gradient():
    """The loop is the reference: check it against autograd on one sample by hand."""
    torch.manual_seed(0)
    adapter = VAEAdapter(CVAE(CVAEConfig(h_dims=(8, 4), z_dim=2)))
    batch = adapter.draw_noise(
        {"x": torch.rand(2, 1, 28, 28), "c": torch.tensor([1, 7])}, torch.Generator().manual_seed(0)
    )
    sums = sq_grad_sum_loop(adapter, batch)
    w = adapter.model.dec3.weight
    g0 = torch.autograd.grad(adapter.loss({k: v[:1] for k, v in batch.items()}).sum(), w)[0]
    g1 = torch.autograd.grad(adapter.loss({k: v[1:] for k, v in batch.items()}).sum(), w)[0]
    torch.testing.assert_close(sums["dec3.weight"], g0**2 + g1**2)


class _ConvAdapter(GenerativeAdapter):
    """A toy conditional model with a convolution: not eligible for the linear trick."""

    def __init__(self):
        torch.manual_seed(0)
        self.model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 64, 2))

    def draw_noise(self, batch, generator=None):
        return batch

    def loss(self, batch):
        return nn.functional.cross_entropy(self.model(batch["x"]), batch["c"], reduction="none")

    def sample(self, c, generator=None):
        return torch.rand(len(c), 1, 8, 8, generator=generator)


def test_fisher_sum_merges_partial_sums_into_the_same_fisher(tiny_vae, tiny_batches):
    """The one accumulator: two halves added separately and merged give diagonal_fisher's values."""
    from sa_utils.core.fisher import FisherSum, diagonal_fisher, sq_grad_sum_loop

    whole = diagonal_fisher(tiny_vae, tiny_batches, method="loop", seed=3, progress=False)
    g = torch.Generator().manual_seed(3)  # diagonal_fisher draws each batch's noise from one generator
    halves = [FisherSum(tiny_vae.trainable_parameters()), FisherSum(tiny_vae.trainable_parameters())]
    for i, batch in enumerate(tiny_batches):
        halves[i % 2].add(sq_grad_sum_loop(tiny_vae, tiny_vae.draw_noise(batch, g)), len(batch["x"]))
    merged = FisherSum.of({}, 0).merge(halves[0]).merge(halves[1]).fisher({})
    assert merged.n_samples == whole.n_samples == sum(len(b["x"]) for b in tiny_batches)
    for n, v in whole.values.items():
        torch.testing.assert_close(merged.values[n], v, rtol=1e-5, atol=1e-9)
    with pytest.raises(ValueError, match="no samples"):
        FisherSum(tiny_vae.trainable_parameters()).fisher({})
