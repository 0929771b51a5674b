"""Command line: python -m netdissect_widgets {dissect,bench,lab}.

* dissect -- dissect a layer of a model and write the HTML report and the saved
  dissection::

      python -m netdissect_widgets dissect --model toy-classifier --layer conv5 --out results/toy-classifier-conv5
      python -m netdissect_widgets dissect --model toy-gan --layer layer4 --out results/toy-gan-layer4
      python -m netdissect_widgets dissect --model face-gan --layer layer3 --n-images 400 --out results/face-gan-layer3

* bench -- run a benchmark (python -m netdissect_widgets bench dissect --json).
* lab -- start JupyterLab in the examples folder (notebooks saved without outputs).

Every option is checked before any work starts (paths writable, device present,
numbers in range); a bad one ends with a one-line error and exit status 2.
Building the parser imports nothing heavy (no torch): --help is instant.
Unit numbers are 0-based in every output.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

PROG = "python -m netdissect_widgets"

#: --model names and their one-line help; the default layer of each. Extend here (no torch import).
MODELS: dict[str, str] = {
    "toy-classifier": "the toy world's scene classifier (default layer conv5; data: rendered scenes)",
    "toy-gan": "the toy world's GAN generator (default layer layer4; data: latent vectors)",
    "face-gan": "a real DCGAN face generator, [real] extra (default layer layer3; data: latent vectors; "
                "segmenter: face)",
    "efficientnet-lite0": "a real ImageNet classifier, [real] extra (default layer head; data: the packaged "
                          "photos; segmenter: face)",
}
DEFAULT_LAYERS: dict[str, str] = {"toy-classifier": "conv5", "toy-gan": "layer4", "face-gan": "layer3",
                                  "efficientnet-lite0": "head"}
#: --model prefixes such as "torchvision:" (name -> help), for families of models
MODEL_PREFIXES: dict[str, str] = {
    "torchvision:": "a torchvision architecture with --weights FILE on --images FOLDER (default layer: its "
                    "last feature map; segmenter: color)",
}
TOY_MODELS = ("toy-classifier", "toy-gan")
SEGMENTERS = ("truth", "toy", "color")
#: segmenters of the real models (zoo.setups.REAL_SEGMENTERS; color is shared)
REAL_SEGMENTERS = ("face", "body", "color")


def _model_name(value: str) -> str:
    if value in MODELS or any(value.startswith(p) and len(value) > len(p) for p in MODEL_PREFIXES):
        return value
    names = ", ".join(list(MODELS) + [p + "ARCH" for p in MODEL_PREFIXES])
    raise argparse.ArgumentTypeError(f"unknown model {value!r}; choose one of: {names}")


def _dissect_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    models = "; ".join(f"{name}: {text}" for name, text in {**MODELS, **{p + "ARCH": t for p, t in
                                                                         MODEL_PREFIXES.items()}}.items())
    p = sub.add_parser(
        "dissect",
        help="dissect a layer of a model; writes an HTML report and the saved dissection",
        description="Dissect one layer: label every unit (0-based) with the concept its top-activation "
        "region matches best (IoU over the dataset). Level 0.99 = each unit's top 1%% of pixels. "
        "Paths and the device are checked before any work starts.",
    )
    p.add_argument("--model", type=_model_name, default="toy-classifier", metavar="NAME",
                   help=f"model to dissect (default toy-classifier). {models}")
    p.add_argument("--layer", default=None, metavar="NAME[,NAME...]|all",
                   help="layer name (default: conv5 for toy-classifier, layer4 for toy-gan, layer3 for face-gan, "
                   "head for efficientnet-lite0); several names separated by commas, or 'all' (every conv block), "
                   "are dissected in one model pass, each into OUT/LAYER/, with a chart of matched units by "
                   "category per layer in OUT/")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder (index.html, PNGs, dissection/); created if missing")
    p.add_argument("--n-images", type=int, default=1000, metavar="N",
                   help="images (or latent vectors) to dissect over (default 1000)")
    p.add_argument("--segmenter", choices=SEGMENTERS + REAL_SEGMENTERS[:2], default=None,
                   help="truth: the renderer's labels (classifier only, default there); toy: the trained "
                   "toy segmenter (default for toy-gan); color: named colours; face: MediaPipe face parts, "
                   "person, hair/headwear and colours (real models); body: face plus torso/arm/leg")
    p.add_argument("--weights", default=None, metavar="FILE",
                   help="torchvision:ARCH only: a local state dict (nothing is downloaded)")
    p.add_argument("--sha256", default=None, metavar="HEX", help="expected SHA-256 of --weights")
    p.add_argument("--images", default=None, metavar="FOLDER",
                   help="torchvision:ARCH only: a folder of your images (sub-folders included)")
    p.add_argument("--level", type=float, default=0.99,
                   help="activation quantile per unit, in (0, 1) (default 0.99 = top 1%% of pixels)")
    p.add_argument("--iou-threshold", type=float, default=0.04,
                   help="a unit matches a concept when IoU > this (default 0.04)")
    p.add_argument("--seg-size", type=int, default=None, metavar="N",
                   help="segmentation resolution NxN (default: the segmenter's, 64 in the toy world; the paper "
                        "used a quarter of a classifier's input size)")
    p.add_argument("--batch-size", type=int, default=50, metavar="N",
                   help="images per forward pass (default 50); smaller uses less memory")
    p.add_argument("--num-workers", type=int, default=0, metavar="N",
                   help="DataLoader worker processes (default 0: load in this process)")
    p.add_argument("--seed", type=int, default=0, help="seed of the dataset (default 0)")
    p.add_argument("--device", default="cpu",
                   help="torch device: cpu (default), cuda or cuda:N (checked to exist before any work)")
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="cache the model pass and the result here; a rerun with the same inputs loads them")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--figures", default=None, metavar="DIR",
                   help="also write MODEL-LAYER-concepts.png and MODEL-LAYER-units.png (best units) here")
    return p


def folder_problem(option: str, value: str) -> str | None:
    """Why ``value`` cannot be used as an output folder (None when it can): exists as a file, has a
    file above it, or its nearest existing folder is not writable."""
    path = Path(value).expanduser()
    if path.exists() and not path.is_dir():
        return f"{option} {value}: exists and is not a folder; give a folder path"
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        return f"{option} {value}: {existing} is a file, so the folder cannot be created there"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{option} {value}: no permission to write in {existing}; choose a folder you can write to"
    return None


def device_problem(name: str) -> str | None:
    """Why torch device ``name`` cannot be used here (None when it can)."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as err:
        return f"--device {name!r} is not a torch device ({err}); use cpu, cuda or cuda:N"
    if device.type == "cpu":
        return None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return f"--device {name}: no CUDA GPU is available on this machine; use --device cpu"
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            return f"--device {name}: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}"
        return None
    if device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        return None if mps is not None and mps.is_available() else \
            f"--device {name}: Apple's MPS is not available here; use --device cpu"
    return f"--device {name}: device type {device.type!r} is not supported; use cpu or cuda"


