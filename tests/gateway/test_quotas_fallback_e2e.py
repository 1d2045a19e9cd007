"""Keys, token quotas, fallback and telemetry end to end: httpx → gateway → boto3 → emulator,
with token counters in DynamoDB (moto's server app over real HTTP, single-threaded).

API Gateway and the Lambda Web Adapter are not here; their part (the verified API key id in
the ``x-amzn-request-context`` header, set by the adapter over anything a client sent) is
played by :func:`as_key`.
"""

from __future__ import annotations

import io
import json
import logging
import random
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import boto3
import httpx2 as httpx
import pytest

from llm_gateway.app import create_app
from llm_gateway.quota import QuotaStore
from llm_gateway.settings import Settings
from llm_gateway.upstream import SageMakerInvoker
from local.dynamodb import create_quota_table, dynamodb_server
from local.emulator import Emulator, create_emulator
from local.scenarios import Scenario
from local.serving import serve_in_thread
from tests.gateway.conftest import dimension_sets, emf_records, request_lines

CONTENT = "Hello from the primary backend, all fine."
TABLE = "quota"


def _backend(name: str, weight: int | None = None, context: int = 4096) -> dict[str, Any]:
    return {"name": name, "endpoint_name": f"ep-{name}", "format": "openai",
            "max_tokens_default": 512, "max_model_len": context, "weight": weight}  # fmt: skip


ROUTES: dict[str, Any] = {
    "routes": [
        {"model": "chat", "backends": [_backend("primary"), _backend("secondary")],
         "max_attempts": 2, "first_byte_timeout_s": 1.5},
        {"model": "triple", "backends": [_backend("one"), _backend("two"), _backend("three")],
         "max_attempts": 2},
        {"model": "canary", "backends": [_backend("stable", 50), _backend("canary", 50)],
         "max_attempts": 1},
        {"model": "private", "backends": [_backend("private", context=200)]},
    ],
    "cooldown_failures": 2,
    "cooldown_s": 600,
}  # fmt: skip
CONSUMERS: dict[str, Any] = {
    "tiers": [
        {"name": "standard", "tokens_per_day": 1_000_000, "tokens_per_month": 10_000_000,
         "default_reservation": 256},
        {"name": "tiny", "tokens_per_day": 400, "default_reservation": 50},
        {"name": "monthly", "tokens_per_month": 300, "default_reservation": 50},
    ],
    "consumers": {
        "key-alice": {"name": "alice", "tier": "standard"},
        "key-bob": {"name": "bob", "tier": "tiny", "routes": ["chat"]},
        "key-mallory": {"name": "mallory", "tier": "monthly"},
    },
}  # fmt: skip


def as_key(key_id: str, **extra: str) -> dict[str, str]:
    """Headers as the Web Adapter delivers them for a request API Gateway verified."""
    context = {"requestId": str(uuid.uuid4()), "identity": {"apiKeyId": key_id}}
    return {"x-amzn-request-context": json.dumps(context), **extra}


@dataclass
class Stack:
    url: str
    emulator: Emulator
    quota: QuotaStore
    table: str
    dynamodb_url: str
    invoker: SageMakerInvoker

    def chat(self, key: str, model: str = "chat", **body: Any) -> httpx.Response:
        payload = {"model": model, "messages": [{"role": "user", "content": "Hi there"}], **body}
        return httpx.post(f"{self.url}/v1/chat/completions", json=payload, headers=as_key(key),
                          timeout=30)  # fmt: skip

    def day(self, consumer: str) -> int:
        return self.quota.usage(consumer)["day"]

    def month(self, consumer: str) -> int:
        return self.quota.usage(consumer)["month"]

    def calls(self, endpoint: str) -> int:
        return sum(1 for r in self.emulator.requests if r.endpoint == endpoint)


@pytest.fixture(scope="module")
def backends() -> Iterator[tuple[str, str, Emulator]]:
    emulator_app = create_emulator(default=Scenario(content=CONTENT))
    with serve_in_thread(emulator_app) as emulator_url, dynamodb_server() as dynamo_url:
        yield emulator_url, dynamo_url, emulator_app.state.emulator


