"""Drawing the tiny world: a supersampled NumPy canvas and the figures, objects and places on it.

Everything is drawn in unit coordinates (``x`` right, ``y`` down, both in ``[0, 1]``) on a
canvas ``supersample`` times finer than the output, then averaged down, so edges are
anti-aliased and a scene looks the same at 32x32 and 64x64. Part III's world chapter shows
the pictures; :mod:`.scenes` decides what to draw and what the caption says.
"""

from __future__ import annotations

import numpy as np

from tinyworld.concepts import ATTRIBUTE_BASE, ATTRIBUTE_SPOTS, RGB, Identity

Colour = tuple[float, float, float] | RGB


class Canvas:
    """An RGB float image in ``[0, 255]`` with filled shapes in unit coordinates."""

    def __init__(self, resolution: int, supersample: int = 4, background: Colour = (0, 0, 0)):
        if resolution < 8:
            raise ValueError(f"resolution must be at least 8 pixels, got {resolution}")
        if supersample < 1:
            raise ValueError(f"supersample must be >= 1, got {supersample}")
        self.resolution, self.supersample = resolution, supersample
        self.n = n = resolution * supersample
        self.pixels = np.empty((n, n, 3), dtype=np.float32)
        self.pixels[:] = background
        self.centres = (np.arange(n, dtype=np.float32) + 0.5) / n

    # -- index helpers -------------------------------------------------------------------
    def _span(self, lo: float, hi: float) -> slice:
        return slice(max(int(np.floor(lo * self.n)), 0), min(int(np.ceil(hi * self.n)), self.n))

    def _region(self, x0: float, y0: float, x1: float, y1: float):
        ys, xs = self._span(y0, y1), self._span(x0, x1)
        return ys, xs, self.centres[ys][:, None], self.centres[xs][None, :]

    # -- shapes --------------------------------------------------------------------------
    def rect(self, x0: float, y0: float, x1: float, y1: float, colour: Colour) -> None:
        ys, xs, yc, xc = self._region(x0, y0, x1, y1)
        mask = (yc >= y0) & (yc < y1) & (xc >= x0) & (xc < x1)
        self._write(ys, xs, mask, colour)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, colour: Colour, y_max: float | None = None) -> None:
        """A filled ellipse; ``y_max`` cuts it off below that height (e.g. a half disk)."""
        ys, xs, yc, xc = self._region(cx - rx, cy - ry, cx + rx, cy + ry)
        mask = ((xc - cx) / rx) ** 2 + ((yc - cy) / ry) ** 2 <= 1.0
        if y_max is not None:
            mask &= yc <= y_max
        self._write(ys, xs, mask, colour)

    def polygon(self, points: list[tuple[float, float]], colour: Colour) -> None:
        """A filled convex polygon (points in either winding order)."""
        px = np.array([p[0] for p in points], dtype=np.float32)
        py = np.array([p[1] for p in points], dtype=np.float32)
        ys, xs, yc, xc = self._region(px.min(), py.min(), px.max(), py.max())
        sign = np.sign((px[1] - px[0]) * (py[2] - py[0]) - (py[1] - py[0]) * (px[2] - px[0])) or 1.0
        mask = np.ones((yc.shape[0], xc.shape[1]), dtype=bool)
        for i in range(len(points)):
            ax, ay, bx, by = px[i], py[i], px[(i + 1) % len(points)], py[(i + 1) % len(points)]
            mask &= sign * ((bx - ax) * (yc - ay) - (by - ay) * (xc - ax)) >= 0
        self._write(ys, xs, mask, colour)

    def vertical_gradient(self, y0: float, y1: float, top: Colour, bottom: Colour) -> None:
        ys = self._span(y0, y1)
        t = ((self.centres[ys] - y0) / max(y1 - y0, 1e-6)).clip(0, 1)[:, None, None]
        self.pixels[ys] = (1 - t) * np.asarray(top, np.float32) + t * np.asarray(bottom, np.float32)

    def _write(self, ys: slice, xs: slice, mask: np.ndarray, colour: Colour) -> None:
        self.pixels[ys, xs][mask] = colour  # two slices give a view, so this writes through

    def image(self) -> np.ndarray:
        """The picture at the output resolution, ``uint8`` of shape ``[H, W, 3]``."""
        r, s = self.resolution, self.supersample
        small = self.pixels.reshape(r, s, r, s, 3).mean(axis=(1, 3))
        return np.clip(np.rint(small), 0, 255).astype(np.uint8)


