"""Dependency checks: declared by the app, run in the background, cached for `/ready`.

Each check runs in its own task on its own interval with its own timeout, so a check that
raises, times out or hangs marks only itself failed. Probes never trigger a check. Checks are
written for the loop the app runs on: async callables on asyncio (uvloop) or trio, plain ones
on a thread.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from caddy_beacon._async_backend import BackgroundTask, LoopBackend
from caddy_beacon._native import Beacon, ConfigError

logger = logging.getLogger("caddy_beacon")

CheckFunction = Callable[[], Awaitable[object] | object]


@dataclass(frozen=True)
class Check:
    """A dependency check with its own settings.

    ``func`` is an async callable (or a plain one, which runs in a thread so it cannot block the
    event loop). It passes when it returns anything but ``False`` without raising; a returned
    string is shown as the check's ``output``.

    ``timeout``: seconds one run may take before it counts as failed (default 2).
    ``interval``: seconds between the end of one run and the start of the next (default 5).
    ``critical``: when False, a failure turns ``/ready`` to ``warn`` but keeps it 200.
    """

    func: CheckFunction
    timeout: float = 2.0
    interval: float = 5.0
    critical: bool = True

    def __post_init__(self) -> None:
        if not callable(self.func):
            raise ConfigError(f"a check must be callable, got {self.func!r}")
        for option in ("timeout", "interval"):
            value = getattr(self, option)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"Check.{option} must be a positive number of seconds, got {value!r}")


def normalize_checks(checks: Mapping[str, Check | CheckFunction] | None) -> dict[str, Check]:
    """Turns the ``checks=`` option into Check objects, with clear errors for bad entries."""
    if checks is None:
        return {}
    if not isinstance(checks, Mapping):
        raise ConfigError(f"checks must be a mapping of name -> async callable or Check, got {type(checks).__name__}")
    normalized: dict[str, Check] = {}
    for name, check in checks.items():
        if not isinstance(name, str):
            raise ConfigError(f"check names must be strings, got {name!r}")
        normalized[name] = check if isinstance(check, Check) else Check(check)
    return normalized


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class CheckRunner:
    """Runs the registered checks in the background on the app's event loop (asyncio or trio,
    see _async_backend) and reports to the native state."""

    def __init__(self, native: Beacon, checks: Mapping[str, Check]) -> None:
        self._native = native
        self._checks = dict(checks)
        self._tasks: list[BackgroundTask] = []
        self._last_passed: dict[str, bool | None] = {name: None for name in self._checks}
        for name, check in self._checks.items():
            native.register_check(name, check.critical)

    def start(self, backend: LoopBackend) -> None:
        """Starts one background task per check; the first runs begin at once."""
        if self._tasks:
            return
        self._tasks = [
            backend.spawn(functools.partial(self._run_forever, backend, name, check), name=f"caddy-beacon-check-{name}")
            for name, check in self._checks.items()
        ]

    async def stop(self) -> None:
        """Cancels the check tasks (a run in progress is abandoned)."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            await task.wait(timeout=1.0)

    async def _run_forever(self, backend: LoopBackend, name: str, check: Check) -> None:
        previous_ended: Callable[[], bool] = lambda: True  # noqa: E731
        while True:
            started = time.perf_counter()
            if not previous_ended():
                # The previous run ignored its cancellation (or is a thread stuck in a call):
                # do not pile up another one next to it.
                self._report(name, False, 0.0, "previous run is still hanging")
            else:
                outcome = await backend.run_with_timeout(check.func, check.timeout)
                previous_ended = outcome.ended
                elapsed = time.perf_counter() - started
                if outcome.timed_out:
                    self._report(name, False, elapsed, f"timed out after {check.timeout:g}s")
                elif outcome.error is not None:
                    self._report(name, False, elapsed, _describe(outcome.error))
                elif outcome.result is False:
                    self._report(name, False, elapsed, "check returned False")
                else:
                    self._report(name, True, elapsed, outcome.result if isinstance(outcome.result, str) else "")
            await backend.sleep(check.interval)

    def _report(self, name: str, passed: bool, elapsed: float, output: str) -> None:
        self._native.report_check(name, passed, elapsed, output)
        previous = self._last_passed[name]
        self._last_passed[name] = passed
        if previous is not passed:
            if passed:
                logger.info("readiness check %r passes", name)
            else:
                logger.warning("readiness check %r fails: %s", name, output)
