"""One stack per model, so changing one model never touches another."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from constructs import Construct

from llm_serving.artifacts import ModelArtifacts
from llm_serving.config.schema import ModelConfig
from llm_serving.endpoint import LlmEndpoint
from llm_serving.stage import Stage


class ModelStack(Stack):
    """A single :class:`LlmEndpoint` reading weights and keys from shared artifacts."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: ModelConfig,
        artifacts: ModelArtifacts,
        stage: Stage,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.endpoint = LlmEndpoint(
            self, "Endpoint", config=config, artifacts=artifacts, stage=stage
        )
        CfnOutput(self, "EndpointName", value=self.endpoint.endpoint_name)
        CfnOutput(self, "InstanceType", value=config.instance.type)
