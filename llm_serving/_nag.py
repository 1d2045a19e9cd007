"""One place to record cdk-nag acknowledgements, always beside the resource they concern."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Stack, Validations
from constructs import IConstruct


def acknowledge(scope: IConstruct, rule_id: str, reason: str) -> None:
    """Acknowledge ``rule_id`` (e.g. ``AwsSolutions-S1``) on ``scope`` and its children."""
    pack = rule_id.split("-", 1)[0]
    Validations.of(scope).acknowledge(Acknowledgment(id=f"{pack}::{rule_id}", reason=reason))


def nag_resource(scope: IConstruct, value: str) -> str:
    """``value`` (an ARN, possibly with tokens) as cdk-nag names it in a finding id:
    ``Fn::Join`` flattened, ``{"Ref": X}`` written ``<X>``."""
    resolved = Stack.of(scope).resolve(value)
    if isinstance(resolved, str):
        return resolved
    if isinstance(resolved, dict) and "Fn::Join" in resolved:
        separator, parts = resolved["Fn::Join"]
        return str(separator).join(
            f"<{part['Ref']}>" if isinstance(part, dict) and "Ref" in part else str(part)
            for part in parts
        )
    raise ValueError(f"cannot name {resolved!r} as cdk-nag does")
