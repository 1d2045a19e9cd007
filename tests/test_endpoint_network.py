"""Platform escape hatches: LlmEndpoint in a VPC, network isolation, an existing execution role,
ModelArtifacts with an existing bucket and key, add_vpc_endpoints; every stack synthesized with
cdk-nag AwsSolutions, which must find nothing unacknowledged."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App, Environment, Stack, Validations
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk.assertions import Annotations, Match, Template
from cdk_nag import AwsSolutionsChecks

from llm_serving import LlmEndpoint, ModelArtifacts, Stage, add_vpc_endpoints
from llm_serving.config import ConfigError
from llm_serving.config.loader import parse_model_config
from llm_serving.config.schema import ModelConfig
from tests.conftest import make_app, variant

ENV = Environment(account="111122223333", region="us-east-1")
KEY_ARN = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
S3_WEIGHTS = {"source": "s3", "prefix": "models/ds7b/"}
EBS_BACKED = {  # an instance type without NVMe storage, so the endpoint config has KmsKeyId
    "instance__type": "ml.p3.8xlarge",
    "container__tensor_parallel_degree": 4,
    "architecture__dtype": "fp16",
    "container__max_model_len": 2048,
    "gateway__max_tokens_default": 1024,
    "instance__volume_size_gb": 100,
    "instance__inference_ami_version": None,
}


def _vllm(**changes: Any) -> ModelConfig:
    return ModelConfig.model_validate(variant("deepseek-r1-distill-qwen-7b", **changes))


def _isolated_vpc(stack: Stack) -> ec2.Vpc:
    """Two AZs, isolated subnets only (no internet, no NAT), with flow logs (cdk-nag VPC7)."""
    vpc = ec2.Vpc(
        stack,
        "Vpc",
        max_azs=2,
        nat_gateways=0,
        subnet_configuration=[
            ec2.SubnetConfiguration(
                name="models", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=24
            )
        ],
    )
    vpc.add_flow_log("FlowLogs")
    return vpc


def _synth(app: App, outdir: Path, stack: Stack) -> Template:
    """Synthesize with cdk-nag as `cdk synth` would; any unacknowledged finding fails here."""
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    app.synth()
    report = json.loads((outdir / "validation-report.json").read_text())
    (nag,) = report["pluginReports"]
    assert (nag["conclusion"], nag["violations"]) == ("success", [])
    return Template.from_json(json.loads((outdir / stack.template_file).read_text()))


Build = Callable[[Stack], Any]


@pytest.fixture
def synth(tmp_path: Path) -> Callable[[Build], tuple[Template, Any]]:
    def _run(build: Build) -> tuple[Template, Any]:
        app = make_app(outdir=tmp_path)
        stack = Stack(app, "Platform", env=ENV)
        built = build(stack)
        return _synth(app, tmp_path, stack), built

    return _run


def _role_statements(template: Template, role_ref: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        statement
        for policy in template.find_resources(
            "AWS::IAM::Policy", {"Properties": {"Roles": [role_ref]}}
        ).values()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def _actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return [action] if isinstance(action, str) else list(action)


def _sagemaker_role_ids(template: Template) -> list[str]:
    trusting = Match.object_like({"Principal": {"Service": "sagemaker.amazonaws.com"}})
    pattern = {"Properties": {"AssumeRolePolicyDocument": {"Statement": [trusting]}}}
    return list(template.find_resources("AWS::IAM::Role", pattern))


def _execution_role_statements(template: Template) -> list[dict[str, Any]]:
    (role_id,) = _sagemaker_role_ids(template)
    return _role_statements(template, {"Ref": role_id})


def _arn_text(value: Any) -> str:
    """An ARN with its tokens written ``<Ref>``, for readable assertions."""
    if isinstance(value, str):
        return value
    return "".join(
        part if isinstance(part, str) else f"<{part.get('Ref', part)}>"
        for part in value["Fn::Join"][1]
    )


# --- VPC --------------------------------------------------------------------------------------


def test_endpoint_in_an_isolated_vpc(synth: Callable[[Build], tuple[Template, Any]]) -> None:
    def build(stack: Stack) -> LlmEndpoint:
        vpc = _isolated_vpc(stack)
        add_vpc_endpoints(vpc)
        artifacts = ModelArtifacts(stack, "Artifacts", stage=Stage.DEV)
        return LlmEndpoint(
            stack,
            "Llm",
            config=_vllm(weights=S3_WEIGHTS),
            artifacts=artifacts,
            stage=Stage.DEV,
            vpc=vpc,
        )

    template, endpoint = synth(build)
    subnets = [{"Ref": k} for k in template.find_resources("AWS::EC2::Subnet")]
    assert len(subnets) == 2
    (group_id,) = template.find_resources(
        "AWS::EC2::SecurityGroup",
        {
            "Properties": {
                "VpcId": Match.any_value(),
                "GroupDescription": Match.string_like_regexp("SageMaker endpoint"),
            }
        },
    )
    template.has_resource_properties(
        "AWS::SageMaker::Model",
        {
            "EnableNetworkIsolation": True,
            "VpcConfig": {
                "Subnets": subnets,
                "SecurityGroupIds": [{"Fn::GetAtt": [group_id, "GroupId"]}],
            },
        },
    )
    # No ingress; egress HTTPS only (S3 through the gateway endpoint has public addresses).
    template.has_resource_properties(
        "AWS::EC2::SecurityGroup",
        {
            "GroupDescription": Match.string_like_regexp("SageMaker endpoint"),
            "SecurityGroupEgress": [
                Match.object_like(
                    {"CidrIp": "0.0.0.0/0", "IpProtocol": "tcp", "FromPort": 443, "ToPort": 443}
                )
            ],
            "SecurityGroupIngress": Match.absent(),
        },
    )
    assert endpoint.security_groups[0].node.path == "Platform/Llm/SecurityGroup"
    assert endpoint.network_isolation is True
    # The only endpoint requested by default: S3, a gateway endpoint on both subnets' routes.
    (s3_endpoint,) = template.find_resources("AWS::EC2::VPCEndpoint").values()
    properties = s3_endpoint["Properties"]
    assert properties["VpcEndpointType"] == "Gateway"
    assert "s3" in json.dumps(properties["ServiceName"])
    assert len(properties["RouteTableIds"]) == 2

    statements = _execution_role_statements(template)
    by_action = {a: s for s in statements for a in _actions(s) if a.startswith("ec2:")}
    create = by_action["ec2:CreateNetworkInterface"]
    resources = sorted(_arn_text(r) for r in create["Resource"])
    assert resources[0] == "arn:aws:ec2:us-east-1:111122223333:network-interface/*"
    assert sum(":subnet/" in r for r in resources) == 2
    assert sum(":security-group/" in r for r in resources) == 1
    scoped = by_action["ec2:CreateNetworkInterfacePermission"]
    assert sorted(_actions(scoped)) == [
        "ec2:CreateNetworkInterfacePermission",
        "ec2:DeleteNetworkInterface",
    ]
    assert _arn_text(scoped["Condition"]["ArnEquals"]["ec2:Vpc"]) == (
        "arn:aws:ec2:us-east-1:111122223333:vpc/<Vpc8378EB38>"
    )
    # No resource-level permissions: "*" (CDK merges them with ecr:GetAuthorizationToken).
    unscoped = {
        a for s in statements if s["Resource"] == "*" and "Condition" not in s for a in _actions(s)
    }
    assert unscoped == {
        "ecr:GetAuthorizationToken",
        "ec2:DeleteNetworkInterfacePermission",
        "ec2:DescribeDhcpOptions",
        "ec2:DescribeNetworkInterfaces",
        "ec2:DescribeSecurityGroups",
        "ec2:DescribeSubnets",
        "ec2:DescribeVpcEndpoints",
        "ec2:DescribeVpcs",
    }
    assert len(by_action) == 10


def test_given_subnets_and_security_groups_are_used_as_is(
    synth: Callable[[Build], tuple[Template, Any]],
) -> None:
    def build(stack: Stack) -> tuple[LlmEndpoint, ec2.SecurityGroup]:
        vpc = _isolated_vpc(stack)
        group = ec2.SecurityGroup(stack, "PlatformGroup", vpc=vpc, allow_all_outbound=False)
        endpoint = LlmEndpoint(
            stack,
            "Llm",
            config=_vllm(),
            stage=Stage.DEV,
            artifacts=ModelArtifacts(stack, "Artifacts", stage=Stage.DEV),
            vpc=vpc,
            vpc_subnets=ec2.SubnetSelection(subnet_group_name="models"),
            security_groups=[group],
        )
        # Callers open more through connections, or use the endpoint as an IConnectable.
        endpoint.connections.allow_to(ec2.Peer.ipv4("10.0.0.10/32"), ec2.Port.tcp(8443))
        database = ec2.SecurityGroup(stack, "Database", vpc=vpc)
        database.connections.allow_from(endpoint, ec2.Port.tcp(5432))
        return endpoint, group

    template, (endpoint, group) = synth(build)
    groups = template.find_resources("AWS::EC2::SecurityGroup")
    assert sorted(k.rstrip("0123456789ABCDEF") for k in groups) == ["Database", "PlatformGroup"]
    assert endpoint.security_groups == [group]
    group_id = Stack.of(group).resolve(group.security_group_id)
    template.has_resource_properties(
        "AWS::SageMaker::Model", {"VpcConfig": Match.object_like({"SecurityGroupIds": [group_id]})}
    )
    template.has_resource_properties(
        "AWS::EC2::SecurityGroup",
        {
            "SecurityGroupEgress": Match.array_with(
                [Match.object_like({"CidrIp": "10.0.0.10/32", "FromPort": 8443})]
            )
        },
    )
    template.has_resource_properties(
        "AWS::EC2::SecurityGroupIngress",
        {"FromPort": 5432, "SourceSecurityGroupId": group_id},
    )


def test_default_subnets_are_the_private_ones_with_egress() -> None:
    stack = Stack(make_app(), "Platform", env=ENV)
    vpc = ec2.Vpc(stack, "Vpc", max_azs=2, nat_gateways=1)
    endpoint = LlmEndpoint(
        stack,
        "Llm",
        config=_vllm(),
        stage=Stage.DEV,
        vpc=vpc,
        artifacts=ModelArtifacts(stack, "Artifacts", stage=Stage.DEV),
    )
    assert endpoint.network is not None
    private = {s.subnet_id for s in vpc.private_subnets}
    assert set(endpoint.network.subnets.subnet_ids) == private
    assert endpoint.network_isolation is False  # Hub weights: the container needs the network


def test_vpc_options_are_checked() -> None:
    stack = Stack(make_app(), "Platform", env=ENV)
    vpc = _isolated_vpc(stack)
    artifacts = ModelArtifacts(stack, "Artifacts", stage=Stage.DEV)

    def endpoint(construct_id: str, **props: Any) -> LlmEndpoint:
        return LlmEndpoint(
            stack, construct_id, config=_vllm(), artifacts=artifacts, stage=Stage.DEV, **props
        )

    with pytest.raises(ValueError, match="apply only with vpc"):
        endpoint("NoVpc", security_groups=[ec2.SecurityGroup(stack, "G", vpc=vpc)])
    with pytest.raises(ValueError, match=r"selects 1 subnet\(s\); SageMaker hosting needs at"):
        endpoint(
            "OneAz",
            vpc=vpc,
            vpc_subnets=ec2.SubnetSelection(availability_zones=[vpc.availability_zones[0]]),
        )
    with pytest.raises(ValueError, match="only an endpoint in a VPC has security groups"):
        _ = endpoint("Public").connections
    # Hub weights in isolated subnets cannot download: a synth warning says so.
    endpoint("Hub", vpc=vpc)
    Annotations.from_stack(stack).has_warning(
        "/Platform/Hub", Match.string_like_regexp("from the Hugging Face Hub, but the selected")
    )


# --- Network isolation ------------------------------------------------------------------------


def _model(config: ModelConfig) -> dict[str, Any]:
    stack = Stack(make_app(), "Platform", env=ENV)
    LlmEndpoint(
        stack,
        "Llm",
        config=config,
        stage=Stage.DEV,
        artifacts=ModelArtifacts(stack, "Artifacts", stage=Stage.DEV),
    )
    (model,) = Template.from_stack(stack).find_resources("AWS::SageMaker::Model").values()
    return model


def _checkov_skip(model: dict[str, Any]) -> str:
    (skip,) = [s for s in model["Metadata"]["checkov"]["skip"] if s["id"] == "CKV_AWS_370"]
    return str(skip["comment"])


def test_network_isolation_is_automatic_and_can_be_turned_off() -> None:
    auto = _model(_vllm(weights=S3_WEIGHTS))
    assert auto["Properties"]["EnableNetworkIsolation"] is True
    assert "checkov" not in auto.get("Metadata", {})
    hub = _model(_vllm())
    assert hub["Properties"]["EnableNetworkIsolation"] is False
    assert "Hugging Face Hub" in _checkov_skip(hub)
    off = _model(_vllm(weights=S3_WEIGHTS, instance__network_isolation=False))
    assert off["Properties"]["EnableNetworkIsolation"] is False
    assert "instance.network_isolation: false" in _checkov_skip(off)
    on = _model(_vllm(weights=S3_WEIGHTS, instance__network_isolation=True))
    assert on["Properties"]["EnableNetworkIsolation"] is True


@pytest.mark.parametrize(
    ("base", "weights", "reason"),
    [
        ("deepseek-r1-distill-qwen-7b", None, "from the Hugging Face Hub"),
        ("llama-2-13b-chat", {"source": "s3", "prefix": "models/llama/"}, "LMI container"),
    ],
    ids=["hub-weights", "lmi"],
)
def test_network_isolation_is_refused_where_the_container_needs_the_network(
    base: str, weights: dict[str, str] | None, reason: str
) -> None:
    changes: dict[str, Any] = {"instance__network_isolation": True}
    if weights:
        changes["weights"] = weights
    with pytest.raises(ConfigError) as error:
        parse_model_config(variant(base, **changes), Path(f"model_configs/{base}.yaml"))
    message = str(error.value)
    assert message.startswith(f"model_configs/{base}.yaml: invalid model config")
    assert "instance.network_isolation is true but" in message
    assert reason in message
    assert "fix: " in message


# --- Existing role, bucket and key ------------------------------------------------------------


def test_existing_execution_role_gets_the_statements(
    synth: Callable[[Build], tuple[Template, Any]],
) -> None:
    def build(stack: Stack) -> tuple[iam.Role, iam.IRole]:
        owned = iam.Role(
            stack, "PlatformRole", assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com")
        )
        imported = iam.Role.from_role_arn(
            stack, "ImportedRole", "arn:aws:iam::111122223333:role/platform/sagemaker-models"
        )
        artifacts = ModelArtifacts(stack, "Artifacts", stage=Stage.DEV)
        for construct_id, role in (("Owned", owned), ("Imported", imported)):
            LlmEndpoint(
                stack,
                construct_id,
                config=_vllm(weights=S3_WEIGHTS),
                artifacts=artifacts,
                stage=Stage.DEV,
                execution_role=role,
            )
        return owned, imported

    template, _ = synth(build)
    (owned_id,) = _sagemaker_role_ids(template)
    assert owned_id.startswith("PlatformRole")  # no role created for either endpoint
    models = template.find_resources("AWS::SageMaker::Model")
    roles = sorted(json.dumps(m["Properties"]["ExecutionRoleArn"]) for m in models.values())
    assert roles == [
        '"arn:aws:iam::111122223333:role/platform/sagemaker-models"',
        json.dumps({"Fn::GetAtt": [owned_id, "Arn"]}),
    ]
    for role_ref in ({"Ref": owned_id}, "sagemaker-models"):
        actions = {a for s in _role_statements(template, role_ref) for a in _actions(s)}
        assert {
            "ecr:BatchGetImage",
            "logs:PutLogEvents",
            "cloudwatch:PutMetricData",
            "s3:ListBucket",
            "s3:GetObject",
            "kms:Decrypt",
        } <= actions
    # CreateModel waits for the policy that holds the statements, in both cases.
    for model in models.values():
        (depends,) = [d for d in model["DependsOn"] if "Policy" in d]
        assert depends.startswith(("PlatformRoleDefaultPolicy", "ImportedRolePolicy"))


def test_existing_bucket_and_key(synth: Callable[[Build], tuple[Template, Any]]) -> None:
    def build(stack: Stack) -> tuple[ModelArtifacts, LlmEndpoint]:
        bucket = s3.Bucket.from_bucket_name(stack, "PlatformBucket", "platform-models")
        key = kms.Key.from_key_arn(stack, "PlatformKey", KEY_ARN)
        artifacts = ModelArtifacts(
            stack, "Artifacts", stage=Stage.PROD, existing_bucket=bucket, existing_key=key
        )
        endpoint = LlmEndpoint(
            stack,
            "Llm",
            config=_vllm(weights=S3_WEIGHTS, **EBS_BACKED),
            artifacts=artifacts,
            stage=Stage.PROD,
        )
        return artifacts, endpoint

    template, (artifacts, _) = synth(build)
    assert artifacts.access_log_bucket is None
    template.resource_count_is("AWS::S3::Bucket", 0)
    template.resource_count_is("AWS::KMS::Key", 0)
    template.has_resource_properties("AWS::SageMaker::EndpointConfig", {"KmsKeyId": KEY_ARN})
    template.has_resource_properties(
        "AWS::SageMaker::Model",
        {
            "PrimaryContainer": Match.object_like(
                {
                    "ModelDataSource": {
                        "S3DataSource": Match.object_like(
                            {"S3Uri": "s3://platform-models/models/ds7b/"}
                        )
                    }
                }
            )
        },
    )
    statements = _execution_role_statements(template)
    (listing,) = [s for s in statements if s["Action"] == "s3:ListBucket"]
    assert _arn_text(listing["Resource"]) == "arn:aws:s3:::platform-models"
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["models/ds7b/*"]}}
    (read,) = [s for s in statements if s["Action"] == "s3:GetObject"]
    assert _arn_text(read["Resource"]).endswith(":s3:::platform-models/models/ds7b/*")
    decrypt = [s for s in statements if "kms:Decrypt" in _actions(s)]
    assert decrypt
    assert all(s["Resource"] == KEY_ARN for s in decrypt)
    volume = [s for s in statements if "kms:CreateGrant" in _actions(s)]
    assert [s["Resource"] for s in volume] == [KEY_ARN]


def test_existing_bucket_without_key_still_gets_a_volume_key() -> None:
    stack = Stack(make_app(), "Platform", env=ENV)
    bucket = s3.Bucket.from_bucket_name(stack, "PlatformBucket", "platform-models")
    ModelArtifacts(stack, "Artifacts", stage=Stage.DEV, existing_bucket=bucket)
    template = Template.from_stack(stack)
    template.resource_count_is("AWS::S3::Bucket", 0)
    template.resource_count_is("AWS::KMS::Key", 1)


def test_existing_key_encrypts_the_new_bucket() -> None:
    stack = Stack(make_app(), "Platform", env=ENV)
    key = kms.Key.from_key_arn(stack, "PlatformKey", KEY_ARN)
    artifacts = ModelArtifacts(stack, "Artifacts", stage=Stage.DEV, existing_key=key)
    template = Template.from_stack(stack)
    template.resource_count_is("AWS::KMS::Key", 0)
    template.resource_count_is("AWS::S3::Bucket", 2)
    assert artifacts.access_log_bucket is not None
    (encryption,) = [
        resource["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
        for logical_id, resource in template.find_resources("AWS::S3::Bucket").items()
        if logical_id.startswith("ArtifactsBucket")
    ]
    assert encryption["ServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "aws:kms",
        "KMSMasterKeyID": KEY_ARN,
    }


# --- add_vpc_endpoints ------------------------------------------------------------------------


def test_add_vpc_endpoints_on_request(synth: Callable[[Build], tuple[Template, Any]]) -> None:
    def build(stack: Stack) -> Any:
        vpc = _isolated_vpc(stack)
        first = add_vpc_endpoints(vpc, sagemaker_runtime=True, dynamodb=True)
        again = add_vpc_endpoints(vpc, sagemaker_runtime=True, dynamodb=True)
        return first, again

    template, (first, again) = synth(build)
    for kind in ("s3", "dynamodb", "sagemaker_runtime"):  # idempotent
        assert getattr(again, kind).node.path == getattr(first, kind).node.path
    endpoints = template.find_resources("AWS::EC2::VPCEndpoint")
    kinds = sorted(
        (
            e["Properties"]["VpcEndpointType"],
            _arn_text(e["Properties"]["ServiceName"]).replace("<AWS::Region>", "us-east-1"),
        )
        for e in endpoints.values()
    )
    assert kinds == [
        ("Gateway", "com.amazonaws.us-east-1.dynamodb"),
        ("Gateway", "com.amazonaws.us-east-1.s3"),
        ("Interface", "com.amazonaws.us-east-1.sagemaker.runtime"),
    ]
    template.has_resource_properties(
        "AWS::EC2::VPCEndpoint",
        {"VpcEndpointType": "Interface", "PrivateDnsEnabled": True, "SubnetIds": Match.any_value()},
    )
    template.has_resource_properties(
        "AWS::EC2::SecurityGroup",
        {
            "GroupDescription": Match.string_like_regexp("sagemaker.runtime"),
            "SecurityGroupIngress": [
                Match.object_like(
                    {
                        "CidrIp": {"Fn::GetAtt": [Match.string_like_regexp("^Vpc"), "CidrBlock"]},
                        "FromPort": 443,
                        "ToPort": 443,
                        "IpProtocol": "tcp",
                    }
                )
            ],
            # No egress: CDK's disabling placeholder rule only.
            "SecurityGroupEgress": [Match.object_like({"CidrIp": "255.255.255.255/32"})],
        },
    )
