"""One place to record cdk-nag acknowledgements, always beside the resource they concern."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Validations
from constructs import IConstruct


def acknowledge(scope: IConstruct, rule_id: str, reason: str) -> None:
    """Acknowledge ``rule_id`` (e.g. ``AwsSolutions-S1``) on ``scope`` and its children."""
    Validations.of(scope).acknowledge(Acknowledgment(id=rule_id, reason=reason))
