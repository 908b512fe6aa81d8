"""What fuzzing the API (tests/web/test_fuzz.py) found, each kept as a plain test.

1. An event stream's answer did not conform to the document: its ``text/event-stream``
   ``schema`` was ``{"type": "string"}``, while OpenAPI 3.1 tools read that ``schema``
   as one event's (3.2 names it ``itemSchema``), an object of ``event``, ``id`` and
   ``data``. Each stream's ``schema`` is now that object, its ``data`` JSON of the
   kind's schema (``contentSchema``).

The list is in docs/reliability.md#fuzzing.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from nick_jobs.web import openapi
from tests.web.test_openapi import schema_validator


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return openapi.generate(openapi.default_registry())


def parse_events(text: str) -> list[dict[str, Any]]:
    """The events of a stream as an EventSource gives them: a block with ``data`` is an
    event (``event``, ``id``, ``retry`` when sent); a comment or a bare ``retry`` is not."""
    events = []
    for block in text.split("\n\n"):
        event: dict[str, Any] = {}
        data = []
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            elif name == "retry":
                event["retry"] = int(value)
            else:
                event[name] = value
        if data:
            events.append({**event, "data": "\n".join(data)})
    return events


def event_schema(document: dict[str, Any], media: dict[str, Any]) -> dict[str, Any]:
    """The schema of one event of a ``text/event-stream`` media type, its $ref followed."""
    name = media["schema"]["$ref"].removeprefix("#/components/schemas/")
    return document["components"]["schemas"][name]


def assert_events_conform(document: dict[str, Any], media: dict[str, Any], text: str) -> list:
    events = parse_events(text)
    assert events
    each = schema_validator(document, schema=media["schema"])
    branches = {
        branch["properties"]["event"]["const"]: branch
        for branch in event_schema(document, media)["oneOf"]
    }
    for event in events:
        each.validate(event)
        data = branches[event["event"]]["properties"]["data"]
        assert data["contentMediaType"] == "application/json"
        schema_validator(document, schema=data["contentSchema"]).validate(json.loads(event["data"]))
    return events


def test_every_event_stream_schema_describes_one_event(document):
    streams = [
        (path, method, status, content["text/event-stream"])
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        for status, response in operation["responses"].items()
        if "text/event-stream" in (content := response.get("content", {}))
    ]
    assert len(streams) == 6, [s[:3] for s in streams]
    for path, method, status, media in streams:
        schema = event_schema(document, media)
        assert schema["type"] == "object", (path, method, status)
        assert schema["required"] == ["event", "data"]
        kinds = [branch["properties"]["event"]["const"] for branch in schema["oneOf"]]
        assert kinds == list(media["x-events"]), (path, method, status)
        assert schema["properties"]["event"]["enum"] == kinds


def test_a_job_stream_answers_events_its_schema_describes(app, document):
    job = app.submit({"action": "dummy", "steps": 2})
    app.wait_for(job["uuid"], "completed")
    response = app.get(f"/@jobs/{job['uuid']}/stream", headers=app.auth())
    assert response.content_type == "text/event-stream"
    media = document["paths"]["/@jobs/{uuid}/stream"]["get"]["responses"]["200"]["content"]
    events = assert_events_conform(document, media["text/event-stream"], response.text)
    assert [event["event"] for event in events] == ["status", "progress", "close"]
    assert events[0]["id"]


def test_a_string_is_not_an_event_of_the_document(document):
    media = document["paths"]["/@jobs/{uuid}/stream"]["get"]["responses"]["200"]["content"]
    each = schema_validator(document, schema=media["text/event-stream"]["schema"])
    assert not each.is_valid("event: status\ndata: {}")
    assert not each.is_valid({"event": "unknown", "data": "{}"})
    assert each.is_valid({"event": "close", "id": "1.0.0", "data": "{}"})
