"""Token quotas against moto's DynamoDB on loopback: arithmetic, exactly-once, races, failures."""

from __future__ import annotations

import asyncio
import random
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock
from uuid import uuid4

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from llm_gateway.app import _counted
from llm_gateway.contract import QUOTA_TABLE_ENV, Tier
from llm_gateway.quota import QuotaStore, _cancellation_reasons
from llm_gateway.quota_model import (
    GRACE,
    QuotaExceeded,
    QuotaUnavailable,
    Reservation,
    Window,
)
from local.dynamodb import create_quota_table, dynamodb_server

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
DAY_END = datetime(2026, 11, 23, tzinfo=UTC)
MONTH_END = datetime(2026, 12, 1, tzinfo=UTC)


def tier(day: int | None = 1000, month: int | None = 5000) -> Tier:
    return Tier(name="t", tokens_per_day=day, tokens_per_month=month, default_reservation=100)


def rid() -> str:
    return uuid4().hex


def fake_aws(env: pytest.MonkeyPatch) -> None:
    env.setenv("AWS_ACCESS_KEY_ID", "testing")
    env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    env.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB"):
        env.delenv(name, raising=False)


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with dynamodb_server() as url:
        yield url


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_aws(monkeypatch)


@pytest.fixture(scope="module")
def client(endpoint: str) -> Any:
    """One client for the module (boto3 clients are thread-safe; building one takes ~50 ms)."""
    config = Config(max_pool_connections=64, retries={"mode": "standard", "total_max_attempts": 3})
    with pytest.MonkeyPatch.context() as env:
        fake_aws(env)
        return boto3.client("dynamodb", endpoint_url=endpoint, config=config)


@pytest.fixture
def table(client: Any) -> str:
    name = f"quota-{uuid4().hex[:10]}"
    create_quota_table(client, name)
    return name


@pytest.fixture
def store(client: Any, table: str) -> QuotaStore:
    return QuotaStore(client, table)


def item(client: Any, table: str, pk: str) -> dict[str, Any] | None:
    found: dict[str, Any] | None = client.get_item(
        TableName=table, Key={"pk": {"S": pk}}, ConsistentRead=True
    ).get("Item")
    return found


# -- table --------------------------------------------------------------------------------------


