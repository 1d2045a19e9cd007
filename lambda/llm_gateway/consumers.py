"""Transitional: the consumer table lives in :mod:`llm_gateway.contract`."""

from llm_gateway.contract import (
    CONSUMERS_ENV,
    LOCAL_CONSUMER_ENV,
    QUOTA_TABLE_ENV,
    Consumer,
    ConsumerTable,
    Tier,
)

__all__ = [
    "CONSUMERS_ENV",
    "LOCAL_CONSUMER_ENV",
    "QUOTA_TABLE_ENV",
    "Consumer",
    "ConsumerTable",
    "Tier",
]
