"""A consumer process for the tests, on raw HTTP (what any language can do): it claims
jobs of one remote action, writes one line per job it finishes to its own file, and
completes them, until it is terminated; ``--hang`` makes it take its first jobs and then
do nothing, for the test to kill it mid-job.

    python -m tests.jobs.consumer_process URL TOKEN ACTION OUT [--hang]
"""

from __future__ import annotations

import http.client
import json
import sys
import time
from urllib.parse import urlsplit


def main(url: str, token: str, action: str, out: str, hang: bool) -> None:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def post(path: str, body: dict) -> tuple[int, bytes]:
        conn.request("POST", path, json.dumps(body), headers)
        response = conn.getresponse()
        return response.status, response.read()

    with open(out, "a", buffering=1) as record:
        while True:
            status, body = post("/@jobs/@claim", {"actions": [action], "limit": 10, "wait": 1})
            if status != 200:
                raise SystemExit(f"claim: {status} {body[:200]!r}")
            for job in json.loads(body):
                if hang:
                    record.write(f"holding {job['uuid']} {job['attempt']}\n")
                    time.sleep(3600)
                lease = job["lease"]["id"]
                path = f"/@jobs/{job['uuid']}/complete"
                status, body = post(path, {"lease": lease, "result": {"n": job["params"]["n"]}})
                if status == 204:
                    record.write(f"completed {job['uuid']} {job['attempt']}\n")
                else:
                    record.write(f"refused {job['uuid']} {status}\n")


if __name__ == "__main__":
    args = sys.argv[1:]
    main(*args[:4], hang="--hang" in args)
