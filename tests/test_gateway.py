"""StreamingGateway: streaming REST API, proxy function, layer, keys, logs, grants, route table."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from aws_cdk import App, Stack
from aws_cdk import aws_logs as logs
from aws_cdk.assertions import Capture, Match, Template

from llm_gateway.routes import RouteTable
from llm_gateway.settings import Settings
from llm_serving import LlmEndpoint, ModelArtifacts, Stage, StreamingGateway
from llm_serving.config import ConfigError, GatewayConfig, ModelConfig
from llm_serving.gateway import ACCESS_LOG_FORMAT, GATEWAY_RESPONSES, RETENTION_BY_DAYS
from stacks import BuiltApp
from tests.conftest import build_default, iam_statements, make_app, variant

GATEWAY_STACK = "LlmServing-dev-Gateway"
DEEPSEEK = "deepseek-r1-distill-qwen-7b"
LLAMA = "llama-2-13b-chat"


@pytest.fixture(scope="module")
def gateway_template(templates: dict[str, Template]) -> Template:
    return templates[GATEWAY_STACK]


@pytest.fixture(scope="module")
def built(default_app: tuple[App, BuiltApp]) -> BuiltApp:
    return default_app[1]


def _function_env(template: Template) -> dict[str, str]:
    (function,) = template.find_resources("AWS::Lambda::Function").values()
    env: dict[str, str] = function["Properties"]["Environment"]["Variables"]
    return env


def _new_gateway(
    *,
    region: str | None = "us-east-1",
    config: GatewayConfig | None = None,
    aliases: list[str] | None = None,
) -> StreamingGateway:
    """One endpoint and a gateway in one stack (the app splits them; that is tested too).
    The endpoint is the LMI model: its image is published in every partition."""
    app = make_app()
    stack = Stack(app, "Test", env={"region": region} if region else None)
    artifacts = ModelArtifacts(stack, "Artifacts", stage=Stage.DEV)
    endpoint = LlmEndpoint(
        stack, "Llm", config=ModelConfig.model_validate(variant(LLAMA)), artifacts=artifacts
    )
    gateway = StreamingGateway(
        stack,
        "Gateway",
        routes={alias: [endpoint] for alias in (aliases if aliases is not None else [LLAMA])},
        config=config or GatewayConfig(),
    )
    return gateway


def _gateway(
    *,
    region: str | None = "us-east-1",
    config: GatewayConfig | None = None,
    aliases: list[str] | None = None,
) -> tuple[Template, StreamingGateway]:
    gateway = _new_gateway(region=region, config=config, aliases=aliases)
    return Template.from_stack(Stack.of(gateway)), gateway


def _config(**sections: dict[str, Any]) -> GatewayConfig:
    return GatewayConfig.model_validate(sections)


# --- API Gateway: streaming proxy methods ------------------------------------------------


def test_both_methods_stream_from_the_function_with_an_api_key(gateway_template: Template) -> None:
    methods = gateway_template.find_resources("AWS::ApiGateway::Method")
    assert sorted(m["Properties"]["HttpMethod"] for m in methods.values()) == ["GET", "POST"]
    for method in methods.values():
        props = method["Properties"]
        assert props["ApiKeyRequired"] is True
        integration = props["Integration"]
        assert integration["Type"] == "AWS_PROXY"
        assert integration["ResponseTransferMode"] == "STREAM"
        assert integration["TimeoutInMillis"] == 900_000
        uri = json.dumps(integration["Uri"])
        assert "/2021-11-15/functions/" in uri
        assert uri.endswith('"/response-streaming-invocations"]]}')


def test_routes_are_v1_chat_completions_and_v1_models(gateway_template: Template) -> None:
    resources = gateway_template.find_resources("AWS::ApiGateway::Resource")
    assert sorted(r["Properties"]["PathPart"] for r in resources.values()) == [
        "chat",
        "completions",
        "models",
        "v1",
    ]
    gateway_template.has_resource_properties(
        "AWS::ApiGateway::RestApi", {"EndpointConfiguration": {"Types": ["REGIONAL"]}}
    )


def test_post_body_is_checked_by_a_request_validator_and_model(gateway_template: Template) -> None:
    validator = Capture()
    model = Capture()
    gateway_template.has_resource_properties(
        "AWS::ApiGateway::Method",
        {
            "HttpMethod": "POST",
            "RequestValidatorId": {"Ref": validator},
            "RequestModels": {"application/json": {"Ref": model}},
        },
    )
    validators = gateway_template.find_resources("AWS::ApiGateway::RequestValidator")
    assert validators[validator.as_string()]["Properties"]["ValidateRequestBody"] is True
    schema = gateway_template.find_resources("AWS::ApiGateway::Model")[model.as_string()][
        "Properties"
    ]["Schema"]
    assert schema["type"] == "object"
    assert schema["required"] == ["model", "messages"]
    assert schema["properties"]["model"] == {"type": "string", "minLength": 1}
    assert schema["properties"]["messages"] == {"type": "array", "minItems": 1}


def _substitute(template: str) -> Any:
    """Fill API Gateway's variables as it would ($...String variables arrive quoted)."""
    text = template.replace("$context.error.messageString", '"Forbidden \\"quoted\\""')
    return json.loads(re.sub(r"\$context\.[A-Za-z.]+", "x", text))


