"""Gateway test servers: the emulator and the gateway, each a real uvicorn on loopback; for
guardrails and the response cache, also the ApplyGuardrail stand-in and DynamoDB (moto)."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import boto3
import httpx2 as httpx
import openai
import pytest

from llm_gateway import telemetry
from llm_gateway.app import create_app
from llm_gateway.policies import Policies
from llm_gateway.quota import QuotaStore
from llm_gateway.settings import Settings
from llm_gateway.upstream import SageMakerInvoker
from local.dynamodb import create_cache_table, create_quota_table, dynamodb_server
from local.emulator import Emulator, create_emulator
from local.guardrail_emulator import GuardrailEmulator, create_guardrail_emulator
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


# --- guardrails and the response cache: ApplyGuardrail stand-in, moto, quotas ----------------

POLICY_CONSUMERS: dict[str, Any] = {
    "tiers": [{"name": "standard", "tokens_per_day": 10_000_000, "default_reservation": 256}],
    "consumers": {"key-alice": {"name": "alice", "tier": "standard"},
                  "key-bob": {"name": "bob", "tier": "standard"}},
}  # fmt: skip


def openai_backend(name: str) -> dict[str, Any]:
    return {"name": name, "endpoint_name": f"ep-{name}", "format": "openai",
            "max_tokens_default": 512, "max_model_len": 1_000_000}  # fmt: skip


@dataclass
class PolicyBackends:
    """What a gateway with guardrails and a cache talks to (one set per test module)."""

    emulator_url: str
    emulator: Emulator
    guardrail_url: str
    guardrail: GuardrailEmulator
    dynamodb_url: str


@dataclass
class PolicyStack:
    """A gateway (local identities: the API key is the consumer's name) and its backends."""

    url: str
    emulator: Emulator
    guardrail: GuardrailEmulator
    quota: QuotaStore
    cache_table: str

    def client(self, consumer: str = "alice") -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=consumer, max_retries=0)

    def post(self, consumer: str = "alice", **body: Any) -> httpx.Response:
        return httpx.post(f"{self.url}/v1/chat/completions", json=body,
                          headers={"authorization": f"Bearer {consumer}"}, timeout=30)  # fmt: skip

    def calls(self, endpoint: str | None = None) -> int:
        """Invocations the emulator received (of ``endpoint``, or of any)."""
        return sum(1 for r in self.emulator.requests if endpoint in (None, r.endpoint))

    def day(self, consumer: str = "alice") -> int:
        return self.quota.usage(consumer)["day"]

    def cache_items(self) -> list[dict[str, Any]]:
        items = boto3.client("dynamodb").scan(TableName=self.cache_table)["Items"]
        return list(items)


@pytest.fixture(scope="module")
def policy_backends() -> Iterator[PolicyBackends]:
    emulator_app = create_emulator()
    guardrail_app = create_guardrail_emulator()
    with (
        serve_in_thread(emulator_app) as emulator_url,
        serve_in_thread(guardrail_app) as guardrail_url,
        dynamodb_server() as dynamodb_url,
    ):
        yield PolicyBackends(emulator_url, emulator_app.state.emulator, guardrail_url,
                             guardrail_app.state.guardrail, dynamodb_url)  # fmt: skip


@contextmanager
def policy_stack(
    backends: PolicyBackends,
    routes: Mapping[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    *,
    cache_table: str | None = None,
) -> Iterator[PolicyStack]:
    """A fresh gateway for ``routes`` (fresh quota and cache tables, an empty request log,
    the stand-in's default config) over the module's backends, clients built as main.py does.
    ``cache_table`` names a table instead of creating one (e.g. one that does not exist)."""
    for name, value in {
        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": backends.emulator_url,
        "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": backends.guardrail_url,
        "AWS_ENDPOINT_URL_DYNAMODB": backends.dynamodb_url,
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    suffix = uuid.uuid4().hex[:8]
    quota_table = f"quota-{suffix}"
    create_quota_table(boto3.client("dynamodb"), quota_table)
    if cache_table is None:
        cache_table = f"cache-{suffix}"
        create_cache_table(boto3.client("dynamodb"), cache_table)
    env = {
        "LLM_GATEWAY_ROUTES": json.dumps(routes),
        "LLM_GATEWAY_CONSUMERS": json.dumps(POLICY_CONSUMERS),
        "LLM_GATEWAY_QUOTA_TABLE": quota_table,
        "LLM_GATEWAY_CACHE_TABLE": cache_table,
    }
    settings = Settings.from_env(env)
    quota = QuotaStore.from_env(env)
    assert quota is not None
    backends.emulator.scenarios.clear()
    backends.emulator.clear_requests()
    backends.guardrail.config = type(backends.guardrail.config)()
    backends.guardrail.clear_requests()
    app = create_app(
        settings,
        SageMakerInvoker.from_settings(settings),
        quota=quota,
        policies=Policies.from_env(settings, env),
    )
    with serve_in_thread(app) as url:
        yield PolicyStack(url, backends.emulator, backends.guardrail, quota, cache_table)


# --- telemetry: EMF records (printed: capsys) and the request log line (redirected) ----------


@pytest.fixture
def request_log(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[io.StringIO]:
    """The per-request log lines, written here while the test runs."""
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "LlmGateway")
    buffer = io.StringIO()
    handler = telemetry.logger.registered_handler
    assert isinstance(handler, logging.StreamHandler)
    previous = handler.setStream(buffer)
    capsys.readouterr()
    try:
        yield buffer
    finally:
        handler.setStream(previous)  # type: ignore[arg-type]


def emf_records(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith('{"_aws"')]


def dimension_sets(record: dict[str, Any]) -> list[set[str]]:
    return [set(d) for d in record["_aws"]["CloudWatchMetrics"][0]["Dimensions"]]


def request_lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]
    return [line for line in lines if line.get("message") == "request"]


def sse_chunks(text: str) -> tuple[list[dict[str, Any]], bool]:
    """A streamed body's JSON events, and whether it ended with ``data: [DONE]``."""
    events = [e.removeprefix("data: ") for e in text.split("\n\n") if e.startswith("data: ")]
    done = bool(events) and events[-1] == "[DONE]"
    return [json.loads(e) for e in events if e != "[DONE]"], done
