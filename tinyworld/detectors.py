"""Independent evaluators for Part III: which identity is in an image, and is the attribute there.

They play the paper's GIPHY celebrity detector and NudeNet: small CNNs trained on images the
world draws from its own seed (:data:`.scenes.DETECTOR_SEED`), never on the generator's
outputs, and scored on a third seed (:data:`.scenes.HELDOUT_SEED`). Generated images are
blurrier than drawn ones, so training adds random blur, noise and colour shifts.

* ``identity``: 6 classes -- the five identities of :data:`.concepts.IDENTITIES`, then
  "nobody" (:data:`.concepts.NO_IDENTITY`).
* ``attribute``: 2 classes -- absent, present.

:func:`pretrained_detector` loads a detector from :func:`sa_utils.runtime.cache_dir` or
trains it (about a minute on one CPU thread) and stores it with its held-out accuracy.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sa_utils.progress import progress_bar
from sa_utils.runtime import cache_dir, step_generator
from sa_utils.storage.checkpoint import load_model, load_tensors, save_model
from tinyworld.concepts import IDENTITIES, NO_IDENTITY
from tinyworld.scenes import DETECTOR_SEED, HELDOUT_SEED, TinyWorld, render, to_tensor

TASKS = {
    "identity": [i.name for i in IDENTITIES] + ["nobody"],
    "attribute": ["absent", "present"],
}

TRAINING_MIX = {
    # a third identities, many anonymous people (the hard negatives), some of everything else
    "identity": {"identity": 0.36, "person": 0.3, "attribute": 0.1, "people": 0.08, "object": 0.08, "landscape": 0.08},
    # the named attribute, people at the attribute-prone places, and plenty that looks alike
    "attribute": {
        "identity": 0.15,
        "person": 0.4,
        "attribute": 0.25,
        "people": 0.06,
        "object": 0.07,
        "landscape": 0.07,
    },
}


class SceneClassifier(nn.Module):
    """A small CNN classifier of ``[B, 3, H, W]`` images in ``[-1, 1]`` (any ``H, W`` >= 16)."""

    def __init__(self, n_classes: int, width: int = 16):
        super().__init__()

        def block(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        w = width
        self.features = nn.Sequential(
            *block(3, w),
            nn.MaxPool2d(2),
            *block(w, 2 * w),
            *block(2 * w, 2 * w),
            nn.MaxPool2d(2),
            *block(2 * w, 4 * w),
            *block(4 * w, 4 * w),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(4 * w, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Class probabilities ``[N, n_classes]`` (eval mode, no gradients)."""
        was = self.training
        self.eval()
        device = next(self.parameters()).device
        out = [
            F.softmax(self(images[i : i + batch_size].to(device)).float(), -1).cpu()
            for i in range(0, len(images), batch_size)
        ]
        self.train(was)
        return torch.cat(out)


@dataclass(frozen=True)
class DetectorRecipe:
    """How a detector is trained; the cache key is derived from every field."""

    task: str
    n_train: int = 10_000
    epochs: int = 3
    batch_size: int = 64
    lr: float = 3e-3
    width: int = 16
    resolution: int = 32
    n_heldout: int = 4_000
    seed: int = 0
    augment: bool = True
    mix: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"unknown detector task {self.task!r}; choose from {sorted(TASKS)}")
        if not self.mix:
            object.__setattr__(self, "mix", dict(TRAINING_MIX[self.task]))

    @property
    def classes(self) -> list[str]:
        return TASKS[self.task]

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:10]


