"""Shared fixtures: tiny models, fixed seeds, MNIST from ``$SA_DATA_DIR`` (``../shared/data`` in CI)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("SA_DATA_DIR", str((ROOT / ".." / "shared" / "data").resolve()))

from sa_utils.adapters import VAEAdapter  # noqa: E402
from sa_utils.core.replay import model_samples  # noqa: E402
from sa_utils.models import CVAE, CVAEConfig  # noqa: E402

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


def pytest_terminal_summary(terminalreporter):
    """Say loudly when the browser test did not run: CI runs it, so a local `make test` without it tests less."""
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if "test_browser" in r.nodeid]
    if skipped:
        terminalreporter.write_sep("!", "THE BROWSER TEST WAS SKIPPED", red=True, bold=True)
        terminalreporter.write_line(
            f"{len(skipped)} test(s) of tests/book/test_browser.py did not run, so this `make test` checked less than "
            "CI "
            "does.\n"
            "Install Debian's chromium (`sudo apt-get install chromium`, as .ci/run does) and run `make test` again.",
            red=True,
        )
