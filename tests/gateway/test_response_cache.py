"""The response cache's pure parts (what is cacheable, the key, the item, the recording) and
its store against DynamoDB (moto's server over real HTTP)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import boto3
import pytest

from llm_gateway.adapters import Delta, Usage
from llm_gateway.contract import CachePolicy, Route
from llm_gateway.request import ChatRequest, parse_chat_request
from llm_gateway.response_cache import (
    MAX_ITEM_BYTES,
    STORE_LIMIT_BYTES,
    CachedAnswer,
    Recording,
    ResponseCache,
    cache_key,
    cacheable,
    item_size,
)
from local.dynamodb import create_cache_table, dynamodb_server

BACKEND = {"name": "b", "endpoint_name": "ep-b", "format": "openai", "max_tokens_default": 64}
ROUTE = Route.model_validate({"model": "m", "backends": [BACKEND], "cache": {}})
ANSWER = CachedAnswer(
    backend="b", finish_reason="stop", usage=Usage(9, 4, cached_tokens=2),
    content="Hé 🙂", reasoning="Think.",
    tool_calls=({"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}},),
)  # fmt: skip


def chat(**fields: Any) -> ChatRequest:
    body = {"model": "m", "messages": [{"role": "user", "content": "Hi"}], **fields}
    return parse_chat_request(json.dumps(body).encode())


@pytest.mark.parametrize(
    ("fields", "deterministic", "always"),
    [
        ({"temperature": 0}, True, True),
        ({"seed": 1, "temperature": 1.2}, True, True),
        ({"temperature": 0.7}, False, True),
        ({}, False, True),
        ({"temperature": 0, "logprobs": True}, False, False),
        ({"temperature": 0, "n": 1}, True, True),
    ],
)
def test_what_is_cacheable(fields: dict[str, Any], deterministic: bool, always: bool) -> None:
    assert cacheable(CachePolicy(), chat(**fields)) is deterministic
    assert cacheable(CachePolicy(when="always"), chat(**fields)) is always


def test_remote_images_are_not_cacheable() -> None:
    part = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    request = chat(messages=[{"role": "user", "content": [part]}], temperature=0)
    assert not cacheable(CachePolicy(when="always"), request)


def test_the_key_ignores_transport_fields_and_normalizes_the_limit() -> None:
    base = cache_key(ROUTE, chat(temperature=0, max_tokens=5), "alice")
    same = [
        chat(temperature=0, max_completion_tokens=5),
        chat(temperature=0, max_tokens=5, stream=True, stream_options={"include_usage": True}),
        chat(temperature=0, max_tokens=5, user="u-1"),
        chat(temperature=0.0, max_tokens=5, max_completion_tokens=5),
    ]
    assert {cache_key(ROUTE, request, "alice") for request in same} == {base}
    assert base.startswith("cache#v1#") and len(base) == len("cache#v1#") + 64  # noqa: PT018


def test_the_key_changes_with_the_answer_shaping_fields_scope_and_route() -> None:
    base = chat(temperature=0)
    keys = {
        cache_key(ROUTE, base, "alice"),
        cache_key(ROUTE, base, "bob"),
        cache_key(ROUTE, chat(temperature=0, seed=1), "alice"),
        cache_key(ROUTE, chat(temperature=0, stop="x"), "alice"),
        cache_key(ROUTE, chat(temperature=0, top_p=0.3), "alice"),
        cache_key(ROUTE, chat(temperature=0, response_format={"type": "json_object"}), "alice"),
        cache_key(ROUTE.model_copy(update={"model": "other"}), base, "alice"),
        cache_key(ROUTE.model_copy(update={"backends": (ROUTE.backends[0].model_copy(
            update={"name": "new-model"}),)}), base, "alice"),
    }  # fmt: skip
    assert len(keys) == 8
    shared = ROUTE.model_copy(update={"cache": CachePolicy(scope="route")})
    assert cache_key(shared, base, "alice") == cache_key(shared, base, "bob")


def test_a_new_guardrail_version_starts_afresh() -> None:
    guard = {"guardrail_id": "g", "guardrail_version": "1"}
    one = Route.model_validate({"model": "m", "backends": [BACKEND], "cache": {},
                                "guardrail": guard})  # fmt: skip
    two = Route.model_validate({"model": "m", "backends": [BACKEND], "cache": {},
                                "guardrail": {**guard, "guardrail_version": "2"}})  # fmt: skip
    assert cache_key(one, chat(temperature=0), "a") != cache_key(two, chat(temperature=0), "a")


def test_an_item_round_trips() -> None:
    item = ANSWER.item("cache#k", 3600, now=1000.0)
    assert item["expires_at"] == {"N": "4600"}
    assert CachedAnswer.from_item(item) == ANSWER
    bare = CachedAnswer(backend="b", finish_reason="length", usage=Usage(1, 2))
    assert set(bare.item("k", 60, 0)) == {"pk", "backend", "finish", "usage", "stored_at",
                                          "expires_at"}  # fmt: skip
    assert CachedAnswer.from_item(bare.item("k", 60, 0)) == bare


def test_the_replay_deltas() -> None:
    deltas = ANSWER.deltas()
    assert deltas[0].reasoning == "Think."
    assert deltas[1].content == "Hé 🙂"
    assert deltas[2].tool_calls[0]["index"] == 0
    assert deltas[-2:] == [Delta(finish_reason="stop"), Delta(usage=ANSWER.usage)]


def test_the_size_estimate_is_never_below_the_utf8_size() -> None:
    item = ANSWER.item("k", 60, 0)
    raw = sum(len(k.encode()) + len(json.dumps(v, ensure_ascii=False).encode())
              for k, v in item.items())  # fmt: skip
    assert item_size(item) >= raw - 40 * len(item)  # names, values; JSON adds its own framing
    assert STORE_LIMIT_BYTES < MAX_ITEM_BYTES


async def _replay(deltas: Sequence[Delta], recording: Recording, stop: int | None = None) -> None:
    async def source() -> AsyncIterator[Delta]:
        for delta in deltas:
            yield delta

    seen = 0
    async for _ in recording.tap(source()):
        seen += 1
        if seen == stop:
            break


@pytest.mark.parametrize(
    ("finish", "stop", "stored"),
    [("stop", None, True), ("length", None, True), ("tool_calls", None, True),
     ("content_filter", None, False), ("stop", 2, False)],
)  # fmt: skip
def test_only_complete_normal_answers_are_recorded(
    finish: str, stop: int | None, stored: bool
) -> None:
    deltas = [Delta(content="a"), Delta(content="b"), Delta(finish_reason=finish)]
    recording = Recording()
    asyncio.run(_replay(deltas, recording, stop))
    answer = recording.answer("b", Usage(1, 2))
    assert (answer is not None) is stored
    if answer is not None:
        assert (answer.content, answer.usage) == ("ab", Usage(1, 2))  # counted: none reported


def test_a_stream_left_after_its_finish_but_before_its_end_is_not_recorded() -> None:
    """E.g. a client gone between the last text and the usage: the usage never arrived."""
    deltas = [Delta(content="a"), Delta(finish_reason="stop"), Delta(usage=Usage(3, 1))]
    recording = Recording()
    asyncio.run(_replay(deltas, recording, stop=2))
    assert recording.finish_reason == "stop"
    assert recording.answer("b", Usage(1, 1)) is None
    complete = Recording()
    asyncio.run(_replay(deltas, complete))
    answer = complete.answer("b", Usage(1, 1))
    assert answer is not None
    assert answer.usage == Usage(3, 1)  # the reported usage, not the count


# --- the store (moto) --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dynamodb_url() -> Iterator[str]:
    with dynamodb_server() as url:
        yield url


@pytest.fixture
def store(dynamodb_url: str) -> ResponseCache:
    client = boto3.client("dynamodb", endpoint_url=dynamodb_url, region_name="us-east-1",
                          aws_access_key_id="t", aws_secret_access_key="t")  # fmt: skip
    table = f"cache-{uuid.uuid4().hex[:8]}"
    create_cache_table(client, table)
    return ResponseCache(client, table)


def test_the_first_writer_wins(store: ResponseCache) -> None:
    other = CachedAnswer(backend="b", finish_reason="stop", usage=Usage(1, 1), content="other")
    assert store.put("cache#k", ANSWER, 60)
    assert not store.put("cache#k", other, 60)
    assert store.get("cache#k") == ANSWER


def test_an_expired_item_is_absent_and_replaced(store: ResponseCache) -> None:
    past = time.time() - 120
    assert store.put("cache#k", ANSWER, 60, now=past)
    assert store.get("cache#k") is None  # not yet deleted by TTL, but expired
    newer = CachedAnswer(backend="b", finish_reason="stop", usage=Usage(1, 1), content="new")
    assert store.put("cache#k", newer, 60)
    assert store.get("cache#k") == newer


def test_the_limit_keeps_items_under_dynamodbs(store: ResponseCache) -> None:
    """The largest answer stored is accepted by DynamoDB (moto enforces the 400 KB limit)."""
    fitting = CachedAnswer(backend="b", finish_reason="stop", usage=Usage(1, 1),
                           content="é" * ((STORE_LIMIT_BYTES - 400) // 2))  # fmt: skip
    assert item_size(fitting.item("cache#k", 60, 0)) <= STORE_LIMIT_BYTES
    assert store.put("cache#k", fitting, 60)
    too_big = CachedAnswer(backend="b", finish_reason="stop", usage=Usage(1, 1),
                           content="é" * (STORE_LIMIT_BYTES // 2 + 1))  # fmt: skip
    assert not store.put("cache#big", too_big, 60)
    assert store.get("cache#big") is None
