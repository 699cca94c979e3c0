"""Load-before-you-train recipes for the Stable Diffusion chapters (Part III).

Quick mode runs on a CPU in the tiny world (``pipeline="tiny"``: the small Stable-Diffusion-shaped
pipeline the ``tinyworld`` package ships, with its independent detectors). Full mode is Stable
Diffusion v1.4 from the hub on a GPU, with a zero-shot CLIP detector. The code is the same: what
differs is the recipe's :class:`sa_utils.recipes.worlds.World`. Both run the five steps of
:mod:`sa_utils.sd`, the code behind ``python -m sa_utils.sd``; every step's run folder lives in
the cache under a name derived from its settings, so a chapter run twice loads what it made the
first time, and a run that was interrupted resumes.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import torch

from sa_utils.adapters.sd import (
    StableDiffusionAdapter,
    select_trainable,  # noqa: F401  (book API: the weights a train_method trains)
)
from sa_utils.core.amnesia import CHECKPOINT, SAConfig, SAResult
from sa_utils.core.fisher import DiagonalFisher, TimestepSum
from sa_utils.erasure.esd import ESDConfig
from sa_utils.erasure.uce import UCEConfig
from sa_utils.eval.detectors import Detector
from sa_utils.eval.metrics import frechet_distance
from sa_utils.progress import progress_bar
from sa_utils.recipes.base import Recipe
from sa_utils.recipes.worlds import CELEBRITIES_FULL, CELEBRITY_TEMPLATES, near_duplicates, world_for  # noqa: F401
from sa_utils.runtime import cache_dir, default_device, resolve_mode, settings_digest
from sa_utils.sd.common import (
    load_pipeline,
    read_prompts,  # noqa: F401  (book API: a prompt file, one a line)
)
from sa_utils.sd.erase import sd_erase
from sa_utils.sd.evaluate import safety_checker_off
from sa_utils.sd.fisher import sd_fisher as run
from sa_utils.sd.forget import sd_forget, split_forget_prompts
from sa_utils.sd.imagesets import (
    filter_image_set,
    generate_image_set,
    generate_images,
    load_image_set,  # noqa: F401  (book API: images, prompts, settings of a set)
    safety_flags,
)
from sa_utils.storage.checkpoint import load_tensors, read_metadata, save_tensors

TINY = "tiny"  # quick mode's pipeline: the world the tinyworld plugin registers
SD14 = "CompVis/stable-diffusion-v1-4"


@dataclass(frozen=True)
class SDRecipe(Recipe):
    """Every run-size knob of Part III; ``full`` is the authors' SD v1.4 recipe, made to run on one GPU.

    The authors' effective settings (github clear-nus/selective-amnesia: ``sd/main_forget.py``
    scales the base lr 1e-5 by 4 GPUs x batch 4 = 1.6e-4; ``sd/ldm/models/diffusion/ddpm_forget.py``
    ``configure_optimizers`` builds ``torch.optim.AdamW`` with its default weight decay 0.01 and
    keeps a ``LitEma`` of decay 0.9999, used for sampling; ``sd/configs/stable-diffusion/forget_*.yaml``:
    lambda 50, gamma 1, batch 4 surrogate + 4 replay images per GPU, 200 epochs of 1,000 surrogate
    images for a celebrity, 500 for nudity). Full mode reproduces them on one GPU: 4 + 4 images
    per micro-batch, 4 micro-batches per step (16 + 16, averaged like their 4 GPUs), 12,500 steps
    (celebrity) and 31,250 (nudity), and the evaluated weights are the EMA's.

    ``schedule_name`` names the run length: ``"authors"`` (full mode's default), ``"one-gpu-short"``
    (``recipe("full", schedule="one-gpu-short")``) or ``"quick"``; see :data:`SCHEDULES`.
    """

    CHECKPOINTS_PER_RUN: ClassVar[int] = 4
    MIN_CHECKPOINT_EVERY: ClassVar[int] = 50

    pipeline: str
    """``"tiny"`` (the shipped tiny pipeline), a hub id or a local pipeline folder."""
    sample_steps: int
    guidance_scale: float
    replay_per_prompt: int
    """Images per replay prompt (the replay set feeds the Fisher and the replay term)."""
    surrogate_images: int
    sa_steps: int
    """SA steps (optimizer updates) of the celebrity task, and of any task without its own
    (:attr:`ForgetTask.sa_steps`)."""
    sa_batch: int
    """Surrogate images per micro-batch, and as many replay images (a step has ``grad_accum`` of them)."""
    sa_lr: float
    eval_per_prompt: int
    lmbda: float = 50.0
    gamma: float = 1.0
    fisher_chunk: int = 16
    fisher_timesteps: int | None = None
    """The Fisher's estimator: ``None`` = the authors' exact sum over all T timesteps per image
    (:class:`sa_utils.core.fisher.TimestepSum`), ``K`` = the stratified ``TimestepSum(k=K)``."""
    fisher_timestep_chunk: int = 125
    """Noised copies of one image per forward/backward pass of the Fisher (memory only)."""
    generic_replay_prompts: int | None = None
    """``None``: the tiny world's 244 replay prompts (its text encoder knows only its captions'
    words); ``n``: the first ``n`` of :func:`sa_utils.sd.generic_prompts.generic_prompts`."""
    optimizer: str = "adam"
    weight_decay: float = 0.0
    grad_accum: int = 1
    ema_decay: float | None = None
    """EMA of the trained weights; when set, the pipeline SA hands back (and that is evaluated) holds the EMA."""
    nudity_sa_steps: int | None = None
    """SA steps of the attribute (nudity) task; ``None``: ``sa_steps``."""
    schedule_name: str = "quick"
    gen_batch: int = 32
    mixed_precision: str = "no"
    ewc_dtype: str | None = None
    gradient_checkpointing: bool = False
    clip_model: str = "openai/clip-vit-large-patch14"
    """Full mode's zero-shot celebrity detector (a hub id or a local folder)."""
    seed: int = 0

    def sa_config(self, **overrides) -> SAConfig:
        return self.sa_settings(
            overrides.get("steps", self.sa_steps),
            self.sa_lr,
            overrides,
            optimizer=self.optimizer,
            weight_decay=self.weight_decay,
            grad_accum=self.grad_accum,
            ema_decay=self.ema_decay,
            mixed_precision=self.mixed_precision,
            ewc_dtype=self.ewc_dtype,
        )

    def fisher_estimator(self):
        """The :class:`sa_utils.core.fisher.TimestepSum` of ``fisher_timesteps``."""

        return TimestepSum(k=self.fisher_timesteps, chunk=self.fisher_timestep_chunk)

    def sampling(self) -> dict[str, Any]:
        return {"num_inference_steps": self.sample_steps, "guidance_scale": self.guidance_scale}

    def lr_x_steps(self) -> dict[str, float]:
        """Learning rate x SA steps of the two tasks (how far Adam can move the weights, roughly)."""
        return {"celebrity": self.sa_lr * self.sa_steps, "nudity": self.sa_lr * (self.nudity_sa_steps or self.sa_steps)}

    def schedule_note(self) -> str:
        """One line on the run length, next to the authors' (``lr x steps`` of both tasks)."""

        def line(r: SDRecipe) -> str:
            n = r.nudity_sa_steps or r.sa_steps
            return (
                f"{_sci(r.sa_lr)} x {r.sa_steps:,} = {r.sa_lr * r.sa_steps:.2g} (celebrity), "
                f"{_sci(r.sa_lr)} x {n:,} = {r.sa_lr * n:.2g} (nudity)"
            )

        authors = RECIPES["full"]
        note = f"schedule {self.schedule_name!r}: lr x steps = {line(self)}"
        return note if self == authors else note + f"; the authors': {line(authors)}"


