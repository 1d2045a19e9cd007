"""Browser clients: the function adds CORS headers for the configured origins only (the
preflight is API Gateway's; tests/test_gateway_cors.py checks that side)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx2 as httpx
import pytest

from llm_gateway.app import create_app
from llm_gateway.settings import Settings
from llm_gateway.upstream import SageMakerInvoker
from local.emulator import create_emulator
from local.scenarios import Scenario
from local.serving import serve_in_thread
from tests.gateway.conftest import ROUTES

ALLOWED = "https://chat.example.com"
BODY = {"model": "deepseek", "messages": [{"role": "user", "content": "hi"}], "stream": True}


@pytest.fixture(scope="module")
def gateway() -> Iterator[str]:
    emulator = create_emulator()
    with serve_in_thread(emulator) as emulator_url, pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", emulator_url)
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        emulator.state.emulator.set_scenario("ep-deepseek", Scenario(content="Hello."))
        settings = Settings.from_env(
            {
                "LLM_GATEWAY_ROUTES": json.dumps(ROUTES),
                "LLM_GATEWAY_CORS_ORIGINS": f"{ALLOWED},http://localhost:3000",
            }
        )
        assert settings.cors_origins == (ALLOWED, "http://localhost:3000")
        app = create_app(settings, SageMakerInvoker.from_settings(settings))
        with serve_in_thread(app) as url:
            yield url


def test_an_allowed_origin_may_read_the_stream_and_the_quota_headers(gateway: str) -> None:
    response = httpx.post(f"{gateway}/v1/chat/completions", json=BODY, headers={"origin": ALLOWED})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ALLOWED
    exposed = response.headers["access-control-expose-headers"].lower()
    assert "x-llm-backend" in exposed
    assert "x-ratelimit-remaining-tokens" in exposed
    assert response.text.rstrip().endswith("data: [DONE]")


def test_another_origin_gets_no_cors_headers(gateway: str) -> None:
    response = httpx.post(
        f"{gateway}/v1/chat/completions", json=BODY, headers={"origin": "https://evil.example"}
    )
    assert "access-control-allow-origin" not in response.headers


def test_cors_is_off_unless_configured() -> None:
    assert Settings.from_env({"LLM_GATEWAY_ROUTES": json.dumps(ROUTES)}).cors_origins == ()
