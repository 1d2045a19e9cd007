"""Gateway test servers: the emulator and the gateway, each a real uvicorn on loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import openai
import pytest

from llm_gateway.app import create_app
from llm_gateway.settings import Settings
from llm_gateway.upstream import SageMakerInvoker
from local.emulator import Emulator, create_emulator
from local.scenarios import Scenario
from local.serving import serve_in_thread

ROUTES: dict[str, Any] = {
    "routes": [
        {"model": "deepseek", "backends": [
            {"name": "deepseek-r1", "endpoint_name": "ep-deepseek", "format": "openai",
             "max_tokens_default": 4096}]},
        {"model": "llama", "backends": [
            {"name": "llama-2-13b-chat", "endpoint_name": "ep-llama", "format": "lmi",
             "prompt_template": "llama2", "custom_attributes": "accept_eula=true",
             "max_tokens_default": 1024}]},
        {"model": "tgi", "backends": [
            {"name": "tgi-model", "endpoint_name": "ep-tgi", "format": "tgi",
             "prompt_template": "llama2", "max_tokens_default": 256}]},
        {"model": "ghost", "backends": [
            {"name": "ghost", "endpoint_name": "ep-missing", "format": "openai",
             "max_tokens_default": 16}]},
    ]
}  # fmt: skip


@dataclass
class Servers:
    gateway: str
    emulator_url: str
    emulator: Emulator

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.gateway}/v1", api_key="unused", max_retries=0)


@contextmanager
def serve_gateway(extra_env: Mapping[str, str] | None = None) -> Iterator[Servers]:
    """The emulator and a gateway for :data:`ROUTES` (plus ``extra_env``), both on loopback."""
    app = create_emulator()
    with serve_in_thread(app) as emulator_url, pytest.MonkeyPatch.context() as env:
        # The standard variable, not an endpoint_url argument: what `make local` and Lambda use.
        env.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", emulator_url)
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        env.delenv("AWS_PROFILE", raising=False)
        settings = Settings.from_env(
            {
                "LLM_GATEWAY_ROUTES": json.dumps(ROUTES),
                "LLM_GATEWAY_MAX_REQUEST_BYTES": "65536",
                **(extra_env or {}),
            }
        )
        gateway = create_app(settings, SageMakerInvoker.from_settings(settings))
        with serve_in_thread(gateway) as gateway_url:
            yield Servers(gateway_url, emulator_url, app.state.emulator)


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    with serve_gateway() as servers:
        yield servers


@pytest.fixture
def servers_clean(servers: Servers) -> Servers:
    """The module's servers with baseline scenarios (ep-missing stays unknown), no requests."""
    emulator = servers.emulator
    emulator.scenarios.clear()
    emulator.set_scenario("ep-deepseek", Scenario(reasoning="Thinking.", content="Hello there."))
    emulator.set_scenario("ep-llama", Scenario(format="lmi"))
    emulator.set_scenario("ep-tgi", Scenario(format="tgi"))
    emulator.clear_requests()
    return servers
