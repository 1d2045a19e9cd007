"""The gateway function: Python under the Lambda Web Adapter, streaming; its environment (the
wire contract's variables) and Lambda's size limit on it."""

from __future__ import annotations

import json
from collections.abc import Sequence

from aws_cdk import Duration
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from llm_gateway.contract import (
    CONNECT_TIMEOUT_ENV,
    CONSUMERS_ENV,
    CORS_ORIGINS_ENV,
    MAX_REQUEST_BYTES_ENV,
    METRIC_NAMESPACE_ENV,
    QUOTA_TABLE_ENV,
    READ_TIMEOUT_ENV,
    ROUTES_ENV,
    SERVICE_NAME_ENV,
    RouteTable,
)
from llm_serving._nag import acknowledge, skip_checkov
from llm_serving.bundling import RUNTIME, gateway_code
from llm_serving.config.gateway import ConsumerConfig, GatewayConfig
from llm_serving.endpoint_network import default_subnets, https_egress_group
from llm_serving.gateway_tables import consumer_table

APP_PORT = 8080
HEALTH_PATH = "/healthz"
# Lambda rejects a function whose environment variables exceed 4 KB in total.
ENVIRONMENT_LIMIT_BYTES = 4096
# Deploy-time values, estimated for the size check: API key ids are 10 characters; a table
# name is at most 255.
KEY_ID_LENGTH = 10
TABLE_NAME_ESTIMATE = "t" * 255


def function_environment(
    config: GatewayConfig,
    *,
    route_table: RouteTable,
    table_name: str,
    service_name: str,
    namespace: str,
    consumers: str | None = None,
) -> dict[str, str]:
    """The function's environment: the Web Adapter's variables and the contract's. The
    consumer table is set separately (its key ids are deploy-time values); ``consumers`` is
    for the size estimate."""
    env = {
        "AWS_LAMBDA_EXEC_WRAPPER": "/opt/bootstrap",
        "AWS_LWA_INVOKE_MODE": "response_stream",
        "AWS_LWA_PORT": str(APP_PORT),
        "AWS_LWA_READINESS_CHECK_PATH": HEALTH_PATH,
        ROUTES_ENV: route_table.model_dump_json(),
        QUOTA_TABLE_ENV: table_name,
        MAX_REQUEST_BYTES_ENV: str(config.limits.max_request_bytes),
        CONNECT_TIMEOUT_ENV: str(config.upstream.connect_timeout_s),
        READ_TIMEOUT_ENV: str(config.upstream.read_timeout_s),
        METRIC_NAMESPACE_ENV: namespace,
        SERVICE_NAME_ENV: service_name,
        CORS_ORIGINS_ENV: ",".join(config.api.cors_origins),
    }
    if consumers is not None:
        env[CONSUMERS_ENV] = consumers
    return env


def check_environment_size(
    where: str,
    config: GatewayConfig,
    consumers: Sequence[ConsumerConfig],
    *,
    route_table: RouteTable,
    service_name: str,
    namespace: str,
) -> None:
    """Lambda's 4 KB limit, with the deploy-time values estimated: each API key id as
    10 characters, the table name as 255 (its maximum)."""
    key_ids = {c.name: f"{i:0{KEY_ID_LENGTH}d}" for i, c in enumerate(consumers)}
    table = consumer_table(config.tiers, consumers, key_ids=key_ids).model_dump_json()
    estimate = function_environment(
        config,
        route_table=route_table,
        table_name=TABLE_NAME_ESTIMATE,
        service_name=service_name,
        namespace=namespace,
        consumers=table,
    )
    routes = estimate[ROUTES_ENV]
    size = len(json.dumps(estimate, separators=(",", ":")).encode("utf-8"))
    if size > ENVIRONMENT_LIMIT_BYTES:
        raise ValueError(
            f"{where}: the gateway function's environment would be about {size} "
            f"bytes, over Lambda's {ENVIRONMENT_LIMIT_BYTES}-byte limit (route table "
            f"{len(routes)} bytes, consumer table {len(table)} bytes with "
            f"{len(consumers)} consumer(s); API key ids estimated at {KEY_ID_LENGTH} "
            f"characters each and the table name at {len(TABLE_NAME_ESTIMATE)}); fix: route "
            "fewer models or backends, or serve fewer consumers, through one gateway"
        )


