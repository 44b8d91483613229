"""`caddy-beacon status` against a real Caddy: upstream health, in-flight, failures, ownership;
one clear line and the documented exit codes on bad input."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.caddy import Caddies, Caddy, launch_caddy
from tests.support.companion import companion_cli
from tests.support.ports import free_port
from tests.support.servers import Server
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.caddy]


def companion(*args: str) -> subprocess.CompletedProcess[str]:
    return companion_cli(*args)


def test_status_reports_health_in_flight_and_ownership(start: Callable[..., Server], tmp_path: Path) -> None:
    app = start()
    live = app.base_url.removeprefix("http://")
    dead = f"127.0.0.1:{free_port()}"
    caddy = launch_caddy(
        tmp_path,
        f"""
\treverse_proxy {live} {dead} {{
\t\thealth_uri /ready
\t\thealth_interval 1s
\t}}""",
    )
    try:
        # What a companion registers: an upstream with its own @id, appended to the proxy.
        config = httpx.get(
            f"{caddy.admin_url}/config/apps/http/servers/srv0/routes/0/handle/0/routes/0/handle/0"
        ).json()
        assert config["handler"] == "reverse_proxy"
        owned = f"127.0.0.1:{free_port()}"
        added = httpx.post(
            f"{caddy.admin_url}/config/apps/http/servers/srv0/routes/0/handle/0/routes/0/handle/0/upstreams",
            json={"@id": "caddy-beacon-test", "dial": owned},
        )
        assert added.status_code == 200, added.text

        def statuses() -> dict[str, dict[str, object]]:
            result = companion("status", "--admin", caddy.admin_url, "--json")
            assert result.returncode == 0, result.stderr
            return {entry["address"]: entry for entry in json.loads(result.stdout)}

        # Caddy refreshes its health gauge every 10 s.
        assert wait_until(
            lambda: statuses()[live]["healthy"] is True and statuses()[dead]["healthy"] is False, timeout=25
        )
        entries = statuses()
        assert set(entries) >= {live, dead, owned}
        assert entries[live]["owned"] is False and entries[owned]["owned"] is True
        assert entries[live]["in_flight"] == 0 and entries[live]["fails"] == 0
        assert entries[live]["admin"] == caddy.admin_url

        table = companion("status", "--admin", caddy.admin_url)
        assert table.returncode == 0, table.stderr
        lines = table.stdout.splitlines()
        assert lines[0].split() == ["ADMIN", "UPSTREAM", "POOL", "HEALTHY", "IN-FLIGHT", "FAILS", "OWNED", "WEIGHT"]
        row = next(line for line in lines if live in line).split()
        assert row[2:] == ["-", "yes", "0", "0", "no", "-"], "no pool (from Caddy's config), so no weight"
    finally:
        caddy.stop()


@pytest.mark.parametrize(
    "args,expected",
    [
        (["status", "--bogus"], "unexpected argument '--bogus'"),
        ([], "a command is required"),
        (["deregister", "--upstream", "x:1", "--drain-timeout", "soon"], "is not a duration"),
        (["deregister"], "--upstream <HOST:PORT>"),
        (["status", "--admin", "localhost"], '--admin "localhost": expected host:port'),
        (["frobnicate"], "unrecognized subcommand 'frobnicate'"),
    ],
)
def test_bad_usage_exits_64_with_one_line(args: list[str], expected: str) -> None:
    result = companion(*args)
    assert result.returncode == 64
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert expected in result.stderr
    assert result.stderr.startswith("caddy-beacon: ")


def test_an_unreachable_admin_exits_69() -> None:
    result = companion("status", "--admin", f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 69
    assert len(result.stderr.strip().splitlines()) == 1
    assert "cannot reach Caddy's Admin API at http://127.0.0.1:" in result.stderr


def test_help_explains_every_flag_with_an_example() -> None:
    result = companion("status", "--help")
    assert result.returncode == 0
    for text in ["--admin", "--json", "Example: --admin http://127.0.0.1:2019", "CADDY_ADMIN"]:
        assert text in result.stdout, result.stdout


@contextlib.contextmanager
def _request_in_flight(caddy: Caddy, seconds: float) -> Iterator[concurrent.futures.Future[httpx.Response]]:
    """A request through Caddy that takes `seconds`, yielded once Caddy counts it in flight."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        slow = pool.submit(httpx.get, f"{caddy.base_url}/sleep/{seconds}", timeout=10)

        def counted() -> bool:
            return companion("status", "--admin", caddy.admin_url, "--json").stdout.count('"in_flight":1') == 1

        assert wait_until(counted, timeout=5)
        yield slow


