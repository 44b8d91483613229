"""The companion against Caddy's remote admin endpoint (`admin.remote`): HTTPS with mutual TLS,
the way Caddy is managed from another host. Caddy's identity certificate comes from its own
local CA; the companion trusts that CA (`--admin-ca`) and presents a client certificate whose
key Caddy's access control lists."""

from __future__ import annotations

import base64
import json
import os
import signal
import ssl
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tests.support.caddy import MODULE_CADDY, Caddy, run_caddy, wait_for_admin
from tests.support.companion import Companion, companion_cli, uvicorn_command
from tests.support.ports import free_port
from tests.support.sites import POOL_SITE, pool
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.caddy]

Launch = Callable[..., Companion]


@dataclass
class ClientCertificate:
    cert: Path
    key: Path
    der_base64: str


def client_certificate(tmp_path: Path, name: str) -> ClientCertificate:
    issued = trustme.CA().issue_cert(f"{name}.internal")
    cert, key = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    der = x509.load_pem_x509_certificate(issued.cert_chain_pems[0].bytes()).public_bytes(Encoding.DER)
    return ClientCertificate(cert, key, base64.b64encode(der).decode())


@dataclass
class RemoteAdminCaddy:
    caddy: Caddy
    remote: str  # what --admin takes
    ca: Path  # Caddy's local CA, which issued the remote endpoint's certificate
    allowed: ClientCertificate  # the one client certificate Caddy's access control lists


@pytest.fixture
def remote_caddy(tmp_path: Path) -> Iterator[RemoteAdminCaddy]:
    """A Caddy with the beacon module whose admin API is also served remotely over mutual TLS,
    to holders of the `allowed` client certificate only."""
    remote = launch_remote_caddy(tmp_path)
    yield remote
    remote.caddy.stop()


