"""End to end over real HTTP: openai SDK → uvicorn gateway → boto3 → emulator (event stream)."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx2 as httpx
import openai
import pytest

from llm_gateway.app import create_app
from llm_gateway.contract import READ_TIMEOUT_ENV, ROUTES_ENV
from llm_gateway.settings import Settings
from llm_gateway.upstream import SageMakerInvoker
from local.scenarios import Scenario
from local.serving import serve_in_thread
from tests.gateway.conftest import ROUTES, Servers

REASONING = "Let me think: 2+2 is 4. Naïve café, 考虑 🤔."
CONTENT = "The answer is **4** 👋🏽 — done."
HI = [{"role": "user", "content": "What is 2+2?"}]


def _reasoning(obj: Any) -> str:
    return str((obj.model_extra or {}).get("reasoning_content") or "")


def _stream(servers: Servers, model: str = "deepseek", **kwargs: Any) -> list[Any]:
    return list(
        servers.client().chat.completions.create(model=model, messages=HI, stream=True, **kwargs)
    )


@pytest.mark.parametrize("field", ["reasoning", "reasoning_content"])
def test_stream_carries_reasoning_content_and_usage(servers_clean: Servers, field: str) -> None:
    servers_clean.emulator.set_scenario(
        "ep-deepseek",
        Scenario(reasoning=REASONING, content=CONTENT, reasoning_field=field, prompt_tokens=9),  # type: ignore[arg-type]
    )
    chunks = _stream(servers_clean, stream_options={"include_usage": True})
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert "".join(_reasoning(d) for d in deltas) == REASONING
    assert "".join(d.content or "" for d in deltas) == CONTENT
    assert deltas[0].role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert {c.model for c in chunks} == {"deepseek-r1"}
    assert len({c.id for c in chunks}) == 1
    usage = chunks[-1].usage
    assert chunks[-1].choices == []
    assert usage is not None
    assert usage.prompt_tokens == 9
    assert usage.completion_tokens > 0
    # Usage is always requested upstream, whatever the client asked.
    (recorded,) = servers_clean.emulator.requests
    assert recorded.body["stream_options"] == {"include_usage": True}


def test_stream_without_include_usage_has_no_usage_chunk(servers_clean: Servers) -> None:
    chunks = _stream(servers_clean)
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)


def test_stream_headers_and_done(servers_clean: Servers) -> None:
    body = {"model": "deepseek", "messages": HI, "stream": True}
    with httpx.stream("POST", f"{servers_clean.gateway}/v1/chat/completions", json=body) as r:
        text = "".join(r.iter_text())
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert r.headers["cache-control"] == "no-cache"
        assert r.headers["x-llm-backend"] == "deepseek-r1"
    assert text.endswith("data: [DONE]\n\n")


def test_non_stream_aggregates_content_reasoning_usage(servers_clean: Servers) -> None:
    servers_clean.emulator.set_scenario(
        "ep-deepseek", Scenario(reasoning=REASONING, content=CONTENT, finish_reason="length")
    )
    response = servers_clean.client().chat.completions.create(model="deepseek", messages=HI)
    choice = response.choices[0]
    assert choice.message.content == CONTENT
    assert _reasoning(choice.message) == REASONING
    assert choice.finish_reason == "length"
    assert response.usage is not None
    assert response.usage.completion_tokens > 0
    assert response.model == "deepseek-r1"


def test_llama_on_lmi_native_gets_prompt_template_and_eula(servers_clean: Servers) -> None:
    servers_clean.emulator.set_scenario("ep-llama", Scenario(format="lmi", content=CONTENT))
    chunks = _stream(servers_clean, "llama", stream_options={"include_usage": True}, max_tokens=99)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == CONTENT
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0
    (recorded,) = servers_clean.emulator.requests
    assert recorded.headers["x-amzn-sagemaker-custom-attributes"] == "accept_eula=true"
    assert recorded.body["inputs"] == "[INST] What is 2+2? [/INST]"
    assert recorded.body["parameters"]["max_new_tokens"] == 99


def test_tgi_format(servers_clean: Servers) -> None:
    servers_clean.emulator.set_scenario(
        "ep-tgi", Scenario(format="tgi", content=CONTENT, prompt_tokens=17)
    )
    response = servers_clean.client().chat.completions.create(model="tgi", messages=HI)
    assert response.choices[0].message.content == CONTENT
    assert response.usage is not None
    assert response.usage.prompt_tokens == 17


@pytest.mark.parametrize("fmt", ["openai", "lmi", "tgi"])
def test_one_byte_parts_and_crlf_change_nothing(servers_clean: Servers, fmt: str) -> None:
    endpoint, model = {"openai": ("ep-deepseek", "deepseek"), "lmi": ("ep-llama", "llama"),
                       "tgi": ("ep-tgi", "tgi")}[fmt]  # fmt: skip
    servers_clean.emulator.set_scenario(
        endpoint,
        Scenario(format=fmt, content=CONTENT, part_size=1, line_ending="\r\n"),  # type: ignore[arg-type]
    )
    chunks = _stream(servers_clean, model)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == CONTENT


# --- errors before the first byte: ordinary HTTP errors in OpenAI's format --------------------

PRE_STREAM = [
    (Scenario(error_before_stream="ModelError", model_error_status=400,
              model_error_message="prompt too long"), 400, "model_rejected_request"),
    (Scenario(error_before_stream="ModelError", model_error_status=500), 502, "model_error"),
    (Scenario(error_before_stream="ServiceUnavailable"), 503, "model_unavailable"),
    (Scenario(error_before_stream="ThrottlingException"), 503, "model_unavailable"),
    (Scenario(error_before_stream="InternalFailure"), 502, "upstream_error"),
    (Scenario(fault_after_tokens=0, fault="ModelStreamError"), 502, "model_error"),
    (Scenario(fault_after_tokens=0, fault="InternalStreamFailure"), 502, "upstream_error"),
    (Scenario(fault_after_tokens=0, fault="inband_error"), 502, "model_error"),
]  # fmt: skip


@pytest.mark.parametrize(("scenario", "status", "code"), PRE_STREAM)
@pytest.mark.parametrize("stream", [True, False])
def test_failures_before_the_first_byte_are_http_errors(
    servers_clean: Servers, scenario: Scenario, status: int, code: str, stream: bool
) -> None:
    servers_clean.emulator.set_scenario("ep-deepseek", scenario.model_copy(update={"content": ""}))
    body = {"model": "deepseek", "messages": HI, "stream": stream}
    response = httpx.post(f"{servers_clean.gateway}/v1/chat/completions", json=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code
    assert set(error) == {"message", "type", "param", "code"}
    assert "Traceback" not in response.text
    assert "botocore" not in response.text


def test_unknown_endpoint_is_a_gateway_fault_not_a_client_error(servers_clean: Servers) -> None:
    with pytest.raises(openai.APIStatusError) as raised:
        servers_clean.client().chat.completions.create(model="ghost", messages=HI)
    assert raised.value.status_code == 502
    assert "not found" not in raised.value.message  # no account or endpoint details leak


def test_model_rejection_tells_the_client_why(servers_clean: Servers) -> None:
    servers_clean.emulator.set_scenario(
        "ep-deepseek",
        Scenario(error_before_stream="ModelError", model_error_status=400,
                 model_error_message="This model's maximum context length is 16384 tokens"),
    )  # fmt: skip
    with pytest.raises(openai.BadRequestError) as raised:
        servers_clean.client().chat.completions.create(model="deepseek", messages=HI)
    assert "maximum context length" in raised.value.message


# --- errors after the first byte: the stream ends with an OpenAI error event -----------------

MID_STREAM = ["ModelStreamError", "InternalStreamFailure", "inband_error", "finish_error"]


@pytest.mark.parametrize("fault", MID_STREAM)
def test_failures_after_the_first_byte_end_the_stream_with_an_error_event(
    servers_clean: Servers, fault: str
) -> None:
    servers_clean.emulator.set_scenario(
        "ep-deepseek",
        Scenario(content=CONTENT, fault_after_tokens=3, fault=fault),  # type: ignore[arg-type]
    )
    received: list[str] = []

    def consume() -> None:
        for chunk in servers_clean.client().chat.completions.create(
            model="deepseek", messages=HI, stream=True
        ):
            received.extend(c.delta.content or "" for c in chunk.choices)

    with pytest.raises(openai.APIError) as raised:
        consume()
    assert "".join(received)
    assert CONTENT.startswith("".join(received))
    assert "The model" in raised.value.message
    # And as raw SSE: an error event last, no [DONE] after it.
    body = {"model": "deepseek", "messages": HI, "stream": True}
    text = httpx.post(f"{servers_clean.gateway}/v1/chat/completions", json=body).text
    last = text.strip().split("\n\n")[-1]
    assert last.startswith('data: {"error":')
    assert "[DONE]" not in text


@pytest.mark.parametrize("fault", MID_STREAM)
def test_failures_mid_response_fail_a_non_stream_request(
    servers_clean: Servers, fault: str
) -> None:
    servers_clean.emulator.set_scenario(
        "ep-deepseek",
        Scenario(content=CONTENT, fault_after_tokens=3, fault=fault),  # type: ignore[arg-type]
    )
    with pytest.raises(openai.APIStatusError) as raised:
        servers_clean.client().chat.completions.create(model="deepseek", messages=HI)
    assert raised.value.status_code in (502, 504)


# --- upstream read timeout: no byte within LLM_GATEWAY_UPSTREAM_READ_TIMEOUT_S ----------------

READ_TIMEOUT_S = 0.3
SILENCE = {"before the first byte": Scenario(content=CONTENT, first_token_delay_ms=3000),
           "after the first byte": Scenario(content=CONTENT, token_delay_ms=3000)}  # fmt: skip


@pytest.fixture(scope="module")
def impatient_gateway(servers: Servers) -> Iterator[str]:
    """A second gateway on the same emulator, waiting at most READ_TIMEOUT_S for each upstream
    byte (far below the routes' first-byte deadline, so only the read timeout can fire)."""
    env = {ROUTES_ENV: json.dumps(ROUTES), READ_TIMEOUT_ENV: str(READ_TIMEOUT_S)}
    settings = Settings.from_env(env)
    with serve_in_thread(create_app(settings, SageMakerInvoker.from_settings(settings))) as url:
        yield url


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "buffered"])
def test_a_read_timeout_before_the_first_byte_is_a_504_model_timeout(
    servers_clean: Servers, impatient_gateway: str, stream: bool
) -> None:
    servers_clean.emulator.set_scenario("ep-deepseek", SILENCE["before the first byte"])
    body = {"model": "deepseek", "messages": HI, "stream": stream}
    response = httpx.post(f"{impatient_gateway}/v1/chat/completions", json=body, timeout=10)
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "model_timeout"