# -- places ------------------------------------------------------------------------------


def draw_place(cv: Canvas, place: str, horizon: float, rng: np.random.Generator, jitter) -> None:
    """Paint the background of ``place`` (a key of :data:`.concepts.PLACES`)."""
    j = jitter
    if place == "park":
        cv.vertical_gradient(0, horizon, j((110, 170, 235)), j((170, 210, 240)))
        cv.rect(0, horizon, 1, 1, j((70, 150, 60)))
    elif place == "street":
        cv.vertical_gradient(0, horizon, j((175, 185, 200)), j((205, 210, 215)))
        cv.rect(0, horizon, 1, 1, j((78, 78, 84)))
        cv.rect(0, horizon, 1, horizon + 0.05, j((160, 160, 160)))
        y = horizon + 0.5 * (1 - horizon)
        for x in np.arange(rng.uniform(-0.1, 0.1), 1, 0.25):
            cv.rect(x, y, x + 0.12, y + 0.025, (235, 235, 235))
    elif place == "beach":
        cv.vertical_gradient(0, horizon - 0.12, j((120, 190, 245)), j((180, 220, 250)))
        cv.rect(0, horizon - 0.12, 1, horizon, j((30, 110, 190)))
        cv.rect(0, horizon, 1, 1, j((232, 206, 140)))
    elif place == "pool":
        cv.rect(0, 0, 1, horizon, j((222, 232, 234)))
        for x in np.arange(0, 1, 0.125):
            cv.rect(x, 0, x + 0.012, horizon, (190, 205, 210))
        cv.rect(0, horizon, 1, 1, j((56, 168, 222)))
        for y in np.arange(horizon + 0.06, 1, 0.09):
            cv.rect(rng.uniform(0, 0.5), y, rng.uniform(0.5, 1), y + 0.015, (120, 200, 240))
    elif place == "room":
        cv.rect(0, 0, 1, horizon, j((226, 206, 168)))
        wx = rng.uniform(0.05, 0.65)
        cv.rect(wx, 0.12, wx + 0.28, 0.38, (150, 200, 240))
        cv.rect(0, horizon, 1, 1, j((146, 98, 58)))
    elif place == "snow":
        cv.vertical_gradient(0, horizon, j((185, 200, 220)), j((215, 225, 235)))
        cv.ellipse(rng.uniform(0.2, 0.8), horizon + 0.05, 0.6, 0.12, j((248, 248, 252)))
        cv.rect(0, horizon, 1, 1, j((240, 242, 248)))
    elif place == "night":
        cv.vertical_gradient(0, horizon, j((12, 16, 48)), j((34, 40, 90)))
        cv.ellipse(rng.choice([0.15, 0.85]), 0.15, 0.08, 0.08, (240, 238, 200))
        cv.rect(0, horizon, 1, 1, j((28, 48, 34)))
    elif place == "studio":
        shade = [(200, 200, 204), (226, 214, 190), (190, 210, 228), (196, 222, 196)][rng.integers(4)]
        cv.rect(0, 0, 1, 1, j(shade))
    else:
        raise ValueError(f"unknown place {place!r}")


# -- people ------------------------------------------------------------------------------


