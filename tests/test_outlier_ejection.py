"""Outlier ejection end to end (the registry's outlier.rs, `transport beacon` counting): a replica
whose requests fail in a row leaves the offer for a time that grows with each ejection, comes
back by itself, keeps its state through `caddy reload`, and a bad deploy where every replica
fails keeps serving with at most max_percent of the pool out. Real module Caddy, real companions
and uvicorn replicas."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.caddy import Caddies, Caddy
from tests.support.companion import Companion, uvicorn_command
from tests.support.ports import free_port
from tests.support.sites import caddy_metric, module_caddy, pool
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.caddy]

Launch = Callable[..., Companion]

OUTLIER = (
    "outlier {\n\t\t\t\tconsecutive_failures 3\n\t\t\t\teject 2s\n\t\t\t\tmax_eject 3s\n\t\t\t\tmax_percent 50\n\t\t\t}"
)


def replica(launch: Launch, caddy: Caddy, state: Path) -> Companion:
    state.mkdir()
    port = free_port()
    companion = launch(caddy, f"127.0.0.1:{port}", site="", command=uvicorn_command(port),
                       env={"TEST_STATE_DIR": str(state)}, args=("--pool", "api", "--drain-timeout", "5s"))  # fmt: skip
    companion.wait_registered()
    return companion


def member(caddy: Caddy, address: str) -> dict[str, Any]:
    return next(u for u in pool(caddy) if u["address"] == address)


def ejected(caddy: Caddy) -> list[str]:
    return [u["address"] for u in pool(caddy) if u["ejected_until_ms"] is not None]


def test_a_failing_replica_is_ejected_for_longer_each_time_and_comes_back(
    caddies: Caddies, companions: Launch, tmp_path: Path
) -> None:
    caddy = module_caddy(caddies, OUTLIER)
    replicas = [replica(companions, caddy, tmp_path / f"r{i}") for i in range(3)]
    broken = replicas[0]
    (tmp_path / "r0" / "broken").touch()
    by_pid = {r.app_pid(): r.upstream for r in replicas}
    with httpx.Client(base_url=caddy.base_url, timeout=10) as client:
        statuses = Counter(client.get("/flaky").status_code for _ in range(30))
        # Round robin sends it every third request: three 503s in a row from it, then it is out
        # (reported off the request path: one more request may reach it before it is).
        assert 3 <= statuses[503] <= 4, statuses
        assert ejected(caddy) == [broken.upstream]
        out = member(caddy, broken.upstream)
        assert out["ejections"] == 1 and out["effective_weight"] == 0
        served = Counter(by_pid[client.get("/flaky").json()["pid"]] for _ in range(20))
        assert broken.upstream not in served and sum(served.values()) == 20
        # Kept through a reload: the registry's state lives across configs.
        config = client.get(f"{caddy.admin_url}/config/").json()
        reloaded = client.post(f"{caddy.admin_url}/load", json=config, headers={"Cache-Control": "must-revalidate"})
        assert reloaded.status_code == 200
        assert member(caddy, broken.upstream)["ejected_until_ms"] == out["ejected_until_ms"]
        # Back after its 2 s (the lease ticker looks every second); still broken, it is out again
        # at once, for twice as long but at most max_eject (3 s).
        assert wait_until(lambda: ejected(caddy) == [], timeout=5)
        assert wait_until(lambda: Counter(client.get("/flaky").status_code for _ in range(3))[503] == 0, timeout=5)
        again = member(caddy, broken.upstream)
        assert again["ejections"] == 2, again
    log = caddy.log()
    lines = [line for line in log.splitlines() if '"upstream ejected"' in line]
    assert len(lines) == 2 and "3 failures in a row: out for 2 s (ejection 1)" in lines[0], lines
    assert "out for 3 s (ejection 2)" in lines[1], lines
    assert '"upstream returned"' in log
    assert caddy_metric(caddy, 'caddy_beacon_upstream_events_total{event="ejected",pool="api"}') == 2
    # Repaired: back after its time, and it serves.
    os.remove(tmp_path / "r0" / "broken")
    assert wait_until(lambda: ejected(caddy) == [], timeout=6)
    with httpx.Client(base_url=caddy.base_url, timeout=10) as client:
        served = Counter(by_pid[client.get("/flaky").json()["pid"]] for _ in range(30))
    assert served[broken.upstream] == 10, served


def test_a_bad_deploy_keeps_serving_with_at_most_max_percent_out(
    caddies: Caddies, companions: Launch, tmp_path: Path
) -> None:
    caddy = module_caddy(caddies, OUTLIER)
    replicas = [replica(companions, caddy, tmp_path / f"r{i}") for i in range(3)]
    for i in range(3):
        (tmp_path / f"r{i}" / "broken").touch()
    with httpx.Client(base_url=caddy.base_url, timeout=10) as client:
        answers = [client.get("/flaky") for _ in range(60)]
    # Every answer is the app's own 503: Caddy never ran out of members to send to.
    assert all(a.status_code == 503 and "broken" in a.text for a in answers), {a.status_code for a in answers}
    # 50 % of three members is one.
    assert len(ejected(caddy)) == 1, pool(caddy)
    assert caddy_metric(caddy, 'caddy_beacon_upstream_events_total{event="ejection_capped",pool="api"}') >= 1
    capped_logs = [line for line in caddy.log().splitlines() if "ejection_capped" in line]
    assert capped_logs == [], "a capped ejection is counted, not logged at every run of failures"
    assert len(replicas) == 3
