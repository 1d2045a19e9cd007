"""One stack per shared endpoint: the endpoint and every inference component packed on it."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from constructs import Construct

from llm_serving.artifacts import ModelArtifacts
from llm_serving.component import LlmInferenceComponent
from llm_serving.config.deploy_rules import plan_deployment
from llm_serving.config.gateway import pascal_case
from llm_serving.config.shared_endpoints import SharedEndpointPlan
from llm_serving.shared_endpoint import SharedLlmEndpoint
from llm_serving.stage import Stage


class SharedEndpointStack(Stack):
    """A :class:`SharedLlmEndpoint` and one :class:`LlmInferenceComponent` per model config on
    it (``components``: model config name → component). The models share instances, so they
    deploy together; a model on a dedicated endpoint keeps its own stack."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        plan: SharedEndpointPlan,
        artifacts: ModelArtifacts,
        stage: Stage,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.endpoint = SharedLlmEndpoint(
            self,
            "Endpoint",
            plan=plan,
            artifacts=artifacts,
            images=[plan_deployment(config).image for config in plan.members],
        )
        self.components: dict[str, LlmInferenceComponent] = {
            config.name: LlmInferenceComponent(
                self,
                f"Component{pascal_case(config.name)}",
                config=config,
                endpoint=self.endpoint,
                artifacts=artifacts,
                stage=stage,
            )
            for config in plan.members
        }
        CfnOutput(self, "EndpointName", value=self.endpoint.endpoint_name)
        CfnOutput(self, "InstanceType", value=plan.owner.instance.type)
        for name, component in self.components.items():
            CfnOutput(
                self,
                f"InferenceComponent{pascal_case(name)}",
                value=component.inference_component_name,
                description=f"Inference component of {name}",
            )
