"""What the five Stable Diffusion steps share: loading a pipeline, prompt files, run folders."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch


class RunFolderError(RuntimeError):
    """A run folder holds results made with other settings (or none at all)."""


def load_pipeline(name_or_path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """A diffusers ``StableDiffusionPipeline`` from a hub id (e.g. ``CompVis/stable-diffusion-v1-4``,
    downloaded by diffusers on first use) or a local folder in the diffusers format (read offline)."""
    from diffusers import StableDiffusionPipeline

    from sa_utils.progress import quiet_library_bars

    quiet_library_bars()
    local = Path(name_or_path).expanduser()
    if local.exists():
        if not (local / "model_index.json").exists():
            raise FileNotFoundError(
                f"{local} is not a diffusers pipeline folder (no model_index.json). Save one with "
                "pipe.save_pretrained(folder), or pass a hub id such as CompVis/stable-diffusion-v1-4."
            )
        pipe = StableDiffusionPipeline.from_pretrained(local, dtype=dtype, local_files_only=True)
    else:
        try:
            pipe = StableDiffusionPipeline.from_pretrained(str(name_or_path), dtype=dtype)
        except OSError as err:
            raise FileNotFoundError(
                f"could not load {name_or_path!r}: it is no local folder, and the hub could not "
                f"provide it ({err}). Offline, pass the path of a saved pipeline folder."
            ) from err
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def read_prompts(path: str | Path) -> list[str]:
    """Prompts from a text file: one per line; blank lines and lines starting with ``#`` are skipped."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"prompt file {path} not found")
    prompts = [s.strip() for s in path.read_text(encoding="utf-8").splitlines()]
    prompts = [p for p in prompts if p and not p.startswith("#")]
    if not prompts:
        raise ValueError(f"prompt file {path} has no prompts (one per line; '#' starts a comment)")
    return prompts


def claim_run_folder(folder: str | Path, settings: dict[str, Any], step: str) -> Path:
    """Create ``folder`` with ``settings.json``, or check that an existing one was made with the
    same settings (so a resumed step never mixes results of two configurations)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "settings.json"
    settings = json.loads(json.dumps({"step": step, **settings}))
    if path.exists():
        old = json.loads(path.read_text())
        if old != settings:
            diff = {k: (old.get(k), settings.get(k)) for k in set(old) | set(settings) if old.get(k) != settings.get(k)}
            raise RunFolderError(
                f"{folder} was made with other settings {diff} (old, new). Use another output folder, "
                "or delete this one to start over."
            )
    else:
        tmp = path.with_name("settings.json.tmp")
        tmp.write_text(json.dumps(settings, indent=2) + "\n")
        os.replace(tmp, path)
    return folder


def read_settings(folder: str | Path, step: str) -> dict[str, Any]:
    path = Path(folder) / "settings.json"
    if not path.exists():
        raise RunFolderError(
            f"{folder} has no settings.json: it is not the output of the {step!r} step. Run that step first."
        )
    settings = json.loads(path.read_text())
    if settings.get("step") != step:
        raise RunFolderError(f"{folder} holds the output of the {settings.get('step')!r} step, not of {step!r}.")
    return settings
