"""Real photographs that installed packages ship, as a dataset of deterministic crops and flips.

Only a few colour photographs come inside Python packages: scikit-image's sample
data, matplotlib's sample data and scikit-learn's sample images. :data:`PHOTO_SOURCES`
lists each file, where it comes from and its licence. :class:`RealPhotos` turns them
into a map-style dataset of square views, each a pure function of ``(seed, index)``::

    photos = RealPhotos(size=224)          # 440 items by default (40 views of each of 11 photos)
    image, photo = photos[0]               # float32 (3, 224, 224) in [-1, 1], index into photos.names
    photos.describe(13)                    # {'photo': 'coffee', 'box': (x0, y0, x1, y1), 'flip': True}

Item ``i`` shows photo ``i % len(names)``; its first view is the centred square
(no flip), the others are squares covering 40-90% of the shorter side at a
position and with a horizontal flip drawn from ``sha256(seed, photo, view)``.
The files are read from the installed packages (never downloaded): a package
that is missing raises :class:`~netdissect_widgets.zoo.MissingExtraError`.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ._packages import package_file

__all__ = ["PhotoSource", "PHOTO_SOURCES", "RealPhotos"]


@dataclass(frozen=True)
class PhotoSource:
    """One photograph inside an installed package."""

    name: str
    module: str      # package holding the file
    relpath: str     # path inside the package folder
    package: str     # distribution to install
    licence: str
    credit: str


PHOTO_SOURCES: tuple[PhotoSource, ...] = (
    PhotoSource("astronaut", "skimage", "data/astronaut.png", "scikit-image", "public domain",
                "NASA: astronaut Eileen Collins"),
    PhotoSource("chelsea", "skimage", "data/chelsea.png", "scikit-image", "CC0", "Stefan van der Walt (a cat)"),
    PhotoSource("coffee", "skimage", "data/coffee.png", "scikit-image", "CC0", "Rachel Michetti (a cup of coffee)"),
    PhotoSource("hubble_deep_field", "skimage", "data/hubble_deep_field.jpg", "scikit-image", "public domain",
                "NASA / Hubble"),
    PhotoSource("motorcycle_left", "skimage", "data/motorcycle_left.png", "scikit-image",
                "research use (Middlebury stereo 2014)", "Scharstein et al., GCPR 2014"),
    PhotoSource("motorcycle_right", "skimage", "data/motorcycle_right.png", "scikit-image",
                "research use (Middlebury stereo 2014)", "Scharstein et al., GCPR 2014"),
    PhotoSource("retina", "skimage", "data/retina.jpg", "scikit-image", "CC0",
                "Mikael Häggström (fundus photograph)"),
    PhotoSource("rocket", "skimage", "data/rocket.jpg", "scikit-image", "public domain", "SpaceX (Falcon 9 launch)"),
    PhotoSource("grace_hopper", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg", "matplotlib",
                "public domain", "US Navy portrait of Grace Hopper"),
    PhotoSource("china", "sklearn", "datasets/images/china.jpg", "scikit-learn", "CC BY 2.0",
                "danielbuechele on Flickr"),
    PhotoSource("flower", "sklearn", "datasets/images/flower.jpg", "scikit-learn", "CC BY 2.0",
                "vultilion on Flickr"),
)

_MIN_SIDE = 32  # smaller photos cannot give a meaningful view


def _read_rgb(path: str, name: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        if img.mode not in ("RGB", "RGBA", "P", "L"):
            raise ValueError(f"photo {name!r} ({path}) has mode {img.mode!r}; expected an RGB image")
        if img.mode == "L":
            raise ValueError(f"photo {name!r} ({path}) is greyscale; RealPhotos takes colour (RGB) photos only")
        arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    if min(arr.shape[:2]) < _MIN_SIDE:
        raise ValueError(f"photo {name!r} ({path}) is {arr.shape[1]}x{arr.shape[0]}; at least {_MIN_SIDE} px a side needed")
    return arr


class RealPhotos(torch.utils.data.Dataset):
    """Square views of the packaged colour photographs, as ``(image in [-1, 1], photo index)``.

    Parameters
    ----------
    size : int
        Output side in pixels (at least 32).
    n : int, optional
        Number of items; default ``40 * len(names)`` (440 with all photos).
    seed : int
        Seed of the crops and flips (view 0 of each photo is always the centred square).
    names : sequence of str, optional
        Which photos of :data:`PHOTO_SOURCES` (default: all).

    Attributes
    ----------
    names : list[str]
        The photos used; ``ds[i][1]`` indexes this list.
    sources : list[PhotoSource]
        Where each comes from.
    """

    def __init__(self, size: int = 224, n: int | None = None, seed: int = 0, names: Sequence[str] | None = None) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < _MIN_SIDE:
            raise ValueError(f"size must be an int >= {_MIN_SIDE}, got {size!r}")
        by_name = {s.name: s for s in PHOTO_SOURCES}
        if names is None:
            names = list(by_name)
        unknown = [x for x in names if x not in by_name]
        if unknown or not names:
            raise ValueError(f"unknown photo names {unknown}; choose from {', '.join(by_name)}")
        self.size = size
        self.seed = int(seed)
        self.sources = [by_name[x] for x in names]
        self.names = [s.name for s in self.sources]
        self.n = 40 * len(self.names) if n is None else n
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        # resolve every file now: a missing package fails here, not in the middle of a dissection
        self.paths = [str(package_file(s.module, s.relpath, s.package, f"RealPhotos ({s.name})")) for s in self.sources]
        self._pixels: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.n

    def _photo(self, p: int) -> np.ndarray:
        if p not in self._pixels:
            self._pixels[p] = _read_rgb(self.paths[p], self.names[p])
        return self._pixels[p]

    def describe(self, i: int) -> dict:
        """Which photo item ``i`` shows, its crop box ``(x0, y0, x1, y1)`` in the photo's pixels, and the flip."""
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not -self.n <= int(i) < self.n:
            raise IndexError(f"RealPhotos index {i!r} out of range for {self.n} items")
        i = int(i) % self.n
        p, view = i % len(self.names), i // len(self.names)
        h, w = self._photo(p).shape[:2]
        side = min(h, w)
        if view == 0:
            crop, flip = side, False
            x0, y0 = (w - side) // 2, (h - side) // 2
        else:
            digest = hashlib.sha256(f"{self.seed}:{self.names[p]}:{view}".encode()).digest()
            u = np.frombuffer(digest[:12], dtype=np.uint32) / 2.0**32
            crop = max(_MIN_SIDE, int(round(side * (0.4 + 0.5 * u[0]))))
            x0, y0 = int(u[1] * (w - crop + 1)), int(u[2] * (h - crop + 1))
            flip = bool(digest[12] & 1)
        return {"photo": self.names[p], "index": p, "box": (x0, y0, x0 + crop, y0 + crop), "flip": flip}

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        info = self.describe(i)
        x0, y0, x1, y1 = info["box"]
        view = Image.fromarray(self._photo(info["index"])[y0:y1, x0:x1])
        view = view.resize((self.size, self.size), Image.BILINEAR, reducing_gap=None)
        arr = np.asarray(view, dtype=np.uint8)
        if info["flip"]:
            arr = arr[:, ::-1]
        image = torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(127.5).sub_(1.0)
        return image, info["index"]

    def __repr__(self) -> str:
        return f"RealPhotos(size={self.size}, n={self.n}, seed={self.seed}, {len(self.names)} photos)"
