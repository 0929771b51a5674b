"""The :class:`Stat` protocol that every streaming statistic implements.

A statistic is fed data in batches with ``add`` and answers readouts at any time.
Every statistic can also

- ``state_dict()`` / ``load_state_dict(d)``: its whole state as plain numpy arrays
  (``.npz``-able, never pickled objects);
- ``save(path)`` / ``Stat.load(path)``: that state plus its configuration in one
  atomic ``.npz`` file;
- ``to(device)``: move its state (statistics live on the device of their data);
- ``merge(other)``: absorb the partial result of another worker, so that the
  result equals one stream holding both inputs;
- ``config()``: a JSON-able description used in cache fingerprints.

Subclasses list their tensor state in ``_state_names``; the generic
``state_dict``/``load_state_dict``/``to`` here handle such state (``None`` until
the first ``add``).  NaN policy (``nan="raise"`` or ``"skip"``) is shared too:
``"raise"`` raises a ``ValueError`` naming the units, ``"skip"`` ignores NaN values
and counts them per unit in ``.nan_count``.
"""
from __future__ import annotations

import json
import os
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch

from .._io import load_npz, save_npz

__all__ = ["Stat"]

S = TypeVar("S", bound="Stat")

_REGISTRY: dict[str, type["Stat"]] = {}
_CONFIG_KEY = "__config__"
_NAN_MODES = ("raise", "skip")


class Stat:
    """Base class of every streaming statistic (see the module docstring)."""

    _state_names: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        _REGISTRY[cls.__name__] = cls

    # -- to implement -------------------------------------------------------
    def add(self, x: torch.Tensor, **kw: Any) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def merge(self, other: "Stat") -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def config(self) -> dict:
        """JSON-able configuration (constructor arguments) plus the class name."""
        return {"type": type(self).__name__}

    # -- generic state handling ---------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """All state as numpy arrays; tensors not yet created are left out."""
        out = {}
        for name in self._state_names:
            value = getattr(self, name)
            if value is not None:
                out[name] = value.detach().cpu().numpy()
        return out

    def load_state_dict(self, d: dict[str, np.ndarray]) -> None:
        """Replace the state with ``d`` (as returned by :meth:`state_dict`)."""
        device = self.device
        for name in self._state_names:
            if name in d:
                setattr(self, name, torch.from_numpy(np.array(d[name])).to(device))
            else:
                setattr(self, name, None)

    @property
    def device(self) -> torch.device:
        """Device of the state (cpu until data or ``to`` says otherwise)."""
        return getattr(self, "_device", torch.device("cpu"))

    def to(self: S, device: str | torch.device) -> S:
        """Move the state to ``device`` and keep later state there; returns ``self``."""
        device = torch.device(device)
        for name in self._state_names:
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value.to(device))
        self._device = device
        return self

    def save(self, path: str | os.PathLike) -> None:
        """Atomically write config and state to a ``.npz`` file."""
        state = self.state_dict()
        if _CONFIG_KEY in state:
            raise ValueError(f"state name {_CONFIG_KEY!r} is reserved")
        save_npz(path, **state, **{_CONFIG_KEY: np.array(json.dumps(self.config(), sort_keys=True))})

    @classmethod
    def load(cls: type[S], path: str | os.PathLike) -> S:
        """Rebuild a statistic saved with :meth:`save` (``Stat.load`` picks the class).

        Raises
        ------
        FileNotFoundError
            No such file.
        ValueError
            The file is not a saved statistic, is damaged, or its arrays disagree with its
            configuration or with each other (the message names the file).
        TypeError
            It holds another kind of statistic than ``cls``.
        """
        d = load_npz(path)  # (ValueError naming the file when it is not a readable .npz)
        if _CONFIG_KEY not in d:
            raise ValueError(f"{path} is not a saved statistic (no {_CONFIG_KEY!r} entry)")
        try:
            config = json.loads(str(d.pop(_CONFIG_KEY)))
            if not isinstance(config, dict):
                raise ValueError(f"the configuration is a {type(config).__name__}, not a JSON object")
            stat = from_config(config)
        except (ValueError, TypeError, KeyError) as err:
            raise ValueError(f"{path}: unreadable statistic configuration ({err})") from None
        if not isinstance(stat, cls):
            raise TypeError(f"{path} holds a {type(stat).__name__}, not a {cls.__name__}")
        try:
            stat.load_state_dict(d)
            stat._check_state()
        except (ValueError, TypeError, KeyError, IndexError, RuntimeError) as err:
            raise ValueError(f"{path}: the saved state does not fit a {type(stat).__name__} ({err})") from None
        return stat

    def _check_state(self) -> None:
        """Raise ValueError when the loaded state's arrays disagree: by default every per-unit array
        (all but scalars and those named in ``_other_axes``) has the same first dimension."""
        sizes = {}
        for name in self._state_names:
            value = getattr(self, name)
            if value is not None and value.dim() >= 1 and name not in self._other_axes:
                sizes[name] = int(value.shape[0])
        if len(set(sizes.values())) > 1:
            raise ValueError(f"per-unit arrays of different lengths: {sizes}")

    #: state arrays whose first dimension is not the units (see :meth:`_check_state`)
    _other_axes: ClassVar[tuple[str, ...]] = ()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "type")
        return f"{type(self).__name__}({args})"

    # -- helpers for subclasses ----------------------------------------------
    def _check_merge(self, other: "Stat") -> None:
        if type(other) is not type(self):
            raise TypeError(f"cannot merge a {type(other).__name__} into a {type(self).__name__}")
        if other.config() != self.config():
            raise ValueError(f"cannot merge statistics with different configs: {self.config()} vs {other.config()}")

    def _place(self, x: torch.Tensor) -> torch.Tensor:
        """Adopt the device of the first data; later data is moved to the state's device."""
        if not hasattr(self, "_device"):
            self._device = x.device
        return x if x.device == self._device else x.to(self._device)


