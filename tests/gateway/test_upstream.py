"""Network faults by kind, against a real boto3 client (no server, or a closed port)."""

from __future__ import annotations

import asyncio
import json

import pytest
from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError
from urllib3.exceptions import ReadTimeoutError as StreamReadTimeoutError

from llm_gateway.contract import Backend
from llm_gateway.errors import GatewayError
from llm_gateway.request import parse_chat_request
from llm_gateway.routing import BackendHealth
from llm_gateway.service import open_stream
from llm_gateway.settings import Settings
from llm_gateway.upstream import SageMakerInvoker
from llm_gateway.upstream_errors import classify
from local.serving import free_port


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (EndpointConnectionError(endpoint_url="http://x"), "connection"),
        (ConnectTimeoutError(endpoint_url="http://x"), "timeout"),
        (ReadTimeoutError(endpoint_url="http://x"), "timeout"),
        # What iterating the event stream raises (see upstream_errors.classify).
        (StreamReadTimeoutError(None, None, "Read timed out."), "timeout"),  # type: ignore[arg-type]
    ],
)
def test_network_faults_are_retryable_kinds(exc: Exception, kind: str) -> None:
    failure = classify(exc)
    assert (failure.kind, failure.retryable) == (kind, True)
    assert failure.to_gateway_error().status in (502, 504)


def test_an_unreachable_runtime_is_tried_on_every_backend_then_a_502(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    backends = [
        Backend(name=n, endpoint_name=f"ep-{n}", format="openai", max_tokens_default=8)
        for n in ("a", "b")
    ]
    routes = {"routes": [{"model": "m", "backends": [b.model_dump() for b in backends]}]}
    settings = Settings.from_env({"LLM_GATEWAY_ROUTES": json.dumps(routes)})
    health = BackendHealth(failures=1, cooldown_s=60)
    request = parse_chat_request(b'{"model": "m", "messages": [{"role": "user", "content": "x"}]}')

    async def run() -> None:
        await open_stream(
            request, backends, SageMakerInvoker.from_settings(settings),
            max_tokens=lambda _: 8, first_byte_timeout_s=5, health=health,
        )  # fmt: skip

    with pytest.raises(GatewayError) as raised:
        asyncio.run(run())
    assert (raised.value.status, raised.value.code) == (502, "upstream_unreachable")
    assert all(health.cooling(b) for b in backends)  # both were attempted and failed