def _sci(x: float) -> str:
    """``1.6e-4`` rather than ``0.00016``."""
    m, e = f"{x:.1e}".split("e")
    return f"{float(m):g}e{int(e)}"


RECIPES = {
    # the tiny pipeline on a CPU: Adam at lr 1e-4, 8 + 8 images per step, 400 steps, no EMA (0.9999 over
    # 400 steps would move the evaluated weights only 1 - 0.9999**400 = 4% of the way from theta*), the
    # stratified Fisher with 20 timesteps per image, the tiny world's 244 replay prompts. The losses
    # are reduced as the authors' (the batch mean of the latent-pixel mean, StableDiffusionAdapter) and
    # the Fisher is a timestep sum, as theirs. lambda = 0.05, not the authors' 50: on the 1.1M-parameter
    # tiny UNet their Fisher at lambda = 50 holds theta at theta* (session 6, chapter 8's task, `full`:
    # "Orla Brisk" stays at 1.00 on seen prompts and paraphrases). Sweep (`stable_diffusion.forget(..., lmbda=)`,
    # these settings; seen / paraphrases after SA, every other identity's rate): lambda 5: 1.00 / 1.00;
    # 0.5: 0.43 / 0.57; 0.05: 0.04 / 0.29, others 1.00; 0.005: 0.04 / 0.21, one other at 0.96.
    # 0.05 is the largest of these that forgets the name (pooled rate <= 0.2) with the others intact.
    "quick": SDRecipe(
        "quick",
        TINY,
        sample_steps=20,
        guidance_scale=5.0,
        replay_per_prompt=1,
        surrogate_images=64,
        sa_steps=400,
        sa_batch=8,
        sa_lr=1e-4,
        eval_per_prompt=4,
        fisher_timesteps=20,
        lmbda=0.05,
    ),
    # the authors' effective settings on one GPU (see SDRecipe); fp16 autocast, theta* and F in half
    # precision, gradient checkpointing (chapter 8's memory table); 5,000 generic replay prompts x 1 image;
    # the exact Fisher: 1,000 forward/backward passes per replay image
    "full": SDRecipe(
        "full",
        SD14,
        sample_steps=50,
        guidance_scale=7.5,
        replay_per_prompt=1,
        surrogate_images=1000,
        sa_steps=12_500,
        sa_batch=4,
        sa_lr=1.6e-4,
        eval_per_prompt=4,
        fisher_chunk=2,
        fisher_timesteps=None,
        fisher_timestep_chunk=8,
        generic_replay_prompts=5000,
        optimizer="adamw",
        weight_decay=0.01,
        grad_accum=4,
        ema_decay=0.9999,
        nudity_sa_steps=31_250,
        schedule_name="authors",
        gen_batch=8,
        mixed_precision="fp16",
        ewc_dtype="float16",
        gradient_checkpointing=True,
    ),
}

