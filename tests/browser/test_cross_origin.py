"""The API called from pages of other origins, in a real browser (docs/api.md#cors).

The pages (``pages/cross-origin.html`` and ``.js``) come from ``origin_server``, which the
live server's ``nick_jobs.cors_origins`` lists, or from ``disallowed_origin``, which it
doesn't. They import the JS client from their own origin, call the API with an absolute
``apiPath``, and write what happened into ``<pre id="result">``.
"""

from __future__ import annotations

import secrets

import pytest

from tests.browser.conftest import page_result, wait_until

FINISHED_CLOSE = {"reason": "finished", "reconnect": False}


def unique_title(what: str) -> str:
    return f"{what} {secrets.token_hex(6)}"


def titled(live_server, title: str) -> list[dict]:
    """The jobs the server holds with ``title`` (searched as the admin)."""
    answer = live_server.request("GET", f"/@jobs?q={title.replace(' ', '+')}", login="admin")
    assert answer.status == 200, answer.body
    return [job for job in answer.json if job["title"] == title]


def console(driver) -> str:
    return "\n".join(entry["message"] for entry in driver.get_log("browser"))


def run_gated_stream(driver, live_server, origin_server, tmp_path, scenario: str) -> dict:
    """Open the page's stream of a ``gated`` job, then open the gate: the lines the job
    logs after it can only reach the page through the open stream."""
    gate = tmp_path / "gate"
    driver.get(
        origin_server.page(
            "cross-origin.html",
            scenario=scenario,
            api=live_server.url,
            token=live_server.token("alice"),
            gate=str(gate),
            title=unique_title(scenario),
        )
    )
    wait_until(
        driver,
        lambda d: (
            d.execute_script("return document.getElementById('result').dataset.state")
            in ("streaming", "done")
        ),
        timeout=30,
        message="the page opened no stream",
    )
    gate.touch()
    result = page_result(driver, timeout=60)
    assert result["ok"], result
    return result


# --- an allowed origin -----------------------------------------------------------------


def test_a_page_of_an_allowed_origin_logs_in_lists_submits_and_reads_a_job_back(
    driver, live_server, origin_server
):
    # Two jobs at least, so that a page of one has a next page.
    admin = live_server.client("admin")
    for _ in range(2):
        admin.submit_job("dummy", title=unique_title("earlier"))
    title = unique_title("from the browser")
    driver.get(
        origin_server.page(
            "cross-origin.html",
            scenario="jobs",
            api=live_server.url,
            login="admin",
            password=live_server.passwords["admin"],
            title=title,
        )
    )
    result = page_result(driver, timeout=60)
    assert result["ok"], result

    assert result["token"].count(".") == 2
    assert {"dummy", "gated"} <= set(result["actions"])
    before = result["before"]
    assert before["status"] == 200
    assert len(before["uuids"]) == 1
    # Link and X-Total-Count are readable only where the API exposes them to the page.
    assert before["next"].startswith(f"{live_server.url}/@jobs?")
    assert before["total"] >= 2

    created = result["created"]
    uuid = created["job"]["uuid"]
    assert created["status"] == 201
    assert created["location"] == f"{live_server.url}/@jobs/{uuid}"
    assert created["job"]["status"] == "created"
    assert created["job"]["title"] == title
    assert created["job"]["params"] == {
        "action": "dummy",
        "steps": 2,
        "result": {"from": "the browser"},
    }
    assert result["finished"]["status"] == "completed"
    assert result["finished"]["result"] == {"from": "the browser"}
    assert result["read"] == result["finished"]
    after = result["after"]
    assert after["uuids"] == [uuid]
    assert after["total"] == before["total"] + 1

    # The server ran it as the page's user.
    [job] = titled(live_server, title)
    assert (job["uuid"], job["actor"], job["status"]) == (uuid, "admin", "completed")


