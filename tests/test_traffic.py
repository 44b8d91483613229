"""Traffic that follows the fleet, on the module Caddy with real companions and uvicorn
replicas: weights (a canary's share, a new weight within a second and without a reload),
slow start (a joining replica ramps, a fresh deployment does not), `choices`, the admission
policy (`allow`, and what is refused without it), and `caddy reload` keeping all of it."""

from __future__ import annotations

import collections
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.support.caddy import Caddies, Caddy
from tests.support.companion import Companion, companion_cli, uvicorn_command
from tests.support.ports import free_port
from tests.support.sites import caddy_metric, config_etag, module_caddy, pool
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.caddy]

Launch = Callable[..., Companion]


def replica(launch: Launch, caddy: Caddy, *args: str) -> Companion:
    port = free_port()
    companion = launch(
        caddy,
        f"127.0.0.1:{port}",
        site="",
        command=uvicorn_command(port),
        args=("--pool", "api", "--drain-timeout", "10s", *args),
    )
    companion.wait_registered()
    return companion


def member(caddy: Caddy, address: str) -> dict[str, Any]:
    return next(u for u in pool(caddy) if u["address"] == address)


def shares(caddy: Caddy, replicas: list[Companion], requests: int) -> dict[str, int]:
    """How many of `requests` (sent through Caddy on one keep-alive connection) each replica
    served, by upstream address."""
    address_of = {}
    for companion in replicas:
        assert wait_until(lambda companion=companion: companion.app_pid() is not None, timeout=10)
        address_of[companion.app_pid()] = companion.upstream
    served: collections.Counter[str] = collections.Counter()
    with httpx.Client(base_url=caddy.base_url, timeout=10) as client:
        for _ in range(requests):
            response = client.get("/whoami")
            assert response.status_code == 200, response.text
            served[address_of[response.json()["pid"]]] += 1
    return dict(served)


def test_a_canary_gets_its_weight_s_share_and_a_new_weight_within_a_second_without_a_reload(
    caddies: Caddies, companions: Launch
) -> None:
    caddy = module_caddy(caddies)
    stable = [replica(companions, caddy), replica(companions, caddy)]
    canary = replica(companions, caddy, "--weight", "10")
    assert member(caddy, canary.upstream)["weight"] == 10
    status = companion_cli("status", "--admin", caddy.admin, "--json")
    listed = {row["address"]: row for row in json.loads(status.stdout)}
    assert (listed[canary.upstream]["weight"], listed[stable[0].upstream]["weight"]) == (10, 100), status.stdout
    table = companion_cli("status", "--admin", caddy.admin).stdout.splitlines()
    assert (
        table[0].split()[-1] == "WEIGHT" and next(line for line in table if canary.upstream in line).split()[-1] == "10"
    ), table
    etag = config_etag(caddy)
    served = shares(caddy, [*stable, canary], 4200)
    expected = 4200 * 10 / 210
    print(
        f"\nFIGURE canary at weight 10 beside two at 100: {served[canary.upstream]} of 4200 requests (expected {expected:.0f})"
    )
    # A smooth weighted round robin: exact to within a request or two while no member's health
    # changes (a random draw by weight was 200 ± 14 here, one standard deviation).
    assert abs(served[canary.upstream] - expected) <= 2, (served, pool(caddy))
    # Promoted to a full share: within a second, no reload.
    changed = companion_cli(
        "weight", "--upstream", canary.upstream, "--pool", "api", "--weight", "100", "--admin", caddy.admin
    )
    assert changed.returncode == 0, changed.stderr
    assert changed.stdout.strip() == f"{canary.upstream} in pool api at {caddy.admin}: weight 100"
    time.sleep(1)
    served = shares(caddy, [*stable, canary], 900)
    print(f"FIGURE canary at weight 100, one second later: {served.get(canary.upstream, 0)} of 900")
    assert 200 <= served.get(canary.upstream, 0) <= 400, served
    # Standby: registered and checked, sent nothing.
    assert (
        companion_cli("weight", "--upstream", canary.upstream, "--weight", "0", "--admin", caddy.admin).returncode == 0
    )
    time.sleep(1)
    assert canary.upstream not in shares(caddy, [*stable, canary], 100)
    assert member(caddy, canary.upstream)["healthy"] is True
    assert config_etag(caddy) == etag, "a weight is not a config change"
    assert caddy_metric(caddy, f'caddy_beacon_upstream_weight{{pool="api",upstream="{canary.upstream}"}}') == 0


