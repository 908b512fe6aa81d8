"""Which requests run in a transaction: all but the GET of a page of jobs or of one job,
which read on the autocommit connection alone, and a submit without an Idempotency-Key
on PostgreSQL, which stores its job in one statement on it
(nick_jobs.db.needs_transaction)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
import transaction
from pyramid.interfaces import IRequestExtensions
from pyramid.registry import Registry
from pyramid.request import Request, apply_request_extensions
from transaction.interfaces import NoTransaction

from nick_jobs.db import needs_transaction
from tests.conftest import Client

UUID = "6a45c6f9-544f-4ba8-98ee-e105923c52b1"


def request_for(
    method: str, path: str, database: str = "postgresql+psycopg://", **headers: str
) -> Request:
    request = Request.blank(path, method=method, headers=headers)
    request.registry = Registry("test")
    # An engine connects only when used: its dialect is all the hook reads.
    request.registry["nick_jobs.read_engine"] = sa.create_engine(database)
    return request


@pytest.mark.parametrize(
    ("method", "path", "needed"),
    [
        ("GET", f"/@jobs/{UUID}", False),
        ("HEAD", f"/@jobs/{UUID}", False),
        ("DELETE", f"/@jobs/{UUID}", True),
        ("POST", f"/@jobs/{UUID}/abort", True),
        ("GET", f"/@jobs/{UUID}/log", True),
        ("GET", f"/@jobs/{UUID}/", True),
        ("GET", "/@jobs", False),
        ("HEAD", "/@jobs", False),
        ("GET", "/@jobs/", True),
        ("GET", "/@jobs/stream", True),
        ("POST", "/@jobs", False),
        ("POST", "/@jobs/", True),
        ("POST", f"/@jobs/{UUID}/retry", True),
        ("POST", "/@stream-tickets", True),
        ("PUT", "/@jobs", True),
        ("GET", "/@jobs/not-a-uuid-but-thirty-six-chars-long", True),
        # Under a host's own root the job's GET keeps its transaction.
        ("GET", f"/site/@jobs/{UUID}", True),
        ("POST", "/site/@jobs", True),
    ],
)
def test_reading_jobs_and_submitting_run_without_a_transaction(
    method: str, path: str, needed: bool
) -> None:
    assert needs_transaction(request_for(method, path)) is needed


def test_a_submit_with_an_idempotency_key_or_on_sqlite_runs_in_one() -> None:
    # The key's lookup and insert commit together; SQLite keeps its jobs in the session.
    assert needs_transaction(request_for("POST", "/@jobs", **{"Idempotency-Key": "k"}))
    assert needs_transaction(request_for("POST", "/@jobs", **{"idempotency-key": ""}))
    assert needs_transaction(request_for("POST", "/@jobs", "sqlite://"))
    # Reading is the same on either database.
    assert not needs_transaction(request_for("GET", "/@jobs", "sqlite://"))


@pytest.fixture
def begun(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """One entry for each transaction a request's manager begins."""
    seen: list[str] = []
    begin = transaction.TransactionManager.begin

    def counting(self):
        seen.append("begun")
        return begin(self)

    monkeypatch.setattr(transaction.TransactionManager, "begin", counting)
    return seen


def test_reading_jobs_begins_no_transaction_and_other_requests_do(
    app_without_worker: Client, begun: list[str]
) -> None:
    app = app_without_worker
    job = app.submit({"action": "dummy"})
    # On PostgreSQL a submit without an Idempotency-Key is one statement in none.
    assert len(begun) == (1 if app.backend.name == "sqlite" else 0)
    begun.clear()
    assert app.get(f"/@jobs/{job['uuid']}", headers=app.auth()).json["uuid"] == job["uuid"]
    app.head(f"/@jobs/{job['uuid']}", headers=app.auth())
    # Its errors too: no such job, no valid token.
    missing = "00000000-0000-4000-8000-000000000000"
    app.get(f"/@jobs/{missing}", headers=app.auth(), status=404)
    app.get(f"/@jobs/{job['uuid']}", status=401)
    app.get("/@jobs?b_size=1", headers=app.auth())
    app.get("/@jobs?b_size=nonsense", headers=app.auth(), status=400)
    assert begun == []
    app.get(f"/@jobs/{job['uuid']}/log", headers=app.auth())
    app.get("/@job-actions", headers=app.auth())
    headers = {**app.auth(), "Idempotency-Key": "once"}
    app.post_json("/@jobs", {"params": {"action": "dummy"}}, headers=headers, status=201)
    assert len(begun) == 3


def test_a_session_used_without_a_transaction_raises_instead_of_writing(
    app_without_worker: Client,
) -> None:
    registry = app_without_worker.app.registry
    request = request_for("GET", f"/@jobs/{UUID}")
    request.registry = registry
    apply_request_extensions(request, extensions=registry.getUtility(IRequestExtensions))
    with pytest.raises(NoTransaction):
        request.dbsession.execute(sa.text("SELECT 1"))


HOOK = "tests.db.test_request_transactions.always"


def always(request) -> bool:
    return True


def test_a_host_applications_own_activation_hook_is_kept(
    backend, make_app, begun: list[str]
) -> None:
    app = make_app(**{"tm.activate_hook": HOOK})
    job = app.submit({"action": "dummy"})
    assert app.get(f"/@jobs/{job['uuid']}", headers=app.auth()).json["uuid"] == job["uuid"]
    assert len(begun) == 2
