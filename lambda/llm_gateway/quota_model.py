"""What the quota store speaks: windows, reservations, refusals, and the table's keys (the
item layout is described in quota.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from llm_gateway.contract import Tier

# Counters and markers live this long past their window's end (TTL cleanup only).
GRACE = timedelta(days=3)

WindowKind = Literal["day", "month"]


@dataclass(frozen=True)
class Window:
    """One quota window of a consumer: its counter key, limit (None: counted, not limited)."""

    kind: WindowKind
    key: str
    limit: int | None
    resets_at: datetime


@dataclass(frozen=True)
class Reservation:
    """Tokens held for a request until it is settled.

    ``remaining``: tokens left in the tightest limited window right after this reservation
    (the least left over all limited windows, read back after the write: None until then,
    when that read failed, or when no window is limited; the reservation stands either way),
    and ``limiting`` that window.
    """

    request_id: str
    consumer: str
    amount: int
    windows: tuple[Window, ...]
    remaining: int | None
    limiting: Window | None = None

    @property
    def headline(self) -> Window | None:
        """The window the response headers describe: ``limiting`` once read back, else the
        first limited one (day before month), whose limit and reset are known without a read."""
        if self.limiting is not None:
            return self.limiting
        return next((window for window in self.windows if window.limit is not None), None)


class QuotaExceeded(Exception):  # noqa: N818 (the API's name)
    """A window refused the reservation (the day window when both did)."""

    def __init__(
        self, window: Window, requested: int, retry_after_s: int, *, remaining: int | None = None
    ) -> None:
        super().__init__(
            f"{window.kind} token quota exceeded: requested {requested}, limit {window.limit}; "
            f"resets in {retry_after_s}s"
        )
        self.window = window
        self.requested = requested
        self.retry_after_s = retry_after_s
        self.remaining = remaining
        """Tokens left in the window (None when unknown, e.g. refused without a call)."""


class QuotaUnavailable(Exception):  # noqa: N818 (the API's name)
    """DynamoDB could not be reached or refused the call for a reason other than a quota."""


def utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(UTC)


def windows_at(
    consumer: str, at: datetime, day_limit: int | None, month_limit: int | None
) -> tuple[Window, Window]:
    """The day and month windows containing ``at`` (UTC), day first."""
    day, month = at.strftime("%Y-%m-%d"), at.strftime("%Y-%m")
    return (
        Window("day", counter_key(consumer, "day", day), day_limit, period_end("day", day)),
        Window("month", counter_key(consumer, "month", month), month_limit,
               period_end("month", month)),
    )  # fmt: skip


def window_from_key(key: str, tier: Tier) -> Window:
    """Rebuild a stored counter key's window (consumer names may contain ``#``)."""
    _, kind, period = key.rsplit("#", 2)
    if kind == "day":
        return Window("day", key, tier.tokens_per_day, period_end("day", period))
    if kind == "month":
        return Window("month", key, tier.tokens_per_month, period_end("month", period))
    raise ValueError(f"not a counter key: {key!r}")


def period_end(kind: WindowKind, period: str) -> datetime:
    if kind == "day":
        return datetime.strptime(period, "%Y-%m-%d").replace(tzinfo=UTC) + timedelta(days=1)
    start = datetime.strptime(period, "%Y-%m").replace(tzinfo=UTC)
    return (start + timedelta(days=32)).replace(day=1)


def counter_key(consumer: str, kind: WindowKind, period: str) -> str:
    return f"usage#{consumer}#{kind}#{period}"


def marker_key(request_id: str) -> str:
    return f"request#{request_id}"


def expires_at(window: Window) -> int:
    return int((window.resets_at + GRACE).timestamp())