def launch_remote_caddy(tmp_path: Path, permissions: list[dict[str, list[str]]] | None = None) -> RemoteAdminCaddy:
    """See `remote_caddy`; `permissions` limits what the `allowed` certificate may do (Caddy's
    access_control permissions: paths and methods)."""
    if not MODULE_CADDY.exists():
        pytest.fail(f"no Caddy with the beacon module at {MODULE_CADDY}: `make caddy` (make test does)")
    allowed = client_certificate(tmp_path, "allowed")
    port, admin_port, remote_port = free_port(), free_port(), free_port()
    caddyfile = tmp_path / "Caddyfile"
    caddyfile.write_text(
        f"{{\n\tadmin 127.0.0.1:{admin_port}\n\tauto_https off\n\tpersist_config off\n}}\n"
        f"http://127.0.0.1:{port} {{\n\tbind 127.0.0.1\n{POOL_SITE}\n}}\n"
    )
    adapted = subprocess.run(
        [str(MODULE_CADDY), "adapt", "--config", str(caddyfile), "--adapter", "caddyfile"],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    config = json.loads(adapted.stdout)
    # Neither the identity nor the remote endpoint can be written in a Caddyfile.
    config["admin"]["identity"] = {"identifiers": ["127.0.0.1"], "issuers": [{"module": "internal"}]}
    access: dict[str, object] = {"public_keys": [allowed.der_base64]}
    if permissions is not None:
        access["permissions"] = permissions
    config["admin"]["remote"] = {"listen": f"127.0.0.1:{remote_port}", "access_control": [access]}
    config.setdefault("apps", {})["pki"] = {"certificate_authorities": {"local": {"install_trust": False}}}
    config_path = tmp_path / "caddy.json"
    config_path.write_text(json.dumps(config))
    env = {
        **os.environ,
        "XDG_CONFIG_HOME": str(tmp_path / "caddy-config"),
        "XDG_DATA_HOME": str(tmp_path / "caddy-data"),
    }
    command = [str(MODULE_CADDY), "run", "--config", str(config_path)]
    log_path = tmp_path / "caddy.log"
    caddy = Caddy(
        run_caddy(command, env, log_path),
        f"http://127.0.0.1:{port}",
        f"http://127.0.0.1:{admin_port}",
        log_path,
        command,
        env,
    )
    wait_for_admin(caddy)

    ca = tmp_path / "caddy-data" / "caddy" / "pki" / "authorities" / "local" / "root.crt"

    def remote_serving() -> bool:
        # Listening is not enough: until Caddy holds its identity certificate, handshakes end in
        # an InternalError alert, which a test of one clear line per cause would count as one more.
        if not ca.exists():
            return False
        try:
            context = ssl.create_default_context(cafile=str(ca))
            context.load_cert_chain(str(allowed.cert), str(allowed.key))
            # Any answer over mutual TLS will do (403 when the permissions leave /config/ out).
            return (
                httpx.get(f"https://127.0.0.1:{remote_port}/beacon/pools", verify=context, timeout=2).status_code == 200
            )
        except (httpx.TransportError, ssl.SSLError):
            return False

    assert wait_until(remote_serving, timeout=20, interval=0.1), caddy.log()
    return RemoteAdminCaddy(caddy, f"https://127.0.0.1:{remote_port}", ca, allowed)


def tls_args(remote: RemoteAdminCaddy, client: ClientCertificate | None = None) -> tuple[str, ...]:
    client = client or remote.allowed
    return ("--admin-ca", str(remote.ca), "--admin-cert", str(client.cert), "--admin-key", str(client.key))


def test_joins_drains_and_leaves_through_the_remote_admin_over_mutual_tls(
    remote_caddy: RemoteAdminCaddy, companions: Launch
) -> None:
    app_port = free_port()
    companion = companions(
        remote_caddy.caddy, f"127.0.0.1:{app_port}", site="", admins=[remote_caddy.remote],
        command=uvicorn_command(app_port),
        args=("--pool", "api", "--drain-timeout", "15s", *tls_args(remote_caddy)),
    )  # fmt: skip
    companion.wait_registered()
    assert [m["address"] for m in pool(remote_caddy.caddy)] == [f"127.0.0.1:{app_port}"]
    assert wait_until(
        lambda: httpx.get(f"{remote_caddy.caddy.base_url}/items/1", timeout=5).status_code == 200, timeout=10
    )
    assert companion.caddy()["admin"] == remote_caddy.remote

    status = companion_cli("status", "--admin", remote_caddy.remote, "--json", *tls_args(remote_caddy))
    assert status.returncode == 0, status.stderr
    assert f"127.0.0.1:{app_port}" in [row["address"] for row in json.loads(status.stdout)]

    companion.signal(signal.SIGTERM)
    assert companion.wait(timeout=30) == 0, companion.log()
    assert "drained and removed from pool api" in companion.log()
    assert pool(remote_caddy.caddy) == []


def test_a_certificate_allowed_only_the_beacon_routes_joins_drains_and_leaves(
    companions: Launch, tmp_path: Path
) -> None:
    """Least privilege: a companion whose certificate Caddy lets use /beacon/ and nothing else
    (not /config/, not /load) does all a pool member does; the rest of the admin API stays shut."""
    remote = launch_remote_caddy(tmp_path, permissions=[{"paths": ["/beacon/"], "methods": ["GET", "POST"]}])
    try:
        context = ssl.create_default_context(cafile=str(remote.ca))
        context.load_cert_chain(str(remote.allowed.cert), str(remote.allowed.key))
        assert httpx.get(f"{remote.remote}/config/", verify=context, timeout=5).status_code == 403
        assert httpx.post(f"{remote.remote}/load", verify=context, json={}, timeout=5).status_code == 403
        app_port = free_port()
        companion = companions(
            remote.caddy, f"127.0.0.1:{app_port}", site="", admins=[remote.remote], command=uvicorn_command(app_port),
            args=("--pool", "api", "--drain-timeout", "15s", "--weight", "40", *tls_args(remote)),
        )  # fmt: skip
        companion.wait_registered()
        (member,) = pool(remote.caddy)
        assert (member["address"], member["weight"]) == (f"127.0.0.1:{app_port}", 40)
        assert wait_until(
            lambda: httpx.get(f"{remote.caddy.base_url}/items/1", timeout=5).status_code == 200, timeout=10
        )
        weight = companion_cli(
            "weight",
            "--upstream",
            f"127.0.0.1:{app_port}",
            "--pool",
            "api",
            "--weight",
            "70",
            "--admin",
            remote.remote,
            *tls_args(remote),
        )
        assert weight.returncode == 0 and "weight 70" in weight.stdout, weight.stderr
        assert pool(remote.caddy)[0]["weight"] == 70
        companion.signal(signal.SIGTERM)
        assert companion.wait(timeout=30) == 0, companion.log()
        assert "drained and removed from pool api" in companion.log()
        assert pool(remote.caddy) == []
    finally:
        remote.caddy.stop()


def test_a_wrong_client_certificate_is_one_clear_line_and_retried_with_backoff(
    remote_caddy: RemoteAdminCaddy, companions: Launch, tmp_path: Path
) -> None:
    app_port = free_port()
    companion = companions(
        remote_caddy.caddy, f"127.0.0.1:{app_port}", site="", admins=[remote_caddy.remote],
        command=uvicorn_command(app_port),
        args=("--pool", "api", *tls_args(remote_caddy, client_certificate(tmp_path, "stranger"))),
    )  # fmt: skip

    def admin_errors() -> int:
        try:
            return int(companion.caddy()["admin_errors"])
        except httpx.TransportError:  # its /status not listening yet
            return -1

    assert wait_until(lambda: admin_errors() >= 3, timeout=20), companion.log()
    errors_then = admin_errors()
    lines = [line for line in companion.log().splitlines() if remote_caddy.remote in line and "retrying" in line]
    assert len(lines) == 1, lines
    assert "certificate" in lines[0].lower(), lines[0]
    # Backing off: a handful of attempts in three seconds, not a tight loop.
    wait_until(lambda: False, timeout=3)
    assert 1 <= admin_errors() - errors_then <= 6
    assert companion.process.poll() is None
    assert pool(remote_caddy.caddy) == []


def test_admin_tls_flags_without_an_https_admin_are_bad_usage(tmp_path: Path) -> None:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    result = companion_cli("status", "--admin", "http://127.0.0.1:2019", "--admin-ca", str(tmp_path / "ca.pem"))
    assert result.returncode == 64 and "https://" in result.stderr, result.stderr
    result = companion_cli("status", "--admin", "https://127.0.0.1:9", "--admin-ca", str(tmp_path / "missing.pem"))
    assert result.returncode == 64 and "missing.pem" in result.stderr, result.stderr
    result = companion_cli("status", "--admin", "https://127.0.0.1:9", "--admin-cert", str(tmp_path / "ca.pem"))
    assert result.returncode == 64 and "--admin-key" in result.stderr, result.stderr
