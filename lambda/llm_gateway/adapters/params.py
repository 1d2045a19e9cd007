"""Sampling parameters shared by the formats that take OpenAI's names."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llm_gateway.request import ChatRequest


def sampling_params(request: ChatRequest) -> dict[str, Any]:
    """temperature, top_p, penalties and seed, only where the client set them."""
    params = {
        "temperature": request.temperature,
        "top_p": request.top_p,
        "presence_penalty": request.presence_penalty,
        "frequency_penalty": request.frequency_penalty,
        "seed": request.seed,
    }
    return {key: value for key, value in params.items() if value is not None}
