"""Reproduce the toy world's shipped weights: ``python -m netdissect_widgets.toyworld.train``.

::

    python -m netdissect_widgets.toyworld.train all                 # classifier, segmenter, generator
    python -m netdissect_widgets.toyworld.train segmenter --device cuda
    python -m netdissect_widgets.toyworld.train classifier --out /tmp/w --steps 10 --train-size 256
    python -m netdissect_widgets.toyworld.train classifier-head     # redo only the classifier's stage 2
    python -m netdissect_widgets.toyworld.train generator --init shipped --d-warmup 300 --out /tmp/w  # fine-tune

Each model is trained from fixed seeds on scenes rendered with
``SceneDataset(train_size, seed=TRAIN_SEED)``, its weights are rounded to float16
and written atomically as ``OUT/NAME.pt`` (a state dict, no pickled objects), and
``OUT/manifest.json`` gets the file's SHA-256, the architecture settings, the
training facts (steps, seeds, device, seconds) and held-out figures; the manifest
is rewritten atomically, keeping the other models' entries. ``OUT`` defaults to
the package's ``toyworld/weights`` folder, where the loaders read from.

The classifier is trained in two stages. Stage 1 trains the whole network
(``conv1`` ... ``conv5`` and ``fc``) with SGD and cross-entropy. Stage 2 throws
stage 1's linear head away and refits ``fc.linear`` alone on the frozen network:
the global-average-pooled ``conv5`` features of the first ``HEAD_TRAIN_SIZE``
(12,000) training scenes are computed once (eval mode), then the head is fitted
full-batch by proximal gradient descent (FISTA, from zero weights, so no seed
matters) on cross-entropy + ``HEAD_L1`` (0.02) x the L1 norm of its weights. The
L1 penalty makes every class read a handful of ``conv5`` units (3.3 on average,
33 of the 256 units in all) instead of a little of every unit, the way the
paper's VGG16 concentrated a class's evidence in a few class-selective units.
Without stage 2 the head spreads each class over all units, so removing a class's
top 10 units changes nothing and keeping only them falls to chance; with it,
removing them drops the class to near chance while keeping only them keeps most
of its accuracy -- the paper's ablation result
(``python -m netdissect_widgets.bench interventions``). The conv layers, hence
every dissection of them, are the same with or without stage 2; held-out
accuracy stays 1.0. ``classifier-head`` reruns stage 2 alone on the classifier
already in ``OUT`` (how the shipped head was made, on 2 CPU cores).

Runs on any device (``--device cpu|cuda|mps|auto``). The defaults are the
settings of the shipped weights; ``--steps`` / ``--train-size`` / ``--batch-size``
override them (e.g. tiny values for a smoke test). Results on another device or
torch version differ in the last bits (floating-point order, cuDNN algorithm
choice), not in quality: two GPU runs of the segmenter at batch 64 gave object pixel
accuracy 0.9951 / 0.9949.

Training times. On the 2-core CPU (``classifier segmenter --device cpu``): 31.5 min
in all -- rendering 41,000 scenes 23 s, classifier stage 1 186 s (1,000 steps,
held-out accuracy 0.996) and stage 2 18 s, segmenter 1,657 s (5,000 steps at
batch 32; the shipped segmenter is this run). The shipped classifier's stage 1
is the GPU run of the same recipe (one H200: 15 s, held-out accuracy 1.0), its
stage 2 ran on the CPU. The generator was trained on the GPU (368 s, 15,000
steps); its CPU path runs the same code, but at 5.1 s per step on 2 cores (30
steps in 153 s) the 15,000 steps would take about 21 h -- use a GPU for it.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from .._io import atomic_write, load_json, save_json, sha256_file
from . import _loops
from ._rendered import HELDOUT_SEED, TRAIN_SEED, SceneTensors, render_tensors
from .loaders import MANIFEST, MODEL_NAMES, WEIGHTS_DIR, build_model

#: the order ``all`` trains in (the generator's monitor uses the segmenter)
ORDER = ("classifier", "segmenter", "generator")
MODEL_SEEDS = {"classifier": 10, "segmenter": 20, "generator": 30}
TRAIN_SIZE = 40000
HELDOUT_SIZE = 1000
#: classifier stage 2 (head refit with L1 on frozen conv5 features): settings of the shipped head
HEAD_L1 = 0.02
HEAD_STEPS = 2000
HEAD_LR = 0.5
HEAD_TRAIN_SIZE = 12000
CONFIGS = {
    "classifier": _loops.ClassifierConfig,
    "segmenter": _loops.SegmenterConfig,
    "generator": _loops.GeneratorConfig,
}


def model_config(name: str) -> dict[str, Any]:
    """Architecture settings of model ``name`` (stored in the manifest; rebuilt by the loaders)."""
    from . import concepts as world
    from . import nets

    if name == "classifier":
        return {"num_classes": len(world.CLASSES), "widths": list(nets.CLASSIFIER_WIDTHS),
                "classes": list(world.CLASSES)}
    if name == "generator":
        return {"z_dim": nets.DEFAULT_Z_DIM, "widths": list(nets.GENERATOR_WIDTHS)}
    if name == "segmenter":
        return {"concepts": world.CONCEPTS.names, "categories": world.CONCEPTS.categories,
                "channels": list(world.CHANNELS), "widths": [24, 48, 96, 128]}
    raise KeyError(f"unknown toy-world model {name!r}; choose one of {', '.join(MODEL_NAMES)}")


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda if available, else mps if available, else cpu; anything else as given."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


def _round_to_half(model: nn.Module) -> None:
    """Round floating parameters/buffers through float16, so the figures we report are the shipped model's."""
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            if t.is_floating_point():
                t.copy_(t.half().float())


