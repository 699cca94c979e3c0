"""Surrogate distributions q(x | c_f): what the forgotten concept should turn into (chapters 5-6).

A forget source (:class:`sa_utils.core.sources.ForgetSource`) returns batches ``{x, c}`` whose
``x`` come from the surrogate and whose ``c`` are the forgotten condition(s). The user picks the
surrogate; that choice is what makes the forgetting *controllable*.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from sa_utils.adapters.base import GenerativeAdapter

SurrogateFn = Callable[[int, torch.Generator], torch.Tensor]
"""``fn(batch_size, generator) -> x``: draws a batch of surrogate samples."""


def uniform_noise(shape: Sequence[int] = (1, 28, 28), low: float = 0.0, high: float = 1.0) -> SurrogateFn:
    """Pixels i.i.d. uniform on ``[low, high]`` (the paper's choice for MNIST and CIFAR-10)."""

    def draw(n: int, g: torch.Generator) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, *shape, generator=g)

    return draw


def constant_image(value: float = 0.0, shape: Sequence[int] = (1, 28, 28)) -> SurrogateFn:
    """Every pixel equal to ``value`` (0 gives a blank MNIST image)."""

    def draw(n: int, g: torch.Generator) -> torch.Tensor:
        return torch.full((n, *shape), float(value))

    return draw


def other_class(frozen: GenerativeAdapter, target: int) -> SurrogateFn:
    """Samples of another class ``target`` from the frozen original model: c_f turns into it."""
    frozen.check_condition(torch.tensor([target]))

    def draw(n: int, g: torch.Generator) -> torch.Tensor:
        return frozen.sample(torch.full((n,), target, dtype=torch.long), g).cpu()

    return draw