def option_problems(args: argparse.Namespace) -> list[str]:
    """Every problem with the dissect options that can be found without loading anything heavy."""
    problems = []
    if args.n_images < 1:
        problems.append(f"--n-images must be at least 1, got {args.n_images}")
    if not 0.0 < args.level < 1.0:
        problems.append(f"--level must be between 0 and 1 (e.g. 0.99 = top 1% of pixels), got {args.level}")
    if args.iou_threshold < 0:
        problems.append(f"--iou-threshold must be at least 0, got {args.iou_threshold}")
    if args.batch_size < 1:
        problems.append(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.num_workers < 0:
        problems.append(f"--num-workers must be at least 0, got {args.num_workers}")
    if args.seg_size is not None and args.seg_size < 1:
        problems.append(f"--seg-size must be positive, got {args.seg_size}")
    if args.model == "toy-gan" and args.segmenter == "truth":
        problems.append("--segmenter truth reads the renderer's labels, which generated images do not have; "
                        "use --segmenter toy or color for toy-gan")
    problems += _real_model_problems(args)
    for option, value in (("--out", args.out), ("--cache-dir", args.cache_dir), ("--figures", args.figures)):
        if value is not None:
            problem = folder_problem(option, value)
            if problem:
                problems.append(problem)
    return problems


def _real_model_problems(args: argparse.Namespace) -> list[str]:
    """Option problems specific to the real models (zoo) and torchvision:ARCH."""
    problems = []
    toy = args.model in TOY_MODELS
    if toy and args.segmenter in ("face", "body"):
        problems.append(f"--segmenter {args.segmenter} is for real models; use truth, toy or color with {args.model}")
    if not toy and args.segmenter in ("truth", "toy"):
        problems.append(f"--segmenter {args.segmenter} is for the toy models; use face, body or color "
                        f"with {args.model}")
    if args.model.startswith("torchvision:"):
        if not args.weights or not args.images:
            problems.append(f"--model {args.model} needs --weights FILE (a local state dict) and --images FOLDER")
        if args.weights and not Path(args.weights).expanduser().is_file():
            problems.append(f"--weights {args.weights}: no such file (nothing is downloaded; give a local file)")
        if args.images and not Path(args.images).expanduser().is_dir():
            problems.append(f"--images {args.images}: no such folder")
    elif args.weights or args.images or args.sha256:
        problems.append("--weights, --sha256 and --images are for --model torchvision:ARCH only")
    return problems


def _fail(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


def run_dissect(args: argparse.Namespace) -> int:
    problems = option_problems(args)
    if problems:
        return _fail(problems[0])
    problem = device_problem(args.device)
    if problem:
        return _fail(problem)

    from .dissection import dissect

    try:
        if args.model in TOY_MODELS:
            from .toyworld.setups import toy_setup

            setup = toy_setup(args.model, args.n_images, args.segmenter, args.device, args.seed)
        else:
            from .zoo.setups import real_setup

            setup = real_setup(args.model, args.n_images, args.segmenter, args.device, args.seed,
                               weights=args.weights, sha256=args.sha256, images=args.images)
    except (FileNotFoundError, ValueError, KeyError, ImportError) as err:
        return _fail(str(err.args[0] if isinstance(err, KeyError) and err.args else err))
    layers = _layers(args.layer, setup)
    if isinstance(layers, str):
        return _fail(layers)
    seg_size = args.seg_size if args.seg_size is not None else getattr(setup, "seg_size", None)
    settings = dict(images=setup.images, level=args.level, iou_threshold=args.iou_threshold,
                    batch_size=args.batch_size, num_workers=args.num_workers, cache_dir=args.cache_dir,
                    progress=not args.no_progress, seg_size=seg_size)
    start = time.perf_counter()
    try:
        if len(layers) == 1:
            results = {layers[0]: dissect(setup.model, layers[0], setup.data, setup.segmenter, **settings)}
        else:
            from .dissection import dissect_layers

            results = dissect_layers(setup.model, layers, setup.data, setup.segmenter, **settings)
    except (KeyError, ValueError, TypeError) as err:
        return _fail(str(err.args[0] if isinstance(err, KeyError) and err.args else err))
    seconds = time.perf_counter() - start
    out = Path(args.out)
    written = []
    try:
        from .dissection.report import write_figures, write_report

        for layer, d in results.items():
            folder = out if len(results) == 1 else out / layer
            d.save(folder / "dissection")
            index = write_report(d, folder, model=args.model)
            figures = write_figures(d, args.figures, f"{args.model}-{layer}") if args.figures else []
            written.append((layer, d, folder, index, figures))
        chart = _write_layer_chart(results, out, args.model) if len(results) > 1 else None
    except OSError as err:
        return _fail(f"could not write the results: {err}")
    for layer, d, folder, index, figures in written:
        for path in figures:
            print(f"figure: {path}")
        print(d.summary())
        print()
        print(f"report: {index}")
        print(f"saved dissection: {folder / 'dissection'} (Dissection.load)")
        print()
    if chart:
        print(f"matched units by category per layer: {chart}")
    print(f"{args.model} {', '.join(results)}: {len(setup.data)} items in {seconds:.1f} s")
    return 0


def _layers(option: str | None, setup) -> list[str] | str:
    """The layers ``--layer`` names (a list), or why it cannot be used (a str)."""
    if option is None:
        return [setup.layer]
    if option.strip() == "all":
        from .hooks import conv_blocks

        names = conv_blocks(setup.model)
        return names or "--layer all: this model has no convolutional block; name the layers"
    names = [name.strip() for name in option.split(",")]
    if not all(names):
        return f"--layer {option!r}: an empty name; separate layer names with single commas"
    if len(set(names)) != len(names):
        return f"--layer {option!r}: a layer is named twice"
    return names


def _write_layer_chart(results: dict, out: Path, model: str) -> Path:
    """``OUT/MODEL-categories-by-layer.png``: matched units by category per layer (the paper's figure)."""
    from .dissection.layer_chart import plot_categories_by_layer

    path = out / f"{model}-categories-by-layer.png"
    plot_categories_by_layer(results).savefig(path, dpi=100, bbox_inches="tight")
    return path


def run_lab(rest: list[str]) -> int:
    """Replace this process with ``jupyter lab`` rooted at the examples folder (see ``_lab``)."""
    from ._lab import lab_command, running_as_root

    here = Path(__file__).resolve().parent.parent / "examples"
    folder = here if here.is_dir() else Path.cwd()
    cmd = lab_command(folder, rest, running_as_root())
    print(" ".join(cmd), flush=True)
    os.execv(sys.executable, cmd)
    return 0  # pragma: no cover - execv does not return


def build_parser() -> argparse.ArgumentParser:
    """The whole parser (imports nothing heavy)."""
    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Interactive network dissection: label a layer's units with concepts, then test them.",
        epilog=f"examples:\n  {PROG} dissect --model toy-classifier --out results/toy-classifier-conv5\n"
               f"  {PROG} bench --help\n  {PROG} lab")
    sub = parser.add_subparsers(dest="command", metavar="{dissect,bench,lab}")
    _dissect_parser(sub)
    sub.add_parser("bench", help="run a benchmark that prints its figures: bench NAME [--json] "
                                 "(bench --help lists them)", add_help=False)
    sub.add_parser("lab", help="start JupyterLab in the examples folder (notebooks saved without outputs; "
                               "--allow-root added when run as root); other options go to JupyterLab",
                   add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench":
        from .bench.__main__ import main as bench_main

        return bench_main(argv[1:])
    if argv and argv[0] == "lab":
        return run_lab(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "dissect":
        return run_dissect(args)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
