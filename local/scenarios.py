"""Scripted scenarios: what one emulated endpoint answers, in its container's own wire format.

The upstream formats (``X-Amzn-SageMaker-Content-Type`` of the streamed bytes) are:

``openai``
    vLLM's OpenAI server (AWS vLLM DLC, LMI's chat API): ``data: {chat.completion.chunk}`` SSE
    events ending in ``data: [DONE]``; or, with ``openai_framing="jsonlines"``, bare JSON lines
    and no ``[DONE]`` (LMI's ``jsonlines_chat`` output formatter).
``lmi``
    DJL LMI rolling batch, native schema: ``{"token": {"id", "text", "log_prob"}}`` JSON lines;
    the last line adds ``generated_text`` and, when the request sets ``parameters.details``,
    ``details: {finish_reason, generated_tokens, inputs}``.
``tgi``
    Hugging Face TGI: ``data:{"index", "token": {"id", "text", "logprob", "special"},
    "generated_text": null, "details": null}`` SSE events; the last one has ``generated_text``
    and, when ``parameters.details`` is set, ``details: {finish_reason, generated_tokens, seed,
    input_length}``.

OpenAI-format scenarios can also script what vLLM streams for tool calling (``tool_calls``:
each call's ``index``/``id``/``type``/``function.name`` in one chunk, then its
``function.arguments`` in pieces of ``tool_arguments_piece`` characters, the last piece riding
on the ``finish_reason`` chunk), usage details (``cached_tokens``, ``reasoning_tokens``), a
structured-output answer (``content_json``: the content is that JSON), and per-token
``logprobs`` when the request asks for them.

This module is pure: :func:`stream_steps` plans the writes and faults, the emulator times them.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

Format = Literal["openai", "lmi", "tgi"]
PreStreamError = Literal[
    "ModelError", "ServiceUnavailable", "InternalFailure", "ThrottlingException", "ValidationError"
]
FaultKind = Literal["ModelStreamError", "InternalStreamFailure", "inband_error", "finish_error"]
StreamException = Literal["ModelStreamError", "InternalStreamFailure"]

_LOG_PROB = -0.1
_FIRST_TOKEN_ID = 1000
_TOKEN_RE = re.compile(r"\s*(?:[0-9A-Za-z_']+|[^\s0-9A-Za-z_'])|\s+")


class ScriptedToolCall(BaseModel):
    """One tool call the model makes (openai format)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    arguments: str = Field("{}", description="The arguments' JSON text, streamed in pieces.")
    id: str | None = Field(None, description="Default: chatcmpl-tool-<hex>, as vLLM.")


