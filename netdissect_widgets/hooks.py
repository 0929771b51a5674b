"""Instrumented models: read and edit the output of any layer during a forward pass.

Layers are named by their dotted path in ``model.named_modules()``
(``"features.3"``, ``"layer4.1.conv2"``); :func:`layer_names` lists them and an
unknown name raises a ``KeyError`` that names the closest existing ones.

Three tools, from the most temporary to the most persistent:

* :class:`Trace` -- a context manager that watches one layer during the forward
  passes run inside the ``with`` block::

      with Trace(model, "features.3") as t:
          model(images)
      acts = t.output                      # (N, C, H, W)

  ``edit_output=fn`` replaces the layer's output by ``fn(output, layer_name)``;
  ``stop=True`` skips the rest of the model once the layer has run (the
  internal ``StopForward`` is caught when the block exits).
* :class:`TraceDict` -- the same for several layers at once (``td[name].output``).
* :class:`InstrumentedModel` -- an ``nn.Module`` wrapping a model whose
  retained layers and edits stay until removed::

      im = InstrumentedModel(model)
      im.retain_layer("conv5")
      im.edit_layer("conv5", ablation=mask, replacement=0.0)   # x' = x*(1-a) + a*v
      logits = im(images)
      acts = im.retained_layer("conv5")    # the edited activations
      im.close()                           # every hook removed

Hook hygiene: every name is resolved before any hook is installed (a bad name
installs nothing); context managers install their hooks in ``__enter__`` and
remove them in ``finally`` in reverse order, also when the model raises; a hook
handle's ``remove()`` is safe to call twice.
"""
from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

__all__ = [
    "Trace",
    "TraceDict",
    "InstrumentedModel",
    "StopForward",
    "layer_names",
    "conv_blocks",
    "get_layer",
    "layer_output_shapes",
]


class StopForward(Exception):
    """Raised by a hook with ``stop=True`` to skip the rest of a forward pass.

    :class:`Trace` and :class:`TraceDict` catch it when their ``with`` block exits,
    so user code never sees it.
    """


# --------------------------------------------------------------------------- names


