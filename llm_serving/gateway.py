"""StreamingGateway: an OpenAI-compatible streaming REST API in front of SageMaker endpoints."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aws_cdk import Duration, RemovalPolicy, Stack, Token
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct
from pydantic import ConfigDict, Field

from llm_gateway.contract import (
    CONSUMERS_ENV,
    METRIC_NAMESPACE,
    METRIC_NAMESPACE_ENV,
    QUOTA_TABLE_ENV,
    ROUTES_ENV,
    SERVICE_NAME_ENV,
    ConsumerTable,
    Cooldown,
    RoutePolicy,
    RouteTable,
)
from llm_serving import gateway_tables as tables
from llm_serving._nag import acknowledge, skip_checkov
from llm_serving.bundling import RUNTIME, gateway_code
from llm_serving.config.gateway import (
    LOG_RETENTION_DAYS,
    NAME_PATTERN,
    ConsumerConfig,
    GatewayConfig,
    pascal_case,
)
from llm_serving.endpoint import LlmEndpoint
from llm_serving.gateway_tables import BackendTarget, consumer_table
from llm_serving.logs_key import logs_key
from llm_serving.quota_table import QuotaTable
from llm_serving.stage import Stage, StagePolicy

STAGE_NAME = "api"
APP_PORT = 8080
HEALTH_PATH = "/healthz"
# Lambda rejects a function whose environment variables exceed 4 KB in total.
ENVIRONMENT_LIMIT_BYTES = 4096
# Deploy-time values, estimated for the size check: API key ids are 10 characters; a table
# name is at most 255.
KEY_ID_LENGTH = 10
TABLE_NAME_ESTIMATE = "t" * 255

"""CloudWatch namespace of the function's embedded-format metrics (``InferenceDashboard``)."""
# Usage-plan keys get logical ids from their API key, not from the order they were added in.
_ORDER_INSENSITIVE_KEYS = "@aws-cdk/aws-apigateway:usagePlanKeyOrderInsensitiveId"

RETENTION_BY_DAYS: dict[int, logs.RetentionDays] = dict(
    zip(
        LOG_RETENTION_DAYS,
        [r for r in logs.RetentionDays if r is not logs.RetentionDays.INFINITE],
        strict=True,
    )
)

_CHAT_REQUEST_SCHEMA = apigateway.JsonSchema(
    schema=apigateway.JsonSchemaVersion.DRAFT4,
    title="ChatCompletionRequest",
    description="The shape API Gateway checks; the function validates the rest.",
    type=apigateway.JsonSchemaType.OBJECT,
    required=["model", "messages"],
    properties={
        "model": apigateway.JsonSchema(type=apigateway.JsonSchemaType.STRING, min_length=1),
        "messages": apigateway.JsonSchema(type=apigateway.JsonSchemaType.ARRAY, min_items=1),
    },
)

# Gateway responses are simple substitutions, not VTL. `messageString` is already a quoted
# JSON string; `validationErrorString` is not (AWS documents it inside quotes).
_MESSAGE_STRING = "$context.error.messageString"


def _error_body(message: str, error_type: str, code: str | None) -> str:
    """``{"error": {message, type, param, code}}`` with ``message`` inserted verbatim."""
    code_json = json.dumps(code)
    return (
        f'{{"error":{{"message":{message},"type":"{error_type}","param":null,"code":{code_json}}}}}'
    )


def _quoted(text: str) -> str:
    return json.dumps(text)


