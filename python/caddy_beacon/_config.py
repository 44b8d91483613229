"""Resolution of the middleware's options: an explicit keyword wins, then ``BEACON_<NAME>``
from the environment, then the default.

A bad value passed in code raises ConfigError naming the keyword and what would be accepted. A
bad value from the environment is logged in one line naming the variable, and the default is
used instead, so that a deployment's settings never keep the app from starting; with
``strict`` (the keyword, or ``BEACON_STRICT=1``) it raises too."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from caddy_beacon._native import ConfigError
from caddy_beacon._tracing_config import TracingConfig


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


UNSET = _Unset()

_DISABLED_WORDS = {"", "none", "off", "false", "disabled"}
_TRUE_WORDS = {"1", "true", "yes", "on"}
_FALSE_WORDS = {"0", "false", "no", "off", ""}

logger = logging.getLogger("caddy_beacon")


def resolve_strict(explicit: object) -> bool:
    """`strict`: the keyword (a bool), else ``BEACON_STRICT``, else False."""
    if not isinstance(explicit, _Unset):
        if not isinstance(explicit, bool):
            raise ConfigError(f"strict={explicit!r}: expected True or False")
        return explicit
    raw = os.environ.get("BEACON_STRICT")
    word = (raw or "").strip().lower()
    if word in _TRUE_WORDS:
        return True
    if word not in _FALSE_WORDS:
        logger.warning("caddy_beacon: BEACON_STRICT=%r: expected true or false; strict is off", raw)
    return False


@dataclass(frozen=True)
class BeaconConfig:
    """The options after resolution."""

    service_name: str | None
    health_path: str | None
    ready_path: str | None
    metrics_path: str | None
    request_id_header: str
    buckets: tuple[float, ...] | None
    drain_seconds: float
    max_series: int
    side_host: str
    side_port: int | None
    stall_seconds: float


@dataclass(frozen=True)
class NativeSettings:
    """What ``_native.Beacon`` is built from: one object, read attribute by attribute on the
    Rust side (rust/beacon-py/src/settings.rs). Every value here is already resolved and
    defaulted: the defaults live in :func:`resolve` and :func:`resolve_tracing`, nowhere else."""

    service_name: str
    own_paths: tuple[str, ...]
    buckets: tuple[float, ...] | None
    max_series: int
    request_id_header: str
    stall_seconds: float
    shared_key: str | None
    tracing: TracingConfig | None


def native_settings(config: BeaconConfig, tracing: TracingConfig | None, shared_key: str | None) -> NativeSettings:
    """The native core's settings for a resolved configuration."""
    return NativeSettings(
        service_name=config.service_name or "unknown_service",
        own_paths=tuple(p for p in (config.health_path, config.ready_path, config.metrics_path) if p is not None),
        buckets=config.buckets,
        max_series=config.max_series,
        request_id_header=config.request_id_header,
        stall_seconds=config.stall_seconds,
        shared_key=shared_key,
        tracing=tracing,
    )


@dataclass(frozen=True)
class _Option:
    value: Any
    origin: str  # "buckets=[...]" or "BEACON_BUCKETS='...'", for error messages
    from_environment: bool = False

    def fail(self, expected: str) -> ConfigError:
        return ConfigError(f"{self.origin}: {expected}")


def _pick(name: str, explicit: object, parse: Callable[[str], object], default: object) -> _Option:
    if not isinstance(explicit, _Unset):
        return _Option(explicit, f"{name}={explicit!r}")
    variable = f"BEACON_{name.upper()}"
    raw = os.environ.get(variable)
    if raw is None:
        return _Option(default, f"{name} (default)")
    try:
        return _Option(parse(raw.strip()), f"{variable}={raw!r}", from_environment=True)
    except ValueError as error:
        raise _Option(raw, f"{variable}={raw!r}", from_environment=True).fail(str(error)) from None


def _value(
    name: str,
    explicit: object,
    parse: Callable[[str], object],
    default: object,
    check: Callable[[_Option], Any],
    strict: bool,
) -> Any:
    """One option, checked: a bad value from the environment falls back to the default with a
    warning, unless `strict`; any other bad value raises."""
    try:
        return check(_pick(name, explicit, parse, default))
    except ConfigError as error:
        if not isinstance(explicit, _Unset) or strict:
            raise
        default_option = _Option(default, f"{name} (default)")
        logger.warning(
            "caddy_beacon: %s; using the default (%r) instead (strict=True refuses to start)", error, default
        )
        return check(default_option)


def _parse_path(raw: str) -> str | None:
    return None if raw.lower() in _DISABLED_WORDS else raw


def _parse_buckets(raw: str) -> tuple[float, ...]:
    return tuple(float(part) for part in raw.split(",") if part.strip())


