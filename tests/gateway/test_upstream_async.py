"""The event-loop SageMaker runtime client (``upstream_async``): signing, credentials, endpoint
resolution, event-stream decoding, connection reuse and release, faults by kind."""

from __future__ import annotations

import asyncio
import datetime
import itertools
import json
import threading
import time
from collections.abc import Iterator
from typing import Any
from unittest import mock

import botocore.session
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import CredentialProvider, Credentials, RefreshableCredentials
from botocore.eventstream import ChecksumMismatch, EventStream, EventStreamBuffer
from botocore.exceptions import EventStreamError
from botocore.parsers import EventStreamJSONParser
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_gateway.contract import Backend
from llm_gateway.eventstream import EventStreamDecoder
from llm_gateway.settings import Settings
from llm_gateway.signing import RuntimeSigV4Auth, agrees_with_botocore, sign
from llm_gateway.upstream import SageMakerInvoker
from llm_gateway.upstream_async import RuntimeStream, SageMakerRuntime
from llm_gateway.upstream_errors import UpstreamError
from llm_gateway.upstream_resolution import OPERATION
from local.emulator import create_emulator
from local.eventstream import (
    encode_message,
    internal_stream_failure,
    model_stream_error,
    payload_part,
)
from local.scenarios import Scenario
from local.serving import free_port, serve_in_thread

BACKEND = Backend(name="a", endpoint_name="ep-a", format="openai", max_tokens_default=8)
BODY = b'{"messages": [{"role": "user", "content": "x"}], "stream": true}'
FIXED = datetime.datetime(2026, 3, 4, 5, 6, 7)
ROUTES = {"routes": [{"model": "m", "backends": [BACKEND.model_dump()]}]}


def _settings(**extra: str) -> Settings:
    return Settings.from_env({"LLM_GATEWAY_ROUTES": json.dumps(ROUTES), **extra})


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", "AWS_PROFILE",
                 "AWS_USE_FIPS_ENDPOINT", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY",
                 "http_proxy", "AWS_SESSION_TOKEN"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    return monkeypatch


@pytest.fixture
def emulator(aws_env: pytest.MonkeyPatch) -> Iterator[tuple[str, Any]]:
    app = create_emulator(default=Scenario(content="Hello there, how are you?"))
    with serve_in_thread(app) as url:
        aws_env.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", url)
        yield url, app.state.emulator


def _runtime(invoker: SageMakerInvoker) -> SageMakerRuntime:
    assert invoker.runtime is not None
    return invoker.runtime


async def _read(stream: Any) -> bytes:
    parts = [part async for part in stream]
    stream.close()
    return b"".join(parts)


# --- signing: botocore's signature, byte for byte ---------------------------------------------


@pytest.mark.parametrize("token", [None, "session-token/with+chars="])
@pytest.mark.parametrize("custom", [None, "accept_eula=true", "a=b;  c=d"])
def test_the_signature_is_botocores_for_the_same_request(
    token: str | None, custom: str | None
) -> None:
    credentials = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    url = "https://runtime.sagemaker.eu-west-1.amazonaws.com/endpoints/ep-1/invocations-response-stream"
    headers = {"Content-Type": "application/json", "X-Amzn-SageMaker-Accept": "*/*"}
    if custom:
        headers["X-Amzn-SageMaker-Custom-Attributes"] = custom
    with mock.patch("botocore.auth.get_current_datetime", return_value=FIXED):
        stock = AWSRequest("POST", url, data=BODY, headers=dict(headers))
        SigV4Auth(credentials, "sagemaker", "eu-west-1").add_auth(stock)
        # Ours with and without the Host header given (botocore derives it from the URL).
        ours = sign(credentials.get_frozen_credentials(), service="sagemaker",
                    region="eu-west-1", method="POST", url=url, headers=dict(headers),
                    body=BODY)  # fmt: skip
        hosted = {"Host": "runtime.sagemaker.eu-west-1.amazonaws.com", **headers}
        ours_hosted = sign(credentials.get_frozen_credentials(), service="sagemaker",
                           region="eu-west-1", method="POST", url=url, headers=hosted,
                           body=BODY)  # fmt: skip
    for signed in (ours, ours_hosted):
        assert signed["Authorization"] == stock.headers["Authorization"]
        assert signed["X-Amz-Date"] == stock.headers["X-Amz-Date"] == "20260304T050607Z"
        assert signed.get("X-Amz-Security-Token") == stock.headers.get("X-Amz-Security-Token")