def test_an_allowed_page_reads_the_servers_error_bodies(driver, live_server, origin_server):
    driver.get(
        origin_server.page(
            "cross-origin.html",
            scenario="errors",
            api=live_server.url,
            login="alice",
            password="not-her-password",
            token=live_server.token("alice"),
        )
    )
    result = page_result(driver)
    assert result["ok"], result
    login = result["login"]["rejected"]
    assert (login["name"], login["status"], login["type"]) == (
        "NickJobsError",
        401,
        "Invalid credentials",
    )
    assert login["body"] == {
        "error": {"type": "Invalid credentials", "message": "Wrong login and/or password."}
    }
    missing = result["missing"]["rejected"]
    assert (missing["status"], missing["type"]) == (404, "Not found")


def test_the_clients_fetch_stream_sends_the_token_across_origins(
    driver, live_server, origin_server, tmp_path
):
    result = run_gated_stream(driver, live_server, origin_server, tmp_path, "stream")
    events = result["events"]
    assert not result["timedOut"]
    assert events[0]["event"] == "status"
    assert events[0]["data"]["uuid"] == result["uuid"]
    assert events[0]["data"]["actor"] == "alice"
    logged = [e["data"]["message"] for e in events if e["event"] == "log"]
    assert logged[-3:] == ["after 1", "after 2", "after 3"]
    statuses = [e["data"]["status"] for e in events if e["event"] == "status"]
    assert statuses[-1] == "completed"
    assert events[-1] == {"event": "close", "data": FINISHED_CLOSE, "id": None}
    assert all(e["id"] for e in events[:-1])


def test_an_event_source_and_the_clients_helpers_open_a_job_stream_with_a_ticket(
    driver, live_server, origin_server, tmp_path
):
    result = run_gated_stream(driver, live_server, origin_server, tmp_path, "ticket")
    uuid = result["uuid"]
    ticket = result["ticket"]
    assert ticket["status"] == 201
    assert ticket["url"].startswith(f"{live_server.url}/@jobs/{uuid}/stream?ticket=")
    assert ticket["expires"]
    events = result["events"]
    assert events[0]["event"] == "status"
    assert events[0]["data"]["uuid"] == uuid
    logged = [e["data"]["message"] for e in events if e["event"] == "log"]
    assert logged[-3:] == ["after 1", "after 2", "after 3"]
    statuses = [e["data"]["status"] for e in events if e["event"] == "status"]
    assert statuses[-1] == "completed"
    assert events[-1]["event"] == "close"
    assert events[-1]["data"] == FINISHED_CLOSE
    # EventSource keeps each event's id as the Last-Event-ID it would resume with.
    assert all(e["id"] for e in events[:-1])

    # The client's helpers for EventSource, in the same page and on the same job.
    helpers = result["helpers"]
    by_stream_url = helpers["streamUrl"]
    assert by_stream_url["url"].startswith(f"{live_server.url}/@jobs/{uuid}/stream?ticket=")
    assert job_events_end_finished(by_stream_url["events"], uuid)

    all_jobs = helpers["jobsStreamUrl"]
    assert all_jobs["url"].startswith(f"{live_server.url}/@jobs/stream?ticket=")
    mine = [e["data"] for e in all_jobs["events"] if e["data"].get("uuid") == uuid]
    assert mine[-1]["status"] == "completed"
    assert {e["event"] for e in all_jobs["events"]} <= {"status", "progress"}
    assert all(e["id"] for e in all_jobs["events"])

    by_helper = helpers["eventSource"]
    assert (by_helper["opens"], by_helper["closed"], by_helper["timedOut"]) == (1, True, False)
    assert job_events_end_finished(by_helper["events"], uuid)


def job_events_end_finished(events: list[dict], uuid: str) -> bool:
    """A job stream's events as a page got them: the job's status first, the lines it
    logged after the gate opened, its completion, and the close that ends the stream."""
    assert events[0]["event"] == "status", events[0]
    assert events[0]["data"]["uuid"] == uuid
    logged = [e["data"]["message"] for e in events if e["event"] == "log"]
    assert logged[-3:] == ["after 1", "after 2", "after 3"], logged
    statuses = [e["data"]["status"] for e in events if e["event"] == "status"]
    assert statuses[-1] == "completed", statuses
    assert events[-1]["event"] == "close"
    assert events[-1]["data"] == FINISHED_CLOSE
    return all(e["id"] for e in events[:-1])


# --- an origin the API doesn't allow ---------------------------------------------------


