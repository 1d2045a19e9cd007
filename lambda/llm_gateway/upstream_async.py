"""``InvokeEndpointWithResponseStream`` from the event loop: no thread per stream and no botocore
call per request.

What botocore decides (endpoint URL, signing name and region, signature version) is resolved
once, at start-up, by botocore itself (:mod:`llm_gateway.upstream_resolution`). Credentials
come from the same botocore session's provider chain; they are frozen per request
(``get_frozen_credentials``), so refreshing credentials refresh, and a refresh that is due runs
on a worker thread, never on the loop.

Per request, on the loop: sign with botocore's SigV4 signer (``signing``), take a pooled
connection (``http1``), write the request, and decode the event stream as it arrives
(``eventstream``), handing payload bytes to the consumer as they complete; several parts that
arrive together are handed over as one ``bytes`` (the consumer splits lines across any part
boundary). No retries. Errors are turned into the exceptions botocore would raise for the
same fault and classified by ``upstream_errors.classify``, so the client sees exactly what it saw
with boto3.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import ssl
import weakref
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from botocore.awsrequest import HeadersDict
from botocore.credentials import RefreshableCredentials
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    EventStreamError,
    NoCredentialsError,
    ReadTimeoutError,
    SSLError,
)
from botocore.parsers import EventStreamJSONParser, create_parser
from botocore.utils import get_environ_proxies, percent_encode
from urllib3.exceptions import ProtocolError
from urllib3.exceptions import ReadTimeoutError as StreamReadTimeoutError

from llm_gateway.eventstream import EventStreamDecoder
from llm_gateway.http1 import ConnectTimedOutError, Pool
from llm_gateway.signing import agrees_with_botocore, host_header, sign
from llm_gateway.upstream_errors import UpstreamError, classify
from llm_gateway.upstream_resolution import (
    OPERATION,
    PLACEHOLDER,
    Resolution,
    resolve,
    ssl_context_soon,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from botocore.credentials import Credentials
    from botocore.eventstream import EventStreamMessage
    from botocore.model import OperationModel, Shape
    from botocore.session import Session

    from llm_gateway.contract import Backend
    from llm_gateway.http1 import Connection

logger = logging.getLogger(__name__)

_Target = tuple[str, str, dict[str, str]]
_HIGH_WATER = 256 * 1024
"""Bytes decoded but not yet taken by the consumer at which reading pauses."""


class SageMakerRuntime:
    """Opens :class:`RuntimeStream` s; one per process, its connection pools one per loop."""

    def __init__(
        self,
        resolution: Resolution,
        credentials: Credentials | None,
        operation: OperationModel,
        *,
        connect_timeout_s: float,
        read_timeout_s: float,
        tls: ssl.SSLContext | concurrent.futures.Future[ssl.SSLContext] | None,
    ) -> None:
        self.resolution = resolution
        self._credentials = credentials
        self._refreshable = isinstance(credentials, RefreshableCredentials)
        self._operation = operation
        self._stream_shape: Shape = operation.output_shape.members["Body"]
        self._response_parser = create_parser(operation.metadata["protocol"])
        self._event_parser = EventStreamJSONParser()
        self.read_timeout_s = read_timeout_s
        parts = urlsplit(resolution.base_url)
        self._prefix = parts.path.rstrip("/")
        self.host = host_header(resolution.base_url)
        self._origin = (
            parts.hostname or "",
            parts.port or (443 if parts.scheme == "https" else 80),
        )
        self._connect_timeout_s = connect_timeout_s
        self._tls = tls if parts.scheme == "https" else None
        self._pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Pool] = (
            weakref.WeakKeyDictionary()
        )
        self._targets: dict[tuple[str, str | None, str | None], _Target] = {}

    @classmethod
    def from_client(
        cls, session: Session, client: Any, *, connect_timeout_s: float, read_timeout_s: float
    ) -> SageMakerRuntime | None:
        """The runtime for ``client``'s configuration, or None where this path does not apply
        (a proxy is configured, botocore would not sign with SigV4, or this botocore's signer
        no longer agrees with ours: ``signing.agrees_with_botocore``): the caller then keeps
        using ``client``."""
        resolution = resolve(client)
        scheme = urlsplit(resolution.base_url).scheme
        proxied = client.meta.config.proxies or get_environ_proxies(resolution.base_url)
        if resolution.signature_version != "v4" or proxied or scheme not in ("http", "https"):
            return None
        probe = f"{resolution.base_url}/endpoints/{PLACEHOLDER}/invocations-response-stream"
        if not agrees_with_botocore(resolution.signing_name, resolution.region, probe):
            logger.warning("this botocore signs differently from llm_gateway.signing: "
                           "SageMaker streams are read with botocore's client instead")  # fmt: skip
            return None
        verify = session.get_config_variable("ca_bundle") or True
        return cls(
            resolution,
            session.get_credentials(),
            client.meta.service_model.operation_model(OPERATION),
            connect_timeout_s=connect_timeout_s,
            read_timeout_s=read_timeout_s,
            tls=ssl_context_soon(verify) if scheme == "https" else None,
        )

    def open(self, backend: Backend, body: bytes) -> RuntimeStream:
        return RuntimeStream(self, backend, body)

    def connections_in_use(self) -> int:
        """Upstream connections carrying a stream now, over every loop's pool."""
        return sum(pool.in_use() for pool in list(self._pools.values()))

    def pool(self) -> Pool:
        """The running loop's connection pool."""
        loop = asyncio.get_running_loop()
        pool = self._pools.get(loop)
        if pool is None:
            host, port = self._origin
            pool = Pool(loop, host=host, port=port, ssl_context=self._tls,
                        connect_timeout=self._connect_timeout_s)  # fmt: skip
            self._pools[loop] = pool
        return pool

    async def request(self, backend: Backend, body: bytes) -> tuple[str, bytes]:
        """The target URL and the signed request head (request line and headers)."""
        key = (backend.endpoint_name, backend.custom_attributes, backend.inference_component_name)
        target = self._targets.get(key)
        if target is None:
            target = self._targets[key] = self._target(*key)
        url, fixed, base = target
        headers = dict(base)
        sign(await self._frozen_credentials(), service=self.resolution.signing_name,
             region=self.resolution.region, method="POST", url=url, headers=headers,
             body=body)  # fmt: skip
        lines = [fixed]
        lines.extend(f"{name}: {value}\r\n" for name, value in headers.items())
        lines.append(f"Content-Length: {len(body)}\r\n\r\n")
        return url, "".join(lines).encode("latin-1")

    def _target(
        self, endpoint: str, custom_attributes: str | None, component: str | None = None
    ) -> _Target:
        """URL, request line with the unsigned headers, and the headers to sign."""
        # The path as botocore serializes the operation's requestUri (botocore/serialize.py,
        # _render_uri_template: percent_encode of a non-greedy label).
        path = f"{self._prefix}/endpoints/{percent_encode(endpoint)}/invocations-response-stream"
        url = self.resolution.base_url[: len(self.resolution.base_url) - len(self._prefix)] + path
        fixed = f"POST {path} HTTP/1.1\r\nUser-Agent: {self.resolution.user_agent}\r\n"
        # Signed, in the order botocore builds them (the service model's header members).
        headers = {"Host": self.host, "Content-Type": "application/json",
                   "X-Amzn-SageMaker-Accept": "*/*"}  # fmt: skip
        if custom_attributes:
            if not custom_attributes.isprintable():  # as http.client refuses it for botocore
                raise ValueError("CustomAttributes holds a control character")
            headers["X-Amzn-SageMaker-Custom-Attributes"] = custom_attributes
        if component:
            # InferenceComponentName: the header member after CustomAttributes in the service
            # model (botocore data/sagemaker-runtime/2017-05-13, InvokeEndpointWithResponseStream
            # input); signed like every other header. The contract's pattern keeps it printable.
            headers["X-Amzn-SageMaker-Inference-Component"] = component
        return url, fixed, headers

    async def _frozen_credentials(self) -> Any:
        credentials = self._credentials
        if credentials is None:
            raise NoCredentialsError()
        if self._refreshable and credentials.refresh_needed():
            # A refresh may call STS or the container endpoint: not on the loop.
            return await asyncio.to_thread(credentials.get_frozen_credentials)
        return credentials.get_frozen_credentials()

    def parse_event(self, message: EventStreamMessage) -> bytes | None:
        """An event that is not a plain ``PayloadPart``, parsed as botocore's
        ``EventStream._parse_event`` parses it: exception events raise ``EventStreamError``."""
        response = message.to_response_dict()
        parsed = self._event_parser.parse(response, self._stream_shape)
        if response["status_code"] != 200:
            raise EventStreamError(parsed, OPERATION)
        part = parsed.get("PayloadPart") if isinstance(parsed, dict) else None
        return part.get("Bytes") if isinstance(part, dict) else None

    def error_response(self, status: int, headers: list[tuple[bytes, bytes]],
                       body: bytes) -> ClientError:  # fmt: skip
        """The ``ClientError`` botocore raises for an error response (botocore/endpoint.py:
        ``convert_to_response_dict``, the protocol parser, ``_add_modeled_error_fields``)."""
        header_map = HeadersDict()
        for name, value in headers:
            header_map[name.decode("latin-1")] = value.decode("latin-1")
        response = {"headers": header_map, "status_code": status, "body": body,
                    "context": {"operation_name": OPERATION}}  # fmt: skip
        parsed = self._response_parser.parse(response, self._operation.output_shape)
        code = parsed.get("Error", {}).get("Code")
        error_shape = self._operation.service_model.shape_for_error_code(code) if code else None
        if error_shape is not None:
            parsed.update(self._response_parser.parse(response, error_shape))
        return ClientError(parsed, OPERATION)


