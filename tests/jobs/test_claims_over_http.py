"""Waiting claims against a live ``pserve`` (waitress), over real connections: what only
a real server shows."""

from __future__ import annotations

import http.client
import json
import socket
import time

from tests.client.test_client import live_server


def test_a_consumer_that_hangs_up_while_its_claim_waits_is_given_no_job(tmp_path):
    """The claim stops looking once its client is gone: the job that comes next goes to
    the consumer still there, not to a closed connection."""
    with live_server(tmp_path, **{"nick_jobs.claim_max_waiting": "1"}) as server:
        client = server.client("admin")
        client.request("PUT", "/@job-actions/reindex", json_body={"params": {"type": "object"}})
        host, port = server.url.removeprefix("http://").split(":")
        token = client.token
        body = json.dumps({"actions": ["reindex"], "wait": 20}).encode()
        request = (
            f"POST /@jobs/@claim HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body

        def claim(wait: float) -> tuple[int, bytes]:
            conn = http.client.HTTPConnection(host, int(port), timeout=30)
            payload = json.dumps({"actions": ["reindex"], "wait": wait})
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            conn.request("POST", "/@jobs/@claim", payload, headers)
            response = conn.getresponse()
            return response.status, response.read()

        def start() -> socket.socket:
            sock = socket.create_connection((host, int(port)))
            sock.sendall(request)
            return sock

        gone = start()
        # Once it waits, it holds the one waiting place: another claim that would wait
        # is refused. A probe that took the place first (it waits 50 ms) made it the one
        # refused instead: it is sent again.
        deadline = time.monotonic() + 10
        while claim(0.05)[0] != 503:
            assert time.monotonic() < deadline, "the first claim never waited"
            gone.settimeout(0.01)
            try:
                refused = gone.recv(64).startswith(b"HTTP/1.1 503")
            except TimeoutError:
                refused = False
            if refused:
                gone.close()
                gone = start()
        gone.close()
        # Its place comes free once the server sees the client gone.
        deadline = time.monotonic() + 10
        while True:
            status, answer = claim(0.2)
            if status == 200:
                break
            assert status == 503
            assert time.monotonic() < deadline, "the gone client's claim kept waiting"
        assert json.loads(answer) == []
        job = client.submit_job("reindex")
        status, answer = claim(5)
        assert status == 200
        assert [claimed["uuid"] for claimed in json.loads(answer)] == [job["uuid"]]