@pytest.fixture
def stack(backends: tuple[str, str, Emulator], monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    """A fresh gateway (fresh cooldowns, fresh table) over the module's emulator and moto."""
    emulator_url, dynamo_url, emulator = backends
    for name, value in {
        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": emulator_url,
        "AWS_ENDPOINT_URL_DYNAMODB": dynamo_url,
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    table = f"{TABLE}-{uuid.uuid4().hex[:8]}"
    create_quota_table(boto3.client("dynamodb"), table)
    env = {
        "LLM_GATEWAY_ROUTES": json.dumps(ROUTES),
        "LLM_GATEWAY_CONSUMERS": json.dumps(CONSUMERS),
        "LLM_GATEWAY_QUOTA_TABLE": table,
    }
    settings = Settings.from_env(env)
    quota = QuotaStore.from_env(env)
    assert quota is not None
    emulator.scenarios.clear()
    emulator.clear_requests()
    invoker = SageMakerInvoker.from_settings(settings)
    app = create_app(settings, invoker, quota=quota, rng=random.Random(5))
    with serve_in_thread(app) as url:
        yield Stack(url, emulator, quota, table, dynamo_url, invoker)


# --- identity ------------------------------------------------------------------------------


def test_identity_comes_only_from_the_request_context(stack: Stack) -> None:
    """Headers a client chooses (an API key, a consumer name, a bearer token) change nothing."""
    forged = as_key(
        "key-alice",
        **{"x-api-key": "key-bob", "x-consumer": "bob", "authorization": "Bearer key-bob",
           "x-amzn-apikeyid": "key-bob", "x-llm-consumer": "bob"},
    )  # fmt: skip
    response = httpx.post(
        f"{stack.url}/v1/chat/completions",
        json={"model": "triple", "messages": [{"role": "user", "content": "Hi"}]},
        headers=forged,
    )
    assert response.status_code == 200  # bob may not use "triple"; alice may
    assert stack.day("alice") > 0
    assert stack.day("bob") == 0
    assert response.headers["x-ratelimit-limit-tokens"] == "1000000"  # alice's tier


@pytest.mark.parametrize(
    "headers",
    [
        {},  # no request context: not through API Gateway
        as_key("key-unknown"),
        {"x-amzn-request-context": "not json"},
        {"x-amzn-request-context": json.dumps({"identity": {}})},
    ],
    ids=["missing", "unknown-key", "garbled", "no-key-id"],
)
def test_requests_without_a_known_key_are_refused(stack: Stack, headers: dict[str, str]) -> None:
    response = httpx.post(
        f"{stack.url}/v1/chat/completions",
        json={"model": "chat", "messages": [{"role": "user", "content": "Hi"}]},
        headers=headers,
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert stack.emulator.requests == []


def test_two_request_contexts_are_refused(stack: Stack) -> None:
    context = as_key("key-alice")["x-amzn-request-context"]
    response = httpx.post(
        f"{stack.url}/v1/chat/completions",
        json={"model": "chat", "messages": [{"role": "user", "content": "Hi"}]},
        headers=[("x-amzn-request-context", context), ("x-amzn-request-context", context)],
    )
    assert response.status_code == 401


def test_consumers_see_and_use_only_their_routes(stack: Stack) -> None:
    models = httpx.get(f"{stack.url}/v1/models", headers=as_key("key-bob")).json()
    assert [m["id"] for m in models["data"]] == ["chat"]
    response = stack.chat("key-bob", model="private")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"
    assert stack.calls("ep-private") == 0


# --- token quotas --------------------------------------------------------------------------


def test_usage_is_settled_to_what_the_backend_reported(stack: Stack) -> None:
    # The model's first token comes after the quota read-back (as on GPUs, where it takes tens
    # to hundreds of milliseconds), so the headers say what is left.
    stack.emulator.set_scenario(
        "ep-primary", Scenario(content=CONTENT, prompt_tokens=21, first_token_delay_ms=200)
    )
    body = stack.chat("key-alice", stream=True, stream_options={"include_usage": True})
    usage_events = [json.loads(e[6:]) for e in body.text.split("\n\n") if '"usage"' in e]
    usage = usage_events[-1]["usage"]
    assert stack.day("alice") == usage["total_tokens"] == 21 + usage["completion_tokens"]
    assert stack.month("alice") == usage["total_tokens"]
    assert int(body.headers["x-ratelimit-remaining-tokens"]) < 1_000_000


def test_daily_token_quota_refuses_with_429_rate_limit_and_retry_after(stack: Stack) -> None:
    stack.emulator.set_scenario("ep-primary", Scenario(content="word " * 340, prompt_tokens=12))
    first = stack.chat("key-bob", max_tokens=380)  # uses ~352 of bob's 400 tokens a day
    assert first.status_code == 200
    refused = stack.chat("key-bob", max_tokens=50)  # would reserve 58 of the 48 left
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "rate_limit_exceeded"
    assert "tokens per day" in error["message"]
    retry_after = int(refused.headers["retry-after"])
    assert 0 < retry_after <= 86_400
    used = first.json()["usage"]["total_tokens"]
    assert refused.headers["x-ratelimit-remaining-tokens"] == str(400 - used)
    assert stack.day("bob") == json.loads(first.text)["usage"]["total_tokens"]  # refusal: free


def test_a_max_tokens_beyond_the_context_reserves_only_what_fits(stack: Stack) -> None:
    """mallory has 300 tokens a month; the private model's context is 200 tokens. Asking for
    max_tokens 1000 reserves only what the context leaves after the prompt, so the request is
    served (unclamped, 1000 + the prompt would be a 429 the model could never have used)."""
    stack.emulator.set_scenario("ep-private", Scenario(content="short answer", prompt_tokens=9))
    served = stack.chat("key-mallory", model="private", max_tokens=1000)
    assert served.status_code == 200, served.text
    assert stack.month("mallory") == served.json()["usage"]["total_tokens"]


def test_monthly_quota_refuses_with_insufficient_quota(stack: Stack) -> None:
    stack.emulator.set_scenario("ep-primary", Scenario(content="word " * 250, prompt_tokens=12))
    assert stack.chat("key-mallory", max_tokens=280).status_code == 200  # 262 of 300 a month
    refused = stack.chat("key-mallory", max_tokens=40)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "insufficient_quota"
    assert int(refused.headers["retry-after"]) <= 31 * 86_400


def test_parallel_requests_never_exceed_the_quota_and_settle_exactly(stack: Stack) -> None:
    """50 concurrent streams against bob's 400 tokens/day, each reserving 7 + 50 = 57.

    Every admitted stream is held open (an emulator barrier after its first token) until all
    50 have been admitted or refused, so no settlement frees tokens early: exactly
    400 // 57 = 7 may be admitted. Then all finish and settle to their real usage.
    """
    stack.emulator.set_scenario(
        "ep-primary", Scenario(content=CONTENT, barrier="hold", barrier_timeout_s=30)
    )
    statuses: list[int] = []
    usages: list[int] = []
    lock = threading.Condition()
    body = {
        "model": "chat",
        "messages": [{"role": "user", "content": "Hi there"}],
        "max_tokens": 50,
        "stream": True,
        "stream_options": {"include_usage": True},
    }

    def one() -> None:
        url = f"{stack.url}/v1/chat/completions"
        with httpx.stream("POST", url, json=body, headers=as_key("key-bob"), timeout=60) as r:
            with lock:
                statuses.append(r.status_code)
                lock.notify_all()
            text = r.read().decode()
        if r.status_code == 200:
            last_usage = [e for e in text.split("\n\n") if '"usage"' in e][-1]
            with lock:
                usages.append(json.loads(last_usage[6:])["usage"]["total_tokens"])

    threads = [threading.Thread(target=one) for _ in range(50)]
    for thread in threads:
        thread.start()
    with lock:
        assert lock.wait_for(lambda: len(statuses) == 50, timeout=60)
    stack.emulator.barriers.release("hold")
    for thread in threads:
        thread.join()
    assert statuses.count(200) == 400 // 57
    assert statuses.count(429) == 50 - 400 // 57
    assert sum(usages) <= 400
    assert stack.day("bob") == sum(usages)  # every admitted stream settled once, to real usage


# --- fallback ------------------------------------------------------------------------------

FALLS_BACK = [
    Scenario(error_before_stream="ModelError", model_error_status=500),
    Scenario(error_before_stream="ServiceUnavailable"),
    Scenario(error_before_stream="ThrottlingException"),
    Scenario(error_before_stream="InternalFailure"),
    Scenario(fault_after_tokens=0, fault="ModelStreamError"),
    Scenario(fault_after_tokens=0, fault="InternalStreamFailure"),
    Scenario(fault_after_tokens=0, fault="inband_error"),
    Scenario(first_token_delay_ms=4000),  # no first byte within the route's 1.5 s deadline
]


@pytest.mark.parametrize("fault", FALLS_BACK, ids=lambda s: s.error_before_stream or (
    f"{s.fault}@0" if s.fault_after_tokens == 0 else "first-byte-deadline"))  # fmt: skip
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "buffered"])
def test_backend_faults_before_the_first_byte_fall_back(
    stack: Stack, fault: Scenario, stream: bool
) -> None:
    stack.emulator.set_scenario("ep-primary", fault.model_copy(update={"content": "x y z"}))
    stack.emulator.set_scenario("ep-secondary", Scenario(content=CONTENT, prompt_tokens=9))
    response = stack.chat("key-alice", stream=stream, stream_options={"include_usage": True}
                          if stream else None)  # fmt: skip
    assert response.status_code == 200
    assert response.headers["x-llm-backend"] == "secondary"
    if stream:
        chunks = [json.loads(e[6:]) for e in response.text.split("\n\n")
                  if e.startswith("data: {")]  # fmt: skip
        assert {c["model"] for c in chunks} == {"secondary"}
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
        usage = chunks[-1]["usage"]
    else:
        body = response.json()
        assert body["model"] == "secondary"
        text, usage = body["choices"][0]["message"]["content"], body["usage"]
    assert text == CONTENT  # nothing of the failed attempt is spliced in
    assert (stack.calls("ep-primary"), stack.calls("ep-secondary")) == (1, 1)
    assert stack.day("alice") == usage["total_tokens"]  # the failed attempt cost nothing


def test_a_request_the_model_rejects_does_not_fall_back_and_costs_nothing(stack: Stack) -> None:
    stack.emulator.set_scenario(
        "ep-primary", Scenario(error_before_stream="ModelError", model_error_status=400,
                               model_error_message="prompt too long")
    )  # fmt: skip
    response = stack.chat("key-alice")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "model_rejected_request"
    assert (stack.calls("ep-primary"), stack.calls("ep-secondary")) == (1, 0)
    assert stack.day("alice") == 0


@pytest.mark.parametrize(
    "fault", ["ModelStreamError", "InternalStreamFailure", "inband_error", "finish_error"]
)
def test_after_the_first_byte_there_is_no_fallback(stack: Stack, fault: str) -> None:
    stack.emulator.set_scenario(
        "ep-primary",
        Scenario(content=CONTENT, fault_after_tokens=3, fault=fault),  # type: ignore[arg-type]
    )
    response = stack.chat("key-alice", stream=True)
    events = [e for e in response.text.split("\n\n") if e.startswith("data: ")]
    assert response.headers["x-llm-backend"] == "primary"
    assert events[-1].startswith('data: {"error":')
    streamed = [json.loads(e[6:]) for e in events[:-1]]
    assert {c["model"] for c in streamed} == {"primary"}
    assert stack.calls("ep-secondary") == 0
    # Charged: the prompt estimate plus one token per delta streamed before the fault.
    deltas = sum(1 for c in streamed if c["choices"] and c["choices"][0]["delta"].get("content"))
    assert deltas == 3
    assert stack.day("alice") == 4 + 3 + deltas  # ceil(len("Hi there") / 3) + 4 per message


def test_all_backends_failing_is_an_error_that_costs_nothing(stack: Stack) -> None:
    for name in ("ep-primary", "ep-secondary"):
        stack.emulator.set_scenario(name, Scenario(error_before_stream="ServiceUnavailable"))
    response = stack.chat("key-alice")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "model_unavailable"
    assert stack.day("alice") == 0


def test_attempts_are_bounded(stack: Stack) -> None:
    for name in ("ep-one", "ep-two", "ep-three"):
        stack.emulator.set_scenario(name, Scenario(error_before_stream="InternalFailure"))
    assert stack.chat("key-alice", model="triple").status_code == 502
    assert [stack.calls(f"ep-{n}") for n in ("one", "two", "three")] == [1, 1, 0]


def test_a_failing_backend_is_cooled_down_and_skipped(stack: Stack) -> None:
    stack.emulator.set_scenario("ep-primary", Scenario(error_before_stream="ServiceUnavailable"))
    for _ in range(2):  # cooldown_failures = 2
        assert stack.chat("key-alice").headers["x-llm-backend"] == "secondary"
    assert stack.calls("ep-primary") == 2
    for _ in range(3):
        assert stack.chat("key-alice").headers["x-llm-backend"] == "secondary"
    assert stack.calls("ep-primary") == 2  # skipped while cooling down


def test_canary_split_reaches_both_backends(stack: Stack) -> None:
    served = [stack.chat("key-alice", model="canary").headers["x-llm-backend"]
              for _ in range(40)]  # fmt: skip
    assert 8 <= served.count("canary") <= 32  # 50/50 with a seeded generator
    assert served.count("stable") + served.count("canary") == 40


def test_a_missed_deadline_aborts_the_slow_read_at_once(stack: Stack) -> None:
    """The abandoned attempt's reader is released when the deadline passes, not when the slow
    backend finally sends its first token (5 s here)."""
    stack.emulator.set_scenario("ep-primary", Scenario(first_token_delay_ms=5000))
    assert stack.chat("key-alice").headers["x-llm-backend"] == "secondary"
    assert _wait_for_no_upstream_reader(stack, timeout_s=2)


def test_a_client_that_disconnects_is_charged_once_for_what_was_streamed(stack: Stack) -> None:
    stack.emulator.set_scenario("ep-primary", Scenario(content="word " * 400, token_delay_ms=5))
    body = {"model": "chat", "messages": [{"role": "user", "content": "Hi there"}],
            "max_tokens": 500, "stream": True}  # fmt: skip
    headers = as_key("key-alice")
    request_id = json.loads(headers["x-amzn-request-context"])["requestId"]
    with httpx.stream("POST", f"{stack.url}/v1/chat/completions", json=body,
                      headers=headers) as response:  # fmt: skip
        next(response.iter_bytes())
    marker = _wait_for_settled(stack, request_id)
    charged = stack.day("alice")
    assert int(marker["used"]["N"]) == charged
    assert 7 < charged < 7 + 400  # the prompt estimate plus what streamed, not the reservation
    time.sleep(0.3)
    assert stack.day("alice") == charged  # and only once


def _wait_for_settled(stack: Stack, request_id: str) -> dict[str, Any]:
    client = boto3.client("dynamodb")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        item = client.get_item(
            TableName=stack.table, Key={"pk": {"S": f"request#{request_id}"}}, ConsistentRead=True
        ).get("Item")
        if item and item["state"]["S"] == "settled":
            return dict(item)
        time.sleep(0.05)
    raise AssertionError(f"request {request_id} was never settled")


# --- telemetry: EMF metrics (Powertools) and the per-request log line ------------------------
# Both go to stdout, where Lambda hands them to CloudWatch Logs (which extracts the EMF metrics).
# EMF records are printed (captured with capsys); the log line's stream is redirected.

SERVICE = "LlmServing-test-Gateway"
PROMPT = "Hi there"


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch, request_log: io.StringIO) -> io.StringIO:
    """conftest's request log, with this module's service name."""
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", SERVICE)
    return request_log


