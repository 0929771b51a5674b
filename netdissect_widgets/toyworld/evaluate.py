"""How good are the toy world's shipped models? Figures on fixed held-out sets.

``python -m netdissect_widgets.toyworld.evaluate`` prints

- the classifier's accuracy on held-out scenes,
- the segmenter's pixel accuracy and mean IoU per label channel (object, part,
  material, colour) on held-out scenes,
- the generator's concept statistics on fixed GAN samples: the fraction of
  generated pixels the segmenter gives an object label, the frequency of each
  object concept over generated pixels next to the real scenes' frequency, and
  the total-variation (TV) distance between the two distributions.

The held-out scenes are ``SceneDataset(n, seed=HELDOUT_SEED)`` (training used
``TRAIN_SEED``), the latent vectors come from ``GAN_Z_SEED``, so the figures are
the same on every run. The functions below are also used by the training command
(figures stored in the weights manifest) and by the tests (on smaller sets).

Definitions: pixel accuracy counts every pixel of a channel, "no label" included;
IoU of a concept is intersection / union of its predicted and true pixels summed
over the set, and the mean IoU averages the channel's concepts whose union is
non-empty. Object-concept frequencies are shares of the object-labelled pixels;
TV distance = half the L1 distance of the two distributions (0 = identical, 1 = disjoint).
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Sequence

import torch
from torch import nn

from .._device import module_device
from .._io import atomic_write
from ._rendered import GAN_Z_SEED, HELDOUT_SEED, SceneTensors, as_float, render_tensors

OBJECT_THRESHOLDS = {"labelled_fraction": 0.90, "tv": 0.25}


@torch.no_grad()
def classifier_accuracy(model: nn.Module, data: SceneTensors, batch_size: int = 256) -> float:
    """Fraction of ``data``'s scenes whose class ``model`` predicts correctly."""
    device = module_device(model)
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, len(data), batch_size):
        x = as_float(data.images[start : start + batch_size].to(device))
        pred = model(x).argmax(1).cpu()
        correct += int((pred == data.labels[start : start + batch_size].cpu()).sum())
    model.train(was_training)
    return correct / max(1, len(data))


def _confusion(pred: torch.Tensor, true: torch.Tensor, num: int) -> torch.Tensor:
    return torch.bincount((true.reshape(-1) * num + pred.reshape(-1)).long(), minlength=num * num).reshape(num, num)


def segmentation_scores(pred: torch.Tensor, true: torch.Tensor, concepts: Sequence[str],
                        categories: Sequence[str], channels: Sequence[str]) -> dict[str, Any]:
    """Pixel accuracy, per-concept IoU and mean IoU per channel of ``pred`` vs ``true`` ``(N, L, H, W)``."""
    num = len(concepts)
    out: dict[str, Any] = {}
    for k, channel in enumerate(channels):
        conf = _confusion(pred[:, k].cpu(), true[:, k].cpu(), num).double()
        inter = conf.diag()
        union = conf.sum(0) + conf.sum(1) - inter
        ious = {}
        for cid in range(1, num):
            if categories[cid] == channel and union[cid] > 0:
                ious[concepts[cid]] = float(inter[cid] / union[cid])
        out[channel] = {
            "pixel_accuracy": float(inter.sum() / conf.sum().clamp(min=1)),
            "miou": float(sum(ious.values()) / max(1, len(ious))),
            "iou": ious,
        }
    return out


@torch.no_grad()
def segmenter_scores(segmenter: Any, data: SceneTensors, batch_size: int = 256) -> dict[str, Any]:
    """:func:`segmentation_scores` of ``segmenter.segment`` on ``data`` against its true labels."""
    preds = [segmenter.segment(as_float(data.images[s : s + batch_size])) for s in range(0, len(data), batch_size)]
    pred = torch.cat(preds)
    channels = getattr(segmenter, "channels", ("object", "part", "material", "color"))
    return segmentation_scores(pred, data.seg.long().cpu(), segmenter.concepts, segmenter.categories, channels)


