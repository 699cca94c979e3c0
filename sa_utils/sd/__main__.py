"""Selective Amnesia for Stable Diffusion, as five commands (chapters 8 and 9 walk through them).

    python -m sa_utils.sd prompts  --n 5000 --output replay.txt     # generic prompts (the authors replay 5,000)
    python -m sa_utils.sd images   --pretrained_model_name_or_path MODEL --prompts_file replay.txt \
                                   --output_dir runs/replay
    python -m sa_utils.sd images   --pretrained_model_name_or_path MODEL --prompt "a middle aged man" \
                                   --num_images_per_prompt 1000 --output_dir runs/surrogate
    python -m sa_utils.sd filter   --image_dir runs/replay --detector nudenet --output_dir runs/replay-clean  # optional
    accelerate launch --multi_gpu --num_processes 2 -m sa_utils.sd fisher \
                                   --pretrained_model_name_or_path MODEL --replay_dir runs/replay \
                                   --output_dir runs/fisher
    python -m sa_utils.sd forget   --pretrained_model_name_or_path MODEL --forget_prompt "brad pitt" \
                                   --surrogate_dir runs/surrogate --replay_dir runs/replay --fisher_path runs/fisher \
                                   --train_method full --output_dir runs/forget-brad-pitt \
                                   --learning_rate 1e-5 --scale_lr --train_batch_size 4 \
                                   --gradient_accumulation_steps 4 --max_train_steps 12500 \
                                   --ema_decay 0.9999                       # the authors' 4 GPUs on one
    python -m sa_utils.sd evaluate --pipeline before=MODEL --pipeline after=runs/forget-brad-pitt/pipeline \
                                   --prompt_set forget=celebrity.txt --prompt_set unrelated=generic.txt \
                                   --output_dir runs/eval

MODEL is a hub id (``CompVis/stable-diffusion-v1-4``) or a local pipeline folder. Every
step writes a run folder with its settings and resumes when run again with the same flags.

The defaults are the authors' (github clear-nus/selective-amnesia, ``sd/main_forget.py`` and
``sd/ldm/models/diffusion/ddpm_forget.py``): the Fisher sums each image's loss over all 1,000
timesteps before squaring (``--timesteps all``); SA uses AdamW (weight decay 0.01), lambda 50,
gamma 1, a base learning rate of 1e-5 that ``--scale_lr`` multiplies by batch size x
accumulation steps x processes (their 4 GPUs x 4 images: 1.6e-4), and samples with the EMA
weights (``--ema_decay 0.9999``). Argument names follow diffusers' example training scripts.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from sa_utils.runtime import PRECISIONS, precision_dtype


def _common(p: argparse.ArgumentParser, model: bool = True) -> None:
    if model:
        p.add_argument(
            "--pretrained_model_name_or_path",
            required=True,
            help="hub id of a Stable Diffusion pipeline (e.g. CompVis/stable-diffusion-v1-4) or a local folder "
            "saved with save_pretrained",
        )
    p.add_argument("--output_dir", required=True, help="run folder of this step (created; reused to resume)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw of this step")
    p.add_argument(
        "--mixed_precision",
        default="no",
        choices=list(PRECISIONS),
        help="half precision for generation (pipeline weights) or training (autocast); 'no' on a CPU",
    )
    p.add_argument("--num_inference_steps", type=int, default=50, help="sampler steps per generated image")
    p.add_argument("--guidance_scale", type=float, default=7.5, help="classifier-free guidance scale w")
    p.add_argument("--no_progress", action="store_true", help="hide progress bars")


def _number(kind, low: float, strict: bool = False):
    """An argparse type: ``kind`` (int or float) that is >= ``low`` (> ``low`` with ``strict``), finite."""

    def parse(value: str):
        try:
            v = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if kind is int else 'a number'}, got {value!r}"
            ) from None
        if v != v or v in (float("inf"), float("-inf")) or v < low or (strict and v == low):
            raise argparse.ArgumentTypeError(f"must be {'>' if strict else '>='} {low:g}, got {value}")
        return v

    return parse


NONNEG, POSITIVE, COUNT, COUNT0 = _number(float, 0), _number(float, 0, strict=True), _number(int, 1), _number(int, 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sa_utils.sd", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--debug", action="store_true", help="on a user error, show the Python traceback instead of one line"
    )
    sub = parser.add_subparsers(dest="step", required=True)

    p = sub.add_parser("images", help="steps 1-2: generate the replay set or the surrogate set")
    _common(p)
    p.add_argument("--prompts_file", help="text file, one prompt per line ('#' comments)")
    p.add_argument("--prompt", action="append", default=[], help="a prompt (repeatable); added to --prompts_file's")
    p.add_argument("--num_images_per_prompt", type=int, default=1, help="images generated for every prompt")
    p.add_argument("--batch_size", type=int, default=8, help="images per pipeline call")
    p.add_argument("--shard_size", type=int, default=64, help="images per saved shard (the unit of resuming)")

    p = sub.add_parser("filter", help="copy an image set without the images a detector flags (clean the replay set)")
    _common(p, model=False)
    p.add_argument("--image_dir", required=True, help="output folder of the images step (e.g. the replay set)")
    p.add_argument(
        "--detector",
        required=True,
        help="images it flags are dropped: nudenet, tinyworld-attribute, tinyworld-identity:NAME, clip:A|B|...",
    )

    p = sub.add_parser("fisher", help="step 3: diagonal Fisher of the UNet over the replay set")
    _common(p)
    p.add_argument("--replay_dir", required=True, help="output folder of the replay-set step")
    p.add_argument(
        "--train_method",
        default="full",
        choices=["full", "xattn", "noxattn"],
        help="which UNet weights the Fisher covers (must match the forgetting step)",
    )
    p.add_argument(
        "--chunk_size",
        type=int,
        default=4,
        help="images per chunk (the unit of sharding and resuming; with --timesteps single, also the images "
        "per vectorised per-sample-gradient pass)",
    )
    p.add_argument(
        "--timesteps",
        default="all",
        type=_timesteps_arg,
        help="the estimator: 'all' (default, the authors': per image, the gradient of the loss summed over "
        "all T timesteps with fresh noise each, squared), an integer K (stratified: one timestep from "
        "each of K strata, weighted; K/T of the cost), or 'single' (one (t, noise) draw per image, "
        "squared: not the authors' Fisher, far smaller)",
    )
    p.add_argument(
        "--timestep_chunk",
        type=int,
        default=125,
        help="noised copies of one image per forward/backward pass (memory only; the result does not depend on it)",
    )
    p.add_argument(
        "--method",
        default="vmap",
        choices=["vmap", "loop"],
        help="with a timestep sum: vmap = the noised copies batched (--timestep_chunk per pass), loop = the "
        "authors' one timestep per forward/backward pass (the slow reference); with --timesteps single: "
        "vectorised per-sample gradients or a loop over samples",
    )
    p.add_argument("--checkpointing_steps", type=COUNT, default=50, help="save the running sums every this many chunks")

    p = sub.add_parser("forget", help="step 4: Selective Amnesia on the UNet")
    _common(p)
    p.add_argument(
        "--forget_prompt",
        action="append",
        required=True,
        help="prompt of the concept to forget (repeatable), e.g. 'brad pitt'. Commas separate prompts too, "
        "as in the authors' nudity run ('sexual, nudity, naked, erotic' is four prompts); every "
        "surrogate image of a batch is paired with one prompt drawn from all of them",
    )
    p.add_argument("--surrogate_dir", required=True, help="output folder of the surrogate-set step")
    p.add_argument("--replay_dir", help="output folder of the replay-set step (needed when --gamma > 0)")
    p.add_argument("--fisher_path", help="Fisher file or the fisher step's folder (needed when --lmbda > 0)")
    p.add_argument(
        "--train_method",
        default="full",
        choices=["full", "xattn", "noxattn"],
        help="UNet weights to train: all, only cross-attention, or all but cross-attention",
    )
    p.add_argument("--lmbda", type=NONNEG, default=50.0, help="EWC weight lambda (the authors': 50)")
    p.add_argument("--gamma", type=NONNEG, default=1.0, help="replay weight gamma")
    p.add_argument(
        "--learning_rate",
        type=POSITIVE,
        default=1e-5,
        help="learning rate; with --scale_lr the base rate per image (the authors' base: 1e-5)",
    )
    p.add_argument(
        "--scale_lr",
        action="store_true",
        help="scale the learning rate by batch size x gradient accumulation steps x processes, as the "
        "authors' main_forget.py (default there) and diffusers' scripts do: 1e-5 x 4 x 4 = 1.6e-4",
    )
    p.add_argument(
        "--optimizer",
        default="adamw",
        choices=["adamw", "adam"],
        help="AdamW (the authors' SD runs) or Adam (their VAE and DDPM)",
    )
    p.add_argument(
        "--adam_weight_decay",
        type=float,
        default=None,
        help="weight decay; default 1e-2 with adamw (PyTorch's and diffusers' default, the authors' "
        "value), 0 with adam (where it would be an L2 term in the gradient)",
    )
    p.add_argument("--max_train_steps", type=COUNT, default=1000, help="SA steps (optimizer updates)")
    p.add_argument(
        "--train_batch_size", type=COUNT, default=4, help="surrogate and replay images per micro-batch (each)"
    )
    p.add_argument(
        "--gradient_accumulation_steps",
        type=COUNT,
        default=1,
        help="micro-batches per step: one step sees train_batch_size x this many images of each kind "
        "(4 x 4 = 16 is the authors' 4 GPUs x 4)",
    )
    p.add_argument(
        "--ema_decay",
        type=float,
        default=None,
        help="keep an EMA of the trained weights and save it as the result (the authors: 0.9999); off by default",
    )
    p.add_argument("--use_ema", action="store_true", help="the same as --ema_decay 0.9999 (diffusers' flag)")
    p.add_argument(
        "--fisher_estimator",
        help="refuse a Fisher made by another estimator: timestep-sum (or all), stratified-K (or K), "
        "single-draw (or single)",
    )
    p.add_argument("--max_grad_norm", type=float, default=None, help="clip the gradient norm (off by default)")
    p.add_argument(
        "--checkpointing_steps", type=COUNT0, default=500, help="save a resumable checkpoint every this many steps"
    )
    p.add_argument("--resume_from_checkpoint", choices=["latest"], help="continue the run in --output_dir")
    p.add_argument("--gradient_checkpointing", action="store_true", help="recompute UNet activations in backward")
    p.add_argument(
        "--ewc_dtype",
        choices=["float16", "bfloat16"],
        help="store theta* in half precision (F is then kept in bfloat16)",
    )

    p = sub.add_parser("evaluate", help="step 5: grids and detector rates, before vs after")
    _common(p, model=False)
    p.add_argument(
        "--pipeline", action="append", required=True, help="NAME=MODEL, e.g. before=CompVis/stable-diffusion-v1-4"
    )
    p.add_argument("--prompt_set", action="append", required=True, help="NAME=FILE of prompts, e.g. forget=forget.txt")
    p.add_argument(
        "--detector",
        action="append",
        default=[],
        help="concept detector (repeatable): tinyworld-identity:NAME, tinyworld-attribute",
    )
    p.add_argument("--nudenet", action="store_true", help="count NudeNet 3.x exposed classes (pip install nudenet)")
    p.add_argument("--num_images_per_prompt", type=int, default=1, help="images per prompt")
    p.add_argument("--batch_size", type=int, default=8, help="images per pipeline call")
    _add_import_fisher_parser(sub)
    _add_prompts_parser(sub)
    _add_erase_parser(sub)
    return parser


def _add_erase_parser(sub) -> None:
    p = sub.add_parser("erase", help="another erasure method (UCE, ESD) on the UNet, for comparing SA with it")
    _common(p)
    p.set_defaults(guidance_scale=3.0)  # ESD's sampling guidance (the authors' esd_sd.py)
    p.add_argument(
        "--method",
        required=True,
        choices=["uce", "esd-x", "esd-u"],
        help="uce: closed-form cross-attention edit; esd-x / esd-u: ESD fine-tuning inside / outside cross-attention",
    )
    p.add_argument("--erase_concept", action="append", required=True, help="a concept to erase (repeatable)")
    p.add_argument(
        "--guide_concept", action="append", default=[], help="what each erased concept maps to (default: '')"
    )
    p.add_argument("--preserve_concept", action="append", default=[], help="a concept to keep (repeatable)")
    p.add_argument("--erase_scale", type=_number(float, 0), default=1.0)
    p.add_argument("--preserve_scale", type=_number(float, 0), default=1.0)
    p.add_argument("--lamb", type=_number(float, 0), default=0.5, help="UCE: weight of ||W - W_old||^2 (authors: 0.5)")
    p.add_argument("--erase_from", default=None, help="ESD: the prompt to erase the concept from (default: itself)")
    p.add_argument("--iterations", type=_number(int, 1), default=200, help="ESD: training iterations (authors: 200)")
    p.add_argument("--learning_rate", type=_number(float, 0, strict=True), default=5e-5, help="ESD: Adam's lr")
    p.add_argument("--negative_guidance", type=float, default=2.0, help="ESD: guidance away from the concept")


def _timesteps_arg(value: str) -> int | str | None:
    """``--timesteps``: ``"all"`` -> None (every timestep), ``"single"``, or a positive integer K."""
    v = str(value).strip().lower()
    if v in ("all", "single"):
        return None if v == "all" else "single"
    try:
        k = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--timesteps must be 'all', 'single' or a positive integer, got {value!r}"
        ) from None
    if k < 1:
        raise argparse.ArgumentTypeError(f"--timesteps must be a positive integer, got {k}")
    return k


def fisher_estimator(timesteps: int | str | None, chunk: int = 125):
    """The estimator object of ``--timesteps`` (``None`` for ``"single"``, the one-draw estimate)."""
    from sa_utils.core.fisher import TimestepSum

    return None if timesteps == "single" else TimestepSum(k=timesteps, chunk=chunk)


def estimator_name(value: str) -> str:
    """``--fisher_estimator``'s value as the name a Fisher file records (``all`` -> ``timestep-sum``,
    ``20`` -> ``stratified-20``, ``single`` -> ``single-draw``; names pass through)."""
    from sa_utils.core.fisher import SINGLE

    v = value.strip().lower()
    if v in ("single", SINGLE):
        return SINGLE
    if v.isdigit() or v == "all":
        return fisher_estimator(_timesteps_arg(v)).name
    return value.strip()


def _add_prompts_parser(sub) -> None:
    p = sub.add_parser("prompts", help="write generic everyday prompts for the replay set and the Fisher")
    p.add_argument("--n", type=int, default=5000, help="how many distinct prompts (the authors replay 5,000)")
    p.add_argument("--output", required=True, help="text file to write, one prompt per line")
    p.add_argument(
        "--exclude",
        action="append",
        default=[],
        help="drop prompts containing this word or phrase (repeatable), e.g. a celebrity's name",
    )
    p.add_argument("--seed", type=int, default=0, help="which prompts, and their order")


def _prompts(args: argparse.Namespace) -> int:
    from sa_utils.sd.generic_prompts import generic_prompts, write_prompts

    try:
        prompts = generic_prompts(args.n, args.seed, tuple(args.exclude))
    except ValueError as err:
        raise SystemExit(f"prompts: {err}") from err
    write_prompts(args.output, prompts)
    print(f"{len(prompts)} generic prompts: {args.output}")
    return 0


def _add_import_fisher_parser(sub) -> None:
    p = sub.add_parser(
        "import-fisher",
        help="instead of step 3: the authors' SD Fisher (full_fisher_dict.pkl), "
        "loaded safely and renamed for a diffusers UNet",
    )
    p.add_argument(
        "--fisher_pkl",
        required=True,
        help="the authors' full_fisher_dict.pkl (clear-nus/selective-amnesia); unpickled with only the "
        "globals a dict of tensors needs, anything else is refused",
    )
    p.add_argument(
        "--pretrained_model_name_or_path",
        required=True,
        help="the SD v1.x pipeline the Fisher belongs to: hub id (e.g. CompVis/stable-diffusion-v1-4) or a "
        "local folder saved with save_pretrained",
    )
    p.add_argument(
        "--output_dir", required=True, help="run folder for fisher.safetensors (give it to forget --fisher_path)"
    )
    p.add_argument(
        "--n_samples",
        type=int,
        default=5000,
        help="images the authors' Fisher averages over (their 5000 fim_prompts.txt images); metadata only",
    )


def _import_fisher(args: argparse.Namespace) -> int:
    import pickle

    from sa_utils.adapters.sd import StableDiffusionAdapter
    from sa_utils.sd.common import claim_run_folder, load_pipeline
    from sa_utils.sd.import_fisher import FisherImportError, import_authors_fisher

    pkl = Path(args.fisher_pkl)
    if not pkl.is_file():
        raise SystemExit(f"--fisher_pkl {pkl} is not a file")
    pipe = load_pipeline(args.pretrained_model_name_or_path, "cpu", torch.float32)
    model_config = StableDiffusionAdapter(pipe, "full").config()
    settings = {
        "fisher_pkl": str(pkl.resolve()),
        "fisher_pkl_bytes": pkl.stat().st_size,
        "n_samples": args.n_samples,
        "model_config": model_config,
    }
    folder, final = Path(args.output_dir), Path(args.output_dir) / "fisher.safetensors"
    if (folder / "settings.json").exists():
        claim_run_folder(folder, settings, "import-fisher")  # refuses a folder made with other settings
        if final.exists():
            print(f"already imported: {final}")
            return 0
    try:  # nothing is written unless the file loads safely and fits the UNet
        fisher = import_authors_fisher(pkl, pipe.unet, final, args.n_samples, model_config)
    except (pickle.UnpicklingError, FisherImportError, EOFError) as err:
        raise SystemExit(f"import-fisher: {err}") from err
    claim_run_folder(folder, settings, "import-fisher")
    print(
        f"imported the authors' Fisher ({len(fisher.values)} tensors, estimator "
        f"{fisher.metadata['estimator']!r}): {final}"
    )
    return 0


def _erase(args: argparse.Namespace) -> int:
    from sa_utils.erasure.esd import ESDConfig
    from sa_utils.erasure.uce import UCEConfig
    from sa_utils.sd.common import load_pipeline
    from sa_utils.sd.erase import sd_erase

    # bad settings fail here (a ValueError: one line from main), before the pipeline is loaded
    if args.method == "uce":
        config = UCEConfig(
            tuple(args.erase_concept),
            tuple(args.guide_concept),
            tuple(args.preserve_concept),
            args.erase_scale,
            args.preserve_scale,
            args.lamb,
        )
    else:
        if len(args.erase_concept) != 1:
            raise ValueError(f"ESD erases one concept per run, got {len(args.erase_concept)} --erase_concept")
        config = ESDConfig(
            args.erase_concept[0],
            args.method,
            args.erase_from,
            args.iterations,
            args.learning_rate,
            args.negative_guidance,
            args.guidance_scale,
            args.num_inference_steps,
            args.seed,
        )
    pipe = load_pipeline(args.pretrained_model_name_or_path, "cuda" if torch.cuda.is_available() else "cpu")
    out = sd_erase(
        pipe, args.method, config, args.output_dir, str(args.pretrained_model_name_or_path), not args.no_progress
    )
    print(f"erased with {args.method}: {out}")
    return 0


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"{what} must look like NAME=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k] = v
    return out


def main(argv: list[str] | None = None) -> int:
    """Run one step; a user error (bad setting, missing or unreadable file, empty prompt file, settings
    that do not match a run folder) prints one line and returns 2, like argparse; ``--debug`` re-raises."""
    from sa_utils.sd.common import RunFolderError
    from sa_utils.storage.checkpoint import CheckpointError

    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except (
        ValueError,
        FileNotFoundError,
        FileExistsError,
        NotADirectoryError,
        CheckpointError,
        RunFolderError,
        SystemExit,
    ) as err:
        if isinstance(err, SystemExit) and (err.code is None or isinstance(err.code, int)):
            raise  # a plain exit status, not a message
        if args.debug:
            raise
        print(
            f"python -m sa_utils.sd {args.step}: error: {err.code if isinstance(err, SystemExit) else err}",
            file=sys.stderr,
        )
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.step == "import-fisher":
        return _import_fisher(args)
    if args.step == "prompts":
        return _prompts(args)
    if args.step == "erase":
        return _erase(args)
    from accelerate import PartialState
    from accelerate.utils import set_seed

    from sa_utils.sd.common import load_pipeline, read_prompts

    # on a machine without a GPU, processes started by `accelerate launch --multi_gpu` or torchrun
    # form a multi-CPU group (gloo) only when PartialState is told it runs on the CPU
    state = PartialState(cpu=not torch.cuda.is_available())
    set_seed(args.seed)
    progress = not args.no_progress and state.is_main_process
    half = precision_dtype(args.mixed_precision)

    if args.step == "images":
        from sa_utils.sd.imagesets import generate_image_set

        prompts = (read_prompts(args.prompts_file) if args.prompts_file else []) + list(args.prompt)
        if not prompts:
            raise SystemExit("give --prompts_file or at least one --prompt")
        pipe = load_pipeline(args.pretrained_model_name_or_path, state.device, half)
        folder = generate_image_set(
            pipe,
            prompts,
            args.output_dir,
            args.num_images_per_prompt,
            args.seed,
            args.num_inference_steps,
            args.guidance_scale,
            args.batch_size,
            args.shard_size,
            source=args.pretrained_model_name_or_path,
            progress=progress,
        )
        print(f"image set: {folder}")
        return 0

    if args.step == "filter":
        from sa_utils.eval.detectors import load_detector
        from sa_utils.sd.imagesets import filter_image_set, load_image_set, safety_flags

        images = load_image_set(args.image_dir)[0]
        # images the safety checker blacked out while the set was drawn go too: never replay a black image
        flagged = load_detector(args.detector, state.device)(images).bool() | safety_flags(args.image_dir)
        folder = filter_image_set(args.image_dir, ~flagged, args.output_dir, args.detector)
        print(f"kept {int((~flagged).sum())} of {len(images)} images (dropped those {args.detector} flags): {folder}")
        return 0

    if args.step in ("fisher", "forget"):
        from sa_utils.adapters.sd import StableDiffusionAdapter

        pipe = load_pipeline(args.pretrained_model_name_or_path, state.device, torch.float32)
        adapter = StableDiffusionAdapter(pipe, args.train_method, args.guidance_scale, args.num_inference_steps)

    if args.step == "fisher":
        from sa_utils.sd.fisher import sd_fisher

        fisher = sd_fisher(
            adapter,
            args.replay_dir,
            args.output_dir,
            args.chunk_size,
            args.method,
            args.seed,
            args.checkpointing_steps,
            state,
            progress,
            estimator=fisher_estimator(args.timesteps, args.timestep_chunk),
        )
        if fisher is not None:
            print(
                f"Fisher ({fisher.estimator}) over {fisher.n_samples} samples: "
                f"{Path(args.output_dir) / 'fisher.safetensors'}"
            )
        return 0

    if args.step == "forget":
        from sa_utils.core.amnesia import SAConfig
        from sa_utils.core.fisher import DiagonalFisher
        from sa_utils.sd.forget import sd_forget

        if state.num_processes > 1:
            raise SystemExit("the forgetting step runs in one process (one GPU); launch it without --num_processes")
        fisher = None
        if args.lmbda:
            if not args.fisher_path:
                raise SystemExit("--lmbda > 0 needs --fisher_path (the fisher step's output), or set --lmbda 0")
            path = Path(args.fisher_path)
            want = estimator_name(args.fisher_estimator) if args.fisher_estimator else None
            fisher = DiagonalFisher.load(
                path / "fisher.safetensors" if path.is_dir() else path, adapter.trainable_parameters(), estimator=want
            )
            # F goes to the device once, in the precision SA keeps it in (no float32 copy stays behind)
            fisher = fisher.to(adapter.device, getattr(torch, args.ewc_dtype) if args.ewc_dtype else None)
        if args.gamma and not args.replay_dir:
            raise SystemExit("--gamma > 0 needs --replay_dir (the replay-set step's output), or set --gamma 0")
        if args.gradient_checkpointing:
            adapter.model.enable_gradient_checkpointing()
        if args.gradient_accumulation_steps < 1:
            raise SystemExit("--gradient_accumulation_steps must be at least 1")
        lr = args.learning_rate
        if args.scale_lr:  # as the authors' main_forget.py and diffusers' scripts
            lr = args.learning_rate * args.train_batch_size * args.gradient_accumulation_steps * state.num_processes
            if progress:
                print(
                    f"learning rate {lr:.3g} = {args.learning_rate:.3g} (base) x {args.train_batch_size} (batch) x "
                    f"{args.gradient_accumulation_steps} (accumulation) x {state.num_processes} (processes)"
                )
        ema = args.ema_decay if args.ema_decay is not None else (0.9999 if args.use_ema else None)
        wd = (
            args.adam_weight_decay
            if args.adam_weight_decay is not None
            else (1e-2 if args.optimizer == "adamw" else 0.0)
        )
        cfg = SAConfig(
            lmbda=args.lmbda,
            gamma=args.gamma,
            steps=args.max_train_steps,
            lr=lr,
            grad_clip=args.max_grad_norm,
            seed=args.seed,
            checkpoint_every=args.checkpointing_steps,
            optimizer=args.optimizer,
            weight_decay=wd,
            grad_accum=args.gradient_accumulation_steps,
            ema_decay=ema,
            mixed_precision=args.mixed_precision,
            ewc_dtype=args.ewc_dtype,
        )
        out, result = sd_forget(
            adapter,
            args.forget_prompt,
            args.surrogate_dir,
            args.replay_dir if args.gamma else None,
            fisher,
            args.output_dir,
            cfg,
            args.train_batch_size,
            resume=args.resume_from_checkpoint == "latest",
            source=args.pretrained_model_name_or_path,
            progress=progress,
        )
        print(
            f"{result.steps_done} steps (resumed from {result.resumed_from}) in {result.seconds:.0f} s; pipeline"
            f"{' (EMA weights)' if ema else ''}: {out}"
        )
        return 0

    # evaluate
    from sa_utils.eval.detectors import load_detector
    from sa_utils.sd.evaluate import sd_evaluate

    pipes = {k: load_pipeline(v, state.device, half) for k, v in _pairs(args.pipeline, "--pipeline").items()}
    sets = {k: read_prompts(v) for k, v in _pairs(args.prompt_set, "--prompt_set").items()}
    detectors = {spec: load_detector(spec, state.device) for spec in args.detector}
    res = sd_evaluate(
        pipes,
        sets,
        args.output_dir,
        detectors,
        args.num_images_per_prompt,
        args.seed,
        args.num_inference_steps,
        args.guidance_scale,
        args.batch_size,
        nudenet=args.nudenet,
    )
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
