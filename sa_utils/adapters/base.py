"""The adapter interface every model implements (chapter 5 explains why one is enough)."""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import nn

Batch = dict[str, torch.Tensor]
"""A batch is a dict of tensors sharing the leading batch dimension.

``"x"`` holds data (or surrogate / replayed samples), ``"c"`` the conditions. Adapters add
the per-sample random draws their loss needs (``"eps"``, ``"t"``, ``"noise"``), so the loss
is a deterministic function of the parameters and the batch. Slicing every tensor of a
batch along dim 0 gives a valid smaller batch; :mod:`sa_utils.core.fisher` relies on that.
"""


class GenerativeAdapter(ABC):
    """A conditional generative model as Selective Amnesia sees it."""

    model: nn.Module

    batch_reduction: str = "sum"
    """How SA combines the per-sample losses of a batch: ``"sum"`` or ``"mean"``. Each adapter
    sets what the authors' code does for its model (VAE: sum; DDPM and Stable Diffusion: mean),
    so that lambda and gamma mean what they mean there. Together with the loss's own reduction
    over pixels (in :meth:`loss`) it fixes the scale of the data terms against EWC."""

    joint_batches: bool = False
    """True where a sample's loss depends on no other sample of its batch and one call on a
    large batch is cheaper than two small ones (the CVAE on a CPU: many small matrix products).
    SA then computes the forget and the replay losses in one call on the two noised batches
    joined (:meth:`join`): the same losses and gradients up to rounding, fewer kernel launches."""

    @abstractmethod
    def loss(self, batch: Batch) -> torch.Tensor:
        """Per-sample loss of shape ``[B]``: an upper bound on ``-log p(x | theta, c)``."""

    @abstractmethod
    def draw_noise(self, batch: Batch, generator: torch.Generator | None = None) -> Batch:
        """Return ``batch`` plus the random draws :meth:`loss` uses."""

    @abstractmethod
    def sample(self, c: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw ``x ~ p(x | theta, c)`` for each condition in ``c`` (no gradients)."""

    def check_condition(self, c: torch.Tensor) -> None:
        """Raise ``ValueError`` if ``c`` is not a valid condition for this model."""

    def check_data(self, x: torch.Tensor, what: str = "x") -> None:
        """Raise ``ValueError`` if ``x`` is not data this model is trained on (shape, dtype, range).

        The default checks nothing; adapters of image models check with :func:`check_images`."""

    def check_batch(self, batch: Batch, what: str = "batch") -> None:
        """Check a training batch before any work is done on it: its keys, equal lengths, the
        conditions (:meth:`check_condition`) and the data (:meth:`check_data`). SA and the Fisher
        call it on the first batch of every source, so a wrong source fails before the first step."""
        if not isinstance(batch, dict) or "x" not in batch or "c" not in batch:
            keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
            raise ValueError(f"{what}: a batch is a dict with 'x' (data) and 'c' (conditions); got {keys}")
        if len(batch["x"]) != len(batch["c"]):
            raise ValueError(f"{what}: 'x' holds {len(batch['x'])} items but 'c' holds {len(batch['c'])}")
        if len(batch["x"]) == 0:
            raise ValueError(f"{what}: the batch is empty")
        self.check_condition(batch["c"])
        self.check_data(batch["x"], what)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        """The parameters SA updates (those with ``requires_grad``), by name."""
        return {n: p for n, p in self.model.named_parameters() if p.requires_grad}

    def config(self) -> dict[str, Any]:
        """JSON-able description of the model, stored with checkpoints and Fisher files."""
        return {"model": type(self.model).__name__}

    def per_sample_grad_mode(self):
        """Context manager active while :mod:`sa_utils.core.fisher` takes per-sample gradients with ``vmap``.

        Adapters override it to swap in kernels that ``torch.func.vmap`` can batch (e.g. plain
        attention instead of a fused kernel without a batching rule); the result must not change.
        """
        return contextlib.nullcontext()

    @staticmethod
    def join(a: Batch, b: Batch) -> Batch:
        """Two noised batches as one (each tensor concatenated along the batch dimension)."""
        if set(a) != set(b):
            raise ValueError(f"cannot join batches with keys {sorted(a)} and {sorted(b)}")
        return {k: torch.cat([a[k], b[k]]) for k in a}

    def loss_with_noise(self, batch: Batch, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.loss(self.draw_noise(batch, generator))


def check_images(
    x: torch.Tensor, shape: tuple[int, ...], what: str = "x", low: float = 0.0, high: float = 1.0, hint: str = ""
) -> None:
    """Raise ``ValueError`` naming ``what`` unless ``x`` is a float tensor ``[N, *shape]`` of finite
    values in ``[low, high]`` (the book keeps every image in ``[0, 1]``)."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{what} must be a torch.Tensor of images, got {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise ValueError(
            f"{what} has dtype {x.dtype}; images must be floats in [{low:g}, {high:g}] "
            f"(uint8 pixels: divide by 255){hint}"
        )
    if tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(f"{what} has shape {tuple(x.shape)}, this model needs [N, {', '.join(map(str, shape))}]{hint}")
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        raise ValueError(f"{what} holds {int(bad.sum())} NaN or infinite values; check the data or the surrogate{hint}")
    lo, hi = float(x.min()), float(x.max())
    tol = 1e-4 * (high - low)
    if lo < low - tol or hi > high + tol:
        raise ValueError(
            f"{what} has values in [{lo:.3g}, {hi:.3g}]; this model needs [{low:g}, {high:g}]"
            f" (images scaled to [-1, 1]? map them with (x + 1) / 2){hint}"
        )


@contextlib.contextmanager
def plain_attention(model: nn.Module):
    """Swap every diffusers ``Attention`` in ``model`` to the plain (matmul + softmax) processor.

    PyTorch's fused CPU attention kernel has no ``torch.func.vmap`` batching rule, so vmap
    would fall back to a slow per-sample loop; the plain processor computes the same
    function. Adapters of diffusers models return this from :meth:`per_sample_grad_mode`.
    """
    from diffusers.models.attention_processor import Attention, AttnProcessor

    saved = [(m, m.processor) for m in model.modules() if isinstance(m, Attention)]
    try:
        for m, _ in saved:
            m.set_processor(AttnProcessor())
        yield
    finally:
        for m, proc in saved:
            m.set_processor(proc)
