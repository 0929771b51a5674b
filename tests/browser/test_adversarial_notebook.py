"""Notebook 07 (adversarial attacks seen through units) in real JupyterLab: run all, see the figures.

The notebook is run with "run all cells" in headless Chromium; then what the page
shows is checked: its three figures (attacked images, most changed units, the
finding per class pair) are ``<img>`` elements, not ``<Figure ...>`` text, and the
numbers printed on the page are those of the notebook's running kernel.
"""
from __future__ import annotations

import pytest

from tests.browser.conftest import REPO, copy_notebook

pytestmark = pytest.mark.browser

NOTEBOOK = "07_adversarial_units.ipynb"

_FIGURE_TEXT_JS = """
() => [...document.querySelectorAll('.jp-OutputArea-output')]
        .map(e => e.innerText).filter(t => t.includes('<Figure'))
"""


def test_adversarial_notebook_shows_its_figures_and_numbers(lab, jupyter_root) -> None:
    copy_notebook(REPO / "examples" / NOTEBOOK, jupyter_root)
    lab.open(NOTEBOOK)
    lab.run_all(timeout=480_000)
    page = lab.page

    # figures are images the browser has decoded, never "<Figure size ...>" text
    assert page.evaluate(_FIGURE_TEXT_JS) == []
    images = page.locator(".jp-OutputArea-output.jp-RenderedImage img")
    assert images.count() == 3, f"{images.count()} figure images"
    sizes = images.evaluate_all("els => els.map(e => [e.naturalWidth, e.naturalHeight])")
    assert all(w > 300 and h > 200 for w, h in sizes), sizes

    # the page shows the kernel's numbers
    kernel = lab.kernel()
    facts = kernel.json(
        "import json; print(json.dumps({'rate': f'{attack.success_rate:.0%}', 'n': len(images), "
        "'top': int(effects.ranked('down')[0]), 'pairs': len(rows), "
        "'holds': sum(verdict(o) for *_, o in rows)}))")
    # textContent: cells scrolled out of view are not rendered (content-visibility) but are in the page
    text = page.locator(".jp-Notebook").text_content()
    assert f"{facts['rate']} of {facts['n']} beach scenes are now called 'street'" in text
    assert "most dimmed:" in text and "most brightened:" in text and "units 0-based" in text
    assert f"the finding holds for {facts['holds']} of {facts['pairs']} pairs" in text
