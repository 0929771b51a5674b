"""A background worker where the newest request wins.

Widgets submit slow jobs (a class accuracy over a held-out set, a unit ranking)
to a :class:`LatestWorker`. Jobs are keyed by kind; a new job of a kind replaces
a pending one of the same kind that has not started, and the result of a job
that was superseded while it ran is dropped (``on_done`` is not called). Jobs
run one at a time on one daemon thread, so the model copy they use is never
shared by two forward passes. ``wait()`` blocks until everything submitted has
finished, which is how tests and benchmarks synchronise with the widget.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from ._errors import ErrorArea

__all__ = ["LatestWorker"]


class LatestWorker:
    """Run the newest job of each kind on one background thread.

    Parameters
    ----------
    errors : ErrorArea
        Where an exception raised by a job or its ``on_done`` is shown.
    background : bool
        ``False`` runs every job synchronously inside :meth:`submit` (no thread).
    """

    def __init__(self, errors: ErrorArea, background: bool = True) -> None:
        self._errors = errors
        self.background = background
        self._cond = threading.Condition()
        self._pending: OrderedDict[str, tuple[int, Callable[[], Any], Callable[[Any], None]]] = OrderedDict()
        self._latest: dict[str, int] = {}
        self._running: str | None = None
        self._thread: threading.Thread | None = None
        self._counter = 0

    def submit(self, kind: str, job: Callable[[], Any], on_done: Callable[[Any], None]) -> None:
        """Run ``on_done(job())`` later, unless a newer job of ``kind`` is submitted first."""
        with self._cond:
            self._counter += 1
            ticket = self._counter
            self._latest[kind] = ticket
            if not self.background:
                pass
            else:
                self._pending.pop(kind, None)
                self._pending[kind] = (ticket, job, on_done)
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._loop, name="ndw-worker", daemon=False)
                    self._thread.start()
                self._cond.notify_all()
                return
        self._run(kind, ticket, job, on_done)

    def is_current(self, kind: str, ticket: int) -> bool:
        """Whether ``ticket`` is still the newest job of ``kind``."""
        return self._latest.get(kind) == ticket

    @property
    def busy(self) -> bool:
        """Whether a job is pending or running."""
        with self._cond:
            return bool(self._pending) or self._running is not None

    def wait(self, timeout: float | None = None) -> bool:
        """Block until no job is pending or running; ``False`` if ``timeout`` (s) ran out first."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and self._running is None, timeout)

    def _run(self, kind: str, ticket: int, job: Callable[[], Any], on_done: Callable[[Any], None]) -> None:
        result = self._errors.guard(job, f"background {kind}")()
        if result is not None and self.is_current(kind, ticket):
            self._errors.guard(on_done, f"update after {kind}")(result)

    def _loop(self) -> None:
        while True:
            with self._cond:
                if not self._pending:
                    self._thread = None
                    self._cond.notify_all()
                    return
                kind, (ticket, job, on_done) = self._pending.popitem(last=False)
                self._running = kind
            try:
                self._run(kind, ticket, job, on_done)
            finally:
                with self._cond:
                    self._running = None
                    self._cond.notify_all()