SCHEDULES: dict[tuple[str, str], dict[str, Any]] = {
    ("quick", "quick"): {},
    ("full", "authors"): {},
    # Fewer steps at the authors' lr for one GPU: lr x steps = 1.6e-4 x 2,000 = 0.32 (celebrity) and
    # 1.6e-4 x 5,000 = 0.8 (nudity, the authors' 2.5x), against the authors' 1.6e-4 x 12,500 = 2.0 and
    # 1.6e-4 x 31,250 = 5.0. Both runs are 6.25x shorter, so the EMA decay is 1 - 1e-4 x 6.25, which keeps
    # the authors' EMA horizon relative to the run: the evaluated weights move 1 - 0.999375**2000 = 71% of
    # the way (celebrity; 96% for nudity), as 0.9999 does over 12,500 (31,250) steps; 0.9999 over 2,000
    # steps would move them only 18%.
    ("full", "one-gpu-short"): {"sa_steps": 2_000, "nudity_sa_steps": 5_000, "ema_decay": 0.999375},
}
"""Named run lengths ``(mode, name) -> recipe fields``; ``schedule_name`` records the name."""


# full mode (SD v1.4 from the Hub, thousands of SA steps: hours of GPU time) runs only when asked for:
# MODE="full" or SA_MODE=full
GPU_DEFAULT_MODE = "quick"


def recipe(mode: str | None = None, schedule: str | None = None, **overrides) -> SDRecipe:
    """The recipe of ``mode`` (quick or full), with the named ``schedule`` (:data:`SCHEDULES`) and
    any field overridden (:meth:`SDRecipe.schedule_note` states the result's lr x steps).

    Full mode's schedules: ``"authors"`` (default), lr x steps = 1.6e-4 x 12,500 = 2.0 (celebrity)
    and 1.6e-4 x 31,250 = 5.0 (nudity), EMA 0.9999; ``"one-gpu-short"``, the same lr for fewer
    steps: 1.6e-4 x 2,000 = 0.32 (celebrity) and 1.6e-4 x 5,000 = 0.8 (nudity), EMA 0.999375 (the
    authors' EMA horizon relative to the run length)."""
    base = RECIPES[resolve_mode(mode, gpu_default=GPU_DEFAULT_MODE)]
    if schedule is not None:
        if (base.mode, schedule) not in SCHEDULES:
            names = sorted(s for m, s in SCHEDULES if m == base.mode)
            raise ValueError(f"{base.mode} mode has the schedules {names}, not {schedule!r}")
        base = replace(base, schedule_name=schedule, **SCHEDULES[(base.mode, schedule)])
    return replace(base, **overrides)


