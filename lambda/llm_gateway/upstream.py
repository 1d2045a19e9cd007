"""The SageMaker runtime edge: ``InvokeEndpointWithResponseStream``, and failures by kind.

Streams are opened from the event loop by :mod:`llm_gateway.upstream_async` (botocore's
signer and event-stream parser over an asyncio HTTP/1.1 connection: no thread and no botocore
call per request). Where that path does not apply (an HTTP proxy is configured for the
runtime's endpoint, which only botocore's HTTP stack supports; botocore would not sign with
SigV4; or the start-up check that our signer still matches this botocore's fails), each stream
is read by a botocore client on a thread of its own and handed to the loop part by part
(:class:`UpstreamStream`, the previous implementation, kept as that fallback). Either way
failures are classified by kind into :class:`UpstreamError` (:func:`classify`, from the
exceptions botocore raises) so callers decide what the client sees (and whether to fall back)
without knowing botocore.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import TYPE_CHECKING, Any

import botocore.session
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionError,
    ConnectTimeoutError,
    ReadTimeoutError,
)
from urllib3.exceptions import ReadTimeoutError as StreamReadTimeoutError

from llm_gateway.errors import GatewayError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from botocore.session import Session

    from llm_gateway.contract import Backend
    from llm_gateway.settings import Settings
    from llm_gateway.upstream_async import RuntimeStream, SageMakerRuntime

_END = object()


class UpstreamError(Exception):
    """A backend failure, by kind. ``retryable`` marks faults another backend might not have."""

    def __init__(
        self, kind: str, detail: str, *, retryable: bool, original_status: int | None = None
    ) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail
        self.retryable = retryable
        self.original_status = original_status

    def to_gateway_error(self) -> GatewayError:
        """What the client sees: OpenAI-format, no upstream internals beyond a 4xx reason."""
        if self.kind == "model_rejected":
            return GatewayError(400, f"The model rejected the request: {self.detail}",
                                code="model_rejected_request")  # fmt: skip
        status, code, message = _CLIENT_VIEW.get(self.kind, _CLIENT_VIEW["internal"])
        return GatewayError(status, message, type="server_error", code=code)


_CLIENT_VIEW: dict[str, tuple[int, str, str]] = {
    "unavailable": (503, "model_unavailable", "The model is overloaded or not ready; retry."),
    "timeout": (504, "model_timeout", "The model did not respond in time."),
    "connection": (502, "upstream_unreachable", "The model endpoint could not be reached."),
    "misconfigured": (502, "upstream_misconfigured", "The model endpoint is not available."),
    "model_error": (502, "model_error", "The model failed while generating."),
    "internal": (502, "upstream_error", "The model endpoint failed."),
}

# SageMaker runtime error codes (before the stream and as stream exception events).
_BY_CODE: dict[str, tuple[str, bool]] = {
    "ServiceUnavailable": ("unavailable", True),
    "ThrottlingException": ("unavailable", True),
    "InternalFailure": ("internal", True),
    "InternalStreamFailure": ("internal", True),
    "InternalDependencyException": ("internal", True),
    "ModelNotReadyException": ("unavailable", True),
    "ValidationError": ("misconfigured", True),
    "StreamBroken": ("model_error", True),
    "ModelInvocationTimeExceeded": ("timeout", True),
}


def classify(exc: Exception) -> UpstreamError:
    """Map a botocore exception to an :class:`UpstreamError`."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        message = str(error.get("Message", ""))[:300]
        if code == "ModelError":
            original = exc.response.get("OriginalStatusCode")
            status = int(original) if str(original).isdigit() else None
            if status is not None and 400 <= status < 500:
                detail = str(exc.response.get("OriginalMessage") or message)[:300]
                return UpstreamError(
                    "model_rejected", detail, retryable=False, original_status=status
                )
            return UpstreamError("model_error", message, retryable=True, original_status=status)
        if code == "ModelStreamError":
            stream_code = str(exc.response.get("ErrorCode") or error.get("ErrorCode") or "")
            kind, retryable = _BY_CODE.get(stream_code, ("model_error", True))
            return UpstreamError(kind, message, retryable=retryable)
        kind, retryable = _BY_CODE.get(code, ("internal", True))
        return UpstreamError(kind, f"{code}: {message}", retryable=retryable)
    # Mid-stream (even before the first token) botocore's EventStream reads urllib3's
    # HTTPResponse.stream() unwrapped (botocore/eventstream.py, _create_raw_event_generator), so
    # a read timeout there is urllib3's ReadTimeoutError (urllib3/response.py, _error_catcher),
    # not botocore's (raised while waiting for the response headers).
    if isinstance(exc, ReadTimeoutError | StreamReadTimeoutError | ConnectTimeoutError):
        return UpstreamError("timeout", type(exc).__name__, retryable=True)
    if isinstance(exc, ConnectionError):
        return UpstreamError("connection", type(exc).__name__, retryable=True)
    return UpstreamError("internal", type(exc).__name__, retryable=True)


