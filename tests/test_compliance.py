"""Synthesize the app as `cdk synth` does — cdk-nag AwsSolutions and CloudFormation's built-in
validation on — and lint every template with cfn-lint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App, Stack
from aws_cdk import aws_s3 as s3

from llm_serving.config.amis import HOST_AMIS, cuda_from_tag
from llm_serving.stage import Stage
from stacks import add_compliance_checks
from tests.conftest import ROOT, build_default, make_app


def _synth(outdir: Path, stage: Stage) -> Path:
    app = make_app(validation=True, outdir=outdir)
    build_default(app=app, stage=stage)
    add_compliance_checks(app)
    app.synth()
    return outdir


@pytest.fixture(scope="module", params=[Stage.DEV, Stage.PROD], ids=["dev", "prod"])
def assembly(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    stage: Stage = request.param
    return _synth(tmp_path_factory.mktemp(f"cdk.out.{stage.value}"), stage)


def test_synth_passes_nag_and_validation(assembly: Path) -> None:
    """Any unacknowledged AwsSolutions finding would have raised during synth."""
    report = json.loads((assembly / "validation-report.json").read_text())
    (nag,) = report["pluginReports"]
    assert nag["pluginName"] == "AwsSolutions"
    assert nag["conclusion"] == "success"
    assert nag["violations"] == []
    stage = assembly.name.split(".")[2].rstrip("0123456789")
    assert {p.name.removesuffix(".template.json") for p in assembly.glob("*.template.json")} == {
        f"LlmServing-{stage}-Artifacts",
        f"LlmServing-{stage}-Model-deepseek-r1-distill-qwen-7b",
        f"LlmServing-{stage}-Model-llama-2-13b-chat",
        f"LlmServing-{stage}-Gateway",
    }


def _acknowledged(assembly: Path) -> dict[str, str]:
    """``"<construct path> <rule>"`` → reason, for every acknowledgement in the assembly."""
    acknowledged: dict[str, str] = {}
    for metadata in assembly.glob("*.metadata.json"):
        for path, entries in json.loads(metadata.read_text()).items():
            for entry in entries:
                if entry["type"] == "aws:cdk:acknowledged-rules":
                    for rule, reason in entry["data"].items():
                        acknowledged[f"{path} {rule}"] = reason
    return acknowledged


def test_every_acknowledgement_has_a_reason(assembly: Path) -> None:
    acknowledged = _acknowledged(assembly)
    assert acknowledged, "expected the known, justified acknowledgements"
    for where, reason in acknowledged.items():
        assert where.split(" ")[1].startswith("AwsSolutions::"), where
        assert len(reason) > 40, f"{where}: reason too thin: {reason!r}"


# The Observability construct (dashboard, alarms, alarm topic and its key) needs none: SNS2
# (customer-managed key) and SNS3 (TLS-only topic policy) are fixed, not acknowledged.
GATEWAY_ACKNOWLEDGEMENTS = {
    "Gateway/FunctionRole AwsSolutions::AwsSolutions-IAM5[Resource::*]",  # X-Ray
    "Gateway/Function AwsSolutions::AwsSolutions-L1",  # Python 3.13 matches the bundle
    "Gateway/Authorizer AwsSolutions::AwsSolutions-L1",  # the same runtime
    "Gateway/Api AwsSolutions::AwsSolutions-APIG3",  # no WAF yet
    "Gateway/Api AwsSolutions::AwsSolutions-APIG4",  # API keys + usage plans
    "Gateway/Api AwsSolutions::AwsSolutions-COG4",  # API keys + usage plans
    "Gateway/Api/CloudWatchRole AwsSolutions::AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:"
    "iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs]",
}


def test_gateway_acknowledges_only_the_known_findings(assembly: Path) -> None:
    """A new finding in the gateway must be fixed or acknowledged here on purpose."""
    stage = assembly.name.split(".")[2].rstrip("0123456789")
    prefix = f"/LlmServing-{stage}-Gateway/"
    gateway = {k.removeprefix(prefix) for k in _acknowledged(assembly) if k.startswith(prefix)}
    assert gateway == GATEWAY_ACKNOWLEDGEMENTS


def cfn_lint(assembly: Path) -> subprocess.CompletedProcess[str]:
    """cfn-lint (parseable output) over every template of ``assembly``."""
    templates = [str(p) for p in sorted(assembly.glob("*.template.json"))]
    return subprocess.run(
        [str(Path(sys.executable).with_name("cfn-lint")), "--format", "parseable", *templates],
        capture_output=True,
        text=True,
        check=False,
    )


def test_cfn_lint_reports_no_errors(assembly: Path) -> None:
    result = cfn_lint(assembly)
    # Exit status is a bit mask: 2 = error, 4 = warning, 8 = informational.
    assert result.returncode & 2 == 0, result.stdout + result.stderr
    assert result.returncode == 0, f"cfn-lint warnings:\n{result.stdout}"


def test_nag_is_live_and_fails_an_unacknowledged_finding(tmp_path: Path) -> None:
    """Proves the check above can fail: a bare bucket breaks synth with S1/S10."""
    app = App(outdir=str(tmp_path), builtin_cloud_formation_validation=False)
    stack = Stack(app, "Bare")
    s3.Bucket(stack, "Unlogged")
    add_compliance_checks(app)
    with pytest.raises(RuntimeError, match="AwsSolutions-S1"):
        app.synth()


# --- What SageMaker would refuse, read back from the synthesized templates -------------------


def _resources(assembly: Path, kind: str) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(assembly.glob("*.template.json")):
        for resource in json.loads(path.read_text())["Resources"].values():
            if resource["Type"] == kind:
                found.append((path.name, resource["Properties"]))
    return found


def _image_tag(model: dict[str, Any]) -> str:
    image = model["PrimaryContainer"]["Image"]
    text = (
        image
        if isinstance(image, str)
        else "".join(p for p in image["Fn::Join"][1] if isinstance(p, str))
    )
    return text.rsplit(":", 1)[1]


def test_every_variants_host_ami_runs_its_images_cuda_major(assembly: Path) -> None:
    """One model per model stack: its image tag's CUDA major equals the AMI's (botocore's
    InferenceAmiVersion documentation; llm_serving/config/amis.py)."""
    checked = 0
    for template, config in _resources(assembly, "AWS::SageMaker::EndpointConfig"):
        ((_, model),) = [
            m for m in _resources(assembly, "AWS::SageMaker::Model") if m[0] == template
        ]
        cuda = cuda_from_tag(_image_tag(model))
        assert cuda is not None, template
        for variant in config["ProductionVariants"]:
            ami = HOST_AMIS[variant["InferenceAmiVersion"]]
            assert ami.cuda.major == cuda.major, (template, variant["InferenceAmiVersion"], cuda)
            checked += 1
    assert checked == 2


def test_every_deployment_policy_is_within_sagemakers_limits(assembly: Path) -> None:
    """Rolling batches (and rollback batches) of 5–50 % of every instance count autoscaling
    allows (RollingUpdatePolicy); canary sizes of at most 50 % (TrafficRoutingConfig)."""
    targets = {
        props["ResourceId"].split("/")[1]: (props["MinCapacity"], props["MaxCapacity"])
        for _, props in _resources(assembly, "AWS::ApplicationAutoScaling::ScalableTarget")
    }
    endpoints = _resources(assembly, "AWS::SageMaker::Endpoint")
    assert len(endpoints) == 2
    for template, endpoint in endpoints:
        policy = endpoint["DeploymentConfig"]
        assert policy["AutoRollbackConfiguration"]["Alarms"], template
        low, high = targets[endpoint["EndpointName"]]
        rolling = policy.get("RollingUpdatePolicy")
        if rolling is not None:
            for size in (rolling["MaximumBatchSize"], rolling.get("RollbackMaximumBatchSize")):
                if size is None:
                    continue
                assert size["Type"] == "INSTANCE_COUNT", template
                for count in range(low, high + 1):
                    assert 0.05 <= size["Value"] / count <= 0.5, (template, count, size)
        else:
            routing = policy["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]
            canary = routing.get("CanarySize")
            assert canary is None or (
                canary["Type"] == "CAPACITY_PERCENT" and canary["Value"] <= 50
            ), template


CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"


def checkov(assembly: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """checkov's CloudFormation reports over ``assembly``, and its failed checks as
    ``"<check> <resource> (<template>)"``."""
    assert CHECKOV.exists(), "checkov is installed by `make test` into .venv-checkov"
    result = subprocess.run(
        [str(CHECKOV), "-d", str(assembly), "--framework", "cloudformation", "--skip-download",
         "--output", "json"],
        capture_output=True, text=True, check=False, env={**os.environ, "LOG_LEVEL": "ERROR"},
    )  # fmt: skip
    reports: Any = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed = [
        f"{f['check_id']} {f['resource']} ({Path(f['file_path']).name})"
        for report in reports
        for f in report["results"]["failed_checks"]
    ]
    return reports, failed


def test_checkov_finds_nothing_unexplained(assembly: Path) -> None:
    """checkov (CloudFormation framework) over every template: 0 failed checks; every skip
    sits in the resource's metadata with its reason (llm_serving/_nag.py skip_checkov)."""
    reports, failed = checkov(assembly)
    assert failed == [], "\n".join(failed)
    skipped = [s for report in reports for s in report["results"]["skipped_checks"]]
    assert skipped, "expected the known, reasoned skips"
    for check in skipped:
        reason = check["check_result"].get("suppress_comment", "")
        assert len(reason) > 40, f"{check['check_id']} {check['resource']}: {reason!r}"
    assert sum(r["summary"]["passed"] for r in reports) > 100


