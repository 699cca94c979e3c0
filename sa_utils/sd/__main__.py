"""Selective Amnesia for Stable Diffusion, as five commands (chapters 8 and 9 walk through them).

    python -m sa_utils.sd images   --pretrained_model_name_or_path MODEL --prompts_file replay.txt --output_dir runs/replay
    python -m sa_utils.sd images   --pretrained_model_name_or_path MODEL --prompt "a middle aged man" \
                                   --num_images_per_prompt 1000 --output_dir runs/surrogate
    python -m sa_utils.sd filter   --image_dir runs/replay --detector nudenet --output_dir runs/replay-clean  # optional
    accelerate launch --multi_gpu --num_processes 2 -m sa_utils.sd fisher --pretrained_model_name_or_path MODEL --replay_dir runs/replay \
                                   --output_dir runs/fisher
    python -m sa_utils.sd forget   --pretrained_model_name_or_path MODEL --forget_prompt "brad pitt" \
                                   --surrogate_dir runs/surrogate --replay_dir runs/replay --fisher_path runs/fisher \
                                   --train_method full --output_dir runs/forget-brad-pitt
    python -m sa_utils.sd evaluate --pipeline before=MODEL --pipeline after=runs/forget-brad-pitt/pipeline \
                                   --prompt_set forget=celebrity.txt --prompt_set unrelated=generic.txt --output_dir runs/eval

MODEL is a hub id (``CompVis/stable-diffusion-v1-4``) or a local pipeline folder. Every
step writes a run folder with its settings and resumes when run again with the same flags.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch


def _common(p: argparse.ArgumentParser, model: bool = True) -> None:
    if model:
        p.add_argument("--pretrained_model_name_or_path", required=True,
                       help="hub id of a Stable Diffusion pipeline (e.g. CompVis/stable-diffusion-v1-4) or a local folder "
                            "saved with save_pretrained")
    p.add_argument("--output_dir", required=True, help="run folder of this step (created; reused to resume)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw of this step")
    p.add_argument("--mixed_precision", default="no", choices=["no", "fp16", "bf16"],
                   help="half precision for generation (pipeline weights) or training (autocast); 'no' on a CPU")
    p.add_argument("--num_inference_steps", type=int, default=50, help="sampler steps per generated image")
    p.add_argument("--guidance_scale", type=float, default=7.5, help="classifier-free guidance scale w")
    p.add_argument("--no_progress", action="store_true", help="hide progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sa_utils.sd", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
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
    p.add_argument("--detector", required=True,
                   help="images it flags are dropped: nudenet, tinyworld-attribute, tinyworld-identity:NAME, clip:A|B|...")

    p = sub.add_parser("fisher", help="step 3: diagonal Fisher of the UNet over the replay set")
    _common(p)
    p.add_argument("--replay_dir", required=True, help="output folder of the replay-set step")
    p.add_argument("--train_method", default="full", choices=["full", "xattn", "noxattn"],
                   help="which UNet weights the Fisher covers (must match the forgetting step)")
    p.add_argument("--chunk_size", type=int, default=4, help="samples per vectorised per-sample-gradient pass")
    p.add_argument("--method", default="vmap", choices=["vmap", "loop"], help="per-sample gradients: vmap or a loop")
    p.add_argument("--checkpointing_steps", type=int, default=50, help="save the running sums every this many chunks")

    p = sub.add_parser("forget", help="step 4: Selective Amnesia on the UNet")
    _common(p)
    p.add_argument("--forget_prompt", action="append", required=True,
                   help="prompt of the concept to forget (repeatable), e.g. 'brad pitt'")
    p.add_argument("--surrogate_dir", required=True, help="output folder of the surrogate-set step")
    p.add_argument("--replay_dir", help="output folder of the replay-set step (needed when --gamma > 0)")
    p.add_argument("--fisher_path", help="Fisher file or the fisher step's folder (needed when --lmbda > 0)")
    p.add_argument("--train_method", default="full", choices=["full", "xattn", "noxattn"],
                   help="UNet weights to train: all, only cross-attention, or all but cross-attention")
    p.add_argument("--lmbda", type=float, default=50.0, help="EWC weight lambda (the authors': 50)")
    p.add_argument("--gamma", type=float, default=1.0, help="replay weight gamma")
    p.add_argument("--learning_rate", type=float, default=1e-5, help="Adam learning rate (the authors': 1e-5)")
    p.add_argument("--max_train_steps", type=int, default=1000, help="SA steps")
    p.add_argument("--train_batch_size", type=int, default=4, help="surrogate and replay images per step (each)")
    p.add_argument("--max_grad_norm", type=float, default=None, help="clip the gradient norm (off by default)")
    p.add_argument("--checkpointing_steps", type=int, default=500, help="save a resumable checkpoint every this many steps")
    p.add_argument("--resume_from_checkpoint", choices=["latest"], help="continue the run in --output_dir")
    p.add_argument("--gradient_checkpointing", action="store_true", help="recompute UNet activations in backward")
    p.add_argument("--ewc_dtype", choices=["float16", "bfloat16"], help="store theta* and F in half precision")
    p.add_argument("--reduction", default="sum", choices=["sum", "mean"], help="combine per-sample losses of a batch")

    p = sub.add_parser("evaluate", help="step 5: grids and detector rates, before vs after")
    _common(p, model=False)
    p.add_argument("--pipeline", action="append", required=True, help="NAME=MODEL, e.g. before=CompVis/stable-diffusion-v1-4")
    p.add_argument("--prompt_set", action="append", required=True, help="NAME=FILE of prompts, e.g. forget=forget.txt")
    p.add_argument("--detector", action="append", default=[],
                   help="concept detector (repeatable): tinyworld-identity:NAME, tinyworld-attribute")
    p.add_argument("--nudenet", action="store_true", help="count NudeNet 3.x exposed classes (pip install nudenet)")
    p.add_argument("--num_images_per_prompt", type=int, default=1, help="images per prompt")
    p.add_argument("--batch_size", type=int, default=8, help="images per pipeline call")
    return parser


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"{what} must look like NAME=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k] = v
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from accelerate import PartialState
    from accelerate.utils import set_seed

    from .common import load_pipeline, read_prompts

    # on a machine without a GPU, processes started by `accelerate launch --multi_gpu` or torchrun
    # form a multi-CPU group (gloo) only when PartialState is told it runs on the CPU
    state = PartialState(cpu=not torch.cuda.is_available())
    set_seed(args.seed)
    progress = not args.no_progress and state.is_main_process
    half = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.mixed_precision]

    if args.step == "images":
        from .imagesets import generate_image_set

        prompts = (read_prompts(args.prompts_file) if args.prompts_file else []) + list(args.prompt)
        if not prompts:
            raise SystemExit("give --prompts_file or at least one --prompt")
        pipe = load_pipeline(args.pretrained_model_name_or_path, state.device, half)
        folder = generate_image_set(pipe, prompts, args.output_dir, args.num_images_per_prompt, args.seed,
                                    args.num_inference_steps, args.guidance_scale, args.batch_size, args.shard_size,
                                    source=args.pretrained_model_name_or_path, progress=progress)
        print(f"image set: {folder}")
        return 0

    if args.step == "filter":
        from .evaluate import load_detector
        from .imagesets import filter_image_set, load_image_set, safety_flags

        images = load_image_set(args.image_dir)[0]
        # images the safety checker blacked out while the set was drawn go too: never replay a black image
        flagged = load_detector(args.detector, state.device)(images).bool() | safety_flags(args.image_dir)
        folder = filter_image_set(args.image_dir, ~flagged, args.output_dir, args.detector)
        print(f"kept {int((~flagged).sum())} of {len(images)} images (dropped those {args.detector} flags): {folder}")
        return 0

    if args.step in ("fisher", "forget"):
        from ..adapters.sd import StableDiffusionAdapter

        pipe = load_pipeline(args.pretrained_model_name_or_path, state.device, torch.float32)
        adapter = StableDiffusionAdapter(pipe, args.train_method, args.guidance_scale, args.num_inference_steps)

    if args.step == "fisher":
        from .fisher import sd_fisher

        fisher = sd_fisher(adapter, args.replay_dir, args.output_dir, args.chunk_size, args.method, args.seed,
                           args.checkpointing_steps, state, progress)
        if fisher is not None:
            print(f"Fisher over {fisher.n_samples} samples: {Path(args.output_dir) / 'fisher.safetensors'}")
        return 0

    if args.step == "forget":
        from ..amnesia import SAConfig
        from ..fisher import DiagonalFisher
        from .forget import sd_forget

        if state.num_processes > 1:
            raise SystemExit("the forgetting step runs in one process (one GPU); launch it without --num_processes")
        fisher = None
        if args.lmbda:
            if not args.fisher_path:
                raise SystemExit("--lmbda > 0 needs --fisher_path (the fisher step's output), or set --lmbda 0")
            path = Path(args.fisher_path)
            fisher = DiagonalFisher.load(path / "fisher.safetensors" if path.is_dir() else path, adapter.trainable_parameters())
            # F goes to the device once, in the precision SA keeps it in (no float32 copy stays behind)
            fisher = fisher.to(adapter.device, getattr(torch, args.ewc_dtype) if args.ewc_dtype else None)
        if args.gamma and not args.replay_dir:
            raise SystemExit("--gamma > 0 needs --replay_dir (the replay-set step's output), or set --gamma 0")
        if args.gradient_checkpointing:
            adapter.model.enable_gradient_checkpointing()
        cfg = SAConfig(lmbda=args.lmbda, gamma=args.gamma, steps=args.max_train_steps, lr=args.learning_rate,
                       grad_clip=args.max_grad_norm, seed=args.seed, checkpoint_every=args.checkpointing_steps,
                       reduction=args.reduction, mixed_precision=args.mixed_precision, ewc_dtype=args.ewc_dtype)
        out, result = sd_forget(adapter, args.forget_prompt, args.surrogate_dir, args.replay_dir if args.gamma else None,
                                fisher, args.output_dir, cfg, args.train_batch_size,
                                resume=args.resume_from_checkpoint == "latest", source=args.pretrained_model_name_or_path,
                                progress=progress)
        print(f"{result.steps_done} steps (resumed from {result.resumed_from}) in {result.seconds:.0f} s; pipeline: {out}")
        return 0

    # evaluate
    from .evaluate import load_detector, sd_evaluate

    pipes = {k: load_pipeline(v, state.device, half) for k, v in _pairs(args.pipeline, "--pipeline").items()}
    sets = {k: read_prompts(v) for k, v in _pairs(args.prompt_set, "--prompt_set").items()}
    detectors = {spec: load_detector(spec, state.device) for spec in args.detector}
    res = sd_evaluate(pipes, sets, args.output_dir, detectors, args.num_images_per_prompt, args.seed,
                      args.num_inference_steps, args.guidance_scale, args.batch_size, nudenet=args.nudenet)
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
