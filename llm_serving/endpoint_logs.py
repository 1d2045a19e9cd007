"""The endpoint's log group: a fixed name SageMaker writes to, kept re-creatable."""

from __future__ import annotations

from aws_cdk import CfnResource, Stack
from aws_cdk import aws_logs as logs
from constructs import Construct

from llm_serving._nag import (
    acknowledge,
    nag_resource,
    skip_cdk_provider_function_checks,
    skip_checkov,
)
from llm_serving.endpoint_metrics import ENDPOINT_HOST_NAMESPACE
from llm_serving.stage import StagePolicy


def endpoint_log_group(
    scope: Construct,
    endpoint_name: str,
    policy: StagePolicy,
    *,
    namespace: str = ENDPOINT_HOST_NAMESPACE,
) -> tuple[logs.LogRetention, logs.ILogGroup]:
    """SageMaker writes to ``/aws/sagemaker/Endpoints/<endpoint name>``, a fixed name. A
    CloudFormation ``AWS::Logs::LogGroup`` of that name retained in prod would survive
    ``cdk destroy`` and make the next create of the stage fail ("already exists"). CDK's
    ``LogRetention`` custom resource (construct id ``LogRetention``) instead creates the group
    or adopts an existing one (its handler ignores ``ResourceAlreadyExistsException``) and sets
    the retention; on delete it removes the group only when its removal policy is destroy
    (aws/aws-cdk ``packages/@aws-cdk/custom-resource-handlers/lib/aws-logs/
    log-retention-handler/index.ts``). So prod logs outlive the stack and a re-created stage
    adopts them. An inference component's logs go to ``/aws/sagemaker/InferenceComponents/
    <component name>`` (``namespace``; field report: huggingface/skills PR #215, SageMaker
    deploy skill, "Component stuck in Creating")."""
    name = f"{namespace}/{endpoint_name}"
    retention = logs.LogRetention(
        scope,
        "LogRetention",
        log_group_name=name,
        retention=policy.log_retention,
        removal_policy=policy.removal_policy,
    )
    group = logs.LogGroup.from_log_group_name(scope, "Logs", name)
    _annotate_log_retention_provider(scope, group)
    return retention, group


# The construct id CDK gives its singleton LogRetention provider in each stack
# (aws-cdk-lib/aws-logs/lib/log-retention.ts).
_LOG_RETENTION_PROVIDER_ID = "LogRetentionaae0aa3c5b4d4f87b02d85b201efdd8a"


def _annotate_log_retention_provider(scope: Construct, group: logs.ILogGroup) -> None:
    """Reasons for the findings on CDK's own LogRetention provider (one per stack): its role,
    policy and function are CDK's code, not this project's."""
    provider = Stack.of(scope).node.try_find_child(_LOG_RETENTION_PROVIDER_ID)
    if provider is None:
        return
    function = provider.node.try_find_child("Resource")
    if isinstance(function, CfnResource):
        # Its DependsOn the role duplicates the GetAtt in Role (CDK's template).
        function.add_metadata("cfn-lint", {"config": {"ignore_checks": ["W3005"]}})
        skip_cdk_provider_function_checks(function, "LogRetention")
    policy = provider.node.try_find_child("ServiceRole")
    policy = policy.node.try_find_child("DefaultPolicy") if policy else None
    if policy is not None:
        skip_checkov(
            policy,
            "CKV_AWS_111",
            "CDK's LogRetention provider policy: logs:PutRetentionPolicy/DeleteRetentionPolicy "
            "have to name log groups created at deploy time; it acts only on this stack's "
            "endpoint log group, only during deploys.",
        )
    acknowledge(
        provider,
        f"AwsSolutions-IAM5[Resource::{nag_resource(scope, group.log_group_arn)}]",
        "logs:DeleteLogGroup (dev only, removal policy destroy) on exactly the endpoint's log "
        "group; the trailing :* is part of a log group's ARN in IAM.",
    )
    acknowledge(
        provider,
        "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
        "AWSLambdaBasicExecutionRole]",
        "CDK's LogRetention provider function (CDK-owned) writes its own logs and creates the "
        "endpoint's log group with this managed policy; it runs only on deploys of this stack.",
    )
    acknowledge(
        provider,
        "AwsSolutions-IAM5[Resource::*]",
        "CDK's LogRetention provider grants itself logs:PutRetentionPolicy and "
        "DeleteRetentionPolicy on *; it only acts on the log group named by this stack's "
        "LogRetention resource (the endpoint's), and only during deploys.",
    )
