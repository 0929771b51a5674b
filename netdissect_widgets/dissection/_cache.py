"""The dissection cache: stored passes and results that are checked before they are trusted.

Entries (in ``cache_dir``):

* ``pass-<key>/``: the model pass's arrays as ``.npy`` files (read back memory-mapped)
  and ``meta.json`` (its key, version, and the shape and dtype of every array);
* ``dissection-<key>/``: a saved :class:`Dissection` (``Dissection.save``).

The contract:

* **Keys** cover every input that changes the result (see ``dissect``'s ``cache_dir``
  and ``cache_key``); an entry whose key or version differs is never used.
* **Writes** are write-once: an entry is written and synced in a temporary folder
  of the cache (:func:`netdissect_widgets._io.temp_name`: host, process) and renamed
  into place. Two processes computing the same entry both succeed: the first rename
  wins, the other's folder is dropped and its result (equal) returned. An existing
  entry that fails its checks is swapped out atomically.
* **Reads** validate before use: the JSON's types, every array's header (shape,
  dtype) against the metadata and the file's size, the index ranges the compiled
  loops rely on (segmentation ids, thumbnail indices). Anything else is reported
  with a warning naming the file and recomputed. An entry that vanishes while it is
  read (replaced by another process) is read again.
* **Leftovers** of processes killed mid-write (``kill -9``) are removed at the next
  run (:func:`netdissect_widgets._io.clean_stale`).
"""
from __future__ import annotations

import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .._io import fsync_path, load_json, read_npy_header, replace_dir, save_json, temp_dir
from .result import Dissection

__all__ = ["PASS_VERSION", "PASS_ARRAYS", "commit_pass", "load_pass", "load_result", "save_result", "work_dir"]

PASS_VERSION = 5
PASS_ARRAYS = ("acts", "seg", "maxes", "mins", "thumbs", "thumb_index")
#: how often a read is retried when the entry changes under it (another process replacing it)
READ_TRIES = 3


class BadEntry(ValueError):
    """A cache entry that is there but fails its checks."""


def work_dir(cache: Path, name: str) -> Path:
    """A fresh temporary folder in the cache for the entry ``name``."""
    return temp_dir(cache, name)


def commit_pass(stored: dict, work: Path, final: Path, key: str, n_concepts: int) -> None:
    """Write the pass ``stored`` into ``work`` (some arrays may already be memory-mapped files there),
    with its metadata last, and move it to ``final`` (write-once: see the module docstring)."""
    arrays = {}
    for name in PASS_ARRAYS:
        arr = stored[name]
        path = work / f"{name}.npy"
        if isinstance(arr, np.memmap) and Path(arr.filename).parent.resolve() == work.resolve():
            arr.flush()  # (a memory-mapped file of this entry's folder: renamed, not copied)
            if Path(arr.filename).resolve() != path.resolve():
                os.replace(arr.filename, path)
        else:  # (in memory, or another layer's file: the segmentation is shared by the layers of one pass)
            with open(path, "wb") as f:
                np.save(f, np.ascontiguousarray(arr), allow_pickle=False)
        arrays[name] = {"shape": list(arr.shape), "dtype": np.dtype(arr.dtype).str}
    for leftover in work.iterdir():  # (e.g. the float16 activations of a pass that switched to float32)
        if leftover.name not in {f"{n}.npy" for n in PASS_ARRAYS}:
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
    save_json(work / "meta.json", {"fingerprint": key, "version": PASS_VERSION, "arrays": arrays,
                                   "feature_size": stored["feature_size"], "seg_size": stored["seg_size"],
                                   "store_dtype": stored["store_dtype"], "n_concepts": n_concepts})
    _commit(work, final, lambda: _read_pass(final, key))


def _commit(work: Path, final: Path, check) -> None:
    """Move ``work`` to ``final`` unless a valid entry is there already (then drop ``work``)."""
    for file in work.iterdir():
        fsync_path(file)
    try:
        os.rename(work, final)
        fsync_path(final.parent)
        return
    except OSError:
        if not final.exists():
            shutil.rmtree(work, ignore_errors=True)
            raise
    try:
        check()  # another process wrote the same entry: theirs is as good as ours
        shutil.rmtree(work, ignore_errors=True)
    except (BadEntry, OSError, ValueError):
        replace_dir(work, final)  # a bad entry: swapped out atomically


