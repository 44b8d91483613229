"""Draining on SIGTERM: `/ready` turns 503 at once, the app keeps serving for ``drain_seconds``,
and only then does the server's own SIGTERM handling (uvicorn's graceful shutdown) proceed.

That window lets a proxy's active health check take the instance out of rotation before it
stops accepting connections. A second SIGTERM during the window shuts down at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from types import FrameType
from typing import Any

from caddy_beacon._native import Beacon

logger = logging.getLogger("caddy_beacon")

_Handler = Any  # what signal.signal returns: a callable, SIG_DFL, SIG_IGN or None


class DrainController:
    """Owns the SIGTERM handler of one middleware instance while the app runs."""

    def __init__(self, native: Beacon, drain_seconds: float) -> None:
        self._native = native
        self._drain_seconds = drain_seconds
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous: _Handler = None
        self._installed = False
        self._forwarded = False
        self._timer: asyncio.TimerHandle | None = None

    def install(self) -> None:
        """Wraps the current SIGTERM handler (the server's). Python only allows this from the
        main thread; elsewhere the server's handling is left alone."""
        if self._installed or threading.current_thread() is not threading.main_thread():
            return
        self._loop = asyncio.get_running_loop()
        self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        self._installed = True

    def uninstall(self) -> None:
        """Puts the previous handler back, unless someone replaced ours in the meantime."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._installed and threading.current_thread() is threading.main_thread():
            if signal.getsignal(signal.SIGTERM) == self._on_sigterm:
                signal.signal(signal.SIGTERM, self._previous)
        self._installed = False

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        # Runs between two bytecodes of the main thread: only flip state and hand the rest to
        # the event loop, which is where logging and timers are safe.
        if self._forwarded:
            return
        if self._native.draining or self._drain_seconds <= 0 or self._loop is None or self._loop.is_closed():
            self._forward(signum, frame)
            return
        self._native.set_draining(True)
        self._loop.call_soon_threadsafe(self._start_window, signum, frame)

    def _start_window(self, signum: int, frame: FrameType | None) -> None:
        logger.warning(
            "SIGTERM: draining; /ready answers 503 and requests are served for %gs before shutdown",
            self._drain_seconds,
        )
        assert self._loop is not None
        self._timer = self._loop.call_later(self._drain_seconds, self._forward, signum, frame)

    def _forward(self, signum: int, frame: FrameType | None) -> None:
        if self._forwarded:
            return
        self._forwarded = True
        self._timer = None
        previous = self._previous
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_IGN:
            return
        else:
            # No Python handler before us: behave as the default would, and terminate.
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
