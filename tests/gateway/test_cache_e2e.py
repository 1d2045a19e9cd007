"""The response cache end to end over real HTTP: openai SDK (or httpx) → uvicorn gateway →
boto3 → the SageMaker emulator, answers cached in DynamoDB (moto's server, single-threaded),
token quotas in the same moto, ApplyGuardrail answered by the local stand-in."""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx2 as httpx
import pytest

from llm_gateway.response_cache import STORE_LIMIT_BYTES
from local.guardrail_emulator import GuardrailConfig
from local.scenarios import Scenario, ScriptedToolCall
from tests.gateway.conftest import (
    PolicyBackends,
    PolicyStack,
    dimension_sets,
    emf_records,
    openai_backend,
    policy_stack,
    request_lines,
    sse_chunks,
)

GUARD = {"guardrail_id": "gr-test", "guardrail_version": "1", "window_chars": 50}
ROUTES: dict[str, Any] = {
    "routes": [
        {"model": "cached", "backends": [openai_backend("cached")], "cache": {}},
        {"model": "shared", "backends": [openai_backend("shared")],
         "cache": {"scope": "route", "charge": "none"}},
        {"model": "always", "backends": [openai_backend("always")], "cache": {"when": "always"}},
        {"model": "guarded", "backends": [openai_backend("guarded")], "cache": {},
         "guardrail": GUARD},
        {"model": "plain", "backends": [openai_backend("plain")]},
    ]
}  # fmt: skip
ASK: Any = [{"role": "user", "content": "What is the answer?"}]
ANSWER = Scenario(reasoning="Thinking it over.", content="The answer is 42.", prompt_tokens=9)


@pytest.fixture
def stack(
    policy_backends: PolicyBackends, monkeypatch: pytest.MonkeyPatch
) -> Iterator[PolicyStack]:
    with policy_stack(policy_backends, ROUTES, monkeypatch) as stack:
        for route in ROUTES["routes"]:
            stack.emulator.set_scenario(f"ep-{route['model']}", ANSWER)
        yield stack


def _text(chunks: list[dict[str, Any]], field: str = "content") -> str:
    return "".join(c["choices"][0]["delta"].get(field) or "" for c in chunks if c["choices"])


def _finish(chunks: list[dict[str, Any]]) -> list[str]:
    return [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]
            and c["choices"][0]["finish_reason"]]  # fmt: skip


# --- hits ------------------------------------------------------------------------------------


def test_a_streamed_hit_replays_the_answer_with_no_upstream_call(stack: PolicyStack) -> None:
    request = {"model": "cached", "messages": ASK, "temperature": 0, "stream": True,
               "stream_options": {"include_usage": True}}  # fmt: skip
    miss, hit = stack.post(**request), stack.post(**request)
    assert (miss.headers["x-llm-cache"], hit.headers["x-llm-cache"]) == ("miss", "hit")
    assert stack.calls() == 1  # the hit made no upstream call
    (first, first_done), (second, second_done) = sse_chunks(miss.text), sse_chunks(hit.text)
    assert first_done
    assert second_done
    assert _text(second) == _text(first) == "The answer is 42."
    assert _text(second, "reasoning_content") == _text(first, "reasoning_content")
    assert _finish(second) == _finish(first) == ["stop"]
    assert second[-1]["usage"] == first[-1]["usage"]
    assert first[-1]["usage"]["prompt_tokens"] == 9
    assert {c["object"] for c in second} == {"chat.completion.chunk"}
    assert {c["model"] for c in second} == {"cached"}  # the backend that wrote it
    assert second[0]["choices"][0]["delta"]["role"] == "assistant"
    assert hit.headers["x-llm-backend"] == "cached"


def test_a_non_stream_hit_is_the_same_completion(stack: PolicyStack) -> None:
    request = {"model": "cached", "messages": ASK, "temperature": 0}
    miss, hit = stack.post(**request), stack.post(**request)
    assert (miss.headers["x-llm-cache"], hit.headers["x-llm-cache"]) == ("miss", "hit")
    assert stack.calls() == 1
    first, second = miss.json(), hit.json()
    assert second["choices"] == first["choices"]
    assert second["usage"] == first["usage"]
    assert second["object"] == "chat.completion"
    assert first["choices"][0]["message"]["reasoning_content"] == "Thinking it over."


