"""A real GAN: the DCGAN face generator whose weights ship in the ``gan-face-generate`` package.

``load_face_gan()`` builds a standard DCGAN generator (latent 100 -> 64x64 RGB in
[-1, 1]) with named layers and loads the package's checkpoint
(``gan_face_generate/weights.tar``, its ``netG_state_dict``), SHA-256 checked and
read with ``weights_only=True``. It is used like the toy world's generator::

    gen = load_face_gan()
    images = gen(torch.randn(8, gen.z_dim))          # (8, 3, 64, 64) in [-1, 1]
    d = dissect(gen, "layer3", ZDataset(400, gen.z_dim), FaceSegmenter(), images="output")

Layers (units @ resolution)::

    layer1  512 @ 4x4     transposed conv from the latent seen as a 1x1 map, BN, ReLU
    layer2  256 @ 8x8     transposed conv stride 2, BN, ReLU
    layer3  128 @ 16x16   <- the default layer to dissect and paint
    layer4   64 @ 32x32
    output    3 @ 64x64   transposed conv, tanh

The code of ``gan-face-generate`` is MIT-licensed; its weights were trained on
DigiFace-1M (synthetic faces), whose data licence may restrict what you may do
with the weights and the images they generate: check it before any use beyond research.
"""
from __future__ import annotations

import os
from collections import OrderedDict

import torch
from torch import nn

from ..models import _load_state_into, load_state_dict_checked
from ._packages import package_file

__all__ = ["FaceGenerator", "load_face_gan", "FACE_GAN_SHA256", "FACE_GAN_LAYER"]

#: SHA-256 of ``gan_face_generate/weights.tar`` in gan-face-generate 1.1.1.
FACE_GAN_SHA256 = "0c3b90b138cfc4e8a73310b9fd5ce2a8f1f3a542a037de277412307fcd28771f"
#: The layer dissected and painted by default (16x16, 128 units).
FACE_GAN_LAYER = "layer3"

_WIDTHS = (512, 256, 128, 64)
# checkpoint key prefix (the package's nn.Sequential "main") -> our layer names
_KEY_MAP = {
    "main.0.": "layer1.conv.", "main.1.": "layer1.bn.",
    "main.3.": "layer2.conv.", "main.4.": "layer2.bn.",
    "main.6.": "layer3.conv.", "main.7.": "layer3.bn.",
    "main.9.": "layer4.conv.", "main.10.": "layer4.bn.",
    "main.12.": "output.conv.",
}


def _up_block(cin: int, cout: int, first: bool = False) -> nn.Sequential:
    conv = nn.ConvTranspose2d(cin, cout, 4, 1, 0, bias=False) if first else nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False)
    return nn.Sequential(OrderedDict(conv=conv, bn=nn.BatchNorm2d(cout), relu=nn.ReLU(inplace=True)))


class FaceGenerator(nn.Sequential):
    """DCGAN generator: ``z (N, z_dim)`` (or ``(N, z_dim, 1, 1)``) -> images ``(N, 3, 64, 64)`` in [-1, 1].

    Parameters
    ----------
    z_dim : int
        Latent size (100 for the shipped weights); exposed as ``.z_dim``.
    """

    def __init__(self, z_dim: int = 100) -> None:
        w = _WIDTHS
        layers: OrderedDict[str, nn.Module] = OrderedDict(layer1=_up_block(int(z_dim), w[0], first=True))
        for i in range(1, len(w)):
            layers[f"layer{i + 1}"] = _up_block(w[i - 1], w[i])
        layers["output"] = nn.Sequential(
            OrderedDict(conv=nn.ConvTranspose2d(w[-1], 3, 4, 2, 1, bias=False), tanh=nn.Tanh())
        )
        super().__init__(layers)
        self.z_dim = int(z_dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if z.dim() == 2 and z.shape[1] == self.z_dim:
            z = z[:, :, None, None]
        if z.dim() != 4 or tuple(z.shape[1:]) != (self.z_dim, 1, 1):
            raise ValueError(
                f"expected z of shape (N, {self.z_dim}) (or (N, {self.z_dim}, 1, 1)), got {tuple(z.shape)}"
            )
        return super().forward(z)


def _rename(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        for old, new in _KEY_MAP.items():
            if key.startswith(old):
                key = new + key[len(old):]
                break
        out[key] = value
    return out


def load_face_gan(
    device: str | torch.device = "cpu", path: str | os.PathLike | None = None, sha256: str | None = None
) -> FaceGenerator:
    """The DCGAN face generator with the weights of ``gan-face-generate`` 1.1.1, in eval mode.

    Parameters
    ----------
    device : str or torch.device
        Where to put the model.
    path : str or PathLike, optional
        Another checkpoint in the same layout (a dict with ``netG_state_dict``);
        default: the file the package ships, checked against :data:`FACE_GAN_SHA256`.
    sha256 : str, optional
        Expected SHA-256 of ``path`` (ignored for the packaged file, which is always checked).

    Raises
    ------
    MissingExtraError
        ``gan-face-generate`` is not installed (the message gives the install command).
    ValueError
        Checksum mismatch or a file that is not such a checkpoint.
    """
    if path is None:
        path = package_file("gan_face_generate", "weights.tar", "gan-face-generate", "load_face_gan", FACE_GAN_SHA256)
        sha256 = None  # just checked
    state = _rename(load_state_dict_checked(path, sha256=sha256, key="netG_state_dict"))
    z_dim = int(state["layer1.conv.weight"].shape[0]) if "layer1.conv.weight" in state else 100
    model = FaceGenerator(z_dim)
    _load_state_into(model, state, "the DCGAN face generator (load_face_gan)")
    return model.to(device).eval()
