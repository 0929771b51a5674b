"""What a user waits for in the browser: ``python -m netdissect_widgets.bench browser [--json]``.

Starts a real JupyterLab (this Python's kernel) and headless Chromium, runs a
generated notebook with the three widgets on the toy world, and times in the
page, from the user's input to the new picture painted (the next animation
frame after it arrived and decoded):

* ``toggle_ms`` -- a click on a unit in the AblationPanel's selector -> new
  prediction bars (toy classifier ``conv5``, 256 units; the background accuracy
  idle before each click). Target <= 150 ms.
* ``page_ms_cold`` / ``page_ms_warm`` -- UnitBrowser "next" -> every tile of the
  new page shows its new images (24 tiles; first visits of pages render their
  strips in the kernel, revisits are cached). Target <= 300 ms.
* ``stroke_ms`` -- PaintCanvas mouse-up at the end of a stroke on its canvas ->
  the new edited image shown (toy generator ``layer4``). Target <= 150 ms.

Medians over ``--repeats``. The figures include the kernel's work, the
websocket round trip and the page's redraw; they depend on the machine's load,
so the output says the load average (``uptime``) and the number of cores.
Needs playwright and Chromium (``/usr/bin/chromium`` or ``NDW_CHROMIUM``),
like the browser tests. Nothing is written outside a temporary folder.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["main"]

TARGETS_MS = {"toggle_ms": 150, "page_ms_cold": 300, "page_ms_warm": 300, "stroke_ms": 150}

CELLS = [
    """from netdissect_widgets import AblationPanel, PaintCanvas, UnitBrowser, dissect, toyworld
from netdissect_widgets.datasets import ZDataset
model = toyworld.load_classifier()
panel = AblationPanel(model, "conv5", toyworld.SceneDataset({n_panel}, seed=3), batch_size=100)
panel""",
    """d = dissect(model, "conv5", toyworld.SceneDataset({n_dissect}, seed=1), toyworld.GroundTruthSegmenter(),
            progress=False)
browser = UnitBrowser(d)
browser""",
    """gen = toyworld.load_generator()
g = dissect(gen, "layer4", ZDataset({n_dissect}, gen.z_dim), toyworld.load_segmenter(), images="output",
            progress=False)
painter = PaintCanvas(gen, "layer4", g)
painter.concept = painter.concepts[0]
painter""",
]

# resolves after the next animation frame that follows ``ready()``
_FRAME_AFTER = """
const frameAfter = (t0, ready) => new Promise(resolve => {
  const check = () => ready() ? requestAnimationFrame(() => resolve(performance.now() - t0))
                              : requestAnimationFrame(check);
  requestAnimationFrame(check);
});
"""

_TOGGLE_JS = _FRAME_AFTER + """
(unit) => { const bars = document.querySelector('.ndw-pred-bars');
  const before = bars.innerText; const t0 = performance.now();
  document.querySelector(`.ndw-unit-cell[data-unit="${unit}"]`).click();
  return frameAfter(t0, () => bars.innerText !== before); }
"""

_PAGE_JS = _FRAME_AFTER + """
(which) => { const imgs = () => [...document.querySelectorAll('.ndw-unit-browser .ndw-unit-tile')]
    .filter(t => t.offsetParent !== null).map(t => t.querySelector('img.ndw-unit-images'));
  const before = imgs().map(i => i.src); const t0 = performance.now();
  document.querySelector('.ndw-unit-browser .ndw-page-' + which).click();
  return frameAfter(t0, () => { const now = imgs();
    return now.length > 0 && now.every((im, i) => im.src !== before[i] && im.complete && im.naturalWidth > 0); }); }
"""

_STROKE_ARM_JS = """
() => { const img = document.querySelector('img.ndw-paint-edited');
  window.__ndwUp = null; window.__ndwShown = null; const before = img.src;
  window.addEventListener('pointerup', () => { window.__ndwUp = performance.now(); }, {capture: true, once: true});
  const check = () => { if (img.src !== before && img.complete && img.naturalWidth > 0)
      requestAnimationFrame(() => { window.__ndwShown = performance.now(); });
    else requestAnimationFrame(check); };
  requestAnimationFrame(check); }
