"""The example notebooks in a real browser: run all cells, then use the widgets like a user.

Each test opens one notebook from ``examples/`` (copied into the server's
temporary root) in JupyterLab, runs all its cells, and then clicks, selects and
paints with the mouse. What the page shows is checked against the notebook's
running kernel (``lab.kernel().json(code)`` executes code next to the
notebook's own variables), so a test fails when the browser and the Python
side disagree, not only when nothing happens.

Set ``NDW_SCREENSHOTS=docs/images`` to also write the widget pictures used by
the documentation (``widget_unit_browser.png``, ``widget_ablation_panel.png``);
normal runs write nothing into the repository. The paint canvas has its own
browser tests (``test_paint.py``), which use ``NB_PAINT``, ``_open_and_run`` and
``_screenshot`` from here.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.browser.conftest import REPO, copy_notebook
from tests.conftest import require

pytestmark = pytest.mark.browser

EXAMPLES = REPO / "examples"
NB_DISSECT = "01_dissect_a_classifier.ipynb"
NB_ABLATION = "02_ablation.ipynb"
NB_PAINT = "03_paint_a_gan.ipynb"


def _screenshot(page, locator, name: str, max_height: int = 1600) -> None:
    """Write a documentation picture of a widget when NDW_SCREENSHOTS names a folder.

    The widget is scrolled to the top of the notebook panel and the window is made
    tall enough to show it whole (up to ``max_height`` px), so no toolbar covers it.
    """
    folder = os.environ.get("NDW_SCREENSHOTS")
    if not folder:
        return
    out = Path(folder)
    if not out.is_absolute():
        out = REPO / out
    out.mkdir(parents=True, exist_ok=True)
    viewport = page.viewport_size
    try:
        for _ in range(2):  # resize, then scroll again in the new layout
            locator.evaluate("e => e.scrollIntoView({block: 'start'})")
            box = locator.bounding_box()
            height = min(box["height"], max_height)
            if box["y"] + height + 40 > page.viewport_size["height"]:  # 40: room for the status bar
                page.set_viewport_size({"width": viewport["width"], "height": int(box["y"] + height + 60)})
        page.wait_for_timeout(300)  # let the images repaint after the resize
        box = locator.bounding_box()
        page.screenshot(path=str(out / name), animations="disabled",
                        clip={"x": box["x"], "y": box["y"], "width": box["width"],
                              "height": min(box["height"], max_height)})
    finally:
        page.set_viewport_size(viewport)


def _open_and_run(lab, jupyter_root, notebook: str, ui: str = "lab") -> None:
    copy_notebook(EXAMPLES / notebook, jupyter_root)
    lab.open(notebook, ui=ui)
    lab.run_all(timeout=300_000)


def _tile_units(page) -> list[int]:
    """Unit numbers of the visible tiles, in page order (from each tile's 'unit N details' button)."""
    texts = page.locator(".ndw-unit-browser .ndw-unit-tile:visible .ndw-unit-open").all_inner_texts()
    return [int(re.search(r"unit (\d+)", t).group(1)) for t in texts]


def _wait_tiles(page, expected: list[int], timeout: float = 30_000) -> None:
    """Wait until the visible tiles show exactly the units ``expected``, in order."""
    page.wait_for_function(
        """(expected) => {
            const tiles = [...document.querySelectorAll('.ndw-unit-browser .ndw-unit-tile')]
                .filter(t => t.offsetParent !== null);
            const units = tiles.map(t => {
                const m = /unit (\\d+)/.exec(t.querySelector('.ndw-unit-open').innerText);
                return m ? Number(m[1]) : -1; });
            return JSON.stringify(units) === JSON.stringify(expected);
        }""",
        arg=expected,
        timeout=timeout,
    )


# ------------------------------------------------------------------------------------------
_NO_FIGURE_TEXT_JS = """
() => [...document.querySelectorAll('.jp-OutputArea-output')]
        .map(e => e.innerText).filter(t => t.includes('<Figure'))
"""


def _figures_are_images(page, at_least: int = 1) -> None:
    """Output figures are <img> elements and no output shows '<Figure size ...>' text."""
    assert page.evaluate(_NO_FIGURE_TEXT_JS) == []
    n = page.locator(".jp-OutputArea-output.jp-RenderedImage img").count()
    assert n >= at_least, f"{n} figure images in the outputs"


def _set_theme(page, theme: str) -> None:
    """Switch JupyterLab's theme and wait until the page has it."""
    page.evaluate("(t) => window.jupyterapp.commands.execute('apputils:change-theme', {theme: t})", theme)
    light = "false" if "Dark" in theme else "true"
    page.wait_for_function("(v) => document.body.dataset.jpThemeLight === v", arg=light, timeout=30_000)
    page.wait_for_timeout(300)


def _click_center(page, locator) -> None:
    """A user's click in the middle of an element (whatever lies on top of it there)."""
    locator.scroll_into_view_if_needed()
    box = locator.bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)


