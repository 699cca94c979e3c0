"""Safetensors I/O with JSON metadata, model/optimizer checkpoints, and clear load errors.

Nothing in this project is pickled: tensors go to ``.safetensors`` files, everything else
(model config, sample counts, training history) to the file's metadata as JSON.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn


class CheckpointError(RuntimeError):
    """A checkpoint or Fisher file is missing, corrupt or does not fit the model."""


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """20 hex digits of sha256 over every tensor's name, dtype, shape and bytes (sorted by name).

    Cached results (Fisher files, SA runs, sample pools) are named by the digest of the exact
    weights they were computed from, so another model never finds them."""
    import hashlib

    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        if t.numel():
            h.update(
                t.view(torch.uint8).numpy().tobytes()
                if t.dtype != torch.bfloat16
                else t.view(torch.int16).numpy().tobytes()
            )
    return h.hexdigest()[:20]


def weights_digest(model: nn.Module) -> str:
    """:func:`tensors_digest` of a model's whole state (parameters and buffers)."""
    return tensors_digest(model.state_dict())


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any] | None = None) -> Path:
    """Write ``tensors`` atomically (temp file + rename) with JSON-encoded ``metadata``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {k: json.dumps(v) for k, v in (metadata or {}).items()}
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # unique per process: lanes may share a cache
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return path


def load_tensors(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a file written by :func:`save_tensors`; returns ``(tensors, metadata)``."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no such file: {path}")
    try:
        tensors = load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as err:
        raise _unreadable(path, err) from err
    return tensors, read_metadata(path)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """Only the metadata of a file written by :func:`save_tensors` (the tensors are not read)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no such file: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw_meta = f.metadata() or {}
        return {k: json.loads(v) for k, v in raw_meta.items()}
    except (SafetensorError, json.JSONDecodeError, OSError, ValueError) as err:
        raise _unreadable(path, err) from err


def _unreadable(path: Path, err: Exception) -> CheckpointError:
    return CheckpointError(
        f"{path} is not a readable safetensors file ({err}). It may be truncated or corrupt: "
        "delete it and re-run the step that produced it."
    )


def check_state_matches(
    expected: dict[str, torch.Size], found: dict[str, torch.Size], what: str, path: Path | str
) -> None:
    """Raise a :class:`CheckpointError` naming every missing, unexpected or mis-shaped tensor."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    mismatched = [
        f"{k}: file {tuple(found[k])} vs model {tuple(expected[k])}"
        for k in expected
        if k in found and found[k] != expected[k]
    ]
    if missing or unexpected or mismatched:
        lines = [f"{what} in {path} does not match the model:"]
        if missing:
            lines.append(f"  missing ({len(missing)}): {', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}")
        if unexpected:
            lines.append(
                f"  unexpected ({len(unexpected)}): {', '.join(unexpected[:6])}{' ...' if len(unexpected) > 6 else ''}"
            )
        if mismatched:
            lines.append(f"  wrong shape ({len(mismatched)}): {'; '.join(mismatched[:6])}")
        lines.append("Fix: use the file made for this model configuration, or recompute it.")
        raise CheckpointError("\n".join(lines))


def save_model(model: nn.Module, path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    return save_tensors(path, model.state_dict(), metadata)


def load_model(model: nn.Module, path: str | Path) -> dict[str, Any]:
    """Load weights into ``model`` after checking names and shapes; returns the metadata."""
    tensors, meta = load_tensors(path)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    check_state_matches(expected, {k: v.shape for k, v in tensors.items()}, "checkpoint", path)
    model.load_state_dict(tensors)
    return meta


def optimizer_to_tensors(
    optimizer: torch.optim.Optimizer, prefix: str = "optim."
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer's state dict into tensors and JSON-able metadata."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for key, val in state.items():
            if torch.is_tensor(val):
                tensors[f"{prefix}{pid}.{key}"] = val
            else:
                scalars[f"{pid}.{key}"] = val
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_tensors(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any], prefix: str = "optim."
) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, val in tensors.items():
        if name.startswith(prefix):
            pid, key = name[len(prefix) :].split(".", 1)
            state.setdefault(int(pid), {})[key] = val
    for name, val in meta.get("scalars", {}).items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = val
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
