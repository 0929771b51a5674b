"""Render one toy-world scene with pixel-exact labels.

:func:`render_scene` is a pure function of its seed: the same seed gives the
same image and labels on every machine, and any size renders the same layout
(positions are fractions of the image side). Drawing is numpy-vectorised
(boolean masks over a pixel grid, see ``_canvas.py``), fast enough to make data
on the fly (``python -m netdissect_widgets.bench render``).

>>> from netdissect_widgets.toyworld import render_scene, CLASSES
>>> image, label, seg = render_scene(0)
>>> image.shape, image.dtype, seg.shape, seg.dtype
((64, 64, 3), dtype('uint8'), (4, 64, 64), dtype('int64'))
"""
from __future__ import annotations

import operator
from typing import Sequence, Union

import numpy as np

from . import _scenes
from .concepts import CLASSES

#: Image sizes the renderer accepts: multiples of 32 from 32 to 256.
MIN_SIZE, MAX_SIZE, SIZE_STEP = 32, 256, 32

Seed = Union[int, Sequence[int]]


def check_size(size: int) -> int:
    """Validate an image side; returns it as an int.

    Raises
    ------
    ValueError
        Unless ``size`` is a multiple of 32 between 32 and 256 (64 is the default,
        128 the other common choice).
    """
    try:
        s = operator.index(size)
    except TypeError:
        raise TypeError(f"size must be an int (e.g. 64 or 128), got {type(size).__name__}") from None
    if not (MIN_SIZE <= s <= MAX_SIZE and s % SIZE_STEP == 0):
        raise ValueError(f"size must be a multiple of {SIZE_STEP} between {MIN_SIZE} and {MAX_SIZE} "
                         f"(e.g. 64 or 128), got {size}")
    return s


def _rng(seed: Seed) -> np.random.Generator:
    if isinstance(seed, (list, tuple)):
        parts = [operator.index(x) for x in seed]
    else:
        try:
            parts = [operator.index(seed)]
        except TypeError:
            raise TypeError(f"seed must be a non-negative int or a tuple of them, "
                            f"got {type(seed).__name__}") from None
    if not parts or min(parts) < 0:
        raise ValueError(f"seed must be a non-negative int or a non-empty tuple of them, got {seed!r}")
    return np.random.default_rng(parts)


def render_scene(seed: Seed, size: int = 64, label: int | None = None
                 ) -> tuple[np.ndarray, int, np.ndarray]:
    """Render one scene.

    Parameters
    ----------
    seed : int or tuple of int
        Seeds the scene's random generator (``numpy.random.default_rng(seed)``);
        :class:`~.dataset.SceneDataset` passes ``(seed, index)``.
    size : int
        Image side in pixels: a multiple of 32 between 32 and 256 (default 64).
    label : int, optional
        Scene class (index into :data:`~.concepts.CLASSES`); drawn from the seed
        (uniformly) when omitted.

    Returns
    -------
    image : ndarray uint8 (size, size, 3)
    label : int
        The scene class.
    seg : ndarray int64 (4, size, size)
        Concept ids per pixel for the channels object, part, material, color
        (0 = no label). Every pixel has an object and a colour label.
    """
    size = check_size(size)
    rng = _rng(seed)
    if label is None:
        label = int(rng.integers(len(CLASSES)))
    else:
        try:
            label = operator.index(label)
        except TypeError:
            raise TypeError(f"label must be an int class index, got {type(label).__name__}") from None
        if not 0 <= label < len(CLASSES):
            raise ValueError(f"label must be in 0..{len(CLASSES) - 1} (toyworld.CLASSES), got {label}")
    image, seg, _ = _scenes.draw(label, size, rng)
    return image, label, seg
