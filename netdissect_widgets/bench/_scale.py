"""Dissection at scale, measured: several processes (torchrun) and bounded memory vs one process and a bare forward.

``python -m netdissect_widgets.bench dissect --world-size N [--max-store-bytes B] [--model NAME]``

In one run, side by side on the same data (built in memory first):

* ``forward``: the model alone over the items, one process;
* ``one process``: :func:`netdissect_widgets.dissect` in one process, the one-pass engine
  (everything stored) and the streamed engine (``max_store_bytes``; default: a bound
  below what the one pass stores, so that it streams);
* ``N processes``: this benchmark launches itself under ``python -m torch.distributed.run
  --standalone --nproc-per-node N`` (gloo on the CPU, NCCL with ``--device cuda``); each
  rank times the bare forward over its own shard and its part of the dissection twice,
  as ``dissect`` runs it (its share kept in memory and replayed when it fits the budget:
  ``--max-store-bytes``, default 1 GiB under torchrun) and reading the data again in every
  pass (no replay), and says whether each result equals the one-process result bit for bit.

Every process, the one-process runs included, gets ``cores / N`` intra-op threads
(``--threads``): torch's CPU convolutions may round differently with another thread
count (then the activations differ, and with them the dissection), and the speed-up
measures more processes on more cores, not more threads.

Printed: per-rank throughput (items/s), the speed-up of N processes over one, and the
ratios to a bare forward. Models: the toy world's (``toy-classifier`` conv5,
``toy-gan`` layer4) and real-size ones with random weights at 224x224 (``vgg16``
features.29 = conv5_3, ``resnet50`` layer4), segmented by a synthetic colour segmenter
at the paper's 56x56.
"""
from __future__ import annotations

import contextlib
import datetime
import functools
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

REAL = {"vgg16": "features.29", "resnet50": "layer4"}
MODELS = ("toy-classifier", "toy-gan", *REAL)


def setup(name: str, n_images: int, device: str) -> dict:
    """Model, layer, data (in memory), segmenter, images= and seg_size for a benchmark model."""
    if name in REAL:
        import torchvision

        from ..segment import ColorSegmenter

        torch.manual_seed(0)
        model = getattr(torchvision.models, name)(weights=None).eval().to(device)
        g = torch.Generator().manual_seed(7)
        # smooth random images (a coarse grid upsampled), so that colour regions are regions
        coarse = torch.rand(n_images, 3, 14, 14, generator=g) * 2 - 1
        images = torch.nn.functional.interpolate(coarse, size=224, mode="bilinear", align_corners=False)
        # (random weights leave some conv5 units below float16's normal range: float32 up front, no second pass)
        return {"model": model, "layer": REAL[name], "data": TensorDataset(images), "segmenter": ColorSegmenter(),
                "images": "input", "seg_size": 56, "store_dtype": "float32"}
    from ..toyworld.setups import toy_setup
    from ._data import materialise as _materialise

    s = toy_setup(name, n_images, None, device, seed=7)
    return {"model": s.model, "layer": s.layer, "data": _materialise(s.data), "segmenter": s.segmenter,
            "images": s.images, "seg_size": None, "store_dtype": "float16"}


def digest(d) -> str:
    """A hash of what must be equal bit for bit: levels, IoU counts, labels, top images."""
    h = hashlib.sha256()
    for a in (d.levels, d.intersection, d.unit_pixels, d.concept_pixels, d.topk_values, d.topk_indices,
              d.thumb_index, d.top_maps):
        h.update(np.ascontiguousarray(np.asarray(a)).tobytes())
    h.update(json.dumps([[lab.concept, lab.matched] for lab in d.labels]).encode())
    return h.hexdigest()[:16]


def forward_time(s: dict, batch_size: int, rows: range | None = None) -> tuple[float, float]:
    """Wall and CPU seconds (this process, all its threads) of the bare forward."""
    data = s["data"] if rows is None else torch.utils.data.Subset(s["data"], rows)
    device = next(s["model"].parameters()).device
    start, cpu = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        for batch in DataLoader(data, batch_size=batch_size):
            s["model"](batch[0].to(device))
    return time.perf_counter() - start, time.process_time() - cpu