class UpstreamStream:
    """Async iterator over one invocation's payload bytes, read by a botocore client on a
    thread of its own; ``close()`` stops it early. Only where :mod:`llm_gateway.upstream_async`
    does not apply (see :meth:`SageMakerInvoker.from_settings`)."""

    def __init__(self, client: Any, backend: Backend, body: bytes) -> None:
        self._client = client
        self._backend = backend
        self._body = body
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event_stream: Any = None
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    def _start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._pump, name="upstream", daemon=True)
        self._thread.start()

    def _put(self, item: object) -> None:
        assert self._loop is not None
        if not self._closed.is_set():
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is reading
                self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def _pump(self) -> None:
        kwargs: dict[str, Any] = {
            "EndpointName": self._backend.endpoint_name,
            "Body": self._body,
            "ContentType": "application/json",
            "Accept": "*/*",
        }
        if self._backend.custom_attributes:
            kwargs["CustomAttributes"] = self._backend.custom_attributes
        try:
            response = self._client.invoke_endpoint_with_response_stream(**kwargs)
            self._event_stream = response["Body"]
            for event in self._event_stream:
                if self._closed.is_set():
                    break
                part = event.get("PayloadPart")
                if part is not None:
                    self._put(part["Bytes"])
        except Exception as exc:  # everything the network can throw becomes a classified failure
            if not self._closed.is_set():
                self._put(classify(exc))
        finally:
            self._put(_END)
            if self._event_stream is not None:
                with contextlib.suppress(Exception):
                    self._event_stream.close()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        if self._thread is None:
            self._start()
        item = await self._queue.get()
        if item is _END:
            raise StopAsyncIteration
        if isinstance(item, UpstreamError):
            raise item
        assert isinstance(item, bytes)
        return item

    def close(self) -> None:
        """Stop reading (client gone, deadline passed, or stream finished), without blocking.

        The reader thread may be blocked in a socket read, holding the response's buffer lock,
        so closing the response from here would wait for the next upstream byte (seconds
        before a slow first token). Instead the socket's read side is shut down (urllib3's
        public ``HTTPResponse.shutdown``, urllib3 ≥ 2.3; botocore keeps that response as
        ``EventStream._raw_stream``), which ends the blocked read at once; the reader thread
        then closes the response itself. With an older urllib3 the thread exits at the next
        byte or the read timeout instead.
        """
        self._closed.set()
        raw = getattr(self._event_stream, "_raw_stream", None)
        shutdown = getattr(raw, "shutdown", None)
        if shutdown is not None:
            with contextlib.suppress(Exception):
                shutdown()


class SageMakerInvoker:
    """Opens streams on SageMaker endpoints: from the event loop (``runtime``), else with one
    shared, thread-safe botocore client and a thread per stream."""

    def __init__(self, client: Any, runtime: SageMakerRuntime | None = None) -> None:
        self._client = client
        self.runtime = runtime

    @classmethod
    def from_settings(
        cls, settings: Settings, *, session: Session | None = None
    ) -> SageMakerInvoker:
        """A client honouring the standard AWS_* variables (AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME…),
        from ``session`` (default: a new botocore session, the standard provider chain).

        Retries are off: a retried stream could duplicate output, and choosing another backend
        is the gateway's decision, not botocore's. The client resolves the endpoint, signing
        and credentials once (:func:`llm_gateway.upstream_resolution.resolve`); streams are then
        opened without it unless a proxy applies.
        """
        from llm_gateway.upstream_async import SageMakerRuntime

        session = session or botocore.session.get_session()
        config = Config(
            connect_timeout=settings.upstream_connect_timeout_s,
            read_timeout=settings.upstream_read_timeout_s,
            retries={"total_max_attempts": 1, "mode": "standard"},
            tcp_keepalive=True,
            max_pool_connections=64,
        )
        client = session.create_client("sagemaker-runtime", config=config)
        runtime = SageMakerRuntime.from_client(
            session, client, connect_timeout_s=settings.upstream_connect_timeout_s,
            read_timeout_s=settings.upstream_read_timeout_s,
        )  # fmt: skip
        return cls(client, runtime)

    def open(self, backend: Backend, body: bytes) -> RuntimeStream | UpstreamStream:
        if self.runtime is not None:
            return self.runtime.open(backend, body)
        return UpstreamStream(self._client, backend, body)
