"""Attempt order: weighted canary (seeded), stickiness, fallback order, cooldown."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from llm_gateway.contract import Backend, Route
from llm_gateway.routing import BackendHealth, attempt_order


def backend(name: str, weight: int | None = None) -> Backend:
    return Backend(name=name, endpoint_name=f"ep-{name}", format="openai",
                   max_tokens_default=64, weight=weight)  # fmt: skip


STABLE, CANARY, SPARE = backend("stable", 90), backend("canary", 10), backend("spare")
CANARY_ROUTE = Route(model="chat", backends=(STABLE, CANARY, SPARE), max_attempts=3)


def healthy() -> BackendHealth:
    return BackendHealth(failures=3, cooldown_s=30)


def test_without_weights_the_listed_order_is_the_fallback_order() -> None:
    route = Route(model="m", backends=(backend("a"), backend("b"), backend("c")), max_attempts=2)
    order = attempt_order(route, consumer="x", rng=random.Random(1), health=healthy())
    assert [b.name for b in order] == ["a", "b"]  # bounded by max_attempts


def test_weighted_split_is_within_tolerance() -> None:
    rng = random.Random(20261122)
    n = 20_000
    firsts = Counter(
        attempt_order(CANARY_ROUTE, consumer="x", rng=rng, health=healthy())[0].name
        for _ in range(n)
    )
    assert set(firsts) == {"stable", "canary"}  # unweighted backends are fallback only
    # Binomial(20000, 0.1): sd ≈ 42, so ±1 % (200) is about 4.7 sd.
    assert abs(firsts["canary"] - n * 0.10) < n * 0.01


def test_every_order_falls_back_through_the_others_in_listed_order() -> None:
    rng = random.Random(7)
    orders = {
        tuple(b.name for b in attempt_order(CANARY_ROUTE, consumer="x", rng=rng, health=healthy()))
        for _ in range(200)
    }
    assert orders == {("stable", "canary", "spare"), ("canary", "stable", "spare")}


def test_sticky_routes_pin_each_consumer_and_still_split_consumers() -> None:
    route = CANARY_ROUTE.model_copy(update={"sticky": True})
    rng = random.Random(3)
    for consumer in ("team-a", "team-b", "team-c"):
        firsts = {
            attempt_order(route, consumer=consumer, rng=rng, health=healthy())[0].name
            for _ in range(50)
        }
        assert len(firsts) == 1  # the same choice every time for one consumer
    shares = Counter(
        attempt_order(route, consumer=f"consumer-{i}", rng=rng, health=healthy())[0].name
        for i in range(5_000)
    )
    assert abs(shares["canary"] - 500) < 100  # hashing still splits consumers ~90/10


def test_cooldown_after_repeated_failures_and_recovery() -> None:
    now = [0.0]
    health = BackendHealth(failures=2, cooldown_s=30, clock=lambda: now[0])
    route = Route(model="m", backends=(backend("a"), backend("b")), max_attempts=2)
    a = route.backends[0]
    health.record_failure(a)
    assert [
        b.name for b in attempt_order(route, consumer="", rng=random.Random(), health=health)
    ] == ["a", "b"]
    health.record_failure(a)  # second consecutive failure: cooled down
    assert [
        b.name for b in attempt_order(route, consumer="", rng=random.Random(), health=health)
    ] == ["b"]
    now[0] = 31.0  # cooldown over
    assert attempt_order(route, consumer="", rng=random.Random(), health=health)[0].name == "a"


def test_a_success_resets_the_failure_count() -> None:
    health = BackendHealth(failures=2, cooldown_s=30)
    a = backend("a")
    health.record_failure(a)
    health.record_success(a)
    health.record_failure(a)
    assert not health.cooling(a)


def test_when_every_backend_is_cooling_they_are_still_tried() -> None:
    health = BackendHealth(failures=1, cooldown_s=30)
    route = Route(model="m", backends=(backend("a"), backend("b")), max_attempts=2)
    for b in route.backends:
        health.record_failure(b)
    order = attempt_order(route, consumer="", rng=random.Random(), health=health)
    assert [b.name for b in order] == ["a", "b"]


def test_weights_summing_to_zero_are_rejected() -> None:
    with pytest.raises(ValueError, match="weights sum to 0"):
        Route(model="m", backends=(backend("a", 0), backend("b", 0)))
