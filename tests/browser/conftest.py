"""Fixtures for the real-browser tests: one JupyterLab server, one headless Chromium.

The browser suite opens the example notebooks in JupyterLab 4 (and once in
Notebook 7), runs all their cells in the browser and interacts with the widgets
the way a user does: mouse strokes on a canvas, clicks on buttons and tiles.

Everything expensive is shared by the whole session (the server, the kernel
client and the browser launch live in ``netdissect_widgets/bench/_jupyter.py``,
shared with ``python -m netdissect_widgets bench browser``):

* ``jupyter_server`` -- JupyterLab started from *this* Python (the project's
  venv, so its ``python3`` kernel spec is used) on 127.0.0.1 with a free port,
  a random token and temporary ``JUPYTER_*`` folders, serving a temporary root
  folder into which the example notebooks are copied (the repository is never
  written to). Shut down by deleting its kernels, then SIGTERM to its PID.
* ``browser_context`` -- a persistent Chromium context (Debian's
  ``/usr/bin/chromium``, never ``playwright install``).

Per test, ``lab`` opens a fresh tab; when the test fails a full-page
screenshot goes to ``test-artifacts/`` (git-ignored). ``Lab`` bundles the page
and the server with the small vocabulary the tests speak: open a notebook, run
all cells, wait for the kernel, execute code in the notebook's running kernel.

``lab.kernel()`` is a second client of the notebook's running kernel (through
the connection file the server keeps in its temporary runtime folder): tests
run Python next to the notebook's own variables to check what the page shows.

Missing Chromium or playwright skips these tests locally and fails them in CI
(``tests.conftest.require``). ``NDW_CHROMIUM`` overrides the browser's path.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Iterator

import pytest

from netdissect_widgets.bench._jupyter import CHROMIUM, JupyterServer, KernelRunner, chromium_context
from tests.conftest import require

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"

_ERRORS_JS = """
() => {
  const nb = window.jupyterapp.shell.currentWidget;
  const out = [];
  for (const cell of nb.content.model.cells) {
    if (cell.type !== 'code') continue;
    const outputs = cell.outputs.toJSON();
    for (const o of outputs) {
      if (o.output_type === 'error') out.push(o.ename + ': ' + o.evalue);
    }
  }
  return out;
}
"""

_UNEXECUTED_JS = """
() => {
  const nb = window.jupyterapp.shell.currentWidget;
  let n = 0;
  for (const cell of nb.content.model.cells) {
    if (cell.type === 'code' && cell.sharedModel.getSource().trim() && cell.executionCount == null) n++;
  }
  return n;
}
"""


class Lab:
    """What a test needs to drive a notebook in the browser."""

    def __init__(self, page: Any, server: JupyterServer) -> None:
        self.page = page
        self.server = server
        self._runners: dict[str, KernelRunner] = {}
        self.notebook: str | None = None
        self.ui = "lab"

    # -- notebooks ----------------------------------------------------------
    def open(self, notebook: str, ui: str = "lab", timeout: float = 90_000) -> None:
        """Open ``notebook`` (relative to the server root) in JupyterLab or Notebook 7."""
        self.notebook = notebook
        self.ui = ui
        if ui == "lab":
            # `reset` starts from an empty workspace: notebooks from earlier tests stay closed.
            self.page.goto(self.server.url(f"/lab/tree/{notebook}?reset"))
        elif ui == "notebook":
            self.page.goto(self.server.url(f"/notebooks/{notebook}"))
        else:
            raise ValueError(f"ui must be 'lab' or 'notebook', got {ui!r}")
        self.page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=timeout)
        self.wait_idle(timeout)

    def wait_idle(self, timeout: float = 120_000) -> None:
        """Wait until the kernel is idle.

        JupyterLab: the status bar text (its toolbar indicator says idle too early).
        Notebook 7 has no status bar: ask the notebook's session context.
        """
        if self.ui == "lab":
            js = """() => [...document.querySelectorAll('.jp-StatusBar-TextItem')]
                    .some(e => e.textContent.includes('| Idle'))"""
        else:
            js = """() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
                    const k = w && w.sessionContext && w.sessionContext.session
                              && w.sessionContext.session.kernel;
                    return !!k && k.connectionStatus === 'connected' && k.status === 'idle'; }"""
        self.page.wait_for_function(js, timeout=timeout)

    def run_all(self, timeout: float = 240_000) -> None:
        """Run all cells through the app's command; fail with the errors if any cell raised."""
        self.page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
                                    " && window.jupyterapp.shell.currentWidget.content", timeout=60_000)
        self.page.evaluate("() => { window.__ndwRun = window.jupyterapp.commands"
                           ".execute('notebook:run-all-cells').then(r => (window.__ndwDone = String(r)),"
                           " e => (window.__ndwDone = 'error: ' + e)); }")
        self.page.wait_for_function("() => window.__ndwDone !== undefined", timeout=timeout)
        done = self.page.evaluate("() => window.__ndwDone")
        errors = self.page.evaluate(_ERRORS_JS)
        if errors:
            raise AssertionError(f"cells raised in the browser: {errors}")
        if done.startswith("error"):
            raise AssertionError(f"run-all-cells failed in the browser: {done}")
        left = self.page.evaluate(_UNEXECUTED_JS)
        assert left == 0, f"{left} code cells did not execute"
        self.page.evaluate("() => { delete window.__ndwDone; }")
        self.wait_idle(timeout)

    # -- kernel ---------------------------------------------------------------
    def kernel(self, notebook: str | None = None) -> KernelRunner:
        """A client of the running kernel of ``notebook`` (default: the one opened last)."""
        nb = notebook or self.notebook
        if nb is None:
            raise ValueError("open a notebook first")
        if nb not in self._runners:
            kid = self.server.kernel_id_for(nb)
            cf = self.server.runtime_dir / f"kernel-{kid}.json"
            self._runners[nb] = KernelRunner(cf)
        return self._runners[nb]

    def close(self) -> None:
        for r in self._runners.values():
            r.close()
        self._runners.clear()


