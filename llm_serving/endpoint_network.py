"""An LlmEndpoint's place in a VPC: subnets, security groups, and what its role needs for them.

SageMaker creates network interfaces (ENIs) in the chosen subnets with the chosen security
groups and attaches them to the model's containers ("Give SageMaker AI Hosted Endpoints Access
to Resources in Your Amazon VPC",
https://docs.aws.amazon.com/sagemaker/latest/dg/host-vpc.html).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aws_cdk import Annotations, Stack, Token
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from llm_serving._nag import nag_resource

# CreateModel VpcConfig: 1–16 subnets, 1–5 security groups
# (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_VpcConfig.html).
MAX_SUBNETS = 16
MAX_SECURITY_GROUPS = 5

# The EC2 permissions SageMaker needs to create and attach the ENIs of a model in a VPC, as
# listed in https://docs.aws.amazon.com/sagemaker/latest/dg/host-vpc.html#host-vpc-endpoints
# (also https://docs.aws.amazon.com/sagemaker/latest/dg/sagemaker-roles.html, "CreateModel API:
# Execution Role Permissions", which lists the same without ec2:DescribeVpcEndpoints).
# Describe* actions and DeleteNetworkInterfacePermission have no required resource type in the
# Service Authorization Reference
# (https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonec2.html):
# they take "*". DeleteNetworkInterfacePermission names a permission id, not the interface, so
# an ec2:Vpc condition on it could not be relied on.
UNSCOPED_EC2_ACTIONS = (
    "ec2:DeleteNetworkInterfacePermission",
    "ec2:DescribeDhcpOptions",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeSubnets",
    "ec2:DescribeVpcEndpoints",
    "ec2:DescribeVpcs",
)


@dataclass(frozen=True)
class EndpointNetwork:
    """Where an endpoint's ENIs go: one VPC, its selected subnets, its security groups."""

    vpc: ec2.IVpc
    subnets: ec2.SelectedSubnets
    security_groups: list[ec2.ISecurityGroup]

    @property
    def vpc_config(self) -> sagemaker.CfnModel.VpcConfigProperty:
        return sagemaker.CfnModel.VpcConfigProperty(
            subnets=self.subnets.subnet_ids,
            security_group_ids=[sg.security_group_id for sg in self.security_groups],
        )


def default_subnets(vpc: ec2.IVpc) -> ec2.SubnetSelection:
    """Private subnets with egress (NAT) if the VPC has any, else isolated ones; never
    public subnets."""
    if vpc.private_subnets:
        return ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)
    if vpc.isolated_subnets:
        return ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)
    raise ValueError(
        f"VPC {vpc.node.path} has no private (with egress) or isolated subnets; pass "
        "vpc_subnets explicitly (public subnets are never chosen by default)"
    )


def select(vpc: ec2.IVpc, selection: ec2.SubnetSelection) -> ec2.SelectedSubnets:
    """``vpc.select_subnets`` with a ``SubnetSelection`` object (jsii takes its fields)."""
    return vpc.select_subnets(
        availability_zones=selection.availability_zones,
        one_per_az=selection.one_per_az,
        subnet_filters=selection.subnet_filters,
        subnet_group_name=selection.subnet_group_name,
        subnets=selection.subnets,
        subnet_type=selection.subnet_type,
    )


def endpoint_network(
    scope: Construct,
    *,
    model_name: str,
    vpc: ec2.IVpc,
    vpc_subnets: ec2.SubnetSelection | None,
    security_groups: Sequence[ec2.ISecurityGroup] | None,
    hub_weights: bool,
) -> EndpointNetwork:
    """Select the subnets and create a security group unless some are given; warn when Hub
    weights would have no route to the internet."""
    where = f"{model_name}: "
    subnets = select(vpc, vpc_subnets or default_subnets(vpc))
    count = len(subnets.subnet_ids)
    if not 2 <= count <= MAX_SUBNETS:
        raise ValueError(
            f"{where}vpc_subnets selects {count} subnet(s); SageMaker hosting needs at least two "
            f"in different Availability Zones (host-vpc.html) and takes at most {MAX_SUBNETS}"
        )
    zones = subnets.availability_zones
    if not any(Token.is_unresolved(z) for z in zones) and len(set(zones)) < 2:
        raise ValueError(
            f"{where}vpc_subnets are all in {zones[0]}; SageMaker hosting needs subnets in at "
            "least two Availability Zones, even for one instance (host-vpc.html)"
        )
    isolated = {subnet.subnet_id for subnet in vpc.isolated_subnets}
    if hub_weights and set(subnets.subnet_ids) <= isolated:
        Annotations.of(scope).add_warning_v2(
            "llm-serving:hub-weights-without-internet",
            f"{where}the container downloads its weights from the Hugging Face Hub, but "
            "the selected subnets are isolated (no route to the internet): choose subnets "
            "with a NAT gateway, or copy the weights to S3 (weights.source: s3)",
        )
    if security_groups is not None:
        groups = list(security_groups)
        if not 1 <= len(groups) <= MAX_SECURITY_GROUPS:
            raise ValueError(
                f"{where}security_groups has {len(groups)} group(s); SageMaker takes 1 to "
                f"{MAX_SECURITY_GROUPS} (omit it to get one created)"
            )
    else:
        groups = [_security_group(scope, model_name, vpc)]
    return EndpointNetwork(vpc=vpc, subnets=subnets, security_groups=groups)


