"""Bytes → whole lines → text → event payloads.

SageMaker ``PayloadPart`` boundaries are arbitrary: a part may end inside a line, inside a
``data: `` prefix, between ``\\r`` and ``\\n``, or inside a multi-byte UTF-8 character. So bytes
are buffered and split on line ends first, and only whole lines are decoded (line-end bytes are
ASCII and never occur inside a multi-byte UTF-8 sequence).
"""

from __future__ import annotations

_CR = 0x0D


class LineDecoder:
    """Incrementally split a byte stream into text lines (``\\n``, ``\\r\\n`` or ``\\r`` ends)."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[str]:
        """Add bytes; return the lines they complete, without their line ends."""
        if not data:
            return []
        self._buffer += data
        buffer = self._buffer
        # A trailing \r may be the first half of \r\n: hold it until the next byte arrives.
        end = len(buffer) - 1 if buffer[-1] == _CR else len(buffer)
        cut = max(buffer.rfind(b"\n", 0, end), buffer.rfind(b"\r", 0, end))
        if cut < 0:
            return []
        complete = bytes(buffer[: cut + 1])
        del buffer[: cut + 1]
        return [line.decode("utf-8", errors="replace") for line in complete.splitlines()]

    def flush(self) -> list[str]:
        """End of stream: return what remains as a final line (a stream may lack a last end)."""
        rest = bytes(self._buffer)
        self._buffer.clear()
        return [line.decode("utf-8", errors="replace") for line in rest.splitlines()]


def event_payload(line: str) -> str | None:
    """The JSON payload a line carries, for SSE (``data: …``) and bare JSON-lines streams alike.

    Returns None for lines that carry no payload: blank separators, SSE comments (``:``) and
    the other SSE fields (``event:``, ``id:``, ``retry:``).
    """
    if not line:
        return None
    if line.startswith("data:"):
        payload = line[5:]
        return payload[1:] if payload.startswith(" ") else payload
    if line[0] in "{[":
        return line
    return None
