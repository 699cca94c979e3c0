"""Plain supervised training loops: the CVAE (chapter 2), the classifier, and fine-tuning (chapter 3).

``fit`` checkpoints after every epoch and resumes from the checkpoint, so an interrupted
run continues where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sa_utils.core.sources import DataSource, TensorBatches
from sa_utils.eval.metrics import accuracy, classify
from sa_utils.progress import progress_bar
from sa_utils.runtime import step_generator
from sa_utils.storage.train_state import load_train_state, save_train_state

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]


def fit(
    model: nn.Module,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    epochs: int,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    checkpoint: str | Path | None = None,
    desc: str = "training",
    progress: bool = True,
    lr_decay_every: int | None = None,
    lr_decay: float = 0.1,
) -> list[float]:
    """Minimise ``loss_fn(model, xb, yb, generator)`` with Adam; returns the mean loss of each epoch.

    With ``lr_decay_every=k`` the learning rate is multiplied by ``lr_decay`` every k epochs.
    """
    device = next(model.parameters()).device
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses: list[float] = []
    start = 0
    if checkpoint is not None and Path(checkpoint).exists():
        _, meta = load_train_state(checkpoint, {"model": model}, {"optim": optimizer}, device=device)
        losses, start = list(meta["losses"]), int(meta["epoch"])
    data = TensorBatches(x, y, batch_size, seed)
    g = torch.Generator().manual_seed(seed + 1)
    for _ in range(start):  # replay the shuffles of finished epochs so a resumed run sees the same order
        torch.randperm(len(x), generator=data.generator)
    model.train()
    for epoch in range(start, epochs):
        for group in optimizer.param_groups:
            group["lr"] = lr * (lr_decay ** (epoch // lr_decay_every) if lr_decay_every else 1.0)
        total, count = 0.0, 0
        for xb, yb in progress_bar(
            data.epoch(), total=len(data), desc=f"{desc} {epoch + 1}/{epochs}", leave=False, disable=not progress
        ):
            xb, yb = xb.to(device), yb.to(device)
            loss = loss_fn(model, xb, yb, g)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{desc}: loss is {loss.item()} in epoch {epoch + 1}; lower the learning rate")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, count = total + loss.item() * len(xb), count + len(xb)
        losses.append(total / count)
        if checkpoint is not None:
            save_train_state(
                checkpoint, {"model": model}, {"optim": optimizer}, metadata={"losses": losses, "epoch": epoch + 1}
            )
    model.eval()
    return losses


def cvae_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Mean negative ELBO per image (nats)."""
    eps = torch.randn(len(x), model.config.z_dim, generator=g).to(x.device)
    return model.negative_elbo(x, y, eps).mean()


def classifier_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return F.cross_entropy(model(x), y)


@torch.no_grad()
def classifier_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2000) -> float:

    probs, _ = classify(model, x, batch_size)
    return accuracy(probs, y)


def train_ddpm(
    adapter,
    x: torch.Tensor,
    y: torch.Tensor,
    steps: int,
    batch_size: int = 64,
    lr: float = 5e-4,
    cond_drop: float = 0.1,
    ema_decay: float = 0.999,
    warmup: int = 200,
    grad_clip: float = 1.0,
    seed: int = 0,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 500,
    progress: bool = True,
    desc: str = "DDPM",
) -> list[float]:
    """Train a class-conditional DDPM (``adapter``: a :class:`~sa_utils.adapters.ddpm.DDPMAdapter`).

    Each step draws a batch of real images (with replacement, reproducible per step), replaces
    each label by the null class with probability ``cond_drop`` (what classifier-free guidance
    needs), and takes an Adam step on the mean noise-prediction loss, with a linear warm-up
    and gradient clipping. An exponential moving average of the weights (diffusers'
    ``EMAModel``) is kept; at the end the EMA weights are copied into the model, which is
    what gets sampled and saved. Returns the mean loss of every 100 steps. With
    ``checkpoint``, the run saves weights, EMA, optimizer and losses every
    ``checkpoint_every`` steps and resumes from there.
    """
    from diffusers.training_utils import EMAModel

    model = adapter.model
    device = adapter.device
    params = list(model.parameters())
    names = [n for n, _ in model.named_parameters()]
    optimizer = torch.optim.Adam(params, lr=lr)
    ema = EMAModel(params, decay=ema_decay, use_ema_warmup=False)
    losses: list[float] = []
    start = 0
    if checkpoint is not None and Path(checkpoint).exists():
        groups, meta = load_train_state(checkpoint, {"model": model}, {"optim": optimizer}, ("ema",), device=device)
        for shadow, n in zip(ema.shadow_params, names):
            shadow.copy_(groups["ema"][n])
        ema.optimization_step = int(meta["step"])
        losses, start = list(meta["losses"]), int(meta["step"])
    data = DataSource(x, y, batch_size, seed=seed, device=device)
    null = adapter.null_class
    model.train()
    window: list[float] = []
    bar = progress_bar(total=steps, initial=start, desc=desc, disable=not progress)
    for step in range(start, steps):
        g = step_generator(seed + 17, step)
        batch = data(step)
        drop = torch.rand(batch_size, generator=g) < cond_drop
        batch["c"] = torch.where(drop.to(device), torch.full_like(batch["c"], null), batch["c"])
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / max(warmup, 1))
        loss = adapter.loss(adapter.draw_noise(batch, g)).mean()
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"{desc}: loss is {loss.item()} at step {step}; lower the learning rate"
                + (f" (the last checkpoint is {checkpoint})" if checkpoint else "")
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        ema.step(params)
        window.append(loss.item())
        if len(window) == 100 or step + 1 == steps:
            losses.append(sum(window) / len(window))
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
            window = []
        bar.update(1)
        done = step + 1
        if checkpoint is not None and (done % checkpoint_every == 0 or done == steps):
            save_train_state(
                checkpoint,
                {"model": model},
                {"optim": optimizer},
                {"ema": dict(zip(names, ema.shadow_params))},
                {"losses": losses, "step": done},
            )
    bar.close()
    ema.copy_to(params)
    model.eval()
    return losses
