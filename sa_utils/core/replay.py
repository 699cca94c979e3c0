"""Generative replay: the frozen pretrained model stands in for the data it was trained on (chapter 4).

Also the source of the samples the Fisher is estimated from (chapter 3): both are draws
``c ~ p(c), x ~ p(x | theta*, c)`` from a frozen copy of the original model.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence

import torch

from sa_utils.adapters.base import Batch, GenerativeAdapter
from sa_utils.core.sources import classes_tensor


def frozen_copy(adapter: GenerativeAdapter) -> GenerativeAdapter:
    """A deep copy of ``adapter`` whose model is in eval mode with gradients off."""
    twin = copy.copy(adapter)
    twin.model = copy.deepcopy(adapter.model).eval().requires_grad_(False)
    return twin


def model_samples(
    adapter: GenerativeAdapter, classes: Sequence[int], n: int, batch_size: int, seed: int = 0
) -> Iterator[Batch]:
    """``n`` samples of the model in batches, classes drawn uniformly (the Fisher's p(c))."""
    classes = classes_tensor(classes)
    adapter.check_condition(classes)
    g = torch.Generator().manual_seed(seed)
    done = 0
    while done < n:
        b = min(batch_size, n - done)
        c = classes[torch.randint(len(classes), (b,), generator=g)]
        yield {"x": adapter.sample(c, g), "c": c.to(adapter.device)}
        done += b
