"""Every batch source of the book: ``source(step) -> {"x": ..., "c": ...}``.

A source is a function of the step alone (each step seeds its own generator,
:func:`sa_utils.runtime.step_generator`), so a resumed run draws exactly the batches an
uninterrupted one would have. Each kind of source draws from its own named seed stream
(:data:`SEED_STREAMS`), so the forget, replay and data batches of one run never share random numbers.

* :class:`ForgetSource` -- ``{x ~ q(x | c_f), c = c_f}``: the surrogate term (chapters 5-7)
* :class:`ReplaySource` -- ``{x ~ p(x | theta*, c), c ~ p(c)}``: generative replay (chapter 4)
* :class:`DataSource`   -- real data, for plain fine-tuning and the DDPM's replay pool (chapters 3, 4, 7)
* :class:`PairedSource` -- (latent, prompt embedding) pairs of an image set (Stable Diffusion, chapters 8-9)
* :class:`TensorBatches` -- shuffled epochs of ``(x, y)`` for the plain training loops
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from sa_utils.adapters.base import Batch, GenerativeAdapter
from sa_utils.core.surrogates import SurrogateFn
from sa_utils.runtime import step_generator

SEED_STREAMS = {"replay": 0, "forget": 7919, "data": 31, "pairs": 0}
"""Offset added to a source's seed per kind of source (``step_generator(seed + offset, step)``).
A Stable Diffusion run gives its two paired sources different seeds itself (:func:`sa_utils.sd.forget.sd_forget`)."""


def classes_tensor(classes: Sequence[int] | torch.Tensor) -> torch.Tensor:
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
        self.frozen, self.classes, self.batch_size, self.seed = frozen, classes_tensor(classes), batch_size, seed
        frozen.check_condition(self.classes)

    def __call__(self, step: int) -> Batch:
        g = step_generator(self.seed + SEED_STREAMS["replay"], step)
        c = self.classes[torch.randint(len(self.classes), (self.batch_size,), generator=g)]
        return {"x": self.frozen.sample(c, g), "c": c.to(self.frozen.device)}


class ForgetSource:
    """Batches ``{x ~ q(x | c_f), c = c_f}``; with several forgotten classes, ``c`` is uniform over them."""

    def __init__(
        self,
        surrogate: SurrogateFn,
        forget_classes: Sequence[int] | int,
        batch_size: int,
        seed: int = 0,
        device: torch.device | str = "cpu",
    ):
        if isinstance(forget_classes, int):
            forget_classes = [forget_classes]
        self.surrogate, self.classes = surrogate, classes_tensor(forget_classes)
        self.batch_size, self.seed, self.device = batch_size, seed, torch.device(device)

    def __call__(self, step: int) -> Batch:
        g = step_generator(self.seed + SEED_STREAMS["forget"], step)
        c = self.classes[torch.randint(len(self.classes), (self.batch_size,), generator=g)]
        return {"x": self.surrogate(self.batch_size, g).to(self.device), "c": c.to(self.device)}


class DataSource:
    """Batches ``{x, c}`` of real data for :func:`sa_utils.core.amnesia.selective_amnesia`.

    Used where the new objective is ordinary fine-tuning (chapters 3 and 4), not a
    surrogate. ``source(step)`` depends only on ``step`` (resumable, reproducible).
    """

    def __init__(
        self, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int = 0, device: torch.device | str = "cpu"
    ):
        if len(x) != len(y) or len(x) == 0:
            raise ValueError(f"x and y must be non-empty and equally long, got {len(x)} and {len(y)}")
        self.x, self.y, self.batch_size, self.seed, self.device = x, y, batch_size, seed, torch.device(device)

    def __call__(self, step: int) -> dict[str, torch.Tensor]:
        idx = torch.randint(
            len(self.x), (self.batch_size,), generator=step_generator(self.seed + SEED_STREAMS["data"], step)
        )
        return {"x": self.x[idx].to(self.device), "c": self.y[idx].to(self.device)}


class PairedSource:
    """``source(step) -> {"x": latents, "c": embeddings}``: a seeded random batch of (latent, prompt) pairs.

    ``prompt_index=None`` (the forget term): every image of the batch gets its own prompt, drawn
    uniformly from the ``embeddings`` of the prompt pool; otherwise image ``i`` keeps its prompt
    ``prompt_index[i]`` (the replay term). Both draws come from ``step_generator(seed, step)``.
    """

    def __init__(
        self,
        latents: torch.Tensor,
        embeddings: torch.Tensor,
        prompt_index: torch.Tensor | None,
        batch_size: int,
        seed: int,
        device: torch.device,
        dtype: torch.dtype = torch.float32,
    ):
        self.latents, self.embeddings, self.prompt_index = latents, embeddings, prompt_index
        self.batch_size, self.seed, self.device, self.dtype = batch_size, seed, device, dtype

    def __call__(self, step: int) -> dict[str, torch.Tensor]:
        g = step_generator(self.seed + SEED_STREAMS["pairs"], step)
        idx = torch.randint(len(self.latents), (self.batch_size,), generator=g)
        if self.prompt_index is None:  # the forget term: one prompt of the pool per surrogate image
            which = torch.randint(len(self.embeddings), (self.batch_size,), generator=g)
        else:
            which = self.prompt_index[idx]
        return {
            "x": self.latents[idx].to(self.device, self.dtype),
            "c": self.embeddings[which].to(self.device, self.dtype),
        }


class TensorBatches:
    """Endless shuffled mini-batches of ``(x, y)`` tensors, one epoch after another."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int = 0):
        if len(x) != len(y):
            raise ValueError(f"x and y differ in length: {len(x)} vs {len(y)}")
        self.x, self.y, self.batch_size = x, y, batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def epoch(self):
        perm = torch.randperm(len(self.x), generator=self.generator)
        for i in range(0, len(perm), self.batch_size):
            idx = perm[i : i + self.batch_size]
            yield self.x[idx], self.y[idx]

    def __len__(self) -> int:
        return (len(self.x) + self.batch_size - 1) // self.batch_size
