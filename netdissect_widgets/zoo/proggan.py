"""The paper's Progressive GAN generators (Karras et al. 2018) from local files, in the GAN-dissection layout.

GAN dissection (Bau et al. 2019, 2020) studied ProGAN generators converted from
TensorFlow to PyTorch state dicts (``proggan_churchoutdoor-7e701dd5.pth``, bedrooms,
kitchens, ...). They are not in any package: download them yourself, then::

    gen = load_proggan("weights/proggan_churchoutdoor-7e701dd5.pth")
    images = gen(torch.randn(4, gen.z_dim))         # (4, 3, 256, 256), about [-1, 1]
    d = dissect(gen, "layer4", ZDataset(1000, gen.z_dim), segmenter, images="output")

The layout: a sequence ``layer1`` ... ``layerN`` and ``output_RxR``. Each layer is a pixel
norm, a convolution (``conv.weight``, no bias), an equalised-learning-rate scale with a
bias (``wscale.b``; the scale ``gain / sqrt(fan_in)`` is a constant) and a leaky ReLU
(0.2). ``layer1`` turns the latent, seen as a 1x1 map, into 4x4 (kernel 4, padding 3);
even layers keep the resolution (3x3); odd layers from ``layer3`` on first double it
(nearest neighbour). The output layer is a 1x1 convolution to RGB with gain 1, no
activation (values are not clamped). Channel counts are read from the file; the
latent size ``z_dim`` is ``layer1``'s input channels (512 in the paper's models).
"""
from __future__ import annotations

import math
import os
import re
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from ..models import _load_state_into, load_state_dict_checked

__all__ = ["ProgressiveGenerator", "load_proggan"]


class _PixelNorm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / torch.sqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class _WScale(nn.Module):
    """Multiply by the constant ``gain / sqrt(fan_in)`` and add a learned bias ``b``."""

    def __init__(self, channels: int, fan_in: int, gain: float) -> None:
        super().__init__()
        self.scale = gain / math.sqrt(fan_in)
        self.b = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.b.view(1, -1, 1, 1)


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, padding: int, upsample: bool) -> None:
        super().__init__()
        self.norm = _PixelNorm()
        self.upsample = upsample
        self.conv = nn.Conv2d(cin, cout, kernel, 1, padding, bias=False)
        self.wscale = _WScale(cout, cin, math.sqrt(2) / kernel)
        self.relu = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.relu(self.wscale(self.conv(x)))


class _ToRGB(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.norm = _PixelNorm()
        self.conv = nn.Conv2d(cin, 3, 1, bias=False)
        self.wscale = _WScale(3, cin, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.wscale(self.conv(self.norm(x)))


class ProgressiveGenerator(nn.Sequential):
    """ProGAN generator: ``z (N, z_dim)`` -> ``(N, 3, R, R)``, ``R = 4 * 2**(len(sizes) - 2)``.

    Parameters
    ----------
    sizes : sequence of int
        ``[z_dim, channels at 4x4, at 8x8, ...]`` (e.g. ``[512, 512, 512, 512, 512, 256, 128, 64, 32]``
        for 256x256 output).
    """

    def __init__(self, sizes: list[int]) -> None:
        if len(sizes) < 2:
            raise ValueError(f"sizes needs the latent size and at least one resolution, got {list(sizes)}")
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["layer1"] = _Block(sizes[0], sizes[1], 4, 3, upsample=False)
        layers["layer2"] = _Block(sizes[1], sizes[1], 3, 1, upsample=False)
        for cin, cout in zip(sizes[1:-1], sizes[2:]):
            n = len(layers)
            layers[f"layer{n + 1}"] = _Block(cin, cout, 3, 1, upsample=True)
            layers[f"layer{n + 2}"] = _Block(cout, cout, 3, 1, upsample=False)
        res = 4 * 2 ** (len(sizes) - 2)
        layers[f"output_{res}x{res}"] = _ToRGB(sizes[-1])
        super().__init__(layers)
        self.z_dim = int(sizes[0])
        self.sizes = [int(s) for s in sizes]

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if z.dim() == 2 and z.shape[1] == self.z_dim:
            z = z[:, :, None, None]
        if z.dim() != 4 or tuple(z.shape[1:]) != (self.z_dim, 1, 1):
            raise ValueError(f"expected z of shape (N, {self.z_dim}), got {tuple(z.shape)}")
        return super().forward(z)


def _sizes(state: dict[str, torch.Tensor], path: object) -> list[int]:
    convs = sorted(
        (int(m.group(1)), v) for k, v in state.items() if (m := re.fullmatch(r"layer(\d+)\.conv\.weight", k))
    )
    outputs = [k for k in state if re.fullmatch(r"output_\d+x\d+\.conv\.weight", k)]
    if not convs or [i for i, _ in convs] != list(range(1, len(convs) + 1)) or len(convs) % 2 or len(outputs) != 1:
        raise ValueError(
            f"{path!r} is not a ProGAN generator in the GAN-dissection layout: expected layer1.conv.weight ... "
            f"layerN.conv.weight (N even) and one output_RxR.conv.weight; found keys "
            f"{sorted(state)[:8]}{' ...' if len(state) > 8 else ''}"
        )
    sizes = [int(convs[0][1].shape[1])]
    sizes += [int(v.shape[0]) for i, v in convs if i % 2 == 1]
    return sizes


def load_proggan(path: str | os.PathLike, sha256: str | None = None, device: str | torch.device = "cpu") -> ProgressiveGenerator:
    """A ProGAN generator from a local state dict in the GAN-dissection layout, eval mode.

    Parameters
    ----------
    path : str or PathLike
        The weight file (a state dict, or a dict with it under ``"state_dict"``).
    sha256 : str, optional
        Expected SHA-256 of the file.
    device : str or torch.device
        Where to put the model.

    Raises
    ------
    ValueError
        Checksum mismatch, or keys / shapes not of that layout.
    """
    try:
        state = load_state_dict_checked(path, sha256=sha256)
    except ValueError as exc:
        if "'state_dict'" not in str(exc):
            raise
        state = load_state_dict_checked(path, sha256=sha256, key="state_dict")
    model = ProgressiveGenerator(_sizes(state, os.fspath(path)))
    _load_state_into(model, state, "a ProGAN generator (load_proggan)")
    return model.to(device).eval()
