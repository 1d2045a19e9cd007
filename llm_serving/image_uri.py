"""Resolve a pinned :class:`ImageSpec` to an image URI and ECR repository ARN in a stack."""

from __future__ import annotations

from aws_cdk import Aws, CfnMapping, Stack, Token
from constructs import Construct

from llm_serving.config.images import ImageSpec


def _registry_account(scope: Construct, spec: ImageSpec) -> str:
    stack = Stack.of(scope)
    if not Token.is_unresolved(stack.region):
        return spec.account_for(stack.region)
    # Region-agnostic stack: look the account up at deploy time from the pinned table.
    mapping_id = f"Registry{spec.family}{spec.version}".replace(".", "").replace("-", "")
    existing = stack.node.try_find_child(mapping_id)
    mapping = (
        existing
        if isinstance(existing, CfnMapping)
        else CfnMapping(
            stack,
            mapping_id,
            mapping={region: {"Account": account} for region, account in spec.registries.items()},
        )
    )
    return mapping.find_in_map(Aws.REGION, "Account")


def _domain_suffix(scope: Construct) -> str:
    region = Stack.of(scope).region
    if Token.is_unresolved(region):
        return Aws.URL_SUFFIX
    return "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"


def image_uri(scope: Construct, spec: ImageSpec) -> str:
    """``<account>.dkr.ecr.<region>.<suffix>/<repository>:<tag>`` for the scope's region."""
    stack = Stack.of(scope)
    account = _registry_account(scope, spec)
    return f"{account}.dkr.ecr.{stack.region}.{_domain_suffix(scope)}/{spec.repository}:{spec.tag}"


def repository_arn(scope: Construct, spec: ImageSpec) -> str:
    """ARN of the image's ECR repository in the scope's region."""
    return Stack.of(scope).format_arn(
        service="ecr",
        account=_registry_account(scope, spec),
        resource="repository",
        resource_name=spec.repository,
    )
