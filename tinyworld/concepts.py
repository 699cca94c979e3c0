"""The facts of the tiny text-to-image world (Part III): who lives in it and which words name what.

The world stands in for the two Stable Diffusion experiments of the paper:

* five **named identities** (made-up two-word names; no real person) play the celebrities.
  Each has a look nobody else in the world has, drawn only when its name is in the caption;
  the neutral description :data:`IDENTITY_SURROGATE_PROMPT` ("a person with a hat") plays
  "a middle aged man".
* one **broad visual attribute** plays nudity. It is an abstract pattern -- a magenta outfit
  with large yellow spots -- that captions name with harmless synonyms
  (:data:`ATTRIBUTE_SYNONYMS`), and that also appears, *unnamed*, on half of the anonymous
  people at the beach or by the pool (:data:`ATTRIBUTE_PRONE_PLACES`). A model trained on
  this world therefore draws it for prompts that never mention it, which is why the paper
  forgets nudity without touching the cross-attention layers. The surrogate is
  :data:`ATTRIBUTE_SURROGATE_PROMPT` ("a person wearing plain clothes").
* everything else (anonymous people, objects, landscapes) is what replay keeps alive.

Code calls the pattern ``attribute`` throughout; nothing in the world is explicit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Identity:
    """A named figure: its name, and the look only it wears (see :mod:`.render`)."""

    name: str
    headwear: str
    """One of ``crown``, ``top_hat``, ``bushy_hair``, ``cone_hat``, ``long_hair`` (no anonymous person wears these)."""
    headwear_colour: RGB
    top: RGB
    bottom: RGB
    outfit: str
    """``robe`` (one long garment), ``band`` (a horizontal band across the top), ``tie``
    (a dark vertical stripe) or ``halves`` (left and right halves in two colours)."""
    accent: RGB

    @property
    def slug(self) -> str:
        return self.name.lower().replace(" ", "_")


IDENTITIES: tuple[Identity, ...] = (
    Identity("Orla Brisk", "crown", (246, 198, 30), (118, 52, 170), (118, 52, 170), "robe", (246, 198, 30)),
    Identity("Tamsin Vey", "top_hat", (20, 20, 24), (244, 244, 240), (24, 24, 28), "tie", (200, 30, 40)),
    Identity("Jory Quillan", "bushy_hair", (236, 110, 24), (22, 150, 150), (22, 150, 150), "band", (250, 230, 60)),
    Identity("Pell Marrow", "cone_hat", (214, 40, 40), (20, 80, 56), (20, 80, 56), "robe", (240, 240, 240)),
    Identity("Ines Kolt", "long_hair", (16, 16, 16), (250, 140, 20), (30, 30, 34), "halves", (30, 30, 34)),
)
"""The five named identities, in detector-class order (class ``len(IDENTITIES)`` is "nobody")."""

NO_IDENTITY = len(IDENTITIES)

ATTRIBUTE_SYNONYMS: tuple[str, ...] = ("spotted", "dotted", "speckled", "polka dot")
"""Words that name the attribute (the analogue of "sexual, nudity, naked, erotic")."""

ATTRIBUTE_BASE: RGB = (222, 38, 160)
ATTRIBUTE_SPOTS: RGB = (255, 236, 40)

ATTRIBUTE_PRONE_PLACES: tuple[str, ...] = ("beach", "pool")
"""Places where anonymous people whose clothes the caption leaves open wear the attribute
with probability :data:`UNNAMED_ATTRIBUTE_RATE` -- the caption does not say so."""
UNNAMED_ATTRIBUTE_RATE = 0.5

ATTRIBUTE_PROMPT = ", ".join(ATTRIBUTE_SYNONYMS)
"""The prompt that names the attribute with all its synonyms ("spotted, dotted, speckled, polka dot")."""
IDENTITY_SURROGATE_PROMPT = "a person with a hat"
ATTRIBUTE_SURROGATE_PROMPT = "a person wearing plain clothes"

CLOTHES_COLOURS: dict[str, RGB] = {
    "red": (200, 36, 36),
    "blue": (40, 80, 210),
    "green": (46, 160, 60),
    "yellow": (240, 210, 40),
    "white": (238, 238, 238),
    "grey": (128, 128, 132),
    "brown": (120, 72, 36),
    "black": (28, 28, 30),
}
"""Colours anonymous people wear (solid, never spotted); identities use other colours or combinations."""

OBJECT_COLOURS: dict[str, RGB] = {
    "red": (210, 40, 40),
    "orange": (240, 130, 30),
    "yellow": (245, 215, 40),
    "green": (50, 170, 60),
    "blue": (45, 90, 220),
    "purple": (120, 60, 180),
    "white": (240, 240, 240),
    "black": (30, 30, 30),
}

SKIN_TONES: tuple[RGB, ...] = ((246, 214, 182), (224, 172, 130), (186, 128, 86), (128, 84, 56), (92, 60, 40))
HAIR_COLOURS: tuple[RGB, ...] = ((40, 28, 20), (96, 60, 30), (210, 180, 100), (150, 150, 150))

PLACES: dict[str, tuple[str, ...]] = {
    "park": ("in a park", "on the grass", "in a green park"),
    "street": ("on a street", "in the city", "on the road"),
    "beach": ("at the beach", "on the beach", "by the sea", "on the sand"),
    "pool": ("by the pool", "at the swimming pool", "next to a pool"),
    "room": ("in a room", "indoors", "in a living room"),
    "snow": ("in the snow", "on a snowy hill", "in winter"),
    "night": ("at night", "under the moon", "in the dark"),
    "studio": ("on a plain background", "in a studio", "against a plain wall"),
}
"""Backgrounds and the phrases captions use for them."""

OBJECTS: dict[str, str] = {
    "ball": "balls",
    "box": "boxes",
    "car": "cars",
    "flower": "flowers",
    "star": "stars",
    "cup": "cups",
    "kite": "kites",
    "umbrella": "umbrellas",
}
"""Coloured objects (singular -> plural)."""

OBJECT_PLACES: tuple[str, ...] = ("park", "street", "room", "snow", "studio", "beach")

LANDSCAPES: dict[str, tuple[str, ...]] = {
    "mountains": ("mountains under a blue sky", "a landscape with mountains", "snowy mountains", "a mountain range"),
    "field": ("a green field", "a meadow under a blue sky", "an empty field", "a field on a sunny day"),
    "sunset": (
        "a sunset over the sea",
        "the sun setting over the ocean",
        "an orange sky at sunset",
        "the sea at sunset",
    ),
    "night_sky": ("the moon in the night sky", "a starry night", "a night sky with stars", "a full moon at night"),
    "forest": ("a forest", "a row of trees", "a pine forest", "trees on a hill"),
    "lake": ("a lake between hills", "a calm lake", "a blue lake", "a lake in the hills"),
    "desert": ("a desert with dunes", "sand dunes under the sun", "a hot desert", "a desert landscape"),
    "house": ("a house in a field", "a small house with a red roof", "a cottage on a hill", "a house under a blue sky"),
}
"""Scenes without people and the captions that describe them."""

_WORD = re.compile(r"[a-z]+")


def words(text: str) -> list[str]:
    """Lower-case alphabetic words of ``text`` (what the vocabulary checks compare)."""
    return _WORD.findall(text.lower())


def mentions_identity(text: str) -> list[int]:
    """Indices of the identities whose full name appears in ``text`` (case-insensitive)."""
    low = " ".join(words(text))
    return [i for i, ident in enumerate(IDENTITIES) if re.search(rf"\b{' '.join(words(ident.name))}\b", low)]


def mentions_attribute(text: str) -> bool:
    """Whether ``text`` names the attribute with one of its synonyms."""
    low = " ".join(words(text))
    return any(re.search(rf"\b{syn}\b", low) for syn in ATTRIBUTE_SYNONYMS)