def _dir(kind: str, settings: dict) -> Path:
    return cache_dir() / "sd" / f"{kind}-{settings_digest(settings)}"


def source_id(r: SDRecipe) -> str:
    """The pipeline's name in every cache key (:meth:`sa_utils.recipes.worlds.World.source_id`)."""
    return world_for(r).source_id()


# -- the pretrained pipeline ---------------------------------------------------------------


def _dtype(r: SDRecipe, device, training: bool) -> torch.dtype:
    half = r.mixed_precision == "fp16" and torch.device(device).type == "cuda" and not training
    return torch.float16 if half else torch.float32


def pretrained_pipeline(r: SDRecipe, device: torch.device | str | None = None, training: bool = False):
    """theta*: the shipped tiny pipeline (quick) or ``r.pipeline`` from the hub or a folder (full).

    With ``r.mixed_precision="fp16"`` on a GPU a pipeline for sampling is loaded in half
    precision; ``training=True`` (Fisher, SA) keeps float32 weights (SA then uses autocast).
    Real Stable Diffusion keeps its safety checker: flagged images come back black.
    """
    device = device or default_device()
    return world_for(r).pipeline(device, _dtype(r, device, training))


def adapter_for(pipe, r: SDRecipe, train_method: str = "full"):

    return StableDiffusionAdapter(pipe, train_method, r.guidance_scale, r.sample_steps, sample_batch=r.gen_batch)


# -- steps 1 and 2: image sets ---------------------------------------------------------------


def image_set(pipe, r: SDRecipe, prompts: list[str], n_per_prompt: int, progress: bool = True) -> Path:
    """An image set of the pretrained pipeline (cached, resumable): the replay or the surrogate set."""

    settings = {"pipeline": source_id(r), "prompts": prompts, "n": n_per_prompt, "seed": r.seed, **r.sampling()}
    return generate_image_set(
        pipe,
        prompts,
        _dir("images", settings),
        n_per_prompt,
        r.seed,
        r.sample_steps,
        r.guidance_scale,
        r.gen_batch,
        source=source_id(r),
        progress=progress,
    )


def replay_prompts(r: SDRecipe, exclude_words: tuple[str, ...] = ()) -> list[str]:
    """The replay (and Fisher) prompts: quick mode, the tiny world's 244 generic prompts
    (``tinyworld/prompts/replay.txt``: the tiny text encoder knows only the words of
    its captions); full mode, ``r.generic_replay_prompts`` (5,000, as the authors' ``fim_prompts.txt``)
    everyday captions of :func:`sa_utils.sd.generic_prompts.generic_prompts`, one image each."""
    return world_for(r).replay_prompts(exclude_words)


def unrelated_prompts(r: SDRecipe, n: int = 24) -> list[str]:
    """Prompts to check that everything else still works after forgetting, held out from the replay
    (and Fisher) prompts: quick mode, ``tinyworld/prompts/unrelated.txt``; full mode, ``n`` generic
    captions drawn with another seed, minus any replay prompt (:func:`near_duplicates`)."""
    return world_for(r).unrelated_prompts(n)


def replay_set(pipe, r: SDRecipe, prompts: list[str] | None = None, progress: bool = True) -> Path:
    return image_set(pipe, r, prompts if prompts is not None else replay_prompts(r), r.replay_per_prompt, progress)


def filtered_set(r: SDRecipe, source_dir: Path, detector: Detector, reason: str) -> Path:
    """``source_dir`` without the images ``detector`` flags, nor those the pipeline's safety checker
    blacked out while drawing them (cached): e.g. a replay set cleaned of the concept being forgotten."""

    images, _, _ = load_image_set(source_dir)
    keep = ~(detector(images).bool() | safety_flags(source_dir))
    return filter_image_set(source_dir, keep, _dir("images", {"from": source_dir.name, "filter": reason}), reason)


def surrogate_set(pipe, r: SDRecipe, prompt: str, progress: bool = True) -> Path:
    return image_set(pipe, r, [prompt], r.surrogate_images, progress)


# -- step 3: the Fisher ----------------------------------------------------------------------


