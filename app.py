#!/usr/bin/env python3
"""CDK entry point: the only place that reads context or the environment."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from aws_cdk import App

from llm_serving.config.loader import ConfigError
from llm_serving.regions import check_region
from llm_serving.stage import Stage
from stacks import GATEWAY_SKIPPED, NO_ACCOUNT, AppSettings, add_compliance_checks, build


def settings_from_context(app: App) -> AppSettings:
    node = app.node
    models = node.try_get_context("models")
    return AppSettings(
        stage=Stage.parse(str(node.try_get_context("stage") or "dev")),
        region=check_region(
            str(node.try_get_context("region") or "us-east-1"),
            source="cdk.json context region (or -c region=...)",
        ),
        config_dir=Path(str(node.try_get_context("config_dir") or "model_configs")),
        account=node.try_get_context("account") or os.environ.get("CDK_DEFAULT_ACCOUNT"),
        models=tuple(str(models).split(",")) if models else None,
    )


def main() -> None:
    app = App()
    try:
        settings = settings_from_context(app)
        built = build(app, settings)
    except (ConfigError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from None
    if built.skipped_gateway:
        print(GATEWAY_SKIPPED, file=sys.stderr)
    if settings.account is None:
        print(NO_ACCOUNT, file=sys.stderr)
    add_compliance_checks(app)
    app.synth()


if __name__ == "__main__":
    main()
