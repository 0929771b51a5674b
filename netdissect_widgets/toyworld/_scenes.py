"""Scene recipes: which objects each scene class tends to contain, and where.

A scene is built back to front: sky (day, dusk or night), sun / moon / stars
and clouds, distant mountains, ground bands (grass, sand, water, road, snow),
then objects sorted by their ground contact ``base`` so nearer objects occlude
farther ones. Object sizes grow with ``base`` (a simple perspective). Each
class is a recipe of object probabilities and counts; several objects (trees,
buildings, people, boats, fences) are shared between classes, and the sky
variants are shared too, so a class is recognised by its set of objects rather
than by a global colour.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from . import _shapes as S
from ._canvas import Canvas
from .concepts import CLASSES

SKY_VARIANTS = ("day", "dusk", "night")
_TINT = {"day": (1.0, 1.0, 1.0), "dusk": (0.88, 0.72, 0.66), "night": (0.42, 0.44, 0.6)}
_SKY = {  # (top colour, horizon colour)
    "day": ((60, 120, 215), (175, 210, 242)),
    "dusk": ((50, 45, 115), (250, 150, 80)),
    "night": ((6, 8, 26), (28, 38, 75)),
}
_CLOUD = {"day": (246, 246, 250), "dusk": (225, 160, 165), "night": (70, 72, 90)}
# probability of day / dusk / night per class
_SKY_P = {
    "beach": (0.7, 0.3, 0.0), "forest": (0.7, 0.3, 0.0), "farm": (0.7, 0.3, 0.0),
    "street": (0.5, 0.25, 0.25), "lake": (0.65, 0.3, 0.05), "mountain": (0.7, 0.3, 0.0),
    "night_village": (0.0, 0.0, 1.0), "desert": (0.7, 0.3, 0.0), "harbor": (0.5, 0.3, 0.2),
    "winter": (0.7, 0.3, 0.0),
}


class Scene:
    """Drawing state of one scene: canvas, random generator, sky variant, horizon."""

    def __init__(self, size: int, rng: np.random.Generator, variant: str, horizon: float):
        self.c = Canvas(size, _TINT[variant])
        self.rng = rng
        self.variant = variant
        self.night = variant == "night"
        self.horizon = horizon
        self.later: list[tuple[float, Callable[[], None]]] = []

    def scale(self, base: float) -> float:
        """Perspective size factor of an object standing at ``base`` (0.35 far .. 1 near)."""
        d = (base - self.horizon) / max(1.0 - self.horizon, 1e-3)
        return 0.35 + 0.65 * min(max(d, 0.0), 1.0)

    def add(self, base: float, draw: Callable[[], None]) -> None:
        """Queue an object; queued objects are drawn far (small base) to near."""
        self.later.append((base, draw))

    def draw_queued(self) -> None:
        for _, draw in sorted(self.later, key=lambda t: t[0]):
            draw()
        self.later.clear()

    def ground_y(self, lo: float = 0.0) -> float:
        """A random ground position below the horizon (``lo`` = fraction of the way down)."""
        h = self.horizon
        return h + (1.0 - h) * (lo + (1.0 - lo) * self.rng.random()) ** 0.8


# -- backgrounds ------------------------------------------------------------
def _gradient(c: Canvas, top, bottom, y0: float, y1: float, jit: float, rng) -> np.ndarray:
    """Per-row colours fading from ``top`` at y0 to ``bottom`` at y1 (H, 3)."""
    t = np.clip((c.g - y0) / max(y1 - y0, 1e-3), 0.0, 1.0)[:, None]
    a = S.jitter(rng, top, jit)
    b = S.jitter(rng, bottom, jit)
    return a * (1 - t) + b * t


def sky(sc: Scene) -> None:
    c, rng = sc.c, sc.rng
    top, hor = _SKY[sc.variant]
    rows = c.entries(_gradient(c, top, hor, 0.0, sc.horizon, 12, rng), S.SKY, emissive=True)
    c.idmap[:] = rows[:, None]
    if sc.night:
        n = int(rng.integers(6, 20))
        star = c.entry((235, 235, 245), S.SKY, emissive=True)
        c.points(rng.random(n), rng.random(n) * sc.horizon * 0.9, star)
        if rng.random() < 0.85:
            moon = c.entry(S.jitter(rng, (240, 238, 215), 5), S.MOON, emissive=True)
            mx, my, r = rng.uniform(0.1, 0.9), rng.uniform(0.08, 0.6) * sc.horizon, rng.uniform(0.04, 0.07)
            c.ellipse(mx, my, r, r, moon)
            if rng.random() < 0.5:  # crescent: cover part of the disc with sky
                j = min(int(my * c.size), c.size - 1)
                c.ellipse(mx + 0.6 * r, my - 0.3 * r, r, r, int(rows[j]))
    else:
        if rng.random() < (0.5 if sc.variant == "day" else 0.7):
            col = (255, 240, 140) if sc.variant == "day" else (255, 170, 70)
            sun = c.entry(S.jitter(rng, col, 6), S.SUN, emissive=True)
            r = rng.uniform(0.04, 0.07) if sc.variant == "day" else rng.uniform(0.06, 0.1)
            if sc.variant == "day":
                sy = rng.uniform(0.1, 0.5) * sc.horizon
            else:  # low over the horizon
                sy = sc.horizon - rng.uniform(0.3, 1.2) * r
            c.ellipse(rng.uniform(0.1, 0.9), sy, r, r, sun)
    n = int(rng.integers(0, 4)) if not sc.night else int(rng.integers(0, 2))
    for _ in range(n):
        S.cloud(c, rng, rng.uniform(0, 1), rng.uniform(0.08, 0.75) * sc.horizon,
                rng.uniform(0.15, 0.35), _CLOUD[sc.variant])


def mountains(sc: Scene, n: int, hmin: float, hmax: float, snow_p: float, rgb=(105, 100, 110)) -> None:
    rng = sc.rng
    for _ in range(n):
        h = rng.uniform(hmin, hmax)
        S.mountain(sc.c, rng, rng.uniform(-0.1, 1.1), sc.horizon + 0.01, h * rng.uniform(1.6, 2.6), h,
                   rgb, snow_cap=rng.random() < snow_p)


def ground(sc: Scene, far, near, obj: int, mat: int = 0, top: float | None = None,
           wave: float = 0.0, y1: float = 1.0) -> None:
    """A ground band from ``top`` (default: horizon; optional sine wave) down to ``y1``."""
    c, rng = sc.c, sc.rng
    top = sc.horizon if top is None else top
    rows = c.entries(_gradient(c, far, near, top, 1.0, 10, rng), obj, 0, mat)
    tops = np.full(c.size, top, dtype=np.float32)
    if wave:
        f = rng.uniform(1.0, 3.0)
        tops = tops + wave * np.sin(2 * np.pi * (f * c.g + rng.random())).astype(np.float32)
    c.below(tops, rows, y1)


def water(sc: Scene, top: float, bottom: float = 1.0) -> None:
    c, rng = sc.c, sc.rng
    far = (150, 190, 225) if sc.variant == "day" else (200, 140, 120) if sc.variant == "dusk" else (40, 55, 90)
    rows = c.entries(_gradient(c, far, (35, 85, 150), top, 1.0, 10, rng), S.WATER)
    c.rows(top, bottom, rows)
    ripple = c.entry(S.jitter(rng, (190, 215, 235), 8), S.WATER)
    for _ in range(int(rng.integers(2, 6))):
        y = rng.uniform(top + 0.02, bottom)
        x = rng.uniform(0, 0.9)
        c.rect(x, y, x + rng.uniform(0.04, 0.15), y + 0.5 / c.size, ripple)


# -- recipes ------------------------------------------------------------------
GREEN = (70, 150, 55)
GREEN_NEAR = (55, 125, 40)
FOLIAGE = ((45, 125, 45), (35, 105, 40), (70, 140, 40), (180, 110, 35), (150, 150, 40))


def _trees(sc: Scene, n: int, hmin: float, hmax: float, lo: float = 0.0, pine_p: float = 0.3,
           autumn_p: float = 0.1, snowy: bool = False) -> None:
    rng = sc.rng
    for _ in range(n):
        base = sc.ground_y(lo)
        x = rng.uniform(0.0, 1.0)
        h = rng.uniform(hmin, hmax) * sc.scale(base)
        kind = "pine" if rng.random() < pine_p else "round"
        fol = S.pick(rng, FOLIAGE[3:]) if rng.random() < autumn_p else S.pick(rng, FOLIAGE[:3])
        sc.add(base, lambda x=x, b=base, h=h, k=kind, f=fol: S.tree(sc.c, rng, x, b, h, k, f, snowy))


def _people(sc: Scene, n: int, lo: float = 0.0) -> None:
    rng = sc.rng
    for _ in range(n):
        base = sc.ground_y(lo)
        h = rng.uniform(0.13, 0.2) * sc.scale(base)
        x = rng.uniform(0.05, 0.95)
        sc.add(base, lambda x=x, b=base, h=h: S.person(sc.c, rng, x, b, h))


def _houses(sc: Scene, n: int, style: str = "house", base_lo: float = 0.0, base_hi: float = 0.35,
            k: float = 1.0) -> None:
    rng = sc.rng
    for _ in range(n):
        base = sc.horizon + (1 - sc.horizon) * rng.uniform(base_lo, base_hi) + 0.02
        s = sc.scale(base) * k
        w = rng.uniform(0.2, 0.3) * s * (1.4 if style == "barn" else 1.0)
        h = rng.uniform(0.15, 0.22) * s * (1.3 if style == "barn" else 1.0)
        x = rng.uniform(-0.05, 1.0 - w + 0.05)
        sc.add(base, lambda x=x, b=base, w=w, h=h: S.building(sc.c, rng, x, b, w, h, style, sc.night))


def beach(sc: Scene) -> None:
    rng = sc.rng
    shore = sc.horizon + rng.uniform(0.12, 0.25)
    water(sc, sc.horizon, shore + 0.05)
    ground(sc, (225, 205, 150), (235, 215, 160), S.SAND, top=shore, wave=0.02)
    if rng.random() < 0.6:
        base = sc.horizon + rng.uniform(0.03, 0.8) * (shore - sc.horizon)
        s = rng.uniform(0.15, 0.25) * sc.scale(base)
        sc.add(base, lambda x=rng.uniform(0, 0.8), b=base, s=s: S.boat(sc.c, rng, x, b, s))
    for _ in range(int(rng.integers(1, 4))):
        base = rng.uniform(shore + 0.05, 1.0)
        h = rng.uniform(0.14, 0.22) * sc.scale(base)
        sc.add(base, lambda x=rng.uniform(0.05, 0.95), b=base, h=h: S.person(sc.c, rng, x, b, h))
    if rng.random() < 0.3:
        sc.add(1.0, lambda: S.tree(sc.c, rng, rng.uniform(0.0, 1.0), rng.uniform(0.9, 1.0),
                                   rng.uniform(0.35, 0.5), "round", (60, 140, 50)))


def forest(sc: Scene) -> None:
    rng = sc.rng
    if rng.random() < 0.3:
        mountains(sc, int(rng.integers(1, 3)), 0.1, 0.25, 0.3)
    ground(sc, GREEN, GREEN_NEAR, S.GRASS, wave=0.01)
    _trees(sc, int(rng.integers(7, 14)), 0.35, 0.6, pine_p=0.5, autumn_p=0.25)
    if rng.random() < 0.25:
        _people(sc, 1, lo=0.4)


def farm(sc: Scene) -> None:
    rng = sc.rng
    ground(sc, GREEN, GREEN_NEAR, S.GRASS)
    c = sc.c
    f0 = sc.horizon + rng.uniform(0.05, 0.25) * (1 - sc.horizon)
    fx0, fx1 = (0.0, rng.uniform(0.5, 1.0)) if rng.random() < 0.5 else (rng.uniform(0.0, 0.5), 1.0)
    crop = S.pick(rng, ((200, 175, 70), (120, 160, 60), (150, 110, 70)))
    fe = c.entry(S.jitter(rng, crop, 10), S.FIELD)
    fr = c.entry(S.jitter(rng, np.asarray(crop) * 0.75, 6), S.FIELD)
    c.rect(fx0, f0, fx1, 1.0, fe)
    c.stripes(fx0, f0, fx1, 1.0, rng.uniform(0.035, 0.06), 0.015, fr, vertical=False)
    _houses(sc, 1, "barn", 0.0, 0.2, 1.3)
    if rng.random() < 0.5:
        _houses(sc, 1, "house", 0.0, 0.2)
    _trees(sc, int(rng.integers(1, 4)), 0.25, 0.4, pine_p=0.2)
    fb = sc.horizon + (1 - sc.horizon) * rng.uniform(0.3, 0.7)
    fh = 0.06 * sc.scale(fb)
    sc.add(fb, lambda: S.fence(sc.c, rng, rng.uniform(-0.1, 0.3), rng.uniform(0.7, 1.1), fb, fh))
    if rng.random() < 0.3:
        _people(sc, 1, lo=0.3)
    if rng.random() < 0.2:
        b = sc.ground_y(0.4)
        sc.add(b, lambda: S.car(sc.c, rng, rng.uniform(0, 0.7), b, 0.25 * sc.scale(b)))


def street(sc: Scene) -> None:
    rng = sc.rng
    c = sc.c
    walk = c.entry(S.jitter(rng, (160, 158, 150), 8), S.ROAD, 0, S.CONCRETE)
    c.rect(0, sc.horizon, 1, 1, walk)
    r0 = sc.horizon + rng.uniform(0.12, 0.2)
    ground(sc, (85, 85, 90), (70, 70, 75), S.ROAD, S.ASPHALT, top=r0, y1=min(r0 + rng.uniform(0.3, 0.45), 1.0))
    mark = c.entry(S.jitter(rng, (235, 225, 120) if rng.random() < 0.5 else (235, 235, 235), 6), S.ROAD, 0,
                   S.ASPHALT)
    my = r0 + rng.uniform(0.12, 0.18)
    c.stripes(0, my, 1, my + 1.0 / c.size, rng.uniform(0.12, 0.2), 0.06, mark, phase=rng.random())
    x = rng.uniform(-0.1, 0.0)
    while x < 1.0:  # a row of buildings along the far sidewalk
        w = rng.uniform(0.18, 0.32)
        h = rng.uniform(0.25, 0.45)
        style = "tall" if rng.random() < 0.75 else "house"
        S.building(c, rng, x, sc.horizon + 0.04, w, h if style == "tall" else h * 0.6, style, sc.night)
        x += w + rng.uniform(0.0, 0.06)
    for _ in range(int(rng.integers(0, 3))):
        b = sc.horizon + rng.uniform(0.06, 0.11)
        h = rng.uniform(0.22, 0.32)
        sc.add(b, lambda x=rng.uniform(0, 1), b=b, h=h: S.tree(c, rng, x, b, h, "round", S.pick(rng, FOLIAGE[:3])))
    for _ in range(int(rng.integers(0, 3))):
        b = sc.horizon + rng.uniform(0.06, 0.1)
        sc.add(b, lambda x=rng.uniform(0, 1), b=b: S.lamp(c, rng, x, b, 0.25, sc.night))
    for _ in range(int(rng.integers(1, 4))):
        b = rng.uniform(r0 + 0.06, min(r0 + 0.45, 1.0))
        L = rng.uniform(0.22, 0.3) * sc.scale(b) * 1.3
        sc.add(b, lambda x=rng.uniform(-0.05, 0.95 - L), b=b, L=L: S.car(c, rng, x, b, L, sc.night))
    for _ in range(int(rng.integers(0, 3))):
        b = sc.horizon + rng.uniform(0.07, 0.12)
        sc.add(b, lambda x=rng.uniform(0.05, 0.95), b=b: S.person(c, rng, x, b, rng.uniform(0.12, 0.16)))


def lake(sc: Scene) -> None:
    rng = sc.rng
    if rng.random() < 0.6:
        mountains(sc, int(rng.integers(1, 4)), 0.12, 0.3, 0.4)
    shore_far = sc.horizon + 0.03
    ground(sc, (60, 120, 60), (60, 120, 60), S.GRASS, y1=shore_far + 0.01)
    for _ in range(int(rng.integers(2, 7))):
        x, h = rng.uniform(0, 1), rng.uniform(0.07, 0.12)
        S.tree(sc.c, rng, x, shore_far + 0.005, h, "pine" if rng.random() < 0.5 else "round")
    near = sc.horizon + rng.uniform(0.3, 0.45) * (1 - sc.horizon)
    water(sc, shore_far + 0.01, near + 0.05)
    ground(sc, GREEN, GREEN_NEAR, S.GRASS, top=near, wave=0.02)
    if rng.random() < 0.6:
        b = rng.uniform(shore_far + 0.04, near)
        s = rng.uniform(0.12, 0.2) * sc.scale(b)
        sc.add(b, lambda x=rng.uniform(0, 0.8), b=b, s=s: S.boat(sc.c, rng, x, b, s))
    for _ in range(int(rng.integers(1, 3))):
        b = rng.uniform(near + 0.08, 1.0)
        h = rng.uniform(0.3, 0.45)
        sc.add(b, lambda x=rng.uniform(0, 1), b=b, h=h: S.tree(sc.c, rng, x, b, h, "round", S.pick(rng, FOLIAGE[:3])))


def mountain_scene(sc: Scene) -> None:
    rng = sc.rng
    mountains(sc, int(rng.integers(1, 3)), 0.3, 0.45, 0.5, (120, 125, 145))
    mountains(sc, int(rng.integers(1, 3)), 0.25, 0.4, 0.9)
    if rng.random() < 0.6:
        ground(sc, GREEN, GREEN_NEAR, S.GRASS, wave=0.02)
    else:
        ground(sc, (130, 120, 105), (110, 100, 90), S.MOUNTAIN, S.STONE, wave=0.02)
    _trees(sc, int(rng.integers(0, 4)), 0.2, 0.3, pine_p=0.8)


def night_village(sc: Scene) -> None:
    rng = sc.rng
    ground(sc, GREEN, GREEN_NEAR, S.GRASS)
    c = sc.c
    if rng.random() < 0.6:
        path = c.entry(S.jitter(rng, (150, 130, 100), 8), S.ROAD)
        px = rng.uniform(0.3, 0.7)
        c.polygon([(px - 0.02, sc.horizon + 0.05), (px + 0.02, sc.horizon + 0.05),
                   (px + 0.25, 1.0), (px - 0.25, 1.0)], path)
    _houses(sc, int(rng.integers(2, 5)), "house", 0.0, 0.45, 1.5)
    _trees(sc, int(rng.integers(1, 4)), 0.25, 0.4, pine_p=0.4)
    for _ in range(int(rng.integers(0, 3))):
        b = sc.ground_y(0.2)
        sc.add(b, lambda x=rng.uniform(0, 1), b=b: S.lamp(c, rng, x, b, 0.3 * sc.scale(b), True))
    if rng.random() < 0.4:
        fb = sc.ground_y(0.5)
        sc.add(fb, lambda: S.fence(c, rng, rng.uniform(-0.1, 0.4), rng.uniform(0.6, 1.1), fb, 0.06 * sc.scale(fb)))


def desert(sc: Scene) -> None:
    rng = sc.rng
    if rng.random() < 0.5:
        mountains(sc, int(rng.integers(1, 3)), 0.08, 0.2, 0.0, (175, 120, 80))
    ground(sc, (230, 195, 130), (215, 170, 105), S.SAND, wave=0.015)
    if rng.random() < 0.5:
        ground(sc, (220, 180, 115), (205, 160, 95), S.SAND, top=sc.horizon + rng.uniform(0.15, 0.3), wave=0.04)
    n = int(rng.integers(1, 5))
    for _ in range(n):
        b = sc.ground_y(0.1)
        h = rng.uniform(0.25, 0.4) * sc.scale(b)
        sc.add(b, lambda x=rng.uniform(0.05, 0.95), b=b, h=h: S.cactus(sc.c, rng, x, b, h))


def harbor(sc: Scene) -> None:
    rng = sc.rng
    c = sc.c
    land = sc.horizon + 0.02
    quay = c.entry(S.jitter(rng, (150, 145, 135), 8), S.ROAD, 0, S.CONCRETE)
    x = rng.uniform(-0.1, 0.0)
    while x < 1.0:
        w = rng.uniform(0.1, 0.18)
        S.building(c, rng, x, land, w, rng.uniform(0.1, 0.2), "house", sc.night)
        x += w + rng.uniform(0.0, 0.08)
    c.rect(0, land, 1, land + 0.02, quay)
    water(sc, land + 0.02)
    py = rng.uniform(0.68, 0.8)
    left = rng.random() < 0.5
    px0, px1 = (0.0, rng.uniform(0.35, 0.6)) if left else (rng.uniform(0.4, 0.65), 1.0)
    deck = c.entry(S.jitter(rng, (140, 100, 60), 10), S.PIER, 0, S.WOOD)
    post = c.entry(S.jitter(rng, (100, 70, 45), 8), S.PIER, 0, S.WOOD)

    def pier() -> None:
        c.stripes(px0, py, px1, py + 0.08, 0.08, 0.02, post)
        c.rect(px0, py - 0.035, px1, py, deck)
    sc.add(py, pier)
    for _ in range(int(rng.integers(2, 5))):
        b = rng.uniform(land + 0.06, 0.98)
        s = rng.uniform(0.15, 0.25) * sc.scale(b) * 1.2
        sc.add(b, lambda x=rng.uniform(-0.05, 0.9), b=b, s=s: S.boat(c, rng, x, b, s))
    if rng.random() < 0.5:
        sc.add(py - 0.001, lambda: S.person(c, rng, rng.uniform(px0 + 0.05, px1 - 0.05), py - 0.03, 0.14))
    if rng.random() < 0.4:
        sc.add(py - 0.002, lambda: S.lamp(c, rng, rng.uniform(px0 + 0.05, px1 - 0.05), py - 0.03, 0.22, sc.night))


def winter(sc: Scene) -> None:
    rng = sc.rng
    if rng.random() < 0.4:
        mountains(sc, int(rng.integers(1, 3)), 0.1, 0.25, 1.0)
    ground(sc, (225, 230, 240), (245, 246, 250), S.SNOW, wave=0.015)
    _trees(sc, int(rng.integers(2, 7)), 0.3, 0.5, pine_p=0.85, snowy=True)
    if rng.random() < 0.5:
        _houses(sc, int(rng.integers(1, 3)), "house", 0.0, 0.3, 1.3)
    _people(sc, int(rng.integers(0, 3)), lo=0.2)
    if rng.random() < 0.5:
        fb = sc.ground_y(0.4)
        sc.add(fb, lambda: S.fence(sc.c, rng, rng.uniform(-0.1, 0.4), rng.uniform(0.6, 1.1), fb, 0.06 * sc.scale(fb)))


RECIPES: dict[str, Callable[[Scene], None]] = {
    "beach": beach, "forest": forest, "farm": farm, "street": street, "lake": lake,
    "mountain": mountain_scene, "night_village": night_village, "desert": desert,
    "harbor": harbor, "winter": winter,
}
_HORIZON = {  # (low, high) of the horizon line per class
    "beach": (0.4, 0.52), "forest": (0.38, 0.52), "farm": (0.38, 0.5), "street": (0.4, 0.5),
    "lake": (0.36, 0.48), "mountain": (0.55, 0.72), "night_village": (0.45, 0.58),
    "desert": (0.45, 0.6), "harbor": (0.36, 0.45), "winter": (0.4, 0.55),
}
if list(RECIPES) != CLASSES:  # pragma: no cover - internal consistency
    raise RuntimeError("toyworld recipes and CLASSES disagree")


def draw(label: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, str]:
    """Render a scene of class ``label``; returns ``(image, seg, sky_variant)``."""
    name = CLASSES[label]
    p = _SKY_P[name]
    variant = SKY_VARIANTS[int(rng.choice(3, p=p))]
    lo, hi = _HORIZON[name]
    sc = Scene(size, rng, variant, rng.uniform(lo, hi))
    sky(sc)
    RECIPES[name](sc)
    sc.draw_queued()
    image, seg = sc.c.finish(rng)
    return image, seg, variant