def save_weights(model: nn.Module, name: str, out: Path, info: dict[str, Any]) -> Path:
    """Write ``out/NAME.pt`` (float16 state dict) and update ``out/manifest.json`` atomically."""
    state = {k: (v.detach().half() if v.is_floating_point() else v.detach()).cpu().contiguous()
             for k, v in model.state_dict().items()}
    path = atomic_write(out / f"{name}.pt", lambda tmp: torch.save(state, tmp))
    manifest_path = out / MANIFEST
    manifest: dict[str, Any] = {"format": 1, "models": {}}
    if manifest_path.is_file():
        try:
            old = load_json(manifest_path)
            if isinstance(old, dict) and isinstance(old.get("models"), dict):
                manifest = old
        except ValueError:
            pass  # an unreadable manifest is replaced
    manifest["models"][name] = {
        "file": path.name,
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
        "dtype": "float16",
        "parameters": sum(p.numel() for p in model.parameters()),
        "config": model_config(name),
        **info,
    }
    save_json(manifest_path, manifest)
    return path


def pooled_features(model: nn.Module, images: torch.Tensor, batch_size: int = 250) -> torch.Tensor:
    """Global-average-pooled ``conv5`` features ``(N, C)`` of uint8 ``images``: the input of ``fc.linear``."""
    from ._rendered import as_float

    device = next(model.parameters()).device
    trunk = [m for name, m in model.named_children() if name != "fc"]
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = as_float(images[start:start + batch_size].to(device))
            for module in trunk:
                x = module(x)
            out.append(model.fc.flatten(model.fc.pool(x)))
    return torch.cat(out) if out else torch.zeros(0, model.fc.linear.in_features, device=device)


