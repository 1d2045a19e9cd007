"""The ASGI app (Starlette): routes, body limit, and OpenAI-format errors for everything."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from llm_gateway.errors import GatewayError, model_not_found
from llm_gateway.request import parse_chat_request
from llm_gateway.service import aggregate, open_stream, sse_events

if TYPE_CHECKING:
    from llm_gateway.service import Invoker
    from llm_gateway.settings import Settings

logger = logging.getLogger(__name__)

READINESS_PATH = "/healthz"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than ``limit`` bytes without reading them all."""
    too_large = GatewayError(413, f"Request body exceeds {limit} bytes.", code="request_too_large")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _error_response(error: GatewayError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def create_app(settings: Settings, invoker: Invoker) -> Starlette:
    """The gateway app for ``settings``, reaching backends through ``invoker``."""
    routes = settings.routes

    async def chat_completions(request: Request) -> Response:
        raw = await read_body(request, settings.max_request_bytes)
        chat = parse_chat_request(raw)
        route = routes.get(chat.model)
        if route is None:
            raise model_not_found(chat.model)
        stream = await open_stream(chat, route, invoker)
        headers = {"x-llm-backend": stream.backend.name}
        if chat.stream:
            return StreamingResponse(
                sse_events(stream, include_usage=chat.include_usage),
                media_type="text/event-stream",
                headers={**SSE_HEADERS, **headers},
            )
        return JSONResponse(await aggregate(stream), headers=headers)

    async def list_models(_: Request) -> Response:
        data = [
            {"id": route.model, "object": "model", "created": 0, "owned_by": "llm-serving"}
            for route in routes.routes
        ]
        return JSONResponse({"object": "list", "data": data})

    async def ready(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def gateway_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, GatewayError)
        return _error_response(exc)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        message = f"Invalid URL ({request.method} {request.url.path})"
        if exc.status_code == 405:
            message = f"Method {request.method} is not allowed on {request.url.path}"
        return _error_response(GatewayError(exc.status_code, message))

    async def unexpected_error(_: Request, exc: Exception) -> Response:
        logger.exception("unhandled error", exc_info=exc)
        return _error_response(
            GatewayError(500, "The gateway failed to process the request.", type="server_error")
        )

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", list_models, methods=["GET"]),
            Route(READINESS_PATH, ready, methods=["GET"]),
        ],
        exception_handlers={
            GatewayError: gateway_error,
            HTTPException: http_error,
            Exception: unexpected_error,
        },
    )
