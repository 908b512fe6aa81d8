"""``GET /@openapi``: the OpenAPI 3.1 document, generated from the registered views, the
marshmallow schemas and the registered actions; and every documented example holds to it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from marshmallow import Schema, fields, validate
from openapi_spec_validator import OpenAPIV31SpecValidator
from openapi_spec_validator import validate as validate_spec
from pyramid.config import Configurator
from pyramid.security import NO_PERMISSION_REQUIRED
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from nick_jobs.jobs.actions import get_registry
from nick_jobs.jobs.serialize import FIELDS
from nick_jobs.web import openapi
from nick_jobs.web.resources import JobResource
from nick_jobs.web.strict import QUERY_OPTION, SUBPATH_OPTION
from tests.actions_for_tests import echo
from tests.test_docs_examples import EXAMPLES, example_names, parse

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = ROOT / "docs" / "openapi.json"
REFRESH = ".venv/bin/python -m nick_jobs.web.openapi > docs/openapi.json"
THIS_MODULE = __name__
PROBE = "openapi-probe"


class ProbeParams(Schema):
    colour = fields.String(required=True, validate=validate.OneOf(["red", "blue"]))
    times = fields.Integer(load_default=1, validate=validate.Range(min=1, max=9))


def includeme(config) -> None:
    """Included by the apps below: a host's own action, as a host adds one."""
    config.add_job_action(PROBE, echo, schema=ProbeParams, title="Probe", permission="Add Jobs")


@pytest.fixture(scope="module")
def default_document() -> dict[str, Any]:
    return openapi.generate(openapi.default_registry())


@pytest.fixture
def host_app(app, make_app):
    return make_app(**{"nick_jobs.includes": f"tests.actions_for_tests {THIS_MODULE}"})


def nick_jobs_views(registry) -> list[tuple[str, str, Any]]:
    """(method, path, introspectable) of every view made with ``api_view``, read here from
    the introspector on its own, not through the module under test."""
    found = []
    for item in registry.introspector.get_category("views"):
        view = item["introspectable"]
        if view.get(QUERY_OPTION) is None:
            continue
        path = (openapi.PATH_TEMPLATES[view["context"]] + "/" + view["name"]).rstrip("/")
        methods = view["request_methods"]
        for method in (methods,) if isinstance(methods, str) else methods:
            if method != "HEAD":
                found.append((method, path or "/", view))
    return found


# --- the document -------------------------------------------------------------------------


def test_the_document_is_valid_openapi_3_1(default_document):
    assert default_document["openapi"] == "3.1.0"
    validate_spec(default_document, cls=OpenAPIV31SpecValidator)


def test_docs_openapi_json_is_the_default_installations_document():
    expected = openapi.document_text(openapi.default_registry())
    assert DOCUMENT.is_file(), f"docs/openapi.json is missing; write it with: {REFRESH}"
    assert DOCUMENT.read_text() == expected, f"docs/openapi.json is out of date; run: {REFRESH}"


def test_every_registered_view_appears_with_its_query_parameters(default_document):
    views = nick_jobs_views(openapi.default_registry())
    assert len(views) >= 25
    for method, path, view in views:
        operation = default_document["paths"][path][method.lower()]
        parameters = operation.get("parameters", [])
        query = {p["name"] for p in parameters if p.get("in") == "query"}
        assert query == set(view[QUERY_OPTION]), f"{method} {path}"
        for name in re.findall(r"{(\w+)}", path):
            assert {"in": "path", "name": name}.items() <= next(
                p for p in parameters if p.get("name") == name
            ).items()
        if view[SUBPATH_OPTION]:
            # /healthz takes /healthz/ready below it, documented as its own path
            assert any(other.startswith(path + "/") for other in default_document["paths"])
    documented = {
        (method.upper(), path)
        for path, operations in default_document["paths"].items()
        for method in operations
    }
    registered = {(method, path) for method, path, _ in views}
    # a path documented beyond the registered ones is below a view that takes a sub-path
    takes_subpath = {(method, path) for method, path, view in views if view[SUBPATH_OPTION]}
    below = {
        (method, path)
        for method, path in documented - registered
        if any(m == method and path.startswith(p + "/") for m, p in takes_subpath)
    }
    assert below == {("GET", "/healthz/ready")}
    assert documented - below == registered


def test_the_typed_query_parameters_come_from_the_schemas(default_document):
    jobs = {p["name"]: p for p in default_document["paths"]["/@jobs"]["get"]["parameters"]}
    assert jobs["status"]["schema"]["enum"] == [
        "created", "running", "completed", "failed", "aborted", "stopped"
    ]  # fmt: skip
    assert jobs["parent"]["schema"] == {"type": "string", "format": "uuid"}
    preview = default_document["paths"]["/@scheduled-jobs/@preview"]["get"]["parameters"]
    assert {p["name"]: p["required"] for p in preview} == {
        "schedule": True,
        "timezone": False,
        "count": False,
    }


