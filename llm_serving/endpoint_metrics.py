"""CloudWatch metrics of one SageMaker endpoint variant, in the units people read."""

from __future__ import annotations

import re
from typing import Literal

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch

from llm_serving.config.gpus import InstanceGpus

VARIANT_NAME = "AllTraffic"
SAGEMAKER_NAMESPACE = "AWS/SageMaker"
ENDPOINT_HOST_NAMESPACE = "/aws/sagemaker/Endpoints"


class EndpointMetrics:
    """``metric_*`` helpers of :class:`~llm_serving.endpoint.LlmEndpoint` (a mixin: it reads
    ``endpoint_name`` and ``gpus.count``). Units and ranges: ../shared/reference/aws-facts.md,
    "CloudWatch metrics" (GPU metrics read 0–100 × GPU count; latencies are in µs)."""

    endpoint_name: str
    gpus: InstanceGpus

    def _metric(
        self,
        namespace: str,
        name: str,
        statistic: str,
        period: Duration | None,
        label: str | None = None,
    ) -> cloudwatch.Metric:
        return cloudwatch.Metric(
            namespace=namespace,
            metric_name=name,
            dimensions_map={"EndpointName": self.endpoint_name, "VariantName": VARIANT_NAME},
            statistic=statistic,
            period=period or Duration.minutes(1),
            label=label,
        )

    def metric_invocations(self, *, period: Duration | None = None) -> cloudwatch.Metric:
        return self._metric(SAGEMAKER_NAMESPACE, "Invocations", "Sum", period)

    def metric_5xx_rate(self, *, period: Duration | None = None) -> cloudwatch.Metric:
        """Fraction of invocations that failed with 5xx (each request reports 0 or 1)."""
        return self._metric(SAGEMAKER_NAMESPACE, "Invocation5XXErrors", "Average", period)

    def metric_4xx_rate(self, *, period: Duration | None = None) -> cloudwatch.Metric:
        return self._metric(SAGEMAKER_NAMESPACE, "Invocation4XXErrors", "Average", period)

    def metric_concurrent_requests(self, *, period: Duration | None = None) -> cloudwatch.Metric:
        return self._metric(SAGEMAKER_NAMESPACE, "ConcurrentRequestsPerModel", "Maximum", period)

    def _per_gpu_percent(
        self, name: str, label: str, period: Duration | None
    ) -> cloudwatch.MathExpression:
        raw = self._metric(ENDPOINT_HOST_NAMESPACE, name, "Average", period)
        return cloudwatch.MathExpression(
            expression=f"raw / {self.gpus.count}",
            using_metrics={"raw": raw},
            label=label,
            period=period or Duration.minutes(1),
        )

    def metric_gpu_utilization(
        self, *, period: Duration | None = None
    ) -> cloudwatch.MathExpression:
        """GPUUtilization reads 0–100 × GPU count; divided here to 0–100 %."""
        return self._per_gpu_percent("GPUUtilization", "GPU utilization (%)", period)

    def metric_gpu_memory_utilization(
        self, *, period: Duration | None = None
    ) -> cloudwatch.MathExpression:
        """GPUMemoryUtilization reads 0–100 × GPU count; divided here to 0–100 %."""
        return self._per_gpu_percent("GPUMemoryUtilization", "GPU memory (%)", period)

    def metric_latency_ms(
        self,
        metric_name: Literal["ModelLatency", "OverheadLatency"] = "ModelLatency",
        *,
        statistic: str = "p90",
        period: Duration | None = None,
    ) -> cloudwatch.MathExpression:
        """``ModelLatency`` (time in the container) or ``OverheadLatency`` (SageMaker's own),
        published in microseconds, as milliseconds. The raw metric's id names the metric and
        the statistic, so several of these can share one graph or alarm."""
        stat_id = re.sub(r"[^a-z0-9]", "_", statistic.lower())
        raw_id = f"{metric_name.lower()}_{stat_id}"
        raw = self._metric(SAGEMAKER_NAMESPACE, metric_name, statistic, period)
        return cloudwatch.MathExpression(
            expression=f"{raw_id} / 1000",
            using_metrics={raw_id: raw},
            label=f"{metric_name.removesuffix('Latency')} latency {statistic} (ms)",
            period=period or Duration.minutes(1),
        )

    def metric_cpu_utilization(self, *, period: Duration | None = None) -> cloudwatch.Metric:
        """CPUUtilization reads 0–100 × vCPU count (the catalog has no vCPU counts, so it is
        not normalized)."""
        return self._metric(
            ENDPOINT_HOST_NAMESPACE,
            "CPUUtilization",
            "Average",
            period,
            label="CPU (0–100 × vCPUs)",
        )

    def metric_memory_utilization(self, *, period: Duration | None = None) -> cloudwatch.Metric:
        """Host memory in use, 0–100 %."""
        return self._metric(
            ENDPOINT_HOST_NAMESPACE, "MemoryUtilization", "Average", period, label="Memory (%)"
        )

    def metric_disk_utilization(self, *, period: Duration | None = None) -> cloudwatch.Metric:
        """Disk space in use, 0–100 %."""
        return self._metric(
            ENDPOINT_HOST_NAMESPACE, "DiskUtilization", "Average", period, label="Disk (%)"
        )
