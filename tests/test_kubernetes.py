"""Kubernetes owns membership: the module Caddy's `kubernetes <namespace>/<service>` source
against a real kube-apiserver and etcd (tests/kubernetes_control_plane.py). The "pods" are
real uvicorn processes on 10.244.0.2, 10.244.0.3, ... in a network namespace the tests create
(the API server refuses loopback addresses in EndpointSlices); the tests write their
EndpointSlices as the EndpointSlice controller would, and Caddy watches them with an identity
that may only read endpointslices in the test's namespace. The manifests under deploy/kubernetes/ go through the
API server's strict server-side validation.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.caddy import MODULE_CADDY, Caddies, Caddy
from tests.support.companion import APP
from tests.support.kubernetes import CADDY_POD, CADDY_TOKEN, ControlPlane, EndpointSlice, Pod, network_namespace
from tests.support.load import Load
from tests.support.ports import free_port
from tests.support.servers import ROOT
from tests.support.waiting import holds_for, wait_until

pytestmark = [pytest.mark.caddy, pytest.mark.netns, pytest.mark.kubernetes]

MANIFESTS = ROOT / "deploy" / "kubernetes"


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with network_namespace():
        control_plane = ControlPlane(tmp_path_factory.mktemp("kubernetes"))
        control_plane.start()
        yield control_plane
        control_plane.stop()


# --- the manifests ---------------------------------------------------------------------------


def rendered_manifests(plane: ControlPlane) -> list[dict[str, Any]]:
    result = plane.kubectl("kustomize", str(MANIFESTS))
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def find(documents: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in documents if d["kind"] == kind and d["metadata"]["name"].startswith(name)]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def test_the_manifests_pass_the_api_server_s_strict_validation(plane: ControlPlane, tmp_path: Path) -> None:
    # The namespace for real (the other objects are namespaced in it), everything else dry-run.
    created = plane.kubectl("apply", "-f", str(MANIFESTS / "namespace.yaml"))
    assert created.returncode == 0, created.stderr
    rendered = plane.kubectl("kustomize", str(MANIFESTS)).stdout
    dry_run = plane.kubectl("apply", "--dry-run=server", "--validate=strict", "-f", "-", input=rendered)
    assert dry_run.returncode == 0, dry_run.stderr
    assert "Warning" not in dry_run.stderr, dry_run.stderr
    applied = {line.split(" ")[0] for line in dry_run.stdout.splitlines()}
    for expected in (
        "serviceaccount/caddy", "role.rbac.authorization.k8s.io/caddy-endpointslices",
        "rolebinding.rbac.authorization.k8s.io/caddy-endpointslices", "service/caddy", "deployment.apps/caddy",
        "deployment.apps/app", "service/app", "poddisruptionbudget.policy/app",
    ):  # fmt: skip
        assert expected in applied, dry_run.stdout
    assert any(name.startswith("configmap/caddy-config-") for name in applied), dry_run.stdout

    # The check is real: one misspelt field fails it.
    misspelt = plane.kubectl(
        "apply",
        "--dry-run=server",
        "--validate=strict",
        "-f",
        "-",
        input=rendered.replace("readinessProbe", "readynessProbe", 1),
    )
    assert (
        misspelt.returncode != 0
        and 'unknown field "spec.template.spec.containers[0].readynessProbe"' in misspelt.stderr
    ), misspelt.stderr


def test_the_manifests_say_what_the_readme_promises(plane: ControlPlane, tmp_path: Path) -> None:
    documents = rendered_manifests(plane)
    # Caddy's identity may read endpointslices in its namespace, nothing else.
    role = find(documents, "Role", "caddy-endpointslices")
    assert role["rules"] == [
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]}
    ]
    binding = find(documents, "RoleBinding", "caddy-endpointslices")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "caddy", "namespace": "caddy-beacon"}]
    caddy = find(documents, "Deployment", "caddy")["spec"]["template"]
    assert caddy["spec"]["serviceAccountName"] == "caddy"

    app = find(documents, "Deployment", "app")
    pod = app["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert pod["spec"]["terminationGracePeriodSeconds"] > float(env["BEACON_DRAIN_SECONDS"]) + 10, (
        "the grace period must outlast the drain"
    )
    assert app["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert find(documents, "PodDisruptionBudget", "app")["spec"]["minAvailable"] < app["spec"]["replicas"]
    assert find(documents, "Service", "app")["spec"]["ports"][0]["name"] == "http"

    # The Caddyfile the ConfigMap carries adapts with the module Caddy into a Kubernetes source
    # for that Service and port; the admin API stays on localhost.
    caddyfile = tmp_path / "Caddyfile"
    caddyfile.write_text(find(documents, "ConfigMap", "caddy-config")["data"]["Caddyfile"])
    adapted = subprocess.run(
        [str(MODULE_CADDY), "adapt", "--config", str(caddyfile)], capture_output=True, text=True, timeout=30
    )
    assert adapted.returncode == 0, adapted.stderr
    config = json.loads(adapted.stdout)
    assert config["admin"]["listen"] == "localhost:2019"
    sources = [value for value in walk(config) if value.get("source") == "beacon"]
    assert [source["kubernetes"] for source in sources] == [
        {"namespace": "caddy-beacon", "service": "app", "port_name": "http"}
    ]


def walk(value: Any) -> Iterator[dict[str, Any]]:
    """Every JSON object inside `value`."""
    if isinstance(value, dict):
        yield value
        for item in value.values():
            yield from walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from walk(item)


# --- pods, Caddy ------------------------------------------------------------------------------

_ips = (f"10.244.{n // 250}.{n % 250 + 2}" for n in itertools.count())


def port_free_on(ips: list[str]) -> int:
    """A port free on every one of `ips` (an EndpointSlice has one port for all its pods)."""
    for _ in range(50):
        port = free_port()
        try:
            for ip in ips:
                with socket.socket() as s:
                    s.bind((ip, port))
            return port
        except OSError:
            continue
    raise RuntimeError("no port free on every address")


@dataclass
class RunningPod(Pod):
    """A pod: a real uvicorn serving the test app on its own loopback address."""

    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def sigterm(self) -> None:
        """What the kubelet does when the pod is deleted (the app then drains for
        BEACON_DRAIN_SECONDS and stops)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def stopped_cleanly(self, timeout: float = 30) -> bool:
        """Waits for the process; uvicorn ends a graceful shutdown by raising the signal it
        caught again, so a clean stop after SIGTERM is -SIGTERM."""
        assert self.process is not None
        return self.process.wait(timeout=timeout) in (0, -signal.SIGTERM)


