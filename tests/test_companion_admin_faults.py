"""`caddy-beacon run` against an Admin API that is down, answers 500, cuts connections in the
middle of a change, or refuses a change: clear errors, recovery, never a duplicate entry.
And bad flags: exit 64 with one clear line."""

from __future__ import annotations

import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.support.caddy import Caddies
from tests.support.companion import Companion, companion_cli
from tests.support.ports import free_port
from tests.support.servers import Server
from tests.support.sites import PROXY, SITE, upstreams
from tests.support.waiting import holds_for, wait_until

pytestmark = [pytest.mark.caddy]

Launch = Callable[..., Companion]


def test_admin_down_at_start_then_up(
    caddies: Caddies, companions: Launch, start: Callable[..., Server], tmp_path: Path
) -> None:
    app = start()
    site_port, admin_port = free_port(), free_port()
    companion = companions(
        [],
        app.base_url.removeprefix("http://"),
        site=f"http://127.0.0.1:{site_port}",
        admins=[f"http://127.0.0.1:{admin_port}"],
    )
    assert wait_until(lambda: "cannot reach Caddy's Admin API" in companion.log(), timeout=10), companion.log()
    assert holds_for(lambda: companion.process.poll() is None, 3), (
        "the companion gave up on a Caddy that is still starting"
    )
    caddy = caddies(SITE, port=site_port, admin_port=admin_port)
    up = time.monotonic()
    companion.wait_registered(timeout=15)
    print(f"\nFIGURE registered {time.monotonic() - up:.2f}s after Caddy came up")
    assert [u["dial"] for u in upstreams(caddy)] == [companion.upstream]
    # Said once, not once per retry.
    assert companion.log().count("cannot reach Caddy's Admin API") == 1, companion.log()
    assert "answers again" in companion.log()


def test_admin_answering_500_is_retried_until_it_recovers(
    caddies: Caddies, companions: Launch, start: Callable[..., Server], tmp_path: Path
) -> None:
    # A real way to make Caddy answer 500 to every change: its config loads a certificate from
    # files that have gone missing, so no new config can be provisioned until they are back.
    import trustme

    certificate = trustme.CA().issue_cert("127.0.0.1")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    certificate.cert_chain_pems[0].write_to_path(str(cert_file))
    certificate.private_key_pem.write_to_path(str(key_file))
    saved = cert_file.read_bytes(), key_file.read_bytes()
    caddy = caddies(SITE)
    with caddy.admin_client() as client:
        loaded = client.put(
            "/config/apps/tls/certificates/load_files", json=[{"certificate": str(cert_file), "key": str(key_file)}]
        )
        assert loaded.status_code == 200, loaded.text
    cert_file.unlink()
    key_file.unlink()
    app = start()
    companion = companions(caddy, app.base_url.removeprefix("http://"), args=("--ready-url", f"{app.base_url}/ready"))
    assert wait_until(lambda: "answered 500" in companion.log(), timeout=15), companion.log()
    assert holds_for(lambda: upstreams(caddy) == [], 2), upstreams(caddy)
    assert companion.caddy()["registered"] is False
    assert "500" in (companion.caddy()["last_error"] or "")
    cert_file.write_bytes(saved[0])
    key_file.write_bytes(saved[1])
    companion.wait_registered(timeout=20)
    assert [u["dial"] for u in upstreams(caddy)] == [companion.upstream]
    assert companion.caddy()["registrations"] == 1


class CuttingProxy:
    """Sits between the companion and a real Caddy admin: forwards each request (rewriting Host
    to what the admin expects), and for the first `cuts` changes lets Caddy apply them but cuts
    the connection before the answer reaches the companion."""

    def __init__(self, admin_url: str, cuts: int) -> None:
        self.admin = admin_url.removeprefix("http://")
        self.cuts = cuts
        self.cut = 0
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen()
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client: socket.socket) -> None:
        with client:
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = client.recv(65536)
                if not chunk:
                    return
                request += chunk
            head, _, body = request.partition(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                0,
            )
            while len(body) < length:
                body += client.recv(65536)
            lines = [
                b"Host: " + self.admin.encode() if line.lower().startswith(b"host:") else line
                for line in head.split(b"\r\n")
            ]
            host, port = self.admin.rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=5) as upstream:
                upstream.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + body)
                answer = b""
                while chunk := upstream.recv(65536):
                    answer += chunk
            if not request.startswith(b"GET") and self.cut < self.cuts:
                self.cut += 1
                # Reset, not a clean close: the change was applied, the answer is lost.
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                return
            client.sendall(answer)


def test_connections_cut_mid_change_create_no_duplicates(
    caddies: Caddies, companions: Launch, start: Callable[..., Server], tmp_path: Path
) -> None:
    caddy = caddies(SITE)
    app = start()
    proxy = CuttingProxy(caddy.admin_url, cuts=2)
    companion = companions(
        caddy, app.base_url.removeprefix("http://"), admins=[f"http://127.0.0.1:{proxy.port}"],
        args=("--ready-url", f"{app.base_url}/ready", "--events", "off"),
    )  # fmt: skip
    companion.wait_registered(timeout=20)
    time.sleep(2)
    assert proxy.cut == 1 or proxy.cut == 2
    assert [u["dial"] for u in upstreams(caddy)] == [companion.upstream], upstreams(caddy)
    assert "cannot reach Caddy's Admin API" in companion.log() or "closed" in companion.log()
    # Leaving through the same faulty path still removes the entry exactly once.
    companion.signal(signal.SIGTERM)
    assert companion.wait(timeout=30) == 0, companion.log()
    assert upstreams(caddy) == []


