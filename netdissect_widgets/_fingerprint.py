"""Stable fingerprints of configurations, tensors and models, for cache keys.

A fingerprint is the SHA-256 of a canonical byte encoding: JSON for plain values
(dict keys sorted), raw bytes plus dtype and shape for tensors and arrays. Two runs
with the same inputs get the same fingerprint; any change in a weight, a shape or
a setting gives a different one, so a cache is never reused silently.
"""
from __future__ import annotations

import functools
import hashlib
import inspect
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
    elif isinstance(part, dict):
        digest.update(f"dict:{len(part)}:".encode())
        for key in sorted(part, key=str):
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


def _callable_name(fn: Any) -> str:
    return f"callable:{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__qualname__)}"


def settings_of(value: Any, depth: int = 4) -> Any:
    """A fingerprintable form of a setting: plain values as they are; lists, tuples and dicts
    element by element (``depth`` levels deep); tensors and arrays (hashed by bytes); modules by
    :func:`model_fingerprint`; functions by their qualified name; anything else by its type name
    only (its contents are not covered)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, nn.Module):
        return ["module", model_fingerprint(value)]
    if depth > 0 and isinstance(value, (list, tuple)):
        return [type(value).__name__, [settings_of(v, depth - 1) for v in value]]
    if depth > 0 and isinstance(value, dict):
        return ["dict", [[str(k), settings_of(v, depth - 1)] for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))]]
    if isinstance(value, (torch.dtype, torch.device)):
        return str(value)
    if callable(value) and hasattr(value, "__qualname__"):
        return _callable_name(value)
    return f"object:{type(value).__module__}.{type(value).__qualname__}"


@functools.lru_cache(maxsize=256)
def _forward_source(cls: type) -> str:
    """The source of a module class's ``forward`` (its code path), or its qualified name when the
    source cannot be read."""
    fn = getattr(cls, "forward", None)
    try:
        return inspect.getsource(fn)
    except (OSError, TypeError):
        return _callable_name(fn)


def module_structure(model: nn.Module) -> list:
    """What a model computes besides its state dict, per submodule: its class (module, qualified
    name and the source of its ``forward``), ``extra_repr()`` (e.g. a layer's stride, an
    activation's settings) and its plain public attributes (numbers, strings, flags, functions,
    lists and dicts of these: e.g. ``self.act = F.gelu``)."""
    out = []
    for name, module in model.named_modules():
        cls = type(module)
        attrs = {k: settings_of(v) for k, v in vars(module).items()
                 if not k.startswith("_") and k != "training" and not isinstance(v, nn.Module)}
        out.append([name, f"{cls.__module__}.{cls.__qualname__}", _forward_source(cls), module.extra_repr(), attrs])
    return out


def model_fingerprint(model: nn.Module) -> str:
    """Fingerprint of what a model computes, as far as it can be read without running it.

    Covered: the class of every submodule and the source of its ``forward``, its settings
    (``extra_repr()`` and plain public attributes, :func:`module_structure`), every parameter and
    every buffer, persistent or not (names, shapes, dtypes and bytes).

    Not covered: code the forward calls outside the module classes (a helper function edited in
    place, a library upgraded), global state it reads, and attributes of types other than those
    :func:`settings_of` reads. For such models pass ``cache_key=`` to ``dissect`` (e.g. a version
    string of the model's code), or use another ``cache_dir``.
    """
    tensors = {f"param:{k}": v for k, v in model.named_parameters(remove_duplicate=False)}
    tensors.update({f"buffer:{k}": v for k, v in model.named_buffers(remove_duplicate=False)})
    return fingerprint("model-v2", type(model).__name__, module_structure(model),
                       {name: tensors[name] for name in sorted(tensors)})
