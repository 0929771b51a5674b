"""dissect() under torch.distributed: 2 real processes (gloo, CPU) give what 1 process gives, bit for bit.

Each test session starts the 2 processes once (``torch.multiprocessing`` spawn, a free
port on 127.0.0.1, gloo), runs every scenario in them, and saves each rank's result;
then rank 0, its process group closed, runs every scenario alone (same process, same
thread count: a CPU convolution may round differently with another intra-op thread
count), and the tests compare. Another pair of processes
checks that a rank that dies makes the other fail with a clear error and leaves no
cache entry. Each rank counts the items its model ran on: once per item of its shard when
its share fits the budget (replay), once per pass otherwise.
"""
from __future__ import annotations

import datetime
import os
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from netdissect_widgets import dissect, dissect_layers
from netdissect_widgets.datasets import ZDataset
from tests.test_bounded import EXACT, PROBE, free_port, items_through
from tests.test_dissect_faithfulness import DataSegmenter, RandomConv, RandomSegData

WORLD = 2


class Gen(nn.Module):
    """A tiny generator: z (8,) -> images (3, 16, 16), its 'layer' at 4x4."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.fc = nn.Linear(8, 6 * 4 * 4)
        self.layer = nn.ReLU()
        self.out = nn.Sequential(nn.Upsample(scale_factor=4), nn.Conv2d(6, 3, 3, padding=1), nn.Tanh())

    def forward(self, z):
        return self.out(self.layer(self.fc(z).view(-1, 6, 4, 4)))


class Bright:
    concepts, categories = ["-", "bright", "dark"], ["-", "color", "color"]

    def segment(self, images):
        m = images.mean(1, keepdim=True)
        return torch.where(m > 0, 1, 2).long()


def scenarios(cache: Path) -> dict:
    """name -> (model, layer, data, segmenter, dissect keywords)."""
    conv = dict(progress=False, k=5, n_show=3)
    return {
        # 40 items in batches of 7: 6 batches, 3 per rank (21 and 19 items)
        "plain": (RandomConv(), "features", RandomSegData(n=40), DataSegmenter(), dict(conv, batch_size=7)),
        # 41 items in batches of 4: 11 batches, 5 and 6 per rank
        "uneven": (RandomConv(), "features", RandomSegData(n=41), DataSegmenter(),
                   dict(conv, batch_size=4, level=0.95)),
        "cached": (RandomConv(), "features", RandomSegData(n=40), DataSegmenter(),
                   dict(conv, batch_size=7, cache_dir=str(cache))),
        "generator": (Gen(), "layer", ZDataset(30, 8, seed=1), Bright(),
                      dict(progress=False, k=5, n_show=3, batch_size=8, images="output")),
        "bounded": (RandomConv(), "features", RandomSegData(n=40), DataSegmenter(),
                    dict(conv, batch_size=7, max_store_bytes=1)),
        # 5 items in one batch: rank 1 reads nothing and still returns the whole result
        "one-batch": (RandomConv(), "features", RandomSegData(n=5), DataSegmenter(), dict(conv, batch_size=8)),
        # ranks of 20 and 21 items keep at most 14134 and 14838 bytes to replay (704 per item, 18 thumbnails
        # of 1x1 pixel): rank 0 replays, rank 1 reads the data again; then both replay, with no room left
        # for the values near the levels (at most 54 bytes: narrowing passes, replayed)
        "mixed": (RandomConv(), "features", RandomSegData(n=41), DataSegmenter(),
                  dict(conv, batch_size=4, level=0.95, thumb_size=1, max_store_bytes=14500)),
        "narrow": (RandomConv(), "features", RandomSegData(n=41), DataSegmenter(),
                   dict(conv, batch_size=4, level=0.95, thumb_size=1, max_store_bytes=14838)),
    }


#: dissect_layers under torchrun: two layers of one model (41 items in batches of 4: shards of 20 and 21)
LAYERS = ["features.0", "features"]


def layers_scenario():
    return RandomConv(), RandomSegData(n=41), DataSegmenter(), dict(progress=False, k=5, n_show=3, batch_size=4,
                                                                    level=0.95)


#: whether each rank's share fits the budget (replay), per scenario
REPLAYS = {"bounded": (False, False), "mixed": (True, False)}


def shard(n: int, batch_size: int, rank: int) -> int:
    """The items of rank ``rank``'s shard: whole batches, as even as can be."""
    n_batches = -(-n // batch_size)
    b0, b1 = n_batches * rank // WORLD, n_batches * (rank + 1) // WORLD
    return min(b1 * batch_size, n) - min(b0 * batch_size, n)


def _save(d, path: Path) -> None:
    arrays = {name: np.asarray(getattr(d, name)) for name in EXACT + ("hist_counts",)}
    np.savez(path, **arrays, labels=np.array([f"{lab.concept}/{lab.iou!r}/{lab.matched}" for lab in d.labels]),
             passes=np.array(d.config.get("passes", 0)), replayed=np.array(d.config.get("passes_replayed", [])))


def _worker(rank: int, port: int, out: str, scenario: str) -> None:
    torch.set_num_threads(1)
    out_dir = Path(out)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=60))
    try:
        if scenario.startswith("killed"):
            _killed(rank, out_dir, reading=scenario == "killed-reading")
            return
        for name, (model, layer, data, seg, kw) in scenarios(out_dir / "cache").items():
            with items_through(model) as seen:
                d = dissect(model, layer, data, seg, **kw)
            _save(d, out_dir / f"{name}-rank{rank}.npz")
            (out_dir / f"{name}-forwarded-rank{rank}.txt").write_text(str(sum(seen)))
            if name == "cached":  # a second run reads the entry that rank 0 wrote
                with items_through(model) as seen:
                    again = dissect(model, layer, data, seg, **kw)
                _save(again, out_dir / f"{name}-again-rank{rank}.npz")
                (out_dir / f"{name}-again-forwarded-rank{rank}.txt").write_text(str(sum(seen)))
        model, data, seg, kw = layers_scenario()
        with items_through(model) as seen:
            got = dissect_layers(model, LAYERS, data, seg, **kw)
        for layer in LAYERS:
            _save(got[layer], out_dir / f"layers.{layer}-rank{rank}.npz")
        (out_dir / f"layers-forwarded-rank{rank}.txt").write_text(str(sum(seen)))
    finally:
        dist.destroy_process_group()
    if rank == 0:
        # one process, in the same process (same thread count: a CPU convolution may round differently with
        # another intra-op thread count, which would make the activations, not the dissection, differ)
        for name, (model, layer, data, seg, kw) in scenarios(out_dir / "one-cache").items():
            kw.pop("cache_dir", None)
            bound = kw.pop("max_store_bytes", None)
            _save(dissect(model, layer, data, seg, **kw), out_dir / f"{name}-one.npz")  # the one-pass engine
            _save(dissect(model, layer, data, seg, **dict(kw, max_store_bytes=bound or 1)),
                  out_dir / f"{name}-streamed.npz")
        model, data, seg, kw = layers_scenario()
        for layer, d in dissect_layers(model, LAYERS, data, seg, **kw).items():  # the one-pass engine
            _save(d, out_dir / f"layers.{layer}-one.npz")
            _save(dissect(model, layer, data, seg, **dict(kw, max_store_bytes=1)), out_dir / f"layers.{layer}-streamed.npz")


