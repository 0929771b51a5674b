"""A static HTML report of a :class:`Dissection`.

``write_report(d, folder, model="resnet18")`` writes ``folder/index.html``, titled
"Dissection of <model> <layer>", with the summary, the concept chart
(``concepts.png``) and one row per unit (0-based unit number, label, category,
IoU, the runner-up concepts with their IoUs -- a label that wins by a hair is a
close call --, matched or not, and its strip of top images
``units/unit_XXXX.png``). Click a column header to sort the table by it (a few
lines of plain JavaScript in the page; click again to reverse). Every label is
HTML-escaped; every file is written atomically. Open ``index.html`` in any
browser; no server is needed.
"""
from __future__ import annotations

import html
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._io import atomic_write
from .render import runner_ups
from ._words import level_phrase

if TYPE_CHECKING:  # pragma: no cover
    from .result import Dissection

_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; }
td, th { padding: 3px 8px; border-bottom: 1px solid #ddd; text-align: left; vertical-align: middle; }
tr.unmatched td { color: #999; }
pre { background: #f6f6f6; padding: 0.8em; }
th { cursor: pointer; user-select: none; background: #f3f3f3; }
th[aria-sort="ascending"]::after { content: " \\25B2"; }
th[aria-sort="descending"]::after { content: " \\25BC"; }
.runner { color: #666; font-size: 90%; }
"""

# sorts the units table by the clicked column (numbers as numbers); no libraries, no network
_SORT_JS = """
document.querySelectorAll("table.sortable th").forEach((th, col) => {
  th.title = "sort by this column (click again to reverse)";
  th.addEventListener("click", () => {
    const table = th.closest("table"), body = table.tBodies[0];
    const up = th.getAttribute("aria-sort") !== "ascending";
    table.querySelectorAll("th").forEach(h => h.removeAttribute("aria-sort"));
    th.setAttribute("aria-sort", up ? "ascending" : "descending");
    const key = r => { const c = r.cells[col]; const v = c.dataset.value ?? c.textContent.trim();
                       const n = Number(v); return v !== "" && !isNaN(n) ? n : v.toLowerCase(); };
    const rows = [...body.rows].sort((a, b) => { const x = key(a), y = key(b);
      return (x < y ? -1 : x > y ? 1 : 0) * (up ? 1 : -1); });
    rows.forEach(r => body.appendChild(r));
  });
});
"""


def _readable(path: Path) -> Path:
    """Report files get the user's usual mode (``_io.atomic_write`` creates them with 0666 less the
    umask, like any file the user creates): nothing to change here."""
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


def report_title(d: "Dissection", model: str | None = None) -> str:
    """"Dissection of <model> <layer>" (the model's kind when no name is given)."""
    return f"Dissection of {model or d.config.get('model') or d.kind} {d.layer}"


def write_report(d: "Dissection", folder: str | os.PathLike, n: int = 5, size: int = 100,
                 model: str | None = None) -> Path:
    """Write the report (``model`` names the model in the title); returns the path of ``index.html``."""
    folder = Path(folder)
    title = report_title(d, model)
    (folder / "units").mkdir(parents=True, exist_ok=True)
    fig = d.concept_chart()
    _readable(atomic_write(folder / "concepts.png", lambda tmp: fig.savefig(tmp, format="png")))
    esc = html.escape
    rows = []
    for lab in d.labels:
        name = f"unit_{lab.unit:04d}.png"
        _save_png(d.unit_strip(lab.unit, n=n, size=size), folder / "units" / name)
        others = runner_ups(d, lab.unit)
        runner = ", ".join(f"{esc(c)} {iou:.3f}" for c, _cat, iou in others)
        rows.append(
            f'<tr class="{"matched" if lab.matched else "unmatched"}"><td>{lab.unit}</td>'
            f"<td>{esc(lab.concept)}</td><td>{esc(lab.category)}</td><td>{lab.iou:.3f}</td>"
            f'<td class="runner" data-value="{others[0][2] if others else 0:.6f}">{runner}</td>'
            f"<td>{'yes' if lab.matched else 'no'}</td><td>{float(d.levels[lab.unit]):.4g}</td>"
            f'<td><img src="units/{name}" alt="top images of unit {lab.unit}"></td></tr>'
        )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{esc(title)}</title><style>{_STYLE}</style></head>
<body>
<h1>{esc(title)}</h1>
<p>Layer {esc(d.layer)} of a {esc(d.kind)}, {d.num_units} units.</p>
<p>Unit numbers are 0-based. {esc(level_phrase(d.level))}: each unit's region is where its
upsampled activation exceeds its level (outlined in the images; the rest is dimmed).
A unit matches its best concept when IoU &gt; {d.iou_threshold:g}.</p>
<pre>{esc(d.summary())}</pre>
<img src="concepts.png" alt="matched units per concept">
<h2>Units</h2>
<p>Click a column header to sort by it. "Runner-up concepts" are the next best concepts by IoU:
when one is close to the label's IoU, the label is a close call (look at the top images).</p>
<table class="sortable">
<thead><tr><th>unit (0-based)</th><th>concept</th><th>category</th><th>IoU</th><th>runner-up concepts (IoU)</th>
<th>matched</th><th>level</th><th>top images</th></tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody>
</table>
<script>{_SORT_JS}</script>
</body></html>
"""
    return _readable(atomic_write(folder / "index.html", lambda tmp: Path(tmp).write_text(page, encoding="utf-8")))
