"""SharedLlmEndpoint: a SageMaker endpoint with managed instance scaling that hosts inference
components (:class:`~llm_serving.component.LlmInferenceComponent`), and no model of its own."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Names, Stack, Token
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from llm_serving._nag import acknowledge
from llm_serving.artifacts import ModelArtifacts
from llm_serving.config.images import ImageSpec
from llm_serving.config.shared_endpoints import SharedEndpointPlan, check_region
from llm_serving.endpoint_metrics import VARIANT_NAME
from llm_serving.endpoint_rollout import routing_config
from llm_serving.image_uri import repository_arn


class SharedLlmEndpoint(Construct):
    """An endpoint config and endpoint for inference components: one production variant with
    ``ManagedInstanceScaling`` (``Status: ENABLED``, the declared min/max instances; min 0
    releases every instance once all components are at zero copies), the declared
    ``RoutingConfig``, the host AMI every component's image agrees with, and no ``ModelName``
    (the models are the components').

    Sources: "An endpoint can scale to and from zero instances only if it hosts inference
    components" and needs ``ManagedInstanceScaling.MinInstanceCount`` 0
    (docs.aws.amazon.com/sagemaker/latest/dg/endpoint-auto-scaling-zero-instances.html);
    CreateEndpointConfig refuses ``ManagedInstanceScaling`` on a variant with a model
    ("ManagedInstanceScaling is only supported for inference component endpoints",
    hashicorp/terraform-provider-aws#45926) and needs ``ExecutionRoleArn`` once inference
    components are used (field report stdapi-ai/stdapi.ai#43). Which permissions that role
    needs is not documented: it gets the ECR pull of the components' images (unverified
    whether SageMaker pulls with it or with each model's role, which has them too).

    Exposes ``plan``, ``endpoint_name``, ``endpoint_arn``, ``role``, ``endpoint_config`` and
    ``endpoint``.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        plan: SharedEndpointPlan,
        artifacts: ModelArtifacts,
        images: Sequence[ImageSpec],
        execution_role: iam.IRole | None = None,
    ) -> None:
        """
        :param scope: the parent construct.
        :param construct_id: this construct's id (the endpoint's name derives from its path).
        :param plan: the checked shared endpoint (``shared_endpoint_plans``): declaration,
            instance type, host AMI and the model configs packed on it. Required.
        :param artifacts: the artifact key, set as ``KmsKeyId`` unless the instance type has
            NVMe instance storage (SageMaker refuses it there). Required.
        :param images: the components' pinned images; the endpoint's role may pull them.
            Required (may be empty).
        :param execution_role: the endpoint config's ``ExecutionRoleArn`` (trusting
            ``sagemaker.amazonaws.com``). Default: a new role with only the ECR pull of
            ``images``.
        """
        super().__init__(scope, construct_id)
        self.plan = plan
        declaration = plan.declaration
        region = Stack.of(self).region
        if not Token.is_unresolved(region):
            check_region(plan, region)
        self.endpoint_name = Names.unique_resource_name(self, max_length=63, separator="-")
        self.endpoint_arn = Stack.of(self).format_arn(
            service="sagemaker", resource="endpoint", resource_name=self.endpoint_name.lower()
        )
        self.role = execution_role or iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description=f"SageMaker shared endpoint {declaration.name}",
        )
        if images:
            self.role.add_to_principal_policy(
                iam.PolicyStatement(
                    actions=[
                        "ecr:BatchCheckLayerAvailability",
                        "ecr:BatchGetImage",
                        "ecr:GetDownloadUrlForLayer",
                    ],
                    resources=sorted({repository_arn(self, image) for image in images}),
                )
            )
            self.role.add_to_principal_policy(
                iam.PolicyStatement(actions=["ecr:GetAuthorizationToken"], resources=["*"])
            )
            acknowledge(
                self.role,
                "AwsSolutions-IAM5[Resource::*]",
                "ecr:GetAuthorizationToken has no resource-level permissions.",
            )
        kms_key_id: str | None = None
        if not plan.gpus.instance_storage:
            kms_key_id = artifacts.key.key_arn
            artifacts.key.grant(
                self.role, "kms:CreateGrant", "kms:DescribeKey", "kms:Decrypt",
                "kms:GenerateDataKey",
            )  # fmt: skip
        instance = plan.owner.instance
        variant = sagemaker.CfnEndpointConfig.ProductionVariantProperty(
            variant_name=VARIANT_NAME,
            instance_type=instance.type,
            initial_instance_count=declaration.initial_instances,
            inference_ami_version=plan.host_ami,
            volume_size_in_gb=instance.volume_size_gb,
            managed_instance_scaling=sagemaker.CfnEndpointConfig.ManagedInstanceScalingProperty(
                status="ENABLED",
                min_instance_count=declaration.min_instances,
                max_instance_count=declaration.max_instances,
            ),
            routing_config=routing_config(declaration.routing),
        )
        self.endpoint_config = sagemaker.CfnEndpointConfig(
            self,
            "EndpointConfig",
            production_variants=[variant],
            execution_role_arn=self.role.role_arn,
            kms_key_id=kms_key_id,
        )
        self.endpoint = sagemaker.CfnEndpoint(
            self,
            "Endpoint",
            endpoint_name=self.endpoint_name,
            endpoint_config_name=self.endpoint_config.attr_endpoint_config_name,
        )
        policy = self.role.node.try_find_child("DefaultPolicy")
        if policy is not None:
            self.endpoint_config.node.add_dependency(policy)
