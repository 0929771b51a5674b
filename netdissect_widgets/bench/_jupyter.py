"""A JupyterLab server and headless Chromium, for the browser tests and the browser benchmark.

``JupyterServer(root, work)`` starts JupyterLab from *this* Python (so its
``python3`` kernel spec is this environment's) on 127.0.0.1 with a free port, a
random token and ``JUPYTER_*`` folders under ``work``, serving ``root``; ``stop()``
deletes its kernels, then sends SIGTERM to its PID. ``KernelRunner`` is a second
client of a notebook's running kernel (through the connection file the server
keeps in its runtime folder). ``CHROMIUM`` / ``CHROMIUM_ARGS``: Debian's
``/usr/bin/chromium`` (``NDW_CHROMIUM`` overrides it), flags that work as root;
never ``playwright install``.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

__all__ = ["JupyterServer", "KernelRunner", "chromium_context", "CHROMIUM", "CHROMIUM_ARGS", "REPO"]

#: the checkout this package runs from (kernels import this working tree's package)
REPO = Path(__file__).resolve().parents[2]
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
SERVER_START_TIMEOUT = 60.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class JupyterServer:
    """A JupyterLab server process with a small REST client."""

    def __init__(self, root: Path, work: Path, env: dict[str, str] | None = None) -> None:
        self.root = root
        self.port = _free_port()
        self.token = secrets.token_hex(16)
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.runtime_dir = work / "runtime"
        env = dict(os.environ, **(env or {}))
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
        env.pop("MPLBACKEND", None)  # as a user's kernel starts: figures must not rely on a test backend
        # kernels import this working tree's package, installed or not
        env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p])
        # no "fetch Jupyter news?" pop-up over the widgets (it would need the network anyway)
        notif = work / "lab-settings" / "@jupyterlab" / "apputils-extension"
        notif.mkdir(parents=True, exist_ok=True)
        (notif / "notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false", "checkForUpdates": False}))
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


@contextlib.contextmanager
def chromium_context(profile: Path, width: int = 1400, height: int = 1000) -> Iterator[Any]:
    """A persistent headless Chromium context (playwright) with its profile in ``profile``."""
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    try:
        ctx = pw.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True,
            viewport={"width": width, "height": height})
        ctx.set_default_timeout(60_000)
        try:
            yield ctx
        finally:
            ctx.close()
    finally:
        pw.stop()