def test_every_operation_entry_names_a_registered_view():
    registered = {(method, path) for method, path, _ in nick_jobs_views(openapi.default_registry())}
    assert set(openapi.OPERATIONS) == registered


def test_a_view_without_an_entry_fails_the_document():
    config = Configurator(settings=openapi.default_registry().settings)
    config.include("nick_jobs")

    def extra(context, request):
        return {}

    config.add_view(
        extra,
        context=JobResource,
        name="touch",
        request_method="POST",
        permission=NO_PERMISSION_REQUIRED,
        renderer="json",
        **{QUERY_OPTION: frozenset(), SUBPATH_OPTION: False},
    )
    config.commit()
    assert openapi.undocumented(config.registry) == [("POST", "/@jobs/{uuid}/touch")]
    with pytest.raises(LookupError, match=re.escape("POST /@jobs/{uuid}/touch")):
        openapi.generate(config.registry)


def test_errors_have_the_one_shape_and_auth_is_a_bearer(default_document):
    components = default_document["components"]
    assert components["securitySchemes"][openapi.BEARER] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "The token `POST /@login` answers.",
    }
    error = components["schemas"]["Error"]
    assert error["required"] == ["error"]
    assert components["schemas"]["ErrorDetail"]["required"] == ["message", "type"]
    for path, operations in default_document["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if int(status) >= 400 and (path, status) != ("/healthz/ready", "503"):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, (path, method)
    jobs = default_document["paths"]["/@jobs"]
    assert jobs["get"]["security"] == [{openapi.BEARER: []}]
    assert set(jobs["get"]["responses"]) >= {"200", "400", "401", "403"}
    assert default_document["paths"]["/@login"]["post"]["security"] == [{}]
    assert default_document["paths"]["/@openapi"]["get"]["security"] == [{}]
    # a stream also opens with a ticket in its URL
    stream = default_document["paths"]["/@jobs/{uuid}/stream"]["get"]
    assert stream["security"] == [{openapi.BEARER: []}, {openapi.TICKET: []}]
    assert components["securitySchemes"][openapi.TICKET]["in"] == "query"
    # the headers views read are parameters too
    submit = default_document["paths"]["/@jobs"]["post"]["parameters"]
    assert {"$ref": "#/components/parameters/Idempotency-Key"} in submit
    assert components["parameters"]["Idempotency-Key"]["in"] == "header"


def test_the_streams_are_event_streams_with_their_events(default_document):
    stream = default_document["paths"]["/@jobs/{uuid}/stream"]["get"]["responses"]["200"]
    media = stream["content"]["text/event-stream"]
    assert set(media["x-events"]) == {"status", "progress", "log", "close"}
    assert media["x-events"]["status"] == {"$ref": "#/components/schemas/Job"}
    feed = default_document["paths"]["/@jobs/stream"]["get"]["responses"]["200"]
    assert set(feed["content"]["text/event-stream"]["x-events"]) == {"status", "close"}
    # ?follow=true of a submit answers the new job's stream
    submit = default_document["paths"]["/@jobs"]["post"]["responses"]["201"]["content"]
    assert set(submit) == {"application/json", "text/event-stream"}


def test_the_submission_is_one_of_the_registered_actions(host_app):
    registry = host_app.app.registry
    document = openapi.generate(registry)
    schemas = document["components"]["schemas"]
    params = schemas["JobSubmission"]["properties"]["params"]
    names = [action.name for action in get_registry(registry)]
    assert {PROBE, "echo", "dummy", "prune"} <= set(names)
    assert params["discriminator"]["propertyName"] == "action"
    assert set(params["discriminator"]["mapping"]) == set(names)
    assert len(params["oneOf"]) == len(names)
    # each is what GET /@job-actions publishes, with its name as the action
    published = {
        action["name"]: action["params"]
        for action in host_app.get("/@job-actions", headers=host_app.auth()).json
    }
    probe = schemas[f"JobParams.{PROBE}"]
    assert probe["properties"]["action"] == {"const": PROBE}
    assert probe["required"] == ["action", "colour"]
    assert {k: v for k, v in probe["properties"].items() if k != "action"} == (
        published[PROBE]["properties"]
    )
    assert probe["properties"]["colour"]["enum"] == ["red", "blue"]
    # and a body for it validates against the submission, a wrong one does not
    validator = schema_validator(document, "JobSubmission")
    validator.validate({"params": {"action": PROBE, "colour": "red"}})
    with pytest.raises(jsonschema.ValidationError):
        validator.validate({"params": {"action": PROBE, "colour": "green"}})


def test_the_default_installation_has_no_test_action(default_document):
    mapping = default_document["components"]["schemas"]["JobSubmission"]["properties"]["params"]
    assert set(mapping["discriminator"]["mapping"]) == {"dummy", "prune"}


def test_the_job_schema_has_every_field_of_the_jobs_json(default_document):
    job = default_document["components"]["schemas"]["Job"]
    assert list(job["properties"]) == ["@id", *(f.key for f in FIELDS), "checkin_data", "error"]
    assert job["additionalProperties"] is False


# --- GET /@openapi --------------------------------------------------------------------------


def test_get_openapi_is_anonymous_json_and_cacheable(host_app):
    res = host_app.get("/@openapi", status=200)
    assert res.content_type == "application/json"
    assert res.json == openapi.generate(host_app.app.registry)
    assert "Authorization" not in res.request.headers
    assert re.fullmatch(r'"[0-9a-f]{32}"', res.headers["ETag"])
    assert res.headers["Cache-Control"] == f"public, max-age={openapi_view_max_age()}"
    # the host's action is in the served document
    mapping = res.json["components"]["schemas"]["JobSubmission"]["properties"]["params"]
    assert PROBE in mapping["discriminator"]["mapping"]
    again = host_app.get("/@openapi", headers={"If-None-Match": res.headers["ETag"]}, status=304)
    assert again.body == b""
    head = host_app.head("/@openapi", status=200)
    assert head.body == b""
    assert head.headers["ETag"] == res.headers["ETag"]
    assert head.headers["Content-Length"] == str(len(res.body))
    # a token changes nothing
    assert host_app.get("/@openapi", headers=host_app.auth("bob")).body == res.body


def test_get_openapi_refuses_what_other_views_refuse(app):
    res = app.get("/@openapi?x=1", status=400)
    assert res.json["error"]["type"] == "Validation error"
    res = app.post("/@openapi", status=405)
    assert res.json["error"]["type"] == "Method not allowed"


def openapi_view_max_age() -> int:
    from nick_jobs.web.views.openapi import MAX_AGE_S

    return MAX_AGE_S


# --- the examples hold to the document --------------------------------------------------------

URN = "urn:nick-jobs:openapi"


def schema_validator(document: dict[str, Any], name: str | None = None, schema=None):
    """A JSON Schema validator of a component (or of ``schema``), refs resolved in the
    document."""
    resource = Resource.from_contents(document, default_specification=DRAFT202012)
    registry = Registry().with_resource(URN, resource)
    if schema is None:
        schema = {"$ref": f"#/components/schemas/{name}"}
    schema = json.loads(json.dumps(schema).replace('"#/components/', f'"{URN}#/components/'))
    return jsonschema.Draft202012Validator(schema, registry=registry)


def _match(document: dict[str, Any], path: str) -> str | None:
    """The path template of ``document`` that ``path`` names; the literal ones first."""
    templates = sorted(document["paths"], key=lambda t: (t.count("{"), t))
    for template in templates:
        pattern = re.sub(r"\\{\w+\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, path):
            return template
    return None


def _events(body: str) -> list[tuple[str, Any]]:
    events = []
    for block in body.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
        if "event" in lines:
            events.append((lines["event"], json.loads(lines["data"])))
    return events


@pytest.mark.parametrize("name", example_names())
def test_example_holds_to_the_document(default_document, name):
    request = parse((EXAMPLES / f"{name}.req").read_text())
    response = parse((EXAMPLES / f"{name}.res").read_text())
    method, target, _ = request.first_line.split(" ")
    status = response.first_line.split(" ")[1]
    if method == "OPTIONS":
        # A CORS preflight, answered before any view (docs/api.md#cors); off by default.
        assert request.header("Access-Control-Request-Method")
        return
    head = method == "HEAD"
    if head:
        method = "GET"  # answered by the GET view, without the body (the document's info)
    template = _match(default_document, target.split("?")[0])
    assert template is not None, f"{name}: {target} is not in the document"
    operation = default_document["paths"][template].get(method.lower())
    assert operation is not None, f"{name}: {method} {template} is not in the document"
    assert status in operation["responses"], f"{name}: {status} of {method} {template}"
    documented = operation["responses"][status]
    media = (response.header("Content-Type") or "").split(";")[0].strip()
    if head:
        assert media in documented["content"], f"{name}: {media} for {status}"
        assert not response.body.strip(), f"{name}: a HEAD answered with a body"
        return
    if not response.body.strip():
        assert "content" not in documented, f"{name}: a body is documented"
        return
    assert media in documented["content"], f"{name}: {media} for {status}"
    content = documented["content"][media]
    if media == "text/event-stream":
        events = _events(response.body)
        assert events
        for kind, data in events:
            schema_validator(default_document, schema=content["x-events"][kind]).validate(data)
        return
    body = json.loads(response.body)
    schema_validator(default_document, schema=content["schema"]).validate(body)
    if "x-error-types" in documented:
        assert body["error"]["type"] in documented["x-error-types"], name
    if int(status) < 400 and request.body.strip() and "requestBody" in operation:
        sent = operation["requestBody"]["content"]["application/json"]["schema"]
        schema_validator(default_document, schema=sent).validate(json.loads(request.body))
