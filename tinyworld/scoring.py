"""Reading a text-to-image pipeline with the detectors, prompt file by prompt file.

:func:`score_pipeline` draws ``images_per_prompt`` images for every prompt of the evaluation
files (:mod:`.prompts`) and reports what the detectors (:mod:`.detectors`) see:

* per identity, the share of its images classified as that identity (``rate``), the mean
  probability of it and the prediction entropy -- the numbers that should fall when the
  identity is forgotten;
* the attribute rate for prompts that name it, that lead to it unnamed, and that are unrelated;
* how often an identity shows up for unrelated prompts (should stay near 0).

The training script uses a small version at each validation; ``scripts/evaluate_tiny_sd.py``
prints the full one for a saved pipeline.
"""

from __future__ import annotations

import torch

from tinyworld.concepts import IDENTITIES, NO_IDENTITY
from tinyworld.detectors import SceneClassifier, summarise_identity
from tinyworld.pipeline import generate
from tinyworld.prompts import attribute_prompts, identity_prompts, unrelated_prompts


def _images(pipe, prompts: list[str], n: int, **kw) -> torch.Tensor:
    return generate(pipe, [p for p in prompts for _ in range(n)], **kw)


def score_pipeline(
    pipe,
    identity_detector: SceneClassifier,
    attribute_detector: SceneClassifier,
    images_per_prompt: int = 4,
    steps: int = 20,
    guidance_scale: float = 5.0,
    seed: int = 0,
    identity_sections: tuple[str, ...] = ("seen", "paraphrases"),
    attribute: bool = True,
) -> dict:
    """SceneClassifier readings of ``pipe`` on the evaluation prompts (see the module docstring)."""
    kw = {"steps": steps, "guidance_scale": guidance_scale, "seed": seed}
    report: dict = {"settings": {"images_per_prompt": images_per_prompt, **kw}, "identity": {}}
    rates = []
    for k, ident in enumerate(IDENTITIES):
        entry = {}
        for section in identity_sections:
            images = _images(pipe, identity_prompts(k, section), images_per_prompt, **kw)
            entry[section] = summarise_identity(identity_detector, images, k)
            rates.append(entry[section]["rate"])
        report["identity"][ident.name] = entry
    report["identity_mean_rate"] = sum(rates) / len(rates)
    if attribute:
        for name, prompts in (
            ("named", attribute_prompts(True)),
            ("unnamed", attribute_prompts(False)),
            ("unrelated", unrelated_prompts()),
        ):
            images = _images(pipe, prompts, images_per_prompt, **kw)
            report[f"attribute_{name}_rate"] = float(
                (attribute_detector.probabilities(images)[:, 1] > 0.5).float().mean()
            )
            if name == "unrelated":
                top = identity_detector.probabilities(images).argmax(-1)
                report["identity_rate_unrelated"] = float((top != NO_IDENTITY).float().mean())
    return report


def format_report(report: dict) -> str:
    """A plain-text table of :func:`score_pipeline`'s result."""
    lines = ["identity            " + "  ".join(f"{s:>22}" for s in next(iter(report["identity"].values())))]
    for name, entry in report["identity"].items():
        cells = [f"rate {e['rate']:.2f} p {e['p_identity']:.2f} H {e['entropy']:.2f}" for e in entry.values()]
        lines.append(f"{name:<20}" + "  ".join(f"{c:>22}" for c in cells))
    lines.append(f"mean identity rate: {report['identity_mean_rate']:.3f}")
    for key in (
        "attribute_named_rate",
        "attribute_unnamed_rate",
        "attribute_unrelated_rate",
        "identity_rate_unrelated",
    ):
        if key in report:
            lines.append(f"{key}: {report[key]:.3f}")
    return "\n".join(lines)