class DiesOnRank1(RandomSegData):
    """Rank 1 dies (exit code 7) when it reads item 30 for the ``dies_at``-th time."""

    def __init__(self, n: int, dies_at: int) -> None:
        super().__init__(n=n)
        self.dies_at, self.reads = dies_at, 0

    def __getitem__(self, i):
        if dist.get_rank() == 1 and i == 30:
            self.reads += 1
            if self.reads == self.dies_at:
                os._exit(7)
        return super().__getitem__(i)


def _killed(rank: int, out_dir: Path, reading: bool) -> None:
    """Rank 1 dies in the first pass (its share replayed: read once), or in the second pass (``reading``:
    a budget that makes every pass read the data)."""
    kw = dict(max_store_bytes=1) if reading else {}
    try:
        dissect(RandomConv(), "features", DiesOnRank1(n=40, dies_at=2 if reading else 1), DataSegmenter(),
                progress=False, k=3, batch_size=7, cache_dir=str(out_dir / "cache"), **kw)
    except RuntimeError:
        (out_dir / f"error-rank{rank}.txt").write_text(traceback.format_exc())
        return
    (out_dir / f"error-rank{rank}.txt").write_text("no error")


def _spawn(tmp: Path, scenario: str, timeout: float = 240) -> list[int]:
    ctx = mp.get_context("spawn")
    port = free_port()
    procs = [ctx.Process(target=_worker, args=(r, port, str(tmp), scenario)) for r in range(WORLD)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout)
    codes = []
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
        codes.append(p.exitcode)
    return codes


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("distributed")
    codes = _spawn(tmp, "all")
    assert codes == [0] * WORLD, f"the {WORLD} processes exited with {codes}"
    return tmp


