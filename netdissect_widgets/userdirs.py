"""Where the package keeps files for a user: a cache folder outside any repository.

``user_cache_dir()`` is ``$XDG_CACHE_HOME/netdissect-widgets`` (default
``~/.cache/netdissect-widgets``; ``%LOCALAPPDATA%\\netdissect-widgets`` on
Windows), or ``$NDW_CACHE_DIR`` when set. The example notebooks keep their
dissection caches and saved results there, so running them writes nothing into
the repository. Delete the folder at any time: everything in it is recomputed.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["user_cache_dir"]

APP = "netdissect-widgets"


def user_cache_dir(*parts: str, create: bool = True) -> Path:
    """The user cache folder (see the module docstring), joined with ``parts``; created unless ``create=False``.

    Examples
    --------
    >>> d = dissect(model, "conv5", data, segmenter, cache_dir=user_cache_dir("examples"))  # doctest: +SKIP
    """
    override = os.environ.get("NDW_CACHE_DIR")
    if override:
        base = Path(override).expanduser()
    elif sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local") / APP
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg).expanduser() if xdg and os.path.isabs(os.path.expanduser(xdg))
                else Path.home() / ".cache") / APP
    folder = base.joinpath(*parts)
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    return folder