# --- Stage lifetimes and re-creation ----------------------------------------------------------

_NAME_PROPERTIES = (
    "LogGroupName", "BucketName", "TableName", "RoleName", "AliasName", "TopicName",
    "FunctionName", "DashboardName", "AlarmName", "EndpointName", "Name", "KeyAlias",
)  # fmt: skip
_RETAINED = {"Retain", "RetainExceptOnCreate"}


def _all_resources(assembly: Path) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path.name, logical_id, resource)
        for path in sorted(assembly.glob("*.template.json"))
        for logical_id, resource in json.loads(path.read_text())["Resources"].items()
    ]


def _refers_to_a_resource(value: Any, logical_ids: set[str]) -> bool:
    """True if ``value`` contains a Ref/GetAtt to a resource of the template (a name that
    changes when that resource is re-created), not only literals and pseudo parameters."""
    if isinstance(value, dict):
        ref = value.get("Ref") or (value.get("Fn::GetAtt") or [None])[0]
        if ref in logical_ids:
            return True
        return any(_refers_to_a_resource(v, logical_ids) for v in value.values())
    if isinstance(value, list):
        return any(_refers_to_a_resource(v, logical_ids) for v in value)
    return False


def test_no_retained_resource_has_a_fixed_physical_name(assembly: Path) -> None:
    """After `cdk destroy`, retained resources stay; a fixed name among them would make the
    next create of the same stage fail ("already exists")."""
    by_template: dict[str, set[str]] = {}
    for template, logical_id, _ in _all_resources(assembly):
        by_template.setdefault(template, set()).add(logical_id)
    retained = 0
    for template, logical_id, resource in _all_resources(assembly):
        if resource.get("DeletionPolicy") not in _RETAINED:
            continue
        retained += 1
        for prop in _NAME_PROPERTIES:
            name = resource.get("Properties", {}).get(prop)
            if name is not None:
                assert _refers_to_a_resource(name, by_template[template]), (
                    f"{template} {logical_id}: retained with the fixed {prop} {name!r}"
                )
    assert retained >= 2  # at least API Gateway's account-wide logging role and its setting