def test_a_new_day_or_secret_derives_a_new_signing_key() -> None:
    url = (
        "https://runtime.sagemaker.us-east-1.amazonaws.com/endpoints/e/invocations-response-stream"
    )
    for when, secret in [(FIXED, "s1"), (FIXED, "s2"), (FIXED + datetime.timedelta(days=1), "s2")]:
        credentials = Credentials("AKID", secret)
        with mock.patch("botocore.auth.get_current_datetime", return_value=when):
            stock = AWSRequest("POST", url, data=BODY, headers={"Content-Type": "x"})
            SigV4Auth(credentials, "sagemaker", "us-east-1").add_auth(stock)
            ours = sign(credentials.get_frozen_credentials(), service="sagemaker",
                        region="us-east-1", method="POST", url=url,
                        headers={"Content-Type": "x"}, body=BODY)  # fmt: skip
        assert ours["Authorization"] == stock.headers["Authorization"]


@pytest.mark.parametrize(
    ("update", "params", "headers"),
    [
        ({"custom_attributes": "accept_eula=true"}, {"CustomAttributes": "accept_eula=true"},
         ("X-Amz-Security-Token", "Content-Type", "X-Amzn-SageMaker-Accept",
          "X-Amzn-SageMaker-Custom-Attributes")),
        ({"inference_component_name": "ic-cold"}, {"InferenceComponentName": "ic-cold"},
         ("X-Amzn-SageMaker-Inference-Component",)),
    ],
    ids=["custom attributes", "inference component"],
)  # fmt: skip
def test_the_request_is_what_a_botocore_client_sends(
    aws_env: pytest.MonkeyPatch,
    update: dict[str, str],
    params: dict[str, str],
    headers: tuple[str, ...],
) -> None:
    """URL, signed headers and Authorization of our request against a boto3-style call of the
    same operation, both signed at the same instant (the client's call stopped before send)."""
    aws_env.setenv("AWS_SESSION_TOKEN", "tok")
    aws_env.setenv("AWS_DEFAULT_REGION", "eu-central-1")
    backend = BACKEND.model_copy(update=update)
    invoker = SageMakerInvoker.from_settings(_settings())
    runtime = _runtime(invoker)
    captured: dict[str, Any] = {}

    class Sent(Exception):  # noqa: N818
        pass

    def before_send(request: Any, **_: Any) -> None:
        captured.update(url=request.url, headers=dict(request.headers.items()))
        raise Sent

    client = botocore.session.get_session().create_client("sagemaker-runtime")
    client.meta.events.register("before-send.sagemaker-runtime.*", before_send)
    with mock.patch("botocore.auth.get_current_datetime", return_value=FIXED):
        with pytest.raises(Sent):
            client.invoke_endpoint_with_response_stream(
                EndpointName=backend.endpoint_name, Body=BODY, ContentType="application/json",
                Accept="*/*", **params,
            )  # fmt: skip
        url, head = asyncio.run(runtime.request(backend, BODY))
    assert url == captured["url"]
    assert url == ("https://runtime.sagemaker.eu-central-1.amazonaws.com/endpoints/ep-a/"
                   "invocations-response-stream")  # fmt: skip
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /endpoints/ep-a/invocations-response-stream HTTP/1.1"
    ours = dict(line.split(": ", 1) for line in lines[1:] if line)
    for name in ("Authorization", "X-Amz-Date", *headers):
        value = captured["headers"][name]
        assert ours[name] == (value.decode() if isinstance(value, bytes) else value), name
    assert ours["Content-Length"] == str(len(BODY))


