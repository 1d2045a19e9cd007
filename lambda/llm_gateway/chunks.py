"""OpenAI response objects: ``chat.completion.chunk`` SSE events and ``chat.completion``."""

from __future__ import annotations

import json
import time
import uuid
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llm_gateway.adapters import Delta, Usage
    from llm_gateway.errors import GatewayError

DONE = b"data: [DONE]\n\n"


def _sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


def usage_dict(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


class ChunkWriter:
    """Serializes one response's deltas as SSE events sharing an id, timestamp and model."""

    def __init__(self, model: str) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model
        self._sent_role = False

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
        choice = {"index": 0, "delta": body, "logprobs": None, "finish_reason": delta.finish_reason}
        return _sse(self._chunk([choice]))

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
) -> dict[str, Any]:
    """A non-streaming ``chat.completion`` aggregated from a stream."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if reasoning:
        message["reasoning_content"] = reasoning
    body: dict[str, Any] = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
        ],
    }
    if usage is not None:
        body["usage"] = usage_dict(usage)
    return body