class Scenario(BaseModel):
    """What one endpoint returns; every field has a default, so ``Scenario()`` is a chat reply."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Format = "openai"
    reasoning: str = ""
    content: str = "Hello from the emulator."
    reasoning_field: Literal["reasoning_content", "reasoning"] = Field(
        "reasoning_content", description="vLLM's delta field for reasoning (openai only)."
    )
    openai_framing: Literal["sse", "jsonlines"] = "sse"
    openai_error_style: Literal["nested", "legacy", "flat"] = Field(
        "nested",
        description="In-band error object (openai): vLLM >= 0.10 {error:{message,type,param,code}}"
        "; older vLLM {error:{object:'error',...}}; flat {object:'error',message,...}.",
    )
    token_delay_ms: float = Field(0, ge=0)
    first_token_delay_ms: float = Field(
        0, ge=0, description="Time to first token: sent after the headers, before any bytes."
    )
    part_size: int | None = Field(None, ge=1)
    line_ending: Literal["\n", "\r\n"] = "\n"
    content_type: str | None = Field(
        None, description="X-Amzn-SageMaker-Content-Type override; default follows the format."
    )
    prompt_tokens: int = Field(12, ge=0)
    finish_reason: Literal["stop", "length", "tool_calls"] = "stop"
    content_json: Any = Field(
        None, description="Answer with this value as compact JSON text (structured output)."
    )
    use_tools: bool = Field(
        False,
        description=(
            "Act as a tool-using model when a request offers tools (agent_turn); make local "
            "sets it for openai-format backends."
        ),
    )
    tool_calls: tuple[ScriptedToolCall, ...] = Field(
        (), description="Tool calls streamed after the content, as vLLM does (openai only)."
    )
    tool_arguments_piece: int = Field(
        3, ge=1, description="Characters of function.arguments per streamed chunk."
    )
    cached_tokens: int | None = Field(
        None, ge=0, description="usage.prompt_tokens_details.cached_tokens (openai only)."
    )
    reasoning_tokens: int | None = Field(
        None, ge=0, description="usage.completion_tokens_details.reasoning_tokens (openai only)."
    )

    error_before_stream: PreStreamError | None = None
    error_status: int | None = Field(
        None, ge=400, le=599, description="HTTP status override (e.g. 429 for throttling)."
    )
    error_message: str | None = None
    model_error_status: int = Field(500, ge=400, le=599)
    model_error_message: str = '{"error": "emulated model failure"}'

    fault_after_tokens: int | None = Field(None, ge=0)
    fault: FaultKind = "ModelStreamError"
    fault_code: Literal["ModelInvocationTimeExceeded", "StreamBroken"] = (
        "ModelInvocationTimeExceeded"
    )
    fault_message: str = "Emulated fault while streaming the response."

    barrier: str | None = None
    barrier_timeout_s: float = Field(10, gt=0)

    copies: int | None = Field(
        None,
        ge=0,
        description=(
            "As an inference component (the scenario keyed by its name): 0 answers every "
            "invocation with SageMaker's no-capacity error, as a component scaled to zero "
            "does; null or more: serves normally."
        ),
    )

    @model_validator(mode="after")
    def _check_fault_fits_format(self) -> Self:
        if self.fault == "finish_error" and self.format == "tgi":
            raise ValueError("fault='finish_error' exists only for the openai and lmi formats")
        if self.format != "openai" and (self.tool_calls or self.finish_reason == "tool_calls"):
            raise ValueError("tool calls exist only for the openai format")
        return self

    @property
    def answer(self) -> str:
        """The generated content: ``content_json`` as JSON text when set, else ``content``."""
        if self.content_json is not None:
            return json.dumps(self.content_json, ensure_ascii=False, separators=(",", ":"))
        return self.content

    @property
    def is_sse(self) -> bool:
        """Whether the upstream bytes are server-sent events."""
        return self.format == "tgi" or (self.format == "openai" and self.openai_framing == "sse")

    @property
    def stream_content_type(self) -> str:
        """The container's streaming content type, as SageMaker forwards it."""
        if self.content_type:
            return self.content_type
        return "text/event-stream" if self.is_sse else "application/jsonlines"


@dataclass(frozen=True)
class Write:
    """Bytes the container writes at once; ``token`` marks one generated token."""

    data: bytes
    token: bool = False


@dataclass(frozen=True)
class Fault:
    """A SageMaker stream exception that ends the stream."""

    exception: StreamException
    message: str
    error_code: str = ""


Step = Write | Fault


@dataclass(frozen=True)
class _Token:
    text: str
    reasoning: bool


def tokenize(text: str) -> list[str]:
    """Split into word-ish tokens with leading whitespace attached; ``"".join`` gives ``text``.

    ASCII words stay whole; any other non-space character (punctuation, CJK, emoji code point)
    is its own token.
    """
    return _TOKEN_RE.findall(text)


def _plan_tokens(scenario: Scenario) -> list[_Token]:
    reasoning = [_Token(t, True) for t in tokenize(scenario.reasoning)]
    content = [_Token(t, False) for t in tokenize(scenario.answer)]
    if reasoning and scenario.format != "openai":
        reasoning = [_Token("<think>", True), *reasoning, _Token("</think>", True)]
    return reasoning + content


def full_text(scenario: Scenario) -> str:
    """The generated text as lmi/tgi report it (reasoning inlined as ``<think>…</think>``)."""
    if scenario.reasoning:
        return f"<think>{scenario.reasoning}</think>{scenario.answer}"
    return scenario.answer


def _dumps(obj: Any, *, compact: bool) -> str:
    if compact:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return json.dumps(obj, ensure_ascii=False)


def _params(request: Mapping[str, Any]) -> Mapping[str, Any]:
    params = request.get("parameters")
    return params if isinstance(params, Mapping) else {}


def _wants_usage(request: Mapping[str, Any]) -> bool:
    options = request.get("stream_options")
    return isinstance(options, Mapping) and options.get("include_usage") is True


def _model_name(request: Mapping[str, Any]) -> str:
    model = request.get("model")
    return model if isinstance(model, str) and model else "emulator"


def _wants_logprobs(request: Mapping[str, Any]) -> bool:
    return request.get("logprobs") is True


