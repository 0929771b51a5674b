"""The real face GAN in a real browser: notebook 05 runs in JupyterLab, and a stroke repaints the face.

Needs the ``[real]`` extra (locally skipped without it, failed with ``CI=true``) and
the browser fixtures of ``tests/browser/conftest.py``.
"""
from __future__ import annotations

import importlib.util

import pytest

from tests.browser.conftest import REPO, copy_notebook
from tests.conftest import require

pytestmark = pytest.mark.browser

NB_FACE = "05_real_face_gan.ipynb"

_STATE = """
import json
print(json.dumps({"runs": painter.generator_runs, "strokes": len(painter.strokes), "concept": painter.concept,
                  "concepts": sorted(d.concept_counts())}))
"""

_CHANGE = """
import json, torch
import torch.nn.functional as _F
_m = torch.from_numpy(painter.mask).float()
_diff = (painter.edited_image.float() - painter.original_image.float()).abs().mean(0)   # (H, W)
_m = _F.interpolate(_m[None, None], size=_diff.shape, mode="nearest")[0, 0] > 0
print(json.dumps({"inside": float(_diff[_m].mean()), "outside": float(_diff[~_m].mean()),
                  "painted": int(_m.sum())}))
"""


def test_a_stroke_on_the_face_gan_changes_the_face(lab, jupyter_root):
    for module in ("gan_face_generate", "mediapipe"):
        require(importlib.util.find_spec(module) is not None,
                f"{module} is not installed (the [real] extra: bash scripts/setup.sh)")
    copy_notebook(REPO / "examples" / NB_FACE, jupyter_root)
    lab.open(NB_FACE)
    lab.run_all(timeout=600_000)
    page, k = lab.page, lab.kernel()
    widget = page.locator(".ndw-paint")
    widget.wait_for()
    state0 = k.json(_STATE)
    assert {"mouth", "eyebrow"} <= set(state0["concepts"]), state0["concepts"]  # real face parts were found
    page.locator(".ndw-paint-concept select").select_option(label="mouth")
    k.wait_for("painter.concept == 'mouth'")
    state0 = k.json(_STATE)

    edited = page.locator("img.ndw-paint-edited")
    src0 = edited.get_attribute("src")
    canvas = page.locator(".ndw-paint-canvas")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    # a stroke across the lower middle of the face
    points = [(box["x"] + box["width"] * x, box["y"] + box["height"] * y)
              for x, y in ((0.3, 0.7), (0.5, 0.75), (0.7, 0.7))]
    page.mouse.move(*points[0])
    page.mouse.down()
    for p in points[1:]:
        page.mouse.move(*p, steps=12)
    page.mouse.up()
    page.wait_for_function("(s) => document.querySelector('img.ndw-paint-edited').src !== s", arg=src0)

    state1 = k.json(_STATE)
    assert state1["strokes"] == 1 and state1["runs"] == state0["runs"] + 1
    change = k.json(_CHANGE)
    assert change["painted"] > 0
    # the face changed where the stroke went, much more than elsewhere
    assert change["inside"] > 0.02 and change["inside"] > 3 * change["outside"], change