# (response type, status, message (JSON fragment), OpenAI error type, code)
GATEWAY_RESPONSES: list[tuple[apigateway.ResponseType, str, str, str, str | None]] = [
    (
        apigateway.ResponseType.BAD_REQUEST_BODY,
        "400",
        '"$context.error.validationErrorString"',
        "invalid_request_error",
        "invalid_request_body",
    ),
    (
        apigateway.ResponseType.INVALID_API_KEY,
        "401",
        _quoted("Missing or invalid API key: send it in the x-api-key header."),
        "invalid_request_error",
        "invalid_api_key",
    ),
    (
        apigateway.ResponseType.ACCESS_DENIED,
        "403",
        _MESSAGE_STRING,
        "invalid_request_error",
        "invalid_api_key",
    ),
    (
        apigateway.ResponseType.MISSING_AUTHENTICATION_TOKEN,
        "404",
        _quoted(
            "Unknown URL or method: this API serves POST /v1/chat/completions and GET /v1/models."
        ),
        "invalid_request_error",
        "unknown_url",
    ),
    (
        apigateway.ResponseType.REQUEST_TOO_LARGE,
        "413",
        _quoted("Request body too large."),
        "invalid_request_error",
        "request_too_large",
    ),
    (
        apigateway.ResponseType.THROTTLED,
        "429",
        _quoted("Rate limit reached for this API key; retry after a short wait."),
        "requests",
        "rate_limit_exceeded",
    ),
    (
        apigateway.ResponseType.QUOTA_EXCEEDED,
        "429",
        _quoted("Request quota exceeded for this API key; it resets with the quota period."),
        "insufficient_quota",
        "insufficient_quota",
    ),
    (
        apigateway.ResponseType.INTEGRATION_TIMEOUT,
        "504",
        _quoted("The gateway timed out waiting for the model."),
        "server_error",
        "timeout",
    ),
    (apigateway.ResponseType.DEFAULT_4_XX, "", _MESSAGE_STRING, "invalid_request_error", None),
    (apigateway.ResponseType.DEFAULT_5_XX, "", _MESSAGE_STRING, "server_error", None),
]

# One JSON object per request, valid JSON for every request: every value is quoted here
# (API Gateway writes "-" for a value it does not have, so an unquoted variable such as
# `$context.error.messageString` would log `"errorMessage":-` on every success), and only
# variables whose values API Gateway generates from a fixed alphabet are used. API Gateway
# does not escape quotes or backslashes in access-log values, so free text (the client's
# User-Agent, error and integration-error messages) could break the line: it is left out;
# `errorType` says what went wrong, execution logs have the detail.
# Variables: docs.aws.amazon.com/apigateway/latest/developerguide/
# api-gateway-variables-for-access-logging.html
ACCESS_LOG_FIELDS: dict[str, str] = {
    "requestId": "$context.requestId",
    "extendedRequestId": "$context.extendedRequestId",
    "requestTime": "$context.requestTime",
    "sourceIp": "$context.identity.sourceIp",
    "apiKeyId": "$context.identity.apiKeyId",
    "httpMethod": "$context.httpMethod",
    "resourcePath": "$context.resourcePath",
    "protocol": "$context.protocol",
    "status": "$context.status",
    "responseLength": "$context.responseLength",
    "responseLatencyMs": "$context.responseLatency",
    "integrationLatencyMs": "$context.integration.latency",
    "integrationStatus": "$context.integration.status",
    "errorType": "$context.error.responseType",
    "xrayTraceId": "$context.xrayTraceId",
}
ACCESS_LOG_FORMAT = (
    "{" + ",".join(f'"{key}":"{value}"' for key, value in ACCESS_LOG_FIELDS.items()) + "}"
)


@dataclass(frozen=True)
class RouteBackend:
    """One backend of a route: an endpoint and its optional canary weight (0–1000; the wire
    contract's ``Backend`` checks it when the routing table is built)."""

    endpoint: LlmEndpoint
    weight: int | None = None


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

    @classmethod
    def to(cls, *endpoints: LlmEndpoint) -> GatewayRoute:
        """Unweighted backends, tried in this order; default deadline and attempts."""
        return cls(backends=tuple(RouteBackend(endpoint) for endpoint in endpoints))


RoutesArg = Mapping[str, GatewayRoute | Sequence[LlmEndpoint]]
"""Model alias → a :class:`GatewayRoute`, or just its endpoints in fallback order."""


