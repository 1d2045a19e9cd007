"""The request path as plain functions: open a backend stream (falling back between backends
until one produces its first delta), then relay or aggregate it.

Nothing is sent to the client until a backend has produced its first meaningful delta, so
every failure before that point is either a fallback to the next backend or an ordinary HTTP
error; after it, failures end the stream with an in-band OpenAI error event and no other
backend's text is ever spliced in.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    Sequence,
)
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from llm_gateway.adapters import Delta, InBandError, StreamAdapter, Usage, adapter_for
from llm_gateway.chunks import DONE, ChunkWriter, completion, merge_tool_calls
from llm_gateway.decoder import LineDecoder, event_payload
from llm_gateway.errors import GatewayError
from llm_gateway.upstream_errors import NO_CAPACITY, UpstreamError

if TYPE_CHECKING:
    from typing import Protocol

    from llm_gateway.contract import Backend
    from llm_gateway.request import ChatRequest
    from llm_gateway.routing import BackendHealth

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
class Outcome:
    """What a finished (or abandoned) response produced: for settling token reservations."""

    usage: Usage | None = None
    text_deltas: int = 0
    error: GatewayError | None = None


@dataclass
class OpenStream:
    """A backend stream that has produced its first delta(s); nothing sent to the client yet."""

    backend: Backend
    first: list[Delta]
    rest: AsyncIterator[list[Delta]]
    """The deltas after ``first``, in batches (those that arrived together)."""
    upstream: Stream
    attempts: int
    upstream_ttfb_s: float
    failed: list[str] = field(default_factory=list)


async def delta_batches(
    upstream: AsyncIterable[bytes], adapter: StreamAdapter
) -> AsyncIterator[list[Delta]]:
    """Bytes → lines → payloads → deltas, across arbitrary part boundaries: one batch per
    upstream part that completes any, so the deltas that arrived together are written to the
    client together (one socket write instead of one per chunk)."""
    decoder = LineDecoder()
    async for part in upstream:
        for batch in _batch(decoder.feed(part), adapter):
            yield batch
    for batch in _batch(decoder.flush(), adapter):
        yield batch


def _batch(lines: list[str], adapter: StreamAdapter) -> Iterator[list[Delta]]:
    """The deltas of ``lines`` as one batch (none if empty); an in-band error is raised after
    the deltas that preceded it."""
    batch: list[Delta] = []
    try:
        for line in lines:
            payload = event_payload(line)
            if payload is not None:
                batch.extend(adapter.parse(payload))
    except InBandError:
        if batch:
            yield batch
        raise
    if batch:
        yield batch


_NOT_SUPPORTED = frozenset({"unsupported_parameter", "unsupported_value"})


def _meaningful(delta: Delta) -> bool:
    return bool(delta.generated or delta.finish_reason or delta.usage)


def _capable(request: ChatRequest, order: Sequence[Backend]) -> list[Backend]:
    """The backends of ``order`` that can serve ``request`` (e.g. ``tools`` need an
    OpenAI-format backend, images one with ``image_input``); if there is none, a refusal (a
    400) is raised: the first from a backend that has the feature but not enough of it (too
    many images), which says more than "not supported", else the first."""
    capable: list[Backend] = []
    refusals: list[GatewayError] = []
    for backend in order:
        error = adapter_for(backend.format).unsupported(request, backend)
        if error is None:
            capable.append(backend)
        else:
            refusals.append(error)
    if not capable and refusals:
        raise next((e for e in refusals if e.code not in _NOT_SUPPORTED), refusals[0])
    return capable


async def _prime(rest: AsyncIterator[list[Delta]]) -> list[Delta]:
    """The batches up to and including the first with a meaningful delta, as one."""
    first: list[Delta] = []
    async for batch in rest:
        first.extend(batch)
        if any(map(_meaningful, batch)):
            break
    return first


async def _attempt(
    request: ChatRequest, backend: Backend, invoker: Invoker, max_tokens: int, deadline_s: float
) -> OpenStream:
    adapter = adapter_for(backend.format)
    started = time.perf_counter()
    upstream = invoker.open(backend, adapter.request_body(request, backend, max_tokens))
    rest = delta_batches(upstream, adapter)
    try:
        async with asyncio.timeout(deadline_s):
            first = await _prime(rest)
    except TimeoutError:
        upstream.close()
        detail = f"no first byte within {deadline_s:g} s"
        raise UpstreamError("timeout", detail, retryable=True) from None
    except BaseException:
        upstream.close()
        raise
    return OpenStream(
        backend=backend, first=first, rest=rest, upstream=upstream, attempts=1,
        upstream_ttfb_s=time.perf_counter() - started,
    )  # fmt: skip


async def open_stream(
    request: ChatRequest,
    order: Sequence[Backend],
    invoker: Invoker,
    *,
    max_tokens: Callable[[Backend], int],
    first_byte_timeout_s: float,
    health: BackendHealth | None = None,
    failed: list[str] | None = None,
    on_no_capacity: Callable[[Backend], None] | None = None,
) -> OpenStream:
    """Try ``order`` until a backend produces its first meaningful delta.

    Backend faults (5xx, unavailable, throttled, internal, connection, in-band error, no first
    delta within the deadline) move to the next backend; a rejection of the request itself
    (the model's 4xx) does not. Raises :class:`GatewayError` when no attempt succeeds.
    The names of failed backends are appended to ``failed``; ``on_no_capacity`` is told of
    each inference component found without copies (a fallback like any other fault; when it
    was the last attempt, the 503 carries the backend's ``Retry-After``). Backends whose
    format cannot serve the request are skipped, never invoked; when no backend can, the
    request is refused with a 400 naming the parameter (:func:`_capable`).
    """
    failed = [] if failed is None else failed
    last: GatewayError = _model_failed()
    for number, backend in enumerate(_capable(request, order), start=1):
        try:
            stream = await _attempt(
                request, backend, invoker, max_tokens(backend), first_byte_timeout_s
            )
        except UpstreamError as failure:
            logger.warning("attempt %d on %s failed: %s", number, backend.name, failure)
            if not failure.retryable:
                raise failure.to_gateway_error() from None
            if failure.kind == NO_CAPACITY and on_no_capacity is not None:
                on_no_capacity(backend)
            last = failure.to_gateway_error(retry_after_s=backend.retry_after_s)
        except InBandError as exc:
            logger.warning("attempt %d on %s failed in-band: %s", number, backend.name, exc)
            last = _model_failed()
        else:
            if health is not None:
                health.record_success(backend)
            stream.attempts = number
            stream.failed = failed
            return stream
        failed.append(backend.name)
        if health is not None:
            health.record_failure(backend)
    raise last


async def _all(stream: OpenStream) -> AsyncGenerator[Delta, None]:
    for delta in stream.first:
        yield delta
    async for batch in stream.rest:
        for delta in batch:
            yield delta


async def _batches(stream: OpenStream) -> AsyncGenerator[list[Delta], None]:
    if stream.first:
        yield stream.first
    async for batch in stream.rest:
        yield batch


def pipe(
    stream: OpenStream, transform: Callable[[AsyncIterator[Delta]], AsyncIterator[Delta]]
) -> OpenStream:
    """The same stream (backend, upstream) with every delta passed through ``transform``,
    which may hold deltas back or end early; the deltas it did not read are then dropped.
    (Its deltas are written one by one: batches do not survive a transform.)"""

    async def piped() -> AsyncIterator[list[Delta]]:
        async with contextlib.aclosing(_all(stream)) as source:
            async for delta in transform(source):
                yield [delta]

    return dataclasses.replace(stream, first=[], rest=piped())


OnEnd = Callable[[Outcome], Awaitable[None]]


class _EndOnce:
    """Release the upstream and report the outcome exactly once, even while the request is
    being cancelled (a client that disconnects must still be charged; on AWS the Web Adapter
    reports no disconnect, so there the stream runs to its end: ``admission.token_counts``)."""

    def __init__(self, stream: OpenStream, on_end: OnEnd | None) -> None:
        self._stream = stream
        self._on_end = on_end
        self._done = False

    async def __call__(self, outcome: Outcome) -> None:
        if self._done:
            return
        self._done = True
        self._stream.upstream.close()
        if self._on_end is not None:
            with anyio.CancelScope(shield=True):
                await self._on_end(outcome)


async def sse_events(
    stream: OpenStream,
    *,
    include_usage: bool,
    on_end: OnEnd | None = None,
    on_first_byte: Callable[[], None] | None = None,
) -> AsyncGenerator[bytes, None]:
    """The client's SSE body: chunks as they arrive, usage if asked, then ``[DONE]``.

    The outcome is reported before the last event is sent, so that a client that has read the
    whole stream has also been charged (and Lambda may freeze the function right after).
    """
    writer = ChunkWriter(stream.backend.name)
    outcome = Outcome()
    end = _EndOnce(stream, on_end)
    finished = False
    try:
        async for batch in _batches(stream):
            chunks: list[bytes] = []
            for delta in batch:
                if delta.usage is not None:
                    outcome.usage = delta.usage
                elif delta.generated or delta.finish_reason or delta.logprobs:
                    finished = finished or delta.finish_reason is not None
                    outcome.text_deltas += delta.generated
                    chunks.append(writer.delta(delta))
            if chunks:
                if on_first_byte is not None:
                    on_first_byte()
                yield chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if not finished:
            outcome.error = _incomplete()
            await end(outcome)
            yield writer.error(outcome.error)
            return
        await end(outcome)
        if include_usage and outcome.usage is not None:
            yield writer.usage(outcome.usage) + DONE
        else:
            yield DONE
    except UpstreamError as failure:
        logger.warning("backend %s failed mid-stream: %s", stream.backend.name, failure)
        outcome.error = failure.to_gateway_error()
        await end(outcome)
        yield writer.error(outcome.error)
    except InBandError as exc:
        logger.warning("in-band error from %s mid-stream: %s", stream.backend.name, exc)
        outcome.error = _model_failed()
        await end(outcome)
        yield writer.error(outcome.error)
    finally:
        await end(outcome)


async def aggregate(stream: OpenStream, *, on_end: OnEnd | None = None) -> dict[str, Any]:
    """A non-streaming ``chat.completion`` built from the same stream."""
    content: list[str] = []
    reasoning: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    logprobs: list[dict[str, Any]] = []
    finish: str | None = None
    outcome = Outcome()
    try:
        async for delta in _all(stream):
            content.append(delta.content)
            reasoning.append(delta.reasoning)
            tool_calls.extend(delta.tool_calls)
            if delta.logprobs is not None:
                entries = delta.logprobs.get("content")
                logprobs.extend(e for e in entries or () if isinstance(e, dict))
            finish = delta.finish_reason or finish
            if delta.usage is not None:
                outcome.usage = delta.usage
            outcome.text_deltas += delta.generated
        if finish is None:
            outcome.error = _incomplete()
    except UpstreamError as failure:
        logger.warning("backend %s failed mid-response: %s", stream.backend.name, failure)
        outcome.error = failure.to_gateway_error()
    except InBandError as exc:
        logger.warning("in-band error from %s mid-response: %s", stream.backend.name, exc)
        outcome.error = _model_failed()
    finally:
        await _EndOnce(stream, on_end)(outcome)
    if outcome.error is not None:
        raise outcome.error
    assert finish is not None
    return completion(
        model=stream.backend.name,
        content="".join(content),
        reasoning="".join(reasoning),
        finish_reason=finish,
        usage=outcome.usage,
        tool_calls=merge_tool_calls(tool_calls),
        logprobs=logprobs,
    )
