"""Real models from local weight files, wrapped to take images in [-1, 1].

Everything in this package passes images as float tensors ``(N, 3, H, W)`` with
values in [-1, 1]. Models trained on ImageNet expect something else: pixels in
[0, 1], then ``(x - mean) / std`` per channel. :class:`InputNormalization` does
that conversion in front of any model, and :func:`load_torchvision_model` builds a
torchvision architecture, loads its weights from a **local** file (nothing is ever
downloaded), checks the file's SHA-256 if you give one, and returns it wrapped::

    from netdissect_widgets.models import load_torchvision_model
    model = load_torchvision_model("resnet18", "weights/resnet18.pth",
                                   sha256="f37072fd...")      # optional check
    model.layer4                    # the layers keep the names you know
    logits = model(images)          # images in [-1, 1]

Layer names stay the original ones (``layer4``, ``features.28``): the wrapper
adopts the wrapped model's children as its own instead of nesting the model
under a ``model.`` prefix, so ``layer_names(model)`` and ``dissect(model,
"layer4", ...)`` read like the torchvision documentation.

Weights are read with ``torch.load(..., weights_only=True)`` (no pickled code):
save them with ``torch.save(model.state_dict(), path)``, not ``torch.save(model)``.

torchvision is imported only inside the functions that need it, so the rest of
the package works with torch alone.
"""
from __future__ import annotations

import inspect
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ._device import module_device
from ._io import sha256_file

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "InputNormalization",
    "normalize_images",
    "load_state_dict_checked",
    "load_torchvision_model",
]

#: Per-channel mean of ImageNet pixels in [0, 1] (what torchvision's weights expect).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
#: Per-channel standard deviation of ImageNet pixels in [0, 1].
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

_INSTALL_HINT = (
    "Install a matching torch + torchvision pair, e.g. run `scripts/setup.sh` from the "
    "netdissect-widgets repository, or `pip install torch==2.13.0 torchvision==0.28.0` "
    "(the two versions must be released together)."
)


def _import_torchvision() -> Any:
    """Import torchvision, or raise an ImportError that says how to install it."""
    try:
        import torchvision
    except Exception as exc:  # ImportError, or RuntimeError from a torch/torchvision mismatch
        raise ImportError(
            f"torchvision is needed for this function but could not be imported "
            f"({type(exc).__name__}: {exc}). {_INSTALL_HINT}"
        ) from exc
    return torchvision


def _channel_tensor(values: Sequence[float] | torch.Tensor, what: str) -> torch.Tensor:
    t = torch.as_tensor(values, dtype=torch.float32).flatten()
    if t.numel() != 3:
        raise ValueError(f"{what} must have 3 values (one per RGB channel), got {t.numel()}")
    if what == "std" and bool((t <= 0).any()):
        raise ValueError(f"std must be positive, got {t.tolist()}")
    return t.reshape(1, 3, 1, 1)


