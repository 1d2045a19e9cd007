"""QuotaTable: the DynamoDB table where the gateway counts each consumer's tokens."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

from llm_gateway.contract import QUOTA_PARTITION_KEY, QUOTA_TTL_ATTRIBUTE
from llm_serving.stage import Stage, StagePolicy

# What the quota code calls: conditional UpdateItem/PutItem, GetItem, and TransactWriteItems,
# which IAM authorizes per contained action (Put/Update → PutItem/UpdateItem, ConditionCheck →
# ConditionCheckItem); there is no dynamodb:TransactWriteItems action to grant.
# Exactly what lambda/llm_gateway/quota.py sends (TransactWriteItems is authorized per contained
# Put/Update); tests/gateway/test_quota_grants.py records the calls and compares.
ITEM_ACTIONS = (
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
)
# DynamoDB uses the table's key on the caller's behalf, only through DynamoDB (kms:ViaService):
# DescribeKey to check the key exists ("DynamoDB uses a DescribeKey operation to determine
# whether the KMS key you selected exists", AWS KMS developer guide, services-dynamodb.html),
# Decrypt for the table key it caches, Encrypt/GenerateDataKey when it writes. CDK's
# Table.grantReadWriteData grants the same plus ReEncrypt* (aws-cdk-lib aws-dynamodb/lib/
# perms.ts); re-encryption happens only when the table's key changes, a control-plane update
# that CloudFormation (not the function) performs, as is CreateGrant at table creation.
KEY_ACTIONS = ("kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey")


class KeyedTable(Construct):
    """A DynamoDB table of items keyed by ``pk`` (String) and expiring through TTL on
    ``expires_at`` (the contract's layout): on-demand, point-in-time recovery on, encrypted
    with its own customer-managed KMS key (rotated).

    ``dev``: the table and key go with the stack. ``prod``: both are retained and the table
    has deletion protection.

    Exposes ``table``, ``key``, ``table_name``, ``table_arn``.
    """

    KEY_DESCRIPTION = "Encrypts an LLM gateway table"

    def __init__(self, scope: Construct, construct_id: str, *, stage: Stage) -> None:
        """
        :param scope: the parent construct.
        :param construct_id: this construct's id.
        :param stage: ``Stage.DEV`` (table and key deleted with the stack) or ``Stage.PROD``
            (both retained, deletion protection on). Required.
        """
        super().__init__(scope, construct_id)
        policy = StagePolicy.for_stage(stage)
        self.key = policy.data_key(self, "Key", description=self.KEY_DESCRIPTION)
        self.table = dynamodb.Table(
            self,
            "Table",
            partition_key=dynamodb.Attribute(
                name=QUOTA_PARTITION_KEY, type=dynamodb.AttributeType.STRING
            ),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
            encryption_key=self.key,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            time_to_live_attribute=QUOTA_TTL_ATTRIBUTE,
            removal_policy=policy.removal_policy,
            deletion_protection=stage is Stage.PROD,
        )
        self.table_name: str = self.table.table_name
        self.table_arn: str = self.table.table_arn


def grant_items(
    grantee: iam.IGrantable, actions: Sequence[str], table: dynamodb.ITable, key: kms.IKey
) -> iam.Grant:
    """``actions`` on ``table``'s items only, and its key through DynamoDB only
    (:data:`KEY_ACTIONS`)."""
    items = iam.Grant.add_to_principal(
        grantee=grantee, actions=list(actions), resource_arns=[table.table_arn]
    )
    use_key = iam.Grant.add_to_principal(
        grantee=grantee,
        actions=list(KEY_ACTIONS),
        resource_arns=[key.key_arn],
        conditions={"StringLike": {"kms:ViaService": "dynamodb.*.amazonaws.com*"}},
    )
    return items.combine(use_key)


class QuotaTable(KeyedTable):
    """The gateway's token counters, one item per consumer and window (a
    :class:`KeyedTable`)."""

    KEY_DESCRIPTION = "Encrypts the LLM gateway's token quota counters"

    def __init__(self, scope: Construct, construct_id: str, *, stage: Stage) -> None:
        """
        :param stage: ``Stage.DEV`` (the counters go with the stack) or ``Stage.PROD``
            (retained, with deletion protection). Required.
        """
        super().__init__(scope, construct_id, stage=stage)

    def grant_quota_access(self, grantee: iam.IGrantable) -> iam.Grant:
        """Let ``grantee`` read and write counter items (:data:`ITEM_ACTIONS`) on this table
        only, and use this table's key through DynamoDB only (:data:`KEY_ACTIONS`). No scans,
        queries, batch writes, deletes, condition checks or table-level actions. Returns the
        combined grant."""
        return grant_items(grantee, ITEM_ACTIONS, self.table, self.key)
