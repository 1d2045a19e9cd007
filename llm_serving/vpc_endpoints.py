"""The VPC endpoints a VPC without internet access needs for this product, on request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from aws_cdk import aws_ec2 as ec2
from constructs import Construct

from llm_serving._nag import acknowledge
from llm_serving.endpoint_network import default_subnets


@dataclass(frozen=True)
class VpcEndpoints:
    """What :func:`add_vpc_endpoints` created or found (``None``: not requested)."""

    s3: ec2.GatewayVpcEndpoint | None
    dynamodb: ec2.GatewayVpcEndpoint | None
    sagemaker_runtime: ec2.InterfaceVpcEndpoint | None


def add_vpc_endpoints(
    vpc: ec2.IVpc,
    *,
    subnets: ec2.SubnetSelection | None = None,
    s3: bool = True,
    sagemaker_runtime: bool = False,
    dynamodb: bool = False,
) -> VpcEndpoints:
    """Add to ``vpc`` the endpoints this product needs when the VPC has no internet access
    (no NAT gateway); with a NAT gateway they are optional (they keep the traffic off it).
    Idempotent: a second call on the same VPC returns the endpoints already added.

    Created on request, because the AWS documentation says they are needed:

    - ``s3`` (gateway endpoint, free; default on): an ``LlmEndpoint`` in the VPC. "If you
      configure your VPC so that model containers don't have access to the internet, they
      can't connect to the Amazon S3 buckets that contain your data unless you create a VPC
      endpoint" (https://docs.aws.amazon.com/sagemaker/latest/dg/host-vpc.html#host-vpc-s3);
      SageMaker's own download of the model data is "routed through your VPC subnet", even
      with network isolation
      (https://docs.aws.amazon.com/sagemaker/latest/dg/mkt-algo-model-internet-free.html).
      This covers S3 weights, LMI's own download of its S3 ``model_id`` and the LMI package.
    - ``sagemaker_runtime`` (interface endpoint, private DNS, HTTPS from the VPC's CIDR;
      billed per hour and AZ): only for callers *inside* the VPC, such as a
      ``StreamingGateway`` with ``vpc=``, that invoke endpoints
      (https://docs.aws.amazon.com/sagemaker/latest/dg/interface-vpc-endpoint.html).
    - ``dynamodb`` (gateway endpoint, free): the ``StreamingGateway`` function's quota table,
      when the function runs in the VPC
      (https://docs.aws.amazon.com/vpc/latest/privatelink/vpc-endpoints-ddb.html).

    Not created, because SageMaker hosting does not reach them through your VPC: ECR (the
    image is pulled by SageMaker: the model's ``RepositoryAccessMode`` is ``Platform``, and
    only ``Vpc`` mode, a private registry, pulls through the VPC — CreateModel ``ImageConfig``,
    https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_ImageConfig.html),
    CloudWatch Logs and metrics (SageMaker ships the container's output and metrics itself;
    they arrive even from a network-isolated container, which "can't make any outbound network
    calls"), and STS (SageMaker assumes the execution role; the container gets its
    credentials from SageMaker). The host-vpc page above names only the S3 endpoint.

    :param vpc: the VPC of the endpoints (and of the gateway function, if any).
    :param subnets: whose route tables get the gateway endpoints' routes, and where the
        interface endpoint's network interfaces go (one per Availability Zone). Default: the
        private subnets with egress, else the isolated ones (as ``LlmEndpoint`` and
        ``StreamingGateway`` choose).
    :param s3: add the S3 gateway endpoint. Default: True.
    :param sagemaker_runtime: add the ``sagemaker.runtime`` interface endpoint. Default: False.
    :param dynamodb: add the DynamoDB gateway endpoint. Default: False.
    """
    selection = subnets or default_subnets(vpc)

    def gateway(
        construct_id: str, service: ec2.GatewayVpcEndpointAwsService
    ) -> ec2.GatewayVpcEndpoint:
        existing = vpc.node.try_find_child(construct_id)
        if isinstance(existing, ec2.GatewayVpcEndpoint):
            return existing
        return vpc.add_gateway_endpoint(construct_id, service=service, subnets=[selection])

    runtime: ec2.InterfaceVpcEndpoint | None = None
    if sagemaker_runtime:
        existing = vpc.node.try_find_child("SageMakerRuntimeEndpoint")
        if isinstance(existing, ec2.InterfaceVpcEndpoint):
            runtime = existing
        else:
            # Its network interfaces only answer: no egress (CDK's default would allow all).
            group = ec2.SecurityGroup(
                cast(Construct, vpc),  # every IVpc is a construct (imported ones are proxies)
                "SageMakerRuntimeEndpointSecurityGroup",
                vpc=vpc,
                description="sagemaker.runtime interface endpoint: HTTPS from the VPC only",
                allow_all_outbound=False,
            )
            runtime = vpc.add_interface_endpoint(
                "SageMakerRuntimeEndpoint",
                service=ec2.InterfaceVpcEndpointAwsService.SAGEMAKER_RUNTIME,
                subnets=selection,
                private_dns_enabled=True,
                security_groups=[group],
                open=True,  # ingress TCP 443 from the VPC's CIDR
            )
            acknowledge(
                group,
                "AwsSolutions-EC23",
                "Ingress is TCP 443 from this VPC's own CIDR only; cdk-nag cannot evaluate the "
                "CIDR when it is a CloudFormation reference (Fn::GetAtt CidrBlock of a new VPC).",
            )
    return VpcEndpoints(
        s3=gateway("S3Endpoint", ec2.GatewayVpcEndpointAwsService.S3) if s3 else None,
        dynamodb=(
            gateway("DynamoDbEndpoint", ec2.GatewayVpcEndpointAwsService.DYNAMODB)
            if dynamodb
            else None
        ),
        sagemaker_runtime=runtime,
    )
