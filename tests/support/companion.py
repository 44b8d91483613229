"""Running the real `caddy-beacon` companion binary in end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.caddy import Caddy
from tests.support.ports import free_port
from tests.support.servers import ROOT
from tests.support.waiting import wait_until

COMPANION = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "debug" / "caddy-beacon"
APP = "tests.apps.main:app"


def companion_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Runs a one-shot companion command (status, deregister, a bad flag)."""
    if not COMPANION.exists():
        pytest.fail(f"{COMPANION} is missing: `cargo build -p beacon-companion` (make test does)")
    return subprocess.run([str(COMPANION), *args], capture_output=True, text=True, timeout=timeout)


def uvicorn_command(port: int | None = None, uds: Path | None = None) -> list[str]:
    where = ["--uds", str(uds)] if uds else ["--host", "127.0.0.1", "--port", str(port)]
    # Keep-alive above Caddy's (60 s in the Caddyfile), as the README says to.
    return [
        sys.executable, "-m", "uvicorn", APP, *where,
        "--log-level", "warning", "--timeout-graceful-shutdown", "20", "--timeout-keep-alive", "75",
    ]  # fmt: skip


# What a supervising companion says once it has left Caddy and stops the app.
LEFT_CADDY = "on to the app"


@dataclass
class Companion:
    """A `caddy-beacon run` process (and, in supervise mode, the app it started)."""

    process: subprocess.Popen[bytes]
    log_path: Path
    upstream: str
    status_port: int | None
    exit_code: int | None = field(default=None)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def status(self) -> dict[str, Any]:
        assert self.status_port, "started with --listen off"
        return httpx.get(f"http://127.0.0.1:{self.status_port}/status", timeout=5).json()  # type: ignore[no-any-return]

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.status_port}/metrics", timeout=5).text

    def caddy(self, index: int = 0) -> dict[str, Any]:
        return self.status()["caddies"][index]  # type: ignore[no-any-return]

    def app_pid(self) -> int | None:
        found = re.search(r"\(pid (\d+)\)", self.log())
        return int(found.group(1)) if found else None

    def wait_registered(self, timeout: float = 30) -> None:
        def registered() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"companion exited with {self.process.returncode}:\n{self.log()}")
            try:
                return all(caddy["registered"] for caddy in self.status()["caddies"])
            except httpx.TransportError:
                return False

        assert wait_until(registered, timeout=timeout, interval=0.05), self.log()

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 60) -> int:
        self.exit_code = self.process.wait(timeout=timeout)
        return self.exit_code

    def cleanup(self) -> None:
        """Stops the companion and anything it started, whatever state they are in."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            # Long enough to leave a live Caddy's pool, not for the app's own drain (its
            # drain_seconds, 5 s by default) after that: what comes next is killed. Caddy
            # that a test already stopped gets no wait for the companion's drain timeout.
            wait_until(lambda: self.process.poll() is not None or LEFT_CADDY in self.log(), timeout=5, interval=0.02)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        pid = self.app_pid()
        if pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


def launch_companion(
    tmp_path: Path,
    caddies: Caddy | list[Caddy],
    upstream: str,
    *,
    site: str | None = None,
    admins: list[str] | None = None,
    command: list[str] | None = None,
    args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    status_port: int | None | str = 0,
    program: str | None = None,
) -> Companion:
    """Starts `caddy-beacon run` against `caddies` (or the `admins` addresses), joining the first
    one's test site (or `site`).
    `status_port=0` picks a free port for /status; None turns it off; "default" gives no
    --listen at all (the companion's default, read back from its log by `status_port_from_log`).
    `program` replaces the cargo-built binary (e.g. the `caddy-beacon` command pip installed)."""
    if not COMPANION.exists():
        pytest.fail(f"{COMPANION} is missing: `cargo build -p beacon-companion` (make test does)")
    caddies = caddies if isinstance(caddies, list) else [caddies]
    port = free_port() if status_port == 0 else status_port
    argv = [program or str(COMPANION), "run", "--upstream", upstream]
    # site="" leaves the target to `args` (e.g. --handler-id).
    argv += [] if site == "" else ["--site", site or caddies[0].base_url]
    for admin in admins or [caddy.admin for caddy in caddies]:
        argv += ["--admin", admin]
    if port != "default":
        argv += ["--listen", f"127.0.0.1:{port}" if port else "off"]
    argv += list(args)
    if command:
        argv += ["--", *command]
    log_path = tmp_path / f"companion-{upstream.replace('/', '_')}-{free_port()}.log"
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("CADDY_ADMIN", None)
    full_env.pop("BEACON_LISTEN", None)
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            argv, cwd=ROOT, env=full_env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    companion = Companion(process, log_path, upstream, None if port == "default" else port)  # type: ignore[arg-type]
    if port == "default":
        companion.status_port = status_port_from_log(companion)
    return companion


def status_port_from_log(companion: Companion, timeout: float = 15) -> int:
    """The port the companion says it serves /status on."""
    found: list[int] = []

    def said() -> bool:
        match = re.search(r"status on http://127\.0\.0\.1:(\d+)/status", companion.log())
        if match:
            found.append(int(match.group(1)))
        elif companion.process.poll() is not None:
            raise RuntimeError(f"companion exited with {companion.process.returncode}:\n{companion.log()}")
        return bool(found)

    assert wait_until(said, timeout=timeout), companion.log()
    return found[0]


def sigterm_with_a_request_in_flight(
    companion: Companion, caddy_url: str, members: Callable[[], list[dict[str, Any]]], path: str = "/sleep/2"
) -> httpx.Response:
    """Sends a slow request through Caddy and SIGTERMs the companion once the pool (`members`
    lists it) counts the request in flight; checks the member stops taking new requests
    (draining) at once and the companion exits 0. Returns the slow request's response."""
    result: dict[str, httpx.Response] = {}
    thread = threading.Thread(target=lambda: result.update(slow=httpx.get(f"{caddy_url}{path}", timeout=20)))
    thread.start()
    assert wait_until(lambda: any(u["in_flight"] == 1 for u in members()), timeout=10), members()
    companion.signal(signal.SIGTERM)
    assert wait_until(lambda: all(u["draining"] for u in members()), timeout=2), members()
    assert companion.wait(timeout=30) == 0, companion.log()
    thread.join(timeout=20)
    return result["slow"]
