"""The segmentation prepared for counting a region's concepts: :class:`PixelLabels`.

Counting the concepts of a unit's region means, for every pixel of the region,
adding one to each concept among its ``L`` label channels. When the data hold
few distinct label *combinations*, each pixel gets one combination code instead
(:func:`combination_codes`), a region's codes are counted, and the counts of
codes become counts of concepts with one small matrix product: one key per pixel
instead of ``L``.

This module imports nothing of the package (numpy and torch only).
"""
from __future__ import annotations

import functools
from typing import Callable

import numpy as np
import torch

__all__ = ["PixelLabels", "combination_codes"]


class PixelLabels:
    """The segmentation, flat, prepared for counting: one combination code per pixel when the
    label combinations are few, so that counting a region's concepts costs one key per pixel
    instead of ``L``; else the concept ids ``(N*H*W, L)`` themselves.

    ``count(pix)`` counts the keys of pixels ``pix`` (``(n_keys,)``); per-unit counts of keys
    ``(U, n_keys)`` become per-concept counts with ``to_concepts``. ``concept_pixels``
    ``(C,)`` are the pixels of each concept (0 for concept 0). A pixel counts once per
    concept, however many of its label channels name it (as
    :class:`~netdissect_widgets.stats.IoUTally` does).

    ``find_codes(seg, n_concepts, max_table, max_codes)``, if given, finds the codes instead of
    :func:`combination_codes` (a backend's compiled loop; the same numbering).

    The codes are found in linear time, one label channel at a time: the pairs (code so far,
    next channel's id) present in the data get consecutive new codes (a presence table of
    ``codes x concepts`` entries, no sort).
    """

    MAX_KEYS = 1 << 22  # at most U * n_keys counters
    MAX_TABLE = 1 << 24  # at most this many (code, id) pairs in one presence table

    def __init__(self, seg: np.ndarray, n_concepts: int, n_units: int, device: torch.device,
                 find_codes: Callable | None = None) -> None:
        self._seg = seg  # (N, L, H, W)
        self.n_concepts = n_concepts
        self.device = device
        self.codes = None
        self.n_keys = n_concepts
        found = None
        pairs = False
        if seg.shape[1] >= 2 and find_codes is not None:  # a backend's faster way (same codes)
            found = find_codes(seg, n_concepts, self.MAX_TABLE, self.MAX_KEYS // max(1, n_units))
        if seg.shape[1] >= 2 and found is None:
            columns, size, pairs = _label_columns(seg, n_concepts)
            found = combination_codes(columns, size, self.MAX_TABLE, self.MAX_KEYS // max(1, n_units))
        if found is None:
            self.concept_pixels = np.bincount(self.ids.numpy().reshape(-1), minlength=n_concepts) if (
                device.type == "cpu") else torch.bincount(self.ids.reshape(-1).long(), minlength=n_concepts).cpu().numpy()
        else:
            codes, combos, key_pixels = found
            if pairs:  # back to one column per label channel
                combos = np.stack([combos & 255, combos >> 8], axis=2).reshape(len(combos), -1)
            self.codes = torch.from_numpy(codes).to(device)
            self.n_keys = len(combos)
            self.matrix = np.zeros((len(combos), n_concepts), dtype=np.int64)  # 1 where a key has a concept
            for c in range(combos.shape[1]):
                self.matrix[np.arange(len(combos)), combos[:, c]] = 1
            self.matrix[:, 0] = 0
            self.concept_pixels = key_pixels @ self.matrix
        self.concept_pixels[0] = 0

    @functools.cached_property
    def ids(self) -> torch.Tensor:
        """``(N*H*W, L)`` concept ids, a label repeated at a pixel kept in its first channel only."""
        flat = np.stack([self._seg[:, j].reshape(-1) for j in range(self._seg.shape[1])], axis=1)
        return torch.from_numpy(_once_per_pixel(flat)).to(self.device)

    def count(self, pix: torch.Tensor | np.ndarray) -> np.ndarray:
        """``(n_keys,)`` int64: how often each key occurs at the flat pixel indices ``pix``
        (a numpy array for tables on the CPU, else a tensor on their device)."""
        table = self.codes if self.codes is not None else self.ids
        if isinstance(pix, np.ndarray):
            return np.bincount(table.numpy().take(pix, axis=0).reshape(-1), minlength=self.n_keys)
        return torch.bincount(table.index_select(0, pix).reshape(-1), minlength=self.n_keys).cpu().numpy()

    def key_table(self) -> np.ndarray:
        """``(N*H*W, L)`` the keys counted per pixel, as a numpy array (CPU tables only)."""
        return self.codes.numpy()[:, None] if self.codes is not None else self.ids.numpy()

    def to_concepts(self, counts: np.ndarray) -> np.ndarray:
        return counts @ self.matrix if self.codes is not None else counts


def _once_per_pixel(flat: np.ndarray) -> np.ndarray:
    """``flat (P, L)`` with a label that repeats an earlier channel's label at the same pixel set to 0."""
    if flat.shape[1] < 2:
        return flat
    out = flat.copy()
    for c in range(1, flat.shape[1]):
        out[(flat[:, c : c + 1] == flat[:, :c]).any(axis=1), c] = 0
    return out


def _label_columns(seg: np.ndarray, n_concepts: int) -> tuple[list[np.ndarray], int, bool]:
    """The label channels of ``seg (N, L, H, W)`` as flat columns ``(N*H*W,)`` and the size of their
    value range; two uint8 channels become one uint16 column (``pairs``), halving the folds."""
    chans = [seg[:, j].reshape(-1) for j in range(seg.shape[1])]
    if seg.dtype == np.uint8 and len(chans) % 2 == 0:
        pairs = [chans[i].astype(np.uint16) | (chans[i + 1].astype(np.uint16) << 8) for i in range(0, len(chans), 2)]
        return pairs, 1 << 16, True
    return chans, n_concepts, False


def combination_codes(columns: list[np.ndarray], size: int, max_table: int, max_codes: int):
    """``(codes (P,) int32, combos (K, len(columns)), pixels (K,) int64)``: the distinct rows of
    the columns (values in ``0 .. size - 1``) numbered ``0..K-1``, each pixel's number and each
    number's pixel count; None when they are too many (> ``max_codes``).

    Linear time: each column's present values get consecutive numbers (a presence table and
    its running count, no sort), then the columns are folded in one at a time the same way.
    """
    last = len(columns) - 1
    code = combos = None  # combos (K, columns so far): the column values of each code
    for j, col in enumerate(columns):
        present = np.zeros(size, dtype=bool)
        present[col] = True
        values = np.flatnonzero(present)
        number = (np.cumsum(present, dtype=np.int32) - 1).take(col)  # take: faster than [col]
        if code is None:
            code, combos = number, values[:, None]
        else:
            if len(combos) * len(values) > max_table:
                return None
            code *= len(values)
            code += number
            combos = np.concatenate([np.repeat(combos, len(values), axis=0),
                                     np.tile(values, len(combos))[:, None]], axis=1)
        if j == last:
            pixels = torch.bincount(torch.from_numpy(code), minlength=len(combos)).numpy()  # no int64 copy
            kept = np.flatnonzero(pixels)
            pixels = pixels[kept]
        elif j > 0:
            kept = np.zeros(len(combos), dtype=bool)
            kept[code] = True
            kept = np.flatnonzero(kept)
        else:
            continue
        if len(kept) < len(combos):  # renumber the combinations present
            renumber = np.zeros(len(combos), dtype=np.int32)
            renumber[kept] = np.arange(len(kept), dtype=np.int32)
            code, combos = renumber.take(code), combos[kept]
    if len(combos) > max_codes:
        return None
    return code, combos, pixels
