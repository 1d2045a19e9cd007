"""LlmEndpoint: model, endpoint config, endpoint, role, autoscaling, rollback, grants, metrics."""

from __future__ import annotations

import gzip
import io
import re
import tarfile
from typing import Any

import pytest
from aws_cdk import Stack
from aws_cdk import aws_iam as iam
from aws_cdk.assertions import Capture, Match, Template

from llm_serving import LlmEndpoint, ModelArtifacts, Stage
from llm_serving.config.schema import ModelConfig
from llm_serving.lmi_package import build_model_tarball, render_serving_properties
from tests.conftest import iam_statements, make_app, variant

DEEPSEEK_STACK = "LlmServing-dev-Model-deepseek-r1-distill-qwen-7b"
LLAMA_STACK = "LlmServing-dev-Model-llama-2-13b-chat"


def _endpoint(
    config: dict[str, Any], *, region: str | None = "us-east-1"
) -> tuple[Template, LlmEndpoint]:
    app = make_app()
    env = {"region": region} if region else None
    stack = Stack(app, "Test", env=env)
    artifacts = ModelArtifacts(stack, "Artifacts", stage=Stage.DEV)
    endpoint = LlmEndpoint(
        stack,
        "Llm",
        config=ModelConfig.model_validate(config),
        artifacts=artifacts,
        stage=Stage.DEV,
    )
    return Template.from_stack(stack), endpoint


def test_each_model_gets_its_instance_type(templates: dict[str, Template]) -> None:
    for stack, instance_type, ami in [
        (DEEPSEEK_STACK, "ml.g5.2xlarge", "al2023-ami-sagemaker-inference-gpu-4-1"),
        (LLAMA_STACK, "ml.g5.12xlarge", "al2-ami-sagemaker-inference-gpu-3-1"),
    ]:
        templates[stack].has_resource_properties(
            "AWS::SageMaker::EndpointConfig",
            {
                "ProductionVariants": [
                    Match.object_like(
                        {"InstanceType": instance_type, "InferenceAmiVersion": ami,
                         "VariantName": "AllTraffic", "InitialInstanceCount": 1}
                    )
                ]
            },
        )  # fmt: skip
        templates[stack].resource_count_is("AWS::SageMaker::Endpoint", 1)


def test_vllm_environment_carries_reasoning_parser(templates: dict[str, Template]) -> None:
    templates[DEEPSEEK_STACK].has_resource_properties(
        "AWS::SageMaker::Model",
        {
            "PrimaryContainer": {
                "Image": "763104351884.dkr.ecr.us-east-1.amazonaws.com/vllm:"
                "0.30.0-gpu-py312-cu130-ubuntu24.04-sagemaker",
                "Environment": Match.object_like(
                    {
                        "SM_VLLM_MODEL": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
                        "SM_VLLM_REASONING_PARSER": "deepseek_r1",
                        "SM_VLLM_MAX_MODEL_LEN": "16384",
                        "SM_VLLM_ENABLE_PREFIX_CACHING": "true",
                        "SM_VLLM_SERVED_MODEL_NAME": "deepseek-r1-distill-qwen-7b",
                    }
                ),
            }
        },
    )


def test_lmi_model_points_at_the_serving_properties_package(
    templates: dict[str, Template],
) -> None:
    url = Capture()
    templates[LLAMA_STACK].has_resource_properties(
        "AWS::SageMaker::Model",
        {
            "PrimaryContainer": {
                "Image": Match.string_like_regexp(r"/djl-inference:0\.33\.0-lmi15\.0\.0-cu128$"),
                "ModelDataUrl": {"Fn::Sub": url},
                # The Hub token is a dynamic reference, never a value.
                "Environment": {
                    "HF_TOKEN": "{{resolve:secretsmanager:llm-serving/hugging-face-token"
                    ":SecretString:::}}"
                },
            }
        },
    )
    assert url.as_string().startswith("s3://cdk-hnb659fds-assets-${AWS::AccountId}-us-east-1/")


def test_serving_properties_render_the_llama_config() -> None:
    config = ModelConfig.model_validate(variant("llama-2-13b-chat"))
    lines = render_serving_properties(config).splitlines()
    assert lines[0] == "engine=Python"
    for expected in [
        "option.model_id=meta-llama/Llama-2-13b-chat-hf",
        "option.tensor_parallel_degree=4",
        "option.rolling_batch=vllm",
        "option.max_rolling_batch_size=64",
        "option.model_loading_timeout=1800",  # LMI's documented default, always written
        "option.max_model_len=4096",
        "option.dtype=fp16",
    ]:
        assert expected in lines


