"""Benchmark of the streaming statistics: ``python -m netdissect_widgets.bench stats [--json]``.

Measures, on 512 units and side by side in one process:

- ``Quantile``: rows/s over a >= 5M-row stream (a pool of distinct rows with
  mixed distributions, fed repeatedly, so exact quantiles of the stream are the
  pool's), the max rank error at levels 0.99 and 0.995, and the state memory;
  compared with an exact store-everything-and-sort baseline (run on fewer rows)
  and with the machine's memory-copy floor (copying the same input once).
- ``TopK``: images/s for per-image spatial maxima of (N, 512, 14, 14) maps, k=100,
  against an exact store-all-then-topk baseline.
- ``IoUTally``: images/s for 512 units x 1,200 concepts, 6 label channels at
  56x56 and ~1% indicator density, INCLUDING the bilinear 14->56 upsampling and
  threshold (``add_activations``), against a dense upsample + one-hot matmul
  baseline.
"""
from __future__ import annotations

import argparse
import json
import time
from typing import Any, Callable

import torch
import torch.nn.functional as F

from ..stats import IoUTally, Quantile, TopK

UNITS = 512
TARGETS = {"quantile_rows_per_s": 405_000, "quantile_max_rank_error": 6e-4,
           "quantile_memory_mib": 256, "iou_images_per_s": 40}


DEVICE = torch.device("cpu")


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def _timeit(fn: Callable[[], Any], repeat: int = 1) -> float:
    fn()
    _sync()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    _sync()
    return (time.perf_counter() - start) / repeat


def copy_bandwidth() -> float:
    """Bytes/s of reading (and writing) a 256 MiB buffer once, i.e. a memcpy rate."""
    src = torch.ones(64 << 20, device=DEVICE)
    dst = torch.empty_like(src)
    t = _timeit(lambda: dst.copy_(src), repeat=3)
    return src.numel() * 4 / t


def _pool(rows: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, UNITS, generator=g)
    kind = torch.arange(UNITS) % 8
    zero_frac = 0.5 + 0.45 * torch.rand(UNITS, generator=g)
    shift = torch.distributions.Normal(0.0, 1.0).icdf(zero_frac)
    scale = 10 ** (6 * torch.rand(UNITS, generator=g) - 3)  # 1e-3 .. 1e3
    relu = torch.relu(x - shift) * scale
    lognormal = torch.exp(2 * x) * scale
    student = x / torch.rand(rows, UNITS, generator=g).clamp(min=1e-4).sqrt() * scale
    const = torch.full_like(x, 1.5) * scale
    out = torch.where(kind < 4, relu, torch.where(kind < 6, lognormal, torch.where(kind < 7, student, const)))
    return out.contiguous().to(DEVICE)


def _rank_error(pool: torch.Tensor, est: torch.Tensor, levels: list[float]) -> float:
    worst = 0.0
    for j, p in enumerate(levels):
        q = est[:, j].float()
        lt = (pool < q).double().mean(0)
        le = (pool <= q).double().mean(0)
        worst = max(worst, float(((lt - p).clamp(min=0) + (p - le).clamp(min=0)).max()))
    return worst


