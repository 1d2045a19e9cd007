"""Someone else's CDK app: only the public API (``llm_serving``, ``llm_serving.config``), its own
configs and stacks, another region, none of this repository's cdk.json context or ``stacks``
package; synthesized with cdk-nag and CloudFormation validation on, as ``cdk synth`` would."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App, CfnOutput, Environment, Stack, Validations
from aws_cdk import aws_ec2 as ec2
from aws_cdk.assertions import Match, Template
from cdk_nag import AwsSolutionsChecks

from llm_serving import (
    InferenceDashboard,
    LlmEndpoint,
    ModelArtifacts,
    Stage,
    StreamingGateway,
    add_vpc_endpoints,
)
from llm_serving.config import image_spec, load_gateway_config, load_model_configs

REGION = "eu-west-1"
ACCOUNT = "111122223333"
MODEL = "qwen2-5-7b-instruct"

MODEL_YAML = f"""\
name: {MODEL}
description: Qwen2.5-7B-Instruct on the AWS vLLM container
architecture:
  parameters_billion: 7.62
  dtype: bf16
  num_layers: 28
  num_kv_heads: 4
  head_dim: 128
container:
  family: vllm
  image_version: "0.30.0"
  max_model_len: 8192
  max_num_seqs: 16
weights:
  source: hub
  hub_id: Qwen/Qwen2.5-7B-Instruct
  revision: main
instance:
  type: ml.g5.2xlarge
  inference_ami_version: al2023-ami-sagemaker-inference-gpu-4-1
gateway:
  max_tokens_default: 2048
"""

GATEWAY_YAML = """\
tiers:
  internal:
    rate_limit: 5
    burst_limit: 10
    requests_per_month: 100000
    tokens_per_month: 50000000
    default_reservation: 1024
  batch:
    rate_limit: 1
    burst_limit: 2
    tokens_per_day: 2000000
consumers:
  - name: search-team
    tier: internal
  - name: nightly-evals
    tier: batch
observability:
  alarm_email: llm-oncall@example.com
"""


@dataclass
class ExternalApp:
    assembly: Path
    models: Template
    api: Template


def build_external_app(config_dir: Path, outdir: Path) -> None:
    """What a user's app.py would do, with nothing from this repository but the library."""
    app = App(
        outdir=str(outdir),
        # Bundling skipped, as in the other unit tests (tests/test_bundling.py bundles for
        # real); the asset is still fingerprinted from the installed runtime package. No
        # feature flags from this repository's cdk.json: the constructs must not need them.
        context={"aws:cdk:bundling-stacks": []},
        builtin_cloud_formation_validation=True,
    )
    env = Environment(account=ACCOUNT, region=REGION)
    stage = Stage.PROD
    configs = load_model_configs(config_dir)
    gateway_config = load_gateway_config(config_dir)
    gateway_config.check_models([c.name for c in configs])

    models = Stack(app, "AcmeLlm-Models", env=env)
    # The team's network: private subnets behind a NAT gateway (the Hub weights download
    # through it), flow logs on, and the endpoints SageMaker and the gateway need inside.
    vpc = ec2.Vpc(
        models,
        "Network",
        max_azs=2,
        nat_gateways=1,
        flow_logs={"all": ec2.FlowLogOptions()},
    )
    add_vpc_endpoints(vpc, s3=True, sagemaker_runtime=True, dynamodb=True)
    artifacts = ModelArtifacts(models, "Artifacts", stage=stage)
    endpoints = {
        config.name: LlmEndpoint(
            models,
            f"Endpoint-{config.name}",
            config=config,
            artifacts=artifacts,
            stage=stage,
            vpc=vpc,
        )
        for config in configs
    }

    api = Stack(app, "AcmeLlm-Api", env=env)
    gateway = StreamingGateway(
        api,
        "Gateway",
        endpoints=endpoints,
        config=gateway_config,
        stage=stage,
        vpc=vpc,
        outputs=True,
    )
    # The dashboard from the gateway alone: its endpoints and observability settings.
    dashboard = InferenceDashboard(api, "Observability", gateway=gateway, stage=stage)
    CfnOutput(api, "BaseUrl", value=gateway.url)
    CfnOutput(api, "AlarmTopic", value=dashboard.topic.topic_arn)

    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    app.synth()


