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
