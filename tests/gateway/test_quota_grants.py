"""The function's DynamoDB grant is exactly what the quota code sends: recorded, not assumed."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from llm_gateway.contract import Tier
from llm_gateway.quota import QuotaStore
from llm_gateway.quota_model import QuotaExceeded
from llm_serving.quota_table import ITEM_ACTIONS
from local.dynamodb import create_quota_table, dynamodb_server

# IAM authorizes TransactWriteItems per contained operation.
_TRANSACT_ITEM_ACTIONS = {
    "Put": "dynamodb:PutItem",
    "Update": "dynamodb:UpdateItem",
    "Delete": "dynamodb:DeleteItem",
    "ConditionCheck": "dynamodb:ConditionCheckItem",
}


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    with dynamodb_server() as url:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        yield boto3.client("dynamodb", endpoint_url=url, region_name="us-east-1")


def test_every_call_the_quota_code_makes_is_granted_and_nothing_more(client: Any) -> None:
    create_quota_table(client, "quota")
    actions: set[str] = set()

    def record(model: Any, params: dict[str, Any], **_: Any) -> None:
        if model.name == "TransactWriteItems":
            for item in params["TransactItems"]:
                actions.update(_TRANSACT_ITEM_ACTIONS[kind] for kind in item)
        else:
            actions.add(f"dynamodb:{model.name}")

    client.meta.events.register("before-parameter-build.dynamodb", record)
    store = QuotaStore(client, "quota")
    tier = Tier(name="t", tokens_per_day=100, tokens_per_month=1000, default_reservation=10)
    now = datetime(2026, 11, 22, 12, tzinfo=UTC)
    reservation = store.reserve(request_id="r1", consumer="c", tier=tier, amount=60, now=now)
    store.reserve(request_id="r1", consumer="c", tier=tier, amount=60, now=now)  # repeated id
    with pytest.raises(QuotaExceeded):
        store.reserve(request_id="r2", consumer="c", tier=tier, amount=60, now=now)
    assert store.settle(reservation, 20)
    assert not store.settle(reservation, 20)  # already settled
    store.usage("c", now=now)
    assert actions == set(ITEM_ACTIONS)