def test_table_is_created_as_the_cdk_construct_does(client: Any, table: str) -> None:
    described = client.describe_table(TableName=table)["Table"]
    assert described["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
    assert described["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    ttl = client.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires_at"}


# -- reserve arithmetic ---------------------------------------------------------------------


def test_reserve_under_the_limit_counts_both_windows(store: QuotaStore) -> None:
    r = store.reserve(request_id="r1", consumer="acme", tier=tier(), amount=400, now=NOW)
    assert r.amount == 400
    assert r.remaining == 600
    assert [(w.kind, w.key, w.limit, w.resets_at) for w in r.windows] == [
        ("day", "usage#acme#day#2026-11-22", 1000, DAY_END),
        ("month", "usage#acme#month#2026-11", 5000, MONTH_END),
    ]
    assert store.usage("acme", NOW) == {"day": 400, "month": 400}


def test_items_have_the_documented_layout(store: QuotaStore, client: Any, table: str) -> None:
    r = store.reserve(request_id="r1", consumer="acme", tier=tier(), amount=40, now=NOW)
    marker = item(client, table, "request#r1")
    assert marker is not None
    assert marker["state"] == {"S": "reserved"}
    assert marker["consumer"] == {"S": "acme"}
    assert marker["reserved"] == {"N": "40"}
    assert marker["counters"] == {"L": [{"S": w.key} for w in r.windows]}
    assert marker["expires_at"] == {"N": str(int((DAY_END + GRACE).timestamp()))}
    month = item(client, table, "usage#acme#month#2026-11")
    assert month == {
        "pk": {"S": "usage#acme#month#2026-11"},
        "tokens": {"N": "40"},
        "expires_at": {"N": str(int((MONTH_END + GRACE).timestamp()))},
    }
    assert store.settle(r, 25)
    marker = item(client, table, "request#r1")
    assert marker is not None
    assert (marker["state"], marker["used"]) == ({"S": "settled"}, {"N": "25"})


def test_reserve_exactly_at_the_limit_then_refused(store: QuotaStore) -> None:
    store.reserve(request_id="a", consumer="acme", tier=tier(), amount=600, now=NOW)
    r = store.reserve(request_id="b", consumer="acme", tier=tier(), amount=400, now=NOW)
    assert r.remaining == 0
    with pytest.raises(QuotaExceeded) as refused:
        store.reserve(request_id="c", consumer="acme", tier=tier(), amount=1, now=NOW)
    assert refused.value.window.kind == "day"
    assert refused.value.requested == 1
    assert refused.value.retry_after_s == 12 * 3600
    assert store.usage("acme", NOW) == {"day": 1000, "month": 1000}


def test_refused_reservation_writes_nothing(store: QuotaStore, client: Any, table: str) -> None:
    store.reserve(request_id="a", consumer="acme", tier=tier(), amount=600, now=NOW)
    with pytest.raises(QuotaExceeded):
        store.reserve(request_id="b", consumer="acme", tier=tier(), amount=401, now=NOW)
    assert store.usage("acme", NOW) == {"day": 600, "month": 600}
    assert item(client, table, "request#b") is None
    # The refused id is free: a smaller retry with it is granted.
    assert store.reserve(request_id="b", consumer="acme", tier=tier(), amount=400, now=NOW)


def test_month_limit_refuses_across_days(store: QuotaStore) -> None:
    monthly = tier(day=None, month=1000)
    store.reserve(request_id="a", consumer="acme", tier=monthly, amount=600, now=NOW)
    tomorrow = NOW + timedelta(days=1)
    with pytest.raises(QuotaExceeded) as refused:
        store.reserve(request_id="b", consumer="acme", tier=monthly, amount=500, now=tomorrow)
    assert refused.value.window.kind == "month"
    assert refused.value.window.resets_at == MONTH_END
    assert refused.value.retry_after_s == int((MONTH_END - tomorrow).total_seconds())
    assert store.usage("acme", tomorrow) == {"day": 0, "month": 600}


def test_day_wins_when_both_windows_refuse(store: QuotaStore) -> None:
    both = tier(day=1000, month=1000)
    store.reserve(request_id="a", consumer="acme", tier=both, amount=900, now=NOW)
    with pytest.raises(QuotaExceeded) as refused:
        store.reserve(request_id="b", consumer="acme", tier=both, amount=200, now=NOW)
    assert refused.value.window.kind == "day"


def test_no_limits_count_without_refusing(store: QuotaStore) -> None:
    free = tier(day=None, month=None)
    for n in range(3):
        r = store.reserve(request_id=f"r{n}", consumer="acme", tier=free, amount=10**9, now=NOW)
        assert r.remaining is None
    assert store.usage("acme", NOW) == {"day": 3 * 10**9, "month": 3 * 10**9}


def test_remaining_is_the_tightest_window(store: QuotaStore) -> None:
    tight = tier(day=1000, month=1200)
    store.reserve(request_id="a", consumer="acme", tier=tight, amount=900, now=NOW)
    tomorrow = NOW + timedelta(days=1)
    r = store.reserve(request_id="b", consumer="acme", tier=tight, amount=100, now=tomorrow)
    assert r.remaining == 200  # the month has 200 left, the day 900
    assert r.limiting is not None
    assert (r.limiting.kind, r.limiting.limit) == ("month", 1200)  # what the headers describe


def test_a_reservation_unread_says_the_first_limited_window_until_read_back(
    store: QuotaStore,
) -> None:
    """What the gateway does: reserve without the read-back, read it back while the model
    starts. Until then the headers can give the day's limit and reset, not what is left."""
    tight = tier(day=1000, month=1200)
    store.reserve(request_id="c", consumer="zed", tier=tight, amount=900, now=NOW)
    tomorrow = NOW + timedelta(days=1)
    unread = store.reserve(
        request_id="d", consumer="zed", tier=tight, amount=100, now=tomorrow, read_back=False
    )
    assert (unread.remaining, unread.limiting) == (None, None)
    assert unread.headline is not None
    assert unread.headline.kind == "day"
    read = store.read_back(unread)
    assert read.remaining == 200
    assert read.headline is read.limiting
    assert read.limiting is not None
    assert read.limiting.kind == "month"
    assert store.usage("zed", now=tomorrow) == {"day": 100, "month": 1000}  # counted once


def test_the_first_byte_does_not_wait_for_the_read_back() -> None:
    """app._counted: a finished read-back is used, an unfinished one is dropped (cancelled)."""
    windows = (Window("day", "usage#a#day#2026-11-22", 10, DAY_END),)
    unread = Reservation("r", "a", 5, windows, None)
    read = Reservation("r", "a", 5, windows, 5, windows[0])

    async def run() -> None:
        done: asyncio.Future[Reservation | None] = asyncio.Future()
        done.set_result(read)
        assert _counted(unread, done) is read
        pending: asyncio.Future[Reservation | None] = asyncio.Future()
        assert _counted(unread, pending) is unread
        assert pending.cancelled()
        failed: asyncio.Future[Reservation | None] = asyncio.Future()
        failed.set_exception(QuotaUnavailable("down"))
        assert _counted(unread, failed) is unread

    asyncio.run(run())


@pytest.mark.parametrize(
    ("now", "kind", "resets_at", "retry_after_s"),
    [
        (datetime(2026, 11, 22, 23, 59, 59, 500000, tzinfo=UTC), "day", DAY_END, 1),
        (datetime(2026, 11, 30, 23, 0, tzinfo=UTC), "month", MONTH_END, 3600),
        (datetime(2026, 12, 31, 23, 0, tzinfo=UTC), "month", datetime(2027, 1, 1, tzinfo=UTC),
         3600),
        # Not UTC: the windows are still UTC days (18:00 in New York is 23:00 UTC).
        (datetime.fromisoformat("2026-11-22T18:00:00-05:00"), "day", DAY_END, 3600),
    ],
)  # fmt: skip
def test_retry_after_counts_to_the_window_end(
    store: QuotaStore, now: datetime, kind: str, resets_at: datetime, retry_after_s: int
) -> None:
    limits = {"day": tier(day=10, month=None), "month": tier(day=None, month=10)}[kind]
    store.reserve(request_id="a", consumer="acme", tier=limits, amount=10, now=now)
    with pytest.raises(QuotaExceeded) as refused:
        store.reserve(request_id="b", consumer="acme", tier=limits, amount=1, now=now)
    assert refused.value.window.kind == kind
    assert refused.value.window.resets_at == resets_at
    assert refused.value.retry_after_s == retry_after_s


def test_amount_over_a_limit_is_refused_without_a_call() -> None:
    client = mock.Mock(spec=[])  # any DynamoDB call would raise AttributeError
    store = QuotaStore(client, "unused")
    with pytest.raises(QuotaExceeded) as refused:
        store.reserve(request_id="r", consumer="acme", tier=tier(), amount=1001, now=NOW)
    assert (refused.value.window.kind, refused.value.requested) == ("day", 1001)
    assert refused.value.retry_after_s == 12 * 3600
    with pytest.raises(QuotaExceeded) as refused:
        store.reserve(request_id="r", consumer="acme", tier=tier(day=None), amount=5001, now=NOW)
    assert refused.value.window.kind == "month"


def test_naive_now_and_negative_amounts_are_rejected(store: QuotaStore) -> None:
    with pytest.raises(ValueError, match="timezone"):
        store.reserve(request_id="r", consumer="a", tier=tier(), amount=1, now=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="amount"):
        store.reserve(request_id="r", consumer="a", tier=tier(), amount=-1, now=NOW)


# -- idempotent reserve -------------------------------------------------------------------------


def test_repeated_reserve_counts_once_and_returns_the_first(store: QuotaStore) -> None:
    first = store.reserve(request_id="r", consumer="acme", tier=tier(), amount=300, now=NOW)
    again = store.reserve(request_id="r", consumer="acme", tier=tier(), amount=999, now=NOW)
    assert again == first
    assert store.usage("acme", NOW)["day"] == 300
    # Even when the windows are now full, and after midnight: the recorded reservation.
    store.reserve(request_id="fill", consumer="acme", tier=tier(), amount=700, now=NOW)
    later = store.reserve(
        request_id="r", consumer="acme", tier=tier(), amount=1, now=NOW + timedelta(days=1)
    )
    assert (later.amount, later.windows) == (300, first.windows)
    assert later.remaining == 0


def test_request_id_of_another_consumer_is_an_error(store: QuotaStore) -> None:
    store.reserve(request_id="r", consumer="acme", tier=tier(), amount=10, now=NOW)
    with pytest.raises(ValueError, match="another consumer"):
        store.reserve(request_id="r", consumer="evil", tier=tier(), amount=10, now=NOW)
    assert store.usage("evil", NOW) == {"day": 0, "month": 0}


def test_consumer_names_with_separators_round_trip(store: QuotaStore) -> None:
    first = store.reserve(request_id="r", consumer="a#day#b", tier=tier(), amount=10, now=NOW)
    again = store.reserve(request_id="r", consumer="a#day#b", tier=tier(), amount=10, now=NOW)
    assert again == first
    assert store.usage("a#day#b", NOW) == {"day": 10, "month": 10}


# -- settle -------------------------------------------------------------------------------------


def test_settle_charges_the_real_usage_once(store: QuotaStore) -> None:
    r = store.reserve(request_id="r", consumer="acme", tier=tier(), amount=500, now=NOW)
    assert store.settle(r, 120) is True
    assert store.usage("acme", NOW) == {"day": 120, "month": 120}
    assert store.settle(r, 120) is False
    assert store.settle(r, 400) is False
    assert store.usage("acme", NOW) == {"day": 120, "month": 120}


def test_settle_with_zero_releases_the_reservation(store: QuotaStore) -> None:
    r = store.reserve(request_id="r", consumer="acme", tier=tier(), amount=1000, now=NOW)
    assert store.settle(r, 0)
    assert store.usage("acme", NOW) == {"day": 0, "month": 0}
    assert store.reserve(request_id="s", consumer="acme", tier=tier(), amount=1000, now=NOW)


def test_settle_above_the_reservation_goes_over_the_limit(store: QuotaStore) -> None:
    r = store.reserve(request_id="r", consumer="acme", tier=tier(), amount=900, now=NOW)
    assert store.settle(r, 1100)
    assert store.usage("acme", NOW) == {"day": 1100, "month": 1100}
    with pytest.raises(QuotaExceeded):
        store.reserve(request_id="s", consumer="acme", tier=tier(), amount=0, now=NOW)
    assert store.reserve(request_id="s", consumer="acme", tier=tier(day=None), amount=0, now=NOW)


def test_settle_concurrently_changes_the_counters_once(store: QuotaStore) -> None:
    r = store.reserve(request_id="r", consumer="acme", tier=tier(), amount=500, now=NOW)
    barrier = threading.Barrier(16)

    def settle(used: int) -> bool:
        barrier.wait()
        return store.settle(r, used)

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(settle, range(100, 116)))
    assert results.count(True) == 1
    winner = 100 + results.index(True)
    assert store.usage("acme", NOW) == {"day": winner, "month": winner}


