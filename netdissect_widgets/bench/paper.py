"""The rest of the paper on the toy classifier: adversarial attacks through units, importance vs IoU, layers.

``python -m netdissect_widgets.bench paper [--json] [options]`` prints:

* **Attack**: a targeted L-infinity PGD attack (:func:`~netdissect_widgets.intervene.pgd_attack`)
  on scenes of each class toward another class (source ``c``, target ``c + 3`` mod 10),
  at each budget ``--eps`` (in [-1, 1] image units; 0.25 = 32/255 of the [0, 1]
  range): the share of images that reach their target and the mean and largest
  L-infinity distance of the attacked images.
* **Units**: for each pair, on the images the attack succeeded on, the ``--n-top``
  most dimmed and most brightened ``conv5`` units
  (:func:`~netdissect_widgets.intervene.unit_attack_effects`): the share of them that
  are important for the source / target class (among the class's ``--top-k`` by
  single-unit ablation, ranked on held-out scenes), against chance
  (``top_k / units``), and the mean activation change of the source's and the
  target's important units against all units. The paper's finding: the attack dims
  the source's important units and brightens the target's.
* **Importance vs IoU**: ``conv5`` units grouped by the number of classes whose top
  ``--top-k`` they are in, with each group's mean label IoU
  (:func:`~netdissect_widgets.intervene.importance_vs_iou`) and the rank correlation.
* **Layers**: matched units per category (object / part / material / colour) in
  ``conv3``, ``conv4``, ``conv5`` (:func:`~netdissect_widgets.category_counts_by_layer`).

Labels come from the renderer's exact segmentation (``toyworld.GroundTruthSegmenter``).
"""
from __future__ import annotations

import argparse
import json
import time
from typing import Any, Sequence

import torch

from ..intervene import UnitDrops, importance_vs_iou, pgd_attack, unit_attack_effects, unit_drops

DISSECT_SEED = 1     # the example notebooks' dissection set
RANK_SEED = 2        # the example notebooks' ranking set
ATTACK_SEED = 51     # scenes attacked


def images_of_class(data: Any, cls: int, n: int, limit: int | None = None) -> torch.Tensor:
    """The first ``n`` images of class ``cls`` in ``data`` (``(image, label, ...)`` items), stacked."""
    found = []
    for i in range(len(data) if limit is None else min(limit, len(data))):
        item = data[i]
        if int(item[1]) == cls:
            found.append(item[0])
            if len(found) == n:
                break
    if not found:
        raise ValueError(f"no image of class {cls} in the data")
    return torch.stack(found)


