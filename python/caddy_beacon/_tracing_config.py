"""Tracing settings from the standard OpenTelemetry environment variables.

Spans are exported only when an OTLP endpoint is configured (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) or tracing is switched on explicitly (``tracing=True`` /
``BEACON_TRACING=1``, which defaults the endpoint to ``http://localhost:4318``, or
``http://localhost:4317`` for gRPC). ``OTEL_SDK_DISABLED=true`` switches it off unless
``tracing=True`` is given.

Every ``OTEL_EXPORTER_OTLP_*`` variable of the specification is read, the ``_TRACES_`` one
first: ``ENDPOINT``, ``PROTOCOL`` (``http/protobuf``, ``http/json``, ``grpc``), ``HEADERS``,
``TIMEOUT``, ``COMPRESSION`` (``gzip``, ``none``), ``CERTIFICATE``, ``CLIENT_CERTIFICATE``,
``CLIENT_KEY`` and, for a gRPC endpoint given without a scheme, ``INSECURE``. A value that
cannot work is logged in one line naming the variable, and tracing is off (OpenTelemetry's own
rule: telemetry never breaks the app it observes); with ``strict`` it is a ConfigError.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from urllib.parse import unquote

from caddy_beacon._native import ConfigError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}

logger = logging.getLogger("caddy_beacon")


@dataclass(frozen=True)
class TracingConfig:
    """What the native tracer is built with."""

    endpoint: str
    protocol: str
    headers: list[tuple[str, str]]
    gzip: bool
    certificate: str | None
    client_certificate: str | None
    client_key: str | None
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


def _traces_or_general(name: str) -> tuple[str, str | None]:
    """The ``OTEL_EXPORTER_OTLP_TRACES_<name>`` variable if set, else the general one: (the
    variable used, its value)."""
    for variable in (f"OTEL_EXPORTER_OTLP_TRACES_{name}", f"OTEL_EXPORTER_OTLP_{name}"):
        value = os.environ.get(variable, "").strip()
        if value:
            return variable, value
    return f"OTEL_EXPORTER_OTLP_{name}", None


def _headers() -> list[tuple[str, str]]:
    """The general headers, overridden key by key by the traces-specific ones; refused when a
    name or (percent-decoded) value could not travel in a header."""
    merged: dict[str, tuple[str, str]] = {}
    for variable in ("OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"):
        for key, value in _key_values(variable):
            if not all(c.isascii() and (c.isalnum() or c in "!#$%&'*+-.^_`|~") for c in key):
                raise ConfigError(f"{variable}: {key!r} is not a valid header name")
            if any(not (c == "\t" or " " <= c <= "~") for c in value):
                raise ConfigError(
                    f"{variable}: the value of {key!r} holds characters a header cannot carry "
                    "(CR, LF, other control characters or non-ASCII, after percent-decoding)"
                )
            merged[key.lower()] = (key, value)
    return list(merged.values())


def _file(name: str) -> str | None:
    variable, path = _traces_or_general(name)
    if path is not None and not os.path.isfile(path):
        raise ConfigError(f"{variable}={path!r}: no such file")
    return path


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


def _traces_endpoint(protocol: str) -> str | None:
    specific = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if specific:
        return specific  # used as is, per the specification
    base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    if not base:
        return None
    # OTLP/HTTP appends the signal's path to the general endpoint; gRPC uses it as is.
    return base if protocol == "grpc" else base.rstrip("/") + "/v1/traces"


def _with_scheme(endpoint: str, protocol: str) -> str:
    """gRPC endpoints are often written host:port; the scheme then follows ``INSECURE``."""
    if "://" in endpoint or protocol != "grpc":
        return endpoint
    variable, insecure = _traces_or_general("INSECURE")
    word = (insecure or "false").lower()
    if word not in _TRUE | _FALSE:
        raise ConfigError(f"{variable}={insecure!r}: expected true or false")
    return ("http://" if word in _TRUE else "https://") + endpoint


def resolve_tracing(explicit: object, strict: bool = False) -> TracingConfig | None:
    """The tracing settings, or None when spans are not exported (also, unless `strict`, when
    the environment's settings cannot work: said in the log)."""
    if explicit is not None and not isinstance(explicit, bool):
        raise ConfigError(f"tracing={explicit!r}: expected True, False or None")
    try:
        return _resolve_tracing(explicit)
    except ConfigError as error:
        if strict:
            raise
        logger.warning("caddy_beacon: tracing is off: %s (strict=True refuses to start)", error)
        return None


def _resolve_tracing(explicit: bool | None) -> TracingConfig | None:
    switch = _switch(explicit)
    if switch is False:
        return None
    if switch is None and os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    protocol_variable, protocol = _traces_or_general("PROTOCOL")
    protocol = protocol or "http/protobuf"
    if protocol not in ("http/protobuf", "http/json", "grpc"):
        raise ConfigError(f"{protocol_variable}={protocol!r}: expected http/protobuf, http/json or grpc")
    endpoint = _traces_endpoint(protocol)
    if endpoint is None:
        if switch is None:
            return None
        endpoint = "http://localhost:4317" if protocol == "grpc" else "http://localhost:4318/v1/traces"
    endpoint = _with_scheme(endpoint, protocol)
    if not endpoint.startswith(("http://", "https://")):
        raise ConfigError(f"OTLP endpoint {endpoint!r}: expected an http:// or https:// URL")
    compression_variable, compression = _traces_or_general("COMPRESSION")
    compression = (compression or "none").lower()
    if compression not in ("gzip", "none"):
        raise ConfigError(f"{compression_variable}={compression!r}: expected gzip or none")
    timeout_variable, _ = _traces_or_general("TIMEOUT")
    return TracingConfig(
        endpoint=endpoint,
        protocol=protocol,
        headers=_headers(),
        gzip=compression == "gzip",
        certificate=_file("CERTIFICATE"),
        client_certificate=_file("CLIENT_CERTIFICATE"),
        client_key=_file("CLIENT_KEY"),
        sampler=os.environ.get("OTEL_TRACES_SAMPLER") or None,
        sampler_arg=os.environ.get("OTEL_TRACES_SAMPLER_ARG") or None,
        resource=_key_values("OTEL_RESOURCE_ATTRIBUTES"),
        timeout=_number(timeout_variable, 10_000, 1) / 1000,
        queue_size=int(_number("OTEL_BSP_MAX_QUEUE_SIZE", 2048, 1)),
        batch_size=int(_number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512, 1)),
        interval=_number("OTEL_BSP_SCHEDULE_DELAY", 5000, 1) / 1000,
    )
