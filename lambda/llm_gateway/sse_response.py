"""The streamed response: ``text/event-stream`` events sent as they come, stopped when the
client disconnects.

Starlette's ``StreamingResponse`` does the same with an anyio task group per response (one
task streaming, one listening for the disconnect, both under cancel scopes); this response
streams from the request's own task and only the listener is a task, which cancels the
streaming through one anyio ``CancelScope``: a scope (not ``Task.cancel``) so that the
shielded scope in ``service._EndOnce`` still settles the tokens of a disconnected client. Its
last event, ``data: [DONE]``, is sent together with the end of the body (one write less).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import anyio
from starlette.responses import Response

from llm_gateway.chunks import DONE

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Mapping

    from starlette.types import Receive, Scope, Send


async def _disconnected(receive: Receive) -> None:
    """Returns once the server reports ``http.disconnect`` (the client left, or the response
    is complete)."""
    while (await receive())["type"] != "http.disconnect":
        pass


class EventStreamResponse(Response):
    """A 200 ``text/event-stream`` response whose body is ``events``, one body message each."""

    media_type = "text/event-stream"

    def __init__(self, events: AsyncGenerator[bytes, None], *, headers: Mapping[str, str]) -> None:
        self.events = events
        self.status_code = 200
        self.background = None
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        complete = False
        with anyio.CancelScope() as streaming:

            def on_disconnect(listener: asyncio.Task[None]) -> None:
                if listener.cancelled() or listener.exception() is not None or complete:
                    return
                streaming.cancel()

            listener = asyncio.get_running_loop().create_task(_disconnected(receive))
            listener.add_done_callback(on_disconnect)
            try:
                await send({"type": "http.response.start", "status": 200,
                            "headers": self.raw_headers})  # fmt: skip
                async with contextlib.aclosing(self.events) as events:
                    async for event in events:
                        last = event.endswith(DONE)
                        complete = last
                        await send({"type": "http.response.body", "body": event,
                                    "more_body": not last})  # fmt: skip
                        if last:
                            break
                    else:
                        complete = True
                        await send({"type": "http.response.body", "body": b"",
                                    "more_body": False})  # fmt: skip
            finally:
                listener.cancel()
