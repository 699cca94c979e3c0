"""The benchmark suite runs end to end at toy sizes (its numbers are checked by reading them, not here)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import mnist_available

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))


@pytest.mark.slow
@pytest.mark.skipif(not mnist_available(), reason="MNIST not found in $SA_DATA_DIR")
def test_benchmark_suite_smoke_run_writes_the_appendix(tmp_path):
    import run

    page = run.main(["--smoke", "--out", str(tmp_path)])
    text = page.read_text()
    for heading in ("## 1. The diagonal Fisher", "## 2 and 4.", "## 3. End to end", "## 5. Scaling"):
        assert heading in text
    assert (tmp_path / "performance_scaling.png").stat().st_size > 10_000
    assert "smoke run" in text


def test_fisher_benchmark_methods_agree_and_memory_counts_the_ewc_buffers():
    import fisher
    import sa_step

    row = fisher.bench("cvae", 40, repeats=1)
    assert row["max_rel_diff"] < 1e-4
    mem = sa_step.peak_memory("cvae", steps=2, width=0.25)
    # SA holds theta* and F on top of fine-tuning's state, and nothing else
    assert mem["sa_mib"] > mem["finetune_mib"]
    assert mem["memory_ratio"] == pytest.approx(mem["memory_floor"], abs=0.02)


@pytest.mark.slow
def test_gpu_check_smoke_run_covers_every_section(tmp_path, monkeypatch):
    """benchmarks/gpu_check.py, the one command for a lent GPU, at tiny sizes on this CPU: every
    section runs and lands in the JSON, and the fit verdict is computed from a peak."""
    import json

    import gpu_check

    monkeypatch.setenv("SA_CACHE_DIR", str(tmp_path / "cache"))
    assert gpu_check.main(["--smoke", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "gpu_check.json").read_text())
    assert set(res["sections"]) == {"vae", "ddpm", "sd"}
    assert all("error" not in s and "skipped" not in s for s in res["sections"].values()), res["sections"]
    assert res["sections"]["sd"]["train_methods"]["full"]["sa_s_per_step"] > 0
    # a peak counts as fitting a card when it needs at most 90 % of it (14 GiB = 15.0 GB of 16 GB does not)
    assert gpu_check.fits(13.0) == {"16 GB": True, "24 GB": True, "40 GB": True, "80 GB": True}
    assert gpu_check.fits(14.0) == {"16 GB": False, "24 GB": True, "40 GB": True, "80 GB": True}
    # a section past the budget is skipped and says so, the others keep their figures
    assert (
        gpu_check.main(["--smoke", "--out", str(tmp_path / "b"), "--budget-s", "0.01", "--sections", "vae", "sd"]) == 0
    )
    skipped = json.loads((tmp_path / "b" / "gpu_check.json").read_text())["sections"]
    assert "skipped" not in skipped["vae"] and "budget" in skipped["sd"]["skipped"]
