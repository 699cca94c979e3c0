"""Step 4: Selective Amnesia on a Stable Diffusion UNet, with the one SA routine of Part I.

The forget term trains the UNet to produce the *surrogate* images (e.g. "a middle aged man")
when it is given the *forget prompt* (e.g. "brad pitt"); the replay term keeps it producing
the replay images for their own generic prompts; EWC holds the weights the Fisher says
matter. Surrogate and replay images are encoded once into latents (one posterior draw each,
seeded) and their prompts into embeddings; every step then draws its batch from a generator
seeded by ``(seed, step)``, so a resumed run sees the batches an uninterrupted run would.

Several forget prompts form a *pool*, and each surrogate image of a batch is paired with one
prompt drawn from it. A forget caption with commas is split into its prompts first
(:func:`split_forget_prompts`), as the authors do for nudity: their ``TextImageDataset``
(``sd/ldm/data/__init__.py``, github clear-nus/selective-amnesia) splits
``"sexual, nudity, naked, erotic"`` on commas and draws ``np.random.choice`` of the four
each time it loads a surrogate image. Here the draw comes from the step's generator
(:class:`PairedSource`), so it is deterministic and a resumed run draws the same prompts.

The run folder holds ``run/`` (checkpoints of :func:`sa_utils.core.amnesia.selective_amnesia`)
and, when finished, ``pipeline/``: the whole pipeline with the new UNet, saved with
``save_pretrained`` so that ``StableDiffusionPipeline.from_pretrained`` loads it.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from sa_utils.adapters.sd import select_trainable
from sa_utils.core.amnesia import CHECKPOINT, SAConfig, SAResult, selective_amnesia
from sa_utils.core.fisher import DiagonalFisher
from sa_utils.core.sources import PairedSource
from sa_utils.progress import progress_bar, quiet_library_bars
from sa_utils.runtime import step_generator
from sa_utils.sd.common import claim_run_folder
from sa_utils.sd.imagesets import load_image_set

STEP = "forget"


@torch.no_grad()
def encode_set(adapter, images: torch.Tensor, seed: int, batch_size: int = 16) -> torch.Tensor:
    """Latents of a whole image set (kept on the CPU), one seeded posterior draw per batch."""
    out = []
    for i in progress_bar(range(0, len(images), batch_size), desc="encoding images", leave=False):
        g = step_generator(seed, i, device=adapter.device)
        out.append(adapter.encode_images(images[i : i + batch_size].to(adapter.device), g).float().cpu())
    return torch.cat(out)


@torch.no_grad()
def encode_unique(adapter, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(embeddings of the distinct prompts [P, L, D] on the CPU, index of each prompt [N])``."""
    distinct = sorted(set(prompts))
    emb = torch.cat([adapter.encode_prompts(distinct[i : i + 32]).float().cpu() for i in range(0, len(distinct), 32)])
    where = {p: i for i, p in enumerate(distinct)}
    return emb, torch.tensor([where[p] for p in prompts])


def split_forget_prompts(prompts: str | list[str]) -> list[str]:
    """The pool of forget prompts: every item split on commas and stripped, empty pieces and
    repeats dropped, order kept (``["sexual, nudity, naked, erotic"]`` -> four prompts, as the
    authors' ``TextImageDataset`` does; a prompt without commas stays as it is)."""
    if isinstance(prompts, str):
        prompts = [prompts]
    pool: list[str] = []
    for item in prompts:
        if not isinstance(item, str):
            raise TypeError(f"forget prompts must be strings, got {item!r}")
        for piece in item.split(","):
            piece = piece.strip()
            if piece and piece not in pool:
                pool.append(piece)
    return pool


