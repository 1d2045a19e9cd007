"""What a request reserves before the backend reports usage: images count per the route's
``image_input``, text by its UTF-8 size."""

from __future__ import annotations

import json

from llm_gateway.admission import prompt_estimate, reserved_output
from llm_gateway.contract import Backend, ImageInput, Route
from llm_gateway.request import parse_chat_request

PNG = "data:image/png;base64,iVBORw0KGgo="


def _backend(name: str, tokens_per_image: int | None) -> Backend:
    image_input = (
        None if tokens_per_image is None else ImageInput(tokens_per_image=tokens_per_image)
    )
    return Backend(name=name, endpoint_name=f"ep-{name}", format="openai", max_tokens_default=64,
                   max_model_len=8192, image_input=image_input)  # fmt: skip


ROUTE = Route(model="m", backends=(_backend("text", None), _backend("small", 600),
                                   _backend("large", 1500)))  # fmt: skip


def _request(content: object) -> bytes:
    return json.dumps({"model": "m", "messages": [{"role": "user", "content": content}]}).encode()


def test_text_counts_three_bytes_per_token_plus_the_message_overhead() -> None:
    assert prompt_estimate(parse_chat_request(_request("x" * 30)), ROUTE) == 10 + 4


def test_each_image_reserves_the_most_any_backend_of_the_route_would_use() -> None:
    image = {"type": "image_url", "image_url": {"url": PNG}}
    parts = [{"type": "text", "text": "x" * 30}, image, image]
    request = parse_chat_request(_request(parts))
    assert prompt_estimate(request, ROUTE) == 10 + 4 + 2 * 1500
    assert reserved_output(10_000, prompt_estimate(request, ROUTE), ROUTE) == 8192 - 3014
