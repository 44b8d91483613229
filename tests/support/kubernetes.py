"""A real Kubernetes control plane for the tests: etcd (Debian's etcd-server) and kube-apiserver
(built from the Go module proxy by `make kubernetes`), on free 127.0.0.1 ports, with token
authentication and RBAC. There is no kubelet and no controller: the tests write the
EndpointSlices the EndpointSlice controller would write, for "pods" that are real processes.

The API server refuses loopback addresses in EndpointSlices, so the pods cannot live on
127.0.0.x: the tests run in a network namespace of their own (network_namespace()), where
POD_NETWORK is local the way 127.0.0.0/8 is, and nothing is reachable from outside it.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import netns
from tests.support.ports import free_port
from tests.support.servers import ROOT
from tests.support.waiting import wait_until

KUBE_BIN = ROOT / "target" / "kubernetes"
KUBE_APISERVER = KUBE_BIN / "kube-apiserver"
KUBECTL = KUBE_BIN / "kubectl"
ETCD = ROOT / ".venv" / "bin" / "etcd"

ADMIN_TOKEN = "admin-token-for-tests"
# The identity Caddy watches with: no group, so it can do only what a test's Role grants.
CADDY_USER = "caddy-beacon"
CADDY_TOKEN = "caddy-token-for-tests"


# The pods' addresses, local inside the test's network namespace.
POD_NETWORK = "10.244.0.0/16"


# Caddy's own pod address: an address of this test host's interfaces (the other addresses of
# POD_NETWORK are local through a route, as no real pod's are).
CADDY_POD = "10.244.255.1"


@contextmanager
def network_namespace() -> Iterator[None]:
    """A network namespace (tests.netns) where POD_NETWORK is local the way 127.0.0.0/8 is, and
    CADDY_POD is this host's own address."""
    with netns.network_namespace(addresses=[f"{CADDY_POD}/32"], local_routes=[POD_NETWORK]):
        yield


