"""`caddy-beacon run` end to end: real Caddy, real uvicorn replicas, real companion processes.

Registration after readiness, traffic to every replica, rolling restarts without a failed
request, Caddy restarts, many companions at once, Caddy's health verdicts, draining, reaping,
Unix sockets, and an Admin API that is down, failing or cutting connections.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.caddy import Caddies, Caddy, launch_caddy
from tests.support.companion import Companion, companion_cli, uvicorn_command
from tests.support.h2_client import H2Connection
from tests.support.load import Load
from tests.support.ports import free_port
from tests.support.servers import Server
from tests.support.sites import PROXY, SITE, upstreams
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.caddy]


Launch = Callable[..., Companion]


@pytest.fixture
def caddy(caddies: Caddies) -> Caddy:
    return caddies(SITE)


def in_flight(caddy: Caddy, address: str) -> int | None:
    """Requests Caddy has in flight to `address` (None once it has forgotten it)."""
    with caddy.admin_client() as client:
        listed = {u["address"]: u["num_requests"] for u in client.get("/reverse_proxy/upstreams").json()}
    return listed.get(address)


def event_sinks(caddy: Caddy) -> list[str]:
    with caddy.admin_client() as client:
        logs = client.get("/config/logging/logs").json() or {}
    return [name for name in logs if name.startswith("caddy-beacon-events-")]


def replica(launch: Launch, caddy: Caddy | list[Caddy], tmp_path: Path, *, env: dict[str, str] | None = None,
            args: tuple[str, ...] = (), port: int | None = None) -> Companion:  # fmt: skip
    """A uvicorn replica on 127.0.0.1 under `caddy-beacon run -- uvicorn ...`."""
    port = port or free_port()
    return launch(
        caddy, f"127.0.0.1:{port}", command=uvicorn_command(port), env=env, args=("--drain-timeout", "15s", *args)
    )


def test_rolling_restart_under_load_fails_no_request(caddies: Caddies, companions: Launch, tmp_path: Path) -> None:
    # grace_period as a production Caddyfile would set it.
    caddy = caddies(SITE, tls=True, global_options="\tgrace_period 3s\n")
    _rolling_restart(companions, caddy, tmp_path)


def _rolling_restart(companions: Launch, caddy: Caddy, tmp_path: Path) -> None:
    ports = [free_port(), free_port()]
    running = {port: replica(companions, caddy, tmp_path, port=port) for port in ports}
    for companion in running.values():
        companion.wait_registered()
    with Load(caddy.base_url) as load:
        assert wait_until(lambda: len(load.pids) == 2, timeout=20), "traffic did not reach both replicas"
        for port in ports:
            before = load.total()
            old = running[port]
            old.signal(signal.SIGTERM)
            assert old.wait(timeout=60) == 0, old.log()
            running[port] = replica(companions, caddy, tmp_path, port=port)
            running[port].wait_registered()
            new_pid = running[port].app_pid()
            assert wait_until(lambda new_pid=new_pid: new_pid in load.pids, timeout=20), (
                "the restarted replica got no traffic"
            )
            assert load.total() > before, "the load stalled during the restart"
        time.sleep(1)
    print(
        f"\nFIGURE rolling restart (HTTP/2): {load.ok} requests ok, {len(load.failures)} failed, {load.resent} sent again after GOAWAY"
    )
    assert load.ok > 200
    # Zero, including requests on an HTTP/2 connection a reload left on a superseded Caddy
    # server (it keeps the old upstream list): those must be retried on the live replica.
    stale = stale_config_failures(caddy, companions_logs(tmp_path))
    assert load.failures == [], (
        f"{len(stale)} of them routed to an address already removed\n"
        + "\n".join(load.failures[:20])
        + "\n"
        + caddy.log()[-20000:]
    )
    assert len(upstreams(caddy)) == 2


def test_a_connection_left_on_a_superseded_caddy_server_still_reaches_a_live_replica(
    caddies: Caddies, companions: Launch, start: Callable[..., Server], tmp_path: Path
) -> None:
    """Go's HTTP/2 server tells its connections to go away when Caddy replaces a server, but a
    connection still in its TLS handshake at that moment is missed: it stays on the old server,
    with the old upstream list, for as long as the client keeps it (grace_period does not close
    it). Built here on purpose: the TCP connection is accepted before a companion's removal
    reloads Caddy, and the TLS handshake finishes after it. Its requests still reach the removed
    replica, and once that replica is gone they must be retried on a live one (a zero-wait
    `lb_retries`: a superseded handler's waiting retries stop at once), not answered 502."""
    caddy = caddies(SITE, tls=True, global_options="\tgrace_period 1s\n")
    leaving, staying = start(), start()
    joined = [
        companions(caddy, app.base_url.removeprefix("http://"), args=("--ready-url", f"{app.base_url}/ready"))
        for app in (leaving, staying)
    ]
    for companion in joined:
        companion.wait_registered()
    host, port = caddy.base_url.removeprefix("https://").split(":")
    early = socket.create_connection((host, int(port)), timeout=10)
    time.sleep(0.3)  # accepted by the server about to be superseded
    joined[0].signal(signal.SIGTERM)  # removes `leaving` from Caddy's config: a reload
    assert joined[0].wait(timeout=30) == 0, joined[0].log()
    time.sleep(0.3)
    connection = H2Connection(host, int(port), raw=early)
    try:
        pid_leaving = leaving.get("/whoami").json()["pid"]
        answered = [_whoami(connection) for _ in range(40)]
        assert pid_leaving in answered, "the connection did not stay on the superseded server; nothing to test"
        time.sleep(1.5)  # past grace_period: the old server's handlers are now shut down
        leaving.stop(signal.SIGKILL)
        after = [_whoami(connection) for _ in range(30)]
    finally:
        connection.close()
    pid_staying = staying.get("/whoami").json()["pid"]
    assert after == [pid_staying] * 30, f"answers after the removed replica died: {after}\n{caddy.log()[-5000:]}"


def _whoami(connection: H2Connection) -> int | str:
    status, body = connection.request("GET", "/whoami")
    return int(json.loads(body)["pid"]) if status == 200 else f"{status} {body[:80]!r}"


def companions_logs(tmp_path: Path) -> str:
    return "".join(path.read_text(errors="replace") for path in sorted(tmp_path.glob("companion-*.log")))


def stale_config_failures(caddy: Caddy, companion_logs: str) -> list[tuple[float, str]]:
    """Caddy's logged dial failures to an address at a time when the companions' logs show it
    was removed from Caddy's config and not registered again."""
    import datetime

    events: list[tuple[float, str, str]] = []
    for when, verb, address in re.findall(
        r"^(\S+) caddy-beacon info: (removed|registered) (\S+)", companion_logs, re.M
    ):
        stamp = (
            datetime.datetime.strptime(when, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc).timestamp()
        )
        events.append((stamp, verb, address))
    stale = []
    for line in caddy.log().splitlines():
        if '"logger":"http.log.error"' not in line or "connection refused" not in line:
            continue
        entry = json.loads(line)
        address = re.search(r"dial tcp (\S+): ", entry["msg"])
        if not address:
            continue
        before = [verb for stamp, verb, where in sorted(events) if where == address.group(1) and stamp < entry["ts"]]
        if before and before[-1] == "removed":
            stale.append((entry["ts"], address.group(1)))
    return stale


def test_caddy_restart_re_registers_each_replica_exactly_once(companions: Launch, caddy: Caddy, tmp_path: Path) -> None:
    replicas = [replica(companions, caddy, tmp_path), replica(companions, caddy, tmp_path)]
    for companion in replicas:
        companion.wait_registered()
    caddy.kill()
    caddy.restart()
    restarted = time.monotonic()
    expected = sorted(companion.upstream for companion in replicas)
    assert wait_until(lambda: sorted(u["dial"] for u in upstreams(caddy)) == expected, timeout=10), upstreams(caddy)
    print(f"\nFIGURE re-registered after a Caddy restart in {time.monotonic() - restarted:.2f}s")
    time.sleep(3)
    entries = upstreams(caddy)
    assert sorted(u["dial"] for u in entries) == expected
    assert len({u["@id"] for u in entries}) == 2
    for companion in replicas:
        assert companion.caddy()["registrations"] == 2, companion.log()
        assert "registering it again" in companion.log()
    assert httpx.get(f"{caddy.base_url}/items/1", timeout=10).status_code == 200


def test_ten_companions_at_once_make_exactly_ten_upstreams(
    companions: Launch, caddy: Caddy, start: Callable[..., Server]
) -> None:
    app = start()
    # Ten instances joining at the same moment; the app's readiness stands in for each one's.
    launched = [
        companions(
            caddy, f"127.0.0.1:{free_port()}", args=("--ready-url", f"{app.base_url}/ready", "--reap-after", "off")
        )
        for _ in range(10)
    ]
    for companion in launched:
        companion.wait_registered(timeout=60)
    entries = upstreams(caddy)
    assert sorted(u["dial"] for u in entries) == sorted(c.upstream for c in launched)
    assert len({u["@id"] for u in entries}) == 10
    time.sleep(2)
    assert len(upstreams(caddy)) == 10
    assert all(c.caddy()["registrations"] == 1 for c in launched), "a companion wrote its entry twice"
    assert len(event_sinks(caddy)) == 10
    for companion in launched:
        companion.signal(signal.SIGTERM)
    for companion in launched:
        assert companion.wait(timeout=60) == 0, companion.log()
    assert upstreams(caddy) == []
    assert event_sinks(caddy) == [], "a companion left its event sink behind"


def test_health_verdicts_follow_caddy_active_checks(companions: Launch, caddy: Caddy, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    companion = replica(companions, caddy, tmp_path, env={"TEST_CHECKS": "toggle", "TEST_STATE_DIR": str(state)})
    companion.wait_registered()
    # A healthy upstream produces no event: Caddy's gauge (10 s refresh) says so first.
    assert wait_until(lambda: companion.caddy()["healthy"] is True, timeout=15), companion.status()

    (state / "fail").touch()
    failed_at = time.monotonic()
    assert wait_until(lambda: companion.caddy()["healthy"] is False, timeout=6), companion.status()
    print(f"\nFIGURE unhealthy reported {time.monotonic() - failed_at:.2f}s after readiness failed (1s checks)")
    assert companion.caddy()["health_source"] == "events"
    assert "UNHEALTHY" in companion.log()

    def status_says(healthy: bool) -> bool:
        result = companion_cli("status", "--admin", caddy.admin, "--json")
        return any(e["address"] == companion.upstream and e["healthy"] is healthy for e in json.loads(result.stdout))

    assert wait_until(lambda: status_says(False), timeout=15), "caddy-beacon status never saw it unhealthy"

    (state / "fail").unlink()
    assert wait_until(lambda: companion.caddy()["healthy"] is True, timeout=6), companion.status()
    metrics = companion.metrics()
    assert (
        'to="unhealthy"} 1' in metrics
        and f'beacon_companion_upstream_healthy{{admin="{caddy.admin}",upstream="{companion.upstream}"}} 1' in metrics
    )


def test_sigterm_drains_requests_in_flight_before_the_app_stops(
    companions: Launch, caddy: Caddy, tmp_path: Path
) -> None:
    companion = replica(companions, caddy, tmp_path)
    companion.wait_registered()
    app_pid = companion.app_pid()
    assert app_pid
    result: dict[str, Any] = {}

    def slow_request() -> None:
        result["response"] = httpx.get(f"{caddy.base_url}/sleep/2", timeout=20)

    thread = threading.Thread(target=slow_request)
    thread.start()
    assert wait_until(lambda: in_flight(caddy, companion.upstream) == 1, timeout=10), companion.status()
    signalled = time.monotonic()
    companion.signal(signal.SIGTERM)
    # Out of Caddy's config at once, but the app keeps running until the request is done.
    assert wait_until(lambda: upstreams(caddy) == [], timeout=2)
    time.sleep(0.5)
    os.kill(app_pid, 0)
    assert companion.wait(timeout=30) == 0, companion.log()
    elapsed = time.monotonic() - signalled
    thread.join(timeout=20)
    assert result["response"].status_code == 200
    assert 1.0 < elapsed < 10, elapsed
    log = companion.log()
    assert log.index("drained") < log.index("passing SIGTERM on to the app")
    print(f"\nFIGURE SIGTERM->exit with a 2 s request in flight: {elapsed:.2f}s")

    idle = replica(companions, caddy, tmp_path)
    idle.wait_registered()
    signalled = time.monotonic()
    idle.signal(signal.SIGTERM)
    assert idle.wait(timeout=30) == 0, idle.log()
    print(f"FIGURE SIGTERM->exit with nothing in flight: {time.monotonic() - signalled:.2f}s")


def test_an_app_that_dies_is_removed_and_its_status_passed_on(companions: Launch, caddy: Caddy, tmp_path: Path) -> None:
    companion = replica(companions, caddy, tmp_path)
    companion.wait_registered()
    pid = companion.app_pid()
    assert pid
    os.kill(pid, signal.SIGKILL)
    assert companion.wait(timeout=20) == 128 + signal.SIGKILL, companion.log()
    assert "exited by itself" in companion.log()
    assert upstreams(caddy) == []


def test_a_killed_companion_stops_its_app_and_is_reaped_by_the_next(
    companions: Launch, caddy: Caddy, tmp_path: Path
) -> None:
    victim = replica(companions, caddy, tmp_path)
    victim.wait_registered()
    survivor = replica(companions, caddy, tmp_path, args=("--reap-after", "2s"))
    survivor.wait_registered()
    assert len(event_sinks(caddy)) == 2
    app_pid = victim.app_pid()
    victim.process.kill()
    victim.wait(timeout=10)

    def app_gone() -> bool:
        try:
            os.kill(app_pid, 0)  # type: ignore[arg-type]
        except ProcessLookupError:
            return True
        return False

    assert wait_until(app_gone, timeout=25), "the app outlived its killed companion"
    assert wait_until(lambda: [u["dial"] for u in upstreams(caddy)] == [survivor.upstream], timeout=20), upstreams(
        caddy
    )
    assert len(event_sinks(caddy)) == 1
    assert survivor.caddy()["reaped"] == 1
    assert f"reaped {victim.upstream}" in survivor.log()


def test_unix_sockets_for_the_app_and_the_admin_api(companions: Launch, tmp_path: Path) -> None:
    sockets = Path(f"/tmp/beacon-{os.getpid()}-{free_port()}")
    sockets.mkdir()
    try:
        caddy = launch_caddy(tmp_path, SITE, admin_socket=sockets / "admin.sock")
        try:
            app_socket = sockets / "app.sock"
            companion = companions(
                caddy, f"unix/{app_socket}", command=uvicorn_command(uds=app_socket), args=("--drain-timeout", "10s")
            )
            companion.wait_registered()
            assert upstreams(caddy) == [{"@id": upstreams(caddy)[0]["@id"], "dial": f"unix/{app_socket}"}]
            assert httpx.get(f"{caddy.base_url}/items/3", timeout=10).json()["id"] == 3
            assert wait_until(lambda: companion.caddy()["healthy"] is True, timeout=15), companion.status()
            status = companion_cli("status", "--admin", caddy.admin, "--json")
            assert status.returncode == 0, status.stderr
            companion.signal(signal.SIGTERM)
            assert companion.wait(timeout=30) == 0, companion.log()
            assert upstreams(caddy) == []
        finally:
            caddy.stop()
    finally:
        for path in sockets.iterdir():
            path.unlink()
        sockets.rmdir()


def test_one_companion_registers_with_several_caddies(companions: Launch, tmp_path: Path) -> None:
    first, second = launch_caddy(tmp_path, SITE), launch_caddy(tmp_path, SITE)
    try:
        # Two Caddy instances with different site addresses: join each one's tagged proxy.
        for caddy in (first, second):
            with caddy.admin_client() as client:
                assert client.put(f"{PROXY}/@id", json="api").status_code == 200
        port = free_port()
        companion = companions(
            [first, second], f"127.0.0.1:{port}", site="", command=uvicorn_command(port), args=("--handler-id", "api")
        )
        companion.wait_registered()
        assert [c["admin"] for c in companion.status()["caddies"]] == [first.admin, second.admin]
        for caddy in (first, second):
            assert [u["dial"] for u in upstreams(caddy)] == [companion.upstream]
            assert httpx.get(f"{caddy.base_url}/items/9", timeout=10).json()["id"] == 9
        # One Caddy going away does not disturb the other's loop.
        second.kill()
        time.sleep(2)
        assert companion.caddy(0)["registered"] is True
        companion.signal(signal.SIGTERM)
        assert companion.wait(timeout=30) == 0, companion.log()
        assert upstreams(first) == []
        assert "could not remove" in companion.log()
    finally:
        first.stop()
        second.stop()
