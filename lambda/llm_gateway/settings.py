"""Typed settings, parsed once from the function's environment."""

from __future__ import annotations

import json
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llm_gateway.contract import (
    CACHE_TABLE_ENV,
    CONNECT_TIMEOUT_ENV,
    CONSUMERS_ENV,
    CORS_ORIGINS_ENV,
    LOCAL_CONSUMER_ENV,
    MAX_REQUEST_BYTES_ENV,
    QUOTA_TABLE_ENV,
    READ_TIMEOUT_ENV,
    ROUTES_ENV,
    ConsumerTable,
    RouteTable,
)


class SettingsError(ValueError):
    """The environment does not describe a runnable gateway (a deployment bug, not a client's)."""


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    routes: RouteTable
    consumers: ConsumerTable | None = Field(
        None, description="None: no identities and no token quotas (tests of routing alone)."
    )
    quota_table: str | None = None
    cache_table: str | None = Field(None, description="The response cache (routes' cache).")
    local_consumer: str | None = Field(None, description="Local runs only; see identity.py.")
    max_request_bytes: int = Field(1_048_576, gt=0, le=6_291_456)  # Lambda's 6 MB request cap
    upstream_connect_timeout_s: float = Field(5.0, gt=0)
    upstream_read_timeout_s: float = Field(
        120.0, gt=0, description="Longest silence between two upstream bytes."
    )
    cors_origins: tuple[str, ...] = Field((), description="Browser origins; (): CORS off.")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        raw_routes = environ.get(ROUTES_ENV)
        if not raw_routes:
            raise SettingsError(f"{ROUTES_ENV} is not set: the gateway has no routes")
        values: dict[str, object] = {}
        for key, env in (
            ("max_request_bytes", MAX_REQUEST_BYTES_ENV),
            ("upstream_connect_timeout_s", CONNECT_TIMEOUT_ENV),
            ("upstream_read_timeout_s", READ_TIMEOUT_ENV),
        ):
            if env in environ:
                values[key] = environ[env]
        for key, env in (
            ("quota_table", QUOTA_TABLE_ENV),
            ("cache_table", CACHE_TABLE_ENV),
            ("local_consumer", LOCAL_CONSUMER_ENV),
        ):
            if environ.get(env):
                values[key] = environ[env]
        origins = environ.get(CORS_ORIGINS_ENV, "")
        values["cors_origins"] = tuple(o.strip() for o in origins.split(",") if o.strip())
        try:
            values["routes"] = json.loads(raw_routes)
            if environ.get(CONSUMERS_ENV):
                values["consumers"] = json.loads(environ[CONSUMERS_ENV])
            settings = cls.model_validate(values)
        except (ValueError, ValidationError) as exc:
            raise SettingsError(f"invalid gateway environment: {exc}") from exc
        if settings.consumers is not None and settings.quota_table is None:
            raise SettingsError(f"{CONSUMERS_ENV} is set but {QUOTA_TABLE_ENV} is not")
        caching = [route.model for route in settings.routes.routes if route.cache is not None]
        if caching and settings.cache_table is None:
            raise SettingsError(f"routes {caching} cache but {CACHE_TABLE_ENV} is not set")
        return settings
