"""Selective Amnesia (Heng & Soh, NeurIPS 2023): forgetting concepts in deep generative models.

The package, by layer (a module imports only from its own layer or those above it in this list):

* ``runtime``, ``progress``, ``plugins`` -- devices, seeds, cache folders, progress bars, plugin loading
* ``storage``   -- safetensors checkpoints with exact resume; shipped files checked by sha256
* ``data``, ``models`` -- MNIST / CIFAR-10 tensors; the CVAE, the classifiers, the DDPM UNet, SD shapes
* ``adapters``  -- one thin adapter per model family: its loss, its noise, its sampler
* ``core``      -- the method: SA, the Fisher, EWC, batch sources, replay, surrogates
* ``training``, ``eval`` -- plain training loops; metrics, detectors, a memory meter
* ``sd``        -- the five-step command line for any diffusers SD pipeline (``python -m sa_utils.sd``)
* ``recipes``   -- each part of the book's settings and cached steps
* ``chapter``   -- what a chapter opens with, tables and figures

The names below are the public API; ``sa_utils.NAME`` imports its module on first use.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_API = {
    "selective_amnesia": "sa_utils.core.amnesia",
    "SAConfig": "sa_utils.core.amnesia",
    "SAResult": "sa_utils.core.amnesia",
    "diagonal_fisher": "sa_utils.core.fisher",
    "DiagonalFisher": "sa_utils.core.fisher",
    "TimestepSum": "sa_utils.core.fisher",
    "EWCPenalty": "sa_utils.core.ewc",
    "ForgetSource": "sa_utils.core.sources",
    "ReplaySource": "sa_utils.core.sources",
    "frozen_copy": "sa_utils.core.replay",
    "GenerativeAdapter": "sa_utils.adapters.base",
    "VAEAdapter": "sa_utils.adapters.vae",
    "DDPMAdapter": "sa_utils.adapters.ddpm",
    "StableDiffusionAdapter": "sa_utils.adapters.sd",
    "load_detector": "sa_utils.eval.detectors",
    "register_detector": "sa_utils.eval.detectors",
}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'sa_utils' has no attribute {name!r}")
