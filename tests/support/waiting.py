"""Waiting for a condition, always with a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def holds_for(condition: Callable[[], bool], seconds: float, interval: float = 0.1) -> bool:
    """True when `condition` holds at every look for `seconds`: an absence (no second log line,
    no second registration, nothing exported) observed for a while, failing at the first look
    that breaks it rather than only at the end."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not condition():
            return False
        time.sleep(interval)
    return condition()