def check_image_set(images: torch.Tensor, adapter, what: str) -> None:
    """Refuse an image set the pipeline cannot be trained on, naming what is wrong and what it needs:
    float images ``[N, 3, H, W]`` in [0, 1], all finite, at the pipeline's resolution."""
    pipe = adapter.pipeline
    size = int(pipe.unet.config.sample_size) * int(getattr(pipe, "vae_scale_factor", 8))
    if not torch.is_tensor(images) or not images.dtype.is_floating_point or images.dim() != 4:
        raise ValueError(
            f"{what}: expected float images [N, 3, H, W], got "
            f"{getattr(images, 'dtype', type(images))} of shape {tuple(getattr(images, 'shape', ()))}"
        )
    if len(images) == 0:
        raise ValueError(f"{what} holds no images")
    n, ch, h, w = images.shape
    if ch != 3:
        raise ValueError(f"{what}: images have {ch} channels; the pipeline's VAE encodes RGB (3)")
    if (h, w) != (size, size):
        raise ValueError(
            f"{what}: images are {h}x{w}, but this pipeline makes {size}x{size} images; "
            f"regenerate the set with this pipeline (python -m sa_utils.sd images ...)"
        )
    if not torch.isfinite(images).all():
        raise ValueError(f"{what}: {int((~torch.isfinite(images)).sum())} pixel values are NaN or infinite")
    lo, hi = float(images.min()), float(images.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise ValueError(f"{what}: pixel values span [{lo:.3g}, {hi:.3g}]; image sets hold values in [0, 1]")


def sd_forget(
    adapter,
    forget_prompts: list[str],
    surrogate_dir: str | Path,
    replay_dir: str | Path | None,
    fisher: DiagonalFisher | None,
    output_dir: str | Path,
    config: SAConfig,
    batch_size: int = 4,
    resume: bool = False,
    source: str = "",
    progress: bool = True,
    split_commas: bool = True,
) -> tuple[Path, SAResult]:
    """Run (or resume) SA; returns ``(folder of the saved pipeline, result)``.

    ``forget_prompts`` are split on commas into the prompt pool (:func:`split_forget_prompts`;
    ``split_commas=False`` keeps each as one prompt), and every surrogate image of a batch is
    paired with a prompt drawn from the pool. ``batch_size`` is the micro-batch: with
    ``config.grad_accum = k`` a step sees ``k * batch_size`` surrogate and as many replay images.

    ``resume=False`` refuses to touch a folder that already holds a checkpoint (pass
    ``resume=True``, the command line's ``--resume_from_checkpoint latest``, to continue it).
    """
    if isinstance(forget_prompts, str):
        forget_prompts = [forget_prompts]
    if not forget_prompts or not all(isinstance(p, str) and p.strip(" ,") for p in forget_prompts):
        raise ValueError("give at least one non-empty forget prompt, e.g. 'brad pitt'")
    pool = (
        split_forget_prompts(forget_prompts) if split_commas else list(dict.fromkeys(p.strip() for p in forget_prompts))
    )
    folder = Path(output_dir)
    settings = {
        "pipeline": str(source),
        "forget_prompts": list(forget_prompts),
        "forget_prompt_pool": pool,
        "surrogate_set": str(Path(surrogate_dir).resolve()),
        "replay_set": str(Path(replay_dir).resolve()) if replay_dir else None,
        "batch_size": batch_size,
        "train_method": adapter.train_method,
        "fisher_estimator": fisher.estimator if (fisher is not None and config.lmbda) else None,
        "sa": {k: v for k, v in asdict(config).items() if k != "steps"},
    }  # a resumed run may run longer
    # every image set is read and checked against the pipeline before anything is written or trained
    sur_images, _, _ = load_image_set(surrogate_dir)
    check_image_set(sur_images, adapter, f"surrogate set {surrogate_dir}")
    rep_images = rep_prompts = None
    if replay_dir is not None and config.gamma:
        rep_images, rep_prompts, _ = load_image_set(replay_dir)
        check_image_set(rep_images, adapter, f"replay set {replay_dir}")
    run_dir = folder / "run"
    if (run_dir / CHECKPOINT).exists() and not resume:
        raise FileExistsError(
            f"{run_dir} already holds a checkpoint. Pass --resume_from_checkpoint latest to continue "
            "it, or choose another --output_dir."
        )
    claim_run_folder(folder, settings, STEP)
    dev = adapter.device
    pool_emb, pool_index = encode_unique(adapter, pool)
    forget_src = PairedSource(
        encode_set(adapter, sur_images, config.seed),
        pool_emb[pool_index],  # in pool order
        None,
        batch_size,
        config.seed + 1,
        dev,
    )
    replay_src = None
    if rep_images is not None:
        emb, index = encode_unique(adapter, rep_prompts)
        replay_src = PairedSource(
            encode_set(adapter, rep_images, config.seed + 2), emb, index, batch_size, config.seed + 3, dev
        )
    select_trainable(adapter.model, adapter.train_method)  # the adapter's selection, whatever was changed since
    result = selective_amnesia(
        adapter,
        forget_src,
        replay_src,
        fisher if config.lmbda else None,
        config,
        run_dir=run_dir,
        progress=progress,
        desc="Selective Amnesia (SD)",
    )
    out = folder / "pipeline"
    quiet_library_bars()  # no "Writing model shards" widget in an unattended run
    adapter.pipeline.save_pretrained(out, safe_serialization=True)
    return out, result