def test_settle_after_midnight_hits_the_reserved_windows(store: QuotaStore) -> None:
    before = datetime(2026, 11, 30, 23, 59, 50, tzinfo=UTC)
    after = before + timedelta(seconds=20)
    r = store.reserve(request_id="r", consumer="acme", tier=tier(), amount=300, now=before)
    fresh = store.reserve(request_id="s", consumer="acme", tier=tier(), amount=50, now=after)
    assert store.settle(r, 100)
    assert store.settle(fresh, 50)
    assert store.usage("acme", before) == {"day": 100, "month": 100}
    assert store.usage("acme", after) == {"day": 50, "month": 50}


def test_settling_an_unknown_reservation_changes_nothing(store: QuotaStore) -> None:
    r = store.reserve(request_id="r", consumer="acme", tier=tier(), amount=300, now=NOW)
    ghost = Reservation("ghost", "acme", 300, r.windows, None)
    assert store.settle(ghost, 0) is False
    assert store.usage("acme", NOW)["day"] == 300
    forged = Reservation("r", "acme", 1, r.windows, None)
    with pytest.raises(ValueError, match="does not match"):
        store.settle(forged, 0)
    assert store.usage("acme", NOW)["day"] == 300


# -- concurrency ----------------------------------------------------------------------------


@pytest.mark.parametrize("round_", range(5))
def test_concurrent_reservations_never_exceed_the_limit(store: QuotaStore, round_: int) -> None:
    limit, amount, threads = 1000, 37, 50
    daily = tier(day=limit, month=None)
    barrier = threading.Barrier(threads)

    def attempt(n: int) -> Reservation | None:
        barrier.wait()
        try:
            return store.reserve(
                request_id=f"{round_}-{n}", consumer="race", tier=daily, amount=amount, now=NOW
            )
        except QuotaExceeded:
            return None

    with ThreadPoolExecutor(threads) as pool:
        granted = [r for r in pool.map(attempt, range(threads)) if r is not None]
    # Each write is atomic, so exactly floor(limit / amount) fit: the rest must be refused.
    assert len(granted) == limit // amount
    assert store.usage("race", NOW)["day"] == amount * len(granted) <= limit

    rng = random.Random(round_)
    used = [rng.randint(0, amount) for _ in granted]
    with ThreadPoolExecutor(threads) as pool:
        assert all(pool.map(store.settle, granted, used))
    assert store.usage("race", NOW) == {"day": sum(used), "month": sum(used)}