def test_the_start_up_self_check_agrees_with_this_botocore() -> None:
    url = (
        "https://runtime.sagemaker.us-east-1.amazonaws.com/endpoints/x/invocations-response-stream"
    )
    assert agrees_with_botocore("sagemaker", "us-east-1", url)
    with mock.patch.object(RuntimeSigV4Auth, "signature", return_value="0" * 64):
        assert not agrees_with_botocore("sagemaker", "us-east-1", url)


def test_a_signer_that_disagrees_keeps_the_botocore_client(aws_env: pytest.MonkeyPatch) -> None:
    with mock.patch("llm_gateway.upstream_async.agrees_with_botocore", return_value=False):
        invoker = SageMakerInvoker.from_settings(_settings())
    assert invoker.runtime is None
    assert type(invoker.open(BACKEND, BODY)).__name__ == "UpstreamStream"


# --- credentials: botocore's provider chain, frozen per request --------------------------------


class _Rotating(CredentialProvider):  # type: ignore[misc]
    """Credentials that expire at once: every request must refresh them."""

    METHOD = "test-rotating"

    def __init__(self) -> None:
        self.refreshes = 0
        self.threads: list[str] = []

    def _metadata(self) -> dict[str, str]:
        self.refreshes += 1
        self.threads.append(threading.current_thread().name)
        expiry = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=60)
        return {"access_key": f"AKID{self.refreshes}", "secret_key": "s",
                "token": f"token-{self.refreshes}", "expiry_time": expiry.isoformat()}  # fmt: skip

    def load(self) -> RefreshableCredentials:
        return RefreshableCredentials.create_from_metadata(
            self._metadata(), refresh_using=self._metadata, method=self.METHOD
        )


def test_refreshable_credentials_are_refreshed_off_the_loop_and_used_per_request(
    emulator: tuple[str, Any],
) -> None:
    _, state = emulator
    session = botocore.session.get_session()
    provider = _Rotating()
    session.get_component("credential_provider").insert_before("env", provider)
    invoker = SageMakerInvoker.from_settings(_settings(), session=session)
    assert isinstance(session.get_credentials(), RefreshableCredentials)
    loop_thread: list[str] = []

    async def run() -> None:
        loop_thread.append(threading.current_thread().name)
        for _ in range(3):
            await _read(invoker.open(BACKEND, BODY))

    # 60 s left of validity is inside botocore's advisory refresh window (15 min): each
    # request finds a refresh due.
    asyncio.run(run())
    keys = [r.headers["authorization"].split("Credential=")[1].split("/")[0]
            for r in state.requests]  # fmt: skip
    tokens = [r.headers["x-amz-security-token"] for r in state.requests]
    assert keys == ["AKID2", "AKID3", "AKID4"]  # AKID1: loaded at start-up
    assert tokens == ["token-2", "token-3", "token-4"]
    assert loop_thread[0] not in provider.threads[1:]  # refreshed on a worker thread


def test_static_credentials_are_frozen_without_a_thread(emulator: tuple[str, Any]) -> None:
    _, state = emulator
    invoker = SageMakerInvoker.from_settings(_settings())
    with mock.patch("asyncio.to_thread") as to_thread:
        asyncio.run(_read(invoker.open(BACKEND, BODY)))
    to_thread.assert_not_called()
    assert "Credential=AKIDTEST/" in state.requests[0].headers["authorization"]


# --- endpoint resolution: botocore's own, once ------------------------------------------------


