"""OpenAI-style 400s for invalid chat requests: pydantic's errors translated into OpenAI's
messages, ``param`` paths and codes (see :mod:`llm_gateway.request` for the rules)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from llm_gateway.errors import GatewayError, invalid_request

UNSUPPORTED_ROLES: Final = frozenset({"function"})
UNSUPPORTED_PART_TYPES: Final = frozenset({"input_audio", "file", "refusal"})
TAG_TEXT: Final = "$text"
TAG_LIST: Final = "$list"
TAG_OBJECT: Final = "$object"
UNION_TAGS: Final = frozenset({TAG_TEXT, TAG_LIST, TAG_OBJECT})
_UNION_FIELDS: Final = frozenset({"content", "stop", "tool_choice"})
"""Fields validated as tagged unions: pydantic puts the tag right after them in a ``loc``."""
_QUOTED: Final = re.compile(r"'((?:[^'\\]|\\.)*)'")
GATEWAY_ERROR: Final = "gateway"
"""pydantic error type of our own rules; ctx carries the finished message and code."""
DECIMAL_FIELDS: Final = frozenset({"temperature", "top_p", "presence_penalty", "frequency_penalty"})

# --- error translation -------------------------------------------------------------------------

_EXPECTED: Final[Mapping[str, str]] = {
    "bool_type": "a boolean",
    "dict_type": "an object",
    "float_type": "a decimal",
    "int_type": "an integer",
    "list_type": "an array",
    "model_attributes_type": "an object",
    "model_type": "an object",
    "string_type": "a string",
}


def translate(error: ErrorDetails) -> GatewayError:
    """The OpenAI-style ``GatewayError`` for one pydantic error."""
    loc = _strip_tags(error["loc"])
    ctx: Mapping[str, Any] = error.get("ctx") or {}
    kind = error["type"]
    value = error.get("input")

    if kind == GATEWAY_ERROR:
        field = ctx.get("field")
        param = _path((*loc, field) if field else loc)
        return invalid_request(
            str(ctx["message"]).replace("{param}", param), param=param, code=ctx.get("code")
        )

    param = _path(loc)
    last = loc[-1] if loc else None
    if kind == "missing":
        return invalid_request(
            f"Missing required parameter: '{param}'.",
            param=param,
            code="missing_required_parameter",
        )
    if kind == "extra_forbidden":
        return unrecognized(param)
    if kind == "literal_error":
        if not isinstance(value, str):
            return _invalid_type(param, "a string", value)
        if last == "role" and value in UNSUPPORTED_ROLES:
            return unsupported_value(param, value)
        if last == "type" and "content" in loc and value in UNSUPPORTED_PART_TYPES:
            return unsupported_value(
                param, value, hint="Only text and image_url content parts are supported."
            )
        supported = _QUOTED.findall(str(ctx.get("expected", "")))
        return invalid_request(
            f"Invalid value: '{clip(value)}'. Supported values are: {_enumerate(supported)}.",
            param=param,
            code="invalid_value",
        )
    if kind == "invalid_type":
        return _invalid_type(param, error["msg"], value)  # our Discriminator's message
    if kind in _EXPECTED:
        return _invalid_type(param, _EXPECTED[kind], value)
    if kind == "string_too_short":
        return invalid_request(
            f"Invalid '{param}': empty string. Expected a string with minimum length"
            f" {ctx.get('min_length', 1)}, but got an empty string instead.",
            param=param,
            code="empty_string",
        )
    if kind == "string_too_long":
        return invalid_request(
            f"Invalid '{param}': string too long. Expected a string with maximum length"
            f" {ctx.get('max_length')}, but got a string with length {_length(value)} instead.",
            param=param,
            code="string_above_max_length",
        )
    if kind in ("too_short", "too_long") and isinstance(value, str):
        kind = "string_" + kind  # a length constraint applied outside the str schema
    if kind == "too_short":
        return invalid_request(
            f"Invalid '{param}': empty array. Expected an array with minimum length"
            f" {ctx.get('min_length', 1)}, but got an empty array instead.",
            param=param,
            code="empty_array",
        )
    if kind == "too_long":
        return invalid_request(
            f"Invalid '{param}': array too long. Expected an array with maximum length"
            f" {ctx.get('max_length')}, but got an array with length"
            f" {ctx.get('actual_length', _length(value))} instead.",
            param=param,
            code="array_above_max_length",
        )
    bound = _BOUNDS.get(kind)
    if bound is not None:
        side, limit, key, op = bound
        number = "decimal" if last in DECIMAL_FIELDS else "integer"
        return invalid_request(
            f"Invalid '{param}': {number} {side} {limit}imum value. Expected a value {op}"
            f" {_number(ctx.get(key))}, but got {_number(value)} instead.",
            param=param,
            code=f"{number}_{side}_{limit}_value",
        )
    if kind == "finite_number":
        return invalid_request(
            f"Invalid '{param}': expected a finite number.", param=param, code="invalid_value"
        )
    return invalid_request(f"Invalid value for '{param}'.", param=param, code="invalid_value")


_BOUNDS: Final[Mapping[str, tuple[str, str, str, str]]] = {
    "greater_than_equal": ("below", "min", "ge", ">="),
    "greater_than": ("below", "min", "gt", ">"),
    "less_than_equal": ("above", "max", "le", "<="),
    "less_than": ("above", "max", "lt", "<"),
}


def _strip_tags(loc: Sequence[int | str]) -> tuple[int | str, ...]:
    """Drop the union tags pydantic puts after ``content``/``stop``/``tool_choice`` in a loc."""
    kept: list[int | str] = []
    for item in loc:
        if item in UNION_TAGS and kept and kept[-1] in _UNION_FIELDS:
            continue
        kept.append(item)
    return tuple(kept)


def _path(loc: Sequence[int | str]) -> str:
    """OpenAI's parameter path: ``messages[1].content[0].type``."""
    out = ""
    for item in loc:
        if isinstance(item, int):
            out += f"[{item}]"
        else:
            out += f".{clip(item)}" if out else clip(item)
    return out


