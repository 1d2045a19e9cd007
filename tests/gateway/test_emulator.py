"""The SageMaker-runtime emulator, driven by a real boto3 client over loopback."""

from __future__ import annotations

import json
import queue
import re
import struct
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import pytest
from botocore.eventstream import ChecksumMismatch, EventStreamBuffer, EventStreamMessage
from botocore.exceptions import ClientError, EventStreamError
from hypothesis import given
from hypothesis import strategies as st

from local.emulator import Emulator, create_emulator, load_scenarios
from local.eventstream import (
    encode_message,
    internal_stream_failure,
    model_stream_error,
    payload_part,
)
from local.scenarios import (
    Scenario,
    ScriptedToolCall,
    full_text,
    render_body,
    stream_steps,
    tokenize,
)
from local.serving import serve_in_thread

REASONING = "Think: 2+2=4, naïve café; 考虑一下 🤔.\n"
CONTENT = 'Hello, 世界! Emoji 👋🏽 and "quotes" \\ and\ttabs.\n\nBye 🎉'
CONFIG = botocore.config.Config(retries={"total_max_attempts": 1})


# ---------------------------------------------------------------- helpers


def decode_all(data: bytes, chunk: int | None = None) -> list[EventStreamMessage]:
    """Decode frames with botocore's own buffer, fed ``chunk`` bytes at a time."""
    buffer = EventStreamBuffer()
    messages: list[EventStreamMessage] = []
    step = chunk or max(len(data), 1)
    for i in range(0, len(data), step):
        buffer.add_data(data[i : i + step])
        messages.extend(buffer)
    return messages


def sse_data(text: str) -> list[str]:
    """The ``data`` field of each server-sent event (optional single space after the colon)."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        lines = [line for line in block.split("\n") if line.startswith("data:")]
        if lines:
            events.append("\n".join(line[6:] if line[5:6] == " " else line[5:] for line in lines))
    return events


def json_lines(text: str) -> list[Any]:
    return [json.loads(line) for line in text.replace("\r\n", "\n").split("\n") if line]


def openai_chunks(text: str, framing: str) -> list[Any]:
    if framing == "jsonlines":
        return json_lines(text)
    data = sse_data(text)
    assert data[-1] == "[DONE]"
    return [json.loads(d) for d in data[:-1]]


def openai_text(chunks: list[Any], field: str = "reasoning_content") -> tuple[str, str]:
    reasoning = content = ""
    for chunk in chunks:
        for choice in chunk["choices"]:
            reasoning += choice["delta"].get(field) or ""
            content += choice["delta"].get("content") or ""
    return reasoning, content


def native_events(scenario: Scenario, text: str) -> list[Any]:
    if scenario.format == "tgi":
        return [json.loads(d) for d in sse_data(text)]
    return json_lines(text)


def normalized(data: bytes) -> bytes:
    """Stream bytes with the per-response id and timestamp blanked (openai chunks)."""
    data = re.sub(rb'"id":"chatcmpl-[0-9a-f]+"', b'"id":"-"', data)
    return re.sub(rb'"created":\d+', b'"created":0', data)


def admin(url: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """Call the emulator's HTTP admin API."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


class Runtime:
    """A running emulator and a boto3 client pointed at it."""

    def __init__(self, url: str, emulator: Emulator) -> None:
        self.url = url
        self.emulator = emulator
        self.client = boto3.client(
            "sagemaker-runtime",
            region_name="us-east-1",
            endpoint_url=url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=CONFIG,
        )

    def use(self, endpoint: str, scenario: Scenario) -> str:
        self.emulator.set_scenario(endpoint, scenario)
        return endpoint

    def stream(self, endpoint: str, body: Any = None, **kwargs: Any) -> dict[str, Any]:
        payload = json.dumps(body if body is not None else {}).encode()
        response: dict[str, Any] = self.client.invoke_endpoint_with_response_stream(
            EndpointName=endpoint, Body=payload, ContentType="application/json", **kwargs
        )
        return response

    def parts(self, endpoint: str, body: Any = None) -> list[bytes]:
        return [e["PayloadPart"]["Bytes"] for e in self.stream(endpoint, body)["Body"]]

    def drain(self, endpoint: str, into: list[bytes]) -> None:
        """Collect payload parts into ``into`` until the stream ends or raises."""
        for event in self.stream(endpoint)["Body"]:
            into.append(event["PayloadPart"]["Bytes"])


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, Emulator]]:
    app = create_emulator()
    with serve_in_thread(app) as url:
        yield url, app.state.emulator


