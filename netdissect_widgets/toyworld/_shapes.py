"""Drawing of the toy world's objects, each from a few labelled canvas shapes.

Every function paints one object onto a :class:`~._canvas.Canvas` with its
object, part and material labels. Positions are fractions of the image side;
``base`` is the y of the object's ground contact, ``h``/``s`` its size. Colours
are jittered with the scene's random generator ``rng``.
"""
from __future__ import annotations

import numpy as np

from ._canvas import Canvas
from .concepts import CONCEPTS

_I = CONCEPTS.index
(SKY, CLOUD, SUN, MOON, MOUNTAIN, TREE, GRASS, WATER, SAND, ROAD, SNOW, BUILDING, CAR,
 BOAT, FENCE, PERSON, FIELD, CACTUS, LAMP, PIER) = (_I(n) for n in (
    "sky", "cloud", "sun", "moon", "mountain", "tree", "grass", "water", "sand", "road",
    "snow", "building", "car", "boat", "fence", "person", "field", "cactus", "lamp", "pier"))
(ROOF, WINDOW, DOOR, WALL, CHIMNEY, TRUNK, FOLIAGE, WHEEL, HULL, SAIL, MAST, HEAD, TORSO,
 LEG) = (_I(n) for n in (
    "roof", "window", "door", "wall", "chimney", "trunk", "foliage", "wheel", "hull", "sail",
    "mast", "head", "torso", "leg"))
(BRICK, WOOD, GLASS, METAL, STONE, FABRIC, ASPHALT, PLASTER, TILE, CONCRETE) = (_I(n) for n in (
    "brick", "wood", "glass", "metal", "stone", "fabric", "asphalt", "plaster", "tile",
    "concrete"))

# base colours (RGB 0..255)
WALL_PLASTER = ((235, 225, 200), (230, 200, 160), (200, 220, 230), (240, 210, 210),
                (215, 215, 215), (250, 235, 150))
CAR_PAINT = ((200, 30, 30), (30, 70, 180), (240, 240, 240), (30, 30, 35), (230, 200, 40),
             (120, 120, 130), (40, 140, 70))
SHIRTS = ((200, 40, 40), (40, 90, 200), (240, 200, 40), (240, 240, 240), (130, 60, 160),
          (240, 130, 40), (40, 150, 80), (240, 120, 170))
SKIN = ((235, 195, 160), (200, 150, 110), (140, 95, 60), (90, 60, 40))


def jitter(rng: np.random.Generator, rgb, amount: float = 12.0) -> np.ndarray:
    """``rgb`` plus independent normal noise per channel (the final image is clipped to 0..255)."""
    return rng.standard_normal(3) * amount + rgb


def pick(rng: np.random.Generator, options):
    """One element of ``options`` chosen uniformly."""
    return options[int(rng.integers(len(options)))]


def tree(c: Canvas, rng, x: float, base: float, h: float, kind: str = "round",
         foliage=(45, 125, 45), snowy: bool = False) -> None:
    """A tree of height ``h`` standing at ``(x, base)``: trunk + round or pine foliage."""
    tw = 0.11 * h
    trunk = c.entry(jitter(rng, (105, 72, 42), 10), TREE, TRUNK, WOOD)
    leaf = c.entry(jitter(rng, foliage, 14), TREE, FOLIAGE)
    if kind == "pine":
        c.rect(x - tw / 2, base - 0.25 * h, x + tw / 2, base, trunk)
        w = 0.27 * h
        c.polygon([(x - w, base - 0.2 * h), (x + w, base - 0.2 * h), (x, base - 0.75 * h)], leaf)
        c.polygon([(x - 0.8 * w, base - 0.5 * h), (x + 0.8 * w, base - 0.5 * h), (x, base - h)], leaf)
        if snowy:
            cap = c.entry(jitter(rng, (240, 242, 248), 5), TREE, FOLIAGE)
            c.polygon([(x - 0.25 * w, base - 0.88 * h), (x + 0.25 * w, base - 0.88 * h),
                       (x, base - h)], cap)
    else:
        c.rect(x - tw / 2, base - 0.5 * h, x + tw / 2, base, trunk)
        c.ellipse(x, base - 0.64 * h, 0.3 * h, 0.36 * h, leaf)


