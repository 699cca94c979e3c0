"""Shared fixtures: tiny models, fixed seeds, MNIST from ``$SA_DATA_DIR`` (``../shared/data`` in CI)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("SA_DATA_DIR", str((ROOT / ".." / "shared" / "data").resolve()))

from sa_utils.adapters import VAEAdapter  # noqa: E402
from sa_utils.models import CVAE, CVAEConfig  # noqa: E402
from sa_utils.replay import model_samples  # noqa: E402

TINY = CVAEConfig(h_dims=(32, 16), z_dim=4)


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture
def tiny_vae() -> VAEAdapter:
    torch.manual_seed(0)
    return VAEAdapter(CVAE(TINY))


@pytest.fixture
def tiny_batches(tiny_vae):
    return list(model_samples(tiny_vae, range(10), 48, 16, seed=1))


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("SA_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def mnist_available() -> bool:
    raw = Path(os.environ["SA_DATA_DIR"]) / "MNIST" / "raw"
    return (raw / "train-images-idx3-ubyte").exists()
