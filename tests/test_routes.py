"""Route labels come from what the framework matched: templates, never raw paths."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from tests.support.servers import Server

DURATION_COUNT = "http_server_request_duration_seconds_count"


def _routes(server: Server) -> dict[str, float]:
    return {
        labels["http_route"]: value
        for name, labels, value in server.metrics()
        if name == DURATION_COUNT and labels["http_response_status_code"] in ("200", "404")
    }


def test_path_params_prefixes_and_mounts_are_labelled_by_template(shared_server: Server) -> None:
    expected = {
        "/items/7": "/items/{item_id}",
        "/items/8": "/items/{item_id}",
        "/api/v1/users/3/orders/abc": "/api/v1/users/{user_id}/orders/{order_id}",
        "/sub/things/42": "/sub/things/{thing_id}",
        "/plain/hello/world": "/plain/hello/{name}",
        "/static/hello.txt": "/static/{path}",
        "/legacy/x1": "/legacy/{code}",
        # The same route objects under two prefixes (labels are remembered per route object).
        "/one/shared/1": "/one/shared/{n}",
        "/two/shared/2": "/two/shared/{n}",
        "/m1/t/x": "/m1/t/{name}",
        "/m2/t/y": "/m2/t/{name}",
    }
    for _ in range(2):
        for path in expected:
            response = shared_server.get(path)
            assert response.status_code == 200, (path, response.text)

    routes = _routes(shared_server)
    for path, template in expected.items():
        assert template in routes, f"{path} not labelled {template}: {sorted(routes)}"
        assert path not in routes or path == template
    assert routes["/items/{item_id}"] >= 2
    for label in routes:
        assert "7" not in label and "abc" not in label and "42" not in label, label


def test_unmatched_paths_collapse_into_one_series(shared_server: Server) -> None:
    paths = [f"/scanner/{uuid.uuid4()}" for _ in range(50)] + ["/wp-login.php", "/.env", "/sub/nope"]
    before = shared_server.value(DURATION_COUNT, http_route="__unmatched__", http_response_status_code="404") or 0
    for path in paths:
        assert shared_server.get(path).status_code == 404
    after = shared_server.value(DURATION_COUNT, http_route="__unmatched__", http_response_status_code="404")
    assert after == before + len(paths)
    labels = {labels["http_route"] for name, labels, _ in shared_server.metrics() if name == DURATION_COUNT}
    assert not any("scanner" in label or "wp-login" in label for label in labels), labels


def test_odd_methods_do_not_create_series(shared_server: Server) -> None:
    for method in ["PROPFIND", "BREW", "get"]:
        shared_server.client.request(method, "/items/1")
    methods = {labels["http_request_method"] for name, labels, _ in shared_server.metrics() if name == DURATION_COUNT}
    assert "_OTHER" in methods
    assert not methods & {"PROPFIND", "BREW", "get"}


def test_root_path_keeps_endpoints_and_templates(start: Callable[..., Server]) -> None:
    server = start(args=("--root-path", "/app"))
    assert server.get("/ready").status_code == 200
    assert server.get("/items/3").status_code == 200
    assert server.get("/sub/things/4").status_code == 200
    routes = _routes(server)
    assert "/items/{item_id}" in routes and "/sub/things/{thing_id}" in routes, routes


def test_endpoints_answer_get_and_head_only(shared_server: Server) -> None:
    for path in ["/health", "/ready", "/metrics"]:
        assert shared_server.client.head(path).status_code == 200
        assert shared_server.client.head(path).content == b""
        refused = shared_server.client.post(path)
        assert refused.status_code == 405 and refused.headers["allow"] == "GET, HEAD"
