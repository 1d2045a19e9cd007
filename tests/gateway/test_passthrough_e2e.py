"""Pass-through of what OpenAI-format backends support (tools, structured output, reasoning
effort, logprobs, usage details), and its refusal by prompt-in backends, end to end over real
HTTP: openai SDK → uvicorn gateway → boto3 → emulator (event stream)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from pydantic import BaseModel

from llm_gateway.app import create_app
from llm_gateway.contract import ROUTES_ENV
from llm_gateway.settings import Settings
from llm_gateway.upstream import SageMakerInvoker
from local.scenarios import Scenario, ScriptedToolCall
from local.serving import serve_in_thread
from tests.gateway.conftest import ROUTES, Servers

ASK = [{"role": "user", "content": "What's the weather in Paris and in Zürich?"}]
ARGS_PARIS = '{"city": "Paris", "unit": "celsius", "note": "naïve café ☀️ \\"quoted\\""}'
ARGS_ZURICH = '{"city": "Zürich", "unit": "celsius", "note": "考虑 🌦"}'
WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"type": "string"},
                   "note": {"type": "string"}},
    "required": ["city", "unit", "note"],
    "additionalProperties": False,
}  # fmt: skip
TOOLS: list[Any] = [
    {"type": "function", "function": {"name": "get_weather", "description": "Current weather.",
                                      "parameters": WEATHER_SCHEMA, "strict": True}},
]  # fmt: skip
TWO_CALLS = Scenario(
    content="",
    finish_reason="tool_calls",
    tool_calls=(
        ScriptedToolCall(name="get_weather", arguments=ARGS_PARIS, id="call_paris"),
        ScriptedToolCall(name="get_weather", arguments=ARGS_ZURICH, id="call_zurich"),
    ),
    tool_arguments_piece=2,
    part_size=7,  # PayloadParts cut anywhere: inside events, JSON strings, UTF-8 sequences
)


def _recorded_body(servers: Servers) -> dict[str, Any]:
    (recorded,) = servers.emulator.requests
    assert isinstance(recorded.body, dict)
    return recorded.body


def test_streamed_tool_calls_arrive_in_pieces_and_accumulate_exactly(
    servers_clean: Servers,
) -> None:
    servers_clean.emulator.set_scenario("ep-deepseek", TWO_CALLS)
    client = servers_clean.client()
    with client.chat.completions.stream(
        model="deepseek", messages=ASK, tools=TOOLS, tool_choice="auto", parallel_tool_calls=True
    ) as stream:
        pieces = [
            event.chunk.choices[0].delta.tool_calls
            for event in stream
            if event.type == "chunk" and event.chunk.choices
            and event.chunk.choices[0].delta.tool_calls
        ]  # fmt: skip
        final = stream.get_final_completion()
    assert len(pieces) > 40  # the arguments really were split across many chunks
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert [c.id for c in calls] == ["call_paris", "call_zurich"]
    assert [c.function.name for c in calls] == ["get_weather", "get_weather"]
    assert [c.function.arguments for c in calls] == [ARGS_PARIS, ARGS_ZURICH]
    assert calls[0].function.parsed_arguments == json.loads(ARGS_PARIS)  # the SDK's own parse
    body = _recorded_body(servers_clean)
    assert body["tools"] == TOOLS
    assert (body["tool_choice"], body["parallel_tool_calls"]) == ("auto", True)


def test_streamed_tool_call_deltas_are_relayed_unchanged(servers_clean: Servers) -> None:
    servers_clean.emulator.set_scenario("ep-deepseek", TWO_CALLS)
    chunks = list(
        servers_clean.client().chat.completions.create(
            model="deepseek", messages=ASK, tools=TOOLS, stream=True
        )
    )
    deltas = [
        d.model_dump(exclude_none=True) for c in chunks for d in c.choices[0].delta.tool_calls or ()
    ]
    assert deltas[0] == {"index": 0, "id": "call_paris", "type": "function",
                         "function": {"name": "get_weather"}}  # fmt: skip
    assert deltas[1] == {"index": 0, "function": {"arguments": ARGS_PARIS[:2]}}
    joined = {0: "", 1: ""}
    for delta in deltas:
        joined[delta["index"]] += delta.get("function", {}).get("arguments", "")
    assert joined == {0: ARGS_PARIS, 1: ARGS_ZURICH}
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason]
    assert finishes == ["tool_calls"]
    assert chunks[-1].choices[0].delta.tool_calls  # the last piece rode on the finish chunk


def test_non_stream_tool_call_is_one_message(servers_clean: Servers) -> None:
    servers_clean.emulator.set_scenario("ep-deepseek", TWO_CALLS)
    response = servers_clean.client().chat.completions.create(
        model="deepseek", messages=ASK, tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )  # fmt: skip
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls or []
    assert [(c.id, c.type, c.function.name, c.function.arguments) for c in calls] == [
        ("call_paris", "function", "get_weather", ARGS_PARIS),
        ("call_zurich", "function", "get_weather", ARGS_ZURICH),
    ]
    assert _recorded_body(servers_clean)["tool_choice"] == {
        "type": "function", "function": {"name": "get_weather"}
    }  # fmt: skip


def test_agent_loop_call_result_answer(servers_clean: Servers) -> None:
    """The model calls a tool, the client runs it and sends the result back, the model answers;
    every turn of the history reaches the backend as OpenAI messages."""
    client = servers_clean.client()
    emulator = servers_clean.emulator
    emulator.set_scenario(
        "ep-deepseek",
        Scenario(content="", finish_reason="tool_calls", tool_calls=(
            ScriptedToolCall(name="get_weather", arguments='{"city": "Paris"}'),)),
    )  # fmt: skip
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.chat.completions.create(model="deepseek", messages=messages, tools=TOOLS)
    assistant = first.choices[0].message
    (call,) = assistant.tool_calls or []
    assert call.id.startswith("chatcmpl-tool-")  # vLLM's id, passed through
    messages.append(assistant)  # the SDK's own message object, as agent code appends it
    result = json.dumps({"temp_c": 21, "city": json.loads(call.function.arguments)["city"]})
    messages.append({"role": "tool", "tool_call_id": call.id, "content": result})

    emulator.set_scenario("ep-deepseek", Scenario(content="It is 21 °C in Paris."))
    with client.chat.completions.stream(model="deepseek", messages=messages, tools=TOOLS) as s:
        final = s.get_final_completion()
    assert final.choices[0].message.content == "It is 21 °C in Paris."
    assert final.choices[0].finish_reason == "stop"

    second = emulator.requests[-1].body
    assert second["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call.id, "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "content": result, "tool_call_id": call.id},
    ]  # fmt: skip


class Weather(BaseModel):
    city: str
    temp_c: int


def test_json_schema_response_format_is_forwarded_and_parsed(servers_clean: Servers) -> None:
    servers_clean.emulator.set_scenario(
        "ep-deepseek", Scenario(content_json={"city": "Paris", "temp_c": 21}, part_size=5)
    )
    completion = servers_clean.client().chat.completions.parse(
        model="deepseek", messages=ASK, response_format=Weather,
        reasoning_effort="low", seed=7,
    )  # fmt: skip
    assert completion.choices[0].message.parsed == Weather(city="Paris", temp_c=21)
    body = _recorded_body(servers_clean)
    response_format = body["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["name"] == "Weather"
    assert response_format["json_schema"]["strict"] is True
    assert set(response_format["json_schema"]["schema"]["properties"]) == {"city", "temp_c"}
    assert (body["reasoning_effort"], body["seed"]) == ("low", 7)


def test_logprobs_are_forwarded_relayed_and_aggregated(servers_clean: Servers) -> None:
    text = "Deep learning rocks."
    servers_clean.emulator.set_scenario("ep-deepseek", Scenario(content=text))
    client = servers_clean.client()
    response = client.chat.completions.create(
        model="deepseek", messages=ASK, logprobs=True, top_logprobs=2
    )
    logprobs = response.choices[0].logprobs
    assert logprobs is not None
    assert logprobs.content is not None
    assert "".join(e.token for e in logprobs.content) == text
    assert all(len(e.top_logprobs) == 2 for e in logprobs.content)
    body = servers_clean.emulator.requests[-1].body
    assert (body["logprobs"], body["top_logprobs"]) == (True, 2)

    chunks = list(
        client.chat.completions.create(model="deepseek", messages=ASK, logprobs=True, stream=True)
    )
    streamed = [
        entry.token
        for chunk in chunks
        if chunk.choices and chunk.choices[0].logprobs
        for entry in chunk.choices[0].logprobs.content or ()
    ]
    assert "".join(streamed) == text


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "buffered"])
def test_usage_details_reach_the_client_and_the_log_line(
    servers_clean: Servers, caplog: pytest.LogCaptureFixture, stream: bool
) -> None:
    caplog.set_level(logging.INFO)
    servers_clean.emulator.set_scenario(
        "ep-deepseek",
        Scenario(reasoning="Hmm.", content="Four.", prompt_tokens=40, cached_tokens=32,
                 reasoning_tokens=3),
    )  # fmt: skip
    client = servers_clean.client()
    if stream:
        options: Any = {"include_usage": True}
        chunks = list(
            client.chat.completions.create(
                model="deepseek", messages=ASK, stream=True, stream_options=options
            )
        )
        usage = chunks[-1].usage
    else:
        usage = client.chat.completions.create(model="deepseek", messages=ASK).usage
    assert usage is not None
    assert usage.prompt_tokens == 40
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 32
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 3
    (line,) = [r for r in caplog.records if r.getMessage() == "request"]
    assert (line.input_tokens, line.cached_tokens, line.reasoning_tokens) == (40, 32, 3)


def test_usage_without_details_has_none(
    servers_clean: Servers, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    usage = servers_clean.client().chat.completions.create(model="deepseek", messages=ASK).usage
    assert usage is not None
    assert usage.prompt_tokens_details is None
    assert usage.completion_tokens_details is None
    (line,) = [r for r in caplog.records if r.getMessage() == "request"]
    assert (line.cached_tokens, line.reasoning_tokens) == (None, None)


# --- refusals ---------------------------------------------------------------------------------

CALL = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
NATIVE_REFUSALS = [
    ("llama", {"tools": TOOLS}, "tools"),
    ("tgi", {"tools": TOOLS, "tool_choice": "auto"}, "tools"),
    ("llama", {"response_format": {"type": "json_object"}}, "response_format"),
    ("tgi", {"reasoning_effort": "high"}, "reasoning_effort"),
    ("llama", {"logprobs": True}, "logprobs"),
    ("tgi", {"messages": [*ASK, {"role": "assistant", "tool_calls": [CALL]},
                          {"role": "tool", "tool_call_id": "c1", "content": "21"}]},
     "messages[1].tool_calls"),
]  # fmt: skip


@pytest.mark.parametrize(("model", "fields", "param"), NATIVE_REFUSALS)
def test_prompt_in_backends_refuse_what_they_cannot_do(
    servers_clean: Servers, model: str, fields: dict[str, Any], param: str
) -> None:
    request: dict[str, Any] = {"model": model, "messages": ASK, **fields}
    with pytest.raises(openai.BadRequestError) as raised:
        servers_clean.client().chat.completions.create(**request)
    error = raised.value
    assert error.param == param
    assert f"'{param}' is not supported by model '{model}': its backend takes a plain prompt" in (
        error.message
    )
    assert servers_clean.emulator.requests == []  # refused before any model is invoked


def test_prompt_in_backends_accept_what_asks_for_nothing(servers_clean: Servers) -> None:
    response = servers_clean.client().chat.completions.create(
        model="llama", messages=ASK, tool_choice="none", response_format={"type": "text"},
        logprobs=False, seed=3,
    )  # fmt: skip
    assert response.choices[0].message.content
    assert _recorded_body(servers_clean)["parameters"]["seed"] == 3


def test_n_above_one_is_refused_with_the_reason(servers_clean: Servers) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        servers_clean.client().chat.completions.create(model="deepseek", messages=ASK, n=2)
    assert raised.value.param == "n"
    assert raised.value.code == "unsupported_value"
    assert "token quotas reserve output for one completion" in raised.value.message
    assert "the stream relay carries a single choice" in raised.value.message
    assert servers_clean.emulator.requests == []


def test_a_text_only_route_refuses_image_parts_naming_the_part(servers_clean: Servers) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        servers_clean.client().chat.completions.create(
            model="deepseek", messages=[{"role": "user", "content": [_image(PNG)]}]
        )
    assert raised.value.param == "messages[0].content[0].type"
    assert raised.value.code == "unsupported_value"
    assert "model 'deepseek': its model takes text only" in raised.value.message
    assert servers_clean.emulator.requests == []


# --- a route mixing formats: tools go to the backend that can take them -----------------------

MIXED = {
    "routes": [
        *ROUTES["routes"],
        {"model": "mixed", "backends": [
            {"name": "llama-2-13b-chat", "endpoint_name": "ep-llama", "format": "lmi",
             "prompt_template": "llama2", "max_tokens_default": 64},
            {"name": "deepseek-r1", "endpoint_name": "ep-deepseek", "format": "openai",
             "max_tokens_default": 64}]},
        {"model": "vision", "backends": [
            {"name": "deepseek-r1", "endpoint_name": "ep-deepseek", "format": "openai",
             "max_tokens_default": 64},
            {"name": "qwen-vl", "endpoint_name": "ep-vl", "format": "openai",
             "max_tokens_default": 64, "image_input": {"max_images": 2}}]},
    ]
}  # fmt: skip
PNG = (  # a 1×1 PNG
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+A8AAQUB"
    "AScY42YAAAAASUVORK5CYII="
)


def _image(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url, "detail": "low"}}


@pytest.fixture(scope="module")
def mixed_gateway(servers: Servers) -> Iterator[str]:
    settings = Settings.from_env({ROUTES_ENV: json.dumps(MIXED)})
    with serve_in_thread(create_app(settings, SageMakerInvoker.from_settings(settings))) as url:
        yield url


def test_a_mixed_route_sends_tool_requests_only_to_backends_that_take_tools(
    servers_clean: Servers, mixed_gateway: str
) -> None:
    servers_clean.emulator.set_scenario("ep-deepseek", TWO_CALLS)
    client = openai.OpenAI(base_url=f"{mixed_gateway}/v1", api_key="unused", max_retries=0)
    response = client.chat.completions.create(model="mixed", messages=ASK, tools=TOOLS)
    assert response.model == "deepseek-r1"
    assert [r.endpoint for r in servers_clean.emulator.requests] == ["ep-deepseek"]
    plain = client.chat.completions.create(model="mixed", messages=ASK)
    assert plain.model == "llama-2-13b-chat"  # without tools the first backend serves


@pytest.mark.parametrize("stream", [False, True])
def test_image_parts_go_only_to_the_backend_that_declares_image_input(
    servers_clean: Servers, mixed_gateway: str, stream: bool
) -> None:
    servers_clean.emulator.set_scenario("ep-vl", Scenario(content="A small red square."))
    client = openai.OpenAI(base_url=f"{mixed_gateway}/v1", api_key="unused", max_retries=0)
    parts = [{"type": "text", "text": "What is in this picture?"}, _image(PNG)]
    messages: Any = [{"role": "user", "content": parts}]
    if stream:
        chunks = list(
            client.chat.completions.create(model="vision", messages=messages, stream=True)
        )
        assert {c.model for c in chunks} == {"qwen-vl"}
    else:
        assert client.chat.completions.create(model="vision", messages=messages).model == "qwen-vl"
    (recorded,) = servers_clean.emulator.requests
    assert recorded.endpoint == "ep-vl"  # the first backend takes text only: skipped
    assert isinstance(recorded.body, dict)
    assert recorded.body["messages"] == [{"role": "user", "content": parts}]  # parts as sent
    servers_clean.emulator.clear_requests()
    text_only = client.chat.completions.create(model="vision", messages=ASK)
    assert text_only.model == "deepseek-r1"  # without images the route's order applies


@pytest.mark.parametrize(
    ("content", "param", "fragment"),
    [
        ([_image(PNG)] * 3, "messages[0].content[2]", "takes at most 2 image(s) per request"),
        ([_image("https://example.com/cat.png")], "messages[0].content[0].image_url.url",
         "takes images as base64 data URLs only"),
    ],
)  # fmt: skip
def test_a_vision_backend_refuses_images_beyond_its_config(
    servers_clean: Servers, mixed_gateway: str, content: Any, param: str, fragment: str
) -> None:
    client = openai.OpenAI(base_url=f"{mixed_gateway}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(
            model="vision", messages=[{"role": "user", "content": content}]
        )
    assert raised.value.param == param
    assert fragment in raised.value.message
    assert servers_clean.emulator.requests == []
