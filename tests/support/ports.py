"""Free ports for the servers a test starts: never one this run handed out before, and under
pytest-xdist from a range of the worker's own."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

_HANDED_OUT: set[int] = set()


# Under pytest-xdist each worker takes ports from a range of its own, below the kernel's
# ephemeral range (32768 and up, where outgoing connections get theirs): two workers never race
# for one port, and a server never finds its port taken by a client's connection.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
_WORKER_PORTS = 2000


def free_port() -> int:
    """A port nothing listens on, never one this test run has handed out before: two calls in a
    row may otherwise get the same port from the kernel, and Caddy (which listens with
    SO_REUSEPORT) would then serve its admin API and a site on one port, sharing connections."""
    if _WORKER.startswith("gw"):
        first = 12000 + int(_WORKER[2:]) * _WORKER_PORTS
        candidates: Iterator[int] = iter(range(first, first + _WORKER_PORTS))
    else:
        candidates = iter(lambda: 0, 1)  # the kernel's choice, forever
    for wanted in candidates:
        if wanted in _HANDED_OUT:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", wanted))
            except OSError:
                continue
            port = int(sock.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError(f"pytest-xdist worker {_WORKER} has used all {_WORKER_PORTS} of its ports")