def unrecognized(param: str) -> GatewayError:
    return invalid_request(
        f"Unrecognized request argument supplied: {param}", param=param, code="unknown_parameter"
    )


def unsupported_parameter(param: str) -> GatewayError:
    return invalid_request(
        f"Unsupported parameter: '{param}' is not supported by this gateway.",
        param=param,
        code="unsupported_parameter",
    )


def unsupported_value(param: str, value: str, *, hint: str = "") -> GatewayError:
    message = f"Unsupported value: '{param}' does not support '{clip(value)}' with this gateway."
    return invalid_request(
        f"{message} {hint}" if hint else message, param=param, code="unsupported_value"
    )


def _invalid_type(param: str, expected: str, value: Any) -> GatewayError:
    return invalid_request(
        f"Invalid type for '{param}': expected {expected}, but got {json_type(value)} instead.",
        param=param,
        code="invalid_type",
    )


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, dict | BaseModel):
        return "an object"
    return "an unsupported value"


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "a number"
    if isinstance(value, int) and value.bit_length() > 64:
        return "a larger number" if value > 0 else "a smaller number"
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        value = int(value)  # "<= 2", as OpenAI writes it, not "<= 2.0"
    return clip(repr(value) if isinstance(value, float) else str(value), 32)


def _length(value: Any) -> str:
    try:
        return str(len(value))
    except TypeError:
        return "another length"


def _enumerate(values: Sequence[str]) -> str:
    quoted = [f"'{v}'" for v in values] or ["(none)"]
    if len(quoted) <= 2:
        return " and ".join(quoted)
    return f"{', '.join(quoted[:-1])}, and {quoted[-1]}"


def clip(text: str, limit: int = 64) -> str:
    """Client text fit to echo: short, and encodable (unpaired surrogates escaped)."""
    if len(text) > limit:
        text = text[:limit] + "…"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
