"""Which backends take a request's image parts (their config's ``image_input``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llm_gateway.errors import GatewayError, invalid_request
from llm_gateway.request_errors import clip

if TYPE_CHECKING:
    from llm_gateway.contract import Backend
    from llm_gateway.request import ChatRequest

TEXT_ONLY = "its model takes text only (no image_input in its config)"


def image_refusal(request: ChatRequest, backend: Backend, why: str) -> GatewayError | None:
    """The 400 for image parts ``backend`` cannot take (``why`` says why it takes none), or
    None. The param names the first image part that is one too many or not allowed."""
    accepts = backend.image_input
    seen = 0
    model = clip(request.model)
    for m, message in enumerate(request.messages):
        if not message.images:
            continue
        assert isinstance(message.content, list)  # only parts carry images
        for p, part in enumerate(message.content):
            if part.image_url is None:
                continue
            param = f"messages[{m}].content[{p}]"
            if accepts is None:
                return invalid_request(
                    f"Unsupported value: '{param}.type' does not support 'image_url' with model"
                    f" '{model}': {why}.",
                    param=f"{param}.type",
                    code="unsupported_value",
                )
            seen += 1
            if seen > accepts.max_images:
                return invalid_request(
                    f"Invalid '{param}': model '{model}' takes at most {accepts.max_images}"
                    f" image(s) per request.",
                    param=param,
                    code="invalid_value",
                )
            if part.image_url.remote and not accepts.remote_urls:
                return invalid_request(
                    f"Invalid '{param}.image_url.url': model '{model}' takes images as base64"
                    " data URLs only (data:image/png;base64,...), not remote URLs.",
                    param=f"{param}.image_url.url",
                    code="invalid_value",
                )
    return None
