"""Another erasure method on any diffusers Stable Diffusion pipeline, in the run-folder conventions of
the five SA steps: ``output_dir/settings.json`` (a rerun with other settings is refused),
``output_dir/pipeline/`` (plain ``StableDiffusionPipeline.from_pretrained`` loads it) and
``output_dir/results.json`` (what the edit changed, how long it took).

    python -m sa_utils.sd erase --method uce --pretrained_model_name_or_path MODEL \\
        --erase_concept "brad pitt" --guide_concept "a middle aged man" --output_dir runs/uce-brad-pitt

Methods: ``uce`` (:mod:`sa_utils.erasure.uce`, closed form, seconds); ``esd-x`` and ``esd-u``
(:mod:`sa_utils.erasure.esd`, fine-tuning, resumable from ``output_dir/checkpoint.safetensors``).
The naive baseline (the surrogate term alone, no EWC, no replay) is the SA step itself:
``forget --lmbda 0 --gamma 0``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from sa_utils.adapters.sd import StableDiffusionAdapter
from sa_utils.erasure.esd import ESDConfig, erase_esd
from sa_utils.erasure.uce import UCEConfig, apply_uce
from sa_utils.sd.common import claim_run_folder

STEP = "erase"
METHODS = ("uce", "esd-x", "esd-u")


def sd_erase(
    pipe, method: str, config: UCEConfig | ESDConfig, output_dir: str | Path, source: str, progress: bool = True
) -> Path:
    """Erase with ``method`` and save the edited pipeline; a finished run folder is returned as it is."""
    if method not in METHODS:
        raise ValueError(f"unknown erasure method {method!r}; choose one of {METHODS}")
    want = UCEConfig if method == "uce" else ESDConfig
    if not isinstance(config, want) or (method != "uce" and config.method != method):
        raise ValueError(f"method {method!r} needs a {want.__name__} for it, got {config!r}")
    folder = claim_run_folder(output_dir, {"method": method, "config": config.to_dict(), "pipeline": source}, STEP)
    out = folder / "pipeline"
    if (out / "model_index.json").exists() and (folder / "results.json").exists():
        return out
    adapter = StableDiffusionAdapter(pipe, "full")
    start = time.perf_counter()
    if method == "uce":
        change = apply_uce(adapter, config)
        results = {"layers": len(change), "relative_change": change}
    else:
        res = erase_esd(adapter, config, run_dir=folder, progress=progress)
        results = {"trained_params": len(res.trained), "losses": res.losses, "resumed_from": res.resumed_from}
    seconds = time.perf_counter() - start
    pipe.save_pretrained(out, safe_serialization=True)
    (folder / "results.json").write_text(json.dumps({"method": method, "seconds": seconds, **results}, indent=2) + "\n")
    return out
