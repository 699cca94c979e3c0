"""The captioned image set of the tiny world: scenes drawn from templates, deterministic in ``(seed, index)``.

A :class:`Scene` is what a caption can talk about (who, where, which colours, whether the
attribute is worn) plus a ``render_seed`` for everything the caption leaves open (positions,
sizes, exact shades). :func:`sample_scene` draws a caption template first and then the scene
that fits it, so

* a named identity is drawn if and only if its name is in the caption;
* the attribute is drawn whenever a synonym is in the caption, and also -- unnamed -- on
  half of the anonymous people at the beach or by the pool whose clothes the caption
  leaves open;
* "a person with a hat" and "a person wearing plain clothes" (the two surrogate prompts)
  are ordinary captions of anonymous people.

:class:`TinyWorld` is the indexable data set (images in ``[-1, 1]``, captions, labels) that
the Part III training script and the detectors use. Nothing is downloaded.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch

from tinyworld.concepts import (
    ATTRIBUTE_PRONE_PLACES,
    ATTRIBUTE_SYNONYMS,
    CLOTHES_COLOURS,
    HAIR_COLOURS,
    IDENTITIES,
    LANDSCAPES,
    NO_IDENTITY,
    OBJECT_COLOURS,
    OBJECT_PLACES,
    OBJECTS,
    PLACES,
    SKIN_TONES,
    UNNAMED_ATTRIBUTE_RATE,
    words,
)
from tinyworld.render import Canvas, draw_identity, draw_landscape, draw_object, draw_person, draw_place

TRAIN_SEED = 0
"""Seed of the generator's training images."""
DETECTOR_SEED = 1
"""Seed of the images the detectors learn from (never shown to the generator)."""
HELDOUT_SEED = 2
"""Seed of the images the detectors are scored on."""

KINDS = ("identity", "person", "people", "attribute", "object", "landscape")
DEFAULT_MIX: dict[str, float] = {
    "identity": 0.25,
    "person": 0.33,
    "people": 0.04,
    "attribute": 0.08,
    "object": 0.18,
    "landscape": 0.12,
}
"""Share of each kind of scene. "attribute" scenes name the attribute; the unnamed
attribute lives inside "person" scenes at the prone places."""

PERSON_PLACE_WEIGHTS: dict[str, float] = {p: (2.0 if p in ATTRIBUTE_PRONE_PLACES else 1.0) for p in PLACES}

PREFIXES = ("", "", "a photo of ", "a picture of ", "an image of ", "a drawing of ")

# Templates: {pre} prefix, {place} place phrase, {colour} clothes/object colour, {hat} hat colour,
# {syn} an attribute synonym, {name} an identity, {obj}/{objs} an object (singular/plural).
# Flags say what the caption pins down; whatever it leaves open is drawn at random.
PERSON_TEMPLATES: tuple[tuple[str, frozenset[str]], ...] = (
    ("{pre}a person {place}", frozenset()),
    ("{pre}a person standing {place}", frozenset()),
    ("{pre}someone {place}", frozenset()),
    ("{pre}a person", frozenset({"no_place"})),
    ("{pre}a person in a {colour} shirt {place}", frozenset({"top"})),
    ("{pre}a person wearing {colour} clothes {place}", frozenset({"top", "bottom"})),
    ("{pre}a person with a hat {place}", frozenset({"hat"})),
    ("{pre}a person with a hat", frozenset({"hat", "no_place"})),
    ("{pre}a person with a {hat} hat {place}", frozenset({"hat_colour"})),
    ("{pre}a person wearing plain clothes {place}", frozenset({"plain"})),
    ("{pre}a person wearing plain clothes", frozenset({"plain", "no_place"})),
    ("{pre}a person in a {colour} shirt and a hat {place}", frozenset({"top", "hat"})),
)
IDENTITY_TEMPLATES: tuple[str, ...] = (
    "{name}",
    "a photo of {name}",
    "{name} {place}",
    "a picture of {name} {place}",
    "{name} standing {place}",
    "a portrait of {name}",
    "an image of {name}",
)
ATTRIBUTE_TEMPLATES: tuple[str, ...] = (
    "{pre}a {syn} person {place}",
    "{pre}a person in {syn} clothes {place}",
    "{pre}a person wearing {syn} clothes {place}",
    "{pre}someone in a {syn} outfit {place}",
    "{pre}a {syn} person",
    "{pre}a {syn} person with a hat {place}",
)
PEOPLE_TEMPLATES: tuple[str, ...] = ("{pre}two people {place}", "{pre}two people standing {place}", "{pre}two people")
OBJECT_TEMPLATES: tuple[str, ...] = (
    "{pre}a {colour} {obj} {place}",
    "{pre}a {colour} {obj}",
    "{pre}a {obj} {place}",
    "{pre}two {colour} {objs} {place}",
    "{pre}two {objs}",
)


