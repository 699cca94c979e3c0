"""Generative replay: the frozen pretrained model stands in for the data it was trained on (chapter 4).

Also the source of the samples the Fisher is estimated from (chapter 3): both are draws
``c ~ p(c), x ~ p(x | theta*, c)`` from a frozen copy of the original model.
"""
from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence

import torch

from .adapters.base import Batch, GenerativeAdapter
from .runtime import step_generator


def frozen_copy(adapter: GenerativeAdapter) -> GenerativeAdapter:
    """A deep copy of ``adapter`` whose model is in eval mode with gradients off."""
    twin = copy.copy(adapter)
    twin.model = copy.deepcopy(adapter.model).eval().requires_grad_(False)
    return twin


def _classes_tensor(classes: Sequence[int] | torch.Tensor) -> torch.Tensor:
    classes = torch.as_tensor(list(classes) if not torch.is_tensor(classes) else classes, dtype=torch.long)
    if classes.numel() == 0:
        raise ValueError("the set of classes is empty")
    return classes


class ReplaySource:
    """Batches ``{x, c}`` with ``c`` uniform over ``classes`` and ``x`` sampled from the frozen model.

    Calling ``source(step)`` always returns the same batch for the same step, so resumed
    runs replay exactly what an uninterrupted run would have.
    """

    def __init__(self, frozen: GenerativeAdapter, classes: Sequence[int], batch_size: int, seed: int = 0):
        self.frozen, self.classes, self.batch_size, self.seed = frozen, _classes_tensor(classes), batch_size, seed
        frozen.check_condition(self.classes)

    def __call__(self, step: int) -> Batch:
        g = step_generator(self.seed, step)
        c = self.classes[torch.randint(len(self.classes), (self.batch_size,), generator=g)]
        return {"x": self.frozen.sample(c, g), "c": c.to(self.frozen.device)}


def model_samples(adapter: GenerativeAdapter, classes: Sequence[int], n: int, batch_size: int, seed: int = 0) -> Iterator[Batch]:
    """``n`` samples of the model in batches, classes drawn uniformly (the Fisher's p(c))."""
    classes = _classes_tensor(classes)
    adapter.check_condition(classes)
    g = torch.Generator().manual_seed(seed)
    done = 0
    while done < n:
        b = min(batch_size, n - done)
        c = classes[torch.randint(len(classes), (b,), generator=g)]
        yield {"x": adapter.sample(c, g), "c": c.to(adapter.device)}
        done += b
