"""ModelArtifacts: key, artifact bucket, access-log bucket, and stage-driven removal."""

from __future__ import annotations

import pytest
from aws_cdk import Stack
from aws_cdk import aws_iam as iam
from aws_cdk.assertions import Match, Template

from llm_serving import ModelArtifacts, Stage
from tests.conftest import make_app


def _template(stage: Stage) -> tuple[Template, ModelArtifacts, Stack]:
    stack = Stack(make_app(), "Test")
    artifacts = ModelArtifacts(stack, "Artifacts", stage=stage)
    return Template.from_stack(stack), artifacts, stack


@pytest.fixture(scope="module")
def dev() -> Template:
    return _template(Stage.DEV)[0]


@pytest.fixture(scope="module")
def prod() -> Template:
    return _template(Stage.PROD)[0]


def test_key_rotates(dev: Template) -> None:
    dev.has_resource_properties("AWS::KMS::Key", {"EnableKeyRotation": True})


def test_artifact_bucket_is_kms_encrypted_versioned_private_and_logged(dev: Template) -> None:
    dev.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [
                    {
                        "BucketKeyEnabled": True,
                        "ServerSideEncryptionByDefault": {
                            "SSEAlgorithm": "aws:kms",
                            "KMSMasterKeyID": Match.any_value(),
                        },
                    }
                ]
            },
            "VersioningConfiguration": {"Status": "Enabled"},
            "PublicAccessBlockConfiguration": {
                "BlockPublicAcls": True,
                "BlockPublicPolicy": True,
                "IgnorePublicAcls": True,
                "RestrictPublicBuckets": True,
            },
            "LoggingConfiguration": {
                "DestinationBucketName": Match.any_value(),
                "LogFilePrefix": "artifacts/",
            },
            "LifecycleConfiguration": {
                "Rules": Match.array_with(
                    [Match.object_like({"NoncurrentVersionExpiration": {"NoncurrentDays": 7}})]
                )
            },
        },
    )


def test_both_buckets_refuse_plain_http_and_old_tls(dev: Template) -> None:
    policies = dev.find_resources("AWS::S3::BucketPolicy")
    assert len(policies) == 2
    for policy in policies.values():
        statements = policy["Properties"]["PolicyDocument"]["Statement"]
        denies = [s for s in statements if s["Effect"] == "Deny"]
        conditions = [s["Condition"] for s in denies]
        assert {"Bool": {"aws:SecureTransport": "false"}} in conditions
        assert {"NumericLessThan": {"s3:TlsVersion": 1.2}} in conditions


def test_dev_destroys_cleanly(dev: Template) -> None:
    for resource_type in ("AWS::S3::Bucket", "AWS::KMS::Key"):
        for resource in dev.find_resources(resource_type).values():
            assert resource["DeletionPolicy"] == "Delete"
    # Buckets are emptied on delete so `cdk destroy` does not fail on a non-empty bucket.
    assert len(dev.find_resources("Custom::S3AutoDeleteObjects")) == 2


def test_prod_retains_data(prod: Template) -> None:
    for resource_type in ("AWS::S3::Bucket", "AWS::KMS::Key"):
        for resource in prod.find_resources(resource_type).values():
            assert resource["DeletionPolicy"] == "Retain"
            assert resource["UpdateReplacePolicy"] == "Retain"
    assert prod.find_resources("Custom::S3AutoDeleteObjects") == {}
    prod.has_resource_properties("AWS::KMS::Key", {"PendingWindowInDays": 30})


def test_grant_read_prefix_is_scoped_to_the_prefix() -> None:
    stack = Stack(make_app(), "Grant")
    artifacts = ModelArtifacts(stack, "Artifacts", stage=Stage.DEV)
    role = iam.Role(stack, "Reader", assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"))
    artifacts.grant_read_prefix(role, "models/x/")
    statements = Template.from_stack(stack).find_resources("AWS::IAM::Policy")
    (policy,) = statements.values()
    by_action = {s["Action"]: s for s in policy["Properties"]["PolicyDocument"]["Statement"]}
    assert set(by_action) == {"s3:ListBucket", "kms:Decrypt", "s3:GetObject"}
    assert by_action["s3:ListBucket"]["Condition"] == {"StringLike": {"s3:prefix": ["models/x/*"]}}
    get_resource = by_action["s3:GetObject"]["Resource"]["Fn::Join"][1]
    assert get_resource[-1] == "/models/x/*"