def dissect_time(s: dict, batch_size: int, **kw) -> tuple[float, float, Any]:
    """Wall and CPU seconds of the dissection, and the dissection."""
    from ..dissection import dissect

    start, cpu = time.perf_counter(), time.process_time()
    d = dissect(s["model"], s["layer"], s["data"], s["segmenter"], images=s["images"], seg_size=s["seg_size"],
                store_dtype=s["store_dtype"], progress=False, batch_size=batch_size, **kw)
    return time.perf_counter() - start, time.process_time() - cpu, d


@contextlib.contextmanager
def reading_every_pass():
    """``dissect``'s streamed engine without replay (every pass reads the data), for a comparison in this
    benchmark's process; restored on exit."""
    from unittest import mock

    from ..dissection import _sharded

    with mock.patch.object(_sharded, "dissect_streamed", functools.partial(_sharded.dissect_streamed, replay=False)):
        yield


@contextlib.contextmanager
def torchrun_rank(args):
    """This rank's process group (gloo on the CPU, NCCL with ``--device cuda``), yielding its benchmark
    setup, its shard's rows, the world size and the report it fills (then written for :func:`launch`)."""
    import torch.distributed as dist

    device = args.device
    if device == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        device = f"cuda:{torch.cuda.current_device()}"
    dist.init_process_group("nccl" if args.device == "cuda" else "gloo", timeout=datetime.timedelta(minutes=10))
    rank, world = dist.get_rank(), dist.get_world_size()
    try:
        s = setup(args.model, args.n_images, device)
        n_batches = -(-args.n_images // args.batch_size)
        b0, b1 = n_batches * rank // world, n_batches * (rank + 1) // world
        rows = range(min(b0 * args.batch_size, args.n_images), min(b1 * args.batch_size, args.n_images))
        out = {"rank": rank, "items": len(rows), "threads": torch.get_num_threads()}
        yield s, rows, world, out
        dist.barrier()
        with open(os.path.join(args.worker_out, f"rank{rank}.json"), "w") as f:
            json.dump(out, f)
    finally:
        dist.destroy_process_group()


def worker(args) -> int:
    """One rank under torchrun: its shard's bare forward, then its part of the dissection."""
    import torch.distributed as dist

    with torchrun_rank(args) as (s, rows, world, out):
        dist.barrier()
        fwd, fwd_cpu = forward_time(s, args.batch_size, rows)
        # warm-up (numba's compiled loops loaded, the model's first calls), not timed: one item per rank
        dissect_time(dict(s, data=torch.utils.data.Subset(s["data"], range(min(args.n_images, world)))), 1,
                     max_store_bytes=args.max_store_bytes)
        times: dict[str, list] = {"replay": [], "replay_cpu": [], "reread": [], "reread_cpu": []}
        for _ in range(args.repeats):  # (interleaved: as dissect runs it, then reading the data in every pass)
            dist.barrier()
            wall, cpu, d = dissect_time(s, args.batch_size, max_store_bytes=args.max_store_bytes)
            dist.barrier()
            with reading_every_pass():
                wall_r, cpu_r, d_r = dissect_time(s, args.batch_size, max_store_bytes=args.max_store_bytes)
            for key, value in (("replay", wall), ("replay_cpu", cpu), ("reread", wall_r), ("reread_cpu", cpu_r)):
                times[key].append(value)
        wall, cpu, wall_r, cpu_r = (statistics.median(times[k]) for k in ("replay", "replay_cpu", "reread", "reread_cpu"))
        out.update({"forward_s": round(fwd, 4), "dissect_s": round(wall, 4), "forward_cpu_s": round(fwd_cpu, 4),
                    "dissect_cpu_s": round(cpu, 4), "passes": d.config.get("passes"),
                    "passes_replayed": d.config.get("passes_replayed"), "digest": digest(d),
                    "reread_s": round(wall_r, 4), "reread_cpu_s": round(cpu_r, 4),
                    "reread_passes": d_r.config.get("passes"), "reread_digest": digest(d_r)})
    return 0


def launch(args, argv: list[str]) -> dict:
    """This benchmark under torchrun with ``args.world_size`` processes; their per-rank results."""
    out = tempfile.mkdtemp(prefix="bench-scale-")
    threads = args.threads
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
           "--nproc-per-node", str(args.world_size), "-m", "netdissect_widgets.bench", "dissect", *argv,
           "--worker-out", out]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    start = time.perf_counter()
    code = subprocess.run(cmd, env=env).returncode
    launched = time.perf_counter() - start
    if code:
        raise RuntimeError(f"torchrun exited with {code}: {' '.join(cmd)}")
    ranks = [json.load(open(os.path.join(out, f"rank{r}.json"))) for r in range(args.world_size)]
    return {"ranks": ranks, "threads_per_rank": threads, "launch_s": round(launched, 2)}