def building(c: Canvas, rng, x: float, base: float, w: float, h: float, style: str = "house",
             night: bool = False) -> None:
    """A building with walls, roof, windows and a door; ``x`` is its left edge.

    ``style``: ``"house"`` (gable roof, plaster or brick), ``"tall"`` (flat roof,
    window grid) or ``"barn"`` (red wood, big roof and door).
    """
    top = base - h
    texture, vertical = 0, False  # brick courses or barn planks, about every 3 pixels
    if style == "barn":
        wall = c.entry(jitter(rng, (165, 40, 35), 12), BUILDING, WALL, WOOD)
        texture = c.entry(c.colors[wall] / c.tint * 0.8, BUILDING, WALL, WOOD)
        vertical = True
    elif style == "tall" or rng.random() < 0.4:
        mat = BRICK if rng.random() < 0.5 else CONCRETE
        col = (160, 75, 55) if mat == BRICK else pick(rng, ((150, 150, 150), (190, 180, 165), (120, 125, 135)))
        wall = c.entry(jitter(rng, col, 10), BUILDING, WALL, mat)
        if mat == BRICK:
            texture = c.entry(jitter(rng, (195, 170, 150), 8), BUILDING, WALL, BRICK)
    else:
        wall = c.entry(jitter(rng, pick(rng, WALL_PLASTER), 10), BUILDING, WALL, PLASTER)
    c.rect(x, top, x + w, base, wall)
    if texture:
        c.stripes(x, top, x + w, base, 3.0 / c.size, 0.9 / c.size, texture, vertical=vertical)
    if style == "tall":
        roof = c.entry(jitter(rng, (70, 70, 78), 8), BUILDING, ROOF, CONCRETE)
        c.rect(x - 0.01, top - 0.025, x + w + 0.01, top + 0.005, roof)
    else:
        rh = (0.55 if style == "barn" else 0.45) * min(w, 1.6 * h)
        col = (150, 55, 40) if rng.random() < 0.6 else (85, 85, 95)
        if style == "barn":
            col = (90, 60, 50)
        roof = c.entry(jitter(rng, col, 10), BUILDING, ROOF, TILE)
        ov = 0.12 * w
        if style == "house" and rng.random() < 0.4:
            chim = c.entry(jitter(rng, (150, 70, 55), 8), BUILDING, CHIMNEY, BRICK)
            cx = x + w * (0.7 + 0.1 * rng.random())
            c.rect(cx, top - 0.8 * rh, cx + 0.1 * w, top - 0.2 * rh, chim)
        c.polygon([(x - ov, top + 0.002), (x + w + ov, top + 0.002), (x + w / 2, top - rh)], roof)
    # windows
    lit = night and style != "barn"
    if lit:
        glass = c.entry(jitter(rng, (255, 215, 90), 10), BUILDING, WINDOW, GLASS, emissive=True)
        dark = c.entry(jitter(rng, (35, 40, 60), 5), BUILDING, WINDOW, GLASS)
    else:
        glass = c.entry(jitter(rng, (140, 185, 220), 12), BUILDING, WINDOW, GLASS)
        dark = glass
    door = c.entry(jitter(rng, pick(rng, ((110, 70, 40), (90, 55, 35), (60, 90, 60), (120, 40, 40))), 10),
                   BUILDING, DOOR, WOOD)
    dw = min(0.22 * w, 0.06)
    dh = min(0.45 * h, 2.0 * dw + 0.01)
    dx = x + w * (0.5 if style != "house" else pick(rng, (0.25, 0.5, 0.7))) - dw / 2
    if style == "barn":
        dw, dh = 0.38 * w, 0.6 * h
        dx = x + 0.31 * w
    c.rect(dx, base - dh, dx + dw, base, door)
    ncols = max(1, int(round(w / (0.07 if style == "tall" else 0.09))))
    nrows = max(1, int(round((h - dh) / 0.08))) if style == "tall" else 1
    if style == "barn":
        ncols, nrows = 1, 1
    ww = 0.42 * w / ncols
    wh = min(0.6 * (h - dh) / nrows, 1.3 * ww)
    for r in range(nrows):
        wy = top + (r + 0.25) * (h - dh) / nrows
        for k in range(ncols):
            wx = x + (k + 0.5) * w / ncols - ww / 2
            if style != "tall" and abs(wx + ww / 2 - (dx + dw / 2)) < (ww + dw) / 2 and wy + wh > base - dh:
                continue
            c.rect(wx, wy, wx + ww, wy + wh, glass if (not lit or rng.random() < 0.7) else dark)


