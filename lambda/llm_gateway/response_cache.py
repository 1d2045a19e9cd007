"""An exact-match response cache in DynamoDB, per route (``Route.cache``).

Table (``CACHE_TABLE_ENV``; the quota table's layout, ``local/dynamodb.py`` creates it the same
way): partition key ``pk`` (S), TTL attribute ``expires_at`` (epoch seconds). One item per
answer::

    pk = "cache#<sha256 hex>"   backend: S, finish: S, usage: M {prompt, completion,
                                cached?, reasoning?: N}, content?: S, reasoning?: S,
                                tool_calls?: S (JSON), stored_at: N, expires_at: N

The key (:func:`cache_key`) hashes the route alias, its backends' names, its output
guardrail's id and version, the scope (the consumer's name when ``scope`` is ``consumer``) and
every request field that shapes the answer: messages, sampling parameters, ``stop``, tools,
``tool_choice``, ``response_format``, the output limit, ``seed``, ``reasoning_effort``, ... all
of them but ``stream``, ``stream_options`` and ``user``. A new backend model or guardrail
version so starts afresh instead of serving answers it never made or checked.

What is cached (:func:`cacheable`): with ``when: deterministic`` only requests with
``temperature`` 0 or a ``seed``; never ``n`` > 1 (one stored choice), ``logprobs`` (they are
not stored) or remote image URLs (the image behind a URL may change; data URLs are hashed).
What is stored: answers the model finished normally (``stop``, ``length``, and ``tool_calls``:
the model's normal end when it calls tools) whose stream was read to its end: never a failed,
cut-short or ``content_filter`` answer, nor one the output guardrail could not check. An
answer that passed the route's output guardrail when stored is replayed without a new check.
Items over :data:`STORE_LIMIT_BYTES` (DynamoDB's item limit, 400 KB of names and values, with
a margin) are not stored. Concurrent identical misses each try a conditional put
(``attribute_not_exists(pk)``, or the stored item has expired): the first writer wins, the
others store nothing. The store never fails a request: a read error is a miss, a write error
stores nothing, both logged at warning without any content.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from llm_gateway import aws_clients
from llm_gateway.adapters import Delta, Usage
from llm_gateway.chunks import merge_tool_calls
from llm_gateway.contract import (
    CACHE_TABLE_ENV,
    QUOTA_PARTITION_KEY,
    QUOTA_TTL_ATTRIBUTE,
    CachePolicy,
    Route,
)
from llm_gateway.request import ChatRequest

if TYPE_CHECKING:
    from botocore.session import Session

logger = logging.getLogger(__name__)

KEY_PREFIX = "cache#v1#"
STORABLE_FINISHES = frozenset({"stop", "length", "tool_calls"})
MAX_ITEM_BYTES = 400 * 1024
STORE_LIMIT_BYTES = MAX_ITEM_BYTES * 9 // 10
"""Largest item estimate stored: 10 % under DynamoDB's limit."""
_NOT_KEYED = frozenset({"stream", "stream_options", "user", "max_tokens", "max_completion_tokens"})


class CacheUnavailableError(Exception):
    """DynamoDB failed (an error response, a timeout, no connection)."""


def cacheable(policy: CachePolicy, chat: ChatRequest) -> bool:
    """Whether the route's policy lets this request be answered from (and into) the cache."""
    if (chat.n or 1) > 1 or chat.logprobs or any(image.remote for image in chat.images):
        return False
    if policy.when == "always":
        return True
    return chat.temperature == 0 or chat.seed is not None


