"""Kernel-side latency of the notebook widgets: ``python -m netdissect_widgets.bench widgets [--json]``.

Three figures, each a median over repeats, each next to the model work it
cannot avoid (measured in the same run, because these machines are noisy):

* ``page_ms_cold`` / ``page_ms_warm`` -- UnitBrowser "next page" on a real
  512-unit dissection (a synthetic 512-unit conv layer dissected by the real
  ``dissect()`` on toy-world scenes with their ground-truth labels): first visit
  of a page (strips rendered) and a revisit (cached). Target <= 200 ms.
* ``toggle_ms_idle`` / ``toggle_ms_busy`` -- AblationPanel unit toggle ->
  updated top-5 predictions, on the toy classifier's ``conv5``, with the
  background accuracy idle (finished 0.25 s before) or still computing; ``predict_ms`` is one bare
  ``intervene.predict`` of one image. Target <= 100 ms.
* ``stroke_end_ms`` -- PaintCanvas stroke -> new edited image (rasterise, one
  generator pass, PNG; ``PaintCanvas.paint_stroke``, what the canvas sends at
  mouse-up), on the toy generator's ``layer3``; ``generator_ms`` is one bare
  generator pass. Target <= 100 ms.

What the user waits for in the browser (these plus the round trip and the
page's redraw) is measured by ``python -m netdissect_widgets.bench browser``.

The toy models use their shipped weights when present, otherwise the same
architecture untrained (latency does not depend on the weights; the output says
which).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import OrderedDict
from typing import Any

import torch
from torch import nn


def _ms(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return 1000 * (time.perf_counter() - start)


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 2)


def _toy(kind: str) -> tuple[nn.Module, str]:
    from ..toyworld import CLASSES
    from ..toyworld.nets import ToyClassifier, ToyGenerator

    try:
        from .. import toyworld

        loader = toyworld.load_classifier if kind == "classifier" else toyworld.load_generator
        return loader(), "trained weights"
    except (FileNotFoundError, OSError, ValueError, KeyError) as exc:
        torch.manual_seed(0)
        model = ToyClassifier(len(CLASSES)) if kind == "classifier" else ToyGenerator()
        return model.eval(), f"untrained (weights not loadable: {type(exc).__name__})"


def bench_pages(repeats: int, images: int, units: int) -> dict[str, Any]:
    from .. import toyworld
    from ..dissection import dissect
    from ..widgets import UnitBrowser

    torch.manual_seed(0)
    model = nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(3, 32, 3, padding=1), relu1=nn.ReLU(), pool=nn.MaxPool2d(8),
        conv2=nn.Conv2d(32, units, 3, padding=1), relu2=nn.ReLU(),
    )).eval()
    start = time.perf_counter()
    d = dissect(model, "relu2", toyworld.SceneDataset(images, seed=123), toyworld.GroundTruthSegmenter(),
                progress=False, batch_size=32, k=20)
    dissect_s = time.perf_counter() - start
    browser = UnitBrowser(d)
    pages = min(repeats, browser.num_pages - 1)
    cold = [_ms(browser.next_button.click) for _ in range(pages)]
    browser.page = 0
    warm = [_ms(browser.next_button.click) for _ in range(pages)]
    return {
        "page_units": units, "page_size": browser.page_size, "page_dissect_s": round(dissect_s, 2),
        "page_ms_cold": _median(cold), "page_ms_warm": _median(warm),
    }


def bench_toggle(repeats: int) -> dict[str, Any]:
    from .. import intervene, toyworld
    from ..widgets import AblationPanel

    model, weights = _toy("classifier")
    data = toyworld.SceneDataset(200, seed=7)
    panel = AblationPanel(model, "conv5", data, batch_size=100)
    panel.wait(600)
    image = data[0][0][None]
    idle, busy, bare = [], [], []
    for i in range(repeats):
        panel.wait(600)
        time.sleep(0.25)  # idle: the last accuracy pass (and its OpenMP threads) finished a moment ago
        # a click in the unit selector: its synced list of ablated units changes
        idle.append(_ms(lambda: setattr(panel.unit_grid, "ablated", panel.ablated + [i])))
        busy.append(_ms(lambda: setattr(panel.unit_grid, "ablated", panel.ablated + [i + repeats])))
        units = list(panel.ablated)
        bare.append(_ms(lambda: intervene.predict(model, image, {"conv5": units})))
    start = time.perf_counter()
    panel.wait(600)
    return {
        "toggle_model": f"toy classifier conv5 ({panel.num_units} units, {weights})",
        "toggle_ms_idle": _median(idle), "toggle_ms_busy": _median(busy), "predict_ms": _median(bare),
        "accuracy_wait_s": round(time.perf_counter() - start, 2),
    }


def bench_stroke(repeats: int) -> dict[str, Any]:
    from ..datasets import ZDataset
    from ..dissection import dissect
    from ..segment import ColorSegmenter
    from ..widgets import PaintCanvas

    gen, weights = _toy("generator")
    d = dissect(gen, "layer3", ZDataset(32, gen.z_dim, seed=0), ColorSegmenter(), images="output",
                progress=False, batch_size=16, k=8, n_show=4)
    canvas = PaintCanvas(gen, "layer3", d)
    canvas.concept = canvas.concepts[0]
    ends, bare = [], []
    z = canvas.z
    for i in range(repeats):
        y = 20 + (i * 29) % 220
        # the browser draws the stroke as it happens and sends it whole at mouse-up
        points = [(x, y) for x in range(10, 241, 15)]
        ends.append(_ms(lambda: canvas.paint_stroke(points)))
        with torch.no_grad():
            bare.append(_ms(lambda: gen(z)))
    if canvas.errors.errors:
        raise RuntimeError(f"PaintCanvas reported errors during the benchmark: {canvas.errors.errors}")
    return {
        "stroke_model": f"toy generator layer3 ({d.num_units} units, {weights}), canvas {canvas.display_width} px",
        "stroke_end_ms": _median(ends), "generator_ms": _median(bare),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m netdissect_widgets.bench widgets", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--repeats", type=int, default=9, help="repeats per figure (median)")
    parser.add_argument("--images", type=int, default=32, help="scenes dissected for the 512-unit browser")
    parser.add_argument("--units", type=int, default=512, help="units of the synthetic browsed layer")
    parser.add_argument("--only", choices=("pages", "toggle", "stroke"), help="run one part")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads for this run (default: torch's own choice); on a machine "
                             "shared with other jobs, 1 avoids OpenMP threads waiting for busy cores")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.images < 1 or args.units < 1:
        parser.error("--repeats, --images and --units must be positive")
    if args.threads is not None:
        if args.threads < 1:
            parser.error("--threads must be positive")
        torch.set_num_threads(args.threads)
    results: dict[str, Any] = {"torch_threads": torch.get_num_threads()}
    if args.only in (None, "pages"):
        results.update(bench_pages(args.repeats, args.images, args.units))
    if args.only in (None, "toggle"):
        results.update(bench_toggle(args.repeats))
    if args.only in (None, "stroke"):
        results.update(bench_stroke(args.repeats))
    if args.json:
        print(json.dumps(results))
    else:
        for key, value in results.items():
            print(f"{key:>18}: {value}")
    return 0