def _load(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def _same_as(got: dict, ref: dict) -> None:
    for name in EXACT + ("labels",):
        np.testing.assert_array_equal(got[name], ref[name], err_msg=name)


def _ranks_agree(tmp: Path, name: str) -> dict:
    per_rank = [_load(tmp / f"{name}-rank{r}.npz") for r in range(WORLD)]
    for other in per_rank[1:]:
        for key, value in per_rank[0].items():
            np.testing.assert_array_equal(value, other[key], err_msg=key)
    return per_rank[0]


NAMES = ["plain", "uneven", "generator", "bounded", "one-batch", "mixed", "narrow"]


@pytest.mark.parametrize("name", NAMES)
def test_two_processes_equal_one(ranks, name):
    got = _ranks_agree(ranks, name)
    _same_as(got, _load(ranks / f"{name}-one.npz"))  # one process: the one-pass engine
    streamed = _load(ranks / f"{name}-streamed.npz")  # one process, streamed (reading the data once per pass)
    _same_as(got, streamed)
    np.testing.assert_array_equal(got["hist_counts"], streamed["hist_counts"])  # (all values: same histogram too)
    if name == "bounded":
        assert int(got["passes"]) == int(streamed["passes"])
    elif name == "narrow":  # (little room left beside the replay: narrowing passes)
        assert int(got["passes"]) >= 3
    elif name != "mixed":
        assert int(got["passes"]) == 2


@pytest.mark.parametrize("name", NAMES)
def test_each_rank_runs_its_model_once_per_item_when_its_share_fits(ranks, name):
    model, layer, data, seg, kw = scenarios(ranks / "unused")[name]
    passes = int(_load(ranks / f"{name}-rank0.npz")["passes"])
    replays = REPLAYS.get(name, (True, True))
    replayed = _load(ranks / f"{name}-rank0.npz")["replayed"].tolist()
    assert replayed == [passes - 1 if fits else 0 for fits in replays]
    for rank, fits in enumerate(replays):
        items = shard(len(data), kw["batch_size"], rank)
        forwarded = int((ranks / f"{name}-forwarded-rank{rank}.txt").read_text())
        assert forwarded == (1 if fits else passes) * items + PROBE, (rank, items)


@pytest.mark.parametrize("layer", LAYERS)
def test_dissect_layers_in_two_processes_equals_one(ranks, layer):
    got = _ranks_agree(ranks, f"layers.{layer}")
    _same_as(got, _load(ranks / f"layers.{layer}-one.npz"))  # one process: dissect_layers' one pass
    streamed = _load(ranks / f"layers.{layer}-streamed.npz")
    _same_as(got, streamed)
    np.testing.assert_array_equal(got["hist_counts"], streamed["hist_counts"])
    assert got["replayed"].tolist() == [int(got["passes"]) - 1] * WORLD


def test_dissect_layers_runs_each_ranks_model_once_per_item_for_all_layers(ranks):
    model, data, seg, kw = layers_scenario()
    for rank in range(WORLD):
        forwarded = int((ranks / f"layers-forwarded-rank{rank}.txt").read_text())
        assert forwarded == shard(len(data), kw["batch_size"], rank) + PROBE * len(LAYERS)


def test_two_processes_with_a_cache(ranks, tmp_path):
    got, again = _ranks_agree(ranks, "cached"), _ranks_agree(ranks, "cached-again")
    assert [int((ranks / f"cached-again-forwarded-rank{r}.txt").read_text()) for r in range(WORLD)] == [0] * WORLD
    for key in got:
        np.testing.assert_array_equal(got[key], again[key], err_msg=key)
    _same_as(got, _load(ranks / "cached-one.npz"))
    model, layer, data, seg, kw = scenarios(tmp_path / "cache")["cached"]
    entries = sorted(p.name for p in (ranks / "cache").iterdir())
    assert len(entries) == 1 and entries[0].startswith("dissection-")  # one result, written once by rank 0
    # the entry is the result every rank returned, and a one-process streamed run reads it back
    from_cache = dissect(model, layer, data, seg, **dict(kw, cache_dir=str(ranks / "cache"), max_store_bytes=1))
    for name in EXACT:
        np.testing.assert_array_equal(got[name], np.asarray(getattr(from_cache, name)), err_msg=name)
    assert from_cache.config["timings"]["world_size"] == WORLD


@pytest.mark.parametrize("scenario", ["killed", "killed-reading"])
def test_a_killed_rank_fails_the_others_clearly_and_leaves_no_cache(tmp_path, scenario):
    codes = _spawn(tmp_path, scenario, timeout=120)
    assert codes[1] == 7
    assert codes[0] == 0  # rank 0 caught the error (and wrote it down)
    message = (tmp_path / "error-rank0.txt").read_text()
    assert "rank 0 of 2" in message and "another rank has probably died" in message
    cache = tmp_path / "cache"
    assert not cache.exists() or not [p for p in cache.iterdir() if p.name.startswith("dissection-")]
