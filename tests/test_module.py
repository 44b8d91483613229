"""The beacon Caddy module end to end: the Caddy from `make caddy`, real companions joining a pool
with `--pool`, real uvicorn replicas. Membership never touches Caddy's config: no reload, no
dropped request, no cut WebSocket.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.caddy import MODULE_CADDY, Caddies, Caddy
from tests.support.companion import Companion, companion_cli, sigterm_with_a_request_in_flight, uvicorn_command
from tests.support.load import Load
from tests.support.ports import free_port
from tests.support.sites import POOL_SITE, SITE, caddy_metric, config_etag, pool, upstreams
from tests.support.waiting import holds_for, wait_until

pytestmark = [pytest.mark.caddy]

Launch = Callable[..., Companion]


@pytest.fixture
def caddy(caddies: Caddies) -> Caddy:
    if not MODULE_CADDY.exists():
        pytest.fail(f"{MODULE_CADDY} is missing: `make caddy` (make test does)")
    # Caddy's events app logs every event it emits under the logger "events" at DEBUG.
    return caddies(POOL_SITE, module=True, global_options=EVENT_LOG)


EVENT_LOG = "\tlog events {\n\t\tlevel DEBUG\n\t\tinclude events\n\t}\n"


def member(
    launch: Launch,
    caddy: Caddy,
    *,
    port: int | None = None,
    env: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
) -> Companion:
    """A uvicorn replica under `caddy-beacon run --pool api -- uvicorn ...`."""
    port = port or free_port()
    return launch(caddy, f"127.0.0.1:{port}", site="", command=uvicorn_command(port), env=env,
                  args=("--pool", "api", "--drain-timeout", "15s", *args))  # fmt: skip


def test_replicas_join_and_serve_without_a_config_change(caddy: Caddy, companions: Launch) -> None:
    etag = config_etag(caddy)
    first, second = member(companions, caddy), member(companions, caddy)
    first.wait_registered()
    second.wait_registered()
    listed = {u["address"]: u for u in pool(caddy)}
    assert set(listed) == {first.upstream, second.upstream}
    assert all(u["healthy"] and not u["draining"] for u in listed.values()), listed
    pids = {httpx.get(f"{caddy.base_url}/whoami", timeout=5).json()["pid"] for _ in range(20)}
    assert pids == {first.app_pid(), second.app_pid()}
    assert config_etag(caddy) == etag, "joining changed Caddy's config"
    assert first.caddy()["health_source"] == "beacon module" or first.caddy()["healthy"] is None
    assert "joining pool api (no config edits)" in first.log()


@pytest.mark.parametrize("rounds", [2])
def test_rolling_restarts_fail_no_request_for_either_http1_client(
    caddy: Caddy, companions: Launch, rounds: int
) -> None:
    etag = config_etag(caddy)
    ports = [free_port(), free_port()]
    running = {port: member(companions, caddy, port=port) for port in ports}
    for companion in running.values():
        companion.wait_registered()
    with (
        Load(caddy.base_url, threads=2, keepalive=True) as keepalive,
        Load(caddy.base_url, threads=2, keepalive=False) as fresh,
    ):
        loads = (keepalive, fresh)
        assert wait_until(lambda: all(len(load.pids) == 2 for load in loads), timeout=20), (
            "traffic did not reach both replicas"
        )
        for _ in range(rounds):
            for port in ports:
                old = running[port]
                old.signal(signal.SIGTERM)
                assert old.wait(timeout=60) == 0, old.log()
                running[port] = member(companions, caddy, port=port)
                running[port].wait_registered()
                new_pid = running[port].app_pid()
                assert wait_until(lambda new_pid=new_pid: all(new_pid in load.pids for load in loads), timeout=20), (
                    "the new replica got no traffic"
                )
        time.sleep(0.5)
    for name, load in (("keep-alive", keepalive), ("new connection per request", fresh)):
        print(f"\nFIGURE module rolling restart, HTTP/1.1 {name}: {load.ok} ok, {len(load.failures)} failed")
        assert load.ok > 200
        assert load.failures == [], f"{name}: " + "\n".join(load.failures[:20]) + "\n" + caddy.log()[-5000:]
    assert config_etag(caddy) == etag, "Caddy's config changed during the rolling restart"
    assert sorted(u["address"] for u in pool(caddy)) == sorted(f"127.0.0.1:{port}" for port in ports)


def test_a_websocket_survives_replicas_joining_and_leaving_without_stream_close_delay(
    caddy: Caddy, companions: Launch
) -> None:
    from websockets.sync.client import connect

    assert "stream_close_delay" not in POOL_SITE
    first = member(companions, caddy)
    first.wait_registered()
    port = caddy.base_url.rsplit(":", 1)[1]
    with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=10) as websocket:
        websocket.send("before")
        assert websocket.recv(timeout=10) == "echo before"
        for joining in (member(companions, caddy), member(companions, caddy)):
            joining.wait_registered()
            websocket.send("after joining")
            assert websocket.recv(timeout=10) == "echo after joining"
            joining.signal(signal.SIGTERM)
            assert joining.wait(timeout=30) == 0, joining.log()
            websocket.send("after leaving")
            assert websocket.recv(timeout=10) == "echo after leaving"


def test_registrations_survive_a_forced_reload(caddy: Caddy, companions: Launch) -> None:
    companion = member(companions, caddy)
    companion.wait_registered()
    caddyfile = caddy.command[caddy.command.index("--config") + 1]
    admin = caddy.admin_url.removeprefix("http://")
    result = subprocess.run(
        [str(MODULE_CADDY), "reload", "--config", caddyfile, "--adapter", "caddyfile", "--address", admin, "--force"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [u["address"] for u in pool(caddy)] == [companion.upstream]
    for _ in range(10):
        assert httpx.get(f"{caddy.base_url}/whoami", timeout=5).status_code == 200
    assert companion.caddy()["registrations"] == 1, "a reload must not need a new registration"


def test_a_sigkilled_companion_leaves_the_pool_when_its_lease_ends(caddy: Caddy, companions: Launch) -> None:
    staying = member(companions, caddy)
    vanishing = member(companions, caddy, args=("--lease", "2s"))
    staying.wait_registered()
    vanishing.wait_registered()
    vanishing.process.kill()
    killed_at = time.monotonic()
    assert wait_until(lambda: [u["address"] for u in pool(caddy)] == [staying.upstream], timeout=8), pool(caddy)
    print(f"\nFIGURE SIGKILLed companion gone from the pool after {time.monotonic() - killed_at:.2f}s (2 s lease)")
    assert caddy_metric(caddy, 'caddy_beacon_upstream_events_total{event="expired",pool="api"}') >= 1
    for _ in range(10):
        assert httpx.get(f"{caddy.base_url}/whoami", timeout=5).status_code == 200


def test_after_caddy_is_killed_and_restarted_companions_register_again_once(caddy: Caddy, companions: Launch) -> None:
    joined = [member(companions, caddy), member(companions, caddy)]
    for companion in joined:
        companion.wait_registered()
    caddy.kill()
    caddy.restart()
    restarted = time.monotonic()

    def all_back() -> bool:
        return sorted(u["address"] for u in pool(caddy)) == sorted(c.upstream for c in joined)

    assert wait_until(all_back, timeout=10), pool(caddy)
    print(f"\nFIGURE companions back in the pool {time.monotonic() - restarted:.2f}s after Caddy restarted")
    assert holds_for(lambda: len(pool(caddy)) == 2, 2), "registered more than once"
    assert [c.caddy()["registrations"] for c in joined] == [2, 2]
    assert httpx.get(f"{caddy.base_url}/whoami", timeout=5).status_code == 200


def test_the_modules_checks_take_a_failing_replica_out_and_bring_it_back(
    caddy: Caddy, companions: Launch, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    flaky = member(companions, caddy, env={"TEST_CHECKS": "toggle", "TEST_STATE_DIR": str(state)})
    steady = member(companions, caddy)
    flaky.wait_registered()
    steady.wait_registered()

    def listed(address: str) -> dict[str, Any]:
        return next(u for u in pool(caddy) if u["address"] == address)

    (state / "fail").touch()
    failed_at = time.monotonic()
    # 2 failures 500 ms apart, plus the app's own check interval: well under 3 s.
    assert wait_until(lambda: listed(flaky.upstream)["healthy"] is False, timeout=3), pool(caddy)
    print(
        f"\nFIGURE module took the failing replica out {time.monotonic() - failed_at:.2f}s after its readiness failed"
    )
    assert "503" in (listed(flaky.upstream)["last_error"] or "")
    pids = {httpx.get(f"{caddy.base_url}/whoami", timeout=5).json()["pid"] for _ in range(20)}
    assert pids == {steady.app_pid()}, "traffic still reached the unhealthy replica"
    assert wait_until(lambda: flaky.caddy()["healthy"] is False, timeout=3), flaky.status()
    assert flaky.caddy()["health_source"] == "beacon module"
    result = companion_cli("status", "--admin", caddy.admin, "--json")
    entries = {e["address"]: e for e in json.loads(result.stdout)}
    assert entries[flaky.upstream]["healthy"] is False and entries[flaky.upstream]["pool"] == "api", result.stdout

    (state / "fail").unlink()
    assert wait_until(lambda: listed(flaky.upstream)["healthy"] is True, timeout=3), pool(caddy)
    assert wait_until(lambda: flaky.caddy()["healthy"] is True, timeout=3), flaky.status()
    assert caddy_metric(caddy, 'caddy_beacon_health_transitions_total{pool="api",to="unhealthy"}') == 1
    assert caddy_metric(caddy, 'caddy_beacon_health_transitions_total{pool="api",to="healthy"}') == 1
    assert '"msg":"upstream is unhealthy"' in caddy.log()
    events = [json.loads(line) for line in caddy.log().splitlines() if '"logger":"events"' in line]
    health = [(e["name"], e["data"]["host"]) for e in events if e.get("name") in ("healthy", "unhealthy")]
    assert health == [("unhealthy", flaky.upstream), ("healthy", flaky.upstream)], health
    assert all(
        e["origin"] == "http.reverse_proxy.upstreams.beacon"
        for e in events
        if e.get("name") in ("healthy", "unhealthy")
    )


def test_a_pool_that_runs_dry_says_so_once_and_says_when_it_serves_again(
    caddy: Caddy, companions: Launch, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    only = member(companions, caddy, env={"TEST_CHECKS": "toggle", "TEST_STATE_DIR": str(state)})
    only.wait_registered()
    assert wait_until(lambda: httpx.get(f"{caddy.base_url}/whoami", timeout=5).status_code == 200, timeout=5)
    dry = '"msg":"pool has no upstream to offer: its requests fail until a member is registered, healthy, not draining and weighted above 0","pool":"api"'
    again = '"msg":"pool offers upstreams again","pool":"api","upstreams":1'
    assert dry not in caddy.log(), "an empty pool at start is not news"

    (state / "fail").touch()
    assert wait_until(lambda: dry in caddy.log(), timeout=5), caddy.log()[-2000:]
    assert httpx.get(f"{caddy.base_url}/whoami", timeout=5).status_code >= 500
    time.sleep(1.5)  # more probes fail, the lease is renewed: still one line
    assert caddy.log().count(dry) == 1
    (state / "fail").unlink()
    assert wait_until(lambda: again in caddy.log(), timeout=5), caddy.log()[-2000:]
    assert httpx.get(f"{caddy.base_url}/whoami", timeout=5).status_code == 200

    # Its last member leaving drained is the same news: said once more, then nothing.
    only.signal(signal.SIGTERM)
    assert only.wait(timeout=30) == 0
    assert wait_until(lambda: caddy.log().count(dry) == 2, timeout=5), caddy.log()[-2000:]
    assert caddy.log().count(again) == 1


def test_sigterm_drains_in_the_pool_before_the_app_stops(caddy: Caddy, companions: Launch) -> None:
    companion = member(companions, caddy)
    companion.wait_registered()
    assert sigterm_with_a_request_in_flight(companion, caddy.base_url, lambda: pool(caddy)).status_code == 200
    assert pool(caddy) == []
    assert "drained and removed from pool api" in companion.log()


def test_ten_companions_at_once_make_ten_members(caddy: Caddy, companions: Launch) -> None:
    joined = [member(companions, caddy) for _ in range(10)]
    for companion in joined:
        companion.wait_registered(timeout=60)
    assert sorted(u["address"] for u in pool(caddy)) == sorted(c.upstream for c in joined)


def test_against_a_stock_caddy_the_pool_falls_back_to_config_edits(caddies: Caddies, companions: Launch) -> None:
    stock = caddies(SITE)
    port = free_port()
    companion = companions(stock, f"127.0.0.1:{port}", command=uvicorn_command(port), args=("--pool", "api"))
    companion.wait_registered()
    assert [u["dial"] for u in upstreams(stock)] == [companion.upstream]
    assert "has no beacon module" in companion.log()
    # Without --site there is nothing to fall back to: said plainly, not registered, still a clean stop.
    port = free_port()
    alone = companions(stock, f"127.0.0.1:{port}", site="", command=uvicorn_command(port), args=("--pool", "api"))
    assert wait_until(lambda: "no --site or --handler-id was given" in alone.log(), timeout=15), alone.log()
    alone.signal(signal.SIGTERM)
    assert alone.wait(timeout=30) == 0, alone.log()


def test_bad_input_to_the_admin_routes_gets_a_clear_4xx_and_caddy_keeps_serving(
    caddy: Caddy, companions: Launch
) -> None:
    companion = member(companions, caddy)
    companion.wait_registered()
    with caddy.admin_client() as client:
        json_headers = {"Content-Type": "application/json"}
        for path, body, headers, status in [
            ("/beacon/pools/api/register", b'{"address": ', json_headers, 400),
            ("/beacon/pools/api/register", b'{"address": "not an address"}', json_headers, 400),
            ("/beacon/pools/nope/register", b'{"address": "127.0.0.1:9"}', json_headers, 404),
            ("/beacon/pools/api/register", b'{"address": "' + b"a" * 2**20 + b'"}', json_headers, 413),
            ("/beacon/pools/api/register", b'{"address": "127.0.0.1:9"}', {"Content-Type": "text/plain"}, 415),
        ]:
            response = client.post(path, content=body, headers=headers)
            assert response.status_code == status, (path, response.status_code, response.text)
            assert response.json()["error"], response.text
    assert [u["address"] for u in pool(caddy)] == [companion.upstream]
    assert httpx.get(f"{caddy.base_url}/whoami", timeout=5).status_code == 200


def test_one_companion_joins_the_pools_of_several_caddies(caddies: Caddies, companions: Launch) -> None:
    first, second = (caddies(POOL_SITE, module=True) for _ in range(2))
    port = free_port()
    companion = companions(
        [first, second], f"127.0.0.1:{port}", site="", command=uvicorn_command(port), args=("--pool", "api")
    )
    companion.wait_registered()
    for caddy in (first, second):
        assert [u["address"] for u in pool(caddy)] == [companion.upstream]
        assert httpx.get(f"{caddy.base_url}/whoami", timeout=5).status_code == 200
    companion.signal(signal.SIGTERM)
    assert companion.wait(timeout=30) == 0, companion.log()
    assert pool(first) == [] and pool(second) == []


def test_deregister_drains_and_removes_a_pool_member(caddy: Caddy) -> None:
    with caddy.admin_client() as client:
        response = client.post("/beacon/pools/api/register", json={"address": "127.0.0.1:9", "lease_ms": 60_000})
        assert response.status_code == 200, response.text
    result = companion_cli("deregister", "--upstream", "127.0.0.1:9", "--admin", caddy.admin, "--drain-timeout", "5s")
    assert result.returncode == 0, result.stderr
    assert "deregistered 127.0.0.1:9" in result.stdout and "(1 pool)" in result.stdout, result.stdout
    assert pool(caddy) == []
    again = companion_cli("deregister", "--upstream", "127.0.0.1:9", "--admin", caddy.admin)
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout + again.stderr


def test_replicas_get_traffic_only_once_ready(companions: Launch, caddy: Caddy, tmp_path: Path) -> None:
    # Run against the module (no reload when the slow replica joins): with stock Caddy a request
    # on a fresh connection can race the reload's server swap and be cut, which is not what this
    # test is about (see test_rolling_restarts_fail_no_request_for_either_http1_client).
    fast = member(companions, caddy)
    fast.wait_registered()
    state = tmp_path / "slow-state"
    state.mkdir()
    started = time.time()
    slow = member(
        companions, caddy, env={"TEST_CHECKS": "warmup", "TEST_READY_AFTER": "5", "TEST_STATE_DIR": str(state)}
    )
    served: list[tuple[int, float]] = []
    deadline = time.monotonic() + 40
    slow_pid = None
    while time.monotonic() < deadline:
        response = httpx.get(f"{caddy.base_url}/whoami", timeout=10)
        assert response.status_code == 200, response.text
        served.append((response.json()["pid"], response.json()["handled_at"]))
        slow_pid = slow_pid or slow.app_pid()
        if slow_pid and sum(1 for pid, _ in served if pid == slow_pid) >= 20:
            break
        time.sleep(0.02)
    assert slow_pid, slow.log()
    ready_at = float((state / "ready-at").read_text())
    assert ready_at - started >= 4.5, "the warmup check passed early"
    to_slow = [at for pid, at in served if pid == slow_pid]
    assert len(to_slow) >= 20, f"the ready replica got no traffic:\n{slow.log()}"
    assert min(to_slow) >= ready_at, f"Caddy routed to the replica {ready_at - min(to_slow):.3f}s before it was ready"
    assert any(pid != slow_pid for pid, _ in served), "the first replica got no traffic"
    print(f"\nFIGURE ready->first routed request: {min(to_slow) - ready_at:.3f}s")
