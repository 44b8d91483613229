"""Several worker processes, one instance: which processes share metrics, the event-loop
watchdog, and the side port.

Workers of one gunicorn or ``uvicorn --workers`` instance share their metrics through a file in
``/dev/shm`` named after the instance's main process (its pid and start time, so a reused pid
never joins a dead instance's numbers). The main process is recognised by its command line: a
worker whose parent runs gunicorn or uvicorn belongs to the parent's instance; a gunicorn
master that imports the app itself (``--preload``) creates the region before forking. Anything
else is a single process. ``BEACON_SHARED_METRICS=off`` keeps every process on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

from caddy_beacon._native import Beacon, process_start_ticks

log = logging.getLogger("caddy_beacon")

_SERVERS = ("gunicorn", "uvicorn")

#: The event-loop watchdog's period, in seconds.
HEARTBEAT_INTERVAL = 0.1


def _command_line(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            return [part.decode(errors="replace") for part in file.read().split(b"\0") if part]
    except OSError:
        return []


def _runs_a_server(pid: int) -> bool:
    """True when `pid` is a gunicorn or uvicorn process (its executable, its script, `-m NAME`,
    or gunicorn's retitled "gunicorn: master [...]")."""
    argv = _command_line(pid)
    if argv and argv[0].startswith("gunicorn:"):
        return True
    head = argv[:3]
    names = {os.path.basename(part) for part in head}
    if names & set(_SERVERS):
        return True
    return any(a == "-m" and b in _SERVERS for a, b in zip(head, head[1:]))


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


async def watch_event_loop(native: Beacon, interval: float = HEARTBEAT_INTERVAL) -> None:
    """Reports to Rust, every `interval`, that this loop runs and how late it woke. A loop that
    stops reporting is what the side port's /health sees as stalled."""
    loop = asyncio.get_running_loop()
    expected = loop.time() + interval
    native.heartbeat(0.0, interval)
    while True:
        await asyncio.sleep(interval)
        now = loop.time()
        native.heartbeat(max(0.0, now - expected), interval)
        expected = now + interval


class Watchdog:
    """Owns the watchdog task of one worker."""

    def __init__(self, native: Beacon) -> None:
        self._native = native
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(watch_event_loop(self._native), name="caddy-beacon watchdog")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def start_side_port(native: Beacon, host: str, port: int) -> None:
    """Starts (once per process) the thread that serves /health, /ready and /metrics."""
    state = native.start_side_port(host, port)
    if state == "serving":
        log.info("caddy_beacon: side port serving /health, /ready, /metrics on %s:%d (pid %d)", host, port, os.getpid())
    elif state == "standby":
        log.debug("caddy_beacon: side port %s:%d is served by another worker; standing by", host, port)
