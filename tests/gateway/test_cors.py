"""Browser clients: the function adds CORS headers for the configured origins only (the
preflight is API Gateway's; tests/test_gateway_cors.py checks that side)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx2 as httpx
import pytest

from llm_gateway.settings import Settings
from local.scenarios import Scenario
from tests.gateway.conftest import ROUTES, serve_gateway

ALLOWED = "https://chat.example.com"
BODY = {"model": "deepseek", "messages": [{"role": "user", "content": "hi"}], "stream": True}


ORIGINS = f"{ALLOWED},http://localhost:3000"


@pytest.fixture(scope="module")
def gateway() -> Iterator[str]:
    with serve_gateway({"LLM_GATEWAY_CORS_ORIGINS": ORIGINS}) as servers:
        servers.emulator.set_scenario("ep-deepseek", Scenario(content="Hello."))
        yield servers.gateway


def test_origins_are_parsed_from_the_environment() -> None:
    env = {"LLM_GATEWAY_ROUTES": json.dumps(ROUTES), "LLM_GATEWAY_CORS_ORIGINS": ORIGINS}
    assert Settings.from_env(env).cors_origins == (ALLOWED, "http://localhost:3000")


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
