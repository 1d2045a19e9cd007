"""StreamingGateway: streaming REST API, proxy function, layer, keys, tiers, quota table, logs,
grants, route and consumer tables."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from aws_cdk import App, Stack
from aws_cdk import aws_logs as logs
from aws_cdk.assertions import Capture, Match, Template

from llm_gateway import contract
from llm_gateway.contract import (
    CONSUMERS_ENV,
    LOCAL_CONSUMER_ENV,
    QUOTA_TABLE_ENV,
    ROUTES_ENV,
    ConsumerTable,
    RouteTable,
)
from llm_gateway.settings import Settings
from llm_serving import (
    GatewayRoute,
    LlmEndpoint,
    ModelArtifacts,
    RouteBackend,
    Stage,
    StreamingGateway,
)
from llm_serving.config import ConfigError, GatewayConfig, ModelConfig
from llm_serving.gateway import RETENTION_BY_DAYS
from llm_serving.gateway_api import ACCESS_LOG_FIELDS, ACCESS_LOG_FORMAT, GATEWAY_RESPONSES
from llm_serving.gateway_routes import RoutesArg, build_route_table
from llm_serving.quota_table import ITEM_ACTIONS, KEY_ACTIONS
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


def _function_env(template: Template) -> dict[str, Any]:
    (function,) = template.find_resources(
        "AWS::Lambda::Function", {"Properties": {"Handler": "run.sh"}}
    ).values()
    env: dict[str, Any] = function["Properties"]["Environment"]["Variables"]
    return env


Endpoints = Mapping[str, LlmEndpoint]


def _new_gateway(
    *,
    region: str | None = "us-east-1",
    config: GatewayConfig | None = None,
    aliases: list[str] | None = None,
    routes: Callable[[Endpoints], RoutesArg] | None = None,
    stage: Stage = Stage.DEV,
) -> StreamingGateway:
    """Endpoints and a gateway in one stack (the app splits them; that is tested too).
    The endpoints are the LMI model (its image is published in every partition) and, for
    ``routes``, a canary copy of it named ``llama-canary``."""
    app = make_app()
    stack = Stack(app, "Test", env={"region": region} if region else None)
    artifacts = ModelArtifacts(stack, "Artifacts", stage=Stage.DEV)
    endpoints = {
        name: LlmEndpoint(
            stack,
            construct_id,
            config=ModelConfig.model_validate(variant(LLAMA, name=name)),
            artifacts=artifacts,
            stage=stage,
        )
        for name, construct_id in [(LLAMA, "Llm"), ("llama-canary", "Canary")]
        if routes is not None or name == LLAMA
    }
    gateway = StreamingGateway(
        stack,
        "Gateway",
        routes=(
            routes(endpoints)
            if routes is not None
            else {
                alias: [endpoints[LLAMA]] for alias in (aliases if aliases is not None else [LLAMA])
            }
        ),
        config=config or GatewayConfig(),
        stage=stage,
    )
    return gateway


def _gateway(
    *,
    region: str | None = "us-east-1",
    config: GatewayConfig | None = None,
    aliases: list[str] | None = None,
    routes: Callable[[Endpoints], RoutesArg] | None = None,
    stage: Stage = Stage.DEV,
) -> tuple[Template, StreamingGateway]:
    gateway = _new_gateway(
        region=region, config=config, aliases=aliases, routes=routes, stage=stage
    )
    return Template.from_stack(Stack.of(gateway)), gateway


def _config(**sections: Any) -> GatewayConfig:
    return GatewayConfig.model_validate(sections)


def _join(value: Any, refs: Mapping[str, str]) -> str:
    """A string, or ``{"Fn::Join": ["", [...]]}`` with each ``Ref`` replaced from ``refs``."""
    if isinstance(value, str):
        return value
    delimiter, parts = value["Fn::Join"]
    return str(delimiter).join(p if isinstance(p, str) else refs[p["Ref"]] for p in parts)


def _placeholder_key_ids(template: Template) -> dict[str, str]:
    """Logical id of every API key → a 10-character stand-in for the id AWS generates."""
    keys = template.find_resources("AWS::ApiGateway::ApiKey")
    return {logical_id: f"key{i:07d}" for i, logical_id in enumerate(sorted(keys))}


def _consumer_table(template: Template) -> tuple[ConsumerTable, dict[str, str]]:
    """The consumer table as the function would parse it, and placeholder id → logical id."""
    ids = _placeholder_key_ids(template)
    raw = _function_env(template)[CONSUMERS_ENV]
    assert set(raw) == {"Fn::Join"}, "key ids are resolved by CloudFormation"
    refs = {p["Ref"] for p in raw["Fn::Join"][1] if isinstance(p, dict)}
    assert refs == set(ids), "only API key ids are substituted"
    table = ConsumerTable.model_validate_json(_join(raw, ids))
    return table, {placeholder: logical_id for logical_id, placeholder in ids.items()}


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


# Variables whose values API Gateway generates without quotes or backslashes: ids, times,
# numbers, IPs, enums, the method and the API's own resource paths.
_FIXED_ALPHABET_VARIABLES = {
    "$context.requestId",
    "$context.extendedRequestId",
    "$context.requestTime",
    "$context.identity.sourceIp",
    "$context.identity.apiKeyId",
    "$context.httpMethod",
    "$context.resourcePath",
    "$context.protocol",
    "$context.status",
    "$context.responseLength",
    "$context.responseLatency",
    "$context.integration.latency",
    "$context.integration.status",
    "$context.error.responseType",
    "$context.xrayTraceId",
}


@pytest.mark.parametrize(
    "value", ["-", "", "403", "28/Nov/2026:02:05:00 +0000", "BAD_REQUEST_BODY"]
)
def test_access_log_line_is_json_for_every_request(value: str) -> None:
    """Missing values are logged as "-" (so every value must be quoted) and values are not
    escaped (so only variables without quotes or backslashes may appear)."""
    variables = re.findall(r"\$context\.[A-Za-z.]+", ACCESS_LOG_FORMAT)
    assert set(variables) <= _FIXED_ALPHABET_VARIABLES
    assert set(variables) == set(ACCESS_LOG_FIELDS.values())
    for variable in variables:
        assert f'"{variable}"' in ACCESS_LOG_FORMAT, f"{variable} must be quoted"
    line = re.sub(r"\$context\.[A-Za-z.]+", value, ACCESS_LOG_FORMAT)
    assert json.loads(line) == dict.fromkeys(ACCESS_LOG_FIELDS, value)


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
    assert key["error"]["message"] == "Incorrect API key provided."  # OpenAI's wording
    missing = _substitute(responses["UNAUTHORIZED"]["ResponseTemplates"]["application/json"])
    assert responses["UNAUTHORIZED"]["StatusCode"] == "401"
    assert "Authorization: Bearer" in missing["error"]["message"]
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
    assert {"requestId", "apiKeyId", "status", "responseLatencyMs", "errorType"} <= set(record)
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
    template, _ = _gateway(config=_config(api={"account_cloudwatch_role": True}))
    template.resource_count_is("AWS::ApiGateway::Account", 1)
    roles = [
        r
        for r in template.find_resources("AWS::IAM::Role").values()
        if "apigateway.amazonaws.com" in json.dumps(r["Properties"]["AssumeRolePolicyDocument"])
    ]
    assert [r["DeletionPolicy"] for r in roles] == ["Retain"]

    template, _ = _gateway()  # the default: the account's setting is left alone
    template.resource_count_is("AWS::ApiGateway::Account", 0)
    assert "apigateway.amazonaws.com" not in json.dumps(template.find_resources("AWS::IAM::Role"))


# --- Tiers, keys and usage plans ------------------------------------------------------------

THREE_CONSUMERS = _config(
    tiers={
        "gold": {"rate_limit": 50, "burst_limit": 100, "requests_per_month": 1_000_000,
                 "tokens_per_month": 90_000_000, "default_reservation": 2048},
        "free": {"rate_limit": 0.5, "burst_limit": 1, "requests_per_day": 50,
                 "tokens_per_day": 10_000, "default_reservation": 256},
        "internal": {"rate_limit": 100, "burst_limit": 200, "default_reservation": 4096},
    },
    consumers=[
        {"name": "team-a", "tier": "gold"},
        {"name": "hackathon", "tier": "free", "routes": ["cheap"]},
        {"name": "ci", "tier": "free"},
    ],
)  # fmt: skip


def _plans_by_description(template: Template) -> dict[str, dict[str, Any]]:
    return {
        plan["Properties"]["Description"].split(" ")[3].rstrip(":"): plan["Properties"]
        | {"LogicalId": logical_id}
        for logical_id, plan in template.find_resources("AWS::ApiGateway::UsagePlan").items()
    }


def _plan_of_each_key(template: Template) -> dict[str, str]:
    """API key logical id → usage plan logical id."""
    bindings = template.find_resources("AWS::ApiGateway::UsagePlanKey").values()
    result: dict[str, str] = {}
    for binding in bindings:
        props = binding["Properties"]
        assert props["KeyType"] == "API_KEY"
        key = props["KeyId"]["Ref"]
        assert key not in result, "a key can be in one usage plan per stage"
        result[key] = props["UsagePlanId"]["Ref"]
    return result


def test_default_config_has_two_tier_plans_and_one_default_key(
    gateway_template: Template,
) -> None:
    stage = Capture()
    plans = _plans_by_description(gateway_template)
    assert set(plans) == {"standard", "trial"}
    assert plans["standard"]["Throttle"] == {"RateLimit": 10, "BurstLimit": 20}
    assert plans["standard"]["Quota"] == {"Limit": 10000, "Period": "DAY"}
    assert plans["trial"]["Throttle"] == {"RateLimit": 1, "BurstLimit": 2}
    assert plans["trial"]["Quota"] == {"Limit": 200, "Period": "DAY"}
    gateway_template.has_resource_properties(
        "AWS::ApiGateway::UsagePlan",
        {"ApiStages": [Match.object_like({"Stage": {"Ref": stage}})]},
    )
    stages = gateway_template.find_resources("AWS::ApiGateway::Stage")
    assert list(stages) == [stage.as_string()]
    for plan in plans.values():
        assert len(plan["ApiStages"]) == 1
        assert plan["ApiStages"][0]["Stage"] == {"Ref": stage.as_string()}
    ((key_id, key),) = gateway_template.find_resources("AWS::ApiGateway::ApiKey").items()
    assert key["Properties"]["Enabled"] is True
    assert "default" in key["Properties"]["Description"]
    assert _plan_of_each_key(gateway_template) == {key_id: plans["standard"]["LogicalId"]}


def test_one_plan_per_tier_and_one_key_per_consumer_in_its_tier() -> None:
    template, gateway = _gateway(config=THREE_CONSUMERS, aliases=[LLAMA, "cheap"])
    plans = _plans_by_description(template)
    assert set(plans) == {"gold", "free", "internal"}
    assert plans["gold"]["Throttle"] == {"RateLimit": 50, "BurstLimit": 100}
    assert plans["gold"]["Quota"] == {"Limit": 1_000_000, "Period": "MONTH"}
    assert plans["free"]["Throttle"] == {"RateLimit": 0.5, "BurstLimit": 1}
    assert plans["free"]["Quota"] == {"Limit": 50, "Period": "DAY"}
    assert "Quota" not in plans["internal"]
    stack = Stack.of(gateway)
    key_ids = {
        name: stack.get_logical_id(key.node.default_child)  # type: ignore[arg-type]
        for name, key in gateway.api_keys.items()
    }
    assert list(key_ids) == ["team-a", "hackathon", "ci"]
    assert _plan_of_each_key(template) == {
        key_ids["team-a"]: plans["gold"]["LogicalId"],
        key_ids["hackathon"]: plans["free"]["LogicalId"],
        key_ids["ci"]: plans["free"]["LogicalId"],
    }
    assert set(gateway.usage_plans) == {"gold", "free", "internal"}


def test_no_key_value_is_in_the_template(gateway_template: Template) -> None:
    """AWS generates every key's value; the template never carries one."""
    template, _ = _gateway(config=THREE_CONSUMERS, aliases=[LLAMA, "cheap"])
    for t in (gateway_template, template):
        keys = t.find_resources("AWS::ApiGateway::ApiKey")
        assert keys
        for key in keys.values():
            assert "Value" not in key["Properties"]
            assert "GenerateDistinctId" not in key["Properties"]