def test_a_weight_set_in_caddy_outlives_a_caddy_restart(caddies: Caddies, companions: Launch) -> None:
    caddy = module_caddy(caddies)
    canary = replica(companions, caddy)
    assert canary.caddy()["weight"] == 100
    assert (
        companion_cli("weight", "--upstream", canary.upstream, "--weight", "30", "--admin", caddy.admin).returncode == 0
    )
    # The companion reads the pool every second and takes the new weight as its own.
    assert wait_until(lambda: canary.caddy()["weight"] == 30, timeout=5), canary.status()
    assert f"{canary.upstream} has weight 30 in pool api of Caddy at {caddy.admin} (was 100)" in canary.log()
    caddy.kill()
    caddy.restart()
    assert wait_until(lambda: any(u["address"] == canary.upstream for u in pool(caddy)), timeout=10), pool(caddy)
    assert member(caddy, canary.upstream)["weight"] == 30, (
        "a restarted Caddy got --weight back instead of the operator's weight"
    )
    assert canary.caddy()["registrations"] == 2


def test_bad_weights_are_refused_with_a_clear_line(caddies: Caddies, companions: Launch) -> None:
    caddy = module_caddy(caddies)
    running = replica(companions, caddy)
    for weight in ("-1", "10001", "1000000000000", "ten"):
        result = companion_cli(
            "weight", "--upstream", running.upstream, "--pool", "api", "--weight", weight, "--admin", caddy.admin
        )
        assert result.returncode == 64 and "--weight" in result.stderr and result.stderr.count("\n") == 1, result.stderr
        started = companion_cli(
            "run", "--upstream", "127.0.0.1:9", "--pool", "api", "--weight", weight, "--admin", caddy.admin
        )
        assert started.returncode == 64 and "--weight" in started.stderr, started.stderr
    missing = companion_cli(
        "weight", "--upstream", "127.0.0.1:9", "--pool", "api", "--weight", "5", "--admin", caddy.admin
    )
    assert missing.returncode == 64 and "not in pool api" in missing.stderr, missing.stderr
    with caddy.admin_client() as client:
        for body in (
            {"address": running.upstream, "weight": -1},
            {"address": running.upstream, "weight": 10**12},
            {"address": running.upstream},
        ):
            answer = client.post("/beacon/pools/api/weight", json=body)
            assert answer.status_code == 400 and "weight" in answer.json()["error"], answer.text


def test_a_replica_joining_a_settled_pool_ramps_and_a_fresh_deployment_does_not(
    caddies: Caddies, companions: Launch
) -> None:
    caddy = module_caddy(caddies, "slow_start 6s")
    first = [replica(companions, caddy), replica(companions, caddy)]
    # A fresh deployment: no member was settled when these joined, so both take a full share.
    assert [(m["effective_weight"], m["slow_start_until_ms"]) for m in pool(caddy)] == [(100, None), (100, None)]
    time.sleep(6.5)
    joining = replica(companions, caddy)
    joined_at = time.monotonic()
    ramp: list[tuple[float, int]] = []
    while time.monotonic() - joined_at < 7.5:
        ramp.append((time.monotonic() - joined_at, member(caddy, joining.upstream)["effective_weight"]))
        time.sleep(0.5)
    print(
        "\nFIGURE slow start 6s, effective weight of the joining replica: "
        + ", ".join(f"{t:.1f}s {w}" for t, w in ramp)
    )
    assert ramp[0][1] <= 20, ramp
    weights = [w for _, w in ramp]
    assert weights == sorted(weights), "it only ever ramps up"
    assert 30 <= next(w for t, w in ramp if t >= 3.0) <= 75, ramp
    assert ramp[-1][1] == 100 and member(caddy, joining.upstream)["slow_start_until_ms"] is None
    assert all(member(caddy, c.upstream)["effective_weight"] == 100 for c in first)
    assert (
        caddy_metric(caddy, f'caddy_beacon_upstream_effective_weight{{pool="api",upstream="{joining.upstream}"}}')
        == 100
    )


