"""Are the toy world's units faithful? Intervention figures, as in the paper's Figs. 3 and 5.

``python -m netdissect_widgets.bench interventions [--json] [options]`` prints:

* **Classifier** (``conv5`` of ``toyworld.load_classifier()``): units are ranked for
  every class by single-unit ablation on one set of scenes; on another set, each
  class's balanced accuracy is measured intact, with its top-k units removed, with
  only its top-k units kept (all others removed), and with k random units removed;
  averaged over classes, for k = 4%, 8%, 16%, 25% of the layer. (Paper, VGG16 Places365
  conv5_3, k = 20 of 512 ~ 4%: intact 76.6%, removed 53.0%, kept-only 73.0%. The toy
  classifier, whose head is fitted with an L1 penalty so each class reads a few units
  -- see :mod:`netdissect_widgets.toyworld.train` -- gave on CPU, k = 10 of 256:
  intact 1.000, removed 0.549, kept-only 0.948, 10 random units removed 0.959.)
* **Generator** (``layer2`` of ``toyworld.load_generator()`` by default: 256 units at
  8x8, the feature size of the paper's ProGAN ``layer4``; dissected with
  ``toyworld.load_segmenter()``): the share of 'tree' pixels removed when the top
  1/2/3/4/8/16/20/30 tree units (by IoU) are zeroed everywhere, and the tree share inside
  vs outside a painted square before and after inserting the top tree units there.
  (Paper, ProGAN church layer4: 11/18/41/46/51/52/55% removed for 1/2/3/4/8/20/30 units.)
  ``--gan-layer layer4`` measures the 32x32 layer the paint notebook used before; there the
  curve is not monotone (single tree-labelled units, when zeroed, can add tree pixels).

The same functions (:func:`classifier_figures`, :func:`generator_figures`) back
``tests/test_faithfulness_interventions.py`` on smaller samples.
"""
from __future__ import annotations

import argparse
import json
import time
from typing import Any, Sequence

import torch

from .._device import module_device
from ..intervene import concept_units, masked_accuracy, paint_effect, unit_drops
from ..intervene._engine import eval_mode

RANK_SEED = 21  # scenes used to rank units (training used seed 1, toyworld's held-out set seed 2)
EVAL_SEED = 22  # scenes used to measure the effect of removing / keeping them
DISSECT_Z_SEED = 23
EVAL_Z_SEED = 24


