"""An LlmEndpoint's execution role: created, or the caller's, with the same least-privilege
statements either way."""

from __future__ import annotations

from typing import Any

from aws_cdk import Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from constructs import Construct, IConstruct

from llm_serving._nag import acknowledge, nag_resource
from llm_serving.config.images import ImageSpec
from llm_serving.endpoint_metrics import ENDPOINT_HOST_NAMESPACE, SAGEMAKER_NAMESPACE
from llm_serving.image_uri import repository_arn

WILDCARD_REASON = (
    "ecr:GetAuthorizationToken and cloudwatch:PutMetricData have no resource-level "
    "permissions; PutMetricData is limited by a cloudwatch:namespace condition to "
    "SageMaker's two namespaces."
)


def execution_role(scope: Construct, *, existing: iam.IRole | None, model_name: str) -> iam.IRole:
    """``existing``, or a new role SageMaker can assume."""
    if existing is not None:
        return existing
    return iam.Role(
        scope,
        "ExecutionRole",
        assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
        description=f"Execution role of the {model_name} SageMaker model",
    )


def grant_serving(
    scope: Construct, role: iam.IRole, *, image: ImageSpec, log_group: logs.ILogGroup
) -> None:
    """Pull the image, write the endpoint's logs and SageMaker's metrics; nothing else."""
    role.add_to_principal_policy(
        iam.PolicyStatement(
            actions=[
                "ecr:BatchCheckLayerAvailability",
                "ecr:BatchGetImage",
                "ecr:GetDownloadUrlForLayer",
            ],
            resources=[repository_arn(scope, image)],
        )
    )
    role.add_to_principal_policy(
        iam.PolicyStatement(actions=["ecr:GetAuthorizationToken"], resources=["*"])
    )
    role.add_to_principal_policy(
        iam.PolicyStatement(
            actions=["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
            resources=[log_group.log_group_arn],
        )
    )
    role.add_to_principal_policy(
        iam.PolicyStatement(
            actions=["cloudwatch:PutMetricData"],
            resources=["*"],
            conditions={
                "StringEquals": {
                    "cloudwatch:namespace": [SAGEMAKER_NAMESPACE, ENDPOINT_HOST_NAMESPACE]
                }
            },
        )
    )


def acknowledge_role_findings(
    scope: Construct,
    role: iam.IRole,
    *,
    log_group: logs.ILogGroup,
    findings: dict[str, str] | None = None,
    vpc_wildcard_reason: str = "",
) -> None:
    """cdk-nag IAM5 on the statements this endpoint gave ``role``, each with its reason
    (``findings``: more finding ids and their reasons)."""
    acknowledge(
        role,
        f"AwsSolutions-IAM5[Resource::{nag_resource(scope, log_group.log_group_arn)}]",
        "Only this endpoint's own log group; the trailing :* is how IAM names the log "
        "streams in it, which SageMaker creates per instance at run time.",
    )
    acknowledge(role, "AwsSolutions-IAM5[Resource::*]", WILDCARD_REASON + vpc_wildcard_reason)
    for finding, reason in (findings or {}).items():
        acknowledge(role, finding, reason)


def weights_finding(scope: Construct, objects_arn: str, prefix: str) -> tuple[str, str]:
    """The IAM5 finding of ``s3:GetObject`` on the weights prefix, and why it is needed."""
    return (
        f"AwsSolutions-IAM5[Resource::{_nag_name(scope, objects_arn)}]",
        f"Only the objects under this model's weights prefix ({prefix}): SageMaker reads the "
        "whole prefix (ModelDataSource S3DataType S3Prefix, or LMI's S3 model_id), and the "
        "object names are the model's files.",
    )


def _nag_name(scope: Construct, value: str) -> str:
    """As ``_nag.nag_resource``, also for ``Fn::GetAtt`` parts (``<Logical.Attribute>``)."""
    resolved = Stack.of(scope).resolve(value)
    if isinstance(resolved, dict) and "Fn::Join" in resolved:
        separator, parts = resolved["Fn::Join"]

        def name(part: Any) -> str:
            if isinstance(part, dict) and "Fn::GetAtt" in part:
                return "<{}.{}>".format(*part["Fn::GetAtt"])
            if isinstance(part, dict) and "Ref" in part:
                return f"<{part['Ref']}>"
            return str(part)

        return str(separator).join(name(part) for part in parts)
    return nag_resource(scope, value)


def role_policy(role: iam.IRole) -> IConstruct | None:
    """The policy CDK puts ``add_to_principal_policy`` statements in: ``DefaultPolicy`` of a
    ``Role``, ``Policy`` of a mutable imported one; ``None`` if the role is immutable."""
    for name in ("DefaultPolicy", "Policy"):
        child = role.node.try_find_child(name)
        if child is not None:
            return child
    return None