class Cluster:
    """A test's namespace, its Service `app` (port `http`), its EndpointSlice and its pods."""

    def __init__(self, plane: ControlPlane, tmp_path: Path, pods: int, spare: int = 0) -> None:
        self.plane, self.tmp_path = plane, tmp_path
        self.namespace = f"t-{uuid.uuid4().hex[:10]}"
        self.ips = [next(_ips) for _ in range(pods + spare)]
        self.port = port_free_on(self.ips)
        plane.namespace_for_caddy(self.namespace, "app", port=self.port)
        self.slice = EndpointSlice(plane, self.namespace, "app", "app-abcde", self.port)
        self.pods: list[RunningPod] = []
        self.spare = self.ips[pods:]
        for ip in self.ips[:pods]:
            self.start_pod(ip)

    def start_pod(self, ip: str | None = None) -> RunningPod:
        ip = ip or self.spare.pop(0)
        log_path = self.tmp_path / f"pod-{ip}.log"
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", APP, "--host", ip, "--port", str(self.port), "--log-level", "warning",
                 "--timeout-graceful-shutdown", "20", "--timeout-keep-alive", "75"],
                env={**os.environ, "BEACON_DRAIN_SECONDS": "2"}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        pod = RunningPod(ip=ip, process=process, log_path=log_path)
        self.pods.append(pod)

        def ready() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"pod {ip} exited:\n{pod.log()}")
            try:
                return httpx.get(f"http://{ip}:{self.port}/ready", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        assert wait_until(ready, timeout=20), pod.log()
        return pod

    def address(self, pod: Pod) -> str:
        return f"{pod.ip}:{self.port}"

    def stop(self) -> None:
        for pod in self.pods:
            if pod.process and pod.process.poll() is None:
                pod.process.kill()
                pod.process.wait(timeout=10)


@pytest.fixture
def clusters(plane: ControlPlane, tmp_path: Path) -> Iterator[Any]:
    made: list[Cluster] = []

    def make(pods: int, spare: int = 0) -> Cluster:
        made.append(Cluster(plane, tmp_path, pods, spare))
        return made[-1]

    yield make
    for cluster in made:
        cluster.stop()


def kubernetes_caddy(caddies: Caddies, plane: ControlPlane, namespace: str, *options: str, **launch: Any) -> Caddy:
    if not MODULE_CADDY.exists():
        pytest.fail(f"{MODULE_CADDY} is missing: `make caddy` (make test does)")
    source = "\n".join(
        [
            f"\t\t\tkubernetes {namespace}/app http",
            f"\t\t\tkubeconfig {plane.caddy_kubeconfig()}",
            *(f"\t\t\t{o}" for o in options),
        ]
    )
    site = (
        "\treverse_proxy {\n"
        "\t\tdynamic beacon app {\n"
        f"{source}\n"
        "\t\t\thealth_interval 500ms\n\t\t\thealth_timeout 400ms\n\t\t\thealth_fails 2\n"
        "\t\t}\n"
        "\t\tlb_policy least_conn\n\t\tlb_retries 3\n"
        "\t\ttransport http {\n\t\t\tdial_timeout 2s\n\t\t\tkeepalive 60s\n\t\t}\n"
        "\t}\n"
    )
    return caddies(site, module=True, **launch)


def pool_view(caddy: Caddy) -> dict[str, Any]:
    with caddy.admin_client() as client:
        return client.get("/beacon/pools").json()["pools"].get("app", {})  # type: ignore[no-any-return]


def members(caddy: Caddy) -> dict[str, dict[str, Any]]:
    return {u["address"]: u for u in pool_view(caddy).get("upstreams", [])}


def watching(caddy: Caddy) -> bool:
    return pool_view(caddy)["kubernetes"]["watching"]  # type: ignore[no-any-return]


def serving(caddy: Caddy) -> set[str]:
    """The members that get new requests: healthy and not draining."""
    return {address for address, u in members(caddy).items() if u["healthy"] and not u["draining"]}


def config_etag(caddy: Caddy) -> str:
    with caddy.admin_client() as client:
        return client.get("/config/").headers["etag"]


def answering_pids(caddy: Caddy, requests: int = 20) -> set[int]:
    return {httpx.get(f"{caddy.base_url}/whoami", timeout=5).json()["pid"] for _ in range(requests)}


# --- membership -------------------------------------------------------------------------------


def test_endpoints_join_and_leave_as_the_slices_say_without_a_config_change(
    caddies: Caddies, plane: ControlPlane, clusters: Any
) -> None:
    cluster = clusters(pods=2)
    a, b = cluster.pods
    caddy = kubernetes_caddy(caddies, plane, cluster.namespace)
    etag = config_etag(caddy)
    assert members(caddy) == {}

    cluster.slice.write([a])
    assert wait_until(lambda: serving(caddy) == {cluster.address(a)}, timeout=5), members(caddy)
    assert answering_pids(caddy) == {a.pid()}
    assert pool_view(caddy)["kubernetes"] == {
        "namespace": cluster.namespace,
        "service": "app",
        "port_name": "http",
        "watching": True,
    }

    # How long a change takes to reach Caddy's pool: from the start of the EndpointSlice write
    # (a GET and a PUT to the API server) to the pool listing showing it, polled every 5 ms.
    written = time.monotonic()
    cluster.slice.write([a, b])
    write_took = time.monotonic() - written
    assert wait_until(lambda: serving(caddy) == {cluster.address(a), cluster.address(b)}, timeout=5, interval=0.005), (
        members(caddy)
    )
    joined_after = time.monotonic() - written
    assert answering_pids(caddy, 40) == {a.pid(), b.pid()}

    # b fails its readiness probe: Kubernetes marks it not ready, Caddy stops sending to it.
    b.ready = b.serving = False
    written = time.monotonic()
    cluster.slice.write([a, b])
    assert wait_until(
        lambda: members(caddy).get(cluster.address(b), {}).get("draining") is True, timeout=5, interval=0.005
    ), members(caddy)
    print(
        f"\nFIGURE EndpointSlice write to Caddy's pool: ready pod joined {joined_after * 1000:.0f} ms, unready pod draining {(time.monotonic() - written) * 1000:.0f} ms (the join's write itself took {write_took * 1000:.0f} ms)"
    )
    assert answering_pids(caddy) == {a.pid()}
    # ... and recovers: it is served again.
    b.ready = b.serving = True
    cluster.slice.write([a, b])
    assert wait_until(lambda: serving(caddy) == {cluster.address(a), cluster.address(b)}, timeout=5), members(caddy)

    # A reload with the same source keeps the watch and its members.
    caddyfile = caddy.command[caddy.command.index("--config") + 1]
    reload = subprocess.run(
        [str(MODULE_CADDY), "reload", "--config", caddyfile, "--adapter", "caddyfile", "--address", caddy.admin_url.removeprefix("http://"), "--force"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert reload.returncode == 0, reload.stderr
    assert serving(caddy) == {cluster.address(a), cluster.address(b)}
    etag = config_etag(caddy)

    cluster.slice.write([a])
    assert wait_until(lambda: set(members(caddy)) == {cluster.address(a)}, timeout=5), members(caddy)
    cluster.slice.delete()
    assert wait_until(lambda: members(caddy) == {}, timeout=5), members(caddy)
    assert config_etag(caddy) == etag, "membership changed Caddy's config"
    status = Path(f"/proc/{caddy.process.pid}/status").read_text()
    memory = {
        line.split(":")[0]: line.split()[1] for line in status.splitlines() if line.startswith(("RssAnon", "RssFile"))
    }
    print(
        f"\nFIGURE module Caddy watching EndpointSlices: RssAnon {memory['RssAnon']} kB, RssFile {memory['RssFile']} kB"
    )
    log = caddy.log()
    assert "watching EndpointSlices" in log
    assert log.count('"upstream registered"') >= 2 and '"upstream removed"' in log


def test_a_terminating_pod_drains_with_a_request_in_flight(
    caddies: Caddies, plane: ControlPlane, clusters: Any
) -> None:
    cluster = clusters(pods=2)
    a, b = cluster.pods
    caddy = kubernetes_caddy(caddies, plane, cluster.namespace)
    cluster.slice.write([a])
    assert wait_until(lambda: serving(caddy) == {cluster.address(a)}, timeout=5), members(caddy)

    slow: dict[str, httpx.Response] = {}
    thread = threading.Thread(target=lambda: slow.update(response=httpx.get(f"{caddy.base_url}/sleep/3", timeout=20)))
    thread.start()
    assert wait_until(lambda: members(caddy)[cluster.address(a)]["in_flight"] == 1, timeout=5), members(caddy)

    # The pod is deleted: the controller marks it serving and terminating, and the kubelet sends
    # SIGTERM at the same time; the replacement is already ready.
    a.ready, a.terminating = False, True
    cluster.slice.write([a, b])
    a.sigterm()
    assert wait_until(lambda: members(caddy).get(cluster.address(a), {}).get("draining") is True, timeout=2), members(
        caddy
    )
    assert wait_until(lambda: cluster.address(b) in serving(caddy), timeout=5), members(caddy)
    assert answering_pids(caddy) == {b.pid()}, "a draining pod got a new request"
    thread.join(timeout=20)
    assert slow["response"].status_code == 200, slow["response"].text
    assert slow["response"].json() == {"slept": 3.0}

    assert a.stopped_cleanly(), a.log()
    cluster.slice.write([b])
    assert wait_until(lambda: set(members(caddy)) == {cluster.address(b)}, timeout=5), members(caddy)


def test_a_rolling_update_loses_no_request_and_changes_no_config(
    caddies: Caddies, plane: ControlPlane, clusters: Any
) -> None:
    """maxSurge 1, maxUnavailable 0, as the manifest's Deployment: a new pod starts, turns
    ready and joins the slice; then an old one is deleted (terminating in the slice and SIGTERM
    at once) and leaves the slice once it has stopped. HTTP/1.1 with keep-alive and with a new
    connection per request, side by side."""
    cluster = clusters(pods=3, spare=3)
    caddy = kubernetes_caddy(caddies, plane, cluster.namespace)
    etag = config_etag(caddy)
    live: list[RunningPod] = list(cluster.pods)
    cluster.slice.write(live)
    assert wait_until(lambda: len(serving(caddy)) == 3, timeout=5), members(caddy)
    with (
        Load(caddy.base_url, threads=2, keepalive=True, max_seconds=120) as keepalive,
        Load(caddy.base_url, threads=2, max_seconds=120) as fresh,
    ):
        loads = (keepalive, fresh)
        assert wait_until(lambda: all(len(load.pids) == 3 for load in loads), timeout=20), (
            "traffic did not reach every pod"
        )
        for old in list(cluster.pods[:3]):
            new = cluster.start_pod()
            live.append(new)
            cluster.slice.write(live)
            assert wait_until(lambda new=new: all(new.pid() in load.pids for load in loads), timeout=20), (
                "the new pod got no traffic"
            )
            old.ready, old.terminating = False, True
            cluster.slice.write(live)
            old.sigterm()
            assert old.stopped_cleanly(), old.log()
            live.remove(old)
            cluster.slice.write(live)
        time.sleep(0.5)
    assert set(members(caddy)) == {cluster.address(pod) for pod in live}
    assert config_etag(caddy) == etag, "the rolling update changed Caddy's config"
    for name, load in (("keep-alive", keepalive), ("new connection per request", fresh)):
        print(
            f"\nFIGURE kubernetes rolling update of 3 pods, HTTP/1.1 {name}: {load.ok} ok, {len(load.failures)} failed"
        )
        assert load.ok > 200
        assert load.failures == [], f"{name}: " + "\n".join(load.failures[:20]) + "\n" + caddy.log()[-5000:]


def test_the_pool_keeps_its_members_while_the_api_server_restarts(
    caddies: Caddies, plane: ControlPlane, clusters: Any
) -> None:
    cluster = clusters(pods=3)
    a, b, c = cluster.pods
    caddy = kubernetes_caddy(caddies, plane, cluster.namespace)
    cluster.slice.write([a, b])
    assert wait_until(lambda: serving(caddy) == {cluster.address(a), cluster.address(b)}, timeout=5), members(caddy)
    with Load(caddy.base_url, threads=2, max_seconds=90) as load:
        plane.stop_apiserver()
        try:
            assert wait_until(lambda: "watching EndpointSlices failed" in caddy.log(), timeout=20), caddy.log()[-3000:]
            assert holds_for(lambda: serving(caddy) == {cluster.address(a), cluster.address(b)}, 2), (
                "members were lost while the API server was down"
            )
            assert not watching(caddy)
        finally:
            plane.start_apiserver()
        # The watch resumes (client-go's reflector lists again) and follows new changes.
        cluster.slice.write([a, c])
        assert wait_until(lambda: serving(caddy) == {cluster.address(a), cluster.address(c)}, timeout=40), members(
            caddy
        )
        assert wait_until(lambda: c.pid() in load.pids, timeout=10)
    assert "watching EndpointSlices again" in caddy.log()
    assert watching(caddy)
    print(f"\nFIGURE kubernetes API server restart under load: {load.ok} ok, {len(load.failures)} failed")
    assert load.ok > 50
    assert load.failures == [], "\n".join(load.failures[:20])


def test_a_frozen_api_server_is_reported_and_the_members_stay(
    caddies: Caddies, plane: ControlPlane, clusters: Any
) -> None:
    """SIGSTOP: the watch's connection stays open and says nothing. The module asks the API
    server something at every 15 s renewal, with a 10 s timeout."""
    cluster = clusters(pods=1)
    (a,) = cluster.pods
    caddy = kubernetes_caddy(caddies, plane, cluster.namespace)
    cluster.slice.write([a])
    assert wait_until(lambda: serving(caddy) == {cluster.address(a)}, timeout=5), members(caddy)
    assert watching(caddy)
    plane.freeze_apiserver()
    frozen = time.monotonic()
    try:
        # The next renewal (within 15 s) asks, and gives up after 10 s.
        assert wait_until(lambda: not watching(caddy), timeout=35, interval=0.5), caddy.log()[-3000:]
        noticed = time.monotonic() - frozen
        assert serving(caddy) == {cluster.address(a)}, "members were lost while the API server was frozen"
    finally:
        plane.thaw_apiserver()
    thawed = time.monotonic()
    assert wait_until(lambda: watching(caddy), timeout=60, interval=0.5), caddy.log()[-3000:]
    print(
        f"\nFIGURE kubernetes API server frozen: reported {noticed:.1f} s after SIGSTOP, watching again {time.monotonic() - thawed:.1f} s after SIGCONT"
    )
    assert "watching EndpointSlices failed" in caddy.log() and "watching EndpointSlices again" in caddy.log()


def test_an_endpoint_at_caddy_s_own_admin_api_never_joins_and_is_counted_once(
    caddies: Caddies, plane: ControlPlane, clusters: Any
) -> None:
    """The admin API on all interfaces at a port of its choosing (not 2019), and a slice that
    lists Caddy's own pod at that port: refused, counted once however often the slice changes,
    and the public site never answers with Caddy's config."""
    cluster = clusters(pods=0)  # the slice's port is the admin API's; no pod listens on it
    caddy = kubernetes_caddy(caddies, plane, cluster.namespace, admin_host="0.0.0.0", admin_port=cluster.port)
    # Pods of another node (outside the test's POD_NETWORK, so nothing on this host answers).
    elsewhere = [Pod(ip="10.245.0.1"), Pod(ip="10.245.0.2")]
    cluster.slice.write([Pod(ip=CADDY_POD), elsewhere[0]])
    assert wait_until(lambda: set(members(caddy)) == {cluster.address(elsewhere[0])}, timeout=5), members(caddy)
    cluster.slice.write([Pod(ip=CADDY_POD), *elsewhere])
    assert wait_until(lambda: set(members(caddy)) == {cluster.address(p) for p in elsewhere}, timeout=5), members(caddy)
    with caddy.admin_client() as client:
        metrics = client.get("/metrics").text
    assert 'caddy_beacon_registrations_refused_total{pool="app"} 1' in metrics
    assert caddy.log().count('"endpoint refused"') == 1
    assert f"{CADDY_POD} at port {cluster.port} reaches this Caddy itself" in caddy.log()
    answer = httpx.get(f"{caddy.base_url}/config/", timeout=10).text
    assert '"apps"' not in answer, answer[:300]


# --- identity and bad input -------------------------------------------------------------------


def test_a_token_that_may_only_read_endpointslices_in_one_namespace_is_enough(
    plane: ControlPlane, clusters: Any
) -> None:
    # Every test above watched with this identity; here: it can do nothing else.
    cluster = clusters(pods=0)
    with plane.client(CADDY_TOKEN) as client:
        assert client.get(f"/apis/discovery.k8s.io/v1/namespaces/{cluster.namespace}/endpointslices").status_code == 200
        for method, path in (
            ("GET", f"/api/v1/namespaces/{cluster.namespace}/pods"),
            ("GET", f"/api/v1/namespaces/{cluster.namespace}/secrets"),
            ("GET", "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"),
            ("GET", "/apis/discovery.k8s.io/v1/endpointslices"),
            ("POST", f"/apis/discovery.k8s.io/v1/namespaces/{cluster.namespace}/endpointslices"),
            ("DELETE", f"/apis/discovery.k8s.io/v1/namespaces/{cluster.namespace}/endpointslices/app-abcde"),
        ):
            assert client.request(method, path, json={}).status_code == 403, (method, path)


def test_a_namespace_caddy_may_not_read_is_logged_and_nothing_joins(
    caddies: Caddies, plane: ControlPlane, clusters: Any
) -> None:
    cluster = clusters(pods=1)
    forbidden = f"t-{uuid.uuid4().hex[:10]}"
    plane.request("POST", "/api/v1/namespaces", {"metadata": {"name": forbidden}})
    EndpointSlice(plane, forbidden, "app", "app-xyz", cluster.port).write(cluster.pods)
    caddy = kubernetes_caddy(caddies, plane, forbidden)
    assert wait_until(
        lambda: "watching EndpointSlices failed" in caddy.log() and "forbidden" in caddy.log(), timeout=20
    ), caddy.log()[-3000:]
    assert members(caddy) == {}
    assert not watching(caddy)
    assert httpx.get(f"{caddy.base_url}/whoami", timeout=5).status_code == 503  # no upstream


@pytest.mark.parametrize(
    ("options", "says"),
    [
        (
            "kubernetes Shop/app http\n\t\t\tkubeconfig {kubeconfig}",
            r"kubernetes: namespace \"Shop\": a lowercase RFC 1123 label",
        ),
        ("kubernetes shop/app http\n\t\t\tkubeconfig /nonexistent/kubeconfig", "/nonexistent/kubeconfig"),
        ("kubernetes shop/app", "outside a cluster, give a kubeconfig file"),
        ("kubernetes shop", "expected <namespace>/<service>"),
    ],
)
def test_a_bad_kubernetes_source_is_refused_at_load_with_the_reason(
    plane: ControlPlane, tmp_path: Path, options: str, says: str
) -> None:
    caddyfile = tmp_path / "Caddyfile"
    options = options.replace("{kubeconfig}", str(plane.caddy_kubeconfig()))
    caddyfile.write_text(
        "{\n\tadmin off\n}\nhttp://127.0.0.1:1 {\n\treverse_proxy {\n\t\tdynamic beacon app {\n\t\t\t"
        + options
        + "\n\t\t}\n\t}\n}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    result = subprocess.run(
        [str(MODULE_CADDY), "validate", "--config", str(caddyfile)], capture_output=True, text=True, timeout=30, env=env
    )
    assert result.returncode != 0
    assert says in result.stderr, result.stderr[-2000:]