def _browser_detail_by_image_click(page, k) -> int:
    """Click the first visible tile's images: the detail view opens on that unit; returns it."""
    detail = page.locator(".ndw-unit-browser .ndw-detail")
    tile_unit = _tile_units(page)[0]
    _click_center(page, page.locator(".ndw-unit-tile:visible img.ndw-unit-images").first)
    detail.wait_for(state="visible")
    page.wait_for_function(
        "(u) => document.querySelector('.ndw-detail-title').innerText.includes('unit ' + u + ' ')",
        arg=tile_unit,
    )
    assert k.json("import json; print(json.dumps(browser.selected_unit))") == tile_unit
    for cls in ("ndw-detail-heatmap", "ndw-detail-concepts", "ndw-detail-hist"):
        assert page.locator(f"img.{cls}").get_attribute("src").startswith("blob:")
    return tile_unit


def test_unit_browser_sort_filter_page_detail(lab, jupyter_root):
    _open_and_run(lab, jupyter_root, NB_DISSECT)
    page, k = lab.page, lab.kernel()

    # the notebook runs on the kernel of this environment (the project's venv)
    import sys

    assert k.json("import sys, json; print(json.dumps(sys.prefix))") == sys.prefix
    _figures_are_images(page)  # d.unit_strip(...) at the end of the notebook

    # the concept summary above the browser shows its chart
    chart = page.locator(".ndw-concept-summary img.ndw-concept-chart")
    chart.wait_for()
    assert chart.get_attribute("src").startswith("blob:")

    first = k.json("import json; print(json.dumps(browser.page_units))")
    assert len(first) > 1
    _wait_tiles(page, first)
    # every visible tile shows its top images; "0-based" is said once, not on every tile
    srcs = page.locator(".ndw-unit-tile:visible img.ndw-unit-images").evaluate_all("els => els.map(e => e.src)")
    assert len(srcs) == len(first) and all(s.startswith("blob:") for s in srcs)
    titles = page.locator(".ndw-unit-tile:visible .ndw-unit-title").all_inner_texts()
    assert not any("0-based" in t for t in titles) and any("runner-up" in t for t in titles)

    # next page: the kernel moves on and the tiles show the next units
    page.locator(".ndw-page-next").click()
    page.wait_for_function("() => document.querySelector('.ndw-page-label').innerText.includes('page 2 of')")
    state = k.json("import json; print(json.dumps([browser.page, browser.page_units]))")
    assert state[0] == 1 and state[1] != first
    _wait_tiles(page, state[1])

    # sort by IoU: back to page 1, best unit first
    page.locator(".ndw-sort select").select_option("iou")
    k.wait_for("browser.sort_by == 'iou'")
    by_iou = k.json(
        "import json; print(json.dumps([browser.sort_by, browser.page, browser.page_units,"
        " [float(d.labels[u].iou) for u in browser.page_units]]))"
    )
    assert by_iou[0] == "iou" and by_iou[1] == 0
    assert by_iou[3] == sorted(by_iou[3], reverse=True)
    best = k.json("import json; print(json.dumps(max(range(d.num_units), key=lambda u: (d.labels[u].iou, -u))))")
    assert by_iou[2][0] == best
    _wait_tiles(page, by_iou[2])
    _screenshot(page, page.locator(".ndw-unit-browser"), "widget_unit_browser.png")

    # filter by concept text while typing (no Enter): only that concept's units remain
    concept = k.json("import json; print(json.dumps(d.labels[%d].concept))" % best)
    box = page.locator(".ndw-filter-concept input")
    box.click()
    box.press_sequentially(concept, delay=30)
    k.wait_for(f"browser.concept_filter == {concept!r}")
    page.wait_for_function(
        "(c) => [...document.querySelectorAll('.ndw-unit-tile')].filter(t => t.offsetParent !== null)"
        ".every(t => t.querySelector('.ndw-unit-title').innerText.includes(c))",
        arg=concept,
    )
    filtered = k.json("import json; print(json.dumps([browser.concept_filter, browser.visible_units,"
                      f" [u for u in range(d.num_units) if {concept!r} in d.labels[u].concept]]))")
    assert filtered[0] == concept
    assert sorted(filtered[1]) == filtered[2]
    _wait_tiles(page, k.json("import json; print(json.dumps(browser.page_units))"))

    # a filter nothing passes says so
    box.press_sequentially("zzz", delay=30)
    empty = page.locator(".ndw-unit-browser .ndw-empty")
    empty.wait_for(state="visible")
    assert "No unit matches" in empty.inner_text()
    for _ in range(3):
        box.press("Backspace")
    empty.wait_for(state="hidden")

    # click a tile's images: the detail view opens on that unit with its heatmap
    detail = page.locator(".ndw-detail")
    _browser_detail_by_image_click(page, k)
    page.locator(".ndw-detail-close").click()
    detail.wait_for(state="hidden")
    assert k.json("import json; print(json.dumps(browser.selected_unit))") is None

    # dark theme: charts are inverted (no white boxes), photographs are not
    _set_theme(page, "JupyterLab Dark")
    filters = page.evaluate("() => [getComputedStyle(document.querySelector('img.ndw-concept-chart')).filter,"
                            " getComputedStyle(document.querySelector('img.ndw-unit-images')).filter]")
    assert "invert" in filters[0] and filters[1] == "none", filters
    _set_theme(page, "JupyterLab Light")

    # projector mode: bigger thumbnails
    width = page.locator(".ndw-unit-tile:visible img.ndw-unit-images").first.bounding_box()["width"]
    page.locator(".ndw-unit-browser .ndw-projector-toggle").click()
    k.wait_for("browser.projector")
    page.wait_for_function(
        "(w) => document.querySelector('.ndw-unit-browser .ndw-unit-tile img.ndw-unit-images')"
        ".getBoundingClientRect().width > 1.4 * w", arg=width)


