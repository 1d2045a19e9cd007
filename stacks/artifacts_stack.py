"""The stack that owns model artifacts storage and its key."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from constructs import Construct

from llm_serving.artifacts import ModelArtifacts
from llm_serving.stage import Stage


class ArtifactsStack(Stack):
    """KMS key, artifact bucket and access-log bucket, shared by every model stack."""

    def __init__(self, scope: Construct, construct_id: str, *, stage: Stage, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.artifacts = ModelArtifacts(self, "Artifacts", stage=stage)
        CfnOutput(self, "ArtifactBucketName", value=self.artifacts.bucket.bucket_name)
