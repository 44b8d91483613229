"""Probes that no client can hold up: the side port and the companion's `/status` under idle
floods, slowloris clients and malformed requests; the companion's own probes of a hostile
`/ready`; two companions on one host with default flags.

Real uvicorn, real Caddy, real companion processes; 127.0.0.1 only; every hostile client stops by
itself (tests.hostile)."""

from __future__ import annotations

import concurrent.futures
import http.client
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.caddy import Caddies
from tests.support.companion import Companion, uvicorn_command
from tests.support.hostile import IdleConnections, Tricklers, probe, process_stats, raw_exchange
from tests.support.ports import free_port
from tests.support.servers import Server
from tests.support.sites import SITE, upstreams
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.caddy]

Launch = Callable[..., Companion]


@pytest.fixture
def side_app(start: Callable[..., Server]) -> tuple[Server, int]:
    side = free_port()
    # Stalls are not what these tests are about: /health stays 200 while a handler blocks.
    server = start(env={"BEACON_SIDE_PORT": str(side), "BEACON_STALL_SECONDS": "60"})
    assert wait_until(lambda: probe(side, count=1).answered == 1, timeout=10)
    return server, side


@pytest.fixture
def companion_status(caddies: Caddies, companions: Launch) -> tuple[Companion, int]:
    caddy = caddies(SITE)
    port = free_port()
    companion = companions(caddy, f"127.0.0.1:{port}", command=uvicorn_command(port))
    companion.wait_registered()
    assert companion.status_port
    return companion, companion.status_port


def assert_probes_get_through(port: int, pid: int, path: str) -> None:
    rss_before, threads_before = process_stats(pid)
    idle = IdleConnections(port, 200)
    tricklers = Tricklers(port, clients=5, interval=0.5, max_seconds=60)
    try:
        time.sleep(1)  # let the tricklers get going
        run = probe(port, path, count=30, timeout=1.0)
        rss_after, threads_after = process_stats(pid)
    finally:
        tricklers.close()
        idle.close()
    assert run.answered == 30, run.summary()
    assert run.quantile(0.99) < 0.1, run.summary()
    assert rss_after - rss_before < 16 * 2**20, f"RSS grew from {rss_before} to {rss_after}"
    # At most the server's one blocking thread may have appeared.
    assert threads_after <= threads_before + 1, (threads_before, threads_after)


def test_the_side_port_answers_probes_through_idle_floods_and_slow_clients(side_app: tuple[Server, int]) -> None:
    server, side = side_app
    assert_probes_get_through(side, server.process.pid, "/health")


def test_the_side_port_answers_them_while_a_handler_blocks_the_event_loop(side_app: tuple[Server, int]) -> None:
    server, side = side_app
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        blocked = pool.submit(httpx.get, f"{server.base_url}/block/9", timeout=30)
        time.sleep(0.3)
        assert_probes_get_through(side, server.process.pid, "/health")
        assert not blocked.done(), "the loop was blocked for the whole run"
        assert blocked.result().status_code == 200


def test_the_companion_status_answers_probes_through_idle_floods_and_slow_clients(
    companion_status: tuple[Companion, int],
) -> None:
    companion, port = companion_status
    assert_probes_get_through(port, companion.process.pid, "/status")


MALFORMED = {
    "no version": b"GET /health\r\n\r\n",
    "bare LF": b"GET /health HTTP/1.1\nHost: a\n\n",
    "1 MB header line": b"GET /health HTTP/1.1\r\nX-Big: " + b"a" * 2**20 + b"\r\n\r\n",
    "10,000 headers": b"GET /health HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(10_000)) + b"\r\n",
    "CL+TE": b"POST /health HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "non-UTF-8 target": b"GET /h\xff\xfe HTTP/1.1\r\nHost: a\r\n\r\n",
    "HTTP/2.0 request line": b"GET /health HTTP/2.0\r\nHost: a\r\n\r\n",
}


def assert_malformed_requests_are_refused(port: int, path: str) -> None:
    for name, request in MALFORMED.items():
        answer = raw_exchange(port, request, timeout=5)
        status = answer.split(b"\r\n", 1)[0]
        assert answer == b"" or status.startswith((b"HTTP/1.1 4", b"HTTP/1.1 505")), f"{name}: {answer[:200]!r}"
        if answer:
            assert b"connection: close" in answer.lower(), (
                f"{name}: the connection must not be reused: {answer[:300]!r}"
            )
        started = time.monotonic()
        after = probe(port, path, count=1, timeout=1.0, pause=0)
        assert after.answered == 1 and time.monotonic() - started < 0.1, f"after {name}: {after.summary()}"


def test_the_side_port_refuses_malformed_requests_clearly(side_app: tuple[Server, int]) -> None:
    _, side = side_app
    assert_malformed_requests_are_refused(side, "/health")