"""


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 1)


def _uptime() -> str:
    try:
        with open("/proc/loadavg") as f:
            one, five, fifteen = f.read().split()[:3]
        return f"load average {one}, {five}, {fifteen} on {os.cpu_count()} cores"
    except OSError:
        return f"load average unknown, {os.cpu_count()} cores"


def _notebook(path: Path, n_panel: int, n_dissect: int) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c.format(n_panel=n_panel, n_dissect=n_dissect))
                                         for c in CELLS])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))


def measure(repeats: int, n_panel: int, n_dissect: int) -> dict[str, Any]:
    """Run the notebook in JupyterLab + Chromium and time the three interactions (see the module docstring)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    from ._jupyter import JupyterServer, KernelRunner, chromium_context

    with tempfile.TemporaryDirectory(prefix="ndw-bench-browser-") as tmp:
        root, work = Path(tmp) / "root", Path(tmp) / "work"
        root.mkdir()
        _notebook(root / "bench.ipynb", n_panel, n_dissect)
        server = JupyterServer(root, work, env={"NDW_CACHE_DIR": str(Path(tmp) / "cache")})
        runner = None
        try:
            with chromium_context(Path(tmp) / "profile", height=1400) as ctx:
                page = ctx.new_page()
                page.goto(server.url("/lab/tree/bench.ipynb?reset"))
                page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
                page.wait_for_function("() => [...document.querySelectorAll('.jp-StatusBar-TextItem')]"
                                       ".some(e => e.textContent.includes('| Idle'))", timeout=120_000)
                page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
                page.wait_for_selector(".ndw-paint img.ndw-paint-edited", timeout=600_000)
                page.wait_for_selector(".ndw-unit-browser .ndw-unit-tile img", timeout=60_000)
                page.wait_for_selector(".ndw-unit-cell", timeout=60_000)
                runner = KernelRunner(server.runtime_dir / f"kernel-{server.kernel_id_for('bench.ipynb')}.json")

                def idle_panel() -> None:
                    deadline = time.monotonic() + 120
                    while not runner.json("import json; print(json.dumps(not panel._worker.busy))"):
                        if time.monotonic() > deadline:
                            raise TimeoutError("the ablation panel's accuracy did not finish in 120 s")
                        time.sleep(0.1)

                toggles = []
                for i in range(repeats):
                    idle_panel()
                    page.locator(".ndw-ablation-panel").scroll_into_view_if_needed()
                    toggles.append(page.evaluate(_TOGGLE_JS, i))

                page.locator(".ndw-unit-browser").scroll_into_view_if_needed()
                cold, warm = [], []
                n_pages = runner.json("import json; print(json.dumps(browser.num_pages))")
                for _ in range(min(repeats, n_pages - 1)):
                    cold.append(page.evaluate(_PAGE_JS, "next"))
                for _ in range(len(cold)):
                    warm.append(page.evaluate(_PAGE_JS, "prev"))

                canvas = page.locator(".ndw-paint .ndw-paint-canvas canvas").first
                canvas.scroll_into_view_if_needed()
                box = canvas.bounding_box()
                strokes, missed = [], 0
                for i in range(repeats):
                    page.evaluate(_STROKE_ARM_JS)
                    y = box["y"] + box["height"] * (0.2 + 0.6 * i / max(repeats - 1, 1))
                    page.mouse.move(box["x"] + box["width"] * 0.2, y)
                    page.mouse.down()
                    page.mouse.move(box["x"] + box["width"] * 0.8, y, steps=10)
                    page.mouse.up()
                    try:
                        page.wait_for_function("() => window.__ndwShown !== null && window.__ndwUp !== null",
                                               timeout=30_000)
                    except PlaywrightTimeout:  # the stroke changed nothing: no new image to wait for
                        missed += 1
                        continue
                    strokes.append(page.evaluate("() => window.__ndwShown - window.__ndwUp"))
                errors = runner.json("import json; print(json.dumps(panel.errors.errors + browser.errors.errors"
                                     " + painter.errors.errors))")
                if errors:
                    raise RuntimeError(f"the widgets reported errors during the benchmark: {errors}")
        finally:
            if runner is not None:
                runner.close()
            server.stop()
    return {
        "toggle_ms": _median(toggles), "page_ms_cold": _median(cold), "page_ms_warm": _median(warm),
        "stroke_ms": _median(strokes) if strokes else None, "strokes_without_new_image": missed,
        "repeats": repeats,
        "raw_ms": {"toggle": [round(v) for v in toggles], "page_cold": [round(v) for v in cold],
                   "page_warm": [round(v) for v in warm], "stroke": [round(v) for v in strokes]},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m netdissect_widgets.bench browser", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--repeats", type=int, default=9, help="interactions timed per figure (median)")
    parser.add_argument("--panel-images", type=int, default=200, help="held-out scenes of the ablation panel")
    parser.add_argument("--dissect-images", type=int, default=200, help="items dissected for the browser/canvas")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.panel_images < 1 or args.dissect_images < 1:
        parser.error("--repeats, --panel-images and --dissect-images must be positive")
    load_before = _uptime()
    results = measure(args.repeats, args.panel_images, args.dissect_images)
    results["load_before"] = load_before
    results["load_after"] = _uptime()
    if args.json:
        print(json.dumps(results))
        return 0
    for key in ("toggle_ms", "page_ms_cold", "page_ms_warm", "stroke_ms"):
        if results[key] is None:
            print(f"{key:>13}: no measurement")
            continue
        verdict = "met" if results[key] <= TARGETS_MS[key] else "NOT met"
        print(f"{key:>13}: {results[key]:8.1f} ms  (target <= {TARGETS_MS[key]} ms: {verdict})")
    print(f"{'raw ms':>13}: {results['raw_ms']} (strokes without a new image: "
          f"{results['strokes_without_new_image']})")
    print(f"{'machine':>13}: {results['load_before']} before, {results['load_after']} after")
    return 0
