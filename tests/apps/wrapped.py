"""A plain Starlette app wrapped directly, `app = BeaconMiddleware(app)`, the way apps that are not
FastAPI (or that wrap the whole stack) use the middleware: the server must see an ASGI 3 app."""

from caddy_beacon import BeaconMiddleware, request_id
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"hello {request.path_params['name']} ({request_id()})")


app = BeaconMiddleware(Starlette(routes=[Route("/hello/{name}", hello)]), service_name="wrapped")
