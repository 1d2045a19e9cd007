"""The routing table: which backend endpoint(s) serve a model alias.

Synth builds it from the same typed model configs that define the endpoints and hands it to
the function as JSON in ``LLM_GATEWAY_ROUTES``; this module is the runtime's side of that
contract (``StreamingGateway`` validates what it writes against these models).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

ROUTES_ENV = "LLM_GATEWAY_ROUTES"

StreamFormat = Literal["openai", "lmi", "tgi"]
"""How a backend streams: OpenAI chat chunks (SSE or JSON lines), LMI JSON lines, TGI SSE."""

PromptTemplate = Literal["llama2"]
"""Chat template the gateway applies for the native (prompt-in) formats."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Backend(_Frozen):
    """One SageMaker endpoint and how to talk to it."""

    name: str = Field(min_length=1, description="Model config name; reported to clients.")
    endpoint_name: str = Field(min_length=1, max_length=63)
    format: StreamFormat
    prompt_template: PromptTemplate | None = None
    custom_attributes: str | None = Field(None, max_length=1024)
    max_tokens_default: int = Field(gt=0, description="Output limit when a request sets none.")
    weight: int | None = Field(
        None,
        ge=0,
        le=1000,
        description="Canary weight; backends with a weight share first attempts by weight.",
    )

    @model_validator(mode="after")
    def _template_matches_format(self) -> Backend:
        if self.format == "openai" and self.prompt_template is not None:
            raise ValueError("an openai-format backend applies its own chat template")
        if self.format != "openai" and self.prompt_template is None:
            raise ValueError(f"a {self.format}-format backend needs a prompt_template")
        return self


class Route(_Frozen):
    """A model alias clients send as ``model``, served by ordered backends.

    The first attempt goes to a backend chosen by weight among the weighted ones (or the
    first backend when none has a weight); later attempts follow the listed order.
    """

    model: str = Field(min_length=1, max_length=256)
    backends: tuple[Backend, ...] = Field(min_length=1)
    first_byte_timeout_s: float = Field(
        60.0, gt=0, le=900, description="An attempt with no first delta by then has failed."
    )
    max_attempts: int = Field(2, ge=1, le=5, description="Backends tried per request, at most.")
    sticky: bool = Field(False, description="Weighted choice fixed per consumer (hashing).")

    @model_validator(mode="after")
    def _weights_make_sense(self) -> Route:
        weights = [b.weight for b in self.backends if b.weight is not None]
        if weights and sum(weights) == 0:
            raise ValueError(f"route {self.model!r}: weights sum to 0; give one a weight > 0")
        return self


class RouteTable(_Frozen):
    routes: tuple[Route, ...] = Field(min_length=1)
    cooldown_failures: int = Field(
        3, ge=1, description="Consecutive failures after which a backend is cooled down."
    )
    cooldown_s: float = Field(30.0, ge=0, description="How long a cooled-down backend is skipped.")

    @model_validator(mode="after")
    def _unique_aliases(self) -> RouteTable:
        seen: set[str] = set()
        for route in self.routes:
            if route.model in seen:
                raise ValueError(f"model alias {route.model!r} is routed twice")
            seen.add(route.model)
        return self

    def get(self, model: str) -> Route | None:
        return next((route for route in self.routes if route.model == model), None)
