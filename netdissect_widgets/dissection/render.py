"""Pictures of a :class:`Dissection`: unit thumbnails, strips, heatmaps, the concept chart.

Everything is drawn from what the dissection keeps (uint8 thumbnails and float16
low-resolution maps), with numpy and PIL, so a strip of five 100-px thumbnails
takes a few milliseconds. A unit's region is where its activation, upsampled
bilinearly to the thumbnail (the same interpolation as the dissection), is above
the unit's level: it is outlined and the rest of the image is dimmed.
"""
from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from .._plot import plain_text
from ..stats._bilinear import interp_matrix

if TYPE_CHECKING:  # pragma: no cover
    from .result import Dissection

DIM = 0.3                      # brightness kept outside a unit's region
OUTLINE = np.array([255, 220, 0], dtype=np.float32)   # outline colour

#: bar colours of the concept chart, by category
CATEGORY_COLORS = {
    "object": "#4C72B0", "part": "#DD8452", "material": "#55A868", "color": "#C44E52",
}


def display_size(shape: tuple[int, int], size: int) -> tuple[int, int]:
    """(height, width) with the longer side ``size``, keeping the aspect ratio."""
    h, w = shape
    size = int(size)
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    if h >= w:
        return size, max(1, round(w * size / h))
    return max(1, round(h * size / w)), size


@lru_cache(maxsize=64)
def _matrices(fh: int, fw: int, oh: int, ow: int, seg_h: int, seg_w: int, rf: Any) -> tuple[np.ndarray, np.ndarray]:
    if rf is None:
        wy, wx = interp_matrix(oh, fh), interp_matrix(ow, fw)
    else:
        (sy, sx), (oy, ox) = rf
        ky, kx = oh / seg_h, ow / seg_w
        wy = interp_matrix(oh, fh, sy * ky, (oy + 0.5) * ky - 0.5)
        wx = interp_matrix(ow, fw, sx * kx, (ox + 0.5) * kx - 0.5)
    return wy.numpy(), np.ascontiguousarray(wx.numpy().T)


def _rf_key(d: "Dissection") -> Any:
    rf = d.config.get("receptive_field")
    if rf is None:
        return None
    stride, offset = rf
    stride = (stride, stride) if np.isscalar(stride) else tuple(stride)
    offset = (offset, offset) if np.isscalar(offset) else tuple(offset)
    return (tuple(map(float, stride)), tuple(map(float, offset)))


def _thumb(d: "Dissection", unit: int, rank: int, size: int) -> np.ndarray:
    index = int(d.topk_indices[unit, rank])
    pos = int(np.searchsorted(d.thumb_index, index))
    if pos >= len(d.thumb_index) or d.thumb_index[pos] != index:
        raise KeyError(f"no thumbnail kept for dataset item {index} (unit {unit}, rank {rank})")
    key = (pos, size)
    img = d._thumb_cache.get(key)
    if img is None:
        thumb = d.thumbs[pos]
        oh, ow = display_size(thumb.shape[:2], size)
        pil = Image.fromarray(thumb)
        if (oh, ow) != thumb.shape[:2]:
            pil = pil.resize((ow, oh), Image.BILINEAR)
        img = np.asarray(pil, dtype=np.float32)
        if len(d._thumb_cache) > 4096:
            d._thumb_cache.clear()
        d._thumb_cache[key] = img
    return img


def upsampled_map(d: "Dissection", unit: int, rank: int, out_hw: tuple[int, int]) -> np.ndarray:
    """The unit's activation on its ``rank``-th top image, upsampled to ``out_hw``."""
    m = d.top_maps[unit, rank].astype(np.float32)
    seg_h, seg_w = d.config.get("seg_size", m.shape)
    wy, wx_t = _matrices(m.shape[0], m.shape[1], out_hw[0], out_hw[1], int(seg_h), int(seg_w), _rf_key(d))
    return wy @ m @ wx_t