def test_every_construct_gets_the_stages_lifetimes(assembly: Path) -> None:
    """One stage, said once, reaches every construct: log retention, deletion policies and
    key deletion windows all follow it (StagePolicy)."""
    prod = assembly.name.split(".")[2].rstrip("0123456789") == "prod"
    days, window, policy = (365, 30, "Retain") if prod else (14, 7, "Delete")
    kinds: dict[str, int] = {}
    for template, logical_id, resource in _all_resources(assembly):
        kind, props = resource["Type"], resource.get("Properties", {})
        where = f"{template} {logical_id}"
        kinds[kind] = kinds.get(kind, 0) + 1
        if kind == "AWS::Logs::LogGroup":
            assert props["RetentionInDays"] == days, where
            assert resource["DeletionPolicy"] == policy, where
            assert "KmsKeyId" in props, where
        elif kind == "Custom::LogRetention":  # the endpoints' fixed-name log groups
            assert props["RetentionInDays"] == days, where
            assert props["RemovalPolicy"] == policy.lower().replace("delete", "destroy"), where
        elif kind == "AWS::KMS::Key":
            assert props["PendingWindowInDays"] == window, where
        elif kind in ("AWS::S3::Bucket", "AWS::DynamoDB::Table"):
            assert resource["DeletionPolicy"] == policy, where
    assert kinds["Custom::LogRetention"] == 2
    assert kinds["AWS::Logs::LogGroup"] == 4
