"""OpenAI response objects: ``chat.completion.chunk`` SSE events and ``chat.completion``."""

from __future__ import annotations

import json
import time
import uuid
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable

    from llm_gateway.adapters import Delta, Usage
    from llm_gateway.errors import GatewayError

DONE = b"data: [DONE]\n\n"


# One encoder for every event (json.dumps with options builds a new one per call).
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + _encode(obj).encode() + b"\n\n"


def usage_dict(usage: Usage) -> dict[str, Any]:
    """OpenAI's ``usage``, with the token details the backend reported (only those)."""
    body: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
    if usage.cached_tokens is not None:
        body["prompt_tokens_details"] = {"cached_tokens": usage.cached_tokens}
    if usage.reasoning_tokens is not None:
        body["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    return body


def merge_tool_calls(pieces: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Streamed ``tool_calls`` delta items → a message's ``tool_calls``: one call per
    ``index`` (in index order), its ``id``/``type``/``name`` from the first piece carrying
    them, its ``arguments`` the concatenation of every piece's."""
    calls: dict[int, dict[str, Any]] = {}
    for piece in pieces:
        index = piece.get("index", 0)
        index = index if isinstance(index, int) else 0
        call = calls.setdefault(
            index, {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
        )
        if call["id"] is None and isinstance(piece.get("id"), str):
            call["id"] = piece["id"]
        if isinstance(piece.get("type"), str):
            call["type"] = piece["type"]
        function = piece.get("function")
        if isinstance(function, dict):
            name, arguments = function.get("name"), function.get("arguments")
            if isinstance(name, str) and not call["function"]["name"]:
                call["function"]["name"] = name
            if isinstance(arguments, str):
                call["function"]["arguments"] += arguments
    merged = [calls[index] for index in sorted(calls)]
    for call in merged:
        if call["id"] is None:
            call["id"] = f"call_{uuid.uuid4().hex[:24]}"
    return merged


class ChunkWriter:
    """Serializes one response's deltas as SSE events sharing an id, timestamp and model.

    A delta's event is the JSON of ``{"id", "object", "created", "model", "choices": [{"index":
    0, "delta", "logprobs", "finish_reason"}]}``; everything before its ``delta`` is the same
    for the whole response, so it is encoded once (the bytes are those of encoding the whole
    object: tests/gateway/test_chunks.py)."""

    def __init__(self, model: str) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model
        self._sent_role = False
        head = _encode(self._chunk([{"index": 0}]))  # ...,"choices":[{"index":0}]}
        self._delta_prefix = f'data: {head[:-3]},"delta":'.encode()

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            **extra,
        }

    def delta(self, delta: Delta) -> bytes:
        body: dict[str, Any] = {}
        if not self._sent_role:
            body["role"] = "assistant"
            self._sent_role = True
        if delta.reasoning:
            body["reasoning_content"] = delta.reasoning
        if delta.content:
            body["content"] = delta.content
        if delta.tool_calls:
            body["tool_calls"] = list(delta.tool_calls)
        tail = (
            f'{_encode(body)},"logprobs":{_encode(delta.logprobs)},'
            f'"finish_reason":{_encode(delta.finish_reason)}}}]}}\n\n'
        )
        return self._delta_prefix + tail.encode()

    def usage(self, usage: Usage) -> bytes:
        return _sse(self._chunk([], usage=usage_dict(usage)))

    @staticmethod
    def error(error: GatewayError) -> bytes:
        """An in-band error event; OpenAI SDKs raise ``APIError`` when they read it."""
        return _sse(error.body())


def completion(
    *,
    model: str,
    content: str,
    reasoning: str,
    finish_reason: str,
    usage: Usage | None,
    tool_calls: list[dict[str, Any]] | None = None,
    logprobs: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A non-streaming ``chat.completion`` aggregated from a stream (``logprobs``: the
    streamed ``logprobs.content`` entries, in order)."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if reasoning:
        message["reasoning_content"] = reasoning
    if tool_calls:
        message["tool_calls"] = tool_calls
        if not content:
            message["content"] = None  # as OpenAI (and vLLM) answer a pure tool call
    body: dict[str, Any] = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": {"content": logprobs} if logprobs else None,
                "finish_reason": finish_reason,
            }
        ],
    }
    if usage is not None:
        body["usage"] = usage_dict(usage)
    return body