def refit_head(model: nn.Module, data: SceneTensors, *, l1: float = HEAD_L1, steps: int = HEAD_STEPS,
               lr: float = HEAD_LR, train_size: int = HEAD_TRAIN_SIZE) -> dict[str, Any]:
    """Classifier stage 2: refit ``model.fc.linear`` with an L1 penalty on the frozen network's features.

    Minimises ``cross_entropy(W f + b, y) + l1 * |W|_1`` over the pooled ``conv5``
    features ``f`` of the first ``train_size`` scenes of ``data``, full-batch, by
    FISTA (gradient step on the cross-entropy, soft-thresholding of ``W``, Nesterov
    momentum) from ``W = 0, b = 0``; deterministic for given features. Only
    ``fc.linear`` changes. Returns the facts for the manifest.
    """
    if l1 < 0 or steps < 1 or lr <= 0:
        raise ValueError(f"refit_head needs l1 >= 0, steps >= 1 and lr > 0; got l1={l1}, steps={steps}, lr={lr}")
    start = time.perf_counter()
    was_training = model.training
    model.eval()
    n = min(train_size, len(data))
    feats = pooled_features(model, data.images[:n]).float()
    labels = data.labels[:n].to(feats.device)
    linear = model.fc.linear
    w = torch.zeros_like(linear.weight, dtype=torch.float32)
    b = torch.zeros_like(linear.bias, dtype=torch.float32)
    wz, bz, t = w.clone(), b.clone(), 1.0
    for _ in range(steps):
        wz.requires_grad_(True)
        bz.requires_grad_(True)
        loss = nn.functional.cross_entropy(feats @ wz.T + bz, labels)
        gw, gb = torch.autograd.grad(loss, [wz, bz])
        with torch.no_grad():
            w_new = wz - lr * gw
            w_new = torch.sign(w_new) * torch.clamp(w_new.abs() - lr * l1, min=0.0)
            b_new = bz - lr * gb
            t_new = (1.0 + (1.0 + 4.0 * t * t) ** 0.5) / 2.0
            wz = w_new + (t - 1.0) / t_new * (w_new - w)
            bz = b_new + (t - 1.0) / t_new * (b_new - b)
            w, b, t = w_new, b_new, t_new
    with torch.no_grad():
        linear.weight.copy_(w.half().float())
        linear.bias.copy_(b.half().float())
        ce = float(nn.functional.cross_entropy(feats @ linear.weight.T + linear.bias, labels))
    model.train(was_training)
    nonzero = linear.weight != 0
    return {"stage": 2, "method": "fc.linear refit on frozen pooled conv5 features: cross-entropy + l1 * |W|_1, "
                                  "full-batch FISTA from zero weights",
            "l1": l1, "steps": steps, "lr": lr, "train_size": n, "train_seed": TRAIN_SEED,
            "cross_entropy": round(ce, 5), "nonzero_weights_per_class": round(float(nonzero.sum(1).float().mean()), 2),
            "units_used": int(nonzero.any(0).sum()), "device": str(feats.device), "torch": torch.__version__,
            "seconds": round(time.perf_counter() - start, 1)}


def refit_shipped_head(data: SceneTensors, heldout: SceneTensors, device: torch.device, out: Path,
                       head: dict[str, Any]) -> dict[str, Any]:
    """Rerun stage 2 alone on ``out``'s classifier; its stage-1 facts in the manifest are kept."""
    from .loaders import load_model

    model = load_model("classifier", device, weights_dir=out)
    training = dict(load_json(out / MANIFEST)["models"]["classifier"].get("training", {}))
    training["head_refit"] = refit_head(model, data, **head)
    info = {"training": training, "metrics": _metrics("classifier", model, heldout, out, 0)}
    save_weights(model, "classifier", out, info)
    print(f"classifier stage 2: {training['head_refit']}; {info['metrics']} -> {out / 'classifier.pt'}", flush=True)
    return info


def _metrics(name: str, model: nn.Module, heldout: SceneTensors, out: Path, n_gan: int) -> dict[str, Any]:
    from . import evaluate
    from .loaders import load_model

    if name == "classifier":
        return {"heldout_accuracy": evaluate.classifier_accuracy(model, heldout)}
    if name == "segmenter":
        scores = evaluate.segmenter_scores(model, heldout)
        return {f"heldout_{ch}": {"pixel_accuracy": s["pixel_accuracy"], "miou": s["miou"]} for ch, s in scores.items()}
    try:
        segmenter = load_model("segmenter", next(model.parameters()).device, weights_dir=out)
    except (FileNotFoundError, ValueError) as err:
        print(f"(no generator statistics: {err})", file=sys.stderr)
        return {}
    stats = evaluate.generator_stats(model, segmenter, heldout, n=n_gan)
    return {k: stats[k] for k in ("samples", "labelled_fraction", "tv_vs_real_segmented", "tv_vs_real_truth")}