# ------------------------------------------------------------------------------------------
_EXPECTED_BARS = """
import json
from netdissect_widgets.intervene import predict as _predict
_img = panel.data[panel.image_index][0][None]
_p = _predict(model, _img, ablate={layer: panel.ablated} if panel.ablated else None).softmax(-1)[0]
_v, _i = _p.topk(5)
print(json.dumps([panel.ablated, [f"{100 * float(v):.1f}%" for v in _v],
                  [panel.class_names[int(i)] for i in _i]]))
"""


def _ablated_column(page, n: int) -> str:
    text = page.locator(".ndw-pred-bars").inner_text()
    word = "unit" if n == 1 else "units"
    return text.split(f"{n} {word} ablated", 1)[1]


def _check_bars(page, k, n: int) -> None:
    """The ablated column shows the kernel's ablated top-5."""
    page.locator(".ndw-pred-bars").scroll_into_view_if_needed()
    word = "unit" if n == 1 else "units"
    page.wait_for_function("(t) => document.querySelector('.ndw-pred-bars').innerText.includes(t)",
                           arg=f"{n} {word} ablated")
    ablated, percents, names = k.json(_EXPECTED_BARS)
    assert len(ablated) == n
    column = _ablated_column(page, n)
    for name, pct in zip(names, percents):
        assert re.search(re.escape(name) + r"\s*(✓)?\s*" + re.escape(pct), column), (name, pct, column)


