"""The embedded toy world as ready-made dissection inputs (used by the CLI and the benchmark).

``toy_setup("toy-classifier", ...)`` gives the trained toy classifier, a
``SceneDataset`` and a segmenter; ``toy_setup("toy-gan", ...)`` the trained
generator, a ``ZDataset`` of latent vectors and a segmenter for its outputs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

MODELS = {"toy-classifier": "conv5", "toy-gan": "layer4"}
SEGMENTERS = ("truth", "toy", "color")


@dataclass
class ToySetup:
    model: nn.Module
    layer: str
    data: Any
    segmenter: Any
    images: str


def make_segmenter(name: str, model_name: str, device: str) -> Any:
    """``truth`` (the renderer's labels; classifier only), ``toy`` (trained FCN) or ``color``."""
    from .. import toyworld

    if name == "truth":
        if model_name == "toy-gan":
            raise ValueError(
                "--segmenter truth reads the renderer's labels, which generated images do not have; "
                "use --segmenter toy (the trained toy segmenter) or color for toy-gan"
            )
        return toyworld.GroundTruthSegmenter()
    if name == "toy":
        return toyworld.load_segmenter(device)
    if name == "color":
        from ..segment import ColorSegmenter

        return ColorSegmenter()
    raise ValueError(f"unknown segmenter {name!r}; choose one of {', '.join(SEGMENTERS)}")


def toy_setup(model_name: str, n_images: int, segmenter: str | None = None, device: str = "cpu",
              seed: int = 0) -> ToySetup:
    """Model, default layer, data and segmenter for ``toy-classifier`` or ``toy-gan``."""
    from .. import toyworld
    from ..datasets import ZDataset

    if model_name not in MODELS:
        raise ValueError(f"unknown model {model_name!r}; choose one of {', '.join(MODELS)}")
    segmenter = segmenter or ("truth" if model_name == "toy-classifier" else "toy")
    if segmenter == "truth" and model_name == "toy-gan":
        make_segmenter(segmenter, model_name, device)  # raises the explanation, before loading anything
    if model_name == "toy-classifier":
        model = toyworld.load_classifier(device)
        data = toyworld.SceneDataset(n_images, seed=seed)
        images = "input"
    else:
        model = toyworld.load_generator(device)
        data = ZDataset(n_images, model.z_dim, seed=seed)
        images = "output"
    seg = make_segmenter(segmenter, model_name, device)
    return ToySetup(model, MODELS[model_name], data, seg, images)
