"""``SceneDataset``: toy-world scenes as a torch Dataset, rendered on the fly.

Item ``i`` of ``SceneDataset(n, seed)`` is rendered from the random generator
``numpy.random.default_rng([seed, i])``, so it is identical every time, in any
process and in any DataLoader worker, and nothing is stored. Classes are
exactly balanced: item ``i`` has class ``i % len(CLASSES)``.

>>> from netdissect_widgets.toyworld import SceneDataset
>>> ds = SceneDataset(1000, seed=0, size=64)
>>> image, label, seg = ds[3]
>>> image.shape, image.dtype, label, seg.shape, seg.dtype
(torch.Size([3, 64, 64]), torch.float32, 3, torch.Size([4, 64, 64]), torch.int64)
"""
from __future__ import annotations

import operator

import numpy as np
import torch
from torch.utils.data import Dataset

from .concepts import CLASSES, CONCEPTS
from .render import check_size, render_scene


class SceneDataset(Dataset):
    """``n`` toy-world scenes: ``ds[i] -> (image, label, seg)``.

    Parameters
    ----------
    n : int
        Number of scenes (> 0).
    seed : int
        Non-negative; different seeds give independent datasets.
    size : int
        Image side: a multiple of 32 between 32 and 256 (default 64; 128 works too).

    Items
    -----
    image : float32 tensor (3, size, size), values in [-1, 1]
    label : int, index into :data:`CLASSES` (``i % len(CLASSES)``)
    seg : int64 tensor (4, size, size), concept ids for the channels object,
        part, material, color (0 = no label)

    Indices follow Python: ``-1`` is the last item; anything outside
    ``-n .. n-1`` raises ``IndexError``.
    """

    classes = CLASSES
    concepts = CONCEPTS

    def __init__(self, n: int, seed: int = 0, size: int = 64):
        try:
            n = operator.index(n)
            seed = operator.index(seed)
        except TypeError:
            raise TypeError(f"n and seed must be ints, got n={n!r}, seed={seed!r}") from None
        if n <= 0:
            raise ValueError(f"n must be a positive number of scenes, got {n}")
        if seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed}")
        self.n = n
        self.seed = seed
        self.size = check_size(size)

    def __len__(self) -> int:
        return self.n

    def _index(self, index) -> int:
        try:
            i = operator.index(index)
        except TypeError:
            raise TypeError(f"SceneDataset indices must be ints, got {type(index).__name__}") from None
        if not -self.n <= i < self.n:
            raise IndexError(f"index {index} out of range for SceneDataset of {self.n} scenes "
                             f"(valid: 0..{self.n - 1}, or -{self.n}..-1 from the end)")
        return i % self.n

    def label(self, index: int) -> int:
        """Class of item ``index`` without rendering it."""
        return self._index(index) % len(CLASSES)

    def labels(self) -> np.ndarray:
        """Classes of all items, ``(n,)`` int64, without rendering."""
        return np.arange(self.n, dtype=np.int64) % len(CLASSES)

    def render(self, index: int) -> tuple[np.ndarray, int, np.ndarray]:
        """Item ``index`` as numpy: ``(image uint8 (H, W, 3), label, seg int64 (4, H, W))``."""
        i = self._index(index)
        return render_scene((self.seed, i), self.size, label=i % len(CLASSES))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        image, label, seg = self.render(index)
        x = torch.from_numpy(image).permute(2, 0, 1).to(torch.float32)
        x = x.div_(127.5).sub_(1.0)
        return x, label, torch.from_numpy(seg)

    def __repr__(self) -> str:
        return f"SceneDataset(n={self.n}, seed={self.seed}, size={self.size})"