def _wait_cells_on(page, units: list[int], timeout: float = 10_000) -> None:
    """Wait until exactly the unit selector's cells of ``units`` show as ablated (class ``ndw-on``)."""
    page.wait_for_function(
        "(units) => JSON.stringify([...document.querySelectorAll('.ndw-unit-cell.ndw-on')]"
        ".map(b => Number(b.dataset.unit)).sort((a, b) => a - b)) === JSON.stringify(units)",
        arg=sorted(units), timeout=timeout)


_CELL_COLOURS_JS = """
() => { const on = document.querySelector('.ndw-unit-cell.ndw-on');
        const off = document.querySelector('.ndw-unit-cell:not(.ndw-on)');
        const s = e => { const c = getComputedStyle(e); return [c.backgroundColor, c.color, c.textDecorationLine]; };
        return {on: s(on), off: s(off)}; }
"""


def test_ablation_panel_concepts_units_ranking_accuracy(lab, jupyter_root):
    _open_and_run(lab, jupyter_root, NB_ABLATION)
    page, k = lab.page, lab.kernel()
    # plot_ablation_curve(...) and the final scatter are images, not "<Figure size ...>" text
    _figures_are_images(page, at_least=2)
    bars = page.locator(".ndw-pred-bars")
    bars.wait_for()
    # the notebook's windowing skips the layout (and the text) of cells out of view: look at the panel
    page.locator(".ndw-ablation-panel").scroll_into_view_if_needed()
    page.wait_for_function("() => document.querySelector('.ndw-pred-bars').innerText.includes('0 units ablated')")
    before = bars.inner_text()

    # 1. "ablate all '<concept>' units": the predictions change, and the effect line says how
    concept = k.json("import json; print(json.dumps(panel.concept_control.value))")
    page.locator(".ndw-concept-ablate").click()
    group = k.json(f"import json; print(json.dumps(panel.units.groups[{concept!r}]))")
    k.wait_for(f"panel.ablated == {sorted(group)!r}")
    _check_bars(page, k, len(group))
    assert bars.inner_text() != before
    effect = page.locator(".ndw-effect")
    page.wait_for_function("() => document.querySelector('.ndw-effect').innerText.includes('→')")
    assert f"with {len(group)} units ablated" in effect.inner_text()
    _wait_cells_on(page, group)
    page.locator(".ndw-reset").click()
    _check_bars(page, k, 0)
    _wait_cells_on(page, [])

    # 2. click units in the selector: red when ablated, the kernel's list and the bars follow
    for i, u in enumerate([5, 17]):
        page.locator(f".ndw-unit-cell[data-unit='{u}']").click()
        _wait_cells_on(page, [5, 17][: i + 1])
    k.wait_for("panel.ablated == [5, 17]")
    _check_bars(page, k, 2)
    colours = page.evaluate(_CELL_COLOURS_JS)
    assert colours["on"][0] == "rgb(211, 47, 47)" and colours["on"][1] == "rgb(255, 255, 255)"
    assert colours["on"][2] == "line-through" and colours["off"][0] != colours["on"][0]
    page.locator(".ndw-unit-cell[data-unit='5']").click()
    k.wait_for("panel.ablated == [17]")
    _wait_cells_on(page, [17])

    # 3. rank units for the class of the image shown; remove its top k
    cls = k.json("import json; print(json.dumps([panel.rank_class, panel.data[panel.image_index][1]]))")
    assert cls[0] == cls[1]
    hint = page.locator(".ndw-topk-hint")
    assert "rank the units first" in hint.inner_text() and page.locator(".ndw-remove-topk").is_disabled()
    readout = page.locator(".ndw-topk .widget-readout")
    readout.click()
    page.keyboard.press("Control+A")
    page.keyboard.type("40")
    page.keyboard.press("Enter")
    k.wait_for("panel.k == 40")
    page.locator(".ndw-rank").click()
    page.locator(".ndw-ablation-panel .ndw-busy").wait_for(state="visible")  # progress while ranking
    page.wait_for_function("() => !document.querySelector('.ndw-remove-topk').disabled", timeout=180_000)
    assert "log-probability drop" in page.locator(".ndw-ranking").inner_text()
    page.locator(".ndw-remove-topk").click()
    top40 = k.json("import json; print(json.dumps(sorted(panel.ranking[:40].tolist())))")
    k.wait_for(f"panel.ablated == {top40!r}")
    _check_bars(page, k, 40)
    _wait_cells_on(page, top40)

    # 4. the held-out accuracy arrives in the background; the table shows the kernel's numbers
    page.wait_for_function(
        "() => document.querySelector('.ndw-accuracy-status').innerText.includes('with 40 ablated units')"
        " && !document.querySelector('.ndw-accuracy-status').innerText.includes('computing')", timeout=120_000)
    shown = page.locator(".ndw-accuracy tr").evaluate_all(
        "rows => rows.map(r => [...r.querySelectorAll('td')].map(td => td.innerText.trim()))"
        ".filter(cells => cells.length === 4)")
    expected_acc = k.json(
        "import json\nfrom netdissect_widgets.intervene import class_accuracy as _ca\n"
        "_acc = _ca(model, test_set, {layer: panel.ablated})\n"
        "print(json.dumps([[n, f'{100 * float(a):.1f}'] for n, a in zip(panel.class_names, _acc)]"
        " + [['mean', f'{100 * float(_acc.mean()):.1f}']]))")
    assert [[row[0], row[2]] for row in shown] == expected_acc
    # removing the class's own top units hurts that class
    row = shown[cls[0]]
    assert float(row[2]) < float(row[1]), shown
    _screenshot(page, page.locator(".ndw-ablation-panel"), "widget_ablation_panel.png", max_height=1400)

    # dark theme: the ablated cells stay solid red, the others follow the theme, charts are inverted
    _set_theme(page, "JupyterLab Dark")
    dark = page.evaluate(_CELL_COLOURS_JS)
    assert dark["on"][0] == "rgb(211, 47, 47)" and dark["off"][0] != colours["off"][0]
    _set_theme(page, "JupyterLab Light")