@pytest.fixture
def rt(server: tuple[str, Emulator]) -> Runtime:
    url, emulator = server
    emulator.clear_requests()
    return Runtime(url, emulator)


# ---------------------------------------------------------------- encoder


def test_payload_part_decodes_with_botocore() -> None:
    data = 'data: {"x": "é👋"}\n\n'.encode()
    (message,) = decode_all(payload_part(data))
    assert message.headers == {
        ":event-type": "PayloadPart",
        ":content-type": "application/octet-stream",
        ":message-type": "event",
    }
    assert message.payload == data


def test_exception_frames_decode_with_botocore() -> None:
    frames = model_stream_error("boom ✗", "StreamBroken") + internal_stream_failure("oops")
    first, second = decode_all(frames, chunk=3)
    assert first.headers[":message-type"] == "exception"
    assert first.headers[":exception-type"] == "ModelStreamError"
    assert json.loads(first.payload) == {"Message": "boom ✗", "ErrorCode": "StreamBroken"}
    assert second.headers[":exception-type"] == "InternalStreamFailure"
    assert json.loads(second.payload) == {"Message": "oops"}
    assert first.to_response_dict()["status_code"] == 400


def test_frame_layout_and_checksums() -> None:
    frame = encode_message([(":event-type", "PayloadPart")], b"abc")
    total, headers_len = struct.unpack(">II", frame[:8])
    assert total == len(frame)
    assert headers_len == 1 + len(":event-type") + 1 + 2 + len("PayloadPart")
    corrupted = frame[:-5] + bytes([frame[-5] ^ 0xFF]) + frame[-4:]
    with pytest.raises(ChecksumMismatch):
        decode_all(corrupted)


@given(st.lists(st.binary(max_size=300), max_size=8), st.integers(1, 64))
def test_any_payloads_roundtrip_in_any_chunking(payloads: list[bytes], chunk: int) -> None:
    stream = b"".join(payload_part(p) for p in payloads)
    assert [m.payload for m in decode_all(stream, chunk)] == payloads


def test_header_limits() -> None:
    with pytest.raises(ValueError, match="header name"):
        encode_message([("", "x")], b"")
    with pytest.raises(ValueError, match="exceeds"):
        encode_message([("n", "x" * 70_000)], b"")


# ---------------------------------------------------------------- scenarios (pure)


@given(st.text())
def test_tokens_join_back_to_the_text(text: str) -> None:
    tokens = tokenize(text)
    assert "".join(tokens) == text
    assert all(tokens)


def test_tokens_keep_leading_whitespace() -> None:
    assert tokenize(" Hi there, 世界 👋!\n") == [
        " Hi",
        " there",
        ",",
        " 世",
        "界",
        " 👋",
        "!",
        "\n",
    ]


def test_scenario_rejects_unknown_fields_and_tgi_finish_error() -> None:
    with pytest.raises(ValueError, match="extra"):
        Scenario.model_validate({"contents": "x"})
    with pytest.raises(ValueError, match="finish_error"):
        Scenario(format="tgi", fault="finish_error", fault_after_tokens=1)


def test_stream_bytes_are_deterministic_for_native_formats() -> None:
    for fmt in ("lmi", "tgi"):
        scenario = Scenario(format=fmt, content=CONTENT)
        assert stream_steps(scenario) == stream_steps(scenario)


# ---------------------------------------------------------------- streaming round trips


OPENAI_CASES = [
    pytest.param("sse", "reasoning_content", "\n", id="sse-reasoning_content"),
    pytest.param("sse", "reasoning", "\r\n", id="sse-reasoning-crlf"),
    pytest.param("jsonlines", "reasoning_content", "\n", id="jsonlines"),
]


