"""Who may call, and how much: consumers (by API Gateway API key id) and their tiers.

Synth writes this table into ``LLM_GATEWAY_CONSUMERS`` from ``gateway.yaml``; the key ids are
the ones API Gateway generated, resolved by CloudFormation at deploy time.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

CONSUMERS_ENV = "LLM_GATEWAY_CONSUMERS"
QUOTA_TABLE_ENV = "LLM_GATEWAY_QUOTA_TABLE"
# Local runs only (no API Gateway, so no request context): act as this consumer.
LOCAL_CONSUMER_ENV = "LLM_GATEWAY_LOCAL_CONSUMER"


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Tier(_Frozen):
    """Token quotas of a tier (request quotas and rates are API Gateway's usage plans)."""

    name: str = Field(min_length=1, max_length=64)
    tokens_per_day: int | None = Field(None, gt=0, description="None: no daily token quota.")
    tokens_per_month: int | None = Field(None, gt=0, description="None: no monthly token quota.")
    default_reservation: int = Field(
        gt=0, description="Output tokens allowed (and reserved) when a request sets none."
    )


class Consumer(_Frozen):
    name: str = Field(min_length=1, max_length=64)
    tier: str
    routes: tuple[str, ...] | None = Field(
        None, description="Model aliases this consumer may call; None: all of them."
    )

    def may_use(self, model: str) -> bool:
        return self.routes is None or model in self.routes


class ConsumerTable(_Frozen):
    tiers: tuple[Tier, ...] = Field(min_length=1)
    consumers: dict[str, Consumer] = Field(description="API Gateway API key id → consumer.")

    @model_validator(mode="after")
    def _tiers_exist(self) -> ConsumerTable:
        names = {tier.name for tier in self.tiers}
        for consumer in self.consumers.values():
            if consumer.tier not in names:
                raise ValueError(f"consumer {consumer.name!r} has unknown tier {consumer.tier!r}")
        return self

    def tier(self, name: str) -> Tier:
        return next(tier for tier in self.tiers if tier.name == name)

    def by_name(self, name: str) -> Consumer | None:
        return next((c for c in self.consumers.values() if c.name == name), None)
