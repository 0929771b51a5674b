"""Cost of instrumenting a model, and speed of batched single-unit ablation.

``python -m netdissect_widgets.bench hooks [--json] [--device cpu] [--n 256]`` prints,
measured side by side in one run on the toy classifier's architecture (random
weights: speed does not depend on them):

* forward time of the plain model vs. under ``Trace`` (reading conv5) vs. an
  ``InstrumentedModel`` editing conv5 (ratios to the plain forward);
* ``unit_drops`` on conv5 (every unit ablated alone) with the ``"expand"`` strategy
  (the layers below conv5 run once per image), the ``"repeat"`` strategy, and a
  naive loop of one ``class_accuracy`` call per unit (ratios to expand). The repeat
  strategy and the naive loop are timed on a few units and extrapolated to all of
  them; the results of the three are checked to agree on those units.
"""
from __future__ import annotations

import argparse
import json
import time
from typing import Any, Callable

import torch

from ..hooks import InstrumentedModel, Trace
from ..intervene import class_accuracy, unit_drops


def _best(fn: Callable[[], Any], repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m netdissect_widgets.bench hooks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n", type=int, default=256, help="images (64x64)")
    parser.add_argument("--naive-units", type=int, default=4, help="units timed for the naive loop")
    args = parser.parse_args(argv)

    from .. import toyworld
    from ..toyworld.nets import ToyClassifier

    torch.manual_seed(0)
    device = torch.device(args.device)
    model = ToyClassifier(len(toyworld.CLASSES)).to(device).eval()
    ds = toyworld.SceneDataset(args.n, seed=0)
    data = [ds[i][:2] for i in range(args.n)]
    images = torch.stack([d[0] for d in data]).to(device)
    out: dict[str, Any] = {"device": str(device), "images": args.n}

    with torch.no_grad():
        plain = _best(lambda: model(images))

        def traced():
            with Trace(model, "conv5"):
                model(images)

        im = InstrumentedModel(model)
        im.edit_layer("conv5", ablation=torch.zeros(256).index_fill(0, torch.tensor([3, 7]), 1.0))
        edited = _best(lambda: im(images))
        im.close()
        trace_t = _best(traced)
    out["forward_s"] = {"plain": plain, "trace": trace_t, "instrumented_edit": edited}
    out["forward_ratio"] = {"trace": trace_t / plain, "instrumented_edit": edited / plain}

    t0 = time.perf_counter()
    drops_expand = unit_drops(model, "conv5", data, batch_size=64, strategy="expand").accuracy
    expand_s = time.perf_counter() - t0
    k = args.naive_units
    t0 = time.perf_counter()
    drops_repeat = unit_drops(model, "conv5", data, units=list(range(4 * k)), batch_size=64,
                              strategy="repeat").accuracy
    repeat_s = (time.perf_counter() - t0) * (257 / (4 * k + 1))
    t0 = time.perf_counter()
    intact = class_accuracy(model, data, batch_size=64)
    naive = torch.stack([intact - class_accuracy(model, data, ablate={"conv5": [u]}, batch_size=64)
                         for u in range(k)])
    naive_s = (time.perf_counter() - t0) * (257 / (k + 1))
    agree = bool(torch.allclose(drops_expand[:k], naive, equal_nan=True)
                 and torch.allclose(drops_repeat, drops_expand[:4 * k], equal_nan=True))
    out["unit_drops_s"] = {"expand": expand_s, "repeat_extrapolated": repeat_s, "naive_extrapolated": naive_s}
    out["speedup_vs_expand"] = {"repeat": repeat_s / expand_s, "naive": naive_s / expand_s}
    out["results_agree"] = agree

    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print(f"toy classifier, {args.n} images 64x64, device {device}")
    print(f"forward: plain {plain * 1e3:.1f} ms; Trace(conv5) x{out['forward_ratio']['trace']:.3f}; "
          f"InstrumentedModel edit x{out['forward_ratio']['instrumented_edit']:.3f}")
    print(f"single-unit ablation of all 256 conv5 units (+ intact), {args.n} images:")
    print(f"  expand {expand_s:.2f} s | repeat ~{repeat_s:.1f} s (x{repeat_s / expand_s:.1f}, from {4 * k} units) | "
          f"naive loop ~{naive_s:.1f} s (x{naive_s / expand_s:.1f}, from {k} units)")
    print(f"  results agree: {agree}")
    return 0 if agree else 1