# -- failures -----------------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_unreachable_store_raises_quota_unavailable(aws_env: None) -> None:
    config = Config(connect_timeout=0.2, read_timeout=0.2, retries={"total_max_attempts": 1})
    down = boto3.client("dynamodb", endpoint_url=f"http://127.0.0.1:{closed_port()}", config=config)
    store = QuotaStore(down, "quota")
    with pytest.raises(QuotaUnavailable):
        store.reserve(request_id="r", consumer="acme", tier=tier(), amount=1, now=NOW)
    with pytest.raises(QuotaUnavailable):
        store.settle(Reservation("r", "acme", 1, (), None), 0)
    with pytest.raises(QuotaUnavailable):
        store.usage("acme", NOW)


def test_missing_table_raises_quota_unavailable(client: Any) -> None:
    store = QuotaStore(client, "no-such-table")
    with pytest.raises(QuotaUnavailable):
        store.reserve(request_id="r", consumer="acme", tier=tier(), amount=1, now=NOW)


def conflicting(client: Any, conflicts: int) -> Any:
    """The client, but its first ``conflicts`` transactions are cancelled as conflicting."""
    left = [conflicts]
    real: Callable[..., Any] = client.transact_write_items

    def transact_write_items(**kwargs: Any) -> Any:
        if left[0] > 0:
            left[0] -= 1
            codes = ["None"] + ["TransactionConflict"] * (len(kwargs["TransactItems"]) - 1)
            raise ClientError(
                {
                    "Error": {"Code": "TransactionCanceledException", "Message": "cancelled"},
                    "CancellationReasons": [{"Code": code} for code in codes],
                },
                "TransactWriteItems",
            )
        return real(**kwargs)

    proxy = mock.Mock(wraps=client)
    proxy.transact_write_items = transact_write_items
    return proxy


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("llm_gateway.quota._BACKOFF_S", 0.0005)


