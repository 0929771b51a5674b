"""Toy-world rendering speed on ONE core: ``python -m netdissect_widgets.bench render [--json]``.

Prints images per second for :func:`toyworld.render_scene` (numpy output) and
for ``SceneDataset.__getitem__`` (torch tensors in [-1, 1]) at 64x64 and
128x128, with ``torch.set_num_threads(1)``. Two rates per figure, both the best
of 3 rounds measured in this one run: per second of wall-clock time, and per
second of this process's CPU time (``time.process_time``), which stays
meaningful on a machine shared with other jobs. Target: >= 1000 images/s at
64x64. Options: ``--seconds S`` per measurement (default 1.0), ``--sizes 64 128``.
"""
from __future__ import annotations

import argparse
import json
import time


def _rate(fn, seconds: float) -> tuple[float, float]:
    """Best (wall, cpu) calls/s over 3 rounds of about ``seconds / 3`` each."""
    best_wall = best_cpu = 0.0
    i = 0
    for _ in range(3):
        n = 0
        t0, c0 = time.perf_counter(), time.process_time()
        while True:
            fn(i)
            i += 1
            n += 1
            dt = time.perf_counter() - t0
            if dt >= seconds / 3:
                break
        dc = max(time.process_time() - c0, 1e-9)
        best_wall, best_cpu = max(best_wall, n / dt), max(best_cpu, n / dc)
    return best_wall, best_cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m netdissect_widgets.bench render",
                                     description="toy-world images/s on one core")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    args = parser.parse_args(argv)

    import torch

    from netdissect_widgets.toyworld import SceneDataset, render_scene

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    results: dict[str, float] = {}
    try:
        for size in args.sizes:
            render_scene(0, size)  # warm caches (pixel grid, noise tile, colour table)
            ds = SceneDataset(10 ** 9, seed=0, size=size)
            for name, fn in ((f"render_scene_{size}", lambda i, s=size: render_scene((0, i), s)),
                             (f"dataset_item_{size}", ds.__getitem__)):
                wall, cpu = _rate(fn, args.seconds)
                results[f"{name}_wall"], results[f"{name}_cpu"] = wall, cpu
    finally:
        torch.set_num_threads(threads)
    if args.json:
        print(json.dumps({k: round(v, 1) for k, v in results.items()}))
        return 0
    print("toy-world rendering, 1 thread, images/s (best of 3 rounds; per wall-clock s / per CPU s)")
    for size in args.sizes:
        r = {k: results[f"{k}_{size}_wall"] for k in ("render_scene", "dataset_item")}
        c = {k: results[f"{k}_{size}_cpu"] for k in ("render_scene", "dataset_item")}
        print(f"  {size:>3}x{size:<3}  render_scene {r['render_scene']:6.0f} / {c['render_scene']:6.0f}   "
              f"SceneDataset[i] {r['dataset_item']:6.0f} / {c['dataset_item']:6.0f}")
    if 64 in args.sizes:
        ok = results["dataset_item_64_cpu"] >= 1000
        print(f"  target >= 1000 images/s per CPU second at 64x64 (SceneDataset[i]): {'met' if ok else 'NOT met'}")
    return 0
