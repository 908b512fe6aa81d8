"""The client's ``text/event-stream`` parser (``nick_jobs_client.SSEParser``), on raw bytes.

The streams are fed in every possible split, so each case holds whatever the network
does to the chunks: a line, a UTF-8 character or a CRLF cut in two.
"""

from __future__ import annotations

import json

import pytest

from nick_jobs_client import Event, SSEParser


def parse(*chunks: bytes, parser: SSEParser | None = None) -> list[Event]:
    parser = parser if parser is not None else SSEParser()
    events: list[Event] = []
    for chunk in chunks:
        events += parser.feed(chunk)
    return events


def every_split(stream: bytes) -> list[list[bytes]]:
    """The stream whole, byte by byte, and cut in two at every position."""
    splits = [[stream], [stream[i : i + 1] for i in range(len(stream))]]
    splits += [[stream[:i], stream[i:]] for i in range(1, len(stream))]
    return splits


STATUS = json.dumps({"uuid": "u1", "status": "running", "title": "Zürich ☃"}).encode()
STREAM = (
    b"retry: 3000\n"
    b": keepalive\n"
    b"\n"
    b"event: status\nid: a1\ndata: " + STATUS + b"\n\n"
    b'event: log\nid: a2\ndata: {"level": "info",\n'
    b'data:  "message": "two lines"}\n\n'
    b'event: close\ndata: {"reason": "finished", "reconnect": false}\n\n'
)
EXPECTED = [
    Event("status", STATUS.decode(), "a1"),
    Event("log", '{"level": "info",\n "message": "two lines"}', "a2"),
    Event("close", '{"reason": "finished", "reconnect": false}', None),
]


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
def test_the_same_events_whatever_the_chunks_and_line_ends(newline):
    stream = STREAM.replace(b"\n", newline)
    for chunks in every_split(stream):
        parser = SSEParser()
        assert parse(*chunks, parser=parser) == EXPECTED, chunks
        assert (parser.retry, parser.last_event_id, parser.comments) == (3000, "a2", 1)


def test_mixed_line_ends_in_one_stream():
    stream = b"event: log\r\ndata: one\rdata: two\n\r\nevent: log\rdata: three\r\r"
    assert parse(stream) == [Event("log", "one\ntwo"), Event("log", "three")]


def test_a_crlf_split_between_chunks_is_one_line_end_not_a_blank_line():
    # Were the LF read as a second line end, "data: b" would start a new event.
    events = parse(b"data: a\r", b"\ndata: b\r\n\r\n")
    assert events == [Event("message", "a\nb")]


def test_data_is_decoded_as_json():
    (status,) = parse(b"event: status\ndata: " + STATUS + b"\n\n")
    assert status.json == {"uuid": "u1", "status": "running", "title": "Zürich ☃"}


def test_an_event_is_dispatched_only_at_its_blank_line():
    parser = SSEParser()
    assert parser.feed(b"event: status\nid: x\ndata: {}\n") == []
    assert parser.last_event_id == "x"  # the id counts at once, as in EventSource
    assert parser.feed(b"\n") == [Event("status", "{}", "x")]


def test_field_syntax():
    stream = (
        b"data:no space\n\n"  # the space after the colon is optional...
        b"data:  two spaces\n\n"  # ...and only one is removed
        b"data\n\n"  # a field without a colon has an empty value
        b"data: x\ncolour: blue\n\n"  # unknown fields are ignored
        b"event: log\n\n"  # no data: nothing is dispatched, and the type is reset
        b"data: y\n\n"
    )
    assert parse(stream) == [
        Event("message", "no space"),
        Event("message", " two spaces"),
        Event("message", ""),
        Event("message", "x"),
        Event("message", "y"),
    ]


def test_comments_are_counted_and_never_dispatched():
    parser = SSEParser()
    assert parse(b":\n: keepalive\n:another\n\n", parser=parser) == []
    assert parser.comments == 3


def test_retry_takes_digits_only():
    parser = SSEParser()
    parse(b"retry: 1500\n", b"retry: soon\nretry: 12.5\nretry: -1\n", parser=parser)
    assert parser.retry == 1500
    parse(b"retry: 250\n\n", parser=parser)
    assert parser.retry == 250


def test_ids_keep_the_last_one_and_skip_a_null():
    parser = SSEParser("from-before")
    assert parser.last_event_id == "from-before"
    events = parse(b"id: 5\ndata: a\n\n", b"data: b\n\n", b"id: x\0y\ndata: c\n\n", parser=parser)
    assert [e.id for e in events] == ["5", None, None]
    assert parser.last_event_id == "5"
    parse(b"id\ndata: d\n\n", parser=parser)  # an empty id clears it
    assert parser.last_event_id == ""


def test_a_byte_order_mark_at_the_start_is_dropped():
    for chunks in every_split(b"\xef\xbb\xbfevent: log\ndata: x\n\n"):
        assert parse(*chunks) == [Event("log", "x")]


def test_invalid_utf8_is_replaced_not_fatal():
    assert parse(b"data: \xff\n\n") == [Event("message", "\ufffd")]


def test_reset_drops_a_half_received_event_and_keeps_id_and_retry():
    parser = SSEParser()
    parse(b"retry: 100\nid: 1\ndata: ok\n\nevent: log\ndata: cut off", parser=parser)
    parser.reset()
    assert parse(b"\n\ndata: next\n\n", parser=parser) == [Event("message", "next")]
    assert (parser.retry, parser.last_event_id) == (100, "1")
