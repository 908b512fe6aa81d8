"""Schemathesis against a live server: every operation of ``GET /@openapi``, fuzzed, as an
Administrator and as a user with no role, and stateful runs that follow the document's
links (submit → get, abort, retry, delete...).

The server is a real ``pserve`` process on SQLite (``tests.browser.conftest``'s
``start_live_server``: users added with ``nick-jobs users add``). Every response must:

* not be a server error (no status >= 500);
* conform to the document: a status it lists, its content type, its body's schema and
  its headers;
* carry the error body, ``{"error": {"type", "message"}}``, when it is an error.

Requests are made of valid data and of invalid data alike (schemathesis's positive and
negative modes). Two of its checks are left out, as the document can't say everything the
server checks: ``positive_data_acceptance`` (a request the document allows must succeed:
an unknown cursor, a cron rule like ``"0"`` or a user's submit of an action they may not
run are refused by design) and ``negative_data_rejection`` (a request the document
forbids must be refused: ``prune``'s ``days`` still takes ``2.5`` as ``2``, kept lenient
for the clients that already send it, while the document asks for an integer).

``make test`` runs a few examples per operation; ``make fuzz`` sets
``NICK_JOBS_FUZZ_EXAMPLES`` to run many (docs/reliability.md#fuzzing).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from hypothesis.errors import FlakyStrategyDefinition
from schemathesis import checks

from tests.browser.conftest import LiveServer, start_live_server

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
LOGINS = ("admin", "alice")
#: The operations the answer of ``POST /@jobs`` links to.
JOB_LINK_TARGETS = {
    "GET /@jobs/{uuid}",
    "DELETE /@jobs/{uuid}",
    "POST /@jobs/{uuid}/abort",
    "POST /@jobs/{uuid}/retry",
    "POST /@jobs/{uuid}/stop",
    "POST /@jobs/{uuid}/resume",
    "POST /@jobs/{uuid}/restart",
    "GET /@jobs/{uuid}/log",
    "GET /@jobs/{uuid}/history",
    "GET /@jobs/{uuid}/stream",
}

#: Examples per operation (and stateful scenarios): few for ``make test``, many for
#: ``make fuzz``.
EXAMPLES = int(os.environ.get("NICK_JOBS_FUZZ_EXAMPLES", "10"))
#: Steps of one stateful scenario.
STEPS = 12
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    # A live server over HTTP is slower than hypothesis expects; generated bodies can be
    # large (a job's params), and most are filtered on their way to a valid request.
    suppress_health_check=list(HealthCheck),
    database=None,
    # The short run of ``make test`` is the same every time; ``make fuzz`` explores.
    derandomize="NICK_JOBS_FUZZ_EXAMPLES" not in os.environ,
)


def error_body(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every error answer is ``{"error": {"type", "message"}}``, as JSON."""
    if response.status_code < 400:
        return None
    values = [v for k, v in response.headers.items() if k.lower() == "content-type"]
    media = values[0][0] if values else ""
    assert media.split(";")[0].strip() == "application/json", (
        f"{case.method} {case.formatted_path}: {response.status_code} answered as {media!r}"
    )
    body = json.loads(response.text)
    assert isinstance(body, dict), body
    assert set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error, dict), body
    # ``Validation error`` adds ``fields`` (ErrorDetail allows more than the two).
    for key in ("type", "message"):
        assert isinstance(error.get(key), str), body
        assert error[key], body
    return True


CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
    error_body,
]


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory) -> Iterator[LiveServer]:
    # The default installation's actions only (dummy, prune): the document it serves is
    # docs/openapi.json, which the fuzzing below is made from.
    settings = {
        "nick_jobs.includes": "",
        "nick_jobs.stream_keepalive": "1",
        # The fuzzer reads a stream's first event and hangs up; the server counts the
        # stream until its next write fails (a keepalive, within a second). Scenarios
        # that open streams in a row then met the 10 a user may hold at once, a 503
        # `Too many streams` by design (docs/api.md): the quota is the fuzzer's pace,
        # not a failure. The process's own bound (50) stays.
        "nick_jobs.stream_max_per_user": "40",
        # A claim may ask to wait 30 s for a job that never comes: the fuzzer's claims
        # are cut to a tenth of a second, the path the same.
        "nick_jobs.claim_max_wait": "0.1",
    }
    with start_live_server(tmp_path_factory.mktemp("fuzz-server"), **settings) as live:
        yield live