def routes_from_config(
    config: GatewayConfig, endpoints: Mapping[str, LlmEndpoint]
) -> dict[str, GatewayRoute]:
    """``config``'s routes (one per endpoint, named after it, when it has none) with model
    config names resolved to ``endpoints`` (model config name → endpoint). Call
    :meth:`GatewayConfig.check_models` first: a backend
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
        policy = route.model_dump(include=set(RoutePolicy.model_fields))
        routes[route.model] = GatewayRoute(backends=tuple(backends), **policy)
    return routes


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
    Gateway's account-level CloudWatch role. With ``config.api.account_cloudwatch_role`` (the
    default) this construct sets it: that is an account-wide, per-region setting (the last stack to
    set it wins), and the role is retained when the stack is deleted so that other APIs keep
    logging. Set it false where the account already has one.

    ``stage`` (required, as for every construct here): ``dev`` removes the logs and the quota
    table with the stack; ``prod`` retains them and protects the table from deletion.

    The stack's region must be concrete: it selects the Lambda Web Adapter layer.

    Exposes ``function``, ``role``, ``log_group``, ``api``, ``access_log_group``,
    ``usage_plans`` (tier → plan), ``api_keys`` (consumer → key), ``consumers`` (consumer →
    config), ``quota_table``, ``route_table`` (the contract's :class:`RouteTable` in
    ``LLM_GATEWAY_ROUTES``), ``url`` (the OpenAI base URL, ``…/api/v1``), and
    ``metric_namespace`` / ``service_name``: the function's metrics
    (``POWERTOOLS_METRICS_NAMESPACE`` / ``POWERTOOLS_SERVICE_NAME``, the ``service``
    dimension: the stack's name) that :class:`InferenceDashboard` charts.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: GatewayConfig,
        stage: Stage,
        endpoints: Mapping[str, LlmEndpoint] | None = None,
        routes: RoutesArg | None = None,
    ) -> None:
        """
        :param config: the gateway config (``gateway.yaml``): tiers, consumers, limits,
            function and API settings, fallback cooldown, observability, and its ``routes``.
        :param stage: data lifetimes (``dev``/``prod``), as for every construct here.
        :param endpoints: model config name → endpoint. The routes are then ``config.routes``
            (their backends name model configs) or, when it is unset, one route per endpoint
            named after it.
        :param routes: instead of ``endpoints``, the routes themselves (alias →
            :class:`GatewayRoute` or endpoints in fallback order); ``config.routes`` must then
            be unset. Give exactly one of ``endpoints`` and ``routes``.
        """
        super().__init__(scope, construct_id)
        routes = _one_route_source(config, endpoints, routes)
        self.node.set_context(_ORDER_INSENSITIVE_KEYS, True)
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
        self.routes: dict[str, GatewayRoute] = _typed_routes(routes)
        self.route_table: RouteTable = build_route_table(self.routes, config.fallback)
        """What the function receives in ``LLM_GATEWAY_ROUTES`` (``model_dump_json()``)."""
        self._layer_arn = config.web_adapter.resolve_layer_arn(region)
        self.consumers: dict[str, ConsumerConfig] = {}
        self.api_keys: dict[str, apigateway.ApiKey] = {}
        self._check_environment_size(config.consumers)

        self.logs_key = logs_key(self, "LogsKey", policy=policy)
        """Encrypts the function's log group, the access logs and the execution logs."""
        self.log_group = logs.LogGroup(
            self,
            "FunctionLogs",
            retention=self._log_retention,
            removal_policy=self._log_removal_policy,
            encryption_key=self.logs_key,
        )
        self.quota_table = QuotaTable(self, "QuotaTable", stage=stage)
        self.role = self._role()
        self.function = self._function()
        for endpoint in _unique_endpoints(self.routes):
            endpoint.grant_invoke(self.function)
        self.quota_table.grant_quota_access(self.function)

        self.access_log_group = logs.LogGroup(
            self,
            "AccessLogs",
            retention=self._log_retention,
            removal_policy=self._log_removal_policy,
            encryption_key=self.logs_key,
        )
        self.api = self._rest_api()
        self._execution_log_group()
        self._methods()
        self._gateway_responses()
        self.usage_plans: dict[str, apigateway.UsagePlan] = {
            name: self._usage_plan(name) for name in config.tiers
        }
        for consumer in config.consumers:
            self.add_consumer(consumer.name, tier=consumer.tier, routes=consumer.routes)
        self._set_consumers_environment()  # also without consumers
        self.url: str = self.api.url_for_path("/v1")
        """The OpenAI base URL (``https://<id>.execute-api.<region>.<suffix>/api/v1``)."""

    # --- Function --------------------------------------------------------------------------

    def _role(self) -> iam.Role:
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
        acknowledge(
            role,
            "AwsSolutions-IAM5[Resource::*]",
            "Active tracing adds xray:PutTraceSegments and xray:PutTelemetryRecords, which "
            "have no resource-level permissions; every other statement names its resources.",
        )
        return role

    def _environment(self, *, table_name: str, consumers: str | None = None) -> dict[str, str]:
        """The function's environment; ``LLM_GATEWAY_CONSUMERS`` is set by :meth:`add_consumer`
        (``consumers`` is for the size estimate)."""
        config = self.config
        env = {
            "AWS_LAMBDA_EXEC_WRAPPER": "/opt/bootstrap",
            "AWS_LWA_INVOKE_MODE": "response_stream",
            "AWS_LWA_PORT": str(APP_PORT),
            "AWS_LWA_READINESS_CHECK_PATH": HEALTH_PATH,
            ROUTES_ENV: self.route_table.model_dump_json(),
            QUOTA_TABLE_ENV: table_name,
            "LLM_GATEWAY_MAX_REQUEST_BYTES": str(config.limits.max_request_bytes),
            "LLM_GATEWAY_UPSTREAM_CONNECT_TIMEOUT_S": str(config.upstream.connect_timeout_s),
            "LLM_GATEWAY_UPSTREAM_READ_TIMEOUT_S": str(config.upstream.read_timeout_s),
            METRIC_NAMESPACE_ENV: self.metric_namespace,
            SERVICE_NAME_ENV: self.service_name,
        }
        if consumers is not None:
            env[CONSUMERS_ENV] = consumers
        return env

    def _check_environment_size(self, consumers: Sequence[ConsumerConfig]) -> None:
        """Lambda's 4 KB limit, with the deploy-time values estimated: each API key id as
        10 characters, the table name as 255 (its maximum)."""
        key_ids = {c.name: f"{i:0{KEY_ID_LENGTH}d}" for i, c in enumerate(consumers)}
        table = consumer_table(self.config.tiers, consumers, key_ids=key_ids).model_dump_json()
        estimate = self._environment(table_name=TABLE_NAME_ESTIMATE, consumers=table)
        routes = estimate[ROUTES_ENV]
        size = len(json.dumps(estimate, separators=(",", ":")).encode("utf-8"))
        if size > ENVIRONMENT_LIMIT_BYTES:
            raise ValueError(
                f"{self.node.path}: the gateway function's environment would be about {size} "
                f"bytes, over Lambda's {ENVIRONMENT_LIMIT_BYTES}-byte limit (route table "
                f"{len(routes)} bytes, consumer table {len(table)} bytes with "
                f"{len(consumers)} consumer(s); API key ids estimated at {KEY_ID_LENGTH} "
                f"characters each and the table name at {len(TABLE_NAME_ESTIMATE)}); fix: route "
                "fewer models or backends, or serve fewer consumers, through one gateway"
            )

    def _function(self) -> lambda_.Function:
        config = self.config
        arm = config.web_adapter.architecture == "arm64"
        function = lambda_.Function(
            self,
            "Function",
            description="OpenAI-compatible streaming proxy to SageMaker endpoints",
            runtime=RUNTIME,
            architecture=lambda_.Architecture.ARM_64 if arm else lambda_.Architecture.X86_64,
            handler="run.sh",
            code=gateway_code(config.web_adapter.architecture),
            layers=[
                lambda_.LayerVersion.from_layer_version_arn(self, "WebAdapter", self._layer_arn)
            ],
            environment=self._environment(table_name=self.quota_table.table_name),
            memory_size=config.function.memory_mb,
            timeout=Duration.minutes(15),
            reserved_concurrent_executions=config.function.reserved_concurrency,
            tracing=lambda_.Tracing.ACTIVE,
            log_group=self.log_group,
            role=self.role,
        )
        # CDK makes every function depend on its role construct (so that the role's default
        # policy exists first); the role half duplicates the GetAtt, which cfn-lint flags.
        cfn_function = function.node.default_child
        assert isinstance(cfn_function, lambda_.CfnFunction)
        cfn_function.add_metadata("cfn-lint", {"config": {"ignore_checks": ["W3005"]}})
        _skip_function_checks(function, reserved=config.function.reserved_concurrency)
        acknowledge(
            function,
            "AwsSolutions-L1",
            "Python 3.13 is deliberate and supported: the offline bundler installs cp313 wheels "
            "(pydantic_core is compiled); moving to 3.14 means changing PYTHON_VERSION and "
            "RUNTIME in llm_serving/bundling.py and refreshing the wheelhouse together.",
        )
        return function

    # --- REST API --------------------------------------------------------------------------

    def _rest_api(self) -> apigateway.RestApi:
        api = apigateway.RestApi(
            self,
            "Api",
            # API Gateway's metrics are keyed by ApiName: unique per stack, so stages sharing an
            # account never mix on a dashboard.
            rest_api_name=Stack.of(self).stack_name,
            description="OpenAI-compatible streaming chat completions for self-hosted LLMs",
            endpoint_types=[apigateway.EndpointType.REGIONAL],
            api_key_source_type=apigateway.ApiKeySourceType.HEADER,
            cloud_watch_role=self.config.api.account_cloudwatch_role,
            cloud_watch_role_removal_policy=(
                RemovalPolicy.RETAIN if self.config.api.account_cloudwatch_role else None
            ),
            deploy_options=apigateway.StageOptions(
                stage_name=STAGE_NAME,
                access_log_destination=apigateway.LogGroupLogDestination(self.access_log_group),
                access_log_format=apigateway.AccessLogFormat.custom(ACCESS_LOG_FORMAT),
                logging_level=apigateway.MethodLoggingLevel.INFO,
                data_trace_enabled=False,
                tracing_enabled=True,
                metrics_enabled=True,
            ),
        )
        skip_checkov(
            api.deployment_stage,
            "CKV_AWS_120",
            "Stage caching is not available with ResponseTransferMode STREAM (API Gateway "
            "developer guide, response streaming); the gateway streams every response.",
        )
        cloud_watch_role = api.node.try_find_child("CloudWatchRole")
        if cloud_watch_role is not None:
            acknowledge(
                cloud_watch_role,
                "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                "AmazonAPIGatewayPushToCloudWatchLogs]",
                "API Gateway's account-wide logging role must write to the execution log groups "
                "API Gateway creates for every API in the account; AWS maintains this policy "
                "for exactly that purpose.",
            )
        acknowledge(
            api,
            "AwsSolutions-APIG3",
            "No WAF web ACL yet: every method requires an API key and usage plans throttle "
            "and cap each key; add AWS WAF (rate-based rules) before exposing it widely.",
        )
        acknowledge(
            api,
            "AwsSolutions-APIG4",
            "Access control is API keys bound to usage plans (per-consumer throttle and "
            "quota), as OpenAI-compatible clients send a static key; there is no IAM or "
            "Cognito caller identity to authorize.",
        )
        acknowledge(
            api,
            "AwsSolutions-COG4",
            "Callers are OpenAI-compatible clients authenticating with API keys bound to "
            "usage plans, not Cognito users; a user pool authorizer does not fit them.",
        )
        return api

    def _execution_log_group(self) -> logs.LogGroup:
        """Pre-create the execution log group so it gets a retention and a removal policy
        (API Gateway would otherwise create it on first use, kept forever)."""
        group = logs.LogGroup(
            self,
            "ExecutionLogs",
            log_group_name=f"API-Gateway-Execution-Logs_{self.api.rest_api_id}/{STAGE_NAME}",
            retention=self._log_retention,
            removal_policy=self._log_removal_policy,
            encryption_key=self.logs_key,
        )
        self.api.deployment_stage.node.add_dependency(group)
        return group

    def _methods(self) -> None:
        integration = apigateway.LambdaIntegration(
            self.function,
            proxy=True,
            response_transfer_mode=apigateway.ResponseTransferMode.STREAM,
            timeout=Duration.minutes(15),
        )
        # Parameters too, so that required ones declared later are enforced (none yet).
        validator = self.api.add_request_validator(
            "Validator", validate_request_body=True, validate_request_parameters=True
        )
        chat_model = self.api.add_model(
            "ChatCompletionRequest",
            content_type="application/json",
            schema=_CHAT_REQUEST_SCHEMA,
        )
        v1 = self.api.root.add_resource("v1")
        v1.add_resource("chat").add_resource("completions").add_method(
            "POST",
            integration,
            api_key_required=True,
            request_validator=validator,
            request_models={"application/json": chat_model},
        )
        v1.add_resource("models").add_method("GET", integration, api_key_required=True)

    def _gateway_responses(self) -> None:
        for response_type, status, message, error_type, code in GATEWAY_RESPONSES:
            self.api.add_gateway_response(
                f"{response_type.response_type.title().replace('_', '')}Response",
                type=response_type,
                status_code=status or None,
                templates={"application/json": _error_body(message, error_type, code)},
            )

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
        return key

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


