"""One snapshot per stack: a change detector for `cdk diff`-worthy edits, not a proof.

Asset hashes are normalized so that a dependency bump that changes no resource does not churn
the snapshots. Update with `pytest --snapshot-update` and review the diff like a `cdk diff`.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from aws_cdk.assertions import Template
from syrupy.assertion import SnapshotAssertion
from syrupy.extensions.json import JSONSnapshotExtension

STACKS = [
    "LlmServing-dev-Artifacts",
    "LlmServing-dev-Model-deepseek-r1-distill-qwen-7b",
    "LlmServing-dev-Model-llama-2-13b-chat",
    "LlmServing-dev-Gateway",
]
_ASSET_HASH = re.compile(r"[0-9a-f]{64}")


def _normalized(template: Template) -> Any:
    text = json.dumps(template.to_json(), sort_keys=True)
    return json.loads(_ASSET_HASH.sub("<asset-hash>", text))


@pytest.fixture
def snapshot_json(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    return snapshot.use_extension(JSONSnapshotExtension)


@pytest.mark.parametrize("stack", STACKS)
def test_stack_snapshot(
    templates: dict[str, Template], snapshot_json: SnapshotAssertion, stack: str
) -> None:
    assert set(templates) == set(STACKS)
    assert _normalized(templates[stack]) == snapshot_json
