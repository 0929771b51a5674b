"""GAN inversion: find the latent (and a per-layer correction) that redraws a given image.

To paint on a real photo, GANPaint first finds a latent ``z`` whose generated
image matches it, then refines one layer's features so the match is closer,
and paints on those features. Without an encoder, both are found by
gradient descent (Adam) on the pixel error:

* :func:`invert` -- ``z`` for each image: the best of ``starts`` random latents,
  then ``steps`` Adam steps on ``mean((G(z) - image)^2)`` (plus a small pull of
  ``|z|^2`` towards ``z_dim``, where the generator's training latents lie).
* :func:`refine` -- a residual ``r`` (N, C, h, w) added to ``layer``'s output,
  found with ``z`` fixed; :func:`~netdissect_widgets.intervene.paint_strokes`
  takes it as ``residual=`` so strokes paint on the refined image.
* :func:`psnr` -- reconstruction quality in dB (images in [-1, 1]).

::

    z = invert(gan, photos, steps=200)
    r = refine(gan, "layer2", z, photos, steps=100)
    edited = paint_strokes(gan, "layer2", z, strokes, levels=d.levels, residual=r)

The generator's weights are never changed (gradients are taken for ``z`` and
``r`` only); it runs in eval mode; hooks are removed after.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .._device import module_device
from ..hooks import Trace, get_layer
from . import _engine

__all__ = ["invert", "refine", "psnr"]


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio per image, in dB, of images in [-1, 1] (peak-to-peak 2)."""
    if a.shape != b.shape:
        raise ValueError(f"psnr needs images of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    mse = ((a.float() - b.float()) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(4.0 / mse.clamp(min=1e-12))


def _check_images(images: Any) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or not images.is_floating_point():
        raise TypeError(f"images must be a float tensor (N, 3, H, W) in [-1, 1], got {type(images).__name__}")
    if images.dim() == 3:
        images = images[None]
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (N, 3, H, W) or (3, H, W), got {tuple(images.shape)}")
    if not bool(torch.isfinite(images).all()):
        raise ValueError("images contain NaN or inf")
    if float(images.min()) < -1.001 or float(images.max()) > 1.001:
        raise ValueError(f"images must lie in [-1, 1] (got {float(images.min()):.3g}..{float(images.max()):.3g}); "
                         "map 0..255 pixels with x / 127.5 - 1")
    return images.detach().float()


def _check_count(value: Any, name: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _z_dim(generator: nn.Module, z_dim: int | None) -> int:
    dim = z_dim if z_dim is not None else getattr(generator, "z_dim", None)
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError("the generator has no int attribute z_dim; pass z_dim=<latent size>")
    return dim


def _bar(total: int, desc: str, progress: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not progress, leave=False)


def invert(
    generator: nn.Module,
    images: torch.Tensor,
    *,
    steps: int = 200,
    lr: float = 0.05,
    starts: int = 64,
    prior: float = 1e-3,
    batch_size: int = 32,
    z_dim: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> torch.Tensor:
    """Latents ``z`` (N, z_dim) whose generated images reconstruct ``images``.

    Parameters
    ----------
    generator : nn.Module
        ``generator(z (N, z_dim)) -> images (N, 3, H, W)`` in [-1, 1].
    images : Tensor (N, 3, H, W) or (3, H, W)
        The images to reconstruct, in [-1, 1], at the generator's resolution.
    steps : int
        Adam steps on ``z`` (0: keep the best random start).
    lr : float
        Adam's learning rate.
    starts : int
        Random latents tried per image; the closest one starts the descent.
    prior : float
        Weight of ``(|z|^2 / z_dim - 1)^2``, which keeps ``z`` where the
        generator was trained (standard normal latents).
    batch_size : int
        Images optimised together.
    z_dim : int, optional
        Latent size when the generator has no ``.z_dim``.
    seed : int
        Seed of the random starts.
    progress : bool
        Show a progress bar (``tqdm.auto``) over the steps of all batches.

    Returns
    -------
    Tensor (N, z_dim)
        On the CPU, detached.
    """
    images = _check_images(images)
    dim = _z_dim(generator, z_dim)
    steps = _check_count(steps, "steps")
    starts = _check_count(starts, "starts", 1)
    batch_size = _check_count(batch_size, "batch_size", 1)
    if not lr > 0 or not prior >= 0:
        raise ValueError(f"lr must be > 0 and prior >= 0, got lr={lr!r}, prior={prior!r}")
    device = module_device(generator)
    gen = torch.Generator().manual_seed(seed)
    n = images.shape[0]
    out = []
    with _engine.eval_mode(generator):
        with torch.no_grad():
            probe = generator(torch.zeros(1, dim, device=device))
        if probe.shape[1:] != images.shape[1:]:
            raise ValueError(f"images must have the generator's size {tuple(probe.shape[1:])}, got "
                             f"{tuple(images.shape[1:])}")
        bar = _bar(steps * ((n + batch_size - 1) // batch_size), "invert", progress)
        try:
            for s in range(0, n, batch_size):
                target = images[s:s + batch_size].to(device)
                z = _best_start(generator, target, dim, starts, gen, device)
                z.requires_grad_(True)
                opt = torch.optim.Adam([z], lr=lr)
                for _ in range(steps):
                    loss = _pixel_loss(generator(z), target) + prior * ((z.pow(2).mean(1) - 1) ** 2).sum()
                    (grad,) = torch.autograd.grad(loss, [z])
                    z.grad = grad
                    opt.step()
                    bar.update(1)
                out.append(z.detach().cpu())
        finally:
            bar.close()
    return torch.cat(out)


def _pixel_loss(fake: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sum over images of each image's mean squared error (so each image's step ignores the others)."""
    return ((fake - target) ** 2).flatten(1).mean(1).sum()


def _best_start(generator: nn.Module, target: torch.Tensor, dim: int, starts: int, gen: torch.Generator,
                device: torch.device) -> torch.Tensor:
    candidates = torch.randn(starts, dim, generator=gen)
    with torch.no_grad():
        fakes = torch.cat([generator(candidates[c:c + 64].to(device)) for c in range(0, starts, 64)])
        err = torch.cdist(target.flatten(1), fakes.flatten(1))  # (B, starts)
    return candidates[err.argmin(1).cpu()].clone().to(device)


def refine(
    generator: nn.Module,
    layer: str,
    z: torch.Tensor,
    images: torch.Tensor,
    *,
    steps: int = 100,
    lr: float = 0.05,
    weight: float = 1e-3,
    progress: bool = True,
) -> torch.Tensor:
    """A residual at ``layer`` that brings ``generator(z)`` closer to ``images`` (the per-layer refinement).

    Parameters
    ----------
    generator : nn.Module
        The generator.
    layer : str
        The layer refined; paint at the same layer with ``paint_strokes(..., residual=r)``.
    z : Tensor (N, z_dim)
        Latents, e.g. from :func:`invert`.
    images : Tensor (N, 3, H, W)
        The targets, in [-1, 1].
    steps, lr : int, float
        Adam steps and learning rate on the residual.
    weight : float
        Weight of the residual's mean square (keeps it small, so painted units still act).
    progress : bool
        Show a progress bar.

    Returns
    -------
    Tensor (N, C, h, w)
        The residual, on the CPU, detached.
    """
    get_layer(generator, layer)
    images = _check_images(images)
    if not isinstance(z, torch.Tensor) or z.dim() != 2 or z.shape[0] != images.shape[0]:
        raise ValueError(f"z must be (N, z_dim) with one latent per image ({images.shape[0]}), got "
                         f"{tuple(getattr(z, 'shape', ()))}")
    steps = _check_count(steps, "steps")
    device = module_device(generator)
    z = z.detach().to(device)
    target = images.to(device)
    with _engine.eval_mode(generator):
        with torch.no_grad(), Trace(generator, layer, stop=True) as t:
            generator(z)
        feats = t.output
        if not isinstance(feats, torch.Tensor) or feats.dim() != 4:
            raise TypeError(f"layer {layer!r} must output a feature map (N, C, h, w) to refine it")
        residual = torch.zeros_like(feats, requires_grad=True)
        opt = torch.optim.Adam([residual], lr=lr)
        bar = _bar(steps, f"refine {layer}", progress)
        try:
            with Trace(generator, layer, retain_output=False, edit_output=lambda out, name: out + residual):
                for _ in range(steps):
                    fake = generator(z)
                    if fake.shape != target.shape:
                        raise ValueError(f"images must have the generator's size {tuple(fake.shape[1:])}")
                    loss = _pixel_loss(fake, target) + weight * residual.pow(2).flatten(1).mean(1).sum()
                    (grad,) = torch.autograd.grad(loss, [residual])
                    residual.grad = grad
                    opt.step()
                    bar.update(1)
        finally:
            bar.close()
    return residual.detach().cpu()