def _proxy_path(caddy_admin: str) -> str:
    path = "/config/apps/http/servers/srv0/routes/0/handle/0/routes/0/handle/0"
    assert httpx.get(caddy_admin + path).json()["handler"] == "reverse_proxy"
    return path


def test_deregister_removes_owned_entries_and_waits_for_in_flight_requests(
    caddies: Caddies, start: Callable[..., Server], tmp_path: Path
) -> None:
    app = start()
    address = app.base_url.removeprefix("http://")
    caddy = caddies("\treverse_proxy {\n\t\tlb_try_duration 1s\n\t}")
    upstreams = caddy.admin_url + _proxy_path(caddy.admin_url) + "/upstreams"
    # Registered twice (as a retried append would): both entries are the companion's. A proxy
    # with no static upstreams has no `upstreams` array yet: PUT creates it, POST appends.
    assert httpx.put(upstreams, json=[{"@id": "caddy-beacon-a", "dial": address}]).status_code == 200
    assert httpx.post(upstreams, json={"@id": "caddy-beacon-b", "dial": address}).status_code == 200
    assert httpx.get(f"{caddy.base_url}/items/1").status_code == 200

    with _request_in_flight(caddy, 2) as slow:
        started = time.monotonic()
        result = companion("deregister", "--upstream", address, "--admin", caddy.admin_url, "--drain-timeout", "10s")
        elapsed = time.monotonic() - started
        assert result.returncode == 0, result.stderr
        assert f"deregistered {address} from {caddy.admin_url} (2 entries)" in result.stdout
        assert elapsed > 1.0, "returned before the request in flight had finished"
        assert slow.result().status_code == 200

    assert httpx.get(upstreams).json() == []
    again = companion("deregister", "--upstream", address, "--admin", caddy.admin_url)
    assert again.returncode == 0 and "nothing to do" in again.stdout


def test_deregister_never_touches_caddyfile_upstreams(
    caddies: Caddies, start: Callable[..., Server], tmp_path: Path
) -> None:
    app = start()
    address = app.base_url.removeprefix("http://")
    caddy = caddies(f"\treverse_proxy {address}")
    result = companion("deregister", "--upstream", address, "--admin", caddy.admin_url)
    assert result.returncode == 64
    assert "was not registered by caddy-beacon" in result.stderr
    assert httpx.get(f"{caddy.base_url}/items/1").status_code == 200


def test_deregister_reports_a_drain_timeout(caddies: Caddies, start: Callable[..., Server], tmp_path: Path) -> None:
    app = start()
    address = app.base_url.removeprefix("http://")
    caddy = caddies("\treverse_proxy")
    upstreams = caddy.admin_url + _proxy_path(caddy.admin_url) + "/upstreams"
    assert httpx.put(upstreams, json=[{"@id": "caddy-beacon-x", "dial": address}]).status_code == 200
    with _request_in_flight(caddy, 3) as slow:
        result = companion("deregister", "--upstream", address, "--admin", caddy.admin_url, "--drain-timeout", "500ms")
        assert result.returncode == 1
        assert "1 request(s) to it were still running when the drain timeout ended" in result.stderr
        assert slow.result().status_code == 200
