"""The segmenter interface, and the check that a segmenter keeps to it.

A *segmenter* is any object with three members:

``concepts``
    list of concept names; index = concept id; ``concepts[0] == "-"`` means
    "no label".
``categories``
    list, same length: the category of each concept, one of ``"object"``,
    ``"part"``, ``"material"``, ``"color"`` (``"-"`` for id 0).
``segment(images)``
    ``(N, 3, H, W)`` float images in [-1, 1] -> ``(N, L, H', W')`` int64 concept
    ids. ``L`` label channels let one pixel carry several concepts (an object, a
    part, a material and a colour); 0 = no label.

Labels *read from the data* (ground truth, e.g. the toy world's renderer draws
them beside each image) are another thing: a :class:`DataLabels` has the same
``concepts`` and ``categories`` and ``segment_batch(batch) -> seg``, which takes
them from a batch of the dataset. It cannot label images it has not seen (a
generator's output), so it has no ``segment``. :func:`reads_labels_from_data`
tells the two apart; ``dissect`` reads the labels from the data when it can.

A segmenter may also offer ``concept_scores(images, concept_id) -> (N, H, W)``:
the probability of one concept at every pixel, differentiable. Nothing requires
it; :func:`netdissect_widgets.intervene.causal_units` (units chosen by what they
make) needs it, and the toy world's segmenter has it.

No base class is needed: :class:`Segmenter` and :class:`DataLabels` are
``typing.Protocol`` s, so ``isinstance(obj, Segmenter)`` is true for any object
that has the members.
:func:`check_segmenter` checks the members and (optionally) one returned
segmentation, and raises a ValueError that names the segmenter and says what
was expected; :func:`netdissect_widgets.dissect` calls it on the first batch.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import torch

__all__ = ["Segmenter", "DataLabels", "check_segmenter", "reads_labels_from_data", "CATEGORIES"]

#: Category names a concept may have ("-" only for concept 0, "no label").
CATEGORIES: tuple[str, ...] = ("object", "part", "material", "color")


@runtime_checkable
class Segmenter(Protocol):
    """Anything with ``concepts``, ``categories`` and ``segment(images)`` (see the module docstring)."""

    concepts: list[str]
    categories: list[str]

    def segment(self, images: torch.Tensor) -> torch.Tensor:
        """Label ``(N, 3, H, W)`` images in [-1, 1] with ``(N, L, H', W')`` int64 concept ids (0 = none)."""
        ...


@runtime_checkable
class DataLabels(Protocol):
    """Labels read from the data, not computed from images: ``concepts``, ``categories`` and
    ``segment_batch(batch)`` (see the module docstring)."""

    concepts: list[str]
    categories: list[str]

    def segment_batch(self, batch: Any) -> torch.Tensor:
        """The ``(N, L, H, W)`` int64 concept ids (0 = none) that a batch of the dataset carries."""
        ...


def reads_labels_from_data(obj: Any) -> bool:
    """True for a :class:`DataLabels` (it has ``segment_batch(batch)``): dissect then takes the labels
    from each batch of a classifier's data instead of segmenting the images."""
    return callable(getattr(obj, "segment_batch", None))


def _name_of(segmenter: Any, name: str | None) -> str:
    if name is not None:
        return str(name)
    return type(segmenter).__name__