def layers_time(s: dict, layers: list[str], batch_size: int) -> tuple[float, float, dict]:
    """Wall and CPU seconds of ``dissect_layers`` over ``layers``, and its dissections."""
    from ..dissection import dissect_layers

    start, cpu = time.perf_counter(), time.process_time()
    ds = dissect_layers(s["model"], layers, s["data"], s["segmenter"], images=s["images"], seg_size=s["seg_size"],
                        store_dtype=s["store_dtype"], progress=False, batch_size=batch_size)
    return time.perf_counter() - start, time.process_time() - cpu, ds


def layers_worker(args) -> int:
    """One rank under torchrun: its shard's bare forward, then its part of ``dissect_layers``."""
    import torch.distributed as dist

    layers = args.layers.split(",")
    with torchrun_rank(args) as (s, rows, world, out):
        layers_time(dict(s, data=torch.utils.data.Subset(s["data"], range(min(args.n_images, world)))), layers, 1)
        dist.barrier()
        fwd, fwd_cpu = forward_time(s, args.batch_size, rows)
        walls, cpus = [], []
        for _ in range(args.repeats):
            dist.barrier()
            wall, cpu, ds = layers_time(s, layers, args.batch_size)
            walls.append(wall)
            cpus.append(cpu)
        out.update({"forward_s": round(fwd, 4), "forward_cpu_s": round(fwd_cpu, 4),
                    "dissect_s": round(statistics.median(walls), 4), "dissect_cpu_s": round(statistics.median(cpus), 4),
                    "passes": {k: d.config.get("passes") for k, d in ds.items()},
                    "passes_replayed": {k: d.config.get("passes_replayed") for k, d in ds.items()},
                    "digests": {k: digest(d) for k, d in ds.items()}})
    return 0


def layers_main(args, argv: list[str]) -> int:
    """``dissect_layers`` in one process (one pass) and under torchrun (each rank its shard), side by side."""
    layers = args.layers.split(",")
    s = setup(args.model, args.n_images, args.device)
    fwd, one, cpu = [], [], {"forward": [], "one": []}
    for _ in range(args.repeats):
        t, c = forward_time(s, args.batch_size)
        fwd.append(t)
        cpu["forward"].append(c)
        t, c, ds_one = layers_time(s, layers, args.batch_size)
        one.append(t)
        cpu["one"].append(c)
    med = statistics.median
    report = {"benchmark": "dissect_layers at scale", "model": args.model, "layers": layers, "device": args.device,
              "n_images": args.n_images, "batch_size": args.batch_size, "threads": torch.get_num_threads(),
              "forward_s": round(med(fwd), 3), "one_process_s": round(med(one), 3),
              "cpu_s": {k: round(med(v), 3) for k, v in cpu.items()}}
    if args.world_size > 1:
        rest = [a for i, a in enumerate(argv) if not a.startswith("--world-size") and (i == 0 or argv[i - 1] != "--world-size")]
        run = launch(args, rest + ["--world-size", "1"])
        wall = max(r["dissect_s"] for r in run["ranks"])
        report.update(world_size=args.world_size, ranks=run["ranks"], distributed_s=round(wall, 3),
                      distributed_cpu_s=round(sum(r["dissect_cpu_s"] for r in run["ranks"]), 3),
                      speedup_vs_one_process=round(med(one) / wall, 3),
                      distributed_equals_one_process=all(r["digests"] == {k: digest(d) for k, d in ds_one.items()}
                                                         for r in run["ranks"]))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    r, c = report, report["cpu_s"]
    print(f"dissect_layers {r['model']} {','.join(layers)}, {r['n_images']} items, {r['device']}, batch "
          f"{r['batch_size']}, {r['threads']} threads, median of {args.repeats}")
    print(f"  bare forward {r['forward_s']:.2f} s (CPU {c['forward']:.2f}); one process, one pass: "
          f"{r['one_process_s']:.2f} s (CPU {c['one']:.2f}, ratio {c['one'] / c['forward']:.2f})")
    if args.world_size > 1:
        for rk in r["ranks"]:
            print(f"  rank {rk['rank']}: {rk['items']} items, forward {rk['forward_s']:.2f} s (CPU "
                  f"{rk['forward_cpu_s']:.2f}), dissect_layers {rk['dissect_s']:.2f} s (CPU {rk['dissect_cpu_s']:.2f}); "
                  f"passes {rk['passes']}, replayed {rk['passes_replayed']}")
        print(f"  {r['world_size']} processes: {r['distributed_s']:.2f} s, CPU seconds of all ranks "
              f"{r['distributed_cpu_s']:.2f}, speed-up {r['speedup_vs_one_process']:.2f}x over one process; every "
              f"rank equal to one process bit for bit (every layer): {r['distributed_equals_one_process']}")
    return 0


