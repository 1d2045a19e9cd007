"""Inference components on a shared endpoint (``hosting.mode: component``): the example in
examples/scale-to-zero synthesizes into the component, the endpoint's managed instance
scaling, both scaling directions and the alarm that scales out from zero; the route table and
the function's grant name the component."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template

from llm_gateway.contract import ROUTES_ENV
from llm_serving.config import load_model_configs
from stacks import BuiltApp
from tests.conftest import ROOT, build_default, iam_statements
from tests.test_gateway import _function_env, _join, _placeholder_key_ids

EXAMPLE = ROOT / "examples" / "scale-to-zero"


@pytest.fixture(scope="module")
def built() -> BuiltApp:
    return build_default(config_dir=EXAMPLE)[1]


@pytest.fixture(scope="module")
def shared(built: BuiltApp) -> Template:
    return Template.from_stack(built.shared["small-models"])


def _names(built: BuiltApp) -> dict[str, str]:
    stack = built.shared["small-models"]
    return {name: c.inference_component_name for name, c in stack.components.items()}


def test_the_example_packs_two_models_on_one_shared_endpoint(built: BuiltApp) -> None:
    assert set(built.shared) == {"small-models"}
    assert built.models == {}  # no dedicated endpoint
    assert set(built.shared["small-models"].components) == {
        "qwen2-5-0-5b-instruct",
        "qwen2-5-1-5b-instruct",
    }
    names = {c.name for c in load_model_configs(ROOT / "model_configs")}
    assert not names & {"qwen2-5-0-5b-instruct", "qwen2-5-1-5b-instruct"}


def test_the_endpoint_config_has_managed_scaling_routing_and_no_model(shared: Template) -> None:
    shared.resource_count_is("AWS::SageMaker::EndpointConfig", 1)
    shared.has_resource_properties(
        "AWS::SageMaker::EndpointConfig",
        {
            "ExecutionRoleArn": Match.any_value(),
            "ProductionVariants": [
                {
                    "VariantName": "AllTraffic",
                    "InstanceType": "ml.g5.12xlarge",
                    "InitialInstanceCount": 1,
                    "InferenceAmiVersion": "al2023-ami-sagemaker-inference-gpu-4-1",
                    "ManagedInstanceScaling": {
                        "Status": "ENABLED",
                        "MinInstanceCount": 0,
                        "MaxInstanceCount": 1,
                    },
                    "RoutingConfig": {"RoutingStrategy": "LEAST_OUTSTANDING_REQUESTS"},
                }
            ],
        },
    )
    (config,) = shared.find_resources("AWS::SageMaker::EndpointConfig").values()
    (variant,) = config["Properties"]["ProductionVariants"]
    assert "ModelName" not in variant
    assert "InitialVariantWeight" not in variant


def test_each_model_is_a_component_with_copies_and_per_copy_resources(
    built: BuiltApp, shared: Template
) -> None:
    components = shared.find_resources("AWS::SageMaker::InferenceComponent")
    assert len(components) == 2
    endpoint = built.shared["small-models"].endpoint.endpoint_name
    for name in _names(built).values():
        shared.has_resource_properties(
            "AWS::SageMaker::InferenceComponent",
            {
                "InferenceComponentName": name,
                "EndpointName": endpoint,
                "VariantName": "AllTraffic",
                "RuntimeConfig": {"CopyCount": 1},
                "Specification": {
                    "ModelName": Match.any_value(),
                    "ComputeResourceRequirements": {
                        "NumberOfAcceleratorDevicesRequired": 1,
                        "MinMemoryRequiredInMb": 1024,
                    },
                    "StartupParameters": Match.object_like(
                        {"ContainerStartupHealthCheckTimeoutInSeconds": 1200}
                    ),
                },
            },
        )
    for component in components.values():
        assert any("Endpoint" in d for d in component.get("DependsOn", []))


def test_copies_scale_between_zero_and_max_on_concurrency_per_copy(
    built: BuiltApp, shared: Template
) -> None:
    for name in _names(built).values():
        shared.has_resource_properties(
            "AWS::ApplicationAutoScaling::ScalableTarget",
            {
                "ServiceNamespace": "sagemaker",
                "ResourceId": f"inference-component/{name}",
                "ScalableDimension": "sagemaker:inference-component:DesiredCopyCount",
                "MinCapacity": 0,
                "MaxCapacity": 2,
            },
        )
    shared.has_resource_properties(
        "AWS::ApplicationAutoScaling::ScalingPolicy",
        {
            "PolicyType": "TargetTrackingScaling",
            "TargetTrackingScalingPolicyConfiguration": {
                "PredefinedMetricSpecification": {
                    "PredefinedMetricType": (
                        "SageMakerInferenceComponentConcurrentRequestsPerCopyHighResolution"
                    )
                },
                "TargetValue": 8,
                "ScaleInCooldown": 300,
                "ScaleOutCooldown": 60,
            },
        },
    )


def _alarm_for(template: Template, policy_id: str) -> dict[str, Any]:
    alarms = [
        a["Properties"]
        for a in template.find_resources("AWS::CloudWatch::Alarm").values()
        if a["Properties"].get("AlarmActions") == [{"Fn::GetAtt": [policy_id, "Arn"]}]
    ]
    assert len(alarms) == 1, alarms
    return alarms[0]


def test_a_request_without_capacity_scales_out_from_zero(built: BuiltApp, shared: Template) -> None:
    policies = shared.find_resources(
        "AWS::ApplicationAutoScaling::ScalingPolicy",
        {"Properties": {"StepScalingPolicyConfiguration": {"AdjustmentType": "ChangeInCapacity"}}},
    )
    assert len(policies) == 2
    for policy_id, policy in policies.items():
        assert policy["Properties"]["StepScalingPolicyConfiguration"] == {
            "AdjustmentType": "ChangeInCapacity",
            "MetricAggregationType": "Maximum",
            "Cooldown": 60,
            "StepAdjustments": [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}],
        }
        alarm = _alarm_for(shared, policy_id)
        assert alarm["Namespace"] == "AWS/SageMaker"
        assert alarm["MetricName"] == "NoCapacityInvocationFailures"
        assert alarm["Statistic"] == "Sum"
        assert alarm["Period"] == 60
        assert alarm["Threshold"] == 1
        assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
        (dimension,) = alarm["Dimensions"]
        assert dimension["Name"] == "InferenceComponentName"
        assert dimension["Value"] in _names(built).values()


def test_idle_components_are_set_to_zero_copies_after_the_configured_minutes(
    shared: Template,
) -> None:
    policies = shared.find_resources(
        "AWS::ApplicationAutoScaling::ScalingPolicy",
        {"Properties": {"StepScalingPolicyConfiguration": {"AdjustmentType": "ExactCapacity"}}},
    )
    periods = []
    for policy_id, policy in policies.items():
        steps = policy["Properties"]["StepScalingPolicyConfiguration"]["StepAdjustments"]
        assert steps == [{"MetricIntervalUpperBound": 0, "ScalingAdjustment": 0}]
        alarm = _alarm_for(shared, policy_id)
        assert alarm["ComparisonOperator"] == "LessThanThreshold"
        assert alarm["Threshold"] == 1
        assert alarm["TreatMissingData"] == "breaching"
        (expression, *used) = alarm["Metrics"]
        # A request that found no copy is activity: the copy it woke must not be reset to 0.
        assert expression["Expression"] == "FILL(invocations, 0) + FILL(no_capacity, 0)"
        assert {m["Id"]: m["MetricStat"]["Metric"]["MetricName"] for m in used} == {
            "invocations": "Invocations",
            "no_capacity": "NoCapacityInvocationFailures",
        }
        periods.append(alarm["EvaluationPeriods"])
    assert sorted(periods) == [10, 15]  # idle_minutes_to_zero of the two configs


def test_the_gateway_invokes_each_component_by_name_with_its_retry_after(
    built: BuiltApp,
) -> None:
    assert built.gateway is not None
    template = Template.from_stack(built.gateway)
    env = _function_env(template)
    routes = json.loads(_join(env[ROUTES_ENV], _placeholder_key_ids(template)))
    endpoint = built.shared["small-models"].endpoint.endpoint_name
    backends = {r["model"]: r["backends"] for r in routes["routes"]}
    names = _names(built)
    for model, name in names.items():
        (target,) = backends[model]
        assert target["endpoint_name"] == endpoint
        assert target["inference_component_name"] == name
        assert target["retry_after_s"] == 300
    invoke = [s for s in iam_statements(template) if s["Action"] == "sagemaker:InvokeEndpoint"]
    (statement,) = invoke
    resources = json.dumps(statement["Resource"])
    assert f"endpoint/{endpoint.lower()}" in resources
    for name in names.values():
        assert f"inference-component/{name.lower()}" in resources


def test_the_dashboard_charts_copies_no_capacity_and_gpu_per_component(
    built: BuiltApp,
) -> None:
    assert built.gateway is not None
    template = Template.from_stack(built.gateway)
    (dashboard,) = template.find_resources("AWS::CloudWatch::Dashboard").values()
    body = json.dumps(dashboard["Properties"]["DashboardBody"])
    for metric in (
        "NoCapacityInvocationFailures",
        "GPUUtilizationNormalized",
        "GPUMemoryUtilizationNormalized",
        "ConcurrentRequestsPerCopy",
        "CPUUtilizationNormalized",  # copies reporting (SampleCount)
        "NoCapacity",  # the gateway's own count
    ):
        assert metric in body, metric
    for name in _names(built).values():
        assert name in body


def test_the_endpoint_role_pulls_the_images(shared: Template) -> None:
    statements = [
        s for s in iam_statements(shared) if "ecr:BatchGetImage" in json.dumps(s["Action"])
    ]
    assert statements
    assert all(s["Resource"] != "*" for s in statements)


def test_the_synthesized_example_has_no_model_on_the_endpoint(tmp_path: Path) -> None:
    """LlmEndpoint refuses a component config (it would build a dedicated endpoint)."""
    from aws_cdk import Stack

    from llm_serving.artifacts import ModelArtifacts
    from llm_serving.endpoint import LlmEndpoint
    from llm_serving.stage import Stage
    from tests.conftest import make_app

    config = load_model_configs(EXAMPLE)[0]
    stack = Stack(make_app(), "S", env={"region": "us-east-1"})
    artifacts = ModelArtifacts(stack, "Artifacts", stage=Stage.DEV)
    with pytest.raises(ValueError, match="build it with LlmInferenceComponent"):
        LlmEndpoint(stack, "E", config=config, artifacts=artifacts, stage=Stage.DEV)


def _constructs(region: str, **owner_changes: Any) -> Template:
    """The two constructs used directly, as another app would (no stacks.build)."""
    import yaml
    from aws_cdk import Stack

    from llm_serving import LlmInferenceComponent, ModelArtifacts, SharedLlmEndpoint, Stage
    from llm_serving.config import parse_model_config, shared_endpoint_plans
    from tests.conftest import make_app

    owner = yaml.safe_load((EXAMPLE / "qwen2-5-1-5b-instruct.yaml").read_text())
    owner["hosting"].update(owner_changes)
    config = parse_model_config(owner, Path("owner.yaml"))
    (plan,) = shared_endpoint_plans([(Path("owner.yaml"), config)]).values()
    stack = Stack(make_app(), "Direct", env={"region": region})
    artifacts = ModelArtifacts(stack, "Artifacts", stage=Stage.DEV)
    endpoint = SharedLlmEndpoint(stack, "Shared", plan=plan, artifacts=artifacts, images=[])
    LlmInferenceComponent(
        stack, "Model", config=config, endpoint=endpoint, artifacts=artifacts, stage=Stage.DEV
    )
    return Template.from_stack(stack)


def test_copies_that_never_reach_zero_get_no_zero_policies() -> None:
    template = _constructs("us-east-1", copies={"min": 1, "max": 2, "initial": 1},
                           idle_minutes_to_zero=None)  # fmt: skip
    template.resource_count_is("AWS::ApplicationAutoScaling::ScalingPolicy", 1)
    template.resource_count_is("AWS::CloudWatch::Alarm", 0)
    template.has_resource_properties(
        "AWS::ApplicationAutoScaling::ScalableTarget", {"MinCapacity": 1, "MaxCapacity": 2}
    )


def test_the_shared_endpoint_construct_refuses_a_region_that_refuses_zero() -> None:
    with pytest.raises(ValueError, match=r"owner\.yaml: hosting\.endpoint\.min_instances: 0"):
        _constructs("eu-west-3")
