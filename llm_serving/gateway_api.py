"""The gateway's REST API: streaming proxy methods, OpenAI-format gateway responses, access and
execution logs."""

from __future__ import annotations

import json
from collections.abc import Sequence

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from llm_gateway.contract import CORS_ALLOW_HEADERS
from llm_serving._nag import acknowledge, skip_checkov
from llm_serving.logs_key import LogPolicy

STAGE_NAME = "api"

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
        _quoted("Incorrect API key provided."),
        "invalid_request_error",
        "invalid_api_key",
    ),
    (
        # The key authorizer found no key (or, with its cache on, no Authorization header).
        apigateway.ResponseType.UNAUTHORIZED,
        "401",
        _quoted(
            "You didn't provide an API key. Send it as Authorization: Bearer <key> (what the "
            "OpenAI SDKs do with api_key)."
        ),
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


def streaming_rest_api(
    scope: Construct,
    *,
    access_log_group: logs.ILogGroup,
    account_cloudwatch_role: bool,
    cors_origins: Sequence[str] = (),
) -> apigateway.RestApi:
    """The Regional REST API (construct id ``Api``): API keys found by the key authorizer (key
    source ``AUTHORIZER``), JSON access logs, INFO execution logs without data trace, X-Ray;
    with the reasons for what cdk-nag and checkov flag on it."""
    api = apigateway.RestApi(
        scope,
        "Api",
        # API Gateway's metrics are keyed by ApiName: unique per stack, so stages sharing an
        # account never mix on a dashboard.
        rest_api_name=Stack.of(scope).stack_name,
        description="OpenAI-compatible streaming chat completions for self-hosted LLMs",
        endpoint_types=[apigateway.EndpointType.REGIONAL],
        # OPTIONS preflights, answered by API Gateway (mock integration, no key needed).
        default_cors_preflight_options=(
            apigateway.CorsOptions(
                allow_origins=list(cors_origins),
                allow_methods=["GET", "POST", "OPTIONS"],
                allow_headers=list(CORS_ALLOW_HEADERS),
                max_age=Duration.minutes(10),
            )
            if cors_origins
            else None
        ),
        # The key authorizer returns the client's key as usageIdentifierKey (Bearer or
        # x-api-key); usage plans then match it as they would an x-api-key header.
        api_key_source_type=apigateway.ApiKeySourceType.AUTHORIZER,
        cloud_watch_role=account_cloudwatch_role,
        cloud_watch_role_removal_policy=RemovalPolicy.RETAIN if account_cloudwatch_role else None,
        deploy_options=apigateway.StageOptions(
            stage_name=STAGE_NAME,
            access_log_destination=apigateway.LogGroupLogDestination(access_log_group),
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


def execution_log_group(
    scope: Construct, api: apigateway.RestApi, policy: LogPolicy
) -> logs.LogGroup:
    """Pre-create the execution log group so it gets a retention, a removal policy and a key
    (API Gateway would otherwise create it on first use, kept forever)."""
    group = policy.log_group(
        scope, "ExecutionLogs", name=f"API-Gateway-Execution-Logs_{api.rest_api_id}/{STAGE_NAME}"
    )
    api.deployment_stage.node.add_dependency(group)
    return group


def add_chat_methods(
    api: apigateway.RestApi,
    function: lambda_.IFunction,
    authorizer: apigateway.IAuthorizer,
) -> None:
    """``POST /v1/chat/completions`` (body shape checked) and ``GET /v1/models``, both
    requiring an API key found by ``authorizer``, streamed from ``function`` with a
    15-minute timeout."""
    integration = apigateway.LambdaIntegration(
        function,
        proxy=True,
        response_transfer_mode=apigateway.ResponseTransferMode.STREAM,
        timeout=Duration.minutes(15),
    )
    # Parameters too, so that required ones declared later are enforced (none yet).
    validator = api.add_request_validator(
        "Validator", validate_request_body=True, validate_request_parameters=True
    )
    chat_model = api.add_model(
        "ChatCompletionRequest",
        content_type="application/json",
        schema=_CHAT_REQUEST_SCHEMA,
    )
    v1 = api.root.add_resource("v1")
    v1.add_resource("chat").add_resource("completions").add_method(
        "POST",
        integration,
        api_key_required=True,
        authorizer=authorizer,
        request_validator=validator,
        request_models={"application/json": chat_model},
    )
    v1.add_resource("models").add_method(
        "GET", integration, api_key_required=True, authorizer=authorizer
    )


def add_openai_gateway_responses(api: apigateway.RestApi, *, cors: bool = False) -> None:
    """API Gateway's own errors in OpenAI's ``{"error": {...}}`` format (readable from any
    browser origin when ``cors``: they carry no data)."""
    for response_type, status, message, error_type, code in GATEWAY_RESPONSES:
        api.add_gateway_response(
            f"{response_type.response_type.title().replace('_', '')}Response",
            type=response_type,
            status_code=status or None,
            templates={"application/json": _error_body(message, error_type, code)},
            response_headers={"Access-Control-Allow-Origin": "'*'"} if cors else None,
        )
