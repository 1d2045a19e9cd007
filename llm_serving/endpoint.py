"""LlmEndpoint: one SageMaker real-time GPU endpoint for one :class:`ModelConfig`."""

from __future__ import annotations

from collections.abc import Sequence

import jsii
from aws_cdk import Duration, Names, Stack
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from llm_serving.artifacts import ModelArtifacts
from llm_serving.config.deploy_rules import DeployRuleError, plan_deployment
from llm_serving.config.gpus import InstanceGpus
from llm_serving.config.schema import EndpointHosting, HubWeights, ModelConfig
from llm_serving.endpoint_logs import endpoint_log_group
from llm_serving.endpoint_metrics import VARIANT_NAME, EndpointMetrics
from llm_serving.endpoint_network import (
    EndpointNetwork,
    endpoint_network,
)
from llm_serving.endpoint_rollout import autoscaling, deployment_config, routing_config
from llm_serving.model_parts import ModelParts
from llm_serving.stage import Stage, StagePolicy


@jsii.implements(ec2.IConnectable)
class LlmEndpoint(EndpointMetrics, ModelParts):
    """A SageMaker model, endpoint config and endpoint serving one LLM on GPUs.

    Builds a least-privilege execution role, the endpoint's log group, a 5xx-rate alarm that
    rolls deployments back, and target-tracking autoscaling on concurrent requests per model.
    ``KmsKeyId`` is set on the endpoint config unless the instance type has NVMe instance
    storage, for which SageMaker rejects it (those disks are hardware-encrypted).

    Every deploy rule of ``llm_serving/config/deploy_rules.py`` is checked first (image CUDA vs
    host AMI, GPU fit and dtype, deployment-policy limits, LMI options); a broken one raises
    ``ValueError`` naming the model, the config field and the fix.

    :param config: the model deployment.
    :param artifacts: the key and bucket the model's S3 weights (if any) come from.
    :param stage: data lifetimes (:class:`StagePolicy`): ``dev`` keeps the endpoint's logs
        two weeks and deletes them with the stack; ``prod`` keeps them a year and leaves them
        when the stack is deleted.

    Platform escape hatches: ``vpc`` (with ``vpc_subnets`` and ``security_groups``) puts the
    model's network interfaces in your VPC; ``execution_role`` uses your role instead of
    creating one; ``ModelArtifacts`` takes your bucket and key.

    Exposes ``role``, ``model``, ``endpoint_config``, ``endpoint``, ``endpoint_name``,
    ``endpoint_arn``, ``log_group``, ``rollback_alarm``, ``scalable_target`` and
    ``scaling_policy`` (``None`` with ``scaling.enabled: false``), ``plan`` (the checked
    :class:`DeployPlan`), ``gpus``, ``fit``, ``image`` (the pinned :class:`ImageSpec`),
    ``serving_properties`` (LMI only, else None), ``network_isolation`` (bool), ``network``
    (the VPC, selected subnets and security groups, or None), ``security_groups`` (empty
    without a VPC) and ``connections`` (VPC only; the endpoint is an ``ec2.IConnectable``).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: ModelConfig,
        artifacts: ModelArtifacts,
        stage: Stage,
        vpc: ec2.IVpc | None = None,
        vpc_subnets: ec2.SubnetSelection | None = None,
        security_groups: Sequence[ec2.ISecurityGroup] | None = None,
        execution_role: iam.IRole | None = None,
    ) -> None:
        """
        :param scope: the parent construct.
        :param construct_id: this construct's id (the endpoint's name derives from its path).
        :param config: the model deployment (``ModelConfig``, e.g. from
            ``load_model_config``); checked against every deploy rule first. Required.
        :param artifacts: the ``ModelArtifacts`` holding S3 weights (``weights.source: s3``)
            and their key. Required.
        :param stage: ``Stage.DEV`` (logs kept 14 days, deleted with the stack) or
            ``Stage.PROD`` (logs kept a year, left when the stack is deleted). Required.
        :param vpc: a VPC for the model's containers (``CreateModel`` ``VpcConfig``):
            SageMaker attaches network interfaces in its subnets, and model data is
            downloaded through them. Without internet access the VPC needs an S3 gateway
            endpoint (``add_vpc_endpoints``); Hub weights need a NAT gateway. The execution
            role gets SageMaker's documented EC2 network-interface permissions, scoped to this
            VPC, its subnets and security groups where IAM allows (for subnets shared from
            another account, whose ARNs name their owner, grant CreateNetworkInterface on them
            yourself). Default: no VPC: the containers use SageMaker's own network.
        :param vpc_subnets: which subnets of ``vpc``; at least two, in different Availability
            Zones (SageMaker requires it even for one instance), at most 16. Default: the
            private subnets with egress if the VPC has any, else its isolated subnets.
        :param security_groups: 1–5 security groups for the network interfaces (only with
            ``vpc``). Default: one new group with no ingress and egress only TCP 443 to any
            IPv4 address (S3 through a gateway endpoint has public addresses); open more with
            ``connections``.
        :param execution_role: an existing role for SageMaker to assume (trusting
            ``sagemaker.amazonaws.com``), used instead of creating one. The endpoint adds the
            same least-privilege statements to it with ``add_to_principal_policy``: ECR pull
            of the pinned image's repository (and ``ecr:GetAuthorizationToken``), writing its
            own log group, ``cloudwatch:PutMetricData`` in SageMaker's namespaces, reading the
            weights prefix (``s3:ListBucket``/``s3:GetObject``, ``kms:Decrypt``), the LMI
            package object (LMI only), the artifact key for EBS volumes (``kms:CreateGrant``,
            ``kms:DescribeKey``, ``kms:Decrypt``, ``kms:GenerateDataKey``) and, with ``vpc``,
            the EC2 network-interface permissions. An immutable imported role
            (``Role.from_role_arn(..., mutable=False)``) silently drops them: its owner must
            then grant them. Keep the role in this stack or import it, so that its policy
            does not reference this stack's resources from another one. Default: a new role.
        """
        super().__init__(scope, construct_id)
        if not isinstance(config.hosting, EndpointHosting):
            raise ValueError(
                f"{config.name}: hosting.mode is {config.hosting.mode}: build it with "
                "LlmInferenceComponent on a SharedLlmEndpoint, not LlmEndpoint"
            )
        self.config = config
        try:
            self.plan = plan_deployment(config)
        except DeployRuleError as exc:
            raise ValueError(exc.located(config.name)) from None
        self.fit = self.plan.fit
        self.gpus: InstanceGpus = self.fit.gpus
        self.image = self.plan.image
        self.serving_properties: str | None = None
        """The rendered serving.properties (LMI models only)."""
        if config.instance.volume_size_gb is not None and self.gpus.instance_storage:
            raise ValueError(
                f"{config.name}: instance.volume_size_gb is set but {config.instance.type} uses "
                "NVMe instance storage (SageMaker rejects a volume size); remove it"
            )
        if vpc is None and (vpc_subnets is not None or security_groups is not None):
            raise ValueError(
                f"{config.name}: vpc_subnets and security_groups apply only with vpc; pass vpc"
            )
        stack = Stack.of(self)
        # Generated, not hard-coded: deterministic from the construct path, so the rollback
        # alarm, the log group and autoscaling can name the endpoint without a dependency cycle.
        self.endpoint_name = Names.unique_resource_name(self, max_length=63, separator="-")
        self.endpoint_arn = stack.format_arn(
            service="sagemaker", resource="endpoint", resource_name=self.endpoint_name.lower()
        )

        self._log_retention, self.log_group = endpoint_log_group(
            self, self.endpoint_name, StagePolicy.for_stage(stage)
        )
        self.network: EndpointNetwork | None = (
            None
            if vpc is None
            else endpoint_network(
                self,
                model_name=config.name,
                vpc=vpc,
                vpc_subnets=vpc_subnets,
                security_groups=security_groups,
                hub_weights=isinstance(config.weights, HubWeights),
            )
        )
        self.security_groups: list[ec2.ISecurityGroup] = (
            self.network.security_groups if self.network else []
        )
        """The model's security groups (given or created); empty without a VPC."""
        self.role = self._execution_role(artifacts, execution_role)
        self.model = self._model(artifacts)
        self.endpoint_config = self._endpoint_config(artifacts)
        self.rollback_alarm = self._rollback_alarm()
        self.endpoint = self._endpoint()
        self.endpoint.node.add_dependency(self._log_retention)
        self.scalable_target: appscaling.CfnScalableTarget | None = None
        self.scaling_policy: appscaling.CfnScalingPolicy | None = None
        if config.scaling.enabled:
            self.scalable_target, self.scaling_policy = autoscaling(
                self,
                scaling=config.scaling,
                endpoint_name=self.endpoint_name,
                endpoint=self.endpoint,
            )

    @property
    def hosting(self) -> EndpointHosting:
        hosting = self.config.hosting
        assert isinstance(hosting, EndpointHosting)
        return hosting

    @property
    def connections(self) -> ec2.Connections:
        """The model's network interfaces' security groups, to allow more traffic (e.g.
        ``endpoint.connections.allow_to(database, ec2.Port.tcp(5432))``). VPC only."""
        if self.network is None:
            raise ValueError(
                f"{self.config.name}: only an endpoint in a VPC has security groups; pass vpc"
            )
        return ec2.Connections(security_groups=self.security_groups)

    # --- Endpoint config and endpoint -----------------------------------------------------

    def _endpoint_config(self, artifacts: ModelArtifacts) -> sagemaker.CfnEndpointConfig:
        instance = self.config.instance
        kms_key_id: str | None = None
        # SageMaker rejects KmsKeyId for types with NVMe instance storage (g4dn, g5, g6, g6e,
        # p4d, p5): CreateEndpointConfig fails. Their local disks are hardware-encrypted.
        if not self.gpus.instance_storage:
            kms_key_id = artifacts.key.key_arn
            artifacts.key.grant(
                self.role,
                "kms:CreateGrant",
                "kms:DescribeKey",
                "kms:Decrypt",
                "kms:GenerateDataKey",
            )
        variant = sagemaker.CfnEndpointConfig.ProductionVariantProperty(
            variant_name=VARIANT_NAME,
            model_name=self.model.attr_model_name,
            instance_type=instance.type,
            initial_instance_count=instance.initial_count,
            initial_variant_weight=1.0,
            # Resolved and checked against the image's CUDA version (config/amis.py).
            inference_ami_version=self.plan.host_ami.name,
            volume_size_in_gb=instance.volume_size_gb,
            model_data_download_timeout_in_seconds=instance.model_data_download_timeout_s,
            container_startup_health_check_timeout_in_seconds=(
                instance.container_startup_health_check_timeout_s
            ),
            routing_config=routing_config(self.hosting.routing),
        )
        metrics = self.config.metrics
        endpoint_config = sagemaker.CfnEndpointConfig(
            self,
            "EndpointConfig",
            production_variants=[variant],
            kms_key_id=kms_key_id,
            # Left out unless configured (SageMaker's defaults); create-only, so a change
            # replaces the endpoint config and deploys it like any other change.
            metrics_config=(
                None
                if metrics.is_default
                else sagemaker.CfnEndpointConfig.MetricsConfigProperty(
                    enable_enhanced_metrics=metrics.enhanced,
                    enable_detailed_observability=metrics.detailed_observability,
                    metric_publish_frequency_in_seconds=metrics.publish_frequency_s,
                )
            ),
        )
        return endpoint_config

    def _rollback_alarm(self) -> cloudwatch.Alarm:
        deployment = self.plan.deployment
        return cloudwatch.Alarm(
            self,
            "RollbackAlarm",
            alarm_description=(
                f"{self.config.name}: 5xx error rate above {deployment.rollback_5xx_rate:.0%}; "
                "rolls back an in-progress endpoint deployment"
            ),
            metric=self.metric_5xx_rate(period=Duration.minutes(1)),
            threshold=deployment.rollback_5xx_rate,
            evaluation_periods=deployment.rollback_alarm_periods,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )

    def _endpoint(self) -> sagemaker.CfnEndpoint:
        endpoint = sagemaker.CfnEndpoint(
            self,
            "Endpoint",
            endpoint_name=self.endpoint_name,
            endpoint_config_name=self.endpoint_config.attr_endpoint_config_name,
            deployment_config=deployment_config(self.plan.deployment, self.rollback_alarm),
            # Keep the instance count autoscaling chose when a deployment updates the endpoint.
            retain_all_variant_properties=True,
        )
        return endpoint

    # --- Public API ------------------------------------------------------------------------

    def grant_invoke(self, grantee: iam.IGrantable) -> iam.Grant:
        """Allow ``grantee`` to invoke this endpoint, buffered and streaming, and nothing else.

        One action: "Before you can use this operation, your IAM permissions must allow the
        sagemaker:InvokeEndpoint action" (API_runtime_InvokeEndpointWithResponseStream.html,
        also in botocore's sagemaker-runtime service model)."""
        return iam.Grant.add_to_principal(
            grantee=grantee, actions=["sagemaker:InvokeEndpoint"], resource_arns=[self.endpoint_arn]
        )