def _read_pass(folder: Path, key: str) -> dict:
    """The stored pass in ``folder``, checked (:class:`BadEntry` naming the file if anything is wrong)."""
    meta_path = folder / "meta.json"
    try:
        meta = load_json(meta_path)
    except ValueError as err:
        raise BadEntry(str(err)) from None
    if not isinstance(meta, dict):
        raise BadEntry(f"{meta_path}: expected a JSON object, got {type(meta).__name__}")
    if meta.get("fingerprint") != key or meta.get("version") != PASS_VERSION:
        raise BadEntry(f"{meta_path}: another key or version")
    arrays = meta.get("arrays")
    try:
        fs, ss = [int(v) for v in meta["feature_size"]], [int(v) for v in meta["seg_size"]]
        n_concepts = int(meta["n_concepts"])
        specs = {name: (tuple(int(v) for v in arrays[name]["shape"]), np.dtype(arrays[name]["dtype"]))
                 for name in PASS_ARRAYS}
    except (KeyError, TypeError, ValueError) as err:
        raise BadEntry(f"{meta_path}: ill-formed metadata ({type(err).__name__}: {err})") from None
    n, units = specs["maxes"][0][:2] if len(specs["maxes"][0]) == 2 else (-1, -1)
    expect = {
        "acts": ((n, units, *fs), None), "seg": (None, None), "maxes": ((n, units), np.float32),
        "mins": ((n, units), np.float32), "thumb_index": (None, np.int64), "thumbs": (None, np.uint8),
    }
    acts_dtype = specs["acts"][1]
    if acts_dtype not in (np.dtype(np.float16), np.dtype(np.float32)) or acts_dtype.name != meta.get("store_dtype"):
        raise BadEntry(f"{meta_path}: activations stored as {acts_dtype}, metadata says {meta.get('store_dtype')!r}")
    seg_shape = specs["seg"][0]
    if len(seg_shape) != 4 or seg_shape[0] != n or list(seg_shape[2:]) != ss or specs["seg"][1].kind not in "iu":
        raise BadEntry(f"{meta_path}: segmentation {seg_shape} {specs['seg'][1]} does not fit {n} items of {ss}")
    m = specs["thumb_index"][0]
    if len(m) != 1 or specs["thumbs"][0][:1] != m or len(specs["thumbs"][0]) != 4:
        raise BadEntry(f"{meta_path}: thumbnails {specs['thumbs'][0]} and their indices {m} disagree")
    out: dict[str, Any] = {}
    for name in PASS_ARRAYS:
        shape, dtype = specs[name]
        want_shape, want_dtype = expect[name]
        if (want_shape is not None and shape != want_shape) or (want_dtype is not None and dtype != want_dtype):
            raise BadEntry(f"{meta_path}: {name} is {shape} {dtype}, expected {want_shape} {want_dtype}")
        out[name] = _open_npy(folder / f"{name}.npy", shape, dtype)
    seg = out["seg"]
    if seg.size and (int(seg.min()) < 0 or int(seg.max()) >= n_concepts):
        raise BadEntry(f"{folder / 'seg.npy'}: concept ids outside 0..{n_concepts - 1}")
    index = out["thumb_index"]
    if index.size and (int(index.min()) < 0 or int(index.max()) >= n or (np.diff(index) <= 0).any()):
        raise BadEntry(f"{folder / 'thumb_index.npy'}: thumbnail indices must increase within 0..{n - 1}")
    out.update(feature_size=fs, seg_size=ss, store_dtype=acts_dtype.name)
    return out


def _open_npy(path: Path, shape: tuple, dtype: np.dtype) -> np.ndarray:
    """``path`` memory-mapped, after checking its header against ``shape``/``dtype`` and its size."""
    with open(path, "rb") as f:
        got_shape, fortran, got_dtype, nbytes = read_npy_header(f, str(path))
        offset = f.tell()
    if got_shape != shape or got_dtype != dtype or fortran:
        raise BadEntry(f"{path}: holds {got_shape} {got_dtype}, metadata says {shape} {dtype}")
    if os.path.getsize(path) < offset + nbytes:
        raise BadEntry(f"{path}: truncated ({os.path.getsize(path) - offset} of {nbytes} data bytes)")
    if nbytes == 0:
        return np.zeros(shape, dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)


def load_pass(folder: Path, key: str) -> dict | None:
    """The stored pass, or None when there is none (or a bad one: recomputed, with a warning)."""
    return _load(folder, "meta.json", lambda: _read_pass(folder, key), "stored pass")


def load_result(folder: Path, key: str) -> Dissection | None:
    """The stored result, or None when there is none (or a bad one: recomputed, with a warning)."""

    def read() -> Dissection:
        try:
            d = Dissection.load(folder)
        except (ValueError, KeyError, TypeError, IndexError) as err:
            raise BadEntry(str(err)) from None
        if d.fingerprint != key:
            raise BadEntry(f"{folder}: another key")
        return d

    return _load(folder, "dissection.json", read, "stored dissection")


def _load(folder: Path, marker: str, read, what: str):
    err: Exception | None = None
    for attempt in range(READ_TRIES):
        if not (folder / marker).is_file():
            return None
        try:
            return read()
        except FileNotFoundError as missing:  # replaced while read (another process): read the new one
            err = missing
            time.sleep(0.05 * (attempt + 1))
        except (BadEntry, OSError, ValueError) as bad:
            err = bad
            break
    if err is not None and "another key" not in str(err):
        warnings.warn(f"dissect: the {what} in {folder} is unusable ({err}); recomputing it",
                      RuntimeWarning, stacklevel=4)
    return None


def save_result(result: Dissection, final: Path) -> None:
    """Store ``result`` as the entry ``final`` (write-once, see the module docstring)."""
    work = temp_dir(final.parent, final.name)
    try:
        result.save(work / "d")
        inner = work / "d"
        for file in inner.iterdir():
            fsync_path(file)
        _commit(inner, final, lambda: load_result_strict(final, result.fingerprint))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def load_result_strict(folder: Path, key: str) -> Dissection:
    d = Dissection.load(folder)
    if d.fingerprint != key:
        raise BadEntry(f"{folder}: another key")
    return d
