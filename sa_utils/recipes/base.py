"""What every recipe of the book shares.

A recipe is a frozen dataclass of every run-size knob of one part of the book, with a ``quick``
instance (a CPU, minutes) and a ``full`` one (the authors' settings). Each part's recipe
subclasses :class:`Recipe`, which picks the instance for a mode and turns the recipe's SA fields
(``lmbda``, ``gamma``, ``seed``) into an :class:`sa_utils.core.amnesia.SAConfig` with the one
checkpoint rule. The SA settings are part of every run's cache key, so a part's checkpoint
cadence (``CHECKPOINTS_PER_RUN``, ``MIN_CHECKPOINT_EVERY``) is fixed once here per part.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar, TypeVar

from sa_utils.core.amnesia import SAConfig
from sa_utils.runtime import resolve_mode

R = TypeVar("R", bound="Recipe")


@dataclass(frozen=True)
class Recipe:
    """Base of the recipes of Parts I-III; subclasses add their knobs and ``lmbda``, ``gamma``, ``seed``."""

    mode: str

    CHECKPOINTS_PER_RUN: ClassVar[int] = 10
    """An SA run checkpoints about this many times ..."""
    MIN_CHECKPOINT_EVERY: ClassVar[int] = 100
    """... but never more often than every this many steps."""

    def checkpoint_every(self, steps: int) -> int:
        return max(steps // self.CHECKPOINTS_PER_RUN, self.MIN_CHECKPOINT_EVERY)

    def sa_settings(
        self, steps: int, lr: float, overrides: dict[str, Any], cadence_steps: int | None = None, **fields
    ) -> SAConfig:
        """The SA settings of a run of ``steps`` at ``lr`` (plus the part's ``fields``), then ``overrides``;
        the checkpoint cadence follows ``cadence_steps`` (default ``steps``)."""
        cfg = SAConfig(
            lmbda=self.lmbda,
            gamma=self.gamma,
            steps=steps,
            lr=lr,
            seed=self.seed,
            checkpoint_every=self.checkpoint_every(cadence_steps if cadence_steps is not None else steps),
            **fields,
        )
        return replace(cfg, **overrides)


def pick(recipes: dict[str, R], mode: str | None, gpu_default: str = "full", **overrides) -> R:
    """The recipe of ``mode`` (:func:`sa_utils.runtime.resolve_mode`, with the part's GPU default),
    any field overridden."""
    return replace(recipes[resolve_mode(mode, gpu_default=gpu_default)], **overrides)
