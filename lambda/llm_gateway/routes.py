"""Transitional: the routing table lives in :mod:`llm_gateway.contract`."""

from llm_gateway.contract import (
    ROUTES_ENV,
    Backend,
    PromptTemplate,
    Route,
    RouteTable,
    StreamFormat,
)

__all__ = ["ROUTES_ENV", "Backend", "PromptTemplate", "Route", "RouteTable", "StreamFormat"]