def bench_quantile(rows: int, bandwidth: float, batch: int = 8192, pool_rows: int = 65536) -> dict:
    pool = _pool(pool_rows)
    reps = max(1, -(-rows // pool_rows))  # whole passes over the pool, at least ``rows`` rows
    total = reps * pool_rows
    q = Quantile()
    q.add(pool[:batch])  # warm-up on a throwaway statistic below
    q = Quantile()
    _sync()
    start = time.perf_counter()
    for _ in range(reps):
        for i in range(0, pool_rows, batch):
            q.add(pool[i:i + batch])
    _sync()
    elapsed = time.perf_counter() - start
    levels = [0.99, 0.995]
    err = _rank_error(pool, q.quantiles(levels), levels)
    # same stream laid out as feature maps (N, units, 14, 14): no transpose needed
    maps = pool[: (pool_rows // 196) * 196].view(-1, 196, UNITS).permute(0, 2, 1).contiguous()
    qm = Quantile()
    t_maps = _timeit(lambda: qm.add(maps), repeat=2)
    maps_rate = maps.shape[0] * 196 / t_maps
    del qm
    # state (count table, min/max, NaN counts) plus the reusable per-thread key buffers
    memory = sum(t.numel() * t.element_size() for t in (q.table, q._min, q._max, q.nan_count, *q._bufs))
    # exact baseline: store every value, sort per unit at the end
    base_rows = min(total, 200_000)

    def exact() -> torch.Tensor:
        chunks = [pool[i % pool_rows:(i % pool_rows) + batch] for i in range(0, base_rows, batch)]
        allv = torch.cat(chunks).t().contiguous()
        s = allv.sort(dim=1).values
        idx = (torch.tensor(levels, device=s.device) * (s.shape[1] - 1)).round().long()
        return s[:, idx]

    t_exact = _timeit(exact)
    exact_rate = base_rows / t_exact
    floor = bandwidth / (UNITS * 4)
    return {
        "rows": total, "units": UNITS, "rows_per_s": total / elapsed, "rows_per_s_feature_maps": maps_rate,
        "max_rank_error": err, "memory_mib": memory / 2**20,
        "exact_baseline_rows": base_rows, "exact_baseline_rows_per_s": exact_rate,
        "exact_baseline_memory_mib_for_stream": total * UNITS * 4 * 2 / 2**20,
        "ratio_to_exact": (total / elapsed) / exact_rate, "copy_floor_rows_per_s": floor,
        "fraction_of_copy_floor": (total / elapsed) / floor,
    }


def bench_topk(images: int, bandwidth: float, batch: int = 64) -> dict:
    g = torch.Generator().manual_seed(1)
    acts = torch.relu(torch.randn(batch, UNITS, 14, 14, generator=g)).to(DEVICE)
    reps = max(1, images // batch)
    t = TopK(100)

    def run() -> None:
        for r in range(reps):
            t.add(acts.amax(dim=(2, 3)), index=torch.arange(r * batch, (r + 1) * batch, device=DEVICE))

    elapsed = _timeit(run)
    stored: list[torch.Tensor] = []

    def base() -> None:
        stored.clear()
        for _ in range(reps):
            stored.append(acts.amax(dim=(2, 3)))
        torch.cat(stored).t().topk(100, dim=1)

    t_base = _timeit(base)
    n = reps * batch
    floor = bandwidth / (UNITS * 196 * 4)
    return {"images": n, "images_per_s": n / elapsed, "baseline_images_per_s": n / t_base,
            "ratio_to_baseline": t_base / elapsed, "copy_floor_images_per_s": floor,
            "fraction_of_copy_floor": (n / elapsed) / floor}


def _iou_data(n: int, concepts: int, seed: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    # selective units, as in a real layer: smooth maps whose strength varies a lot between images
    noise = F.avg_pool2d(torch.randn(n, UNITS, 16, 16, generator=g), 3, stride=1)
    gain = torch.exp(1.5 * torch.randn(n, UNITS, 1, 1, generator=g))
    acts = (torch.relu(noise) * gain).contiguous()
    coarse = torch.randint(1, concepts, (n, 6, 8, 8), generator=g)
    seg = F.interpolate(coarse.float(), size=(56, 56), mode="nearest").long()
    holes = torch.rand(n, 6, 56, 56, generator=g) < torch.tensor([0.1, 0.5, 0.7, 0.8, 0.9, 0.95]).view(1, 6, 1, 1)
    seg = torch.where(holes, torch.zeros_like(seg), seg)
    seg[:, 5] = torch.where(seg[:, 5] > 0, seg[:, 0], seg[:, 5])  # duplicated labels occur
    acts, seg = acts.to(DEVICE), seg.to(DEVICE)
    q = Quantile()
    q.add(F.interpolate(acts[:16], size=(56, 56), mode="bilinear", align_corners=False))
    levels = q.quantile(0.99).float()
    return acts, seg, levels


def bench_iou(images: int, bandwidth: float, concepts: int = 1200, batch: int = 16) -> dict:
    acts, seg, levels = _iou_data(batch, concepts)
    reps = max(1, images // batch)
    t = IoUTally(UNITS, concepts)

    def run() -> None:
        for _ in range(reps):
            t.add_activations(acts, levels, seg)

    elapsed = _timeit(run)
    density = float(t.unit_count.sum()) / float(t.images * UNITS * 56 * 56) if int(t.images) else 0.0

    def base() -> torch.Tensor:  # dense, exact: full upsampling, one-hot labels, matmul
        up = F.interpolate(acts, size=(56, 56), mode="bilinear", align_corners=False)
        ind = (up > levels[None, :, None, None]).float().permute(1, 0, 2, 3).reshape(UNITS, -1)
        onehot = torch.zeros(batch, 56 * 56, concepts, device=DEVICE)
        onehot.scatter_(2, seg.view(batch, 6, -1).permute(0, 2, 1), 1.0)
        return ind @ onehot.view(-1, concepts)

    t_base = _timeit(base)
    cand = float((acts.amax(dim=(2, 3)) > levels[None, :]).float().mean())
    frontend = _timeit(lambda: F.interpolate(acts, size=(56, 56), mode="bilinear", align_corners=False)
                       > levels[None, :, None, None])
    n = reps * batch
    floor = bandwidth / (UNITS * 196 * 4 + 6 * 56 * 56 * 8)
    return {"images": n, "units": UNITS, "concepts": concepts, "label_channels": 6, "size": 56,
            "indicator_density": density, "maps_above_level": cand, "images_per_s": n / elapsed,
            "baseline_images_per_s": batch / t_base, "ratio_to_baseline": (n / elapsed) / (batch / t_base),
            "dense_upsample_threshold_only_images_per_s": batch / frontend,
            "copy_floor_images_per_s": floor, "fraction_of_copy_floor": (n / elapsed) / floor}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m netdissect_widgets.bench stats", description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--rows", type=int, default=5_000_000, help="quantile stream length (default 5M)")
    parser.add_argument("--images", type=int, default=256, help="images for the top-k and IoU benchmarks")
    parser.add_argument("--device", default="cpu", help="torch device for data and statistics (default cpu)")
    args = parser.parse_args(argv)
    global DEVICE
    DEVICE = torch.device(args.device)
    torch.manual_seed(0)
    bw = copy_bandwidth()
    result = {"device": str(DEVICE), "torch_threads": torch.get_num_threads(), "copy_bandwidth_gb_per_s": bw / 1e9,
              "quantile": bench_quantile(args.rows, bw), "topk": bench_topk(args.images * 16, bw),
              "iou": bench_iou(args.images, bw), "targets": TARGETS}
    q, k, i = result["quantile"], result["topk"], result["iou"]
    result["meets_targets"] = {
        "quantile_rows_per_s": q["rows_per_s"] >= TARGETS["quantile_rows_per_s"],
        "quantile_max_rank_error": q["max_rank_error"] <= TARGETS["quantile_max_rank_error"],
        "quantile_memory_mib": q["memory_mib"] <= TARGETS["quantile_memory_mib"],
        "iou_images_per_s": i["images_per_s"] >= TARGETS["iou_images_per_s"],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"stats benchmark on {DEVICE}, {UNITS} units (unit 0-based), {result['torch_threads']} torch threads; "
          f"memory-copy bandwidth {bw / 1e9:.2f} GB/s")
    print(f"Quantile: {q['rows_per_s']:,.0f} rows/s over {q['rows']:,} rows ((rows, units) batches; "
          f"{q['rows_per_s_feature_maps']:,.0f} rows/s as (N, units, 14, 14) maps); "
          f"max rank error {q['max_rank_error']:.2e} at 0.99/0.995; state+temp memory {q['memory_mib']:.0f} MiB")
    print(f"  exact store-everything baseline: {q['exact_baseline_rows_per_s']:,.0f} rows/s on {q['exact_baseline_rows']:,} rows "
          f"(fewer rows: the full stream would need {q['exact_baseline_memory_mib_for_stream'] / 1024:.1f} GiB); "
          f"ratio {q['ratio_to_exact']:.1f}x; copy floor {q['copy_floor_rows_per_s']:,.0f} rows/s "
          f"({100 * q['fraction_of_copy_floor']:.1f}% of it)")
    print(f"  targets: >= {TARGETS['quantile_rows_per_s']:,} rows/s, rank error <= {TARGETS['quantile_max_rank_error']}, "
          f"memory <= {TARGETS['quantile_memory_mib']} MiB")
    print(f"TopK(100): {k['images_per_s']:,.0f} images/s (per-image max of 512x14x14 maps); store-all baseline "
          f"{k['baseline_images_per_s']:,.0f} images/s (ratio {k['ratio_to_baseline']:.2f}x); copy floor "
          f"{k['copy_floor_images_per_s']:,.0f} images/s")
    print(f"IoUTally: {i['images_per_s']:,.1f} images/s for 512 units x {i['concepts']} concepts, 6 channels at 56x56, "
          f"density {100 * i['indicator_density']:.2f}% ({100 * i['maps_above_level']:.0f}% of maps reach the level), including bilinear 14->56 + threshold")
    print(f"  dense baseline (full upsample + one-hot matmul) {i['baseline_images_per_s']:,.1f} images/s "
          f"(ratio {i['ratio_to_baseline']:.1f}x); dense upsample+threshold alone "
          f"{i['dense_upsample_threshold_only_images_per_s']:,.1f} images/s; copy floor {i['copy_floor_images_per_s']:,.0f} images/s")
    print(f"  target: >= {TARGETS['iou_images_per_s']} images/s")
    print("meets targets: " + ", ".join(f"{k_}={v}" for k_, v in result["meets_targets"].items()))
    return 0
