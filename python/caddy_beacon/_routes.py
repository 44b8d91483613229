"""The `http_route` label: the route template the framework already matched, never the raw
path and never a second matching pass.

Starlette and FastAPI leave the matched route in ``scope["route"]``. Around it:
- routers included with a prefix: FastAPI keeps the full template in its effective route
  context (``scope["fastapi"]["effective_route_context"]``) on versions that do not copy routes;
- mounted apps: each mount extends ``scope["root_path"]``, so the prefix added below the
  middleware is the part of ``root_path`` that was not there when the request arrived;
- a mount whose app set no route itself (static files, a plain ASGI app) is labelled
  ``<mount>/{path}``.
A mount whose own path has parameters (``/tenants/{id}``) contributes its matched text; the
series cap bounds what that can add.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any


def route_template(scope: MutableMapping[str, Any], outer_root_path: str) -> str | None:
    """The template of the route that handled the request, or None when none matched."""
    route = scope.get("route")
    if route is None:
        return None

    template: str | None = None
    fastapi_scope = scope.get("fastapi")
    if type(fastapi_scope) is dict:
        context = fastapi_scope.get("effective_route_context")
        if context is not None and getattr(context, "original_route", None) is route:
            template = getattr(context, "path_format", None)
    if template is None:
        template = getattr(route, "path_format", None) or getattr(route, "path", None)
        if not isinstance(template, str):
            return None

    root_path = scope.get("root_path", "")
    if root_path == outer_root_path:
        return template
    prefix = root_path[len(outer_root_path):] if root_path.startswith(outer_root_path) else root_path
    if hasattr(route, "routes") and template.endswith("/{path}"):
        # The route is the mount itself: its prefix is already the last part of root_path.
        return prefix + "/{path}"
    return prefix + template
