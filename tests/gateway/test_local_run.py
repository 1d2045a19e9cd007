"""`make local` and the README's examples against it work as written."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from local.serving import free_port
from tests.conftest import ROOT


def _example(name: str) -> str:
    readme = (ROOT / "README.md").read_text()
    match = re.search(rf"<!-- example: {name} -->\n```\w+\n(.*?)```", readme, re.DOTALL)
    assert match is not None, f"README example {name} not found"
    return match.group(1)


@contextmanager
def _local_run(*extra: str) -> Iterator[str]:
    """``python -m local.run`` (what ``make local`` runs) on free ports; yields the base URL."""
    port, emulator_port = free_port(), free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "local.run", "--port", str(port),
         "--emulator-port", str(emulator_port), "--token-delay-ms", "1", *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'lambda'}"},
    )  # fmt: skip
    assert process.stdout is not None
    output: list[str] = []
    for line in process.stdout:
        output.append(line)
        if line.startswith("ready:"):
            break
    else:
        pytest.fail("local.run exited before it was ready:\n" + "".join(output))
    # Keep reading so a chatty server never blocks on a full pipe.
    threading.Thread(target=output.extend, args=(process.stdout,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl-C, as a person stops it
        started = time.monotonic()
        try:
            code = process.wait(timeout=60)  # 1.4 s alone; far longer on a starved CI core
        except subprocess.TimeoutExpired:
            process.kill()
            pytest.fail("local.run did not stop within 60 s of Ctrl-C:\n" + "".join(output[-30:]))
        assert code == 0, f"exit {code} after {time.monotonic() - started:.1f} s"
        for freed in (port, emulator_port):  # both servers are gone: nothing listens
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is fine
                sock.bind(("127.0.0.1", freed))


@pytest.fixture(scope="module")
def local_gateway() -> Iterator[str]:
    with _local_run() as url:
        yield url


def test_readme_curl_example_streams_reasoning_then_content(local_gateway: str) -> None:
    command = _example("local-curl").replace("http://127.0.0.1:8080", local_gateway)
    result = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    events = [e for e in result.stdout.split("\n\n") if e.startswith("data: ")]
    assert '"reasoning_content"' in events[0]
    assert any('"content"' in e for e in events)
    assert events[-1] == "data: [DONE]"


def test_readme_openai_example_prints_the_answer(local_gateway: str) -> None:
    code = _example("local-openai").replace("http://127.0.0.1:8080", local_gateway)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert "local emulator" in result.stdout  # the scripted answer
    assert re.search(r"\[\d+ completion tokens\]", result.stdout)


def test_every_configured_model_is_served(local_gateway: str) -> None:
    import openai

    client = openai.OpenAI(base_url=f"{local_gateway}/v1", api_key="default", max_retries=0)
    models = [m.id for m in client.models.list().data]
    assert models == ["deepseek-r1-distill-qwen-7b", "llama-2-13b-chat"]
    for model in models:
        reply = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Hi"}]
        )
        assert reply.choices[0].finish_reason == "stop"
        assert reply.choices[0].message.content


def test_keys_arrive_as_the_deployed_api_takes_them(local_gateway: str) -> None:
    """Locally, keys are consumer names, read from ``Authorization: Bearer`` (the openai SDK's
    api_key) or ``x-api-key``, by the same function as the deployed key authorizer."""
    import httpx2 as httpx
    import openai

    chat = {"model": "deepseek-r1-distill-qwen-7b", "messages": [{"role": "user", "content": "hi"}]}
    client = openai.OpenAI(base_url=f"{local_gateway}/v1", api_key="default")
    assert client.chat.completions.create(**chat).choices[0].message.content  # type: ignore[call-overload]
    with pytest.raises(openai.AuthenticationError) as raised:
        openai.OpenAI(base_url=f"{local_gateway}/v1", api_key="nobody").models.list()
    assert raised.value.code == "invalid_api_key"
    response = httpx.post(
        f"{local_gateway}/v1/chat/completions", json=chat, headers={"x-api-key": "default"}
    )
    assert response.status_code == 200, response.text
    unknown = httpx.post(
        f"{local_gateway}/v1/chat/completions", json=chat, headers={"x-api-key": "nobody"}
    )
    assert unknown.status_code == 401


def test_a_tool_calling_agent_loop_runs_through_make_local(local_gateway: str) -> None:
    """An agent loop as agents write it: the model calls a tool, the client runs it and sends
    the result, the model answers; only base_url and api_key configured."""
    import json

    import openai

    client = openai.OpenAI(base_url=f"{local_gateway}/v1", api_key="default", max_retries=0)
    tools: Any = [
        {"type": "function", "function": {
            "name": "get_weather", "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
    ]  # fmt: skip
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    for _ in range(3):
        reply = client.chat.completions.create(
            model="deepseek-r1-distill-qwen-7b", messages=messages, tools=tools
        )
        message = reply.choices[0].message
        if not message.tool_calls:
            break
        assert reply.choices[0].finish_reason == "tool_calls"
        messages.append(message)
        for call in message.tool_calls:
            assert call.function.name == "get_weather"
            json.loads(call.function.arguments)
            result = json.dumps({"city": "Paris", "temp_c": 21})
            messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
    assert [m["role"] if isinstance(m, dict) else m.role for m in messages] == [
        "user",
        "assistant",
        "tool",
    ]
    assert message.content == 'The tool said: {"city": "Paris", "temp_c": 21}'


def test_a_langchain_chat_model_with_bind_tools(local_gateway: str) -> None:
    """LangChain's ChatOpenAI, configured like any OpenAI endpoint, calls tools through the
    gateway and reads the answer after the tool result."""
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def get_weather(city: str) -> str:
        """Weather in a city."""
        return f"21 °C in {city}"

    model = ChatOpenAI(
        base_url=f"{local_gateway}/v1", api_key="default",  # type: ignore[arg-type]
        model="deepseek-r1-distill-qwen-7b", max_retries=0,
    ).bind_tools([get_weather])  # fmt: skip
    messages: list[Any] = [HumanMessage("Weather in Paris?")]
    first = model.invoke(messages)
    (call,) = first.tool_calls  # type: ignore[attr-defined]
    assert call["name"] == "get_weather"
    messages += [first, ToolMessage(get_weather.invoke({"city": "Paris"}), tool_call_id=call["id"])]
    answer = model.invoke(messages)
    assert answer.content == "The tool said: 21 °C in Paris"


def test_make_local_turns_on_a_guardrail_and_the_cache() -> None:
    """``--guardrail-block-words`` (the local ApplyGuardrail stand-in) and ``--cache`` (a table
    in the local DynamoDB) on every route."""
    import httpx2 as httpx

    guardrail_port = free_port()
    with _local_run("--guardrail-block-words", "forbidden,secret", "--cache",
                    "--guardrail-port", str(guardrail_port)) as url:  # fmt: skip
        model = "deepseek-r1-distill-qwen-7b"
        blocked = httpx.post(f"{url}/v1/chat/completions", headers={"x-api-key": "default"},
                             json={"model": model, "messages": [
                                 {"role": "user", "content": "Tell me the secret"}]})  # fmt: skip
        assert blocked.status_code == 400
        assert blocked.json()["error"]["code"] == "content_filter"
        ask = {"model": model, "temperature": 0, "messages": [{"role": "user", "content": "Hi"}]}
        first, second = (
            httpx.post(f"{url}/v1/chat/completions", headers={"x-api-key": "default"}, json=ask)
            for _ in range(2)
        )
        assert (first.headers["x-llm-cache"], second.headers["x-llm-cache"]) == ("miss", "hit")
        assert second.json()["choices"] == first.json()["choices"]
        checks = httpx.get(f"http://127.0.0.1:{guardrail_port}/_guardrail/requests").json()
        assert [c["source"] for c in checks] == ["INPUT", "INPUT", "OUTPUT", "INPUT"]