def region_mask(d: "Dissection", unit: int, rank: int, out_hw: tuple[int, int]) -> np.ndarray:
    """Boolean mask of the unit's region (activation above its level) at ``out_hw``."""
    return upsampled_map(d, unit, rank, out_hw) > float(d.levels[unit])


def unit_image(d: "Dissection", unit: int, rank: int, size: int) -> Image.Image:
    """One thumbnail with the unit's region outlined and the rest dimmed."""
    img = _thumb(d, unit, rank, size)
    mask = region_mask(d, unit, rank, img.shape[:2])
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    edge = mask & ~inner
    out = img * np.where(mask, 1.0, DIM).astype(np.float32)[:, :, None]
    out[edge] = OUTLINE
    return Image.fromarray(out.astype(np.uint8))


def strip(images: list, gap: int = 2) -> Image.Image:
    """Images side by side on a white background."""
    if not images:
        return Image.new("RGB", (1, 1), "white")
    h = max(im.height for im in images)
    w = sum(im.width for im in images) + gap * (len(images) - 1)
    out = Image.new("RGB", (w, h), "white")
    x = 0
    for im in images:
        out.paste(im, (x, 0))
        x += im.width + gap
    return out


@lru_cache(maxsize=4)
def _colormap(name: str = "inferno") -> np.ndarray:
    import matplotlib

    return (matplotlib.colormaps[name](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.float32)


def heatmap(d: "Dissection", unit: int, rank: int, size: int) -> Image.Image:
    """The unit's activation as a colour map blended over the image; its region outlined."""
    img = _thumb(d, unit, rank, size)
    act = upsampled_map(d, unit, rank, img.shape[:2])
    top = max(float(d.topk_values[unit, 0]), float(d.levels[unit]), 1e-12)
    norm = np.clip(act / top, 0, 1)
    colour = _colormap()[(norm * 255).astype(np.int64)]
    alpha = 0.65 * norm[:, :, None]
    out = img * (1 - alpha) + colour * alpha
    mask = act > float(d.levels[unit])
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    out[mask & ~inner] = OUTLINE
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))


def runner_ups(d: "Dissection", unit: int, n: int = 2) -> list[tuple[str, str, float]]:
    """The ``n`` concepts after the label's, by IoU: ``(concept, category, iou)``, best first.

    When a runner-up's IoU is close to the label's, the label is a close call.
    """
    label = d.labels[unit].concept
    return [t for t in d.top_concepts(unit, n=n + 1) if t[0] != label][:n]


def _new_figure(width: float, height: float, scale: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width * scale, height * scale), dpi=100)


def heatmap_figure(d: "Dissection", unit: int, rank: int, size: int = 160, scale: float = 1.0) -> Any:
    """The unit's activation on its ``rank``-th top image (:func:`heatmap`) with a colour bar in
    activation units and the unit's level marked on it; returns the Figure."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    image = heatmap(d, unit, rank, size)
    top = max(float(d.topk_values[unit, 0]), float(d.levels[unit]), 1e-12)
    fig = _new_figure(2.9, 2.3, scale)
    ax = fig.add_axes((0.02, 0.1, 0.68, 0.8))
    ax.imshow(np.asarray(image))
    ax.set_axis_off()
    ax.set_title(f"top image {rank} (0 = best)", fontsize=9 * scale)
    cax = fig.add_axes((0.76, 0.1, 0.05, 0.8))
    bar = fig.colorbar(ScalarMappable(Normalize(0.0, top), cmap="inferno"), cax=cax)
    level = float(d.levels[unit])
    bar.ax.axhline(level, color="#00bcd4", lw=2)
    bar.ax.tick_params(labelsize=7 * scale)
    bar.set_label(f"activation (cyan: level {level:.3g})", fontsize=7 * scale)
    return fig


def concept_bars_figure(d: "Dissection", unit: int, n: int = 8, scale: float = 1.0) -> Any:
    """Bar chart of the unit's ``n`` best concepts by IoU (the label first), the match threshold dotted."""
    best = d.top_concepts(unit, n=n)
    fig = _new_figure(3.4, 2.4, scale)
    ax = fig.add_subplot(1, 1, 1)
    names = [str(c) for c, _cat, _iou in best][::-1]
    ious = [float(v) for _c, _cat, v in best][::-1]
    colours = [CATEGORY_COLORS.get(str(cat), "#8172B3") for _c, cat, _v in best][::-1]
    ax.barh(range(len(names)), ious, color=colours)
    for y, v in enumerate(ious):
        ax.text(v, y, f" {v:.3f}", va="center", fontsize=7 * scale)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names, fontsize=8 * scale)
    ax.axvline(d.iou_threshold, color="#444", ls=":", lw=1)
    ax.set_xlim(0, max(ious + [d.iou_threshold]) * 1.3 or 1.0)
    ax.set_xlabel("IoU (dotted: match threshold)", fontsize=8 * scale)
    ax.set_title(f"unit {unit}: best concepts (label and runner-ups)", fontsize=9 * scale)
    ax.tick_params(axis="x", labelsize=7 * scale)
    plain_text(fig)  # (names are shown as typed: a '$' is a dollar sign, not mathtext)
    fig.tight_layout()
    return fig