def test_stream_and_non_stream_share_entries(stack: PolicyStack) -> None:
    client = stack.client()
    stored = client.chat.completions.create(model="cached", messages=ASK, seed=7)
    chunks = list(client.chat.completions.create(model="cached", messages=ASK, seed=7, stream=True))
    assert stack.calls() == 1
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        stored.choices[0].message.content
    )


def test_tool_calls_are_replayed_exactly(stack: PolicyStack) -> None:
    call = ScriptedToolCall(name="get_weather", arguments='{"city": "Zürich"}', id="call_1")
    stack.emulator.set_scenario(
        "ep-cached", Scenario(content="", finish_reason="tool_calls", tool_calls=(call,))
    )
    tools: Any = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    client = stack.client()
    replies = [
        client.chat.completions.create(model="cached", messages=ASK, tools=tools, temperature=0)
        for _ in range(2)
    ]
    assert stack.calls() == 1
    first, second = (r.choices[0] for r in replies)
    assert second.finish_reason == first.finish_reason == "tool_calls"
    assert second.message.model_dump() == first.message.model_dump()
    streamed = list(
        client.chat.completions.create(
            model="cached", messages=ASK, tools=tools, temperature=0, stream=True
        )
    )
    assert stack.calls() == 1
    (piece,) = [tc for c in streamed for tc in c.choices[0].delta.tool_calls or ()]
    assert (piece.index, piece.id, piece.function.name, piece.function.arguments) == (
        0, "call_1", "get_weather", '{"city": "Zürich"}'
    )  # fmt: skip


# --- what is cacheable -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "cacheable"),
    [
        ({"temperature": 0.7}, False),
        ({}, False),  # the backend's default temperature: an answer that should vary
        ({"temperature": 0.7, "seed": 5}, True),
        ({"temperature": 0}, True),
        ({"temperature": 0, "logprobs": True}, False),  # logprobs are not stored
    ],
    ids=["temperature-0.7", "default", "seeded", "greedy", "logprobs"],
)
def test_only_deterministic_requests_are_cached(
    stack: PolicyStack, extra: dict[str, Any], cacheable: bool
) -> None:
    responses = [stack.post(model="cached", messages=ASK, **extra) for _ in range(2)]
    assert [r.status_code for r in responses] == [200, 200]
    assert stack.calls() == (1 if cacheable else 2)
    headers = [r.headers.get("x-llm-cache") for r in responses]
    assert headers == (["miss", "hit"] if cacheable else [None, None])
    if not cacheable:
        assert stack.cache_items() == []


def test_a_route_caching_always_caches_sampled_requests(stack: PolicyStack) -> None:
    for _ in range(2):
        stack.post(model="always", messages=ASK, temperature=0.7)
    assert stack.calls() == 1


def test_routes_without_a_cache_never_answer_from_it(stack: PolicyStack) -> None:
    responses = [stack.post(model="plain", messages=ASK, temperature=0) for _ in range(2)]
    assert stack.calls() == 2
    assert all("x-llm-cache" not in r.headers for r in responses)


def test_every_request_field_that_shapes_the_answer_is_in_the_key(stack: PolicyStack) -> None:
    base = {"model": "cached", "messages": ASK, "temperature": 0}
    variants = [
        {}, {"max_tokens": 20}, {"stop": ["\n"]}, {"top_p": 0.5}, {"seed": 3},
        {"response_format": {"type": "json_object"}}, {"reasoning_effort": "low"},
        {"messages": [*ASK, {"role": "assistant", "content": "Hm"}]},
    ]  # fmt: skip
    for variant in variants:
        stack.post(**{**base, **variant})
    assert stack.calls() == len(variants)
    same = stack.post(**base, max_completion_tokens=20, user="someone", stream=False)
    assert same.headers["x-llm-cache"] == "hit"  # max_completion_tokens = max_tokens; user: no


# --- what is stored ----------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["ModelStreamError", "inband_error", "finish_error"])
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "non-stream"])
def test_failed_answers_are_never_stored(stack: PolicyStack, fault: str, stream: bool) -> None:
    broken = ANSWER.model_copy(update={"fault_after_tokens": 3, "fault": fault})
    stack.emulator.set_scenario("ep-cached", broken)
    request = {"model": "cached", "messages": ASK, "temperature": 0, "stream": stream}
    failed = stack.post(**request)
    if stream:
        assert "error" in failed.text
    else:
        assert failed.status_code >= 500
    assert stack.cache_items() == []
    stack.emulator.set_scenario("ep-cached", ANSWER)
    assert stack.post(**request).headers["x-llm-cache"] == "miss"
    assert stack.post(**request).headers["x-llm-cache"] == "hit"
    assert stack.calls() == 2


