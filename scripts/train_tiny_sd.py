"""Train the tiny Stable-Diffusion-shaped pipeline of Part III on the tiny world.

Two phases, one step counter:

1. steps ``1 .. --vae_train_steps``: the ``AutoencoderKL`` learns to reconstruct the world's
   images (squared error + a small KL); then its ``scaling_factor`` is set to 1/std of the
   latents, as SD v1's 0.18215 was;
2. the next ``--max_train_steps`` steps: the ``CLIPTextModel`` and the ``UNet2DConditionModel``
   learn noise prediction on the frozen VAE's latents, with ``--caption_dropout`` of the
   captions replaced by "" so that classifier-free guidance works.

The output folder is a standard diffusers pipeline (``StableDiffusionPipeline.from_pretrained(
output_dir, local_files_only=True)``), with ``checkpoint-<step>/`` folders next to it. The
layout and flags follow diffusers' ``examples/text_to_image/train_text_to_image.py``, but the
checkpoints are safetensors with JSON metadata (the project never pickles), and every random
draw of step ``k`` comes from a generator seeded by ``(seed, k)``, so a resumed run takes
exactly the steps an uninterrupted one would have.

    OMP_NUM_THREADS=2 python scripts/train_tiny_sd.py --output_dir _build/tiny-sd \\
        --vae_train_steps 4000 --max_train_steps 30000 --use_ema

    # after an interruption, the same command plus
        --resume_from_checkpoint latest
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # running from a clone without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from sa_utils.models.sd_configs import count_parameters  # noqa: E402
from sa_utils.runtime import step_generator  # noqa: E402
from sa_utils.storage.checkpoint import read_metadata  # noqa: E402
from sa_utils.storage.train_state import load_train_state, save_train_state  # noqa: E402
from tinyworld import TRAIN_SEED, TinyWorld  # noqa: E402
from tinyworld.objectives import latent_scaling_factor, noise_prediction_loss, tokenize, vae_loss  # noqa: E402
from tinyworld.pipeline import (
    TinySDConfig,
    assemble_pipeline,
    build_text_encoder,
    build_tiny_unet,  # noqa: E402
    build_vae,
    generate,
    sampling_scheduler,
    training_scheduler,
)
from tinyworld.tokenizer import clip_tokenizer  # noqa: E402

CHECKPOINT_FILE = "state.safetensors"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--output_dir",
        type=str,
        default="tiny-sd-model",
        help="Where the pipeline folder, the checkpoints, logs.jsonl and sample grids are written.",
    )
    p.add_argument("--seed", type=int, default=0, help="Seed of the initial weights and of every per-step random draw.")
    p.add_argument(
        "--world_seed",
        type=int,
        default=TRAIN_SEED,
        help="Seed of the tiny world's training images (the detectors use other seeds).",
    )
    p.add_argument(
        "--num_train_images",
        type=int,
        default=50_000,
        help="Size of the training set: images 0..N-1 of the world made from --world_seed.",
    )
    p.add_argument(
        "--model_config",
        type=str,
        default="{}",
        help="JSON overrides of tinyworld.pipeline.TinySDConfig, e.g. "
        '\'{"unet_channels": [64, 128], "max_length": 32}\'. Must agree with a checkpoint you resume.',
    )
    p.add_argument("--train_batch_size", type=int, default=32, help="Images per step and per process.")
    p.add_argument(
        "--gradient_accumulation_steps", type=int, default=1, help="Micro-batches accumulated into each optimiser step."
    )
    p.add_argument(
        "--vae_train_steps",
        type=int,
        default=4000,
        help="Optimiser steps of phase 1 (the VAE). 0 keeps the VAE of a resumed checkpoint or, "
        "for a new run, leaves it untrained (only sensible in tests).",
    )
    p.add_argument("--vae_learning_rate", type=float, default=1e-3, help="AdamW learning rate of the VAE.")
    p.add_argument(
        "--vae_kl_weight",
        type=float,
        default=1e-3,
        help="Weight of the KL per latent element against the per-pixel squared error.",
    )
    p.add_argument(
        "--max_train_steps",
        type=int,
        default=30_000,
        help="Optimiser steps of phase 2 (text encoder + UNet, noise prediction).",
    )
    p.add_argument("--learning_rate", type=float, default=5e-4, help="AdamW learning rate of phase 2.")
    p.add_argument(
        "--lr_scheduler",
        type=str,
        default="constant_with_warmup",
        help="diffusers.optimization.get_scheduler name for phase 2: constant, constant_with_warmup, "
        "linear, cosine, ... The constant ones let a finished run be extended by resuming with a "
        "larger --max_train_steps; the decaying ones depend on --max_train_steps.",
    )
    p.add_argument("--lr_warmup_steps", type=int, default=500, help="Warm-up steps of the phase-2 learning rate.")
    p.add_argument("--adam_beta1", type=float, default=0.9, help="AdamW beta1.")
    p.add_argument("--adam_beta2", type=float, default=0.999, help="AdamW beta2.")
    p.add_argument("--adam_weight_decay", type=float, default=1e-2, help="AdamW weight decay.")
    p.add_argument("--adam_epsilon", type=float, default=1e-8, help="AdamW epsilon.")
    p.add_argument("--max_grad_norm", type=float, default=1.0, help="Gradient clipping norm (both phases).")
    p.add_argument(
        "--caption_dropout",
        type=float,
        default=0.1,
        help="Share of captions replaced by the empty prompt (classifier-free guidance).",
    )
    p.add_argument(
        "--train_text_encoder",
        type=int,
        choices=[0, 1],
        default=1,
        help="1: train the text encoder with the UNet (it starts from random weights here); 0: keep it frozen.",
    )
    p.add_argument(
        "--cache_latents",
        type=int,
        choices=[0, 1],
        default=1,
        help="1: encode the training set once after phase 1 and sample latents from the cached "
        "means and standard deviations (saves rendering and the VAE encoder every step).",
    )
    p.add_argument(
        "--use_ema",
        action="store_true",
        help="Keep an exponential moving average of the phase-2 weights and save it as the pipeline's weights.",
    )
    p.add_argument("--ema_decay", type=float, default=0.999, help="Decay of the EMA.")
    p.add_argument(
        "--checkpointing_steps",
        type=int,
        default=1000,
        help="Save a resumable checkpoint-<step> folder every this many steps (and at the end of each phase).",
    )
    p.add_argument(
        "--checkpoints_total_limit",
        type=int,
        default=2,
        help="Keep at most this many checkpoint folders (the oldest are deleted).",
    )
    p.add_argument(
        "--resume_from_checkpoint",
        type=str,
        default=None,
        help="A checkpoint folder to resume from, or 'latest' for the newest one in --output_dir.",
    )
    p.add_argument(
        "--mixed_precision",
        type=str,
        default="no",
        choices=["no", "fp16", "bf16"],
        help="Accelerate's mixed precision (fp16 needs a GPU).",
    )
    p.add_argument(
        "--logging_steps", type=int, default=50, help="Append the mean loss to logs.jsonl every this many steps."
    )
    p.add_argument(
        "--validation_prompts",
        type=str,
        nargs="*",
        default=[
            "a photo of Orla Brisk",
            "Pell Marrow in the snow",
            "a person at the beach",
            "a spotted person",
            "a red car on the road",
            "mountains under a blue sky",
        ],
        help="Prompts drawn into samples/step-<step>.png at each validation.",
    )
    p.add_argument(
        "--validation_steps",
        type=int,
        default=5000,
        help="Draw the validation prompts every this many phase-2 steps (and at the end); 0: never.",
    )
    p.add_argument(
        "--validation_detectors",
        type=int,
        choices=[0, 1],
        default=1,
        help="1: at each validation also score the pipeline with the identity and attribute detectors "
        "(trained and cached on first use, about a minute) and log the rates to logs.jsonl.",
    )
    p.add_argument(
        "--sampling_scheduler",
        type=str,
        default="ddim",
        choices=["ddim", "pndm", "ddpm"],
        help="Scheduler saved with the pipeline (training always uses SD's DDPMScheduler).",
    )
    args = p.parse_args(argv)
    for name in ("train_batch_size", "gradient_accumulation_steps", "checkpointing_steps", "num_train_images"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    if args.vae_train_steps < 0 or args.max_train_steps < 0:
        p.error("--vae_train_steps and --max_train_steps must be >= 0")
    if not 0 <= args.caption_dropout < 1:
        p.error("--caption_dropout must lie in [0, 1)")
    try:
        overrides = json.loads(args.model_config)
        args.model = TinySDConfig.from_dict({**TinySDConfig().to_dict(), **overrides})
    except (json.JSONDecodeError, TypeError, ValueError) as err:
        p.error(f"--model_config: {err}")
    return args


def latest_checkpoint(output_dir: Path) -> Path | None:
    found = sorted(output_dir.glob("checkpoint-*"), key=lambda d: int(d.name.split("-")[1]))
    return found[-1] if found else None


def prune_checkpoints(output_dir: Path, keep: int) -> None:
    found = sorted(output_dir.glob("checkpoint-*"), key=lambda d: int(d.name.split("-")[1]))
    for old in found[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)


def save_grid(images: torch.Tensor, path: Path, ncol: int) -> None:
    from PIL import Image

    from tinyworld.scenes import to_uint8

    arr = to_uint8(images)
    n, h, w, _ = arr.shape
    nrow = math.ceil(n / ncol)
    grid = torch.zeros(nrow * h, ncol * w, 3, dtype=torch.uint8).numpy()
    for k in range(n):
        r, c = divmod(k, ncol)
        grid[r * h : (r + 1) * h, c * w : (c + 1) * w] = arr[k]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).resize((ncol * w * 4, nrow * h * 4), Image.NEAREST).save(path)


class Trainer:
    """Holds the models, optimisers and data of both phases; one method per phase step."""

    def __init__(self, args: argparse.Namespace):
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        self.args, self.cfg = args, args.model
        self.out = Path(args.output_dir)
        self.accelerator = Accelerator(
            gradient_accumulation_steps=args.gradient_accumulation_steps, mixed_precision=args.mixed_precision
        )
        set_seed(args.seed)
        self.world = TinyWorld(seed=args.world_seed, size=args.num_train_images, resolution=self.cfg.resolution)
        self.tokenizer = clip_tokenizer(self.cfg.max_length)
        self.vae, self.text_encoder, self.unet = (
            build_vae(self.cfg),
            build_text_encoder(self.cfg),
            build_tiny_unet(self.cfg),
        )
        self.noise_scheduler = training_scheduler()
        self.vae_opt = torch.optim.AdamW(
            self.vae.parameters(),
            lr=args.vae_learning_rate,
            betas=(args.adam_beta1, args.adam_beta2),
            weight_decay=0.0,
            eps=args.adam_epsilon,
        )
        self.text_encoder.requires_grad_(bool(args.train_text_encoder))
        self.phase2_params = list(self.unet.parameters()) + (
            list(self.text_encoder.parameters()) if args.train_text_encoder else []
        )
        self.opt = torch.optim.AdamW(
            self.phase2_params,
            lr=args.learning_rate,
            betas=(args.adam_beta1, args.adam_beta2),
            weight_decay=args.adam_weight_decay,
            eps=args.adam_epsilon,
        )
        from diffusers.optimization import get_scheduler

        self.lr_scheduler = get_scheduler(
            args.lr_scheduler,
            self.opt,
            num_warmup_steps=args.lr_warmup_steps,
            num_training_steps=max(args.max_train_steps, 1),
        )
        self.vae, self.vae_opt = self.accelerator.prepare(self.vae, self.vae_opt)
        self.unet, self.text_encoder, self.opt = self.accelerator.prepare(self.unet, self.text_encoder, self.opt)
        self.ema = {}
        if args.use_ema:
            from diffusers.training_utils import EMAModel

            models = {"unet": self.unet} | ({"text_encoder": self.text_encoder} if args.train_text_encoder else {})
            self.ema = {
                name: EMAModel(self.accelerator.unwrap_model(m).parameters(), decay=args.ema_decay)
                for name, m in models.items()
            }
        self.latent_cache: tuple[torch.Tensor, torch.Tensor] | None = None
        self.resumed_args: dict = {}
        self.scaling_factor: float | None = None

    # -- data ----------------------------------------------------------------------------
    def _generator(self, step: int, micro: int) -> torch.Generator:
        a = self.accelerator
        index = (step * self.args.gradient_accumulation_steps + micro) * a.num_processes + a.process_index
        return step_generator(self.args.seed, index)

    def _indices(self, g: torch.Generator) -> torch.Tensor:
        return torch.randint(len(self.world), (self.args.train_batch_size,), generator=g)

    # -- phase 1 ---------------------------------------------------------------------------
    def vae_step(self, step: int) -> dict[str, float]:
        logs = {}
        for micro in range(self.args.gradient_accumulation_steps):
            g = self._generator(step, micro)
            images, _, _ = self.world.batch(self._indices(g).tolist())
            images = images.to(self.accelerator.device)
            with self.accelerator.accumulate(self.vae):
                loss, logs = vae_loss(self.vae, images, self.args.vae_kl_weight, generator=g)
                self.accelerator.backward(loss)
                if self.accelerator.sync_gradients:
                    self.accelerator.clip_grad_norm_(self.vae.parameters(), self.args.max_grad_norm)
                self.vae_opt.step()
                self.vae_opt.zero_grad(set_to_none=True)
            logs["loss"] = float(loss.detach())
        return logs

    def finish_vae(self, progress: bool) -> None:
        """Freeze the VAE, set its latent scale and (optionally) cache the training set's latents."""
        vae = self.accelerator.unwrap_model(self.vae)
        vae.requires_grad_(False).eval()
        probe, _, _ = self.world.batch(range(min(512, len(self.world))))
        self.scaling_factor = latent_scaling_factor(vae, probe.to(self.accelerator.device))
        vae.register_to_config(scaling_factor=self.scaling_factor)
        if self.args.cache_latents:
            means, stds = [], []
            bar = tqdm(range(0, len(self.world), 256), desc="encoding latents", disable=not progress)
            with torch.no_grad():
                for start in bar:
                    x, _, _ = self.world.batch(range(start, min(start + 256, len(self.world))))
                    dist = vae.encode(x.to(self.accelerator.device)).latent_dist
                    means.append(dist.mean.cpu())
                    stds.append(dist.std.cpu())
            self.latent_cache = (torch.cat(means), torch.cat(stds))

    # -- phase 2 ---------------------------------------------------------------------------
    def _latents(self, indices: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, list[str]]:
        scenes = [self.world.scene(int(i)) for i in indices]
        captions = [s.caption for s in scenes]
        if self.latent_cache is not None:
            mean, std = self.latent_cache[0][indices], self.latent_cache[1][indices]
            z = mean + std * torch.randn(mean.shape, generator=g)
        else:
            images, _, _ = self.world.batch(indices.tolist())
            vae = self.accelerator.unwrap_model(self.vae)
            with torch.no_grad():
                z = vae.encode(images.to(self.accelerator.device)).latent_dist.sample(generator=g).cpu()
        return z * self.scaling_factor, captions

    def unet_step(self, step: int) -> dict[str, float]:
        a, args = self.accelerator, self.args
        loss_value = 0.0
        for micro in range(args.gradient_accumulation_steps):
            g = self._generator(step, micro)
            indices = self._indices(g)
            latents, captions = self._latents(indices, g)
            drop = torch.rand(len(captions), generator=g) < args.caption_dropout
            captions = ["" if d else c for c, d in zip(captions, drop.tolist())]
            noise = torch.randn(latents.shape, generator=g)
            timesteps = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (len(captions),), generator=g)
            latents, noise, timesteps = (t.to(a.device) for t in (latents, noise, timesteps))
            with a.accumulate(self.unet, self.text_encoder):
                hidden = self.text_encoder(tokenize(self.tokenizer, captions, a.device))[0]
                loss = noise_prediction_loss(self.unet, hidden, latents, noise, timesteps, self.noise_scheduler).mean()
                a.backward(loss)
                if a.sync_gradients:
                    a.clip_grad_norm_(self.phase2_params, args.max_grad_norm)
                self.opt.step()  # accelerate skips it until the last micro-batch
                if a.sync_gradients:
                    self.lr_scheduler.step()
                self.opt.zero_grad(set_to_none=True)
            loss_value += float(loss.detach()) / args.gradient_accumulation_steps
        for name, ema in self.ema.items():
            ema.step(a.unwrap_model(getattr(self, name)).parameters())
        return {"loss": loss_value, "lr": self.lr_scheduler.get_last_lr()[0]}

    # -- checkpoints -------------------------------------------------------------------------
    def save_checkpoint(self, step: int) -> Path:
        a = self.accelerator
        folder = self.out / f"checkpoint-{step}"
        if a.is_main_process:
            modules = {name: a.unwrap_model(getattr(self, name)) for name in ("vae", "text_encoder", "unet")}
            shadows, ema_meta = {}, {}
            for name, ema in self.ema.items():
                sd = ema.state_dict()
                shadows[f"ema_{name}"] = {str(i): p for i, p in enumerate(sd.pop("shadow_params"))}
                ema_meta[name] = sd
            sched = {k: v for k, v in self.lr_scheduler.state_dict().items() if k != "lr_lambdas"}
            meta = {
                "step": step,
                "lr_scheduler": sched,
                "ema": ema_meta,
                "scaling_factor": self.scaling_factor,
                "model_config": self.cfg.to_dict(),
                "args": {k: v for k, v in vars(self.args).items() if k != "model"},
            }
            optimizers = {"vae_optim": self.vae_opt, "optim": self.opt}
            save_train_state(folder / CHECKPOINT_FILE, modules, optimizers, shadows, meta)
            prune_checkpoints(self.out, self.args.checkpoints_total_limit)
        a.wait_for_everyone()
        return folder

    def load_checkpoint(self, folder: Path) -> int:
        meta = read_metadata(folder / CHECKPOINT_FILE)
        if meta["model_config"] != self.cfg.to_dict():
            raise SystemExit(
                f"{folder} was trained with model_config {meta['model_config']}, this run asks for "
                f"{self.cfg.to_dict()}; pass the same --model_config or start a new --output_dir"
            )
        modules = {name: self.accelerator.unwrap_model(getattr(self, name)) for name in ("vae", "text_encoder", "unet")}
        groups, meta = load_train_state(
            folder / CHECKPOINT_FILE,
            modules,
            {"vae_optim": self.vae_opt, "optim": self.opt},
            tuple(f"ema_{name}" for name in self.ema),
        )
        self.lr_scheduler.load_state_dict({**meta["lr_scheduler"], "lr_lambdas": [None] * len(self.opt.param_groups)})
        for name, ema in self.ema.items():
            if name in meta["ema"]:
                shadow = [groups[f"ema_{name}"][str(i)] for i in range(len(ema.shadow_params))]
                ema.load_state_dict({**meta["ema"][name], "shadow_params": shadow})
        self.scaling_factor = meta["scaling_factor"]
        self.resumed_args = meta["args"]
        return int(meta["step"])

    # -- output --------------------------------------------------------------------------------
    def pipeline(self):
        a = self.accelerator
        unet, text_encoder = a.unwrap_model(self.unet), a.unwrap_model(self.text_encoder)
        if self.ema:
            import copy

            unet, text_encoder = copy.deepcopy(unet), copy.deepcopy(text_encoder)
            for name, model in (("unet", unet), ("text_encoder", text_encoder)):
                if name in self.ema:
                    self.ema[name].copy_to(model.parameters())
        pipe = assemble_pipeline(
            a.unwrap_model(self.vae),
            text_encoder,
            self.tokenizer,
            unet,
            sampling_scheduler(self.args.sampling_scheduler),
        )
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def validate(self, step: int) -> None:
        """Sample grid of the validation prompts; detector readings appended to logs.jsonl."""
        if not self.accelerator.is_main_process:
            return
        pipe = self.pipeline()
        prompts = self.args.validation_prompts
        if prompts:
            images = generate(pipe, [p for p in prompts for _ in range(4)], seed=0, steps=20)
            save_grid(images, self.out / "samples" / f"step-{step:06d}.png", ncol=4 * 2)
        if self.args.validation_detectors:
            from tinyworld.detectors import pretrained_detector
            from tinyworld.scoring import score_pipeline

            report = score_pipeline(
                pipe,
                pretrained_detector("identity"),
                pretrained_detector("attribute"),
                images_per_prompt=2,
                identity_sections=("seen",),
            )
            entry = {"step": step, "phase": "validation"} | {k: v for k, v in report.items() if k.endswith("rate")}
            entry["identity_rates"] = {name: e["seen"]["rate"] for name, e in report["identity"].items()}
            with (self.out / "logs.jsonl").open("a") as f:
                f.write(json.dumps(entry) + "\n")
            self.accelerator.print(
                f"step {step}: identity rate {report['identity_mean_rate']:.2f}, attribute "
                f"named {report['attribute_named_rate']:.2f} / unnamed "
                f"{report['attribute_unnamed_rate']:.2f} / unrelated "
                f"{report['attribute_unrelated_rate']:.2f}"
            )


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tr = Trainer(args)
    a = tr.accelerator
    progress = a.is_local_main_process
    total = args.vae_train_steps + args.max_train_steps

    step = 0
    if args.resume_from_checkpoint:
        folder = (
            latest_checkpoint(out) if args.resume_from_checkpoint == "latest" else Path(args.resume_from_checkpoint)
        )
        if folder is None:
            a.print(f"no checkpoint in {out}; starting a new run")
        else:
            step = tr.load_checkpoint(folder)
            a.print(f"resumed from {folder} at step {step}")
            before = tr.resumed_args.get("vae_train_steps", args.vae_train_steps)
            if before != args.vae_train_steps and step > min(before, args.vae_train_steps):
                raise SystemExit(
                    f"{folder} was trained with --vae_train_steps {before}; resuming past the VAE phase "
                    "needs the same value"
                )
    if step > total:
        raise SystemExit(f"the checkpoint is at step {step}, past the {total} steps asked for; raise the step counts")
    if a.is_main_process:
        (out / "training_args.json").write_text(
            json.dumps(
                {k: v for k, v in vars(args).items() if k != "model"} | {"model_config": tr.cfg.to_dict()}, indent=2
            )
        )
        a.print(
            f"parameters: vae {count_parameters(tr.vae):,}, text encoder {count_parameters(tr.text_encoder):,}, "
            f"unet {count_parameters(tr.unet):,}"
        )

    log_path = out / "logs.jsonl"
    bar = tqdm(total=total, initial=step, desc="tiny SD", disable=not progress)
    losses: list[float] = []
    seconds = 0.0  # time spent in training steps only (not checkpoints or validation)
    if step >= args.vae_train_steps:
        tr.finish_vae(progress)
    while step < total:
        phase = "vae" if step < args.vae_train_steps else "unet"
        t0 = time.perf_counter()
        logs = tr.vae_step(step) if phase == "vae" else tr.unet_step(step)
        seconds += time.perf_counter() - t0
        step += 1
        losses.append(logs["loss"])
        bar.update(1)
        bar.set_postfix(phase=phase, loss=f"{logs['loss']:.4f}")
        end_of_vae = phase == "vae" and step == args.vae_train_steps
        if (step % args.logging_steps == 0 or end_of_vae) and a.is_main_process:
            entry = {
                "step": step,
                "phase": phase,
                "loss": sum(losses) / len(losses),
                "sec_per_step": seconds / len(losses),
            } | {k: v for k, v in logs.items() if k != "loss"}
            with log_path.open("a") as f:
                f.write(json.dumps(entry) + "\n")
        if step % args.logging_steps == 0 or end_of_vae:
            losses, seconds = [], 0.0
        if step % args.checkpointing_steps == 0 or end_of_vae or step == total:
            if end_of_vae:
                tr.finish_vae(progress)
            tr.save_checkpoint(step)
        if phase == "unet" and args.validation_steps and (step - args.vae_train_steps) % args.validation_steps == 0:
            tr.validate(step)
    bar.close()
    if tr.scaling_factor is None:  # no steps at all in phase 1 and nothing resumed
        tr.finish_vae(progress)
    if args.validation_steps and args.max_train_steps and args.max_train_steps % args.validation_steps:
        tr.validate(step)
    if a.is_main_process:
        tr.pipeline().save_pretrained(out)
        a.print(f"saved the pipeline to {out}")
    a.end_training()
    return 0


if __name__ == "__main__":
    sys.exit(main())