def attack_figures(
    model: torch.nn.Module,
    layer: str,
    data: Any,
    drops: UnitDrops,
    *,
    pairs: Sequence[tuple[int, int]],
    n_images: int = 8,
    eps: float = 0.25,
    steps: int = 10,
    n_top: int = 10,
    top_k: int = 10,
) -> dict[str, Any]:
    """Attack success and the unit overlap figures, per (source, target) pair and averaged over pairs."""
    rows = []
    for source, target in pairs:
        images = images_of_class(data, source, n_images)
        attack = pgd_attack(model, images, target, eps=eps, steps=steps)
        row: dict[str, Any] = {"source": source, "target": target, "images": images.shape[0],
                               "success_rate": attack.success_rate, "mean_linf": float(attack.linf.mean()),
                               "max_linf": float(attack.linf.max())}
        ok = attack.success
        if ok.any():
            effects = unit_attack_effects(model, layer, images[ok], attack.images[ok], source=source,
                                          target=target, drops=drops, top_k=top_k)
            row.update(effects.overlap(n_top))
        rows.append(row)
    keys = ["dimmed_source", "brightened_target", "dimmed_target", "brightened_source", "chance",
            "source_change", "target_change", "all_change"]
    with_units = [r for r in rows if "chance" in r]
    total = sum(r["images"] for r in rows)
    out = {"eps": eps, "steps": steps, "n_top": n_top, "top_k": top_k, "pairs": rows,
           "success_rate": sum(r["success_rate"] * r["images"] for r in rows) / total,
           "mean_linf": sum(r["mean_linf"] * r["images"] for r in rows) / total,
           "max_linf": max(r["max_linf"] for r in rows),
           "pairs_with_units": len(with_units)}
    for k in keys:
        out[k] = sum(r[k] for r in with_units) / len(with_units) if with_units else float("nan")
    out["pairs_source_dimmed_more"] = sum(r["source_change"] < r["all_change"] for r in with_units)
    out["pairs_target_brightened_more"] = sum(r["target_change"] > r["all_change"] for r in with_units)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m netdissect_widgets.bench paper",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--n-dissect", type=int, default=800, help="scenes dissected per layer")
    parser.add_argument("--n-rank", type=int, default=500, help="scenes used to rank units (single-unit ablation)")
    parser.add_argument("--n-images", type=int, default=8, help="scenes attacked per (source, target) pair")
    parser.add_argument("--eps", type=float, nargs="+", default=[0.0625, 0.125, 0.25],
                        help="L-inf budgets in [-1, 1] image units (default 0.0625 0.125 0.25)")
    parser.add_argument("--steps", type=int, default=10, help="PGD steps (step size eps / 4)")
    parser.add_argument("--top-k", type=int, default=10, help="a unit is important for a class among its top k")
    parser.add_argument("--n-top", type=int, default=10, help="most dimmed / brightened units looked at")
    parser.add_argument("--layers", nargs="+", default=["conv3", "conv4", "conv5"], help="layers compared")
    args = parser.parse_args(argv)

    from .. import toyworld
    from ..dissection import dissect
    from ..dissection.layer_chart import category_counts_by_layer

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = toyworld.load_classifier(device)
    seg = toyworld.GroundTruthSegmenter()
    out: dict[str, Any] = {"device": str(device)}
    t0 = time.perf_counter()
    dissect_set = toyworld.SceneDataset(args.n_dissect, seed=DISSECT_SEED)
    dissections = {layer: dissect(model, layer, dissect_set, seg, progress=False) for layer in args.layers}
    out["dissect_seconds"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    drops = unit_drops(model, "conv5", toyworld.SceneDataset(args.n_rank, seed=RANK_SEED))
    out["rank_seconds"] = round(time.perf_counter() - t0, 1)
    n_classes = len(toyworld.CLASSES)
    pairs = [(c, (c + 3) % n_classes) for c in range(n_classes)]
    attack_data = toyworld.SceneDataset(40 * args.n_images, seed=ATTACK_SEED)
    out["attacks"] = []
    for eps in args.eps:
        t0 = time.perf_counter()
        fig = attack_figures(model, "conv5", attack_data, drops, pairs=pairs, n_images=args.n_images, eps=eps,
                             steps=args.steps, n_top=args.n_top, top_k=args.top_k)
        fig["seconds"] = round(time.perf_counter() - t0, 1)
        out["attacks"].append(fig)
    if "conv5" in dissections:
        table = importance_vs_iou(drops, dissections["conv5"], top_k=args.top_k)
        out["importance"] = {"groups": table.groups, "spearman": table.spearman, "top_k": table.top_k,
                             "summary": table.summary()}
    out["layers"] = category_counts_by_layer(dissections)
    out["layer_units"] = {layer: d.num_units for layer, d in dissections.items()}

    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    names = toyworld.CLASSES
    print(f"device: {out['device']}  (units are 0-based); toy classifier, layer conv5 for attacks")
    print(f"dissections {out['dissect_seconds']} s ({args.n_dissect} scenes per layer), "
          f"single-unit ablation ranking {out['rank_seconds']} s ({args.n_rank} scenes)")
    for a in out["attacks"]:
        print(f"\ntargeted PGD, eps {a['eps']:g} ([-1, 1] units = {a['eps'] * 255 / 2:.0f}/255 of [0, 1]), "
              f"{a['steps']} steps, {args.n_images} scenes x {len(pairs)} pairs ({a['seconds']} s)")
        print(f"  success rate {a['success_rate']:.1%}; L-inf mean {a['mean_linf']:.4f}, max {a['max_linf']:.4f}")
        print(f"  of the {a['n_top']} most dimmed units, important for the source: {a['dimmed_source']:.1%} "
              f"(for the target: {a['dimmed_target']:.1%})")
        print(f"  of the {a['n_top']} most brightened units, important for the target: "
              f"{a['brightened_target']:.1%} (for the source: {a['brightened_source']:.1%})")
        print(f"  chance (top {a['top_k']} of the layer): {a['chance']:.1%}")
        print(f"  mean activation change: source's important units {a['source_change']:+.3f}, target's "
              f"{a['target_change']:+.3f}, all units {a['all_change']:+.3f}; pairs where the source's are dimmed "
              f"more than average {a['pairs_source_dimmed_more']}/{a['pairs_with_units']}, the target's "
              f"brightened more {a['pairs_target_brightened_more']}/{a['pairs_with_units']}")
        for r in a["pairs"]:
            print(f"    {names[r['source']] + ' -> ' + names[r['target']]:28s} success {r['success_rate']:.0%}"
                  + (f"  dimmed/src {r['dimmed_source']:.0%}  brightened/tgt {r['brightened_target']:.0%}"
                     if "chance" in r else ""))
    if "importance" in out:
        print("\n" + out["importance"]["summary"])
    print("\nmatched units per category and layer (IoU > 0.04):")
    cats = list(next(iter(out["layers"].values())))
    print(f"  {'layer':8s} {'units':>5s} " + " ".join(f"{c:>8s}" for c in cats))
    for layer, counts in out["layers"].items():
        print(f"  {layer:8s} {out['layer_units'][layer]:>5d} " + " ".join(f"{counts[c]:>8d}" for c in cats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
