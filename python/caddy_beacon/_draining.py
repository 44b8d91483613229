"""Draining on SIGTERM: `/ready` turns 503 at once, the app keeps serving for ``drain_seconds``,
and only then does the server's own SIGTERM handling (uvicorn's graceful shutdown) proceed.

That window lets a proxy's active health check take the instance out of rotation before it
stops accepting connections. A second SIGTERM during the window shuts down at once.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from caddy_beacon._async_backend import BackgroundTask, LoopBackend
from caddy_beacon._native import Beacon

logger = logging.getLogger("caddy_beacon")

_Handler = Any  # what signal.signal returns: a callable, SIG_DFL, SIG_IGN or None


class DrainController:
    """Owns the SIGTERM handler of one middleware instance while the app runs."""

    def __init__(self, native: Beacon, drain_seconds: float) -> None:
        self._native = native
        self._drain_seconds = drain_seconds
        self._backend: LoopBackend | None = None
        self._post: Callable[..., object] | None = None
        self._previous: _Handler = None
        self._installed = False
        self._forwarded = False
        self._window: BackgroundTask | None = None

    def install(self, backend: LoopBackend, server_stops_workers_itself: bool = False) -> str | None:
        """Wraps the current SIGTERM handler (the server's). Returns None, or why draining
        cannot work in this worker: Python lets only the main thread handle signals; some
        servers stop their workers without a signal to them (`server_stops_workers_itself`,
        hypercorn's workers); a loop that dispatches SIGTERM itself (`add_signal_handler`) can
        be wrapped only when it is asyncio's own (uvloop keeps its handlers out of reach)."""
        if self._installed:
            return None
        if server_stops_workers_itself:
            return "the server stops its workers through its own channel, not with a SIGTERM to them"
        if threading.current_thread() is not threading.main_thread():
            return "the app does not run on the main thread, where Python handles signals"
        previous: _Handler = signal.getsignal(signal.SIGTERM)
        loop = getattr(backend, "loop", None)
        loop_handlers = getattr(loop, "_signal_handlers", None)
        if isinstance(loop_handlers, dict) and signal.SIGTERM in loop_handlers:
            # asyncio's own loop dispatches SIGTERM to a callback (loop.add_signal_handler, as
            # granian and hypercorn do), reading the signal from its wakeup socket whatever
            # Python handler is set: take the callback over, and run it when the window ends.
            handle = loop_handlers[signal.SIGTERM]
            assert loop is not None
            loop.remove_signal_handler(signal.SIGTERM)
            previous = lambda signum, frame: handle._run()  # noqa: E731
        elif loop is not None and getattr(previous, "__self__", None) is loop:
            # uvloop dispatches it the same way, and keeps the callback where it cannot be
            # taken over.
            return f"the event loop ({type(loop).__module__}) handles SIGTERM itself, out of reach (with granian: --loop asyncio)"
        self._backend, self._post = backend, backend.post()
        signal.signal(signal.SIGTERM, self._on_sigterm)
        self._previous = previous
        self._installed = True
        return None

    def uninstall(self) -> None:
        """Puts the previous handler back, unless someone replaced ours in the meantime."""
        if self._window is not None:
            self._window.cancel()
            self._window = None
        if self._installed and threading.current_thread() is threading.main_thread():
            if signal.getsignal(signal.SIGTERM) == self._on_sigterm:
                signal.signal(signal.SIGTERM, self._previous)
        self._installed = False

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        # Runs between two bytecodes of the main thread: only flip state and hand the rest to
        # the event loop, which is where logging and timers are safe.
        if self._forwarded:
            return
        if self._native.draining or self._drain_seconds <= 0 or self._post is None:
            self._forward(signum, frame)
            return
        self._native.set_draining(True)
        try:
            self._post(self._start_window, signum, frame)
        except RuntimeError:  # the loop has closed (asyncio), or its run finished (trio)
            self._forward(signum, frame)

    def _start_window(self, signum: int, frame: FrameType | None) -> None:
        logger.warning(
            "SIGTERM: draining; /ready answers 503 and requests are served for %gs before shutdown",
            self._drain_seconds,
        )
        backend = self._backend
        assert backend is not None

        async def window() -> None:
            await backend.sleep(self._drain_seconds)
            self._forward(signum, frame)

        self._window = backend.spawn(window, name="caddy-beacon drain window")

    def _forward(self, signum: int, frame: FrameType | None) -> None:
        if self._forwarded:
            return
        self._forwarded = True
        self._window = None
        previous = self._previous
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_IGN:
            return
        else:
            # No Python handler before us: behave as the default would, and terminate.
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