def _torso_and_legs(cv: Canvas, cx: float, base: float, s: float, top: Colour, bottom: Colour) -> None:
    cv.rect(cx - 0.085 * s, base - 0.27 * s, cx - 0.012 * s, base, bottom)
    cv.rect(cx + 0.012 * s, base - 0.27 * s, cx + 0.085 * s, base, bottom)
    cv.rect(cx - 0.125 * s, base - 0.53 * s, cx + 0.125 * s, base - 0.25 * s, top)
    cv.rect(cx - 0.175 * s, base - 0.52 * s, cx - 0.125 * s, base - 0.32 * s, top)
    cv.rect(cx + 0.125 * s, base - 0.52 * s, cx + 0.175 * s, base - 0.32 * s, top)


def _head(cv: Canvas, cx: float, base: float, s: float, skin: Colour, radius: float = 0.085) -> float:
    hy = base - 0.62 * s
    cv.rect(cx - 0.03 * s, hy + 0.05 * s, cx + 0.03 * s, base - 0.52 * s, skin)
    cv.ellipse(cx, hy, radius * s, radius * s, skin)
    return hy


def draw_person(
    cv: Canvas,
    cx: float,
    base: float,
    s: float,
    skin: Colour,
    top: Colour,
    bottom: Colour,
    hair: Colour | None,
    hat: Colour | None,
    attribute: bool = False,
) -> None:
    """An anonymous person: solid clothes, short hair, optionally a plain brimmed hat.

    ``attribute=True`` replaces the clothes by the attribute (magenta with yellow spots).
    """
    if attribute:
        top = bottom = ATTRIBUTE_BASE
    _torso_and_legs(cv, cx, base, s, top, bottom)
    if attribute:
        r = 0.036 * s
        for dx, dy in (
            (-0.065, 0.47),
            (0.065, 0.47),
            (0.0, 0.39),
            (-0.065, 0.31),
            (0.065, 0.31),
            (-0.048, 0.16),
            (0.048, 0.07),
        ):
            cv.ellipse(cx + dx * s, base - dy * s, r, r, ATTRIBUTE_SPOTS)
    hy = base - 0.62 * s
    if hair is not None and hat is None:
        cv.ellipse(cx, hy - 0.02 * s, 0.092 * s, 0.085 * s, hair)
        cv.rect(cx - 0.03 * s, hy + 0.05 * s, cx + 0.03 * s, base - 0.52 * s, skin)
        cv.ellipse(cx, hy + 0.012 * s, 0.078 * s, 0.075 * s, skin)
    else:
        _head(cv, cx, base, s, skin)
    if hat is not None:
        cv.rect(cx - 0.13 * s, hy - 0.075 * s, cx + 0.13 * s, hy - 0.045 * s, hat)
        cv.rect(cx - 0.08 * s, hy - 0.15 * s, cx + 0.08 * s, hy - 0.07 * s, hat)