def test_model_tarball_is_reproducible_and_holds_serving_properties() -> None:
    first = build_model_tarball("engine=Python\n")
    assert first == build_model_tarball("engine=Python\n")
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(first))) as tar:
        assert tar.getnames() == ["serving.properties"]
        member = tar.extractfile("serving.properties")
        assert member is not None
        assert member.read() == b"engine=Python\n"


def test_no_kms_key_on_instance_storage_types(templates: dict[str, Template]) -> None:
    """g5 has NVMe instance storage: SageMaker rejects KmsKeyId there (hardware-encrypted)."""
    for stack in (DEEPSEEK_STACK, LLAMA_STACK):
        config = templates[stack].find_resources("AWS::SageMaker::EndpointConfig")
        (resource,) = config.values()
        assert "KmsKeyId" not in resource["Properties"]


def test_kms_key_on_ebs_backed_instance_types() -> None:
    template, _ = _endpoint(
        variant("deepseek-r1-distill-qwen-7b", instance__type="ml.p3.8xlarge",
                container__tensor_parallel_degree=4, architecture__dtype="fp16",
                container__max_model_len=2048, gateway__max_tokens_default=1024,
                instance__volume_size_gb=100,
                instance__inference_ami_version=None)
    )  # fmt: skip
    template.has_resource_properties(
        "AWS::SageMaker::EndpointConfig",
        {
            "KmsKeyId": {"Fn::GetAtt": [Match.string_like_regexp("ArtifactsKey"), "Arn"]},
            "ProductionVariants": [Match.object_like({"VolumeSizeInGB": 100})],
        },
    )


def test_volume_size_on_instance_storage_type_is_rejected() -> None:
    with pytest.raises(ValueError, match="volume_size_gb"):
        _endpoint(variant("deepseek-r1-distill-qwen-7b", instance__volume_size_gb=100))


def test_no_iam_statement_has_a_wildcard_action(templates: dict[str, Template]) -> None:
    for name, template in templates.items():
        for statement in iam_statements(template):
            actions = statement["Action"]
            for action in [actions] if isinstance(actions, str) else actions:
                assert "*" not in action, f"{name}: {action}"


