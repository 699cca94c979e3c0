"""The code every chapter opens with: pick the mode, set the style, say what will run."""
from __future__ import annotations

from dataclasses import asdict

import torch

from .plotting import set_style
from .runtime import cache_dir, data_dir, default_device, resolve_mode
from .zoo import MNISTRecipe, recipe


def setup(mode: str | None = None, **overrides) -> MNISTRecipe:
    """Resolve quick/full mode, apply the book's figure style, and print the run settings.

    ``mode=None`` means ``$SA_MODE`` if set, else full on a GPU and quick on a CPU.
    """
    set_style()
    r = recipe(resolve_mode(mode), **overrides)
    print(f"mode: {r.mode} | device: {default_device()} | torch {torch.__version__}")
    print(f"data: {data_dir()} | cache: {cache_dir()}")
    knobs = {k: v for k, v in asdict(r).items() if k != "mode"}
    print("settings: " + ", ".join(f"{k}={v}" for k, v in knobs.items()))
    return r
