"""Generic everyday captions for the replay set and the Fisher (full mode, real Stable Diffusion).

The authors replay, and compute the Fisher on, one image for each of 5,000 generic prompts
(``sd/fim_prompts.txt`` in github clear-nus/selective-amnesia). That file is theirs and is not
copied here; :func:`generic_prompts` composes prompts of the same kind from parts written for
this project: a *subject* (people without names, animals, objects, landscapes, interiors,
vehicles, food, buildings), what it does or where it is, and a *style* ("a photo of",
"a watercolor painting of", ...). Parts are combined only within a category, with actions and
places that go together (a horse grazes in a meadow, a sailboat is on a lake), so the captions
stay plausible. The vocabulary names no person, brand or artist and contains no word of
undress; ``exclude_words`` removes any prompt containing a given word anyway (a celebrity's
name, "naked", ...).

The result is deterministic in ``seed``: every category's combinations are shuffled by a
generator seeded with ``(seed, category)``, and the categories take turns in a seeded,
weighted order, so ``generic_prompts(n)`` is the first ``n`` of ``generic_prompts(m)`` for
``n < m`` (same seed and exclusions). Duplicates are removed. Far more than 5,000 distinct
prompts exist (:func:`available`).

The tiny world of quick mode cannot use these: its text encoder knows only the words of its
own captions, so quick mode keeps the tiny world's 244 replay prompts
(:func:`tinyworld.prompts.replay_prompts`).
"""

from __future__ import annotations

import itertools
import math
import random
import re
from collections.abc import Iterator, Sequence

# -- styles ----------------------------------------------------------------------------------------
PHOTO = (
    "",
    "a photo of ",
    "a photograph of ",
    "a candid photo of ",
    "a black and white photo of ",
    "an oil painting of ",
    "a watercolor painting of ",
    "a pencil sketch of ",
    "a digital illustration of ",
    "a film still of ",
)
SCENERY = (
    "",
    "a photo of ",
    "a landscape painting of ",
    "a watercolor painting of ",
    "an aerial photo of ",
    "a wide angle photo of ",
    "a postcard of ",
    "an oil painting of ",
    "a travel photo of ",
)
STILL = (
    "",
    "a photo of ",
    "a close-up photo of ",
    "a product photo of ",
    "a still life painting of ",
    "a watercolor painting of ",
    "a 3d render of ",
    "a pencil drawing of ",
)
FOOD_STYLE = (
    "",
    "a photo of ",
    "a food photo of ",
    "a close-up photo of ",
    "an overhead photo of ",
    "a watercolor painting of ",
    "a still life painting of ",
)
ROOM_STYLE = (
    "",
    "a photo of ",
    "an interior design photo of ",
    "a wide angle photo of ",
    "a painting of ",
    "an illustration of ",
)

# -- people (no names) -------------------------------------------------------------------------------
PEOPLE = (
    "a young woman",
    "an old man",
    "a little girl",
    "a little boy",
    "a teenager",
    "a middle aged woman",
    "an elderly woman",
    "a young man",
    "a couple",
    "a group of friends",
    "a family",
    "two children",
    "a chef",
    "a nurse",
    "a firefighter",
    "a farmer",
    "a fisherman",
    "a street musician",
    "a painter",
    "a gardener",
    "a baker",
    "a student",
    "a man in a suit",
    "a woman in a red coat",
    "a man with a beard",
    "a girl with curly hair",
    "a boy in a yellow raincoat",
    "a tourist with a backpack",
    "a grandmother",
    "a teacher",
    "a woman with glasses",
    "a man in a knitted sweater",
)
OUTDOOR_TIMES = ("", " on a sunny day", " at dusk", " in the morning", " in winter", " in autumn")
INDOOR_TIMES = ("", " in the evening", " in soft window light")
PEOPLE_SCENES = (  # (what they do, where, when): groups of activities and the places they fit
    (
        (
            "walking a dog",
            "riding a bicycle",
            "waiting for a bus",
            "carrying an umbrella",
            "carrying shopping bags",
            "taking a photo",
            "holding a map",
            "eating an ice cream",
            "talking on the phone",
            "crossing the street",
        ),
        (
            "on a busy city street",
            "on a rainy sidewalk",
            "in a quiet village",
            "on a bridge",
            "in front of an old church",
            "in a town square",
        ),
        OUTDOOR_TIMES,
    ),
    (
        ("walking a dog", "taking a photo", "jogging", "hiking", "riding a bicycle"),
        ("in a park", "next to a river", "on a mountain trail", "in a forest", "along a lake", "on a country path"),
        OUTDOOR_TIMES,
    ),
    (
        ("flying a kite", "having a picnic", "sitting on the grass", "reading a book"),
        ("in a park", "in a meadow", "on a hill", "in a garden"),
        ("", " on a sunny day", " in the morning", " in spring"),
    ),
    (
        ("waiting for a train", "reading a newspaper", "carrying a suitcase", "looking at a timetable"),
        ("at a train station", "on a platform", "at an airport"),
        ("", " in the morning", " at night"),
    ),
    (
        ("buying flowers", "buying vegetables", "selling fruit", "looking at old books"),
        ("at a farmers market", "at a street market", "at a flea market"),
        ("", " on a sunny day", " in the morning"),
    ),
    (
        ("cooking dinner", "baking bread", "making coffee", "washing vegetables", "drinking a cup of tea"),
        ("in a kitchen", "in a small kitchen", "at home"),
        INDOOR_TIMES,
    ),
    (
        (
            "reading a book",
            "drinking coffee",
            "working on a laptop",
            "writing in a notebook",
            "talking on the phone",
            "listening to music",
            "looking out of a window",
            "drinking a cup of tea",
        ),
        ("in a cozy living room", "in a cafe", "at home", "on a train"),
        INDOOR_TIMES,
    ),
    (
        (
            "playing the piano",
            "playing chess",
            "painting a picture",
            "playing the guitar",
            "knitting a scarf",
            "watering plants",
        ),
        ("in a living room", "in a sunlit studio", "at home", "by a window"),
        INDOOR_TIMES,
    ),
    (
        ("working on a laptop", "reading a book", "writing in a notebook", "studying"),
        ("in an office", "in a library", "in a classroom", "at a desk"),
        INDOOR_TIMES,
    ),
)

