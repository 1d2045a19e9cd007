"""The request path as plain functions: open a backend stream, then relay or aggregate it.

Nothing is sent to the client until the backend has produced its first meaningful delta, so
every failure before that point becomes an ordinary HTTP error (and, later, a fallback);
after it, failures end the stream with an in-band OpenAI error event.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llm_gateway.adapters import Delta, InBandError, StreamAdapter, Usage, adapter_for
from llm_gateway.chunks import DONE, ChunkWriter, completion
from llm_gateway.decoder import LineDecoder, event_payload
from llm_gateway.errors import GatewayError
from llm_gateway.upstream import UpstreamError

if TYPE_CHECKING:
    from typing import Any, Protocol

    from llm_gateway.request import ChatRequest
    from llm_gateway.routes import Backend, Route

    class Stream(Protocol):
        def __aiter__(self) -> AsyncIterator[bytes]: ...
        def close(self) -> None: ...

    class Invoker(Protocol):
        def open(self, backend: Backend, body: bytes) -> Stream: ...


logger = logging.getLogger(__name__)


def _model_failed() -> GatewayError:
    return GatewayError(
        502, "The model failed while generating.", type="server_error", code="model_error"
    )


def _incomplete() -> GatewayError:
    return GatewayError(
        502, "The model stream ended before the response was complete.", type="server_error",
        code="incomplete_stream",
    )  # fmt: skip


@dataclass
class OpenStream:
    """A backend stream that has produced its first delta(s); nothing sent to the client yet."""

    backend: Backend
    first: list[Delta]
    rest: AsyncIterator[Delta]
    upstream: Stream


async def deltas(upstream: AsyncIterable[bytes], adapter: StreamAdapter) -> AsyncIterator[Delta]:
    """Bytes → lines → payloads → deltas, across arbitrary part boundaries."""
    decoder = LineDecoder()
    async for part in upstream:
        for line in decoder.feed(part):
            payload = event_payload(line)
            if payload is not None:
                for delta in adapter.parse(payload):
                    yield delta
    for line in decoder.flush():
        payload = event_payload(line)
        if payload is not None:
            for delta in adapter.parse(payload):
                yield delta


def _meaningful(delta: Delta) -> bool:
    return bool(delta.content or delta.reasoning or delta.finish_reason or delta.usage)


def _in_band(exc: InBandError, backend: Backend) -> GatewayError:
    logger.warning("in-band error from %s: %s", backend.name, exc)
    return _model_failed()


async def open_stream(request: ChatRequest, route: Route, invoker: Invoker) -> OpenStream:
    """Invoke the route's backend and wait for its first meaningful delta.

    Raises :class:`GatewayError` for any failure before that delta.
    """
    backend = route.backends[0]
    adapter = adapter_for(backend.format)
    upstream = invoker.open(backend, adapter.request_body(request, backend))
    rest = deltas(upstream, adapter)
    first: list[Delta] = []
    try:
        async for delta in rest:
            first.append(delta)
            if _meaningful(delta):
                break
    except UpstreamError as failure:
        upstream.close()
        logger.warning("backend %s failed before the first byte: %s", backend.name, failure)
        raise failure.to_gateway_error() from None
    except InBandError as exc:
        upstream.close()
        raise _in_band(exc, backend) from None
    return OpenStream(backend=backend, first=first, rest=rest, upstream=upstream)


async def _all(stream: OpenStream) -> AsyncIterator[Delta]:
    for delta in stream.first:
        yield delta
    async for delta in stream.rest:
        yield delta


async def sse_events(stream: OpenStream, *, include_usage: bool) -> AsyncIterator[bytes]:
    """The client's SSE body: chunks as they arrive, usage if asked, then ``[DONE]``."""
    writer = ChunkWriter(stream.backend.name)
    usage: Usage | None = None
    finished = False
    try:
        async for delta in _all(stream):
            if delta.usage is not None:
                usage = delta.usage
            elif delta.content or delta.reasoning or delta.finish_reason:
                finished = finished or delta.finish_reason is not None
                yield writer.delta(delta)
        if not finished:
            yield writer.error(_incomplete())
            return
        if include_usage and usage is not None:
            yield writer.usage(usage)
        yield DONE
    except UpstreamError as failure:
        logger.warning("backend %s failed mid-stream: %s", stream.backend.name, failure)
        yield writer.error(failure.to_gateway_error())
    except InBandError as exc:
        yield writer.error(_in_band(exc, stream.backend))
    finally:
        stream.upstream.close()


async def aggregate(stream: OpenStream) -> dict[str, Any]:
    """A non-streaming ``chat.completion`` built from the same stream."""
    content: list[str] = []
    reasoning: list[str] = []
    finish: str | None = None
    usage: Usage | None = None
    try:
        async for delta in _all(stream):
            content.append(delta.content)
            reasoning.append(delta.reasoning)
            finish = delta.finish_reason or finish
            usage = delta.usage or usage
    except UpstreamError as failure:
        logger.warning("backend %s failed mid-response: %s", stream.backend.name, failure)
        raise failure.to_gateway_error() from None
    except InBandError as exc:
        raise _in_band(exc, stream.backend) from None
    finally:
        stream.upstream.close()
    if finish is None:
        raise _incomplete()
    return completion(
        model=stream.backend.name,
        content="".join(content),
        reasoning="".join(reasoning),
        finish_reason=finish,
        usage=usage,
    )