class RuntimeStream:
    """One invocation's payload bytes as an async iterator; ``close()`` stops it at once.

    Nothing happens until the first ``__anext__``; from then on the connection's callbacks
    (:class:`llm_gateway.http1.ResponseHandler`) decode the response as it arrives and wake
    the consumer.
    """

    def __init__(self, runtime: SageMakerRuntime, backend: Backend, body: bytes) -> None:
        self._runtime = runtime
        self._backend = backend
        self._body = body
        self._url = runtime.resolution.base_url
        self._started = False
        self._connection: Connection | None = None
        self._status = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._error_body: list[bytes] = []
        self._decoder: EventStreamDecoder | None = None
        self._ready: list[bytes] = []
        self._ready_bytes = 0
        self._error: UpstreamError | None = None
        self._done = False
        self._closed = False
        self._waiter: asyncio.Future[None] | None = None

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        if not self._started:
            self._started = True
            if self._closed:
                raise StopAsyncIteration
            await self._send()
        while True:
            ready = self._ready
            if ready:
                self._ready = []
                if self._ready_bytes >= _HIGH_WATER and self._connection is not None:
                    self._connection.resume_reading()
                self._ready_bytes = 0
                return ready[0] if len(ready) == 1 else b"".join(ready)
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            if self._done:
                raise StopAsyncIteration
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None

    def close(self) -> None:
        """Stop reading (client gone, deadline passed, or stream finished), without blocking:
        an unfinished response's connection is closed at once, never reused."""
        if self._closed:
            return
        self._closed = True
        connection, self._connection = self._connection, None
        if connection is not None and not self._done:
            connection.abort()
        self._done = True
        self._ready = []
        self._error = None
        self._wake()

    # --- sending -----------------------------------------------------------------------------

    async def _send(self) -> None:
        runtime = self._runtime
        try:
            self._url, head = await runtime.request(self._backend, self._body)
            connection = await runtime.pool().acquire()
        except Exception as exc:  # classified like botocore's own failure
            self._finish(classify(_connect_failure(exc, self._url)))
            return
        if self._closed:  # closed while connecting
            connection.finish(reusable=True)
            return
        self._connection = connection
        connection.send(head, self._body, self, runtime.read_timeout_s)

    # --- http1.ResponseHandler ---------------------------------------------------------------

    def on_status(self, status: bytes) -> None:
        pass

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        connection = self._connection
        if connection is None:
            return
        self._status = connection.status_code()
        if 200 <= self._status < 300:
            self._decoder = EventStreamDecoder(self._runtime.parse_event)

    def on_body(self, body: bytes) -> None:
        decoder = self._decoder
        if decoder is None:
            if not self._done:
                self._error_body.append(body)
            return
        if self._done:
            return
        ready = self._ready
        before = len(ready)
        try:
            decoder.feed(body, ready)
        except Exception as exc:  # an exception event, or a corrupt stream
            self._finish(classify(exc))
            return
        if len(ready) != before:
            self._ready_bytes += len(body)
            if self._ready_bytes >= _HIGH_WATER and self._connection is not None:
                self._connection.pause_reading()
            self._wake()

    def on_message_complete(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None or self._done:
            return
        if self._decoder is None:
            failure: Exception
            try:
                body = b"".join(self._error_body)
                failure = self._runtime.error_response(self._status, self._headers, body)
            except Exception as exc:  # not even botocore's generic error: still a failure
                failure = exc
            self._error = classify(failure)
            self._error_body = []
        # (A message cut short at the end of the body is dropped, as botocore's EventStream
        # drops it.)
        self._done = True
        connection.finish(reusable=connection.keep_alive())
        self._wake()

    def on_failure(self, error: BaseException | None, timed_out: bool) -> None:
        self._connection = None
        if self._done:
            return
        self._finish(classify(self._read_failure(error, timed_out)))

    # --- internals ---------------------------------------------------------------------------

    def _read_failure(self, error: BaseException | None, timed_out: bool) -> Exception:
        """What botocore/urllib3 raise for the same fault: while waiting for (or reading) an
        error response, from inside the client call; once an event stream is being read, from
        urllib3 unwrapped (botocore/eventstream.py iterates ``HTTPResponse.stream()``)."""
        failure: Exception
        if self._decoder is None:
            if timed_out:
                failure = ReadTimeoutError(endpoint_url=self._url)
            else:
                failure = ConnectionClosedError(endpoint_url=self._url)
            return failure
        if timed_out:
            return StreamReadTimeoutError(None, self._url, "Read timed out.")  # type: ignore[arg-type]
        return ProtocolError("Connection broken", error)

    def _finish(self, error: UpstreamError) -> None:
        if self._done:
            return
        self._done = True
        self._error = error
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.abort()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def _connect_failure(exc: Exception, url: str) -> Exception:
    """botocore's exception for a failure before the request is written
    (botocore/httpsession.py, ``URLLib3Session.send``)."""
    failure: Exception = exc
    if isinstance(exc, ConnectTimedOutError):
        failure = ConnectTimeoutError(endpoint_url=url)
    elif isinstance(exc, ssl.SSLError | ssl.CertificateError):
        failure = SSLError(endpoint_url=url, error=exc)
    elif isinstance(exc, OSError):
        failure = EndpointConnectionError(endpoint_url=url, error=exc)
    return failure