def test_an_answer_cut_short_by_the_client_is_not_stored(stack: PolicyStack) -> None:
    slow = ANSWER.model_copy(update={"content": "word " * 40, "token_delay_ms": 20})
    stack.emulator.set_scenario("ep-cached", slow)
    body = {"model": "cached", "messages": ASK, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{stack.url}/v1/chat/completions", json=body,
                      headers={"authorization": "Bearer alice"}) as response:  # fmt: skip
        next(response.iter_bytes())  # the first chunk, then gone
    time.sleep(1.5)  # the whole answer would have been written by now
    assert stack.cache_items() == []


def test_a_content_filtered_answer_is_never_stored(stack: PolicyStack) -> None:
    stack.guardrail.config = GuardrailConfig(block_words=("forbidden",))
    stack.emulator.set_scenario(
        "ep-guarded", Scenario(content="Here it is: the forbidden recipe, step by step. " * 3)
    )
    request = {"model": "guarded", "messages": ASK, "temperature": 0, "stream": True}
    for _ in range(2):
        chunks, _ = sse_chunks(stack.post(**request).text)
        assert _finish(chunks) == ["content_filter"]
    assert stack.calls() == 2
    assert stack.cache_items() == []


def test_a_hit_is_input_checked_but_not_output_checked_again(stack: PolicyStack) -> None:
    stack.guardrail.config = GuardrailConfig(block_words=("forbidden",))
    request = {"model": "guarded", "messages": ASK, "temperature": 0}
    assert stack.post(**request).headers["x-llm-cache"] == "miss"
    stack.guardrail.clear_requests()
    assert stack.post(**request).headers["x-llm-cache"] == "hit"
    assert [check.source for check in stack.guardrail.requests] == ["INPUT"]
    blocked = stack.post(model="guarded", messages=[{"role": "user", "content": "forbidden"}],
                         temperature=0)  # fmt: skip
    assert blocked.status_code == 400  # the input check runs before any lookup
    assert "x-llm-cache" not in blocked.headers


