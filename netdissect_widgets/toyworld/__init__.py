"""The embedded offline world: procedural scenes with pixel-exact labels, and toy models.

Everything the examples need runs offline from this package: a renderer of
small outdoor scenes (10 classes such as beach, street, harbor), exact
per-pixel labels for objects, parts, materials and colours, and (in
``loaders.py``) a classifier, a generator and a segmenter trained on them.

>>> from netdissect_widgets import toyworld
>>> ds = toyworld.SceneDataset(100, seed=0)          # 64x64 scenes, made on the fly
>>> image, label, seg = ds[0]                         # (3,64,64) in [-1,1], int, (4,64,64) int64
>>> toyworld.CLASSES[label], toyworld.CONCEPTS.names[int(seg[0, 0, 0])]
('beach', 'sky')

``GroundTruthSegmenter()`` hands the renderer's own labels to a dissection, so
units can be labelled without a trained segmenter.

Modules: ``concepts`` (concept ids and classes), ``render`` (one scene),
``dataset`` (torch Dataset), ``groundtruth`` (segmenter), ``gallery`` (README
pictures). Nothing heavy happens at import; the model loaders are imported on
first use.
"""
from __future__ import annotations

from .._lazy import lazy_exports


from .concepts import CLASSES, CONCEPTS, Concept, ConceptSet
from .render import render_scene

_LAZY = {
    "SceneDataset": "dataset",
    "GroundTruthSegmenter": "groundtruth",
    "load_classifier": "loaders",
    "load_generator": "loaders",
    "load_segmenter": "loaders",
}

__all__ = ["CLASSES", "CONCEPTS", "Concept", "ConceptSet", "render_scene", *_LAZY]


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)