def test_a_reload_keeps_weights_and_slow_start(caddies: Caddies, companions: Launch) -> None:
    caddy = module_caddy(caddies, "slow_start 8s")
    settled = replica(companions, caddy)
    time.sleep(8.5)
    joining = replica(companions, caddy, "--weight", "200")
    assert (
        companion_cli(
            "weight", "--upstream", settled.upstream, "--pool", "api", "--weight", "50", "--admin", caddy.admin
        ).returncode
        == 0
    )
    before = member(caddy, joining.upstream)
    assert before["slow_start_until_ms"] is not None and before["effective_weight"] < 200
    with caddy.admin_client() as client:
        config = client.get("/config/").json()
        assert client.post("/load", json=config, headers={"Cache-Control": "must-revalidate"}).status_code == 200
    after = member(caddy, joining.upstream)
    assert after["slow_start_until_ms"] == before["slow_start_until_ms"], "the ramp goes on where it was"
    assert after["effective_weight"] >= before["effective_weight"]
    assert (member(caddy, settled.upstream)["weight"], after["weight"]) == (50, 200)


def test_choices_spreads_a_first_policy_over_the_pool(caddies: Caddies, companions: Launch) -> None:
    """lb_policy first sends everything to one member; with choices 1 it picks from one member
    drawn per request, so every member serves."""
    caddy = module_caddy(caddies, "choices 1", lb_policy="first")
    replicas = [replica(companions, caddy) for _ in range(3)]
    served = shares(caddy, replicas, 600)
    assert set(served) == {r.upstream for r in replicas} and min(served.values()) >= 120, served


def test_the_admission_policy_refuses_with_403_and_counts(caddies: Caddies, companions: Launch) -> None:
    caddy = module_caddy(caddies)
    admin_port = caddy.admin_url.rsplit(":", 1)[1]
    refused = ["169.254.169.254:80", "[::ffff:169.254.169.254]:80", f"127.0.0.1:{admin_port}", f"[::ffff:127.0.0.1]:{admin_port}",
               "unix//var/run/docker.sock", "[fe80::1]:80", "0.0.0.0:22"]  # fmt: skip
    with caddy.admin_client() as client:
        for address in refused:
            answer = client.post("/beacon/pools/api/register", json={"address": address})
            assert answer.status_code == 403 and "refused" in answer.json()["error"], (address, answer.text)
    assert pool(caddy) == []
    assert caddy_metric(caddy, 'caddy_beacon_registrations_refused_total{pool="api"}') == len(refused)


def test_an_allow_list_refuses_a_companion_outside_it_in_one_line(caddies: Caddies, companions: Launch) -> None:
    caddy = module_caddy(caddies, "allow 10.0.0.0/8 unix//run/beacon-test/")
    port = free_port()
    outside = companions(caddy, f"127.0.0.1:{port}", site="", command=uvicorn_command(port), args=("--pool", "api"))
    assert wait_until(lambda: "outside the pool's allow list" in outside.log(), timeout=20), outside.log()
    time.sleep(2)
    lines = [line for line in outside.log().splitlines() if "outside the pool's allow list" in line]
    assert len(lines) == 1 and "403" in lines[0], lines
    assert outside.process.poll() is None, "refused, it keeps trying (the pool's allow list may change)"
    assert pool(caddy) == []
    assert caddy_metric(caddy, 'caddy_beacon_registrations_refused_total{pool="api"}') >= 1
    (listing,) = [
        p for name, p in httpx.get(f"{caddy.admin_url}/beacon/pools").json()["pools"].items() if name == "api"
    ]
    assert listing["allow"] == ["10.0.0.0/8", "unix//run/beacon-test/"]


def test_a_bad_allow_or_option_is_refused_at_load_with_the_value_named(caddies: Caddies) -> None:
    caddy = module_caddy(caddies)
    etag = config_etag(caddy)
    with caddy.admin_client() as client:
        text = json.dumps(client.get("/config/").json(), separators=(",", ":"))
        for bad, named in ((text.replace('"pool":"api"', '"pool":"api","allow":["10.0.0.0/33"]'), "10.0.0.0/33"),
                           (text.replace('"pool":"api"', '"pool":"api","choices":-2'), "choices"),
                           (text.replace('"pool":"api"', '"pool":"api","slow_start":-1'), "slow_start")):  # fmt: skip
            assert bad != text
            answer = client.post("/load", content=bad, headers={"Content-Type": "application/json"})
            assert answer.status_code == 400 and named in answer.text, answer.text
    assert config_etag(caddy) == etag, "the running config stays"
