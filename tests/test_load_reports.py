"""ORCA load reports from the middleware (beacon-core load_report.rs): a request carrying
`endpoint-load-metrics-format: TEXT` is answered with an `endpoint-load-metrics` header in the
TEXT form; others get none. Real uvicorn and gunicorn servers, real sockets."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.support.caddy import Caddies, Caddy
from tests.support.companion import Companion, uvicorn_command
from tests.support.load import Load
from tests.support.ports import free_port
from tests.support.servers import Server
from tests.support.sites import caddy_metric, module_caddy, pool
from tests.support.waiting import wait_until

ASK = {"endpoint-load-metrics-format": "TEXT"}
KEYS = [
    "cpu_utilization", "application_utilization", "rps_fractional", "eps",
    "named_metrics.in_flight", "named_metrics.loop_lag",
]  # fmt: skip
# How long a process reuses its report (load_report.rs REFRESH), and a little more.
REFRESH = 0.6


def report(response: httpx.Response) -> dict[str, float]:
    text = response.headers["endpoint-load-metrics"]
    assert text.startswith("TEXT "), text
    pairs = [pair.split("=", 1) for pair in text.removeprefix("TEXT ").split(", ")]
    assert [key for key, _ in pairs] == KEYS, text
    return {key: float(value) for key, value in pairs}


def ask(server: Server, path: str = "/whoami") -> dict[str, float]:
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        return report(client.get(path, headers=ASK))


def test_only_a_request_that_asks_gets_a_report_and_its_values_are_sane(start: Callable[..., Server]) -> None:
    server = start()
    assert "endpoint-load-metrics" not in server.get("/whoami").headers
    # Any other spelling of the ask gets nothing either.
    assert (
        "endpoint-load-metrics" not in server.get("/whoami", headers={"endpoint-load-metrics-format": "JSON"}).headers
    )
    ask(server)  # the first report of a process opens its window
    for _ in range(40):
        server.get("/whoami")
    for _ in range(5):
        assert server.fresh_get("/boom").status_code == 500
    time.sleep(REFRESH)  # the report is reused until REFRESH has passed: a timed window, not a wait for state
    values = ask(server)
    assert values["rps_fractional"] > 0 and values["eps"] > 0, values
    for key in ("cpu_utilization", "application_utilization"):
        assert 0 <= values[key] <= 1, values
    assert values["named_metrics.in_flight"] >= 1, "the asking request itself is in flight"


def test_a_blocked_event_loop_reports_its_loop_busy(start: Callable[..., Server]) -> None:
    server = start()
    ask(server)
    # The loop blocked in a synchronous sleep (no CPU) for most of the next window.
    for _ in range(2):
        assert server.fresh_get("/block/0.4").status_code == 200
    time.sleep(0.1)
    values = ask(server)
    assert values["application_utilization"] >= 0.5, values
    assert values["cpu_utilization"] < 0.5, values


def test_in_flight_counts_every_gunicorn_worker(start: Callable[..., Server]) -> None:
    server = start(server="gunicorn", workers=2)
    with ThreadPoolExecutor(4) as pool:
        slow = [pool.submit(server.fresh_get, "/sleep/2") for _ in range(4)]
        time.sleep(0.5)  # the four are in flight, on whichever workers took them
        seen = []
        deadline = time.monotonic() + 1.2
        while time.monotonic() < deadline:
            time.sleep(REFRESH)
            seen.append(ask(server)["named_metrics.in_flight"])
        assert all(f.result().status_code == 200 for f in slow)
    # Whichever worker answers counts the requests of both (the shared store): four sleeping
    # and the asking one.
    assert max(seen) >= 5, seen


@pytest.mark.caddy
def test_through_caddy_reports_reach_the_module_and_never_a_client(
    caddies: Caddies, companions: Callable[..., Companion]
) -> None:
    caddy = module_caddy(caddies)
    port = free_port()
    replica = companions(caddy, f"127.0.0.1:{port}", site="", command=uvicorn_command(port), args=("--pool", "api"))
    replica.wait_registered()
    metric = f'caddy_beacon_upstream_reported_utilization{{pool="api",upstream="{replica.upstream}"}}'
    with httpx.Client(base_url=caddy.base_url, timeout=10) as client:
        # A client that asks for a report itself gets none, and its ask is not passed on: of
        # many requests, only the module's own ask (one a second per member) reaches the app.
        began = time.monotonic()
        asked = [client.get("/headers", headers=ASK) for _ in range(20)]
        seconds = time.monotonic() - began
        assert all("endpoint-load-metrics" not in r.headers for r in asked)
        reached = [r for r in asked if "endpoint-load-metrics-format" in r.json()]
        assert len(reached) <= 1 + int(seconds), (len(reached), seconds)

        # The module asks on its own and reads the answer; no client ever sees one.
        def reported() -> bool:
            response = client.get("/whoami")
            assert "endpoint-load-metrics" not in response.headers
            return caddy_metric(caddy, 'caddy_beacon_load_reports_total{pool="api",result="ok"}') >= 2

        assert wait_until(reported, timeout=10, interval=0.2)
        assert 0 <= caddy_metric(caddy, metric) <= 1
        # A replica whose loop is blocked most of the time reports it.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and caddy_metric(caddy, metric) < 0.5:
            assert client.get("/block/0.3").status_code == 200
        assert caddy_metric(caddy, metric) >= 0.5
    assert caddy_metric(caddy, 'caddy_beacon_load_reports_total{pool="api",result="malformed"}') == 0


def load_factor(caddy: Caddy, address: str) -> float | None:
    factor = next(u for u in pool(caddy) if u["address"] == address)["load_factor"]
    return None if factor is None else float(factor)


@pytest.mark.caddy
def test_weights_follow_a_replica_loaded_outside_caddy_and_recover(
    caddies: Caddies, companions: Callable[..., Companion]
) -> None:
    caddy = module_caddy(caddies, "load_reports {\n\t\t\t\tblackout 1s\n\t\t\t\texpire 4s\n\t\t\t}")
    replicas = []
    for _ in range(2):
        port = free_port()
        replicas.append(
            companions(caddy, f"127.0.0.1:{port}", site="", command=uvicorn_command(port), args=("--pool", "api"))
        )
    for replica in replicas:
        replica.wait_registered()
    calm, busy = replicas
    by_pid = {r.app_pid(): r.upstream for r in replicas}

    def share_of_busy(requests: int) -> float:
        with httpx.Client(base_url=caddy.base_url, timeout=10) as client:
            served = [by_pid[client.get("/whoami").json()["pid"]] for _ in range(requests)]
        return served.count(busy.upstream) / requests

    with Load(caddy.base_url, threads=2, keepalive=True, max_seconds=90) as load:
        # Both report and both count (blackout 1 s): equal figures, factors near 1.
        assert wait_until(lambda: load_factor(caddy, busy.upstream) is not None, timeout=10)
        # Work the proxy cannot see: the busy replica's loop blocked half the time for 12 s.
        assert httpx.get(f"http://{busy.upstream}/background-work/12", timeout=5).status_code == 200
        assert wait_until(lambda: (load_factor(caddy, busy.upstream) or 1) < 0.6, timeout=10), pool(caddy)
        # The factors are around the pool's mean: what the busy one loses, the calm one gains.
        assert (load_factor(caddy, calm.upstream) or 0) > 1, pool(caddy)
        loaded_share = share_of_busy(200)
        # The work is over: its reports say so and its weight comes back.
        # Measured once it is back near even, not at the moment its factor first climbs past
        # a bound on the way up (a share taken then straddles the climb: 0.38 in one run).
        assert wait_until(lambda: (load_factor(caddy, busy.upstream) or 0) > 0.9, timeout=25), pool(caddy)
        recovered_share = share_of_busy(200)
    print(
        f"\nFIGURE load-aware share of the replica loaded outside Caddy: {loaded_share:.2f}, after: {recovered_share:.2f}"
    )
    # The weights are recomputed every second from noisy figures (on a machine busy with other
    # tests the calm replica's loop is busy too), so the share is judged with a margin: well
    # under the even half while loaded, and clearly more once the work is over.
    assert loaded_share < 0.42 and recovered_share - loaded_share > 0.15, (loaded_share, recovered_share)
    assert load.failures == [], load.failures[:5]
    assert caddy_metric(caddy, f'caddy_beacon_upstream_load_factor{{pool="api",upstream="{calm.upstream}"}}') > 0