def sd_fisher(pipe, r: SDRecipe, replay_dir: Path, progress: bool = True) -> DiagonalFisher:
    """Diagonal Fisher of every UNet weight over the replay set (cached), with the recipe's
    estimator (``r.fisher_timesteps``: the authors' exact timestep sum, or a stratified one; the
    estimator is part of the cache key). A diagonal Fisher of a subset of the weights is the same
    numbers restricted to it: see :func:`restrict`."""

    if pipe.unet.dtype != torch.float32:
        pipe = pretrained_pipeline(r, training=True)
    adapter = adapter_for(pipe, r, "full")
    est = r.fisher_estimator()
    settings = {
        "pipeline": source_id(r),
        "replay": replay_dir.name,
        "chunk": r.fisher_chunk,
        "seed": r.seed,
        "estimator": est.name,
    }
    return run(
        adapter, replay_dir, _dir("fisher", settings), r.fisher_chunk, "vmap", r.seed, progress=progress, estimator=est
    )


def restrict(fisher: DiagonalFisher, params: dict[str, torch.nn.Parameter]) -> DiagonalFisher:
    """The Fisher entries of ``params`` only (e.g. the weights a ``train_method`` trains)."""
    missing = sorted(set(params) - set(fisher.values))
    if missing:
        raise KeyError(f"the Fisher has no entries for {missing[:3]}...; compute it over these weights")
    return DiagonalFisher({n: fisher.values[n] for n in params}, fisher.n_samples, dict(fisher.metadata))


# -- step 4: forgetting ----------------------------------------------------------------------


@dataclass
class ForgetRun:
    """A finished SA run: the new pipeline, its folder, and the SA result (history, seconds)."""

    pipeline: Any
    folder: Path
    result: SAResult
    settings: dict

    @property
    def key(self) -> str:
        """The run's name in the image cache (see :func:`images`)."""
        return self.folder.name


def forget(
    r: SDRecipe,
    forget_prompts: list[str] | ForgetTask,
    surrogate_dir: Path,
    replay_dir: Path | None,
    fisher: DiagonalFisher | None,
    train_method: str = "full",
    progress: bool = True,
    **overrides,
) -> ForgetRun:
    """Selective Amnesia on a fresh copy of the pretrained pipeline (cached; resumes when interrupted).

    ``forget_prompts``: the prompts, or a :class:`ForgetTask` (its prompts, and its ``sa_steps``
    when it has its own, e.g. the authors' 31,250 steps for nudity). A prompt with commas is
    split into several, one drawn per surrogate image (:func:`sa_utils.sd.forget.split_forget_prompts`).
    ``overrides`` change the SA settings (``lmbda=0`` drops EWC, ``gamma=0`` drops replay,
    ``steps``, ``lr``). A run that finished before is loaded, not repeated. With ``r.ema_decay``
    the returned pipeline holds the EMA weights, as the authors sample with theirs.
    """

    if isinstance(forget_prompts, ForgetTask):
        task = forget_prompts
        forget_prompts = task.forget_prompts
        if task.sa_steps is not None and "steps" not in overrides:
            overrides["steps"] = task.sa_steps
    cfg = r.sa_config(**overrides)
    settings = {
        "pipeline": source_id(r),
        "forget": list(forget_prompts),
        "forget_pool": split_forget_prompts(list(forget_prompts)),
        "surrogate": surrogate_dir.name,
        "replay": replay_dir.name if (replay_dir is not None and cfg.gamma) else None,
        "fisher_n": fisher.n_samples if (fisher is not None and cfg.lmbda) else 0,
        "fisher_estimator": fisher.estimator if (fisher is not None and cfg.lmbda) else None,
        "train_method": train_method,
        "batch": r.sa_batch,
        "gradient_checkpointing": r.gradient_checkpointing,
        "sa": asdict(cfg),
    }
    folder = _dir("forget", settings)
    done = folder / "pipeline" / "model_index.json"
    if done.exists() and (folder / "run" / CHECKPOINT).exists():
        meta = read_metadata(folder / "run" / CHECKPOINT)
        if meta.get("step") == cfg.steps:
            device = default_device()
            pipe = load_pipeline(folder / "pipeline", device, _dtype(r, device, training=False))
            return ForgetRun(pipe, folder, SAResult(meta["history"], cfg.steps, 0.0, cfg.steps), settings)
    pipe = pretrained_pipeline(r, training=True)
    adapter = adapter_for(pipe, r, train_method)
    if r.gradient_checkpointing:
        adapter.model.enable_gradient_checkpointing()
    sub = None
    if fisher is not None and cfg.lmbda:
        sub = restrict(fisher, adapter.trainable_parameters())
        sub = sub.to(adapter.device, getattr(torch, cfg.ewc_dtype) if cfg.ewc_dtype else None)
    out, result = sd_forget(
        adapter,
        forget_prompts,
        surrogate_dir,
        replay_dir if cfg.gamma else None,
        sub,
        folder,
        cfg,
        r.sa_batch,
        resume=True,
        source=source_id(r),
        progress=progress,
    )
    pipe.unet.eval()
    return ForgetRun(pipe, folder, result, settings)