def test_gateway_responses_are_openai_errors(gateway_template: Template) -> None:
    responses = {
        r["Properties"]["ResponseType"]: r["Properties"]
        for r in gateway_template.find_resources("AWS::ApiGateway::GatewayResponse").values()
    }
    expected_status = {
        "BAD_REQUEST_BODY": "400",
        "INVALID_API_KEY": "401",
        "THROTTLED": "429",
        "QUOTA_EXCEEDED": "429",
        "INTEGRATION_TIMEOUT": "504",
        "DEFAULT_4XX": None,
        "DEFAULT_5XX": None,
    }
    assert set(expected_status) <= set(responses)
    assert len(responses) == len(GATEWAY_RESPONSES)
    for kind, status in expected_status.items():
        assert responses[kind].get("StatusCode") == status, kind
    for kind, response in responses.items():
        body = _substitute(response["ResponseTemplates"]["application/json"])
        assert set(body) == {"error"}, kind
        assert set(body["error"]) == {"message", "type", "param", "code"}, kind
        assert isinstance(body["error"]["message"], str), kind
    body = responses["BAD_REQUEST_BODY"]["ResponseTemplates"]["application/json"]
    assert '"message":"$context.error.validationErrorString"' in body
    key = _substitute(responses["INVALID_API_KEY"]["ResponseTemplates"]["application/json"])
    assert key["error"]["type"] == "invalid_request_error"
    assert key["error"]["code"] == "invalid_api_key"
    assert "x-api-key" in key["error"]["message"]
    for kind, code in [
        ("THROTTLED", "rate_limit_exceeded"),
        ("QUOTA_EXCEEDED", "insufficient_quota"),
    ]:
        template = responses[kind]["ResponseTemplates"]["application/json"]
        assert _substitute(template)["error"]["code"] == code


# --- Stage: logs, tracing, metrics ------------------------------------------------------


def test_stage_logs_json_access_logs_and_info_execution_logs_without_bodies(
    gateway_template: Template,
) -> None:
    access_logs = Capture()
    gateway_template.has_resource_properties(
        "AWS::ApiGateway::Stage",
        {
            "StageName": "api",
            "TracingEnabled": True,
            "AccessLogSetting": {
                "DestinationArn": {"Fn::GetAtt": [access_logs, "Arn"]},
                "Format": ACCESS_LOG_FORMAT,
            },
            "MethodSettings": [
                {
                    "HttpMethod": "*",
                    "ResourcePath": "/*",
                    "LoggingLevel": "INFO",
                    "DataTraceEnabled": False,
                    "MetricsEnabled": True,
                }
            ],
        },
    )
    record = _substitute(ACCESS_LOG_FORMAT)
    assert {"requestId", "apiKeyId", "status", "responseLatencyMs", "errorMessage"} <= set(record)
    log_groups = gateway_template.find_resources("AWS::Logs::LogGroup")
    assert log_groups[access_logs.as_string()]["Properties"]["RetentionInDays"] == 14
    # Execution logs: pre-created, so they expire and go with the stack in dev.
    execution = [
        g
        for g in log_groups.values()
        if "API-Gateway-Execution-Logs_" in json.dumps(g["Properties"].get("LogGroupName"))
    ]
    assert len(execution) == 1
    assert execution[0]["Properties"]["RetentionInDays"] == 14
    assert execution[0]["DeletionPolicy"] == "Delete"


def test_account_cloudwatch_role_is_retained_or_left_alone() -> None:
    template, _ = _gateway()
    template.resource_count_is("AWS::ApiGateway::Account", 1)
    roles = [
        r
        for r in template.find_resources("AWS::IAM::Role").values()
        if "apigateway.amazonaws.com" in json.dumps(r["Properties"]["AssumeRolePolicyDocument"])
    ]
    assert [r["DeletionPolicy"] for r in roles] == ["Retain"]

    template, _ = _gateway(config=_config(api={"account_cloudwatch_role": False}))
    template.resource_count_is("AWS::ApiGateway::Account", 0)
    assert "apigateway.amazonaws.com" not in json.dumps(template.find_resources("AWS::IAM::Role"))


