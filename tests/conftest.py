"""The fixtures: servers, Caddies and companions started for a test and stopped after it. The
helpers they use live in tests/support."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.caddy import Caddies
from tests.support.companion import Companion, launch_companion
from tests.support.servers import Server, launch


@pytest.fixture
def caddies(tmp_path: Path) -> Iterator[Caddies]:
    """Ask for it before `companions`, so Caddy outlives them."""
    launcher = Caddies(tmp_path)
    yield launcher
    launcher.stop_all()


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Starts servers for a test and stops every one of them afterwards."""
    servers: list[Server] = []

    def _start(**kwargs: object) -> Server:
        server = launch(tmp_path, **kwargs)  # type: ignore[arg-type]
        servers.append(server)
        return server

    yield _start
    for server in servers:
        server.stop(timeout=10)


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One uvicorn server with default options, shared by the tests of a module."""
    server = launch(tmp_path_factory.mktemp("shared"))
    yield server
    server.stop()


@pytest.fixture
def companions(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Starts `caddy-beacon run` processes (see tests.support.companion.launch_companion) and
    stops each one, and any app it started, afterwards."""
    started: list[Companion] = []

    def _launch(*args: Any, **kwargs: Any) -> Companion:
        companion = launch_companion(tmp_path, *args, **kwargs)
        started.append(companion)
        return companion

    yield _launch
    for companion in started:
        companion.cleanup()
