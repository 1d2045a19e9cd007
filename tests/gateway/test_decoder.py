"""Bytes are not lines: any split of a stream into parts yields the same events."""

from __future__ import annotations

import itertools
import json

from hypothesis import given
from hypothesis import strategies as st

from llm_gateway.decoder import LineDecoder, event_payload

# Text with 2-, 3- and 4-byte UTF-8 characters, quotes, and the odd control character.
TEXT = st.text(
    alphabet=st.sampled_from([*list('ab "\\\t'), "é", "ß", "中", "文", "🙂", "🚀", "\u2028"]),
    max_size=12,
)
PAYLOADS = st.lists(
    st.fixed_dictionaries({"content": TEXT, "reasoning": TEXT}).map(
        lambda d: json.dumps(d, ensure_ascii=False)
    ),
    min_size=1,
    max_size=8,
)
FRAMING = st.sampled_from(["sse", "sse-compact", "jsonlines"])
LINE_END = st.sampled_from(["\n", "\r\n", "\r"])


def encode(payloads: list[str], framing: str, end: str) -> bytes:
    if framing == "jsonlines":
        text = "".join(p + end for p in payloads)
    else:
        prefix = "data: " if framing == "sse" else "data:"
        text = "".join(f"{prefix}{p}{end}{end}" for p in payloads) + f": keep-alive{end}"
        text += f"event: message{end}data: [DONE]{end}{end}"
    return text.encode()


def decode(parts: list[bytes]) -> list[str]:
    decoder = LineDecoder()
    lines = [line for part in parts for line in decoder.feed(part)] + decoder.flush()
    return [p for p in map(event_payload, lines) if p is not None]


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


@given(PAYLOADS, FRAMING, LINE_END, st.lists(st.integers(min_value=0), max_size=40))
def test_any_split_yields_the_same_events(
    payloads: list[str], framing: str, end: str, cuts: list[int]
) -> None:
    data = encode(payloads, framing, end)
    expected = payloads + (["[DONE]"] if framing != "jsonlines" else [])
    assert decode([data]) == expected
    assert decode(split_at(data, cuts)) == expected


@given(PAYLOADS, FRAMING, LINE_END)
def test_byte_at_a_time(payloads: list[str], framing: str, end: str) -> None:
    data = encode(payloads, framing, end)
    assert decode([data[i : i + 1] for i in range(len(data))]) == decode([data])


def test_split_inside_a_multibyte_character() -> None:
    data = 'data: {"content":"🚀中"}\n\n'.encode()
    rocket = data.index("🚀".encode())
    for cut in range(rocket + 1, rocket + 4):  # inside the 4-byte rocket
        assert decode([data[:cut], data[cut:]]) == ['{"content":"🚀中"}']


def test_split_inside_the_data_prefix_and_between_cr_and_lf() -> None:
    data = b'data: {"a":1}\r\n\r\ndata: {"a":2}\r\n\r\n'
    for cut in (1, 3, 5, 6, data.index(b"\r") + 1, data.rindex(b"\r") - 1):
        assert decode([data[:cut], data[cut:]]) == ['{"a":1}', '{"a":2}']


def test_a_lone_cr_at_a_part_end_waits_for_the_next_byte() -> None:
    decoder = LineDecoder()
    assert decoder.feed(b'{"a":1}\r') == []
    assert decoder.feed(b"\n") == ['{"a":1}']
    assert decoder.feed(b'{"b":2}\r') == []
    assert decoder.feed(b'{"c":3}') == ['{"b":2}']
    assert decoder.flush() == ['{"c":3}']


def test_payload_extraction() -> None:
    assert event_payload('data: {"x":1}') == '{"x":1}'
    assert event_payload('data:{"x":1}') == '{"x":1}'
    assert event_payload("data:  two spaces") == " two spaces"  # SSE strips exactly one
    assert event_payload('{"token":{}}') == '{"token":{}}'
    for ignored in ("", ": comment", "event: error", "id: 7", "retry: 10"):
        assert event_payload(ignored) is None
