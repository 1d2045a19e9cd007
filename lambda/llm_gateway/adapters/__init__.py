"""Backend stream formats → :class:`Delta`; OpenAI requests → backend request bodies."""

from __future__ import annotations

from llm_gateway.adapters.base import Delta, InBandError, StreamAdapter, Usage
from llm_gateway.adapters.native import LmiAdapter, TgiAdapter
from llm_gateway.adapters.openai import OpenAIAdapter
from llm_gateway.contract import StreamFormat

__all__ = ["Delta", "InBandError", "StreamAdapter", "Usage", "adapter_for"]


def adapter_for(fmt: StreamFormat) -> StreamAdapter:
    """A fresh adapter for one request."""
    if fmt == "openai":
        return OpenAIAdapter()
    if fmt == "lmi":
        return LmiAdapter()
    return TgiAdapter()