def _parse_side_port(raw: str) -> str | int | None:
    if raw.lower() in _DISABLED_WORDS:
        return None
    return raw if ":" in raw else int(raw)


def _side_address(option: _Option) -> tuple[str, int | None]:
    """`9464` (on 127.0.0.1), `"0.0.0.0:9464"` or `"[::1]:9464"`; None turns it off."""
    value = option.value
    if value is None:
        return "127.0.0.1", None
    host, port = "127.0.0.1", value
    if isinstance(value, str):
        host, _, port_text = value.rpartition(":")
        host = host.strip("[]")
        try:
            port = int(port_text)
        except ValueError:
            port = None
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535 or not host:
        raise option.fail("expected a port (1-65535, served on 127.0.0.1), 'HOST:PORT', or None to turn it off")
    return host, port


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _path(option: _Option) -> str | None:
    value = option.value
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith("/") or any(c.isspace() for c in value):
        raise option.fail("expected a path starting with '/', or None to disable the endpoint")
    return value


def _buckets(option: _Option) -> tuple[float, ...] | None:
    value = option.value
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not all(map(_is_number, value)):
        raise option.fail("expected a sequence of upper bounds in seconds, e.g. [0.01, 0.1, 1]")
    bounds = tuple(float(b) for b in value)
    if not bounds or any(b <= 0 for b in bounds) or any(a >= b for a, b in zip(bounds, bounds[1:], strict=False)):
        raise option.fail("bucket bounds must be positive and strictly increasing")
    return bounds


def resolve(
    *,
    strict: bool = False,
    service_name: object,
    health_path: object,
    ready_path: object,
    metrics_path: object,
    request_id_header: object,
    buckets: object,
    drain_seconds: object,
    side_port: object,
    max_series: object,
    stall_seconds: object = UNSET,
) -> BeaconConfig:
    """Resolves and validates every option."""

    def service_name_check(option: _Option) -> str | None:
        service = option.value if option.value is not None else (os.environ.get("OTEL_SERVICE_NAME") or None)
        if service is not None and (not isinstance(service, str) or not service.strip()):
            raise option.fail("expected a non-empty string")
        return service

    service = _value("service_name", service_name, str, None, service_name_check, strict)

    path_options = (
        ("health_path", health_path, "/health"),
        ("ready_path", ready_path, "/ready"),
        ("metrics_path", metrics_path, "/metrics"),
    )
    paths = {
        option: _value(option, value, _parse_path, default, _path, strict) for option, value, default in path_options
    }
    enabled = [p for p in paths.values() if p is not None]
    if len(enabled) != len(set(enabled)):
        error = ConfigError(f"health_path, ready_path and metrics_path must differ, got {paths}")
        if strict or any(not isinstance(value, _Unset) for _, value, _ in path_options):
            raise error
        logger.warning("caddy_beacon: %s; using the default paths instead", error)
        paths = {option: default for option, _, default in path_options}

    def header_check(option: _Option) -> str:
        if not isinstance(option.value, str) or not option.value or not option.value.isascii():
            raise option.fail("expected an HTTP header name such as 'X-Request-ID'")
        return option.value

    header = _value("request_id_header", request_id_header, str, "X-Request-ID", header_check, strict)
    bucket_bounds = _value("buckets", buckets, _parse_buckets, None, _buckets, strict)

    def seconds(minimum_excluded: bool) -> Callable[[_Option], float]:
        def check(option: _Option) -> float:
            if not _is_number(option.value) or option.value < 0 or (minimum_excluded and option.value == 0):
                raise option.fail(f"expected a finite number of seconds {'> 0' if minimum_excluded else '>= 0'}")
            return float(option.value)

        return check

    drain = _value("drain_seconds", drain_seconds, float, 5.0, seconds(minimum_excluded=False), strict)
    side_host, side = _value("side_port", side_port, _parse_side_port, None, _side_address, strict)
    stall = _value("stall_seconds", stall_seconds, float, 5.0, seconds(minimum_excluded=True), strict)

    def cap_check(option: _Option) -> int:
        if isinstance(option.value, bool) or not isinstance(option.value, int) or option.value < 1:
            raise option.fail("expected an integer >= 1")
        return option.value

    cap = _value("max_series", max_series, int, 2000, cap_check, strict)

    return BeaconConfig(
        service_name=service,
        health_path=paths["health_path"],
        ready_path=paths["ready_path"],
        metrics_path=paths["metrics_path"],
        request_id_header=header,
        buckets=bucket_bounds,
        drain_seconds=drain,
        max_series=cap,
        side_host=side_host,
        side_port=side,
        stall_seconds=stall,
    )