def test_usage_plan_keys_do_not_depend_on_consumer_order() -> None:
    """Reordering consumers in gateway.yaml must not replace a key's plan binding."""

    def binding_ids(consumers: list[dict[str, str]]) -> set[str]:
        template, _ = _gateway(config=_config(consumers=consumers))
        return set(template.find_resources("AWS::ApiGateway::UsagePlanKey"))

    a = {"name": "a", "tier": "standard"}
    b = {"name": "b", "tier": "standard"}
    assert binding_ids([a, b]) == binding_ids([b, a])


def test_add_consumer_joins_its_tier_and_the_consumer_table() -> None:
    gateway = _new_gateway()
    key = gateway.add_consumer("team-b", tier="trial", routes=[LLAMA])
    assert gateway.api_keys["team-b"] is key
    template = Template.from_stack(Stack.of(gateway))
    template.resource_count_is("AWS::ApiGateway::ApiKey", 2)
    template.resource_count_is("AWS::ApiGateway::UsagePlanKey", 2)
    table, by_placeholder = _consumer_table(template)
    assert sorted(c.name for c in table.consumers.values()) == ["default", "team-b"]
    team_b = table.by_name("team-b")
    assert team_b is not None
    assert team_b.tier == "trial"
    assert team_b.routes == (LLAMA,)
    stack = Stack.of(gateway)
    (placeholder,) = [p for p, c in table.consumers.items() if c.name == "team-b"]
    assert by_placeholder[placeholder] == stack.get_logical_id(key.node.default_child)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "Team_B", "tier": "trial"}, "lower-case words joined by hyphens"),
        ({"name": "team-b", "tier": "gold"}, r"unknown tier 'gold'; use one of \['standard'"),
        ({"name": "team-b", "tier": "trial", "routes": ["nope"]}, "no route serves"),
        ({"name": "default", "tier": "trial"}, "clashes with 'default'"),
    ],
)
def test_add_consumer_rejects_what_would_not_work(kwargs: dict[str, Any], message: str) -> None:
    gateway = _new_gateway()
    name = kwargs.pop("name")
    with pytest.raises(ValueError, match=message):
        gateway.add_consumer(name, **kwargs)


