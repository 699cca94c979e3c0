"""Measuring what a training step holds in memory, the same way on a CPU and a GPU.

:class:`PeakTensorMemory` counts the bytes of every live tensor storage while it is active.
:func:`sa_utils.recipes.sd_memory.sd_step_memory` uses it to compare one Selective Amnesia
step with one plain fine-tuning step on a Stable-Diffusion-shaped UNet (chapter 8's memory table;
``benchmarks/sd_memory.py`` prints the same rows), and :func:`sa_buffer_gib` gives the exact
size of what SA adds for a model too large to run here (theta* and F). This module is a meter:
it runs no experiment itself.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

GIB = 2**30


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


def sa_buffer_gib(n_params: int, dtype: torch.dtype = torch.float32) -> float:
    """GiB of the two parameter-sized buffers SA holds beyond fine-tuning: theta* and F."""
    return 2 * n_params * torch.empty((), dtype=dtype).element_size() / GIB


def finetune_static_gib(n_params: int) -> float:
    """GiB of weights, gradients and Adam's two moments in float32 (activations not included)."""
    return 4 * n_params * 4 / GIB
