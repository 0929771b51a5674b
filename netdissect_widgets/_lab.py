"""JupyterLab for the examples: the command line, and a save hook that keeps the notebooks clean.

``python -m netdissect_widgets lab`` starts JupyterLab rooted at ``examples/``
with :func:`strip_outputs` as the contents manager's ``pre_save_hook``: when
JupyterLab (auto)saves a notebook there, its outputs, execution counts and
widget state are left out, as ``nbstripout`` would, so running the examples
leaves them unmodified in git (your edits to the code are saved).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["strip_outputs", "strip_notebook", "lab_command", "HOOK"]

#: import path of the hook, for ``--ContentsManager.pre_save_hook``
HOOK = "netdissect_widgets._lab.strip_outputs"


def strip_notebook(nb: dict) -> dict:
    """``nb`` (a notebook as a dict, changed in place) without outputs, counts, widget state or kernel details."""
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
        for key in ("execution", "scrolled", "collapsed", "jupyter"):
            cell.get("metadata", {}).pop(key, None)
    meta = nb.setdefault("metadata", {})
    meta.pop("widgets", None)
    info = meta.get("language_info")
    if isinstance(info, dict) and "name" in info:
        meta["language_info"] = {"name": info["name"]}
    return nb


def strip_outputs(model: dict, **_kwargs: Any) -> None:
    """A Jupyter ``pre_save_hook``: notebooks are saved by :func:`strip_notebook`; other files untouched."""
    if model.get("type") == "notebook" and isinstance(model.get("content"), dict):
        strip_notebook(model["content"])


def lab_command(folder: Path, rest: list[str], is_root: bool) -> list[str]:
    """The ``python -m jupyterlab`` command line: rooted at ``folder``, with the save hook,
    ``--allow-root`` when running as root (common in containers), then ``rest``."""
    cmd = [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={folder}",
           f"--ContentsManager.pre_save_hook={HOOK}"]
    if is_root and "--allow-root" not in rest:
        cmd.append("--allow-root")
    return cmd + list(rest)


def running_as_root() -> bool:
    """Whether this process runs with user id 0 (False where there are no user ids)."""
    return hasattr(os, "getuid") and os.getuid() == 0
