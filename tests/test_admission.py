"""Who may join a pool, tried as an attacker would against the module Caddy: whatever reaches
`/beacon/` chooses where the public site's traffic goes, so the site must never reach Caddy's
own admin API or a metadata service, by any spelling, by a name that moves, or after a reload.
And a config Caddy refuses changes nothing; members churning through a pool leave no memory
behind.

The tests run in a network namespace of their own (tests.netns), where this host has OWN and a
peer host beside it has APP (an app replica) and METADATA (a stand-in metadata service); Caddy
resolves names through a hosts file the test rewrites."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.caddy import MODULE_CADDY, Caddies, Caddy
from tests.support.netns import network_namespace, peer_host, run_on, with_hosts_file
from tests.support.ports import free_port
from tests.support.servers import ROOT
from tests.support.sites import caddy_metric, pool, pool_site
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.caddy, pytest.mark.netns]

OWN = "10.77.0.1"  # this host's own address
APP = "10.77.0.2"  # an app replica's
METADATA = "169.254.169.254"  # a cloud metadata service's

# Every metadata address, and the forms that carry one; no shipped allow list may admit them.
METADATA_FORMS = [
    "169.254.169.254:80", "[::ffff:169.254.169.254]:80", "[fd00:ec2::254]:80", "[fd20:ce::254]:80",
    "100.100.100.200:80", "192.0.0.192:80", "[64:ff9b::a9fe:a9fe]:80", "[2002:a9fe:a9fe::1]:80",
    "[::a9fe:a9fe]:80", "[::ffff:0:a9fe:a9fe]:80", "[2001:0:a9fe:a9fe::1]:80", "[2001:0:4136:e378:8000:63bf:5601:5601]:80",
]  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def peer() -> Iterator[str]:
    """This test host, and the peer host beside it (its name)."""
    with network_namespace(), peer_host(f"beacon-peer-{os.getpid()}", link=(OWN, APP), addresses=[METADATA]) as name:
        yield name


@pytest.fixture
def responders(peer: str) -> Iterator[Any]:
    """Starts stand-in services (tests.responder) on the peer host; stops them afterwards."""
    started: list[subprocess.Popen[bytes]] = []

    def start(host: str, port: int, body: str) -> None:
        process = subprocess.Popen(
            run_on(peer, [sys.executable, "-m", "tests.support.responder", host, str(port), body]), cwd=ROOT
        )
        started.append(process)

        def answering() -> bool:
            assert process.poll() is None, f"the responder on {host}:{port} exited"
            try:
                return httpx.get(f"http://{host}:{port}/", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        assert wait_until(answering, timeout=10)

    yield start
    for process in started:
        process.kill()
        process.wait(timeout=5)


def admission_caddy(
    caddies: Caddies, tmp_path: Path, *options: str, hosts: str = "", **launch: Any
) -> tuple[Caddy, Path]:
    """The module Caddy with pool `api`, resolving names through a hosts file of its own
    (returned: rewrite it to move a name)."""
    if not MODULE_CADDY.exists():
        pytest.fail(f"{MODULE_CADDY} is missing: `make caddy` (make test does)")
    hosts_file = tmp_path / "hosts"
    hosts_file.write_text("127.0.0.1 localhost\n" + hosts)
    caddy = caddies(pool_site(*options), module=True, prefix=with_hosts_file(hosts_file), **launch)
    return caddy, hosts_file


def act(caddy: Caddy, action: str, address: str, pool_name: str = "api", admin: str | None = None) -> httpx.Response:
    with httpx.Client(base_url=admin or caddy.admin_url, timeout=10) as client:
        return client.post(f"/beacon/pools/{pool_name}/{action}", json={"address": address})


def through_the_site(caddy: Caddy, path: str = "/config/") -> str:
    """What the public site answers for `path` (a fresh connection each time)."""
    return httpx.get(f"{caddy.base_url}{path}", timeout=10).text


def is_caddy_config(text: str) -> bool:
    return '"apps"' in text and '"admin"' in text


def test_caddy_s_admin_api_is_refused_at_every_address_that_reaches_it(caddies: Caddies, tmp_path: Path) -> None:
    # On all interfaces, as compose.yml has it: Caddy also turns its Host check off there.
    port = free_port()
    caddy, _ = admission_caddy(
        caddies, tmp_path, hosts="127.0.0.2 loopback.test\n", admin_host="0.0.0.0", admin_port=port
    )
    reaching_caddy = [
        f"127.0.0.1:{port}", f"127.0.0.2:{port}", f"127.1.2.3:{port}", f"[::ffff:127.0.0.2]:{port}", f"[::1]:{port}",
        f"0.0.0.0:{port}", f"[::]:{port}", f"{OWN}:{port}", f"[::ffff:{OWN}]:{port}", f"loopback.test:{port}",
        f"[::127.0.0.2]:{port}", f"[64:ff9b::7f00:2]:{port}",
    ]  # fmt: skip
    for address in reaching_caddy:
        answer = act(caddy, "register", address)
        assert answer.status_code == 403 and "refused" in answer.json()["error"], (address, answer.text)
    assert pool(caddy) == []
    assert caddy_metric(caddy, 'caddy_beacon_registrations_refused_total{pool="api"}') == len(reaching_caddy)
    assert not is_caddy_config(through_the_site(caddy))
    # The same port elsewhere, and this host at another port, are members like any.
    for address in (f"10.77.0.9:{port}", f"{OWN}:{free_port()}"):
        assert act(caddy, "register", address).status_code == 200, address
        assert act(caddy, "remove", address).status_code == 200


def test_a_reload_that_moves_the_admin_api_onto_a_member_removes_it(caddies: Caddies, tmp_path: Path) -> None:
    caddy, _ = admission_caddy(caddies, tmp_path)
    moved_to = free_port()
    assert act(caddy, "register", f"{OWN}:{moved_to}").status_code == 200
    with caddy.admin_client() as client:
        config = client.get("/config/").json()
        config["admin"] = {"listen": f"0.0.0.0:{moved_to}"}
        assert client.post("/load", json=config).status_code == 200
    new_admin = f"http://127.0.0.1:{moved_to}"

    def listed() -> list[str]:
        with httpx.Client(base_url=new_admin, timeout=5) as client:
            return [u["address"] for u in client.get("/beacon/pools").json()["pools"]["api"]["upstreams"]]

    assert wait_until(lambda: listed() == [], timeout=5), listed()
    assert "reaches this Caddy itself" in caddy.log()
    assert act(caddy, "register", f"{OWN}:{moved_to}", admin=new_admin).status_code == 403
    assert not is_caddy_config(through_the_site(caddy))


@pytest.mark.parametrize("target", [METADATA, "127.0.0.1"], ids=["metadata", "admin-api"])
def test_a_name_that_moves_is_never_followed(caddies: Caddies, tmp_path: Path, responders: Any, target: str) -> None:
    """DNS rebinding: a name admitted at an app's address moves to the metadata service, or to
    loopback where Caddy's admin API listens on the same port (on all interfaces, so with no
    Host check). Caddy keeps dialling the address it admitted, and the next renewal (its name
    judged again) is refused and removes it."""
    port = free_port()  # the admin API's port: the app and the metadata service use it too
    caddy, hosts = admission_caddy(caddies, tmp_path, hosts=f"{APP} app.test\n", admin_host="0.0.0.0", admin_port=port)
    responders(APP, port, '{"status": "pass", "who": "app"}')
    responders(METADATA, port, '{"status": "pass", "who": "metadata"}')
    name = f"app.test:{port}"
    registered = act(caddy, "register", name)
    assert registered.status_code == 200 and registered.json()["dial"] == f"{APP}:{port}", registered.text
    assert '"app"' in through_the_site(caddy, "/who")

    hosts.write_text(f"127.0.0.1 localhost\n{target} app.test\n")
    seen: list[str] = []

    def renewal_refused() -> bool:
        seen.append(through_the_site(caddy))
        return act(caddy, "renew", name).status_code == 403

    # Caddy's resolver reads the hosts file again within 5 s.
    refused = wait_until(renewal_refused, timeout=20, interval=0.2)
    leaked = [text[:200] for text in seen if '"app"' not in text]
    assert seen and not leaked, f"the site answered: {leaked[:3]}"
    assert refused, caddy.log()[-3000:]
    assert pool(caddy) == []
    after = through_the_site(caddy)
    assert not is_caddy_config(after) and "metadata" not in after
    assert act(caddy, "register", name).status_code == 403
    assert caddy_metric(caddy, 'caddy_beacon_registrations_refused_total{pool="api"}') >= 2
    assert "renew refused" in caddy.log()


def shipped_allow_lists() -> dict[str, list[str]]:
    """Every allow list the repository ships or suggests (commented out included), by file."""
    found: dict[str, list[str]] = {}
    for path in [ROOT / "Caddyfile", *ROOT.glob("deploy/**/Caddyfile"), *ROOT.glob("deploy/**/*.caddy")]:
        for line in path.read_text().splitlines():
            match = re.match(r"\s*#?\s*allow\s+(\S.*?)\s*(#.*)?$", line)
            if match:
                found[f"{path.relative_to(ROOT)}: {match.group(1)}"] = match.group(1).split()
    return found


def test_no_shipped_allow_list_admits_a_metadata_address(caddies: Caddies) -> None:
    lists = shipped_allow_lists()
    assert any("fd00::/8" in rules for rules in lists.values()), lists  # the Kubernetes one
    pools = {f"shipped-{i}": rules for i, rules in enumerate(lists.values())}
    site = "".join(
        f"\thandle_path /{name}/* {{\n\t\treverse_proxy {{\n\t\t\tdynamic beacon {name} {{\n\t\t\t\tallow {' '.join(rules)}\n\t\t\t}}\n\t\t}}\n\t}}\n"
        for name, rules in pools.items()
    )
    caddy = caddies(site, module=True)
    for name, rules in pools.items():
        for address in METADATA_FORMS:
            answer = act(caddy, "register", address, pool_name=name)
            assert answer.status_code == 403, (rules, address, answer.text)
        assert act(caddy, "register", "10.1.2.3:80", pool_name=name).status_code == 200, rules


def test_every_form_of_a_guarded_address_is_refused_without_an_allow_list(caddies: Caddies, tmp_path: Path) -> None:
    caddy, _ = admission_caddy(caddies, tmp_path)
    for address in [
        *METADATA_FORMS,
        "[fe80::1]:80",
        "224.0.0.1:80",
        "[ff02::1]:80",
        "255.255.255.255:80",
        "240.0.0.1:80",
        "0.1.2.3:80",
        "[64:ff9b:1::a00:1]:80",
    ]:
        answer = act(caddy, "register", address)
        assert answer.status_code == 403, (address, answer.text)
    assert pool(caddy) == []


def objects(value: Any) -> Iterator[dict[str, Any]]:
    """Every JSON object inside `value`."""
    if isinstance(value, dict):
        yield value
        for item in value.values():
            yield from objects(item)
    elif isinstance(value, list):
        for item in value:
            yield from objects(item)


def beacon_route(pool_name: str) -> dict[str, Any]:
    return {
        "match": [{"path": [f"/{pool_name}/*"]}],
        "handle": [{"handler": "reverse_proxy", "dynamic_upstreams": {"source": "beacon", "pool": pool_name}}],
    }


def test_a_refused_config_changes_nothing_and_the_next_one_loads(caddies: Caddies, tmp_path: Path) -> None:
    caddy, _ = admission_caddy(caddies, tmp_path, "allow 10.0.0.0/8")
    assert act(caddy, "register", "10.0.0.5:80").status_code == 200
    with caddy.admin_client() as client:
        config = client.get("/config/").json()
    (server,) = config["apps"]["http"]["servers"].values()

    # 1,030 pools (past the registry's 1,024), and the api pool made stricter on the way.
    refused = copy.deepcopy(config)
    (refused_server,) = refused["apps"]["http"]["servers"].values()
    (api,) = [value for value in objects(refused_server) if value.get("source") == "beacon"]
    api["allow"] = ["192.168.0.0/16"]
    refused_server["routes"] = [beacon_route(f"extra-{i}") for i in range(1030)] + refused_server["routes"]
    with caddy.admin_client() as client:
        answer = client.post("/load", json=refused)
        assert answer.status_code >= 400 and "pools are declared already" in answer.text, answer.text[:500]
        pools = client.get("/beacon/pools").json()["pools"]
    assert list(pools) == ["api"], f"{len(pools)} pools after a refused load"
    assert pools["api"]["allow"] == ["10.0.0.0/8"] and [u["address"] for u in pools["api"]["upstreams"]] == [
        "10.0.0.5:80"
    ]
    assert act(caddy, "register", "10.0.0.6:80", pool_name="extra-3").status_code == 404
    assert caddy_metric(caddy, 'caddy_beacon_registrations_refused_total{pool="extra-3"}') == 0

    # The next config, with one new pool, loads; the pool it dropped is gone.
    server["routes"] = [beacon_route("next")]
    with caddy.admin_client() as client:
        assert client.post("/load", json=config).status_code == 200, caddy.log()[-2000:]
        assert list(client.get("/beacon/pools").json()["pools"]) == ["next"]
    assert act(caddy, "register", "10.0.0.6:80", pool_name="next").status_code == 200
    assert act(caddy, "register", "10.0.0.6:80").status_code == 404, "api is no longer declared"


def rss_bytes(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) * 1024


def test_memory_stays_flat_while_unix_socket_members_churn(caddies: Caddies, tmp_path: Path) -> None:
    """Members that come and go (each a Unix socket that is probed, then removed) leave nothing
    behind: 10,000 of them after a warm-up of 2,000."""
    caddy, _ = admission_caddy(caddies, tmp_path, "health_interval 100ms", "allow unix//run/beacon-churn/")
    batch = 1000
    with httpx.Client(base_url=caddy.admin_url, timeout=10) as client:

        def churn(first: int) -> None:
            addresses = [f"unix//run/beacon-churn/{first + i}.sock" for i in range(batch)]
            for address in addresses:
                # A lease that outlasts the batch however slow the machine: the default 15 s ran
                # out under load before the batch's removals reached its first members.
                answer = client.post("/beacon/pools/api/register", json={"address": address, "lease_ms": 300_000})
                assert answer.status_code == 200, answer.text
            # Every one probed (its socket dialled) before it leaves.
            assert wait_until(lambda: all(u["last_probe_ms"] is not None for u in pool(caddy)), timeout=30)
            for address in addresses:
                assert client.post("/beacon/pools/api/remove", json={"address": address}).status_code == 200

        for first in range(0, 2 * batch, batch):
            churn(first)
        before = rss_bytes(caddy.process.pid)
        for first in range(2 * batch, 12 * batch, batch):
            churn(first)
        after = rss_bytes(caddy.process.pid)
    print(
        f"\nFIGURE module Caddy RSS over 10,000 Unix-socket members churned: {before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB"
    )
    assert pool(caddy) == []
    assert after - before < 8 * 2**20, f"grew {(after - before) / 2**20:.1f} MiB"