def car(c: Canvas, rng, x: float, base: float, length: float, night: bool = False) -> None:
    """A side-view car of length ``length`` with its left end at ``x``."""
    L = length
    body = c.entry(jitter(rng, pick(rng, CAR_PAINT), 10), CAR, 0, METAL)
    glass = c.entry(jitter(rng, (120, 160, 200), 10), CAR, WINDOW, GLASS)
    wheel = c.entry(jitter(rng, (25, 25, 28), 4), CAR, WHEEL)
    c.polygon([(x + 0.2 * L, base - 0.28 * L), (x + 0.8 * L, base - 0.28 * L),
               (x + 0.68 * L, base - 0.48 * L), (x + 0.32 * L, base - 0.48 * L)], body)
    c.rect(x, base - 0.3 * L, x + L, base - 0.09 * L, body)
    c.polygon([(x + 0.27 * L, base - 0.29 * L), (x + 0.73 * L, base - 0.29 * L),
               (x + 0.65 * L, base - 0.44 * L), (x + 0.35 * L, base - 0.44 * L)], glass)
    r = 0.11 * L
    c.ellipse(x + 0.22 * L, base - r, r, r, wheel)
    c.ellipse(x + 0.78 * L, base - r, r, r, wheel)
    if night:
        light = c.entry((255, 240, 170), CAR, 0, GLASS, emissive=True)
        c.rect(x + 0.94 * L, base - 0.26 * L, x + L, base - 0.19 * L, light)


def boat(c: Canvas, rng, x: float, wl: float, s: float) -> None:
    """A boat of length ``s``, left end at ``x``, floating on the waterline ``wl``."""
    hull_col = pick(rng, ((240, 240, 240), (190, 40, 40), (40, 70, 150), (130, 90, 55)))
    hull = c.entry(jitter(rng, hull_col, 10), BOAT, HULL, WOOD if hull_col[0] == 130 else METAL)
    c.polygon([(x, wl - 0.16 * s), (x + s, wl - 0.16 * s), (x + 0.85 * s, wl + 0.02 * s),
               (x + 0.15 * s, wl + 0.02 * s)], hull)
    if rng.random() < 0.6:
        mast = c.entry(jitter(rng, (110, 80, 50), 8), BOAT, MAST, WOOD)
        sail = c.entry(jitter(rng, (245, 242, 235), 8), BOAT, SAIL, FABRIC)
        mx = x + 0.45 * s
        c.rect(mx - 0.012 * s, wl - 0.95 * s, mx + 0.02 * s, wl - 0.16 * s, mast)
        c.polygon([(mx + 0.03 * s, wl - 0.92 * s), (mx + 0.03 * s, wl - 0.22 * s),
                   (x + 0.92 * s, wl - 0.22 * s)], sail)
    else:
        cabin = c.entry(jitter(rng, (225, 225, 220), 8), BOAT, 0, WOOD)
        glass = c.entry(jitter(rng, (90, 130, 170), 8), BOAT, WINDOW, GLASS)
        c.rect(x + 0.3 * s, wl - 0.36 * s, x + 0.7 * s, wl - 0.15 * s, cabin)
        c.rect(x + 0.36 * s, wl - 0.32 * s, x + 0.64 * s, wl - 0.24 * s, glass)


def person(c: Canvas, rng, x: float, base: float, h: float) -> None:
    """A standing figure of height ``h`` centred on ``x``: legs, torso, head."""
    leg = c.entry(jitter(rng, pick(rng, ((40, 50, 90), (60, 60, 60), (150, 120, 90))), 8), PERSON, LEG, FABRIC)
    torso = c.entry(jitter(rng, pick(rng, SHIRTS), 12), PERSON, TORSO, FABRIC)
    head = c.entry(jitter(rng, pick(rng, SKIN), 8), PERSON, HEAD)
    lw = 0.1 * h
    c.rect(x - 0.13 * h, base - 0.45 * h, x - 0.13 * h + lw, base, leg)
    c.rect(x + 0.13 * h - lw, base - 0.45 * h, x + 0.13 * h, base, leg)
    c.rect(x - 0.16 * h, base - 0.8 * h, x + 0.16 * h, base - 0.43 * h, torso)
    c.ellipse(x, base - 0.89 * h, 0.11 * h, 0.11 * h, head)