@torch.no_grad()
def generate(generator: nn.Module, n: int, seed: int = GAN_Z_SEED, batch_size: int = 200) -> torch.Tensor:
    """``n`` generator samples (CPU float32 in [-1, 1]) from fixed latents ``randn(seed)``."""
    z = torch.randn(n, generator.z_dim, generator=torch.Generator().manual_seed(seed))
    device = module_device(generator)
    was_training = generator.training
    generator.eval()
    out = [generator(z[s : s + batch_size].to(device)).float().cpu() for s in range(0, n, batch_size)]
    generator.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, 3, 64, 64)


def sample_grid(generator: nn.Module, n: int = 64, seed: int = GAN_Z_SEED, nrow: int = 8, scale: int = 2,
                pad: int = 2) -> "PIL.Image.Image":
    """A grid picture of ``n`` generator samples from fixed latents (``nrow`` per row, upscaled ``scale`` x)."""
    from PIL import Image

    images = ((generate(generator, n, seed=seed) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    _, _, h, w = images.shape
    rows = (n + nrow - 1) // nrow
    canvas = torch.full((3, rows * (h + pad) + pad, nrow * (w + pad) + pad), 255, dtype=torch.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, nrow)
        canvas[:, pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w] = image
    picture = Image.fromarray(canvas.permute(1, 2, 0).numpy())
    return picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)


def object_frequencies(seg: torch.Tensor, categories: Sequence[str]) -> tuple[torch.Tensor, float]:
    """Distribution over concept ids of the object channel (``seg[:, 0]``) and the labelled fraction."""
    obj = seg[:, 0].reshape(-1).cpu()
    counts = torch.bincount(obj, minlength=len(categories)).double()
    counts[0] = 0
    labelled = float(counts.sum() / max(1, obj.numel()))
    return counts / counts.sum().clamp(min=1), labelled


@torch.no_grad()
def generator_stats(generator: nn.Module, segmenter: Any, real: SceneTensors, n: int = 1000,
                    seed: int = GAN_Z_SEED, batch_size: int = 200) -> dict[str, Any]:
    """Concept statistics of ``n`` generated images vs the ``real`` scenes.

    Returns the generated images' labelled fraction, the per-object-concept
    frequencies (generated, real as segmented by ``segmenter``, real ground truth)
    and the TV distances of the generated distribution to both real ones.
    """
    fake = generate(generator, n, seed=seed, batch_size=batch_size)
    fake_seg = torch.cat([segmenter.segment(fake[s : s + batch_size]) for s in range(0, n, batch_size)])
    real_seg = torch.cat([segmenter.segment(as_float(real.images[s : s + batch_size]))
                          for s in range(0, len(real), batch_size)])
    cats = segmenter.categories
    p_fake, labelled = object_frequencies(fake_seg, cats)
    p_real, real_labelled = object_frequencies(real_seg, cats)
    p_true, _ = object_frequencies(real.seg.long(), cats)
    names = segmenter.concepts
    objects = [i for i, c in enumerate(cats) if c == "object"]
    return {
        "samples": n,
        "real_scenes": len(real),
        "labelled_fraction": labelled,
        "real_labelled_fraction": real_labelled,
        "tv_vs_real_segmented": float(0.5 * (p_fake - p_real).abs().sum()),
        "tv_vs_real_truth": float(0.5 * (p_fake - p_true).abs().sum()),
        "frequencies": {names[i]: {"generated": float(p_fake[i]), "real_segmented": float(p_real[i]),
                                   "real_truth": float(p_true[i])} for i in objects},
    }


def _print_report(res: dict[str, Any]) -> None:
    if "classifier" in res:
        print(f"classifier: held-out accuracy {res['classifier']['accuracy']:.4f} "
              f"on {res['classifier']['scenes']} scenes")
    if "segmenter" in res:
        print(f"segmenter on {res['segmenter']['scenes']} held-out scenes:")
        for channel, s in res["segmenter"]["channels"].items():
            print(f"  {channel:9s} pixel accuracy {s['pixel_accuracy']:.4f}  mean IoU {s['miou']:.4f} "
                  f"({len(s['iou'])} concepts)")
        ious = res["segmenter"]["channels"]["object"]["iou"]
        print("  object IoU: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(ious.items(), key=lambda kv: -kv[1])))
    if "generator" in res:
        g = res["generator"]
        print(f"generator: {g['samples']} samples vs {g['real_scenes']} real held-out scenes")
        print(f"  pixels with an object label: {g['labelled_fraction']:.4f} "
              f"(real scenes: {g['real_labelled_fraction']:.4f}; target >= {OBJECT_THRESHOLDS['labelled_fraction']})")
        print(f"  TV distance of object frequencies: {g['tv_vs_real_segmented']:.4f} vs real (segmented), "
              f"{g['tv_vs_real_truth']:.4f} vs real (ground truth); target <= {OBJECT_THRESHOLDS['tv']}")
        print(f"  {'object':10s} {'generated':>9s} {'real(seg)':>9s} {'real(gt)':>9s}")
        for name, f in sorted(g["frequencies"].items(), key=lambda kv: -kv[1]["real_truth"]):
            print(f"  {name:10s} {f['generated']:9.4f} {f['real_segmented']:9.4f} {f['real_truth']:9.4f}")


def evaluate(models: Sequence[str] = ("classifier", "segmenter", "generator"), n_real: int = 1000,
             n_gan: int = 1000, device: str = "cpu", weights_dir: str | None = None, workers: int = 0,
             progress: bool = True) -> dict[str, Any]:
    """Evaluate the shipped (or ``weights_dir``'s) models on the fixed held-out sets; returns the figures."""
    from .loaders import load_model

    real = render_tensors(n_real, HELDOUT_SEED, workers=workers, progress=progress, desc="held-out scenes")
    res: dict[str, Any] = {}
    if "classifier" in models:
        clf = load_model("classifier", device, weights_dir=weights_dir)
        res["classifier"] = {"accuracy": classifier_accuracy(clf, real), "scenes": len(real)}
    segmenter = None
    if "segmenter" in models or "generator" in models:
        segmenter = load_model("segmenter", device, weights_dir=weights_dir)
    if "segmenter" in models:
        res["segmenter"] = {"channels": segmenter_scores(segmenter, real), "scenes": len(real)}
    if "generator" in models:
        gen = load_model("generator", device, weights_dir=weights_dir)
        res["generator"] = generator_stats(gen, segmenter, real, n=n_gan)
    return res


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m netdissect_widgets.toyworld.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="*", metavar="MODEL",
                        help="classifier, segmenter and/or generator (default: all three)")
    parser.add_argument("--n-real", type=int, default=1000, help="held-out scenes (default 1000)")
    parser.add_argument("--n-gan", type=int, default=1000, help="generator samples (default 1000)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--weights-dir", default=None, help="folder with NAME.pt + manifest.json (default: shipped)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers for rendering")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--samples-png", default=None, metavar="PATH",
                        help="also save a grid of 64 generator samples (fixed latents) as a PNG")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.models) - {"classifier", "segmenter", "generator"})
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from classifier, segmenter, generator")
    res = evaluate(args.models or ["classifier", "segmenter", "generator"], args.n_real, args.n_gan, args.device,
                   args.weights_dir, args.workers, not args.no_progress)
    if args.samples_png:
        from .loaders import load_model

        grid = sample_grid(load_model("generator", args.device, weights_dir=args.weights_dir))
        atomic_write(args.samples_png, lambda tmp: grid.save(tmp, format="PNG"))
        print(f"saved 64 generator samples to {args.samples_png}")
    if args.json:
        print(json.dumps(res, indent=2, sort_keys=True))
    else:
        _print_report(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
