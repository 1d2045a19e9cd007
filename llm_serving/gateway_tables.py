"""The gateway function's two tables, built from the typed configs by pure functions.

The tables are the wire contract's own models (:mod:`llm_gateway.contract`): what the function
receives in ``LLM_GATEWAY_ROUTES`` / ``LLM_GATEWAY_CONSUMERS`` is ``model_dump`` of the very
objects the runtime parses, so the two sides cannot drift. ``StreamingGateway``, ``make local``,
the benchmarks and the tests all build them here. No construct is created.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from llm_gateway.contract import (
    Backend,
    CachePolicy,
    Consumer,
    ConsumerTable,
    Cooldown,
    GuardrailPolicy,
    GuardrailRef,
    Route,
    RoutePolicy,
    RouteTable,
    Tier,
    TokenQuota,
)
from llm_serving.config.gateway import ConsumerConfig, GatewayConfig, RouteConfig, TierConfig
from llm_serving.config.schema import ComponentHosting, ModelConfig


@dataclass(frozen=True)
class BackendTarget:
    """A route's backend resolved to its model config and endpoint name."""

    config: ModelConfig
    endpoint_name: str
    weight: int | None = None
    inference_component_name: str | None = None
    """Set for ``hosting.mode: component``: the component on the (shared) endpoint."""


def backend(target: BackendTarget) -> Backend:
    """How the function talks to one endpoint (or inference component), from its config."""
    config = target.config
    component = target.inference_component_name
    hosting = config.hosting
    return Backend(
        inference_component_name=component,
        retry_after_s=(
            hosting.retry_after_s
            if component is not None and isinstance(hosting, ComponentHosting)
            else None
        ),
        name=config.name,
        endpoint_name=target.endpoint_name,
        format=config.stream_format,
        prompt_template=config.gateway.prompt_template,
        custom_attributes=config.custom_attributes,
        max_tokens_default=config.gateway.max_tokens_default,
        max_model_len=config.container.max_model_len,
        weight=target.weight,
        image_input=config.gateway.image_input,
    )


def route(
    alias: str,
    backends: Sequence[Backend],
    policy: RoutePolicy,
    *,
    guardrail: GuardrailRef | None = None,
    cache: CachePolicy | None = None,
) -> Route:
    """One route; the contract validates it (at least one backend, weights, limits)."""
    return Route(
        model=alias,
        backends=tuple(backends),
        guardrail=guardrail,
        cache=cache,
        **contract_fields(policy, RoutePolicy),
    )


def local_guardrail(config: RouteConfig, gateway: GatewayConfig) -> GuardrailRef | None:
    """A route's guardrail for runs without AWS (``make local``): referenced guardrails by
    their id and version, created ones by their name and version ``1`` (what a local
    ApplyGuardrail stand-in answers for)."""
    if config.guardrail is None:
        return None
    defined = gateway.guardrails[config.guardrail.name]
    return GuardrailRef(
        guardrail_id=defined.guardrail_id or config.guardrail.name,
        guardrail_version=defined.version or "1",
        **contract_fields(config.guardrail, GuardrailPolicy),
    )


def route_table(routes: Sequence[Route], cooldown: Cooldown) -> RouteTable:
    return RouteTable(routes=tuple(routes), **contract_fields(cooldown, Cooldown))


def consumer_table(
    tiers: Mapping[str, TierConfig],
    consumers: Sequence[ConsumerConfig],
    *,
    key_ids: Mapping[str, str] | None = None,
) -> ConsumerTable:
    """Consumers keyed by their API key id (``key_ids``: consumer name → id, CloudFormation
    tokens at synth); by their names when ``key_ids`` is None (local runs: no API Gateway)."""
    ids = key_ids if key_ids is not None else {c.name: c.name for c in consumers}
    return ConsumerTable(
        tiers=tuple(
            Tier(name=name, **contract_fields(tier, TokenQuota)) for name, tier in tiers.items()
        ),
        consumers={
            ids[c.name]: Consumer(name=c.name, tier=c.tier, routes=c.routes) for c in consumers
        },
    )


def tables_from_configs(
    models: Sequence[ModelConfig],
    gateway: GatewayConfig,
    *,
    endpoint_names: Mapping[str, str] | None = None,
) -> tuple[RouteTable, ConsumerTable]:
    """Both tables from the configs alone: ``gateway.routes`` (or one route per model),
    each backend's endpoint named by ``endpoint_names`` (model config name → endpoint name;
    default: the model config name, as ``make local``'s emulator serves them), consumers
    keyed by name."""
    by_name = {m.name: m for m in models}
    names = endpoint_names or {}
    routes = [
        route(
            config.model,
            [_local_backend(by_name[b.model], names, b.weight) for b in config.backends],
            config,
            guardrail=local_guardrail(config, gateway),
            cache=config.cache,
        )
        for config in gateway.effective_routes(list(by_name))
    ]
    return (
        route_table(routes, gateway.fallback),
        consumer_table(gateway.tiers, gateway.consumers),
    )


def _local_backend(config: ModelConfig, names: Mapping[str, str], weight: int | None) -> Backend:
    """Without AWS: an endpoint named after its model config, or, for a component, the shared
    endpoint's name with the component named after its model config."""
    hosting = config.hosting
    if isinstance(hosting, ComponentHosting):
        endpoint = names.get(config.name, hosting.endpoint_name)
        return backend(BackendTarget(config, endpoint, weight, config.name))
    return backend(BackendTarget(config, names.get(config.name, config.name), weight))


def contract_fields(source: BaseModel, shape: type[BaseModel]) -> dict[str, Any]:
    """The values of ``shape``'s fields (a contract base class, e.g. ``RoutePolicy``) taken
    from ``source`` (a model that extends it)."""
    return {name: getattr(source, name) for name in shape.model_fields}