# -- animals: each group with actions and places that suit it -------------------------------------------
ANIMALS = (
    (
        (
            "a golden retriever",
            "a tabby cat",
            "a black cat",
            "a border collie",
            "a puppy",
            "a kitten",
            "a rabbit",
            "a corgi",
            "a white cat",
        ),
        ("sleeping", "sitting", "playing with a ball", "lying", "looking at the camera", "resting"),
        (
            "on a sofa",
            "in a garden",
            "on a windowsill",
            "in the grass",
            "on a wooden floor",
            "in the snow",
            "on a porch",
            "next to a fireplace",
        ),
    ),
    (
        ("a horse", "a brown cow", "a flock of sheep", "a goat", "a donkey", "a group of chickens", "a pony"),
        ("grazing", "standing", "resting", "walking"),
        (
            "in a green meadow",
            "on a farm",
            "near a red barn",
            "on a hillside",
            "behind a wooden fence",
            "in the morning mist",
            "in a field of clover",
        ),
    ),
    (
        ("a red fox", "a brown bear", "a deer", "an owl", "a squirrel", "a hedgehog", "a wolf", "a moose"),
        ("standing", "resting", "looking at the camera", "searching for food"),
        (
            "in a forest",
            "in the snow",
            "among autumn leaves",
            "by a stream",
            "in a clearing",
            "at dawn",
            "in a pine forest",
        ),
    ),
    (
        ("an elephant", "a giraffe", "a zebra", "a lion", "a herd of antelopes", "a rhinoceros"),
        ("walking", "standing", "resting", "drinking water"),
        ("on the savanna", "at a watering hole", "under an acacia tree", "in tall grass", "at sunset"),
    ),
    (
        ("a duck", "a white swan", "a heron", "a family of ducks", "a pelican", "a flamingo"),
        ("swimming", "standing", "resting"),
        ("on a calm lake", "on a pond", "by the river", "in the reeds", "near the shore"),
    ),
)
ANIMAL_STYLE = (
    "",
    "a photo of ",
    "a wildlife photo of ",
    "a close-up photo of ",
    "a watercolor painting of ",
    "an oil painting of ",
    "a pencil sketch of ",
    "a children's book illustration of ",
)

# -- objects -----------------------------------------------------------------------------------------
OBJECTS = (
    "a vintage camera",
    "a cup of coffee",
    "a stack of books",
    "a red apple",
    "an old typewriter",
    "a potted plant",
    "a wooden chair",
    "a glass vase with flowers",
    "a pair of sneakers",
    "a leather bag",
    "an alarm clock",
    "a teapot",
    "an acoustic guitar",
    "a candle",
    "a basket of oranges",
    "a wristwatch",
    "a globe",
    "a ceramic bowl",
    "a desk lamp",
    "a pair of glasses",
    "a folded umbrella",
    "a violin",
    "a toy robot",
    "a bunch of keys",
    "a wooden chess board",
    "a pair of headphones",
)
OBJECT_PLACES = (
    "on a wooden table",
    "on a kitchen counter",
    "on a windowsill",
    "on a bookshelf",
    "on a white background",
    "on a desk",
    "on a marble surface",
    "next to a window",
)
OBJECT_LIGHT = ("", " in soft light", " in morning sunlight", " with a blurred background")

