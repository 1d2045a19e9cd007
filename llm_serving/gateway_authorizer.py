"""The gateway's key authorizer: lets clients send their API key as ``Authorization: Bearer``
(what every OpenAI client does) while API Gateway's usage plans keep counting it.

The function is ``llm_gateway/authorizer.py`` (standard library only), deployed as one file.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from aws_cdk import Duration
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from llm_serving._nag import acknowledge, skip_checkov
from llm_serving.bundling import RUNTIME, runtime_dir
from llm_serving.logs_key import LogPolicy

AUTHORIZER_SOURCE = "authorizer.py"


def _code() -> lambda_.Code:
    """``index.py`` = the runtime package's ``authorizer.py`` (a content-hashed asset)."""
    staging = Path(tempfile.mkdtemp(prefix="llm-gateway-authorizer-"))
    shutil.copyfile(runtime_dir() / AUTHORIZER_SOURCE, staging / "index.py")
    return lambda_.Code.from_asset(str(staging))


def key_authorizer(
    scope: Construct,
    *,
    cache_s: int,
    architecture: lambda_.Architecture,
    log_policy: LogPolicy,
) -> apigateway.RequestAuthorizer:
    """A REQUEST authorizer (construct id ``KeyAuthorizer``) and its function (``Authorizer``,
    with its own log group and a role that may only write to it).

    ``cache_s`` > 0 caches answers per ``Authorization`` header, which API Gateway then requires
    (botocore apigateway model, ``CreateAuthorizer.identitySource``: caching parameters must be
    "present, not null and non-empty", else 401 without calling the function); 0 calls the
    function on every request and so also accepts ``x-api-key``.
    """
    log_group = log_policy.log_group(scope, "AuthorizerLogs")
    role = iam.Role(
        scope,
        "AuthorizerRole",
        assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
        description="LLM gateway key authorizer: write its own log group, nothing else",
    )
    role.add_to_policy(
        iam.PolicyStatement(
            actions=["logs:CreateLogStream", "logs:PutLogEvents"],
            resources=[log_group.log_group_arn],
        )
    )
    function = lambda_.Function(
        scope,
        "Authorizer",
        description="Finds the API key (Authorization: Bearer or x-api-key) for usage plans",
        runtime=RUNTIME,
        architecture=architecture,
        handler="index.handler",
        code=_code(),
        memory_size=128,
        timeout=Duration.seconds(3),
        log_group=log_group,
        role=role,
    )
    cfn_function = function.node.default_child
    assert isinstance(cfn_function, lambda_.CfnFunction)
    # CDK's DependsOn the role duplicates the GetAtt (cfn-lint W3005), as for the gateway.
    cfn_function.add_metadata("cfn-lint", {"config": {"ignore_checks": ["W3005"]}})
    _explain_findings(function)
    authorizer = apigateway.RequestAuthorizer(
        scope,
        "KeyAuthorizer",
        handler=function,
        identity_sources=[apigateway.IdentitySource.header("Authorization")] if cache_s else [],
        results_cache_ttl=Duration.seconds(cache_s),
    )
    if not cache_s:  # CDK would write "" for none; the property is optional without caching
        cfn = authorizer.node.default_child
        assert isinstance(cfn, apigateway.CfnAuthorizer)
        cfn.add_property_deletion_override("IdentitySource")
    return authorizer


def _explain_findings(function: lambda_.Function) -> None:
    acknowledge(
        function,
        "AwsSolutions-L1",
        "Python 3.13, the same runtime as the gateway function (llm_serving/bundling.py "
        "RUNTIME); the authorizer is one standard-library file.",
    )
    for check, reason in (
        ("CKV_AWS_115", "API Gateway invokes it once per uncached request; a reservation "
         "would take from the account's unreserved concurrency for nothing."),
        ("CKV_AWS_116", "Invoked synchronously by API Gateway; a dead-letter queue only "
         "receives failed asynchronous invocations."),
        ("CKV_AWS_117", "Reads request headers and calls no service at all; a VPC would "
         "add cold-start time for nothing."),
        ("CKV_AWS_173", "It has no environment variables, so there is nothing to encrypt "
         "beyond Lambda's default."),
    ):  # fmt: skip
        skip_checkov(function, check, reason)
