"""The dissection cache: a stored pass and stored results, written atomically.

``pass-<key>/`` holds the pass's arrays as ``.npy`` files (read back memory-mapped)
and ``meta.json`` with the key; ``dissection-<key>/`` is a saved
:class:`Dissection`. Both are written into a temporary folder in the cache and
renamed into place, so an interrupted run leaves no partial entry; an entry
whose key or version differs is ignored (recomputed and overwritten).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .._io import load_json, save_json
from .result import Dissection

PASS_VERSION = 4
PASS_ARRAYS = ("acts", "seg", "maxes", "mins", "thumbs", "thumb_index")


def commit_pass(stored: dict, work: Path, final: Path, key: str) -> None:
    for name in PASS_ARRAYS:
        arr = stored[name]
        if isinstance(arr, np.memmap):
            arr.flush()
        else:
            np.save(work / f"{name}.npy", arr, allow_pickle=False)
    save_json(work / "meta.json", {"fingerprint": key, "version": PASS_VERSION,
                                   "feature_size": stored["feature_size"], "seg_size": stored["seg_size"]})
    _rename_dir(work, final)


def _rename_dir(work: Path, final: Path) -> None:
    if final.exists():
        shutil.rmtree(final, ignore_errors=True)
    try:
        os.replace(work, final)
    except OSError:
        shutil.rmtree(work, ignore_errors=True)  # another run committed the same key meanwhile


def load_pass(folder: Path, key: str) -> dict | None:
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        return None
    try:
        meta = load_json(meta_path)
        if meta.get("fingerprint") != key or meta.get("version") != PASS_VERSION:
            return None
        out = {name: np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False)
               for name in PASS_ARRAYS}
    except (OSError, ValueError):
        return None
    out["feature_size"], out["seg_size"] = meta["feature_size"], meta["seg_size"]
    return out


def load_result(folder: Path, key: str) -> Dissection | None:
    if not (folder / "dissection.json").is_file():
        return None
    try:
        d = Dissection.load(folder)
    except (OSError, ValueError, KeyError):
        return None
    return d if d.fingerprint == key else None


def save_result(result: Dissection, final: Path) -> None:
    work = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        result.save(work)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    _rename_dir(work, final)
