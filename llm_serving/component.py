"""LlmInferenceComponent: one model as an inference component on a shared endpoint, with
copy-count autoscaling both ways (to zero when idle, out of zero on the first request)."""

from __future__ import annotations

from aws_cdk import Duration, Names, Stack
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from llm_gateway.contract import Backend
from llm_serving.artifacts import ModelArtifacts
from llm_serving.config.deploy_rules import DeployRuleError, plan_deployment
from llm_serving.config.schema import ComponentHosting, ModelConfig
from llm_serving.endpoint_logs import endpoint_log_group
from llm_serving.endpoint_metrics import VARIANT_NAME
from llm_serving.endpoint_rollout import concurrency_tracking
from llm_serving.gateway_tables import BackendTarget, backend
from llm_serving.model_parts import ModelParts
from llm_serving.shared_endpoint import SharedLlmEndpoint
from llm_serving.stage import Stage, StagePolicy

SAGEMAKER_NAMESPACE = "AWS/SageMaker"
COMPONENT_NAMESPACE = "/aws/sagemaker/InferenceComponents"
# docs.aws.amazon.com/sagemaker/latest/dg/monitoring-cloudwatch.html: the AWS/SageMaker
# invocation metrics (Invocations, ConcurrentRequestsPerCopy, InvocationsPerCopy, ModelLatency…)
# and the /aws/sagemaker/InferenceComponents utilization metrics (GPUUtilizationNormalized,
# GPUMemoryUtilizationNormalized, CPU/MemoryUtilizationNormalized, "reported by each copy"),
# both with the dimension InferenceComponentName.
DIMENSION = "InferenceComponentName"
NO_CAPACITY_METRIC = "NoCapacityInvocationFailures"
"""AWS/SageMaker, dimension InferenceComponentName: "SageMaker AI emits this metric when an
endpoint receives an inference request, but the endpoint has no active instances to serve the
request" (endpoint-auto-scaling-zero-instances.html, put-metric-alarm example)."""


