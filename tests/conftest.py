"""Shared helpers: build the app exactly as app.py does, without the CLI."""

from __future__ import annotations

import os

# Before jsii starts: it prints a large banner on Node 20 (end of life) otherwise.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aws_cdk import App
from aws_cdk.assertions import Template

from llm_serving.stage import Stage
from stacks import AppSettings, BuiltApp, build

ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = ROOT / "model_configs"
CDK_CONTEXT: dict[str, Any] = json.loads((ROOT / "cdk.json").read_text())["context"]


def make_app(
    *, validation: bool = False, bundling: bool = False, outdir: Path | None = None
) -> App:
    """An App with cdk.json's context; CloudFormation validation and asset bundling off unless
    asked for. With bundling off (``aws:cdk:bundling-stacks`` matching no stack) CDK still
    fingerprints the sources, so asset hashes equal those of a bundled synth."""
    context: dict[str, Any] = dict(CDK_CONTEXT)
    if not bundling:
        context["aws:cdk:bundling-stacks"] = []
    return App(
        context=context,
        builtin_cloud_formation_validation=validation,
        outdir=str(outdir) if outdir else None,
    )


def build_default(
    *,
    stage: Stage = Stage.DEV,
    region: str = "us-east-1",
    config_dir: Path = CONFIG_DIR,
    app: App | None = None,
) -> tuple[App, BuiltApp]:
    app = app or make_app()
    built = build(app, AppSettings(stage=stage, region=region, config_dir=config_dir))
    return app, built


@pytest.fixture(scope="session")
def default_app() -> tuple[App, BuiltApp]:
    return build_default()


@pytest.fixture(scope="session")
def templates(default_app: tuple[App, BuiltApp]) -> dict[str, Template]:
    """Template of every stack in the default dev app, keyed by stack name."""
    _, built = default_app
    stacks = [built.artifacts, *built.models.values(), built.gateway]
    return {s.stack_name: Template.from_stack(s) for s in stacks}


def load_yaml(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((CONFIG_DIR / name).read_text())
    return data


@pytest.fixture
def write_configs(tmp_path: Path) -> Callable[..., Path]:
    """Write model configs (dicts) into a fresh directory and return it."""

    def _write(*configs: dict[str, Any]) -> Path:
        for config in configs:
            (tmp_path / f"{config['name']}.yaml").write_text(yaml.safe_dump(config))
        return tmp_path

    return _write


def iam_statements(template: Template) -> Iterator[dict[str, Any]]:
    for resource in template.find_resources("AWS::IAM::Policy").values():
        yield from resource["Properties"]["PolicyDocument"]["Statement"]
    for resource in template.find_resources("AWS::IAM::Role").values():
        for policy in resource["Properties"].get("Policies", []):
            yield from policy["PolicyDocument"]["Statement"]


def variant(base: str, name: str | None = None, **changes: Any) -> dict[str, Any]:
    """A copy of ``model_configs/<base>.yaml`` with dotted-path changes
    (``instance__type="ml.p3.2xlarge"``); a value of ``DELETE`` removes the key."""
    data = load_yaml(f"{base}.yaml")
    if name:
        data["name"] = name
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = data
        for key in parents:
            node = node.setdefault(key, {})
        if value is DELETE:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return data


DELETE = object()