def draw_identity(cv: Canvas, ident: Identity, cx: float, base: float, s: float, skin: Colour) -> None:
    """A named identity in its own look (see :data:`.concepts.IDENTITIES`)."""
    hy = base - 0.62 * s
    if ident.headwear == "bushy_hair":
        cv.ellipse(cx, hy - 0.015 * s, 0.155 * s, 0.13 * s, ident.headwear_colour)
    elif ident.headwear == "long_hair":
        cv.rect(cx - 0.11 * s, hy - 0.02 * s, cx + 0.11 * s, hy + 0.16 * s, ident.headwear_colour)
        cv.ellipse(cx, hy - 0.02 * s, 0.11 * s, 0.1 * s, ident.headwear_colour)
    if ident.outfit == "robe":
        cv.polygon(
            [
                (cx - 0.125 * s, base - 0.53 * s),
                (cx + 0.125 * s, base - 0.53 * s),
                (cx + 0.17 * s, base),
                (cx - 0.17 * s, base),
            ],
            ident.top,
        )
        cv.rect(cx - 0.175 * s, base - 0.52 * s, cx - 0.12 * s, base - 0.32 * s, ident.top)
        cv.rect(cx + 0.12 * s, base - 0.52 * s, cx + 0.175 * s, base - 0.32 * s, ident.top)
        if ident.headwear == "crown":  # a gold belt
            cv.rect(cx - 0.14 * s, base - 0.33 * s, cx + 0.14 * s, base - 0.28 * s, ident.accent)
        else:  # a pale hem
            cv.rect(cx - 0.17 * s, base - 0.06 * s, cx + 0.17 * s, base, ident.accent)
    else:
        _torso_and_legs(cv, cx, base, s, ident.top, ident.bottom)
        if ident.outfit == "band":
            cv.rect(cx - 0.175 * s, base - 0.45 * s, cx + 0.175 * s, base - 0.37 * s, ident.accent)
        elif ident.outfit == "tie":
            cv.rect(cx - 0.03 * s, base - 0.53 * s, cx + 0.03 * s, base - 0.3 * s, ident.accent)
        elif ident.outfit == "halves":
            cv.rect(cx, base - 0.53 * s, cx + 0.125 * s, base - 0.25 * s, ident.accent)
            cv.rect(cx + 0.125 * s, base - 0.52 * s, cx + 0.175 * s, base - 0.32 * s, ident.accent)
    _head(cv, cx, base, s, skin, radius=0.08 if ident.headwear in ("bushy_hair", "long_hair") else 0.085)
    c = ident.headwear_colour
    if ident.headwear == "crown":
        cv.rect(cx - 0.09 * s, hy - 0.12 * s, cx + 0.09 * s, hy - 0.06 * s, c)
        for dx in (-0.09, -0.0225, 0.045):
            cv.polygon(
                [
                    (cx + dx * s, hy - 0.115 * s),
                    (cx + (dx + 0.045) * s, hy - 0.115 * s),
                    (cx + (dx + 0.0225) * s, hy - 0.2 * s),
                ],
                c,
            )
    elif ident.headwear == "top_hat":
        cv.rect(cx - 0.13 * s, hy - 0.085 * s, cx + 0.13 * s, hy - 0.055 * s, c)
        cv.rect(cx - 0.075 * s, hy - 0.27 * s, cx + 0.075 * s, hy - 0.07 * s, c)
        cv.rect(cx - 0.075 * s, hy - 0.12 * s, cx + 0.075 * s, hy - 0.085 * s, ident.accent)
    elif ident.headwear == "cone_hat":
        cv.polygon([(cx - 0.12 * s, hy - 0.05 * s), (cx + 0.12 * s, hy - 0.05 * s), (cx, hy - 0.3 * s)], c)


# -- objects -----------------------------------------------------------------------------


