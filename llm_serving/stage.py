"""Deployment stages and what they mean for data lifetime."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from constructs import Construct


class Stage(StrEnum):
    """``dev`` tears down cleanly; ``prod`` retains data and protects it from deletion."""

    DEV = "dev"
    PROD = "prod"

    @classmethod
    def parse(cls, value: str) -> Stage:
        try:
            return cls(value)
        except ValueError:
            allowed = ", ".join(s.value for s in cls)
            raise ValueError(
                f"stage {value!r} is not one of: {allowed} (pass -c stage=<name>)"
            ) from None


@dataclass(frozen=True)
class StagePolicy:
    """Lifetimes derived from a :class:`Stage`."""

    removal_policy: RemovalPolicy
    auto_delete_objects: bool
    log_retention: logs.RetentionDays
    access_log_expiry: Duration
    noncurrent_version_expiry: Duration
    key_pending_window: Duration

    @classmethod
    def for_stage(cls, stage: Stage) -> StagePolicy:
        if stage is Stage.PROD:
            return cls(
                removal_policy=RemovalPolicy.RETAIN,
                auto_delete_objects=False,
                log_retention=logs.RetentionDays.ONE_YEAR,
                access_log_expiry=Duration.days(365),
                noncurrent_version_expiry=Duration.days(90),
                key_pending_window=Duration.days(30),
            )
        return cls(
            removal_policy=RemovalPolicy.DESTROY,
            auto_delete_objects=True,
            log_retention=logs.RetentionDays.TWO_WEEKS,
            access_log_expiry=Duration.days(30),
            noncurrent_version_expiry=Duration.days(7),
            key_pending_window=Duration.days(7),
        )

    def data_key(self, scope: Construct, construct_id: str, *, description: str) -> kms.Key:
        """A rotated KMS key for data of this stage: destroyed with it in dev, kept in prod."""
        return kms.Key(
            scope,
            construct_id,
            description=description,
            enable_key_rotation=True,
            pending_window=self.key_pending_window,
            removal_policy=self.removal_policy,
        )
