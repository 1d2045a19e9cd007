"""The SageMaker runtime edge: ``InvokeEndpointWithResponseStream``, and failures by kind.

Streams are opened from the event loop by :mod:`llm_gateway.upstream_async` (botocore's
signer and event-stream parser over an asyncio HTTP/1.1 connection: no thread and no botocore
call per request). Where that path does not apply (an HTTP proxy is configured for the
runtime's endpoint, which only botocore's HTTP stack supports; botocore would not sign with
SigV4; or the start-up check that our signer still matches this botocore's fails), each stream
is read by a botocore client on a thread of its own and handed to the loop part by part
(:class:`UpstreamStream`, the previous implementation, kept as that fallback). Either way
failures are classified by kind (:mod:`llm_gateway.upstream_errors`).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import TYPE_CHECKING, Any

import botocore.session
from botocore.config import Config

from llm_gateway.upstream_async import RuntimeStream, SageMakerRuntime
from llm_gateway.upstream_errors import UpstreamError, classify

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from botocore.session import Session

    from llm_gateway.contract import Backend
    from llm_gateway.settings import Settings

_END = object()


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
        if self._backend.inference_component_name:
            kwargs["InferenceComponentName"] = self._backend.inference_component_name
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
