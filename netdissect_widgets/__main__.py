"""Command line: ``python -m netdissect_widgets {dissect,bench,lab}``.

* ``dissect`` -- dissect a layer of an embedded toy-world model and write the
  HTML report and the saved dissection::

      python -m netdissect_widgets dissect --model toy-classifier --layer conv5 --out results/toy-classifier-conv5
      python -m netdissect_widgets dissect --model toy-gan --layer layer4 --out results/toy-gan-layer4

* ``bench`` -- run a benchmark (``python -m netdissect_widgets bench dissect --json``).
* ``lab`` -- start JupyterLab in the examples folder.

Unit numbers are 0-based in every output.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def _dissect_parser(sub: argparse._SubParsersAction) -> None:
    from .toyworld.setups import MODELS, SEGMENTERS

    p = sub.add_parser(
        "dissect",
        help="dissect a layer of a toy-world model; writes an HTML report and the saved dissection",
        description="Dissect one layer: label every unit (0-based) with the concept its top-activation "
        "region matches best (IoU over the dataset). Level 0.99 = each unit's top 1% of pixels.",
    )
    p.add_argument("--model", choices=sorted(MODELS), default="toy-classifier")
    p.add_argument("--layer", default=None, help="layer name (default: conv5 for toy-classifier, layer4 for toy-gan)")
    p.add_argument("--out", required=True, help="output folder (index.html, PNGs, dissection/)")
    p.add_argument("--n-images", type=int, default=1000, help="images (or latent vectors) to dissect over")
    p.add_argument("--segmenter", choices=SEGMENTERS, default=None,
                   help="truth: the renderer's labels (classifier only, default there); toy: the trained "
                   "toy segmenter (default for toy-gan); color: named colours")
    p.add_argument("--level", type=float, default=0.99, help="activation quantile per unit (0.99 = top 1%% of pixels)")
    p.add_argument("--iou-threshold", type=float, default=0.04, help="a unit matches a concept when IoU > this")
    p.add_argument("--seg-size", type=int, default=None, metavar="N",
                   help="segmentation resolution NxN (default: the segmenter's, 64 in the toy world; the paper "
                        "used a quarter of a classifier's input size)")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader workers")
    p.add_argument("--seed", type=int, default=0, help="seed of the dataset")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--cache-dir", default=None, help="cache the pass and the result here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--figures", default=None, metavar="DIR",
                   help="also write MODEL-LAYER-concepts.png and MODEL-LAYER-units.png (best units) here")


def run_dissect(args: argparse.Namespace) -> int:
    from .dissection import dissect
    from .toyworld.setups import toy_setup

    if args.n_images < 1:
        print("--n-images must be at least 1", file=sys.stderr)
        return 2
    try:
        setup = toy_setup(args.model, args.n_images, args.segmenter, args.device, args.seed)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    layer = args.layer or setup.layer
    start = time.perf_counter()
    try:
        d = dissect(setup.model, layer, setup.data, setup.segmenter, images=setup.images, level=args.level,
                    iou_threshold=args.iou_threshold, batch_size=args.batch_size, num_workers=args.num_workers,
                    cache_dir=args.cache_dir, progress=not args.no_progress, seg_size=args.seg_size)
    except (KeyError, ValueError, TypeError) as err:
        print(f"error: {err.args[0] if isinstance(err, KeyError) and err.args else err}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    out = Path(args.out)
    d.save(out / "dissection")
    index = d.to_html(out)
    if args.figures:
        from .dissection.report import write_figures

        for path in write_figures(d, args.figures, f"{args.model}-{layer}"):
            print(f"figure: {path}")
    print(d.summary())
    print()
    print(f"{args.model} {layer}: {len(setup.data)} items in {seconds:.1f} s")
    print(f"report: {index}")
    print(f"saved dissection: {out / 'dissection'} (Dissection.load)")
    return 0


def run_lab(rest: list[str]) -> int:
    """Replace this process with ``jupyter lab`` rooted at the examples folder."""
    here = Path(__file__).resolve().parent.parent / "examples"
    folder = here if here.is_dir() else Path.cwd()
    cmd = [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={folder}", *rest]
    print(" ".join(cmd), flush=True)
    os.execv(sys.executable, cmd)
    return 0  # pragma: no cover - execv does not return


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m netdissect_widgets", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", metavar="{dissect,bench,lab}")
    _dissect_parser(sub)
    sub.add_parser("bench", help="run a benchmark: bench NAME [--json] (see python -m netdissect_widgets.bench)",
                   add_help=False)
    sub.add_parser("lab", help="start JupyterLab in the examples folder", add_help=False)
    if argv and argv[0] == "bench":
        from .bench.__main__ import main as bench_main

        return bench_main(argv[1:])
    if argv and argv[0] == "lab":
        return run_lab(argv[1:])
    args = parser.parse_args(argv)
    if args.command == "dissect":
        return run_dissect(args)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
