"""Render a block of toy-world scenes into compact tensors (training and held-out sets).

Training and evaluation draw many scenes; rendering them once into uint8 tensors
(images ``(N, 3, H, W)``, labels ``(N,)``, segmentations ``(N, 4, H, W)``) keeps
them small enough to sit on the training device and lets a DataLoader spread the
rendering over worker processes. :func:`as_float` turns a uint8 image batch back
into the package's float convention ([-1, 1]).

The seeds of the fixed sets live here so that training and evaluation agree:
``TRAIN_SEED`` for training scenes, ``HELDOUT_SEED`` for held-out scenes, and
``GAN_Z_SEED`` for the latent vectors of the generator's held-out samples.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

TRAIN_SEED = 1
HELDOUT_SEED = 2
GAN_Z_SEED = 3


@dataclass
class SceneTensors:
    """A rendered block of scenes, stored compactly."""

    images: torch.Tensor  # uint8 (N, 3, H, W)
    labels: torch.Tensor  # int64 (N,)
    seg: torch.Tensor  # uint8 (N, 4, H, W) concept ids

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: str | torch.device) -> "SceneTensors":
        return SceneTensors(self.images.to(device), self.labels.to(device), self.seg.to(device))


def as_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 in [-1, 1] (the inverse of the renderer's conversion)."""
    return images.float().div_(127.5).sub_(1.0)


def render_tensors(n: int, seed: int, size: int = 64, workers: int = 0, progress: bool = True,
                   desc: str = "render") -> SceneTensors:
    """Render ``SceneDataset(n, seed, size)`` into a :class:`SceneTensors` (on the CPU)."""
    from .dataset import SceneDataset

    data = SceneDataset(n, seed=seed, size=size)
    loader = DataLoader(data, batch_size=128, shuffle=False, num_workers=workers)
    images, labels, segs = [], [], []
    for image, label, seg in tqdm(loader, desc=desc, disable=not progress, leave=False):
        images.append(((image + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8))
        labels.append(torch.as_tensor(label, dtype=torch.long))
        if int(seg.max()) > 255:
            raise ValueError("concept ids above 255 do not fit the uint8 training cache")
        segs.append(seg.to(torch.uint8))
    return SceneTensors(torch.cat(images), torch.cat(labels), torch.cat(segs))
