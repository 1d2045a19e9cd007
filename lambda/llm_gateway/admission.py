"""Token-quota admission: how much a request reserves, what it is charged, what it is told."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from llm_gateway.errors import GatewayError

if TYPE_CHECKING:
    from llm_gateway.contract import Route, Tier
    from llm_gateway.quota_model import QuotaExceeded, Window
    from llm_gateway.request import ChatRequest
    from llm_gateway.service import Outcome

# A chat template adds a few tokens around every message (role markers, separators).
_PER_MESSAGE_TOKENS = 4
# Tokenizers average 3-4 UTF-8 bytes per token on English text; reserve on the high side.
_BYTES_PER_TOKEN = 3


def prompt_estimate(request: ChatRequest, route: Route) -> int:
    """Prompt tokens to reserve before the backend reports the real count: the text, and each
    image at the most any of the route's backends reserves per image (``image_input``)."""
    text = sum(
        math.ceil(len(m.text.encode()) / _BYTES_PER_TOKEN) + _PER_MESSAGE_TOKENS
        for m in request.messages
    )
    images = len(request.images)
    if not images:
        return text
    per_image = max(
        (b.image_input.tokens_per_image for b in route.backends if b.image_input is not None),
        default=0,  # no backend takes images: the route refuses the request before using this
    )
    return text + images * per_image


def output_allowance(request: ChatRequest, tier: Tier | None) -> int | None:
    """Output tokens the request may generate (and reserves): its own limit, else the tier's."""
    if request.output_limit is not None:
        return request.output_limit
    return tier.default_reservation if tier is not None else None


def reserved_output(allowance: int | None, prompt: int, route: Route) -> int:
    """Output tokens to reserve: the allowance, but never more than any of the route's models
    could generate after the prompt (``max_model_len`` − the prompt estimate), so a
    ``max_tokens`` beyond the context is not refused by a quota the model would never use up.
    Whether the prompt fits is the model's call (it answers 400, relayed as is): the estimate
    is too rough to refuse on."""
    contexts = [b.max_model_len for b in route.backends if b.max_model_len is not None]
    wanted = allowance or 0
    if not contexts:
        return wanted
    return max(0, min(wanted, max(contexts) - prompt))


def token_counts(outcome: Outcome, prompt: int) -> tuple[int, int]:
    """Input and output tokens of a response: the backend's usage where it reported one (a
    backend reporting no prompt count, like LMI's native stream, counts the estimate), else the
    estimate and one token per streamed delta (a stream cut short reports no usage).

    What "cut short" means depends on where this runs. Under the Lambda Web Adapter nothing
    tells the app that the client went away (the adapter relays until the app finishes; AWS:
    after a disconnect "the Lambda function might continue to execute"), so on AWS a client
    disconnect does not cut the stream: the model generates to the end, the function relays
    into the void, and the request is settled to the backend's full reported usage (and Lambda
    bills the whole duration). Only a mid-stream fault cuts a stream there. Locally (uvicorn
    without the adapter) a disconnect is seen and the partial count applies."""
    usage = outcome.usage
    if usage is None:
        return prompt, outcome.text_deltas
    return usage.prompt_tokens or prompt, usage.completion_tokens


def _duration(seconds: float) -> str:
    """OpenAI's reset format: ``1h2m3s``, ``45s``."""
    total = max(0, math.ceil(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes or hours else "")
    return f"{text}{secs}s"


def ratelimit_headers(window: Window | None, remaining: int | None) -> dict[str, str]:
    """OpenAI-style ``x-ratelimit-*-tokens`` headers for a limited window (remaining only
    where it is known)."""
    if window is None or window.limit is None:
        return {}
    reset = (window.resets_at - datetime.now(UTC)).total_seconds()
    headers = {
        "x-ratelimit-limit-tokens": str(window.limit),
        "x-ratelimit-reset-tokens": _duration(reset),
    }
    if remaining is not None:
        headers["x-ratelimit-remaining-tokens"] = str(max(0, remaining))
    return headers


def quota_error(exc: QuotaExceeded) -> GatewayError:
    """429 for a refused reservation: the day window is a rate limit, the month a quota."""
    window = exc.window
    retry = _duration(exc.retry_after_s)
    headers = {"retry-after": str(exc.retry_after_s), **ratelimit_headers(window, exc.remaining)}
    if window.kind == "day":
        message = (
            f"Rate limit reached for tokens per day: limit {window.limit}, requested "
            f"{exc.requested}. Please try again in {retry}."
        )
        return GatewayError(429, message, type="tokens", code="rate_limit_exceeded",
                            headers=headers)  # fmt: skip
    message = (
        f"You exceeded your monthly token quota (limit {window.limit}, requested "
        f"{exc.requested}); it resets in {retry}."
    )
    return GatewayError(429, message, type="insufficient_quota", code="insufficient_quota",
                        headers=headers)  # fmt: skip


def quota_unavailable() -> GatewayError:
    return GatewayError(
        503, "Token quotas cannot be checked right now; retry shortly.", type="server_error",
        code="quota_unavailable", headers={"retry-after": "1"},
    )  # fmt: skip
