"""The gateway stack: one OpenAI-compatible API in front of every model stack's endpoint."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_cdk import CfnOutput, Stack
from constructs import Construct

from llm_serving.component import LlmInferenceComponent
from llm_serving.config.gateway import GatewayConfig, pascal_case
from llm_serving.dashboard import InferenceDashboard
from llm_serving.endpoint import LlmEndpoint
from llm_serving.gateway import StreamingGateway
from llm_serving.stage import Stage


class GatewayStack(Stack):
    """A :class:`StreamingGateway` routing model aliases to the model stacks' endpoints
    (``config.routes``, or each model's name to its endpoint), with ``config``'s tiers and
    consumers.

    The endpoints live in their own stacks; only their names and ARNs are used here, and both
    are deterministic strings, so this stack imports nothing from the model stacks.

    An :class:`InferenceDashboard` (``observability``) charts the gateway and every endpoint
    and raises ``config.observability``'s alarms to one SNS topic; it lives here so that it
    names the function and the API without cross-stack exports.

    Outputs: ``ApiUrl``, ``ApiKeyId<Consumer>`` per consumer (``team-a`` → ``ApiKeyIdTeamA``),
    ``QuotaTableName``, ``AlarmTopicArn``, and ``DashboardName`` / ``DashboardUrl`` when the
    dashboard is enabled.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        endpoints: Mapping[str, LlmEndpoint | LlmInferenceComponent],
        config: GatewayConfig,
        stage: Stage,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.gateway = StreamingGateway(
            self,
            "Gateway",
            endpoints=endpoints,
            config=config,
            stage=stage,
        )
        CfnOutput(
            self,
            "ApiUrl",
            value=self.gateway.url,
            description="OpenAI base URL (send the API key as Authorization: Bearer <key>)",
        )
        for name, key in self.gateway.api_keys.items():
            CfnOutput(
                self,
                f"ApiKeyId{pascal_case(name)}",
                value=key.key_id,
                description=(
                    f"API key id of consumer {name} (tier {self.gateway.consumers[name].tier}); "
                    "read its value with "
                    "`aws apigateway get-api-key --api-key <id> --include-value`"
                ),
            )
        CfnOutput(
            self,
            "QuotaTableName",
            value=self.gateway.quota_table.table_name,
            description="DynamoDB table of the consumers' token counters",
        )
        self.observability = InferenceDashboard(
            self,
            "Observability",
            gateway=self.gateway,
            endpoints=list(endpoints.values()),
            config=config.observability,
            stage=stage,
        )
        CfnOutput(
            self,
            "AlarmTopicArn",
            value=self.observability.topic.topic_arn,
            description="SNS topic every gateway and endpoint alarm notifies",
        )
        if self.observability.dashboard is not None:
            CfnOutput(
                self,
                "DashboardName",
                value=self.observability.dashboard_name,
                description="CloudWatch dashboard of the gateway and its endpoints",
            )
            if self.observability.dashboard_url is not None:
                CfnOutput(
                    self,
                    "DashboardUrl",
                    value=self.observability.dashboard_url,
                    description="CloudWatch console URL of the dashboard",
                )