def cache_key(route: Route, chat: ChatRequest, consumer: str | None) -> str:
    """The item key for this request on this route (see the module docstring)."""
    policy = route.cache
    guardrail = route.guardrail
    material = {
        "route": route.model,
        "backends": sorted(backend.name for backend in route.backends),
        "guardrail": [guardrail.guardrail_id, guardrail.guardrail_version]
        if guardrail is not None and guardrail.check_output
        else None,
        "scope": (consumer or "") if policy is not None and policy.scope == "consumer" else None,
        "request": chat.model_dump(mode="json", exclude=set(_NOT_KEYED), exclude_none=True),
        "output_limit": chat.output_limit,
    }
    text = json.dumps(material, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return KEY_PREFIX + hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class CachedAnswer:
    """One stored answer: what it said, how it ended, what it used, which backend made it."""

    backend: str
    finish_reason: str
    usage: Usage
    content: str = ""
    reasoning: str = ""
    tool_calls: tuple[dict[str, Any], ...] = ()

    def deltas(self) -> list[Delta]:
        """The answer as a stream: reasoning, content, tool calls, finish, usage."""
        replay = [Delta(reasoning=self.reasoning)] if self.reasoning else []
        if self.content:
            replay.append(Delta(content=self.content))
        if self.tool_calls:
            calls = tuple({"index": i, **call} for i, call in enumerate(self.tool_calls))
            replay.append(Delta(tool_calls=calls))
        return [*replay, Delta(finish_reason=self.finish_reason), Delta(usage=self.usage)]

    def item(self, key: str, ttl_s: int, now: float) -> dict[str, Any]:
        usage = {"prompt": {"N": str(self.usage.prompt_tokens)},
                 "completion": {"N": str(self.usage.completion_tokens)}}  # fmt: skip
        if self.usage.cached_tokens is not None:
            usage["cached"] = {"N": str(self.usage.cached_tokens)}
        if self.usage.reasoning_tokens is not None:
            usage["reasoning"] = {"N": str(self.usage.reasoning_tokens)}
        item: dict[str, Any] = {
            QUOTA_PARTITION_KEY: {"S": key},
            "backend": {"S": self.backend},
            "finish": {"S": self.finish_reason},
            "usage": {"M": usage},
            "stored_at": {"N": str(int(now))},
            QUOTA_TTL_ATTRIBUTE: {"N": str(int(now) + ttl_s)},
        }
        for name, value in (("content", self.content), ("reasoning", self.reasoning)):
            if value:
                item[name] = {"S": value}
        if self.tool_calls:
            item["tool_calls"] = {"S": json.dumps(self.tool_calls, ensure_ascii=False)}
        return item

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> CachedAnswer:
        usage = item["usage"]["M"]

        def number(name: str) -> int | None:
            return int(usage[name]["N"]) if name in usage else None

        calls = json.loads(item["tool_calls"]["S"]) if "tool_calls" in item else []
        return cls(
            backend=item["backend"]["S"],
            finish_reason=item["finish"]["S"],
            usage=Usage(
                int(usage["prompt"]["N"]),
                int(usage["completion"]["N"]),
                number("cached"),
                number("reasoning"),
            ),
            content=item.get("content", {}).get("S", ""),
            reasoning=item.get("reasoning", {}).get("S", ""),
            tool_calls=tuple(calls),
        )


def item_size(item: Mapping[str, Any]) -> int:
    """A high estimate of DynamoDB's item size. AWS ("DynamoDB item sizes and formats",
    docs.aws.amazon.com/amazondynamodb/latest/developerguide/CapacityUnitCalculations.html):
    names and strings count their UTF-8 bytes, a number 1 byte per two significant digits
    plus 1 (at most 21 for 38 digits: counted as 21), a map 3 bytes plus 1 per element
    (counted as 3)."""

    def size(value: Mapping[str, Any]) -> int:
        (kind, inner), *_ = value.items()
        if kind == "S":
            return len(str(inner).encode())
        if kind == "N":
            return 21
        if kind == "M":
            return 3 + sum(len(k.encode()) + 3 + size(v) for k, v in inner.items())
        return len(json.dumps(inner).encode())

    return sum(len(name.encode()) + size(value) for name, value in item.items())


@dataclass
class Recording:
    """What the client was sent, gathered on the way (:meth:`tap`) for :meth:`answer`."""

    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str | None = None
    usage: Usage | None = None
    ended: bool = False
    """The stream was read to its end (not cut short by a fault or a disconnect)."""

    async def tap(self, deltas: AsyncIterator[Delta]) -> AsyncIterator[Delta]:
        async for delta in deltas:
            self.content.append(delta.content)
            self.reasoning.append(delta.reasoning)
            self.tool_calls.extend(delta.tool_calls)
            self.finish_reason = delta.finish_reason or self.finish_reason
            self.usage = delta.usage or self.usage
            yield delta
        self.ended = True

    def answer(self, backend: str, counted: Usage) -> CachedAnswer | None:
        """The answer to store (``counted``: the usage when the backend reported none), or
        None when it must not be stored."""
        if not self.ended or self.finish_reason not in STORABLE_FINISHES:
            return None
        return CachedAnswer(
            backend=backend,
            finish_reason=self.finish_reason,
            usage=self.usage or counted,
            content="".join(self.content),
            reasoning="".join(self.reasoning),
            tool_calls=tuple(merge_tool_calls(self.tool_calls)),
        )


class ResponseCache:
    """Cached answers in one DynamoDB table (see the module docstring)."""

    def __init__(self, client: Any, table_name: str) -> None:
        self._client = client
        self._table = table_name

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str], *, session: Session | None = None
    ) -> ResponseCache | None:
        """The cache named by ``LLM_GATEWAY_CACHE_TABLE``, or None when it is unset.

        botocore's client from the process environment (``AWS_ENDPOINT_URL_DYNAMODB`` locally).
        A cache that answers slowly is worse than none: 0.5 s to connect, 1 s to read, one
        retry (botocore's standard mode, DynamoDB backoff of up to 25 ms).
        """
        table = environ.get(CACHE_TABLE_ENV)
        if not table:
            return None
        config = Config(
            connect_timeout=0.5,
            read_timeout=1,
            retries={"mode": "standard", "total_max_attempts": 2},
            max_pool_connections=32,
        )
        return cls(aws_clients.client("dynamodb", config, session), table)

    def get(self, key: str, now: float | None = None) -> CachedAnswer | None:
        """The live answer stored under ``key`` (blocking); raises
        :class:`CacheUnavailableError`."""
        try:
            response = self._client.get_item(
                TableName=self._table, Key={QUOTA_PARTITION_KEY: {"S": key}}
            )
            item = response.get("Item")
            if item is None or int(item[QUOTA_TTL_ATTRIBUTE]["N"]) <= (now or time.time()):
                return None  # TTL deletion lags expiry (by up to days): expired is absent
            return CachedAnswer.from_item(item)
        except (ClientError, BotoCoreError, KeyError, ValueError, TypeError) as exc:
            raise CacheUnavailableError(f"get_item: {_reason(exc)}") from exc

    def put(self, key: str, answer: CachedAnswer, ttl_s: int, now: float | None = None) -> bool:
        """Store ``answer`` unless an answer is stored already or it is too large (blocking);
        True if this call stored it. Raises :class:`CacheUnavailableError`."""
        at = now or time.time()
        item = answer.item(key, ttl_s, at)
        size = item_size(item)
        if size > STORE_LIMIT_BYTES:
            logger.info("answer not cached: about %d bytes, over %d", size, STORE_LIMIT_BYTES)
            return False
        try:
            self._client.put_item(
                TableName=self._table,
                Item=item,
                ConditionExpression="attribute_not_exists(#pk) OR #exp <= :now",
                ExpressionAttributeNames={"#pk": QUOTA_PARTITION_KEY, "#exp": QUOTA_TTL_ATTRIBUTE},
                ExpressionAttributeValues={":now": {"N": str(int(at))}},
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                logger.debug("answer already cached by a concurrent request")
                return False
            raise CacheUnavailableError(f"put_item: {_reason(exc)}") from exc
        except BotoCoreError as exc:
            raise CacheUnavailableError(f"put_item: {_reason(exc)}") from exc
        return True

    async def lookup(self, key: str) -> CachedAnswer | None:
        """:meth:`get` off the event loop; a failure is a miss."""
        try:
            return await asyncio.to_thread(self.get, key)
        except CacheUnavailableError as exc:
            logger.warning("response cache read failed (a miss): %s", exc)
            return None

    async def store(self, key: str, answer: CachedAnswer, ttl_s: int) -> bool:
        """:meth:`put` off the event loop; a failure stores nothing."""
        try:
            return await asyncio.to_thread(self.put, key, answer, ttl_s)
        except CacheUnavailableError as exc:
            logger.warning("response cache write failed (not stored): %s", exc)
            return False


def _reason(exc: Exception) -> str:
    """An error's code or type, never a message (which could quote an item)."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "ClientError"))
    return type(exc).__name__
