"""Step 5: evaluation: before/after grids and concept-detector rates on prompt sets.

Every pipeline (e.g. ``before`` = the original, ``after`` = the SA output) draws the same
seeded images for every prompt of every prompt set (the forget prompts, their paraphrases,
unrelated prompts). A *detector* maps images in ``[0, 1]`` to a yes/no per image ("is this
the forgotten identity?", "does this show the attribute?"); its *rate* on a prompt set is the
fraction of yes. Detectors are named in :mod:`sa_utils.eval.detectors` (NudeNet 3.x, zero-shot
CLIP, and those plugins register, such as the tiny world's); with ``nudenet=True`` the exposed
classes are counted too. Real-SD pipelines keep
their safety checker on: the book never shows explicit images.

Results go to ``results.json`` and one grid PNG per prompt set (rows: pipelines).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import torch

from sa_utils.eval.detectors import Detector, nudenet_counts
from sa_utils.sd.common import claim_run_folder

STEP = "evaluate"


@contextmanager
def safety_checker_off(pipe):
    """Generate without the pipeline's safety checker (for counting only: never show these images)."""
    checker = getattr(pipe, "safety_checker", None)
    pipe.safety_checker = None
    try:
        yield pipe
    finally:
        pipe.safety_checker = checker


def safe_for_display(pipe, images: torch.Tensor) -> torch.Tensor:
    """``images`` (in ``[0, 1]``) with those the pipeline's safety checker flags blacked out;
    unchanged for a pipeline without a checker (e.g. the tiny one)."""
    checker = getattr(pipe, "safety_checker", None)
    if checker is None:
        return images
    dtype = next(checker.parameters()).dtype
    _, flags = pipe.run_safety_checker(images.to(pipe.device) * 2 - 1, pipe.device, dtype)
    out = images.clone()
    out[torch.as_tensor(flags, dtype=torch.bool)] = 0
    return out


def grid_image(rows: list[torch.Tensor], path: Path, labels: list[str]) -> Path:
    import matplotlib.pyplot as plt
    from torchvision.utils import make_grid

    fig, axes = plt.subplots(
        len(rows), 1, figsize=(max(4, rows[0].shape[0] * 0.9), 1.1 * len(rows) + 0.4), squeeze=False
    )
    for ax, imgs, label in zip(axes[:, 0], rows, labels):
        ax.imshow(make_grid(imgs, nrow=len(imgs), padding=1, pad_value=1).permute(1, 2, 0).numpy())
        ax.set_ylabel(label, rotation=0, ha="right", va="center")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def sd_evaluate(
    pipelines: dict,
    prompt_sets: dict[str, list[str]],
    output_dir: str | Path,
    detectors: dict[str, Detector] | None = None,
    n_per_prompt: int = 1,
    seed: int = 0,
    num_inference_steps: int = 50,
    guidance_scale: float = 7.5,
    batch_size: int = 8,
    grid_columns: int = 8,
    nudenet: bool = False,
) -> dict:
    """Generate, detect, draw grids; returns ``{pipeline: {prompt_set: {detector: rate, ...}}}``."""
    from sa_utils.sd.imagesets import generate_images

    detectors = detectors or {}
    folder = claim_run_folder(
        output_dir,
        {
            "pipelines": sorted(pipelines),
            "prompt_sets": prompt_sets,
            "n_per_prompt": n_per_prompt,
            "seed": seed,
            "steps": num_inference_steps,
            "guidance_scale": guidance_scale,
            "detectors": sorted(detectors),
            "nudenet": nudenet,
        },
        STEP,
    )
    results: dict = {name: {} for name in pipelines}
    for set_name, prompts in prompt_sets.items():
        todo = [p for p in prompts for _ in range(n_per_prompt)]
        rows = []
        for name, pipe in pipelines.items():
            if nudenet:  # count on what the model draws; show only what the safety checker lets through
                with safety_checker_off(pipe):
                    images = generate_images(pipe, todo, seed, num_inference_steps, guidance_scale, batch_size)
                rows.append(safe_for_display(pipe, images[:grid_columns]))
            else:
                images = generate_images(pipe, todo, seed, num_inference_steps, guidance_scale, batch_size)
                rows.append(images[:grid_columns])
            entry = {"n_images": len(images)}
            for det_name, det in detectors.items():
                entry[det_name] = float(det(images).float().mean())
            if nudenet:
                entry["nudenet"] = nudenet_counts(images)
            results[name][set_name] = entry
        grid_image(rows, folder / f"grid-{set_name}.png", list(pipelines))
    (folder / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results
