"""Input checks shared by the widgets: is this a Dissection, and of this model's layer?"""
from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["check_dissection", "check_same_model"]

_NEEDED = ("layer", "labels", "num_units", "iou", "levels", "concepts", "categories")


def check_dissection(dissection: Any, widget: str) -> None:
    """Raise ``TypeError`` unless ``dissection`` looks like a :class:`~netdissect_widgets.Dissection`."""
    missing = [name for name in _NEEDED if not hasattr(dissection, name)]
    if missing:
        raise TypeError(
            f"{widget} expects a Dissection (from netdissect_widgets.dissect(...) or "
            f"Dissection.load(folder)); got {type(dissection).__name__} without {', '.join(missing)}"
        )


def check_same_model(model: nn.Module, layer: str, dissection: Any, widget: str) -> None:
    """Raise ``ValueError`` if ``dissection`` was computed on another layer or another model.

    The layer names must be equal and ``dissection.model_fingerprint`` must equal
    ``_fingerprint.model_fingerprint(model)`` (same weights).
    """
    from .._fingerprint import model_fingerprint

    check_dissection(dissection, widget)
    if dissection.layer != layer:
        raise ValueError(
            f"{widget}: the dissection is of layer {dissection.layer!r} but layer {layer!r} was given; "
            f"pass layer={dissection.layer!r} or dissect layer {layer!r} first"
        )
    expected = getattr(dissection, "model_fingerprint", None)
    actual = model_fingerprint(model)
    if expected != actual:
        raise ValueError(
            f"{widget}: the dissection was computed on another model (model fingerprint "
            f"{str(expected)[:12]}... != {actual[:12]}... of the model given); dissect this model "
            "(netdissect_widgets.dissect(model, layer, ...)) or pass the model that was dissected"
        )