def test_a_read_timeout_after_the_first_byte_ends_the_stream_with_model_timeout(
    servers_clean: Servers, impatient_gateway: str
) -> None:
    servers_clean.emulator.set_scenario("ep-deepseek", SILENCE["after the first byte"])
    body = {"model": "deepseek", "messages": HI, "stream": True}
    response = httpx.post(f"{impatient_gateway}/v1/chat/completions", json=body, timeout=10)
    events = [e for e in response.text.split("\n\n") if e.startswith("data: ")]
    assert response.status_code == 200
    assert '"content"' in events[0]  # the first token reached the client
    assert json.loads(events[-1][6:])["error"]["code"] == "model_timeout"


def test_a_read_timeout_after_the_first_byte_fails_a_buffered_request_with_504(
    servers_clean: Servers, impatient_gateway: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    servers_clean.emulator.set_scenario("ep-deepseek", SILENCE["after the first byte"])
    body = {"model": "deepseek", "messages": HI}
    response = httpx.post(f"{impatient_gateway}/v1/chat/completions", json=body, timeout=10)
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "model_timeout"
    (line,) = [r for r in caplog.records if r.getMessage() == "request"]
    assert (line.status, line.error_kind) == (504, "model_timeout")  # as the client saw it


# --- the streaming proof: no buffering anywhere between the emulator and the client ----------


def test_first_chunk_reaches_the_client_while_upstream_holds_the_rest(
    servers_clean: Servers,
) -> None:
    """The emulator sends the first token, then waits until the client has it.

    A gateway that buffered (the whole response, or even a few KB) would never deliver that
    first chunk, the barrier would time out, and the stream would end in an error.
    """
    servers_clean.emulator.set_scenario(
        "ep-deepseek",
        Scenario(reasoning=REASONING, content=CONTENT, barrier="first", barrier_timeout_s=5),
    )
    barriers = servers_clean.emulator.barriers
    stream = servers_clean.client().chat.completions.create(
        model="deepseek", messages=HI, stream=True
    )
    chunks = iter(stream)
    first = next(chunks)
    assert not barriers.is_released("first")  # upstream is still holding the rest
    assert _reasoning(first.choices[0].delta) == REASONING.split(" ")[0]
    urllib.request.urlopen(
        urllib.request.Request(
            f"{servers_clean.emulator_url}/_emulator/barriers/first", method="POST"
        )
    ).close()
    rest = list(chunks)
    assert "".join(c.choices[0].delta.content or "" for c in rest if c.choices) == CONTENT


def test_client_disconnect_stops_the_upstream_read(servers_clean: Servers) -> None:
    """A client that goes away mid-stream releases the upstream reader at once, even while the
    model is silent (held on a barrier after its first token: no byte will wake the reader)."""
    servers_clean.emulator.set_scenario(
        "ep-deepseek", Scenario(content=CONTENT, barrier="disconnect", barrier_timeout_s=10)
    )
    body = {"model": "deepseek", "messages": HI, "stream": True}
    barriers = servers_clean.emulator.barriers
    barriers.rearm("disconnect")
    try:
        with httpx.stream("POST", f"{servers_clean.gateway}/v1/chat/completions", json=body) as r:
            chunks = r.iter_bytes()  # held: a dropped iterator would close the connection now
            next(chunks)
            assert barriers.wait_for_waiters("disconnect", 1, 5)  # the model is silent now
            time.sleep(0.2)
            assert barriers.waiting("disconnect") == 1  # connected: the gateway still reads
        deadline = time.monotonic() + 2
        while barriers.waiting("disconnect") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert barriers.waiting("disconnect") == 0  # the emulator saw the gateway hang up
    finally:
        barriers.release("disconnect")


def test_concurrent_streams_are_independent(servers_clean: Servers) -> None:
    servers_clean.emulator.set_scenario("ep-deepseek", Scenario(content=CONTENT, token_delay_ms=2))
    results: list[str] = []

    def one() -> None:
        chunks = _stream(servers_clean)
        results.append("".join(c.choices[0].delta.content or "" for c in chunks if c.choices))

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [CONTENT] * 8


# --- request-level errors over HTTP -----------------------------------------------------------


def test_unknown_model_is_404_model_not_found(servers_clean: Servers) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        servers_clean.client().chat.completions.create(model="gpt-9", messages=HI)
    assert raised.value.code == "model_not_found"
    assert servers_clean.emulator.requests == []  # nothing invalid reaches a model


def _body(**fields: Any) -> bytes:
    return json.dumps({"model": "deepseek", "messages": HI, **fields}).encode()


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"{", 400),
        (_body(messages=[]), 400),
        (_body(tools=[]), 400),
        (_body(messages=[{"role": "user", "content": "x" * 70000}]), 413),
    ],
)
def test_bad_requests_never_reach_a_model(servers_clean: Servers, raw: bytes, status: int) -> None:
    response = httpx.post(
        f"{servers_clean.gateway}/v1/chat/completions",
        content=raw,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == status
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert servers_clean.emulator.requests == []


def test_a_client_gone_while_sending_its_body_is_not_an_error(
    servers_clean: Servers, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    address = urlsplit(servers_clean.gateway)
    with socket.create_connection((address.hostname, address.port)) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\n"
            b'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"model": '
        )
    deadline = time.monotonic() + 5
    while not [r for r in caplog.records if r.name.startswith("llm")]:
        assert time.monotonic() < deadline, "the gateway never finished the request"
        time.sleep(0.02)
    time.sleep(0.1)  # anything logged after the request line
    assert [(r.levelname, r.exc_info) for r in caplog.records if r.levelno >= logging.WARNING] == []
    (line,) = [r for r in caplog.records if r.getMessage() == "request"]
    assert (line.levelname, line.status, line.error_kind) == ("INFO", 499, "client_disconnected")
    assert servers_clean.emulator.requests == []


def test_unknown_path_and_method_are_openai_errors(servers_clean: Servers) -> None:
    missing = httpx.get(f"{servers_clean.gateway}/v1/nothing")
    assert missing.status_code == 404
    assert missing.json()["error"]["message"] == "Invalid URL (GET /v1/nothing)"
    wrong = httpx.get(f"{servers_clean.gateway}/v1/chat/completions")
    assert wrong.status_code == 405
    assert "error" in wrong.json()


def test_models_lists_the_routes(servers_clean: Servers) -> None:
    models = servers_clean.client().models.list()
    assert [m.id for m in models.data] == ["deepseek", "llama", "tgi", "ghost"]


def test_readiness_path(servers_clean: Servers) -> None:
    assert httpx.get(f"{servers_clean.gateway}/healthz").json() == {"status": "ok"}
