"""The floor under the gateway, for ``bench.gateway --app floor``: uvicorn started as ``run.sh``
starts it and ``SageMakerInvoker`` (the upstream client), and nothing else. The payload bytes
are relayed as they come (no decoding, no OpenAI chunks, no telemetry), the response head with
the first part, as the gateway sends it. What the gateway adds beyond this is its own request
path (routing, validation, adapters, chunks, telemetry, Starlette).
"""

from __future__ import annotations

import json
import os
from typing import Any

from llm_gateway.settings import Settings
from llm_gateway.upstream import SageMakerInvoker

settings = Settings.from_env(os.environ)
invoker = SageMakerInvoker.from_settings(settings)
backends = {route.model: route.backends[0] for route in settings.routes.routes}
_HEAD = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["path"] == "/healthz":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    request = json.loads(body)
    upstream = {"messages": request["messages"], "stream": True, "max_tokens": 64,
                "stream_options": {"include_usage": True}}  # fmt: skip
    stream = invoker.open(backends[request["model"]], json.dumps(upstream).encode())
    started = False
    try:
        async for part in stream:
            if not started:
                await send({"type": "http.response.start", "status": 200, "headers": _HEAD})
                started = True
            await send({"type": "http.response.body", "body": part, "more_body": True})
    finally:
        stream.close()
    if not started:
        await send({"type": "http.response.start", "status": 502, "headers": []})
    await send({"type": "http.response.body", "body": b"", "more_body": False})