def normalize_images(
    images: torch.Tensor,
    mean: Sequence[float] | torch.Tensor = IMAGENET_MEAN,
    std: Sequence[float] | torch.Tensor = IMAGENET_STD,
) -> torch.Tensor:
    """Convert images in [-1, 1] to a model's normalisation: ``((x + 1) / 2 - mean) / std``.

    Parameters
    ----------
    images : Tensor
        ``(N, 3, H, W)`` float images in [-1, 1].
    mean, std : sequence of 3 floats or Tensor
        Per-channel statistics of pixels in [0, 1] (ImageNet by default).

    Returns
    -------
    Tensor
        ``(N, 3, H, W)``, same device and dtype as ``images``.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(images.shape)}")
    m = _channel_tensor(mean, "mean").to(images.device, images.dtype)
    s = _channel_tensor(std, "std").to(images.device, images.dtype)
    return ((images + 1) / 2 - m) / s


class InputNormalization(nn.Module):
    """A model that takes images in [-1, 1] and feeds ``((x + 1)/2 - mean) / std`` to ``model``.

    The wrapper's children *are* the wrapped model's children (the same module
    objects, registered under the same names), so ``wrapped.layer4 is
    model.layer4``, ``layer_names(wrapped)`` lists ``layer4``, ``layer4.0.conv1``,
    ... and hooks placed on those layers fire when the wrapper runs. The
    wrapper's state dict is the model's state dict plus two buffers,
    ``input_mean`` and ``input_std`` (so the normalisation is part of the model's
    fingerprint).

    Parameters
    ----------
    model : nn.Module
        Any module whose forward takes normalised ``(N, 3, H, W)`` images.
    mean, std : sequence of 3 floats
        Per-channel statistics of pixels in [0, 1] (ImageNet by default).

    Attributes
    ----------
    wrapped : nn.Module
        The original model (not registered as a child, so it adds no name prefix).
    """

    def __init__(
        self,
        model: nn.Module,
        mean: Sequence[float] | torch.Tensor = IMAGENET_MEAN,
        std: Sequence[float] | torch.Tensor = IMAGENET_STD,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"InputNormalization wraps an nn.Module, got {type(model).__name__}")
        super().__init__()
        reserved = {"input_mean", "input_std", "wrapped"}
        own = {n for n, _ in model.named_children()} | set(model._parameters) | set(model._buffers)
        clash = reserved & own
        if clash:
            raise ValueError(f"cannot wrap a model that already has members named {sorted(clash)}")
        object.__setattr__(self, "wrapped", model)
        device = module_device(model)
        for name, child in model.named_children():
            self.add_module(name, child)
        for name, param in model.named_parameters(recurse=False):
            self.register_parameter(name, param)
        for name, buf in model.named_buffers(recurse=False):
            self.register_buffer(name, buf, persistent=name not in model._non_persistent_buffers_set)
        self.register_buffer("input_mean", _channel_tensor(mean, "mean").to(device))
        self.register_buffer("input_std", _channel_tensor(std, "std").to(device))
        self.train(model.training)

    def forward(self, images: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        """Normalise ``images`` (in [-1, 1]) and call the wrapped model on them."""
        x = ((images + 1) / 2 - self.input_mean.to(images.dtype)) / self.input_std.to(images.dtype)
        return self.wrapped(x, *args, **kwargs)

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> "InputNormalization":
        # .to()/.cuda()/.half() may replace our root parameters/buffers by new
        # tensors; keep the wrapped model's own references pointing at them.
        super()._apply(fn, *args, **kwargs)
        for name in self.wrapped._parameters:
            self.wrapped._parameters[name] = self._parameters[name]
        for name in self.wrapped._buffers:
            self.wrapped._buffers[name] = self._buffers[name]
        return self

    def train(self, mode: bool = True) -> "InputNormalization":
        """Set training mode on the wrapper, its children and the wrapped model itself."""
        super().train(mode)
        self.wrapped.training = mode
        return self

    def extra_repr(self) -> str:
        mean = [round(v, 4) for v in self.input_mean.flatten().tolist()]
        std = [round(v, 4) for v in self.input_std.flatten().tolist()]
        return f"wraps {type(self.wrapped).__name__}; input in [-1, 1] -> ((x+1)/2 - {mean}) / {std}"


def load_state_dict_checked(
    path: str | os.PathLike, sha256: str | None = None, key: str | None = None
) -> dict[str, torch.Tensor]:
    """Load a state dict (tensors by name) from a local file, pickle-free, optionally checksummed.

    Parameters
    ----------
    path : str or PathLike
        A file written by ``torch.save(model.state_dict(), path)``. Nothing is
        downloaded: the file must already be on disk.
    sha256 : str, optional
        Expected SHA-256 hex digest of the file; a mismatch raises ValueError.
    key : str, optional
        The file is a checkpoint dict and the state dict is its entry ``key``
        (e.g. ``"netG_state_dict"``, ``"state_dict"``); ValueError if it has none.

    Returns
    -------
    dict[str, Tensor]
        Tensors on the CPU.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        Checksum mismatch, or the file is not a plain state dict.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"weights file not found: {path!r}. netdissect-widgets never downloads weights; "
            f"download the file yourself (or save one with torch.save(model.state_dict(), path)) "
            f"and pass its local path."
        )
    if sha256 is not None:
        expected = str(sha256).strip().lower()
        actual = sha256_file(path)
        if actual != expected:
            raise ValueError(
                f"SHA-256 mismatch for {path!r}: expected {expected}, got {actual}. The file is "
                f"corrupt, truncated or a different version; download it again, or pass the "
                f"sha256 of the file you intend to use (sha256=None skips the check)."
            )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for whole pickled models, RuntimeError for bad files
        raise ValueError(
            f"could not read {path!r} as a weights-only state dict ({type(exc).__name__}: {exc}). "
            f"Save weights with torch.save(model.state_dict(), path); whole pickled models are "
            f"refused because loading them runs arbitrary code."
        ) from exc
    if key is not None:
        if not isinstance(state, Mapping) or not isinstance(state.get(key), Mapping):
            found = sorted(map(str, state))[:10] if isinstance(state, Mapping) else type(state).__name__
            raise ValueError(
                f"{path!r} has no state dict under {key!r} (found: {found}); is it the right file?"
            )
        state = state[key]
    if isinstance(state, Mapping) and not any(isinstance(v, torch.Tensor) for v in state.values()):
        nested = [k for k in ("state_dict", "model", "model_state_dict") if isinstance(state.get(k), Mapping)]
        if nested:
            raise ValueError(
                f"{path!r} holds a checkpoint dict with keys {sorted(map(str, state))[:10]}, not a state "
                f"dict; the weights look like they are under {nested[0]!r}. Save that entry alone: "
                f"torch.save(torch.load(path, weights_only=True)[{nested[0]!r}], new_path)."
            )
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ValueError(
            f"{path!r} does not hold a state dict (a mapping from parameter names to tensors); "
            f"got {type(state).__name__}. Save weights with torch.save(model.state_dict(), path)."
        )
    return dict(state)