@dataclass
class EraseRun:
    """A finished run of another erasure method: the new pipeline, its folder and its results."""

    pipeline: Any
    folder: Path
    method: str
    results: dict

    @property
    def key(self) -> str:
        """The run's name in the image cache (see :func:`images`)."""
        return self.folder.name


def erase(r: SDRecipe, task: ForgetTask, method: str, progress: bool = True, **settings) -> EraseRun:
    """Erase ``task``'s target with another method (cached, resumable): ``"uce"`` maps the forget
    prompts onto the task's surrogate prompt (:mod:`sa_utils.erasure.uce`), ``"esd-x"`` / ``"esd-u"``
    fine-tune away from them (:mod:`sa_utils.erasure.esd`; one forget prompt per run, the task's first).
    ``settings`` override the method's defaults (the authors'), e.g. ``iterations=50``."""

    pool = task.forget_pool
    if method == "uce":
        config = UCEConfig(tuple(pool), (task.surrogate_prompt,) * len(pool), **settings)
    else:
        config = ESDConfig(pool[0], method, **{"seed": r.seed, **settings})
    folder = _dir("erase", {"pipeline": source_id(r), "method": method, "config": config.to_dict()})
    done = folder / "pipeline" / "model_index.json"
    if not (done.exists() and (folder / "results.json").exists()):
        sd_erase(pretrained_pipeline(r, training=True), method, config, folder, source_id(r), progress)
    device = default_device()
    pipe = load_pipeline(folder / "pipeline", device, _dtype(r, device, training=False))
    return EraseRun(pipe, folder, method, json.loads((folder / "results.json").read_text()))


