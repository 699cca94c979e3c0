import pytest
import torch
from conftest import mnist_available

from sa_utils.core.sources import DataSource
from sa_utils.data import DataNotFoundError, load_mnist
from sa_utils.models import CVAE
from sa_utils.runtime import resolve_mode
from sa_utils.storage.checkpoint import (
    CheckpointError,
    load_model,
    optimizer_from_tensors,
    optimizer_to_tensors,
    save_model,
)


@pytest.mark.skipif(not mnist_available(), reason="MNIST not in $SA_DATA_DIR")
def test_mnist_loads_from_the_data_dir():
    x, y = load_mnist(train=False, download=False)
    assert x.shape == (10_000, 1, 28, 28) and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert sorted(y.unique().tolist()) == list(range(10))


def test_missing_mnist_offline_says_how_to_fix(tmp_path):
    with pytest.raises(DataNotFoundError, match="SA_DATA_DIR"):
        load_mnist(root=tmp_path, download=False)


def test_data_source_is_deterministic_per_step():
    src = DataSource(torch.arange(100.0).view(100, 1), torch.arange(100) % 10, batch_size=8, seed=1)
    assert torch.equal(src(5)["x"], src(5)["x"]) and not torch.equal(src(5)["x"], src(6)["x"])


def test_model_and_optimizer_round_trip(tmp_path):
    model = CVAE()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.negative_elbo(torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 3]), torch.randn(4, 8)).sum().backward()
    opt.step()
    save_model(model, tmp_path / "m.safetensors", {"note": "x"})
    other = CVAE()
    assert load_model(other, tmp_path / "m.safetensors") == {"note": "x"}
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), other.parameters()))
    tensors, meta = optimizer_to_tensors(opt)
    opt2 = torch.optim.Adam(other.parameters(), lr=1e-3)
    optimizer_from_tensors(opt2, tensors, meta)
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    assert all(torch.equal(s1["state"][0][k], s2["state"][0][k]) for k in ("exp_avg", "exp_avg_sq"))


def test_checkpoint_for_another_model_is_a_clear_error(tmp_path):
    from sa_utils.models import CVAEConfig

    save_model(CVAE(CVAEConfig(z_dim=4)), tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError, match="enc_mu.weight"):
        load_model(CVAE(), tmp_path / "m.safetensors")


def test_mode_resolution(monkeypatch):
    monkeypatch.setenv("SA_MODE", "full")
    assert resolve_mode() == "full" and resolve_mode("quick") == "quick"
    with pytest.raises(ValueError, match="SA_MODE"):
        resolve_mode("fast")