# --- Keys and usage plan ------------------------------------------------------------------


def test_usage_plan_throttles_and_caps_the_generated_key(gateway_template: Template) -> None:
    stage = Capture()
    gateway_template.has_resource_properties(
        "AWS::ApiGateway::UsagePlan",
        {
            "Throttle": {"RateLimit": 10, "BurstLimit": 20},
            "Quota": {"Limit": 10000, "Period": "DAY"},
            "ApiStages": [Match.object_like({"Stage": {"Ref": stage}})],
        },
    )
    stages = gateway_template.find_resources("AWS::ApiGateway::Stage")
    assert list(stages) == [stage.as_string()]
    ((key_id, key),) = gateway_template.find_resources("AWS::ApiGateway::ApiKey").items()
    assert key["Properties"]["Enabled"] is True
    assert "Value" not in key["Properties"], "AWS must generate the key value"
    gateway_template.has_resource_properties(
        "AWS::ApiGateway::UsagePlanKey", {"KeyId": {"Ref": key_id}, "KeyType": "API_KEY"}
    )


def test_quota_and_limits_come_from_config() -> None:
    config = _config(
        api={"throttle_rate_limit": 2.5, "throttle_burst_limit": 5, "quota_requests_per_day": None}
    )
    template, _ = _gateway(config=config)
    plan = template.find_resources("AWS::ApiGateway::UsagePlan")
    (props,) = [p["Properties"] for p in plan.values()]
    assert props["Throttle"] == {"RateLimit": 2.5, "BurstLimit": 5}
    assert "Quota" not in props


def test_more_keys_can_join_the_default_plan() -> None:
    gateway = _new_gateway()
    gateway.add_api_key("TeamKey", description="Team A")
    template = Template.from_stack(Stack.of(gateway))
    template.resource_count_is("AWS::ApiGateway::ApiKey", 2)
    template.resource_count_is("AWS::ApiGateway::UsagePlanKey", 2)


# --- Function -------------------------------------------------------------------------------


def test_function_runs_run_sh_under_the_web_adapter(gateway_template: Template) -> None:
    log_group = Capture()
    gateway_template.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "Runtime": "python3.13",
            "Handler": "run.sh",
            "Architectures": ["arm64"],
            "Layers": ["arn:aws:lambda:us-east-1:753240598075:layer:LambdaAdapterLayerArm64:26"],
            "MemorySize": 1024,
            "Timeout": 900,
            "TracingConfig": {"Mode": "Active"},
            "LoggingConfig": {"LogGroup": {"Ref": log_group}},
            "ReservedConcurrentExecutions": Match.absent(),
        },
    )
    group = gateway_template.find_resources("AWS::Logs::LogGroup")[log_group.as_string()]
    assert group["Properties"]["RetentionInDays"] == 14


def test_function_environment(gateway_template: Template) -> None:
    env = _function_env(gateway_template)
    assert set(env) == {
        "AWS_LAMBDA_EXEC_WRAPPER",
        "AWS_LWA_INVOKE_MODE",
        "AWS_LWA_PORT",
        "AWS_LWA_READINESS_CHECK_PATH",
        "LLM_GATEWAY_ROUTES",
        "LLM_GATEWAY_MAX_REQUEST_BYTES",
        "LLM_GATEWAY_UPSTREAM_CONNECT_TIMEOUT_S",
        "LLM_GATEWAY_UPSTREAM_READ_TIMEOUT_S",
    }
    assert env["AWS_LAMBDA_EXEC_WRAPPER"] == "/opt/bootstrap"
    assert env["AWS_LWA_INVOKE_MODE"] == "response_stream"
    assert env["AWS_LWA_PORT"] == "8080"
    assert env["AWS_LWA_READINESS_CHECK_PATH"] == "/healthz"
    assert env["LLM_GATEWAY_MAX_REQUEST_BYTES"] == "1048576"
    # The runtime parses exactly this environment.
    settings = Settings.from_env(env)
    assert settings.max_request_bytes == 1_048_576
    assert settings.upstream_connect_timeout_s == 5.0
    assert settings.upstream_read_timeout_s == 120.0


