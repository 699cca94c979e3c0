"""Selective Amnesia: one training routine for every conditional generative model (chapter 5).

Minimise, over theta,

    E_{x ~ q(x|c_f)} [loss(x, c_f)]                    surrogate term: learn q for c_f
  + gamma * E_{c ~ p_r, x ~ p(x|theta*, c)} [loss(x, c)] generative replay of what stays
  + lambda * sum_i F_i (theta_i - theta*_i)^2            EWC: stay near theta* where it matters

where ``loss`` is the model's per-sample negative ELBO, supplied by an adapter
(:mod:`sa_utils.adapters`). Setting ``gamma=0`` or ``fisher=None`` gives the ablations of
chapter 5. Runs checkpoint to ``run_dir`` and resume from there.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from sa_utils.adapters.base import Batch, GenerativeAdapter
from sa_utils.core.ewc import EWCPenalty
from sa_utils.core.fisher import DiagonalFisher
from sa_utils.progress import progress_bar
from sa_utils.runtime import PRECISIONS, precision_dtype, step_generator
from sa_utils.storage.checkpoint import (
    CheckpointError,
    read_metadata,
    save_tensors,
)
from sa_utils.storage.train_state import load_train_state, save_train_state

BatchSource = Callable[[int], Batch]
"""``source(step) -> batch``: deterministic in ``step`` so resumed runs are exact."""


@dataclass
class SAConfig:
    """Hyper-parameters of one SA run (the MNIST defaults are the authors')."""

    lmbda: float = 100.0
    gamma: float = 1.0
    steps: int = 10_000
    lr: float = 1e-4
    grad_clip: float | None = None
    seed: int = 0
    checkpoint_every: int = 1_000
    log_every: int = 10
    optimizer: str = "adam"
    """``"adam"`` (the authors' VAE and DDPM) or ``"adamw"`` (their Stable Diffusion runs)."""
    fused: bool = True
    """Use PyTorch's fused Adam/AdamW kernel where every parameter is a float tensor on a CPU or a
    GPU (one kernel for all parameters; on the project's 2-core CPU a CVAE SA step is 1.11x faster
    than with PyTorch's default multi-tensor Adam, ``benchmarks/sa_step.py --optimizers``). The same update in
    exact arithmetic, with another rounding, so a run with ``fused=False`` differs in the last
    digits. The setting is part of every cache key: a run is never resumed with the other kernel."""
    weight_decay: float = 0.0
    """AdamW's decoupled weight decay (PyTorch's default 0.01 is what the authors' SD runs used)."""
    grad_accum: int = 1
    """Micro-batches per optimizer step: a batch of ``grad_accum`` x the sources' batch size on
    one device, as the authors' 4-GPU runs had (the micro-batches are combined with the adapter's
    ``batch_reduction``, so the step equals one step on the large batch)."""
    ema_decay: float | None = None
    """Keep an exponential moving average of the trained weights, started from theta* (the
    authors' DDPM and SD runs: 0.9999), and hand back the EMA weights at the end."""
    mixed_precision: str = "no"
    """``"no"``, ``"bf16"`` or ``"fp16"``: autocast the losses (fp16 adds dynamic loss scaling)."""
    ewc_dtype: str | None = None
    """Store theta* and F in ``"float16"`` or ``"bfloat16"`` to halve EWC's memory (large models)."""

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Refuse a setting outside its range before any work, naming the field and what is allowed."""

        def bad(field: str, allowed: str):
            raise ValueError(f"SAConfig.{field} = {getattr(self, field)!r} is not allowed: {allowed}")

        for name in ("lmbda", "gamma", "weight_decay"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                bad(name, "a finite number >= 0 (a negative EWC or replay weight pushes the model the wrong way)")
        if not isinstance(self.lr, (int, float)) or not math.isfinite(self.lr) or self.lr < 0:
            bad("lr", "a finite number >= 0 (0 measures the losses without moving the weights)")
        for name, low in (("steps", 1), ("grad_accum", 1), ("log_every", 1), ("checkpoint_every", 0)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                bad(name, f"an integer >= {low}" + (" (0: no checkpoints)" if low == 0 else ""))
        if self.grad_clip is not None and not (isinstance(self.grad_clip, (int, float)) and self.grad_clip > 0):
            bad("grad_clip", "None (no clipping) or a number > 0")
        if self.ema_decay is not None and not (isinstance(self.ema_decay, (int, float)) and 0 < self.ema_decay < 1):
            bad("ema_decay", "None (no EMA) or a number in (0, 1), e.g. 0.9999")
        if not isinstance(self.fused, bool):
            bad("fused", "True (fused Adam kernel where supported) or False (PyTorch's default Adam)")
        if self.optimizer not in ("adam", "adamw"):
            bad("optimizer", "'adam' or 'adamw'")
        if self.mixed_precision not in PRECISIONS:
            bad("mixed_precision", "'no', 'bf16' or 'fp16'")
        if self.ewc_dtype not in (None, "float16", "bfloat16", "float32"):
            bad("ewc_dtype", "None, 'float16', 'bfloat16' or 'float32'")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SAResult:
    history: list[dict[str, float]] = field(default_factory=list)
    steps_done: int = 0
    seconds: float = 0.0
    resumed_from: int = 0


class NonFiniteLossError(FloatingPointError):
    """The SA loss became NaN or infinite; the model was not updated with it."""


def _checkpoint_note(run_dir) -> str:
    """Where a rerun would resume from: the checkpoint if one was written, else say there is none."""
    if not run_dir:
        return "; no run folder was given, so nothing was saved"
    ckpt = Path(run_dir) / CHECKPOINT
    if ckpt.exists():
        step = read_metadata(ckpt).get("step", "?")
        return f"; the last checkpoint (step {step}) is {ckpt}"
    return "; no checkpoint was written yet (the first comes at step checkpoint_every), so a rerun starts from step 0"


CHECKPOINT = "checkpoint.safetensors"
FINAL = "model.safetensors"


def selective_amnesia(
    adapter: GenerativeAdapter,
    forget: BatchSource,
    remember: BatchSource | None,
    fisher: DiagonalFisher | None,
    config: SAConfig = SAConfig(),
    run_dir: str | Path | None = None,
    anchor: dict[str, torch.Tensor] | None = None,
    progress: bool = True,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    desc: str = "Selective Amnesia",
) -> SAResult:
    """Train ``adapter.model`` in place to forget what ``forget`` conditions on.

    ``forget(step)`` yields surrogate batches for the forgotten condition(s);
    ``remember(step)`` yields replay batches from the frozen model (or ``None``: no
    replay). ``fisher`` (or ``None``: no EWC) must cover exactly the trainable parameters;
    ``anchor`` is theta* (default: the parameters as they are when the call starts).

    With ``run_dir``, the run saves a checkpoint every ``config.checkpoint_every`` steps and
    at the end (weights, optimizer, history), and a call with the same ``run_dir`` and
    config resumes from it; the finished model is written to ``run_dir/model.safetensors``.
    A second process that asks for the same ``run_dir`` (two notebooks sharing a cache) waits
    for the first to finish (a ``filelock`` lock in ``run_dir/.lock``) and then loads its result.
    """
    if run_dir is None:
        return _train(adapter, forget, remember, fisher, config, None, anchor, progress, on_step, desc)
    from filelock import FileLock, Timeout

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(run_dir / ".lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        print(f"another process is running {run_dir}; waiting for it to finish ...", flush=True)
        lock.acquire()
    try:
        return _train(adapter, forget, remember, fisher, config, run_dir, anchor, progress, on_step, desc)
    finally:
        lock.release()


def _train(
    adapter: GenerativeAdapter,
    forget: BatchSource,
    remember: BatchSource | None,
    fisher: DiagonalFisher | None,
    config: SAConfig = SAConfig(),
    run_dir: str | Path | None = None,
    anchor: dict[str, torch.Tensor] | None = None,
    progress: bool = True,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    desc: str = "Selective Amnesia",
) -> SAResult:
    """:func:`selective_amnesia` once its run folder (if any) is locked."""
    params = adapter.trainable_parameters()
    reduction = getattr(adapter, "batch_reduction", "sum")
    if reduction not in ("sum", "mean"):
        raise ValueError(f"{type(adapter).__name__}.batch_reduction must be 'sum' or 'mean', got {reduction!r}")
    config.validate()  # again: a field may have been changed since the config was made
    accum = config.grad_accum
    # each micro-batch's share of the step: the mean over the large batch is the mean of the micro-means
    reduce = torch.sum if reduction == "sum" else (lambda v: torch.mean(v) / accum)
    if not params:
        raise ValueError("nothing to train: no parameter of the model has requires_grad=True")
    use_replay = remember is not None and config.gamma != 0
    use_ewc = fisher is not None and config.lmbda != 0
    joint = bool(getattr(adapter, "joint_batches", False))
    if config.gamma != 0 and remember is None:
        raise ValueError(f"gamma={config.gamma} but no remember source was given; pass one or set gamma=0")
    if config.lmbda != 0 and fisher is None:
        raise ValueError(f"lmbda={config.lmbda} but no Fisher was given; pass one or set lmbda=0")
    ewc_dtype = getattr(torch, config.ewc_dtype) if config.ewc_dtype else None
    ewc = EWCPenalty(params, fisher.to(adapter.device), anchor, dtype=ewc_dtype) if use_ewc else None
    device_type = adapter.device.type
    amp_dtype = None if config.mixed_precision == "no" else precision_dtype(config.mixed_precision)
    scaler = torch.amp.GradScaler(device_type, enabled=config.mixed_precision == "fp16")

    opt_cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    optimizer = opt_cls(
        params.values(), lr=config.lr, weight_decay=config.weight_decay, **adam_options(params.values(), config.fused)
    )
    ema = [p.detach().float().clone() for p in params.values()] if config.ema_decay else None
    result = SAResult()
    run_dir = Path(run_dir) if run_dir is not None else None
    settings = json.loads(
        json.dumps(
            {
                "sa_config": config.to_dict(),
                "model_config": adapter.config(),
                "batch_reduction": reduction,
                "joint_batches": joint,
                "fisher_samples": fisher.n_samples if fisher is not None else 0,
                "fisher_estimator": fisher.estimator if fisher is not None else None,
            }
        )
    )
    if run_dir is not None:
        result.resumed_from = _maybe_resume(adapter, optimizer, ewc, run_dir, settings, result, scaler, ema)

    adapter.model.train()
    start = time.perf_counter()
    bar = progress_bar(total=config.steps, initial=result.resumed_from, desc=desc, disable=not progress)
    try:
        for step in range(result.resumed_from, config.steps):
            optimizer.zero_grad(set_to_none=True)
            loss_f_sum, loss_r_sum, loss_sum = 0.0, 0.0, 0.0
            for micro in range(step * accum, (step + 1) * accum):  # with accum = 1: micro == step
                g = noise_generator(config.seed, micro)
                batch_f = forget(micro)
                batch_r = remember(micro) if use_replay else None
                if (
                    step == result.resumed_from and micro == step * accum
                ):  # before any update: a wrong source fails here
                    adapter.check_batch(batch_f, "the forget (surrogate) source's batch")
                    if batch_r is not None:
                        adapter.check_batch(batch_r, "the remember (replay) source's batch")
                with torch.autocast(device_type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    noised_f = adapter.draw_noise(batch_f, g)
                    loss_r = torch.zeros(())
                    if use_replay and joint:  # one call on both batches (the same noise draws, in the same order)
                        both = adapter.loss(adapter.join(noised_f, adapter.draw_noise(batch_r, g))).float()
                        n_f = len(batch_f["x"])
                        loss_f, loss_r = reduce(both[:n_f]), reduce(both[n_f:])
                    else:
                        loss_f = reduce(adapter.loss(noised_f).float())
                        if use_replay:
                            loss_r = reduce(adapter.loss(adapter.draw_noise(batch_r, g)).float())
                    loss = loss_f + config.gamma * loss_r if use_replay else loss_f
                if not torch.isfinite(loss):
                    raise NonFiniteLossError(
                        f"step {step}: the SA loss is {loss.item()} (forget {loss_f.item():.4g}, replay "
                        f"{loss_r.item():.4g}). "
                        "The model was not updated with it. Lower the learning rate or lambda, set grad_clip, "
                        "or check the surrogate data for NaNs" + _checkpoint_note(run_dir) + "."
                    )
                scaler.scale(loss).backward()
                loss_f_sum, loss_r_sum, loss_sum = (
                    loss_f_sum + loss_f.item(),
                    loss_r_sum + loss_r.item(),
                    loss_sum + loss.item(),
                )
            scaler.unscale_(optimizer)  # true gradients from here on (a no-op without fp16)
            logged = step % config.log_every == 0 or step + 1 == config.steps
            penalty = ewc.add_grad_(config.lmbda, with_value=logged) if ewc is not None else 0.0
            if config.grad_clip:
                torch.nn.utils.clip_grad_norm_(params.values(), config.grad_clip)
            scaler.step(optimizer)  # skips the step if fp16 gradients overflowed
            scaler.update()
            if ema is not None:
                torch._foreach_lerp_(ema, [p.detach().float() for p in params.values()], 1.0 - config.ema_decay)
            result.steps_done = step + 1
            if logged:
                row = {
                    "step": step,
                    "forget_loss": loss_f_sum,
                    "replay_loss": loss_r_sum,
                    "ewc_penalty": penalty,
                    "total": loss_sum + config.lmbda * penalty,
                }
                result.history.append(row)
                bar.set_postfix(
                    forget=f"{row['forget_loss']:.1f}", replay=f"{row['replay_loss']:.1f}", ewc=f"{penalty:.3g}"
                )
                if on_step is not None:
                    on_step(step, row)
            bar.update(1)
            if (
                run_dir is not None
                and config.checkpoint_every
                and (step + 1) % config.checkpoint_every == 0
                and step + 1 < config.steps
            ):
                _save_checkpoint(adapter, optimizer, ewc, run_dir, settings, result, scaler, ema)
    finally:
        bar.close()
        adapter.model.eval()
    result.seconds = time.perf_counter() - start
    if run_dir is not None:
        _save_checkpoint(adapter, optimizer, ewc, run_dir, settings, result, scaler, ema)
    if ema is not None:  # the EMA is what gets evaluated, as in the authors' code
        with torch.no_grad():
            for p, e in zip(params.values(), ema):
                p.copy_(e.to(p.dtype))
    if run_dir is not None:
        save_tensors(
            run_dir / FINAL,
            adapter.model.state_dict(),
            {**settings, "steps": result.steps_done, "weights": "ema" if ema is not None else "raw"},
        )
    return result


def noise_generator(seed: int, micro: int) -> torch.Generator:
    """The generator of the loss noise (the VAE's reparameterisation draws, a diffusion model's
    timesteps and noise) of micro-batch ``micro`` of an SA run with ``SAConfig(seed=seed)``. One
    generator per micro-batch, so a resumed run draws what an uninterrupted one would, and code
    that re-implements a step (chapter 5) can draw the same noise."""
    return step_generator(seed + 104729, micro)


def adam_options(params, fused: bool) -> dict:
    """Keyword arguments for ``torch.optim.Adam``/``AdamW`` over ``params``: ``{"fused": True}`` when
    ``fused`` is asked for and PyTorch's fused kernel takes these parameters (float tensors, all on one
    CPU or CUDA device), else none (PyTorch's default). Shared by SA and the fine-tuning baseline."""
    params = list(params)
    devices = {p.device for p in params}
    ok = (
        len(devices) == 1 and next(iter(devices)).type in ("cpu", "cuda") and all(p.is_floating_point() for p in params)
    )
    return {"fused": True} if fused and ok else {}


def _save_checkpoint(
    adapter, optimizer, ewc, run_dir: Path, settings: dict, result: SAResult, scaler=None, ema=None
) -> None:
    groups = {}
    if ewc is not None:  # theta* is part of the run: a resumed run must pull towards the same point
        groups["anchor"] = dict(zip(ewc.names, ewc.anchor))
    if ema is not None:
        groups["ema"] = dict(zip(adapter.trainable_parameters(), ema))
    meta = {**settings, "step": result.steps_done, "history": result.history}
    if scaler is not None and scaler.is_enabled():
        meta["grad_scaler"] = scaler.state_dict()
    save_train_state(run_dir / CHECKPOINT, {"model": adapter.model}, {"optim": optimizer}, groups, meta)


def _maybe_resume(
    adapter, optimizer, ewc, run_dir: Path, settings: dict, result: SAResult, scaler=None, ema=None
) -> int:
    path = run_dir / CHECKPOINT
    if not path.exists():
        return 0
    meta = read_metadata(path)  # every check before any weight is touched
    for key in ("model_config", "fisher_samples", "fisher_estimator", "batch_reduction"):
        if meta.get(key) != settings[key]:
            raise CheckpointError(
                f"{path} was made with {key}={meta.get(key)!r}, this run has {settings[key]!r}. "
                "Use a different run_dir, or delete the old one to start over."
            )
    defaults = SAConfig().to_dict()  # fields added since the checkpoint was written take their defaults
    old, new = {**defaults, **meta["sa_config"]}, {**defaults, **settings["sa_config"]}
    old.pop("steps"), new.pop("steps")  # extending a finished run is allowed
    if old != new:
        raise CheckpointError(
            f"{path} was made with SA settings {old}, this run has {new}. "
            "Use a different run_dir, or delete the old one to start over."
        )
    if int(meta["step"]) > int(settings["sa_config"]["steps"]):
        raise CheckpointError(
            f"{path} already ran {meta['step']} steps, more than the {settings['sa_config']['steps']} "
            "asked for. Use a different run_dir, or ask for at least as many steps."
        )
    groups, _ = load_train_state(
        path, {"model": adapter.model}, {"optim": optimizer}, ("anchor", "ema"), device=adapter.device
    )
    if ewc is not None:
        ewc.anchor = [groups["anchor"][n].to(a.dtype) for n, a in zip(ewc.names, ewc.anchor)]
    if ema is not None:
        for i, n in enumerate(adapter.trainable_parameters()):
            ema[i] = groups["ema"][n].float()
    if scaler is not None and scaler.is_enabled() and "grad_scaler" in meta:
        scaler.load_state_dict(meta["grad_scaler"])
    result.history = list(meta.get("history", []))
    result.steps_done = int(meta["step"])
    return result.steps_done
