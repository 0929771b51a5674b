"""Fixtures for the real-browser tests: one JupyterLab server, one headless Chromium.

The browser suite opens the example notebooks in JupyterLab 4 (and once in
Notebook 7), runs all their cells in the browser and interacts with the widgets
the way a user does: mouse strokes on a canvas, clicks on buttons and tiles.

Everything expensive is shared by the whole session:

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

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.conftest import require

CHROMIUM = os.environ.get("NDW_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
SERVER_START_TIMEOUT = 60.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class JupyterServer:
    """A JupyterLab server process with a small REST client."""

    def __init__(self, root: Path, work: Path) -> None:
        self.root = root
        self.port = _free_port()
        self.token = secrets.token_hex(16)
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.runtime_dir = work / "runtime"
        env = dict(os.environ)
        for var, sub in [
            ("JUPYTER_CONFIG_DIR", "config"),
            ("JUPYTER_DATA_DIR", "data"),
            ("JUPYTER_RUNTIME_DIR", "runtime"),
            ("JUPYTERLAB_SETTINGS_DIR", "lab-settings"),
            ("JUPYTERLAB_WORKSPACES_DIR", "lab-workspaces"),
            ("IPYTHONDIR", "ipython"),
        ]:
            (work / sub).mkdir(parents=True, exist_ok=True)
            env[var] = str(work / sub)
        env.pop("JUPYTER_TOKEN", None)
        # kernels import this working tree's package, installed or not
        env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p])
        # no "fetch Jupyter news?" pop-up over the widgets (it would need the network anyway)
        notif = work / "lab-settings" / "@jupyterlab" / "apputils-extension"
        notif.mkdir(parents=True, exist_ok=True)
        (notif / "notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false", "checkForUpdates": False}))
        env["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
        cmd = [
            sys.executable, "-m", "jupyterlab",
            "--no-browser", "--allow-root",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={root}",
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--expose-app-in-browser",
            "--JupyterNotebookApp.expose_app_in_browser=True",
        ]
        self.log_path = work / "server.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            cmd, env=env, cwd=str(root), stdout=self._log, stderr=subprocess.STDOUT
        )
        self._wait_ready()

    # -- REST -------------------------------------------------------------
    def api(self, method: str, path: str, body: Any = None) -> Any:
        """Call the server's REST API; returns the decoded JSON (or None)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"{self.base_url}{path}", data=data, method=method,
            headers={"Authorization": f"token {self.token}",
                     "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited early; log:\n{self.log()}")
            try:
                self.api("GET", "/api/status")
                return
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.25)
        raise RuntimeError(f"JupyterLab did not answer in {SERVER_START_TIMEOUT} s; log:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def url(self, path: str) -> str:
        sep = "&" if "?" in path else "?"
        return f"{self.base_url}{path}{sep}token={self.token}"

    def kernel_id_for(self, notebook: str) -> str:
        """Id of the kernel of the session running ``notebook`` (path relative to root)."""
        for s in self.api("GET", "/api/sessions"):
            if s.get("path") == notebook and s.get("kernel"):
                return s["kernel"]["id"]
        raise KeyError(f"no running session for {notebook!r}")

    def shutdown_kernels(self) -> None:
        for s in self.api("GET", "/api/sessions"):
            self.api("DELETE", f"/api/sessions/{s['id']}")
        for k in self.api("GET", "/api/kernels"):
            self.api("DELETE", f"/api/kernels/{k['id']}")

    def stop(self) -> None:
        try:
            if self.proc.poll() is None:
                try:
                    self.shutdown_kernels()
                except (urllib.error.URLError, OSError):
                    pass
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=10)
        finally:
            self._log.close()


class KernelRunner:
    """Execute code in a kernel the server started (shares the notebook's variables)."""

    def __init__(self, connection_file: Path) -> None:
        from jupyter_client import BlockingKernelClient

        self.client = BlockingKernelClient(connection_file=str(connection_file))
        self.client.load_connection_file()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=30)

    def run(self, code: str, timeout: float = 120.0) -> str:
        """Run ``code``; return its stdout. Raises RuntimeError with the traceback on error."""
        out: list[str] = []
        errors: list[str] = []

        def hook(msg: dict) -> None:
            t = msg["msg_type"]
            c = msg["content"]
            if t == "stream" and c.get("name") == "stdout":
                out.append(c["text"])
            elif t == "error":
                errors.append("\n".join(c.get("traceback", [])) or c.get("evalue", ""))

        reply = self.client.execute_interactive(
            code, timeout=timeout, output_hook=hook, store_history=False, allow_stdin=False
        )
        if errors or reply["content"].get("status") != "ok":
            raise RuntimeError("kernel code failed:\n" + "\n".join(errors))
        return "".join(out)

    def json(self, code: str, timeout: float = 120.0) -> Any:
        """Run ``code`` whose last stdout line is JSON; return it decoded."""
        lines = [ln for ln in self.run(code, timeout).splitlines() if ln.strip()]
        if not lines:
            raise RuntimeError("kernel code printed nothing")
        return json.loads(lines[-1])

    def wait_for(self, expression: str, timeout: float = 30.0) -> None:
        """Poll until the Python ``expression`` is true in the kernel.

        A widget change made in the browser reaches the kernel as a comm message,
        with no ordering against this client's requests: wait for it before reading.
        """
        deadline = time.monotonic() + timeout
        code = f"import json as _json; print(_json.dumps(bool({expression})))"
        while not self.json(code):
            if time.monotonic() > deadline:
                raise AssertionError(f"kernel: {expression!r} still false after {timeout} s")
            time.sleep(0.2)

    def close(self) -> None:
        self.client.stop_channels()


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
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    pw = sync_playwright().start()
    try:
        ctx = pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1400, "height": 1000},
        )
        ctx.set_default_timeout(60_000)
        try:
            yield ctx
        finally:
            ctx.close()
    finally:
        pw.stop()


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
