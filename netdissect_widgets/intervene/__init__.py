"""Interventions: test what units do by switching them off (classifiers) or on (generators).

Network dissection labels units by correlation; interventions check causation.

Classifiers (:mod:`.classifier`): ablate units (activation set to 0) and measure
each class's balanced accuracy ``(recall + TNR) / 2``::

    acc = class_accuracy(model, data)                        # (classes,)
    acc_off = class_accuracy(model, data, ablate={"conv5": [3, 17]})
    units, drops = rank_units(model, "conv5", held_out, cls=2)
    removed = ablation_curve(model, "conv5", data, 2, ranking=units, mode="remove")
    kept = ablation_curve(model, "conv5", data, 2, ranking=units, mode="keep")
    plot_ablation_curve([removed, kept])

Generators (:mod:`.generator`): paint units on or off inside a region,
``x' = x * (1 - a) + a * v`` with ``a`` the mask max-pooled to the layer::

    trees = concept_units(dissection, "tree", 8)
    images = paint(gan, "layer2", z, trees, mask, mode="insert", levels=dissection.levels)
    images = paint_strokes(gan, "layer2", z, [Stroke(trees, mask), Stroke(clouds, sky, "remove")],
                           levels=dissection.levels)           # many strokes, one run
    effect = paint_effect(gan, "layer4", z, trees, mask, segmenter=seg, concept="tree",
                          levels=dissection.levels)

Units are numbered from 0. Everything runs without gradients, in eval mode, on
the model's own device, and removes its hooks when done.
"""
from __future__ import annotations

from .classifier import (
    UnitDrops,
    ablation_curve,
    balanced_accuracy,
    class_accuracy,
    masked_accuracy,
    plot_ablation_curve,
    predict,
    rank_units,
    unit_drops,
)
from .generator import Stroke, concept_units, paint, paint_effect, paint_strokes

__all__ = [
    "predict",
    "class_accuracy",
    "balanced_accuracy",
    "unit_drops",
    "UnitDrops",
    "masked_accuracy",
    "rank_units",
    "ablation_curve",
    "plot_ablation_curve",
    "Stroke",
    "paint_strokes",
    "paint",
    "concept_units",
    "paint_effect",
]
