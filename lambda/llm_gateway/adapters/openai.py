"""``openai``: the AWS vLLM container and LMI chat, both sending ``chat.completion.chunk``s
(as SSE ``data:`` lines or bare JSON lines)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from llm_gateway.adapters.base import Delta, InBandError, Usage, load_event
from llm_gateway.adapters.params import sampling_params

if TYPE_CHECKING:
    from collections.abc import Iterator

    from llm_gateway.contract import Backend
    from llm_gateway.request import ChatRequest

# Chat templates know system/user/assistant; OpenAI's newer "developer" role means "system".
_ROLE = {"developer": "system"}


class OpenAIAdapter:
    def request_body(self, request: ChatRequest, backend: Backend, max_tokens: int) -> bytes:
        body: dict[str, Any] = {
            # No "model": vLLM serves one model and defaults to it; LMI ignores the field.
            "messages": [
                {"role": _ROLE.get(m.role, m.role), "content": m.text} for m in request.messages
            ],
            "stream": True,
            # Always ask for usage: non-stream responses and token accounting need it even
            # when the client did not ask for the usage chunk.
            "stream_options": {"include_usage": True},
            "max_tokens": max_tokens,
        }
        body.update(sampling_params(request))
        if request.stop_sequences:
            body["stop"] = list(request.stop_sequences)
        return json.dumps(body, ensure_ascii=False).encode()

    def parse(self, payload: str) -> Iterator[Delta]:
        if payload == "[DONE]":
            return
        chunk = load_event(payload)
        error = chunk.get("error")
        if error or chunk.get("object") == "error":
            raise InBandError(_error_message(error if error else chunk))
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or choice.get("message") or {}
            finish = choice.get("finish_reason")
            if finish == "error":
                raise InBandError("the model reported an error while generating")
            yield Delta(
                content=delta.get("content") or "",
                # vLLM renamed reasoning_content to reasoning (late 2025); accept both.
                reasoning=delta.get("reasoning_content") or delta.get("reasoning") or "",
                finish_reason=_finish(finish),
            )
        usage = chunk.get("usage")
        if usage:
            yield Delta(
                usage=Usage(
                    prompt_tokens=int(usage.get("prompt_tokens") or 0),
                    completion_tokens=int(usage.get("completion_tokens") or 0),
                )
            )


def _error_message(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or "the model reported an error")
    return str(error)


def _finish(reason: str | None) -> str | None:
    if reason is None:
        return None
    return "length" if reason == "length" else "stop"
