"""Backends: how a dissection's statistics are computed, one module each, chosen once per call.

>>> dissect(model, "conv5", data, segmenter, backend="tensor")   # doctest: +SKIP

* ``"tensor"`` (:class:`~.tensor.TensorBackend`): tensor operations on the model's
  device; the readable reference, and what accelerators run.
* ``"numba"`` (:class:`~.numba_cpu.NumbaBackend`): the same computation as compiled CPU
  loops (needs numba; models on the CPU).
* ``"auto"`` (default): numba for a model on the CPU when numba imports, else tensor
  (and tensor for ``upsample="paper"``, whose zero-blended border the loops do not prune for).

Both give bit-identical levels, IoUs, top images and thumbnails (tested against
brute force). A :class:`~.base.Backend` instance is accepted too (e.g. with other
buffer sizes). The interface is :class:`~.base.Backend`; the order statistics
they share are in :mod:`.._order`, which imports neither.
"""
from __future__ import annotations

from typing import Any

import torch

from .base import Backend
from .numba_cpu import NumbaBackend, available
from .tensor import TensorBackend

__all__ = ["Backend", "TensorBackend", "NumbaBackend", "BACKENDS", "choose_backend"]

#: the names ``dissect(..., backend=)`` takes
BACKENDS = ("auto", "tensor", "numba")


def choose_backend(backend: Any, device: torch.device, convention: str = "interpolate") -> Backend:
    """The backend for a model on ``device`` and the upsampling ``convention``: ``"auto"``, ``"tensor"``,
    ``"numba"`` or a :class:`Backend`.

    Raises
    ------
    ValueError
        An unknown name, or a backend that cannot run on ``device`` (numba: CPU only).
    ImportError
        ``"numba"`` without numba installed.
    """
    device = torch.device(device)
    if isinstance(backend, Backend):
        chosen = backend
    elif backend == "auto":
        fast = available() and NumbaBackend.supports(device, convention)
        return NumbaBackend() if fast else TensorBackend()
    elif backend == "tensor":
        chosen = TensorBackend()
    elif backend == "numba":
        chosen = NumbaBackend()
    else:
        raise ValueError(f"backend must be one of {BACKENDS} or a Backend instance, got {backend!r}")
    if not chosen.supports(device, convention):
        raise ValueError(f"backend {chosen.name!r} cannot compute for a model on {device} with upsample="
                         f"{convention!r}; use backend='auto' or 'tensor' (tensor operations on any device, "
                         f"either upsampling)")
    return chosen
