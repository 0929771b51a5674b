"""Dissection speed: the whole dissection of a layer vs a bare forward pass over the same data.

``python -m netdissect_widgets.bench dissect [--json] [--n-images N] [--models ...] [--seg-size N]``

For each toy-world model, in one run and interleaved (``--repeats`` times):

* ``forward``: the model alone over the items (classifier: images -> logits;
  GAN: z -> images), batches of ``--batch-size``, inference mode;
* ``dissect``: :func:`netdissect_widgets.dissect` of the layer over the same
  items (no cache), with its ``pass`` and ``stats`` parts;
* for the GAN also ``segmenter``: the segmenter alone over the generated images,
  since a generator's dissection must segment every output;
* ``strip_ms``: rendering one unit's strip of 5 thumbnails (100 px) from the
  finished dissection, as the unit browser does.

The data are built in memory first (toy scenes rendered once), so neither
timing includes rendering.

``--heap steady`` runs the same benchmark in a child process whose glibc keeps freed
memory in its heap (``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1073741824``, read by
glibc at start-up: what a user sets before starting Python or Jupyter for steadier
timings; the library itself never tunes the allocator); ``--heap both`` runs a child
with and one without, one after the other, and prints both. Printed: the medians and the ratio
``dissect / forward`` (target <= 1.3 for the toy classifier's conv5 on CPU).
Levels are exact over all upsampled pixels, never estimated.

``--world-size N``, ``--max-store-bytes B`` or ``--model NAME`` (also ``vgg16``, ``resnet50``:
random weights at 224x224) measure dissection at scale instead: several processes under
torchrun and bounded memory vs one process and a bare forward, and each rank's share replayed
from memory vs read again in every pass (:mod:`._scale`); with ``--layers A,B`` the same for
``dissect_layers``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

import torch
from torch.utils.data import DataLoader

from ._data import materialise

TARGET = 1.3


def _forward_time(model, data, batch_size: int, device) -> tuple[float, list]:
    outs = []
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in DataLoader(data, batch_size=batch_size):
            outs.append(model(batch[0].to(device)))
    return time.perf_counter() - start, outs


def bench_model(name: str, n_images: int, batch_size: int, repeats: int, segmenter: str | None,
                device: str, seg_size: int | None = None) -> dict:
    from ..dissection import dissect
    from ..toyworld.setups import toy_setup

    setup = toy_setup(name, n_images, segmenter, device, seed=7)
    data = materialise(setup.data)
    model = setup.model
    forward, dissect_s, pass_s, stats_s, seg_s = [], [], [], [], []
    d = None
    for _ in range(repeats):
        t, outs = _forward_time(model, data, batch_size, device)
        forward.append(t)
        if setup.images == "output":
            start = time.perf_counter()
            with torch.inference_mode():
                for images in outs:
                    setup.segmenter.segment(images)
            seg_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        d = dissect(model, setup.layer, data, setup.segmenter, images=setup.images, progress=False,
                    batch_size=batch_size, seg_size=seg_size)
        dissect_s.append(time.perf_counter() - start)
        pass_s.append(d.config["timings"]["pass_s"])
        stats_s.append(d.config["timings"]["stats_s"])
    # rendering a unit's strip of 5 thumbnails (100 px) from the dissection alone, as a widget does
    start = time.perf_counter()
    for u in range(d.num_units):
        d.unit_strip(u, n=5, size=100)
    strip_ms = 1000 * (time.perf_counter() - start) / d.num_units
    med = statistics.median
    out = {
        "model": name, "layer": setup.layer, "segmenter": type(setup.segmenter).__name__,
        "n_images": n_images, "batch_size": batch_size, "repeats": repeats, "seg_size": d.config["seg_size"],
        "forward_s": round(med(forward), 4), "dissect_s": round(med(dissect_s), 4),
        "pass_s": round(med(pass_s), 4), "stats_s": round(med(stats_s), 4),
        "ratio": round(med(dissect_s) / med(forward), 3),
        "ratio_per_repeat": [round(a / b, 3) for a, b in zip(dissect_s, forward)],
        "units_matched": sum(lab.matched for lab in d.labels), "units": d.num_units,
        "distinct_concepts": len(d.concept_counts()), "strip_ms": round(strip_ms, 3),
    }
    if seg_s:
        out["segmenter_s"] = round(med(seg_s), 4)
        out["ratio_vs_forward_plus_segmenter"] = round(med(dissect_s) / (med(forward) + med(seg_s)), 3)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m netdissect_widgets.bench dissect", description=__doc__.split("\n")[0])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--n-images", type=int, default=400)
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--models", default="toy-classifier,toy-gan", help="comma-separated: toy-classifier,toy-gan")
    p.add_argument("--gan-segmenter", default="toy", choices=("toy", "color"))
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seg-size", type=int, default=None,
                   help="dissect at this segmentation resolution (default: the segmenter's, 64 for the toy world; "
                        "the paper used a quarter of a classifier's input size, 16 here)")
    p.add_argument("--heap", default="default", choices=("default", "steady", "both"),
                   help="glibc's allocator as it is (default), or keeping freed memory in the heap (steady: set "
                        "by environment variables in a child process), or both one after the other")
    # dissect at scale (SCALE, bench/_scale.py): several processes, bounded memory, real-size models
    p.add_argument("--world-size", type=int, default=1, help="also run under torchrun with this many processes")
    p.add_argument("--max-store-bytes", type=int, default=None,
                   help="bound for the streamed engine (one process: default a quarter of what the one pass stores; "
                        "each rank under --world-size: default torchrun's 1 GiB)")
    p.add_argument("--model", default=None, choices=("toy-classifier", "toy-gan", "vgg16", "resnet50"),
                   help="one model for the scale benchmark (vgg16/resnet50: random weights, 224x224, seg 56x56)")
    p.add_argument("--layers", default=None,
                   help="comma-separated layers of --model: time dissect_layers (one model pass for all) instead, "
                        "in one process and under torchrun with --world-size")
    p.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.world_size > 1 or args.max_store_bytes or args.model or args.worker_out or args.layers:
        from . import _scale

        args.model = args.model or "toy-classifier"
        return _scale.main(args, list(argv if argv is not None else sys.argv[1:]))
    if args.heap != "default":
        return _children(argv or sys.argv[1:], ["default", "steady"] if args.heap == "both" else ["steady"])
    if args.threads:
        torch.set_num_threads(args.threads)
    results = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        try:
            results.append(bench_model(name, args.n_images, args.batch_size, args.repeats,
                                       args.gan_segmenter if name == "toy-gan" else None, args.device,
                                       args.seg_size))
        except (FileNotFoundError, ValueError) as err:
            print(f"{name}: cannot run ({err})", file=sys.stderr)
            return 1
    report = {"benchmark": "dissect", "device": args.device, "threads": torch.get_num_threads(),
              "target_ratio_classifier": TARGET, "levels": "exact (all upsampled pixels)", "results": results}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"dissection time / bare forward time, {args.device}, {report['threads']} threads, "
          f"median of {args.repeats} interleaved runs (levels exact over all pixels)")
    for r in results:
        seg = "x".join(str(v) for v in r["seg_size"])
        line = (f"{r['model']:>15} {r['layer']:<7} N={r['n_images']} seg {seg}: forward {r['forward_s']:.2f} s, "
                f"dissect {r['dissect_s']:.2f} s (pass {r['pass_s']:.2f} + stats {r['stats_s']:.2f}), "
                f"ratio {r['ratio']:.2f}")
        if "segmenter_s" in r:
            line += (f"; segmenter alone {r['segmenter_s']:.2f} s, ratio to forward+segmenter "
                     f"{r['ratio_vs_forward_plus_segmenter']:.2f}")
        print(line)
        print(f"{'':>15} units matched {r['units_matched']}/{r['units']} (0-based units), "
              f"distinct concepts {r['distinct_concepts']}; a unit's strip of 5 thumbnails renders in "
              f"{r['strip_ms']:.2f} ms")
    return 0


#: glibc's environment settings for a steady heap (read once, when a process starts)
STEADY_HEAP_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}


def _children(argv: list[str], heaps: list[str]) -> int:
    """Run this benchmark in one child process per heap setting, one after the other."""
    import os
    import subprocess

    rest = [a for i, a in enumerate(argv) if a != "--heap" and (i == 0 or argv[i - 1] != "--heap")
            and not a.startswith("--heap=")]
    for heap in heaps:
        env = dict(os.environ)
        if heap == "steady":
            env.update(STEADY_HEAP_ENV)
        label = " ".join(f"{k}={v}" for k, v in STEADY_HEAP_ENV.items()) if heap == "steady" else "glibc as it is"
        print(f"--- heap: {heap} ({label})", flush=True)
        code = subprocess.run([sys.executable, "-m", "netdissect_widgets.bench", "dissect", *rest], env=env).returncode
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
