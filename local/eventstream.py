"""Encoder for ``application/vnd.amazon.eventstream`` frames, as SageMaker runtime sends them.

A frame (message) is::

    prelude:  total length (u32 BE) | headers length (u32 BE) | CRC32 of those 8 bytes (u32 BE)
    headers:  per header: name length (u8) | name | value type (u8) | value
    payload:  raw bytes
    trailer:  CRC32 of everything before it (u32 BE)

Only string header values (type 7: u16 BE length, then UTF-8) are needed here. The event and
exception shapes come from botocore's ``sagemaker-runtime/2017-05-13/service-2.json``:
``PayloadPart.Bytes`` is the ``eventpayload`` blob (so the payload is the raw bytes), and the
``ModelStreamError`` (``Message``, ``ErrorCode``) and ``InternalStreamFailure`` (``Message``)
exceptions carry a JSON body with those member names.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterable

_STRING_TYPE = 7
_PRELUDE_LENGTH = 12
_CRC_LENGTH = 4
_MAX_HEADER_NAME = 255
_MAX_HEADER_VALUE = 65_535


def _crc32(data: bytes, crc: int = 0) -> int:
    return zlib.crc32(data, crc) & 0xFFFFFFFF


def encode_headers(headers: Iterable[tuple[str, str]]) -> bytes:
    """Encode ``(name, value)`` pairs as event-stream string headers (value type 7)."""
    out = bytearray()
    for name, value in headers:
        raw_name = name.encode("utf-8")
        raw_value = value.encode("utf-8")
        if not 0 < len(raw_name) <= _MAX_HEADER_NAME:
            raise ValueError(f"header name length must be 1..{_MAX_HEADER_NAME}: {name!r}")
        if len(raw_value) > _MAX_HEADER_VALUE:
            raise ValueError(f"header value of {name!r} exceeds {_MAX_HEADER_VALUE} bytes")
        out += struct.pack(">B", len(raw_name)) + raw_name
        out += struct.pack(">BH", _STRING_TYPE, len(raw_value)) + raw_value
    return bytes(out)


def encode_message(headers: Iterable[tuple[str, str]], payload: bytes) -> bytes:
    """One complete frame: prelude with its CRC, headers, payload, message CRC."""
    raw_headers = encode_headers(headers)
    total = _PRELUDE_LENGTH + len(raw_headers) + len(payload) + _CRC_LENGTH
    lengths = struct.pack(">II", total, len(raw_headers))
    prelude = lengths + struct.pack(">I", _crc32(lengths))
    body = prelude + raw_headers + payload
    return body + struct.pack(">I", _crc32(body))


def payload_part(data: bytes) -> bytes:
    """A ``PayloadPart`` event whose payload is ``data`` verbatim (the ``Bytes`` blob)."""
    return encode_message(
        [
            (":event-type", "PayloadPart"),
            (":content-type", "application/octet-stream"),
            (":message-type", "event"),
        ],
        data,
    )


def _exception(exception_type: str, body: dict[str, str]) -> bytes:
    return encode_message(
        [
            (":exception-type", exception_type),
            (":content-type", "application/json"),
            (":message-type", "exception"),
        ],
        json.dumps(body, ensure_ascii=False).encode("utf-8"),
    )


def model_stream_error(message: str, error_code: str) -> bytes:
    """A ``ModelStreamError`` exception frame (``ErrorCode``: e.g. ``ModelInvocationTimeExceeded``
    or ``StreamBroken``)."""
    return _exception("ModelStreamError", {"Message": message, "ErrorCode": error_code})


def internal_stream_failure(message: str) -> bytes:
    """An ``InternalStreamFailure`` exception frame."""
    return _exception("InternalStreamFailure", {"Message": message})