# --- Consumer table -------------------------------------------------------------------------


def test_consumer_table_maps_each_key_id_to_its_consumer(gateway_template: Template) -> None:
    table, by_placeholder = _consumer_table(gateway_template)
    ((placeholder, consumer),) = table.consumers.items()
    assert consumer.name == "default"
    assert consumer.tier == "standard"
    assert consumer.routes is None
    assert by_placeholder[placeholder] in gateway_template.find_resources("AWS::ApiGateway::ApiKey")
    assert [t.name for t in table.tiers] == ["standard", "trial"]
    standard, trial = table.tiers
    assert (standard.tokens_per_day, standard.tokens_per_month) == (2_000_000, None)
    assert standard.default_reservation == 1024
    assert (trial.tokens_per_day, trial.tokens_per_month) == (50_000, 500_000)
    assert trial.default_reservation == 512


def test_consumer_table_carries_tiers_routes_and_every_key() -> None:
    template, gateway = _gateway(config=THREE_CONSUMERS, aliases=[LLAMA, "cheap"])
    table, by_placeholder = _consumer_table(template)
    stack = Stack.of(gateway)
    by_logical_id = {
        stack.get_logical_id(key.node.default_child): name  # type: ignore[arg-type]
        for name, key in gateway.api_keys.items()
    }
    assert {
        placeholder: (c.name, c.tier, c.routes) for placeholder, c in table.consumers.items()
    } == {
        placeholder: (
            by_logical_id[logical_id],
            {"team-a": "gold", "hackathon": "free", "ci": "free"}[by_logical_id[logical_id]],
            ("cheap",) if by_logical_id[logical_id] == "hackathon" else None,
        )
        for placeholder, logical_id in by_placeholder.items()
    }
    tiers = {t.name: t for t in table.tiers}
    assert tiers["gold"].tokens_per_month == 90_000_000
    assert tiers["gold"].tokens_per_day is None
    assert tiers["internal"].tokens_per_day is None
    assert tiers["internal"].tokens_per_month is None
    assert tiers["internal"].default_reservation == 4096
    hackathon = table.by_name("hackathon")
    assert hackathon is not None
    assert hackathon.may_use("cheap")
    assert not hackathon.may_use(LLAMA)
    # The same table with given ids, for local runs (no API Gateway).
    local = ConsumerTable.model_validate(gateway.consumer_table())
    assert sorted(local.consumers) == ["ci", "hackathon", "team-a"]


