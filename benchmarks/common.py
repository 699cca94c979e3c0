"""Helpers shared by the benchmarks: timing, and a header line naming the machine."""
from __future__ import annotations

import platform
import time

import torch


def timed(fn, repeats: int = 1):
    """``(best seconds over repeats, result of the last call)``."""
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def machine() -> str:
    """torch version, thread count and processor, for the header of every table."""
    return f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}"
