"""Run-time settings shared by every chapter: paths, device, seeds, quick/full mode.

Chapter 1 (the preface) explains the environment variables:

* ``SA_DATA_DIR``  -- where datasets live (torchvision layout, e.g. ``MNIST/raw``).
* ``SA_CACHE_DIR`` -- where trained models, Fisher files and results are cached.
* ``SA_MODE``      -- ``quick`` or ``full``; unset means full on a GPU, quick on a CPU.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

import numpy as np
import torch

MODES = ("quick", "full")


def _user_cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "selective-amnesia"


def data_dir() -> Path:
    """Dataset root: ``$SA_DATA_DIR`` or ``~/.cache/selective-amnesia/data``."""
    env = os.environ.get("SA_DATA_DIR")
    return Path(env).expanduser().resolve() if env else _user_cache_root() / "data"


def cache_dir() -> Path:
    """Cache for checkpoints, Fisher files and results: ``$SA_CACHE_DIR`` or a user cache folder."""
    env = os.environ.get("SA_CACHE_DIR")
    path = Path(env).expanduser().resolve() if env else _user_cache_root() / "cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_device() -> torch.device:
    """CUDA if available, then Apple's MPS, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_mode(mode: str | None = None, gpu_default: str = "full") -> str:
    """Pick ``quick`` or ``full``.

    An explicit argument wins, then ``$SA_MODE``; otherwise ``gpu_default`` on a GPU and quick
    mode on a CPU. Part I's recipes keep ``gpu_default="full"`` (the authors' settings take
    minutes on a GPU); Parts II and III pass ``"quick"``: their full modes need hours of GPU
    time and, for Stable Diffusion, weights from the Hub, so they run only when asked for.
    """
    if gpu_default not in MODES:
        raise ValueError(f"gpu_default must be one of {MODES}, got {gpu_default!r}")
    mode = mode or os.environ.get("SA_MODE") or (gpu_default if torch.cuda.is_available() else "quick")
    mode = mode.strip().lower()
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}; set MODE in the parameters cell or SA_MODE")
    return mode


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch, and return a CPU ``torch.Generator`` with the same seed."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def step_generator(seed: int, step: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator whose state depends only on ``(seed, step)``.

    Batch sources draw from it, so a run resumed at step ``k`` sees exactly the batches
    an uninterrupted run would have seen.
    """
    return torch.Generator(device=device).manual_seed((seed * 1_000_003 + step) % (2**63 - 1))


def settings_digest(obj) -> str:
    """10 hex digits that name a cached result by the settings that made it (JSON, sorted keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:10]


PRECISIONS = {"no": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
"""The ``--mixed_precision`` / ``SAConfig.mixed_precision`` names and their dtypes (one map for all)."""


def precision_dtype(name: str) -> torch.dtype:
    """The dtype of a mixed-precision name: ``"no"`` (float32), ``"bf16"`` or ``"fp16"``."""
    if name not in PRECISIONS:
        raise ValueError(f"mixed precision must be one of {sorted(PRECISIONS)}, got {name!r}")
    return PRECISIONS[name]
