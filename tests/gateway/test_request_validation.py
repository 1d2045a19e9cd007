"""Chat-completion request validation: OpenAI-style 400s for everything the gateway won't send."""

# ruff: noqa: E501  (the case tables read best one case per line)

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llm_gateway.errors import GatewayError
from llm_gateway.request import (
    MAX_MESSAGES,
    UNSUPPORTED_PARAMETERS,
    ChatMessage,
    ChatRequest,
    ContentPart,
    parse_chat_request,
)

USER = {"role": "user", "content": "Hello"}
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
PNG = "data:image/png;base64,iVBORw0KGgo="
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
    "additionalProperties": False,
}


def body(**fields: Any) -> dict[str, Any]:
    """A valid request with ``fields`` merged in (``...`` as a value deletes the field)."""
    data: dict[str, Any] = {"model": "llama", "messages": [USER], **fields}
    return {key: value for key, value in data.items() if value is not ...}


def user(content: Any, **extra: Any) -> dict[str, Any]:
    return {"role": "user", "content": content, **extra}


def encode(data: Any) -> bytes:
    return data if isinstance(data, bytes) else json.dumps(data).encode()


def reject(data: Any) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        parse_chat_request(encode(data))
    return caught.value


def assert_openai_shape(err: GatewayError) -> None:
    assert err.status == 400
    payload = err.body()
    assert set(payload) == {"error"}
    error = payload["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert isinstance(error["message"], str)
    assert 0 < len(error["message"]) <= 400
    assert error["param"] is None or isinstance(error["param"], str)
    assert error["param"] is None or len(error["param"]) <= 200
    assert error["code"] is None or isinstance(error["code"], str)
    json.dumps(payload, ensure_ascii=False).encode("utf-8")  # sendable as-is
    # What the client sent may be echoed (an unknown field's name); the rest must not leak.
    lowered = error["message"].lower().replace((error["param"] or "\0").lower(), "")
    for leak in ("pydantic", "http", "traceback", "validation error", "input_value", "{param}"):
        assert leak not in lowered, error["message"]


# (id, body, param, code, message fragment)
BAD: list[tuple[str, Any, str | None, str | None, str]] = [
    # the body itself
    ("empty-body", b"", None, None, "could not parse the JSON body"),
    ("not-utf8", b'{"model": "\xff"}', None, None, "could not parse the JSON body"),
    ("truncated-json", b'{"model": "m"', None, None, "could not parse the JSON body"),
    ("nan-literal", b'{"model": "m", "temperature": NaN}', None, None, "could not parse"),
    ("deep-nesting", b"[" * 100_000, None, None, "could not parse the JSON body"),
    ("array-body", [body()], None, "invalid_type", "expected a JSON object, but got an array"),
    ("string-body", "hello", None, "invalid_type", "but got a string instead"),
    # top-level arguments
    ("unknown-arg", body(foo=1), "foo", "unknown_parameter", "Unrecognized request argument supplied: foo"),
    ("functions", body(functions=[]), "functions", "unsupported_parameter", "'functions' is not supported by this gateway"),
    ("logit-bias", body(logit_bias={"50256": -100}), "logit_bias", "unsupported_parameter", "'logit_bias'"),
    ("audio", body(audio={"voice": "alloy"}), "audio", "unsupported_parameter", "'audio'"),
    ("modalities", body(modalities=["text"]), "modalities", "unsupported_parameter", "'modalities'"),
    ("store-true", body(store=True), "store", "unsupported_parameter", "'store'"),
    # tools (shape only; forwarded to OpenAI-format backends)
    ("tools-empty", body(tools=[]), "tools", "empty_array", "Invalid 'tools': empty array"),
    ("tools-object", body(tools={"type": "function"}), "tools", "invalid_type", "Invalid type for 'tools': expected an array, but got an object instead."),
    ("tools-too-many", body(tools=[TOOL] * 129), "tools", "array_above_max_length", "maximum length 128"),
    ("tool-no-function", body(tools=[{"type": "function"}]), "tools[0].function", "missing_required_parameter", "Missing required parameter: 'tools[0].function'."),
    ("tool-type-unknown", body(tools=[{**TOOL, "type": "code_interpreter"}]), "tools[0].type", "invalid_value", "Invalid value: 'code_interpreter'. Supported values are: 'function'."),
    ("tool-name-missing", body(tools=[{"type": "function", "function": {"parameters": {}}}]), "tools[0].function.name", "missing_required_parameter", "'tools[0].function.name'"),
    ("tool-name-empty", body(tools=[{"type": "function", "function": {"name": ""}}]), "tools[0].function.name", "empty_string", "empty string"),
    ("tool-parameters-array", body(tools=[{"type": "function", "function": {"name": "f", "parameters": []}}]), "tools[0].function.parameters", "invalid_type", "expected an object, but got an array"),
    ("tool-function-extra", body(tools=[{"type": "function", "function": {"name": "f", "params": {}}}]), "tools[0].function.params", "unknown_parameter", "Unrecognized request argument supplied: tools[0].function.params"),
    ("tool-choice-unknown", body(tools=[TOOL], tool_choice="always"), "tool_choice", "invalid_value", "Invalid value: 'always'. Supported values are: 'none', 'auto', and 'required'."),
    ("tool-choice-number", body(tools=[TOOL], tool_choice=1), "tool_choice", "invalid_type", "expected one of a string or object, but got an integer"),
    ("tool-choice-no-name", body(tools=[TOOL], tool_choice={"type": "function", "function": {}}), "tool_choice.function.name", "missing_required_parameter", "'tool_choice.function.name'"),
    ("tool-choice-without-tools", body(tool_choice="auto"), "tool_choice", "invalid_value", "only allowed when 'tools' are specified"),
    ("tool-choice-unknown-function", body(tools=[TOOL], tool_choice={"type": "function", "function": {"name": "nope"}}), "tool_choice.function.name", "invalid_value", "no function named 'nope' in 'tools'"),
    ("parallel-tool-calls-string", body(tools=[TOOL], parallel_tool_calls="yes"), "parallel_tool_calls", "invalid_type", "expected a boolean"),
    # response_format, reasoning_effort, logprobs
    ("response-format-string", body(response_format="json"), "response_format", "invalid_type", "expected an object, but got a string"),
    ("response-format-type-unknown", body(response_format={"type": "xml"}), "response_format.type", "invalid_value", "Invalid value: 'xml'. Supported values are: 'text', 'json_object', and 'json_schema'."),
    ("response-format-no-schema", body(response_format={"type": "json_schema"}), "response_format.json_schema", "missing_required_parameter", "Missing required parameter: 'response_format.json_schema'."),
    ("response-format-schema-not-object", body(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": "{}"}}), "response_format.json_schema.schema", "invalid_type", "expected an object, but got a string"),
    ("response-format-schema-no-name", body(response_format={"type": "json_schema", "json_schema": {"schema": {}}}), "response_format.json_schema.name", "missing_required_parameter", "'response_format.json_schema.name'"),
    ("response-format-schema-on-json-object", body(response_format={"type": "json_object", "json_schema": {"name": "x"}}), "response_format.json_schema", "invalid_value", "only allowed when 'response_format.type' is 'json_schema'"),
    ("reasoning-effort-unknown", body(reasoning_effort="extreme"), "reasoning_effort", "invalid_value", "Invalid value: 'extreme'. Supported values are: 'none', 'minimal', 'low', 'medium', 'high', and 'xhigh'."),
    ("logprobs-string", body(logprobs="true"), "logprobs", "invalid_type", "expected a boolean"),
    ("top-logprobs-high", body(logprobs=True, top_logprobs=21), "top_logprobs", "integer_above_max_value", "Expected a value <= 20"),
    ("top-logprobs-without-logprobs", body(top_logprobs=2), "top_logprobs", "invalid_value", "'logprobs' must be set to true"),
    # model
    ("model-missing", body(model=...), "model", "missing_required_parameter", "Missing required parameter: 'model'."),
    ("model-empty", body(model=""), "model", "empty_string", "Invalid 'model': empty string"),
    ("model-number", body(model=7), "model", "invalid_type", "Invalid type for 'model': expected a string, but got an integer instead."),
    ("model-too-long", body(model="m" * 300), "model", "string_above_max_length", "string too long"),
    # messages
    ("messages-missing", body(messages=...), "messages", "missing_required_parameter", "Missing required parameter: 'messages'."),
    ("messages-empty", body(messages=[]), "messages", "empty_array", "Expected an array with minimum length 1, but got an empty array"),
    ("messages-object", body(messages={"role": "user"}), "messages", "invalid_type", "expected an array, but got an object"),
    ("messages-too-many", body(messages=[USER] * (MAX_MESSAGES + 1)), "messages", "array_above_max_length", f"maximum length {MAX_MESSAGES}"),
    ("message-not-object", body(messages=[USER, "hi"]), "messages[1]", "invalid_type", "expected an object, but got a string"),
    ("role-missing", body(messages=[{"content": "x"}]), "messages[0].role", "missing_required_parameter", "'messages[0].role'"),
    ("role-unknown", body(messages=[USER, {"role": "bot", "content": "x"}]), "messages[1].role", "invalid_value", "Invalid value: 'bot'. Supported values are: 'system', 'developer', 'user', 'assistant', and 'tool'."),
    ("role-number", body(messages=[{"role": 1, "content": "x"}]), "messages[0].role", "invalid_type", "expected a string, but got an integer"),
    ("tool-message-no-id", body(messages=[USER, {"role": "tool", "content": "42"}]), "messages[1].tool_call_id", "missing_required_parameter", "Missing required parameter: 'messages[1].tool_call_id'."),
    ("tool-message-no-content", body(messages=[USER, {"role": "tool", "tool_call_id": "c1"}]), "messages[1].content", "missing_required_parameter", "'messages[1].content'"),
    ("tool-call-id-on-user", body(messages=[user("x", tool_call_id="c1")]), "messages[0].tool_call_id", "invalid_value", "only allowed on messages with role 'tool'"),
    ("tool-calls-on-user", body(messages=[user("x", tool_calls=[CALL])]), "messages[0].tool_calls", "invalid_value", "only allowed on messages with role 'assistant'"),
    ("tool-call-no-id", body(messages=[USER, {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{}"}}]}]), "messages[1].tool_calls[0].id", "missing_required_parameter", "'messages[1].tool_calls[0].id'"),
    ("tool-call-arguments-object", body(messages=[USER, {"role": "assistant", "tool_calls": [{**CALL, "function": {"name": "f", "arguments": {}}}]}]), "messages[1].tool_calls[0].function.arguments", "invalid_type", "expected a string, but got an object"),
    ("assistant-null-content-no-calls", body(messages=[USER, {"role": "assistant", "content": None}]), "messages[1].content", "invalid_type", "but got null instead"),
    ("role-function", body(messages=[USER, {"role": "function", "name": "f", "content": "1"}]), "messages[1].role", "unsupported_value", "'function'"),
    ("content-missing", body(messages=[{"role": "user"}]), "messages[0].content", "missing_required_parameter", "'messages[0].content'"),
    ("content-null", body(messages=[user(None)]), "messages[0].content", "invalid_type", "expected one of a string or array of objects, but got null instead"),
    ("content-number", body(messages=[user(3)]), "messages[0].content", "invalid_type", "but got an integer instead"),
    ("content-empty-array", body(messages=[user([])]), "messages[0].content", "empty_array", "empty array"),
    ("content-audio-part", body(messages=[user([{"type": "input_audio", "input_audio": {}}])]), "messages[0].content[0].type", "unsupported_value", "Only text and image_url content parts are supported"),
    ("content-part-unknown-type", body(messages=[user([{"type": "video", "text": "x"}])]), "messages[0].content[0].type", "invalid_value", "Invalid value: 'video'. Supported values are: 'text' and 'image_url'."),
    ("image-part-no-image-url", body(messages=[user([{"type": "image_url"}])]), "messages[0].content[0].image_url", "missing_required_parameter", "Missing required parameter: 'messages[0].content[0].image_url'."),
    ("image-part-with-text", body(messages=[user([{"type": "image_url", "text": "x", "image_url": {"url": PNG}}])]), "messages[0].content[0].text", "invalid_value", "is not allowed in a 'image_url' part"),
    ("text-part-with-image", body(messages=[user([{"type": "text", "text": "x", "image_url": {"url": PNG}}])]), "messages[0].content[0].image_url", "invalid_value", "is not allowed in a 'text' part"),
    ("image-url-ftp", body(messages=[user([{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}])]), "messages[0].content[0].image_url.url", "invalid_value", "expected a base64 data URL"),
    ("image-url-data-not-image", body(messages=[user([{"type": "image_url", "image_url": {"url": "data:text/plain;base64,aGk="}}])]), "messages[0].content[0].image_url.url", "invalid_value", "expected a base64 data URL"),
    ("image-url-detail", body(messages=[user([{"type": "image_url", "image_url": {"url": PNG, "detail": "ultra"}}])]), "messages[0].content[0].image_url.detail", "invalid_value", "Supported values are: 'auto', 'low', and 'high'."),
    ("image-in-assistant", body(messages=[USER, {"role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": PNG}}]}]), "messages[1].content[1].type", "invalid_value", "only allowed in messages with role 'user'"),
    ("content-part-no-text", body(messages=[user([{"type": "text"}])]), "messages[0].content[0].text", "missing_required_parameter", "'messages[0].content[0].text'"),
    ("content-part-string", body(messages=[user(["hi"])]), "messages[0].content[0]", "invalid_type", "expected an object, but got a string"),
    ("content-part-extra", body(messages=[user([{"type": "text", "text": "a", "cache": 1}])]), "messages[0].content[0].cache", "unknown_parameter", "Unrecognized request argument supplied: messages[0].content[0].cache"),
    ("content-surrogate", body(messages=[user("\ud800")]), "messages[0].content", "invalid_value", "unpaired surrogate"),
    ("message-unknown-field", body(messages=[user("x", mood="happy")]), "messages[0].mood", "unknown_parameter", "Unrecognized request argument supplied: messages[0].mood"),
    ("message-refusal", body(messages=[USER, {"role": "assistant", "content": "", "refusal": "no"}]), "messages[1].refusal", "unsupported_parameter", "'messages[1].refusal' is not supported"),
    ("name-number", body(messages=[user("x", name=5)]), "messages[0].name", "invalid_type", "expected a string"),
    ("no-user-message", body(messages=[{"role": "system", "content": "be brief"}]), "messages", "invalid_value", "at least one message with role 'user'"),
    # stream / stream_options
    ("stream-string", body(stream="yes"), "stream", "invalid_type", "Invalid type for 'stream': expected a boolean, but got a string instead."),
    ("stream-number", body(stream=1), "stream", "invalid_type", "expected a boolean, but got an integer"),
    ("stream-options-without-stream", body(stream_options={"include_usage": True}), "stream_options", None, "only allowed when 'stream' is enabled"),
    ("stream-options-stream-false", body(stream=False, stream_options={}), "stream_options", None, "only allowed when 'stream' is enabled"),
    ("stream-options-array", body(stream=True, stream_options=[]), "stream_options", "invalid_type", "expected an object, but got an array"),
    ("include-usage-string", body(stream=True, stream_options={"include_usage": "true"}), "stream_options.include_usage", "invalid_type", "expected a boolean"),
    ("stream-options-unknown", body(stream=True, stream_options={"chunk": 1}), "stream_options.chunk", "unknown_parameter", "Unrecognized request argument supplied: stream_options.chunk"),
    # token limits
    ("max-tokens-string", body(max_tokens="12"), "max_tokens", "invalid_type", "Invalid type for 'max_tokens': expected an integer, but got a string instead."),
    ("max-tokens-bool", body(max_tokens=True), "max_tokens", "invalid_type", "expected an integer, but got a boolean"),
    ("max-tokens-float", body(max_tokens=12.5), "max_tokens", "invalid_type", "expected an integer, but got a decimal"),
    ("max-tokens-zero", body(max_tokens=0), "max_tokens", "integer_below_min_value", "Invalid 'max_tokens': integer below minimum value. Expected a value >= 1, but got 0 instead."),
    ("max-tokens-huge", body(max_tokens=10**40), "max_tokens", "integer_above_max_value", "but got a larger number instead"),
    ("max-completion-tokens-negative", body(max_completion_tokens=-5), "max_completion_tokens", "integer_below_min_value", "got -5 instead"),
    ("token-limits-disagree", body(max_tokens=100, max_completion_tokens=200), "max_tokens", "invalid_value", "conflicts with 'max_completion_tokens'"),
    # sampling
    ("temperature-high", body(temperature=2.5), "temperature", "decimal_above_max_value", "Invalid 'temperature': decimal above maximum value. Expected a value <= 2, but got 2.5 instead."),
    ("temperature-negative", body(temperature=-1), "temperature", "decimal_below_min_value", "Expected a value >= 0, but got -1 instead."),
    ("temperature-string", body(temperature="0.7"), "temperature", "invalid_type", "expected a decimal, but got a string"),
    ("temperature-bool", body(temperature=True), "temperature", "invalid_type", "expected a decimal, but got a boolean"),
    ("top-p-high", body(top_p=1.01), "top_p", "decimal_above_max_value", "Expected a value <= 1"),
    ("top-p-negative", body(top_p=-0.1), "top_p", "decimal_below_min_value", "Expected a value >= 0"),
    ("presence-penalty-low", body(presence_penalty=-2.5), "presence_penalty", "decimal_below_min_value", "Expected a value >= -2"),
    ("frequency-penalty-high", body(frequency_penalty=3), "frequency_penalty", "decimal_above_max_value", "Expected a value <= 2"),
    ("seed-string", body(seed="42"), "seed", "invalid_type", "expected an integer"),
    ("seed-too-big", body(seed=2**64), "seed", "integer_above_max_value", "integer above maximum value"),
    ("user-number", body(user=5), "user", "invalid_type", "expected a string"),
    # stop
    ("stop-five", body(stop=["a", "b", "c", "d", "e"]), "stop", "array_above_max_length", "Invalid 'stop': array too long. Expected an array with maximum length 4, but got an array with length 5 instead."),
    ("stop-empty-string", body(stop=""), "stop", "empty_string", "Invalid 'stop': empty string"),
    ("stop-empty-member", body(stop=["a", ""]), "stop[1]", "empty_string", "Invalid 'stop[1]': empty string"),
    ("stop-empty-array", body(stop=[]), "stop", "empty_array", "empty array"),
    ("stop-number", body(stop=5), "stop", "invalid_type", "expected one of a string or array of strings, but got an integer"),
    ("stop-member-number", body(stop=["a", 5]), "stop[1]", "invalid_type", "expected a string, but got an integer"),
    # n
    ("n-two", body(n=2), "n", "unsupported_value", "Unsupported value: 'n' does not support 2 with this gateway: token quotas reserve output for one completion and the stream relay carries a single choice. Only the default (1) value is supported."),
    ("n-zero", body(n=0), "n", "integer_below_min_value", "Expected a value >= 1"),
    ("n-string", body(n="1"), "n", "invalid_type", "expected an integer"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("data", "param", "code", "fragment"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD],
)
def test_bad_request_is_an_openai_400(
    data: Any, param: str | None, code: str | None, fragment: str
) -> None:
    err = reject(data)
    assert_openai_shape(err)
    assert (err.param, err.code) == (param, code), err.message
    assert fragment in err.message


def test_bad_table_ids_are_unique() -> None:
    ids = [case[0] for case in BAD]
    assert len(ids) == len(set(ids))
    assert len(ids) >= 30


def test_long_unknown_argument_is_not_echoed_at_length() -> None:
    err = reject(body(**{"x" * 10_000: 1}))
    assert_openai_shape(err)
    assert err.code == "unknown_parameter"
    assert len(err.message) < 200
    assert err.param is not None
    assert len(err.param) < 100


def test_long_role_is_not_echoed_at_length() -> None:
    err = reject(body(messages=[{"role": "r" * 10_000, "content": "x"}]))
    assert_openai_shape(err)
    assert (err.param, err.code) == ("messages[0].role", "invalid_value")
    assert len(err.message) < 200


def test_surrogate_in_unknown_argument_name_is_escaped() -> None:
    err = reject(body(**{"bad\ud800": 1}))
    assert_openai_shape(err)
    assert err.param == "bad\\ud800"


def test_unknown_argument_is_reported_before_other_problems() -> None:
    err = reject({"messages": [], "frobnicate": True})
    assert err.param == "frobnicate"


# (id, body, expected attribute values)
GOOD: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("minimal", body(), {"model": "llama", "stream": False, "output_limit": None, "stop_sequences": (), "include_usage": False, "n": None}),
    ("developer-role", body(messages=[{"role": "developer", "content": "Be terse."}, USER]), {"roles": ["developer", "user"], "texts": ["Be terse.", "Hello"]}),
    ("text-parts-joined", body(messages=[user([{"type": "text", "text": "Hel"}, {"type": "text", "text": "lo"}])]), {"texts": ["Hello"]}),
    ("empty-string-content", body(messages=[{"role": "system", "content": ""}, user("")]), {"texts": ["", ""]}),
    ("assistant-last", body(messages=[USER, {"role": "assistant", "content": "Sure:", "name": "bot"}]), {"roles": ["user", "assistant"]}),
    ("stop-string", body(stop="\n\n"), {"stop_sequences": ("\n\n",)}),
    ("stop-list", body(stop=["END", "###"]), {"stop_sequences": ("END", "###")}),
    ("stop-four", body(stop=["a", "b", "c", "d"]), {"stop_sequences": ("a", "b", "c", "d")}),
    ("stop-null", body(stop=None), {"stop_sequences": ()}),
    ("include-usage", body(stream=True, stream_options={"include_usage": True}), {"stream": True, "include_usage": True}),
    ("stream-options-default", body(stream=True, stream_options={}), {"include_usage": False}),
    ("stream-no-options", body(stream=True), {"stream": True, "include_usage": False}),
    ("stream-null", body(stream=None), {"stream": False}),
    ("max-tokens-only", body(max_tokens=64), {"output_limit": 64}),
    ("max-completion-tokens-only", body(max_completion_tokens=32), {"output_limit": 32}),
    ("token-limits-agree", body(max_tokens=48, max_completion_tokens=48), {"output_limit": 48}),
    ("max-completion-tokens-with-null-max-tokens", body(max_tokens=None, max_completion_tokens=16), {"output_limit": 16}),
    ("sampling", body(temperature=0, top_p=1, presence_penalty=-2, frequency_penalty=2.0, seed=-7), {"temperature": 0.0, "top_p": 1.0, "presence_penalty": -2.0, "frequency_penalty": 2.0, "seed": -7}),
    ("temperature-two", body(temperature=2), {"temperature": 2.0}),
    ("top-p-zero", body(top_p=0), {"top_p": 0.0}),
    ("n-one", body(n=1), {"n": 1}),
    ("user-field", body(user="alice"), {"user": "alice"}),
    ("unsupported-as-null", body(tools=None, tool_choice=None, response_format=None, logit_bias=None), {"model": "llama", "tools": None}),
    ("logprobs-false", body(logprobs=False, store=False), {"logprobs": False}),
    ("echoed-assistant-message", body(messages=[USER, {"role": "assistant", "content": "Hi", "refusal": None, "tool_calls": None, "function_call": None, "audio": None}, user("More")]), {"roles": ["user", "assistant", "user"]}),
    ("tools-and-choices", body(tools=[TOOL], tool_choice="required", parallel_tool_calls=False), {"tool_choice": "required", "parallel_tool_calls": False}),
    ("tool-choice-none-without-tools", body(tool_choice="none"), {"tool_choice": "none"}),
    ("tool-choice-named", body(tools=[TOOL], tool_choice={"type": "function", "function": {"name": "get_weather"}}), {"tool_names": ["get_weather"]}),
    ("tool-parameters-any-object", body(tools=[{"type": "function", "function": {"name": "f.x-1", "description": None, "parameters": {"anything": [1, {"nested": None}]}, "strict": True}}]), {"tool_names": ["f.x-1"]}),
    ("tool-turns", body(messages=[USER, {"role": "assistant", "content": None, "tool_calls": [CALL]}, {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "21C"}]}]), {"roles": ["user", "assistant", "tool"], "texts": ["Hello", "", "21C"]}),
    ("assistant-tool-calls-no-content", body(messages=[USER, {"role": "assistant", "tool_calls": [CALL]}]), {"roles": ["user", "assistant"]}),
    ("assistant-empty-tool-calls", body(messages=[USER, {"role": "assistant", "content": "Hi", "tool_calls": []}]), {"roles": ["user", "assistant"]}),
    ("response-format-text", body(response_format={"type": "text"}), {"response_format_type": "text"}),
    ("response-format-json-object", body(response_format={"type": "json_object"}), {"response_format_type": "json_object"}),
    ("response-format-json-schema", body(response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": SCHEMA, "strict": True}}), {"response_format_type": "json_schema"}),
    ("reasoning-effort", body(reasoning_effort="low"), {"reasoning_effort": "low"}),
    ("logprobs", body(logprobs=True, top_logprobs=20), {"logprobs": True, "top_logprobs": 20}),
    ("unicode", body(messages=[user("héllo 👋")]), {"texts": ["héllo 👋"]}),
    ("max-messages", body(messages=[USER] * MAX_MESSAGES), {"message_count": MAX_MESSAGES}),
]  # fmt: skip


def _observe(request: ChatRequest, attribute: str) -> Any:
    if attribute == "roles":
        return [m.role for m in request.messages]
    if attribute == "texts":
        return [m.text for m in request.messages]
    if attribute == "message_count":
        return len(request.messages)
    if attribute == "tool_names":
        return [tool.function.name for tool in request.tools or ()]
    if attribute == "response_format_type":
        return request.response_format.type if request.response_format else None
    return getattr(request, attribute)


@pytest.mark.parametrize(
    ("data", "expected"), [pytest.param(*case[1:], id=case[0]) for case in GOOD]
)
def test_good_request_parses(data: dict[str, Any], expected: dict[str, Any]) -> None:
    request = parse_chat_request(encode(data))
    for attribute, value in expected.items():
        assert _observe(request, attribute) == value, attribute


def test_parsed_request_is_frozen() -> None:
    request = parse_chat_request(encode(body()))
    with pytest.raises(ValueError, match="frozen"):
        request.model = "other"  # type: ignore[misc]


def test_models_can_be_built_directly() -> None:
    message = ChatMessage(
        role="user",
        content=[ContentPart(type="text", text="a"), ContentPart(type="text", text="b")],
    )
    request = ChatRequest(model="m", messages=[message], max_tokens=5, stop="x")
    assert (message.text, request.output_limit, request.stop_sequences) == ("ab", 5, ("x",))


def test_every_unsupported_parameter_is_rejected_by_name() -> None:
    for name in sorted(UNSUPPORTED_PARAMETERS):
        err = reject(body(**{name: {"x": 1}}))
        assert (err.param, err.code) == (name, "unsupported_parameter")


# --- properties: nothing but an OpenAI-shaped GatewayError ever escapes -----------------------

_ANY_TEXT = st.text(alphabet=st.characters(codec=None), max_size=12)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _ANY_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_ANY_TEXT, inner, max_size=4),
    max_leaves=12,
)
_FIELD_NAMES = st.sampled_from(
    [
        "model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens",
        "temperature", "top_p", "stop", "presence_penalty", "frequency_penalty", "seed", "user",
        "n", "tools", "logprobs", "store", "foo", "tool_choice", "response_format",
        "top_logprobs", "parallel_tool_calls", "reasoning_effort",
    ]
)  # fmt: skip
_NUMBERS = st.integers(-5, 5) | st.floats(-3, 3) | st.integers() | st.floats(allow_nan=False)
_PART = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "image_url", "x"]) | _JSON},
    optional={"text": _ANY_TEXT | _JSON, "image_url": _JSON},
)
_MESSAGE = st.fixed_dictionaries(
    {},
    optional={
        "role": st.sampled_from(["user", "system", "developer", "assistant", "tool", "x"]) | _JSON,
        "content": _ANY_TEXT | st.lists(_PART, max_size=3) | _JSON,
        "name": _ANY_TEXT | _JSON,
        "tool_calls": st.none() | _JSON | st.just([CALL]),
        "tool_call_id": st.none() | _ANY_TEXT | _JSON,
        "extra": _JSON,
    },
)
_REQUEST_LIKE = st.dictionaries(
    _FIELD_NAMES,
    _JSON | _NUMBERS | _ANY_TEXT | st.lists(_MESSAGE, max_size=3) | st.lists(_ANY_TEXT, max_size=6),
    max_size=8,
)
_PROPERTY_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def _parse_or_reject(raw: bytes) -> None:
    try:
        request = parse_chat_request(raw)
    except GatewayError as err:
        assert_openai_shape(err)
    else:
        assert isinstance(request, ChatRequest)
        assert any(m.role == "user" for m in request.messages)


@_PROPERTY_SETTINGS
@given(st.binary(max_size=64))
def test_arbitrary_bytes_only_raise_gateway_errors(raw: bytes) -> None:
    _parse_or_reject(raw)


@_PROPERTY_SETTINGS
@given(_JSON)
def test_arbitrary_json_only_raises_gateway_errors(data: Any) -> None:
    _parse_or_reject(json.dumps(data).encode())


@_PROPERTY_SETTINGS
@given(_REQUEST_LIKE)
def test_request_like_objects_only_raise_gateway_errors(data: dict[str, Any]) -> None:
    _parse_or_reject(json.dumps(data).encode())


@_PROPERTY_SETTINGS
@given(
    st.fixed_dictionaries(
        {"model": st.just("m"), "messages": st.lists(_MESSAGE, min_size=1, max_size=4)},
        optional={
            "stream": st.booleans(),
            "stop": _ANY_TEXT | st.lists(_ANY_TEXT, max_size=5),
            "max_tokens": _NUMBERS,
            "temperature": _NUMBERS,
        },
    )
)
def test_nearly_valid_requests_only_raise_gateway_errors(data: dict[str, Any]) -> None:
    _parse_or_reject(json.dumps(data).encode())