def relearn(
    r: SDRecipe,
    task: ForgetTask,
    pipe,
    key: str,
    checkpoints: tuple[int, ...] = (0, 10, 25, 50),
    n_images: int = 8,
    progress: bool = True,
) -> dict[int, float]:
    """The relearning attack: fine-tune the erased pipeline ``pipe`` (named ``key``) on about ``n_images``
    images of the forgotten target (a whole number per prompt), drawn by the pretrained model from the
    target's seen prompts,
    with the plain denoising loss (the SA routine with ``lmbda = gamma = 0`` and the recipe's lr and
    batch), and read the target's rate on its seen prompts after each number of ``checkpoints`` steps:
    ``{steps: rate}``. How fast the rate comes back says how much of the concept the erasure left in
    the weights. ``pipe`` itself is not changed; every checkpoint is its own cached run folder."""
    seen = task.prompt_sets[f"{task.target} | seen"]
    base = pretrained_pipeline(r)
    per_prompt = max(1, -(-n_images // len(seen)))
    concept_dir = image_set(base, r, seen, per_prompt, progress)
    detector = task_detectors(r, task)[task.target]
    rates = {}
    for steps in sorted(set(checkpoints)):
        if steps == 0:
            rates[0] = rate(detector, images(pipe, r, seen, key))
            continue
        # each checkpoint trains its own copy from the erased weights (cached by its settings)
        settings = {"pipeline": source_id(r), "from": key, "images": concept_dir.name, "steps": steps}
        folder = _dir("relearn", settings)
        attacked = copy.deepcopy(pipe)
        adapter = adapter_for(attacked, r, "full")
        cfg = r.sa_config(lmbda=0.0, gamma=0.0, steps=steps, ema_decay=None, grad_accum=1)
        sd_forget(
            adapter, seen, concept_dir, None, None, folder, cfg, r.sa_batch, resume=True, source=key, progress=progress
        )
        attacked.unet.eval().requires_grad_(False)
        rates[steps] = rate(detector, images(attacked, r, seen, folder.name))
    return rates


# -- step 5: evaluation ----------------------------------------------------------------------


def images(
    pipe, r: SDRecipe, prompts: list[str], key: str, n_per_prompt: int | None = None, raw: bool = False
) -> torch.Tensor:
    """Images in ``[0, 1]`` of every prompt, ``n_per_prompt`` each (cached under ``key``, the
    pipeline's name, e.g. ``"base"`` or a forget run's folder name). Image ``i`` of every pipeline
    starts from the same seed, so before/after pairs differ only by the model.

    ``raw=True`` draws with the safety checker off, for counting only: such images are neither
    cached nor meant to be shown (the tiny pipeline has no checker, so it changes nothing there).
    """

    n = n_per_prompt or r.eval_per_prompt
    todo = [p for p in prompts for _ in range(n)]

    def draw() -> torch.Tensor:
        return generate_images(pipe, todo, r.seed + 7, r.sample_steps, r.guidance_scale, r.gen_batch)

    if raw and getattr(pipe, "safety_checker", None) is not None:
        with safety_checker_off(pipe):
            return draw()
    settings = {"pipeline": source_id(r), "key": key, "prompts": todo, "seed": r.seed + 7, **r.sampling()}
    path = _dir("eval", settings).with_suffix(".safetensors")
    if path.exists():
        return load_tensors(path)[0]["images"].float() / 255
    out = (draw() * 255).round().to(torch.uint8)
    save_tensors(path, {"images": out}, {"key": key, "n": len(todo)})
    return out.float() / 255  # the stored 8-bit images, so a cached and a fresh call agree exactly


def image_change(before: torch.Tensor, after: torch.Tensor, n_per_prompt: int) -> float:
    """How much images changed, from the same seeds: mean |after - before| divided by the mean
    difference between two seeds of the same prompt under ``before`` (0: unchanged; 1: as
    different as a fresh draw of the original model)."""
    if before.shape != after.shape or n_per_prompt < 2:
        raise ValueError("before and after must match in shape, with at least 2 images per prompt")
    change = (after - before).abs().mean()
    b = before.view(-1, n_per_prompt, *before.shape[1:])
    natural = (b[:, 1:] - b[:, :1]).abs().mean()
    return float(change / natural)


def rate(detector: Detector, imgs: torch.Tensor) -> float:
    return float(detector(imgs).float().mean())


def set_sizes(r: SDRecipe, task: ForgetTask) -> dict[str, int]:
    """Images behind each rate of :func:`evaluate_task`: prompts of the set x ``r.eval_per_prompt``
    (the ``n`` of :func:`sa_utils.eval.metrics.rate_with_interval`)."""
    return {name: len(task.prompt_sets[name]) * r.eval_per_prompt for name in task.readings}


# -- quality on the rest of the world (quick mode) ----------------------------------------------


def world_scenes(r: SDRecipe, n: int = 256) -> tuple[list[str], torch.Tensor]:
    """Captions and true images (``[0, 1]``) of ``n`` held-out scenes of the recipe's world (the tiny
    world's have no identity and no named attribute): the "real data" of the quality check."""
    return world_for(r).quality_reference(n)


def world_fd(pipe, r: SDRecipe, key: str, n: int = 256) -> float:
    """Frechet distance between the pipeline's images of ``n`` held-out world captions and the
    true images of those same scenes, in the world's feature space (the tiny world: its identity
    detector's 64 features, its analogue of FID on COCO captions; lower is better); ``nan`` for a
    world without ground-truth images (real Stable Diffusion: compute FID on a caption set)."""

    world = world_for(r)
    if not world.has_quality_reference:
        return float("nan")
    captions, real = world.quality_reference(n)
    fake = images(pipe, r, captions, key, n_per_prompt=1)
    return frechet_distance(world.features(fake), world.features(real))


# -- the two forgetting tasks of the book ------------------------------------------------------


@dataclass(frozen=True)
class ForgetTask:
    """What a chapter forgets, with what, and how it is read.

    ``forget_prompts`` are as the authors give them (a caption with commas is several prompts,
    one drawn per surrogate image: :attr:`forget_pool`); ``prompt_sets`` maps a name to prompts;
    ``readings`` maps a prompt-set name to the detector (by name in :func:`task_detectors`)
    whose rate is reported on it; ``sa_steps`` overrides the recipe's steps for this task
    (:func:`forget` takes the task itself to apply it).
    """

    forget_prompts: list[str]
    surrogate_prompt: str
    train_method: str
    prompt_sets: dict[str, list[str]]
    readings: dict[str, str]
    target: str
    sa_steps: int | None = None

    @property
    def forget_pool(self) -> list[str]:
        """The prompts SA pairs with the surrogate images, one drawn per image."""

        return split_forget_prompts(self.forget_prompts)


def celebrity_task(r: SDRecipe) -> ForgetTask:
    """Chapter 8: the tiny world's identity "Orla Brisk" (quick) or "brad pitt" (full, the paper's)."""
    names, surrogate, sets = world_for(r).celebrity()
    sets["unrelated"] = unrelated_prompts(r)
    readings = {k: k.split(" | ")[0] for k in sets if k != "unrelated"}
    return ForgetTask([names[0]], surrogate, "full", sets, readings, names[0])


def task_detectors(r: SDRecipe, task: ForgetTask) -> dict[str, Detector]:
    """The detectors a task's readings name: per identity (celebrity task) or the attribute."""
    return world_for(r).detectors(sorted(set(task.readings.values())), task.surrogate_prompt)


def attribute_task(r: SDRecipe, nudity_prompts: list[str] | None = None) -> ForgetTask:
    """Chapter 9: the tiny world's attribute (quick) or nudity (full, the paper's words and surrogate;
    ``nudity_prompts`` is the user's evaluation set, e.g. the I2P prompts).

    The forget caption is the authors' ``forget_prompt: sexual, nudity, naked, erotic``
    (``sd/configs/stable-diffusion/forget_nudity.yaml``), split on commas into four prompts of
    which one is drawn per surrogate image (``sd/ldm/data/__init__.py`` ``TextImageDataset``);
    the tiny world's ``"spotted, dotted, speckled, polka dot"`` is split the same way. The task
    runs ``r.nudity_sa_steps`` steps (the authors' 500 epochs: 31,250 in full mode)."""
    forget, surrogate, sets = world_for(r).attribute(nudity_prompts)
    return ForgetTask(
        forget, surrogate, "noxattn", sets, {k: "attribute" for k in sets}, "attribute", sa_steps=r.nudity_sa_steps
    )


def attribute_train_methods(r: SDRecipe) -> tuple[str, ...]:
    """The ``train_method`` s chapter 9 compares (all three in the tiny world; the paper's ``noxattn``
    on real SD, where each run costs hours of GPU)."""
    return world_for(r).attribute_train_methods


def shows_attribute(r: SDRecipe) -> bool:
    """Whether images of the attribute may be shown (the tiny world's spots: yes; nudity: never)."""
    return world_for(r).shows_attribute_images


def evaluate_task(
    pipes: dict[str, Any], r: SDRecipe, task: ForgetTask, detectors: dict[str, Detector], progress: bool = True
) -> dict[str, dict[str, float]]:
    """Detector rate of every pipeline (``{key: pipeline}``; keys as in :func:`images`) on every
    prompt set of ``task``: ``{key: {prompt set: rate}}``. Nudity on real SD is counted on raw images."""

    raw = task.target == "attribute" and world_for(r).raw_attribute_images
    out: dict[str, dict[str, float]] = {}
    jobs = [(k, s) for k in pipes for s in task.readings]
    for key, name in progress_bar(jobs, desc="evaluating", disable=not progress):
        x = images(pipes[key], r, task.prompt_sets[name], key, raw=raw)
        out.setdefault(key, {})[name] = rate(detectors[task.readings[name]], x)
    return out


def layer_kind(name: str) -> str:
    """The kind of UNet layer a parameter belongs to (for the Fisher-by-layer figure)."""
    if ".attn2." in name:
        return "cross-attention"
    if ".attn1." in name:
        return "self-attention"
    if ".ff." in name:
        return "feed-forward"
    if "resnets" in name:
        return "ResNet blocks"
    if name.startswith("time_embedding"):
        return "time embedding"
    if ".proj_in." in name or ".proj_out." in name or "transformer_blocks" in name or ".norm." in name:
        return "transformer in/out, norms"
    return "other (conv in/out, resampling)"


def fisher_by_kind(fisher: DiagonalFisher) -> dict[str, tuple[int, float]]:
    """``{layer kind: (number of parameters, share of the total Fisher mass)}``."""
    count: dict[str, int] = {}
    mass: dict[str, float] = {}
    for n, v in fisher.values.items():
        k = layer_kind(n)
        count[k] = count.get(k, 0) + v.numel()
        mass[k] = mass.get(k, 0.0) + float(v.double().sum())
    total = sum(mass.values())
    return {k: (count[k], mass[k] / total) for k in sorted(count, key=lambda k: -mass[k])}
