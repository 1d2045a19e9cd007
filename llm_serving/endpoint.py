"""LlmEndpoint: one SageMaker real-time GPU endpoint for one :class:`ModelConfig`."""

from __future__ import annotations

from aws_cdk import Duration, Names, SecretValue, Stack
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from llm_serving._nag import (
    acknowledge,
    nag_resource,
    skip_checkov,
)
from llm_serving.artifacts import ModelArtifacts
from llm_serving.config.deploy_rules import DeployRuleError, plan_deployment
from llm_serving.config.gpus import InstanceGpus
from llm_serving.config.schema import (
    BlueGreenDeployment,
    HubWeights,
    LmiContainer,
    ModelConfig,
    S3Weights,
)
from llm_serving.container_env import container_env
from llm_serving.endpoint_logs import endpoint_log_group
from llm_serving.endpoint_metrics import (
    ENDPOINT_HOST_NAMESPACE,
    SAGEMAKER_NAMESPACE,
    VARIANT_NAME,
    EndpointMetrics,
)
from llm_serving.image_uri import image_uri, repository_arn
from llm_serving.lmi_package import LmiModelPackage
from llm_serving.stage import Stage, StagePolicy


class LlmEndpoint(EndpointMetrics, Construct):
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

    Exposes ``role``, ``model``, ``endpoint_config``, ``endpoint``, ``endpoint_name``,
    ``endpoint_arn``, ``log_group``, ``rollback_alarm``, ``scalable_target`` and
    ``scaling_policy`` (``None`` with ``scaling.enabled: false``), ``plan`` (the checked
    :class:`DeployPlan`), ``gpus``, ``fit``, ``image`` (the pinned :class:`ImageSpec`) and
    ``serving_properties`` (LMI only, else None).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: ModelConfig,
        artifacts: ModelArtifacts,
        stage: Stage,
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
        """
        super().__init__(scope, construct_id)
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
        self.role = self._execution_role(artifacts)
        self.model = self._model(artifacts)
        self.endpoint_config = self._endpoint_config(artifacts)
        self.rollback_alarm = self._rollback_alarm()
        self.endpoint = self._endpoint()
        self.endpoint.node.add_dependency(self._log_retention)
        self.scalable_target: appscaling.CfnScalableTarget | None = None
        self.scaling_policy: appscaling.CfnScalingPolicy | None = None
        if config.scaling.enabled:
            self.scalable_target, self.scaling_policy = self._autoscaling()

    # --- IAM -------------------------------------------------------------------------------

    def _execution_role(self, artifacts: ModelArtifacts) -> iam.Role:
        config = self.config
        role = iam.Role(
            self,
            "ExecutionRole",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description=f"Execution role of the {config.name} SageMaker model",
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=[
                    "ecr:BatchCheckLayerAvailability",
                    "ecr:BatchGetImage",
                    "ecr:GetDownloadUrlForLayer",
                ],
                resources=[repository_arn(self, self.image)],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(actions=["ecr:GetAuthorizationToken"], resources=["*"])
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                resources=[self.log_group.log_group_arn],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={
                    "StringEquals": {
                        "cloudwatch:namespace": [SAGEMAKER_NAMESPACE, ENDPOINT_HOST_NAMESPACE]
                    }
                },
            )
        )
        if isinstance(config.weights, S3Weights):
            artifacts.grant_read_prefix(role, config.weights.prefix)
        acknowledge(
            role,
            f"AwsSolutions-IAM5[Resource::{nag_resource(self, self.log_group.log_group_arn)}]",
            "Only this endpoint's own log group; the trailing :* is how IAM names the log "
            "streams in it, which SageMaker creates per instance at run time.",
        )
        acknowledge(
            role,
            "AwsSolutions-IAM5[Resource::*]",
            "ecr:GetAuthorizationToken and cloudwatch:PutMetricData have no resource-level "
            "permissions; PutMetricData is limited by a cloudwatch:namespace condition to "
            "SageMaker's two namespaces.",
        )
        return role

    # --- Model -----------------------------------------------------------------------------

    def _model(self, artifacts: ModelArtifacts) -> sagemaker.CfnModel:
        config = self.config
        weights = config.weights
        hf_token: str | None = None
        if isinstance(weights, HubWeights) and weights.token_secret_name:
            # The template holds only a {{resolve:secretsmanager:…}} dynamic reference;
            # CloudFormation resolves it at deploy time. SageMaker then stores the resolved
            # value in the model's environment, readable with sagemaker:DescribeModel — which
            # is why the README recommends S3 weights for gated models in prod.
            secret = SecretValue.secrets_manager(weights.token_secret_name)
            hf_token = secret.unsafe_unwrap()
        s3_uri = artifacts.s3_uri(weights.prefix) if isinstance(weights, S3Weights) else None
        is_lmi = isinstance(config.container, LmiContainer)
        container = sagemaker.CfnModel.ContainerDefinitionProperty(
            image=image_uri(self, self.image),
            environment=container_env(config, s3_weights_uri=s3_uri, hf_token=hf_token),
            model_data_url=self._lmi_package_url() if is_lmi else None,
            model_data_source=(
                sagemaker.CfnModel.ModelDataSourceProperty(
                    s3_data_source=sagemaker.CfnModel.S3DataSourceProperty(
                        s3_uri=s3_uri, s3_data_type="S3Prefix", compression_type="None"
                    )
                )
                if s3_uri is not None and not is_lmi
                else None
            ),
        )
        # The container needs the network only when it downloads weights itself (from the Hub,
        # or LMI fetching its S3 model_id with the role's credentials).
        isolated = isinstance(weights, S3Weights) and not is_lmi
        model = sagemaker.CfnModel(
            self,
            "Model",
            execution_role_arn=self.role.role_arn,
            primary_container=container,
            enable_network_isolation=isolated,
        )
        if not isolated:
            skip_checkov(
                model,
                "CKV_AWS_370",
                "The container downloads its weights itself: from the Hugging Face Hub "
                "(weights.source: hub) or, for LMI, its S3 model_id with the execution role. "
                "Use S3 weights with vLLM or TGI for network isolation.",
            )
        # SageMaker checks the role's permissions on CreateModel: wait for its policy too.
        policy = self.role.node.try_find_child("DefaultPolicy")
        if policy is not None:
            model.node.add_dependency(policy)
        return model

    def _lmi_package_url(self) -> str:
        package = LmiModelPackage(self, "LmiPackage", config=self.config)
        self.serving_properties = package.serving_properties
        asset = package.asset
        # Only this object; Asset.grant_read would add wildcard actions on the whole bucket.
        iam.Grant.add_to_principal(
            grantee=self.role,
            actions=["s3:GetObject"],
            resource_arns=[asset.bucket.arn_for_objects(asset.s3_object_key)],
        )
        return asset.s3_object_url

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

    def _deployment_config(self) -> sagemaker.CfnEndpoint.DeploymentConfigProperty:
        deployment = self.plan.deployment  # checked against SageMaker's limits
        rollback = sagemaker.CfnEndpoint.AutoRollbackConfigProperty(
            alarms=[sagemaker.CfnEndpoint.AlarmProperty(alarm_name=self.rollback_alarm.alarm_name)]
        )
        if isinstance(deployment, BlueGreenDeployment):
            canary = deployment.traffic == "canary"
            routing = sagemaker.CfnEndpoint.TrafficRoutingConfigProperty(
                type="CANARY" if canary else "ALL_AT_ONCE",
                wait_interval_in_seconds=deployment.wait_interval_s,
                canary_size=(
                    sagemaker.CfnEndpoint.CapacitySizeProperty(
                        type="CAPACITY_PERCENT", value=deployment.canary_percent
                    )
                    if canary
                    else None
                ),
            )
            return sagemaker.CfnEndpoint.DeploymentConfigProperty(
                auto_rollback_configuration=rollback,
                blue_green_update_policy=sagemaker.CfnEndpoint.BlueGreenUpdatePolicyProperty(
                    traffic_routing_configuration=routing,
                    termination_wait_in_seconds=deployment.termination_wait_s,
                    maximum_execution_timeout_in_seconds=deployment.max_execution_timeout_s,
                ),
            )
        batch = sagemaker.CfnEndpoint.CapacitySizeProperty(
            type="INSTANCE_COUNT", value=deployment.batch_instances
        )
        return sagemaker.CfnEndpoint.DeploymentConfigProperty(
            auto_rollback_configuration=rollback,
            rolling_update_policy=sagemaker.CfnEndpoint.RollingUpdatePolicyProperty(
                maximum_batch_size=batch,
                rollback_maximum_batch_size=batch,
                wait_interval_in_seconds=deployment.wait_interval_s,
                maximum_execution_timeout_in_seconds=deployment.max_execution_timeout_s,
            ),
        )

    def _endpoint(self) -> sagemaker.CfnEndpoint:
        endpoint = sagemaker.CfnEndpoint(
            self,
            "Endpoint",
            endpoint_name=self.endpoint_name,
            endpoint_config_name=self.endpoint_config.attr_endpoint_config_name,
            deployment_config=self._deployment_config(),
            # Keep the instance count autoscaling chose when a deployment updates the endpoint.
            retain_all_variant_properties=True,
        )
        return endpoint

    def _autoscaling(self) -> tuple[appscaling.CfnScalableTarget, appscaling.CfnScalingPolicy]:
        """Target tracking on concurrent requests per model. L1 resources because the L2
        ``ScalableTarget`` always creates and passes a role: without ``RoleARN`` Application
        Auto Scaling uses its service-linked role for SageMaker
        (``AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint``), creating it if needed
        (RegisterScalableTarget API reference: "If the service supports service-linked roles,
        Application Auto Scaling uses a service-linked role, which it creates if it does not yet
        exist")."""
        scaling = self.config.scaling
        target = appscaling.CfnScalableTarget(
            self,
            "ScalableTarget",
            service_namespace="sagemaker",
            resource_id=f"endpoint/{self.endpoint_name}/variant/{VARIANT_NAME}",
            scalable_dimension="sagemaker:variant:DesiredInstanceCount",
            min_capacity=scaling.min_instances,
            max_capacity=scaling.max_instances,
        )
        target.add_resource_dependency(self.endpoint)
        metric = "SageMakerVariantConcurrentRequestsPerModelHighResolution"
        policy = appscaling.CfnScalingPolicy(
            self,
            "ConcurrentRequests",
            policy_name=f"{Names.unique_id(self)}ConcurrentRequests"[-256:],
            policy_type="TargetTrackingScaling",
            scaling_target_id=target.ref,
            target_tracking_scaling_policy_configuration=(
                appscaling.CfnScalingPolicy.TargetTrackingScalingPolicyConfigurationProperty(
                    target_value=scaling.target_concurrent_requests_per_model,
                    predefined_metric_specification=(
                        appscaling.CfnScalingPolicy.PredefinedMetricSpecificationProperty(
                            predefined_metric_type=metric
                        )
                    ),
                    scale_in_cooldown=scaling.scale_in_cooldown_s,
                    scale_out_cooldown=scaling.scale_out_cooldown_s,
                )
            ),
        )
        return target, policy

    # --- Public API ------------------------------------------------------------------------

    def grant_invoke(self, grantee: iam.IGrantable) -> iam.Grant:
        """Allow ``grantee`` to invoke this endpoint, buffered and streaming, and nothing else.

        One action: "Before you can use this operation, your IAM permissions must allow the
        sagemaker:InvokeEndpoint action" (API_runtime_InvokeEndpointWithResponseStream.html,
        also in botocore's sagemaker-runtime service model)."""
        return iam.Grant.add_to_principal(
            grantee=grantee, actions=["sagemaker:InvokeEndpoint"], resource_arns=[self.endpoint_arn]
        )