@dataclass(frozen=True)
class Scene:
    """What one captioned image shows.

    ``identity`` is an index into :data:`.concepts.IDENTITIES` or ``NO_IDENTITY``; ``top``,
    ``bottom`` and ``hat`` are colour names of :data:`.concepts.CLOTHES_COLOURS` (``hat=None``:
    bare-headed); ``subject`` is the object or landscape kind; ``count`` is 1 or 2.
    """

    kind: str
    caption: str
    place: str | None = None
    identity: int = NO_IDENTITY
    attribute: bool = False
    attribute_named: bool = False
    top: str | None = None
    bottom: str | None = None
    hat: str | None = None
    subject: str | None = None
    colour: str | None = None
    count: int = 1
    render_seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def _rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(index)])


def _pick(rng: np.random.Generator, options: Sequence):
    return options[int(rng.integers(len(options)))]


def _weighted(rng: np.random.Generator, weights: dict[str, float]) -> str:
    keys = list(weights)
    p = np.asarray([weights[k] for k in keys], dtype=float)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def _tidy(text: str) -> str:
    """Collapse spaces and write "an" before a vowel ("an orange ball")."""
    return re.sub(r"\ba (?=[aeiou])", "an ", " ".join(text.split()))


def sample_scene(seed: int, index: int, mix: dict[str, float] | None = None) -> Scene:
    """The scene with number ``index`` of the world made from ``seed`` (pure function of both)."""
    rng = _rng(seed, index)
    kind = _weighted(rng, mix or DEFAULT_MIX)
    if kind not in KINDS:
        raise ValueError(f"unknown scene kind {kind!r}; choose from {KINDS}")
    render_seed = int(rng.integers(2**31))
    pre = _pick(rng, PREFIXES)
    if kind == "identity":
        ident = int(rng.integers(len(IDENTITIES)))
        place = _pick(rng, list(PLACES))
        template = _pick(rng, IDENTITY_TEMPLATES)
        caption = template.format(name=IDENTITIES[ident].name, place=_pick(rng, PLACES[place]))
        return Scene("identity", _tidy(caption), place=place, identity=ident, render_seed=render_seed)
    if kind == "person":
        template, pins = _pick(rng, PERSON_TEMPLATES)
        place = _weighted(rng, PERSON_PLACE_WEIGHTS)
        colours = list(CLOTHES_COLOURS)
        top, bottom = _pick(rng, colours), _pick(rng, colours)
        if "bottom" in pins:
            bottom = top
        hat = _pick(rng, colours) if ("hat" in pins or "hat_colour" in pins or rng.random() < 0.3) else None
        clothes_open = not ({"top", "bottom", "plain"} & pins)
        attribute = clothes_open and place in ATTRIBUTE_PRONE_PLACES and rng.random() < UNNAMED_ATTRIBUTE_RATE
        caption = template.format(pre=pre, place=_pick(rng, PLACES[place]), colour=top, hat=hat)
        return Scene(
            "person",
            _tidy(caption),
            place=place,
            attribute=attribute,
            top=top,
            bottom=bottom,
            hat=hat,
            render_seed=render_seed,
        )
    if kind == "attribute":
        template = _pick(rng, ATTRIBUTE_TEMPLATES)
        place = _pick(rng, list(PLACES))
        hat = _pick(rng, list(CLOTHES_COLOURS)) if ("hat" in template or rng.random() < 0.3) else None
        caption = template.format(pre=pre, syn=_pick(rng, ATTRIBUTE_SYNONYMS), place=_pick(rng, PLACES[place]))
        return Scene(
            "attribute",
            _tidy(caption),
            place=place,
            attribute=True,
            attribute_named=True,
            hat=hat,
            render_seed=render_seed,
        )
    if kind == "people":
        place = _pick(rng, list(PLACES))
        caption = _pick(rng, PEOPLE_TEMPLATES).format(pre=pre, place=_pick(rng, PLACES[place]))
        return Scene("people", _tidy(caption), place=place, count=2, render_seed=render_seed)
    if kind == "object":
        obj, colour = _pick(rng, list(OBJECTS)), _pick(rng, list(OBJECT_COLOURS))
        place = _pick(rng, OBJECT_PLACES)
        template = _pick(rng, OBJECT_TEMPLATES)
        count = 2 if template.startswith("{pre}two") else 1
        caption = template.format(pre=pre, colour=colour, obj=obj, objs=OBJECTS[obj], place=_pick(rng, PLACES[place]))
        return Scene(
            "object", _tidy(caption), place=place, subject=obj, colour=colour, count=count, render_seed=render_seed
        )
    subject = _pick(rng, list(LANDSCAPES))
    caption = pre + _pick(rng, LANDSCAPES[subject])
    return Scene("landscape", _tidy(caption), subject=subject, render_seed=render_seed)