@pytest.fixture(scope="module")
def external_app(tmp_path_factory: pytest.TempPathFactory) -> ExternalApp:
    config_dir = tmp_path_factory.mktemp("acme-configs")
    (config_dir / f"{MODEL}.yaml").write_text(MODEL_YAML)
    (config_dir / "gateway.yaml").write_text(GATEWAY_YAML)
    outdir = tmp_path_factory.mktemp("acme.cdk.out")
    build_external_app(config_dir, outdir)

    def template(name: str) -> Template:
        return Template.from_json(json.loads((outdir / f"{name}.template.json").read_text()))

    return ExternalApp(outdir, template("AcmeLlm-Models"), template("AcmeLlm-Api"))


def test_synth_passes_nag_and_validation(external_app: ExternalApp) -> None:
    report = json.loads((external_app.assembly / "validation-report.json").read_text())
    (nag,) = report["pluginReports"]
    assert nag["pluginName"] == "AwsSolutions"
    assert nag["conclusion"] == "success"
    assert nag["violations"] == []
    assert {p.name for p in external_app.assembly.glob("*.template.json")} == {
        "AcmeLlm-Models.template.json",
        "AcmeLlm-Api.template.json",
    }


def test_model_uses_the_regions_image_and_endpoint(external_app: ExternalApp) -> None:
    spec = image_spec("vllm", "0.30.0")
    registry = spec.account_for(REGION)
    assert registry == "763104351884"  # AWS Deep Learning Containers in eu-west-1
    external_app.models.has_resource_properties(
        "AWS::SageMaker::Model",
        {
            "PrimaryContainer": Match.object_like(
                {
                    "Image": f"{registry}.dkr.ecr.{REGION}.amazonaws.com/"
                    f"{spec.repository}:{spec.tag}",
                    "Environment": Match.object_like(
                        {"SM_VLLM_MODEL": "Qwen/Qwen2.5-7B-Instruct", "SM_VLLM_REVISION": "main"}
                    ),
                }
            )
        },
    )
    external_app.models.has_resource_properties(
        "AWS::SageMaker::EndpointConfig",
        {
            "ProductionVariants": [
                Match.object_like(
                    {
                        "InstanceType": "ml.g5.2xlarge",
                        "InferenceAmiVersion": "al2023-ami-sagemaker-inference-gpu-4-1",
                    }
                )
            ]
        },
    )
    external_app.models.resource_count_is("AWS::SageMaker::Endpoint", 1)
    external_app.models.resource_count_is("AWS::S3::Bucket", 2)


def _statements(template: Template) -> Iterator[dict[str, Any]]:
    for policy in template.find_resources("AWS::IAM::Policy").values():
        yield from policy["Properties"]["PolicyDocument"]["Statement"]


def test_gateway_uses_the_regions_layer_and_invokes_only_the_model(
    external_app: ExternalApp,
) -> None:
    api = external_app.api
    (function,) = api.find_resources(
        "AWS::Lambda::Function", {"Properties": {"Handler": "run.sh"}}
    ).values()
    properties = function["Properties"]
    assert properties["Layers"] == [
        f"arn:aws:lambda:{REGION}:753240598075:layer:LambdaAdapterLayerArm64:26"
    ]
    assert properties["Architectures"] == ["arm64"]
    routes = json.loads(properties["Environment"]["Variables"]["LLM_GATEWAY_ROUTES"])
    assert [route["model"] for route in routes["routes"]] == [MODEL]

    invoke = [s for s in _statements(api) if "sagemaker:InvokeEndpoint" in s["Action"]]
    assert len(invoke) == 1
    resource = json.dumps(invoke[0]["Resource"])
    assert f":sagemaker:{REGION}:" in resource
    endpoint_name = routes["routes"][0]["backends"][0]["endpoint_name"]
    assert f"endpoint/{endpoint_name.lower()}" in resource  # SageMaker ARNs are lower-case

    api.resource_count_is("AWS::ApiGateway::ApiKey", 2)
    api.resource_count_is("AWS::ApiGateway::UsagePlan", 2)
    api.resource_count_is("AWS::ApiGateway::UsagePlanKey", 2)
    api.has_resource_properties(
        "AWS::ApiGateway::UsagePlan",
        {"Quota": {"Limit": 100000, "Period": "MONTH"}, "Throttle": Match.any_value()},
    )
    api.has_resource_properties(
        "AWS::SNS::Subscription", {"Protocol": "email", "Endpoint": "llm-oncall@example.com"}
    )
    api.resource_count_is("AWS::CloudWatch::Dashboard", 1)


