"""The native request path: what `BeaconMiddleware(scope, receive, send)` returns for an HTTP
request once the worker has started behaves as the `async def __call__` it replaces, for every
way a server or a task can drive a coroutine: awaited, scheduled as a task, cancelled, closed,
thrown into — and the app's exceptions come out unchanged."""

from __future__ import annotations

import asyncio
import collections.abc
import re
import types
from collections.abc import Callable
from typing import Any

import caddy_beacon
import pytest
from caddy_beacon import BeaconMiddleware, request_id
from caddy_beacon._native import RequestCall

from tests.support.servers import Server

Message = dict[str, Any]


def http_scope(path: str = "/x", request_id_value: bytes = b"given-id") -> dict[str, Any]:
    return {"type": "http", "method": "GET", "path": path, "headers": [(b"x-request-id", request_id_value)]}


async def receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def started(app: Any) -> tuple[BeaconMiddleware, list[Message]]:
    """A middleware around `app` whose worker has started on the running loop (a first probe
    starts it, as with a server that runs no lifespan), and the messages its server received."""
    middleware = BeaconMiddleware(app, drain_seconds=0, service_name="native-path")
    await middleware(http_scope("/health"), receive, server_send([]))  # type: ignore[arg-type]
    assert middleware._armed
    return middleware, []


def run_in_loop(main: Any) -> Any:
    return asyncio.run(main())


def server_send(sent: list[Message]) -> Any:
    async def send(message: Message) -> None:
        sent.append(message)

    return send


def counts(middleware: BeaconMiddleware) -> dict[str, float]:
    """`http_response_status_code` → requests recorded, and the active gauge under "active"."""
    text = middleware._native.render_metrics(None)[0].decode()
    found: dict[str, float] = {}
    for status, value in re.findall(
        r'http_server_request_duration_seconds_count\{[^}]*http_response_status_code="(\d+)"[^}]*\} (\S+)', text
    ):
        found[status] = found.get(status, 0) + float(value)
    found["active"] = sum(float(v) for v in re.findall(r"http_server_active_requests\{[^}]*\} (\S+)", text))
    return found


async def respond(send: Any, status: int = 200) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


def test_an_http_request_runs_as_a_native_coroutine_that_tasks_accept() -> None:
    seen: list[str | None] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(request_id())
        await asyncio.sleep(0)  # suspended once: the task resumes it through the native object
        seen.append(request_id())
        await respond(send)

    async def main() -> tuple[BeaconMiddleware, list[Message]]:
        middleware, sent = await started(app)
        call = middleware(http_scope(), receive, server_send(sent))
        assert isinstance(call, RequestCall) and isinstance(call, collections.abc.Coroutine)
        await asyncio.create_task(call)  # type: ignore[arg-type]
        assert request_id() is None  # the context is reset when the request ends
        return middleware, sent

    middleware, sent = run_in_loop(main)
    assert seen == ["given-id", "given-id"]
    assert sent[0]["status"] == 200 and (b"x-request-id", b"given-id") in sent[0]["headers"]
    assert counts(middleware) == {"200": 1, "active": 0}


def test_the_apps_exception_comes_out_unchanged_and_counts_as_500() -> None:
    class Boom(Exception):
        pass

    raised = Boom("from the app")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.sleep(0)
        raise raised

    async def main() -> BeaconMiddleware:
        middleware, sent = await started(app)
        with pytest.raises(Boom) as caught:
            await middleware(http_scope(), receive, server_send(sent))  # type: ignore[misc]
        assert caught.value is raised
        assert request_id() is None
        return middleware

    assert counts(run_in_loop(main)) == {"500": 1, "active": 0}


