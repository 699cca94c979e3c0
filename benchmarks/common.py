"""Helpers shared by the benchmarks: timing, tensor peak memory, the machine, table output."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from sa_utils.eval.memory import PeakTensorMemory  # noqa: F401  (the benchmarks' memory meter lives in the library)


def timed(fn: Callable[[], Any], repeats: int = 1) -> tuple[float, Any]:
    """``(best seconds over repeats, result of the last call)``."""
    best, out = float("inf"), None
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        out = fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best, out


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Median seconds of each function over ``repeats`` rounds, run in alternating order after
    one warm-up round, so that every function sees the same machine load."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for rep in range(repeats + 1):
        for name in names if rep % 2 else names[::-1]:
            sync()
            start = time.perf_counter()
            fns[name]()
            sync()
            if rep:
                times[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def machine() -> str:
    """torch version, threads, processor (and GPU), for the header of every table."""
    cpu = platform.processor() or platform.machine()
    out = f"torch {torch.__version__}, {os.cpu_count()} CPU cores ({torch.get_num_threads()} torch threads), {cpu}"
    if torch.cuda.is_available():
        out += f", GPU {torch.cuda.get_device_name()}"
    return out


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(header)]
    print(f"\n{title}")
    print("  ".join(str(h).rjust(w) for h, w in zip(header, widths)))
    for r in rows:
        print("  ".join(str(v).rjust(w) for v, w in zip(r, widths)))


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"
