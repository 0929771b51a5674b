"""Datasets that feed dissection: latent vectors for generators, image folders for classifiers.

Both are plain map-style datasets (``len(ds)``, ``ds[i]``) that work with
``torch.utils.data.DataLoader`` and with :func:`netdissect_widgets.stats.tally`.

* :class:`ZDataset` -- ``ds[i]`` is a standard-normal latent vector ``z`` of
  shape ``(dim,)``. Item ``i`` depends only on ``(seed, i)``, not on the order
  of reads, the batch size or the number of workers, so "image 1234" of a
  generator dissection can be regenerated later from its index alone::

      zs = ZDataset(10_000, dim=128, seed=0)
      z = zs[1234]                      # always the same vector

* :class:`ImageFolderDataset` -- every image file under a folder (sorted paths,
  sub-folders included), resized so the shorter side is ``size`` and
  centre-cropped to ``size x size``, as ``(image, 0)`` with ``image`` float32
  ``(3, size, size)`` in [-1, 1] (the package's image convention)::

      ds = ImageFolderDataset("my_photos/", size=224)
      image, _ = ds[0]
      ds.paths[0]                       # which file that was
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

__all__ = ["ZDataset", "ImageFolderDataset", "IMAGE_EXTENSIONS"]

#: File name endings (lower case) that :class:`ImageFolderDataset` reads by default.
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _index(i: object, n: int, what: str) -> int:
    if isinstance(i, torch.Tensor) and i.numel() == 1:
        i = i.item()
    if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
        raise TypeError(f"{what} index must be an int, got {type(i).__name__}")
    i = int(i)
    if not -n <= i < n:
        raise IndexError(f"{what} index {i} out of range for {n} items (valid: 0..{n - 1})")
    return i % n


class ZDataset(torch.utils.data.Dataset):
    """Standard-normal latent vectors, each a pure function of ``(seed, index)``.

    Parameters
    ----------
    n : int
        Number of vectors (``len(ds)``).
    dim : int
        Size of each vector.
    seed : int
        Seed of the whole dataset; two datasets with the same seed agree on every index.

    Notes
    -----
    Item ``i`` is drawn by a ``torch.Generator`` seeded with the first 8 bytes of
    ``sha256(f"{seed}:{i}")``, so it does not depend on which other items were
    read, nor on the process.
    """

    def __init__(self, n: int, dim: int, seed: int = 0) -> None:
        self.n = _positive_int(n, "n")
        self.dim = _positive_int(dim, "dim")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ValueError(f"seed must be an int, got {seed!r}")
        self.seed = int(seed)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        i = _index(i, self.n, "ZDataset")
        digest = hashlib.sha256(f"{self.seed}:{i}".encode()).digest()
        gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
        return torch.randn(self.dim, generator=gen, dtype=torch.float32)

    def __repr__(self) -> str:
        return f"ZDataset(n={self.n}, dim={self.dim}, seed={self.seed})"


class ImageFolderDataset(torch.utils.data.Dataset):
    """Every image file under ``folder``, as ``(image in [-1, 1], 0)``.

    Parameters
    ----------
    folder : str or PathLike
        Folder to search (sub-folders included).
    size : int
        Output side: the shorter side is resized to ``size`` (bilinear, antialiased)
        and the centre ``size x size`` square is kept.
    extensions : iterable of str
        File name endings to read (case-insensitive).

    Attributes
    ----------
    paths : list[pathlib.Path]
        The image files, sorted; ``ds[i]`` is ``paths[i]``.

    Raises
    ------
    FileNotFoundError
        ``folder`` does not exist.
    NotADirectoryError
        ``folder`` is a file.
    ValueError
        No image file found, or a bad ``size``; reading an image that PIL cannot
        decode raises ValueError naming that file.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        size: int = 224,
        extensions: Iterable[str] = IMAGE_EXTENSIONS,
    ) -> None:
        self.folder = Path(folder)
        self.size = _positive_int(size, "size")
        if isinstance(extensions, str):
            extensions = [extensions]
        exts = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)
        if not exts:
            raise ValueError("extensions must name at least one file ending, e.g. ('.png', '.jpg')")
        self.extensions = exts
        if not self.folder.exists():
            raise FileNotFoundError(f"image folder not found: {str(self.folder)!r}")
        if not self.folder.is_dir():
            raise NotADirectoryError(f"expected a folder of images, got a file: {str(self.folder)!r}")
        self.paths = sorted(
            p for p in self.folder.rglob("*") if p.is_file() and p.name.lower().endswith(exts)
        )
        if not self.paths:
            raise ValueError(
                f"no image files in {str(self.folder)!r} (searched sub-folders too, for files ending in "
                f"{', '.join(exts)}); put images there or pass extensions=..."
            )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        path = self.paths[_index(i, len(self.paths), "ImageFolderDataset")]
        try:
            with Image.open(path) as img:
                img = img.convert("RGB")
                w, h = img.size
                scale = self.size / min(w, h)
                nw, nh = max(self.size, round(w * scale)), max(self.size, round(h * scale))
                img = img.resize((nw, nh), Image.BILINEAR)
                left, top = (nw - self.size) // 2, (nh - self.size) // 2
                img = img.crop((left, top, left + self.size, top + self.size))
                arr = np.asarray(img, dtype=np.uint8)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise ValueError(f"cannot read image {str(path)!r}: {type(exc).__name__}: {exc}") from exc
        image = torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(127.5).sub_(1.0)
        return image, 0

    def __repr__(self) -> str:
        return f"ImageFolderDataset({str(self.folder)!r}, size={self.size}, {len(self.paths)} images)"
