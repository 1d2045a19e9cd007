"""Parse and validate OpenAI chat-completion requests (``POST /v1/chat/completions``).

``parse_chat_request`` turns a raw body into a frozen, fully validated ``ChatRequest`` or raises
a ``GatewayError`` (status 400, type ``invalid_request_error``) whose message, ``param`` and
``code`` follow the OpenAI API's own conventions, so OpenAI SDKs surface it like any other 400:

* ``param`` is the offending field's path in OpenAI's notation: ``messages[1].content[0].type``.
* Messages mirror OpenAI's wording, e.g. ``Missing required parameter: 'messages'.``,
  ``Invalid type for 'max_tokens': expected an integer, but got a string instead.``,
  ``Invalid 'temperature': decimal above maximum value. Expected a value <= 2, but got 3
  instead.``, ``Invalid 'stop': array too long. ...``, ``Unrecognized request argument supplied:
  foo``, ``Unsupported parameter: 'logit_bias' is not supported by this gateway.``.
* Codes are OpenAI's: ``missing_required_parameter``, ``invalid_type``, ``invalid_value``,
  ``empty_array``, ``empty_string``, ``array_above_max_length``, ``integer_below_min_value``,
  ``decimal_above_max_value``, ``unsupported_parameter``, ``unsupported_value``, ... and null
  for an unparseable body (as OpenAI).

Only the first problem is reported. Client input is never echoed at length and no validator's
internals (pydantic messages or URLs, tracebacks) ever reach the client.

Rules beyond plain typing (where the gateway had to choose, the choice is stated here):

* Known OpenAI features this gateway cannot honour (``logit_bias``, ``audio``, ``n`` > 1,
  audio/file parts, ``function`` messages, ...) are rejected rather than ignored, so nothing
  is silently dropped. An explicit ``null`` for any of them (and ``false`` for ``store``, its
  default) means "not used" and is accepted. ``n`` > 1 is refused because token quotas reserve
  output for one completion and the stream relay carries a single choice.
* Tool calling (``tools``, ``tool_choice``, ``parallel_tool_calls``, ``tool`` messages,
  assistant ``tool_calls``), ``response_format``, ``reasoning_effort``, ``logprobs`` and
  ``top_logprobs`` are validated for shape only (a JSON schema or a function's ``parameters``
  is any object) and forwarded unchanged to OpenAI-format backends; backends that take a plain
  prompt refuse them per request (``adapters``: ``unsupported``), since routing picks the
  backend after validation. ``tool_choice`` (other than ``"none"``) needs ``tools``, and a
  named choice must name one of them; ``top_logprobs`` needs ``"logprobs": true``.
* A ``tool`` message needs ``tool_call_id`` and content; an ``assistant`` message may omit
  content (or send ``null``) only when it carries ``tool_calls``.
* ``stream_options`` only with ``"stream": true`` (as OpenAI).
* ``max_tokens`` and ``max_completion_tokens`` are each 1 … 2³¹−1; if both are sent they must be
  equal (a client sending both for compatibility is fine; two different limits are ambiguous).
* ``messages``: 1 … 2048 messages; content is a string (may be empty, as OpenAI allows) or a
  non-empty array of at most 1024 ``text`` and ``image_url`` parts; at least one ``user``
  message is required; the last message may have any role (an ``assistant`` prefill is
  allowed).
* ``image_url`` parts: in ``user`` messages only, a base64 ``data:image/...`` URL or an http(s)
  URL. Whether a backend takes them (and how many, and remote URLs) is its config's
  ``image_input``: routing skips backends without it, and a route with none refuses the
  request with a 400 (``adapters``: ``unsupported``).
* ``stop``: a non-empty string or an array of 1 … 4 non-empty strings.
* ``model``: 1 … 256 characters (the route lookup is the caller's job).
* Strings must be valid Unicode (no unpaired surrogates from ``\\ud800``-style escapes).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any, Final

from pydantic import (
    AfterValidator,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from llm_gateway.errors import invalid_request
from llm_gateway.request_errors import (
    UNSUPPORTED_ROLES,
    clip,
    json_type,
    translate,
    unrecognized,
    unsupported_parameter,
    unsupported_value,
)
from llm_gateway.request_parts import (
    _FALSE_IS_DEFAULT,
    _SEED_MAX,
    _SEED_MIN,
    _UNSUPPORTED_MESSAGE_FIELDS,
    MAX_CONTENT_PARTS,
    MAX_MESSAGES,
    MAX_MODEL_LENGTH,
    MAX_OUTPUT_TOKENS,
    MAX_STOP_SEQUENCES,
    MAX_TOOLS,
    MAX_TOP_LOGPROBS,
    UNSUPPORTED_PARAMETERS,
    ChatMessage,
    ContentPart,
    FunctionDefinition,
    ImageURL,
    JSONSchemaFormat,
    NamedToolChoice,
    ReasoningEffort,
    ResponseFormat,
    Stop,
    StreamOptions,
    Text,
    Tool,
    ToolCall,
    ToolChoice,
    _Frozen,
    _rule,
    _valid_unicode,
)

__all__ = [
    "MAX_CONTENT_PARTS",
    "MAX_MESSAGES",
    "MAX_OUTPUT_TOKENS",
    "MAX_STOP_SEQUENCES",
    "MAX_TOOLS",
    "UNSUPPORTED_PARAMETERS",
    "ChatMessage",
    "ChatRequest",
    "ContentPart",
    "FunctionDefinition",
    "ImageURL",
    "JSONSchemaFormat",
    "NamedToolChoice",
    "ResponseFormat",
    "StreamOptions",
    "Tool",
    "ToolCall",
    "parse_chat_request",
]


class ChatRequest(_Frozen):
    """A validated chat-completion request; see the module docstring for the rules."""

    model: Annotated[
        str, Field(min_length=1, max_length=MAX_MODEL_LENGTH), AfterValidator(_valid_unicode)
    ]
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=MAX_MESSAGES)]
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: Annotated[int, Field(ge=1, le=MAX_OUTPUT_TOKENS)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1, le=MAX_OUTPUT_TOKENS)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    stop: Stop | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    seed: Annotated[int, Field(ge=_SEED_MIN, le=_SEED_MAX)] | None = None
    user: Text | None = None
    n: Annotated[int, Field(ge=1, le=128)] | None = None
    tools: Annotated[list[Tool], Field(min_length=1, max_length=MAX_TOOLS)] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    reasoning_effort: ReasoningEffort | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=MAX_TOP_LOGPROBS)] | None = None

    @field_validator("n")
    @classmethod
    def _only_one_choice(cls, n: int | None) -> int | None:
        if n is not None and n != 1:
            raise _rule(
                f"Unsupported value: 'n' does not support {n} with this gateway: token quotas"
                " reserve output for one completion and the stream relay carries a single"
                " choice. Only the default (1) value is supported.",
                code="unsupported_value",
            )
        return n

    @model_validator(mode="after")
    def _consistent(self) -> ChatRequest:
        if self.stream_options is not None and not self.stream:
            raise _rule(
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                code=None,
                field="stream_options",
            )
        if (
            self.max_tokens is not None
            and self.max_completion_tokens is not None
            and self.max_tokens != self.max_completion_tokens
        ):
            raise _rule(
                f"Invalid 'max_tokens': {self.max_tokens} conflicts with 'max_completion_tokens'"
                f" {self.max_completion_tokens}. Set only 'max_completion_tokens' (or both to"
                " the same value).",
                code="invalid_value",
                field="max_tokens",
            )
        if not any(message.role == "user" for message in self.messages):
            raise _rule(
                "Invalid 'messages': at least one message with role 'user' is required.",
                code="invalid_value",
                field="messages",
            )
        self._check_tool_choice()
        if self.top_logprobs is not None and not self.logprobs:
            raise _rule(
                "Invalid value for 'top_logprobs': 'logprobs' must be set to true when"
                " 'top_logprobs' is used.",
                code="invalid_value",
                field="top_logprobs",
            )
        return self

    def _check_tool_choice(self) -> None:
        choice = self.tool_choice
        if choice is None or choice == "none":
            return
        if self.tools is None:
            raise _rule(
                "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools'"
                " are specified.",
                code="invalid_value",
                field="tool_choice",
            )
        if isinstance(choice, NamedToolChoice):
            names = {tool.function.name for tool in self.tools}
            if choice.function.name not in names:
                raise _rule(
                    f"Invalid value for 'tool_choice': no function named"
                    f" '{clip(choice.function.name)}' in 'tools'.",
                    code="invalid_value",
                    field="tool_choice.function.name",
                )

    @property
    def output_limit(self) -> int | None:
        """The requested output-token limit: ``max_completion_tokens``, else ``max_tokens``."""
        if self.max_completion_tokens is not None:
            return self.max_completion_tokens
        return self.max_tokens

    @property
    def stop_sequences(self) -> tuple[str, ...]:
        """``stop`` as a tuple (empty when unset)."""
        if self.stop is None:
            return ()
        if isinstance(self.stop, str):
            return (self.stop,)
        return tuple(self.stop)

    @property
    def images(self) -> tuple[ImageURL, ...]:
        """Every image part of every message, in order."""
        return tuple(image for message in self.messages for image in message.images)

    @property
    def include_usage(self) -> bool:
        """Whether a streamed response should end with a usage chunk."""
        return self.stream_options is not None and self.stream_options.include_usage


_REQUEST_FIELDS: Final = frozenset(ChatRequest.model_fields)
_MESSAGE_FIELDS: Final = frozenset(ChatMessage.model_fields)


def parse_chat_request(raw: bytes) -> ChatRequest:
    """Parse a chat-completion request body; raise ``GatewayError`` (400) on any problem.

    The body must be a UTF-8 JSON object. Nothing but ``GatewayError`` escapes.
    """
    data = _load_json_object(raw)
    cleaned = _precheck(data)
    try:
        return ChatRequest.model_validate(cleaned)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        raise translate(errors[0]) from None


def _load_json_object(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise invalid_request(
            "We could not parse the JSON body of your request. The body must be a single JSON"
            " object encoded as UTF-8."
        ) from None
    if not isinstance(data, dict):
        raise invalid_request(
            f"Invalid request body: expected a JSON object, but got {json_type(data)} instead.",
            code="invalid_type",
        )
    return data


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _precheck(data: Mapping[str, Any]) -> dict[str, Any]:
    """Reject unknown and unsupported arguments first, drop explicit "not used" values."""
    cleaned: dict[str, Any] = {}
    for key, value in data.items():
        if key in _REQUEST_FIELDS:
            if key == "stream" and value is None:
                continue  # null means the default, as in OpenAI
            cleaned[key] = value
        elif key in UNSUPPORTED_PARAMETERS:
            if value is None or (value is False and key in _FALSE_IS_DEFAULT):
                continue
            raise unsupported_parameter(key)
        else:
            raise unrecognized(clip(key))
    messages = cleaned.get("messages")
    if isinstance(messages, list) and len(messages) <= MAX_MESSAGES:
        cleaned["messages"] = [
            _precheck_message(index, message) for index, message in enumerate(messages)
        ]
    return cleaned


def _precheck_message(index: int, message: Any) -> Any:
    if not isinstance(message, dict):
        return message  # the model reports the type
    role = message.get("role")
    if isinstance(role, str) and role in UNSUPPORTED_ROLES:
        raise unsupported_value(f"messages[{index}].role", role)
    cleaned: dict[str, Any] = {}
    for key, value in message.items():
        if key in _MESSAGE_FIELDS:
            cleaned[key] = value
        elif key in _UNSUPPORTED_MESSAGE_FIELDS:
            if value is not None:
                raise unsupported_parameter(f"messages[{index}].{key}")
        else:
            raise unrecognized(f"messages[{index}].{clip(key)}")
    return cleaned
