"""``lmi`` (DJL-LMI rolling-batch JSON lines) and ``tgi`` (Text Generation Inference SSE): both
take a prompt and stream ``{"token": {"text": …}}`` objects, the last carrying ``details``."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from llm_gateway.adapters.base import Delta, InBandError, Usage, load_event
from llm_gateway.adapters.images import image_refusal
from llm_gateway.adapters.prompts import render_prompt
from llm_gateway.errors import GatewayError, invalid_request
from llm_gateway.request_errors import clip

if TYPE_CHECKING:
    from collections.abc import Iterator

    from llm_gateway.contract import Backend
    from llm_gateway.request import ChatRequest

_PLAIN_PROMPT = "its backend takes a plain prompt"
_WHY: dict[str, str] = {
    "tools": f"{_PLAIN_PROMPT}, without tools",
    "tool_choice": f"{_PLAIN_PROMPT}, without tools",
    "parallel_tool_calls": f"{_PLAIN_PROMPT}, without tools",
    "response_format": f"{_PLAIN_PROMPT} and cannot constrain the output format",
    "reasoning_effort": f"{_PLAIN_PROMPT}, without reasoning controls",
    "logprobs": f"{_PLAIN_PROMPT}; the gateway relays no log probabilities from it",
    "top_logprobs": f"{_PLAIN_PROMPT}; the gateway relays no log probabilities from it",
}


def _prompt_only(request: ChatRequest) -> GatewayError | None:
    """What a plain-prompt backend cannot do with ``request`` (the first thing), or None.

    Values that ask for nothing (``tool_choice: "none"``, ``response_format: {"type":
    "text"}``, ``logprobs: false``) are accepted; ``seed`` and the sampling parameters are
    supported natively.
    """
    model = clip(request.model)
    used = {
        "tools": request.tools is not None,
        "tool_choice": request.tool_choice not in (None, "none"),
        "parallel_tool_calls": request.parallel_tool_calls is not None,
        "response_format": request.response_format is not None
        and request.response_format.type != "text",
        "reasoning_effort": request.reasoning_effort is not None,
        "logprobs": bool(request.logprobs),
        "top_logprobs": request.top_logprobs is not None,
    }
    for name, is_used in used.items():
        if is_used:
            return invalid_request(
                f"Unsupported parameter: '{name}' is not supported by model '{model}':"
                f" {_WHY[name]}.",
                param=name,
                code="unsupported_parameter",
            )
    for index, message in enumerate(request.messages):
        if message.role == "tool":
            return invalid_request(
                f"Unsupported value: 'messages[{index}].role' does not support 'tool' with"
                f" model '{model}': {_PLAIN_PROMPT}, without tools.",
                param=f"messages[{index}].role",
                code="unsupported_value",
            )
        if message.tool_calls:
            return invalid_request(
                f"Unsupported parameter: 'messages[{index}].tool_calls' is not supported by"
                f" model '{model}': {_PLAIN_PROMPT}, without tools.",
                param=f"messages[{index}].tool_calls",
                code="unsupported_parameter",
            )
    return None


class _NativeAdapter:
    """Shared request building and token parsing; subclasses name the format's differences."""

    stop_key = "stop"
    prompt_tokens_key: str | None = None
    penalties: tuple[str, ...] = ()

    def unsupported(self, request: ChatRequest, backend: Backend) -> GatewayError | None:
        return _prompt_only(request) or image_refusal(
            request, backend, f"{_PLAIN_PROMPT}, without images"
        )

    def request_body(self, request: ChatRequest, backend: Backend, max_tokens: int) -> bytes:
        assert backend.prompt_template is not None  # guaranteed by routes.Backend
        parameters: dict[str, Any] = {
            "max_new_tokens": max_tokens,
            "details": True,
            "return_full_text": False,
        }
        parameters.update(self._sampling(request))
        if request.stop_sequences:
            parameters[self.stop_key] = list(request.stop_sequences)
        body = {
            "inputs": render_prompt(backend.prompt_template, request.messages),
            "parameters": parameters,
            "stream": True,
        }
        return json.dumps(body, ensure_ascii=False).encode()

    def _sampling(self, request: ChatRequest) -> dict[str, Any]:
        params: dict[str, Any] = {}
        greedy = request.temperature == 0
        if request.temperature is not None and not greedy:
            params["temperature"] = request.temperature
        if request.top_p is not None and request.top_p < 1:
            params["top_p"] = request.top_p
        params["do_sample"] = not greedy
        if request.seed is not None:
            params["seed"] = request.seed
        for name in self.penalties:
            value = getattr(request, name)
            if value is not None:
                params[name] = value
        return params

    def parse(self, payload: str) -> Iterator[Delta]:
        event = load_event(payload)
        if "error" in event:
            raise InBandError(str(event.get("error") or "the model reported an error"))
        token = event.get("token") or {}
        details = event.get("details") or {}
        finish = details.get("finish_reason") if isinstance(details, dict) else None
        if finish == "error":
            raise InBandError("the model reported an error while generating")
        text = "" if token.get("special") or token.get("special_token") else token.get("text")
        if text:
            yield Delta(content=str(text))
        if finish is not None:
            yield Delta(finish_reason="length" if finish == "length" else "stop")
            generated = details.get("generated_tokens")
            if isinstance(generated, int):
                prompt = details.get(self.prompt_tokens_key) if self.prompt_tokens_key else 0
                yield Delta(
                    usage=Usage(prompt_tokens=int(prompt or 0), completion_tokens=generated)
                )


class LmiAdapter(_NativeAdapter):
    """LMI names stop sequences ``stop_sequences`` and does not report the prompt length."""

    stop_key = "stop_sequences"
    prompt_tokens_key = None
    penalties = ("presence_penalty", "frequency_penalty")  # vLLM rolling-batch parameters


class TgiAdapter(_NativeAdapter):
    """TGI reports the prompt length as ``details.input_length``."""

    stop_key = "stop"
    prompt_tokens_key = "input_length"
    penalties = ("frequency_penalty",)
