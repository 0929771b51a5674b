"""A static HTML report of a :class:`Dissection`.

``write_report(d, folder)`` writes ``folder/index.html`` with the summary, the
concept chart (``concepts.png``) and one row per unit (0-based unit number,
label, category, IoU, matched or not, and its strip of top images
``units/unit_XXXX.png``). Every label is HTML-escaped; every file is written
atomically. Open ``index.html`` in any browser; no server is needed.
"""
from __future__ import annotations

import html
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._io import atomic_write
from .result import level_phrase

if TYPE_CHECKING:  # pragma: no cover
    from .result import Dissection

_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; }
td, th { padding: 3px 8px; border-bottom: 1px solid #ddd; text-align: left; vertical-align: middle; }
tr.unmatched td { color: #999; }
pre { background: #f6f6f6; padding: 0.8em; }
"""


def _readable(path: Path) -> Path:
    """Report files are for sharing: readable by all (temporary files start private)."""
    os.chmod(path, 0o644)
    return path


def _save_png(image, path: Path) -> None:
    _readable(atomic_write(path, lambda tmp: image.save(tmp, format="PNG", compress_level=3)))


def best_units_image(d: "Dissection", n_units: int = 4, n: int = 5, size: int = 100, units=None) -> Any:
    """One PIL image: the strips of the ``n_units`` highest-IoU units (or ``units``), one per row,
    each captioned ``unit U (0-based): concept (category), IoU``."""
    from PIL import Image, ImageDraw

    if units is None:
        units = [lab.unit for lab in sorted(d.labels, key=lambda lab: -lab.iou)[:n_units]]
    strips = [d.unit_strip(u, n=n, size=size) for u in units]
    caption_h = 16
    width = max(s.width for s in strips)
    out = Image.new("RGB", (width, sum(s.height + caption_h for s in strips)), "white")
    draw = ImageDraw.Draw(out)
    top = 0
    for u, s in zip(units, strips):
        lab = d.labels[u]
        draw.text((2, top + 2), f"unit {u} (0-based): {lab.concept} ({lab.category}), IoU {lab.iou:.3f}", fill="black")
        out.paste(s, (0, top + caption_h))
        top += s.height + caption_h
    return out


def write_figures(d: "Dissection", folder: str | os.PathLike, prefix: str, n_units: int = 4) -> list[Path]:
    """Write ``PREFIX-concepts.png`` (the concept chart) and ``PREFIX-units.png`` (best units)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fig = d.concept_chart()
    chart = _readable(atomic_write(folder / f"{prefix}-concepts.png", lambda tmp: fig.savefig(tmp, format="png")))
    units = folder / f"{prefix}-units.png"
    _save_png(best_units_image(d, n_units=n_units), units)
    return [chart, units]


def write_report(d: "Dissection", folder: str | os.PathLike, n: int = 5, size: int = 100) -> Path:
    """Write the report; returns the path of ``index.html``."""
    folder = Path(folder)
    (folder / "units").mkdir(parents=True, exist_ok=True)
    fig = d.concept_chart()
    _readable(atomic_write(folder / "concepts.png", lambda tmp: fig.savefig(tmp, format="png")))
    esc = html.escape
    rows = []
    for lab in d.labels:
        name = f"unit_{lab.unit:04d}.png"
        _save_png(d.unit_strip(lab.unit, n=n, size=size), folder / "units" / name)
        rows.append(
            f'<tr class="{"matched" if lab.matched else "unmatched"}"><td>{lab.unit}</td>'
            f"<td>{esc(lab.concept)}</td><td>{esc(lab.category)}</td><td>{lab.iou:.3f}</td>"
            f"<td>{'yes' if lab.matched else 'no'}</td><td>{float(d.levels[lab.unit]):.4g}</td>"
            f'<td><img src="units/{name}" alt="top images of unit {lab.unit}"></td></tr>'
        )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Dissection of {esc(d.layer)}</title><style>{_STYLE}</style></head>
<body>
<h1>Dissection of layer {esc(d.layer)} ({esc(d.kind)})</h1>
<p>Unit numbers are 0-based. {esc(level_phrase(d.level))}: each unit's region is where its
upsampled activation exceeds its level (outlined in the images; the rest is dimmed).
A unit matches its best concept when IoU &gt; {d.iou_threshold:g}.</p>
<pre>{esc(d.summary())}</pre>
<img src="concepts.png" alt="matched units per concept">
<h2>Units</h2>
<table>
<tr><th>unit (0-based)</th><th>concept</th><th>category</th><th>IoU</th><th>matched</th><th>level</th><th>top images</th></tr>
{chr(10).join(rows)}
</table>
</body></html>
"""
    return _readable(atomic_write(folder / "index.html", lambda tmp: Path(tmp).write_text(page, encoding="utf-8")))