def render(scene: Scene, resolution: int = 32, supersample: int = 4) -> np.ndarray:
    """Draw ``scene``; ``uint8`` array ``[resolution, resolution, 3]``. Deterministic in the scene."""
    rng = np.random.default_rng(scene.render_seed)
    cv = Canvas(resolution, supersample)

    def jitter(rgb):
        return tuple(np.clip(np.asarray(rgb, np.float32) + rng.normal(0, 7, 3), 0, 255))

    if scene.kind == "landscape":
        draw_landscape(cv, scene.subject, rng, jitter)
        return cv.image()
    horizon = rng.uniform(0.5, 0.66)
    draw_place(cv, scene.place, horizon, rng, jitter)
    if scene.kind == "object":
        colour = jitter(OBJECT_COLOURS[scene.colour])
        xs = [rng.uniform(0.3, 0.7)] if scene.count == 1 else [rng.uniform(0.2, 0.35), rng.uniform(0.65, 0.8)]
        z = rng.uniform(0.3, 0.42) if scene.count == 1 else rng.uniform(0.22, 0.3)
        for x in xs:
            draw_object(cv, scene.subject, x, rng.uniform(0.82, 0.94), z, colour)
        return cv.image()
    skin = jitter(_pick(rng, SKIN_TONES))
    if scene.kind == "identity":
        draw_identity(
            cv,
            IDENTITIES[scene.identity],
            rng.uniform(0.36, 0.64),
            rng.uniform(0.9, 0.97),
            rng.uniform(0.88, 1.02),
            skin,
        )
    elif scene.kind in ("person", "attribute"):
        top = jitter(CLOTHES_COLOURS[scene.top or _pick(rng, list(CLOTHES_COLOURS))])
        bottom = jitter(CLOTHES_COLOURS[scene.bottom or _pick(rng, list(CLOTHES_COLOURS))])
        hat = jitter(CLOTHES_COLOURS[scene.hat]) if scene.hat else None
        draw_person(
            cv,
            rng.uniform(0.36, 0.64),
            rng.uniform(0.9, 0.97),
            rng.uniform(0.88, 1.02),
            skin,
            top,
            bottom,
            jitter(_pick(rng, HAIR_COLOURS)),
            hat,
            attribute=scene.attribute,
        )
    elif scene.kind == "people":
        for cx in (rng.uniform(0.25, 0.33), rng.uniform(0.67, 0.75)):
            colours = list(CLOTHES_COLOURS)
            hat = jitter(CLOTHES_COLOURS[_pick(rng, colours)]) if rng.random() < 0.3 else None
            draw_person(
                cv,
                cx,
                rng.uniform(0.9, 0.97),
                rng.uniform(0.68, 0.8),
                jitter(_pick(rng, SKIN_TONES)),
                jitter(CLOTHES_COLOURS[_pick(rng, colours)]),
                jitter(CLOTHES_COLOURS[_pick(rng, colours)]),
                jitter(_pick(rng, HAIR_COLOURS)),
                hat,
            )
    else:
        raise ValueError(f"unknown scene kind {scene.kind!r}")
    return cv.image()