def _one_route_source(
    config: GatewayConfig,
    endpoints: Mapping[str, LlmEndpoint] | None,
    routes: RoutesArg | None,
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
    return routes_from_config(config, endpoints)


def _typed_routes(routes: RoutesArg) -> dict[str, GatewayRoute]:
    if not routes:
        raise ValueError("StreamingGateway needs at least one route (model alias → endpoints)")
    typed: dict[str, GatewayRoute] = {}
    for alias, route in routes.items():
        if isinstance(route, GatewayRoute):
            typed[alias] = route
        elif not route:
            raise ValueError(f"route {alias!r} has no endpoints; give it at least one")
        else:
            typed[alias] = GatewayRoute.to(*route)
    return typed


def build_route_table(routes: RoutesArg, fallback: Cooldown | None = None) -> RouteTable:
    """The table the function reads from ``LLM_GATEWAY_ROUTES`` (the contract's model), with
    ``fallback``'s cooldown (default: the contract's)."""
    return tables.route_table(
        [
            tables.route(
                alias,
                [BackendTarget(b.endpoint.config, b.endpoint.endpoint_name, b.weight)
                 for b in gateway_route.backends],
                gateway_route,
            )
            for alias, gateway_route in _typed_routes(routes).items()
        ],
        fallback or Cooldown(),
    )  # fmt: skip


def _unique_endpoints(routes: Mapping[str, GatewayRoute]) -> list[LlmEndpoint]:
    unique: dict[str, LlmEndpoint] = {}
    for route in routes.values():
        for backend in route.backends:
            unique.setdefault(backend.endpoint.node.path, backend.endpoint)
    return list(unique.values())


def _skip_function_checks(function: lambda_.Function, *, reserved: int | None) -> None:
    """checkov's Lambda checks that do not fit a streaming API Gateway proxy, with why."""
    if reserved is None:
        skip_checkov(
            function,
            "CKV_AWS_115",
            "Reserved concurrency is opt-in (gateway.yaml function.reserved_concurrency): "
            "reserving by default would take from the account's unreserved pool; API Gateway "
            "usage plans throttle each key before the function.",
        )
    skip_checkov(
        function,
        "CKV_AWS_116",
        "Invoked synchronously by API Gateway (InvokeWithResponseStream); a dead-letter queue "
        "only receives failed asynchronous invocations.",
    )
    skip_checkov(
        function,
        "CKV_AWS_117",
        "Calls only AWS APIs (SageMaker runtime, DynamoDB, CloudWatch) over TLS with SigV4 and "
        "reaches no VPC resource; a VPC would add NAT or interface endpoints for nothing.",
    )
    skip_checkov(
        function,
        "CKV_AWS_173",
        "The environment holds no secrets (routes, API key ids, table name, limits); Lambda "
        "encrypts it at rest with its AWS-managed key.",
    )
