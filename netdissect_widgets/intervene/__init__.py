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
    effect = paint_effect(gan, "layer2", z, trees, mask, segmenter=seg, concept="tree",
                          levels=dissection.levels)
    sweep = paint_layer_sweep(gan, [d1, d2, d3], seg, z)        # where does painting work?
    makers = causal_units(gan, "layer2", seg, "tree", d2.levels).top(20)  # units that make trees
    context = paint_context(gan, "layer2", d2, seg, z, "tree")  # by what is under the stroke
    z = invert(gan, photos); r = refine(gan, "layer2", z, photos)  # paint on real images

Adversarial attacks through units (:mod:`.adversarial`) and importance vs
interpretability (:mod:`.importance`), as in the paper::

    attack = pgd_attack(model, images, target=3, eps=0.25)       # targeted L-inf PGD
    effects = unit_attack_effects(model, "conv5", images, attack.images, source=0, target=3,
                                  dissection=d, drops=unit_drops(model, "conv5", rank_set))
    table = importance_vs_iou(drops, d, top_k=10); plot_importance_vs_iou(table)

Units are numbered from 0. Everything but the attack runs without gradients, in eval mode, on
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
from .adversarial import AttackEffects, AttackResult, pgd_attack, plot_attack_effects, unit_attack_effects
from .importance import ImportanceTable, important_units, importance_vs_iou, plot_importance_vs_iou
from .causal import CausalUnits, causal_units
from .generator import Stroke, concept_units, paint, paint_effect, paint_strokes
from .invert import invert, psnr, refine
from .paint_measures import ContextResult, LayerSweep, paint_context, paint_layer_sweep

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
    "causal_units",
    "CausalUnits",
    "pgd_attack",
    "AttackResult",
    "unit_attack_effects",
    "AttackEffects",
    "plot_attack_effects",
    "important_units",
    "importance_vs_iou",
    "ImportanceTable",
    "plot_importance_vs_iou",
    "paint_layer_sweep",
    "LayerSweep",
    "paint_context",
    "ContextResult",
    "invert",
    "refine",
    "psnr",
]
