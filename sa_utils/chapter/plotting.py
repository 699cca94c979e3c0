"""One figure style for the whole book, image grids and training curves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from sa_utils.adapters.base import GenerativeAdapter
from sa_utils.eval.metrics import generate_per_class


def set_style() -> None:
    plt.rcParams.update(
        {
            "figure.dpi": 110,
            "savefig.dpi": 150,
            "font.size": 10,
            "axes.titlesize": 11,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "image.cmap": "gray",
            "legend.frameon": False,
        }
    )


def make_grid(images: torch.Tensor, nrow: int, pad: int = 2, pad_value: float = 1.0) -> np.ndarray:
    """Tile ``[N, C, H, W]`` images (C = 1 or 3) into one ``[H', W']`` or ``[H', W', 3]`` array."""
    images = images.detach().cpu().float().clamp(0, 1)
    n, ch, h, w = images.shape
    ncol = nrow
    nrows = (n + ncol - 1) // ncol
    grid = np.full((nrows * (h + pad) + pad, ncol * (w + pad) + pad, ch), pad_value, dtype=np.float32)
    for i in range(n):
        r, c = divmod(i, ncol)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w] = (
            images[i].permute(1, 2, 0).numpy()
        )
    return grid[..., 0] if ch == 1 else grid


def show_images(images: torch.Tensor, nrow: int, ax=None, title: str | None = None):
    ax = ax or plt.gca()
    ax.imshow(make_grid(images, nrow), cmap="gray", vmin=0, vmax=1)
    ax.set_xticks([]), ax.set_yticks([]), ax.grid(False)
    if title:
        ax.set_title(title)
    return ax


def class_grid(
    adapter: GenerativeAdapter,
    classes: Sequence[int] = range(10),
    n_per_class: int = 8,
    seed: int = 0,
    ax=None,
    title: str | None = None,
    highlight: Sequence[int] = (),
):
    """One row per class, the same latent draws for every model given the same ``seed``."""
    x, _ = generate_per_class(adapter, classes, n_per_class, seed)
    ax = show_images(x, n_per_class, ax, title)
    h = x.shape[-1] + 2
    ax.set_yticks([2 + h * i + h / 2 - 1 for i in range(len(classes))])
    ax.set_yticklabels([str(c) for c in classes])
    ax.tick_params(length=0)
    for i, c in enumerate(classes):
        if c in highlight:
            ax.add_patch(plt.Rectangle((0, i * h + 1), n_per_class * h, h, fill=False, ec="tab:red", lw=2))
    return ax


def compare_grids(
    models: Mapping[str, GenerativeAdapter],
    classes: Sequence[int] = range(10),
    n_per_class: int = 8,
    seed: int = 0,
    highlight: Sequence[int] = (),
    width: float = 3.2,
):
    """Side-by-side class grids of several models with identical latent draws."""
    fig, axes = plt.subplots(1, len(models), figsize=(width * len(models), width * len(classes) / n_per_class + 0.5))
    axes = np.atleast_1d(axes)
    for ax, (name, adapter) in zip(axes, models.items()):
        class_grid(adapter, classes, n_per_class, seed, ax, name, highlight)
    fig.tight_layout()
    return fig


def plot_history(
    history: Sequence[Mapping[str, float]],
    keys: Sequence[str] = ("forget_loss", "replay_loss", "ewc_penalty"),
    ax=None,
    title: str | None = None,
):
    """Training curves from :class:`sa_utils.core.amnesia.SAResult` history rows (log scale)."""
    ax = ax or plt.gca()
    steps = [r["step"] for r in history]
    for k in keys:
        vals = [r[k] for r in history]
        if any(v > 0 for v in vals):
            ax.plot(steps, vals, label=k.replace("_", " "))
    ax.set_yscale("log"), ax.set_xlabel("step"), ax.legend()
    if title:
        ax.set_title(title)
    return ax


def image_rows(
    rows: Mapping[str, torch.Tensor],
    columns: Sequence[str] | None = None,
    ncol: int | None = None,
    cell: float = 0.9,
    title: str | None = None,
):
    """A figure with one labelled row of images per entry of ``rows`` (``[N, 3, H, W]`` in ``[0, 1]``);
    ``columns`` optionally labels the columns (e.g. the prompts)."""
    n = ncol or max(len(x) for x in rows.values())
    fig, axes = plt.subplots(
        len(rows), 1, figsize=(cell * n + 1.6, cell * len(rows) + (0.9 if columns else 0.4)), squeeze=False
    )
    for i, (ax, (label, x)) in enumerate(zip(axes[:, 0], rows.items())):
        show_images(x[:n], n, ax)
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.set_ylabel(label, rotation=0, ha="right", va="center")
        if columns is not None and i == 0:
            w = x.shape[-1] + 2
            ax.set_xticks([2 + w * j + w / 2 - 1 for j in range(min(n, len(columns)))])
            ax.set_xticklabels(list(columns)[:n], rotation=35, ha="left", fontsize=7)
            ax.xaxis.tick_top()
            ax.tick_params(length=0)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
