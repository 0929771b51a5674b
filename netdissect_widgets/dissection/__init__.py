"""Network dissection of one layer: what concept does each unit detect?

The package is ``netdissect_widgets.dissection``; its entry point is the function
``netdissect_widgets.dissect`` (also ``netdissect_widgets.dissection.dissect``).

>>> d = dissect(model, "conv5", dataset, segmenter)          # doctest: +SKIP
>>> print(d.summary())                                       # doctest: +SKIP
>>> d.unit_strip(12)       # unit 12 (0-based): top images, region outlined  # doctest: +SKIP
>>> d.to_html("report/"); d.save("dissection/")              # doctest: +SKIP

The method (Bau et al., PNAS 2020): each unit's activation maps are upsampled
to the segmentation resolution and thresholded at the unit's **level**, the
value at quantile ``level`` of all its activations over the dataset (**level
0.99 = the top 1% of pixels**). The region above the level is compared with
each concept mask of a segmenter by IoU over the whole dataset; the unit's label
is its best concept, a match when IoU > 0.04.

How it is computed (fast and exact): one model pass stores the layer's
low-resolution activations and the segmentations; the levels (exact order
statistics) and IoUs are then computed unit by unit from the stored tensors,
upsampling only the images whose low-resolution maximum can reach the level
(bilinear upsampling never exceeds the maximum of the values it mixes). See
:mod:`._run` (the run), :mod:`._pass` (the pass), :mod:`._cache` (the cache),
:mod:`._stats` (the statistics) and :mod:`.backends` (how they are computed:
``backend="tensor"`` in tensor operations on any device, ``"numba"`` as compiled
CPU loops, ``"auto"`` the fastest available; bit-identical results).

What comes from :mod:`netdissect_widgets.stats`: the upsampler
(``stats._bilinear.Upsampler``, the same one behind ``stats.active_pixels`` and
``IoUTally.add_activations``) and the top-k images (``stats.TopK``). The levels
are exact order statistics of the stored pass rather than the streaming
``stats.Quantile`` because the IoU must revisit every activation anyway (the
region depends on the level), so the activations are stored, and from them the
exact quantile costs about as much as the IoU itself. ``Quantile`` (rank error
<= 6e-4, bounded memory, mergeable) is the tool when the activations are not
kept: one streaming pass over data too large to store, or partial results
merged across workers or runs.

Modules: :mod:`._run` (:func:`dissect`), :mod:`.result` (:class:`Dissection`,
:class:`UnitLabel`), :mod:`.render` (pictures), :mod:`.report` (HTML).
"""
from __future__ import annotations

from ._run import dissect, dissect_layers
from .result import Dissection, UnitLabel

__all__ = ["dissect", "dissect_layers", "Dissection", "UnitLabel"]