def test_the_service_specific_endpoint_variable_is_honoured(aws_env: pytest.MonkeyPatch) -> None:
    aws_env.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    aws_env.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", "http://localhost:9/base/")
    runtime = _runtime(SageMakerInvoker.from_settings(_settings()))
    assert runtime.resolution.base_url == "http://localhost:9/base"
    url, head = asyncio.run(runtime.request(BACKEND, BODY))
    assert url == "http://localhost:9/base/endpoints/ep-a/invocations-response-stream"
    assert head.startswith(b"POST /base/endpoints/ep-a/invocations-response-stream HTTP/1.1\r\n")
    assert b"\r\nHost: localhost:9\r\n" in head


def test_the_global_endpoint_variable_is_honoured(aws_env: pytest.MonkeyPatch) -> None:
    aws_env.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")
    runtime = _runtime(SageMakerInvoker.from_settings(_settings()))
    assert runtime.resolution.base_url == "http://127.0.0.1:4566"


@pytest.mark.parametrize(
    ("region", "fips", "expected"),
    [
        ("eu-west-1", None, "https://runtime.sagemaker.eu-west-1.amazonaws.com"),
        ("us-east-2", "true", "https://runtime-fips.sagemaker.us-east-2.amazonaws.com"),
        ("cn-north-1", None, "https://runtime.sagemaker.cn-north-1.amazonaws.com.cn"),
    ],
)
def test_without_a_variable_the_regions_endpoint_is_botocores(
    aws_env: pytest.MonkeyPatch, region: str, fips: str | None, expected: str
) -> None:
    aws_env.setenv("AWS_DEFAULT_REGION", region)
    if fips:
        aws_env.setenv("AWS_USE_FIPS_ENDPOINT", fips)
    runtime = _runtime(SageMakerInvoker.from_settings(_settings()))
    assert runtime.resolution.base_url == expected
    assert (runtime.resolution.signing_name, runtime.resolution.region) == ("sagemaker", region)
    assert runtime.host == expected.removeprefix("https://")


def test_a_proxy_keeps_the_botocore_client(aws_env: pytest.MonkeyPatch) -> None:
    aws_env.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    invoker = SageMakerInvoker.from_settings(_settings())
    assert invoker.runtime is None
    assert type(invoker.open(BACKEND, BODY)).__name__ == "UpstreamStream"


def test_no_proxy_for_the_endpoint_keeps_the_event_loop_client(
    aws_env: pytest.MonkeyPatch,
) -> None:
    aws_env.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    aws_env.setenv("NO_PROXY", ".amazonaws.com")
    assert SageMakerInvoker.from_settings(_settings()).runtime is not None


# --- event-stream decoding: botocore's results, any part boundaries ---------------------------

_SHAPE = (
    botocore.session.get_session()
    .get_service_model("sagemaker-runtime")
    .operation_model(OPERATION)
    .output_shape.members["Body"]
)


def _botocore_events(data: bytes) -> list[Any]:
    """What botocore's own ``EventStream`` yields (or raises) for ``data``."""

    class Raw:
        def stream(self) -> Iterator[bytes]:
            yield data

    out: list[Any] = []
    try:
        for event in EventStream(Raw(), _SHAPE, EventStreamJSONParser(), OPERATION):
            out.append(event["PayloadPart"]["Bytes"])
    except EventStreamError as exc:
        out.append(exc.response)
    return out


def _decoded(data: bytes, cuts: list[int]) -> list[Any]:
    runtime_parse = SageMakerRuntime.parse_event
    holder = mock.Mock(_event_parser=EventStreamJSONParser(), _stream_shape=_SHAPE)
    decoder = EventStreamDecoder(lambda message: runtime_parse(holder, message))
    out: list[Any] = []
    bounds = [0, *sorted(set(cuts)), len(data)]
    try:
        for start, end in itertools.pairwise(bounds):
            payloads: list[bytes] = []
            try:
                decoder.feed(data[start:end], payloads)
            finally:
                out.extend(payloads)
    except EventStreamError as exc:
        out.append(exc.response)
    return out