def _token_logprobs(text: str, top: int) -> dict[str, Any]:
    entry = {"token": text, "logprob": _LOG_PROB, "bytes": list(text.encode())}
    return {"content": [{**entry, "top_logprobs": [entry] * top}]}


def tool_call_pieces(scenario: Scenario) -> list[dict[str, Any]]:
    """The ``delta.tool_calls`` items vLLM streams for the scenario's calls, in order: per
    call, the header (index, id, type, name), then the arguments in pieces."""
    pieces: list[dict[str, Any]] = []
    size = scenario.tool_arguments_piece
    for index, call in enumerate(scenario.tool_calls):
        call_id = call.id or f"chatcmpl-tool-{uuid.uuid4().hex}"
        pieces.append(
            {"id": call_id, "type": "function", "index": index, "function": {"name": call.name}}
        )
        for start in range(0, len(call.arguments), size):
            piece = call.arguments[start : start + size]
            pieces.append({"index": index, "function": {"arguments": piece}})
    return pieces


def _usage(scenario: Scenario, completion: int) -> dict[str, Any]:
    prompt = scenario.prompt_tokens
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "total_tokens": prompt + completion,
        "completion_tokens": completion,
    }
    if scenario.cached_tokens is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": scenario.cached_tokens}
    if scenario.reasoning_tokens is not None:
        usage["completion_tokens_details"] = {"reasoning_tokens": scenario.reasoning_tokens}
    return usage


def _native_finish(scenario: Scenario) -> str:
    return "eos_token" if scenario.finish_reason == "stop" else "length"


class _Writer:
    """Renders one format's events; subclasses override the hooks."""

    def __init__(self, scenario: Scenario, request: Mapping[str, Any]) -> None:
        self.scenario = scenario
        self.request = request
        self.le = scenario.line_ending

    def line(self, obj: Any) -> bytes:
        raise NotImplementedError

    def opening(self) -> list[Step]:
        return []

    def token(self, index: int, tok: _Token, *, last: bool, emitted: list[_Token]) -> bytes:
        raise NotImplementedError

    def closing(self, emitted: list[_Token]) -> list[Step]:
        return []

    def after_tokens(self) -> list[Step]:
        """Writes after the text tokens and before the closing (tool calls)."""
        return []

    def inband_error(self) -> list[Step]:
        raise NotImplementedError

    def finish_error(self, emitted: list[_Token]) -> list[Step]:
        raise NotImplementedError