@pytest.fixture(scope="module")
def tally(request) -> Iterator[Counter]:
    """Requests made, by ``(operation, status)``; their count is printed at the end (the
    figures of docs/reliability.md#fuzzing)."""
    counts: Counter = Counter()
    yield counts
    refused = sum(n for (_, status), n in counts.items() if 400 <= status < 500)
    failed = sum(n for (_, status), n in counts.items() if status >= 500)
    line = (
        f"fuzz: {counts.total()} requests ({EXAMPLES} examples per operation): "
        f"{refused} answered 4xx, {failed} 5xx; {len(counts)} (operation, status) pairs"
    )
    if failed:
        line += ": " + ", ".join(f"{op} {st}" for (op, st), _ in counts.items() if st >= 500)
    # Past the output capture, so that it shows without -s.
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print("\n" + line)


@pytest.fixture(scope="module")
def tokens(fuzz_server) -> dict[str, str]:
    return {login: fuzz_server.token(login) for login in LOGINS}


def config() -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "generation": {"max-examples": EXAMPLES},
            # A job's stream (``GET /@jobs/{uuid}/stream``, ``?follow=true``) may last as
            # long as the job: its first event is enough to check the answer's status and
            # content type; the request timeout cuts a quiet one short.
            "max-stream-events": 1,
            "request-timeout": 10,
        }
    )


def without_endless_stream(schema: Any) -> Any:
    # ``GET /@jobs/stream`` never ends and sends an event only when some job changes: each
    # example would wait out the whole request timeout for nothing. Its errors (401, 400
    # for a bad query, 429) are those of the other views, fuzzed there.
    return schema.exclude(method="GET", path="/@jobs/stream")


# The document is known before the server starts: the default installation serves
# docs/openapi.json (test_the_live_server_serves_the_fuzzed_document). Schemathesis's
# loader from a fixture (``schemathesis.pytest.from_fixture``) renames the test through a
# pytest attribute that pytest 9 no longer has, so the schema is loaded from the file and
# every request goes to the live server's URL. The stateful runs read the live document.
schema = without_endless_stream(schemathesis.openapi.from_path(str(DOCUMENT), config=config()))


def authorization(server: LiveServer, tokens: dict[str, str], login: str, case: Any) -> dict:
    """The ``Authorization`` header of ``login`` for ``case``."""
    token = tokens[login]
    if case.operation.label == "POST /@logout":
        # A fresh token for each logout, so that the one it revokes (by its jti) is its
        # own, never the one every other request sends. Renewed rather than logged in
        # anew: the fuzzer's own failed logins meet the login rate limit (429), which
        # is theirs to meet, not the harness's.
        renewed = server.request("POST", "/@login-renew", token=token)
        assert renewed.status == 200, (renewed.status, renewed.body)
        token = renewed.json["token"]
    return {"Authorization": f"Bearer {token}"}


def call(server: LiveServer, tokens: dict[str, str], login: str, case: Any, tally: Counter) -> None:
    headers = authorization(server, tokens, login, case)
    response = case.call(base_url=server.url, headers=headers)
    tally[(case.operation.label, response.status_code)] += 1
    case.validate_response(
        response, checks=CHECKS, transport_kwargs={"base_url": server.url, "headers": headers}
    )


def test_the_live_server_serves_the_fuzzed_document(fuzz_server):
    answer = fuzz_server.request("GET", "/@openapi")
    assert answer.status == 200
    assert answer.json == json.loads(DOCUMENT.read_text())


@schema.parametrize()
@FUZZ_SETTINGS
def test_fuzz_as_administrator(case, fuzz_server, tokens, tally):
    call(fuzz_server, tokens, "admin", case, tally)


@schema.parametrize()
@FUZZ_SETTINGS
def test_fuzz_as_user(case, fuzz_server, tokens, tally):
    call(fuzz_server, tokens, "alice", case, tally)


# --- stateful: the document's links ------------------------------------------------------


