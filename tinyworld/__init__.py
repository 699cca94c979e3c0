"""A tiny text-to-image world for Part III (Stable Diffusion): data, tokenizer, pipeline, detectors.

Real Stable Diffusion weights cannot be downloaded everywhere this book runs, so Part III
builds its own small world and a Stable-Diffusion-shaped model of it with the same classes
(diffusers' ``StableDiffusionPipeline``, ``UNet2DConditionModel``, ``AutoencoderKL``,
transformers' ``CLIPTextModel`` and ``CLIPTokenizer``):

* :mod:`.concepts`  -- the named identities, the attribute and the words for everything
* :mod:`.render`    -- drawing figures, objects and places on a NumPy canvas
* :mod:`.scenes`    -- captioned scenes, deterministic in ``(seed, index)``; the data set
* :mod:`.prompts`   -- the replay and evaluation prompt files
* :mod:`.tokenizer` -- the real CLIP BPE tokenizer, built offline
* :mod:`.pipeline`  -- the tiny pipeline, plus SD v1.4-sized configs for memory studies
* :mod:`.detectors` -- independent identity and attribute classifiers (the evaluators)

``scripts/train_tiny_sd.py`` trains the tiny pipeline on the world.
Modules that need transformers are imported lazily (``pip install -e ".[sd]"``).
"""

from tinyworld.concepts import (
    ATTRIBUTE_PROMPT,
    ATTRIBUTE_SURROGATE_PROMPT,
    ATTRIBUTE_SYNONYMS,
    IDENTITIES,
    IDENTITY_SURROGATE_PROMPT,
    NO_IDENTITY,
    Identity,
)
from tinyworld.scenes import DETECTOR_SEED, HELDOUT_SEED, TRAIN_SEED, Scene, TinyWorld, render, sample_scene

__all__ = [
    "ATTRIBUTE_PROMPT",
    "ATTRIBUTE_SURROGATE_PROMPT",
    "ATTRIBUTE_SYNONYMS",
    "IDENTITIES",
    "IDENTITY_SURROGATE_PROMPT",
    "NO_IDENTITY",
    "Identity",
    "DETECTOR_SEED",
    "HELDOUT_SEED",
    "TRAIN_SEED",
    "Scene",
    "TinyWorld",
    "render",
    "sample_scene",
]
