"""app.py end to end, as the CDK CLI runs it: context in, clear errors out."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import CONFIG_DIR, ROOT


def _run_app(tmp_path: Path, **context: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["CDK_OUTDIR"] = str(tmp_path / "out")
    env["CDK_CONTEXT_JSON"] = json.dumps(
        {
            **json.loads((ROOT / "cdk.json").read_text())["context"],
            # Bundling is covered by test_bundling and `make synth`; keep this one quick.
            "aws:cdk:bundling-stacks": [],
            **context,
        }
    )
    env["CDK_VALIDATION"] = "false"  # the compliance test runs it; keep this one quick
    return subprocess.run(
        [sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )


def test_invalid_config_fails_synth_with_one_clear_message(tmp_path: Path) -> None:
    configs = tmp_path / "configs"
    configs.mkdir()
    data = yaml.safe_load((CONFIG_DIR / "deepseek-r1-distill-qwen-7b.yaml").read_text())
    data["instance"]["type"] = "ml.g5.2xlarg"
    (configs / "deepseek-r1-distill-qwen-7b.yaml").write_text(yaml.safe_dump(data))
    result = _run_app(tmp_path, config_dir=str(configs))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "deepseek-r1-distill-qwen-7b.yaml: instance.type" in result.stderr
    assert "'ml.g5.2xlarg' is not a GPU instance type" in result.stderr


def test_unknown_stage_is_rejected(tmp_path: Path) -> None:
    result = _run_app(tmp_path, stage="staging")
    assert result.returncode != 0
    assert "stage 'staging' is not one of: dev, prod" in result.stderr


def _stacks(tmp_path: Path) -> dict[str, Any]:
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    return {
        k: v for k, v in manifest["artifacts"].items() if v["type"] == "aws:cloudformation:stack"
    }


def test_prod_stage_and_model_selection_from_context(tmp_path: Path) -> None:
    """A subset synthesizes those model stacks and leaves the gateway out, saying why: a
    gateway built from a subset would drop the other models' routes when deployed."""
    result = _run_app(tmp_path, stage="prod", region="eu-west-1", models="llama-2-13b-chat")
    assert result.returncode == 0, result.stderr
    assert "the gateway stack is not synthesized" in result.stderr
    stacks = _stacks(tmp_path)
    assert set(stacks) == {
        "LlmServing-prod-Artifacts",
        "LlmServing-prod-Model-llama-2-13b-chat",
    }
    for stack in stacks.values():
        assert stack["environment"].endswith("/eu-west-1")
        assert stack["properties"]["terminationProtection"] is True


def test_invalid_gateway_config_fails_synth_with_one_clear_message(tmp_path: Path) -> None:
    configs = tmp_path / "configs"
    shutil.copytree(CONFIG_DIR, configs)
    (configs / "gateway.yaml").write_text(
        "web_adapter:\n  architecture: arm64\nfunction:\n  ram: 1\n"
    )
    result = _run_app(tmp_path, config_dir=str(configs))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "gateway.yaml: invalid gateway config (1 error(s))" in result.stderr
    assert "function.ram: Extra inputs are not permitted" in result.stderr


def test_selecting_every_model_keeps_the_gateway(tmp_path: Path) -> None:
    result = _run_app(tmp_path, models="llama-2-13b-chat,deepseek-r1-distill-qwen-7b")
    assert result.returncode == 0, result.stderr
    assert "LlmServing-dev-Gateway" in _stacks(tmp_path)
    assert "not synthesized" not in result.stderr


def test_gateway_in_a_region_without_a_published_layer_fails_clearly(tmp_path: Path) -> None:
    configs = tmp_path / "configs"  # only the model whose image is published in GovCloud
    shutil.copytree(CONFIG_DIR, configs)
    (configs / "deepseek-r1-distill-qwen-7b.yaml").unlink()
    result = _run_app(tmp_path, region="us-gov-west-1", config_dir=str(configs))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "set web_adapter.layer_arn" in result.stderr


def test_gateway_route_to_an_unknown_model_fails_synth_clearly(tmp_path: Path) -> None:
    configs = tmp_path / "configs"
    shutil.copytree(CONFIG_DIR, configs)
    (configs / "gateway.yaml").write_text(
        "routes:\n  - model: chat\n    backends:\n      - model: llama-3\n"
    )
    result = _run_app(tmp_path, config_dir=str(configs))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "gateway.yaml: routes.0.backends.0.model: 'llama-3' is not a model config" in (
        result.stderr
    )


def test_a_misspelt_region_fails_synth_with_the_close_names(tmp_path: Path) -> None:
    result = _run_app(tmp_path, region="us-est-1")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert re.search(
        r"region \(or -c region=\.\.\.\): unknown region 'us-est-1'; did you mean [^?]*us-east-1",
        result.stderr,
    ), result.stderr