_PAYLOADS = st.lists(st.binary(min_size=0, max_size=300), min_size=1, max_size=12)
# PayloadPart events as SageMaker's encoder writes them (local.eventstream), with the headers
# in another order, and without :message-type (botocore then still parses a PayloadPart).
_STYLES = {
    "sagemaker": payload_part,
    "reordered": lambda p: encode_message(
        [(":message-type", "event"), (":event-type", "PayloadPart")], p
    ),
    "no message type": lambda p: encode_message([(":event-type", "PayloadPart")], p),
}


@settings(max_examples=200, deadline=None)
@given(
    payloads=_PAYLOADS,
    data=st.data(),
    fault=st.sampled_from([None, "model", "internal"]),
    style=st.sampled_from(sorted(_STYLES)),
)
def test_decoding_matches_botocore_across_any_part_boundaries(
    payloads: list[bytes], data: st.DataObject, fault: str | None, style: str
) -> None:
    stream = b"".join(_STYLES[style](p) for p in payloads)
    if fault == "model":
        stream += model_stream_error("model died", "StreamBroken") + payload_part(b"never")
    elif fault == "internal":
        stream += internal_stream_failure("oops")
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=20))
    expected = _botocore_events(stream)
    assert _decoded(stream, cuts) == expected
    if fault is None:
        assert expected == payloads
    else:
        assert expected[-1]["Error"]["Code"] in ("ModelStreamError", "InternalStreamFailure")


def test_every_byte_alone_decodes_the_same() -> None:
    stream = b"".join(payload_part(f"data: {i}\n\n".encode()) for i in range(20))
    assert _decoded(stream, list(range(len(stream)))) == _botocore_events(stream)


def test_a_corrupt_message_is_refused_like_botocore() -> None:
    frame = bytearray(payload_part(b"data: hello\n\n"))
    frame[-6] ^= 0xFF  # a payload byte: the message CRC no longer matches
    buffer = EventStreamBuffer()
    buffer.add_data(bytes(frame))
    with pytest.raises(ChecksumMismatch):
        next(buffer)
    decoder = EventStreamDecoder(lambda message: None)
    with pytest.raises(ChecksumMismatch):
        decoder.feed(bytes(frame), [])


def test_a_prelude_crc_mismatch_is_refused() -> None:
    frame = bytearray(payload_part(b"x"))
    frame[9] ^= 0x01
    with pytest.raises(ChecksumMismatch):
        EventStreamDecoder(lambda message: None).feed(bytes(frame), [])


# --- through the emulator: parts, connection reuse, release on close --------------------------


def test_parts_arrive_whole_and_the_connection_is_reused(emulator: tuple[str, Any]) -> None:
    _, state = emulator
    state.set_scenario("ep-a", Scenario(content="Hello there, how are you?", part_size=3))
    invoker = SageMakerInvoker.from_settings(_settings())
    runtime = _runtime(invoker)

    async def run() -> list[bytes]:
        bodies = [await _read(invoker.open(BACKEND, BODY)) for _ in range(3)]
        pool = runtime.pool()
        assert (pool.opened, pool.idle()) == (1, 1)
        return bodies

    bodies = asyncio.run(run())
    assert len(set(bodies)) == 3  # distinct ids, same content
    for body in bodies:
        assert b'"content":" how"' in body
        assert body.endswith(b"data: [DONE]\n\n")