# -- landscapes and places ---------------------------------------------------------------------------
LANDSCAPES = (
    "a mountain lake",
    "a snowy mountain range",
    "a green valley",
    "a desert with sand dunes",
    "a waterfall in a forest",
    "a rocky coastline",
    "a wheat field",
    "a lavender field",
    "a quiet beach",
    "a pine forest",
    "rolling hills",
    "a river winding through a canyon",
    "a tropical island",
    "a frozen lake",
    "a volcano",
    "a meadow with wildflowers",
    "a misty forest",
    "rice terraces",
    "a glacier",
    "an autumn forest",
    "a lighthouse on a cliff",
    "a country road",
    "a bamboo forest",
    "a canyon",
)
BUILDINGS = (
    "a busy street market",
    "an old stone bridge",
    "a city skyline",
    "a narrow alley",
    "a small town square",
    "a wooden cabin",
    "a red brick house",
    "a castle on a hill",
    "a windmill",
    "a harbor with fishing boats",
    "a city park with a fountain",
    "a row of colorful houses",
    "a church with a bell tower",
    "a modern glass building",
    "a farmhouse",
    "a suburban street",
    "a mountain village",
    "a train station",
)
TIMES = (
    "at sunrise",
    "at sunset",
    "under a starry sky",
    "on a cloudy day",
    "in the fog",
    "after the rain",
    "in winter",
    "in spring",
    "at noon",
    "under a full moon",
    "in autumn",
)

# -- interiors ---------------------------------------------------------------------------------------
ROOMS = (
    "a cozy living room",
    "a modern kitchen",
    "a small bedroom",
    "a library",
    "a cafe",
    "a classroom",
    "an office",
    "a restaurant",
    "a hotel lobby",
    "a workshop",
    "a greenhouse",
    "a museum gallery",
    "an attic",
    "a bakery",
    "a hallway",
    "a dining room",
    "a bookstore",
    "a music studio",
    "a waiting room",
)
ROOM_DETAILS = (
    "with a fireplace",
    "with large windows",
    "with wooden floors",
    "with many plants",
    "with a green sofa",
    "with shelves full of books",
    "with warm lights",
    "with white walls",
    "with a view of the city",
    "with a long table",
)
ROOM_TIMES = ("", " at night", " in the morning")

# -- vehicles: each group with its places --------------------------------------------------------------
VEHICLES = (
    (
        (
            "a red bicycle",
            "a vintage car",
            "a yellow taxi",
            "a city bus",
            "a motorcycle",
            "a pickup truck",
            "a delivery van",
            "a scooter",
            "a fire truck",
            "a camper van",
            "a blue sports car",
        ),
        (
            "parked on a street",
            "on a country road",
            "on a bridge",
            "in the rain",
            "in front of a house",
            "in a parking lot",
            "on a mountain road",
            "in the snow",
        ),
    ),
    (
        ("a sailboat", "a fishing boat", "a canoe", "a ferry", "a rowing boat", "a small yacht"),
        ("on a calm lake", "in a harbor", "at sea", "on a river", "near a lighthouse"),
    ),
    (
        ("a hot air balloon", "a small airplane", "a helicopter", "a passenger jet"),
        ("above the hills", "in a clear sky", "over the city", "above the clouds", "over the sea"),
    ),
    (
        ("a steam train", "a tram", "a freight train", "a high speed train"),
        ("at a station", "crossing a bridge", "through the mountains", "in the countryside", "in the snow"),
    ),
    (("a tractor", "a combine harvester"), ("in a wheat field", "on a farm", "on a dirt road")),
)
VEHICLE_STYLE = (
    "",
    "a photo of ",
    "a vintage photo of ",
    "a watercolor painting of ",
    "a digital illustration of ",
    "a toy model of ",
    "a pencil sketch of ",
)

# -- food --------------------------------------------------------------------------------------------
FOOD = (
    "a bowl of ramen",
    "a plate of spaghetti",
    "a slice of pizza",
    "a stack of pancakes",
    "a fresh salad",
    "a cheeseburger",
    "a bowl of soup",
    "a chocolate cake",
    "a basket of bread",
    "a plate of sushi",
    "a bowl of fruit",
    "a cup of hot chocolate",
    "a sandwich",
    "a plate of tacos",
    "a bowl of cereal",
    "a croissant",
    "a pot of stew",
    "a tray of cookies",
    "a cup of tea",
    "a glass of orange juice",
    "a roast chicken",
    "a bowl of rice",
    "a strawberry tart",
    "a plate of dumplings",
)
FOOD_PLACES = (
    "on a wooden table",
    "on a picnic blanket",
    "in a restaurant",
    "on a kitchen counter",
    "on a marble table",
    "at a street market",
    "next to a window",
    "on a rustic table",
)


