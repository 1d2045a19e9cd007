"""A KMS key that CloudWatch Logs may use for the log groups of one stack, and the policy
(retention, removal, key) a construct gives all its log groups."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import ArnFormat, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from constructs import Construct

from llm_serving.stage import StagePolicy


def logs_key(scope: Construct, construct_id: str, *, policy: StagePolicy) -> kms.Key:
    """A rotated key with the stage's lifetime whose policy lets CloudWatch Logs in this
    region use it for this account's log groups only: the statement AWS documents for
    encrypting log data ("Encrypt log data in CloudWatch Logs using AWS KMS", step 2: principal
    ``logs.<region>.amazonaws.com``, condition on ``kms:EncryptionContext:aws:logs:arn``).
    Who writes to the group (Lambda, API Gateway) needs no key permission: CloudWatch Logs
    encrypts on their behalf."""
    stack = Stack.of(scope)
    key = policy.data_key(
        scope, construct_id, description=f"Encrypts the logs of {stack.stack_name}"
    )
    key.add_to_resource_policy(
        iam.PolicyStatement(
            sid="AllowCloudWatchLogsForThisAccountsLogGroups",
            principals=[iam.ServicePrincipal(f"logs.{stack.region}.amazonaws.com")],
            actions=[
                "kms:Encrypt*",
                "kms:Decrypt*",
                "kms:ReEncrypt*",
                "kms:GenerateDataKey*",
                "kms:Describe*",
            ],
            resources=["*"],  # in a key policy, "*" is this key
            conditions={
                "ArnLike": {
                    "kms:EncryptionContext:aws:logs:arn": stack.format_arn(
                        service="logs",
                        resource="log-group",
                        resource_name="*",
                        arn_format=ArnFormat.COLON_RESOURCE_NAME,
                    )
                }
            },
        )
    )
    return key


@dataclass(frozen=True)
class LogPolicy:
    """Retention, removal and key shared by a construct's log groups."""

    retention: logs.RetentionDays
    removal_policy: RemovalPolicy
    key: kms.IKey

    def log_group(
        self, scope: Construct, construct_id: str, *, name: str | None = None
    ) -> logs.LogGroup:
        return logs.LogGroup(
            scope,
            construct_id,
            log_group_name=name,
            retention=self.retention,
            removal_policy=self.removal_policy,
            encryption_key=self.key,
        )
