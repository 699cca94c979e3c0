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
from tqdm.auto import tqdm

from .checkpoint import load_tensors, optimizer_from_tensors, optimizer_to_tensors, save_tensors
from .data import TensorBatches
from .metrics import accuracy

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]


def fit(model: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor, epochs: int, batch_size: int = 128,
        lr: float = 1e-3, seed: int = 0, checkpoint: str | Path | None = None, desc: str = "training",
        progress: bool = True, lr_decay_every: int | None = None, lr_decay: float = 0.1) -> list[float]:
    """Minimise ``loss_fn(model, xb, yb, generator)`` with Adam; returns the mean loss of each epoch.

    With ``lr_decay_every=k`` the learning rate is multiplied by ``lr_decay`` every k epochs.
    """
    device = next(model.parameters()).device
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses: list[float] = []
    start = 0
    if checkpoint is not None and Path(checkpoint).exists():
        tensors, meta = load_tensors(checkpoint, device=device)
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        optimizer_from_tensors(optimizer, tensors, meta["optimizer"])
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
        for xb, yb in tqdm(data.epoch(), total=len(data), desc=f"{desc} {epoch + 1}/{epochs}", leave=False, disable=not progress):
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
            opt_t, opt_m = optimizer_to_tensors(optimizer)
            save_tensors(checkpoint, {**{f"model.{k}": v for k, v in model.state_dict().items()}, **opt_t},
                         {"optimizer": opt_m, "losses": losses, "epoch": epoch + 1})
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
    from .metrics import classify

    probs, _ = classify(model, x, batch_size)
    return accuracy(probs, y)