def _metric_names(record: dict[str, Any]) -> set[str]:
    return {m["Name"] for m in record["_aws"]["CloudWatchMetrics"][0]["Metrics"]}


def test_a_streamed_fallback_emits_route_and_backend_metrics_and_one_log_line(
    stack: Stack, captured: io.StringIO, capsys: pytest.CaptureFixture[str]
) -> None:
    stack.emulator.set_scenario("ep-primary", Scenario(error_before_stream="ServiceUnavailable"))
    stack.emulator.set_scenario("ep-secondary", Scenario(content=CONTENT, prompt_tokens=9))
    response = stack.chat("key-alice", stream=True)
    assert response.status_code == 200
    (record,) = emf_records(capsys.readouterr().out)
    assert record["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "LlmGateway"
    assert dimension_sets(record) == [{"service", "route"}, {"service", "route", "backend"}]
    assert (record["service"], record["route"], record["backend"]) == (SERVICE, "chat", "secondary")
    assert "consumer" not in record  # unbounded: never a dimension
    assert _metric_names(record) == {
        "Requests", "Duration", "Fallbacks", "QuotaRejections", "TimeToFirstByte",
        "UpstreamTimeToFirstByte", "InputTokens", "OutputTokens", "OutputTokensPerSecond",
    }  # fmt: skip
    assert record["Fallbacks"] == [1] and record["QuotaRejections"] == [0]  # noqa: PT018
    assert record["InputTokens"] == [9]
    assert 0 < record["UpstreamTimeToFirstByte"][0] <= record["TimeToFirstByte"][0]
    assert record["TimeToFirstByte"][0] <= record["Duration"][0]
    units = {m["Name"]: m["Unit"] for m in record["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert units["TimeToFirstByte"] == "Milliseconds"
    assert units["OutputTokensPerSecond"] == "Count/Second"
    (line,) = request_lines(captured)
    assert line["consumer"] == "alice"
    assert (line["route"], line["backend"], line["attempts"]) == ("chat", "secondary", 2)
    assert line["outcome"] == "ok"
    assert line["input_tokens"] == 9
    assert line["output_tokens"] == record["OutputTokens"][0]
    assert line["ttfb_ms"] > 0
    assert line["request_id"]


def test_errors_are_counted_by_kind(
    stack: Stack, captured: io.StringIO, capsys: pytest.CaptureFixture[str]
) -> None:
    stack.emulator.set_scenario(
        "ep-primary", Scenario(content=CONTENT, fault_after_tokens=2, fault="ModelStreamError")
    )
    stack.chat("key-alice", stream=True)
    stack.chat("key-bob", max_tokens=5000)  # over bob's 400 tokens a day: refused
    records = emf_records(capsys.readouterr().out)
    errors = [r for r in records if "Errors" in r]
    assert [(r["route"], r["kind"]) for r in errors] == [
        ("chat", "model_error"),
        ("chat", "quota_exceeded"),
    ]
    assert all(dimension_sets(r) == [{"service", "route", "kind"}] for r in errors)
    rejected = [r for r in records if r.get("QuotaRejections") == [1]]
    assert len(rejected) == 1
    outcomes = [e["outcome"] for e in request_lines(captured)]
    assert outcomes == ["error", "error"]


def test_no_prompt_or_completion_text_is_logged(
    stack: Stack, captured: io.StringIO, capsys: pytest.CaptureFixture[str]
) -> None:
    stack.emulator.set_scenario("ep-primary", Scenario(content=CONTENT))
    stack.chat("key-alice", stream=True)
    stack.chat("key-alice")
    stack.emulator.set_scenario(
        "ep-primary", Scenario(content=CONTENT, fault_after_tokens=3, fault="inband_error")
    )
    stack.chat("key-alice", stream=True)
    everything = capsys.readouterr().out + captured.getvalue()
    assert everything  # something was written
    for secret in (PROMPT, CONTENT, CONTENT.split(",")[0]):
        assert secret not in everything


def test_unknown_models_are_logged_but_never_become_a_dimension(
    stack: Stack, captured: io.StringIO, capsys: pytest.CaptureFixture[str]
) -> None:
    response = stack.chat("key-alice", model="made-up-model-123")
    assert response.status_code == 404
    assert emf_records(capsys.readouterr().out) == []
    (line,) = request_lines(captured)
    assert line.get("route") is None  # Powertools drops null fields
    assert line["error_kind"] == "invalid_request"


# --- every reservation and settlement outcome: the upstream released, one telemetry line -----


def _request_lines(buffer: io.StringIO, consumer: str) -> list[dict[str, Any]]:
    return [e for e in request_lines(buffer) if e.get("consumer") == consumer]


def _wait_for_no_upstream_reader(stack: Stack, timeout_s: float = 2) -> bool:
    """Whether every upstream connection is back in the pool or closed within ``timeout_s``."""
    runtime = stack.invoker.runtime
    assert runtime is not None  # the event-loop client (no proxy here)
    deadline = time.monotonic() + timeout_s
    while runtime.connections_in_use():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@contextmanager
def _dynamodb_stalled(url: str) -> Iterator[None]:
    """Every DynamoDB call waits until the block exits: the single-threaded server
    (local/dynamodb.py) is held reading an unfinished request. Keep the block under the quota
    client's 2 s read timeout."""
    address = urlsplit(url)
    with socket.create_connection((address.hostname, address.port)) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: dynamodb\r\n")
        yield
        sock.sendall(b"\r\n")
        sock.recv(65536)


@pytest.mark.parametrize("first", ["first byte", "refusal"])
def test_a_request_id_reserved_by_another_consumer_is_a_500_that_releases_the_upstream(
    stack: Stack, captured: io.StringIO, first: str
) -> None:
    """The reservation fails in a way that is neither a quota nor the store being down (the
    request id is already another consumer's): an OpenAI-format 500, the model call (opened
    concurrently) stopped whether or not it had produced its first byte, one telemetry line."""
    request_id = str(uuid.uuid4())
    alice, mallory = (
        {"x-amzn-request-context": json.dumps({"requestId": request_id,
                                               "identity": {"apiKeyId": key}})}
        for key in ("key-alice", "key-mallory")
    )  # fmt: skip
    payload = {"model": "private", "messages": [{"role": "user", "content": "Hi"}],
               "stream": True}  # fmt: skip
    url = f"{stack.url}/v1/chat/completions"
    assert httpx.post(url, json=payload, headers=alice).status_code == 200  # reserves request_id
    barrier = f"held-{uuid.uuid4().hex}"
    if first == "first byte":  # the stream opens while DynamoDB holds the reservation back
        stack.emulator.set_scenario("ep-private", Scenario(barrier=barrier, barrier_timeout_s=10))
    else:  # the reservation fails long before the model's first token
        stack.emulator.set_scenario("ep-private", Scenario(first_token_delay_ms=5000))
    responses: list[httpx.Response] = []

    def send() -> None:
        responses.append(httpx.post(url, json=payload, headers=mallory, timeout=30))

    try:
        sender = threading.Thread(target=send)
        if first == "first byte":
            with _dynamodb_stalled(stack.dynamodb_url):
                sender.start()
                assert stack.emulator.barriers.wait_for_waiters(barrier, timeout=1)
                time.sleep(0.3)  # the gateway reads the first token meanwhile
        else:
            sender.start()
        sender.join(timeout=30)
        (response,) = responses
        assert response.status_code == 500
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
        assert "Traceback" not in response.text
        assert stack.calls("ep-private") == 2  # alice's, then mallory's
        assert _wait_for_no_upstream_reader(stack), "the model call runs on, abandoned"
        assert [line["status"] for line in _request_lines(captured, "mallory")] == [500]
    finally:
        stack.emulator.barriers.release(barrier)


def _wait_for_marker(stack: Stack, request_id: str) -> None:
    client = boto3.client("dynamodb")
    deadline = time.monotonic() + 5
    key = {"pk": {"S": f"request#{request_id}"}}
    while not client.get_item(TableName=stack.table, Key=key, ConsistentRead=True).get("Item"):
        assert time.monotonic() < deadline, f"request {request_id} was never reserved"
        time.sleep(0.02)


@pytest.mark.parametrize("outcome", ["no backend answered", "streamed"])
def test_a_store_fault_at_settlement_leaves_the_response_as_it_was(
    stack: Stack, captured: io.StringIO, caplog: pytest.LogCaptureFixture, outcome: str
) -> None:
    """The quota table disappears between reserve and settle (a DynamoDB fault the store
    reports as QuotaUnavailable): the client's answer is unchanged, with one telemetry line."""
    barrier = f"held-{uuid.uuid4().hex}"
    if outcome == "no backend answered":  # both miss the route's 1.5 s first-byte deadline
        for name in ("ep-primary", "ep-secondary"):
            stack.emulator.set_scenario(name, Scenario(first_token_delay_ms=4000))
    else:
        stack.emulator.set_scenario("ep-primary", Scenario(barrier=barrier, barrier_timeout_s=10))
    headers = as_key("key-alice")
    request_id = json.loads(headers["x-amzn-request-context"])["requestId"]
    payload = {"model": "chat", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    responses: list[httpx.Response] = []

    def send() -> None:
        url = f"{stack.url}/v1/chat/completions"
        responses.append(httpx.post(url, json=payload, headers=headers, timeout=30))

    sender = threading.Thread(target=send)
    sender.start()
    try:
        _wait_for_marker(stack, request_id)
        boto3.client("dynamodb").delete_table(TableName=stack.table)
    finally:
        stack.emulator.barriers.release(barrier)
        sender.join(timeout=30)
    (response,) = responses
    if outcome == "no backend answered":
        assert response.status_code == 504
        assert response.json()["error"]["code"] == "model_timeout"
    else:
        assert response.status_code == 200
        assert response.text.endswith("data: [DONE]\n\n")
    (line,) = _request_lines(captured, "alice")
    assert line["status"] == response.status_code
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