def main(args, argv: list[str]) -> int:
    if args.worker_out:  # (a rank: its threads set by launch's OMP_NUM_THREADS)
        return layers_worker(args) if args.layers else worker(args)
    # every process gets the same threads (one process too): a CPU convolution may round differently with
    # another intra-op thread count, and the speed-up then measures more processes, not more threads
    threads = args.threads or max(1, (os.cpu_count() or 1) // max(1, args.world_size))
    torch.set_num_threads(threads)
    args.threads = threads
    if args.layers:
        return layers_main(args, argv)
    s = setup(args.model, args.n_images, args.device)
    from ..dissection._sharded import in_memory_bytes
    from ..dissection import _data

    loader = _data.make_loader(s["data"], args.batch_size, 0)
    n_concepts = len(s["segmenter"].concepts)
    stored = in_memory_bytes(s["model"], s["layer"], loader, s["segmenter"],
                             {"images": s["images"], "store_dtype": s["store_dtype"]}, n_concepts,
                             None if s["seg_size"] is None else [s["seg_size"]] * 2)
    bound = args.max_store_bytes or max(1, stored // 4)
    fwd, one, streamed, cpu = [], [], [], {"forward": [], "one": [], "streamed": []}
    d_one = d_str = None
    for _ in range(args.repeats):
        t, c = forward_time(s, args.batch_size)
        fwd.append(t)
        cpu["forward"].append(c)
        t, c, d_one = dissect_time(s, args.batch_size)
        one.append(t)
        cpu["one"].append(c)
        t, c, d_str = dissect_time(s, args.batch_size, max_store_bytes=bound)
        streamed.append(t)
        cpu["streamed"].append(c)
    med = statistics.median
    report = {"benchmark": "dissect at scale", "model": args.model, "layer": s["layer"], "device": args.device,
              "n_images": args.n_images, "batch_size": args.batch_size, "threads": torch.get_num_threads(),
              "one_pass_store_bytes": int(stored), "max_store_bytes": bound,
              "forward_s": round(med(fwd), 3), "one_process_s": round(med(one), 3),
              "one_process_streamed_s": round(med(streamed), 3), "streamed_passes": d_str.config.get("passes"),
              "ratio_one_process": round(med(one) / med(fwd), 3),
              "ratio_streamed": round(med(streamed) / med(fwd), 3),
              "streamed_equals_one_pass": digest(d_str) == digest(d_one),
              "cpu_s": {k: round(med(v), 3) for k, v in cpu.items()}}
    if args.world_size > 1:
        rest = [a for i, a in enumerate(argv) if not a.startswith("--world-size") and (i == 0 or argv[i - 1] != "--world-size")]
        given = ["--max-store-bytes", str(args.max_store_bytes)] if args.max_store_bytes else []
        run = launch(args, [a for i, a in enumerate(rest) if not a.startswith("--max-store-bytes")
                            and (i == 0 or rest[i - 1] != "--max-store-bytes")] + ["--world-size", "1", *given])
        wall = max(r["dissect_s"] for r in run["ranks"])
        reread = max(r["reread_s"] for r in run["ranks"])
        report.update(world_size=args.world_size, threads_per_rank=run["threads_per_rank"], ranks=run["ranks"],
                      distributed_s=round(wall, 3), speedup_vs_one_process=round(med(one) / wall, 3),
                      speedup_vs_one_process_streamed=round(med(streamed) / wall, 3),
                      ratio_distributed_to_one_process_forward=round(wall / med(fwd), 3),
                      distributed_equals_one_process=all(r["digest"] == digest(d_one) for r in run["ranks"]),
                      distributed_cpu_s=round(sum(r["dissect_cpu_s"] for r in run["ranks"]), 3),
                      distributed_budget=args.max_store_bytes or "1 GiB (torchrun's default)",
                      distributed_reread_s=round(reread, 3), replay_speedup=round(reread / wall, 3),
                      distributed_reread_cpu_s=round(sum(r["reread_cpu_s"] for r in run["ranks"]), 3),
                      reread_equals_one_process=all(r["reread_digest"] == digest(d_one) for r in run["ranks"]))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    r = report
    print(f"dissect {r['model']} {r['layer']}, {r['n_images']} items, {r['device']}, batch {r['batch_size']}, "
          f"{r['threads']} threads, median of {args.repeats}")
    print(f"  bare forward {r['forward_s']:.2f} s; one process: one pass {r['one_process_s']:.2f} s "
          f"(ratio {r['ratio_one_process']:.2f}, stores {r['one_pass_store_bytes'] / 2**20:.1f} MiB), streamed "
          f"{r['one_process_streamed_s']:.2f} s in {r['streamed_passes']} passes under {bound / 2**20:.2f} MiB "
          f"(ratio {r['ratio_streamed']:.2f}); equal bit for bit: {r['streamed_equals_one_pass']}")
    c = r["cpu_s"]
    print(f"  CPU seconds (steadier than wall time on a busy machine): forward {c['forward']:.2f}, one pass "
          f"{c['one']:.2f} (ratio {c['one'] / c['forward']:.2f}), streamed {c['streamed']:.2f} "
          f"(ratio {c['streamed'] / c['forward']:.2f})")
    if args.world_size > 1:
        for rk in r["ranks"]:
            print(f"  rank {rk['rank']}: {rk['items']} items, forward {rk['forward_s']:.2f} s, dissect "
                  f"{rk['dissect_s']:.2f} s ({rk['items'] / rk['dissect_s']:.1f} items/s; ratio to its forward "
                  f"{rk['dissect_s'] / max(rk['forward_s'], 1e-9):.2f}), {rk['threads']} thread(s), "
                  f"{rk['passes']} passes ({rk['passes_replayed'][rk['rank']]} replayed from memory); CPU "
                  f"{rk['forward_cpu_s']:.2f} s forward, {rk['dissect_cpu_s']:.2f} s dissect; reading the data in "
                  f"every pass: {rk['reread_s']:.2f} s, {rk['reread_passes']} passes, CPU {rk['reread_cpu_s']:.2f} s")
        print(f"  {r['world_size']} processes: {r['distributed_s']:.2f} s, speed-up {r['speedup_vs_one_process']:.2f}x "
              f"over one process (one pass), {r['speedup_vs_one_process_streamed']:.2f}x over one process "
              f"streamed; ratio to the one-process bare forward {r['ratio_distributed_to_one_process_forward']:.2f}; "
              f"every rank equal to one process bit for bit: {r['distributed_equals_one_process']}; CPU seconds "
              f"of all ranks {r['distributed_cpu_s']:.2f} vs one process streamed {c['streamed']:.2f} (budget per "
              f"rank: {r['distributed_budget']})")
        print(f"  {r['world_size']} processes reading the data in every pass (no replay): "
              f"{r['distributed_reread_s']:.2f} s, CPU seconds of all ranks {r['distributed_reread_cpu_s']:.2f}; "
              f"replay {r['replay_speedup']:.2f}x faster; equal bit for bit: {r['reread_equals_one_process']}")
    return 0