def test_a_page_of_another_origin_is_refused_and_runs_nothing(
    driver, live_server, disallowed_origin
):
    admin = live_server.client("admin")
    existing = admin.submit_job("dummy", title=unique_title("to stream"))
    title = unique_title("never created")
    driver.get(
        disallowed_origin.page(
            "cross-origin.html",
            scenario="refused",
            api=live_server.url,
            login="admin",
            password=live_server.passwords["admin"],
            token=live_server.token("admin"),
            title=title,
            job=existing["uuid"],
        )
    )
    result = page_result(driver, timeout=60)
    assert result["ok"], result
    # Each call rejects as a request that got no answer the page may read: status 0.
    for call in ("login", "create", "list", "stream"):
        assert "rejected" in result[call], (call, result[call])
        error = result[call]["rejected"]
        assert (error["name"], error["status"], error["body"]) == ("NickJobsError", 0, None)
        assert error["message"].startswith(f"can't reach {live_server.url}"), error
    # The browser says why; the server answered the preflight only, and created nothing.
    assert "blocked by CORS policy" in console(driver)
    assert titled(live_server, title) == []


def test_an_event_source_of_another_origin_gets_nothing(driver, live_server, disallowed_origin):
    admin = live_server.client("admin")
    job = admin.submit_job("dummy", title=unique_title("seen elsewhere"))
    ticket = live_server.request(
        "POST",
        "/@stream-tickets",
        login="admin",
        json={"stream": f"/@jobs/{job['uuid']}/stream"},
    )
    assert ticket.status == 201, ticket.body
    driver.get(
        disallowed_origin.page(
            "cross-origin.html",
            scenario="refusedEventSource",
            api=live_server.url,
            ticket_url=ticket.json["url"],
        )
    )
    result = page_result(driver, timeout=30)
    assert result == {"ok": True, "closed": True, "events": []}
    assert "blocked by CORS policy" in console(driver)


# --- the headers the browser relies on -------------------------------------------------


@pytest.mark.parametrize("path", ["/@jobs", "/@login", "/@stream-tickets"])
def test_preflights_are_answered_for_the_allowed_origin_only(
    live_server, origin_server, disallowed_origin, path
):
    asked = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    allowed = live_server.request("OPTIONS", path, headers={"Origin": origin_server.url, **asked})
    assert allowed.status == 204
    assert allowed.headers["Access-Control-Allow-Origin"] == origin_server.url
    methods = {m.strip() for m in allowed.headers["Access-Control-Allow-Methods"].split(",")}
    assert {"GET", "POST", "PATCH", "DELETE"} <= methods
    headers = {
        h.strip().lower() for h in allowed.headers["Access-Control-Allow-Headers"].split(",")
    }
    # Cache-Control: the JS client's event streams send it (no-cache).
    assert {
        "authorization",
        "content-type",
        "last-event-id",
        "idempotency-key",
        "cache-control",
    } <= headers

    refused = live_server.request(
        "OPTIONS", path, headers={"Origin": disallowed_origin.url, **asked}
    )
    assert refused.status == 403
    assert "Access-Control-Allow-Origin" not in refused.headers
    assert refused.json["error"]["type"] == "Forbidden"


def test_actual_responses_name_the_allowed_origin_and_expose_the_headers(
    live_server, origin_server, disallowed_origin
):
    token = live_server.token("admin")
    for status, path in ((200, "/@jobs"), (404, "/@jobs/00000000-0000-4000-8000-000000000000")):
        answer = live_server.request(
            "GET", path, token=token, headers={"Origin": origin_server.url}
        )
        assert answer.status == status
        assert answer.headers["Access-Control-Allow-Origin"] == origin_server.url
        exposed = {
            h.strip().lower() for h in answer.headers["Access-Control-Expose-Headers"].split(",")
        }
        assert {"location", "link", "x-total-count", "retry-after"} <= exposed
        assert "origin" in answer.headers["Vary"].lower()

    other = live_server.request(
        "GET", "/@jobs", token=token, headers={"Origin": disallowed_origin.url}
    )
    assert other.status == 200
    assert "Access-Control-Allow-Origin" not in other.headers
    assert "Access-Control-Expose-Headers" not in other.headers
