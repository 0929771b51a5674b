"""Load the toy world's shipped models: classifier, generator, segmenter.

The weights live in ``toyworld/weights/`` as float16 state dicts (``NAME.pt``)
next to ``manifest.json``, which records for each model its file's SHA-256, the
architecture settings needed to rebuild it, the concept and class lists it was
trained on, and how it was trained. Loading checks the checksum first and reads
the file with ``torch.load(..., weights_only=True)`` (no pickle), then casts the
weights to float32::

    from netdissect_widgets import toyworld
    clf = toyworld.load_classifier()        # conv1..conv5, fc
    gen = toyworld.load_generator()         # layer1..layer5, output; gen.z_dim
    seg = toyworld.load_segmenter()         # seg.segment(images) -> (N, 4, H, W)

A missing or damaged file is never replaced by a random model: the error names
the file and the command that regenerates it
(``python -m netdissect_widgets.toyworld.train NAME``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._io import load_json, sha256_file
from .nets import ToyClassifier, ToyGenerator
from .segmenter import ToySegmenter

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MANIFEST = "manifest.json"
MODEL_NAMES = ("classifier", "generator", "segmenter")


def _regen(name: str) -> str:
    return f"Regenerate it with `python -m netdissect_widgets.toyworld.train {name}`."


def build_model(name: str, config: dict[str, Any]) -> nn.Module:
    """Build the untrained architecture of model ``name`` from its manifest ``config``."""
    if name == "classifier":
        return ToyClassifier(config["num_classes"], config["widths"])
    if name == "generator":
        return ToyGenerator(config["z_dim"], config["widths"])
    if name == "segmenter":
        return ToySegmenter(config["concepts"], config["categories"], config["channels"], config["widths"])
    raise KeyError(f"unknown toy-world model {name!r}; choose one of {', '.join(MODEL_NAMES)}")


def _check_world(name: str, path: Path, config: dict[str, Any]) -> None:
    """Refuse weights trained on another version of the toy world's concepts / classes."""
    from . import concepts as world

    if name == "classifier" and list(config.get("classes", [])) != list(world.CLASSES):
        raise ValueError(f"{path} was trained for scene classes {config.get('classes')}, "
                         f"but the toy world now has {list(world.CLASSES)}. {_regen(name)}")
    if name == "segmenter":
        # concepts appended to the world later keep the old ids valid (the segmenter never predicts them)
        n = len(config["concepts"])
        if (list(config["concepts"]) != world.CONCEPTS.names[:n]
                or list(config["categories"]) != world.CONCEPTS.categories[:n]):
            raise ValueError(f"{path} was trained for other concept ids than the toy world's current "
                             f"CONCEPTS. {_regen(name)}")


def load_model(name: str, device: str | torch.device = "cpu", *, weights_dir: str | os.PathLike | None = None) -> nn.Module:
    """Load shipped model ``name`` (checksum-verified, float32, eval mode) onto ``device``.

    Parameters
    ----------
    name : {"classifier", "generator", "segmenter"}
    device : str or torch.device
    weights_dir : path, optional
        Folder holding ``NAME.pt`` and ``manifest.json`` (default: the package's weights).

    Raises
    ------
    FileNotFoundError
        The weight file or the manifest is missing.
    ValueError
        The file's checksum differs from the manifest, it cannot be read, or it does
        not fit the architecture / the toy world's concepts.
    """
    if name not in MODEL_NAMES:
        raise KeyError(f"unknown toy-world model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    folder = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    path = folder / f"{name}.pt"
    manifest_path = folder / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"toy-world {name} weights not found: {path}. {_regen(name)}")
    if not manifest_path.is_file():
        raise FileNotFoundError(f"weights manifest not found: {manifest_path} (needed to verify {path}). {_regen(name)}")
    try:
        entry = load_json(manifest_path)["models"][name]
        expected, config = entry["sha256"], entry["config"]
        if not isinstance(expected, str) or not isinstance(config, dict):
            raise TypeError("sha256 must be a str and config an object")
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{manifest_path} has no valid entry for {name} ({err!r}). {_regen(name)}") from err
    actual = sha256_file(path)
    if actual != expected:
        raise ValueError(f"{path} is corrupt or was changed: its SHA-256 is {actual}, the manifest expects "
                         f"{expected}. {_regen(name)}")
    try:  # (memory-mapped: a header claiming more than the file holds fails instead of allocating it)
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same advice
        raise ValueError(f"cannot read {path} ({err}). {_regen(name)}") from err
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise ValueError(f"{path} does not hold a state dict (names -> tensors). {_regen(name)}")
    try:
        _check_world(name, path, config)
        model = build_model(name, config)
    except (KeyError, TypeError, ValueError) as err:
        if isinstance(err, ValueError) and str(path) in str(err):
            raise
        raise ValueError(f"{manifest_path}: the {name} entry's config does not describe a model ({err!r}). "
                         f"{_regen(name)}") from err
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{path} does not fit the {name} architecture ({err}). {_regen(name)}") from err
    return model.to(device).eval()


def load_classifier(device: str | torch.device = "cpu", *, weights_dir: str | os.PathLike | None = None) -> ToyClassifier:
    """The trained scene classifier (modules ``conv1`` ... ``conv5``, ``fc``) on ``device``, eval mode.

    Input: images ``(N, 3, 64, 64)`` in [-1, 1]; output: logits over ``toyworld.CLASSES``.

    Trained in two stages (``python -m netdissect_widgets.toyworld.train classifier``):
    stage 1 trains the whole network with SGD; stage 2 refits only ``fc.linear`` on
    the frozen network's global-average-pooled ``conv5`` features (12,000 training
    scenes) with cross-entropy + 0.02 x the L1 norm of its weights, so each class reads
    a few ``conv5`` units (3.3 per class on average, 33 of 256 in all) rather than a
    little of every unit. Like the paper's VGG16, removing a class's top units then
    drops that class toward chance while keeping only them keeps most of its accuracy
    (``python -m netdissect_widgets.bench interventions``). Held-out accuracy: 1.0.
    The manifest entry's ``training.head_refit`` records stage 2.
    """
    return load_model("classifier", device, weights_dir=weights_dir)  # type: ignore[return-value]


def load_generator(device: str | torch.device = "cpu", *, weights_dir: str | os.PathLike | None = None) -> ToyGenerator:
    """The trained GAN generator (modules ``layer1`` ... ``layer5``, ``output``; ``.z_dim``), eval mode.

    Input: ``z (N, z_dim)``; output: images ``(N, 3, 64, 64)`` in [-1, 1].

    Known limitation of the shipped weights: the GAN dropped the built-up scene
    types -- buildings and roads cover under 0.1% of generated pixels against ~6%
    of real ones, while trees, grass and mountains are over-represented -- so its
    object frequencies are only within a TV distance of ~0.23 of the real
    scenes' (``python -m netdissect_widgets.toyworld.evaluate generator``). Trees
    are plentiful (layer4 has dozens of tree units), which is what GAN-paint needs.
    """
    return load_model("generator", device, weights_dir=weights_dir)  # type: ignore[return-value]


def load_segmenter(device: str | torch.device = "cpu", *, weights_dir: str | os.PathLike | None = None) -> ToySegmenter:
    """The trained toy-world segmenter: ``segment(images) -> (N, 4, H, W)`` int64 concept ids."""
    return load_model("segmenter", device, weights_dir=weights_dir)  # type: ignore[return-value]
