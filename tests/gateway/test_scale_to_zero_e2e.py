"""Inference components with no copies, end to end: openai SDK → gateway → botocore (both
upstream paths) → the emulator answering SageMaker's no-capacity error over real HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx2 as httpx
import openai
import pytest

from llm_gateway.contract import Backend, Metric
from llm_gateway.request import parse_chat_request
from llm_gateway.service import delta_batches
from llm_gateway.settings import Settings
from llm_gateway.upstream import SageMakerInvoker, UpstreamStream
from llm_gateway.upstream_errors import UpstreamError
from local.scenarios import Scenario
from tests.gateway.conftest import Servers, emf_records, request_lines, serve_gateway


def _component(name: str, retry_after: int = 120) -> dict[str, Any]:
    return {"name": name, "endpoint_name": "ep-shared", "format": "openai",
            "max_tokens_default": 64, "inference_component_name": f"ic-{name}",
            "retry_after_s": retry_after}  # fmt: skip


ROUTES: dict[str, Any] = {
    "routes": [
        {"model": "solo", "backends": [_component("cold", retry_after=90)]},
        {"model": "packed", "backends": [
            _component("cold"),
            {"name": "dedicated", "endpoint_name": "ep-dedicated", "format": "openai",
             "max_tokens_default": 64}]},
        {"model": "warm", "backends": [_component("warm")]},
    ],
}  # fmt: skip
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def stack() -> Iterator[Servers]:
    with serve_gateway({"LLM_GATEWAY_ROUTES": json.dumps(ROUTES)}) as servers:
        yield servers


@pytest.fixture
def servers(stack: Servers) -> tuple[str, Any]:
    url, emulator = stack.gateway, stack.emulator
    emulator.scenarios.clear()
    emulator.set_scenario("ic-cold", Scenario(copies=0))
    emulator.set_scenario("ic-warm", Scenario(content="Warm component here."))
    emulator.set_scenario("ep-dedicated", Scenario(content="Dedicated endpoint here."))
    emulator.clear_requests()
    return url, emulator


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def test_a_component_without_copies_is_a_503_with_retry_after(
    servers: tuple[str, Any], request_log: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    url, emulator = servers
    with pytest.raises(openai.APIStatusError) as raised:
        _client(url).chat.completions.create(model="solo", messages=MESSAGES, stream=True)
    error = raised.value
    assert error.status_code == 503
    assert error.response.headers["retry-after"] == "90"
    assert error.body["code"] == "model_scaling_from_zero"  # type: ignore[index]
    (call,) = emulator.requests
    # The gateway's invocation is what SageMaker counts as NoCapacityInvocationFailures.
    assert call.endpoint == "ep-shared"
    assert call.headers["x-amzn-sagemaker-inference-component"] == "ic-cold"
    assert "x-amzn-sagemaker-inference-component" in call.headers["authorization"]
    records = emf_records(capsys.readouterr().out)
    counted = [r for r in records if Metric.NO_CAPACITY in r]
    assert [r[Metric.NO_CAPACITY] for r in counted] == [[1.0]]
    (line,) = request_lines(request_log)
    assert (line["status"], line["error_kind"]) == (503, "model_scaling_from_zero")


def test_a_component_without_copies_falls_back_to_the_next_backend(
    servers: tuple[str, Any], request_log: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    url, emulator = servers
    stream = _client(url).chat.completions.create(model="packed", messages=MESSAGES, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "Dedicated endpoint here."
    calls = emulator.requests
    assert [c.headers.get("x-amzn-sagemaker-inference-component") for c in calls] == [
        "ic-cold",
        None,
    ]
    records = emf_records(capsys.readouterr().out)
    assert [r[Metric.NO_CAPACITY] for r in records if Metric.NO_CAPACITY in r] == [[1.0]]
    assert [r[Metric.FALLBACKS] for r in records if Metric.FALLBACKS in r] == [[1.0]]


def test_a_component_with_copies_is_served_by_name(servers: tuple[str, Any]) -> None:
    url, emulator = servers
    answer = _client(url).chat.completions.create(model="warm", messages=MESSAGES)
    assert answer.choices[0].message.content == "Warm component here."
    (call,) = emulator.requests
    assert call.headers["x-amzn-sagemaker-inference-component"] == "ic-warm"


def test_invalid_requests_stay_openai_errors(servers: tuple[str, Any]) -> None:
    url, emulator = servers
    response = httpx.post(f"{url}/v1/chat/completions", json={"model": "solo"}, timeout=10)
    assert response.status_code == 400
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert "retry-after" not in response.headers
    assert emulator.requests == []


def test_the_threaded_botocore_path_sends_the_component_too(
    servers: tuple[str, Any],
) -> None:
    """The fallback path (a botocore client on a thread) names the component as well, and its
    no-capacity error is classified the same way."""
    _, emulator = servers
    settings = Settings.from_env({"LLM_GATEWAY_ROUTES": json.dumps(ROUTES)})
    client = SageMakerInvoker.from_settings(settings)._client
    request = parse_chat_request(
        b'{"model": "warm", "messages": [{"role": "user", "content": "x"}]}'
    )
    from llm_gateway.adapters import adapter_for

    async def read(backend: Backend) -> str:
        adapter = adapter_for("openai")
        stream = UpstreamStream(client, backend, adapter.request_body(request, backend, 8))
        try:
            batches = delta_batches(stream, adapter)
            return "".join([d.content async for batch in batches for d in batch])
        finally:
            stream.close()

    warm = Backend.model_validate(_component("warm"))
    assert asyncio.run(read(warm)) == "Warm component here."
    cold = Backend.model_validate(_component("cold"))
    with pytest.raises(UpstreamError) as raised:
        asyncio.run(read(cold))
    assert raised.value.kind == "no_capacity"
    assert [c.headers.get("x-amzn-sagemaker-inference-component") for c in emulator.requests] == [
        "ic-warm",
        "ic-cold",
    ]


def test_an_endpoint_backend_serializes_as_before() -> None:
    """The two component fields are left out of an endpoint backend's table entry, so existing
    gateways' environment (and templates) do not change."""
    backend = Backend(name="a", endpoint_name="ep", format="openai", max_tokens_default=8)
    assert "inference_component_name" not in backend.model_dump()
    assert "retry_after_s" not in json.loads(backend.model_dump_json())
    with pytest.raises(ValueError, match="retry_after_s applies only"):
        Backend(name="a", endpoint_name="ep", format="openai", max_tokens_default=8,
                retry_after_s=5)  # fmt: skip
