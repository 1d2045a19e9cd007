"""The pieces of an OpenAI chat-completion request (messages, content, tools, response
formats) as strict pydantic models, and the limits they enforce; :mod:`llm_gateway.request`
assembles them into ``ChatRequest`` and documents the rules."""

from __future__ import annotations

import re
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    model_validator,
)
from pydantic_core import PydanticCustomError

from llm_gateway.request_errors import (
    GATEWAY_ERROR,
    TAG_LIST,
    TAG_OBJECT,
    TAG_TEXT,
)

MAX_MESSAGES: Final = 2048
"""Most messages one request may carry (a cheap guard against absurd bodies)."""
MAX_CONTENT_PARTS: Final = 1024
"""Most content parts one message may carry."""
MAX_STOP_SEQUENCES: Final = 4
"""OpenAI's limit on ``stop`` sequences."""
MAX_OUTPUT_TOKENS: Final = 2**31 - 1
"""Upper bound for ``max_tokens``/``max_completion_tokens``: what a backend's int32 can hold."""
MAX_MODEL_LENGTH: Final = 256
"""Longest ``model`` accepted; matches the route table's alias limit."""
MAX_TOOLS: Final = 128
"""OpenAI's limit on ``tools``."""
MAX_TOP_LOGPROBS: Final = 20
"""OpenAI's (and vLLM's default) limit on ``top_logprobs``."""

# A data URL carrying a base64 image (RFC 2397), as the OpenAI API takes it.
_DATA_IMAGE: Final = re.compile(r"^data:image/[a-z0-9.+-]+;base64,[A-Za-z0-9+/=\s]+$", re.I)

_SEED_MIN: Final = -(2**63)
_SEED_MAX: Final = 2**63 - 1

UNSUPPORTED_PARAMETERS: Final = frozenset(
    {
        "audio",
        "function_call",
        "functions",
        "logit_bias",
        "metadata",
        "modalities",
        "prediction",
        "service_tier",
        "store",
        "web_search_options",
    }
)
"""Top-level OpenAI parameters the gateway knows but cannot honour: rejected, never ignored."""

_FALSE_IS_DEFAULT: Final = frozenset({"store"})
"""Unsupported parameters whose ``false`` is their default, so harmless to accept."""

_UNSUPPORTED_MESSAGE_FIELDS: Final = frozenset({"audio", "function_call", "refusal"})

Role = Literal["system", "developer", "user", "assistant", "tool"]
"""Message roles the gateway accepts (``function`` is rejected as unsupported)."""
ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh"]
"""OpenAI's ``reasoning_effort`` values (the backend decides which it honours)."""


def _rule(message: str, *, code: str | None, field: str | None = None) -> PydanticCustomError:
    """A rule violation; ``{param}`` in ``message`` becomes the field's path."""
    ctx: dict[str, Any] = {"message": message, "code": code}
    if field is not None:
        ctx["field"] = field
    return PydanticCustomError(GATEWAY_ERROR, "{message}", ctx)


