"""The dissection cache and the saved files never lie: one test per fault class of issue #13.

Stale keys (model structure, buffers, segmenter settings), corrupt entries (recomputed with a
warning naming the file), two real processes writing one entry, leftovers of a killed run,
an interrupted save over an old save, the umask, damaged files given to the loaders, and
failures that must come before any work.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from netdissect_widgets.dissection import Dissection, dissect
from tests.test_dissect_faithfulness import DataSegmenter, KnownSegData, Planted

ROOT = Path(__file__).resolve().parents[1]
KW = dict(progress=False, k=5, n_show=3, batch_size=20)


@pytest.fixture(scope="module")
def data():
    return KnownSegData(n=60)


class Counting(Planted):
    """Planted, counting its forward calls; ``act`` is applied to the units (an activation function)."""

    calls = 0

    def __init__(self, act=None) -> None:
        super().__init__()
        self.act = act
        self.register_buffer("shift", torch.zeros(1), persistent=False)

    def forward(self, x):
        Counting.calls += 1
        out = super().forward(x)
        return out

    def extra(self, a):  # (not used by dissect; keeps the class's forward source fixed)
        return a


class Act(nn.Module):
    """A layer after the units whose behaviour depends on a plain attribute and a non-persistent buffer."""

    def __init__(self, fn=torch.relu) -> None:
        super().__init__()
        self.fn = fn
        self.register_buffer("shift", torch.zeros(1), persistent=False)

    def forward(self, a):
        return self.fn(a + self.shift)


def counted(model_fn):
    Counting.calls = 0
    return model_fn


def planted_with(act: nn.Module) -> Counting:
    model = Counting()
    model.units = act
    return model


def run(model, data, tmp_path, segmenter=None, **kw):
    return dissect(model, "units", data, segmenter or DataSegmenter(), cache_dir=tmp_path, **{**KW, **kw})


# ----------------------------------------------------------------------------- stale keys


@pytest.mark.parametrize("change", ["activation module", "activation function attribute", "non-persistent buffer"])
def test_a_model_change_without_parameters_recomputes(data, tmp_path, change):
    Counting.calls = 0
    first = run(planted_with(Act()), data, tmp_path)
    assert Counting.calls == 3
    run(planted_with(Act()), data, tmp_path)
    assert Counting.calls == 3, "an equal model must hit the cache"
    if change == "activation module":
        other = planted_with(nn.Sequential(Act(), nn.Tanh()))
    elif change == "activation function attribute":
        other = planted_with(Act(torch.sigmoid))
    else:
        other = planted_with(Act())
        other.units.shift.fill_(-0.5)
    second = run(other, data, tmp_path)
    assert Counting.calls == 6, f"{change}: the cache must not be reused"
    assert second.model_fingerprint != first.model_fingerprint
    assert not np.array_equal(second.levels.numpy(), first.levels.numpy())


class SettingSegmenter(DataSegmenter):
    """Its labels depend on a setting held in a dict."""

    def __init__(self, drop: int) -> None:
        self.options = {"drop": {"concept": drop}}

    def segment_batch(self, batch):
        seg = batch[1].clone()
        seg[seg == self.options["drop"]["concept"]] = 0
        return seg


def test_a_segmenter_setting_in_a_dict_recomputes(data, tmp_path):
    Counting.calls = 0
    a = run(Counting(), data, tmp_path, SettingSegmenter(drop=5))
    b = run(Counting(), data, tmp_path, SettingSegmenter(drop=1))
    assert Counting.calls == 6
    assert a.labels[0].concept == "dog" and b.labels[0].concept != "dog"


def test_cache_key_is_part_of_the_key(data, tmp_path):
    Counting.calls = 0
    run(Counting(), data, tmp_path, cache_key="v1")
    run(Counting(), data, tmp_path, cache_key="v1")
    assert Counting.calls == 3
    run(Counting(), data, tmp_path, cache_key={"code": "v2"})
    assert Counting.calls == 6


# ----------------------------------------------------------------------------- corrupt entries


def _entry(tmp_path: Path, kind: str) -> Path:
    (entry,) = [p for p in tmp_path.iterdir() if p.name.startswith(kind + "-")]
    return entry


def _truncate(path: Path, keep: float) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)])


def _wrong_shape_npz(path: Path) -> None:
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["iou"] = arrays["iou"][:, :-1]
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _json_list(path: Path) -> None:
    path.write_text(json.dumps([1, 2, 3]))


def _json_wrong_types(path: Path) -> None:
    meta = json.loads(path.read_text())
    meta["concepts"] = "dog"
    path.write_text(json.dumps(meta))


RESULT_FAULTS = {
    "truncated arrays.npz": ("arrays.npz", lambda p: _truncate(p, 0.5)),
    "empty arrays.npz": ("arrays.npz", lambda p: p.write_bytes(b"")),
    "json of the wrong shape": ("dissection.json", _json_list),
    "json with wrong types": ("dissection.json", _json_wrong_types),
    "arrays whose shapes disagree": ("arrays.npz", _wrong_shape_npz),
}


@pytest.mark.parametrize("fault", sorted(RESULT_FAULTS))
def test_a_corrupt_stored_result_is_recomputed_with_a_warning_naming_it(data, tmp_path, fault):
    Counting.calls = 0
    first = run(Counting(), data, tmp_path)
    name, damage = RESULT_FAULTS[fault]
    damage(_entry(tmp_path, "dissection") / name)
    with pytest.warns(RuntimeWarning, match="dissection-") as record:
        again = run(Counting(), data, tmp_path)
    assert any(str(_entry(tmp_path, "dissection")) in str(w.message) for w in record)
    assert Counting.calls == 3, "the stored pass is still good: no model call"
    np.testing.assert_array_equal(again.iou.numpy(), first.iou.numpy())
    # the bad entry was replaced: the next run loads it silently
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run(Counting(), data, tmp_path)


def _short_npy(path: Path) -> None:
    _truncate(path, 0.9)


def _smaller_maps(path: Path) -> None:
    arr = np.load(path)
    with open(path, "wb") as f:
        np.save(f, arr[:, :, :-2])  # a valid .npy, but smaller maps than the metadata says


def _bad_ids(path: Path) -> None:
    arr = np.load(path)
    arr[0, 0, 0, 0] = 200  # a concept id the segmenter does not have (the loops would index out of bounds)
    with open(path, "wb") as f:
        np.save(f, arr)


def _meta_list(path: Path) -> None:
    path.write_text("[]")


PASS_FAULTS = {
    "short acts.npy": ("acts.npy", _short_npy),
    "seg.npy with smaller maps than its metadata": ("seg.npy", _smaller_maps),
    "seg.npy with ids out of range": ("seg.npy", _bad_ids),
    "meta.json of the wrong shape": ("meta.json", _meta_list),
    "missing thumbs.npy": ("thumbs.npy", lambda p: p.unlink()),
}


@pytest.mark.parametrize("fault", sorted(PASS_FAULTS))
def test_a_corrupt_stored_pass_is_recomputed_with_a_warning_naming_it(data, tmp_path, fault):
    Counting.calls = 0
    first = run(Counting(), data, tmp_path)
    name, damage = PASS_FAULTS[fault]
    damage(_entry(tmp_path, "pass") / name)
    with pytest.warns(RuntimeWarning, match="pass-"):
        again = run(Counting(), data, tmp_path, level=0.9)  # another level: the pass is read
    assert Counting.calls == 6, "the pass is recomputed"
    lower = dissect(Counting(), "units", data, DataSegmenter(), level=0.9, **KW)
    np.testing.assert_array_equal(again.iou.numpy(), lower.iou.numpy())
    assert first.fingerprint != again.fingerprint


# ----------------------------------------------------------------------------- processes

WRITER = """
import sys, time, torch
sys.path.insert(0, {root!r})
from netdissect_widgets.dissection import dissect
from tests.test_dissect_faithfulness import DataSegmenter, KnownSegData, Planted