def test_closing_mid_stream_releases_the_connection_at_once(emulator: tuple[str, Any]) -> None:
    """The model is silent after its first token (a barrier): close() must not wait for it,
    and the server must see the connection go (its stream stops waiting)."""
    _, state = emulator
    state.set_scenario("ep-a", Scenario(content="one two three", barrier="hold",
                                        barrier_timeout_s=10))  # fmt: skip
    invoker = SageMakerInvoker.from_settings(_settings())
    runtime = _runtime(invoker)

    async def run() -> None:
        stream = invoker.open(BACKEND, BODY)
        first = await anext(aiter(stream))
        assert b'"content":"one"' in first or b'"role"' in first
        assert await asyncio.to_thread(state.barriers.wait_for_waiters, "hold", 1, 5)
        pool = runtime.pool()
        assert pool.open_now == 1
        stream.close()
        await asyncio.sleep(0)
        assert pool.open_now == 0
        assert pool.idle() == 0
        with pytest.raises(StopAsyncIteration):
            await anext(aiter(stream))
        deadline = time.monotonic() + 2
        while state.barriers.waiting("hold") and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert state.barriers.waiting("hold") == 0  # the emulator saw the disconnect
        state.set_scenario("ep-a", Scenario(content="again"))
        assert b'"content":"again"' in await _read(invoker.open(BACKEND, BODY))
        assert pool.opened == 2  # a new connection, not the closed one

    asyncio.run(run())


def test_cancelling_the_reader_then_closing_releases_the_connection(
    emulator: tuple[str, Any],
) -> None:
    """What service._attempt does at its first-byte deadline: the waiting task is cancelled,
    then the stream closed."""
    _, state = emulator
    state.set_scenario("ep-a", Scenario(content="late", first_token_delay_ms=5000))
    invoker = SageMakerInvoker.from_settings(_settings())
    runtime = _runtime(invoker)

    async def run() -> None:
        stream = invoker.open(BACKEND, BODY)
        assert b'"role":"assistant"' in await anext(aiter(stream))  # then 5 s of silence
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(aiter(stream)), 0.3)
        pool = runtime.pool()
        assert pool.open_now == 1
        stream.close()
        await asyncio.sleep(0)
        assert (pool.open_now, pool.idle()) == (0, 0)

    asyncio.run(run())


def test_a_slow_consumer_pauses_reading(emulator: tuple[str, Any]) -> None:
    _, state = emulator
    state.set_scenario("ep-a", Scenario(content=" t" * 20_000))
    invoker = SageMakerInvoker.from_settings(_settings())

    async def run() -> int:
        stream = invoker.open(BACKEND, BODY)
        assert isinstance(stream, RuntimeStream)
        first = await anext(aiter(stream))
        await asyncio.sleep(0.5)  # the emulator writes everything meanwhile
        connection = stream._connection
        assert connection is not None
        assert connection.transport is not None
        assert not connection.transport.is_reading()  # paused at the high-water mark
        rest = b"".join([part async for part in stream])
        stream.close()
        return (first + rest).count(b'"content":" t"')

    assert asyncio.run(run()) == 20_000


# --- faults by kind, as with boto3 ------------------------------------------------------------


class _RawServer:
    """Answers each connection with ``reply`` (None: nothing), then closes it."""

    def __init__(self, reply: bytes | None, *, close: bool = True) -> None:
        self.reply = reply
        self.close = close
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        await reader.readuntil(b"\r\n\r\n")
        if self.reply is not None:
            writer.write(self.reply)
            await writer.drain()
        if self.close:
            writer.close()
        else:
            await asyncio.sleep(3600)


def _invoker(settings: Settings, implementation: str) -> SageMakerInvoker:
    """``native``: from_settings (the event-loop client); ``boto3``: the same settings on the
    botocore client with a thread per stream (the previous implementation, the fallback)."""
    invoker = SageMakerInvoker.from_settings(settings)
    if implementation == "boto3":
        return SageMakerInvoker(invoker._client)
    return invoker


async def _fault(
    monkeypatch: pytest.MonkeyPatch, server: _RawServer, implementation: str, **extra: str
) -> Any:
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", f"http://127.0.0.1:{port}")
    invoker = _invoker(_settings(**extra), implementation)
    try:
        return await _read(invoker.open(BACKEND, BODY))
    finally:
        listener.close()


IMPLEMENTATIONS = pytest.mark.parametrize("implementation", ["native", "boto3"])


_HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: application/vnd.amazon.eventstream\r\n"
         b"transfer-encoding: chunked\r\n\r\n")  # fmt: skip


