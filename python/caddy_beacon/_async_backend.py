"""The event loop the app runs on, seen through the few things the middleware needs from it:
starting a background task, calling into the loop from another thread (or a signal handler),
sleeping, running a check with a timeout, and waiting for a thread.

Starlette and FastAPI run on anyio, so an app runs on asyncio (uvloop included: uvicorn,
gunicorn, granian) or trio (hypercorn ``-k trio``, anyio's trio backend in tests). Both are
written here against their own APIs, so the package needs neither anyio nor sniffio, and
nothing here runs before the loop does: :func:`current_backend` is called on the loop, when
the worker starts. Any other library gets None, and the middleware says once what it leaves
off there.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

BackgroundFunction = Callable[[], Awaitable[None]]


@dataclass
class Outcome:
    """How one timed run ended: ``timed_out``, or its result or exception; ``ended`` tells
    whether the run has really stopped (a thread, or an asyncio task that ignores its
    cancellation, may go on after its timeout)."""

    timed_out: bool
    result: object = None
    error: BaseException | None = None
    ended: Callable[[], bool] = lambda: True


class BackgroundTask(Protocol):
    def cancel(self) -> None: ...

    async def wait(self, timeout: float) -> None: ...


class LoopBackend(Protocol):
    """What the middleware asks of the running event loop."""

    name: str

    def spawn(self, function: BackgroundFunction, name: str) -> BackgroundTask:
        """Runs `function` in the background until it returns or is cancelled. It must not
        raise (a trio system task that raises ends the whole run)."""

    def post(self) -> Callable[..., object]:
        """`post(callback, *args)`: runs `callback(*args)` on the loop soon; callable from any
        thread and from a signal handler (asyncio's ``call_soon_threadsafe``, trio's
        ``TrioToken.run_sync_soon``)."""

    async def sleep(self, seconds: float) -> None: ...

    async def run_with_timeout(self, function: Callable[[], object], timeout: float) -> Outcome:
        """Calls `function`: awaited on the loop when it is async (or returns an awaitable),
        on a daemon thread of its own otherwise (so a blocking one blocks neither the loop nor
        the process's exit); gives up waiting after `timeout` seconds."""

    async def in_thread(self, function: Callable[..., object], *args: object) -> object:
        """`function(*args)` on a daemon thread, awaited."""


def _is_async(function: Callable[[], object]) -> bool:
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(type(function).__call__)


def _start_thread(
    function: Callable[[], object], settle: Callable[[object, BaseException | None], None]
) -> threading.Event:
    """Runs `function` on a daemon thread and hands the result to `settle(result, error)` (from
    that thread). Returns an event set once the thread is done."""
    ended = threading.Event()

    def run() -> None:
        try:
            result = function()
        except BaseException as error:  # handed to the caller as the run's failure
            settle(None, error)
        else:
            settle(result, None)
        finally:
            ended.set()

    threading.Thread(target=run, name="caddy-beacon-worker", daemon=True).start()
    return ended


class _AsyncioTask:
    def __init__(self, task: asyncio.Task[None]) -> None:
        self._task = task

    def cancel(self) -> None:
        self._task.cancel()

    async def wait(self, timeout: float) -> None:
        await asyncio.wait({self._task}, timeout=timeout)


class AsyncioBackend:
    """asyncio, and loops that implement its API (uvloop, rloop)."""

    name = "asyncio"

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = self._loop = loop
        self._tasks: set[asyncio.Task[None]] = set()  # asyncio keeps only weak references

    def spawn(self, function: BackgroundFunction, name: str) -> BackgroundTask:
        task: asyncio.Task[None] = self._loop.create_task(function(), name=name)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return _AsyncioTask(task)

    def post(self) -> Callable[..., object]:
        return self._loop.call_soon_threadsafe

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def run_with_timeout(self, function: Callable[[], object], timeout: float) -> Outcome:
        loop = self._loop
        if _is_async(function):

            async def call() -> object:
                result = function()
                return await result if inspect.isawaitable(result) else result

            running: asyncio.Future[object] = asyncio.ensure_future(call())
            ended: Callable[[], bool] = running.done
        else:
            running = loop.create_future()

            def settle(result: object, error: BaseException | None) -> None:
                loop.call_soon_threadsafe(_settle_future, running, result, error)

            def call_in_thread() -> object:
                result = function()
                if inspect.iscoroutine(result):  # e.g. `lambda: db.ping()`: await it on the loop
                    result = asyncio.run_coroutine_threadsafe(result, loop).result()
                return result

            ended = _start_thread(call_in_thread, settle).is_set
        # Not asyncio.wait_for: it waits for the cancelled run to end, and a check that swallows
        # its cancellation would hang the runner with it.
        done, _ = await asyncio.wait({running}, timeout=timeout)
        if running not in done:
            running.cancel()
            return Outcome(timed_out=True, ended=ended)
        if running.cancelled():
            return Outcome(timed_out=False, error=asyncio.CancelledError(), ended=ended)
        return Outcome(
            timed_out=False,
            result=running.result() if running.exception() is None else None,
            error=running.exception(),
            ended=ended,
        )

    async def in_thread(self, function: Callable[..., object], *args: object) -> object:
        return await self._loop.run_in_executor(None, function, *args)


def _settle_future(future: asyncio.Future[object], result: object, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class _TrioTask:
    def __init__(self, trio: Any, scope: Any, done: Any) -> None:
        self._trio, self._scope, self._done = trio, scope, done

    def cancel(self) -> None:
        self._scope.cancel()

    async def wait(self, timeout: float) -> None:
        with self._trio.move_on_after(timeout):
            await self._done.wait()


class TrioBackend:
    """trio: background work as system tasks (they end with the run), calls from other
    threads through the run's token."""

    name = "trio"

    def __init__(self, trio: Any) -> None:
        self._trio = trio
        self._token = trio.lowlevel.current_trio_token()

    def spawn(self, function: BackgroundFunction, name: str) -> BackgroundTask:
        trio = self._trio
        scope, done = trio.CancelScope(), trio.Event()

        async def run() -> None:
            try:
                with scope:
                    await function()
            finally:
                done.set()

        trio.lowlevel.spawn_system_task(run, name=name)
        return _TrioTask(trio, scope, done)

    def post(self) -> Callable[..., object]:
        return self._token.run_sync_soon  # type: ignore[no-any-return]

    async def sleep(self, seconds: float) -> None:
        await self._trio.sleep(seconds)

    async def run_with_timeout(self, function: Callable[[], object], timeout: float) -> Outcome:
        trio = self._trio
        if _is_async(function):
            outcome = Outcome(timed_out=True)
            with trio.move_on_after(timeout):
                try:
                    result = function()
                    outcome = Outcome(timed_out=False, result=await result if inspect.isawaitable(result) else result)
                except Exception as error:  # the check's failure
                    outcome = Outcome(timed_out=False, error=error)
            return outcome  # trio cancels the run when the time is up: it has ended
        finished, box = trio.Event(), Outcome(timed_out=False)
        token = self._token

        def settle(result: object, error: BaseException | None) -> None:
            box.result, box.error = result, error
            try:
                token.run_sync_soon(finished.set)
            except trio.RunFinishedError:
                pass

        def call_in_thread() -> object:
            result = function()
            if inspect.iscoroutine(result):  # e.g. `lambda: db.ping()`: await it in the run
                result = trio.from_thread.run(lambda: result, trio_token=token)
            return result

        ended = _start_thread(call_in_thread, settle)
        with trio.move_on_after(timeout):
            await finished.wait()
            return Outcome(timed_out=False, result=box.result, error=box.error, ended=ended.is_set)
        return Outcome(timed_out=True, ended=ended.is_set)

    async def in_thread(self, function: Callable[..., object], *args: object) -> object:
        return await self._trio.to_thread.run_sync(lambda: function(*args), abandon_on_cancel=True)


def current_backend() -> LoopBackend | None:
    """The backend of the loop running this call, or None for a library other than asyncio
    and trio (or no loop at all)."""
    try:
        return AsyncioBackend(asyncio.get_running_loop())
    except RuntimeError:
        pass
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            return TrioBackend(trio)
        except RuntimeError:  # imported, but not running this call
            pass
    return None


def running_library() -> str:
    """What runs this call, for a log line: "asyncio", "trio", or the name sniffio would give."""
    backend = current_backend()
    if backend is not None:
        return backend.name
    sniffio = sys.modules.get("sniffio")
    if sniffio is not None:
        try:
            return str(sniffio.current_async_library())
        except Exception:  # sniffio.AsyncLibraryNotFoundError
            pass
    return "an event loop other than asyncio or trio"