def test_prod_stage_retains_data(external_app: ExternalApp) -> None:
    """The artifact key and buckets, the quota table and its key, the logs' key (the alarm
    topic's key holds no data and goes with the stack)."""
    for kind in ("AWS::KMS::Key", "AWS::S3::Bucket"):
        for resource in external_app.models.find_resources(kind).values():
            assert resource["DeletionPolicy"] == "Retain"
    keys = external_app.api.find_resources("AWS::KMS::Key")
    assert {k for k, v in keys.items() if v["DeletionPolicy"] == "Retain"} == {
        k for k in keys if "Quota" in k or "LogsKey" in k
    }
    (table,) = external_app.api.find_resources("AWS::DynamoDB::Table").values()
    assert table["DeletionPolicy"] == "Retain"
    assert table["Properties"]["DeletionProtectionEnabled"] is True


def test_this_app_imports_only_the_public_api() -> None:
    """Nothing from the repository's app wiring (``stacks``, ``app.py``, ``tests``) or the
    library's private modules."""
    imports = [
        line.split()[1]
        for line in Path(__file__).read_text().splitlines()
        if line.startswith(("from ", "import "))
    ]
    first_party = [m for m in imports if m.split(".")[0] in {"llm_serving", "stacks", "tests"}]
    assert sorted(set(first_party)) == ["llm_serving", "llm_serving.config"]


def test_two_consumers_on_two_tiers_with_the_default_reservation(
    external_app: ExternalApp,
) -> None:
    (function,) = external_app.api.find_resources(
        "AWS::Lambda::Function", {"Properties": {"Handler": "run.sh"}}
    ).values()
    joined = function["Properties"]["Environment"]["Variables"]["LLM_GATEWAY_CONSUMERS"]
    _, parts = joined["Fn::Join"]
    table = json.loads(
        "".join(p if isinstance(p, str) else f"key-{i}" for i, p in enumerate(parts))
    )
    tiers = {tier["name"]: tier for tier in table["tiers"]}
    assert tiers["batch"]["default_reservation"] == 1024  # not set in the file: the default
    assert tiers["batch"]["tokens_per_day"] == 2_000_000
    assert sorted(c["name"] for c in table["consumers"].values()) == [
        "nightly-evals",
        "search-team",
    ]


def test_the_endpoint_and_the_function_run_in_the_teams_vpc(external_app: ExternalApp) -> None:
    external_app.models.has_resource_properties(
        "AWS::SageMaker::Model",
        {"VpcConfig": {"Subnets": Match.any_value(), "SecurityGroupIds": Match.any_value()}},
    )
    external_app.models.resource_count_is("AWS::EC2::VPCEndpoint", 3)  # S3, DynamoDB, runtime
    (function,) = external_app.api.find_resources(
        "AWS::Lambda::Function", {"Properties": {"Handler": "run.sh"}}
    ).values()
    assert set(function["Properties"]["VpcConfig"]) == {"SubnetIds", "SecurityGroupIds"}
    outputs = external_app.api.to_json()["Outputs"]
    assert any(name.startswith("GatewayApiKeyIdNightlyEvals") for name in outputs)