@pytest.mark.parametrize(("framing", "field", "le"), OPENAI_CASES)
def test_openai_stream_roundtrip(rt: Runtime, framing: str, field: str, le: str) -> None:
    scenario = Scenario.model_validate(
        {
            "format": "openai",
            "openai_framing": framing,
            "reasoning_field": field,
            "line_ending": le,
            "reasoning": REASONING,
            "content": CONTENT,
            "prompt_tokens": 7,
        }
    )
    endpoint = rt.use(f"openai-{framing}-{field}", scenario)
    response = rt.stream(endpoint, {"stream": True, "stream_options": {"include_usage": True}})
    assert response["ContentType"] == scenario.stream_content_type
    assert response["InvokedProductionVariant"] == "AllTraffic"
    assert response["ResponseMetadata"]["HTTPHeaders"]["content-type"] == (
        "application/vnd.amazon.eventstream"
    )
    parts = [e["PayloadPart"]["Bytes"] for e in response["Body"]]
    text = b"".join(parts).decode()
    assert all(part.endswith(le.encode()) for part in parts)  # one part per event
    chunks = openai_chunks(text, framing)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert openai_text(chunks, field) == (REASONING, CONTENT)
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    completion = len(tokenize(REASONING)) + len(tokenize(CONTENT))
    assert chunks[-1] == {
        **chunks[-1],
        "choices": [],
        "usage": {
            "prompt_tokens": 7,
            "completion_tokens": completion,
            "total_tokens": 7 + completion,
        },
    }


TOOL_ARGS = '{"city": "Zürich", "days": [1, 2]}'