def state_machine(
    server: LiveServer,
    tokens: dict[str, str],
    login: str,
    seen: Counter,
    scenarios: list[int],
    failures: list[str],
) -> type:
    """Scenarios that follow the links: a job submitted, then read, aborted, retried,
    restarted, deleted... by its uuid from the answer (a scheduled job by its id)."""
    live = schemathesis.Config.from_dict(
        {
            "base-url": server.url,
            "generation": {"max-examples": EXAMPLES},
            "max-stream-events": 1,
            "request-timeout": 10,
        }
    )
    loaded = schemathesis.openapi.from_url(server.url + "/@openapi", config=live)
    base = without_endless_stream(loaded).as_state_machine()

    class Scenarios(base):  # type: ignore[misc, valid-type]
        def setup(self) -> None:
            scenarios[0] += 1

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"headers": authorization(server, tokens, login, case)}

        def after_call(self, response: Any, case: Any) -> None:
            seen[(case.operation.label, response.status_code)] += 1
            if response.status_code >= 500:
                # Reported with its body: schemathesis may take a 503 with Retry-After
                # for an API that is away rather than a failure of this request.
                failures.append(
                    f"{case.method} {case.formatted_path}: {response.status_code} "
                    f"{response.text[:500]}"
                )

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            try:
                case.validate_response(response, checks=CHECKS, transport_kwargs=kwargs)
            except Exception as failure:
                # Kept: hypothesis's replay of a failing scenario may end in
                # FlakyStrategyDefinition instead (see run_scenarios).
                failures.append(f"{case.method} {case.formatted_path}: {failure}")
                raise

    return Scenarios


def run_scenarios(machine: type, scenarios: list[int]) -> None:
    """Run ``EXAMPLES`` scenarios of ``machine``, which counts each it starts in
    ``scenarios``.

    A scenario's steps hang on what the server answered (a uuid, a job's state by then),
    so hypothesis, which records the draws of each scenario, may meet the same draws
    leading elsewhere and stop with ``FlakyStrategyDefinition``: that is the live server
    changing, not a finding. The run goes on from there with the scenarios left (as
    schemathesis's own runner does). A check that fails is a ``FailureGroup``, raised.
    """
    while scenarios[0] < EXAMPLES:
        before = scenarios[0]
        try:
            # No shrinking either: a replay can't reproduce the server's answers; the first
            # failure is the report, with every step's request.
            machine.run(
                settings=settings(
                    FUZZ_SETTINGS,
                    max_examples=EXAMPLES - before,
                    stateful_step_count=STEPS,
                    phases=(Phase.explicit, Phase.generate),
                )
            )
            return
        except FlakyStrategyDefinition:
            if scenarios[0] == before:
                raise


@pytest.mark.parametrize("login", LOGINS)
def test_stateful_fuzz_follows_the_links(fuzz_server, tokens, tally, login):
    seen: Counter = Counter()
    scenarios = [0]
    failures: list[str] = []
    machine = state_machine(fuzz_server, tokens, login, seen, scenarios, failures)
    run_scenarios(machine, scenarios)
    tally.update(seen)
    assert not failures, "\n\n".join(failures)
    assert not [pair for pair in seen if pair[1] >= 500], seen
    created = {(label, status) for label, status in seen if status == 201}
    if login == "admin":
        # A job was submitted, and a link from its answer was followed to the job.
        assert ("POST /@jobs", 201) in created, seen
        followed = {label for label, status in seen if status < 300} & JOB_LINK_TARGETS
        assert followed, seen
    else:
        # The default installation's actions are for `Manage Site`: a user's submissions
        # are refused, so no scenario reaches a job.
        assert ("POST /@jobs", 403) in seen, seen
        assert not created, seen


def test_the_links_of_a_created_job_name_operations_of_the_document():
    document = json.loads(DOCUMENT.read_text())
    operations = {
        operation["operationId"]: f"{method.upper()} {path}"
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    }
    for label, status in (("POST /@jobs", "201"), ("POST /@jobs/{uuid}/restart", "201")):
        method, path = label.split(" ")
        links = document["paths"][path][method.lower()]["responses"][status]["links"]
        assert {operations[link["operationId"]] for link in links.values()} == JOB_LINK_TARGETS
        for link in links.values():
            assert link["parameters"] == {"uuid": "$response.body#/uuid"}
    created = document["paths"]["/@scheduled-jobs"]["post"]["responses"]["201"]["links"]
    assert {operations[link["operationId"]] for link in created.values()} == {
        "GET /@scheduled-jobs/{id}",
        "PATCH /@scheduled-jobs/{id}",
        "DELETE /@scheduled-jobs/{id}",
    }