# -- pytest wiring ----------------------------------------------------------------

@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


def _playwright_available() -> bool:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="session")
def browser_requirements() -> None:
    require(_playwright_available(), "python playwright is not installed (pip install playwright)")
    require(os.path.exists(CHROMIUM),
            f"Chromium not found at {CHROMIUM} (apt-get install chromium); never `playwright install`")


@pytest.fixture(scope="session")
def jupyter_root(tmp_path_factory) -> Path:
    """The server's root folder: a temporary copy target for notebooks."""
    return tmp_path_factory.mktemp("lab-root")


@pytest.fixture(scope="session")
def jupyter_server(browser_requirements, jupyter_root, tmp_path_factory) -> Iterator[JupyterServer]:
    work = tmp_path_factory.mktemp("lab-dirs")
    server = JupyterServer(jupyter_root, work)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def browser_context(browser_requirements, tmp_path_factory):
    with chromium_context(tmp_path_factory.mktemp("chromium-profile")) as ctx:
        yield ctx


def _save_failure(page: Any, request, console: list[str], server: JupyterServer | None) -> None:
    """Screenshot + browser console (+ server log) of a failed test into test-artifacts/."""
    ARTIFACTS.mkdir(exist_ok=True)
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in request.node.name)
    try:
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    except Exception as exc:  # best effort: never hide the test's own failure
        console.append(f"screenshot failed: {exc}")
    (ARTIFACTS / f"{name}.console.txt").write_text("\n".join(console))
    if server is not None:
        (ARTIFACTS / f"{name}.server.log").write_text(server.log())


@pytest.fixture
def lab(browser_context, jupyter_server, request) -> Iterator[Lab]:
    """A fresh browser tab on the shared server; screenshot on failure, kernels freed after."""
    page = browser_context.new_page()
    console: list[str] = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    lab = Lab(page, jupyter_server)
    try:
        yield lab
    finally:
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            _save_failure(page, request, console, jupyter_server)
        lab.close()
        page.close()
        # free the kernel (torch + models) before the next notebook opens
        jupyter_server.shutdown_kernels()


def copy_notebook(src: Path, root: Path) -> str:
    """Copy an example notebook into the server root; returns its path relative to root."""
    shutil.copy(src, root / src.name)
    return src.name
