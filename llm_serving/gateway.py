"""StreamingGateway: an OpenAI-compatible streaming REST API in front of SageMaker endpoints."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from aws_cdk import Duration, RemovalPolicy, Stack, Token
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from llm_serving._nag import acknowledge
from llm_serving.bundling import RUNTIME, gateway_code
from llm_serving.config.gateway import LOG_RETENTION_DAYS, GatewayConfig
from llm_serving.endpoint import LlmEndpoint

STAGE_NAME = "api"
APP_PORT = 8080
HEALTH_PATH = "/healthz"
# Lambda rejects a function whose environment variables exceed 4 KB in total.
ENVIRONMENT_LIMIT_BYTES = 4096

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

# One JSON object per request. `messageString` is quoted by API Gateway; the rest are quoted
# here, so the line stays valid JSON whatever the values.
_ACCESS_LOG_FIELDS: dict[str, str] = {
    "requestId": "$context.requestId",
    "extendedRequestId": "$context.extendedRequestId",
    "requestTime": "$context.requestTime",
    "sourceIp": "$context.identity.sourceIp",
    "userAgent": "$context.identity.userAgent",
    "apiKeyId": "$context.identity.apiKeyId",
    "httpMethod": "$context.httpMethod",
    "resourcePath": "$context.resourcePath",
    "protocol": "$context.protocol",
    "status": "$context.status",
    "responseLength": "$context.responseLength",
    "responseLatencyMs": "$context.responseLatency",
    "integrationLatencyMs": "$context.integration.latency",
    "integrationStatus": "$context.integration.status",
    "integrationError": "$context.integration.error",
    "errorType": "$context.error.responseType",
    "xrayTraceId": "$context.xrayTraceId",
}
ACCESS_LOG_FORMAT = (
    "{"
    + ",".join(f'"{key}":"{value}"' for key, value in _ACCESS_LOG_FIELDS.items())
    + f',"errorMessage":{_MESSAGE_STRING}}}'
)


class StreamingGateway(Construct):
    """An OpenAI-compatible chat completions API that streams from SageMaker endpoints.

    API Gateway REST API (Regional) → Lambda (Python, Lambda Web Adapter, response streaming)
    → ``InvokeEndpointWithResponseStream``. ``POST /v1/chat/completions`` and
    ``GET /v1/models`` proxy to the function with ``ResponseTransferMode: STREAM`` and a
    15-minute timeout; both require an API key (``x-api-key``) bound to a usage plan
    (throttle + daily request quota). API Gateway checks the request body's basic shape and
    answers its own errors in OpenAI's ``{"error": {...}}`` format.

    ``routes`` maps each model alias clients send as ``model`` to the endpoints that serve it,
    in fallback order; the construct writes that table into the function's environment
    (``LLM_GATEWAY_ROUTES``) and grants the function ``InvokeEndpoint`` and
    ``InvokeEndpointWithResponseStream`` on exactly those endpoints.

    Logging: the function's log group, JSON access logs and INFO execution logs (data trace
    off: prompts are never logged) all keep ``log_retention`` unless
    ``config.function.log_retention_days`` is set. Execution logging needs API Gateway's
    account-level CloudWatch role. With ``config.api.account_cloudwatch_role`` (the default)
    this construct sets it: that is an account-wide, per-region setting (the last stack to
    set it wins), and the role is retained when the stack is deleted so that other APIs keep
    logging. Set it false where the account already has one.

    The stack's region must be concrete: it selects the Lambda Web Adapter layer.

    Exposes ``function``, ``role``, ``log_group``, ``api``, ``access_log_group``,
    ``usage_plan``, ``api_key`` (the default consumer's key; AWS generates its value),
    ``route_table`` (the dict in ``LLM_GATEWAY_ROUTES``) and ``url`` (the OpenAI base URL,
    ``…/api/v1``).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        routes: Mapping[str, Sequence[LlmEndpoint]],
        config: GatewayConfig,
        log_retention: logs.RetentionDays = logs.RetentionDays.TWO_WEEKS,
        log_removal_policy: RemovalPolicy = RemovalPolicy.DESTROY,
    ) -> None:
        super().__init__(scope, construct_id)
        self.config = config
        region = Stack.of(self).region
        if Token.is_unresolved(region):
            raise ValueError(
                f"{self.node.path}: StreamingGateway needs a concrete region to choose the "
                "Lambda Web Adapter layer; fix: give the stack env=Environment(region=...)"
            )
        self._log_retention = (
            RETENTION_BY_DAYS[config.function.log_retention_days]
            if config.function.log_retention_days is not None
            else log_retention
        )
        self._log_removal_policy = log_removal_policy
        self.route_table: dict[str, Any] = route_table(routes)
        self._layer_arn = config.web_adapter.resolve_layer_arn(region)

        self.log_group = logs.LogGroup(
            self,
            "FunctionLogs",
            retention=self._log_retention,
            removal_policy=log_removal_policy,
        )
        self.role = self._role()
        self.function = self._function()
        for endpoint in _unique_endpoints(routes):
            endpoint.grant_invoke(self.function)

        self.access_log_group = logs.LogGroup(
            self,
            "AccessLogs",
            retention=self._log_retention,
            removal_policy=log_removal_policy,
        )
        self.api = self._rest_api()
        self._execution_log_group()
        self._methods()
        self._gateway_responses()
        self.usage_plan = self._usage_plan()
        self.api_key = self.add_api_key(
            "DefaultKey", description="Default consumer of the LLM gateway"
        )
        self.url: str = self.api.url_for_path("/v1")
        """The OpenAI base URL (``https://<id>.execute-api.<region>.<suffix>/api/v1``)."""

    # --- Function --------------------------------------------------------------------------

    def _role(self) -> iam.Role:
        role = iam.Role(
            self,
            "FunctionRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description="LLM gateway function: own logs, X-Ray, invoke its SageMaker endpoints",
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

    def _environment(self) -> dict[str, str]:
        config = self.config
        env = {
            "AWS_LAMBDA_EXEC_WRAPPER": "/opt/bootstrap",
            "AWS_LWA_INVOKE_MODE": "response_stream",
            "AWS_LWA_PORT": str(APP_PORT),
            "AWS_LWA_READINESS_CHECK_PATH": HEALTH_PATH,
            "LLM_GATEWAY_ROUTES": json.dumps(self.route_table, separators=(",", ":")),
            "LLM_GATEWAY_MAX_REQUEST_BYTES": str(config.limits.max_request_bytes),
            "LLM_GATEWAY_UPSTREAM_CONNECT_TIMEOUT_S": str(config.upstream.connect_timeout_s),
            "LLM_GATEWAY_UPSTREAM_READ_TIMEOUT_S": str(config.upstream.read_timeout_s),
        }
        size = len(json.dumps(env, separators=(",", ":")).encode("utf-8"))
        if size > ENVIRONMENT_LIMIT_BYTES:
            raise ValueError(
                f"{self.node.path}: the gateway function's environment would be {size} bytes, "
                f"over Lambda's {ENVIRONMENT_LIMIT_BYTES}-byte limit (the route table is "
                f"{len(env['LLM_GATEWAY_ROUTES'])} bytes); fix: route fewer models or "
                "backends through one gateway"
            )
        return env

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
            environment=self._environment(),
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

    # --- Keys and usage plans --------------------------------------------------------------

    def _usage_plan(self) -> apigateway.UsagePlan:
        api_config = self.config.api
        quota = api_config.quota_requests_per_day
        plan = self.api.add_usage_plan(
            "DefaultPlan",
            description="Default plan of the LLM gateway: per-key throttle and daily quota",
            throttle=apigateway.ThrottleSettings(
                rate_limit=api_config.throttle_rate_limit,
                burst_limit=api_config.throttle_burst_limit,
            ),
            quota=(
                apigateway.QuotaSettings(limit=quota, period=apigateway.Period.DAY)
                if quota is not None
                else None
            ),
        )
        plan.add_api_stage(stage=self.api.deployment_stage)
        return plan

    def add_api_key(
        self,
        key_id: str,
        *,
        description: str,
        usage_plan: apigateway.UsagePlan | None = None,
    ) -> apigateway.ApiKey:
        """Add an API key (value generated by AWS, never in the template) to ``usage_plan``
        (default: the gateway's default plan)."""
        key = apigateway.ApiKey(self, key_id, description=description, enabled=True)
        (usage_plan or self.usage_plan).add_api_key(key)
        return key


def _backend(endpoint: LlmEndpoint) -> dict[str, Any]:
    config = endpoint.config
    return {
        "name": config.name,
        "endpoint_name": endpoint.endpoint_name,
        "format": config.stream_format,
        "prompt_template": config.gateway.prompt_template,
        "custom_attributes": config.custom_attributes,
        "max_tokens_default": config.gateway.max_tokens_default,
    }


def route_table(routes: Mapping[str, Sequence[LlmEndpoint]]) -> dict[str, Any]:
    """The routing table the function reads from ``LLM_GATEWAY_ROUTES``
    (shape: ``lambda/llm_gateway/routes.py``)."""
    if not routes:
        raise ValueError("StreamingGateway needs at least one route (model alias → endpoints)")
    table = []
    for alias, endpoints in routes.items():
        if not endpoints:
            raise ValueError(f"route {alias!r} has no endpoints; give it at least one")
        table.append({"model": alias, "backends": [_backend(e) for e in endpoints]})
    return {"routes": table}


def _unique_endpoints(routes: Mapping[str, Sequence[LlmEndpoint]]) -> list[LlmEndpoint]:
    unique: dict[str, LlmEndpoint] = {}
    for endpoints in routes.values():
        for endpoint in endpoints:
            unique.setdefault(endpoint.node.path, endpoint)
    return list(unique.values())