def layer_names(model: nn.Module) -> list[str]:
    """Return the dotted names of all submodules of ``model`` (the model itself, ``''``, excluded).

    Containers (``features``) and leaves (``features.3``) are both listed, in
    ``named_modules`` order.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected an nn.Module, got {type(model).__name__}")
    return [name for name, _ in model.named_modules(remove_duplicate=False) if name]


_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Tanh, nn.Sigmoid)


def _has_conv(module: nn.Module) -> bool:
    return any(isinstance(m, _CONVS) for m in module.modules())


def conv_blocks(model: nn.Module) -> list[str]:
    """The names of a model's convolutional blocks, in order: what ``--layer all`` dissects.

    A block is a child module that contains a convolution (``conv1`` = conv + BN +
    ReLU, so its output is the unit's activation after the non-linearity). A child
    that is a stack of such blocks (a ``Sequential``/``ModuleList`` every one of whose children contains a
    convolution, as ``blocks`` of an EfficientNet or ``layer1`` of a ResNet) is
    expanded into its blocks; a bare convolution followed by its activation
    (VGG's ``features.28``, ``features.29``) is named by the activation; a model wrapped around a single child (an input
    normalisation) is looked through.

    >>> conv_blocks(toy_classifier)           # doctest: +SKIP
    ['conv1', 'conv2', 'conv3', 'conv4', 'conv5']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected an nn.Module, got {type(model).__name__}")

    def blocks(module: nn.Module, prefix: str) -> list[str]:
        children = list(module.named_children())
        found = []
        for i, (name, child) in enumerate(children):
            if not _has_conv(child):
                continue
            inner = list(child.children())
            is_stack = (isinstance(child, (nn.Sequential, nn.ModuleList)) and len(inner) >= 2
                        and all(_has_conv(c) for c in inner))
            after = children[i + 1] if i + 1 < len(children) else None
            if is_stack:
                found += blocks(child, f"{prefix}{name}.")
            elif isinstance(child, _CONVS) and after is not None and isinstance(after[1], _ACTIVATIONS):
                found.append(f"{prefix}{after[0]}")  # a bare conv followed by its non-linearity: after it
            else:
                found.append(f"{prefix}{name}")
        return found

    names = blocks(model, "")
    if len(names) == 1 and len(list(get_layer(model, names[0]).children())) > 1:
        inner = blocks(get_layer(model, names[0]), names[0] + ".")
        names = inner or names
    return names


def _unknown_layer(model: nn.Module, name: Any) -> KeyError:
    names = layer_names(model)
    close = difflib.get_close_matches(str(name), names, n=5, cutoff=0.5)
    if close:
        hint = "closest existing names: " + ", ".join(repr(n) for n in close)
    elif names:
        shown = ", ".join(repr(n) for n in names[:10])
        hint = f"existing names include: {shown}" + (" ..." if len(names) > 10 else "")
    else:
        hint = "the model has no submodules"
    return KeyError(
        f"unknown layer {name!r} in {type(model).__name__}; {hint} "
        "(see netdissect_widgets.layer_names(model))"
    )


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """Return the submodule of ``model`` called ``name`` (dotted path).

    ``name == ""`` returns ``model`` itself. An unknown name raises ``KeyError``
    naming the closest existing layer names.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected an nn.Module, got {type(model).__name__}")
    if not isinstance(name, str):
        raise TypeError(f"layer names are dotted strings such as 'features.3', got {name!r}")
    if name == "":
        return model
    for candidate, module in model.named_modules(remove_duplicate=False):
        if candidate == name:
            return module
    raise _unknown_layer(model, name)


def _resolve(model: nn.Module, names: Iterable[str]) -> list[tuple[str, nn.Module]]:
    """Resolve every name first, so that a bad name fails before any hook exists."""
    table = dict(model.named_modules(remove_duplicate=False))
    resolved = []
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"layer names are dotted strings such as 'features.3', got {name!r}")
        if name not in table:
            raise _unknown_layer(model, name)
        resolved.append((name, table[name]))
    return resolved


# --------------------------------------------------------------------------- tensors


def _map_tensors(value: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """Apply ``fn`` to every tensor inside (nested tuples/lists/dicts of) ``value``."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, tuple):
        return type(value)(*(_map_tensors(v, fn) for v in value)) if hasattr(value, "_fields") \
            else tuple(_map_tensors(v, fn) for v in value)
    if isinstance(value, list):
        return [_map_tensors(v, fn) for v in value]
    if isinstance(value, dict):
        return {k: _map_tensors(v, fn) for k, v in value.items()}
    return value


def _keep(value: Any, clone: bool, detach: bool) -> Any:
    def fn(t: torch.Tensor) -> torch.Tensor:
        if detach:
            t = t.detach()
        if clone:
            t = t.clone()
        return t

    return _map_tensors(value, fn) if (clone or detach) else value


# --------------------------------------------------------------------------- Trace


class Trace:
    """Watch (and optionally edit) one layer during the forward passes inside a ``with`` block.

    Parameters
    ----------
    model : nn.Module
        The model to instrument.
    layer : str
        Dotted name of the layer (``""`` for the model itself).
    retain_output : bool
        Keep the layer's output (after ``edit_output``) in ``.output``.
    retain_input : bool
        Keep the layer's input in ``.input`` (the tensor if the layer has one
        positional input, else the tuple of inputs).
    clone : bool
        Store a copy, so that later in-place operations cannot change it.
    detach : bool
        Store the retained values detached from the autograd graph.
    edit_output : callable, optional
        ``edit_output(output, layer_name) -> new_output``; what it returns is what
        the rest of the model sees.
    stop : bool
        Stop the forward pass right after this layer (the model call raises an
        internal ``StopForward`` that the ``with`` block swallows). Use it to
        compute a layer's activations without paying for the layers above.

    Notes
    -----
    The hook is installed in ``__enter__`` and removed when the block exits,
    whatever happens inside. ``.output`` / ``.input`` are ``None`` until the layer
    has run; if it runs several times, the last call is kept.
    """

    def __init__(
        self,
        model: nn.Module,
        layer: str = "",
        retain_output: bool = True,
        retain_input: bool = False,
        clone: bool = False,
        detach: bool = False,
        edit_output: Callable[[Any, str], Any] | None = None,
        stop: bool = False,
        *,
        _on_output: Callable[[str], None] | None = None,
    ) -> None:
        if edit_output is not None and not callable(edit_output):
            raise TypeError("edit_output must be a function edit_output(output, layer_name) -> output")
        ((self.layer, self.module),) = _resolve(model, [layer])
        self.model = model
        self.retain_output = retain_output
        self.retain_input = retain_input
        self.clone = clone
        self.detach = detach
        self.edit_output = edit_output
        self.stop = stop
        self._on_output = _on_output
        self.output: Any = None
        self.input: Any = None
        self._handle: torch.utils.hooks.RemovableHandle | None = None

    def _hook(self, module: nn.Module, inputs: tuple, output: Any) -> Any:
        if self.retain_input:
            self.input = _keep(inputs[0] if len(inputs) == 1 else inputs, self.clone, self.detach)
        if self.edit_output is not None:
            output = self.edit_output(output, self.layer)
        if self.retain_output:
            self.output = _keep(output, self.clone, self.detach)
        if self._on_output is not None:
            self._on_output(self.layer)
        if self.stop:
            raise StopForward(self.layer)
        return output

    def _install(self) -> None:
        if self._handle is None:
            self._handle = self.module.register_forward_hook(self._hook)

    def remove(self) -> None:
        """Remove the hook (safe to call twice)."""
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.remove()

    close = remove

    def __enter__(self) -> "Trace":
        self._install()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.remove()
        return exc_type is not None and issubclass(exc_type, StopForward)


class TraceDict(dict):
    """Watch (and optionally edit) several layers at once: a dict ``name -> Trace``.

    Takes the same keyword arguments as :class:`Trace`; ``edit_output`` receives
    each layer's name as its second argument. With ``stop=True`` the forward pass
    stops once every listed layer has run.

    All names are resolved before any hook is installed; hooks go in in
    ``__enter__`` and come out in reverse order when the block exits.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Iterable[str],
        retain_output: bool = True,
        retain_input: bool = False,
        clone: bool = False,
        detach: bool = False,
        edit_output: Callable[[Any, str], Any] | None = None,
        stop: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(layers, str):
            layers = [layers]
        names = list(dict.fromkeys(layers))  # unique, in order
        _resolve(model, names)  # a bad name raises here, before any hook exists
        self._stop = stop
        self._pending: set[str] = set()
        for name in names:
            self[name] = Trace(
                model, name, retain_output=retain_output, retain_input=retain_input,
                clone=clone, detach=detach, edit_output=edit_output, stop=False,
                _on_output=self._seen if stop else None,
            )

    def _seen(self, name: str) -> None:
        self._pending.discard(name)
        if not self._pending:
            raise StopForward(name)

    def remove(self) -> None:
        """Remove every hook, in reverse order (safe to call twice)."""
        for trace in reversed(list(self.values())):
            trace.remove()

    close = remove

    def __enter__(self) -> "TraceDict":
        self._pending = set(self)
        try:
            for trace in self.values():
                trace._install()
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.remove()
        return exc_type is not None and issubclass(exc_type, StopForward)


# --------------------------------------------------------------------------- shapes


def layer_output_shapes(
    model: nn.Module,
    example_input: Any,
    layers: Sequence[str] | None = None,
) -> dict[str, tuple]:
    """Run one forward pass and return ``{layer name: output shape}``.

    Parameters
    ----------
    model : nn.Module
    example_input : Tensor or tuple
        The model's input (a tuple is unpacked into positional arguments).
    layers : list of str, optional
        Layers to report (default: every layer from :func:`layer_names`).

    Returns
    -------
    dict
        ``name -> tuple`` shape for tensor outputs; for a layer that returns a
        tuple/list of tensors, a tuple of their shapes. Layers that did not run
        are absent.

    Notes
    -----
    The pass runs under ``torch.no_grad()`` with the model temporarily in eval
    mode (so BatchNorm statistics are not updated); the modes are restored after.
    """
    names = layer_names(model) if layers is None else list(layers)
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad(), TraceDict(model, names) as traces:
            model(*args)
    finally:
        for module, training in modes:
            module.training = training

    def shape_of(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return tuple(value.shape)
        if isinstance(value, (tuple, list)):
            return tuple(shape_of(v) for v in value)
        return None

    shapes = {}
    for name, trace in traces.items():
        if trace.output is not None:
            shapes[name] = shape_of(trace.output)
    return shapes


# --------------------------------------------------------------------------- InstrumentedModel


def _as_edit_tensor(value: Any, what: str) -> torch.Tensor | float | None:
    if value is None or isinstance(value, (int, float)) and not isinstance(value, bool):
        return None if value is None else float(value)
    if isinstance(value, torch.Tensor):
        if value.dtype == torch.bool or not value.is_floating_point():
            value = value.float()
        if value.dim() > 4:
            raise ValueError(f"{what} must have at most 4 dimensions (N, C, H, W), got shape {tuple(value.shape)}")
        return value
    try:
        return torch.as_tensor(value, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{what} must be a float or a tensor broadcastable to the layer output, "
                        f"got {type(value).__name__}") from err


class _Edit:
    """One layer's edit x' = x*(1-a) + a*v (then ``rule``), with device/dtype-moved copies cached."""

    def __init__(self, layer: str, ablation: Any, replacement: Any, rule: Callable | None) -> None:
        self.layer = layer
        self.ablation = _as_edit_tensor(ablation, "ablation")
        self.replacement = _as_edit_tensor(replacement, "replacement")
        if self.ablation is None and self.replacement is not None:
            # a replacement alone replaces everywhere
            self.ablation = 1.0
        if self.ablation is not None and self.replacement is None:
            self.replacement = 0.0
        self.rule = rule
        self._cache: dict[tuple, torch.Tensor] = {}

    def _fit(self, value: torch.Tensor | float, x: torch.Tensor, what: str) -> torch.Tensor | float:
        if not isinstance(value, torch.Tensor):
            return value
        key = (what, x.device, x.dtype, tuple(x.shape))
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        t = value
        if t.dim() == 1:
            if x.dim() < 2 or t.shape[0] != x.shape[1]:
                raise ValueError(
                    f"{what} for layer {self.layer!r} has {t.shape[0]} entries (one per unit) but the "
                    f"layer output has shape {tuple(x.shape)}: give one value per channel (dim 1)")
            t = t.view(1, -1, *([1] * (x.dim() - 2)))
        elif t.dim() == x.dim() - 1:
            t = t.unsqueeze(0)
        try:
            torch.broadcast_shapes(t.shape, x.shape)
        except RuntimeError as err:
            raise ValueError(
                f"{what} of shape {tuple(value.shape)} does not broadcast to the output of layer "
                f"{self.layer!r}, shape {tuple(x.shape)}; use (C,), (C, H, W) or (N, C, H, W)") from err
        t = t.to(device=x.device, dtype=x.dtype)
        if not t.requires_grad:  # a moved copy of a grad-requiring tensor must be rebuilt each pass
            self._cache[key] = t
        return t

    def __call__(self, output: Any) -> Any:
        if self.ablation is not None:
            if not isinstance(output, torch.Tensor):
                raise TypeError(
                    f"layer {self.layer!r} returns {type(output).__name__}, not a tensor: "
                    "ablation/replacement need a tensor output; use edit_layer(name, rule=fn) instead")
            a = self._fit(self.ablation, output, "ablation")
            v = self._fit(self.replacement, output, "replacement")
            output = output * (1 - a) + a * v
        if self.rule is not None:
            output = self.rule(output)
        return output


class InstrumentedModel(nn.Module):
    """Wrap a model so that layers can be retained and edited until told otherwise.

    ``forward`` is the wrapped model's forward. Layer names are relative to the
    wrapped model (``im.model``). Hooks are installed on a layer when it is first
    retained or edited and removed when neither applies any more, by
    :meth:`close`, or on leaving a ``with`` block.

    Examples
    --------
    >>> im = InstrumentedModel(model)                               # doctest: +SKIP
    >>> im.edit_layer("conv5", ablation=torch.tensor([0., 1., 0.]))  # zero unit 1 (0-based)
    >>> im.retain_layer("conv5"); logits = im(x); im.retained_layer("conv5")[:, 1].abs().max()
    tensor(0.)
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"InstrumentedModel wraps an nn.Module, got {type(model).__name__}")
        self.model = model
        self._retain: dict[str, tuple[bool, bool]] = {}   # layer -> (detach, clone)
        self._retained: dict[str, Any] = {}
        self._edits: dict[str, _Edit] = {}
        self._handles: dict[str, torch.utils.hooks.RemovableHandle] = {}

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)

    # ----- hooks
    def _make_hook(self, name: str) -> Callable:
        def hook(module: nn.Module, inputs: tuple, output: Any) -> Any:
            edit = self._edits.get(name)
            if edit is not None:
                output = edit(output)
            if name in self._retain:
                detach, clone = self._retain[name]
                self._retained[name] = _keep(output, clone=clone, detach=detach)
            return output

        return hook

    def _sync_hooks(self, names: Iterable[str]) -> None:
        for name in names:
            wanted = name in self._retain or name in self._edits
            if wanted and name not in self._handles:
                module = get_layer(self.model, name)
                self._handles[name] = module.register_forward_hook(self._make_hook(name))
            elif not wanted and name in self._handles:
                self._handles.pop(name).remove()

    # ----- retaining
    def retain_layer(self, name: str, detach: bool = True, clone: bool = False) -> None:
        """Keep ``name``'s output (after any edit) from every forward pass; read it with :meth:`retained_layer`.

        ``detach=False`` keeps the autograd graph; ``clone=True`` stores a copy, needed
        when a later in-place module (``ReLU(inplace=True)``) would overwrite the output.
        """
        self.retain_layers([name], detach=detach, clone=clone)

    def retain_layers(self, names: Iterable[str], detach: bool = True, clone: bool = False) -> None:
        """Retain several layers (all names are checked before anything changes)."""
        if isinstance(names, str):
            names = [names]
        names = [n for n, _ in _resolve(self.model, names)]
        for name in names:
            self._retain[name] = (bool(detach), bool(clone))
        self._sync_hooks(names)

    def stop_retaining(self, name: str | None = None) -> None:
        """Stop retaining ``name`` (all layers if ``None``) and drop what was kept."""
        names = list(self._retain) if name is None else [name]
        for n in names:
            self._retain.pop(n, None)
            self._retained.pop(n, None)
        self._sync_hooks(names)

    def retained_layer(self, name: str, clear: bool = False) -> Any:
        """Return ``name``'s output from the latest forward pass (``clear=True`` also forgets it)."""
        if name not in self._retain:
            get_layer(self.model, name)  # unknown layer -> KeyError with close names
            raise KeyError(f"layer {name!r} is not retained; call retain_layer({name!r}) before the forward pass")
        if name not in self._retained:
            raise RuntimeError(f"layer {name!r} has not run since it was retained; run a forward pass first")
        return self._retained.pop(name) if clear else self._retained[name]

    def retained_features(self, clear: bool = False) -> dict[str, Any]:
        """Return ``{name: output}`` for every retained layer that has run."""
        out = dict(self._retained)
        if clear:
            self._retained.clear()
        return out

    # ----- editing
    def edit_layer(
        self,
        name: str,
        ablation: Any = None,
        replacement: Any = None,
        rule: Callable[[Any], Any] | None = None,
    ) -> None:
        """Edit ``name``'s output on every forward pass until :meth:`remove_edits`.

        The edit is ``x' = x * (1 - a) + a * v`` with ``a = ablation`` and
        ``v = replacement`` (default 0), then ``x'' = rule(x')`` if ``rule`` is given.

        Parameters
        ----------
        name : str
            Dotted layer name.
        ablation, replacement : float or Tensor, optional
            Broadcastable to the layer output ``(N, C, H, W)``: a 1-D tensor of
            length C is one value per unit (reshaped to ``(1, C, 1, 1)``); ``(C, H, W)``
            or ``(N, C, H, W)`` gives one per unit and position. ``replacement`` alone
            means ``ablation = 1`` (replace everywhere). Copies moved to the output's
            device and dtype are cached.
        rule : callable, optional
            ``rule(output) -> new output``.

        A new call replaces the layer's earlier edit.
        """
        if rule is not None and not callable(rule):
            raise TypeError("rule must be a function rule(output) -> output")
        if ablation is None and replacement is None and rule is None:
            raise ValueError("edit_layer needs ablation, replacement or rule; use remove_edits(name) to undo an edit")
        ((name, _),) = _resolve(self.model, [name])
        self._edits[name] = _Edit(name, ablation, replacement, rule)
        self._sync_hooks([name])

    def remove_edits(self, name: str | None = None) -> None:
        """Remove the edit of layer ``name`` (every edit if ``None``); retained layers stay retained."""
        if name is None:
            names = list(self._edits)
        else:
            ((name, _),) = _resolve(self.model, [name])
            names = [name]
        for n in names:
            self._edits.pop(n, None)
        self._sync_hooks(names)

    @property
    def edited_layers(self) -> list[str]:
        """Names of the layers that currently carry an edit."""
        return list(self._edits)

    # ----- lifecycle
    def close(self) -> None:
        """Remove every hook, edit and retained value (safe to call twice)."""
        for name in reversed(list(self._handles)):
            self._handles.pop(name).remove()
        self._edits.clear()
        self._retain.clear()
        self._retained.clear()

    def __enter__(self) -> "InstrumentedModel":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()
