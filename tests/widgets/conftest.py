"""Real objects for the widget tests: tiny models dissected by the real ``dissect()``.

Each model is small enough that its dissection runs in about a second on a
loaded 2-core machine; the segmenter is the real :class:`ColorSegmenter`, and
the images are random coloured rectangles so that units do differ in colour.
"""
from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

CLASSES = ["reddish", "greenish", "bluish"]


def _scene(gen: torch.Generator, size: int = 32) -> tuple[torch.Tensor, int]:
    """A random image in [-1, 1] (background + 2 rectangles) and its dominant-channel class."""
    image = torch.rand(3, 1, 1, generator=gen).expand(3, size, size).clone()
    for _ in range(2):
        y, x = torch.randint(0, size - 8, (2,), generator=gen).tolist()
        h, w = torch.randint(6, 16, (2,), generator=gen).tolist()
        image[:, y:y + h, x:x + w] = torch.rand(3, 1, 1, generator=gen)
    label = int(image.mean(dim=(1, 2)).argmax())
    return image * 2 - 1, label


class SceneList(torch.utils.data.Dataset):
    """``ds[i] -> (image (3, 32, 32) in [-1, 1], label)``, deterministic."""

    classes = CLASSES

    def __init__(self, n: int, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.items = [_scene(gen) for _ in range(n)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]


def tiny_classifier(units: int = 12, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(OrderedDict(
        conv=nn.Conv2d(3, units, 3, padding=1),
        relu=nn.ReLU(),
        pool=nn.AdaptiveAvgPool2d(1),
        flat=nn.Flatten(),
        fc=nn.Linear(units, len(CLASSES)),
    )).eval()


class TinyGenerator(nn.Sequential):
    """``z (N, 8) -> image (N, 3, 16, 16)`` in [-1, 1]; layer ``layer2`` has 16 units at 8x8."""

    def __init__(self, z_dim: int = 8, seed: int = 0) -> None:
        torch.manual_seed(seed)
        super().__init__(OrderedDict(
            fc=nn.Linear(z_dim, 16 * 4 * 4),
            unflatten=nn.Unflatten(1, (16, 4, 4)),
            layer1=nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU()),
            layer2=nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU()),
            output=nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(16, 3, 3, padding=1), nn.Tanh()),
        ))
        self.z_dim = z_dim
        self.eval()


@pytest.fixture(scope="session")
def scenes():
    return SceneList(48, seed=1)


@pytest.fixture(scope="session")
def classifier():
    return tiny_classifier()


@pytest.fixture(scope="session")
def classifier_dissection(classifier, scenes):
    from netdissect_widgets.dissection import dissect
    from netdissect_widgets.segment import ColorSegmenter

    return dissect(classifier, "relu", scenes, ColorSegmenter(), progress=False, k=8, n_show=5,
                   thumb_size=32, batch_size=16)


@pytest.fixture(scope="session")
def generator():
    return TinyGenerator()


@pytest.fixture(scope="session")
def generator_dissection(generator):
    from netdissect_widgets.datasets import ZDataset
    from netdissect_widgets.dissection import dissect
    from netdissect_widgets.segment import ColorSegmenter

    return dissect(generator, "layer2", ZDataset(48, generator.z_dim, seed=0), ColorSegmenter(), images="output",
                   progress=False, k=8, n_show=5, thumb_size=16, batch_size=16)


class MarkupColorSegmenter:
    """The real ColorSegmenter with HTML-like concept names, to test escaping."""

    def __init__(self) -> None:
        from netdissect_widgets.segment import ColorSegmenter

        self._inner = ColorSegmenter()
        self.concepts = ["-"] + [f"<b>{c}</b>&" for c in self._inner.concepts[1:]]
        self.categories = list(self._inner.categories)

    def segment(self, images: torch.Tensor) -> torch.Tensor:
        return self._inner.segment(images)


@pytest.fixture(scope="session")
def markup_dissection(classifier, scenes):
    from netdissect_widgets.dissection import dissect

    return dissect(classifier, "relu", scenes, MarkupColorSegmenter(), progress=False, k=8, n_show=5,
                   thumb_size=32, batch_size=16)