def _valid_unicode(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _rule(
            "Invalid '{param}': the string contains an unpaired surrogate (invalid Unicode).",
            code="invalid_value",
        ) from None
    return value


Text = Annotated[str, AfterValidator(_valid_unicode)]
"""A string that is valid Unicode (encodable as UTF-8)."""
NonEmptyText = Annotated[str, Field(min_length=1), AfterValidator(_valid_unicode)]
"""A non-empty ``Text``."""


def _str_or_list(value: Any) -> str | None:
    if isinstance(value, str):
        return TAG_TEXT
    if isinstance(value, list):
        return TAG_LIST
    return None


def _str_or_object(value: Any) -> str | None:
    if isinstance(value, str):
        return TAG_TEXT
    if isinstance(value, dict):
        return TAG_OBJECT
    return None


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class ImageURL(_Frozen):
    """``image_url`` of an image part: a ``data:image/...;base64,`` URL or an http(s) URL
    (which a backend passes on only when its config allows remote URLs)."""

    url: NonEmptyText
    detail: Literal["auto", "low", "high"] | None = None

    @property
    def remote(self) -> bool:
        return not self.url.startswith("data:")

    @model_validator(mode="after")
    def _image_url(self) -> ImageURL:
        if not (_DATA_IMAGE.match(self.url) or self.url.startswith(("https://", "http://"))):
            raise _rule(
                "Invalid '{param}': expected a base64 data URL (data:image/png;base64,...) or"
                " a remote image URL.",
                code="invalid_value",
                field="url",
            )
        return self


class ContentPart(_Frozen):
    """A content part: ``{"type": "text", "text": ...}``, or ``{"type": "image_url",
    "image_url": {"url": ...}}`` (user messages only; see :class:`ImageURL`)."""

    type: Literal["text", "image_url"]
    text: Text | None = None
    image_url: ImageURL | None = None

    @model_validator(mode="after")
    def _fields_fit_the_type(self) -> ContentPart:
        wanted, other = ("text", "image_url") if self.type == "text" else ("image_url", "text")
        if getattr(self, wanted) is None:
            raise _rule(
                "Missing required parameter: '{param}'.",
                code="missing_required_parameter",
                field=wanted,
            )
        if getattr(self, other) is not None:
            raise _rule(
                f"Invalid parameter: '{{param}}' is not allowed in a '{self.type}' part.",
                code="invalid_value",
                field=other,
            )
        return self


_TextContent = Annotated[Text, Tag(TAG_TEXT)]
_PartsContent = Annotated[
    list[ContentPart], Field(min_length=1, max_length=MAX_CONTENT_PARTS), Tag(TAG_LIST)
]
Content = Annotated[
    _TextContent | _PartsContent,
    Discriminator(
        _str_or_list,
        custom_error_type="invalid_type",
        custom_error_message="one of a string or array of objects",  # "expected ..."
    ),
]
"""Message content: a string, or a non-empty array of text and image parts."""

_OneStop = Annotated[NonEmptyText, Tag(TAG_TEXT)]
_StopList = Annotated[
    list[NonEmptyText], Field(min_length=1, max_length=MAX_STOP_SEQUENCES), Tag(TAG_LIST)
]
Stop = Annotated[
    _OneStop | _StopList,
    Discriminator(
        _str_or_list,
        custom_error_type="invalid_type",
        custom_error_message="one of a string or array of strings",  # "expected ..."
    ),
]
"""``stop``: a non-empty string, or an array of 1 … 4 non-empty strings."""


JSONObject = dict[str, Any]
"""Any JSON object, not looked into (a JSON schema, a function's ``parameters``)."""


class FunctionCall(_Frozen):
    """``tool_calls[].function`` of an assistant message: the name and the arguments (a JSON
    text, passed on as sent)."""

    name: NonEmptyText
    arguments: Text


class ToolCall(_Frozen):
    """One call an assistant message made (echoed back by the client in the next turn)."""

    id: NonEmptyText
    type: Literal["function"]
    function: FunctionCall


class ChatMessage(_Frozen):
    """One chat message: a role and text content (a string or text parts); an assistant's
    ``tool_calls`` or a tool result's ``tool_call_id``."""

    role: Role
    content: Content | None = None
    name: Text | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: NonEmptyText | None = None

    @model_validator(mode="after")
    def _fields_fit_the_role(self) -> ChatMessage:
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            if "content" not in self.model_fields_set:
                raise _rule(
                    "Missing required parameter: '{param}'.",
                    code="missing_required_parameter",
                    field="content",
                )
            raise _rule(
                "Invalid type for '{param}': expected one of a string or array of objects, but"
                " got null instead.",
                code="invalid_type",
                field="content",
            )
        if self.role == "tool" and self.tool_call_id is None:
            raise _rule(
                "Missing required parameter: '{param}'.",
                code="missing_required_parameter",
                field="tool_call_id",
            )
        if self.role != "tool" and self.tool_call_id is not None:
            raise _rule(
                "Invalid parameter: '{param}' is only allowed on messages with role 'tool'.",
                code="invalid_value",
                field="tool_call_id",
            )
        if self.role != "user" and self.images:
            assert isinstance(self.content, list)  # only parts carry images
            index = next(i for i, part in enumerate(self.content) if part.type == "image_url")
            raise _rule(
                "Invalid value: '{param}': image_url parts are only allowed in messages with"
                " role 'user'.",
                code="invalid_value",
                field=f"content[{index}].type",
            )
        if self.role != "assistant" and self.tool_calls is not None:
            raise _rule(
                "Invalid parameter: '{param}' is only allowed on messages with role 'assistant'.",
                code="invalid_value",
                field="tool_calls",
            )
        return self

    @property
    def text(self) -> str:
        """The content's text as one string: the string itself, or the text parts joined with
        ``""`` (``""`` for an assistant message that only calls tools; images are left out)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text or "" for part in self.content)

    @property
    def images(self) -> tuple[ImageURL, ...]:
        """The message's image parts (none for string content)."""
        if self.content is None or isinstance(self.content, str):
            return ()
        return tuple(part.image_url for part in self.content if part.image_url is not None)


class FunctionDefinition(_Frozen):
    """``tools[].function``: what the model may call; ``parameters`` is any JSON schema."""

    name: NonEmptyText
    description: Text | None = None
    parameters: JSONObject | None = None
    strict: bool | None = None


class Tool(_Frozen):
    """One entry of ``tools`` (function tools only, as vLLM)."""

    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(_Frozen):
    name: NonEmptyText


class NamedToolChoice(_Frozen):
    """``tool_choice: {"type": "function", "function": {"name": ...}}``."""

    type: Literal["function"]
    function: NamedFunction


_ToolChoiceMode = Annotated[Literal["none", "auto", "required"], Tag(TAG_TEXT)]
ToolChoice = Annotated[
    _ToolChoiceMode | Annotated[NamedToolChoice, Tag(TAG_OBJECT)],
    Discriminator(
        _str_or_object,
        custom_error_type="invalid_type",
        custom_error_message="one of a string or object",  # "expected ..."
    ),
]
"""``tool_choice``: ``"none"``, ``"auto"``, ``"required"`` or a named function."""


class JSONSchemaFormat(_Frozen):
    """``response_format.json_schema``: a name and any JSON schema."""

    name: NonEmptyText
    description: Text | None = None
    schema_: JSONObject | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Frozen):
    """``response_format``: ``text``, ``json_object``, or ``json_schema`` with its schema."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_iff_json_schema(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise _rule(
                "Missing required parameter: '{param}'.",
                code="missing_required_parameter",
                field="json_schema",
            )
        if self.type != "json_schema" and self.json_schema is not None:
            raise _rule(
                "Invalid parameter: '{param}' is only allowed when 'response_format.type' is"
                " 'json_schema'.",
                code="invalid_value",
                field="json_schema",
            )
        return self


class StreamOptions(_Frozen):
    """``stream_options``: only ``include_usage`` (a final usage chunk) is supported."""

    include_usage: bool = False