def classifier_figures(
    model: torch.nn.Module,
    layer: str,
    rank_data: Any,
    eval_data: Any,
    *,
    ks: Sequence[int] | None = None,
    batch_size: int = 100,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Mean over classes of the balanced accuracy: intact / top-k removed / only top-k kept / k random removed.

    Units are ranked per class by single-unit ablation on ``rank_data`` (as
    :func:`~netdissect_widgets.intervene.rank_units` does); the accuracies are
    measured on ``eval_data``, for every k in ``ks`` (default: 4%, 8%, 16%, 25% of the
    layer's units; the paper's k = 20 of 512 is ~4%).
    """
    drops = unit_drops(model, layer, rank_data, batch_size=batch_size, progress=progress)
    width, num_classes = drops.accuracy.shape
    ks = [max(1, round(f * width)) for f in (0.04, 0.08, 0.16, 0.25)] if ks is None else [int(k) for k in ks]
    gen = torch.Generator().manual_seed(seed)
    rankings = [drops.ranking(c)[0] for c in range(num_classes)]
    rows = [torch.zeros(width)]
    for k in ks:
        for c in range(num_classes):
            remove = torch.zeros(width)
            remove[rankings[c][:k]] = 1.0
            rand = torch.zeros(width)
            rand[torch.randperm(width, generator=gen)[:k]] = 1.0
            rows += [remove, 1.0 - remove, rand]
    acc = masked_accuracy(model, layer, eval_data, torch.stack(rows), batch_size=batch_size, progress=progress)
    cls = torch.arange(num_classes)
    out: dict[str, Any] = {"layer": layer, "num_units": width, "num_classes": num_classes, "ks": ks,
                           "mean_intact": float(acc[0].nanmean()),
                           "max_single_unit_accuracy_drop": float(drops.accuracy.nan_to_num(0).max())}
    for name, offset in (("removed", 0), ("kept", 1), ("random_removed", 2)):
        means = []
        for i in range(len(ks)):
            base = 1 + i * 3 * num_classes + offset
            means.append(float(acc[base + 3 * cls, cls].nanmean()))
        out[f"mean_{name}"] = means
    out["top_units"] = [r[:max(ks)].tolist() for r in rankings]
    return out


def generator_figures(
    generator: torch.nn.Module,
    layer: str,
    dissection: Any,
    segmenter: Any,
    z: torch.Tensor,
    *,
    concept: str = "tree",
    ns: Sequence[int] = (1, 2, 3, 4, 8, 16, 20, 30),
    insert_units: int = 20,
    box: tuple[int, int, int, int] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Share of ``concept`` pixels removed by zeroing its top-n units (and as many random units, as a
    control); the concept's share inside / outside a square before and after inserting its top units."""
    ranked = concept_units(dissection, concept, max(max(ns), insert_units))
    with torch.no_grad(), eval_mode(generator):
        size = generator(z[:1].to(module_device(generator))).shape[-1]
    everywhere = torch.ones(size, size)
    removal = {}
    for n in ns:
        eff = paint_effect(generator, layer, z, ranked[:n], everywhere, segmenter=segmenter,
                           concept=concept, mode="remove")
        removal[n] = eff["removed"]
    n_max = max(ns)
    width = int(torch.as_tensor(dissection.iou).shape[0])
    random_units = torch.randperm(width, generator=torch.Generator().manual_seed(seed))[:n_max]
    random_removed = paint_effect(generator, layer, z, random_units, everywhere, segmenter=segmenter,
                                  concept=concept, mode="remove")["removed"]
    top, left, h, w = box or (size // 4, size // 4, size // 2, size // 2)
    region = torch.zeros(size, size)
    region[top:top + h, left:left + w] = 1.0
    eff = paint_effect(generator, layer, z, ranked[:insert_units], region, segmenter=segmenter,
                       concept=concept, levels=dissection.levels, mode="insert")
    return {
        "layer": layer,
        "concept": concept,
        "units": ranked.tolist(),
        "total_before": eff["total_before"],
        "removed": {str(n): removal[n] for n in ns},
        "random_removed": {str(n_max): random_removed},
        "insert_units": insert_units,
        "box": [top, left, h, w],
        "inside_before": eff["inside_before"],
        "inside_after": eff["inside_after"],
        "outside_before": eff["outside_before"],
        "outside_after": eff["outside_after"],
    }


def _stack_z(n: int, dim: int, seed: int) -> torch.Tensor:
    from ..datasets import ZDataset

    ds = ZDataset(n, dim, seed=seed)
    return torch.stack([ds[i] for i in range(n)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m netdissect_widgets.bench interventions",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--n-rank", type=int, default=1000, help="scenes used to rank units")
    parser.add_argument("--n-eval", type=int, default=1000, help="scenes used to measure accuracies")
    parser.add_argument("--k", type=int, nargs="+", default=None,
                        help="numbers of top units per class (default 4%%, 8%%, 16%%, 25%% of the layer)")
    parser.add_argument("--gan-layer", default="layer2", help="generator layer (default layer2: 8x8, like ProGAN's layer4)")
    parser.add_argument("--n-dissect", type=int, default=1000, help="generated images to dissect the generator layer")
    parser.add_argument("--n-z", type=int, default=200, help="generated images to measure paint effects")
    parser.add_argument("--skip", choices=["classifier", "generator"], default=None)
    args = parser.parse_args(argv)

    from .. import toyworld
    from ..dissection import dissect

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out: dict[str, Any] = {"device": str(device)}
    if args.skip != "classifier":
        t0 = time.perf_counter()
        clf = toyworld.load_classifier(device)
        out["classifier"] = classifier_figures(
            clf, "conv5", toyworld.SceneDataset(args.n_rank, seed=RANK_SEED),
            toyworld.SceneDataset(args.n_eval, seed=EVAL_SEED), ks=args.k)
        out["classifier"]["seconds"] = round(time.perf_counter() - t0, 1)
    if args.skip != "generator":
        from ..datasets import ZDataset

        t0 = time.perf_counter()
        gen = toyworld.load_generator(device)
        seg = toyworld.load_segmenter(device)
        d = dissect(gen, args.gan_layer, ZDataset(args.n_dissect, gen.z_dim, seed=DISSECT_Z_SEED), seg,
                    images="output", progress=False)
        z = _stack_z(args.n_z, gen.z_dim, EVAL_Z_SEED)
        out["generator"] = generator_figures(gen, args.gan_layer, d, seg, z)
        out["generator"]["seconds"] = round(time.perf_counter() - t0, 1)

    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print(f"device: {out['device']}  (units are 0-based)")
    if "classifier" in out:
        c = out["classifier"]
        print(f"\nclassifier {c['layer']}: {c['num_units']} units, {c['num_classes']} classes; units ranked "
              f"per class on {args.n_rank} scenes (seed {RANK_SEED}), measured on {args.n_eval} (seed {EVAL_SEED})")
        print(f"largest accuracy drop from one unit alone: {c['max_single_unit_accuracy_drop']:.3f} "
              "(ties broken by the drop in log-probability)")
        print(f"mean balanced accuracy over classes, intact: {c['mean_intact']:.3f}")
        print("     k   top-k removed   only top-k kept   k random removed")
        for i, k in enumerate(c["ks"]):
            print(f"  {k:>4}   {c['mean_removed'][i]:13.3f}   {c['mean_kept'][i]:15.3f}   "
                  f"{c['mean_random_removed'][i]:16.3f}")
        print(f"  ({c['seconds']} s)")
    if "generator" in out:
        g = out["generator"]
        print(f"\ngenerator {g['layer']}: top '{g['concept']}' units {g['units'][:8]}...; "
              f"'{g['concept']}' covers {g['total_before']:.1%} of {args.n_z} generated images")
        print("  share of tree pixels removed by zeroing the top n units:")
        for n, frac in g["removed"].items():
            print(f"    n = {n:>2}: {frac:.1%}")
        for n, frac in g["random_removed"].items():
            print(f"    control, {n} random units: {frac:.1%}")
        print(f"  inserting the top {g['insert_units']} units in a square {g['box']} (top, left, h, w):")
        print(f"    inside : {g['inside_before']:.1%} -> {g['inside_after']:.1%}")
        print(f"    outside: {g['outside_before']:.1%} -> {g['outside_after']:.1%}")
        print(f"  ({g['seconds']} s, including the dissection of {args.n_dissect} images)")
    return 0