def draw_object(cv: Canvas, kind: str, cx: float, ground: float, z: float, colour: Colour) -> None:
    """A coloured object of size ``z`` standing on (or hovering above) height ``ground``."""
    dark = tuple(0.65 * np.asarray(colour, np.float32))
    if kind == "ball":
        cv.ellipse(cx, ground - z / 2, z / 2, z / 2, colour)
        cv.ellipse(cx - z * 0.15, ground - z * 0.68, z * 0.1, z * 0.1, (250, 250, 250))
    elif kind == "box":
        cv.rect(cx - z / 2, ground - z, cx + z / 2, ground, colour)
        cv.polygon(
            [
                (cx - z / 2, ground - z),
                (cx + z / 2, ground - z),
                (cx + z * 0.65, ground - z * 1.2),
                (cx - z * 0.35, ground - z * 1.2),
            ],
            dark,
        )
    elif kind == "car":
        cv.rect(cx - z * 0.8, ground - z * 0.55, cx + z * 0.8, ground - z * 0.15, colour)
        cv.rect(cx - z * 0.45, ground - z * 0.9, cx + z * 0.35, ground - z * 0.5, colour)
        cv.rect(cx - z * 0.35, ground - z * 0.82, cx + z * 0.25, ground - z * 0.58, (190, 220, 240))
        for wx in (-0.48, 0.48):
            cv.ellipse(cx + wx * z, ground - z * 0.15, z * 0.17, z * 0.17, (25, 25, 25))
    elif kind == "flower":
        cv.rect(cx - z * 0.04, ground - z * 0.7, cx + z * 0.04, ground, (40, 130, 40))
        cy = ground - z * 0.8
        for a in np.linspace(0, 2 * np.pi, 6)[:-1]:
            cv.ellipse(cx + np.cos(a) * z * 0.18, cy + np.sin(a) * z * 0.18, z * 0.14, z * 0.14, colour)
        yellowish = colour[0] > 200 and colour[1] > 180 and colour[2] < 120
        cv.ellipse(cx, cy, z * 0.1, z * 0.1, (120, 70, 30) if yellowish else (250, 220, 60))
    elif kind == "star":
        cy, r_out, r_in = ground - z * 0.55, z * 0.55, z * 0.22
        angles = -np.pi / 2 + np.arange(5) * 2 * np.pi / 5
        inner = [(cx + r_in * np.cos(a + np.pi / 5), cy + r_in * np.sin(a + np.pi / 5)) for a in angles]
        cv.polygon(inner, colour)
        for k, a in enumerate(angles):
            tip = (cx + r_out * np.cos(a), cy + r_out * np.sin(a))
            cv.polygon([inner[k - 1], tip, inner[k]], colour)
    elif kind == "cup":
        cv.polygon(
            [
                (cx - z * 0.35, ground - z * 0.8),
                (cx + z * 0.35, ground - z * 0.8),
                (cx + z * 0.27, ground),
                (cx - z * 0.27, ground),
            ],
            colour,
        )
        cv.rect(cx + z * 0.3, ground - z * 0.65, cx + z * 0.5, ground - z * 0.55, colour)
        cv.rect(cx + z * 0.42, ground - z * 0.65, cx + z * 0.5, ground - z * 0.25, colour)
        cv.rect(cx + z * 0.28, ground - z * 0.33, cx + z * 0.5, ground - z * 0.25, colour)
    elif kind == "kite":
        cy = ground - z * 1.3
        cv.polygon([(cx, cy - z * 0.45), (cx + z * 0.3, cy), (cx, cy + z * 0.45), (cx - z * 0.3, cy)], colour)
        for k in range(4):
            cv.rect(
                cx - z * 0.02 + k * z * 0.05,
                cy + z * (0.45 + 0.12 * k),
                cx + z * 0.03 + k * z * 0.05,
                cy + z * (0.57 + 0.12 * k),
                dark,
            )
    elif kind == "umbrella":
        cy = ground - z * 0.75
        cv.ellipse(cx, cy, z * 0.55, z * 0.38, colour, y_max=cy)
        cv.rect(cx - z * 0.03, cy, cx + z * 0.03, ground, (40, 40, 40))
        cv.rect(cx - z * 0.03, ground - z * 0.06, cx + z * 0.14, ground, (40, 40, 40))
    else:
        raise ValueError(f"unknown object {kind!r}")


# -- landscapes ---------------------------------------------------------------------------


def _tree(cv: Canvas, x: float, ground: float, h: float, green: Colour) -> None:
    cv.rect(x - h * 0.07, ground - h * 0.3, x + h * 0.07, ground, (100, 64, 34))
    cv.polygon([(x - h * 0.3, ground - h * 0.25), (x + h * 0.3, ground - h * 0.25), (x, ground - h)], green)