@IMPLEMENTATIONS
@pytest.mark.parametrize(
    "reply",
    [
        None,  # closed before the response
        _HEAD + b"20\r\n" + payload_part(b"data: x\n\n")[:10],  # cut mid-stream
        b"NOT HTTP\r\n\r\n",
    ],
    ids=["before the response", "mid-stream", "not HTTP"],
)
def test_connection_faults_are_classified_as_with_boto3(
    aws_env: pytest.MonkeyPatch, reply: bytes | None, implementation: str
) -> None:
    """botocore raises ConnectionClosedError (an HTTPClientError, not a ConnectionError)
    before the stream and urllib3's ProtocolError within it: both "internal", retryable."""
    with pytest.raises(UpstreamError) as raised:
        asyncio.run(_fault(aws_env, _RawServer(reply), implementation))
    assert (raised.value.kind, raised.value.retryable) == ("internal", True)


def test_a_response_cut_inside_its_headers_is_a_failure(aws_env: pytest.MonkeyPatch) -> None:
    """(http.client, under boto3, takes the partial header block for a complete one and
    yields an empty 200 stream, which the service reports as an incomplete stream.)"""
    with pytest.raises(UpstreamError) as raised:
        asyncio.run(_fault(aws_env, _RawServer(b"HTTP/1.1 200 OK\r\ncontent-le"), "native"))
    assert (raised.value.kind, raised.value.retryable) == ("internal", True)


@IMPLEMENTATIONS
@pytest.mark.parametrize("reply", [None, _HEAD], ids=["before the headers", "after them"])
def test_read_timeouts_before_and_after_the_headers(
    aws_env: pytest.MonkeyPatch, reply: bytes | None, implementation: str
) -> None:
    server = _RawServer(reply, close=False)
    started = time.monotonic()
    with pytest.raises(UpstreamError) as raised:
        asyncio.run(
            _fault(aws_env, server, implementation, LLM_GATEWAY_UPSTREAM_READ_TIMEOUT_S="0.3")
        )
    assert (raised.value.kind, raised.value.retryable) == ("timeout", True)
    assert time.monotonic() - started < 3


@IMPLEMENTATIONS
def test_a_refused_connection_is_a_connection_fault(
    aws_env: pytest.MonkeyPatch, implementation: str
) -> None:
    aws_env.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", f"http://127.0.0.1:{free_port()}")
    invoker = _invoker(_settings(), implementation)
    with pytest.raises(UpstreamError) as raised:
        asyncio.run(_read(invoker.open(BACKEND, BODY)))
    assert (raised.value.kind, raised.value.to_gateway_error().code) == (
        "connection", "upstream_unreachable",
    )  # fmt: skip


