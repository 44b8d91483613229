"""Several worker processes, one instance: which processes share metrics, the event-loop
watchdog, and the side port.

Workers of one gunicorn, ``uvicorn --workers``, ``hypercorn --workers`` or granian instance
share their metrics through a file in ``/dev/shm`` named after the instance's main process
(its pid and start time, so a reused pid never joins a dead instance's numbers). The main
process is recognised by its command line: a worker whose parent runs one of those servers
belongs to the parent's instance; a gunicorn master that imports the app itself
(``--preload``) creates the region before forking. Anything else is a single process.
``BEACON_SHARED_METRICS=off`` keeps every process on its own.

The event-loop watchdog runs on a thread of its own (beacon_core's loop_watch): it looks at the
loop's thread every 100 ms and sends a probe only to a busy loop, so an idle one is never woken.
"""

from __future__ import annotations

import logging
import os
import threading

from caddy_beacon._async_backend import LoopBackend
from caddy_beacon._native import Beacon, process_command_line, process_start_ticks

log = logging.getLogger("caddy_beacon")

_SERVERS = ("gunicorn", "uvicorn", "hypercorn", "granian")


def _runs_a_server(pid: int, servers: tuple[str, ...] = _SERVERS) -> bool:
    """True when `pid` runs one of `servers` (its executable, its script, `-m NAME`, or
    gunicorn's retitled "gunicorn: master [...]")."""
    argv = process_command_line(pid)
    if argv and argv[0].startswith("gunicorn:"):
        return "gunicorn" in servers
    head = argv[:3]
    if {os.path.basename(part) for part in head} & set(servers):
        return True
    return any(a == "-m" and b in servers for a, b in zip(head, head[1:], strict=False))


def worker_of(server: str) -> bool:
    """True when this process is a worker that `server` started (its parent runs it)."""
    return _runs_a_server(os.getppid(), (server,))


def instance_key() -> str | None:
    """The name of the metrics region this process shares, or None to keep its own."""
    setting = os.environ.get("BEACON_SHARED_METRICS", "auto").strip().lower()
    if setting in {"off", "false", "0", "no"}:
        return None
    parent, me = os.getppid(), os.getpid()
    if _runs_a_server(parent):
        owner = parent  # a worker: its server's main process names the instance
    elif _runs_a_server(me):
        owner = me  # the main process itself (single process, or gunicorn --preload)
    else:
        return None
    ticks = process_start_ticks(owner)
    if ticks is None:
        return None
    return f"{os.getuid()}-{owner}-{ticks}"


class Watchdog:
    """Owns the event-loop watchdog of one worker (its thread runs in Rust)."""

    def __init__(self, native: Beacon) -> None:
        self._native = native

    def start(self, backend: LoopBackend) -> None:
        """Called on the loop: its thread is the one watched."""
        self._native.watch_event_loop(backend.post(), threading.get_native_id())

    def stop(self) -> None:
        self._native.stop_watching_event_loop()


def start_side_port(native: Beacon, host: str, port: int) -> None:
    """Starts (once per process) the thread that serves /health, /ready and /metrics."""
    state = native.start_side_port(host, port)
    if state == "serving":
        log.info("caddy_beacon: side port serving /health, /ready, /metrics on %s:%d (pid %d)", host, port, os.getpid())
    elif state == "standby":
        log.debug("caddy_beacon: side port %s:%d is served by another worker; standing by", host, port)