def _spaced(parts: Sequence[str]) -> tuple[str, ...]:
    return tuple(f" {p}" for p in parts)


# every category is a union of products of parts; a prompt is the concatenation of one part of each
SPECS: dict[str, list[tuple[tuple[str, ...], ...]]] = {
    "people": [(PHOTO, PEOPLE, _spaced(a), _spaced(p), t) for a, p, t in PEOPLE_SCENES],
    "animals": [(ANIMAL_STYLE, s, _spaced(a), _spaced(p)) for s, a, p in ANIMALS],
    "objects": [(STILL, OBJECTS, _spaced(OBJECT_PLACES), OBJECT_LIGHT)],
    "landscapes": [(SCENERY, LANDSCAPES, _spaced(TIMES))],
    "food": [(FOOD_STYLE, FOOD, _spaced(FOOD_PLACES))],
    "vehicles": [(VEHICLE_STYLE, s, _spaced(p)) for s, p in VEHICLES],
    "buildings": [(SCENERY, BUILDINGS, _spaced(TIMES))],
    "interiors": [(ROOM_STYLE, ROOMS, _spaced(ROOM_DETAILS), ROOM_TIMES)],
}
SHARES = {
    "people": 0.28,
    "animals": 0.15,
    "objects": 0.12,
    "landscapes": 0.12,
    "food": 0.10,
    "vehicles": 0.08,
    "buildings": 0.08,
    "interiors": 0.07,
}
"""Each category's share of the prompts (the order of turns is drawn with these weights)."""
CATEGORIES = tuple(SPECS)


def _size(spec) -> int:
    return math.prod(len(p) for p in spec)


def _combination(specs, i: int) -> str:
    """Prompt ``i`` of a category (mixed-radix index into the union of its products)."""
    for spec in specs:
        n = _size(spec)
        if i < n:
            out = []
            for part in reversed(spec):
                i, j = divmod(i, len(part))
                out.append(part[j])
            return "".join(reversed(out))
        i -= n
    raise IndexError(i)


def _stream(category: str, seed: int) -> Iterator[str]:
    """Every combination of ``category`` once, in an order seeded by ``(seed, category)``: a full
    random permutation for small categories, seeded draws without repetition for large ones."""
    specs = SPECS[category]
    total = sum(_size(s) for s in specs)
    rng = random.Random(f"sa-generic-prompts:{seed}:{category}")
    if total <= 50_000:
        for i in rng.sample(range(total), total):
            yield _combination(specs, i)
        return
    drawn: set[int] = set()
    while len(drawn) < total:
        i = rng.randrange(total)
        if i not in drawn:
            drawn.add(i)
            yield _combination(specs, i)


def _excluder(exclude_words: Sequence[str]):
    words = [w.strip().lower() for w in exclude_words if w and w.strip()]
    if not words:
        return lambda p: False
    pattern = re.compile(r"\b(?:" + "|".join(re.escape(w) for w in words) + r")\b")
    return lambda p: pattern.search(p.lower()) is not None


def available(exclude_words: Sequence[str] = ()) -> int:
    """How many prompts :func:`generic_prompts` can give at most (an upper bound when two
    combinations spell the same words); with ``exclude_words``, those without any of them."""
    drop = _excluder(exclude_words)
    n = 0
    for specs in SPECS.values():
        for spec in specs:
            if not exclude_words:
                n += _size(spec)
            else:
                n += sum(1 for parts in itertools.product(*spec) if not drop("".join(parts)))
    return n


def generic_prompts(n: int, seed: int = 0, exclude_words: Sequence[str] = ()) -> list[str]:
    """``n`` distinct generic captions, deterministic in ``seed``; none contains a word of
    ``exclude_words`` (whole words or phrases, case-insensitive)."""
    if isinstance(exclude_words, str):
        exclude_words = (exclude_words,)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    drop = _excluder(exclude_words)
    pools = {c: _stream(c, seed) for c in CATEGORIES}
    weights = SHARES
    pick = random.Random(f"sa-generic-prompts:{seed}:order")
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        if not pools:
            raise ValueError(
                f"only {len(out)} distinct generic prompts are left with exclude_words={list(exclude_words)}, "
                f"{n} were asked for"
            )
        names = list(pools)
        c = pick.choices(names, [weights[k] for k in names])[0]
        p = next(pools[c], None)
        if p is None:
            del pools[c]
        elif p not in seen and not drop(p):
            seen.add(p)
            out.append(p)
    return out


def write_prompts(path, prompts: Sequence[str]) -> None:
    """One prompt per line (the format :func:`sa_utils.sd.common.read_prompts` reads)."""
    from pathlib import Path

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("".join(f"{p}\n" for p in prompts), encoding="utf-8")