def https_egress_group(
    scope: Construct, construct_id: str, vpc: ec2.IVpc, *, description: str, egress: str
) -> ec2.SecurityGroup:
    """A security group with no ingress and one egress rule: TCP 443 to any IPv4 address
    (``egress`` describes it). Used for the endpoints' ENIs and the gateway function."""
    group = ec2.SecurityGroup(
        scope, construct_id, vpc=vpc, description=description, allow_all_outbound=False
    )
    group.add_egress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(443), egress)
    return group


def _security_group(scope: Construct, model_name: str, vpc: ec2.IVpc) -> ec2.SecurityGroup:
    # Egress: HTTPS only, to any IPv4 address; the subnets' routes decide what that reaches.
    # Not the VPC CIDR alone, because what goes out through these ENIs needs S3 at least:
    # "the download and upload of customer data and model artifacts are routed through your
    # VPC subnet", even with network isolation
    # (https://docs.aws.amazon.com/sagemaker/latest/dg/mkt-algo-model-internet-free.html), and
    # without internet access that is through an S3 gateway endpoint
    # (https://docs.aws.amazon.com/sagemaker/latest/dg/host-vpc.html#host-vpc-s3), whose
    # destinations are S3's public address ranges (the com.amazonaws.<region>.s3 managed prefix
    # list, whose pl- id differs by Region and cannot be resolved in a template), not VPC
    # addresses. Hub weights and LMI's own S3 download need the same port through a NAT
    # gateway. DNS to the Amazon-provided resolver is not filtered by security groups. No
    # ingress: invocations reach the container through SageMaker, not through these ENIs.
    # For a tighter rule (e.g. the S3 prefix list and the VPC CIDR), pass your own groups.
    return https_egress_group(
        scope,
        "SecurityGroup",
        vpc,
        description=f"ENIs of the {model_name} SageMaker endpoint: HTTPS out only",
        egress="HTTPS: model data from S3 (gateway endpoint or NAT), Hub or LMI downloads",
    )


def grant_vpc_access(scope: Construct, role: iam.IRole, network: EndpointNetwork) -> str:
    """Add the EC2 permissions SageMaker needs for the model's ENIs to ``role``, scoped to
    this VPC, its selected subnets and security groups where IAM allows; return the
    cdk-nag finding id of the one ARN wildcard (new interfaces have no id yet)."""
    stack = Stack.of(scope)

    def arn(resource: str, name: str) -> str:
        return stack.format_arn(service="ec2", resource=resource, resource_name=name)

    interfaces = arn("network-interface", "*")
    # CreateNetworkInterface needs the new interface (no id before it exists), the subnet and
    # the security groups: the last two are named exactly.
    role.add_to_principal_policy(
        iam.PolicyStatement(
            actions=["ec2:CreateNetworkInterface"],
            resources=[
                interfaces,
                *(arn("subnet", subnet_id) for subnet_id in network.subnets.subnet_ids),
                *(arn("security-group", sg.security_group_id) for sg in network.security_groups),
            ],
        )
    )
    # Both take the network-interface resource with the ec2:Vpc condition key (the VPC's ARN).
    role.add_to_principal_policy(
        iam.PolicyStatement(
            actions=["ec2:CreateNetworkInterfacePermission", "ec2:DeleteNetworkInterface"],
            resources=[interfaces],
            conditions={"ArnEquals": {"ec2:Vpc": network.vpc.vpc_arn}},
        )
    )
    role.add_to_principal_policy(
        iam.PolicyStatement(actions=list(UNSCOPED_EC2_ACTIONS), resources=["*"])
    )
    return f"AwsSolutions-IAM5[Resource::{nag_resource(scope, interfaces)}]"


VPC_WILDCARD_REASON = (
    " With a VPC: SageMaker's ENI permissions ec2:Describe* (VPCs, subnets, security groups, "
    "DHCP options, VPC endpoints, network interfaces) and ec2:DeleteNetworkInterfacePermission "
    "have no resource-level permissions."
)
VPC_INTERFACE_REASON = (
    "SageMaker creates the endpoint's network interfaces at run time: a new interface has no "
    "id to name; CreateNetworkInterface is limited to the selected subnets and security groups, "
    "CreateNetworkInterfacePermission and DeleteNetworkInterface by an ec2:Vpc condition to "
    "this VPC."
)
