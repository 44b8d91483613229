"""Options: keywords, BEACON_* variables, and clear errors for bad values."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

import caddy_beacon
import caddy_beacon._context
import pytest
from caddy_beacon import BeaconMiddleware, Check, ConfigError


async def _noop_app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    return None


def test_defaults() -> None:
    middleware = BeaconMiddleware(_noop_app)
    config = middleware.config
    assert (config.health_path, config.ready_path, config.metrics_path) == ("/health", "/ready", "/metrics")
    assert config.request_id_header == "X-Request-ID"
    assert config.drain_seconds == 5.0
    assert config.max_series == 2000
    assert list(caddy_beacon.DEFAULT_BUCKETS)[0] == 0.001 and 10.0 in caddy_beacon.DEFAULT_BUCKETS


def test_environment_fills_what_keywords_leave_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BEACON_METRICS_PATH", "/internal/metrics")
    monkeypatch.setenv("BEACON_HEALTH_PATH", "off")
    monkeypatch.setenv("BEACON_DRAIN_SECONDS", "12.5")
    monkeypatch.setenv("BEACON_MAX_SERIES", "50")
    monkeypatch.setenv("BEACON_SERVICE_NAME", "from-env")
    config = BeaconMiddleware(_noop_app, max_series=7).config
    assert config.metrics_path == "/internal/metrics"
    assert config.health_path is None
    assert config.drain_seconds == 12.5
    assert config.max_series == 7  # the keyword wins
    assert config.service_name == "from-env"


def test_otel_service_name_is_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "otel-name")
    assert BeaconMiddleware(_noop_app).config.service_name == "otel-name"
    assert BeaconMiddleware(_noop_app, service_name="explicit").config.service_name == "explicit"


@pytest.mark.parametrize(
    "options,message",
    [
        ({"buckets": [1.0, 0.5]}, "buckets=[1.0, 0.5]: bucket bounds must be positive and strictly increasing"),
        ({"buckets": "0.1,1"}, "expected a sequence of upper bounds"),
        ({"buckets": [0.0, 1.0]}, "strictly increasing"),
        ({"max_series": 0}, "max_series=0: expected an integer >= 1"),
        ({"drain_seconds": -1}, "drain_seconds=-1: expected a finite number"),
        ({"health_path": "health"}, "health_path='health': expected a path starting with '/'"),
        ({"metrics_path": "/ready"}, "must differ"),
        ({"request_id_header": ""}, "request_id_header='': expected an HTTP header name"),
        ({"request_id_header": "Bad Header"}, "not a valid HTTP header name"),
        ({"side_port": 70000}, "side_port=70000: expected a port (1-65535"),
        ({"side_port": "everywhere"}, "expected a port"),
        ({"stall_seconds": 0}, "stall_seconds=0: expected a finite number of seconds > 0"),
        ({"checks": {"db": 42}}, "a check must be callable"),
        ({"checks": {"bad name": lambda: None}}, 'check name "bad name" is invalid'),
        ({"checks": ["db"]}, "checks must be a mapping"),
    ],
)
def test_bad_options_raise_config_error(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=None) as error:
        BeaconMiddleware(_noop_app, **options)
    assert message in str(error.value)
    assert isinstance(error.value, caddy_beacon.BeaconError)


@pytest.mark.parametrize(
    "variable,value,message",
    [
        ("BEACON_MAX_SERIES", "many", "BEACON_MAX_SERIES='many': invalid literal"),
        ("BEACON_DRAIN_SECONDS", "soon", "BEACON_DRAIN_SECONDS='soon'"),
        ("BEACON_BUCKETS", "0.1,x", "BEACON_BUCKETS='0.1,x'"),
        ("BEACON_READY_PATH", "ready", "BEACON_READY_PATH='ready': expected a path"),
    ],
)
def test_bad_environment_names_the_variable_and_falls_back_unless_strict(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with caplog.at_level("WARNING", logger="caddy_beacon"):
        middleware = BeaconMiddleware(_noop_app)
    assert [r.getMessage() for r in caplog.records if message in r.getMessage()], caplog.text
    defaults = BeaconMiddleware(
        _noop_app, **{variable.removeprefix("BEACON_").lower(): caddy_beacon_default(variable)}
    ).config
    assert middleware.config == defaults, "the default is used instead"
    with pytest.raises(ConfigError) as error:
        BeaconMiddleware(_noop_app, strict=True)
    assert message in str(error.value)


def caddy_beacon_default(variable: str) -> object:
    return {
        "BEACON_MAX_SERIES": 2000,
        "BEACON_DRAIN_SECONDS": 5.0,
        "BEACON_BUCKETS": None,
        "BEACON_READY_PATH": "/ready",
    }[variable]


def test_bad_check_settings_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="Check.timeout must be a positive number of seconds, got 0"):
        Check(lambda: None, timeout=0)
    with pytest.raises(ConfigError, match="Check.interval must be a positive number"):
        Check(lambda: None, interval=float("nan"))


def test_request_id_is_none_outside_a_request() -> None:
    assert caddy_beacon.request_id() is None


def test_works_without_lifespan_and_with_any_asgi_app() -> None:
    """A plain ASGI app, no lifespan: the middleware starts on the first request."""
    sent: list[dict[str, Any]] = []

    async def app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        assert caddy_beacon.request_id() == "given-id"
        await send({"type": "http.response.start", "status": 204, "headers": [(b"x-app", b"1")]})
        await send({"type": "http.response.body", "body": b""})

    middleware = BeaconMiddleware(app, drain_seconds=0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def run() -> tuple[int, bytes]:
        scope = {"type": "http", "method": "GET", "path": "/x", "headers": [(b"x-request-id", b"given-id")]}
        await middleware(scope, receive, send)
        sent.clear()
        await middleware({"type": "http", "method": "GET", "path": "/ready", "headers": []}, receive, send)
        return sent[0]["status"], sent[1]["body"]

    status, body = asyncio.run(run())
    assert status == 200 and b'"pass"' in body
    # The app's headers are kept and the id appended, on a copy of the message.
    text, _ = middleware._native.render_metrics(None)
    assert b'http_route="__unmatched__",http_response_status_code="204"' in text


def test_a_finished_request_lets_go_of_its_scope() -> None:
    """asyncio can carry a finished request's context into the next request on a connection
    (cpython#140947); the record left in it must not keep the scope (and everything the
    framework hung on it) alive, nor report a stale request id."""
    import gc
    import weakref

    class Scope(dict):  # type: ignore[type-arg]  # a dict that can be weakly referenced
        pass

    leaked: list[Any] = []

    async def app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        leaked.append(caddy_beacon._context.current_request.get())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    middleware = BeaconMiddleware(app, drain_seconds=0)

    async def noop_send(message: Any) -> None:
        return None

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = Scope(type="http", method="GET", path="/x", headers=[])
    scope_ref = weakref.ref(scope)
    asyncio.run(middleware(scope, receive, noop_send))
    del scope
    gc.collect()
    assert scope_ref() is None, "the finished request's record still holds its scope"
    record = leaked[0]
    assert not record.open and record.finished
    token = caddy_beacon._context.current_request.set(record)
    try:
        assert caddy_beacon.request_id() is None
    finally:
        caddy_beacon._context.current_request.reset(token)
