"""``openai``: the AWS vLLM container and LMI chat, both sending ``chat.completion.chunk``s
(as SSE ``data:`` lines or bare JSON lines)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from llm_gateway.adapters.base import Delta, InBandError, Usage, load_event
from llm_gateway.adapters.images import TEXT_ONLY, image_refusal
from llm_gateway.adapters.params import sampling_params

if TYPE_CHECKING:
    from collections.abc import Iterator

    from llm_gateway.contract import Backend
    from llm_gateway.errors import GatewayError
    from llm_gateway.request import ChatMessage, ChatRequest

# Chat templates know system/user/assistant/tool; OpenAI's newer "developer" role means "system".
_ROLE = {"developer": "system"}
# Finish reasons relayed as they are; any other (e.g. vLLM's "abort") is reported as "stop".
_FINISH = frozenset({"stop", "length", "tool_calls"})


def _message(message: ChatMessage) -> dict[str, Any]:
    out: dict[str, Any] = {"role": _ROLE.get(message.role, message.role)}
    if message.images:
        # Parts as sent (text and image_url): vLLM's chat API takes OpenAI's content parts.
        assert isinstance(message.content, list)
        out["content"] = [
            part.model_dump(mode="json", exclude_none=True) for part in message.content
        ]
    elif message.content is not None:
        out["content"] = message.text
    elif "content" in message.model_fields_set:
        out["content"] = None  # an assistant turn that only called tools, as the client sent it
    if message.tool_calls is not None:
        out["tool_calls"] = [call.model_dump(mode="json") for call in message.tool_calls]
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    return out


def _passthrough(request: ChatRequest) -> dict[str, Any]:
    """The tool, format, reasoning and logprobs parameters the client set, as it set them."""
    params: dict[str, Any] = {}
    if request.tools is not None:
        params["tools"] = [
            tool.model_dump(mode="json", by_alias=True, exclude_unset=True)
            for tool in request.tools
        ]
    if request.tool_choice is not None:
        choice = request.tool_choice
        params["tool_choice"] = (
            choice if isinstance(choice, str) else choice.model_dump(mode="json")
        )
    if request.response_format is not None:
        params["response_format"] = request.response_format.model_dump(
            mode="json", by_alias=True, exclude_unset=True
        )
    for name in ("parallel_tool_calls", "reasoning_effort", "logprobs", "top_logprobs"):
        value = getattr(request, name)
        if value is not None:
            params[name] = value
    return params


class OpenAIAdapter:
    def unsupported(self, request: ChatRequest, backend: Backend) -> GatewayError | None:
        # The backend applies its own chat template, tools included; images need a model
        # declared to take them.
        return image_refusal(request, backend, TEXT_ONLY)

    def request_body(self, request: ChatRequest, backend: Backend, max_tokens: int) -> bytes:
        body: dict[str, Any] = {
            # No "model": vLLM serves one model and defaults to it; LMI ignores the field.
            "messages": [_message(m) for m in request.messages],
            "stream": True,
            # Always ask for usage: non-stream responses and token accounting need it even
            # when the client did not ask for the usage chunk.
            "stream_options": {"include_usage": True},
            "max_tokens": max_tokens,
        }
        body.update(sampling_params(request))
        if request.stop_sequences:
            body["stop"] = list(request.stop_sequences)
        body.update(_passthrough(request))
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
            tool_calls = delta.get("tool_calls")
            logprobs = choice.get("logprobs")
            yield Delta(
                content=delta.get("content") or "",
                # vLLM renamed reasoning_content to reasoning (late 2025); accept both.
                reasoning=delta.get("reasoning_content") or delta.get("reasoning") or "",
                finish_reason=_finish(finish),
                tool_calls=tuple(c for c in tool_calls if isinstance(c, dict))
                if isinstance(tool_calls, list)
                else (),
                logprobs=logprobs if isinstance(logprobs, dict) and logprobs else None,
            )
        usage = chunk.get("usage")
        if usage:
            yield Delta(usage=_usage(usage))


def _usage(usage: dict[str, Any]) -> Usage:
    return Usage(
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        cached_tokens=_detail(usage, "prompt_tokens_details", "cached_tokens"),
        reasoning_tokens=_detail(usage, "completion_tokens_details", "reasoning_tokens"),
    )


def _detail(usage: dict[str, Any], group: str, name: str) -> int | None:
    details = usage.get(group)
    value = details.get(name) if isinstance(details, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _error_message(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or "the model reported an error")
    return str(error)


def _finish(reason: str | None) -> str | None:
    if reason is None:
        return None
    return reason if reason in _FINISH else "stop"