def test_a_cancelled_request_is_cancelled_and_recorded_once() -> None:
    after_cancel: list[str | None] = []

    async def main() -> BeaconMiddleware:
        waiting = asyncio.Event()

        async def app(scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            waiting.set()
            try:
                await asyncio.Event().wait()
            finally:
                after_cancel.append(request_id())  # still inside the request when cancelled

        middleware, sent = await started(app)
        task = asyncio.create_task(middleware(http_scope(), receive, server_send(sent)))  # type: ignore[arg-type]
        await waiting.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return middleware

    middleware = run_in_loop(main)
    assert after_cancel == ["given-id"]
    # Started with 200 but never completed: the client got no whole response.
    assert counts(middleware) == {"500": 1, "active": 0}


def test_an_app_that_handles_the_cancellation_completes_normally() -> None:
    async def main() -> BeaconMiddleware:
        waiting = asyncio.Event()

        async def app(scope: Any, receive: Any, send: Any) -> None:
            try:
                waiting.set()
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                await respond(send, 503)

        middleware, sent = await started(app)
        task = asyncio.create_task(middleware(http_scope(), receive, server_send(sent)))  # type: ignore[arg-type]
        await waiting.wait()
        task.cancel()
        await task
        assert sent[0]["status"] == 503
        return middleware

    assert counts(run_in_loop(main)) == {"503": 1, "active": 0}


async def suspended_in_the_app(closed: list[bool]) -> tuple[BeaconMiddleware, RequestCall]:
    """A request stepped by hand to where its app waits (for an hour); `closed` learns when the
    app sees GeneratorExit."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        try:
            await asyncio.sleep(3600)
        except GeneratorExit:
            closed.append(True)
            raise

    middleware, sent = await started(app)
    call = middleware(http_scope(), receive, server_send(sent))
    assert isinstance(call, RequestCall)
    call.send(None)  # runs to the app's first suspension
    return middleware, call


def test_closing_the_coroutine_closes_the_app_and_records_it() -> None:
    closed: list[bool] = []

    async def main() -> BeaconMiddleware:
        middleware, call = await suspended_in_the_app(closed)
        call.close()
        call.close()  # twice is harmless
        with pytest.raises(RuntimeError):
            call.send(None)
        return middleware

    assert counts(run_in_loop(main)) == {"500": 1, "active": 0}
    assert closed == [True]


def test_throw_before_the_first_step_raises_it_from_the_app() -> None:
    async def main() -> tuple[BeaconMiddleware, list[Message]]:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            await respond(send)

        middleware, sent = await started(app)
        call = middleware(http_scope(), receive, server_send(sent))
        assert isinstance(call, RequestCall)
        with pytest.raises(KeyError):
            call.throw(KeyError("thrown"))
        return middleware, sent

    middleware, sent = run_in_loop(main)
    assert sent == [] and counts(middleware) == {"500": 1, "active": 0}


def test_an_app_that_returns_no_awaitable_is_a_type_error() -> None:
    def app(scope: Any, receive: Any, send: Any) -> None:
        return None

    async def main() -> BeaconMiddleware:
        middleware, sent = await started(app)
        with pytest.raises(TypeError, match="await"):
            await middleware(http_scope(), receive, server_send(sent))  # type: ignore[misc]
        return middleware

    assert counts(run_in_loop(main)) == {"500": 1, "active": 0}


def test_an_awaitable_that_is_not_a_coroutine_is_driven_through_its_await() -> None:
    class Awaitable:
        def __init__(self, send: Any) -> None:
            self.send = send

        def __await__(self) -> Any:
            yield from asyncio.sleep(0).__await__()
            return (yield from respond(self.send).__await__())

    async def main() -> BeaconMiddleware:
        middleware, sent = await started(lambda scope, receive, send: Awaitable(send))
        await middleware(http_scope(), receive, server_send(sent))  # type: ignore[misc]
        return middleware

    assert counts(run_in_loop(main)) == {"200": 1, "active": 0}


def test_before_startup_and_for_probes_and_websockets_the_python_path_answers() -> None:
    calls: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        calls.append(scope["type"])
        if scope["type"] == "http":
            await respond(send)

    async def main() -> BeaconMiddleware:
        middleware = BeaconMiddleware(app, drain_seconds=0)
        assert not middleware._armed
        sent: list[Message] = []
        # The first request of a server that ran no lifespan starts the worker, then runs natively.
        await middleware(http_scope(), receive, server_send(sent))  # type: ignore[misc]
        assert middleware._armed
        probe = middleware(http_scope("/ready"), receive, server_send(sent))
        assert not isinstance(probe, RequestCall)
        sent.clear()
        await probe
        assert sent[0]["status"] == 200
        await middleware({"type": "websocket", "path": "/ws", "headers": []}, receive, server_send(sent))  # type: ignore[misc]
        assert calls == ["http", "websocket"]
        with pytest.raises(TypeError, match="dict"):
            await middleware(types.MappingProxyType(http_scope()), receive, server_send(sent))  # type: ignore[misc]
        return middleware

    assert counts(run_in_loop(main)) == {"200": 1, "active": 0}


def test_the_core_alone_says_what_it_is_for() -> None:
    core = caddy_beacon._native.MiddlewareCore()
    with pytest.raises(RuntimeError, match="BeaconMiddleware"):
        core({"type": "http"}, receive, receive)


def test_arming_with_something_other_than_a_context_variable_is_refused() -> None:
    middleware = BeaconMiddleware(lambda *a: None, drain_seconds=0)
    with pytest.raises(TypeError, match="ContextVar"):
        middleware._arm(beacon=middleware._native, app=middleware.app, current_request=object())
    assert not middleware._armed


def test_servers_see_an_asgi3_app_when_it_is_wrapped_directly() -> None:
    """`app = BeaconMiddleware(app)` handed to uvicorn: its interface detection must pick ASGI 3
    (an ASGI 2 guess calls the app with the scope alone)."""
    import inspect

    from uvicorn.config import Config

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await respond(send)

    middleware = BeaconMiddleware(app, drain_seconds=0)
    assert inspect.iscoroutinefunction(middleware.__call__)
    config = Config(middleware)
    config.load()
    assert config.interface == "asgi3"

    async def main() -> list[Message]:
        sent: list[Message] = []
        await middleware.__call__(http_scope(), receive, server_send(sent))
        return sent

    assert run_in_loop(main)[0]["status"] == 200


def test_a_directly_wrapped_app_serves_under_uvicorn(start: Callable[..., Server]) -> None:
    server = start(app="tests.apps.wrapped:app")
    response = server.get("/hello/ada", headers={"x-request-id": "wrapped-1"})
    assert response.status_code == 200 and response.text == "hello ada (wrapped-1)"
    assert response.headers["x-request-id"] == "wrapped-1"
    assert 'http_route="/hello/{name}",http_response_status_code="200"' in server.get("/metrics").text


def test_a_request_collected_mid_flight_is_closed_and_recorded() -> None:
    closed: list[bool] = []

    async def main() -> BeaconMiddleware:
        middleware, call = await suspended_in_the_app(closed)
        del call  # dropped while the app waits, never closed
        return middleware

    assert counts(run_in_loop(main)) == {"500": 1, "active": 0}
    assert closed == [True]