def _execution_role_statements(template: Template) -> list[dict[str, Any]]:
    roles = template.find_resources(
        "AWS::IAM::Role",
        {"Properties": {"AssumeRolePolicyDocument": {"Statement": [Match.object_like(
            {"Principal": {"Service": "sagemaker.amazonaws.com"}})]}}},
    )  # fmt: skip
    (role_id,) = roles
    return [
        statement
        for policy in template.find_resources(
            "AWS::IAM::Policy", {"Properties": {"Roles": [{"Ref": role_id}]}}
        ).values()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def test_execution_role_is_least_privilege(templates: dict[str, Template]) -> None:
    statements = _execution_role_statements(templates[LLAMA_STACK])
    star = [s for s in statements if s["Resource"] == "*"]
    assert sorted(s["Action"] for s in star) == [
        "cloudwatch:PutMetricData",
        "ecr:GetAuthorizationToken",
    ]
    (metrics,) = [s for s in star if s["Action"] == "cloudwatch:PutMetricData"]
    assert metrics["Condition"] == {
        "StringEquals": {"cloudwatch:namespace": ["AWS/SageMaker", "/aws/sagemaker/Endpoints"]}
    }
    (pull,) = [s for s in statements if "ecr:BatchGetImage" in s["Action"]]
    assert pull["Resource"] == "arn:aws:ecr:us-east-1:763104351884:repository/djl-inference"
    (logs,) = [s for s in statements if "logs:PutLogEvents" in s["Action"]]
    group = "".join(p for p in logs["Resource"]["Fn::Join"][1] if isinstance(p, str))
    assert re.search(r":log-group:/aws/sagemaker/Endpoints/LlmServing[^:*]+:\*$", group), group
    templates[LLAMA_STACK].has_resource_properties(
        "Custom::LogRetention",
        {"LogGroupName": Match.string_like_regexp(r"^/aws/sagemaker/Endpoints/LlmServing")},
    )
    for resource in templates[LLAMA_STACK].find_resources("AWS::IAM::Role").values():
        if resource["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
            "Service": "sagemaker.amazonaws.com"
        }:
            assert "ManagedPolicyArns" not in resource["Properties"]


def test_s3_weights_are_mounted_isolated_and_read_only_from_their_prefix() -> None:
    template, _ = _endpoint(
        variant("deepseek-r1-distill-qwen-7b", weights={"source": "s3", "prefix": "models/ds7b/"})
    )
    template.has_resource_properties(
        "AWS::SageMaker::Model",
        {
            "EnableNetworkIsolation": True,
            "PrimaryContainer": Match.object_like(
                {
                    "Environment": Match.object_like({"SM_VLLM_MODEL": "/opt/ml/model"}),
                    "ModelDataSource": {
                        "S3DataSource": {
                            "CompressionType": "None",
                            "S3DataType": "S3Prefix",
                            "S3Uri": Match.any_value(),
                        }
                    },
                }
            ),
        },
    )
    reads = [s for s in iam_statements(template) if s["Action"] == "s3:GetObject"]
    assert len(reads) == 1
    assert reads[0]["Resource"]["Fn::Join"][1][-1] == "/models/ds7b/*"


def test_lmi_s3_weights_go_through_option_model_id() -> None:
    template, endpoint = _endpoint(
        variant("llama-2-13b-chat", weights={"source": "s3", "prefix": "models/llama/"})
    )
    assert "option.model_id" not in endpoint.serving_properties
    model = template.find_resources("AWS::SageMaker::Model")
    (resource,) = model.values()
    env = resource["Properties"]["PrimaryContainer"]["Environment"]
    assert env["OPTION_MODEL_ID"]["Fn::Join"][1][-1] == "/models/llama/"
    assert resource["Properties"]["EnableNetworkIsolation"] is False


def test_autoscaling_tracks_concurrent_requests(templates: dict[str, Template]) -> None:
    template = templates[DEEPSEEK_STACK]
    template.has_resource_properties(
        "AWS::ApplicationAutoScaling::ScalableTarget",
        {
            "MinCapacity": 1,
            "MaxCapacity": 2,
            "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
            "ResourceId": Match.string_like_regexp(r"^endpoint/LlmServing.*/variant/AllTraffic$"),
            # No RoleARN: Application Auto Scaling uses its SageMaker service-linked role.
            "RoleARN": Match.absent(),
        },
    )
    assert not template.find_resources(
        "AWS::IAM::Role",
        {"Properties": {"AssumeRolePolicyDocument": {"Statement": [Match.object_like(
            {"Principal": {"Service": "application-autoscaling.amazonaws.com"}})]}}},
    )  # fmt: skip
    template.has_resource_properties(
        "AWS::ApplicationAutoScaling::ScalingPolicy",
        {
            "TargetTrackingScalingPolicyConfiguration": {
                "PredefinedMetricSpecification": {
                    "PredefinedMetricType": (
                        "SageMakerVariantConcurrentRequestsPerModelHighResolution"
                    )
                },
                "TargetValue": 16,
                "ScaleInCooldown": 900,
                "ScaleOutCooldown": 300,
            }
        },
    )


def test_rolling_deployment_rolls_back_on_the_5xx_alarm() -> None:
    template, _ = _endpoint(
        variant(
            "deepseek-r1-distill-qwen-7b",
            instance__initial_count=2,
            scaling={"min_instances": 2, "max_instances": 4},
            deployment={"strategy": "rolling", "batch_instances": 1},
        )
    )
    alarm = Capture()
    template.has_resource_properties(
        "AWS::SageMaker::Endpoint",
        {
            "RetainAllVariantProperties": True,
            "DeploymentConfig": {
                "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": {"Ref": alarm}}]},
                "RollingUpdatePolicy": Match.object_like(
                    {"MaximumBatchSize": {"Type": "INSTANCE_COUNT", "Value": 1}}
                ),
            },
        },
    )
    alarm_resource = template.find_resources("AWS::CloudWatch::Alarm")[alarm.as_string()]
    props = alarm_resource["Properties"]
    assert props["MetricName"] == "Invocation5XXErrors"
    assert props["Statistic"] == "Average"
    assert props["Threshold"] == 0.05


