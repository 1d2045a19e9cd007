"""Guardrails and the response cache at synth: the guardrail created from config (and one
referenced), its published version and key, the cache table, their exact grants and the
routing table's entries; cdk-nag, CloudFormation validation and cfn-lint clean."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import botocore.session
import pytest
import yaml
from aws_cdk.assertions import Match, Template
from pydantic import ValidationError

from llm_gateway.contract import CACHE_TABLE_ENV, ROUTES_ENV
from llm_serving.config import GatewayConfig, GuardrailConfig
from llm_serving.config import gateway_safety as safety
from stacks import BuiltApp, add_compliance_checks
from tests.conftest import CONFIG_DIR, build_default, iam_statements, make_app
from tests.test_gateway import _function_env

DEEPSEEK = "deepseek-r1-distill-qwen-7b"
LLAMA = "llama-2-13b-chat"
GATEWAY: dict[str, Any] = {
    "api": {"account_cloudwatch_role": True},
    "guardrails": {
        "safety": {
            "content_filters": {"HATE": {}, "PROMPT_ATTACK": {"output": "NONE"}},
            "denied_topics": [{"name": "Investment advice", "definition": "Advice on buying "
                               "or selling securities.", "examples": ["Should I buy ACME?"]}],
            "words": ["project-zeus"],
            "profanity": True,
            "pii": ["EMAIL", "US_SOCIAL_SECURITY_NUMBER"],
        },
        "corporate": {"guardrail_id": "abcd1234efgh", "version": "3"},
    },
    "routes": [
        {"model": "chat", "backends": [{"model": DEEPSEEK}],
         "guardrail": {"name": "safety", "window_chars": 300, "on_unavailable": "fail_open"},
         "cache": {"ttl_s": 600, "scope": "route"}},
        {"model": "llama", "backends": [{"model": LLAMA}], "guardrail": {"name": "corporate"}},
    ],
}  # fmt: skip


@pytest.fixture(scope="module")
def assembly(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, BuiltApp]:
    config_dir = tmp_path_factory.mktemp("configs")
    for model in (DEEPSEEK, LLAMA):
        shutil.copy(CONFIG_DIR / f"{model}.yaml", config_dir)
    (config_dir / "gateway.yaml").write_text(yaml.safe_dump(GATEWAY))
    outdir = tmp_path_factory.mktemp("cdk.out")
    app = make_app(validation=True, outdir=outdir)
    _, built = build_default(app=app, config_dir=config_dir)
    add_compliance_checks(app)
    app.synth()
    return outdir, built


@pytest.fixture(scope="module")
def template(assembly: tuple[Path, BuiltApp]) -> Template:
    _, built = assembly
    assert built.gateway is not None
    return Template.from_stack(built.gateway)


def test_the_created_guardrail_has_the_configured_policies_and_its_own_key(
    template: Template,
) -> None:
    template.has_resource_properties(
        "AWS::Bedrock::Guardrail",
        {
            "KmsKeyArn": {"Fn::GetAtt": [Match.string_like_regexp("GuardrailSafetyKey"), "Arn"]},
            "ContentPolicyConfig": {"FiltersConfig": [
                {"Type": "HATE", "InputStrength": "HIGH", "OutputStrength": "HIGH"},
                {"Type": "PROMPT_ATTACK", "InputStrength": "HIGH", "OutputStrength": "NONE"},
            ]},
            "TopicPolicyConfig": {"TopicsConfig": [Match.object_like(
                {"Name": "Investment advice", "Type": "DENY", "Examples": ["Should I buy ACME?"]}
            )]},
            "WordPolicyConfig": {"WordsConfig": [{"Text": "project-zeus"}],
                                 "ManagedWordListsConfig": [{"Type": "PROFANITY"}]},
            "SensitiveInformationPolicyConfig": {"PiiEntitiesConfig": [
                {"Type": "EMAIL", "Action": "BLOCK"},
                {"Type": "US_SOCIAL_SECURITY_NUMBER", "Action": "BLOCK"},
            ]},
        },
    )  # fmt: skip
    template.resource_count_is("AWS::Bedrock::Guardrail", 1)  # the referenced one is not built
    template.has_resource_properties(
        "AWS::Bedrock::GuardrailVersion",
        {
            "GuardrailIdentifier": {"Fn::GetAtt": [Match.any_value(), "GuardrailId"]},
            "Description": Match.string_like_regexp("policy [0-9a-f]{16}$"),
        },
    )


def test_the_function_may_apply_exactly_these_guardrails(template: Template) -> None:
    (apply,) = [s for s in iam_statements(template) if s["Action"] == "bedrock:ApplyGuardrail"]
    created, referenced = apply["Resource"]
    assert created["Fn::GetAtt"][1] == "GuardrailArn"
    assert "guardrail/abcd1234efgh" in json.dumps(referenced)
    decrypt = [
        s for s in iam_statements(template)
        if s["Action"] == "kms:Decrypt" and "GuardrailSafetyKey" in json.dumps(s["Resource"])
    ]  # fmt: skip
    assert len(decrypt) == 1


def test_the_routing_table_carries_each_routes_guardrail_and_cache(template: Template) -> None:
    raw = json.dumps(_function_env(template)[ROUTES_ENV])
    assert '\\"window_chars\\":300' in raw
    assert '\\"on_unavailable\\":\\"fail_open\\"' in raw
    assert '\\"guardrail_id\\":\\"abcd1234efgh\\",\\"guardrail_version\\":\\"3\\"' in raw
    assert '\\"cache\\":{\\"ttl_s\\":600,\\"scope\\":\\"route\\"' in raw
    assert "GuardrailId" in raw  # the created guardrail's id, resolved at deploy


def test_the_cache_table_is_encrypted_expiring_and_granted_get_and_put_only(
    template: Template,
) -> None:
    env = _function_env(template)
    assert "ResponseCacheTable" in env[CACHE_TABLE_ENV]["Ref"]
    template.has_resource_properties(
        "AWS::DynamoDB::Table",
        {
            "SSESpecification": {"SSEEnabled": True, "SSEType": "KMS",
                                 "KMSMasterKeyId": Match.any_value()},
            "TimeToLiveSpecification": {"AttributeName": "expires_at", "Enabled": True},
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
        },
    )  # fmt: skip
    cache = [
        s for s in iam_statements(template)
        if "ResponseCacheTable" in json.dumps(s["Resource"]) and "dynamodb:GetItem" in s["Action"]
    ]  # fmt: skip
    assert len(cache) == 1
    assert sorted(cache[0]["Action"]) == ["dynamodb:GetItem", "dynamodb:PutItem"]


def test_synth_passes_nag_validation_and_cfn_lint(assembly: tuple[Path, BuiltApp]) -> None:
    outdir, built = assembly
    report = json.loads((outdir / "validation-report.json").read_text())
    (nag,) = report["pluginReports"]
    assert nag["conclusion"] == "success", json.dumps(nag["violations"], indent=1)[:3000]
    assert built.gateway is not None
    template = outdir / f"{built.gateway.stack_name}.template.json"
    result = subprocess.run(
        [str(Path(sys.executable).with_name("cfn-lint")), "--format", "parseable", str(template)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout


def test_the_default_app_has_neither() -> None:
    _, built = build_default()
    assert built.gateway is not None
    gateway = Template.from_stack(built.gateway)
    gateway.resource_count_is("AWS::Bedrock::Guardrail", 0)
    assert CACHE_TABLE_ENV not in _function_env(gateway)


@pytest.mark.parametrize(
    ("guardrail", "message"),
    [
        ({"guardrail_id": "abc"}, "guardrail_id needs a version"),
        ({"guardrail_id": "abc", "version": "1", "words": ["x"]}, "keep one of the two"),
        ({"words": ["x"], "version": "1"}, "version applies only with guardrail_id"),
        ({}, "needs at least one policy"),
        ({"content_filters": {"PROMPT_ATTACK": {}}}, "PROMPT_ATTACK.output must be NONE"),
        ({"pii": ["FAVOURITE_COLOUR"]}, "FAVOURITE_COLOUR"),
    ],
)
def test_a_guardrail_that_cannot_be_built_fails_with_the_fix(
    guardrail: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        GuardrailConfig.model_validate(guardrail)


def test_a_route_naming_an_undefined_guardrail_fails() -> None:
    with pytest.raises(ValidationError, match=r"routes.0.guardrail.name: 'nope' is not defined"):
        GatewayConfig.model_validate(
            {"routes": [{"model": "chat", "backends": [{"model": DEEPSEEK}],
                         "guardrail": {"name": "nope"}}]}
        )  # fmt: skip


@pytest.mark.parametrize(
    ("ours", "shape"),
    [
        (safety.ContentFilterType, "GuardrailContentFilterType"),
        (safety.FilterStrength, "GuardrailFilterStrength"),
        (safety.PiiEntityType, "GuardrailPiiEntityType"),
    ],
)
def test_the_value_sets_are_bedrocks(ours: Any, shape: str) -> None:
    model = botocore.session.get_session().get_service_model("bedrock")
    assert set(ours.__args__) == set(model.shape_for(shape).enum)


def test_the_dashboard_charts_guardrail_actions_and_cache_hits(template: Template) -> None:
    (dashboard,) = template.find_resources("AWS::CloudWatch::Dashboard").values()
    body = json.dumps(dashboard["Properties"]["DashboardBody"])
    assert "chat: guardrail actions" in body
    assert "llama: guardrail actions" in body
    assert "chat: response cache" in body
    assert "llama: response cache" not in body
    assert "GuardrailActions" in body
