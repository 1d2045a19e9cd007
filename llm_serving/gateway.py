"""StreamingGateway: an OpenAI-compatible streaming REST API in front of SageMaker endpoints.

This module composes the gateway; its parts live beside it: ``gateway_routes`` (route props
→ routing table), ``gateway_function`` (the function and its environment), ``gateway_api``
(the REST API), ``gateway_tables`` (the wire contract's tables), ``quota_table``, ``logs_key``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from aws_cdk import CfnOutput, Stack, Token
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from constructs import Construct

from llm_gateway.contract import (
    CACHE_TABLE_ENV,
    CONSUMERS_ENV,
    METRIC_NAMESPACE,
    ConsumerTable,
    RouteTable,
)
from llm_serving import gateway_api, gateway_function
from llm_serving._nag import acknowledge
from llm_serving.component import LlmInferenceComponent
from llm_serving.config.gateway import (
    LOG_RETENTION_DAYS,
    NAME_PATTERN,
    ConsumerConfig,
    GatewayConfig,
    pascal_case,
)
from llm_serving.endpoint import LlmEndpoint
from llm_serving.gateway_authorizer import key_authorizer
from llm_serving.gateway_routes import (
    Endpoint,
    GatewayRoute,
    RouteBackend,
    RoutesArg,
    build_route_table,
    resolve_routes,
    routes_from_config,
    typed_routes,
    unique_endpoints,
    unique_guardrails,
)
from llm_serving.gateway_tables import consumer_table
from llm_serving.guardrail import ContentGuardrail
from llm_serving.logs_key import LogPolicy, logs_key
from llm_serving.quota_table import QuotaTable
from llm_serving.response_cache_table import ResponseCacheTable
from llm_serving.stage import Stage, StagePolicy

__all__ = ["GatewayRoute", "RouteBackend", "RoutesArg", "StreamingGateway", "routes_from_config"]

# Usage-plan keys get logical ids from their API key, not from the order they were added in.
_ORDER_INSENSITIVE_KEYS = "@aws-cdk/aws-apigateway:usagePlanKeyOrderInsensitiveId"

RETENTION_BY_DAYS: dict[int, logs.RetentionDays] = dict(
    zip(
        LOG_RETENTION_DAYS,
        [r for r in logs.RetentionDays if r is not logs.RetentionDays.INFINITE],
        strict=True,
    )
)


class StreamingGateway(Construct):
    """An OpenAI-compatible chat completions API that streams from SageMaker endpoints.

    API Gateway REST API (Regional) → Lambda (Python, Lambda Web Adapter, response streaming)
    → ``InvokeEndpointWithResponseStream``. ``POST /v1/chat/completions`` and
    ``GET /v1/models`` proxy to the function with ``ResponseTransferMode: STREAM`` and a
    15-minute timeout; both require an API key (``x-api-key``). API Gateway checks the request
    body's basic shape and answers its own errors in OpenAI's ``{"error": {...}}`` format.

    The routes map each model alias clients send as ``model`` to the endpoints that serve it
    (fallback order, canary weights, first-token deadline, attempts), said once: either
    ``endpoints`` with ``config.routes`` (or one route per endpoint), or explicit ``routes``
    (:class:`GatewayRoute`). The construct writes that table and ``config.fallback`` into
    ``LLM_GATEWAY_ROUTES`` and grants the function ``sagemaker:InvokeEndpoint`` on exactly
    those endpoints.

    Consumers and tiers (``config.tiers``, ``config.consumers``; more with
    :meth:`add_consumer`): one usage plan per tier (throttle, and a daily or monthly request
    quota), bound to the stage; one API key per consumer (AWS generates the value, never in the
    template) in its tier's plan. ``LLM_GATEWAY_CONSUMERS`` maps each key's id (resolved at
    deploy time) to the consumer, its tier's token quotas and allowed routes; the function
    counts tokens in :attr:`quota_table` (``LLM_GATEWAY_QUOTA_TABLE``) with item-level access
    to that table only.

    Logging: the function's log group, JSON access logs and INFO execution logs (data trace
    off: prompts are never logged) all keep the stage's retention (14 days in dev, a year in
    prod) unless ``config.function.log_retention_days`` is set. Execution logging needs API
    Gateway's account-level CloudWatch role, which this construct leaves alone by default: it
    is one setting per account and region (the last stack to set it wins), usually made once
    by whoever runs the account. Where the account has none, deploying the stage fails; set
    ``config.api.account_cloudwatch_role`` to have this construct set it (the role is
    retained when the stack is deleted, so that other APIs keep logging).

    ``stage`` (required, as for every construct here): ``dev`` removes the logs and the quota
    table with the stack; ``prod`` retains them and protects the table from deletion.

    The stack's region must be concrete: it selects the Lambda Web Adapter layer.

    Exposes ``function``, ``role``, ``log_group``, ``api``, ``access_log_group``,
    ``usage_plans`` (tier → plan), ``api_keys`` (consumer → key), ``consumers`` (consumer →
    config), ``quota_table``, ``route_table`` (the contract's :class:`RouteTable` in
    ``LLM_GATEWAY_ROUTES``), ``url`` (the OpenAI base URL, ``…/api/v1``), and
    ``metric_namespace`` / ``service_name``: the function's metrics
    (``POWERTOOLS_METRICS_NAMESPACE`` / ``POWERTOOLS_SERVICE_NAME``, the ``service``
    dimension: the stack's name) that :class:`InferenceDashboard` charts, and
    :attr:`api_key_ids`, ``guardrails`` (name → :class:`ContentGuardrail`, those
    ``config.routes`` apply) and ``cache_table`` (a :class:`ResponseCacheTable` when a route
    caches answers, else None). RestApi's own ``Endpoint`` output (the stage URL, without
    ``/v1``) is removed; with ``outputs=True`` the construct adds ``ApiUrl`` and one
    ``ApiKeyId<Consumer>`` per consumer instead.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: GatewayConfig,
        stage: Stage,
        endpoints: Mapping[str, Endpoint] | None = None,
        routes: RoutesArg | None = None,
        outputs: bool = False,
        vpc: ec2.IVpc | None = None,
        vpc_subnets: ec2.SubnetSelection | None = None,
        security_groups: Sequence[ec2.ISecurityGroup] | None = None,
    ) -> None:
        """
        :param config: the gateway config (``gateway.yaml``): tiers, consumers, limits,
            function and API settings, fallback cooldown, observability, and its ``routes``.
        :param stage: data lifetimes (``dev``/``prod``), as for every construct here.
        :param endpoints: model config name → endpoint. The routes are then ``config.routes``
            (their backends name model configs) or, when it is unset, one route per endpoint
            named after it.
        :param routes: instead of ``endpoints``, the routes themselves (alias → a
            :class:`GatewayRoute`, one endpoint, or endpoints in fallback order);
            ``config.routes`` must then be unset. Give exactly one of ``endpoints`` and
            ``routes``. Endpoints are ``LlmEndpoint`` s or :class:`ExistingEndpoint` s (an
            endpoint deployed elsewhere, by name and stream format).
        :param outputs: add stack outputs ``ApiUrl`` (the OpenAI base URL) and
            ``ApiKeyId<Consumer>`` per consumer (ids, never key values). Default: False (the
            attributes are there to output as you like).
        :param vpc: run the function in this VPC. It then reaches the SageMaker runtime and
            DynamoDB through the VPC: interface endpoint ``sagemaker.runtime`` and gateway
            endpoint ``dynamodb`` (:func:`add_vpc_endpoints`), or NAT. Default: no VPC (the
            function calls only AWS APIs).
        :param vpc_subnets: with ``vpc``, the function's subnets. Default: the private subnets
            with egress, else the isolated ones.
        :param security_groups: with ``vpc``, the function's security groups. Default: one
            created, outbound HTTPS only (``function_security_groups``).
        """
        super().__init__(scope, construct_id)
        self._outputs = outputs
        self.node.set_context(_ORDER_INSENSITIVE_KEYS, True)
        self.guardrails: dict[str, ContentGuardrail] = {
            name: ContentGuardrail(
                self, f"Guardrail{pascal_case(name)}", config=config.guardrails[name], stage=stage
            )
            for name in config.applied_guardrails
        }
        """``config.guardrails`` that ``config.routes`` apply, by name."""
        routes = resolve_routes(config, endpoints, routes, self.guardrails)
        self.config = config
        self.metric_namespace: str = METRIC_NAMESPACE
        """Namespace of the function's metrics (``POWERTOOLS_METRICS_NAMESPACE``)."""
        self.service_name: str = Stack.of(self).stack_name
        """The ``service`` dimension of the function's metrics (``POWERTOOLS_SERVICE_NAME``):
        the stack's name, so that two stages in one account never share a metric."""
        region = Stack.of(self).region
        if Token.is_unresolved(region):
            raise ValueError(
                f"{self.node.path}: StreamingGateway needs a concrete region to choose the "
                "Lambda Web Adapter layer; fix: give the stack env=Environment(region=...)"
            )
        policy = StagePolicy.for_stage(stage)
        self._log_retention = (
            RETENTION_BY_DAYS[config.function.log_retention_days]
            if config.function.log_retention_days is not None
            else policy.log_retention
        )
        self._log_removal_policy = policy.removal_policy
        self.routes: dict[str, GatewayRoute] = typed_routes(routes)
        self.route_table: RouteTable = build_route_table(self.routes, config.fallback)
        """What the function receives in ``LLM_GATEWAY_ROUTES`` (``model_dump_json()``)."""
        self._layer_arn = config.web_adapter.resolve_layer_arn(region)
        self.consumers: dict[str, ConsumerConfig] = {}
        self.api_keys: dict[str, apigateway.ApiKey] = {}
        self._check_environment_size(config.consumers)

        self.logs_key = logs_key(self, "LogsKey", policy=policy)
        """Encrypts the gateway's log groups (function, authorizer, access, execution)."""
        self._logs = LogPolicy(self._log_retention, self._log_removal_policy, self.logs_key)
        self.log_group = self._logs.log_group(self, "FunctionLogs")
        self.quota_table = QuotaTable(self, "QuotaTable", stage=stage)
        self.role = self._role(in_vpc=vpc is not None)
        if vpc is None and (vpc_subnets is not None or security_groups is not None):
            raise ValueError(
                f"{self.node.path}: vpc_subnets and security_groups place the function in a "
                "VPC; fix: pass vpc= too, or drop them"
            )
        network = (
            gateway_function.FunctionNetwork(
                self, vpc=vpc, subnets=vpc_subnets, security_groups=security_groups
            )
            if vpc is not None
            else None
        )
        self.function_security_groups: list[ec2.ISecurityGroup] = (
            network.security_groups if network else []
        )
        """The function's security groups (empty outside a VPC)."""
        self.function = gateway_function.gateway_function(
            self,
            config,
            environment=gateway_function.function_environment(
                config,
                route_table=self.route_table,
                table_name=self.quota_table.table_name,
                service_name=self.service_name,
                namespace=self.metric_namespace,
            ),
            layer_arn=self._layer_arn,
            log_group=self.log_group,
            role=self.role,
            network=network,
        )
        for endpoint in unique_endpoints(self.routes):
            endpoint.grant_invoke(self.function)
        self.quota_table.grant_quota_access(self.function)
        for guardrail in unique_guardrails(self.routes):
            guardrail.grant_apply(self.function)
        self.cache_table: ResponseCacheTable | None = None
        """Cached answers, when a route caches (``LLM_GATEWAY_CACHE_TABLE``)."""
        if any(route.cache is not None for route in self.routes.values()):
            self.cache_table = ResponseCacheTable(self, "ResponseCache", stage=stage)
            self.cache_table.grant_cache_access(self.function)
            self.function.add_environment(CACHE_TABLE_ENV, self.cache_table.table_name)

        self.access_log_group = self._logs.log_group(self, "AccessLogs")
        self.api = gateway_api.streaming_rest_api(
            self,
            access_log_group=self.access_log_group,
            account_cloudwatch_role=config.api.account_cloudwatch_role,
            cors_origins=config.api.cors_origins,
        )
        # RestApi always outputs its stage URL; clients need .../v1 (``url``), not that.
        self.api.node.try_remove_child("Endpoint")
        gateway_api.execution_log_group(self, self.api, self._logs)
        self.authorizer = key_authorizer(
            self,
            cache_s=config.api.authorizer_cache_s,
            architecture=self.function.architecture,
            log_policy=self._logs,
        )
        gateway_api.add_chat_methods(self.api, self.function, self.authorizer)
        gateway_api.add_openai_gateway_responses(self.api, cors=bool(config.api.cors_origins))
        self.usage_plans: dict[str, apigateway.UsagePlan] = {
            name: self._usage_plan(name) for name in config.tiers
        }
        for consumer in config.consumers:
            self.add_consumer(consumer.name, tier=consumer.tier, routes=consumer.routes)
        self._set_consumers_environment()  # also without consumers
        self.url: str = self.api.url_for_path("/v1")
        """The OpenAI base URL (``https://<id>.execute-api.<region>.<suffix>/api/v1``)."""
        if outputs:
            CfnOutput(self, "ApiUrl", value=self.url, description="OpenAI base URL")

    # --- Function --------------------------------------------------------------------------

    def _role(self, *, in_vpc: bool) -> iam.Role:
        role = iam.Role(
            self,
            "FunctionRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=(
                "LLM gateway function: own logs, X-Ray, invoke its SageMaker endpoints, "
                "count tokens in its quota table"
            ),
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[self.log_group.log_group_arn],
            )
        )
        vpc_reason = (
            " The VPC attachment adds the ENI actions of AWSLambdaVPCAccessExecutionRole, which "
            "Lambda documents on * (DescribeNetworkInterfaces works only there)."
            if in_vpc
            else ""
        )
        acknowledge(
            role,
            "AwsSolutions-IAM5[Resource::*]",
            "Active tracing adds xray:PutTraceSegments and xray:PutTelemetryRecords, which "
            f"have no resource-level permissions.{vpc_reason} Every other statement names its "
            "resources.",
        )
        return role

    # --- Consumers, keys and usage plans ---------------------------------------------------

    def _usage_plan(self, tier_name: str) -> apigateway.UsagePlan:
        tier = self.config.tiers[tier_name]
        quota = tier.request_quota
        plan = self.api.add_usage_plan(
            f"{pascal_case(tier_name)}Plan",
            description=f"LLM gateway tier {tier_name}: per-key throttle and request quota",
            throttle=apigateway.ThrottleSettings(
                rate_limit=tier.rate_limit, burst_limit=tier.burst_limit
            ),
            quota=(
                apigateway.QuotaSettings(limit=quota[0], period=apigateway.Period[quota[1]])
                if quota is not None
                else None
            ),
        )
        plan.add_api_stage(stage=self.api.deployment_stage)
        return plan

    def add_consumer(
        self, name: str, *, tier: str, routes: Sequence[str] | None = None
    ) -> apigateway.ApiKey:
        """A consumer with its own API key (value generated by AWS, never in the template) in
        ``tier``'s usage plan, allowed ``routes`` (model aliases; ``None``: all). Construct id
        and logical id derive from ``name`` (``team-a`` → ``TeamAKey``)."""
        if not re.fullmatch(NAME_PATTERN, name) or len(name) > 64:
            raise ValueError(
                f"consumer name {name!r}: use lower-case words joined by hyphens (at most 64 "
                "characters), e.g. team-a"
            )
        if tier not in self.usage_plans:
            raise ValueError(
                f"consumer {name!r}: unknown tier {tier!r}; use one of {sorted(self.usage_plans)}"
            )
        unknown = [alias for alias in routes or () if alias not in self.routes]
        if unknown:
            raise ValueError(
                f"consumer {name!r} may call {unknown}, which no route serves; use aliases "
                f"from {sorted(self.routes)}"
            )
        for other in self.consumers:
            if pascal_case(other) == pascal_case(name):
                raise ValueError(
                    f"consumer {name!r} clashes with {other!r} (same id {pascal_case(name)!r}); "
                    "give it a distinct name"
                )
        consumer = ConsumerConfig(
            name=name, tier=tier, routes=tuple(routes) if routes is not None else None
        )
        self._check_environment_size([*self.consumers.values(), consumer])
        key = apigateway.ApiKey(
            self,
            f"{pascal_case(name)}Key",
            description=f"LLM gateway consumer {name} (tier {tier})",
            enabled=True,
        )
        self.usage_plans[tier].add_api_key(key)
        self.consumers[name] = consumer
        self.api_keys[name] = key
        self._set_consumers_environment()
        if self._outputs:
            CfnOutput(
                self,
                f"ApiKeyId{pascal_case(name)}",
                value=key.key_id,
                description=f"API key id of consumer {name} (tier {tier}); value: "
                "aws apigateway get-api-key --api-key <id> --include-value",
            )
        return key

    @property
    def llm_endpoints(self) -> list[LlmEndpoint]:
        """The ``LlmEndpoint`` s the routes send to, each once (what the dashboard charts)."""
        return [e for e in unique_endpoints(self.routes) if isinstance(e, LlmEndpoint)]

    @property
    def llm_components(self) -> list[LlmInferenceComponent]:
        """The inference components the routes send to, each once (charted too)."""
        return [e for e in unique_endpoints(self.routes) if isinstance(e, LlmInferenceComponent)]

    @property
    def api_key_ids(self) -> dict[str, str]:
        """Consumer name → API key id (a token until deploy; the value is never in the
        template: ``aws apigateway get-api-key --api-key <id> --include-value``)."""
        return {name: key.key_id for name, key in self.api_keys.items()}

    def _check_environment_size(self, consumers: Sequence[ConsumerConfig]) -> None:
        gateway_function.check_environment_size(
            self.node.path,
            self.config,
            consumers,
            route_table=self.route_table,
            service_name=self.service_name,
            namespace=self.metric_namespace,
        )

    def _set_consumers_environment(self) -> None:
        key_ids = {name: key.key_id for name, key in self.api_keys.items()}
        table = consumer_table(self.config.tiers, list(self.consumers.values()), key_ids=key_ids)
        # The key ids are CloudFormation tokens: to_json_string renders them as Fn::Join.
        self.function.add_environment(
            CONSUMERS_ENV, Stack.of(self).to_json_string(table.model_dump(mode="json"))
        )

    def consumer_table(self, key_ids: Mapping[str, str] | None = None) -> ConsumerTable:
        """The table ``LLM_GATEWAY_CONSUMERS`` holds, keyed by ``key_ids`` (consumer name →
        API key id; default: the consumer names, for local runs without API Gateway)."""
        return consumer_table(self.config.tiers, list(self.consumers.values()), key_ids=key_ids)
