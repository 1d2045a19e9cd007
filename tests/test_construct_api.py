"""The constructs from Python, as a team importing them would use them: one endpoint where a
list is expected, an endpoint deployed elsewhere as a backend, defaults for what can have one,
the dashboard from the gateway alone, outputs on request, account-wide settings opt-in."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk import Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk.assertions import Match, Template

from llm_gateway.contract import ROUTES_ENV
from llm_serving import (
    ExistingEndpoint,
    InferenceDashboard,
    LlmEndpoint,
    ModelArtifacts,
    Stage,
    StreamingGateway,
)
from llm_serving.config import GatewayConfig, ModelConfig, TierConfig
from llm_serving.config.containers import VllmContainer
from llm_serving.config.rollout import BlueGreenDeployment, RollingDeployment
from llm_serving.config.schema import HubWeights, S3Weights
from tests.conftest import iam_statements, make_app, variant
from tests.test_gateway import _function_env, _join, _placeholder_key_ids

LLAMA = "llama-2-13b-chat"


def _stack() -> tuple[Stack, LlmEndpoint]:
    stack = Stack(make_app(), "Team", env={"region": "eu-west-1"})
    endpoint = LlmEndpoint(
        stack,
        "Llm",
        config=ModelConfig.model_validate(variant(LLAMA)),
        artifacts=ModelArtifacts(stack, "Artifacts", stage=Stage.DEV),
        stage=Stage.DEV,
    )
    return stack, endpoint


def _routes(template: Template) -> dict[str, Any]:
    env = _function_env(template)
    table: dict[str, Any] = json.loads(_join(env[ROUTES_ENV], _placeholder_key_ids(template)))
    return table


def test_one_endpoint_where_a_list_is_expected() -> None:
    stack, endpoint = _stack()
    StreamingGateway(
        stack, "Gateway", routes={"chat": endpoint}, config=GatewayConfig(), stage=Stage.DEV
    )
    (route,) = _routes(Template.from_stack(stack))["routes"]
    assert route["model"] == "chat"
    assert [b["name"] for b in route["backends"]] == [LLAMA]


@pytest.mark.parametrize("route", ["llama", 3, ["llama"]])
def test_a_route_of_the_wrong_type_says_what_to_pass(route: Any) -> None:
    stack, _ = _stack()
    expected = "expected an LlmEndpoint, LlmInferenceComponent or ExistingEndpoint, a list"
    with pytest.raises(ValueError, match=expected):
        StreamingGateway(
            stack, "Gateway", routes={"chat": route}, config=GatewayConfig(), stage=Stage.DEV
        )


def test_an_existing_endpoint_is_a_backend_by_name_and_format() -> None:
    stack, endpoint = _stack()
    jumpstart = ExistingEndpoint(
        stack,
        "JumpStart",
        endpoint_name="Team-Llama-JumpStart",
        stream_format="tgi",
        prompt_template="llama2",
        name="llama-jumpstart",
        custom_attributes="accept_eula=true",
        max_model_len=4096,
    )
    StreamingGateway(
        stack,
        "Gateway",
        routes={"chat": [endpoint, jumpstart]},
        config=GatewayConfig(),
        stage=Stage.DEV,
    )
    template = Template.from_stack(stack)
    (route,) = _routes(template)["routes"]
    assert route["backends"][1] == {
        "name": "llama-jumpstart", "endpoint_name": "Team-Llama-JumpStart", "format": "tgi",
        "prompt_template": "llama2", "custom_attributes": "accept_eula=true",
        "max_tokens_default": 1024, "max_model_len": 4096, "weight": None, "image_input": None,
    }  # fmt: skip
    invoke = [s for s in iam_statements(template) if s["Action"] == "sagemaker:InvokeEndpoint"]
    resources = json.dumps([s["Resource"] for s in invoke])
    assert "endpoint/team-llama-jumpstart" in resources  # SageMaker ARNs are lower case
    assert len(invoke) == 1
    assert len(invoke[0]["Resource"]) == 2  # both endpoints, nothing else


def test_an_existing_endpoint_may_name_an_inference_component() -> None:
    stack, _ = _stack()
    shared = ExistingEndpoint(
        stack, "Shared", endpoint_name="team-shared", inference_component_name="Team-IC-7b",
        retry_after_s=120,
    )  # fmt: skip
    StreamingGateway(
        stack, "Gateway", routes={"chat": shared}, config=GatewayConfig(), stage=Stage.DEV
    )
    template = Template.from_stack(stack)
    ((backend,),) = [r["backends"] for r in _routes(template)["routes"]]
    assert (backend["inference_component_name"], backend["retry_after_s"]) == ("Team-IC-7b", 120)
    (invoke,) = [s for s in iam_statements(template) if s["Action"] == "sagemaker:InvokeEndpoint"]
    resources = json.dumps(invoke["Resource"])
    assert "endpoint/team-shared" in resources
    assert "inference-component/team-ic-7b" in resources


@pytest.mark.parametrize(
    ("props", "message"),
    [
        ({"stream_format": "tgi"}, "needs a prompt_template"),
        ({"retry_after_s": 60}, "retry_after_s applies only to an inference component"),
        ({"prompt_template": "llama2"}, "applies its own chat template"),
        ({"endpoint_name": ""}, "endpoint_name is empty"),
    ],
)
def test_an_existing_endpoint_that_cannot_work_fails_naming_the_construct(
    props: dict[str, Any], message: str
) -> None:
    stack, _ = _stack()
    with pytest.raises(ValueError, match=message) as raised:
        ExistingEndpoint(stack, "Elsewhere", **{"endpoint_name": "ep", **props})
    assert "Team/Elsewhere" in str(raised.value)


def test_defaults_for_what_the_class_already_implies() -> None:
    tier = TierConfig(rate_limit=1, burst_limit=1)
    assert tier.default_reservation == 1024
    assert VllmContainer(image_version="0.30.0", max_model_len=8192).family == "vllm"
    assert HubWeights(hub_id="Qwen/Qwen2.5-7B-Instruct").source == "hub"
    assert S3Weights(prefix="models/qwen/").source == "s3"
    assert RollingDeployment().strategy == "rolling"
    assert BlueGreenDeployment().strategy == "blue_green"


def test_the_dashboard_needs_only_the_gateway() -> None:
    stack, endpoint = _stack()
    config = GatewayConfig.model_validate({"observability": {"ttfb_p99_ms": 1234}})
    gateway = StreamingGateway(
        stack, "Gateway", routes={"chat": endpoint}, config=config, stage=Stage.DEV
    )
    board = InferenceDashboard(stack, "Board", gateway=gateway, stage=Stage.DEV)
    assert board.endpoints == [endpoint]
    assert board.config.ttfb_p99_ms == 1234
    Template.from_stack(stack).has_resource_properties(
        "AWS::CloudWatch::Alarm", {"Threshold": 1234, "MetricName": "TimeToFirstByte"}
    )


@pytest.mark.parametrize("outputs", [False, True])
def test_outputs_on_request_and_no_misleading_stage_url(outputs: bool) -> None:
    stack, endpoint = _stack()
    config = GatewayConfig.model_validate({"consumers": [{"name": "team-a", "tier": "standard"}]})
    gateway = StreamingGateway(
        stack, "Gateway", routes={"chat": endpoint}, config=config, stage=Stage.DEV,
        outputs=outputs,
    )  # fmt: skip
    found = Template.from_stack(stack).to_json().get("Outputs", {})
    assert not any("ApiEndpoint" in logical_id for logical_id in found)  # RestApi's own
    if not outputs:
        assert found == {}
        return
    url = next(v for k, v in found.items() if k.startswith("GatewayApiUrl"))
    assert "/v1" in json.dumps(url["Value"])
    key = next(v for k, v in found.items() if k.startswith("GatewayApiKeyIdTeamA"))
    assert "TeamAKey" in key["Value"]["Ref"]
    assert set(gateway.api_key_ids) == {"team-a"}


def test_the_account_wide_cloudwatch_role_is_opt_in() -> None:
    stack, endpoint = _stack()
    StreamingGateway(
        stack, "Gateway", routes={"chat": endpoint}, config=GatewayConfig(), stage=Stage.DEV
    )
    template = Template.from_stack(stack)
    template.resource_count_is("AWS::ApiGateway::Account", 0)
    opted_in = GatewayConfig.model_validate({"api": {"account_cloudwatch_role": True}})
    stack2, endpoint2 = _stack()
    StreamingGateway(
        stack2, "Gateway", routes={"chat": endpoint2}, config=opted_in, stage=Stage.DEV
    )
    Template.from_stack(stack2).resource_count_is("AWS::ApiGateway::Account", 1)


def test_the_function_in_a_vpc_gets_https_egress_and_the_eni_permissions() -> None:
    stack, endpoint = _stack()
    vpc = ec2.Vpc(stack, "Vpc", max_azs=2, nat_gateways=0, subnet_configuration=[
        ec2.SubnetConfiguration(name="isolated", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)
    ])  # fmt: skip
    gateway = StreamingGateway(
        stack, "Gateway", routes={"chat": endpoint}, config=GatewayConfig(), stage=Stage.DEV,
        vpc=vpc,
    )  # fmt: skip
    template = Template.from_stack(stack)
    (group,) = gateway.function_security_groups
    template.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "Handler": "run.sh",
            "VpcConfig": {
                "SubnetIds": Match.any_value(),
                "SecurityGroupIds": [
                    {"Fn::GetAtt": [Match.string_like_regexp("FunctionSecurityGroup"), "GroupId"]}
                ],
            },
        },
    )
    template.has_resource_properties(
        "AWS::EC2::SecurityGroup",
        {
            "GroupDescription": "LLM gateway function: outbound HTTPS to AWS APIs only",
            "SecurityGroupEgress": [
                Match.object_like({"CidrIp": "0.0.0.0/0", "FromPort": 443, "ToPort": 443})
            ],
        },
    )
    eni = [s for s in iam_statements(template) if "ec2:CreateNetworkInterface" in s["Action"]]
    assert len(eni) == 1
    assert "ec2:DeleteNetworkInterface" in eni[0]["Action"]
    assert group is not None


def test_subnets_without_a_vpc_are_refused() -> None:
    stack, endpoint = _stack()
    with pytest.raises(ValueError, match="fix: pass vpc= too"):
        StreamingGateway(
            stack, "Gateway", routes={"chat": endpoint}, config=GatewayConfig(),
            stage=Stage.DEV, vpc_subnets=ec2.SubnetSelection(),
        )  # fmt: skip
