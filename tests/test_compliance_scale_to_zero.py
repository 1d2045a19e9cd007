"""The scale-to-zero example (two inference components on one shared endpoint) synthesized as
`cdk synth` does: cdk-nag AwsSolutions and CloudFormation's validation on, then cfn-lint and
checkov over its templates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm_serving.stage import Stage
from stacks import add_compliance_checks
from tests.conftest import ROOT, build_default, make_app
from tests.test_compliance import cfn_lint, checkov

EXAMPLE = ROOT / "examples" / "scale-to-zero"


@pytest.fixture(scope="module")
def assembly(tmp_path_factory: pytest.TempPathFactory) -> Path:
    outdir = tmp_path_factory.mktemp("cdk.out.scale-to-zero")
    app = make_app(validation=True, outdir=outdir)
    build_default(app=app, stage=Stage.DEV, config_dir=EXAMPLE)
    add_compliance_checks(app)
    app.synth()
    return outdir


def test_the_example_passes_nag_and_validation(assembly: Path) -> None:
    report = json.loads((assembly / "validation-report.json").read_text())
    (nag,) = report["pluginReports"]
    assert (nag["conclusion"], nag["violations"]) == ("success", [])
    assert {p.name.removesuffix(".template.json") for p in assembly.glob("*.template.json")} == {
        "LlmServing-dev-Artifacts",
        "LlmServing-dev-SharedEndpoint-small-models",
        "LlmServing-dev-Gateway",
    }


def test_cfn_lint_reports_nothing(assembly: Path) -> None:
    result = cfn_lint(assembly)
    assert result.returncode == 0, result.stdout + result.stderr


def test_checkov_finds_nothing_unexplained(assembly: Path) -> None:
    _, failed = checkov(assembly)
    assert failed == [], "\n".join(failed)