def test_concurrent_identical_misses_store_one_answer(stack: PolicyStack) -> None:
    stack.emulator.set_scenario("ep-cached", ANSWER.model_copy(update={"barrier": "gate"}))
    request = {"model": "cached", "messages": ASK, "temperature": 0}
    results: list[httpx.Response] = []
    threads = [
        threading.Thread(target=lambda: results.append(stack.post(**request))) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    assert stack.emulator.barriers.wait_for_waiters("gate", 4, timeout=10)  # all four missed
    stack.emulator.barriers.release("gate")
    for thread in threads:
        thread.join(timeout=30)
    assert [r.headers["x-llm-cache"] for r in results] == ["miss"] * 4
    assert {r.json()["choices"][0]["message"]["content"] for r in results} == {"The answer is 42."}
    (item,) = stack.cache_items()
    assert item["content"]["S"] == "The answer is 42."
    assert item["reasoning"]["S"] == "Thinking it over."
    hit = stack.post(**request)
    assert hit.headers["x-llm-cache"] == "hit"
    assert hit.json()["choices"] == results[0].json()["choices"]
    assert stack.calls() == 4


def test_an_answer_over_the_item_limit_is_not_stored(
    stack: PolicyStack, caplog: pytest.LogCaptureFixture
) -> None:
    huge = "x" * (STORE_LIMIT_BYTES + 1)  # one token, streamed in one piece
    stack.emulator.set_scenario("ep-cached", Scenario(content=huge))
    request = {"model": "cached", "messages": ASK, "temperature": 0}
    with caplog.at_level(logging.INFO, logger="llm_gateway.response_cache"):
        first = stack.post(**request)
        second = stack.post(**request)
    assert first.json()["choices"][0]["message"]["content"] == huge
    assert (first.headers["x-llm-cache"], second.headers["x-llm-cache"]) == ("miss", "miss")
    assert stack.calls() == 2
    assert stack.cache_items() == []
    records = [r for r in caplog.records if r.name == "llm_gateway.response_cache"]
    assert records
    assert {r.levelno for r in records} == {logging.INFO}


def test_a_large_answer_under_the_limit_is_stored(stack: PolicyStack) -> None:
    large = "y" * (STORE_LIMIT_BYTES - 2000)
    stack.emulator.set_scenario("ep-cached", Scenario(content=large))
    request = {"model": "cached", "messages": ASK, "temperature": 0}
    stack.post(**request)
    hit = stack.post(**request)
    assert hit.headers["x-llm-cache"] == "hit"
    assert hit.json()["choices"][0]["message"]["content"] == large


# --- charge and scope --------------------------------------------------------------------------


def test_a_hit_charges_the_stored_usage(stack: PolicyStack) -> None:
    request = {"model": "cached", "messages": ASK, "temperature": 0}
    usage = stack.post(**request).json()["usage"]
    assert stack.day() == usage["total_tokens"]
    hit = stack.post(**request)
    assert hit.headers["x-llm-cache"] == "hit"
    assert stack.day() == 2 * usage["total_tokens"]
    assert int(hit.headers["x-ratelimit-remaining-tokens"]) > 0


def test_a_route_charging_nothing_for_hits_charges_nothing(stack: PolicyStack) -> None:
    request = {"model": "shared", "messages": ASK, "temperature": 0}
    stack.post(**request)
    charged = stack.day()
    assert charged > 0  # the miss was the model's work
    assert stack.post(**request).headers["x-llm-cache"] == "hit"
    assert stack.day() == charged


def test_entries_are_per_consumer_unless_the_route_shares_them(stack: PolicyStack) -> None:
    for model in ("cached", "shared"):
        stack.post("alice", model=model, messages=ASK, temperature=0)
    own = stack.post("bob", model="cached", messages=ASK, temperature=0)
    shared = stack.post("bob", model="shared", messages=ASK, temperature=0)
    assert (own.headers["x-llm-cache"], shared.headers["x-llm-cache"]) == ("miss", "hit")
    assert stack.calls("ep-cached") == 2
    assert stack.calls("ep-shared") == 1


# --- the store failing -------------------------------------------------------------------------


def test_a_cache_store_failing_never_fails_the_request(
    policy_backends: PolicyBackends,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with policy_stack(policy_backends, ROUTES, monkeypatch, cache_table="absent") as stack:
        stack.emulator.set_scenario("ep-cached", ANSWER)
        responses = [
            stack.post(model="cached", messages=ASK, temperature=0, stream=stream)
            for stream in (False, True, False)
        ]
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert [r.headers["x-llm-cache"] for r in responses] == ["miss"] * 3
    assert stack.calls() == 3
    warnings = [r.getMessage() for r in caplog.records if r.name == "llm_gateway.response_cache"]
    assert any("read failed" in w for w in warnings)
    assert any("write failed" in w for w in warnings)
    assert not any("42" in w or "What is" in w for w in warnings)  # never any content


# --- telemetry ---------------------------------------------------------------------------------


def test_hits_and_misses_are_counted_per_route(
    stack: PolicyStack, request_log: io.StringIO, capsys: pytest.CaptureFixture[str]
) -> None:
    stack.post(model="cached", messages=ASK, temperature=0, stream=True)
    stack.post(model="cached", messages=ASK, temperature=0, stream=True)
    stack.post(model="cached", messages=ASK, temperature=0.9)  # not cacheable: not counted
    stack.post(model="plain", messages=ASK, temperature=0)
    records = emf_records(capsys.readouterr().out)
    cache = [r for r in records if "CacheHits" in r]
    assert [(r["route"], r["CacheHits"], r["CacheMisses"]) for r in cache] == [
        ("cached", [0], [1]),
        ("cached", [1], [0]),
    ]
    assert all(dimension_sets(r) == [{"service", "route"}] for r in cache)
    requests = [r for r in records if "Requests" in r]
    assert "OutputTokens" in requests[0] and "OutputTokens" not in requests[1]  # noqa: PT018
    assert "backend" not in requests[1]  # a hit: no backend did any work
    assert "TimeToFirstByte" in requests[1]
    lines = request_lines(request_log)
    assert [line.get("cache") for line in lines] == ["miss", "hit", None, None]
    assert lines[1]["output_tokens"] == lines[0]["output_tokens"]  # what the hit was charged
    assert "The answer is 42" not in json.dumps(lines)
