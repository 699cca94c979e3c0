"""Thin model adapters that plug a generative model into the one SA routine.

An adapter says how to compute the model's per-sample loss (a negative ELBO or its
diffusion counterpart), how to draw the loss's randomness, and how to sample
``x ~ p(x | theta, c)``. Everything else -- Fisher, EWC, replay, the training loop --
is model-agnostic and lives in :mod:`sa_utils.core.fisher`, :mod:`sa_utils.core.ewc`,
:mod:`sa_utils.core.replay` and :mod:`sa_utils.core.amnesia`.
"""

from sa_utils.adapters.base import Batch, GenerativeAdapter
from sa_utils.adapters.vae import VAEAdapter

__all__ = ["Batch", "GenerativeAdapter", "VAEAdapter"]