class LlmInferenceComponent(ModelParts):
    """A model (``hosting.mode: component``) deployed as ``AWS::SageMaker::InferenceComponent``
    on a :class:`SharedLlmEndpoint`, with its own execution role, log group and ``CfnModel``.

    Each copy reserves ``hosting.accelerators_per_copy`` GPUs and ``memory_per_copy_mb`` of
    host memory; ``copies.initial`` (≥ 1: SageMaker refuses ``CopyCount`` 0 at creation) copies
    start with the deploy. Scaling (Application Auto Scaling, resource
    ``inference-component/<name>``, dimension ``sagemaker:inference-component:DesiredCopyCount``,
    min ``copies.min`` which may be 0; endpoint-auto-scaling-zero-instances.html):

    * target tracking on ``SageMakerInferenceComponentConcurrentRequestsPerCopyHighResolution``
      (botocore application-autoscaling ``MetricType``), both ways between the bounds;
    * with ``copies.min`` 0, scale-out from zero: a step policy (``ChangeInCapacity`` +1,
      ``Maximum``, cooldown 60 s, as in the AWS procedure) run by an alarm on
      ``NoCapacityInvocationFailures`` (Sum over 60 s ≥ 1: the AWS example's
      ``GreaterThanThreshold`` 1 would need two failed requests in a minute; one wakes it here).
      Target tracking alone cannot leave zero (nothing to divide by);
    * with ``copies.min`` 0 and ``idle_minutes_to_zero``, scale-in to zero: a step policy
      (``ExactCapacity`` 0) run by an alarm on ``FILL(Invocations, 0) + FILL(
      NoCapacityInvocationFailures, 0)`` staying below 1 for that many minutes (no datapoints
      when idle, hence FILL). Unverified on AWS: Application Auto Scaling acting on a
      metric-math alarm.

    Exposes ``config``, ``endpoint`` (the shared one), ``inference_component_name``,
    ``inference_component_arn``, ``endpoint_name``, ``role``, ``model``, ``component``,
    ``log_group``, ``scalable_target``, ``target_tracking``, ``scale_out_policy`` /
    ``no_capacity_alarm`` and ``idle_policy`` / ``idle_alarm`` (None when not built),
    ``image``, ``fit``.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: ModelConfig,
        endpoint: SharedLlmEndpoint,
        artifacts: ModelArtifacts,
        stage: Stage,
        execution_role: iam.IRole | None = None,
    ) -> None:
        """
        :param scope: the parent construct.
        :param construct_id: this construct's id (the component's name derives from its path).
        :param config: the model (``hosting.mode: component`` naming ``endpoint``'s
            declaration); checked against every deploy rule. Required.
        :param endpoint: the shared endpoint it is placed on. Required.
        :param artifacts: holds S3 weights (``weights.source: s3``) and their key. Required.
        :param stage: log retention of the component's log group, as for ``LlmEndpoint``.
            Required.
        :param execution_role: an existing role for the model (``CfnModel``), as for
            ``LlmEndpoint``. Default: a new least-privilege role.
        """
        super().__init__(scope, construct_id)
        hosting = config.hosting
        if not isinstance(hosting, ComponentHosting):
            raise ValueError(f"{config.name}: hosting.mode is endpoint: use LlmEndpoint")
        if hosting.endpoint_name != endpoint.plan.name:
            raise ValueError(
                f"{config.name}: hosting.endpoint names {hosting.endpoint_name!r}, not the "
                f"endpoint given ({endpoint.plan.name!r})"
            )
        self.config = config
        self.hosting = hosting
        self.endpoint = endpoint
        try:
            plan = plan_deployment(config)
        except DeployRuleError as exc:
            raise ValueError(exc.located(config.name)) from None
        self.fit = plan.fit
        self.gpus = plan.fit.gpus
        self.image = plan.image
        self.serving_properties = None
        self.network = None
        self.endpoint_name = endpoint.endpoint_name
        self.inference_component_name = Names.unique_resource_name(
            self, max_length=63, separator="-"
        )
        self.inference_component_arn = Stack.of(self).format_arn(
            service="sagemaker",
            resource="inference-component",
            resource_name=self.inference_component_name.lower(),
        )
        retention, self.log_group = endpoint_log_group(
            self,
            self.inference_component_name,
            StagePolicy.for_stage(stage),
            namespace=COMPONENT_NAMESPACE,
        )
        self.role = self._execution_role(artifacts, execution_role)
        self.model = self._model(artifacts)
        self.component = self._component()
        self.component.node.add_dependency(retention)
        self._scaling()

    def _component(self) -> sagemaker.CfnInferenceComponent:
        hosting = self.hosting
        instance = self.config.instance
        ic = sagemaker.CfnInferenceComponent
        component = ic(
            self,
            "Component",
            inference_component_name=self.inference_component_name,
            endpoint_name=self.endpoint_name,
            variant_name=VARIANT_NAME,
            specification=ic.InferenceComponentSpecificationProperty(
                model_name=self.model.attr_model_name,
                compute_resource_requirements=ic.InferenceComponentComputeResourceRequirementsProperty(
                    number_of_accelerator_devices_required=hosting.accelerators_per_copy,
                    min_memory_required_in_mb=hosting.memory_per_copy_mb,
                ),
                startup_parameters=ic.InferenceComponentStartupParametersProperty(
                    model_data_download_timeout_in_seconds=instance.model_data_download_timeout_s,
                    container_startup_health_check_timeout_in_seconds=(
                        instance.container_startup_health_check_timeout_s
                    ),
                ),
            ),
            runtime_config=ic.InferenceComponentRuntimeConfigProperty(
                copy_count=hosting.copies.initial
            ),
        )
        component.add_resource_dependency(self.endpoint.endpoint)
        return component

    # --- scaling ----------------------------------------------------------------------------

    def _scaling(self) -> None:
        hosting = self.hosting
        copies = hosting.copies
        self.scalable_target, self.target_tracking = concurrency_tracking(
            self,
            resource_id=f"inference-component/{self.inference_component_name}",
            scalable_dimension="sagemaker:inference-component:DesiredCopyCount",
            min_capacity=copies.min,
            max_capacity=copies.max,
            depends_on=self.component,
            metric="SageMakerInferenceComponentConcurrentRequestsPerCopyHighResolution",
            target_value=hosting.target_concurrent_requests_per_copy,
            scale_in_cooldown_s=hosting.scale_in_cooldown_s,
            scale_out_cooldown_s=hosting.scale_out_cooldown_s,
        )
        self.scale_out_policy: appscaling.CfnScalingPolicy | None = None
        self.no_capacity_alarm: cloudwatch.Alarm | None = None
        self.idle_policy: appscaling.CfnScalingPolicy | None = None
        self.idle_alarm: cloudwatch.Alarm | None = None
        if not hosting.scales_to_zero:
            return
        self.scale_out_policy = self._step_policy(
            "ScaleOutFromZero", "ChangeInCapacity", lower_bound=0, adjustment=1
        )
        self.no_capacity_alarm = cloudwatch.Alarm(
            self,
            "NoCapacityAlarm",
            alarm_description=(
                f"{self.config.name}: a request found no copy; adds one (scale out from zero)"
            ),
            # No label: a plain MetricName/Namespace/Dimensions alarm, as in the AWS procedure.
            metric=self._metric(SAGEMAKER_NAMESPACE, NO_CAPACITY_METRIC, "Sum"),
            threshold=1,
            evaluation_periods=1,
            datapoints_to_alarm=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        self._add_action(self.no_capacity_alarm, self.scale_out_policy)
        if hosting.idle_minutes_to_zero is None:
            return
        self.idle_policy = self._step_policy(
            "ScaleInToZero", "ExactCapacity", upper_bound=0, adjustment=0
        )
        self.idle_alarm = cloudwatch.Alarm(
            self,
            "IdleAlarm",
            alarm_description=(
                f"{self.config.name}: no invocations for {hosting.idle_minutes_to_zero} "
                "minutes; sets the copies to 0"
            ),
            # Requests that found no copy count as activity too: otherwise, while a copy is
            # starting after a scale-out from zero (minutes, with no served invocation yet),
            # this alarm would still be breaching and set the copies back to 0.
            metric=cloudwatch.MathExpression(
                expression="FILL(invocations, 0) + FILL(no_capacity, 0)",
                using_metrics={
                    "invocations": self.metric_invocations(),
                    "no_capacity": self.metric_no_capacity(),
                },
                period=Duration.minutes(1),
                label="Requests (0 when idle)",
            ),
            threshold=1,
            evaluation_periods=hosting.idle_minutes_to_zero,
            comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.BREACHING,
        )
        self._add_action(self.idle_alarm, self.idle_policy)

    def _policy_name(self, suffix: str) -> str:
        return f"{Names.unique_id(self)}{suffix}"[-256:]

    def _step_policy(
        self,
        construct_id: str,
        adjustment_type: str,
        *,
        adjustment: int,
        lower_bound: float | None = None,
        upper_bound: float | None = None,
    ) -> appscaling.CfnScalingPolicy:
        step = appscaling.CfnScalingPolicy.StepAdjustmentProperty(
            scaling_adjustment=adjustment,
            metric_interval_lower_bound=lower_bound,
            metric_interval_upper_bound=upper_bound,
        )
        return appscaling.CfnScalingPolicy(
            self,
            construct_id,
            policy_name=self._policy_name(construct_id),
            policy_type="StepScaling",
            scaling_target_id=self.scalable_target.ref,
            step_scaling_policy_configuration=(
                appscaling.CfnScalingPolicy.StepScalingPolicyConfigurationProperty(
                    adjustment_type=adjustment_type,
                    metric_aggregation_type="Maximum",
                    cooldown=60,
                    step_adjustments=[step],
                )
            ),
        )

    @staticmethod
    def _add_action(alarm: cloudwatch.Alarm, policy: appscaling.CfnScalingPolicy) -> None:
        cfn = alarm.node.default_child
        assert isinstance(cfn, cloudwatch.CfnAlarm)
        cfn.alarm_actions = [policy.attr_arn]

    # --- metrics ----------------------------------------------------------------------------

    def _metric(
        self, namespace: str, name: str, statistic: str, label: str | None = None
    ) -> cloudwatch.Metric:
        return cloudwatch.Metric(
            namespace=namespace,
            metric_name=name,
            dimensions_map={DIMENSION: self.inference_component_name},
            statistic=statistic,
            period=Duration.minutes(1),
            label=label,
        )

    def metric_no_capacity(self) -> cloudwatch.Metric:
        """Requests that found no copy (Sum per minute): the scale-out-from-zero signal."""
        return self._metric(SAGEMAKER_NAMESPACE, NO_CAPACITY_METRIC, "Sum", "No capacity")

    def metric_invocations(self) -> cloudwatch.Metric:
        return self._metric(SAGEMAKER_NAMESPACE, "Invocations", "Sum", "Invocations")

    def metric_concurrent_requests_per_copy(self) -> cloudwatch.Metric:
        return self._metric(
            SAGEMAKER_NAMESPACE, "ConcurrentRequestsPerCopy", "Maximum", "Concurrent / copy"
        )

    def metric_copies(self) -> cloudwatch.Metric:
        """Copies reporting utilization: the SampleCount per minute of CPUUtilizationNormalized,
        which each copy reports (monitoring-cloudwatch.html). An inference: AWS publishes no
        copy-count metric (the count itself is DescribeInferenceComponent's
        ``RuntimeConfig.CurrentCopyCount``); reads 0 (no data) at zero copies."""
        return self._metric(
            COMPONENT_NAMESPACE, "CPUUtilizationNormalized", "SampleCount", "Copies (reporting)"
        )

    def metric_gpu_utilization(self) -> cloudwatch.Metric:
        """GPU utilization of the copies' reserved GPUs, 0–100 % (already normalized)."""
        return self._metric(
            COMPONENT_NAMESPACE, "GPUUtilizationNormalized", "Average", "GPU utilization (%)"
        )

    def metric_gpu_memory_utilization(self) -> cloudwatch.Metric:
        return self._metric(
            COMPONENT_NAMESPACE, "GPUMemoryUtilizationNormalized", "Average", "GPU memory (%)"
        )

    # --- gateway ----------------------------------------------------------------------------

    def backend(self, weight: int | None = None) -> Backend:
        """How the gateway invokes this component (the routing table's entry)."""
        return backend(
            BackendTarget(self.config, self.endpoint_name, weight, self.inference_component_name)
        )

    def grant_invoke(self, grantee: iam.IGrantable) -> iam.Grant:
        """Allow ``grantee`` ``sagemaker:InvokeEndpoint`` on the shared endpoint and this
        component only. Both exact ARNs: the Service Authorization Reference lists the
        action's resource types per ARN type, and we could not read whether the component's
        ARN is required or optional (unverified); granting both covers either reading, and
        IAM can further restrict with the inference component's ARN."""
        return iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["sagemaker:InvokeEndpoint"],
            resource_arns=[self.endpoint.endpoint_arn, self.inference_component_arn],
        )