def test_a_connect_timeout_is_a_timeout(aws_env: pytest.MonkeyPatch) -> None:
    """A connection that is never made (the loop's connect hangs, as for a SYN nobody
    answers) ends at the connect timeout, as botocore's ConnectTimeoutError."""
    aws_env.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", "http://127.0.0.1:9")
    invoker = SageMakerInvoker.from_settings(
        _settings(LLM_GATEWAY_UPSTREAM_CONNECT_TIMEOUT_S="0.2")
    )

    async def hang(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(30)

    started = time.monotonic()
    with (
        mock.patch.object(asyncio.BaseEventLoop, "create_connection", hang),
        pytest.raises(UpstreamError) as raised,
    ):
        asyncio.run(_read(invoker.open(BACKEND, BODY)))
    assert (raised.value.kind, raised.value.to_gateway_error().status) == ("timeout", 504)
    assert time.monotonic() - started < 2


def test_a_connection_the_server_closed_while_idle_is_not_reused(
    aws_env: pytest.MonkeyPatch,
) -> None:
    """The server closes every connection after one response (as at a keep-alive timeout);
    the next request must open a new one, not fail on the closed one."""
    frames = payload_part(b'data: {"choices": []}\n\n')
    reply = _HEAD + b"%x\r\n%b\r\n0\r\n\r\n" % (len(frames), frames)
    server = _RawServer(reply)

    async def run() -> None:
        listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        aws_env.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", f"http://127.0.0.1:{port}")
        invoker = SageMakerInvoker.from_settings(_settings())
        for _ in range(3):
            assert await _read(invoker.open(BACKEND, BODY)) == b'data: {"choices": []}\n\n'
            await asyncio.sleep(0.05)
        listener.close()

    asyncio.run(run())
    assert server.connections == 3


def test_an_unknown_endpoint_is_botocores_validation_error(emulator: tuple[str, Any]) -> None:
    _, state = emulator
    state.default = None
    invoker = SageMakerInvoker.from_settings(_settings())
    with pytest.raises(UpstreamError) as raised:
        asyncio.run(_read(invoker.open(BACKEND, BODY)))
    assert raised.value.kind == "misconfigured"
    assert raised.value.detail.startswith("ValidationError: Endpoint ep-a of account")


def test_a_model_4xx_keeps_its_status_and_message(emulator: tuple[str, Any]) -> None:
    _, state = emulator
    state.set_scenario("ep-a", Scenario(error_before_stream="ModelError", model_error_status=422,
                                        model_error_message="too long"))  # fmt: skip
    invoker = SageMakerInvoker.from_settings(_settings())
    with pytest.raises(UpstreamError) as raised:
        asyncio.run(_read(invoker.open(BACKEND, BODY)))
    assert (raised.value.kind, raised.value.original_status) == ("model_rejected", 422)
    assert raised.value.detail == "too long"


# --- TLS: botocore's context and CA bundle, host names checked ------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for ``localhost`` (cert path, key path)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    directory = tmp_path_factory.mktemp("tls")
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    return str(cert_path), str(key_path)


async def _tls_call(
    monkeypatch: pytest.MonkeyPatch, certificate: tuple[str, str], host: str, bundle: bool
) -> bytes:
    import ssl

    frames = payload_part(b"data: [DONE]\n\n")
    server = _RawServer(_HEAD + b"%x\r\n%b\r\n0\r\n\r\n" % (len(frames), frames))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0, ssl=context)
    port = listener.sockets[0].getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", f"https://{host}:{port}")
    if bundle:
        monkeypatch.setenv("AWS_CA_BUNDLE", certificate[0])
    invoker = SageMakerInvoker.from_settings(_settings())
    try:
        return await _read(invoker.open(BACKEND, BODY))
    finally:
        listener.close()


def test_https_with_the_configured_ca_bundle(
    aws_env: pytest.MonkeyPatch, certificate: tuple[str, str]
) -> None:
    assert asyncio.run(_tls_call(aws_env, certificate, "localhost", True)) == b"data: [DONE]\n\n"


@pytest.mark.parametrize(
    ("host", "bundle"), [("localhost", False), ("127.0.0.1", True)],
    ids=["unknown issuer", "host name not in the certificate"],
)  # fmt: skip
def test_a_certificate_that_does_not_verify_is_a_connection_fault(
    aws_env: pytest.MonkeyPatch, certificate: tuple[str, str], host: str, bundle: bool
) -> None:
    with pytest.raises(UpstreamError) as raised:
        asyncio.run(_tls_call(aws_env, certificate, host, bundle))
    assert (raised.value.kind, raised.value.detail) == ("connection", "SSLError")


def test_a_control_character_in_custom_attributes_is_refused(emulator: tuple[str, Any]) -> None:
    _, state = emulator
    backend = BACKEND.model_copy(update={"custom_attributes": "a=b\r\nX-Injected: 1"})
    invoker = SageMakerInvoker.from_settings(_settings())
    with pytest.raises(UpstreamError) as raised:
        asyncio.run(_read(invoker.open(backend, BODY)))
    assert raised.value.kind == "internal"
    assert state.requests == []