def gateway_function(
    scope: Construct,
    config: GatewayConfig,
    *,
    environment: dict[str, str],
    layer_arn: str,
    log_group: logs.ILogGroup,
    role: iam.Role,
    network: FunctionNetwork | None = None,
) -> lambda_.Function:
    """The function (construct id ``Function``; the layer ``WebAdapter``), in ``network``'s
    VPC when one is given."""
    arm = config.web_adapter.architecture == "arm64"
    if network is not None:
        network.grant_interfaces(role)
    function = lambda_.Function(
        scope,
        "Function",
        description="OpenAI-compatible streaming proxy to SageMaker endpoints",
        runtime=RUNTIME,
        architecture=lambda_.Architecture.ARM_64 if arm else lambda_.Architecture.X86_64,
        handler="run.sh",
        code=gateway_code(config.web_adapter.architecture),
        layers=[lambda_.LayerVersion.from_layer_version_arn(scope, "WebAdapter", layer_arn)],
        environment=environment,
        memory_size=config.function.memory_mb,
        timeout=Duration.minutes(15),
        reserved_concurrent_executions=config.function.reserved_concurrency,
        tracing=lambda_.Tracing.ACTIVE,
        log_group=log_group,
        role=role,
        vpc=network.vpc if network else None,
        vpc_subnets=network.subnets if network else None,
        security_groups=network.security_groups if network else None,
    )
    # CDK makes every function depend on its role construct (so that the role's default
    # policy exists first); the role half duplicates the GetAtt, which cfn-lint flags.
    cfn_function = function.node.default_child
    assert isinstance(cfn_function, lambda_.CfnFunction)
    cfn_function.add_metadata("cfn-lint", {"config": {"ignore_checks": ["W3005"]}})
    _skip_function_checks(
        function, reserved=config.function.reserved_concurrency, in_vpc=network is not None
    )
    acknowledge(
        function,
        "AwsSolutions-L1",
        "Python 3.13 is deliberate and supported: the offline bundler installs cp313 wheels "
        "(pydantic_core is compiled); moving to 3.14 means changing PYTHON_VERSION and "
        "RUNTIME in llm_serving/bundling.py and refreshing the wheelhouse together.",
    )
    return function


def _skip_function_checks(
    function: lambda_.Function, *, reserved: int | None, in_vpc: bool
) -> None:
    """checkov's Lambda checks that do not fit a streaming API Gateway proxy, with why."""
    if reserved is None:
        skip_checkov(
            function,
            "CKV_AWS_115",
            "Reserved concurrency is opt-in (gateway.yaml function.reserved_concurrency): "
            "reserving by default would take from the account's unreserved pool; API Gateway "
            "usage plans throttle each key before the function.",
        )
    skip_checkov(
        function,
        "CKV_AWS_116",
        "Invoked synchronously by API Gateway (InvokeWithResponseStream); a dead-letter queue "
        "only receives failed asynchronous invocations.",
    )
    if not in_vpc:
        skip_checkov(
            function,
            "CKV_AWS_117",
            "Calls only AWS APIs (SageMaker runtime, DynamoDB) over TLS with SigV4 and reaches "
            "no VPC resource; a VPC is opt-in (StreamingGateway vpc=), with the VPC endpoints "
            "it then needs (add_vpc_endpoints).",
        )
    skip_checkov(
        function,
        "CKV_AWS_173",
        "The environment holds no secrets (routes, API key ids, table name, limits); Lambda "
        "encrypts it at rest with its AWS-managed key.",
    )


class FunctionNetwork:
    """The gateway function's VPC placement: subnets and security groups (one created when
    none is given: outbound HTTPS only, since the function calls AWS APIs and nothing else)."""

    def __init__(
        self,
        scope: Construct,
        *,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection | None,
        security_groups: Sequence[ec2.ISecurityGroup] | None,
    ) -> None:
        self.vpc = vpc
        self.subnets = subnets or default_subnets(vpc)
        if security_groups:
            self.security_groups = list(security_groups)
        else:
            group = https_egress_group(
                scope,
                "FunctionSecurityGroup",
                vpc,
                description="LLM gateway function: outbound HTTPS to AWS APIs only",
                egress="SageMaker runtime and DynamoDB over TLS (VPC endpoints or NAT)",
            )
            self.security_groups = [group]

    def grant_interfaces(self, role: iam.Role) -> None:
        """What Lambda needs to attach the function to the VPC, from the function's role:
        the actions of AWS's AWSLambdaVPCAccessExecutionRole, as an inline statement ("If you
        prefer to create your own IAM permissions policy, make sure to add all of the
        following permissions", https://docs.aws.amazon.com/lambda/latest/dg/configuration-vpc.html).
        CDK adds that managed policy only to roles it creates itself."""
        role.add_to_policy(
            iam.PolicyStatement(
                actions=[
                    "ec2:CreateNetworkInterface",
                    "ec2:DescribeNetworkInterfaces",
                    "ec2:DescribeSubnets",
                    "ec2:DeleteNetworkInterface",
                    "ec2:AssignPrivateIpAddresses",
                    "ec2:UnassignPrivateIpAddresses",
                ],
                resources=["*"],
            )
        )
