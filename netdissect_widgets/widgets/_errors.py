"""One place where widget handlers fail safely.

Every button, slider, canvas and background-thread handler of the widgets is
wrapped by :meth:`ErrorArea.guard`. An exception raised inside (by the model, a
dissection method, or a user callback) is caught, shown in the widget's red
error area (an ``HTML`` widget with CSS class ``ndw-error``; a "dismiss"
button has class ``ndw-error-dismiss``) and logged; the widget keeps working.

:class:`Callbacks` is the list of user callbacks of one event (``on_select``,
``on_edit``, ...): each one runs under the same guard, so a failing user
callback is reported in the widget and does not stop the others.
"""
from __future__ import annotations

import functools
import html
import logging
import threading
import traceback
from collections.abc import Callable
from typing import Any

from ipywidgets import HTML, Button, HBox, Layout

__all__ = ["ErrorArea", "Callbacks"]

_log = logging.getLogger("netdissect_widgets.widgets")

_STYLE = (
    "color:#a00;background:#fee;border-left:4px solid #c00;padding:4px 8px;"
    "font-family:monospace;white-space:pre-wrap;font-size:12px"
)


class ErrorArea:
    """A red area that shows the last exception raised inside a guarded handler.

    Attributes
    ----------
    widget : ipywidgets.HBox
        The area (hidden while there is no error); put it in the widget's layout.
    errors : list of str
        Every error shown so far, as ``"ExceptionType: message (in handler)"``.
    """

    def __init__(self) -> None:
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self.html = HTML("")
        self.html.add_class("ndw-error")
        self.dismiss = Button(description="dismiss", layout=Layout(width="80px"))
        self.dismiss.add_class("ndw-error-dismiss")
        self.dismiss.on_click(lambda _b: self.clear())
        self.widget = HBox([self.html, self.dismiss], layout=Layout(display="none"))

    @property
    def last(self) -> str | None:
        """The most recent error message, or ``None``."""
        return self.errors[-1] if self.errors else None

    def show(self, exc: BaseException, where: str = "") -> None:
        """Show ``exc`` (type, message, and the traceback folded in a ``<details>``)."""
        summary = f"{type(exc).__name__}: {exc}" + (f" (in {where})" if where else "")
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        with self._lock:
            self.errors.append(summary)
            self.html.value = (
                f'<div style="{_STYLE}"><b>error</b> {html.escape(summary)}'
                f"<details><summary>traceback</summary>{html.escape(tb)}</details></div>"
            )
            self.widget.layout.display = "flex"
        _log.warning("widget handler failed: %s", summary, exc_info=exc)

    def clear(self) -> None:
        """Hide the area (the message list :attr:`errors` is kept)."""
        with self._lock:
            self.html.value = ""
            self.widget.layout.display = "none"

    def guard(self, fn: Callable[..., Any], where: str | None = None) -> Callable[..., Any]:
        """Wrap ``fn`` so that an ``Exception`` is shown here instead of propagating.

        The wrapper returns ``fn``'s result, or ``None`` after an exception.
        """
        name = where or getattr(fn, "__name__", "handler")

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # shown to the user; the widget keeps working
                self.show(exc, name)
                return None

        return wrapper


class Callbacks:
    """User callbacks of one event, each run under an :class:`ErrorArea` guard."""

    def __init__(self, errors: ErrorArea, event: str) -> None:
        self._errors = errors
        self._event = event
        self._callbacks: list[Callable[..., Any]] = []

    def register(self, callback: Callable[..., Any], remove: bool = False) -> None:
        """Add ``callback`` (or remove it with ``remove=True``)."""
        if not callable(callback):
            raise TypeError(f"{self._event} callback must be callable, got {type(callback).__name__}")
        if remove:
            if callback in self._callbacks:
                self._callbacks.remove(callback)
        elif callback not in self._callbacks:
            self._callbacks.append(callback)

    def __call__(self, *args: Any) -> None:
        for callback in list(self._callbacks):
            name = getattr(callback, "__name__", "callback")
            self._errors.guard(callback, f"{self._event} callback {name}")(*args)