def draw_landscape(cv: Canvas, kind: str, rng: np.random.Generator, jitter) -> None:
    """A scene without people (a key of :data:`.concepts.LANDSCAPES`)."""
    j, u = jitter, rng.uniform
    h = u(0.55, 0.7)
    if kind == "mountains":
        cv.vertical_gradient(0, h, j((100, 160, 230)), j((180, 210, 240)))
        cv.rect(0, h, 1, 1, j((80, 140, 70)))
        for _ in range(3):
            x, w, top = u(0.1, 0.9), u(0.25, 0.4), u(0.15, 0.35)
            grey = j((110, 110, 120))
            cv.polygon([(x - w, h), (x + w, h), (x, top)], grey)
            f = 0.3
            cv.polygon([(x - w * f, top + (h - top) * f), (x + w * f, top + (h - top) * f), (x, top)], (245, 245, 250))
    elif kind == "field":
        cv.vertical_gradient(0, h, j((100, 170, 240)), j((190, 220, 245)))
        cv.ellipse(u(0.15, 0.85), u(0.12, 0.25), 0.07, 0.07, (250, 230, 90))
        cv.rect(0, h, 1, 1, j((90, 170, 60)))
    elif kind == "sunset":
        cv.vertical_gradient(0, h, j((240, 120, 60)), j((250, 200, 110)))
        cv.ellipse(u(0.3, 0.7), h, 0.12, 0.12, (255, 230, 120), y_max=h)
        cv.rect(0, h, 1, 1, j((30, 50, 110)))
    elif kind == "night_sky":
        cv.vertical_gradient(0, h, j((8, 10, 36)), j((30, 36, 84)))
        for _ in range(12):
            x, y = u(0, 1), u(0, h - 0.05)
            cv.rect(x, y, x + 0.02, y + 0.02, (250, 250, 230))
        cv.ellipse(u(0.2, 0.8), u(0.15, 0.3), 0.09, 0.09, (240, 238, 200))
        cv.rect(0, h, 1, 1, j((20, 36, 26)))
    elif kind == "forest":
        cv.vertical_gradient(0, h, j((120, 180, 235)), j((190, 220, 240)))
        cv.rect(0, h, 1, 1, j((60, 120, 50)))
        for x in sorted(u(0, 1, size=6)):
            _tree(cv, x, u(h + 0.05, 0.98), u(0.3, 0.5), j((30, 100, 40)))
    elif kind == "lake":
        cv.vertical_gradient(0, h, j((110, 175, 235)), j((185, 215, 240)))
        for _ in range(2):
            cv.ellipse(u(0, 1), h, u(0.3, 0.5), u(0.12, 0.2), j((70, 140, 70)))
        cv.rect(0, h, 1, 1, j((80, 150, 70)))
        cv.ellipse(u(0.35, 0.65), u(h + 0.12, 0.85), u(0.3, 0.42), u(0.08, 0.13), j((40, 100, 200)))
    elif kind == "desert":
        cv.vertical_gradient(0, h, j((150, 200, 240)), j((235, 225, 200)))
        cv.ellipse(u(0.15, 0.85), u(0.1, 0.2), 0.08, 0.08, (255, 240, 150))
        cv.rect(0, h, 1, 1, j((225, 180, 110)))
        for _ in range(3):
            cv.ellipse(u(0, 1), u(h + 0.05, 0.95), u(0.25, 0.45), u(0.06, 0.1), j((205, 155, 90)))
    elif kind == "house":
        cv.vertical_gradient(0, h, j((100, 170, 240)), j((190, 220, 245)))
        cv.rect(0, h, 1, 1, j((80, 160, 60)))
        x, w = u(0.3, 0.7), u(0.18, 0.25)
        g = h + 0.15
        cv.rect(x - w, g - 1.4 * w, x + w, g, j((235, 225, 200)))
        cv.polygon([(x - w * 1.2, g - 1.4 * w), (x + w * 1.2, g - 1.4 * w), (x, g - 2.4 * w)], j((190, 40, 40)))
        cv.rect(x - w * 0.2, g - 0.7 * w, x + w * 0.2, g, (110, 70, 40))
    else:
        raise ValueError(f"unknown landscape {kind!r}")
