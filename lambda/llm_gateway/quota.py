"""Token quotas in DynamoDB: reserve before invoking, settle to the real usage, exactly once.

Table (the CDK construct mirrors this; ``local/dynamodb.py`` creates it the same way):
partition key ``pk`` (S), no sort key, PAY_PER_REQUEST, TTL attribute ``expires_at``.

Items:

* Counters, one per consumer and UTC window::

      pk = "usage#<consumer>#day#2026-11-22"   tokens: N, expires_at: N
      pk = "usage#<consumer>#month#2026-11"    tokens: N, expires_at: N

  ``expires_at`` is the window's end plus :data:`GRACE`. TTL only cleans up: a new window is a
  new key, so a late (or never) deleted item is never read as the current window.
* One marker per request::

      pk = "request#<request_id>"  state: "reserved" | "settled", consumer: S, reserved: N,
                                   counters: L of S (the counter keys it added to),
                                   reserved_at: N, used: N (once settled), expires_at: N

  It expires with the day counter: long after any settle or retried reserve of that request.

``reserve`` is one ``TransactWriteItems``: put the marker if absent, add the amount to both
counters, each conditional on staying within its limit. ``settle`` is one more: flip the marker
from reserved to settled and add ``used - reserved`` to the stored counters. The marker makes
both idempotent by request id, so botocore's retries (and callers' retries) never double count.
``Reservation.remaining`` is read back with one consistent GetItem per limited window
(``read_back``: the gateway overlaps it with the model's first token). IAM
needs ``dynamodb:PutItem``, ``UpdateItem`` (inside the transactions) and ``GetItem``.
No ``ClientRequestToken``: the marker already does its job (for longer than its 10 minutes),
and a token reused with other parameters fails with ``IdempotentParameterMismatch``.

Settling more than was reserved is allowed (the model may report more than estimated): the
counter then goes above its limit, and further reservations are refused until the window
resets. A settle that never happens over-charges by the unused part of the reservation; it
never under-charges.

Errors talking to DynamoDB raise :class:`QuotaUnavailable`. Recommendation: fail closed on
``reserve`` (503 with a short retry-after): failing open makes quotas unbounded for as long as
the store is down, and DynamoDB outages are rare and short. A failed ``settle`` only leaves
the reservation charged in full; log it, do not fail the response.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from llm_gateway import aws_clients
from llm_gateway.contract import QUOTA_PARTITION_KEY, QUOTA_TABLE_ENV, QUOTA_TTL_ATTRIBUTE, Tier
from llm_gateway.quota_model import (
    QuotaExceeded,
    QuotaUnavailable,
    Reservation,
    Window,
    expires_at,
    marker_key,
    utc,
    window_from_key,
    windows_at,
)

if TYPE_CHECKING:
    from botocore.session import Session

logger = logging.getLogger(__name__)


_CONDITION_FAILED = "ConditionalCheckFailed"
# Cancellation reasons worth another attempt: nothing was written, so retrying is safe.
_TRANSIENT = frozenset({"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"})
_TRANSACT_ATTEMPTS = 4
_BACKOFF_S = 0.025


@dataclass(frozen=True)
class _Reason:
    """One entry of ``CancellationReasons``: ``code`` None when that item did not fail."""

    code: str | None
    item: Mapping[str, Any] | None = None


class QuotaStore:
    """Token counters and request markers in one DynamoDB table (see the module docstring)."""

    def __init__(self, client: Any, table_name: str) -> None:
        self._client = client
        self._table = table_name

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str], *, session: Session | None = None
    ) -> QuotaStore | None:
        """The store named by ``LLM_GATEWAY_QUOTA_TABLE``, or None when it is unset.

        The client is botocore's, configured by the process environment as usual (region,
        credentials, ``AWS_ENDPOINT_URL_DYNAMODB`` for local runs). Short timeouts and a small
        standard retry budget: every write is idempotent by request id.
        """
        table = environ.get(QUOTA_TABLE_ENV)
        if not table:
            return None
        config = Config(
            connect_timeout=1,
            read_timeout=2,
            retries={"mode": "standard", "total_max_attempts": 3},
            max_pool_connections=32,
        )
        return cls(aws_clients.client("dynamodb", config, session), table)

    # -- reserve ------------------------------------------------------------------------------

    def reserve(
        self,
        *,
        request_id: str,
        consumer: str,
        tier: Tier,
        amount: int,
        now: datetime | None = None,
        read_back: bool = True,
    ) -> Reservation:
        """Hold ``amount`` tokens in the consumer's day and month windows, or raise.

        Raises :class:`QuotaExceeded` (without calling DynamoDB when ``amount`` alone exceeds a
        limit) or :class:`QuotaUnavailable`. Reserving again with a request id already reserved
        counts nothing and returns the reservation as first recorded (its amount and windows,
        even if settled since); a request id recorded for another consumer is a ValueError.
        ``read_back=False`` leaves ``remaining`` unread (see :meth:`read_back`).
        """
        if amount < 0:
            raise ValueError(f"amount must be >= 0, got {amount}")
        at = utc(now)
        windows = windows_at(consumer, at, tier.tokens_per_day, tier.tokens_per_month)
        for window in windows:
            if window.limit is not None and amount > window.limit:
                raise _exceeded(window, amount, at)
        items = [
            self._marker_put(request_id, consumer, amount, windows, at),
            *(self._counter_reserve(window, amount) for window in windows),
        ]
        reasons = self._transact(items)
        if reasons is None:
            reservation = Reservation(request_id, consumer, amount, windows, None)
        elif reasons[0].code == _CONDITION_FAILED:
            reservation = self._existing(request_id, consumer, tier, reasons[0].item)
        else:
            for window, reason in zip(windows, reasons[1:], strict=True):
                if reason.code == _CONDITION_FAILED:
                    raise _exceeded(window, amount, at, used=_tokens(reason.item))
            raise QuotaUnavailable(f"reserve cancelled: {[r.code for r in reasons]}")
        return self.read_back(reservation) if read_back else reservation

    def _marker_put(
        self,
        request_id: str,
        consumer: str,
        amount: int,
        windows: tuple[Window, ...],
        at: datetime,
    ) -> dict[str, Any]:
        item = {
            QUOTA_PARTITION_KEY: {"S": marker_key(request_id)},
            "state": {"S": "reserved"},
            "consumer": {"S": consumer},
            "reserved": {"N": str(amount)},
            "counters": {"L": [{"S": window.key} for window in windows]},
            "reserved_at": {"N": str(int(at.timestamp()))},
            QUOTA_TTL_ATTRIBUTE: {"N": str(expires_at(windows[0]))},
        }
        return {
            "Put": {
                "TableName": self._table,
                "Item": item,
                "ConditionExpression": "attribute_not_exists(#pk)",
                "ExpressionAttributeNames": {"#pk": QUOTA_PARTITION_KEY},
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
        }

    def _counter_reserve(self, window: Window, amount: int) -> dict[str, Any]:
        update: dict[str, Any] = {
            "TableName": self._table,
            "Key": {QUOTA_PARTITION_KEY: {"S": window.key}},
            "UpdateExpression": "SET #exp = :exp ADD #tokens :amount",
            "ExpressionAttributeNames": {"#tokens": "tokens", "#exp": QUOTA_TTL_ATTRIBUTE},
            "ExpressionAttributeValues": {
                ":amount": {"N": str(amount)},
                ":exp": {"N": str(expires_at(window))},
            },
        }
        if window.limit is not None:
            update["ConditionExpression"] = "attribute_not_exists(#tokens) OR #tokens <= :cap"
            update["ExpressionAttributeValues"][":cap"] = {"N": str(window.limit - amount)}
            # A refusal then carries the counter, so the 429 can say how much is left.
            update["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
        return {"Update": update}

    def _existing(
        self, request_id: str, consumer: str, tier: Tier, item: Mapping[str, Any] | None
    ) -> Reservation:
        """The reservation a marker records (from the cancellation reason, else read back)."""
        marker = item if item is not None else self._get(marker_key(request_id))
        if marker is None:
            raise QuotaUnavailable(f"marker of {request_id} refused the write but is absent")
        if marker["consumer"]["S"] != consumer:
            raise ValueError(f"request id {request_id!r} is already reserved by another consumer")
        windows = tuple(window_from_key(entry["S"], tier) for entry in marker["counters"]["L"])
        amount = int(marker["reserved"]["N"])
        return Reservation(request_id, consumer, amount, windows, None)

    def read_back(self, reservation: Reservation) -> Reservation:
        """``reservation`` with ``remaining`` and ``limiting`` read back: the tokens left in the
        limited window with the least left, and that window (one consistent GetItem per
        limited window). A failed read leaves them as they were (logged)."""
        limited = [window for window in reservation.windows if window.limit is not None]
        if not limited:
            return reservation
        try:
            tokens = self._read([window.key for window in limited])
        except QuotaUnavailable:
            logger.warning("reading quota counters back failed", exc_info=True)
            return reservation
        left = {window.key: (window.limit or 0) - tokens[window.key] for window in limited}
        tightest = min(limited, key=lambda window: left[window.key])
        return dataclasses.replace(
            reservation, remaining=max(0, left[tightest.key]), limiting=tightest
        )

    # -- settle -------------------------------------------------------------------------------

    def settle(self, reservation: Reservation, used: int) -> bool:
        """Charge ``used`` tokens instead of the reserved amount; True if this call settled it.

        False when the reservation was already settled (or its marker is gone): nothing
        changes. ``used`` may be 0 (releases the reservation) or exceed the reserved amount.
        When a lost response is retried after the settle was written, the retry reports
        False: the counters are right either way.
        """
        if used < 0:
            raise ValueError(f"used must be >= 0, got {used}")
        delta = used - reservation.amount
        items = [self._marker_settle(reservation, used)]
        if delta:
            items += [self._counter_adjust(window, delta) for window in reservation.windows]
        reasons = self._transact(items)
        if reasons is None:
            return True
        if reasons[0].code != _CONDITION_FAILED:
            raise QuotaUnavailable(f"settle cancelled: {[r.code for r in reasons]}")
        return self._already_settled(reservation, reasons[0].item)

    def _marker_settle(self, reservation: Reservation, used: int) -> dict[str, Any]:
        return {
            "Update": {
                "TableName": self._table,
                "Key": {QUOTA_PARTITION_KEY: {"S": marker_key(reservation.request_id)}},
                "UpdateExpression": "SET #state = :settled, #used = :used",
                "ConditionExpression": "#state = :reserved AND #reserved = :amount",
                "ExpressionAttributeNames": {
                    "#state": "state",
                    "#used": "used",
                    "#reserved": "reserved",
                },
                "ExpressionAttributeValues": {
                    ":settled": {"S": "settled"},
                    ":reserved": {"S": "reserved"},
                    ":used": {"N": str(used)},
                    ":amount": {"N": str(reservation.amount)},
                },
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
        }

    def _counter_adjust(self, window: Window, delta: int) -> dict[str, Any]:
        # if_not_exists: a counter cleaned up already must not come back without an expiry.
        return {
            "Update": {
                "TableName": self._table,
                "Key": {QUOTA_PARTITION_KEY: {"S": window.key}},
                "UpdateExpression": "SET #exp = if_not_exists(#exp, :exp) ADD #tokens :delta",
                "ExpressionAttributeNames": {"#tokens": "tokens", "#exp": QUOTA_TTL_ATTRIBUTE},
                "ExpressionAttributeValues": {
                    ":delta": {"N": str(delta)},
                    ":exp": {"N": str(expires_at(window))},
                },
            }
        }

    def _already_settled(self, reservation: Reservation, item: Mapping[str, Any] | None) -> bool:
        """Why the marker refused: settled (False), gone (False), or another reservation."""
        marker = item if item is not None else self._get(marker_key(reservation.request_id))
        if marker is None:
            logger.warning("no reservation %s to settle (expired?)", reservation.request_id)
            return False
        if marker["state"]["S"] == "reserved":
            raise ValueError(
                f"reservation {reservation.request_id!r} does not match the stored one "
                f"(reserved {marker['reserved']['N']}, given {reservation.amount})"
            )
        return False

    # -- reads --------------------------------------------------------------------------------

    def usage(self, consumer: str, now: datetime | None = None) -> dict[str, int]:
        """Tokens counted in the consumer's current windows: ``{"day": n, "month": n}``."""
        windows = windows_at(consumer, utc(now), None, None)
        tokens = self._read([window.key for window in windows])
        return {window.kind: tokens[window.key] for window in windows}

    def _read(self, keys: list[str]) -> dict[str, int]:
        """Counter values by key (0 when absent), strongly consistent.

        One GetItem per key rather than one BatchGetItem: GetItem is what the table's IAM
        grant already covers (transactions are authorized per contained item action).
        """
        found: dict[str, int] = {}
        for key in keys:
            item = self._get(key, projection=("tokens",))
            found[key] = int(item["tokens"]["N"]) if item and "tokens" in item else 0
        return found

    def _get(self, key: str, projection: tuple[str, ...] = ()) -> dict[str, Any] | None:
        """One item by key, strongly consistent (only the ``projection`` attributes if any)."""
        request: dict[str, Any] = {
            "TableName": self._table,
            "Key": {QUOTA_PARTITION_KEY: {"S": key}},
            "ConsistentRead": True,
        }
        if projection:
            names = {f"#a{n}": name for n, name in enumerate(projection)}
            request["ProjectionExpression"] = ", ".join(names)
            request["ExpressionAttributeNames"] = names
        item: dict[str, Any] | None = self._call("get_item", **request).get("Item")
        return item

    # -- calls --------------------------------------------------------------------------------

    def _transact(self, items: list[dict[str, Any]]) -> list[_Reason] | None:
        """Write ``items`` atomically: None when written, the reasons when a condition refused.

        Cancellations for transient reasons only (a conflicting concurrent transaction on a
        counter, throttling) wrote nothing and are retried with jittered backoff.
        """
        codes: list[str | None] = []
        for attempt in range(_TRANSACT_ATTEMPTS):
            if attempt:
                time.sleep(random.uniform(0, _BACKOFF_S * 2**attempt))
            try:
                self._call("transact_write_items", TransactItems=items, reraise=True)
                return None
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "TransactionCanceledException":
                    raise QuotaUnavailable(str(exc)) from exc
                reasons = _cancellation_reasons(exc.response, len(items))
            codes = [reason.code for reason in reasons]
            if _CONDITION_FAILED in codes or not set(filter(None, codes)) <= _TRANSIENT:
                return reasons
        raise QuotaUnavailable(f"transaction still cancelled after retries: {codes}")

    def _call(self, operation: str, *, reraise: bool = False, **kwargs: Any) -> dict[str, Any]:
        """One client call; failures become QuotaUnavailable (ClientError too, unless reraise)."""
        try:
            response: dict[str, Any] = getattr(self._client, operation)(**kwargs)
        except ClientError as exc:
            if reraise:
                raise
            raise QuotaUnavailable(f"{operation}: {exc}") from exc
        except BotoCoreError as exc:
            raise QuotaUnavailable(f"{operation}: {exc}") from exc
        return response


