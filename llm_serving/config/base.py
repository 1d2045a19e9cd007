"""The base of every config model: frozen, and unknown keys are errors (a misspelt key fails
synth instead of being ignored)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