# ------------------------------------------------------------------------------------------
def test_widgets_in_notebook7(lab, jupyter_root):
    import importlib.util

    require(importlib.util.find_spec("notebook") is not None,
            "Notebook 7 is not installed (pip install 'notebook>=7')")
    _open_and_run(lab, jupyter_root, NB_DISSECT, ui="notebook")
    page, k = lab.page, lab.kernel()
    assert "jupyter-notebook" in page.url or "/notebooks/" in page.url
    first = k.json("import json; print(json.dumps(browser.page_units))")
    _wait_tiles(page, first)
    srcs = page.locator(".ndw-unit-tile:visible img.ndw-unit-images").evaluate_all("els => els.map(e => e.src)")
    assert len(srcs) == len(first) and all(s.startswith("blob:") for s in srcs)
    _figures_are_images(page)
    _browser_detail_by_image_click(page, k)
    lab.close()
    lab.server.shutdown_kernels()

    _open_and_run(lab, jupyter_root, NB_ABLATION, ui="notebook")
    page, k = lab.page, lab.kernel()
    _figures_are_images(page, at_least=2)
    page.locator(".ndw-ablation-panel").scroll_into_view_if_needed()
    concept = k.json("import json; print(json.dumps(panel.concept_control.value))")
    page.locator(".ndw-concept-ablate").click()
    group = k.json(f"import json; print(json.dumps(panel.units.groups[{concept!r}]))")
    k.wait_for(f"panel.ablated == {sorted(group)!r}")
    _check_bars(page, k, len(group))
    _wait_cells_on(page, group)