@pytest.mark.usefixtures("no_backoff")
def test_transaction_conflicts_are_retried(client: Any, table: str) -> None:
    store = QuotaStore(conflicting(client, 2), table)
    r = store.reserve(request_id="r", consumer="acme", tier=tier(), amount=10, now=NOW)
    assert r.remaining == 990
    assert store.usage("acme", NOW)["day"] == 10


@pytest.mark.usefixtures("no_backoff")
def test_endless_conflicts_raise_quota_unavailable(client: Any, table: str) -> None:
    store = QuotaStore(conflicting(client, 100), table)
    with pytest.raises(QuotaUnavailable, match="TransactionConflict"):
        store.reserve(request_id="r", consumer="acme", tier=tier(), amount=10, now=NOW)
    assert QuotaStore(client, table).usage("acme", NOW)["day"] == 0


# -- from_env -----------------------------------------------------------------------------------


def test_from_env_needs_the_table_variable() -> None:
    assert QuotaStore.from_env({}) is None
    assert QuotaStore.from_env({QUOTA_TABLE_ENV: ""}) is None


def test_from_env_honours_the_dynamodb_endpoint_variable(
    endpoint: str, table: str, monkeypatch: pytest.MonkeyPatch, client: Any
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", endpoint)
    store = QuotaStore.from_env({QUOTA_TABLE_ENV: table})
    assert store is not None
    r = store.reserve(request_id="r", consumer="acme", tier=tier(), amount=7, now=NOW)
    assert store.settle(r, 5)
    assert QuotaStore(client, table).usage("acme", NOW) == {"day": 5, "month": 5}


# -- cancellation reasons -------------------------------------------------------------------


def test_cancellation_reasons_from_the_structured_field() -> None:
    response = {
        "Error": {"Code": "TransactionCanceledException", "Message": "x"},
        "CancellationReasons": [
            {"Code": "ConditionalCheckFailed", "Item": {"pk": {"S": "m"}}},
            {"Code": "None"},
            {},
        ],
    }
    reasons = _cancellation_reasons(response, 3)
    assert [(r.code, r.item) for r in reasons] == [
        ("ConditionalCheckFailed", {"pk": {"S": "m"}}),
        (None, None),
        (None, None),
    ]


def test_cancellation_reasons_from_the_message_when_not_parsed() -> None:
    message = (
        "Transaction cancelled, please refer cancellation reasons for specific reasons "
        "[None, ConditionalCheckFailed, TransactionConflict]"
    )
    response = {"Error": {"Code": "TransactionCanceledException", "Message": message}}
    codes = [r.code for r in _cancellation_reasons(response, 3)]
    assert codes == [None, "ConditionalCheckFailed", "TransactionConflict"]
    assert {r.code for r in _cancellation_reasons({"Error": {"Message": "?"}}, 2)} == {"Unknown"}