def to_tensor(images: np.ndarray | Sequence[np.ndarray]) -> torch.Tensor:
    """``uint8`` ``[..., H, W, 3]`` images -> float ``[..., 3, H, W]`` in ``[-1, 1]`` (diffusers' convention)."""
    arr = torch.from_numpy(np.ascontiguousarray(np.stack(images) if isinstance(images, (list, tuple)) else images))
    return arr.movedim(-1, -3).float().div(127.5).sub(1.0)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Inverse of :func:`to_tensor` (clamped): ``[..., 3, H, W]`` in ``[-1, 1]`` -> ``uint8`` ``[..., H, W, 3]``."""
    return images.detach().float().add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8).movedim(-3, -1).cpu().numpy()


@dataclass
class TinyWorld(torch.utils.data.Dataset):
    """``size`` captioned images of the world made from ``seed``; item ``i`` depends on ``(seed, i)`` only.

    Items are dicts with ``pixel_values`` (float ``[3, R, R]`` in ``[-1, 1]``), ``caption``,
    ``identity`` (class index, ``NO_IDENTITY`` for nobody), ``attribute`` (0/1) and ``kind``.
    """

    seed: int = TRAIN_SEED
    size: int = 50_000
    resolution: int = 32
    mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))

    def __post_init__(self):
        if self.size < 1:
            raise ValueError(f"size must be positive, got {self.size}")
        unknown = set(self.mix) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown scene kinds in mix: {sorted(unknown)}; choose from {KINDS}")

    def __len__(self) -> int:
        return self.size

    def scene(self, index: int) -> Scene:
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} outside 0..{self.size - 1}")
        return sample_scene(self.seed, index, self.mix)

    def __getitem__(self, index: int) -> dict:
        scene = self.scene(int(index))
        return {
            "pixel_values": to_tensor(render(scene, self.resolution)),
            "caption": scene.caption,
            "identity": scene.identity,
            "attribute": int(scene.attribute),
            "kind": scene.kind,
        }

    def batch(self, indices: Iterable[int]) -> tuple[torch.Tensor, list[str], list[Scene]]:
        """Images ``[B, 3, R, R]`` in ``[-1, 1]``, captions and scenes for ``indices``."""
        scenes = [self.scene(int(i)) for i in indices]
        return to_tensor([render(s, self.resolution) for s in scenes]), [s.caption for s in scenes], scenes

    def with_mix(self, **shares: float) -> TinyWorld:
        """The same world with other shares of scene kinds (e.g. ``identity=1.0`` and the rest 0)."""
        return replace(self, mix={**{k: 0.0 for k in KINDS}, **shares})


def caption_vocabulary() -> set[str]:
    """Every word any caption of the world can contain (prompt files are checked against it)."""
    texts: list[str] = list(PREFIXES) + ["a portrait of", "a photo of", "a picture of", "an image of"]
    texts += [t for t, _ in PERSON_TEMPLATES] + list(IDENTITY_TEMPLATES) + list(ATTRIBUTE_TEMPLATES)
    texts += list(PEOPLE_TEMPLATES) + list(OBJECT_TEMPLATES)
    vocab = {w for t in texts for w in words(re.sub(r"\{\w+\}", " ", t))}
    fills: list[str] = (
        [p for phrases in PLACES.values() for p in phrases] + list(CLOTHES_COLOURS) + list(OBJECT_COLOURS)
    )
    fills += list(ATTRIBUTE_SYNONYMS) + [i.name for i in IDENTITIES] + list(OBJECTS) + list(OBJECTS.values())
    fills += [c for caps in LANDSCAPES.values() for c in caps]
    return vocab | {w for f in fills for w in words(f)}