def test_blue_green_canary() -> None:
    template, _ = _endpoint(
        variant("deepseek-r1-distill-qwen-7b",
                deployment={"strategy": "blue_green", "traffic": "canary", "canary_percent": 10})
    )  # fmt: skip
    template.has_resource_properties(
        "AWS::SageMaker::Endpoint",
        {
            "DeploymentConfig": Match.object_like(
                {
                    "BlueGreenUpdatePolicy": Match.object_like(
                        {
                            "TrafficRoutingConfiguration": Match.object_like(
                                {"Type": "CANARY",
                                 "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 10}}
                            )
                        }
                    )
                }
            )
        },
    )  # fmt: skip


def test_grant_invoke_is_scoped_to_this_endpoint() -> None:
    app = make_app()
    stack = Stack(app, "Test", env={"region": "us-east-1"})
    artifacts = ModelArtifacts(stack, "Artifacts", stage=Stage.DEV)
    endpoint = LlmEndpoint(
        stack, "Llm",
        config=ModelConfig.model_validate(variant("deepseek-r1-distill-qwen-7b")),
        artifacts=artifacts,
        stage=Stage.DEV,
    )  # fmt: skip
    caller = iam.Role(stack, "Caller", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
    endpoint.grant_invoke(caller)
    policies = Template.from_stack(stack).find_resources(
        "AWS::IAM::Policy", {"Properties": {"Roles": [{"Ref": Match.string_like_regexp("Caller")}]}}
    )
    (policy,) = policies.values()
    (statement,) = policy["Properties"]["PolicyDocument"]["Statement"]
    # InvokeEndpointWithResponseStream is authorized by sagemaker:InvokeEndpoint alone.
    assert statement["Action"] == "sagemaker:InvokeEndpoint"
    resource = "".join(
        p if isinstance(p, str) else "<ref>" for p in statement["Resource"]["Fn::Join"][1]
    )
    assert resource.endswith(f":endpoint/{endpoint.endpoint_name.lower()}")


@pytest.mark.parametrize(
    ("config_name", "instance_type", "gpus"),
    [
        ("deepseek-r1-distill-qwen-7b", "ml.g5.2xlarge", 1),
        ("llama-2-13b-chat", "ml.g5.12xlarge", 4),
    ],
)
def test_gpu_metrics_are_normalized_by_gpu_count(
    config_name: str, instance_type: str, gpus: int
) -> None:
    _, endpoint = _endpoint(variant(config_name))
    for metric, name in [
        (endpoint.metric_gpu_utilization(), "GPUUtilization"),
        (endpoint.metric_gpu_memory_utilization(), "GPUMemoryUtilization"),
    ]:
        assert metric.expression == f"raw / {gpus}"
        raw = metric.using_metrics["raw"]
        assert isinstance(raw, type(endpoint.metric_invocations()))
        assert raw.metric_name == name
        assert raw.namespace == "/aws/sagemaker/Endpoints"
        assert raw.dimensions == {
            "EndpointName": endpoint.endpoint_name,
            "VariantName": "AllTraffic",
        }
    latency = endpoint.metric_latency_ms()
    assert latency.expression == "modellatency_p90 / 1000"


def test_region_agnostic_stack_maps_registry_account_at_deploy_time() -> None:
    template, _ = _endpoint(variant("deepseek-r1-distill-qwen-7b"), region=None)
    mappings = template.to_json()["Mappings"]
    (mapping,) = mappings.values()
    assert mapping["af-south-1"] == {"Account": "626614931356"}
    assert mapping["us-east-1"] == {"Account": "763104351884"}


def test_latency_helper_converts_microseconds_with_ids_that_can_share_a_graph() -> None:
    _, endpoint = _endpoint(variant("deepseek-r1-distill-qwen-7b"))
    expressions = [endpoint.metric_latency_ms(statistic=s) for s in ("p50", "p90", "p99.9")]
    expressions.append(endpoint.metric_latency_ms("OverheadLatency", statistic="p90"))
    ids = [next(iter(e.using_metrics)) for e in expressions]
    assert ids == [
        "modellatency_p50",
        "modellatency_p90",
        "modellatency_p99_9",
        "overheadlatency_p90",
    ]
    for expression, raw_id in zip(expressions, ids, strict=True):
        assert expression.expression == f"{raw_id} / 1000"
        raw = expression.using_metrics[raw_id]
        assert isinstance(raw, type(endpoint.metric_invocations()))
        assert raw.namespace == "AWS/SageMaker"
        assert raw.dimensions == {
            "EndpointName": endpoint.endpoint_name,
            "VariantName": "AllTraffic",
        }
    assert expressions[1].label == "Model latency p90 (ms)"
    assert expressions[3].label == "Overhead latency p90 (ms)"


def test_host_metric_helpers() -> None:
    _, endpoint = _endpoint(variant("deepseek-r1-distill-qwen-7b"))
    for metric, name in [
        (endpoint.metric_cpu_utilization(), "CPUUtilization"),
        (endpoint.metric_memory_utilization(), "MemoryUtilization"),
        (endpoint.metric_disk_utilization(), "DiskUtilization"),
    ]:
        assert (metric.namespace, metric.metric_name, metric.statistic) == (
            "/aws/sagemaker/Endpoints",
            name,
            "Average",
        )
        assert metric.dimensions == {
            "EndpointName": endpoint.endpoint_name,
            "VariantName": "AllTraffic",
        }
    assert endpoint.metric_cpu_utilization().label == "CPU (0–100 × vCPUs)"


def test_metrics_config_is_left_to_sagemaker_by_default(templates: dict[str, Template]) -> None:
    """No MetricsConfig: it is create-only, so adding one would replace the endpoint config."""
    for stack in (DEEPSEEK_STACK, LLAMA_STACK):
        (config,) = templates[stack].find_resources("AWS::SageMaker::EndpointConfig").values()
        assert "MetricsConfig" not in config["Properties"]


@pytest.mark.parametrize(
    ("metrics", "expected"),
    [
        ({"enhanced": True}, {"EnableEnhancedMetrics": True}),
        (
            {"enhanced": True, "detailed_observability": False, "publish_frequency_s": 10},
            {
                "EnableEnhancedMetrics": True,
                "EnableDetailedObservability": False,
                "MetricPublishFrequencyInSeconds": 10,
            },
        ),
        ({"detailed_observability": True}, {"EnableEnhancedMetrics": False,
                                            "EnableDetailedObservability": True}),
    ],
)  # fmt: skip
def test_metrics_config_from_the_model_config(
    metrics: dict[str, Any], expected: dict[str, Any]
) -> None:
    template, _ = _endpoint(variant("deepseek-r1-distill-qwen-7b", metrics=metrics))
    (config,) = template.find_resources("AWS::SageMaker::EndpointConfig").values()
    assert config["Properties"]["MetricsConfig"] == expected


@pytest.mark.parametrize(
    "metrics",
    [{"publish_frequency_s": 15}, {"enhanced": "sometimes"}, {"detailed": True}],
)
def test_metrics_config_is_validated(metrics: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="metrics"):
        ModelConfig.model_validate(variant("deepseek-r1-distill-qwen-7b", metrics=metrics))


def test_llm_variants_route_to_the_least_busy_instance_or_by_prefix(
    templates: dict[str, Template],
) -> None:
    """LEAST_OUTSTANDING_REQUESTS by default; PREFIX_AWARE where the config says so (DeepSeek:
    its engine caches prefixes)."""
    templates[LLAMA_STACK].has_resource_properties(
        "AWS::SageMaker::EndpointConfig",
        {"ProductionVariants": [Match.object_like(
            {"RoutingConfig": {"RoutingStrategy": "LEAST_OUTSTANDING_REQUESTS"}})]},
    )  # fmt: skip
    templates[DEEPSEEK_STACK].has_resource_properties(
        "AWS::SageMaker::EndpointConfig",
        {"ProductionVariants": [Match.object_like({"RoutingConfig": {
            "RoutingStrategy": "PREFIX_AWARE",
            "PrefixAwareRoutingConfig": {"PrefixLength": 4096, "ConcurrencyThreshold": 32},
        }})]},
    )  # fmt: skip


def test_random_routing_can_be_chosen() -> None:
    config = variant("llama-2-13b-chat", hosting={"mode": "endpoint",
                                                  "routing": {"strategy": "random"}})  # fmt: skip
    template, _ = _endpoint(config)
    template.has_resource_properties(
        "AWS::SageMaker::EndpointConfig",
        {"ProductionVariants": [Match.object_like(
            {"RoutingConfig": {"RoutingStrategy": "RANDOM"}})]},
    )  # fmt: skip