def test_route_table_matches_the_model_configs(gateway_template: Template, built: BuiltApp) -> None:
    raw = _function_env(gateway_template)["LLM_GATEWAY_ROUTES"]
    table = RouteTable.model_validate_json(raw)
    assert json.loads(raw) == built.gateway.gateway.route_table
    assert [r.model for r in table.routes] == [DEEPSEEK, LLAMA]
    for route in table.routes:
        (backend,) = route.backends
        endpoint = built.models[route.model].endpoint
        assert backend.name == route.model
        assert backend.endpoint_name == endpoint.endpoint_name
        assert backend.format == endpoint.config.stream_format
    deepseek = table.get(DEEPSEEK)
    llama = table.get(LLAMA)
    assert deepseek is not None
    assert llama is not None
    assert deepseek.backends[0].format == "openai"
    assert deepseek.backends[0].prompt_template is None
    assert deepseek.backends[0].custom_attributes is None
    assert deepseek.backends[0].max_tokens_default == 4096
    assert llama.backends[0].format == "lmi"
    assert llama.backends[0].prompt_template == "llama2"
    assert llama.backends[0].custom_attributes == "accept_eula=true"
    assert llama.backends[0].max_tokens_default == 1024


def test_function_role_has_no_managed_policies_and_invokes_only_the_routed_endpoints(
    gateway_template: Template, built: BuiltApp
) -> None:
    gateway = built.gateway.gateway
    role = gateway_template.find_resources("AWS::IAM::Role")[
        built.gateway.get_logical_id(gateway.role.node.default_child)  # type: ignore[arg-type]
    ]
    assert "ManagedPolicyArns" not in role["Properties"]
    statements = list(iam_statements(gateway_template))
    invoke = [s for s in statements if any("sagemaker:" in a for a in _actions(s))]
    assert len(invoke) == 1
    assert sorted(_actions(invoke[0])) == [
        "sagemaker:InvokeEndpoint",
        "sagemaker:InvokeEndpointWithResponseStream",
    ]
    expected = sorted(
        f"arn:aws:sagemaker:us-east-1:${{AWS::AccountId}}:endpoint/"
        f"{stack.endpoint.endpoint_name.lower()}"
        for stack in built.models.values()
    )
    assert sorted(_flatten_arn(r) for r in invoke[0]["Resource"]) == expected
    wildcard = [s for s in statements if s["Resource"] == "*"]
    assert [sorted(_actions(s)) for s in wildcard] == [
        ["xray:PutTelemetryRecords", "xray:PutTraceSegments"]
    ]
    logs_statement = next(s for s in statements if "logs:PutLogEvents" in _actions(s))
    function_logs = gateway_template.find_resources("AWS::Lambda::Function")
    (function,) = function_logs.values()
    assert logs_statement["Resource"] == {
        "Fn::GetAtt": [function["Properties"]["LoggingConfig"]["LogGroup"]["Ref"], "Arn"]
    }


def _actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return [action] if isinstance(action, str) else list(action)


def _flatten_arn(resource: Any) -> str:
    """``{"Fn::Join": ["", [...]]}`` → a string with ``${Ref}`` for references."""
    if isinstance(resource, str):
        return resource
    parts = resource["Fn::Join"][1]
    return "".join(p if isinstance(p, str) else "${" + p["Ref"] + "}" for p in parts)


def test_gateway_stack_imports_nothing_and_outputs_url_and_key(
    gateway_template: Template,
) -> None:
    assert "Fn::ImportValue" not in json.dumps(gateway_template.to_json())
    outputs = gateway_template.find_outputs("*")
    url = json.dumps(outputs["ApiUrl"]["Value"])
    assert url.endswith('"/v1"]]}')
    assert ".execute-api.us-east-1." in url
    assert (
        "aws apigateway get-api-key --api-key <id> --include-value"
        in (outputs["ApiKeyId"]["Description"])
    )
    assert outputs["ApiKeyId"]["Value"]["Ref"] in gateway_template.find_resources(
        "AWS::ApiGateway::ApiKey"
    )


def test_prod_keeps_logs_for_a_year_and_protects_the_stack() -> None:
    _, built = build_default(stage=Stage.PROD)
    stack = built.gateway
    assert stack.termination_protection is True
    template = Template.from_stack(stack)
    for group in template.find_resources("AWS::Logs::LogGroup").values():
        assert group["Properties"]["RetentionInDays"] == 365
        assert group["DeletionPolicy"] == "Retain"


# --- Config knobs ---------------------------------------------------------------------------