def from_config(config: dict) -> Stat:
    """Build an empty statistic from its :meth:`Stat.config`."""
    config = dict(config)
    name = config.pop("type", None)
    if name not in _REGISTRY:
        raise ValueError(f"unknown statistic type {name!r}; known: {sorted(_REGISTRY)}")
    return _REGISTRY[name](**config)


def check_nan_mode(nan: str) -> str:
    if nan not in _NAN_MODES:
        raise ValueError(f"nan must be one of {_NAN_MODES}, got {nan!r}")
    return nan


def as_rows(x: Any, num_units: int | None, what: str) -> torch.Tensor:
    """Validate ``x`` as ``(rows, units)`` (or ``(N, units, *spatial)`` -> rows) and return 2-D."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what}: expected a torch.Tensor of shape (rows, units), got {type(x).__name__}")
    if x.ndim < 2:
        raise ValueError(
            f"{what}: expected shape (rows, units) or (N, units, H, W), got {tuple(x.shape)}; "
            "reshape a single unit's values to (rows, 1)"
        )
    if not (x.dtype.is_floating_point or x.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)):
        raise TypeError(f"{what}: expected real numbers, got dtype {x.dtype}")
    if num_units is not None and x.shape[1] != num_units:
        raise ValueError(f"{what}: expected {num_units} units (dim 1), got shape {tuple(x.shape)}")
    if x.ndim > 2:
        x = x.movedim(1, -1).reshape(-1, x.shape[1])
    return x


def nan_units(isnan_per_unit: torch.Tensor) -> list[int]:
    return torch.nonzero(isnan_per_unit).flatten().tolist()


def raise_nan(units: list[int], what: str) -> None:
    shown = units[:20]
    more = f" (and {len(units) - 20} more)" if len(units) > 20 else ""
    raise ValueError(
        f"{what}: NaN values in units {shown}{more} (unit 0-based); "
        "clean the data or pass nan='skip' to skip and count them (.nan_count)"
    )