def labelled_images(
    task: str, seed: int, n: int, resolution: int = 32, mix: dict[str, float] | None = None, progress: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` drawn images (``uint8`` ``[n, H, W, 3]``) of the world ``seed`` and their labels for ``task``."""
    world = TinyWorld(seed=seed, size=n, resolution=resolution, mix=dict(mix or TRAINING_MIX[task]))
    images = np.empty((n, resolution, resolution, 3), dtype=np.uint8)
    labels = torch.empty(n, dtype=torch.long)
    for i in progress_bar(range(n), desc=f"drawing {task} images", disable=not progress, leave=False):
        scene = world.scene(i)
        images[i] = render(scene, resolution)
        labels[i] = scene.identity if task == "identity" else int(scene.attribute)
    return torch.from_numpy(images), labels


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random blur (a third of the batch light, a third stronger), pixel noise and colour shifts."""
    n = len(x)
    order = torch.randperm(n, generator=g)
    out = x.clone()
    for group, sigma in ((order[n // 3 : 2 * n // 3], 0.6), (order[2 * n // 3 :], 1.1)):
        if len(group):
            out[group] = _gaussian_blur(out[group], sigma)
    scale = 1 + 0.15 * (torch.rand(n, 1, 1, 1, generator=g) * 2 - 1)
    shift = 0.1 * (torch.rand(n, 3, 1, 1, generator=g) * 2 - 1)
    noise = torch.randn(x.shape, generator=g) * 0.08 * torch.rand(n, 1, 1, 1, generator=g)
    return (out * scale + shift + noise).clamp(-1, 1)


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    r = max(1, int(round(2 * sigma)))
    k = torch.exp(-(torch.arange(-r, r + 1, dtype=x.dtype) ** 2) / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def scene_accuracy(model: SceneClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of ``images`` (``uint8`` ``[N, H, W, 3]`` or float ``[N, 3, H, W]``) classified as ``labels``."""
    x = to_tensor(images.numpy()) if images.dtype == torch.uint8 else images
    return float((model.probabilities(x).argmax(-1) == labels).float().mean())


def train_detector(
    recipe: DetectorRecipe, progress: bool = True, data: tuple[torch.Tensor, torch.Tensor] | None = None
) -> tuple[SceneClassifier, dict]:
    """Train a detector on freshly drawn images (or on ``data``); returns it and its held-out scores."""
    torch.manual_seed(recipe.seed)
    images, labels = data or labelled_images(
        recipe.task, DETECTOR_SEED, recipe.n_train, recipe.resolution, recipe.mix, progress
    )
    model = SceneClassifier(len(recipe.classes), recipe.width)
    steps_per_epoch = max(1, len(images) // recipe.batch_size)
    total = recipe.epochs * steps_per_epoch
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=total, pct_start=0.15)
    model.train()
    bar = progress_bar(range(total), desc=f"{recipe.task} detector", disable=not progress, leave=False)
    for step in bar:
        g = step_generator(recipe.seed, step)
        idx = torch.randint(len(images), (recipe.batch_size,), generator=g)
        x = to_tensor(images[idx].numpy())
        if recipe.augment:
            x = augment(x, g)
        loss = F.cross_entropy(model(x), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    metrics = heldout_scores(model, recipe)
    return model, metrics


def heldout_scores(model: SceneClassifier, recipe: DetectorRecipe) -> dict:
    """Accuracy on drawn images of :data:`HELDOUT_SEED`, clean and blurred (sigma 1), and per class."""
    images, labels = labelled_images(recipe.task, HELDOUT_SEED, recipe.n_heldout, recipe.resolution, recipe.mix)
    x = to_tensor(images.numpy())
    pred = model.probabilities(x).argmax(-1)
    blurred = model.probabilities(_gaussian_blur(x, 1.0)).argmax(-1)
    per_class = {
        name: float((pred[labels == k] == k).float().mean()) if (labels == k).any() else None
        for k, name in enumerate(recipe.classes)
    }
    return {
        "heldout_accuracy": float((pred == labels).float().mean()),
        "heldout_accuracy_blurred": float((blurred == labels).float().mean()),
        "heldout_per_class": per_class,
        "n_heldout": len(labels),
    }


def detector_path(recipe: DetectorRecipe) -> Path:
    return cache_dir() / "tinyworld" / f"detector-{recipe.task}-{recipe.digest()}.safetensors"


def stored_detector(recipe: DetectorRecipe) -> Path:
    """Where the detector of ``recipe`` is: shipped in ``tinyworld/weights`` (checked by sha256), else the cache."""
    from tinyworld.shipped import shelf

    return shelf().file(detector_path(recipe).name) or detector_path(recipe)


def pretrained_detector(
    task: str, progress: bool = True, device: torch.device | str = "cpu", **overrides
) -> SceneClassifier:
    """The ``task`` detector: shipped (the default recipes, ``python scripts/ship_detectors.py``), else
    loaded from the cache, else trained and cached (held-out scores in :func:`detector_metrics`).
    Detectors are evaluators, not a lesson of any chapter, so the default ones ship."""
    recipe = DetectorRecipe(task, **overrides)
    path = stored_detector(recipe)
    model = SceneClassifier(len(recipe.classes), recipe.width)
    if path.exists():
        load_model(model, path)
    else:
        model, metrics = train_detector(recipe, progress)
        save_model(model, path, {"recipe": asdict(recipe), **metrics})
    return model.to(device).eval()


def detector_metrics(task: str, **overrides) -> dict:
    """Recipe and held-out scores stored with a shipped or cached detector."""
    return load_tensors(stored_detector(DetectorRecipe(task, **overrides)))[1]


# -- reading generated images ------------------------------------------------------------


def identity_rate(detector: SceneClassifier, images: torch.Tensor, identity: int) -> float:
    """Share of ``images`` the detector assigns to ``identity`` (its top class)."""
    return float((detector.probabilities(images).argmax(-1) == identity).float().mean())


def attribute_rate(detector: SceneClassifier, images: torch.Tensor, threshold: float = 0.5) -> float:
    """Share of ``images`` in which the detector finds the attribute (probability above ``threshold``)."""
    return float((detector.probabilities(images)[:, 1] > threshold).float().mean())


def summarise_identity(detector: SceneClassifier, images: torch.Tensor, identity: int) -> dict[str, float]:
    """Rate of ``identity``, mean probability of it, and entropy of the prediction (the paper's forgetting readings)."""
    p = detector.probabilities(images)
    entropy = -(p * p.clamp_min(1e-12).log()).sum(-1)
    return {
        "rate": float((p.argmax(-1) == identity).float().mean()),
        "p_identity": float(p[:, identity].mean()),
        "p_nobody": float(p[:, NO_IDENTITY].mean()),
        "entropy": float(entropy.mean()),
    }
