"""Feed a dataset through a function into statistics, with an exact, safe cache.

``tally(compute, dataset, stats, batch_size=...)`` iterates a
``torch.utils.data.DataLoader`` (built from the dataset, or the one given), calls
``compute(batch)`` and passes its outputs to the statistics' ``add`` (one output
per statistic; a tuple output is unpacked as positional arguments, e.g.
``(indicators, seg)`` for an :class:`IoUTally`).

With ``cache=path`` the file stores every statistic's state together with a
fingerprint of (the statistics' configs, the dataset length, the caller's
``key``):

- same fingerprint -> the states are loaded and ``compute`` is never called;
- different fingerprint -> recomputed and overwritten (never reused silently);
- unreadable / truncated file -> a warning, then recomputed.

Writes are atomic (temporary file + ``os.replace``), so an interrupted run
leaves the previous cache (or no file), never a corrupt one.
"""
from __future__ import annotations

import json
import os
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from .._batches import progress as progress_bar
from .._fingerprint import fingerprint
from .._io import check_writable, load_npz, save_npz
from .base import Stat

__all__ = ["tally"]

_FORMAT = "netdissect_widgets.tally/1"


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch


def _fingerprint(stats: Sequence[Stat], dataset: Any, key: Any) -> str:
    try:
        length = len(dataset)
    except TypeError:
        length = None
    return fingerprint(_FORMAT, [s.config() for s in stats], length, key)


def _try_load(path: str | os.PathLike, stats: Sequence[Stat], fp: str) -> bool:
    if not os.path.exists(path):
        return False
    try:
        data = load_npz(path)
        if str(data.get("__fingerprint__", "")) != fp:
            return False
        states: list[dict[str, np.ndarray]] = [{} for _ in stats]
        for name, value in data.items():
            if name.startswith("s") and "." in name:
                i, field = name[1:].split(".", 1)
                states[int(i)][field] = value
        for stat, state in zip(stats, states):
            stat.load_state_dict(state)
        return True
    except (OSError, ValueError, KeyError, EOFError, IndexError, zipfile.BadZipFile, json.JSONDecodeError) as err:
        warnings.warn(f"tally cache {os.fspath(path)!r} is unreadable ({type(err).__name__}: {err}); recomputing",
                      RuntimeWarning, stacklevel=3)
        return False


def _save(path: str | os.PathLike, stats: Sequence[Stat], fp: str) -> None:
    arrays: dict[str, np.ndarray] = {"__fingerprint__": np.array(fp)}
    for i, stat in enumerate(stats):
        for field, value in stat.state_dict().items():
            arrays[f"s{i}.{field}"] = value
    save_npz(path, **arrays)


def tally(
    compute: Callable[[Any], Any],
    dataset: Any,
    stats: Stat | Sequence[Stat],
    *,
    batch_size: int = 32,
    num_workers: int = 0,
    cache: str | os.PathLike | None = None,
    key: Any = None,
    progress: bool = True,
    device: str | torch.device | None = None,
) -> Stat | Sequence[Stat]:
    """Run ``compute`` over ``dataset`` in batches and accumulate ``stats``.

    Parameters
    ----------
    compute : callable
        ``compute(batch)`` returns one output per statistic (a tuple/list), or a
        single output for a single statistic.  An output that is itself a tuple
        is passed as positional arguments to ``add``.
    dataset : Dataset or DataLoader
        A map-style/iterable dataset (batched here) or a ready ``DataLoader``.
    stats : Stat or sequence of Stat
        Fresh statistics to fill (their state is replaced from a matching cache).
    batch_size, num_workers : int
        DataLoader settings (ignored when a DataLoader is given).
    cache : path, optional
        ``.npz`` cache file (see the module docstring).
    key : JSON-able, optional
        Identifies everything the statistics depend on that their configs do not
        (model fingerprint, layer, data seed, ...).  Part of the cache fingerprint.
    progress : bool
        Show a ``tqdm.auto`` progress bar.
    device : device, optional
        Move each batch's tensors here before ``compute``.

    Returns
    -------
    The ``stats`` argument, filled.
    """
    single = isinstance(stats, Stat)
    stat_list = [stats] if single else list(stats)
    if not stat_list or not all(isinstance(s, Stat) for s in stat_list):
        raise TypeError("stats must be a Stat or a non-empty sequence of Stat objects")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    fp = _fingerprint(stat_list, dataset, key)
    if cache is not None:
        check_writable(Path(cache).parent, "the folder of the tally cache")  # before computing, not after
        if _try_load(cache, stat_list, fp):
            return stats
    if isinstance(dataset, DataLoader):
        loader = dataset
    else:
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    dev = None if device is None else torch.device(device)
    for batch in progress_bar(loader, progress, "tally"):
        if dev is not None:
            batch = _to_device(batch, dev)
        out = compute(batch)
        outs = [out] if single else out
        if not isinstance(outs, (list, tuple)) or len(outs) != len(stat_list):
            raise ValueError(f"compute(batch) must return {len(stat_list)} outputs (one per statistic), "
                             f"got {type(out).__name__}" + (f" of length {len(out)}" if isinstance(out, (list, tuple)) else ""))
        for stat, value in zip(stat_list, outs):
            if isinstance(value, tuple):
                stat.add(*value)
            else:
                stat.add(value)
    if cache is not None:
        _save(cache, stat_list, fp)
    return stats
