"""Tracing settings from the standard OpenTelemetry environment variables.

Spans are exported only when an OTLP endpoint is configured (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) or tracing is switched on explicitly (``tracing=True`` /
``BEACON_TRACING=1``, which defaults the endpoint to ``http://localhost:4318``).
``OTEL_SDK_DISABLED=true`` switches it off unless ``tracing=True`` is given.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import unquote

from caddy_beacon._native import ConfigError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class TracingConfig:
    """What the native tracer is built with."""

    endpoint: str
    headers: list[tuple[str, str]]
    sampler: str | None
    sampler_arg: str | None
    resource: list[tuple[str, str]]
    timeout: float
    queue_size: int
    batch_size: int
    interval: float


def _key_values(variable: str) -> list[tuple[str, str]]:
    """`k=v,k2=v2` with percent-encoded values, as OTEL_RESOURCE_ATTRIBUTES and
    OTEL_EXPORTER_OTLP_HEADERS are written."""
    raw = os.environ.get(variable, "")
    pairs = []
    for item in raw.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{variable}={raw!r}: expected comma-separated key=value pairs")
        pairs.append((key.strip(), unquote(value.strip())))
    return pairs


def _number(variable: str, default: float, minimum: float) -> float:
    raw = os.environ.get(variable)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{variable}={raw!r}: expected a number") from None
    if value < minimum:
        raise ConfigError(f"{variable}={raw!r}: expected at least {minimum:g}")
    return value


def _switch(explicit: bool | None) -> bool | None:
    if explicit is not None:
        return explicit
    raw = os.environ.get("BEACON_TRACING")
    if raw is None:
        return None
    word = raw.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ConfigError(f"BEACON_TRACING={raw!r}: expected true or false")


def _traces_endpoint() -> str | None:
    specific = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if specific:
        return specific  # used as is, per the specification
    base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    return base.rstrip("/") + "/v1/traces" if base else None


def resolve_tracing(explicit: bool | None) -> TracingConfig | None:
    """The tracing settings, or None when spans are not exported."""
    switch = _switch(explicit)
    if switch is False:
        return None
    if switch is None and os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    endpoint = _traces_endpoint()
    if endpoint is None:
        if switch is None:
            return None
        endpoint = "http://localhost:4318/v1/traces"
    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or ""
    ).strip()
    if protocol and protocol != "http/protobuf":
        raise ConfigError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: caddy-beacon exports over http/protobuf only "
            "(unset it, or set it to http/protobuf and point the endpoint at port 4318)"
        )
    if not endpoint.startswith("http://"):
        raise ConfigError(
            f"OTLP endpoint {endpoint!r}: only http:// endpoints are supported; run the collector beside the app"
        )
    return TracingConfig(
        endpoint=endpoint,
        headers=_key_values("OTEL_EXPORTER_OTLP_HEADERS") + _key_values("OTEL_EXPORTER_OTLP_TRACES_HEADERS"),
        sampler=os.environ.get("OTEL_TRACES_SAMPLER") or None,
        sampler_arg=os.environ.get("OTEL_TRACES_SAMPLER_ARG") or None,
        resource=_key_values("OTEL_RESOURCE_ATTRIBUTES"),
        timeout=_number("OTEL_EXPORTER_OTLP_TIMEOUT", 10_000, 1) / 1000,
        queue_size=int(_number("OTEL_BSP_MAX_QUEUE_SIZE", 2048, 1)),
        batch_size=int(_number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512, 1)),
        interval=_number("OTEL_BSP_SCHEDULE_DELAY", 5000, 1) / 1000,
    )