# -- cancellation reasons ---------------------------------------------------------------------

_REASONS_IN_MESSAGE = re.compile(r"\[([A-Za-z, ]*)\]\s*$")


def _cancellation_reasons(response: Mapping[str, Any], count: int) -> list[_Reason]:
    """One reason per transaction item, in request order.

    DynamoDB (and moto) send ``CancellationReasons`` as a list of ``{"Code", "Message",
    "Item"?}`` with ``"Code": "None"`` for items that did not fail; botocore puts it at the top
    level of the error response. Clients that do not parse it still get the codes in the
    message ("... specific reasons [None, ConditionalCheckFailed]"), without the items.
    """
    raw = response.get("CancellationReasons")
    if isinstance(raw, list) and len(raw) == count:
        return [_Reason(_code(entry.get("Code")), entry.get("Item")) for entry in raw]
    message = str(response.get("Error", {}).get("Message", response.get("Message", "")))
    match = _REASONS_IN_MESSAGE.search(message)
    codes = [part.strip() for part in match.group(1).split(",")] if match else []
    if len(codes) != count:
        return [_Reason("Unknown")] * count
    return [_Reason(_code(code)) for code in codes]


def _code(value: object) -> str | None:
    return None if value in (None, "", "None", "null") else str(value)


def _exceeded(
    window: Window, requested: int, at: datetime, *, used: int | None = None
) -> QuotaExceeded:
    wait = math.ceil((window.resets_at - at).total_seconds())
    remaining = None if used is None or window.limit is None else max(0, window.limit - used)
    return QuotaExceeded(window, requested, max(1, wait), remaining=remaining)


def _tokens(item: Mapping[str, Any] | None) -> int | None:
    """The ``tokens`` of a counter item returned with a cancellation reason, if any."""
    value = (item or {}).get("tokens", {}).get("N")
    return int(value) if value is not None else None
