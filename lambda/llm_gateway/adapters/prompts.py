"""Chat templates for backends that take a raw prompt (the ``lmi`` and ``tgi`` formats)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from llm_gateway.contract import PromptTemplate
    from llm_gateway.request import ChatMessage

_B_INST, _E_INST = "[INST]", "[/INST]"
_B_SYS, _E_SYS = "<<SYS>>\n", "\n<</SYS>>\n\n"


def llama2_prompt(messages: Sequence[ChatMessage]) -> str:
    """Meta's Llama-2 chat format: ``<s>[INST] <<SYS>>…<</SYS>> user [/INST] answer </s>…``.

    System (and developer) messages are merged into the first user turn; the prompt ends open
    after the last user turn for the model to answer. The tokenizer adds the first ``<s>``.
    """
    system = "\n\n".join(m.text for m in messages if m.role in ("system", "developer"))
    turns = [m for m in messages if m.role not in ("system", "developer")]
    parts: list[str] = []
    pending_user: str | None = None
    first = True
    for message in turns:
        if message.role == "user":
            if pending_user is not None:  # two user turns in a row: join them
                pending_user += "\n\n" + message.text
                continue
            text = message.text
            if first and system:
                text = f"{_B_SYS}{system}{_E_SYS}{text}"
            first = False
            pending_user = text
        else:  # assistant
            user = pending_user if pending_user is not None else ""
            prefix = "" if not parts else "<s>"
            parts.append(f"{prefix}{_B_INST} {user.strip()} {_E_INST} {message.text.strip()} </s>")
            pending_user = None
    if pending_user is not None:
        prefix = "" if not parts else "<s>"
        parts.append(f"{prefix}{_B_INST} {pending_user.strip()} {_E_INST}")
    return "".join(parts)


def render_prompt(template: PromptTemplate, messages: Sequence[ChatMessage]) -> str:
    if template == "llama2":
        return llama2_prompt(messages)
    raise ValueError(f"unknown prompt template {template!r}")  # pragma: no cover - Literal
