"""Stable fingerprints of configurations, tensors and models, for cache keys.

A fingerprint is the SHA-256 of a canonical byte encoding: JSON for plain values
(dict keys sorted), raw bytes plus dtype and shape for tensors and arrays. Two runs
with the same inputs get the same fingerprint; any change in a weight, a shape or
a setting gives a different one, so a cache is never reused silently.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import torch
from torch import nn


def _update(digest: "hashlib._Hash", part: Any) -> None:
    if isinstance(part, torch.Tensor):
        part = part.detach().cpu().contiguous()
        digest.update(f"tensor:{part.dtype}:{tuple(part.shape)}:".encode())
        digest.update(part.reshape(-1).view(torch.uint8).numpy().tobytes() if part.numel() else b"")
    elif isinstance(part, np.ndarray):
        arr = np.ascontiguousarray(part)
        digest.update(f"array:{arr.dtype.str}:{arr.shape}:".encode())
        digest.update(arr.tobytes())
    elif isinstance(part, (list, tuple)):
        digest.update(f"seq:{len(part)}:".encode())
        for item in part:
            _update(digest, item)
    elif isinstance(part, dict) and any(isinstance(v, (torch.Tensor, np.ndarray)) for v in part.values()):
        for key in sorted(part):
            digest.update(f"key:{key}:".encode())
            _update(digest, part[key])
    else:
        digest.update(json.dumps(part, sort_keys=True, default=repr).encode())
    digest.update(b";")


def fingerprint(*parts: Any) -> str:
    """SHA-256 hex digest of ``parts`` (JSON-able values, tensors, arrays, nested lists/dicts)."""
    digest = hashlib.sha256()
    for part in parts:
        _update(digest, part)
    return digest.hexdigest()


def model_fingerprint(model: nn.Module) -> str:
    """Fingerprint of a model's class name and state dict (names, shapes, dtypes and bytes)."""
    state = model.state_dict()
    return fingerprint(type(model).__name__, {name: state[name] for name in sorted(state)})