def test_function_settings_come_from_config() -> None:
    config = _config(
        web_adapter={"architecture": "x86_64", "layer_version": 27},
        function={"memory_mb": 2048, "reserved_concurrency": 50, "log_retention_days": 90},
        limits={"max_request_bytes": 65536},
        upstream={"connect_timeout_s": 2, "read_timeout_s": 300},
    )
    template, _ = _gateway(region="eu-west-1", config=config)
    template.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "Architectures": ["x86_64"],
            "Layers": ["arn:aws:lambda:eu-west-1:753240598075:layer:LambdaAdapterLayerX86:27"],
            "MemorySize": 2048,
            "ReservedConcurrentExecutions": 50,
            "Environment": {
                "Variables": Match.object_like(
                    {
                        "LLM_GATEWAY_MAX_REQUEST_BYTES": "65536",
                        "LLM_GATEWAY_UPSTREAM_CONNECT_TIMEOUT_S": "2.0",
                        "LLM_GATEWAY_UPSTREAM_READ_TIMEOUT_S": "300.0",
                    }
                )
            },
        },
    )
    gateway_groups = [
        g
        for path, g in template.find_resources("AWS::Logs::LogGroup").items()
        if path.startswith("Gateway")
    ]
    assert len(gateway_groups) == 3
    assert {g["Properties"]["RetentionInDays"] for g in gateway_groups} == {90}


def test_retention_days_map_to_the_same_cloudwatch_retention() -> None:
    app = make_app()
    stack = Stack(app, "Retention")
    for days, retention in RETENTION_BY_DAYS.items():
        logs.LogGroup(stack, f"Days{days}", retention=retention)
    groups = Template.from_stack(stack).find_resources("AWS::Logs::LogGroup")
    assert sorted(g["Properties"]["RetentionInDays"] for g in groups.values()) == sorted(
        RETENTION_BY_DAYS
    )


def test_environment_over_4_kb_fails_synth_clearly() -> None:
    aliases = [f"alias-{i:03d}" for i in range(40)]
    with pytest.raises(ValueError, match=r"over Lambda's 4096-byte limit.*route fewer models"):
        _gateway(aliases=aliases)


def test_empty_routes_are_rejected() -> None:
    with pytest.raises(ValueError, match="at least one route"):
        _gateway(aliases=[])


# --- Lambda Web Adapter layer per region ---------------------------------------------------

COMMERCIAL = ["us-east-1", "eu-west-1", "ap-southeast-2", "sa-east-1", "af-south-1"]


@pytest.mark.parametrize("region", COMMERCIAL)
@pytest.mark.parametrize(
    ("architecture", "layer"),
    [("arm64", "LambdaAdapterLayerArm64"), ("x86_64", "LambdaAdapterLayerX86")],
)
def test_layer_arn_in_commercial_regions(region: str, architecture: str, layer: str) -> None:
    config = _config(web_adapter={"architecture": architecture})
    assert config.web_adapter.resolve_layer_arn(region) == (
        f"arn:aws:lambda:{region}:753240598075:layer:{layer}:26"
    )


@pytest.mark.parametrize(
    ("region", "account"), [("cn-north-1", "041581134020"), ("cn-northwest-1", "069767869989")]
)
def test_layer_arn_in_china_is_x86_only(region: str, account: str) -> None:
    template, _ = _gateway(region=region, config=_config(web_adapter={"architecture": "x86_64"}))
    template.has_resource_properties(
        "AWS::Lambda::Function",
        {"Layers": [f"arn:aws-cn:lambda:{region}:{account}:layer:LambdaAdapterLayerX86:26"]},
    )
    with pytest.raises(ConfigError, match=r"x86_64 only in cn-.*set web_adapter.architecture"):
        _gateway(region=region)


@pytest.mark.parametrize("region", ["us-gov-west-1", "us-iso-east-1", "eusc-de-east-1"])
def test_layer_arn_elsewhere_must_be_configured(region: str) -> None:
    with pytest.raises(
        ConfigError, match=r"gateway\.yaml: web_adapter: .*set web_adapter.layer_arn"
    ):
        GatewayConfig().web_adapter.resolve_layer_arn(region)


def test_layer_arn_override() -> None:
    arn = "arn:aws-us-gov:lambda:us-gov-west-1:123456789012:layer:MyAdapter:3"
    config = _config(web_adapter={"layer_arn": arn, "architecture": "x86_64"})
    template, _ = _gateway(region="us-gov-west-1", config=config)
    template.has_resource_properties("AWS::Lambda::Function", {"Layers": [arn]})
    with pytest.raises(ConfigError, match="is in us-gov-west-1 but the gateway deploys to"):
        config.web_adapter.resolve_layer_arn("us-gov-east-1")


def test_region_must_be_concrete() -> None:
    with pytest.raises(ValueError, match="needs a concrete region"):
        _gateway(region=None)
