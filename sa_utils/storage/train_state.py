"""The one checkpoint format of every training loop in the project.

A training state is a set of named parts in one safetensors file, each part's tensors under
its own key prefix:

* ``modules``    -- ``{prefix: nn.Module}``: the state dict under ``"{prefix}.{name}"``
  (``"model"`` for a loop with one model; the tiny-SD script has ``"vae"``, ``"unet"``, ...);
* ``optimizers`` -- ``{prefix: Optimizer}``: the state tensors under ``"{prefix}.{param}.{key}"``,
  the rest in the metadata's ``"optimizers"`` entry (``"optim"`` for a loop with one);
* ``tensors``    -- ``{prefix: {name: tensor}}``: anything else a resume needs exactly (an EMA's
  shadow weights ``"ema"``, EWC's anchor theta* ``"anchor"``);
* ``metadata``   -- JSON: the step or epoch, loss history, settings.

:func:`sa_utils.training.fit`, :func:`sa_utils.training.train_ddpm`, the SA routine
(:func:`sa_utils.core.amnesia.selective_amnesia`) and ``scripts/train_tiny_sd.py`` all save and
resume through :func:`save_train_state` / :func:`load_train_state`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from sa_utils.storage.checkpoint import (
    CheckpointError,
    load_tensors,
    optimizer_from_tensors,
    optimizer_to_tensors,
    save_tensors,
)


def save_train_state(
    path: str | Path,
    modules: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer] | None = None,
    tensors: dict[str, dict[str, torch.Tensor]] | None = None,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write one training state (atomically, as :func:`sa_utils.storage.checkpoint.save_tensors` does)."""
    out: dict[str, torch.Tensor] = {}
    for prefix, module in modules.items():
        out.update({f"{prefix}.{k}": v for k, v in module.state_dict().items()})
    for prefix, group in (tensors or {}).items():
        out.update({f"{prefix}.{k}": v for k, v in group.items()})
    opt_meta = {}
    for prefix, opt in (optimizers or {}).items():
        opt_tensors, opt_meta[prefix] = optimizer_to_tensors(opt, prefix=f"{prefix}.")
        out.update(opt_tensors)
    prefixes = [*modules, *(tensors or {}), *(optimizers or {})]
    if len(set(prefixes)) != len(prefixes):
        raise ValueError(f"two parts of a training state share a prefix: {prefixes}")
    return save_tensors(path, out, {**(metadata or {}), "optimizers": opt_meta})


def load_train_state(
    path: str | Path,
    modules: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer] | None = None,
    tensor_groups: tuple[str, ...] = (),
    device: torch.device | str | None = None,
) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, Any]]:
    """Load a training state into ``modules`` and ``optimizers``; returns ``({prefix: {name: tensor}}``
    for each of ``tensor_groups``, metadata)``. A part the file lacks is refused by name."""
    stored, meta = load_tensors(path, device=device) if device is not None else load_tensors(path)
    for prefix, module in modules.items():
        state = _part(stored, prefix)
        if not state:
            raise CheckpointError(f"{path} holds no {prefix!r} weights; it is not a checkpoint of this run")
        module.load_state_dict(state)
    opt_meta = meta.get("optimizers")
    if opt_meta is None and "optimizer" in meta:  # files written before the one format: one optimizer
        opt_meta = {"optim": meta["optimizer"]}
    for prefix, opt in (optimizers or {}).items():
        if prefix not in (opt_meta or {}):
            raise CheckpointError(f"{path} holds no state of the optimizer {prefix!r}")
        optimizer_from_tensors(opt, stored, opt_meta[prefix], prefix=f"{prefix}.")
    return {g: _part(stored, g) for g in tensor_groups}, meta


def _part(stored: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    head = prefix + "."
    return {k[len(head) :]: v for k, v in stored.items() if k.startswith(head)}
