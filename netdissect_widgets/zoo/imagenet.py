"""The 1000 ImageNet class names, offline: torchvision keeps them in its weights' metadata.

``imagenet_classes()[i]`` names logit ``i`` of an ImageNet classifier (``zoo.IMAGENET_CLASSES``
is the same list). Reading them imports torchvision but downloads nothing.
"""
from __future__ import annotations

from functools import lru_cache

__all__ = ["imagenet_classes"]


@lru_cache(maxsize=1)
def _classes() -> tuple[str, ...]:
    from ..models import _import_torchvision

    tv = _import_torchvision()
    names = tuple(tv.models.ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
    if len(names) != 1000:
        raise RuntimeError(f"torchvision's ImageNet metadata lists {len(names)} classes, expected 1000")
    return names


def imagenet_classes() -> list[str]:
    """The ImageNet class names in logit order (a new list each call)."""
    return list(_classes())
