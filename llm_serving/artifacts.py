"""ModelArtifacts: the KMS key and S3 buckets that hold model weights and packages."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnResource, Duration, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from llm_serving._nag import skip_cdk_provider_function_checks, skip_checkov
from llm_serving.stage import Stage, StagePolicy


class ModelArtifacts(Construct):
    """A customer-managed KMS key (rotated), a versioned SSE-KMS artifact bucket and its
    server-access-log bucket. Both buckets block public access and refuse non-TLS requests.

    ``dev`` removes everything on ``cdk destroy`` (buckets are emptied first); ``prod`` retains
    the key and both buckets.

    A platform team's own bucket and key can be used instead (``existing_bucket``,
    ``existing_key``); nothing is then created for them, and their lifetimes are the owner's.
    Exposes ``key``, ``bucket`` and ``access_log_bucket`` (``None`` with ``existing_bucket``).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: Stage,
        existing_bucket: s3.IBucket | None = None,
        existing_key: kms.IKey | None = None,
    ) -> None:
        """
        :param scope: the parent construct.
        :param construct_id: this construct's id.
        :param stage: ``Stage.DEV`` (destroyed with the stack, buckets emptied first) or
            ``Stage.PROD`` (key and buckets retained, key deletion window 30 days). Required.
        :param existing_bucket: an artifact bucket to use as is (e.g.
            ``s3.Bucket.from_bucket_name``): no bucket and no access-log bucket are created
            (``access_log_bucket`` is ``None``); its policies, logging and lifetime stay its
            owner's. If it is SSE-KMS encrypted with its own key, pass that key as
            ``existing_key``: without it a new key is still created (it encrypts endpoint
            volumes) and ``grant_read_prefix`` grants decrypt on that new key only, so reads
            of the bucket's objects would be denied. Default: a new versioned SSE-KMS bucket
            and its access-log bucket.
        :param existing_key: a KMS key to use instead of creating one (e.g.
            ``kms.Key.from_key_arn``): it encrypts the new artifact bucket (unless
            ``existing_bucket``) and the endpoints' EBS storage volumes. Its key policy must
            let this account's IAM policies grant its use (the default key policy does):
            ``grant_read_prefix`` and ``LlmEndpoint`` add ``kms:Decrypt`` (and, for EBS
            volumes, ``kms:CreateGrant``, ``kms:DescribeKey``, ``kms:GenerateDataKey``) to the
            roles' own policies. Default: a new rotated customer-managed key, with the stage's
            lifetime.
        """
        super().__init__(scope, construct_id)
        # Grant log delivery by bucket policy, not ACL, whatever the consuming app's feature
        # flags say: the buckets enforce bucket-owner object ownership (ACLs disabled).
        self.node.set_context("@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy", True)
        policy = StagePolicy.for_stage(stage)

        self.key: kms.IKey = existing_key or policy.data_key(
            self, "Key", description="Encrypts model artifacts and endpoint storage volumes"
        )
        self.bucket: s3.IBucket
        self.access_log_bucket: s3.Bucket | None = None
        """The new bucket's server-access-log bucket; ``None`` with ``existing_bucket``."""
        if existing_bucket is not None:
            self.bucket = existing_bucket
            return

        # Shared by both buckets: private, TLS 1.2+ only, ACLs off, lifetime by stage.
        private: dict[str, Any] = {
            "block_public_access": s3.BlockPublicAccess.BLOCK_ALL,
            "object_ownership": s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            "enforce_ssl": True,
            "minimum_tls_version": 1.2,
            "removal_policy": policy.removal_policy,
            "auto_delete_objects": policy.auto_delete_objects,
        }
        access_logs = s3.Bucket(
            self,
            "AccessLogs",
            # S3 server access logging cannot deliver to an SSE-KMS bucket.
            encryption=s3.BucketEncryption.S3_MANAGED,
            lifecycle_rules=[s3.LifecycleRule(expiration=policy.access_log_expiry)],
            **private,
        )
        self.bucket = s3.Bucket(
            self,
            "Bucket",
            encryption=s3.BucketEncryption.KMS,
            encryption_key=self.key,
            bucket_key_enabled=True,
            versioned=True,
            server_access_logs_bucket=access_logs,
            server_access_logs_prefix="artifacts/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    noncurrent_version_expiration=policy.noncurrent_version_expiry,
                    abort_incomplete_multipart_upload_after=Duration.days(7),
                )
            ],
            **private,
        )
        self.access_log_bucket = access_logs
        skip_checkov(
            access_logs,
            "CKV_AWS_18",
            "This is the access-log bucket: logging it into another bucket would need a third, "
            "and into itself would log its own log deliveries.",
        )
        skip_checkov(
            access_logs,
            "CKV_AWS_21",
            "S3 server access logs are written once by the logging service and expire by the "
            "lifecycle rule; versioning would only keep expired copies.",
        )
        if policy.auto_delete_objects:
            _quiet_auto_delete_provider_lint(Stack.of(self))

    def s3_uri(self, prefix: str) -> str:
        """``s3://<bucket>/<prefix>`` for a key prefix in the artifact bucket."""
        return f"s3://{self.bucket.bucket_name}/{prefix}"

    def grant_read_prefix(self, grantee: iam.IGrantable, prefix: str) -> iam.Grant:
        """Let ``grantee`` list and read objects under ``prefix`` only, and decrypt them with
        ``key`` (an existing bucket's own key only if it was passed as ``existing_key``).
        Statements go to the grantee's own policy; an immutable imported role drops them."""
        principal = grantee.grant_principal
        principal.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["s3:ListBucket"],
                resources=[self.bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{prefix}*"]}},
            )
        )
        self.key.grant(principal, "kms:Decrypt")
        return iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["s3:GetObject"],
            resource_arns=[self.bucket.arn_for_objects(f"{prefix}*")],
        )


def _quiet_auto_delete_provider_lint(stack: Stack) -> None:
    """CDK's own auto-delete provider declares a DependsOn its role that a GetAtt already
    implies; cfn-lint warns (W3005) about code this project does not own."""
    provider = stack.node.try_find_child("Custom::S3AutoDeleteObjectsCustomResourceProvider")
    handler = provider.node.try_find_child("Handler") if provider else None
    if isinstance(handler, CfnResource):
        handler.add_metadata("cfn-lint", {"config": {"ignore_checks": ["W3005"]}})
        skip_cdk_provider_function_checks(handler, "S3AutoDeleteObjects")