def test_consumers_may_be_empty() -> None:
    template, gateway = _gateway(config=_config(consumers=[]))
    template.resource_count_is("AWS::ApiGateway::ApiKey", 0)
    raw = _function_env(template)[CONSUMERS_ENV]
    table = ConsumerTable.model_validate_json(raw)
    assert table.consumers == {}
    assert gateway.api_keys == {}


# --- Quota table ----------------------------------------------------------------------------


def _quota_table(template: Template) -> tuple[str, dict[str, Any]]:
    ((logical_id, table),) = template.find_resources("AWS::DynamoDB::Table").items()
    return logical_id, table


def _quota_key(template: Template) -> tuple[str, dict[str, Any]]:
    """The table's key (the stack has another one: the alarm topic's)."""
    ((logical_id, key),) = [
        (i, k) for i, k in template.find_resources("AWS::KMS::Key").items() if "QuotaTable" in i
    ]
    return logical_id, key


def test_quota_table_is_keyed_by_pk_encrypted_recoverable_and_expiring(
    gateway_template: Template,
) -> None:
    logical_id, table = _quota_table(gateway_template)
    props = table["Properties"]
    assert props["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
    assert props["AttributeDefinitions"] == [{"AttributeName": "pk", "AttributeType": "S"}]
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert "GlobalSecondaryIndexes" not in props
    assert "LocalSecondaryIndexes" not in props
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert props["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    key_id, key = _quota_key(gateway_template)
    assert props["SSESpecification"] == {
        "SSEEnabled": True,
        "SSEType": "KMS",
        "KMSMasterKeyId": {"Fn::GetAtt": [key_id, "Arn"]},
    }
    assert key["Properties"]["EnableKeyRotation"] is True
    # dev: goes with the stack.
    assert props["DeletionProtectionEnabled"] is False
    assert table["DeletionPolicy"] == "Delete"
    assert key["DeletionPolicy"] == "Delete"
    env = _function_env(gateway_template)
    assert env[QUOTA_TABLE_ENV] == {"Ref": logical_id}
    assert LOCAL_CONSUMER_ENV not in env


def test_quota_table_is_the_one_the_quota_code_expects(gateway_template: Template) -> None:
    """Key and TTL attribute come from the wire contract, which lambda/llm_gateway/quota.py
    writes with."""
    gateway_template.has_resource_properties(
        "AWS::DynamoDB::Table",
        {
            "KeySchema": [{"AttributeName": contract.QUOTA_PARTITION_KEY, "KeyType": "HASH"}],
            "TimeToLiveSpecification": {
                "AttributeName": contract.QUOTA_TTL_ATTRIBUTE,
                "Enabled": True,
            },
        },
    )


def test_prod_retains_and_protects_the_quota_table() -> None:
    template, _ = _gateway(stage=Stage.PROD)
    _, table = _quota_table(template)
    assert table["Properties"]["DeletionProtectionEnabled"] is True
    assert table["DeletionPolicy"] == "Retain"
    assert table["UpdateReplacePolicy"] == "Retain"
    (key,) = [k for i, k in template.find_resources("AWS::KMS::Key").items() if "Quota" in i]
    assert key["DeletionPolicy"] == "Retain"
    assert key["Properties"]["PendingWindowInDays"] == 30


def test_function_gets_item_actions_on_the_quota_table_only(gateway_template: Template) -> None:
    table_id, _ = _quota_table(gateway_template)
    key_id, _ = _quota_key(gateway_template)
    statements = list(iam_statements(gateway_template))
    dynamodb = [s for s in statements if any(a.startswith("dynamodb:") for a in _actions(s))]
    assert len(dynamodb) == 1
    assert sorted(_actions(dynamodb[0])) == [
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
    ]
    assert sorted(_actions(dynamodb[0])) == sorted(ITEM_ACTIONS)
    assert dynamodb[0]["Resource"] == {"Fn::GetAtt": [table_id, "Arn"]}
    assert "Condition" not in dynamodb[0]
    kms = [s for s in statements if any(a.startswith("kms:") for a in _actions(s))]
    assert len(kms) == 1
    assert sorted(_actions(kms[0])) == [
        "kms:Decrypt",
        "kms:DescribeKey",
        "kms:Encrypt",
        "kms:GenerateDataKey",
    ]
    assert sorted(_actions(kms[0])) == sorted(KEY_ACTIONS)
    assert kms[0]["Resource"] == {"Fn::GetAtt": [key_id, "Arn"]}
    assert kms[0]["Condition"] == {"StringLike": {"kms:ViaService": "dynamodb.*.amazonaws.com*"}}
    assert all("*" not in a for s in statements for a in _actions(s))


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
            "MemorySize": 256,
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
        "LLM_GATEWAY_CONSUMERS",
        "LLM_GATEWAY_QUOTA_TABLE",
        "LLM_GATEWAY_MAX_REQUEST_BYTES",
        "LLM_GATEWAY_UPSTREAM_CONNECT_TIMEOUT_S",
        "LLM_GATEWAY_UPSTREAM_READ_TIMEOUT_S",
        "LLM_GATEWAY_CORS_ORIGINS",
        "POWERTOOLS_METRICS_NAMESPACE",
        "POWERTOOLS_SERVICE_NAME",
    }
    assert LOCAL_CONSUMER_ENV not in env, "local runs only: it bypasses the API key"
    # The metric contract: one namespace, and the stack's name as the service dimension so
    # that two stages in one account never share a metric.
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == "LlmGateway"
    assert env["POWERTOOLS_SERVICE_NAME"] == GATEWAY_STACK
    assert env["AWS_LAMBDA_EXEC_WRAPPER"] == "/opt/bootstrap"
    assert env["AWS_LWA_INVOKE_MODE"] == "response_stream"
    assert env["AWS_LWA_PORT"] == "8080"
    assert env["AWS_LWA_READINESS_CHECK_PATH"] == "/healthz"
    assert env["LLM_GATEWAY_MAX_REQUEST_BYTES"] == "1048576"
    # The runtime parses exactly this environment (deploy-time values as placeholders).
    resolved = {
        name: _join(value, _placeholder_key_ids(gateway_template))
        if name == CONSUMERS_ENV
        else ("quota-table" if name == QUOTA_TABLE_ENV else value)
        for name, value in env.items()
    }
    settings = Settings.from_env(resolved)
    assert settings.max_request_bytes == 1_048_576
    assert settings.upstream_connect_timeout_s == 5.0
    assert settings.upstream_read_timeout_s == 120.0


def test_route_table_matches_the_model_configs(gateway_template: Template, built: BuiltApp) -> None:
    raw = _function_env(gateway_template)[ROUTES_ENV]
    assert isinstance(raw, str), "the route table has no deploy-time values"
    table = RouteTable.model_validate_json(raw)
    # The function receives model_dump_json() of the very model the runtime parses.
    assert built.gateway is not None
    assert table == built.gateway.gateway.route_table
    assert raw == table.model_dump_json()
    assert [r.model for r in table.routes] == [DEEPSEEK, LLAMA]
    assert (table.cooldown_failures, table.cooldown_s) == (3, 30.0)
    for route in table.routes:
        (backend,) = route.backends
        endpoint = built.models[route.model].endpoint
        assert backend.name == route.model
        assert backend.endpoint_name == endpoint.endpoint_name
        assert backend.format == endpoint.config.stream_format
        assert backend.weight is None
        assert (route.first_byte_timeout_s, route.max_attempts, route.sticky) == (60.0, 2, False)
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
    # The licence is a synth-time acknowledgement: nothing is sent (LMI reads no accept_eula).
    assert llama.backends[0].custom_attributes is None
    assert llama.backends[0].max_tokens_default == 1024


def _canary_routes(endpoints: Endpoints) -> RoutesArg:
    stable, canary = endpoints[LLAMA], endpoints["llama-canary"]
    return {
        "llama": GatewayRoute(
            backends=(RouteBackend(stable, weight=90), RouteBackend(canary, weight=10)),
            first_byte_timeout_s=20,
            max_attempts=3,
            sticky=True,
        ),
        "llama-fallback": GatewayRoute.to(canary, stable),
        LLAMA: [stable],
    }


def test_route_table_has_weights_deadlines_attempts_and_cooldown() -> None:
    config = _config(fallback={"cooldown_failures": 5, "cooldown_s": 12.5})
    template, gateway = _gateway(config=config, routes=_canary_routes)
    table = RouteTable.model_validate_json(_function_env(template)[ROUTES_ENV])
    assert (table.cooldown_failures, table.cooldown_s) == (5, 12.5)
    llama = table.get("llama")
    assert llama is not None
    assert [(b.name, b.weight) for b in llama.backends] == [
        (LLAMA, 90),
        ("llama-canary", 10),
    ]
    assert (llama.first_byte_timeout_s, llama.max_attempts, llama.sticky) == (20.0, 3, True)
    fallback = table.get("llama-fallback")
    assert fallback is not None
    assert [(b.name, b.weight) for b in fallback.backends] == [
        ("llama-canary", None),
        (LLAMA, None),
    ]
    endpoints = {b.endpoint_name for route in table.routes for b in route.backends}
    assert len(endpoints) == 2
    # Both endpoints, each once, in the invoke grant.
    (invoke,) = [s for s in iam_statements(template) if "sagemaker:InvokeEndpoint" in _actions(s)]
    assert len(invoke["Resource"]) == 2
    assert gateway.routes["llama"].backends[1].weight == 10


def test_route_validation() -> None:
    """GatewayRoute is the contract's RoutePolicy plus endpoints; weights and limits are the
    contract's own checks, applied when the routing table is built."""
    endpoint = _new_gateway().routes[LLAMA].backends[0].endpoint
    with pytest.raises(ValueError, match="at least 1 item"):
        GatewayRoute(backends=())
    with pytest.raises(ValueError, match="max_attempts"):
        GatewayRoute(backends=(RouteBackend(endpoint),), max_attempts=6)
    with pytest.raises(ValueError, match="weights sum to 0"):
        build_route_table({"x": GatewayRoute(backends=(RouteBackend(endpoint, 0),))})
    with pytest.raises(ValueError, match="less than or equal to 1000"):
        build_route_table({"x": GatewayRoute(backends=(RouteBackend(endpoint, 1001),))})


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
    # The streaming call is authorized by InvokeEndpoint (its API reference).
    assert sorted(_actions(invoke[0])) == ["sagemaker:InvokeEndpoint"]
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
    function_logs = gateway_template.find_resources(
        "AWS::Lambda::Function", {"Properties": {"Handler": "run.sh"}}
    )
    (function,) = function_logs.values()
    assert {"Fn::GetAtt": [function["Properties"]["LoggingConfig"]["LogGroup"]["Ref"], "Arn"]} in [
        s["Resource"] for s in statements if "logs:PutLogEvents" in _actions(s)
    ]
    services = sorted({a.split(":")[0] for s in statements for a in _actions(s)})
    assert services == ["dynamodb", "kms", "logs", "sagemaker", "xray"]


def _actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return [action] if isinstance(action, str) else list(action)


def _flatten_arn(resource: Any) -> str:
    """``{"Fn::Join": ["", [...]]}`` → a string with ``${Ref}`` for references."""
    if isinstance(resource, str):
        return resource
    parts = resource["Fn::Join"][1]
    return "".join(p if isinstance(p, str) else "${" + p["Ref"] + "}" for p in parts)


def test_gateway_stack_imports_nothing_and_outputs_url_keys_and_table(
    gateway_template: Template,
) -> None:
    assert "Fn::ImportValue" not in json.dumps(gateway_template.to_json())
    outputs = gateway_template.find_outputs("*")
    url = json.dumps(outputs["ApiUrl"]["Value"])
    assert url.endswith('"/v1"]]}')
    assert ".execute-api.us-east-1." in url
    key = outputs["ApiKeyIdDefault"]
    assert "aws apigateway get-api-key --api-key <id> --include-value" in key["Description"]
    assert "consumer default (tier standard)" in key["Description"]
    assert key["Value"]["Ref"] in gateway_template.find_resources("AWS::ApiGateway::ApiKey")
    table_id, _ = _quota_table(gateway_template)
    assert outputs["QuotaTableName"]["Value"] == {"Ref": table_id}
    assert {o for o in outputs if not o.startswith("GatewayApiEndpoint")} == {
        "ApiUrl",
        "ApiKeyIdDefault",
        "QuotaTableName",
        "AlarmTopicArn",  # and the dashboard: tests/test_dashboard.py
        "DashboardName",
        "DashboardUrl",
    }


def test_prod_keeps_logs_for_a_year_and_protects_the_stack() -> None:
    _, built = build_default(stage=Stage.PROD)
    stack = built.gateway
    assert stack.termination_protection is True
    template = Template.from_stack(stack)
    for group in template.find_resources("AWS::Logs::LogGroup").values():
        assert group["Properties"]["RetentionInDays"] == 365
        assert group["DeletionPolicy"] == "Retain"
    _, table = _quota_table(template)
    assert table["DeletionPolicy"] == "Retain"
    assert table["Properties"]["DeletionProtectionEnabled"] is True


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
    assert len(gateway_groups) == 4  # function, authorizer, access, execution
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


def test_environment_check_counts_consumers_with_estimated_key_ids() -> None:
    """Key ids are unknown until deploy; the check counts each as 10 characters."""
    many = [{"name": f"consumer-{i:03d}", "tier": "standard"} for i in range(60)]
    with pytest.raises(
        ValueError, match=r"over Lambda's 4096-byte limit.*60 consumer\(s\); API key ids estimated"
    ):
        _gateway(config=_config(consumers=many))
    gateway = _new_gateway(config=_config(consumers=many[:30]))

    def add_many() -> None:
        for i in range(100):
            gateway.add_consumer(f"late-{i}", tier="trial")

    with pytest.raises(ValueError, match="serve fewer consumers"):
        add_many()
    assert 30 < len(gateway.consumers) < 130, "the keys that fit were added"


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


def test_routes_are_said_once() -> None:
    """Either endpoints= (routes from config.routes) or routes=, never both, never neither."""
    existing = _new_gateway()
    endpoint = existing.routes[LLAMA].backends[0].endpoint
    stack = Stack.of(existing)
    with pytest.raises(ValueError, match=r"exactly one of endpoints= .* and routes="):
        StreamingGateway(stack, "Neither", config=GatewayConfig(), stage=Stage.DEV)
    with pytest.raises(ValueError, match="exactly one of endpoints="):
        StreamingGateway(
            stack, "Both", config=GatewayConfig(), stage=Stage.DEV,
            endpoints={LLAMA: endpoint}, routes={LLAMA: [endpoint]},
        )  # fmt: skip
    routed = GatewayConfig.model_validate(
        {"routes": [{"model": "x", "backends": [{"model": LLAMA}]}]}
    )
    with pytest.raises(ValueError, match=r"routes= and config\.routes both say what to route"):
        StreamingGateway(stack, "Twice", config=routed, stage=Stage.DEV, routes={LLAMA: [endpoint]})