class Slow(KnownSegData):
    def __getitem__(self, i):
        time.sleep({sleep})
        return super().__getitem__(i)

d = dissect(Planted(), "units", Slow(n=60), DataSegmenter(), cache_dir={cache!r}, progress=False, k=5,
            n_show=3, batch_size=20)
print("levels", d.levels.tolist(), flush=True)
"""


def _writer(cache: Path, sleep: float) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-c", WRITER.format(root=str(ROOT), cache=str(cache), sleep=sleep)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_processes_writing_the_same_entry_both_succeed(tmp_path):
    procs = [_writer(tmp_path, 0.02) for _ in range(2)]  # (passes of ~1 s each: they overlap)
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    assert outs[0][0] == outs[1][0] and "levels" in outs[0][0]
    names = sorted(p.name.split("-")[0] for p in tmp_path.iterdir())
    assert names == ["dissection", "pass"], names  # one entry each, no temporary folder left
    d = dissect(Planted(), "units", KnownSegData(n=60), DataSegmenter(), cache_dir=tmp_path, **KW)
    assert d.labels[0].concept == "dog"


def test_leftovers_of_a_killed_run_are_cleaned_at_the_next_run(tmp_path):
    proc = _writer(tmp_path, 0.2)  # about 12 s of pass
    deadline = time.time() + 120
    while time.time() < deadline and not any(p.name.endswith(".tmp") for p in tmp_path.iterdir()):
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    left = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert left, "the killed run should have left its work folder"
    d = dissect(Planted(), "units", KnownSegData(n=60), DataSegmenter(), cache_dir=tmp_path, **KW)
    assert d.labels[0].concept == "dog"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# ----------------------------------------------------------------------------- saves and files


def test_an_interrupted_save_over_an_old_save_leaves_the_old_one(data, tmp_path, monkeypatch):
    from netdissect_widgets.dissection import result as result_module

    old = dissect(Planted(), "units", data, DataSegmenter(), **KW)
    new = dissect(Planted(), "units", data, DataSegmenter(), level=0.9, **KW)
    old.save(tmp_path / "d")

    def interrupted(path, obj):
        raise KeyboardInterrupt  # after arrays.npz was written, before dissection.json

    monkeypatch.setattr(result_module, "save_json", interrupted)
    with pytest.raises(KeyboardInterrupt):
        new.save(tmp_path / "d")
    monkeypatch.undo()
    back = Dissection.load(tmp_path / "d")
    assert back.fingerprint == old.fingerprint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"], "no temporary folder left"
    new.save(tmp_path / "d")  # a completed save replaces it as a whole
    assert Dissection.load(tmp_path / "d").fingerprint == new.fingerprint
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["arrays.npz", "dissection.json"]


UMASK = """
import os, sys
sys.path.insert(0, {root!r})
os.umask(0o{umask})
from netdissect_widgets._io import save_json, save_npz
save_json({folder!r} + "/a.json", {{"x": 1}})
save_npz({folder!r} + "/b.npz", x=[1, 2])
print(oct(os.stat({folder!r} + "/a.json").st_mode & 0o777), oct(os.stat({folder!r} + "/b.npz").st_mode & 0o777))
"""


@pytest.mark.parametrize("umask, mode", [("077", "0o600"), ("022", "0o644"), ("002", "0o664")])
def test_written_files_respect_the_umask(tmp_path, umask, mode):
    script = UMASK.format(root=str(ROOT), umask=umask, folder=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == [mode, mode]


def test_writes_are_synced_before_they_are_renamed(tmp_path, monkeypatch):
    from netdissect_widgets import _io

    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(_io.os, "fsync", lambda fd: events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
                        or real_fsync(fd))
    monkeypatch.setattr(_io.os, "replace", lambda a, b: events.append(("replace", str(a))) or real_replace(a, b))
    _io.save_json(tmp_path / "x.json", {"a": 1})
    kinds = [e[0] for e in events]
    tmp = [e[1] for e in events if e[0] == "replace"][0]
    assert kinds.index("replace") > kinds.index("fsync") and ("fsync", tmp) in events
    assert events[-1] == ("fsync", str(tmp_path)), "the folder is synced after the rename"


# ----------------------------------------------------------------------------- loaders


def _crafted_npz(path: Path, shape: tuple) -> None:
    """A .npz whose array header claims ``shape`` (float64) but holds 8 bytes."""
    header = {"descr": "<f8", "fortran_order": False, "shape": shape}
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("levels.npy", np.lib.format.magic(1, 0) + buf.getvalue()[8:] + b"\0" * 8)


def test_dissection_load_refuses_a_header_asking_for_a_huge_allocation(tmp_path, data):
    d = dissect(Planted(), "units", data, DataSegmenter(), **KW)
    d.save(tmp_path / "d")
    _crafted_npz(tmp_path / "d" / "arrays.npz", (1 << 40,))
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"arrays\.npz.*claims"):
        Dissection.load(tmp_path / "d")
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize("fault", sorted(RESULT_FAULTS))
def test_dissection_load_names_the_file_on_damage(tmp_path, data, fault):
    d = dissect(Planted(), "units", data, DataSegmenter(), **KW)
    d.save(tmp_path / "d")
    name, damage = RESULT_FAULTS[fault]
    damage(tmp_path / "d" / name)
    with pytest.raises(ValueError, match=str(tmp_path / "d")):
        Dissection.load(tmp_path / "d")


def test_stat_load_names_the_file_and_refuses_disagreeing_arrays(tmp_path):
    from netdissect_widgets.stats import IoUTally, Stat, TopK

    top = TopK(3)
    top.add(torch.randn(10, 4))
    top.save(tmp_path / "top.npz")
    _truncate(tmp_path / "top.npz", 0.5)
    with pytest.raises(ValueError, match="top.npz"):
        Stat.load(tmp_path / "top.npz")
    tally = IoUTally(num_units=2, num_concepts=3)
    tally.save(tmp_path / "iou.npz")
    with np.load(tmp_path / "iou.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["unit_count"] = np.zeros(5, np.int64)
    np.savez(tmp_path / "iou.npz", **arrays)
    with pytest.raises(ValueError, match="iou.npz.*unit_count"):
        Stat.load(tmp_path / "iou.npz")
    _crafted_npz(tmp_path / "huge.npz", (1 << 40,))
    with pytest.raises(ValueError, match="huge.npz.*claims"):
        Stat.load(tmp_path / "huge.npz")


def test_toy_world_loader_names_the_file_on_a_bad_manifest_or_state(tmp_path):
    from netdissect_widgets import toyworld
    from netdissect_widgets._io import sha256_file
    from netdissect_widgets.toyworld import loaders

    src = loaders.WEIGHTS_DIR
    if not (src / "classifier.pt").is_file():
        pytest.skip("toy classifier weights not available")
    manifest = json.loads((src / loaders.MANIFEST).read_text())
    torch.save([torch.zeros(3)], tmp_path / "classifier.pt")  # not a state dict
    manifest["models"]["classifier"]["sha256"] = sha256_file(tmp_path / "classifier.pt")
    (tmp_path / loaders.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="classifier.pt.*state dict"):
        toyworld.load_classifier(weights_dir=tmp_path)
    (tmp_path / loaders.MANIFEST).write_text(json.dumps({"models": {"classifier": {"sha256": 3, "config": []}}}))
    with pytest.raises(ValueError, match="manifest.json"):
        toyworld.load_classifier(weights_dir=tmp_path)


# ----------------------------------------------------------------------------- failures before any work


def test_dissect_with_an_unusable_cache_dir_fails_before_the_model_runs(tmp_path, data):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    Counting.calls = 0
    with pytest.raises(OSError, match="cache_dir"):
        dissect(Counting(), "units", data, DataSegmenter(), cache_dir=blocker / "cache", **KW)
    assert Counting.calls == 0


def test_tally_with_an_unusable_cache_fails_before_computing(tmp_path):
    from netdissect_widgets.stats import Mean, tally

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    calls = []
    with pytest.raises(OSError, match="tally cache"):
        tally(lambda b: calls.append(1) or b[0], torch.utils.data.TensorDataset(torch.randn(8, 3)), Mean(),
              cache=blocker / "sub" / "t.npz", progress=False, batch_size=4)
    assert calls == []
