"""Real models (the [real] extra): units matched, concepts, removal and insertion effects, dissection time: ``python -m netdissect_widgets.bench real``.

For each real model at its default layer (the face GAN's ``layer3`` over latent
vectors, EfficientNet-Lite0's ``head`` over the packaged photos, both with the
``FaceSegmenter``): units matched (IoU > 0.04) and distinct concepts, and the
dissection's time against a bare forward pass over the same data (and against
forward + segmenter, the work any dissection has to do), measured side by side.

For the face GAN, for the concept with the most matched units and for the face part
with the most (when that is another concept): its pixel share over ``--samples``
samples before and after switching off its 10 best units (by IoU) everywhere, against
10 random units; and inserting the 10 units into a 24x24 square in the middle: the
concept's share inside and outside the square, before and after.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import torch


def _forward_seconds(model: torch.nn.Module, data: Any, batch_size: int, images: str, segmenter: Any = None) -> float:
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False)
    start = time.perf_counter()
    with torch.no_grad():
        for batch in loader:
            x = batch[0] if isinstance(batch, (list, tuple)) else batch
            out = model(x)
            if segmenter is not None:
                segmenter.segment(out if images == "output" else x)
    return time.perf_counter() - start


def _dissect_model(name: str, n: int, batch_size: int) -> tuple[Any, dict]:
    from ..dissection import dissect
    from ..zoo.setups import real_setup

    s = real_setup(name, n)
    forward = _forward_seconds(s.model, s.data, batch_size, s.images)
    start = time.perf_counter()
    d = dissect(s.model, s.layer, s.data, s.segmenter, images=s.images, seg_size=s.seg_size,
                batch_size=batch_size, progress=False)
    seconds = time.perf_counter() - start
    with_segmenter = _forward_seconds(s.model, s.data, batch_size, s.images, s.segmenter)
    counts = d.concept_counts()
    row = {
        "model": name, "layer": s.layer, "items": len(s.data), "units": d.num_units,
        "matched": sum(lab.matched for lab in d.labels), "concepts": len(counts),
        "top_concepts": sorted(counts.items(), key=lambda kv: -kv[1])[:8],
        "dissect_s": seconds, "forward_s": forward, "forward_segment_s": with_segmenter,
        "ratio_forward": seconds / forward, "ratio_forward_segment": seconds / with_segmenter,
    }
    return (d, s), row


def _effects(d: Any, setup: Any, concept: str, samples: int, seed: int) -> dict:
    from ..datasets import ZDataset
    from ..intervene import concept_units, paint_effect

    gen, seg = setup.model, setup.segmenter
    zs = ZDataset(samples, gen.z_dim, seed=seed + 1)  # other latents than the dissection's
    z = torch.stack([zs[i] for i in range(samples)])
    size = gen(z[:1]).shape[-1]
    top = concept_units(d, concept, 10)
    rand = torch.randperm(d.num_units, generator=torch.Generator().manual_seed(seed))[:10]
    everywhere = torch.ones(size, size)
    off_top = paint_effect(gen, setup.layer, z, top, everywhere, segmenter=seg, concept=concept, mode="remove")
    off_rand = paint_effect(gen, setup.layer, z, rand, everywhere, segmenter=seg, concept=concept, mode="remove")
    square = torch.zeros(size, size)
    lo, hi = size * 5 // 16, size * 11 // 16
    square[lo:hi, lo:hi] = 1
    ins = paint_effect(gen, setup.layer, z, top, square, segmenter=seg, concept=concept, levels=d.levels)
    return {
        "concept": concept, "matched_units": d.concept_counts().get(concept, 0), "samples": samples,
        "units": top.tolist(), "share_before": off_top["total_before"],
        "share_after_top10_off": off_top["total_after"], "share_after_random10_off": off_rand["total_after"],
        "removed_top10": off_top["removed"], "removed_random10": off_rand["removed"],
        "insert_inside": [ins["inside_before"], ins["inside_after"]],
        "insert_outside": [ins["outside_before"], ins["outside_after"]], "square": [lo, hi],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m netdissect_widgets.bench real", description=__doc__.split("\n")[0])
    p.add_argument("--gan-samples", type=int, default=400, help="latent vectors to dissect the face GAN over")
    p.add_argument("--photos", type=int, default=440, help="photo views to dissect EfficientNet-Lite0 over")
    p.add_argument("--samples", type=int, default=100, help="samples for the removal / insertion effects (>= 100)")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-classifier", action="store_true", help="only the face GAN")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = p.parse_args(argv)
    from ..zoo import MissingExtraError

    result: dict[str, Any] = {"load": os.getloadavg(), "models": [], "effects": []}
    try:
        (d, setup), row = _dissect_model("face-gan", args.gan_samples, args.batch_size)
        result["models"].append(row)
        counts = d.concept_counts()
        best = max(counts, key=counts.get)
        parts = {c: n for c, n in counts.items() if d.categories[d.concepts.index(c)] != "color"}
        concepts = [best] + ([max(parts, key=parts.get)] if parts and max(parts, key=parts.get) != best else [])
        for concept in concepts:
            result["effects"].append(_effects(d, setup, concept, args.samples, args.seed))
        if not args.skip_classifier:
            _, row = _dissect_model("efficientnet-lite0", args.photos, args.batch_size)
            result["models"].append(row)
    except MissingExtraError as err:
        print(f"bench real: {err}")
        return 2
    result["load_after"] = os.getloadavg()
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"load average before: {result['load'][0]:.2f}, after: {result['load_after'][0]:.2f} (2-core machine)")
    for r in result["models"]:
        print(f"\n{r['model']} {r['layer']} ({r['units']} units, {r['items']} items): {r['matched']} units matched, "
              f"{r['concepts']} distinct concepts; most units: "
              + ", ".join(f"{c} {n}" for c, n in r["top_concepts"]))
        print(f"  dissection {r['dissect_s']:.1f} s, bare forward {r['forward_s']:.1f} s -> ratio "
              f"{r['ratio_forward']:.2f}; forward + segmenter {r['forward_segment_s']:.1f} s -> ratio "
              f"{r['ratio_forward_segment']:.2f}")
    for e in result["effects"]:
        print(f"\nface-gan, concept {e['concept']!r} ({e['matched_units']} matched units), {e['samples']} samples:")
        print(f"  pixel share {e['share_before']:.2%}; top 10 units off: {e['share_after_top10_off']:.2%} "
              f"({e['removed_top10']:.0%} removed); 10 random units off: {e['share_after_random10_off']:.2%} "
              f"({e['removed_random10']:.0%} removed)")
        lo, hi = e["square"]
        print(f"  top 10 units inserted in the square [{lo}:{hi}, {lo}:{hi}]: inside {e['insert_inside'][0]:.2%} -> "
              f"{e['insert_inside'][1]:.2%}, outside {e['insert_outside'][0]:.2%} -> {e['insert_outside'][1]:.2%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
