"""The gateway's protocol logic without sockets: SSE frames, request checks, idempotency."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, strategies as st

from trio_session.server._protocol import (
    KEEPALIVE,
    RESERVED_STATE_KEY,
    HTTPError,
    IdempotencyLog,
    parse_cursor,
    parse_json,
    parse_message,
    parse_tool_answer,
    parse_types,
    public_state,
    sse_comment,
    sse_frame,
)


def decode(stream: str) -> list[dict[str, str]]:
    """The WHATWG event-stream parser, reduced to id, event and data."""
    events = []
    data: list[str] = []
    fields: dict[str, str] = {}
    for line in stream.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if line == "":
            if data:
                events.append({**fields, "data": "\n".join(data)})
            data, fields = [], {}
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            else:
                fields[name] = value
    return events


@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=2**53),
            st.sampled_from(["content_delta", "tool_call", "lagged"]),
            st.text(),
        ),
        max_size=20,
    )
)
def test_sse_frames_decode_to_what_was_encoded(frames: list[tuple[int, str, str]]) -> None:
    stream = b"".join(
        sse_frame(json.dumps(text), id=seq, event=kind) + KEEPALIVE + sse_comment(text)
        for seq, kind, text in frames
    )
    decoded = decode(stream.decode())
    assert decoded == [
        {"id": str(seq), "event": kind, "data": json.dumps(text)} for seq, kind, text in frames
    ]


@given(st.text())
def test_multiline_data_survives(text: str) -> None:
    decoded = decode(sse_frame(text).decode())
    normalized = text.replace("\r\n", "\n").replace("\r", "\n")
    assert decoded == [{"data": normalized}]


def test_event_names_cannot_break_frames() -> None:
    with pytest.raises(ValueError, match="line break"):
        sse_frame("x", event="a\nb")


@pytest.mark.parametrize(
    "body",
    [b"", b"  ", b"[]", b"1", b"nul", b'{"a": NaN}', b"{" * 100 + b"}" * 100, b"\xff"],
)
def test_parse_json_refuses(body: bytes) -> None:
    with pytest.raises(HTTPError) as caught:
        parse_json(body)
    assert caught.value.status == 400
    assert caught.value.body()["error"]["code"] == "bad_request"


def test_parse_json_nesting_limit() -> None:
    assert "a" in parse_json(b'{"a": ' + b"[" * 60 + b"]" * 60 + b"}")
    with pytest.raises(HTTPError, match="nested deeper"):
        parse_json(b'{"a": ' + b"[" * 70 + b"]" * 70 + b"}")


@pytest.mark.parametrize("text", ["", " ", "-1", "1.0", "x", "1e3", "9" * 40, "٣"])
def test_bad_cursors(text: str) -> None:
    with pytest.raises(HTTPError) as caught:
        parse_cursor(text, "after_seq")
    assert caught.value.status == 400


def test_cursor_and_types() -> None:
    assert parse_cursor(" 7 ", "Last-Event-ID") == 7
    assert parse_types("tick_start,,tick_end ") == {"tick_start", "tick_end"}
    with pytest.raises(HTTPError, match="unknown event type"):
        parse_types("tick_start,nope")


def test_tool_answers() -> None:
    answer = parse_tool_answer({"approved": True, "modified_arguments": {"x": 1}, "always": True})
    assert (answer.approved, answer.modified_arguments, answer.always) == (True, {"x": 1}, True)
    cases: list[tuple[dict[str, object], int]] = [
        ({}, 400),
        ({"approved": 1}, 400),
        ({"approved": True, "always": "yes"}, 400),
        ({"approved": True, "reason": 5}, 400),
        ({"approved": True, "other": 5}, 400),
        ({"approved": True, "modified_arguments": "x"}, 422),
        ({"approved": True, "modified_arguments": [1]}, 422),
    ]
    for body, status in cases:
        with pytest.raises(HTTPError) as caught:
            parse_tool_answer(body)
        assert caught.value.status == status, body


def test_messages_from_clients_are_user_messages() -> None:
    assert parse_message({"role": "user", "content": "hi", "id": "m"}).id == "m"
    for bad in [{"role": "tool", "content": []}, {"role": "user"}, [], 3, "  "]:
        with pytest.raises(HTTPError):
            parse_message(bad)


def test_idempotency_log_keeps_the_latest_keys_in_state() -> None:
    state: dict[str, object] = {"notes": [1]}
    log = IdempotencyLog(state, limit=1000)
    for i in range(1500):
        log.put(f"k{i}", {"execution_id": f"e{i}", "after_seq": i})
    assert len(log) == 1000
    assert log.get("k499") is None
    assert log.get("k500") == {"execution_id": "e500", "after_seq": 500}
    assert log.get("k1499") == {"execution_id": "e1499", "after_seq": 1499}
    # JSON-able and hidden from clients.
    assert json.loads(json.dumps(state))[RESERVED_STATE_KEY]["idempotency"]["k1499"]
    assert public_state(state) == {"notes": [1]}
