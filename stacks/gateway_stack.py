"""The gateway stack: one OpenAI-compatible API in front of every model stack's endpoint."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_cdk import CfnOutput, Stack
from constructs import Construct

from llm_serving.config.gateway import GatewayConfig
from llm_serving.endpoint import LlmEndpoint
from llm_serving.gateway import StreamingGateway
from llm_serving.stage import Stage, StagePolicy


class GatewayStack(Stack):
    """A :class:`StreamingGateway` routing each model's name to that model's endpoint.

    The endpoints live in their own stacks; only their names and ARNs are used here, and both
    are deterministic strings, so this stack imports nothing from the model stacks.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        endpoints: Mapping[str, LlmEndpoint],
        config: GatewayConfig,
        stage: Stage,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        policy = StagePolicy.for_stage(stage)
        self.gateway = StreamingGateway(
            self,
            "Gateway",
            routes={name: [endpoint] for name, endpoint in endpoints.items()},
            config=config,
            log_retention=policy.log_retention,
            log_removal_policy=policy.removal_policy,
        )
        CfnOutput(
            self,
            "ApiUrl",
            value=self.gateway.url,
            description="OpenAI base URL (send the API key in the x-api-key header)",
        )
        CfnOutput(
            self,
            "ApiKeyId",
            value=self.gateway.api_key.key_id,
            description=(
                "Default API key id; read its value with "
                "`aws apigateway get-api-key --api-key <id> --include-value`"
            ),
        )