def test_a_refused_request_is_reported_once(
    caddies: Caddies, companions: Launch, start: Callable[..., Server], tmp_path: Path
) -> None:
    caddy = caddies(SITE, strict_origins=True)
    app = start()
    # The admin only accepts the Host 127.0.0.1:PORT: reaching it as localhost:PORT gets a
    # 403 every time (the mistake caddy-notes warns about).
    wrong_host = caddy.admin_url.replace("127.0.0.1", "localhost")
    companion = companions(
        caddy, app.base_url.removeprefix("http://"), admins=[wrong_host], args=("--ready-url", f"{app.base_url}/ready")
    )
    assert wait_until(lambda: "host not allowed" in companion.log(), timeout=10), companion.log()
    assert holds_for(lambda: companion.log().count("host not allowed") == 1, 4), companion.log()
    assert companion.process.poll() is None
    assert upstreams(caddy) == []


def test_a_missing_handler_is_reported_once_and_joined_when_it_appears(
    caddies: Caddies, companions: Launch, start: Callable[..., Server], tmp_path: Path
) -> None:
    caddy = caddies(SITE)
    app = start()
    companion = companions(
        caddy,
        app.base_url.removeprefix("http://"),
        site="",
        args=("--handler-id", "api-proxy", "--ready-url", f"{app.base_url}/ready"),
    )
    assert wait_until(lambda: 'no handler @id "api-proxy"' in companion.log(), timeout=10), companion.log()
    assert holds_for(lambda: companion.log().count('no handler @id "api-proxy"') == 1, 3), companion.log()
    # Tag the proxy: the config changed, so the companion tries again and joins it.
    with caddy.admin_client() as client:
        tagged = client.put(f"{PROXY}/@id", json="api-proxy")
        assert tagged.status_code == 200, tagged.text
    companion.wait_registered(timeout=10)
    assert [u["dial"] for u in upstreams(caddy)] == [companion.upstream]


@pytest.mark.parametrize(
    "args,expected",
    [
        (["run", "--upstream", "127.0.0.1:8000"], "--site"),
        (["run", "--site", ":80"], "--upstream"),
        (["run", "--upstream", "8000", "--site", ":80"], "expected HOST:PORT"),
        (["run", "--upstream", "h:1", "--site", ":80", "--handler-id", "x"], "cannot be used with"),
        (["run", "--upstream", "h:1", "--site", ":80", "--drain-timeout", "soon"], "not a duration"),
        (["run", "--upstream", "h:1", "--site", ":80", "--listen", "everywhere"], "--listen"),
        (["run", "--upstream", "h:1", "--site", ":80", "--events", "maybe"], "--events"),
        (["run", "--upstream", "h:1", "--site", ":80", "--reap-after", "later"], "--reap-after"),
        (
            [
                "run",
                "--upstream",
                "h:1",
                "--site",
                ":80",
                "--admin",
                "https://h:2019",
                "--admin-ca",
                "/nonexistent/ca.pem",
            ],
            "/nonexistent/ca.pem",
        ),
        (
            ["run", "--upstream", "h:1", "--site", ":80", "--admin", "https://h:2019", "--admin-cert", "/etc/hostname"],
            "--admin-key",
        ),
        (["run", "--upstream", "h:1", "--site", ":80", "--ready-url", "ready"], "--ready-url"),
    ],
)
def test_bad_run_flags_exit_64_with_one_line(args: list[str], expected: str) -> None:
    result = companion_cli(*args)
    assert result.returncode == 64, result
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert expected in result.stderr


def test_a_status_port_in_use_is_a_usage_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = companion_cli(
            "run",
            "--upstream",
            "127.0.0.1:1",
            "--site",
            ":80",
            "--listen",
            f"127.0.0.1:{port}",
            "--admin",
            "http://127.0.0.1:1",
        )
    assert result.returncode == 64, result
    assert "--listen" in result.stderr and "own port" in result.stderr


def test_the_pip_installed_command_supervises_and_drains(caddies: Caddies, companions: Launch, tmp_path: Path) -> None:
    from tests.support.companion import uvicorn_command
    from tests.support.hostile import process_stats

    command = Path(sys.executable).parent / "caddy-beacon"
    assert command.exists(), "pip install did not put caddy-beacon on PATH"
    # The native companion, not a Python process hosting it: every replica pays its memory.
    assert command.read_bytes()[:4] == b"\x7fELF", "the installed caddy-beacon is not the native binary"
    caddy = caddies(SITE)
    port = free_port()
    companion = companions(caddy, f"127.0.0.1:{port}", command=uvicorn_command(port), program=str(command))
    companion.wait_registered()
    resident, _ = process_stats(companion.process.pid)
    assert resident < 12 * 2**20, f"{resident / 2**20:.1f} MiB resident"
    assert httpx.get(f"{caddy.base_url}/items/5", timeout=10).json()["id"] == 5
    companion.signal(signal.SIGINT)
    assert companion.wait(timeout=30) == 0, companion.log()
    assert upstreams(caddy) == []
    assert "Traceback" not in companion.log() and "KeyboardInterrupt" not in companion.log()
