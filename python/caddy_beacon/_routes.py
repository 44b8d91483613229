"""The `http_route` label: the route template the framework already matched, never the raw
path and never a second matching pass. The rules (the common cases run in Rust, see
``route_label.rs``; the fallback for scopes without a route is here):

Starlette and FastAPI leave the matched route in ``scope["route"]``. Around it:
- routers included with a prefix: FastAPI keeps the full template in its effective route
  context (``scope["fastapi"]["effective_route_context"]``) on versions that do not copy routes;
- mounted apps: each mount extends ``scope["root_path"]``, so the prefix added below the
  middleware is the part of ``root_path`` that was not there when the request arrived;
- a mount whose app set no route itself (static files, a plain ASGI app) is labelled
  ``<mount>/{path}``; FastAPI routers that leave ``scope["route"]`` unset for mounts and plain
  Starlette routes are covered through ``scope["endpoint"]``: a leaf app below a mount, or the one
  route of the router whose endpoint it is (an identity lookup, cached; no path matching).
A mount whose own path has parameters (``/tenants/{id}``) contributes its matched text; the
series cap bounds what that can add.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

_MISSING = object()
# endpoint -> template of the single top-level route serving it (None: none or ambiguous).
_endpoint_templates: dict[Any, str | None] = {}


def _mount_prefix(scope: MutableMapping[str, Any], outer_root_path: str) -> str:
    root_path: str = scope.get("root_path", "")
    if root_path == outer_root_path:
        return ""
    return root_path[len(outer_root_path) :] if root_path.startswith(outer_root_path) else root_path


def _template_from_endpoint(scope: MutableMapping[str, Any], outer_root_path: str) -> str | None:
    endpoint = scope.get("endpoint")
    if endpoint is None:
        return None
    prefix = _mount_prefix(scope, outer_root_path)
    if prefix:
        # Below a mount: a leaf app (no routes of its own) served it; an app with routes that
        # got here matched none of them.
        return None if hasattr(endpoint, "routes") else prefix + "/{path}"
    try:
        cached = _endpoint_templates.get(endpoint, _MISSING)
    except TypeError:  # unhashable endpoint
        return None
    if cached is _MISSING:
        router = scope.get("router")
        candidates = [r for r in getattr(router, "routes", ()) if getattr(r, "endpoint", None) is endpoint]
        template = getattr(candidates[0], "path_format", None) if len(candidates) == 1 else None
        cached = template if isinstance(template, str) else None
        if len(_endpoint_templates) < 10_000:
            _endpoint_templates[endpoint] = cached
    return cached  # type: ignore[return-value]


def route_template(scope: MutableMapping[str, Any], outer_root_path: str) -> str | None:
    """The template of a request whose scope holds no ``route``, or None when none matched.

    Requests with ``scope["route"]`` are labelled in Rust (``rust/beacon-py/src/route_label.rs``),
    by the rules of this module's docstring; only the rarer cases without one come here.
    """
    return _template_from_endpoint(scope, outer_root_path)
