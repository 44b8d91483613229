"""Dependency checks: declared by the app, run in the background, cached for `/ready`.

Each check runs in its own task on its own interval with its own timeout, so a check that
raises, times out or hangs marks only itself failed. Probes never trigger a check.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Union

from caddy_beacon._native import Beacon, ConfigError

logger = logging.getLogger("caddy_beacon")

CheckFunction = Callable[[], Union[Awaitable[object], object]]


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


def _is_async(func: CheckFunction) -> bool:
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(getattr(func, "__call__", None))


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class CheckRunner:
    """Runs the registered checks on the running event loop and reports to the native state."""

    def __init__(self, native: Beacon, checks: Mapping[str, Check]) -> None:
        self._native = native
        self._checks = dict(checks)
        self._tasks: list[asyncio.Task[None]] = []
        self._last_passed: dict[str, bool | None] = {name: None for name in self._checks}
        for name, check in self._checks.items():
            native.register_check(name, check.critical)

    def start(self) -> None:
        """Starts one task per check on the running loop; the first runs begin at once."""
        if self._tasks:
            return
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._run_forever(name, check), name=f"caddy-beacon-check-{name}")
            for name, check in self._checks.items()
        ]

    async def stop(self) -> None:
        """Cancels the check tasks (a run in progress is abandoned)."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)

    def _start_run(self, check: Check) -> tuple[asyncio.Future[object], Callable[[], bool]]:
        """Starts one run; returns its result future and a test of whether the run has really
        ended (a cancelled future may hide a coroutine or thread that is still stuck)."""
        loop = asyncio.get_running_loop()
        if _is_async(check.func):
            task = asyncio.ensure_future(self._call_async(check.func))
            return task, task.done
        # A plain callable may block: run it on a daemon thread, so a hung one can neither block
        # the loop nor keep the process from exiting.
        future: asyncio.Future[object] = loop.create_future()
        ended = threading.Event()

        def run() -> None:
            try:
                result = check.func()
                if inspect.iscoroutine(result):  # e.g. `lambda: db.ping()`: await it on the loop
                    result = asyncio.run_coroutine_threadsafe(result, loop).result()
            except BaseException as error:  # reported as the check's failure
                loop.call_soon_threadsafe(_settle, future, None, error)
            else:
                loop.call_soon_threadsafe(_settle, future, result, None)
            finally:
                ended.set()

        threading.Thread(target=run, name="caddy-beacon-check", daemon=True).start()
        return future, ended.is_set

    @staticmethod
    async def _call_async(func: CheckFunction) -> object:
        result = func()
        if inspect.isawaitable(result):
            result = await result
        return result

    async def _run_forever(self, name: str, check: Check) -> None:
        previous_ended: Callable[[], bool] = lambda: True  # noqa: E731
        while True:
            started = time.perf_counter()
            if not previous_ended():
                # The previous run ignored its cancellation (or is a thread stuck in a call):
                # do not pile up another one next to it.
                self._report(name, False, 0.0, "previous run is still hanging")
            else:
                running, previous_ended = self._start_run(check)
                done, _ = await asyncio.wait({running}, timeout=check.timeout)
                elapsed = time.perf_counter() - started
                if running in done:
                    self._report_result(name, running, elapsed)
                else:
                    running.cancel()
                    self._report(name, False, elapsed, f"timed out after {check.timeout:g}s")
            await asyncio.sleep(check.interval)

    def _report_result(self, name: str, run: asyncio.Future[object], elapsed: float) -> None:
        if run.cancelled():
            self._report(name, False, elapsed, "cancelled")
            return
        error = run.exception()
        if error is not None:
            self._report(name, False, elapsed, _describe(error))
            return
        result = run.result()
        if result is False:
            self._report(name, False, elapsed, "check returned False")
        else:
            self._report(name, True, elapsed, result if isinstance(result, str) else "")

    def _report(self, name: str, passed: bool, elapsed: float, output: str) -> None:
        self._native.report_check(name, passed, elapsed, output)
        previous = self._last_passed[name]
        self._last_passed[name] = passed
        if previous is not passed:
            if passed:
                logger.info("readiness check %r passes", name)
            else:
                logger.warning("readiness check %r fails: %s", name, output)


def _settle(future: asyncio.Future[object], result: object, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
