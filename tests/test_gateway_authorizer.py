"""The key authorizer: API key source AUTHORIZER, the authorizer on every method, its cache,
and a role that may do nothing but write its own logs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template

from tests.test_gateway import _config, _gateway


def _authorizer(template: Template) -> tuple[str, dict[str, Any]]:
    ((logical_id, authorizer),) = template.find_resources("AWS::ApiGateway::Authorizer").items()
    return logical_id, authorizer["Properties"]


def test_every_method_uses_the_key_authorizer_and_api_keys() -> None:
    template, _ = _gateway()
    template.has_resource_properties("AWS::ApiGateway::RestApi", {"ApiKeySourceType": "AUTHORIZER"})
    logical_id, props = _authorizer(template)
    assert props["Type"] == "REQUEST"
    methods = template.find_resources("AWS::ApiGateway::Method")
    assert len(methods) == 2
    for method in methods.values():
        assert method["Properties"]["AuthorizationType"] == "CUSTOM"
        assert method["Properties"]["AuthorizerId"] == {"Ref": logical_id}
        assert method["Properties"]["ApiKeyRequired"] is True


def test_cached_by_the_authorization_header_by_default() -> None:
    template, _ = _gateway()
    _, props = _authorizer(template)
    assert props["AuthorizerResultTtlInSeconds"] == 300
    assert props["IdentitySource"] == "method.request.header.Authorization"


def test_no_cache_accepts_x_api_key_too() -> None:
    """Caching requires every identity source (botocore: CreateAuthorizer.identitySource), so
    with the cache off there is none and x-api-key requests reach the authorizer."""
    template, _ = _gateway(config=_config(api={"authorizer_cache_s": 0}))
    _, props = _authorizer(template)
    assert props["AuthorizerResultTtlInSeconds"] == 0
    assert "IdentitySource" not in props


def test_the_authorizer_function_is_small_and_may_only_write_its_logs() -> None:
    template, _ = _gateway()
    (function,) = template.find_resources(
        "AWS::Lambda::Function",
        {
            "Properties": {
                "Handler": "index.handler",
                "Role": {"Fn::GetAtt": [Match.string_like_regexp("AuthorizerRole"), "Arn"]},
            }
        },
    ).values()
    props = function["Properties"]
    assert (props["MemorySize"], props["Timeout"], props["Runtime"]) == (128, 3, "python3.13")
    assert "Environment" not in props
    role_id = props["Role"]["Fn::GetAtt"][0]
    role = template.find_resources("AWS::IAM::Role")[role_id]
    assert "ManagedPolicyArns" not in role["Properties"]
    policies = template.find_resources(
        "AWS::IAM::Policy", {"Properties": {"Roles": [{"Ref": role_id}]}}
    )
    statements = [
        s for p in policies.values() for s in p["Properties"]["PolicyDocument"]["Statement"]
    ]
    assert [sorted(s["Action"]) for s in statements] == [
        ["logs:CreateLogStream", "logs:PutLogEvents"]
    ]
    log_group = props["LoggingConfig"]["LogGroup"]["Ref"]
    assert statements[0]["Resource"] == {"Fn::GetAtt": [log_group, "Arn"]}
    # API Gateway may invoke it, for this API's authorizers only.
    template.has_resource_properties(
        "AWS::Lambda::Permission",
        {
            "Action": "lambda:InvokeFunction",
            "Principal": "apigateway.amazonaws.com",
            "FunctionName": {"Fn::GetAtt": [Match.string_like_regexp("Authorizer"), "Arn"]},
            "SourceArn": Match.any_value(),
        },
    )


@pytest.mark.parametrize("seconds", [-1, 3601])
def test_cache_bounds_are_api_gateways(seconds: int) -> None:
    with pytest.raises(ValueError, match="authorizer_cache_s"):
        _config(api={"authorizer_cache_s": seconds})


def test_the_uncached_authorizer_passes_cfn_lint(tmp_path: Path) -> None:
    """Without caching the authorizer has no identity source at all (CDK would write "")."""
    template, _ = _gateway(config=_config(api={"authorizer_cache_s": 0}))
    path = tmp_path / "gateway.template.json"
    path.write_text(json.dumps(template.to_json()))
    result = subprocess.run(
        [str(Path(sys.executable).with_name("cfn-lint")), "--format", "parseable", str(path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode & 2 == 0, result.stdout + result.stderr
