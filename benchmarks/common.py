"""Helpers shared by the benchmarks: timing, tensor peak memory, the machine, table output."""
from __future__ import annotations

import os
import platform
import statistics
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


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


class PeakTensorMemory(TorchDispatchMode):
    """Peak bytes held by live tensors while the context is active, on any device.

    Every tensor an operation returns is counted once per storage until that storage is freed
    (a weak-reference callback), plus the ``external`` tensors that existed before (parameters,
    the Fisher). Allocator caching, the interpreter and torch's own buffers are not counted,
    so the figure is the same on a CPU and a GPU and compares two training steps exactly.
    """

    def __init__(self, *external: torch.Tensor):
        super().__init__()
        self.current = 0
        self.peak = 0
        self._seen: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        for t in external:
            self._add(t)

    def _add(self, t: Any) -> None:
        if not isinstance(t, torch.Tensor) or t.is_meta:
            return
        st = t.untyped_storage()
        if st in self._seen:
            return
        n = st.nbytes()
        self._seen[st] = n
        self.current += n
        self.peak = max(self.peak, self.current)
        weakref.finalize(st, self._free, n)

    def _free(self, n: int) -> None:
        self.current -= n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            self._add(t)
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