def _start(command: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(process: subprocess.Popen[bytes], grace: float = 2.0) -> None:
    """SIGTERM, then SIGKILL after `grace` (kube-apiserver ignores SIGTERM for a while)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@dataclass
class ControlPlane:
    workdir: Path
    etcd_port: int = field(default_factory=free_port)
    port: int = field(default_factory=free_port)
    etcd: subprocess.Popen[bytes] | None = None
    apiserver: subprocess.Popen[bytes] | None = None

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca(self) -> Path:
        """The API server's self-signed certificate (with its CA), written on first start."""
        return self.workdir / "certs" / "apiserver.crt"

    def start(self) -> None:
        for binary, hint in (
            (KUBE_APISERVER, "make kubernetes"),
            (ETCD, "make kubernetes"),
            (KUBECTL, "make kubernetes"),
        ):
            if not binary.exists():
                pytest.fail(f"{binary} is missing: `{hint}` (make test does)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        key, public = self.workdir / "sa.key", self.workdir / "sa.pub"
        subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
        subprocess.run(
            ["openssl", "rsa", "-in", str(key), "-pubout", "-out", str(public)], check=True, capture_output=True
        )
        (self.workdir / "tokens.csv").write_text(
            f'{ADMIN_TOKEN},admin,1,"system:masters"\n{CADDY_TOKEN},{CADDY_USER},2\n'
        )
        self.etcd = _start(
            [
                str(ETCD), "--data-dir", str(self.workdir / "etcd"),
                "--listen-client-urls", f"http://127.0.0.1:{self.etcd_port}",
                "--advertise-client-urls", f"http://127.0.0.1:{self.etcd_port}",
                "--listen-peer-urls", f"http://127.0.0.1:{free_port()}",
            ],
            self.workdir / "etcd.log",
        )  # fmt: skip
        self.start_apiserver()
        self.write_kubeconfig(self.workdir / "admin.kubeconfig", ADMIN_TOKEN)

    def start_apiserver(self) -> None:
        """Starts kube-apiserver (again, after stop_apiserver: same port, etcd, certificates)."""
        self.apiserver = _start(
            [
                str(KUBE_APISERVER),
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
                f"--secure-port={self.port}", f"--cert-dir={self.workdir / 'certs'}",
                "--endpoint-reconciler-type=none",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={self.workdir / 'sa.pub'}",
                f"--service-account-signing-key-file={self.workdir / 'sa.key'}",
                f"--token-auth-file={self.workdir / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                "--service-cluster-ip-range=10.96.0.0/12",
                # etcd 3.4 answers a watch from "any" resourceVersion with "too large resource
                # version" when the watch cache is on.
                "--watch-cache=false",
            ],
            self.workdir / "kube-apiserver.log",
        )  # fmt: skip

        def ready() -> bool:
            assert self.apiserver is not None
            if self.apiserver.poll() is not None:
                raise RuntimeError(f"kube-apiserver exited with {self.apiserver.returncode}:\n{self.log()}")
            try:
                return (
                    httpx.get(f"{self.server}/readyz", headers=self._admin, verify=False, timeout=2).status_code == 200
                )
            except httpx.TransportError:
                return False

        if not wait_until(ready, timeout=60, interval=0.2):
            self.stop()
            raise RuntimeError(f"kube-apiserver did not become ready:\n{self.log()}")

    def stop_apiserver(self) -> None:
        """Kills the API server at once (SIGKILL), as a crashed or evicted one."""
        assert self.apiserver is not None
        self.apiserver.kill()
        self.apiserver.wait(timeout=10)

    def freeze_apiserver(self) -> None:
        """Stops the API server without closing anything (SIGSTOP): its connections stay open
        and silent, as a hung or partitioned server's do."""
        assert self.apiserver is not None
        self.apiserver.send_signal(signal.SIGSTOP)

    def thaw_apiserver(self) -> None:
        assert self.apiserver is not None
        self.apiserver.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        for process in (self.apiserver, self.etcd):
            if process is not None:
                _stop(process)

    def log(self) -> str:
        return (self.workdir / "kube-apiserver.log").read_text(errors="replace")[-4000:]

    @property
    def _admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    def write_kubeconfig(self, path: Path, token: str) -> Path:
        path.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters:\n- name: test\n  cluster:\n    server: {self.server}\n    certificate-authority: {self.ca}\n"
            f"users:\n- name: user\n  user:\n    token: {token}\n"
            "contexts:\n- name: test\n  context:\n    cluster: test\n    user: user\n"
            "current-context: test\n"
        )
        return path

    def caddy_kubeconfig(self) -> Path:
        """A kubeconfig for Caddy's identity, which holds only what a namespace's Role grants."""
        return self.write_kubeconfig(self.workdir / "caddy.kubeconfig", CADDY_TOKEN)

    def client(self, token: str = ADMIN_TOKEN) -> httpx.Client:
        return httpx.Client(
            base_url=self.server, headers={"Authorization": f"Bearer {token}"}, verify=str(self.ca), timeout=10
        )

    def kubectl(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(KUBECTL), "--kubeconfig", str(self.workdir / "admin.kubeconfig"), *args],
            input=input, capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    def request(
        self, method: str, path: str, body: dict[str, Any] | None = None, expect: tuple[int, ...] = (200, 201)
    ) -> dict[str, Any]:
        with self.client() as client:
            response = client.request(method, path, json=body)
        assert response.status_code in expect, f"{method} {path}: {response.status_code} {response.text}"
        return response.json()  # type: ignore[no-any-return]

    def namespace_for_caddy(self, name: str, service: str, port_name: str = "http", port: int = 8000) -> None:
        """A fresh namespace with a Service, and the Role the manifests give Caddy (get, list,
        watch on endpointslices) bound to Caddy's identity. Namespaces are never reused: with no
        controllers, a deleted one stays Terminating."""
        self.request("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
        self.request("POST", f"/api/v1/namespaces/{name}/services", {
            "metadata": {"name": service},
            "spec": {"selector": {"app": service}, "ports": [{"name": port_name, "port": port, "targetPort": port}]},
        })  # fmt: skip
        base = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{name}"
        self.request("POST", f"{base}/roles", {
            "metadata": {"name": "caddy-endpointslices"},
            "rules": [{"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]}],
        })  # fmt: skip
        self.request("POST", f"{base}/rolebindings", {
            "metadata": {"name": "caddy-endpointslices"},
            "subjects": [{"kind": "User", "name": CADDY_USER, "apiGroup": "rbac.authorization.k8s.io"}],
            "roleRef": {"kind": "Role", "name": "caddy-endpointslices", "apiGroup": "rbac.authorization.k8s.io"},
        })  # fmt: skip


@dataclass
class Pod:
    """What the EndpointSlice controller knows of one pod: its address and conditions."""

    ip: str
    ready: bool = True
    serving: bool = True
    terminating: bool = False

    def endpoint(self) -> dict[str, Any]:
        return {
            "addresses": [self.ip],
            "conditions": {"ready": self.ready, "serving": self.serving, "terminating": self.terminating},
        }


class EndpointSlice:
    """One EndpointSlice of a Service, written the way the EndpointSlice controller writes it
    (labels kubernetes.io/service-name and endpointslice.kubernetes.io/managed-by)."""

    def __init__(
        self, plane: ControlPlane, namespace: str, service: str, name: str, port: int, port_name: str = "http"
    ) -> None:
        self.plane, self.namespace, self.service, self.name = plane, namespace, service, name
        self.port, self.port_name = port, port_name
        self.path = f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"
        self.created = False

    def write(self, pods: list[Pod]) -> None:
        body = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": self.name,
                "labels": {
                    "kubernetes.io/service-name": self.service,
                    "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                },
            },
            "addressType": "IPv4",
            "ports": [{"name": self.port_name, "port": self.port, "protocol": "TCP"}],
            "endpoints": [pod.endpoint() for pod in pods],
        }
        if self.created:
            current = self.plane.request("GET", f"{self.path}/{self.name}")
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]  # type: ignore[index]
            self.plane.request("PUT", f"{self.path}/{self.name}", body)
        else:
            self.plane.request("POST", self.path, body)
            self.created = True

    def delete(self) -> None:
        self.plane.request("DELETE", f"{self.path}/{self.name}")
        self.created = False
