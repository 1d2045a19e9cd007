"""One place to record cdk-nag acknowledgements and checkov skips, always beside the resource
they concern."""

from __future__ import annotations

from aws_cdk import Acknowledgment, CfnResource, Stack, Validations
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


def skip_cdk_provider_function_checks(function: CfnResource, provider: str) -> None:
    """checkov's Lambda checks on a CDK-owned custom-resource provider function."""
    reason = (
        f"CDK's own {provider} custom-resource provider: CloudFormation invokes it only "
        "during deploys of this stack, synchronously, and it calls only AWS APIs"
    )
    skip_checkov(function, "CKV_AWS_115", f"{reason}; no concurrency to reserve.")
    skip_checkov(function, "CKV_AWS_116", f"{reason}; CloudFormation reports its failures.")
    skip_checkov(function, "CKV_AWS_117", f"{reason}; no VPC resource to reach.")


def skip_checkov(scope: IConstruct, check_id: str, reason: str) -> None:
    """Record a checkov skip (``Metadata: checkov: skip: [{id, comment}]``) on ``scope``'s
    CloudFormation resource (itself, or its default child), keeping earlier skips."""
    resource = scope if isinstance(scope, CfnResource) else scope.node.default_child
    if not isinstance(resource, CfnResource):
        raise TypeError(f"{scope.node.path}: no CloudFormation resource to annotate")
    metadata = resource.get_metadata("checkov") or {"skip": []}
    skips = [s for s in metadata["skip"] if s["id"] != check_id]
    resource.add_metadata("checkov", {"skip": [*skips, {"id": check_id, "comment": reason}]})