def histogram_figure(d: "Dissection", unit: int, scale: float = 1.0) -> Any:
    """The unit's activation histogram (log counts) with its level marked."""
    counts = np.asarray(d.hist_counts[unit], dtype=float)
    edges = np.asarray(d.hist_edges[unit], dtype=float)
    level = float(d.levels[unit])
    fig = _new_figure(3.4, 2.4, scale)
    ax = fig.add_subplot(1, 1, 1)
    ax.stairs(counts, edges, fill=True, color="#9bb0d3")
    ax.axvline(level, color="#c00", lw=1.5, label=f"level {d.level:g} = {level:.3g}")
    if counts.max(initial=0) > 0:
        ax.set_yscale("log")
    ax.set_xlabel("activation", fontsize=8 * scale)
    ax.set_ylabel("count", fontsize=8 * scale)
    ax.set_title(f"unit {unit}: activation histogram", fontsize=9 * scale)
    ax.legend(fontsize=7 * scale)
    ax.tick_params(labelsize=7 * scale)
    plain_text(fig)  # (names are shown as typed: a '$' is a dollar sign, not mathtext)
    fig.tight_layout()
    return fig


def concept_chart(d: "Dissection", ax: Any = None) -> Any:
    """Bar chart of matched units per concept, coloured by category; returns the Figure."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    counts = d.concept_counts()
    if ax is None:
        fig = Figure(figsize=(max(4.0, 0.32 * len(counts) + 1.5), 3.2), dpi=100)
        ax = fig.add_subplot(1, 1, 1)
    else:
        fig = ax.figure
    names = list(counts)
    cats = [d.category_of(c) for c in names]
    colours = [CATEGORY_COLORS.get(c, "#8172B3") for c in cats]
    ax.bar(range(len(names)), [counts[c] for c in names], color=colours)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=70, ha="right", fontsize=8)
    ax.set_ylabel("units")
    n_matched = sum(counts.values())
    ax.set_title(
        f"{d.layer}: {n_matched}/{d.num_units} units matched, {len(names)} concepts\n"
        f"(IoU > {d.iou_threshold:g}; level {d.level:g} = top {100 * (1 - d.level):.3g}% of pixels)",
        fontsize=9,
    )
    present = [c for c in CATEGORY_COLORS if c in set(cats)]
    if present:
        ax.legend(handles=[Patch(color=CATEGORY_COLORS[c], label=c) for c in present], fontsize=8, frameon=False)
    if not names:
        ax.text(0.5, 0.5, "no unit matched a concept", ha="center", va="center", transform=ax.transAxes)
    plain_text(fig)  # (names are shown as typed: a '$' is a dollar sign, not mathtext)
    fig.tight_layout()
    return fig