def test_the_companion_status_refuses_malformed_requests_clearly(companion_status: tuple[Companion, int]) -> None:
    _, port = companion_status
    assert_malformed_requests_are_refused(port, "/status")


def test_the_side_port_keeps_connections_alive_for_scrapers(side_app: tuple[Server, int]) -> None:
    _, side = side_app
    scraper = http.client.HTTPConnection("127.0.0.1", side, timeout=5)
    try:
        sockets = set()
        for _ in range(3):
            scraper.request("GET", "/metrics")
            response = scraper.getresponse()
            assert response.status == 200 and b"beacon_ready" in response.read()
            sockets.add(id(scraper.sock))
        assert len(sockets) == 1 and scraper.sock is not None, "three scrapes on one connection"
    finally:
        scraper.close()


class HostileReady:
    """A `/ready` endpoint that answers badly: `trickle` sends its answer one byte a second,
    `flood` sends 64 MiB. Records how long each probe connection stayed open."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.durations: list[float] = []
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.listener.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        started = time.monotonic()
        with conn:
            try:
                conn.recv(4096)
                if self.mode == "trickle":
                    for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}":
                        # A second between bytes, unless the client hangs up first.
                        readable, _, _ = select.select([conn], [], [], 1.0)
                        if self.stop.is_set() or (readable and not conn.recv(1)):
                            return
                        conn.sendall(bytes([byte]))
                else:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (64 * 2**20))
                    chunk = b"x" * 2**20
                    for _ in range(64):
                        if self.stop.is_set():
                            return
                        conn.sendall(chunk)
                # Wait for the client to give up (bounded).
                conn.settimeout(10)
                conn.recv(1)
            except OSError:
                pass
            finally:
                self.durations.append(time.monotonic() - started)

    def close(self) -> None:
        self.stop.set()
        self.listener.close()


@pytest.fixture
def hostile_ready(request: pytest.FixtureRequest) -> Iterator[HostileReady]:
    server = HostileReady(request.param)
    yield server
    server.close()


@pytest.mark.parametrize("hostile_ready", ["trickle", "flood"], indirect=True)
def test_a_hostile_ready_endpoint_fails_the_companions_probe_on_time(
    hostile_ready: HostileReady, caddies: Caddies, companions: Launch
) -> None:
    caddy = caddies(SITE)
    companion = companions(
        caddy, f"127.0.0.1:{free_port()}", args=("--ready-url", f"http://127.0.0.1:{hostile_ready.port}/ready")
    )
    assert wait_until(lambda: len(hostile_ready.durations) >= 3, timeout=20), companion.log()
    # Each probe gave up within its 2 s deadline, and the companion's memory stayed flat.
    assert max(hostile_ready.durations) < 2.5, hostile_ready.durations
    rss, _ = process_stats(companion.process.pid)
    assert rss < 40 * 2**20, f"companion RSS {rss / 2**20:.1f} MiB"
    assert companion.status()["app_ready"] is False
    assert upstreams(caddy) == [], "an app whose readiness never passed is not registered"
    expected = "no whole answer within 2s" if hostile_ready.mode == "trickle" else "larger than 1048576 bytes"
    assert expected in companion.log(), companion.log()


def test_two_companions_with_default_flags_share_a_host(caddies: Caddies, companions: Launch) -> None:
    caddy = caddies(SITE)
    ports = [free_port(), free_port()]
    first, second = (
        companions(caddy, f"127.0.0.1:{port}", command=uvicorn_command(port), status_port="default") for port in ports
    )
    first.wait_registered()
    second.wait_registered()
    assert first.status_port != second.status_port
    assert sorted(entry["dial"] for entry in upstreams(caddy)) == sorted(f"127.0.0.1:{port}" for port in ports)
    # Whichever came second said, in one line, where it serves instead.
    moved = [c for c in (first, second) if "is taken (another companion on this host?)" in c.log()]
    if first.status_port == 9465 or second.status_port == 9465:
        assert len(moved) == 1, (first.log(), second.log())


def test_an_explicit_listen_that_is_taken_is_refused(caddies: Caddies, companions: Launch) -> None:
    caddy = caddies(SITE)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        companion = companions(caddy, f"127.0.0.1:{free_port()}", status_port=port)
        assert companion.wait(timeout=15) == 64
    assert f"--listen 127.0.0.1:{port}" in companion.log()


def test_nothing_listens_beyond_localhost_by_default(caddies: Caddies, companions: Launch, tmp_path: Path) -> None:
    caddy = caddies(SITE)
    port = free_port()
    companion = companions(caddy, f"127.0.0.1:{port}", command=uvicorn_command(port), status_port="default")
    companion.wait_registered()
    assert companion.status_port
    with open("/proc/net/tcp") as table:
        listening = [line.split()[1] for line in table.readlines()[1:] if line.split()[3] == "0A"]
    assert f"0100007F:{companion.status_port:04X}" in listening
