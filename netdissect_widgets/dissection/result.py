"""The result of a dissection: :class:`Dissection` and :class:`UnitLabel`.

A :class:`Dissection` is self-contained: besides the numbers (each unit's level,
its IoU with every concept, its label, its top images) it keeps small uint8
thumbnails of every unit's top ``n_show`` images and the unit's low-resolution
activation maps on them, so that a unit browser can draw a unit's strip in a few
milliseconds without the model or the data.

Units are numbered from 0. ``level`` is a quantile: level 0.99 means that a
unit's region on an image is where its upsampled activation is above the value
exceeded by only the top 1% of all its pixels over the dataset.

Files (``save`` / ``load``): ``dissection.json`` (metadata, labels, config) and
``arrays.npz`` (every array; loaded with ``allow_pickle=False``). Both carry the
dissection's fingerprint, so a mismatched pair is refused.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._io import load_json, load_npz, replace_dir, save_json, save_npz, temp_dir
from . import render
from ._words import level_phrase  # (also imported from here by other modules)

FORMAT_VERSION = 1
_ARRAYS = (
    "levels", "iou", "topk_values", "topk_indices", "hist_counts", "hist_edges",
    "thumbs", "thumb_index", "top_maps", "intersection", "unit_pixels", "concept_pixels",
)


@dataclass(frozen=True)
class UnitLabel:
    """The label of one unit (0-based ``unit``): its best concept and that concept's IoU.

    ``matched`` is ``iou > iou_threshold`` of the dissection.
    """

    unit: int
    concept: str  # "-" when the unit's region overlaps no concept
    category: str
    iou: float
    matched: bool


class Dissection:
    """What each unit of one layer detects, as measured by :func:`~netdissect_widgets.dissect`.

    Attributes
    ----------
    layer : str
        The dissected layer.
    kind : {"classifier", "generator"}
        ``"classifier"``: the segmenter saw the input images; ``"generator"``: the
        generated images (the data were latent vectors).
    level : float
        Quantile of each unit's activations taken as its threshold
        (0.99 = the top 1% of pixels).
    iou_threshold : float
        A unit matches its best concept when that IoU is above this.
    levels : Tensor (U,)
        Each unit's activation level at quantile ``level`` (after upsampling).
    iou : Tensor (U, C)
        IoU of every unit with every concept (column 0, "no label", is 0).
    concepts, categories : list of str
        The segmenter's concept names and their categories (index = concept id).
    labels : list of UnitLabel
        One per unit; ``labels[u].unit == u``.
    topk_values, topk_indices : Tensor (U, k)
        Each unit's spatial-max activation on its top ``k`` dataset items and
        their dataset indices, highest first.
    hist_counts, hist_edges : ndarray (U, B), (U, B + 1)
        Histogram of each unit's upsampled activations, counted on a random
        sample of positions (32 per image; ``config["hist_sample"]``); the
        edges span the unit's minimum to maximum.
    thumbs : uint8 ndarray (M, h, w, 3)
        Thumbnails of the images that are in some unit's top ``n_show``.
    thumb_index : int64 ndarray (M,)
        Their dataset indices (sorted).
    top_maps : float16 ndarray (U, n_show, fh, fw)
        Each unit's low-resolution activation map on its top ``n_show`` images
        (float32 when a value is beyond float16's range).
    intersection : int64 ndarray (U, C); unit_pixels (U,); concept_pixels (C,)
        The pixel counts the IoU is made of.
    config : dict
        The settings of the run (JSON-able).
    fingerprint, model_fingerprint : str
        Cache keys of the whole run and of the model's weights.
    """

    def __init__(self, **fields: Any) -> None:
        missing = {
            "layer", "kind", "level", "iou_threshold", "concepts", "categories", "config",
            "fingerprint", "model_fingerprint", *_ARRAYS,
        } - set(fields)
        if missing:
            raise TypeError(f"Dissection is missing fields: {sorted(missing)}")
        self.layer: str = str(fields["layer"])
        self.kind: str = str(fields["kind"])
        self.level = float(fields["level"])
        self.iou_threshold = float(fields["iou_threshold"])
        self.concepts: list[str] = list(fields["concepts"])
        self.categories: list[str] = list(fields["categories"])
        self.config: dict = dict(fields["config"])
        self.fingerprint: str = str(fields["fingerprint"])
        self.model_fingerprint: str = str(fields["model_fingerprint"])
        self.levels = torch.as_tensor(np.asarray(fields["levels"], dtype=np.float32))
        self.iou = torch.as_tensor(np.asarray(fields["iou"], dtype=np.float32))
        self.topk_values = torch.as_tensor(np.asarray(fields["topk_values"], dtype=np.float32))
        self.topk_indices = torch.as_tensor(np.asarray(fields["topk_indices"], dtype=np.int64))
        self.hist_counts = np.asarray(fields["hist_counts"], dtype=np.int64)
        self.hist_edges = np.asarray(fields["hist_edges"], dtype=np.float32)
        self.thumbs = np.asarray(fields["thumbs"], dtype=np.uint8)
        self.thumb_index = np.asarray(fields["thumb_index"], dtype=np.int64)
        maps = np.asarray(fields["top_maps"])
        fits = maps.dtype == np.float16 or not maps.size or float(np.abs(maps).max()) <= 65504
        self.top_maps = maps.astype(np.float16 if fits else np.float32)  # (float32 only where float16 cannot)
        self.intersection = np.asarray(fields["intersection"], dtype=np.int64)
        self.unit_pixels = np.asarray(fields["unit_pixels"], dtype=np.int64)
        self.concept_pixels = np.asarray(fields["concept_pixels"], dtype=np.int64)
        self.labels: list[UnitLabel] = self._make_labels()
        self._thumb_cache: dict = {}

    # ------------------------------------------------------------------ numbers
    def _make_labels(self) -> list[UnitLabel]:
        iou = self.iou.numpy()
        labels = []
        for u in range(iou.shape[0]):
            c = int(np.argmax(iou[u, 1:])) + 1 if iou.shape[1] > 1 else 0
            value = float(iou[u, c])
            if value <= 0:
                c = 0  # overlaps no concept at all: labelled "-"
            labels.append(UnitLabel(u, self.concepts[c], self.categories[c], value, value > self.iou_threshold))
        return labels

    @property
    def num_units(self) -> int:
        """Number of units of the layer (numbered 0 .. num_units - 1)."""
        return int(self.levels.shape[0])

    @property
    def n_show(self) -> int:
        """How many top images per unit have a thumbnail."""
        return int(self.top_maps.shape[1])

    def _unit(self, unit: Any) -> int:
        if isinstance(unit, bool) or not isinstance(unit, (int, np.integer)):
            raise TypeError(f"unit must be an int (0-based unit number), got {type(unit).__name__}")
        if not 0 <= int(unit) < self.num_units:
            raise IndexError(f"unit {unit} out of range: units are numbered 0 .. {self.num_units - 1} (0-based)")
        return int(unit)

    def top_concepts(self, unit: int, n: int = 5) -> list[tuple[str, str, float]]:
        """The ``n`` concepts with the highest IoU for ``unit``: ``(concept, category, iou)``."""
        u = self._unit(unit)
        row = self.iou[u].numpy().copy()
        row[0] = -1.0
        order = np.argsort(-row, kind="stable")[: max(0, int(n))]
        return [(self.concepts[c], self.categories[c], float(row[c])) for c in order if c != 0]

    def concept_counts(self) -> dict[str, int]:
        """Matched units per concept (``iou > iou_threshold``), most units first."""
        counts: dict[str, int] = {}
        for lab in self.labels:
            if lab.matched:
                counts[lab.concept] = counts.get(lab.concept, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def category_of(self, concept: str) -> str:
        """Category of a concept name."""
        try:
            return self.categories[self.concepts.index(concept)]
        except ValueError:
            raise KeyError(f"unknown concept {concept!r}; see .concepts") from None

    def summary(self, top: int = 10) -> str:
        """A text table: units matched, concepts, categories, and the best units."""
        labels = self.labels
        matched = [lab for lab in labels if lab.matched]
        counts = self.concept_counts()
        lines = [
            f"Dissection of layer {self.layer!r} ({self.kind}): {self.num_units} units "
            f"(unit numbers are 0-based)",
            f"{level_phrase(self.level)} (per unit); a unit matches its best concept when IoU > "
            f"{self.iou_threshold:g}",
            f"units matched: {len(matched)} / {self.num_units} "
            f"({100 * len(matched) / max(1, self.num_units):.0f}%); distinct concepts: {len(counts)}",
            "",
            f"{'category':<10} {'units':>6} {'concepts':>9}",
        ]
        for cat in sorted({c for c in self.categories[1:]}):
            n_units = sum(1 for lab in matched if lab.category == cat)
            n_conc = sum(1 for c in counts if self.category_of(c) == cat)
            lines.append(f"{cat:<10} {n_units:>6} {n_conc:>9}")
        if counts:
            lines += ["", f"{'concept':<16} {'category':<10} {'units':>6}"]
            for concept, n in counts.items():
                lines.append(f"{concept:<16} {self.category_of(concept):<10} {n:>6}")
        best = sorted(labels, key=lambda lab: -lab.iou)[:top]
        if best:
            lines += ["", f"best units (0-based)", f"{'unit':>5} {'concept':<16} {'category':<10} {'IoU':>6}"]
            for lab in best:
                lines.append(f"{lab.unit:>5} {lab.concept:<16} {lab.category:<10} {lab.iou:>6.3f}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        n = sum(lab.matched for lab in self.labels)
        return (
            f"<Dissection layer={self.layer!r} kind={self.kind} units={self.num_units} "
            f"matched={n} {level_phrase(self.level)} iou>{self.iou_threshold:g}>"
        )

    # ------------------------------------------------------------------ pictures
    def unit_images(self, unit: int, n: int = 5, size: int = 100) -> list:
        """Thumbnails (PIL) of ``unit``'s top ``n`` images, its region above its level outlined
        and the rest dimmed (``n`` is capped at the number of kept thumbnails)."""
        u = self._unit(unit)
        return [render.unit_image(self, u, r, size) for r in range(min(int(n), self.n_show))]

    def unit_strip(self, unit: int, n: int = 5, size: int = 100, gap: int = 2) -> Any:
        """One PIL image: ``unit_images(unit, n, size)`` side by side."""
        return render.strip(self.unit_images(unit, n, size), gap)

    def heatmap(self, unit: int, rank: int = 0, size: int = 100) -> Any:
        """PIL image of ``unit``'s activation over its ``rank``-th top image (0 = the top one)."""
        u = self._unit(unit)
        if not 0 <= int(rank) < self.n_show:
            raise IndexError(f"rank {rank} out of range: thumbnails were kept for ranks 0 .. {self.n_show - 1}")
        return render.heatmap(self, u, int(rank), size)

    def concept_chart(self, ax: Any = None) -> Any:
        """Bar chart (matplotlib Figure) of matched units per concept, coloured by category."""
        return render.concept_chart(self, ax)

    # ------------------------------------------------------------------ files
    def arrays(self) -> dict[str, np.ndarray]:
        """Every array of the dissection, as numpy."""
        out = {}
        for name in _ARRAYS:
            value = getattr(self, name)
            out[name] = value.numpy() if isinstance(value, torch.Tensor) else value
        return out

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``arrays.npz`` and ``dissection.json`` into ``folder`` (no pickle).

        Atomic as a whole: the two files are written (and synced) in a new folder beside
        ``folder``, which then takes its place (on Linux an old save is swapped out in one
        step), so an interrupted save leaves the old save or the new one, never a mix. A
        ``folder`` that holds other files too is not replaced: the two files are then written
        one after the other (each atomically; :meth:`load` refuses a mismatched pair).
        """
        folder = Path(folder)
        meta = {
            "format": "netdissect_widgets.Dissection",
            "version": FORMAT_VERSION,
            "layer": self.layer, "kind": self.kind, "level": self.level,
            "iou_threshold": self.iou_threshold, "concepts": self.concepts,
            "categories": self.categories, "config": self.config,
            "fingerprint": self.fingerprint, "model_fingerprint": self.model_fingerprint,
            "units_are": "0-based",
            "labels": [asdict(lab) for lab in self.labels],
        }
        ours = {"arrays.npz", "dissection.json"}
        if folder.is_dir() and not {p.name for p in folder.iterdir()} <= ours:
            save_npz(folder / "arrays.npz", fingerprint=np.array(self.fingerprint), **self.arrays())
            save_json(folder / "dissection.json", meta)
            return folder
        work = temp_dir(folder.parent, folder.name)
        try:
            save_npz(work / "arrays.npz", fingerprint=np.array(self.fingerprint), **self.arrays())
            save_json(work / "dissection.json", meta)
            replace_dir(work, folder)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "Dissection":
        """Read a dissection written by :meth:`save`, checked before use.

        Raises
        ------
        FileNotFoundError
            ``folder`` is not a saved dissection.
        ValueError
            A file is unreadable, of another version, or disagrees with the other (types,
            shapes, dtypes, index ranges); the message names the file.
        """
        folder = Path(folder)
        meta_path, arr_path = folder / "dissection.json", folder / "arrays.npz"
        if not meta_path.is_file() or not arr_path.is_file():
            raise FileNotFoundError(
                f"{folder} is not a saved dissection: expected dissection.json and arrays.npz (see Dissection.save)"
            )
        meta = load_json(meta_path)
        if not isinstance(meta, dict) or meta.get("format") != "netdissect_widgets.Dissection" or (
                meta.get("version") != FORMAT_VERSION):
            got = (meta.get("format"), meta.get("version")) if isinstance(meta, dict) else type(meta).__name__
            raise ValueError(f"{meta_path} is not a version-{FORMAT_VERSION} dissection (found {got!r}); re-run dissect")
        fields = _check_meta(meta, meta_path)
        arrays = load_npz(arr_path)
        if str(arrays.pop("fingerprint", "")) != meta["fingerprint"]:
            raise ValueError(f"{arr_path} and {meta_path} belong to different dissections; re-run dissect")
        _check_arrays(arrays, len(fields["concepts"]), arr_path)
        return cls(**fields, **{k: arrays[k] for k in _ARRAYS})

    def to_html(self, folder: str | os.PathLike, n: int = 5, size: int = 100) -> Path:
        """Write a static report ``folder/index.html`` (+ PNGs): every unit's label, IoU and strip."""
        from .report import write_report

        return write_report(self, folder, n=n, size=size)


# ---------------------------------------------------------------------- checks of saved files

_META_TYPES = {"layer": str, "kind": str, "level": (int, float), "iou_threshold": (int, float), "concepts": list,
               "categories": list, "config": dict, "fingerprint": str, "model_fingerprint": str}
_FLOAT = ("levels", "iou", "topk_values", "hist_edges", "top_maps")


def _check_meta(meta: dict, path: Path) -> dict:
    for key, kind in _META_TYPES.items():
        if not isinstance(meta.get(key), kind) or isinstance(meta.get(key), bool):
            raise ValueError(f"{path}: {key!r} is missing or not a {getattr(kind, '__name__', 'number')}; "
                             f"re-run dissect")
    if meta["kind"] not in ("classifier", "generator"):
        raise ValueError(f"{path}: kind must be 'classifier' or 'generator', got {meta['kind']!r}")
    names, cats = meta["concepts"], meta["categories"]
    if len(names) < 1 or len(cats) != len(names) or not all(isinstance(v, str) for v in names + cats):
        raise ValueError(f"{path}: concepts and categories must be lists of str of one length")
    return {k: meta[k] for k in _META_TYPES}


def _check_arrays(arrays: dict, n_concepts: int, path: Path) -> None:
    """Shapes, dtypes and index ranges of a saved dissection's arrays, against each other."""
    missing = [k for k in _ARRAYS if k not in arrays]
    if missing:
        raise ValueError(f"{path}: arrays {missing} are missing; re-run dissect")
    a = arrays

    def fail(what: str) -> None:
        raise ValueError(f"{path}: {what}; the file is damaged or from another program: re-run dissect")

    for k in _ARRAYS:
        kind = a[k].dtype.kind
        if (k in _FLOAT and kind != "f") or (k == "thumbs" and a[k].dtype != np.uint8) or (
                k not in _FLOAT and k != "thumbs" and kind not in "iu"):
            fail(f"array {k!r} has dtype {a[k].dtype}")
    if a["levels"].ndim != 1:
        fail(f"levels has shape {a['levels'].shape}, expected (units,)")
    U, C = a["levels"].shape[0], n_concepts
    want = {"iou": (U, C), "intersection": (U, C), "unit_pixels": (U,), "concept_pixels": (C,)}
    for k, shape in want.items():
        if a[k].shape != shape:
            fail(f"{k} has shape {a[k].shape}, expected {shape} ({U} units, {C} concepts)")
    k_top = a["topk_values"].shape[1] if a["topk_values"].ndim == 2 else -1
    if a["topk_values"].shape != (U, k_top) or a["topk_indices"].shape != (U, k_top):
        fail(f"topk_values {a['topk_values'].shape} and topk_indices {a['topk_indices'].shape} must be (units, k)")
    if a["hist_counts"].ndim != 2 or a["hist_counts"].shape[0] != U or a["hist_edges"].shape != (
            U, a["hist_counts"].shape[1] + 1):
        fail(f"hist_counts {a['hist_counts'].shape} and hist_edges {a['hist_edges'].shape} disagree")
    if a["thumbs"].ndim != 4 or a["thumbs"].shape[3] != 3 or a["thumb_index"].shape != (a["thumbs"].shape[0],):
        fail(f"thumbs {a['thumbs'].shape} and thumb_index {a['thumb_index'].shape} disagree")
    if a["top_maps"].ndim != 4 or a["top_maps"].shape[0] != U or a["top_maps"].shape[1] > k_top:
        fail(f"top_maps has shape {a['top_maps'].shape}, expected (units, n_show <= k, h, w)")
    if (a["topk_indices"] < 0).any() or (np.diff(a["thumb_index"]) <= 0).any():
        fail("topk_indices must be >= 0 and thumb_index increasing")
    shown = np.unique(a["topk_indices"][:, : a["top_maps"].shape[1]])
    if not np.isin(shown, a["thumb_index"]).all():
        fail("a top image shown has no thumbnail")
