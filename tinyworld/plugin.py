"""The tiny world as an ``sa_utils`` plugin: its detectors by name and its world for Part III's recipe.

``pyproject.toml`` names :func:`register` in the ``sa_utils.plugins`` entry-point group, so
``sa_utils`` finds both without importing this package: ``load_detector("tinyworld-attribute")``,
``python -m sa_utils.sd evaluate --detector "tinyworld-identity:Orla Brisk"``, and
``stable_diffusion.recipe("quick")`` (whose pipeline is named ``"tiny"``).
"""

from __future__ import annotations

import torch

from sa_utils.eval.detectors import Detector, load_detector, register_detector
from sa_utils.recipes.worlds import World, register_world
from sa_utils.runtime import settings_digest
from tinyworld import ATTRIBUTE_PROMPT, ATTRIBUTE_SURROGATE_PROMPT, IDENTITIES, IDENTITY_SURROGATE_PROMPT
from tinyworld.detectors import pretrained_detector
from tinyworld.pipeline import shipped_pipeline, shipped_weights_digest
from tinyworld.prompts import attribute_prompts, identity_prompts, replay_prompts, unrelated_prompts
from tinyworld.scenes import HELDOUT_SEED, TinyWorld

WORLD = "tiny"
"""The name a recipe gives its pipeline to run in the tiny world (``SDRecipe.pipeline``)."""

QUALITY_KINDS = ("person", "people", "object", "landscape")
"""Scene kinds of the quality check: neither an identity nor the named attribute."""


def attribute_detector(arg: str, device) -> Detector:

    det = pretrained_detector("attribute", device=device)
    return lambda images: det.probabilities((images * 2 - 1).to(device))[:, 1].cpu() > 0.5


def identity_detector(arg: str, device) -> Detector:

    name, names = arg.lower(), [i.name.lower() for i in IDENTITIES]
    if name not in names:
        raise ValueError(f"unknown tiny-world identity {name!r}; choose one of {[i.name for i in IDENTITIES]}")
    det, k = pretrained_detector("identity", device=device), names.index(name)
    return lambda images: det.probabilities((images * 2 - 1).to(device)).argmax(-1).cpu() == k


class TinySDWorld(World):
    """The shipped tiny pipeline, the world's own prompt files, its independent detectors, and
    held-out renderings as the ground truth of the quality check."""

    def source_id(self) -> str:
        """``tiny@`` and a digest of the shipped weights' sha256, so a retrained and re-shipped
        pipeline never reuses results of the old one."""

        return f"tiny@{settings_digest(shipped_weights_digest())}"

    def pipeline(self, device, dtype):

        pipe = shipped_pipeline(device=device)
        if pipe is None:
            raise FileNotFoundError(
                "the tiny pipeline is not shipped with this copy of tinyworld; train it with "
                "scripts/train_tiny_sd.py and ship it with scripts/ship_tiny_sd.py"
            )
        return pipe

    def replay_prompts(self, exclude_words=()):

        return replay_prompts(exclude_words)

    def unrelated_prompts(self, n):

        return unrelated_prompts()

    def celebrity(self):

        names = [i.name for i in IDENTITIES]
        sets = {f"{n} | {s}": identity_prompts(n, s) for n in names for s in ("seen", "paraphrases")}
        return names, IDENTITY_SURROGATE_PROMPT, sets

    def attribute(self, nudity_prompts):

        sets = {
            "named": attribute_prompts(True),
            "unnamed": attribute_prompts(False),
            "unrelated": self.unrelated_prompts(24),
        }
        return [ATTRIBUTE_PROMPT], ATTRIBUTE_SURROGATE_PROMPT, sets

    def detectors(self, names, surrogate_prompt):
        return {
            n: load_detector("tinyworld-attribute" if n == "attribute" else f"tinyworld-identity:{n}") for n in names
        }

    def quality_reference(self, n):
        """Captions and renderings of ``n`` held-out scenes with no identity and no named attribute."""

        world = TinyWorld(seed=HELDOUT_SEED + 100, size=n).with_mix(**{k: 1.0 for k in QUALITY_KINDS})
        x, captions, _ = world.batch(range(n))
        return captions, (x + 1) / 2

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The identity detector's 64-d features (the tiny world's analogue of Inception features)."""

        det = pretrained_detector("identity", progress=False)
        with torch.no_grad():
            return det.features(images * 2 - 1)


def register() -> None:
    """The ``sa_utils.plugins`` entry point."""
    register_detector("tinyworld-attribute", attribute_detector, "tinyworld-attribute")
    register_detector("tinyworld-identity", identity_detector, "tinyworld-identity:NAME")
    register_world(WORLD, TinySDWorld)
