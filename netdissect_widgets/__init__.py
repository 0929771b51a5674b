"""netdissect-widgets: interactive network dissection in JupyterLab.

Network dissection (Bau et al., PNAS 2020) asks what single units of a CNN do.
Each unit's activation map is thresholded at a high quantile (level 0.99 = the
top 1% of pixels), compared by IoU with a segmenter's concept masks, labelled
with its best concept, and then tested by intervening: ablate units of a
classifier and watch a class's accuracy fall, or switch units of a GAN on inside
a painted region and watch the concept appear there.

Data flows one way::

    models + data -> hooks -> stats -> Dissection -> widgets

The public names below are imported lazily, so ``import netdissect_widgets``
is cheap, has no side effects, and does not import torchvision or ipywidgets
until a name that needs them is used.
"""
from __future__ import annotations

from ._lazy import lazy_exports


__version__ = "0.1.0"

# public name -> submodule that defines it
_EXPORTS = {
    # instrumented models
    "Trace": "hooks",
    "TraceDict": "hooks",
    "InstrumentedModel": "hooks",
    "layer_names": "hooks",
    "get_layer": "hooks",
    "layer_output_shapes": "hooks",
    # statistics engine
    "Stat": "stats",
    "Mean": "stats",
    "Variance": "stats",
    "Quantile": "stats",
    "TopK": "stats",
    "Histogram": "stats",
    "IoUTally": "stats",
    "tally": "stats",
    # segmenters
    "Segmenter": "segment",
    "ColorSegmenter": "segment",
    "TorchvisionSegmenter": "segment",
    "check_segmenter": "segment",
    # data and real models
    "ZDataset": "datasets",
    "ImageFolderDataset": "datasets",
    "load_torchvision_model": "models",
    "user_cache_dir": "userdirs",
    # dissection
    "dissect": "dissection",
    "dissect_layers": "dissection",
    "Dissection": "dissection",
    "UnitLabel": "dissection",
    # interventions
    "class_accuracy": "intervene",
    "rank_units": "intervene",
    "ablation_curve": "intervene",
    "plot_ablation_curve": "intervene",
    "paint": "intervene",
    "concept_units": "intervene",
    "paint_effect": "intervene",
    "pgd_attack": "intervene",
    "unit_attack_effects": "intervene",
    "plot_attack_effects": "intervene",
    "importance_vs_iou": "intervene",
    "plot_importance_vs_iou": "intervene",
    # dissections of several layers
    "category_counts_by_layer": "dissection.layer_chart",
    "plot_categories_by_layer": "dissection.layer_chart",
    # widgets
    "UnitBrowser": "widgets",
    "AblationPanel": "widgets",
    "PaintCanvas": "widgets",
    "ConceptSummary": "widgets",
    "LayerBrowser": "widgets",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