def initial_weights(name: str, init: str, device: torch.device) -> dict[str, torch.Tensor]:
    """The state dict a fine-tune of ``name`` starts from: ``"shipped"`` (the package's checksum-verified
    weights) or the path of a ``NAME.pt`` state dict (read with ``weights_only=True``)."""
    from .loaders import load_model

    if init == "shipped":
        return load_model(name, device).state_dict()
    path = Path(init)
    if not path.is_file():
        raise FileNotFoundError(f"--init {init!r}: no such file; give 'shipped' or the path of a {name}.pt "
                                f"state dict written by this script")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same message
        raise ValueError(f"--init {path}: not a readable state dict written by torch.save ({err})") from err
    if not isinstance(state, dict):
        raise ValueError(f"--init {path}: expected a state dict (name -> tensor), got {type(state).__name__}")
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def train_one(name: str, data: SceneTensors, heldout: SceneTensors, device: torch.device, out: Path,
              overrides: dict[str, Any], progress: bool = True, monitor_every: int = 0,
              n_gan: int = 1000, head: dict[str, Any] | None = None, init: str | None = None) -> dict[str, Any]:
    """Train model ``name`` on ``data`` (already on ``device``) and save it into ``out``; returns its manifest info.

    ``init`` (generator only): fine-tune from ``"shipped"`` or a ``generator.pt`` path instead of from scratch.
    """
    if init is not None and name != "generator":
        raise ValueError(f"--init fine-tunes the generator only, not the {name}")
    cfg = CONFIGS[name]()
    for key, value in overrides.items():
        if value is not None and hasattr(cfg, key):
            setattr(cfg, key, value)
    seed = MODEL_SEEDS[name]
    torch.manual_seed(seed)
    model = build_model(name, model_config(name)).to(device)
    if init is not None:
        try:
            model.load_state_dict(initial_weights(name, init, device))
        except RuntimeError as err:
            raise ValueError(f"--init {init!r} does not fit the toy generator's architecture: {err}") from err
    start = time.perf_counter()
    info: dict[str, Any] = {}

    def facts(steps: int) -> dict[str, Any]:
        return {"training": {**dataclasses.asdict(cfg), "steps": steps, "seed": seed, "train_size": len(data),
                             "train_seed": TRAIN_SEED, "device": str(device), "torch": torch.__version__,
                             **({"init": init} if init is not None else {}),
                             "seconds": round(time.perf_counter() - start, 1)}}

    if name == "classifier":
        model = _loops.train_classifier(model, data, cfg, seed, progress)
    elif name == "segmenter":
        model = _loops.train_segmenter(model, data, cfg, seed, progress)
    else:
        def checkpoint(ema: nn.Module, step: int) -> None:
            _round_to_half(ema)
            info.update(facts(step), metrics=_metrics(name, ema, heldout, out, n_gan))
            save_weights(ema, name, out, info)
            print(f"generator checkpoint at step {step}: {info['metrics']}", flush=True)

        class_model = None
        if cfg.coverage_weight > 0:  # the class-coverage term reads the classifier in ``out`` (or the shipped one)
            from .loaders import load_model

            here = (out / "classifier.pt").exists() and (out / MANIFEST).exists()
            class_model = load_model("classifier", device, weights_dir=out if here else None)
        model = _loops.train_generator(model, data, cfg, seed, progress,
                                       checkpoint=checkpoint if monitor_every else None,
                                       checkpoint_every=monitor_every, class_model=class_model)
    _round_to_half(model)
    info.update(facts(cfg.steps))
    if name == "classifier":
        info["training"]["head_refit"] = refit_head(model, data, **(head or {}))
    if name == "generator":
        # the generator's figures need the segmenter, so save first, then add them
        save_weights(model, name, out, info)
    info["metrics"] = _metrics(name, model, heldout, out, n_gan)
    save_weights(model, name, out, info)
    print(f"{name}: {info['training']['seconds']} s on {device}; {info['metrics']} -> {out / (name + '.pt')}",
          flush=True)
    return info


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m netdissect_widgets.toyworld.train",
                                     description="Train the toy world's models from fixed seeds and save them.")
    parser.add_argument("which", nargs="*", default="all", choices=list(ORDER) + ["all", "classifier-head"],
                        help="models to train (in the order classifier, segmenter, generator), all of them "
                             "(the default), or classifier-head: only the classifier's stage 2, on the "
                             "classifier already in --out")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, mps or auto (default)")
    parser.add_argument("--out", default=None, help=f"output folder (default: the package's {WEIGHTS_DIR})")
    parser.add_argument("--steps", type=int, default=None, help="override the number of training steps")
    parser.add_argument("--batch-size", type=int, default=None, help="override the batch size")
    parser.add_argument("--train-size", type=int, default=TRAIN_SIZE, help=f"training scenes (default {TRAIN_SIZE})")
    parser.add_argument("--heldout-size", type=int, default=HELDOUT_SIZE,
                        help=f"held-out scenes for the manifest's figures (default {HELDOUT_SIZE})")
    parser.add_argument("--gan-samples", type=int, default=1000, help="generator samples for its figures")
    parser.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1),
                        help="DataLoader worker processes for rendering scenes")
    parser.add_argument("--monitor-every", type=int, default=0,
                        help="generator: save + evaluate a checkpoint every N steps (0 = off)")
    parser.add_argument("--head-l1", type=float, default=HEAD_L1, help=f"classifier stage 2: L1 strength "
                        f"(default {HEAD_L1})")
    parser.add_argument("--head-steps", type=int, default=HEAD_STEPS,
                        help=f"classifier stage 2: FISTA steps (default {HEAD_STEPS})")
    parser.add_argument("--head-train-size", type=int, default=HEAD_TRAIN_SIZE,
                        help=f"classifier stage 2: training scenes whose features it fits (default {HEAD_TRAIN_SIZE})")
    parser.add_argument("--coverage-weight", type=float, default=None,
                        help="generator: weight of the class-coverage term (default 0, the shipped recipe; "
                             "issue #14 proposes it so every scene class is drawn; a short CPU fine-tune "
                             "with it drew stripes that fool the classifier, see the README)")
    parser.add_argument("--init", default=None, metavar="shipped|PATH",
                        help="generator: fine-tune from the shipped weights or a generator.pt instead of from "
                             "scratch (pair it with --d-warmup: the discriminator always starts fresh)")
    parser.add_argument("--d-warmup", type=int, default=None,
                        help="generator: discriminator-only steps before the generator trains (default 0)")
    parser.add_argument("--ema-start", type=int, default=None,
                        help="generator: step from which the shipped weights average the generator's (default 1000)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)

    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    which = {args.which} if isinstance(args.which, str) else set(args.which)
    if "classifier-head" in which and len(which) > 1:
        parser.error("classifier-head runs alone (it refits the head of the classifier already in --out)")
    names = ORDER if "all" in which else tuple(n for n in ORDER if n in which)
    if args.init is not None and names != ("generator",):
        parser.error("--init fine-tunes the generator: train 'generator' alone with it")
    if args.init is not None:  # read once here, so a bad file fails before the scenes are rendered
        try:
            initial_weights("generator", args.init, torch.device("cpu"))
        except (FileNotFoundError, ValueError) as err:
            parser.error(str(err))
    out = Path(args.out) if args.out else WEIGHTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    progress = not args.no_progress
    workers = max(0, args.workers) if args.workers > 1 else 0

    head = {"l1": args.head_l1, "steps": args.head_steps, "train_size": args.head_train_size}
    t0 = time.perf_counter()
    if which == {"classifier-head"}:
        data = render_tensors(min(args.train_size, args.head_train_size), TRAIN_SEED, workers=workers,
                              progress=progress, desc="training scenes")
        heldout = render_tensors(args.heldout_size, HELDOUT_SEED, workers=workers, progress=progress,
                                 desc="held-out scenes")
        refit_shipped_head(data, heldout, device, out, head)
        print(f"total {time.perf_counter() - t0:.1f} s", flush=True)
        return 0
    data = render_tensors(args.train_size, TRAIN_SEED, workers=workers, progress=progress, desc="training scenes")
    heldout = render_tensors(args.heldout_size, HELDOUT_SEED, workers=workers, progress=progress,
                             desc="held-out scenes")
    print(f"rendered {len(data)} training + {len(heldout)} held-out scenes in {time.perf_counter() - t0:.1f} s",
          flush=True)
    data = data.to(device)
    overrides = {"steps": args.steps, "batch_size": args.batch_size, "coverage_weight": args.coverage_weight,
                 "d_warmup": args.d_warmup, "ema_start": args.ema_start}
    for name in names:
        train_one(name, data, heldout, device, out, overrides, progress, args.monitor_every, args.gan_samples,
                  head, init=args.init)
    print(f"total {time.perf_counter() - t0:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
