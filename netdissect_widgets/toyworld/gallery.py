"""Make the README pictures of the toy world: ``python -m netdissect_widgets.toyworld.gallery``.

Writes ``docs/images/toyworld_scenes.png`` (sample scenes, one column per class)
and ``docs/images/toyworld_segmentation.png`` (scenes next to their object
labels, with a legend), both upscaled 2x with nearest-neighbour sampling.
Options: ``--out FOLDER`` (default ``docs/images``), ``--rows N``, ``--seed S``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .concepts import CLASSES, CONCEPTS
from .dataset import SceneDataset

_PAD = 4
_LABEL_H = 14


def object_palette() -> np.ndarray:
    """A distinct RGB colour per concept id for drawing object labels, ``(C, 3)`` uint8."""
    rng = np.random.default_rng(7)
    pal = rng.integers(40, 256, size=(len(CONCEPTS), 3)).astype(np.uint8)
    fixed = {"sky": (120, 180, 255), "cloud": (235, 235, 235), "sun": (255, 220, 0), "moon": (255, 255, 170),
             "mountain": (120, 100, 90), "tree": (0, 130, 0), "grass": (140, 220, 100), "water": (0, 70, 200),
             "sand": (240, 210, 140), "road": (90, 90, 90), "snow": (255, 255, 255), "building": (200, 60, 40),
             "car": (250, 0, 200), "boat": (0, 220, 220), "fence": (170, 110, 50), "person": (255, 130, 0),
             "field": (210, 200, 40), "cactus": (40, 90, 40), "lamp": (40, 40, 40), "pier": (130, 70, 20)}
    for name, rgb in fixed.items():
        pal[CONCEPTS.index(name)] = rgb
    pal[0] = 0
    return pal


def _upscale(image: np.ndarray, k: int = 2) -> Image.Image:
    return Image.fromarray(image).resize((image.shape[1] * k, image.shape[0] * k), Image.NEAREST)


def scenes_grid(rows: int = 4, seed: int = 0, size: int = 64) -> Image.Image:
    """``rows`` scenes of every class, one column per class, class names on top."""
    ds = SceneDataset(rows * len(CLASSES), seed=seed, size=size)
    cell = 2 * size
    w = len(CLASSES) * (cell + _PAD) + _PAD
    h = rows * (cell + _PAD) + _PAD + _LABEL_H
    sheet = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(sheet)
    for k, name in enumerate(CLASSES):
        draw.text((_PAD + k * (cell + _PAD), 2), name, fill="black")
    for i in range(len(ds)):
        image, label, _ = ds.render(i)
        r, k = divmod(i, len(CLASSES))
        sheet.paste(_upscale(image), (_PAD + k * (cell + _PAD), _LABEL_H + _PAD + r * (cell + _PAD)))
    return sheet


def segmentation_sheet(n: int = 10, seed: int = 1, size: int = 64) -> Image.Image:
    """``n`` scenes (one per class) above their object labels, with a legend of the objects."""
    ds = SceneDataset(n, seed=seed, size=size)
    pal = object_palette()
    cell = 2 * size
    cols = n
    legend_ids = CONCEPTS.ids("object")
    legend_rows = (len(legend_ids) + 9) // 10
    w = cols * (cell + _PAD) + _PAD
    h = 2 * (cell + _PAD) + _PAD + _LABEL_H + legend_rows * 16 + 4
    sheet = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(sheet)
    for i in range(n):
        image, label, seg = ds.render(i)
        x = _PAD + i * (cell + _PAD)
        draw.text((x, 2), CLASSES[label], fill="black")
        sheet.paste(_upscale(image), (x, _LABEL_H + _PAD))
        sheet.paste(_upscale(pal[seg[0]]), (x, _LABEL_H + 2 * _PAD + cell))
    y0 = _LABEL_H + 3 * _PAD + 2 * cell
    step = (w - _PAD) // 10
    for j, cid in enumerate(legend_ids):
        r, k = divmod(j, 10)
        x, y = _PAD + k * step, y0 + r * 16
        draw.rectangle([x, y + 2, x + 10, y + 12], fill=tuple(int(v) for v in pal[cid]), outline="black")
        draw.text((x + 14, y + 1), CONCEPTS.names[cid], fill="black")
    return sheet


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/images", help="output folder")
    parser.add_argument("--rows", type=int, default=4, help="scenes per class in the grid")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scenes_grid(args.rows, args.seed).save(out / "toyworld_scenes.png")
    segmentation_sheet(len(CLASSES), args.seed + 1).save(out / "toyworld_segmentation.png")
    print(f"wrote {out / 'toyworld_scenes.png'} and {out / 'toyworld_segmentation.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
