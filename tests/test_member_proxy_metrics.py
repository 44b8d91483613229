"""What Caddy sees of each pool member (`transport beacon`): requests by status class, the time to
response headers, failures by kind, retries; series of a member that left are removed. And a GET
whose replica dies under it is retried on another member: real module Caddy, real companions,
real uvicorn replicas, a replica killed -9 with its companion (a node lost)."""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Callable

import httpx
import pytest
from caddy_beacon import DEFAULT_BUCKETS
from prometheus_client.parser import text_string_to_metric_families

from tests.support.caddy import MODULE_CADDY, Caddies, Caddy
from tests.support.companion import Companion, uvicorn_command
from tests.support.load import Load
from tests.support.ports import free_port
from tests.support.sites import POOL_SITE, module_caddy, pool
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.caddy]

Launch = Callable[..., Companion]
Samples = list[tuple[str, dict[str, str], float]]


@pytest.fixture
def caddy(caddies: Caddies) -> Caddy:
    if not MODULE_CADDY.exists():
        pytest.fail(f"{MODULE_CADDY} is missing: `make caddy` (make test does)")
    return caddies(POOL_SITE, module=True)


def member(launch: Launch, caddy: Caddy) -> Companion:
    port = free_port()
    return launch(caddy, f"127.0.0.1:{port}", site="", command=uvicorn_command(port),
                  args=("--pool", "api", "--drain-timeout", "5s"))  # fmt: skip


def scrape(caddy: Caddy) -> Samples:
    with caddy.admin_client() as client:
        text = client.get("/metrics").text
    return [(s.name, dict(s.labels), s.value) for f in text_string_to_metric_families(text) for s in f.samples]


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    return sum(v for n, got, v in samples if n == name and labels.items() <= got.items())


def series_of(samples: Samples, upstream: str) -> list[str]:
    return sorted({n for n, labels, _ in samples if labels.get("upstream") == upstream and "upstream_" in n})


def test_each_member_has_its_requests_latency_and_failures_and_they_leave_with_it(
    caddy: Caddy, companions: Launch
) -> None:
    first, second = member(companions, caddy), member(companions, caddy)
    first.wait_registered()
    second.wait_registered()
    by_pid = {first.app_pid(): first.upstream, second.app_pid(): second.upstream}
    served: Counter[str] = Counter()
    with httpx.Client(base_url=caddy.base_url, timeout=10) as client:
        for _ in range(40):
            served[by_pid[client.get("/whoami").json()["pid"]]] += 1
        statuses = [client.get(path).status_code for path in ["/boom"] * 5 + ["/teapot"] * 3]
    assert statuses == [500] * 5 + [418] * 3
    assert set(served) == {first.upstream, second.upstream}, "traffic reached both replicas"

    samples = scrape(caddy)
    for upstream in (first.upstream, second.upstream):
        # /whoami was all of the 2xx each member answered.
        assert (
            value(samples, "caddy_beacon_upstream_requests_total", upstream=upstream, status_class="2xx")
            == (served[upstream])
        )
        answered = value(samples, "caddy_beacon_upstream_requests_total", upstream=upstream)
        assert value(samples, "caddy_beacon_upstream_latency_seconds_count", upstream=upstream) == answered
        assert value(samples, "caddy_beacon_upstream_in_flight", upstream=upstream) == 0
    assert value(samples, "caddy_beacon_upstream_requests_total", pool="api", status_class="5xx") == 5
    assert value(samples, "caddy_beacon_upstream_requests_total", pool="api", status_class="4xx") == 3
    assert value(samples, "caddy_beacon_upstream_failures_total", pool="api", kind="5xx") == 5
    for kind in ("dial", "timeout", "closed"):
        assert value(samples, "caddy_beacon_upstream_failures_total", pool="api", kind=kind) == 0, kind
    # The app's buckets: a panel can put Caddy's upstream p95 beside the app's own.
    bounds = {float(labels["le"]) for n, labels, _ in samples if n == "caddy_beacon_upstream_latency_seconds_bucket"}
    assert bounds == {*DEFAULT_BUCKETS, float("inf")}, sorted(bounds)
    stays = series_of(samples, first.upstream)

    # A member that leaves takes its series with it; the other keeps its own.
    second.signal(signal.SIGTERM)
    assert second.wait(timeout=30) == 0, second.log()
    assert wait_until(lambda: series_of(scrape(caddy), second.upstream) == [], timeout=10), series_of(
        scrape(caddy), second.upstream
    )
    assert series_of(scrape(caddy), first.upstream) == stays


def test_churn_does_not_grow_the_exposition(caddy: Caddy, companions: Launch) -> None:
    def series_count() -> int:
        return sum(1 for n, _, _ in scrape(caddy) if n.startswith("caddy_beacon_upstream_"))

    steady = member(companions, caddy)
    steady.wait_registered()
    httpx.get(f"{caddy.base_url}/whoami", timeout=10)
    baseline = series_count()
    for _ in range(3):
        passing = member(companions, caddy)
        passing.wait_registered()
        with httpx.Client(base_url=caddy.base_url, timeout=10) as client:
            for _ in range(10):
                client.get("/whoami")
        passing.signal(signal.SIGTERM)
        assert passing.wait(timeout=30) == 0, passing.log()
        assert wait_until(
            lambda upstream=passing.upstream: [u for u in pool(caddy) if u["address"] == upstream] == [], timeout=10
        )
    assert series_count() == baseline


def test_gets_to_a_replica_killed_mid_flight_are_retried_on_another_member(
    caddies: Caddies, companions: Launch
) -> None:
    # least_conn, lb_retries 2, no passive checks: the dead replica has no requests in flight,
    # so least_conn picks it for every try; only a retry that leaves it out reaches the other.
    caddy = module_caddy(caddies, lb_policy="least_conn")
    survivor, doomed = member(companions, caddy), member(companions, caddy)
    survivor.wait_registered()
    doomed.wait_registered()
    doomed_pid = doomed.app_pid()
    assert doomed_pid
    with Load(caddy.base_url, threads=4, keepalive=True, max_seconds=120) as load:
        assert wait_until(lambda: len(load.pids) == 2, timeout=20), "traffic did not reach both replicas"
        # A node lost: the app and its companion die at once, nobody deregisters; requests in
        # flight to it are cut, and until the module's checks find it down, Caddy still picks it.
        doomed.signal(signal.SIGKILL)
        os.kill(doomed_pid, signal.SIGKILL)
        start = load.total()
        assert wait_until(
            lambda: not [u for u in pool(caddy) if u["address"] == doomed.upstream and u["healthy"]], timeout=10
        )
        assert wait_until(lambda: load.total() > start + 300, timeout=30), "the load stalled"
    samples = scrape(caddy)
    gets = [f for f in load.failures if f.split()[1] == "GET"]
    posts = [f for f in load.failures if f.split()[1] == "POST"]
    retried = value(samples, "caddy_beacon_upstream_retried_total", upstream=doomed.upstream)
    failed = {
        kind: value(samples, "caddy_beacon_upstream_failures_total", upstream=doomed.upstream, kind=kind)
        for kind in ("dial", "closed", "timeout")
    }
    print(
        f"\nFIGURE replica killed -9 under load (least_conn, lb_retries 2): {load.ok} ok, {len(gets)} GETs failed, "
        f"{len(posts)} POSTs failed (not retried: Caddy's default), retried off it {retried:.0f}, failures {failed}"
    )
    assert load.ok > 300
    assert gets == [], "\n".join(gets[:20])
    assert retried >= 1 and failed["dial"] + failed["closed"] >= 1, (retried, failed)
