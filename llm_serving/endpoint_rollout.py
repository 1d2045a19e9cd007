"""How an LlmEndpoint changes: deployment policy with automatic rollback, and autoscaling."""

from __future__ import annotations

from aws_cdk import CfnResource, Names
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from llm_serving.config.schema import BlueGreenDeployment, Deployment, Routing, Scaling
from llm_serving.endpoint_metrics import VARIANT_NAME


def routing_config(routing: Routing) -> sagemaker.CfnEndpointConfig.RoutingConfigProperty:
    """The production variant's ``RoutingConfig`` (CloudFormation ``RoutingStrategy`` and
    ``PrefixAwareRoutingConfig``: aws-cdk-lib ``CfnEndpointConfig.RoutingConfigProperty`` and
    ``PrefixAwareRoutingConfigProperty``; values and ranges from botocore's SageMaker model,
    ``config/hosting.py``)."""
    prefix = (
        sagemaker.CfnEndpointConfig.PrefixAwareRoutingConfigProperty(
            prefix_length=routing.prefix_length,
            concurrency_threshold=routing.concurrency_threshold,
        )
        if routing.strategy == "prefix_aware"
        else None
    )
    return sagemaker.CfnEndpointConfig.RoutingConfigProperty(
        routing_strategy=routing.cfn_strategy, prefix_aware_routing_config=prefix
    )


def deployment_config(
    deployment: Deployment, rollback_alarm: cloudwatch.IAlarm
) -> sagemaker.CfnEndpoint.DeploymentConfigProperty:
    """Rolling or blue/green, rolled back by ``rollback_alarm``; ``deployment`` is already
    checked against SageMaker's limits (``plan_deployment``)."""
    rollback = sagemaker.CfnEndpoint.AutoRollbackConfigProperty(
        alarms=[sagemaker.CfnEndpoint.AlarmProperty(alarm_name=rollback_alarm.alarm_name)]
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


def autoscaling(
    scope: Construct, *, scaling: Scaling, endpoint_name: str, endpoint: sagemaker.CfnEndpoint
) -> tuple[appscaling.CfnScalableTarget, appscaling.CfnScalingPolicy]:
    """Target tracking on concurrent requests per model. L1 resources because the L2
    ``ScalableTarget`` always creates and passes a role: without ``RoleARN`` Application
    Auto Scaling uses its service-linked role for SageMaker
    (``AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint``), creating it if needed
    (RegisterScalableTarget API reference: "If the service supports service-linked roles,
    Application Auto Scaling uses a service-linked role, which it creates if it does not yet
    exist")."""
    return concurrency_tracking(
        scope,
        resource_id=f"endpoint/{endpoint_name}/variant/{VARIANT_NAME}",
        scalable_dimension="sagemaker:variant:DesiredInstanceCount",
        min_capacity=scaling.min_instances,
        max_capacity=scaling.max_instances,
        depends_on=endpoint,
        metric="SageMakerVariantConcurrentRequestsPerModelHighResolution",
        target_value=scaling.target_concurrent_requests_per_model,
        scale_in_cooldown_s=scaling.scale_in_cooldown_s,
        scale_out_cooldown_s=scaling.scale_out_cooldown_s,
    )


def concurrency_tracking(
    scope: Construct,
    *,
    resource_id: str,
    scalable_dimension: str,
    min_capacity: int,
    max_capacity: int,
    depends_on: CfnResource,
    metric: str,
    target_value: float,
    scale_in_cooldown_s: int,
    scale_out_cooldown_s: int,
) -> tuple[appscaling.CfnScalableTarget, appscaling.CfnScalingPolicy]:
    """A SageMaker scalable target (``ScalableTarget``, created after ``depends_on``) and its
    target-tracking policy (``ConcurrentRequests``) on the predefined ``metric``: an endpoint
    variant's instances (:func:`autoscaling`) or an inference component's copies."""
    target = appscaling.CfnScalableTarget(
        scope,
        "ScalableTarget",
        service_namespace="sagemaker",
        resource_id=resource_id,
        scalable_dimension=scalable_dimension,
        min_capacity=min_capacity,
        max_capacity=max_capacity,
    )
    target.add_resource_dependency(depends_on)
    policy = appscaling.CfnScalingPolicy(
        scope,
        "ConcurrentRequests",
        policy_name=f"{Names.unique_id(scope)}ConcurrentRequests"[-256:],
        policy_type="TargetTrackingScaling",
        scaling_target_id=target.ref,
        target_tracking_scaling_policy_configuration=(
            appscaling.CfnScalingPolicy.TargetTrackingScalingPolicyConfigurationProperty(
                target_value=target_value,
                predefined_metric_specification=(
                    appscaling.CfnScalingPolicy.PredefinedMetricSpecificationProperty(
                        predefined_metric_type=metric
                    )
                ),
                scale_in_cooldown=scale_in_cooldown_s,
                scale_out_cooldown=scale_out_cooldown_s,
            )
        ),
    )
    return target, policy
