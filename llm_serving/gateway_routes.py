"""The gateway's routes as construct props: which endpoints serve a model alias, and how the
construct turns them into the wire contract's routing table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pydantic import ConfigDict, Field

from llm_gateway.contract import (
    Backend,
    CachePolicy,
    Cooldown,
    GuardrailPolicy,
    RoutePolicy,
    RouteTable,
)
from llm_serving import gateway_tables as tables
from llm_serving.component import LlmInferenceComponent
from llm_serving.config.gateway import GatewayConfig
from llm_serving.endpoint import LlmEndpoint
from llm_serving.existing_endpoint import ExistingEndpoint
from llm_serving.gateway_tables import BackendTarget, contract_fields
from llm_serving.guardrail import ContentGuardrail

Endpoint = LlmEndpoint | LlmInferenceComponent | ExistingEndpoint
"""What a route can send requests to: an endpoint or inference component this app deploys, or
an endpoint it only names."""


@dataclass(frozen=True)
class RouteBackend:
    """One backend of a route: an endpoint and its optional canary weight (0–1000; the wire
    contract's ``Backend`` checks it when the routing table is built)."""

    endpoint: Endpoint
    weight: int | None = None

    def contract(self) -> Backend:
        """The routing table's entry for this backend."""
        if isinstance(self.endpoint, ExistingEndpoint | LlmInferenceComponent):
            return self.endpoint.backend(self.weight)
        target = BackendTarget(self.endpoint.config, self.endpoint.endpoint_name, self.weight)
        return tables.backend(target)


class GatewayRoute(RoutePolicy):
    """The endpoints that serve one model alias, in fallback order, and how they are tried
    (:class:`~llm_gateway.contract.RoutePolicy`: ``first_byte_timeout_s``, ``max_attempts``,
    ``sticky``).

    The first attempt goes to a backend chosen by weight among the weighted ones (or to the
    first backend when none has a weight); later attempts follow the listed order, at most
    ``max_attempts`` in all, each failing if no first token arrives within
    ``first_byte_timeout_s``. ``sticky`` fixes the weighted choice per consumer.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    backends: tuple[RouteBackend, ...] = Field(min_length=1)
    guardrail: ContentGuardrail | None = Field(
        None, description="Check prompts and answers with this guardrail; None: no checks."
    )
    guardrail_policy: GuardrailPolicy = Field(
        default_factory=GuardrailPolicy, description="How ``guardrail`` is applied."
    )
    cache: CachePolicy | None = Field(None, description="Cache answers; None: no cache.")

    @classmethod
    def to(cls, *endpoints: Endpoint) -> GatewayRoute:
        """Unweighted backends, tried in this order; default deadline and attempts."""
        return cls(backends=tuple(RouteBackend(endpoint) for endpoint in endpoints))


RoutesArg = Mapping[str, GatewayRoute | Endpoint | Sequence[Endpoint]]
"""Model alias → a :class:`GatewayRoute`, one endpoint, or endpoints in fallback order."""


def routes_from_config(
    config: GatewayConfig,
    endpoints: Mapping[str, Endpoint],
    guardrails: Mapping[str, ContentGuardrail] | None = None,
) -> dict[str, GatewayRoute]:
    """``config``'s routes (one per endpoint, named after it, when it has none) with model
    config names resolved to ``endpoints`` (model config name → endpoint) and guardrail names
    to ``guardrails``. Call :meth:`GatewayConfig.check_models` first: a backend
    that is not in ``endpoints`` is an error here."""
    routes: dict[str, GatewayRoute] = {}
    for route in config.effective_routes(list(endpoints)):
        backends = []
        for backend in route.backends:
            if backend.model not in endpoints:
                raise ValueError(
                    f"route {route.model!r}: backend {backend.model!r} is not among the "
                    f"endpoints {sorted(endpoints)}"
                )
            backends.append(RouteBackend(endpoints[backend.model], backend.weight))
        policy = contract_fields(route, RoutePolicy)
        guarded: dict[str, object] = {}
        if route.guardrail is not None:
            if guardrails is None or route.guardrail.name not in guardrails:
                raise ValueError(
                    f"route {route.model!r}: guardrail {route.guardrail.name!r} was not built"
                )
            guarded = {
                "guardrail": guardrails[route.guardrail.name],
                "guardrail_policy": GuardrailPolicy(
                    **contract_fields(route.guardrail, GuardrailPolicy)
                ),
            }
        routes[route.model] = GatewayRoute(
            backends=tuple(backends), cache=route.cache, **guarded, **policy
        )
    return routes


def resolve_routes(
    config: GatewayConfig,
    endpoints: Mapping[str, Endpoint] | None,
    routes: RoutesArg | None,
    guardrails: Mapping[str, ContentGuardrail] | None = None,
) -> RoutesArg:
    """The routes, said once: from ``endpoints`` (with ``config.routes``) or ``routes``."""
    if (endpoints is None) == (routes is None):
        raise ValueError(
            "StreamingGateway: give exactly one of endpoints= (routes from config.routes, or "
            "one per endpoint) and routes= (explicit routes)"
        )
    if routes is not None:
        if config.routes is not None:
            raise ValueError(
                "StreamingGateway: routes= and config.routes both say what to route; fix: pass "
                "endpoints= to use config.routes, or leave config.routes unset"
            )
        return routes
    assert endpoints is not None
    return routes_from_config(config, endpoints, guardrails)


def typed_routes(routes: RoutesArg) -> dict[str, GatewayRoute]:
    if not routes:
        raise ValueError("StreamingGateway needs at least one route (model alias → endpoints)")
    typed: dict[str, GatewayRoute] = {}
    for alias, route in routes.items():
        if isinstance(route, GatewayRoute):
            typed[alias] = route
        elif isinstance(route, Endpoint):
            typed[alias] = GatewayRoute.to(route)
        elif isinstance(route, Sequence) and not isinstance(route, str):
            if not route:
                raise ValueError(f"route {alias!r} has no endpoints; give it at least one")
            wrong = [type(e).__name__ for e in route if not isinstance(e, Endpoint)]
            if wrong:
                raise ValueError(f"route {alias!r}: {_EXPECTED}, got a list holding {wrong}")
            typed[alias] = GatewayRoute.to(*route)
        else:
            raise ValueError(f"route {alias!r}: {_EXPECTED}, got {type(route).__name__}")
    return typed


_EXPECTED = (
    "expected an LlmEndpoint, LlmInferenceComponent or ExistingEndpoint, a list of them (fallback "
    "order) or a GatewayRoute"
)


def build_route_table(routes: RoutesArg, fallback: Cooldown | None = None) -> RouteTable:
    """The table the function reads from ``LLM_GATEWAY_ROUTES`` (the contract's model), with
    ``fallback``'s cooldown (default: the contract's)."""
    return tables.route_table(
        [
            tables.route(
                alias,
                [b.contract() for b in gateway_route.backends],
                gateway_route,
                guardrail=(
                    gateway_route.guardrail.ref(gateway_route.guardrail_policy)
                    if gateway_route.guardrail is not None
                    else None
                ),
                cache=gateway_route.cache,
            )
            for alias, gateway_route in typed_routes(routes).items()
        ],
        fallback or Cooldown(),
    )


def unique_endpoints(routes: Mapping[str, GatewayRoute]) -> list[Endpoint]:
    unique: dict[str, Endpoint] = {}
    for route in routes.values():
        for backend in route.backends:
            unique.setdefault(backend.endpoint.node.path, backend.endpoint)
    return list(unique.values())


def unique_guardrails(routes: Mapping[str, GatewayRoute]) -> list[ContentGuardrail]:
    """The guardrails ``routes`` apply, each once."""
    unique: dict[str, ContentGuardrail] = {}
    for route in routes.values():
        if route.guardrail is not None:
            unique.setdefault(route.guardrail.node.path, route.guardrail)
    return list(unique.values())