def _check_members(segmenter: Any, who: str) -> int:
    """Check ``concepts`` / ``categories`` / ``segment``; return the number of concepts."""
    missing = [m for m in ("concepts", "categories") if not hasattr(segmenter, m)]
    if missing:
        raise ValueError(
            f"{who} is not a segmenter: it has no {' / '.join(missing)} attribute. A segmenter needs "
            f"`concepts` (names, concepts[0] == '-'), `categories` (one per concept) and "
            f"`segment(images) -> (N, L, H, W) int64`."
        )
    has_segment = callable(getattr(segmenter, "segment", None))
    if not has_segment and not callable(getattr(segmenter, "segment_batch", None)):
        raise ValueError(
            f"{who} is not a segmenter: it has no segment(images) method "
            f"(expected segment(images (N, 3, H, W) in [-1, 1]) -> (N, L, H, W) int64), nor "
            f"segment_batch(batch) (labels read from the data)."
        )
    concepts = segmenter.concepts
    if isinstance(concepts, str) or not isinstance(concepts, Sequence):
        raise ValueError(f"{who}.concepts must be a list of str, got {type(concepts).__name__}")
    bad = [(i, c) for i, c in enumerate(concepts) if not isinstance(c, str)]
    if bad:
        i, c = bad[0]
        raise ValueError(f"{who}.concepts must be a list of str; concepts[{i}] is {type(c).__name__} {c!r}")
    if len(concepts) < 2 or concepts[0] != "-":
        first = repr(concepts[0]) if concepts else "nothing (empty list)"
        raise ValueError(
            f"{who}.concepts must start with '-' (concept id 0 = no label) followed by at least one "
            f"concept; got {first} first and {len(concepts)} names"
        )
    seen: dict[str, int] = {}
    for i, c in enumerate(concepts):
        if c in seen:
            raise ValueError(
                f"{who}.concepts has {c!r} twice (ids {seen[c]} and {i}); concept names must be unique"
            )
        seen[c] = i
    categories = segmenter.categories
    if isinstance(categories, str) or not isinstance(categories, Sequence):
        raise ValueError(f"{who}.categories must be a list of str, got {type(categories).__name__}")
    if len(categories) != len(concepts):
        raise ValueError(
            f"{who}.categories must have one entry per concept ({len(concepts)}), got {len(categories)}"
        )
    if categories[0] != "-":
        raise ValueError(f"{who}.categories[0] must be '-' (the category of 'no label'), got {categories[0]!r}")
    wrong = [(i, c) for i, c in enumerate(categories) if i > 0 and c not in CATEGORIES]
    if wrong:
        i, c = wrong[0]
        raise ValueError(
            f"{who}.categories[{i}] (concept {concepts[i]!r}) is {c!r}; allowed: {', '.join(CATEGORIES)}"
        )
    return len(concepts)


def check_segmenter(
    segmenter: Any,
    seg: Any = None,
    images: torch.Tensor | None = None,
    name: str | None = None,
) -> None:
    """Check that ``segmenter`` follows the :class:`Segmenter` or the :class:`DataLabels` interface,
    and optionally one result.

    Parameters
    ----------
    segmenter : object
        The segmenter (or labels read from the data) to check.
    seg : Tensor, optional
        A segmentation it returned; checked to be int64 ``(N, L, H, W)`` with ids
        in ``[0, len(segmenter.concepts))``.
    images : Tensor, optional
        The ``(N, 3, H, W)`` images ``seg`` was computed from; ``seg`` must have the same ``N``.
    name : str, optional
        How to call the segmenter in error messages (default: its class name).

    Raises
    ------
    ValueError
        Naming the segmenter and saying what was expected.
    """
    who = _name_of(segmenter, name)
    n_concepts = _check_members(segmenter, who)
    if seg is None:
        return
    if not isinstance(seg, torch.Tensor):
        raise ValueError(
            f"{who}.segment returned {type(seg).__name__}; expected an int64 torch.Tensor (N, L, H, W)"
        )
    if seg.dtype != torch.int64:
        raise ValueError(
            f"{who}.segment returned dtype {seg.dtype}; expected torch.int64 concept ids "
            f"(convert with .long())"
        )
    if seg.ndim != 4:
        raise ValueError(
            f"{who}.segment returned shape {tuple(seg.shape)}; expected 4 dims (N, L, H, W) "
            f"(use seg[:, None] for a single label channel)"
        )
    if images is not None and seg.shape[0] != images.shape[0]:
        raise ValueError(
            f"{who}.segment returned {seg.shape[0]} segmentations for {images.shape[0]} images; "
            f"expected one per image (shape (N, L, H, W) with N = {images.shape[0]})"
        )
    if min(seg.shape[1:]) < 1:
        raise ValueError(f"{who}.segment returned an empty segmentation of shape {tuple(seg.shape)}")
    if seg.numel():
        lo, hi = (int(v) for v in torch.aminmax(seg))  # one pass
        if lo < 0 or hi >= n_concepts:
            raise ValueError(
                f"{who}.segment returned concept ids in [{lo}, {hi}]; expected ids in [0, {n_concepts - 1}] "
                f"(0 = no label, {n_concepts} concepts)"
            )
