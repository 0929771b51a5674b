"""A segmenter that needs no training: every pixel gets the name of its colour.

:class:`ColorSegmenter` works on any image, on any device, and is exact and fast,
so it is the segmenter to start with on images for which you have no other
(real photos, a new GAN): units that detect "blue" or "green" regions show up
at once. It reads each pixel's hue, saturation and value (HSV) and applies
fixed rules:

===========  =========================================================
name         rule (hue in degrees, saturation and value in [0, 1])
===========  =========================================================
black        value < 0.2
white        saturation < 0.2 and value > 0.8
gray         saturation < 0.2, otherwise
red          hue in [345, 15); ``pink`` when saturation < 0.5 and value > 0.6
orange       hue in [15, 45); ``brown`` when value < 0.6 or saturation < 0.5
yellow       hue in [45, 70); ``brown`` when value < 0.45
green        hue in [70, 165)
cyan         hue in [165, 200)
blue         hue in [200, 255)
purple       hue in [255, 290), and [290, 345) when value <= 0.6
pink         hue in [290, 345) when value > 0.6
===========  =========================================================

Each pixel has exactly one colour, so the segmentation has one label channel
(``L = 1``) and no pixel is left unlabelled::

    seg = ColorSegmenter()
    ids = seg.segment(images)            # (N, 1, H, W) int64, ids 1..12
    seg.concepts[ids[0, 0, 0, 0]]        # e.g. 'blue'
"""
from __future__ import annotations

import torch

__all__ = ["ColorSegmenter", "COLOR_NAMES"]

#: The colour names, in concept-id order (id = index + 1; id 0 is "-").
COLOR_NAMES: tuple[str, ...] = (
    "black", "white", "gray", "red", "orange", "yellow",
    "green", "cyan", "blue", "purple", "pink", "brown",
)


class ColorSegmenter:
    """Name the colour of every pixel (12 colours, one label channel).

    Attributes
    ----------
    concepts : list[str]
        ``["-", "black", "white", ...]``; concept id = index.
    categories : list[str]
        ``["-", "color", "color", ...]``.
    """

    def __init__(self) -> None:
        self.concepts: list[str] = ["-", *COLOR_NAMES]
        self.categories: list[str] = ["-"] + ["color"] * len(COLOR_NAMES)
        self._id = {name: i for i, name in enumerate(self.concepts)}

    def segment(self, images: torch.Tensor) -> torch.Tensor:
        """Colour ids of ``(N, 3, H, W)`` images in [-1, 1] -> ``(N, 1, H, W)`` int64, on the images' device.

        Values outside [-1, 1] are clamped.
        """
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"ColorSegmenter.segment expects images (N, 3, H, W) in [-1, 1], got {shape}")
        if not images.is_floating_point():
            raise ValueError(
                f"ColorSegmenter.segment expects float images in [-1, 1], got dtype {images.dtype} "
                f"(convert uint8 pixels with x / 127.5 - 1)"
            )
        rgb = ((images.float().clamp(-1, 1) + 1) / 2)
        r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
        value, _ = rgb.max(dim=1)
        low, _ = rgb.min(dim=1)
        chroma = value - low
        sat = torch.where(value > 0, chroma / value.clamp_min(1e-8), torch.zeros_like(value))
        safe = chroma.clamp_min(1e-8)
        hue = torch.where(
            value == r,
            torch.remainder((g - b) / safe, 6.0),
            torch.where(value == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0),
        ) * 60.0

        out = torch.empty(value.shape, dtype=torch.int64, device=images.device)
        i = self._id

        def hue_in(lo: float, hi: float) -> torch.Tensor:
            return (hue >= lo) & (hue < hi)

        red_hue = (hue >= 345) | (hue < 15)
        magenta = hue_in(290, 345)
        # chromatic pixels first, then achromatic rules override them
        out.fill_(i["red"])
        out[red_hue & (sat < 0.5) & (value > 0.6)] = i["pink"]
        orange = hue_in(15, 45)
        out[orange] = i["orange"]
        out[orange & ((value < 0.6) | (sat < 0.5))] = i["brown"]
        yellow = hue_in(45, 70)
        out[yellow] = i["yellow"]
        out[yellow & (value < 0.45)] = i["brown"]
        out[hue_in(70, 165)] = i["green"]
        out[hue_in(165, 200)] = i["cyan"]
        out[hue_in(200, 255)] = i["blue"]
        out[hue_in(255, 290) | (magenta & (value <= 0.6))] = i["purple"]
        out[magenta & (value > 0.6)] = i["pink"]
        grayish = sat < 0.2
        out[grayish] = i["gray"]
        out[grayish & (value > 0.8)] = i["white"]
        out[value < 0.2] = i["black"]
        return out.unsqueeze(1)

    def __repr__(self) -> str:
        return f"ColorSegmenter({len(COLOR_NAMES)} colours)"