class _OpenAIWriter(_Writer):
    def __init__(self, scenario: Scenario, request: Mapping[str, Any]) -> None:
        super().__init__(scenario, request)
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = _model_name(request)
        self.tool_pieces = tool_call_pieces(scenario)

    def line(self, obj: Any) -> bytes:
        text = _dumps(obj, compact=True)
        if self.scenario.openai_framing == "sse":
            return f"data: {text}{self.le}{self.le}".encode()
        return f"{text}{self.le}".encode()

    def chunk(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        return self.line(
            {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": choices,
                **extra,
            }
        )

    def choice(
        self,
        delta: dict[str, Any],
        finish_reason: str | None = None,
        logprobs: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": logprobs}
        choice["finish_reason"] = finish_reason
        if finish_reason is not None:
            choice["stop_reason"] = None
        return choice

    def done(self) -> list[Step]:
        if self.scenario.openai_framing == "sse":
            return [Write(f"data: [DONE]{self.le}{self.le}".encode())]
        return []

    def opening(self) -> list[Step]:
        return [Write(self.chunk([self.choice({"role": "assistant", "content": ""})]))]

    def token(self, index: int, tok: _Token, *, last: bool, emitted: list[_Token]) -> bytes:
        field = self.scenario.reasoning_field if tok.reasoning else "content"
        logprobs = None
        if _wants_logprobs(self.request):
            top = self.request.get("top_logprobs")
            logprobs = _token_logprobs(tok.text, top if isinstance(top, int) else 0)
        return self.chunk([self.choice({field: tok.text}, logprobs=logprobs)])

    def after_tokens(self) -> list[Step]:
        # Every piece but the last in its own chunk; the last rides on the finish chunk.
        return [
            Write(self.chunk([self.choice({"tool_calls": [piece]})]), token=True)
            for piece in self.tool_pieces[:-1]
        ]

    def closing(self, emitted: list[_Token]) -> list[Step]:
        last: dict[str, Any] = {"content": ""}
        if self.tool_pieces:
            last = {"tool_calls": self.tool_pieces[-1:]}
        steps: list[Step] = [Write(self.chunk([self.choice(last, self.scenario.finish_reason)]))]
        if _wants_usage(self.request):
            usage = _usage(self.scenario, len(emitted) + len(self.tool_pieces))
            steps.append(Write(self.chunk([], usage=usage)))
        return steps + self.done()

    def inband_error(self) -> list[Step]:
        info = {
            "message": self.scenario.fault_message,
            "type": "InternalServerError",
            "param": None,
            "code": 500,
        }
        style = self.scenario.openai_error_style
        body: dict[str, Any]
        if style == "nested":
            body = {"error": info}
        elif style == "legacy":
            body = {"error": {"object": "error", **info}}
        else:
            body = {"object": "error", **info}
        return [Write(self.line(body)), *self.done()]

    def finish_error(self, emitted: list[_Token]) -> list[Step]:
        return [Write(self.chunk([self.choice({"content": ""}, "error")])), *self.done()]


class _LMIWriter(_Writer):
    def line(self, obj: Any) -> bytes:
        return f"{_dumps(obj, compact=False)}{self.le}".encode()

    def token(self, index: int, tok: _Token, *, last: bool, emitted: list[_Token]) -> bytes:
        obj: dict[str, Any] = {
            "token": {"id": _FIRST_TOKEN_ID + index, "text": tok.text, "log_prob": _LOG_PROB}
        }
        if last:
            obj["generated_text"] = "".join(t.text for t in emitted)
            if _params(self.request).get("details") is True:
                obj["details"] = {
                    "finish_reason": _native_finish(self.scenario),
                    "generated_tokens": len(emitted),
                    "inputs": self.request.get("inputs"),
                }
        return self.line(obj)

    def closing(self, emitted: list[_Token]) -> list[Step]:
        if emitted:
            return []  # the last token line carried generated_text
        return [Write(self.token(0, _Token("", False), last=True, emitted=[]))]

    def inband_error(self) -> list[Step]:
        return [Write(self.line({"error": self.scenario.fault_message, "code": 424}))]

    def finish_error(self, emitted: list[_Token]) -> list[Step]:
        # The documented LMI rolling-batch streaming error line.
        return [
            Write(
                self.line(
                    {
                        "token": {"id": -1, "text": "", "log_prob": -1, "special_token": True},
                        "generated_text": "",
                        "details": {
                            "finish_reason": "error",
                            "generated_tokens": None,
                            "inputs": None,
                        },
                    }
                )
            )
        ]


class _TGIWriter(_Writer):
    def line(self, obj: Any) -> bytes:
        return f"data:{_dumps(obj, compact=True)}{self.le}{self.le}".encode()

    def token(self, index: int, tok: _Token, *, last: bool, emitted: list[_Token]) -> bytes:
        obj: dict[str, Any] = {
            "index": index + 1,
            "token": {
                "id": _FIRST_TOKEN_ID + index,
                "text": tok.text,
                "logprob": _LOG_PROB,
                "special": False,
            },
            "generated_text": None,
            "details": None,
        }
        if last:
            obj["generated_text"] = "".join(t.text for t in emitted)
            if _params(self.request).get("details") is True:
                obj["details"] = {
                    "finish_reason": _native_finish(self.scenario),
                    "generated_tokens": len(emitted),
                    "seed": None,
                    "input_length": self.scenario.prompt_tokens,
                }
        return self.line(obj)

    def closing(self, emitted: list[_Token]) -> list[Step]:
        if emitted:
            return []
        return [Write(self.token(0, _Token("", False), last=True, emitted=[]))]

    def inband_error(self) -> list[Step]:
        return [
            Write(self.line({"error": self.scenario.fault_message, "error_type": "generation"}))
        ]

    def finish_error(self, emitted: list[_Token]) -> list[Step]:
        raise AssertionError("rejected by Scenario validation")


_WRITERS: dict[Format, type[_Writer]] = {
    "openai": _OpenAIWriter,
    "lmi": _LMIWriter,
    "tgi": _TGIWriter,
}


def _fault_steps(writer: _Writer, emitted: list[_Token]) -> list[Step]:
    scenario = writer.scenario
    if scenario.fault == "inband_error":
        return writer.inband_error()
    if scenario.fault == "finish_error":
        return writer.finish_error(emitted)
    code = scenario.fault_code if scenario.fault == "ModelStreamError" else ""
    return [Fault(scenario.fault, scenario.fault_message, code)]


def agent_turn(scenario: Scenario, request: Mapping[str, Any]) -> Scenario:
    """With ``scenario.use_tools`` (what ``make local`` scripts), play a tool-using model: a
    request offering ``tools`` whose last message is not a tool result gets a call of the
    first tool (``{}`` arguments); the answer after a tool result quotes it."""
    if not scenario.use_tools or scenario.format != "openai":
        return scenario
    messages = request.get("messages") or []
    last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
    tools = request.get("tools") or []
    if last.get("role") == "tool":
        result = last.get("content")
        text = result if isinstance(result, str) else json.dumps(result)
        return scenario.model_copy(update={"reasoning": "", "content": f"The tool said: {text}"})
    if tools and isinstance(tools[0], dict) and request.get("tool_choice") != "none":
        name = str(tools[0].get("function", {}).get("name") or "tool")
        return scenario.model_copy(
            update={
                "reasoning": "",
                "content": "",
                "finish_reason": "tool_calls",
                "tool_calls": (ScriptedToolCall(name=name),),
            }
        )
    return scenario


def stream_steps(scenario: Scenario, request: Mapping[str, Any] | None = None) -> list[Step]:
    """Every write (and the fault, if any) of one streamed response, in order.

    With ``fault_after_tokens=n`` the stream stops after the n-th *content* token (reasoning
    tokens all come first; ``n`` beyond the content's length faults after the last token,
    before the finish events), then carries the fault.
    """
    scenario = agent_turn(scenario, request or {})
    writer = _WRITERS[scenario.format](scenario, request or {})
    tokens = _plan_tokens(scenario)
    faulting = scenario.fault_after_tokens is not None
    if faulting:
        budget = scenario.fault_after_tokens or 0
        cut = len(tokens)
        for i, tok in enumerate(tokens):
            if not tok.reasoning:
                if budget == 0:
                    cut = i
                    break
                budget -= 1
        tokens = tokens[:cut]
    steps = writer.opening()
    emitted: list[_Token] = []
    for i, tok in enumerate(tokens):
        emitted.append(tok)
        last = not faulting and i == len(tokens) - 1
        steps.append(Write(writer.token(i, tok, last=last, emitted=emitted), token=True))
    if faulting:
        return steps + _fault_steps(writer, emitted)
    return steps + writer.after_tokens() + writer.closing(emitted)


def render_body(scenario: Scenario, request: Mapping[str, Any] | None = None) -> bytes:
    """The buffered ``/invocations`` response body (faults and timing do not apply)."""
    request = request or {}
    tokens = _plan_tokens(scenario)
    details = _params(request).get("details") is True
    if scenario.format == "openai":
        pieces = tool_call_pieces(scenario)
        content = scenario.answer if scenario.answer or not pieces else None
        message: dict[str, Any] = {"role": "assistant", "content": content}
        message[scenario.reasoning_field] = scenario.reasoning or None
        message["tool_calls"] = [
            {
                "id": piece["id"],
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for piece, call in zip(
                (p for p in pieces if "id" in p), scenario.tool_calls, strict=True
            )
        ]
        body: Any = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": _model_name(request),
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": scenario.finish_reason,
                    "stop_reason": None,
                }
            ],
            "usage": _usage(scenario, len(tokens) + len(pieces)),
        }
        return _dumps(body, compact=True).encode()
    token_dicts = [
        {"id": _FIRST_TOKEN_ID + i, "text": t.text, "log_prob": _LOG_PROB}
        for i, t in enumerate(tokens)
    ]
    result: dict[str, Any] = {"generated_text": full_text(scenario)}
    if scenario.format == "lmi":
        if details:
            result["details"] = {
                "finish_reason": _native_finish(scenario),
                "generated_tokens": len(tokens),
                "inputs": request.get("inputs"),
                "tokens": token_dicts,
            }
        return _dumps(result, compact=False).encode()
    if details:
        result["details"] = {
            "finish_reason": _native_finish(scenario),
            "generated_tokens": len(tokens),
            "seed": None,
            "prefill": [],
            "tokens": [
                {"id": d["id"], "text": d["text"], "logprob": _LOG_PROB, "special": False}
                for d in token_dicts
            ],
        }
    return _dumps([result], compact=True).encode()