def _check_keys(model: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    """Raise ValueError listing missing / unexpected / wrongly shaped keys before a strict load."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if not (missing or unexpected or shapes):
        return

    def show(items: list[str]) -> str:
        more = f" ... and {len(items) - 8} more" if len(items) > 8 else ""
        return ", ".join(items[:8]) + more

    parts = []
    if missing:
        parts.append(f"missing keys ({len(missing)}): {show(missing)}")
    if unexpected:
        parts.append(f"unexpected keys ({len(unexpected)}): {show(unexpected)}")
    if shapes:
        parts.append(f"shape mismatches ({len(shapes)}): {show(shapes)}")
    hints = []
    if unexpected and all(k.startswith("module.") for k in unexpected):
        hints.append("the keys start with 'module.' (saved from DataParallel): strip that prefix")
    if shapes:
        hints.append("if only the classifier head differs, pass num_classes=<classes in the file>")
    hints.append("check that the file was saved from this architecture")
    raise ValueError(f"weights do not fit {what}: " + "; ".join(parts) + ". To fix: " + "; ".join(hints) + ".")


def _build_torchvision(arch: str, **kwargs: Any) -> nn.Module:
    """Build ``torchvision.models`` architecture ``arch`` with random weights (never downloads)."""
    tv = _import_torchvision()
    names = tv.models.list_models()
    if arch not in names:
        import difflib

        close = difflib.get_close_matches(str(arch), names, n=5, cutoff=0.5)
        if close:
            hint = f"closest: {', '.join(close)}"
        else:
            hint = f"{len(names)} architectures exist, e.g. {', '.join(names[:5])}"
        raise KeyError(
            f"unknown torchvision architecture {arch!r} ({hint}); see torchvision.models.list_models()"
        )
    builder = tv.models.get_model_builder(arch)
    params = inspect.signature(builder).parameters
    kwargs = {k: v for k, v in kwargs.items()}
    kwargs["weights"] = None
    if "weights_backbone" in params:
        kwargs.setdefault("weights_backbone", None)
    if kwargs.get("weights_backbone") is not None:
        raise ValueError("weights_backbone must be None: weights come only from the local file you pass")
    return builder(**kwargs)


def _load_state_into(model: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> nn.Module:
    """Strictly load ``state`` into ``model`` (ValueError listing key problems first); eval mode."""
    _check_keys(model, state, what)
    model.load_state_dict(state, strict=True)
    return model.eval()


def load_torchvision_model(
    arch: str,
    weights_path: str | os.PathLike,
    sha256: str | None = None,
    num_classes: int | None = None,
    *,
    mean: Sequence[float] | None = IMAGENET_MEAN,
    std: Sequence[float] | None = IMAGENET_STD,
    **kwargs: Any,
) -> nn.Module:
    """Build a torchvision architecture, load its weights from a local file, and wrap it for [-1, 1] input.

    Parameters
    ----------
    arch : str
        A name from ``torchvision.models.list_models()`` (``"resnet18"``, ``"vgg16"``, ...).
    weights_path : str or PathLike
        Local file written by ``torch.save(model.state_dict(), path)`` (torchvision's
        own ``.pth`` downloads are such files). Nothing is downloaded.
    sha256 : str, optional
        Expected SHA-256 of the file (ValueError with both digests on mismatch).
    num_classes : int, optional
        Classes of the head, when the file was trained on another label set.
    mean, std : sequence of 3 floats, optional
        Normalisation the weights were trained with (ImageNet by default). Pass
        ``mean=None, std=None`` to get the bare model (no wrapper).
    **kwargs
        Passed to the torchvision builder (e.g. ``aux_loss=True``).

    Returns
    -------
    nn.Module
        :class:`InputNormalization` around the model (layer names unchanged), in eval mode, on the CPU.
    """
    if num_classes is not None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        kwargs["num_classes"] = num_classes
    if (mean is None) != (std is None):
        raise ValueError("pass both mean and std, or neither (None, None) for the bare model")
    _import_torchvision()  # fail early, before reading a large file
    state = load_state_dict_checked(weights_path, sha256=sha256)
    model = _build_torchvision(arch, **kwargs)
    _load_state_into(model, state, f"torchvision architecture {arch!r}")
    if mean is None:
        return model
    return InputNormalization(model, mean, std).eval()