def test_openai_tool_call_stream_as_vllm_sends_it(rt: Runtime) -> None:
    scenario = Scenario(
        content="",
        finish_reason="tool_calls",
        tool_calls=(ScriptedToolCall(name="get_weather", arguments=TOOL_ARGS, id="call_1"),),
        tool_arguments_piece=4,
        cached_tokens=5,
        reasoning_tokens=0,
        part_size=3,
    )
    endpoint = rt.use("openai-tools", scenario)
    request = {"stream": True, "stream_options": {"include_usage": True}}
    chunks = openai_chunks(b"".join(rt.parts(endpoint, request)).decode(), "sse")
    items = [
        item
        for c in chunks
        if c["choices"]
        for item in c["choices"][0]["delta"].get("tool_calls", ())
    ]
    assert items[0] == {
        "id": "call_1", "type": "function", "index": 0, "function": {"name": "get_weather"}
    }  # fmt: skip
    assert all(set(item) == {"index", "function"} for item in items[1:])
    assert "".join(item["function"]["arguments"] for item in items[1:]) == TOOL_ARGS
    assert len(items) == 1 + -(-len(TOOL_ARGS) // 4)
    finish = chunks[-2]["choices"][0]
    assert (finish["finish_reason"], finish["delta"]["tool_calls"]) == ("tool_calls", items[-1:])
    usage = chunks[-1]["usage"]
    assert usage["prompt_tokens_details"] == {"cached_tokens": 5}
    assert usage["completion_tokens_details"] == {"reasoning_tokens": 0}
    assert usage["completion_tokens"] == len(items)


def test_tool_calls_only_in_the_openai_format() -> None:
    with pytest.raises(ValueError, match="openai format"):
        Scenario(format="lmi", tool_calls=(ScriptedToolCall(name="f"),))


def test_content_json_is_the_answer_and_logprobs_follow_the_request() -> None:
    scenario = Scenario(content_json={"city": "Paris", "temp_c": 21})
    assert scenario.answer == '{"city":"Paris","temp_c":21}'
    steps = stream_steps(scenario, {"logprobs": True, "top_logprobs": 1})
    tokens = [json.loads(s.data.decode()[6:]) for s in steps if getattr(s, "token", False)]
    logprobs = [t["choices"][0]["logprobs"]["content"][0] for t in tokens]
    assert "".join(e["token"] for e in logprobs) == scenario.answer
    assert all(len(e["top_logprobs"]) == 1 for e in logprobs)
    body = json.loads(render_body(scenario.model_copy(update={"tool_calls": (
        ScriptedToolCall(name="f", arguments="{}", id="c"),)})))  # fmt: skip
    assert body["choices"][0]["message"]["tool_calls"] == [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    ]


def test_openai_usage_only_when_asked(rt: Runtime) -> None:
    endpoint = rt.use("openai-no-usage", Scenario(finish_reason="length"))
    chunks = openai_chunks(b"".join(rt.parts(endpoint, {"stream": True})).decode(), "sse")
    assert all("usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize("fmt", ["lmi", "tgi"])
@pytest.mark.parametrize("details", [True, False])
def test_native_stream_roundtrip(rt: Runtime, fmt: str, details: bool) -> None:
    scenario = Scenario.model_validate(
        {"format": fmt, "reasoning": REASONING, "content": CONTENT, "prompt_tokens": 9}
    )
    endpoint = rt.use(f"{fmt}-roundtrip", scenario)
    request = {"inputs": "Say hi", "parameters": {"details": details}}
    events = native_events(scenario, b"".join(rt.parts(endpoint, request)).decode())
    expected = f"<think>{REASONING}</think>{CONTENT}"
    assert "".join(e["token"]["text"] for e in events) == expected == full_text(scenario)
    assert all("generated_text" not in e or e["generated_text"] is None for e in events[:-1])
    last = events[-1]
    assert last["generated_text"] == expected
    if fmt == "tgi":
        assert [e["index"] for e in events] == list(range(1, len(events) + 1))
        assert all(set(e["token"]) == {"id", "text", "logprob", "special"} for e in events)
    else:
        assert all(set(e["token"]) == {"id", "text", "log_prob"} for e in events)
    if not details:
        assert last.get("details") is None
    elif fmt == "tgi":
        assert last["details"] == {
            "finish_reason": "eos_token",
            "generated_tokens": len(events),
            "seed": None,
            "input_length": 9,
        }
    else:
        assert last["details"] == {
            "finish_reason": "eos_token",
            "generated_tokens": len(events),
            "inputs": "Say hi",
        }


def test_native_without_reasoning_has_no_think_tags(rt: Runtime) -> None:
    endpoint = rt.use("tgi-plain", Scenario(format="tgi", content=CONTENT))
    events = native_events(Scenario(format="tgi"), b"".join(rt.parts(endpoint)).decode())
    assert "".join(e["token"]["text"] for e in events) == CONTENT


@pytest.mark.parametrize("fmt", ["openai", "lmi", "tgi"])
def test_part_size_recuts_the_same_bytes(rt: Runtime, fmt: str) -> None:
    base = Scenario.model_validate(
        {"format": fmt, "reasoning": "…", "content": "Hi 👋世", "line_ending": "\r\n"}
    )
    whole = b"".join(rt.parts(rt.use(f"{fmt}-whole", base)))
    for size in range(1, 8):
        endpoint = rt.use(f"{fmt}-cut-{size}", base.model_copy(update={"part_size": size}))
        parts = rt.parts(endpoint)
        assert all(len(p) == size for p in parts[:-1])
        assert 0 < len(parts[-1]) <= size
        assert normalized(b"".join(parts)) == normalized(whole)


def test_part_size_splits_multibyte_characters(rt: Runtime) -> None:
    endpoint = rt.use("split-utf8", Scenario(format="lmi", content="👋👋👋", part_size=3))
    parts = rt.parts(endpoint)
    undecodable = 0
    for part in parts:
        try:
            part.decode()
        except UnicodeDecodeError:
            undecodable += 1
    assert undecodable > 0


def test_token_delay_spaces_the_tokens(rt: Runtime) -> None:
    endpoint = rt.use("slow", Scenario(format="tgi", content="a b c d e", token_delay_ms=20))
    start = time.monotonic()
    assert len(rt.parts(endpoint)) == 5
    assert time.monotonic() - start >= 4 * 0.02


# ---------------------------------------------------------------- faults


@pytest.mark.parametrize(
    ("fault", "code"),
    [("ModelStreamError", "ModelStreamError"), ("InternalStreamFailure", "InternalStreamFailure")],
)
def test_stream_exceptions_surface_from_boto3(rt: Runtime, fault: str, code: str) -> None:
    scenario = Scenario.model_validate(
        {
            "content": CONTENT,
            "fault_after_tokens": 3,
            "fault": fault,
            "fault_code": "StreamBroken",
            "fault_message": "connection reset",
            "part_size": 5,
        }
    )
    received: list[bytes] = []
    with pytest.raises(EventStreamError) as info:
        rt.drain(rt.use(f"fault-{fault}", scenario), received)
    assert info.value.response["Error"] == {"Code": code, "Message": "connection reset"}
    _, content = openai_text([json.loads(d) for d in sse_data(b"".join(received).decode())])
    assert content == "".join(tokenize(CONTENT)[:3])


def test_model_stream_error_frame_carries_error_code(rt: Runtime) -> None:
    endpoint = rt.use("fault-raw", Scenario(fault_after_tokens=0, fault_code="StreamBroken"))
    req = urllib.request.Request(
        f"{rt.url}/endpoints/{endpoint}/invocations-response-stream", data=b"{}", method="POST"
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        messages = decode_all(resp.read())
    assert json.loads(messages[-1].payload)["ErrorCode"] == "StreamBroken"


@pytest.mark.parametrize("style", ["nested", "legacy", "flat"])
@pytest.mark.parametrize("framing", ["sse", "jsonlines"])
def test_openai_inband_error(rt: Runtime, style: str, framing: str) -> None:
    scenario = Scenario.model_validate(
        {
            "fault": "inband_error",
            "fault_after_tokens": 2,
            "openai_error_style": style,
            "openai_framing": framing,
            "fault_message": "generation failed",
        }
    )
    chunks = openai_chunks(b"".join(rt.parts(rt.use("inband", scenario))).decode(), framing)
    error = chunks[-1]
    info = error if style == "flat" else error["error"]
    assert info["message"] == "generation failed"
    assert (info.get("object") == "error") == (style != "nested")
    assert openai_text(chunks[:-1])[1] == "Hello from"


def test_openai_finish_error(rt: Runtime) -> None:
    scenario = Scenario(fault="finish_error", fault_after_tokens=1)
    chunks = openai_chunks(b"".join(rt.parts(rt.use("finerr", scenario))).decode(), "sse")
    assert chunks[-1]["choices"][0]["finish_reason"] == "error"
    assert openai_text(chunks)[1] == "Hello"


def test_native_inband_and_finish_errors(rt: Runtime) -> None:
    lmi = Scenario(format="lmi", fault="inband_error", fault_after_tokens=1, fault_message="bad")
    assert json_lines(b"".join(rt.parts(rt.use("lmi-err", lmi))).decode())[-1] == {
        "error": "bad",
        "code": 424,
    }
    lmi_finish = lmi.model_copy(update={"fault": "finish_error"})
    last = json_lines(b"".join(rt.parts(rt.use("lmi-fin", lmi_finish))).decode())[-1]
    assert last["details"]["finish_reason"] == "error"
    assert last["token"]["id"] == -1
    tgi = Scenario(format="tgi", fault="inband_error", fault_after_tokens=1, fault_message="bad")
    events = native_events(tgi, b"".join(rt.parts(rt.use("tgi-err", tgi))).decode())
    assert events[-1] == {"error": "bad", "error_type": "generation"}
    assert [e["token"]["text"] for e in events[:-1]] == ["Hello"]


def test_fault_after_all_tokens_skips_the_finish(rt: Runtime) -> None:
    scenario = Scenario(format="tgi", content="a b", fault_after_tokens=99)
    received: list[bytes] = []
    with pytest.raises(EventStreamError):
        rt.drain(rt.use("late-fault", scenario), received)
    events = native_events(scenario, b"".join(received).decode())
    assert [e["token"]["text"] for e in events] == ["a", " b"]
    assert all(e["generated_text"] is None for e in events)


# ---------------------------------------------------------------- errors before the stream


@pytest.mark.parametrize(
    ("kind", "status"),
    [
        ("ValidationError", 400),
        ("ThrottlingException", 400),
        ("InternalFailure", 500),
        ("ServiceUnavailable", 503),
    ],
)
def test_pre_stream_errors(rt: Runtime, kind: str, status: int) -> None:
    endpoint = rt.use(f"err-{kind}", Scenario.model_validate({"error_before_stream": kind}))
    with pytest.raises(ClientError) as info:
        rt.stream(endpoint)
    assert info.value.response["Error"]["Code"] == kind
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    with pytest.raises(ClientError) as buffered:
        rt.client.invoke_endpoint(EndpointName=endpoint, Body=b"{}")
    assert buffered.value.response["Error"]["Code"] == kind


def test_throttling_status_override(rt: Runtime) -> None:
    scenario = Scenario(error_before_stream="ThrottlingException", error_status=429)
    with pytest.raises(ClientError) as info:
        rt.stream(rt.use("throttled-429", scenario))
    assert info.value.response["Error"]["Code"] == "ThrottlingException"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429


@pytest.mark.parametrize(("original", "side"), [(400, "client"), (500, "server")])
def test_model_error(rt: Runtime, original: int, side: str) -> None:
    scenario = Scenario(
        error_before_stream="ModelError",
        model_error_status=original,
        model_error_message="bad input",
    )
    endpoint = rt.use(f"model-error-{original}", scenario)
    with pytest.raises(rt.client.exceptions.ModelError) as info:
        rt.stream(endpoint)
    response = info.value.response
    assert response["Error"]["Code"] == "ModelError"
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert response["OriginalStatusCode"] == original
    assert response["OriginalMessage"] == "bad input"
    assert response["LogStreamArn"].endswith(f"/aws/sagemaker/Endpoints/{endpoint}")
    assert f"Received {side} error ({original}) from primary" in response["Error"]["Message"]


def test_unknown_endpoint_is_a_validation_error(rt: Runtime) -> None:
    with pytest.raises(ClientError) as info:
        rt.stream("no-such-endpoint")
    assert info.value.response["Error"] == {
        "Code": "ValidationError",
        "Message": "Endpoint no-such-endpoint of account 000000000000 not found.",
    }


def test_default_scenario_answers_unknown_endpoints() -> None:
    app = create_emulator(default=Scenario(format="lmi", content="fallback"))
    with serve_in_thread(app) as url:
        rt = Runtime(url, app.state.emulator)
        lines = json_lines(b"".join(rt.parts("anything")).decode())
    assert lines[-1]["generated_text"] == "fallback"


# ---------------------------------------------------------------- recording


def test_requests_are_recorded(rt: Runtime) -> None:
    endpoint = rt.use("recorded", Scenario())
    body = {"messages": [{"role": "user", "content": "héllo"}], "stream": True}
    response = rt.stream(
        endpoint, body, CustomAttributes="trace=abc-123", Accept="text/event-stream"
    )
    list(response["Body"])
    (recorded,) = rt.emulator.requests
    assert recorded.endpoint == endpoint
    assert recorded.operation == "InvokeEndpointWithResponseStream"
    assert recorded.path == f"/endpoints/{endpoint}/invocations-response-stream"
    assert recorded.body == body
    assert recorded.headers["x-amzn-sagemaker-custom-attributes"] == "trace=abc-123"
    assert recorded.headers["x-amzn-sagemaker-accept"] == "text/event-stream"
    assert recorded.headers["content-type"] == "application/json"
    status, listed = admin(rt.url, "GET", "/_emulator/requests")
    assert status == 200
    assert listed[0]["headers"]["x-amzn-sagemaker-custom-attributes"] == "trace=abc-123"
    assert listed[0]["body"] == body
    assert admin(rt.url, "DELETE", "/_emulator/requests") == (204, None)
    assert rt.emulator.requests == []


def test_scenarios_can_be_put_over_http(rt: Runtime) -> None:
    status, echoed = admin(rt.url, "PUT", "/_emulator/scenarios/put-me", {"format": "tgi"})
    assert status == 200
    assert echoed["format"] == "tgi"
    assert rt.emulator.scenario_for("put-me") == Scenario(format="tgi")
    status, error = admin(rt.url, "PUT", "/_emulator/scenarios/put-me", {"colour": "red"})
    assert status == 422
    assert error["detail"][0]["type"] == "extra_forbidden"
    status, listed = admin(rt.url, "GET", "/_emulator/scenarios")
    assert listed["scenarios"]["put-me"]["format"] == "tgi"


def test_env_var_endpoint_url(
    server: tuple[str, Emulator], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url, emulator = server
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.delenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", url)
    emulator.set_scenario("via-env", Scenario(content="env"))
    client = boto3.client(
        "sagemaker-runtime",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=CONFIG,
    )
    response = client.invoke_endpoint(EndpointName="via-env", Body=b"{}")
    assert json.loads(response["Body"].read())["choices"][0]["message"]["content"] == "env"


# ---------------------------------------------------------------- barriers


def _pump(rt: Runtime, endpoint: str, out: queue.Queue[Any]) -> None:
    try:
        for event in rt.stream(endpoint)["Body"]:
            out.put(event["PayloadPart"]["Bytes"])
    except Exception as exc:  # handed to the test thread
        out.put(exc)
    out.put(None)


@pytest.mark.parametrize("part_size", [None, 4])
def test_barrier_holds_the_stream_after_the_first_token(rt: Runtime, part_size: int | None) -> None:
    name = f"hold-{part_size}"
    scenario = Scenario(content="one two three", barrier=name, part_size=part_size)
    endpoint = rt.use(name, scenario)
    events: queue.Queue[Any] = queue.Queue()
    reader = threading.Thread(target=_pump, args=(rt, endpoint, events), daemon=True)
    reader.start()
    received = b""
    # Up to the end of the first token's event, however it is cut into parts.
    while b'"content":"one"' not in received or not received.endswith(b"\n\n"):
        item = events.get(timeout=5)
        assert isinstance(item, bytes), item
        received += item
    # The stream is parked at the barrier with every earlier byte flushed: nothing else can come.
    assert rt.emulator.barriers.wait_for_waiters(name, timeout=5)
    assert events.empty()
    assert admin(rt.url, "POST", f"/_emulator/barriers/{name}")[1]["released"] is True
    while (item := events.get(timeout=5)) is not None:
        assert isinstance(item, bytes), item
        received += item
    reader.join(timeout=5)
    assert openai_text(openai_chunks(received.decode(), "sse"))[1] == "one two three"


def test_barrier_released_before_the_stream_starts(rt: Runtime) -> None:
    admin(rt.url, "POST", "/_emulator/barriers/early")
    endpoint = rt.use("early", Scenario(format="lmi", content="x y", barrier="early"))
    assert json_lines(b"".join(rt.parts(endpoint)).decode())[-1]["generated_text"] == "x y"
    status, state = admin(rt.url, "DELETE", "/_emulator/barriers/early")
    assert (status, state["released"], state["waiting"]) == (200, False, 0)


def test_barrier_timeout_ends_with_model_stream_error(rt: Runtime) -> None:
    scenario = Scenario(format="tgi", content="a b c", barrier="never", barrier_timeout_s=0.1)
    received: list[bytes] = []
    with pytest.raises(EventStreamError) as info:
        rt.drain(rt.use("timeout", scenario), received)
    assert info.value.response["Error"] == {
        "Code": "ModelStreamError",
        "Message": "barrier timeout",
    }
    assert len(received) == 1
    assert rt.emulator.barriers.waiting("never") == 0


# ---------------------------------------------------------------- buffered /invocations


def test_invocations_openai(rt: Runtime) -> None:
    scenario = Scenario(reasoning=REASONING, content=CONTENT, reasoning_field="reasoning")
    response = rt.client.invoke_endpoint(
        EndpointName=rt.use("buffered-openai", scenario), Body=b'{"model": "m"}'
    )
    assert response["ContentType"] == "application/json"
    body = json.loads(response["Body"].read())
    assert body["object"] == "chat.completion"
    assert body["model"] == "m"
    message = body["choices"][0]["message"]
    assert (message["reasoning"], message["content"]) == (REASONING, CONTENT)
    assert body["usage"]["prompt_tokens"] == 12
    assert rt.emulator.requests[-1].operation == "InvokeEndpoint"


@pytest.mark.parametrize("fmt", ["lmi", "tgi"])
def test_invocations_native(rt: Runtime, fmt: str) -> None:
    scenario = Scenario.model_validate({"format": fmt, "reasoning": "hm", "content": CONTENT})
    request = json.dumps({"inputs": "q", "parameters": {"details": True}}).encode()
    response = rt.client.invoke_endpoint(
        EndpointName=rt.use(f"buffered-{fmt}", scenario), Body=request
    )
    body = json.loads(response["Body"].read())
    result = body if fmt == "lmi" else body[0]
    assert result["generated_text"] == f"<think>hm</think>{CONTENT}"
    assert result["details"]["finish_reason"] == "eos_token"
    assert json.loads(render_body(Scenario(format="tgi"))) == [
        {"generated_text": "Hello from the emulator."}
    ]


# ---------------------------------------------------------------- CLI file


def test_load_scenarios_yaml(tmp_path: Path) -> None:
    path = tmp_path / "scenarios.yaml"
    path.write_text("default:\n  format: lmi\nchat:\n  content: hi\n  part_size: 2\n")
    scenarios, default = load_scenarios(path)
    assert scenarios == {"chat": Scenario(content="hi", part_size=2)}
    assert default == Scenario(format="lmi")
    json_path = tmp_path / "scenarios.json"
    json_path.write_text(json.dumps({"x": {"format": "tgi"}}))
    assert load_scenarios(json_path) == ({"x": Scenario(format="tgi")}, None)
