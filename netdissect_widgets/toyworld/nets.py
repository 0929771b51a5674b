"""Architectures of the toy world's three small models.

The classifier and the generator are built so that a user can address their
layers by name, the way the paper addresses VGG16's ``conv5_3`` or ProGAN's
``layer4``:

``ToyClassifier`` (VGG-like, 64x64 input, ~200 MFLOP per image)::

    conv1  32 units @ 64x64   (Conv-BN-ReLU; the module's output is post-ReLU)
    pool1                       max-pool to 32x32
    conv2  64 units @ 32x32
    pool2                       16x16
    conv3 128 units @ 16x16
    pool3                       8x8
    conv4 256 units @ 8x8
    conv5 256 units @ 8x8     <- the layer to dissect
    fc                          global average pool + linear -> class logits

``ToyGenerator`` (ProGAN-style names, z -> image in [-1, 1])::

    layer1 256 units @ 4x4    (z seen as a 1x1 map, 4x4 transposed conv)
    layer2 256 units @ 8x8    (each further layer: 2x nearest upsample, Conv-BN-ReLU)
    layer3 128 units @ 16x16
    layer4 128 units @ 32x32  <- the layer GAN-paint edits
    layer5  32 units @ 64x64
    output                      Conv to RGB + tanh

``ToyDiscriminator`` is only used for training the generator (spectral norm,
no batch norm). ``SegmenterNet`` is a small U-Net with one head per label
channel (object / part / material / colour); :mod:`.segmenter` wraps it into
the project's segmenter interface.

Nothing here loads weights; :mod:`.loaders` does that.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

CLASSIFIER_WIDTHS = (32, 64, 128, 256, 256)
GENERATOR_WIDTHS = (256, 256, 128, 128, 32)
DEFAULT_Z_DIM = 128


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            bn=nn.BatchNorm2d(cout),
            relu=nn.ReLU(inplace=True),
        )
    )


class ToyClassifier(nn.Sequential):
    """VGG-like scene classifier for 64x64 images in [-1, 1].

    Parameters
    ----------
    num_classes : int
        Number of scene classes (``len(toyworld.CLASSES)``).
    widths : sequence of 5 ints
        Units of ``conv1`` ... ``conv5``.
    """

    def __init__(self, num_classes: int, widths: Sequence[int] = CLASSIFIER_WIDTHS) -> None:
        if len(widths) != 5:
            raise ValueError(f"widths must list 5 layer widths (conv1..conv5), got {list(widths)}")
        w1, w2, w3, w4, w5 = (int(w) for w in widths)
        super().__init__(
            OrderedDict(
                conv1=_conv_bn_relu(3, w1),
                pool1=nn.MaxPool2d(2),
                conv2=_conv_bn_relu(w1, w2),
                pool2=nn.MaxPool2d(2),
                conv3=_conv_bn_relu(w2, w3),
                pool3=nn.MaxPool2d(2),
                conv4=_conv_bn_relu(w3, w4),
                conv5=_conv_bn_relu(w4, w5),
                fc=nn.Sequential(
                    OrderedDict(
                        pool=nn.AdaptiveAvgPool2d(1),
                        flatten=nn.Flatten(),
                        linear=nn.Linear(w5, num_classes),
                    )
                ),
            )
        )
        self.num_classes = int(num_classes)


class _Upsample(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            OrderedDict(
                upsample=nn.Upsample(scale_factor=2, mode="nearest"),
                conv=nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                bn=nn.BatchNorm2d(cout),
                relu=nn.ReLU(inplace=True),
            )
        )


class ToyGenerator(nn.Sequential):
    """Progressive-style GAN generator: ``z (N, z_dim)`` -> image ``(N, 3, 64, 64)`` in [-1, 1].

    Parameters
    ----------
    z_dim : int
        Size of the latent vector; exposed as ``.z_dim``.
    widths : sequence of 5 ints
        Units of ``layer1`` (4x4) ... ``layer5`` (64x64).
    """

    def __init__(self, z_dim: int = DEFAULT_Z_DIM, widths: Sequence[int] = GENERATOR_WIDTHS) -> None:
        if len(widths) != 5:
            raise ValueError(f"widths must list 5 layer widths (layer1..layer5), got {list(widths)}")
        w = [int(v) for v in widths]
        layers: OrderedDict[str, nn.Module] = OrderedDict(
            layer1=nn.Sequential(
                OrderedDict(
                    unflatten=nn.Unflatten(1, (int(z_dim), 1, 1)),
                    conv=nn.ConvTranspose2d(int(z_dim), w[0], 4, bias=False),
                    bn=nn.BatchNorm2d(w[0]),
                    relu=nn.ReLU(inplace=True),
                )
            )
        )
        for i in range(1, 5):
            layers[f"layer{i + 1}"] = _Upsample(w[i - 1], w[i])
        layers["output"] = nn.Sequential(
            OrderedDict(conv=nn.Conv2d(w[4], 3, 3, padding=1), tanh=nn.Tanh())
        )
        super().__init__(layers)
        self.z_dim = int(z_dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if z.dim() == 4 and z.shape[2:] == (1, 1):
            z = z.flatten(1)
        if z.dim() != 2 or z.shape[1] != self.z_dim:
            raise ValueError(
                f"expected z of shape (N, {self.z_dim}) (or (N, {self.z_dim}, 1, 1)), got {tuple(z.shape)}"
            )
        return super().forward(z)


class ToyDiscriminator(nn.Module):
    """DCGAN-style critic with spectral norm (training only; not shipped).

    Each stage halves the resolution with a 4x4 stride-2 convolution (64 -> 32 ->
    16 -> 8 -> 4); the last three stages add a 3x3 convolution.
    """

    def __init__(self, widths: Sequence[int] = (64, 128, 256, 512)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for i, cout in enumerate(widths):
            layers += [spectral_norm(nn.Conv2d(cin, cout, 4, stride=2, padding=1)), nn.LeakyReLU(0.1, inplace=True)]
            if i > 0:
                layers += [spectral_norm(nn.Conv2d(cout, cout, 3, padding=1)), nn.LeakyReLU(0.1, inplace=True)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.head = spectral_norm(nn.Linear(cin * 4 * 4, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1)).squeeze(1)


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(_conv_bn_relu(cin, cout), _conv_bn_relu(cout, cout))


class SegmenterNet(nn.Module):
    """Small U-Net: image ``(N, 3, H, W)`` -> list of logits, one ``(N, K_c, H, W)`` per label channel.

    ``H`` and ``W`` must be multiples of 8 (the wrapper pads).

    Parameters
    ----------
    head_sizes : sequence of int
        Number of classes of each head (including class 0 = "no label").
    widths : sequence of 4 ints
        Channels at full, 1/2, 1/4 and 1/8 resolution.
    """

    def __init__(self, head_sizes: Sequence[int], widths: Sequence[int] = (24, 48, 96, 128)) -> None:
        super().__init__()
        w1, w2, w3, w4 = (int(v) for v in widths)
        self.head_sizes = [int(k) for k in head_sizes]
        self.enc1 = _double_conv(3, w1)
        self.enc2 = _double_conv(w1, w2)
        self.enc3 = _double_conv(w2, w3)
        self.enc4 = _double_conv(w3, w4)
        self.pool = nn.MaxPool2d(2)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.dec3 = _conv_bn_relu(w4 + w3, w3)
        self.dec2 = _conv_bn_relu(w3 + w2, w2)
        self.dec1 = _conv_bn_relu(w2 + w1, w1)
        self.heads = nn.Conv2d(w1, sum(self.head_sizes), 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        e3 = self.enc3(self.pool(e2))
        e4 = self.enc4(self.pool(e3))
        d3 = self.dec3(torch.cat([self.up(e4), e3], 1))
        d2 = self.dec2(torch.cat([self.up(d3), e2], 1))
        d1 = self.dec1(torch.cat([self.up(d2), e1], 1))
        return list(torch.split(self.heads(d1), self.head_sizes, dim=1))