def fence(c: Canvas, rng, x0: float, x1: float, base: float, h: float) -> None:
    """A wooden fence from ``x0`` to ``x1``: posts and two rails."""
    wood = c.entry(jitter(rng, (160, 120, 75), 12), FENCE, 0, WOOD)
    period = max(2.2 * h, 2.5 / c.size)
    c.stripes(x0, base - h, x1, base, period, max(0.3 * h, 1.0 / c.size), wood)
    c.rect(x0, base - 0.8 * h, x1, base - 0.8 * h + max(0.12 * h, 0.8 / c.size), wood)
    c.rect(x0, base - 0.4 * h, x1, base - 0.4 * h + max(0.12 * h, 0.8 / c.size), wood)


def cactus(c: Canvas, rng, x: float, base: float, h: float) -> None:
    """A saguaro cactus of height ``h`` centred on ``x``."""
    e = c.entry(jitter(rng, (60, 130, 70), 12), CACTUS)
    w = 0.16 * h
    c.rect(x - w / 2, base - h, x + w / 2, base, e)
    c.ellipse(x, base - h, w / 2, w / 2, e)
    if rng.random() < 0.8:
        c.rect(x - 0.45 * h, base - 0.55 * h, x - w / 2, base - 0.45 * h, e)
        c.rect(x - 0.45 * h, base - 0.8 * h, x - 0.45 * h + w * 0.8, base - 0.5 * h, e)
    if rng.random() < 0.8:
        c.rect(x + w / 2, base - 0.65 * h, x + 0.4 * h, base - 0.55 * h, e)
        c.rect(x + 0.4 * h - w * 0.8, base - 0.9 * h, x + 0.4 * h, base - 0.6 * h, e)


def lamp(c: Canvas, rng, x: float, base: float, h: float, night: bool = False) -> None:
    """A street lamp of height ``h`` at ``x``: metal pole and a light."""
    pole = c.entry(jitter(rng, (55, 55, 62), 6), LAMP, 0, METAL)
    c.rect(x - 0.04 * h, base - h, x + 0.04 * h, base, pole)
    c.rect(x - 0.04 * h, base - h, x + 0.25 * h, base - h + 0.06 * h, pole)
    light = c.entry((255, 235, 160) if night else (225, 225, 205), LAMP, 0, GLASS, emissive=night)
    c.ellipse(x + 0.2 * h, base - 0.9 * h, 0.08 * h, 0.06 * h, light)


def cloud(c: Canvas, rng, x: float, y: float, w: float, rgb) -> None:
    """A cloud of width ``w`` centred at ``(x, y)``: a few overlapping ellipses."""
    e = c.entry(jitter(rng, rgb, 6), CLOUD)
    c.ellipse(x, y, 0.5 * w, 0.16 * w, e)
    c.ellipse(x - 0.18 * w, y - 0.08 * w, 0.22 * w, 0.16 * w, e)
    c.ellipse(x + 0.12 * w, y - 0.12 * w, 0.24 * w, 0.2 * w, e)


def mountain(c: Canvas, rng, cx: float, base: float, w: float, h: float, rgb,
             snow_cap: bool = True) -> None:
    """A triangular mountain peaking at ``(cx, base - h)``, optionally snow-capped."""
    e = c.entry(jitter(rng, rgb, 10), MOUNTAIN, 0, STONE)
    skew = (rng.random() - 0.5) * 0.3 * w
    px, py = cx + skew, base - h
    c.polygon([(cx - w / 2, base), (px, py), (cx + w / 2, base)], e)
    if snow_cap:
        f = 0.25 + 0.15 * rng.random()
        snow = c.entry(jitter(rng, (242, 244, 250), 5), SNOW)
        lx = px + (cx - w / 2 - px) * f
        rx = px + (cx + w / 2 - px) * f
        c.polygon([(lx, py + f * h), (px, py), (rx, py + f * h)], snow)
